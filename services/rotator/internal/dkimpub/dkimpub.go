// Package dkimpub is the rotator's adapter to DNS (rotation.DNS): it
// publishes DKIM records in the platform's DKIM zone on its authoritative
// server with the rotator's TSIG key, reads them back from that server,
// and reads tenants' own records from a resolver. A server that does not
// answer fails the DKIM step transiently: the job is retried with backoff
// and without limit, and — unlike a Vault or PostgreSQL outage — the
// consumer is not paused, so every other tenant's SSH, SMTP and API keys
// are still replaced while DNS is away.
package dkimpub

import (
	"context"
	"errors"
	"time"

	"github.com/miekg/dns"

	"github.com/lockdown/lockdown/pkg/platform/coalesce"
	"github.com/lockdown/lockdown/pkg/platform/dkimdns"
)

// TTL of published records: short, so a rollover shows quickly in caches.
const TTL = 60

// Publisher implements rotation.DNS.
type Publisher struct {
	zone     string
	auth     *dkimdns.Client
	resolver *dkimdns.Client
	// updates gathers the records of the jobs in flight into one update
	// message per round: the server commits its zone once per message, and
	// one commit per record made DNS the rotation's slowest step (the
	// jobs spent a third of their time waiting on it). The rounds are
	// spaced (New's interval) because a commit's cost grows with the zone
	// and hardly with the records in the message.
	updates *coalesce.Batch[dkimdns.RRSet]
}

// New builds the adapter: server and zone are the platform's authoritative
// server and DKIM zone, keyFile its TSIG key, resolver where tenants' own
// records are read (server when empty). Update messages start at least
// interval apart (coalesce.MinInterval); zero sends the next as soon as
// the last is answered.
func New(server, zone, keyFile, resolver string, interval time.Duration) (*Publisher, error) {
	key, err := dkimdns.LoadKey(keyFile)
	if err != nil {
		return nil, err
	}
	if resolver == "" {
		resolver = server
	}
	p := &Publisher{zone: dns.Fqdn(zone), auth: &dkimdns.Client{Server: server, Key: key}, resolver: &dkimdns.Client{Server: resolver}}
	p.updates = coalesce.New(func(ctx context.Context, sets []dkimdns.RRSet) []error { return p.auth.ReplaceEach(ctx, p.zone, sets) },
		coalesce.MinInterval(interval))
	return p, nil
}

// Publish implements rotation.DNS. A name outside the zone is refused
// here, before the server is asked. The record goes out in the next
// update message, with those of the other jobs waiting for one.
func (p *Publisher) Publish(ctx context.Context, name, record string) error {
	if !dns.IsSubDomain(p.zone, dns.Fqdn(name)) {
		return errors.New("dkimpub: " + name + " is not in " + p.zone)
	}
	return p.updates.Do(ctx, dkimdns.RRSet{Name: name, Type: dns.TypeTXT, Records: []dns.RR{dkimdns.TXT(name, record, TTL)}})
}

// Authoritative implements rotation.DNS.
func (p *Publisher) Authoritative(ctx context.Context, name string) ([]string, error) {
	return p.auth.Lookup(ctx, name)
}

// Resolve implements rotation.DNS.
func (p *Publisher) Resolve(ctx context.Context, name string) ([]string, error) {
	return p.resolver.Lookup(ctx, name)
}
