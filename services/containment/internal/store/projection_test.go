package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
	"github.com/lockdown/lockdown/services/containment/internal/store"
	"github.com/lockdown/lockdown/testkit/localstack"
)

func TestMain(m *testing.M) { os.Exit(localstack.RunWithServices(m)) }

// TestIncrementalSnapshot proves, on a real PostgreSQL, that a snapshot
// read from the previous one's cursor misses nothing: an entry whose
// transaction began before a read and committed after it (a late commit)
// is in the next read, and the counted marker moves with every entry.
func TestIncrementalSnapshot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{Postgres: true})
	db, err := store.Open(ctx, s.Postgres.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	const id = "6f1c2a34-0000-4000-8000-000000000001"
	if _, err := db.Pool().Exec(ctx, `INSERT INTO containment.incidents (id, opened_by_event, detected_at, breach_published_at, severity, summary, source, phase)
		VALUES ($1, 'breach-1', now(), now(), 'critical', 'test', '/test', 'sealed')`, id); err != nil {
		t.Fatal(err)
	}
	entry := func(n int) reporting.Entry {
		data, _ := json.Marshal(map[string]string{"incident_id": id, "tenant_id": fmt.Sprintf("tenant-%d", n)})
		return reporting.Entry{EventID: fmt.Sprintf("e-%d", n), Type: events.NotificationSent, Time: time.Now(), Source: "/test", Data: data}
	}
	record := func(e reporting.Entry) {
		t.Helper()
		if err := db.RecordEvent(ctx, id, e); err != nil {
			t.Fatal(err)
		}
	}
	marker := func() string {
		t.Helper()
		m, err := db.Markers(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		return m[id]
	}
	ids := func(es []reporting.Entry) map[string]bool {
		out := map[string]bool{}
		for _, e := range es {
			out[e.EventID] = true
		}
		return out
	}

	record(entry(1))
	m1 := marker()
	record(entry(3))
	// A transaction that records entry 2 and stays open across a read
	// (while it is open, other entries of the incident wait for its count:
	// recording is one short transaction each).
	late, err := db.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Rollback(ctx) //nolint:errcheck // committed below
	e2 := entry(2)
	if _, err := late.Exec(ctx, `INSERT INTO containment.timeline (event_id, incident_id, type, time, source, data) VALUES ($1, $2, $3, $4, $5, $6)`,
		e2.EventID, id, string(e2.Type), e2.Time, e2.Source, e2.Data); err != nil {
		t.Fatal(err)
	}

	first, err := db.Snapshot(ctx, id, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(first.Timeline); !got["e-1"] || got["e-2"] || !got["e-3"] {
		t.Fatalf("first read %v, want e-1 and e-3 (e-2 not committed)", got)
	}
	if err := late.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	record(entry(4))

	t.Run("the next read from the cursor has the late commit and what came after", func(t *testing.T) {
		next, err := db.Snapshot(ctx, id, first.Cursor)
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(next.Timeline); !got["e-2"] || !got["e-4"] || got["e-1"] {
			t.Fatalf("read from cursor %s: %v, want e-2 and e-4, not e-1", first.Cursor, got)
		}
	})
	t.Run("the marker counts every entry", func(t *testing.T) {
		m := marker()
		if m == m1 {
			t.Fatalf("marker %q did not move after three entries", m)
		}
		var counted, kept int
		if err := db.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM containment.timeline WHERE incident_id = $1),
			(SELECT entries FROM containment.timeline_counts WHERE incident_id = $1)`, id).Scan(&counted, &kept); err != nil {
			t.Fatal(err)
		}
		if counted != 4 || kept != 4 {
			t.Fatalf("timeline has %d entries, the count says %d; want 4", counted, kept)
		}
	})
}
