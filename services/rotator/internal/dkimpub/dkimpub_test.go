package dkimpub_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockdown/lockdown/services/rotator/internal/dkimpub"
	"github.com/lockdown/lockdown/testkit/localstack"
)

func TestMain(m *testing.M) { os.Exit(localstack.RunWithServices(m)) }

// TestPublishBatches publishes many records at once against the real DNS
// server (Knot): every record lands, in fewer zone commits than records —
// the zone's serial grows by one per update message.
func TestPublishBatches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{DNS: true})
	p, err := dkimpub.New(s.DNS.Addr, s.DNS.DKIMZone, s.DNS.RotatorKeyFile, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	resolver := s.DNS.Resolver()
	before, err := resolver.Serial(ctx, s.DNS.DKIMZone)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	record := func(i int) string { return fmt.Sprintf("v=DKIM1; k=rsa; p=%s%03d", strings.Repeat("A", 380), i) }
	name := func(i int) string { return fmt.Sprintf("s1.tenant-%03d.%s", i, s.DNS.DKIMZone) }
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = p.Publish(ctx, name(i), record(i)) }()
	}
	wg.Wait()
	t.Run("every record is published and reads back from the server", func(t *testing.T) {
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("publish %d: %v", i, errs[i])
			}
			got, err := p.Authoritative(ctx, name(i))
			if err != nil || len(got) != 1 || got[0] != record(i) {
				t.Fatalf("%s reads %q, %v", name(i), got, err)
			}
		}
	})
	t.Run("the records went out in fewer update messages than records", func(t *testing.T) {
		after, err := resolver.Serial(ctx, s.DNS.DKIMZone)
		if err != nil {
			t.Fatal(err)
		}
		updates := after - before
		t.Logf("%d records in %d updates", n, updates)
		if updates == 0 || updates >= n {
			t.Fatalf("the zone's serial moved by %d for %d records, want 1..%d", updates, n, n-1)
		}
	})
	t.Run("a name outside the zone is refused without reaching the server", func(t *testing.T) {
		if err := p.Publish(ctx, "s1.example.com", record(0)); err == nil {
			t.Fatal("published outside the zone")
		}
	})
}
