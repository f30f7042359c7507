// Package tenantseed fills the tenant directory and Vault with tenants the
// way the platform would have them before an incident: SSH, SMTP and DKIM
// secrets and a few API keys each. The drill, `make dev` (the drill kept running) and the
// integration tests seed through it, so they all agree on the layout of
// ../shared/DESIGN.md (tenants/{id}/ssh|smtp|dkim, api_keys/{id}/{key}).
package tenantseed

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strings"
	"sync"

	vault "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/miekg/dns"
	"golang.org/x/sync/errgroup"

	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/pkg/platform/coalesce"
	"github.com/lockdown/lockdown/pkg/platform/dkimdns"

	"github.com/lockdown/lockdown/pkg/platform/directory"
)

// Options shape the seeded tenants. Zero values give the defaults.
type Options struct {
	// Count is the number of tenants (ids tenant-001 …).
	Count int
	// Mount is the KV v2 mount. Default "secret".
	Mount string
	// APIKeys returns how many API keys tenant i (0-based) has. Default 1 + i%3.
	APIKeys func(i int) int
	// APIKeyVersions is how many versions each API key gets, to prove all
	// are destroyed. Default 1.
	APIKeyVersions int
	// WebhookURL returns tenant i's webhook URL, or "" for none. Default none.
	WebhookURL func(i int) string
	// Prefix starts every id. Default "tenant-"; a drill on a staging
	// platform uses its own so it never overwrites real tenants.
	Prefix string
	// DKIM, when set, gives every tenant a real DKIM key (ed25519) that
	// its DNS publishes, as a live platform has: delegated tenants' at the
	// first of the platform's selectors, others' in their own zone.
	DKIM *DKIMDNS
}

// DKIMDNS is where seeded tenants' DKIM records are published.
type DKIMDNS struct {
	// Platform updates PlatformZone (the rotator's key); Tenants updates
	// TenantZone, which holds the tenants' domains (<id>.<TenantZone>).
	Platform, Tenants        *dkimdns.Client
	PlatformZone, TenantZone string
	// Selectors are the platform's pair for delegated tenants.
	Selectors [2]string
	// Delegated says whether tenant i delegates its selectors.
	Delegated func(i int) bool

	// The records of the tenants being seeded at once go out in one
	// update per zone and round (made on first use): 10,000 tenants are
	// 30,000 records, one zone commit each before.
	once              sync.Once
	platform, tenants *coalesce.Batch[dkimdns.RRSet]
}

// replace makes set the only records of its type at its name, in zone
// (the platform's or the tenants'), in the next update of that zone.
func (d *DKIMDNS) replace(ctx context.Context, platform bool, set dkimdns.RRSet) error {
	d.once.Do(func() {
		d.platform = coalesce.New(func(ctx context.Context, sets []dkimdns.RRSet) []error {
			return d.Platform.ReplaceEach(ctx, d.PlatformZone, sets)
		})
		d.tenants = coalesce.New(func(ctx context.Context, sets []dkimdns.RRSet) []error {
			return d.Tenants.ReplaceEach(ctx, d.TenantZone, sets)
		})
	})
	if platform {
		return d.platform.Do(ctx, set)
	}
	return d.tenants.Do(ctx, set)
}

// SeedSelector is the selector of a non-delegated tenant's seeded key.
const SeedSelector = "seed"

// Delegation is where tenant id's selectors are delegated in zone.
func Delegation(id, zone string) string { return id + "." + dns.Fqdn(zone) }

// Tenant is one seeded tenant.
type Tenant struct {
	ID          string
	Email       string
	WebhookURL  string
	APIKeyPaths []string // KV paths under the mount
}

// DefaultPrefix starts the seeded tenants' ids unless Options.Prefix says
// otherwise.
const DefaultPrefix = "tenant-"

// ID is the id of the i-th (0-based) seeded tenant with the default prefix.
func ID(i int) string { return IDWith(DefaultPrefix, i) }

// IDWith is the id of the i-th (0-based) seeded tenant with prefix.
func IDWith(prefix string, i int) string { return fmt.Sprintf("%s%03d", prefix, i+1) }

// SeedURL seeds through the platform's database at databaseURL (the
// directory's writer): the drill plays the platform that way.
func SeedURL(ctx context.Context, databaseURL string, client *vault.Client, o Options) ([]Tenant, error) {
	pool, err := pgxpool.New(ctx, databaseURL)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	return Seed(ctx, pool, client, o)
}

