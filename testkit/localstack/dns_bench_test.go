package localstack_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/lockdown/lockdown/pkg/platform/dkimdns"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// BenchmarkDNSUpdate measures what one RFC 2136 update costs the stack's
// authoritative server (Knot) as the platform's DKIM zone grows: the zone
// is filled to each size with two DKIM records per tenant, then a run of
// updates of 16 record sets each (the rotator's batches) replaces records
// of tenants spread over the zone. If the cost per update grows with the
// zone, DNS is a per-tenant cost that grows with the platform.
func BenchmarkDNSUpdate(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	s, err := localstack.Start(ctx, localstack.Options{DNS: true})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	key, err := dkimdns.LoadKey(s.DNS.RotatorKeyFile)
	if err != nil {
		b.Fatal(err)
	}
	c := &dkimdns.Client{Server: s.DNS.Addr, Key: key}
	record := "v=DKIM1; k=rsa; p=" + strings.Repeat("A", 392)
	set := func(tenant int, selector string) dkimdns.RRSet {
		name := selector + "." + localstack.Delegation(fmt.Sprintf("tenant-%06d", tenant))
		return dkimdns.RRSet{Name: name, Type: dns.TypeTXT, Records: []dns.RR{dkimdns.TXT(name, record, 60)}}
	}
	const batch, updates = 16, 200
	filled := 0
	for _, tenants := range []int{1000, 10000, 50000} {
		for filled < tenants {
			var sets []dkimdns.RRSet
			for ; filled < tenants && len(sets) < dkimdns.MaxSetsPerUpdate; filled++ {
				sets = append(sets, set(filled, "ld1"), set(filled, "ld2"))
			}
			if err := c.ReplaceSets(ctx, s.DNS.DKIMZone, sets); err != nil {
				b.Fatalf("filling to %d tenants: %v", tenants, err)
			}
		}
		start := time.Now()
		for u := range updates {
			sets := make([]dkimdns.RRSet, batch)
			for i := range sets {
				sets[i] = set((u*batch+i)*7919%tenants, "ld2")
			}
			if err := c.ReplaceSets(ctx, s.DNS.DKIMZone, sets); err != nil {
				b.Fatal(err)
			}
		}
		per := time.Since(start) / updates
		b.Logf("%6d tenants (%6d records): %v per update of %d record sets, %v per record", tenants, 2*tenants, per, batch, per/batch)
		b.ReportMetric(float64(per.Microseconds()), fmt.Sprintf("us/update@%d", tenants))
	}
}
