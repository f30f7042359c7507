package localstack_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/lockdown/lockdown/pkg/platform/dkimdns"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// longRecord is a DKIM record as long as an RSA-2048 key's: it spans
// two character-strings of a TXT record.
var longRecord = "v=DKIM1; k=rsa; p=" + strings.Repeat("A", 392)

func TestDNS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{DNS: true})
	rotator, err := s.DNS.RotatorClient()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("the rotator's key publishes a long TXT record that reads back whole through the tenant's CNAME", func(t *testing.T) {
		target := "s1." + localstack.Delegation("tenant-001")
		if err := rotator.ReplaceTXT(ctx, s.DNS.DKIMZone, target, longRecord, 60); err != nil {
			t.Fatal(err)
		}
		cname := &dns.CNAME{Hdr: dns.RR_Header{Name: "s1._domainkey.tenant-001.example.com.", Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: target}
		if err := s.DNS.TenantClient().Replace(ctx, s.DNS.TenantZone, cname.Hdr.Name, dns.TypeCNAME, cname); err != nil {
			t.Fatal(err)
		}
		got, err := s.DNS.Resolver().Lookup(ctx, "s1._domainkey.tenant-001.example.com")
		if err != nil || len(got) != 1 || got[0] != longRecord {
			t.Fatalf("lookup = %q, %v", got, err)
		}
	})
	t.Run("a set the server refuses fails alone; the others of its batch are published", func(t *testing.T) {
		a := &dns.A{Hdr: dns.RR_Header{Name: "y." + s.DNS.DKIMZone, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: []byte{127, 0, 0, 2}}
		sets := []dkimdns.RRSet{
			{Name: "s1.batch-1." + s.DNS.DKIMZone, Type: dns.TypeTXT, Records: []dns.RR{dkimdns.TXT("s1.batch-1."+s.DNS.DKIMZone, longRecord, 60)}},
			{Name: a.Hdr.Name, Type: dns.TypeA, Records: []dns.RR{a}}, // TXT only for this key
			{Name: "s1.batch-2." + s.DNS.DKIMZone, Type: dns.TypeTXT, Records: []dns.RR{dkimdns.TXT("s1.batch-2."+s.DNS.DKIMZone, longRecord, 60)}},
		}
		errs := rotator.ReplaceEach(ctx, s.DNS.DKIMZone, sets)
		if errs[0] != nil || !errors.Is(errs[1], dkimdns.ErrRefused) || errs[2] != nil {
			t.Fatalf("results %v, want nil, refused, nil", errs)
		}
		for _, n := range []string{"s1.batch-1.", "s1.batch-2."} {
			got, err := s.DNS.Resolver().Lookup(ctx, n+s.DNS.DKIMZone)
			if err != nil || len(got) != 1 || got[0] != longRecord {
				t.Fatalf("%s reads %q, %v", n, got, err)
			}
		}
	})
	t.Run("the rotator's key may not publish other types or touch the tenants' zone", func(t *testing.T) {
		a := &dns.A{Hdr: dns.RR_Header{Name: "x." + s.DNS.DKIMZone, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: []byte{127, 0, 0, 2}}
		if err := rotator.Replace(ctx, s.DNS.DKIMZone, a.Hdr.Name, dns.TypeA, a); !errors.Is(err, dkimdns.ErrRefused) {
			t.Fatalf("A record: %v, want refused", err)
		}
		if err := rotator.ReplaceTXT(ctx, s.DNS.TenantZone, "s9._domainkey.tenant-001.example.com", longRecord, 60); !errors.Is(err, dkimdns.ErrRefused) {
			t.Fatalf("tenant zone: %v, want refused", err)
		}
		if err := (&dkimdns.Client{Server: s.DNS.Addr}).ReplaceTXT(ctx, s.DNS.DKIMZone, "s2.x."+s.DNS.DKIMZone, longRecord, 60); !errors.Is(err, dkimdns.ErrRefused) {
			t.Fatalf("unsigned update: %v, want refused", err)
		}
	})
}

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
	c, err := s.DNS.RotatorClient()
	if err != nil {
		b.Fatal(err)
	}
	set := func(tenant int, selector string) dkimdns.RRSet {
		name := selector + "." + localstack.Delegation(fmt.Sprintf("tenant-%06d", tenant))
		return dkimdns.RRSet{Name: name, Type: dns.TypeTXT, Records: []dns.RR{dkimdns.TXT(name, longRecord, 60)}}
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
