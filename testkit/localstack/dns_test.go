package localstack_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/lockdown/lockdown/pkg/platform/dkimdns"
	"github.com/lockdown/lockdown/testkit/localstack"
)

func TestDNS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{DNS: true})
	rotatorKey, err := dkimdns.LoadKey(s.DNS.RotatorKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	rotator := &dkimdns.Client{Server: s.DNS.Addr, Key: rotatorKey}
	long := "v=DKIM1; k=rsa; p=" + strings.Repeat("A", 392)

	t.Run("the rotator's key publishes a long TXT record that reads back whole through the tenant's CNAME", func(t *testing.T) {
		target := "s1." + localstack.Delegation("tenant-001")
		if err := rotator.ReplaceTXT(ctx, s.DNS.DKIMZone, target, long, 60); err != nil {
			t.Fatal(err)
		}
		cname := &dns.CNAME{Hdr: dns.RR_Header{Name: "s1._domainkey.tenant-001.example.com.", Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: target}
		if err := s.DNS.TenantClient().Replace(ctx, s.DNS.TenantZone, cname.Hdr.Name, dns.TypeCNAME, cname); err != nil {
			t.Fatal(err)
		}
		got, err := s.DNS.Resolver().Lookup(ctx, "s1._domainkey.tenant-001.example.com")
		if err != nil || len(got) != 1 || got[0] != long {
			t.Fatalf("lookup = %q, %v", got, err)
		}
	})
	t.Run("a set the server refuses fails alone; the others of its batch are published", func(t *testing.T) {
		a := &dns.A{Hdr: dns.RR_Header{Name: "y." + s.DNS.DKIMZone, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: []byte{127, 0, 0, 2}}
		sets := []dkimdns.RRSet{
			{Name: "s1.batch-1." + s.DNS.DKIMZone, Type: dns.TypeTXT, Records: []dns.RR{dkimdns.TXT("s1.batch-1."+s.DNS.DKIMZone, long, 60)}},
			{Name: a.Hdr.Name, Type: dns.TypeA, Records: []dns.RR{a}}, // TXT only for this key
			{Name: "s1.batch-2." + s.DNS.DKIMZone, Type: dns.TypeTXT, Records: []dns.RR{dkimdns.TXT("s1.batch-2."+s.DNS.DKIMZone, long, 60)}},
		}
		errs := rotator.ReplaceEach(ctx, s.DNS.DKIMZone, sets)
		if errs[0] != nil || !errors.Is(errs[1], dkimdns.ErrRefused) || errs[2] != nil {
			t.Fatalf("results %v, want nil, refused, nil", errs)
		}
		for _, n := range []string{"s1.batch-1.", "s1.batch-2."} {
			got, err := s.DNS.Resolver().Lookup(ctx, n+s.DNS.DKIMZone)
			if err != nil || len(got) != 1 || got[0] != long {
				t.Fatalf("%s reads %q, %v", n, got, err)
			}
		}
	})
	t.Run("the rotator's key may not publish other types or touch the tenants' zone", func(t *testing.T) {
		a := &dns.A{Hdr: dns.RR_Header{Name: "x." + s.DNS.DKIMZone, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: []byte{127, 0, 0, 2}}
		if err := rotator.Replace(ctx, s.DNS.DKIMZone, a.Hdr.Name, dns.TypeA, a); !errors.Is(err, dkimdns.ErrRefused) {
			t.Fatalf("A record: %v, want refused", err)
		}
		if err := rotator.ReplaceTXT(ctx, s.DNS.TenantZone, "s9._domainkey.tenant-001.example.com", long, 60); !errors.Is(err, dkimdns.ErrRefused) {
			t.Fatalf("tenant zone: %v, want refused", err)
		}
		if err := (&dkimdns.Client{Server: s.DNS.Addr}).ReplaceTXT(ctx, s.DNS.DKIMZone, "s2.x."+s.DNS.DKIMZone, long, 60); !errors.Is(err, dkimdns.ErrRefused) {
			t.Fatalf("unsigned update: %v, want refused", err)
		}
	})
}
