// Package timeline records every event of an incident and, when access is
// restored — the runbook's last machine step, which itself waits for every
// tenant to be rotated and notified (or failed) — resolves the incident:
// it builds the post-incident report from the recorded events, stores it
// and announces incident.resolved.
package timeline

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/report"
)

// ErrUnknownIncident is returned when an event names an incident
// containment never opened.
var ErrUnknownIncident = errors.New("incident not known to containment")

// ErrTimelineIncomplete is returned when access.restored is recorded
// before the completions that caused it (a retried event comes back after
// later ones): the report would miss them, so resolution waits.
var ErrTimelineIncomplete = errors.New("timeline lacks rotation.completed or notifications.completed")

// Store keeps the timeline and the reports.
type Store interface {
	// RecordEvent stores one event; the same event id twice is a no-op.
	RecordEvent(ctx context.Context, incidentID string, e report.Entry) error
	// Timeline returns an incident's recorded events.
	Timeline(ctx context.Context, incidentID string) ([]report.Entry, error)
	// ReportIncident returns what the report needs of the incident row
	// (ErrUnknownIncident when there is none).
	ReportIncident(ctx context.Context, incidentID string) (report.Incident, error)
	// SaveReport stores the report and ends the incident, in one step.
	SaveReport(ctx context.Context, r report.Report) error
}

// Publisher emits events with a de-duplication id.
type Publisher interface {
	PublishWithID(ctx context.Context, name events.Name, id string, data any) error
}

// Recorder records events and resolves incidents.
type Recorder struct {
	store  Store
	pub    Publisher
	logger *slog.Logger
	now    func() time.Time
	// phases records each resolved incident's phase durations.
	phases metric.Float64Histogram
}

// New returns a Recorder; mp (nil for none) receives the phase durations.
func New(store Store, pub Publisher, logger *slog.Logger, mp metric.MeterProvider) *Recorder {
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	phases, _ := mp.Meter("github.com/lockdown/lockdown/services/containment").Float64Histogram("lockdown.incident.phase.duration",
		metric.WithUnit("s"), metric.WithDescription("Duration of each runbook phase of a resolved incident."),
		metric.WithExplicitBucketBoundaries(0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400))
	return &Recorder{store: store, pub: pub, logger: logger, now: time.Now, phases: phases}
}

// Record stores one event of the events stream; events that belong to no
// incident are skipped. access.restored resolves the incident once the
// timeline holds what led to it; force (the message's last delivery)
// resolves with what there is.
func (r *Recorder) Record(ctx context.Context, e report.Entry, force bool) error {
	var ref struct {
		IncidentID string `json:"incident_id"`
	}
	if err := json.Unmarshal(e.Data, &ref); err != nil || ref.IncidentID == "" {
		return nil
	}
	if err := r.store.RecordEvent(ctx, ref.IncidentID, e); err != nil {
		return err
	}
	if e.Type == events.AccessRestored {
		return r.resolve(ctx, ref.IncidentID, force)
	}
	return nil
}

// resolve builds, stores and announces the report. It is idempotent: the
// report is rebuilt from the same timeline and the event id is fixed.
func (r *Recorder) resolve(ctx context.Context, incidentID string, force bool) error {
	const outcome = "resolved"
	inc, err := r.store.ReportIncident(ctx, incidentID)
	if err != nil {
		return err
	}
	entries, err := r.store.Timeline(ctx, incidentID)
	if err != nil {
		return err
	}
	if !force && !(has(entries, events.RotationCompleted) && has(entries, events.NotificationsCompleted)) {
		return ErrTimelineIncomplete
	}
	resolvedAt := r.now().UTC()
	for _, e := range entries {
		if e.Type == events.AccessRestored {
			resolvedAt = e.Time // the same time however often it is rebuilt
		}
	}
	rep := report.Build(inc, entries, outcome, "", resolvedAt)
	if err := r.store.SaveReport(ctx, rep); err != nil {
		return err
	}
	for _, p := range rep.Phases {
		r.phases.Record(ctx, p.Duration.Seconds(), metric.WithAttributes(attribute.String("lockdown.phase", p.Name), attribute.Bool("lockdown.target_met", p.Met)))
	}
	r.logger.InfoContext(ctx, "incident resolved", slog.String("incident_id", incidentID), slog.String("outcome", outcome),
		slog.Int("tenants_rotated", rep.Actions.TenantsRotated), slog.Int("tenants_notified", rep.Actions.TenantsNotified), slog.Int("failures", len(rep.Failures)))
	return r.pub.PublishWithID(ctx, events.IncidentResolved, incidentID+"/incident.resolved", events.IncidentResolvedData{
		IncidentID: incidentID, Outcome: outcome, ResolvedAt: resolvedAt, AffectedTenants: rep.AffectedCount,
		TenantsRotated: rep.Actions.TenantsRotated, TenantsNotified: rep.Actions.TenantsNotified, Failures: len(rep.Failures),
	})
}

func has(entries []report.Entry, name events.Name) bool {
	for _, e := range entries {
		if e.Type == name {
			return true
		}
	}
	return false
}