// Seed writes the tenants to the directory (creating its schema) and to
// Vault with the given client (a token that may write the mount).
func Seed(ctx context.Context, pool *pgxpool.Pool, client *vault.Client, o Options) ([]Tenant, error) {
	if o.Mount == "" {
		o.Mount = "secret"
	}
	if o.APIKeys == nil {
		o.APIKeys = func(i int) int { return 1 + i%3 }
	}
	if o.APIKeyVersions < 1 {
		o.APIKeyVersions = 1
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if err := directory.Migrate(ctx, pool); err != nil {
		return nil, err
	}
	kv := client.KVv2(o.Mount)
	out := make([]Tenant, o.Count)
	// Tenants are independent: seed several at once (a drill of 10,000
	// would otherwise spend minutes on round trips one after another).
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for i := range o.Count {
		g.Go(func() error {
			t, err := seedOne(gctx, pool, kv, o, i)
			out[i] = t
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// seedOne seeds tenant i.
func seedOne(ctx context.Context, pool *pgxpool.Pool, kv *vault.KVv2, o Options, i int) (Tenant, error) {
	t := Tenant{ID: IDWith(o.Prefix, i)}
	domain := t.ID + ".example.com"
	if o.DKIM != nil {
		domain = t.ID + "." + strings.TrimSuffix(o.DKIM.TenantZone, ".")
	}
	t.Email = "security@" + domain
	if o.WebhookURL != nil {
		t.WebhookURL = o.WebhookURL(i)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO directory.tenants (id, name, domain, contact_email, webhook_url) VALUES ($1, $2, $3, $4, nullif($5, ''))
		ON CONFLICT (id) DO UPDATE SET contact_email = EXCLUDED.contact_email, webhook_url = EXCLUDED.webhook_url`,
		t.ID, "Tenant "+t.ID, domain, t.Email, t.WebhookURL); err != nil {
		return t, fmt.Errorf("seed %s: %w", t.ID, err)
	}
	secrets := credentials.TenantSecrets(t.ID, false)
	if o.DKIM != nil {
		delete(secrets, credentials.DKIM) // seeded with its DNS records below
		if err := o.DKIM.seed(ctx, pool, kv, t.ID, domain, o.DKIM.Delegated != nil && o.DKIM.Delegated(i)); err != nil {
			return t, fmt.Errorf("seed %s: dkim: %w", t.ID, err)
		}
	}
	for _, path := range secrets {
		if _, err := kv.Put(ctx, path, map[string]any{"value": "issued before the incident"}); err != nil {
			return t, fmt.Errorf("seed %s: %w", t.ID, err)
		}
	}
	for k := range o.APIKeys(i) {
		p := fmt.Sprintf("api_keys/%s/key-%d", t.ID, k)
		for v := range o.APIKeyVersions {
			if _, err := kv.Put(ctx, p, map[string]any{"key": fmt.Sprintf("issued before the incident, version %d", v+1)}); err != nil {
				return t, fmt.Errorf("seed %s: %w", t.ID, err)
			}
		}
		t.APIKeyPaths = append(t.APIKeyPaths, p)
	}
	return t, nil
}

// seed gives one tenant a DKIM key in Vault and its record in DNS.
func (d *DKIMDNS) seed(ctx context.Context, pool *pgxpool.Pool, kv *vault.KVv2, id, domain string, delegated bool) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	record := "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	selector := SeedSelector
	if delegated {
		selector = d.Selectors[0]
		delegation := Delegation(id, d.PlatformZone)
		if _, err := pool.Exec(ctx, `UPDATE directory.tenants SET dkim_delegation = $2 WHERE id = $1`, id, delegation); err != nil {
			return err
		}
		// The tenant's side of the delegation: one CNAME per selector.
		for _, s := range d.Selectors {
			name := s + "._domainkey." + dns.Fqdn(domain)
			cname := &dns.CNAME{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: s + "." + delegation}
			if err := d.replace(ctx, false, dkimdns.RRSet{Name: name, Type: dns.TypeCNAME, Records: []dns.RR{cname}}); err != nil {
				return err
			}
		}
		name := selector + "." + delegation
		if err := d.replace(ctx, true, dkimdns.RRSet{Name: name, Type: dns.TypeTXT, Records: []dns.RR{dkimdns.TXT(name, record, 60)}}); err != nil {
			return err
		}
		// The other selector's name exists too, revoked, as operations.md
		// asks of the platform when it delegates a tenant: adding a name
		// to the zone costs the DNS server 0.9–5 ms (growing with the
		// zone, BenchmarkDNSUpdate) where replacing a record costs 0.05.
		spare := d.Selectors[1] + "." + delegation
		if err := d.replace(ctx, true, dkimdns.RRSet{Name: spare, Type: dns.TypeTXT, Records: []dns.RR{dkimdns.TXT(spare, dkimdns.RevokedRecord, 60)}}); err != nil {
			return err
		}
	} else {
		name := selector + "._domainkey." + dns.Fqdn(domain)
		if err := d.replace(ctx, false, dkimdns.RRSet{Name: name, Type: dns.TypeTXT, Records: []dns.RR{dkimdns.TXT(name, record, 60)}}); err != nil {
			return err
		}
	}
	_, err = kv.Put(ctx, "tenants/"+id+"/dkim", map[string]any{"selector": selector, "key_type": "ed25519", "dns_record": record,
		"private_key": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))})
	return err
}
