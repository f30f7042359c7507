package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/platform/localstack"
	"github.com/lockdown/lockdown/services/assessor/internal/audit"
	"github.com/lockdown/lockdown/services/assessor/internal/store"
)

func TestInsert(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := localstack.Start(ctx, localstack.Options{Postgres: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	db, err := store.Open(ctx, s.Postgres.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tpl, _ := audit.ParseTemplates([]string{"secret/data/tenants/{tenant}/"})
	at := time.Date(2026, 11, 25, 10, 30, 0, 0, time.UTC)
	entry := func(id string) audit.Entry {
		e, err := audit.Parse([]byte(fmt.Sprintf(`{"time":%q,"type":"response","auth":{"accessor":"hmac-sha256:a","display_name":"token-x"},"request":{"id":%q,"operation":"read","path":"secret/data/tenants/acme/ssh"}}`,
			at.Format(time.RFC3339), id)), tpl)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	none := func(audit.Entry) bool { return false }
	reads := func() int64 {
		counts, err := db.Counts(ctx, at.Add(-time.Hour), at.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, c := range counts {
			if c.Kind == audit.KindRead && c.Tenant == "acme" {
				n += c.Count
			}
		}
		return n
	}

	t.Run("a new batch is stored and counted", func(t *testing.T) {
		n, err := db.Insert(ctx, []audit.Entry{entry("a"), entry("b")}, none)
		if err != nil || n != 2 || reads() != 2 {
			t.Fatalf("inserted %d (%v), reads %d", n, err, reads())
		}
	})
	t.Run("a replayed batch stores and counts only what is new, including repeats within it", func(t *testing.T) {
		n, err := db.Insert(ctx, []audit.Entry{entry("a"), entry("c"), entry("c"), entry("b"), entry("d")}, none)
		if err != nil || n != 2 || reads() != 4 {
			t.Fatalf("inserted %d (%v), reads %d, want 2 new and 4 reads", n, err, reads())
		}
	})
}
