package timeline

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
)

// keep is a Store that keeps what it is given.
type keep struct{ entries []reporting.Entry }

func (k *keep) RecordEvent(_ context.Context, _ string, e reporting.Entry) error {
	k.entries = append(k.entries, e)
	return nil
}

func TestRecorder(t *testing.T) {
	data := json.RawMessage(`{"incident_id":"inc-1","tenant_id":"t-1"}`)
	t.Run("every event of an incident is recorded, but only those the engine acts on wake it", func(t *testing.T) {
		store, wakes := &keep{}, 0
		r := New(store, func() { wakes++ })
		types := []events.Name{events.RotationTenantCompleted, events.NotificationSent, events.RotationTenantFailed,
			events.NotificationFailed, events.RotationCompleted, events.NotificationsCompleted, events.AccessRevoked}
		for i, typ := range types {
			if err := r.Record(context.Background(), reporting.Entry{EventID: string(rune('a' + i)), Type: typ, Data: data}); err != nil {
				t.Fatal(err)
			}
		}
		if len(store.entries) != len(types) {
			t.Fatalf("recorded %d of %d events", len(store.entries), len(types))
		}
		if wakes != 3 {
			t.Fatalf("the engine was woken %d times, want 3 (rotation.completed, notifications.completed, access.revoked)", wakes)
		}
	})
	t.Run("an event of no incident is neither recorded nor wakes the engine", func(t *testing.T) {
		store, wakes := &keep{}, 0
		r := New(store, func() { wakes++ })
		if err := r.Record(context.Background(), reporting.Entry{EventID: "x", Type: events.RotationCompleted, Data: json.RawMessage(`{}`)}); err != nil {
			t.Fatal(err)
		}
		if len(store.entries) != 0 || wakes != 0 {
			t.Fatalf("recorded %d, woken %d", len(store.entries), wakes)
		}
	})
}

func TestWakes(t *testing.T) {
	t.Run("every event of the contract but the per-tenant outcomes wakes the engine", func(t *testing.T) {
		quiet := 0
		for _, spec := range events.Catalog() {
			if !Wakes(spec.Name) {
				quiet++
			}
		}
		if quiet != 4 {
			t.Fatalf("%d event types do not wake the engine, want the 4 per-tenant outcomes", quiet)
		}
	})
}
