// Package timeline records every event of an incident, as the events
// stream delivers it, for the post-incident report and for the incident
// engine (which reads from it that rotation and notification completed).
// Resolution itself is the engine's: it builds the report from what is
// recorded here.
package timeline

import (
	"context"
	"errors"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
)

// ErrUnknownIncident is returned when an event names an incident
// containment never opened.
var ErrUnknownIncident = errors.New("incident not known to containment")

// Store keeps the timeline.
type Store interface {
	// RecordEvent stores one event; the same event id twice is a no-op.
	RecordEvent(ctx context.Context, incidentID string, e reporting.Entry) error
}

// Recorder records events and tells the engine that one it acts on
// arrived.
type Recorder struct {
	store    Store
	recorded func()
}

// New returns a Recorder; recorded (may be nil) is called after each
// recorded event the engine acts on (Wakes).
func New(store Store, recorded func()) *Recorder {
	if recorded == nil {
		recorded = func() {}
	}
	return &Recorder{store: store, recorded: recorded}
}

// Record stores one event of the events stream; events that belong to no
// incident are skipped.
func (r *Recorder) Record(ctx context.Context, e reporting.Entry) error {
	id := IncidentOf(e.Data)
	if id == "" {
		return nil
	}
	if err := r.store.RecordEvent(ctx, id, e); err != nil {
		return err
	}
	if Wakes(e.Type) {
		r.recorded()
	}
	return nil
}

// Wakes reports whether an event of type t is one the engine acts on as
// it arrives. The per-tenant events — a job's outcome, a notice's — are
// not: the engine waits for rotation.completed and notifications.completed,
// which close them, and reads them only then (the verification before
// access returns, the report). They are one to three per tenant, tens of
// thousands in a large incident, and each wake is a pass over every open
// incident (several PostgreSQL queries and a look at the ceremony): at
// 2,000 tenants those passes were 3,500 of containment's queries during
// the rotation. Every other type wakes the engine, so an event added to
// the contract later is acted on at once by default; one not woken for is
// still seen at the engine's next tick.
func Wakes(t events.Name) bool {
	switch t {
	case events.RotationTenantCompleted, events.RotationTenantFailed, events.NotificationSent, events.NotificationFailed:
		return false
	}
	return true
}

// IncidentOf reads the incident id of an event's data ("" for none).
func IncidentOf(data []byte) string { return events.IncidentOf(data) }
