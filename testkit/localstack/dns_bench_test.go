package localstack_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/lockdown/lockdown/pkg/platform/dkimdns"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// BenchmarkDNSUpdate measures what one RFC 2136 update costs the stack's
// authoritative server (Knot) as the platform's DKIM zone grows: the zone
// is filled to each size with one DKIM record per tenant (its live
// selector, as the drill seeds it), then two runs of updates of 16 record
// sets each (the rotator's batches), on tenants spread over the zone: one
// replacing records at names the zone has (every rollover but a tenant's
// first: the revocation of the old selector, and the new key once both
// selectors exist), one adding the other selector's name (a tenant's
// first rollover). If a cost grows with the zone, DNS is a per-tenant
// cost that grows with the platform.
func BenchmarkDNSUpdate(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	s := localstack.StartTest(b, ctx, localstack.Options{DNS: true})
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
	filled, added := 0, 0
	run := func(tenants int, what string, pick func(u, i int) dkimdns.RRSet) {
		start := time.Now()
		for u := range updates {
			sets := make([]dkimdns.RRSet, batch)
			for i := range sets {
				sets[i] = pick(u, i)
			}
			if err := c.ReplaceSets(ctx, s.DNS.DKIMZone, sets); err != nil {
				b.Fatal(err)
			}
		}
		per := time.Since(start) / updates
		b.Logf("%6d tenants, %-28s %9v per update of %d record sets, %8v per record", tenants, what+":", per, batch, per/batch)
		b.ReportMetric(float64(per.Microseconds()), fmt.Sprintf("us/%s@%d", strings.Fields(what)[0], tenants))
	}
	for _, tenants := range []int{1000, 10000, 50000} {
		for filled < tenants {
			var sets []dkimdns.RRSet
			for ; filled < tenants && len(sets) < dkimdns.MaxSetsPerUpdate; filled++ {
				sets = append(sets, set(filled, "ld1"))
			}
			if err := c.ReplaceSets(ctx, s.DNS.DKIMZone, sets); err != nil {
				b.Fatalf("filling to %d tenants: %v", tenants, err)
			}
		}
		run(tenants, "replacing existing names", func(u, i int) dkimdns.RRSet { return set((u*batch+i)*7919%tenants, "ld1") })
		// Names the zone has never had, on tenants spread over it.
		run(tenants, "adding new names", func(int, int) dkimdns.RRSet { added++; return set(added*7919%tenants, "ld2"+strconv.Itoa(added)) })
	}
}
