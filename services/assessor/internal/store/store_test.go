package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lockdown/lockdown/services/assessor/internal/audit"
	"github.com/lockdown/lockdown/services/assessor/internal/store"
	"github.com/lockdown/lockdown/testkit/localstack"
)

func TestInsert(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{Postgres: true})
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

	// Entries of one request as two devices write it: the same id, each
	// device's own accessor HMAC.
	seen := func(id, device, accessor string) audit.Entry {
		e, err := audit.Parse([]byte(fmt.Sprintf(`{"time":%q,"type":"response","auth":{"accessor":%q,"display_name":"token"},"request":{"id":%q,"operation":"read","path":"secret/data/tenants/acme/ssh"}}`,
			at.Format(time.RFC3339), accessor, id)), tpl)
		if err != nil {
			t.Fatal(err)
		}
		e.Device = device
		return e
	}
	identity := func(accessors ...string) string {
		t.Helper()
		toks, err := db.Tokens(ctx, accessors)
		if err != nil {
			t.Fatal(err)
		}
		id := toks[accessors[0]].Identity
		for _, a := range accessors {
			if toks[a].Identity != id || len(toks[a].Accessors) != len(accessors) {
				t.Fatalf("%s belongs to %+v, %s to %+v: not one token", accessors[0], toks[accessors[0]], a, toks[a])
			}
		}
		return id
	}
	t.Run("one request seen through two devices ties their accessors to one token, in the same batch or a later one", func(t *testing.T) {
		if _, err := db.Insert(ctx, []audit.Entry{seen("x1", "socket", "hmac:s-x"), seen("x1", "file", "hmac:f-x")}, none); err != nil {
			t.Fatal(err)
		}
		if id := identity("hmac:s-x", "hmac:f-x"); id != "hmac:f-x" {
			t.Fatalf("identity %s, want the least accessor hmac:f-x", id)
		}
		if _, err := db.Insert(ctx, []audit.Entry{seen("y1", "file", "hmac:f-y")}, none); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Insert(ctx, []audit.Entry{seen("y1", "socket", "hmac:s-y")}, none); err != nil {
			t.Fatal(err)
		}
		identity("hmac:s-y", "hmac:f-y")
	})
	t.Run("links arriving in any order merge into one group", func(t *testing.T) {
		// Three devices; the pairs come in an order that first makes two
		// groups and then joins them.
		for _, b := range [][]audit.Entry{
			{seen("z1", "d1", "hmac:z3"), seen("z1", "d2", "hmac:z4")},
			{seen("z2", "d3", "hmac:z1"), seen("z2", "d4", "hmac:z2")},
			{seen("z3", "d2", "hmac:z4"), seen("z3", "d3", "hmac:z2")},
		} {
			if _, err := db.Insert(ctx, b, none); err != nil {
				t.Fatal(err)
			}
		}
		if id := identity("hmac:z1", "hmac:z2", "hmac:z3", "hmac:z4"); id != "hmac:z1" {
			t.Fatalf("identity %s, want hmac:z1", id)
		}
	})
	t.Run("writers linking the same tokens at once agree on one identity per token", func(t *testing.T) {
		const tokensN, devices = 40, 3
		var wg sync.WaitGroup
		errs := make(chan error, devices*tokensN)
		for d := range devices {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range tokensN {
					// Every device sees every token's request; each batch
					// carries one device's view of one request.
					e := seen(fmt.Sprintf("c%d", i), fmt.Sprintf("dev%d", d), fmt.Sprintf("hmac:c%02d-d%d", i, d))
					// A deadlock between writers is an error the pipeline
					// retries; so does this writer.
					var err error
					for range 5 {
						if _, err = db.Insert(ctx, []audit.Entry{e}, none); err == nil {
							break
						}
					}
					if err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for i := range tokensN {
			var accs []string
			for d := range devices {
				accs = append(accs, fmt.Sprintf("hmac:c%02d-d%d", i, d))
			}
			identity(accs...)
		}
	})
}
