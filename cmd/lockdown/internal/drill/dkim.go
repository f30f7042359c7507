package drill

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/platform/dkimdns"
	"github.com/lockdown/lockdown/pkg/platform/keycheck"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/tenantseed"
)

// breakGlassToken issues the drill's break-glass token before containment
// starts, and returns it with its accessor for LOCKDOWN_BREAK_GLASS: a
// platform keeps one through a lockdown, and the drill reads the tenants'
// active DKIM keys with it (the root token is revoked with every other).
func breakGlassToken(ctx context.Context, v *localstack.Vault) (token, accessor string, err error) {
	c, err := v.Client()
	if err != nil {
		return "", "", err
	}
	s, err := c.Auth().Token().CreateOrphanWithContext(ctx, &vault.TokenCreateRequest{Policies: []string{"root"}, DisplayName: "drill-break-glass", TTL: "4h"})
	if err != nil {
		return "", "", fmt.Errorf("break-glass token: %w", err)
	}
	return s.Auth.ClientToken, s.Auth.Accessor, nil
}

// dkimWatch samples, from before the breach until the drill verifies,
// that mail signed with every tenant's active DKIM key (read with the
// break-glass token) passes DKIM against the DNS: at no moment of the
// rollover may the active key lack its record.
type dkimWatch struct {
	samples  int
	problems []string
	mu       sync.Mutex
	stop     context.CancelFunc
	done     chan struct{}
}

func (tgt *target) tenantDomain(i int) string {
	return tenantseed.IDWith(tgt.prefix, i) + "." + strings.TrimSuffix(tgt.dns.TenantZone, ".")
}

// watchDKIM starts the sampler (nil when the drill has no DNS or no
// break-glass token).
func watchDKIM(ctx context.Context, tgt *target, tenants int) (*dkimWatch, error) {
	if tgt.dns == nil || tgt.breakGlass == "" {
		return nil, nil
	}
	c, err := tgt.vault.Client()
	if err != nil {
		return nil, err
	}
	c.SetToken(tgt.breakGlass)
	kv := c.KVv2(tgt.mount)
	r := tgt.dns.Resolver()
	wctx, stop := context.WithCancel(ctx)
	w := &dkimWatch{stop: stop, done: make(chan struct{})}
	// Up to dkimSampled tenants spread over the directory: each look signs
	// and verifies, and a drill of thousands must not spend its cores on it.
	step := max(1, tenants/dkimSampled)
	go func() {
		defer close(w.done)
		for wctx.Err() == nil {
			for i := 0; i < tenants && wctx.Err() == nil; i += step {
				// At most ~20 looks a second: each reads a key from Vault,
				// asks the DNS, signs and verifies, and the drill's cores,
				// Vault and DNS belong to the rotation it watches (at 50 a
				// second the sampler was a sixth of Vault's requests in
				// the 10,000-tenant drill). Every tenant is checked again
				// once the incident ends (verifyDKIM).
				time.Sleep(50 * time.Millisecond)
				conclusive, err := keycheck.ActiveDKIM(wctx, kv, "tenants/"+tenantseed.IDWith(tgt.prefix, i)+"/dkim", tgt.tenantDomain(i), r.LookupFunc(wctx))
				if !conclusive {
					continue
				}
				w.mu.Lock()
				w.samples++
				if err != nil && len(w.problems) < 5 {
					w.problems = append(w.problems, err.Error())
				}
				w.mu.Unlock()
			}
		}
	}()
	return w, nil
}

// dkimSampled bounds the tenants the sampler looks at.
const dkimSampled = 200

// finish stops the sampler and returns its figures.
func (w *dkimWatch) finish() (samples int, problems []string) {
	if w == nil {
		return 0, nil
	}
	w.stop()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.samples, w.problems
}

// verifyDKIM checks every tenant in DNS after the incident: the new
// selector serves a live key, the old one the revoked record, and (with
// the break-glass token) mail signed with the key Vault holds as active
// passes DKIM against the DNS.
func verifyDKIM(ctx context.Context, tgt *target, tenants int, v *verification) error {
	v.DKIMChecked = true
	r := tgt.dns.Resolver()
	var kv *vault.KVv2
	if tgt.breakGlass != "" {
		c, err := tgt.vault.Client()
		if err != nil {
			return err
		}
		c.SetToken(tgt.breakGlass)
		kv = c.KVv2(tgt.mount)
	}
	for i := range tenants {
		domain := tgt.tenantDomain(i)
		live, err := r.Lookup(ctx, drillSelectors[1]+"._domainkey."+domain)
		if err != nil {
			return err
		}
		old, err := r.Lookup(ctx, drillSelectors[0]+"._domainkey."+domain)
		if err != nil {
			return err
		}
		p, ok := "", false
		if len(live) == 1 {
			p, ok = dkimdns.PublicKey(live[0])
		}
		if ok && p != "" && len(old) == 1 && old[0] == dkimdns.RevokedRecord {
			v.DKIMRolled++
		}
		if kv == nil {
			continue
		}
		active, err := kv.Get(ctx, "tenants/"+tenantseed.IDWith(tgt.prefix, i)+"/dkim")
		if err != nil {
			return err
		}
		sel, _ := active.Data["selector"].(string)
		priv, _ := active.Data["private_key"].(string)
		if keycheck.DKIMMessage(priv, domain, sel, r.LookupFunc(ctx)) == nil {
			v.DKIMSigned++
		}
	}
	return nil
}
