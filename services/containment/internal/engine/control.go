package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
)

// ErrClosed is returned by Resume and Abort for an incident that already
// ended: there is nothing to drive or to close.
var ErrClosed = errors.New("incident is closed")

// ErrNoReason is returned by Abort without a reason: the report must say
// why an incident was closed as failed.
var ErrNoReason = errors.New("an abort needs a reason")

// Resume records an operator's request to drive the incident now: its
// stuck mark is cleared, the engine is woken, and the event the services
// after containment wait on is announced again under a new id, so a
// consumer that dead-lettered it gets it again (their handlers are
// idempotent). Any containment process may record it.
func (e *Engine) Resume(ctx context.Context, req reporting.Entry, d events.IncidentControlData) error {
	return e.control(ctx, d.IncidentID, func(inc incident.Incident) (Change, error) {
		n := inc.Redrives + 1
		c := Change{IncidentID: inc.ID, Version: inc.Version, Redrives: &n, Stuck: &Stuck{}, Timeline: []reporting.Entry{req}}
		if inc.Phase == incident.PhaseRecovering {
			st, err := e.store.LoadRecovery(ctx, inc.ID)
			if err != nil {
				return c, err
			}
			entries, err := e.store.Timeline(ctx, inc.ID)
			if err != nil {
				return c, err
			}
			if st.RevokedRound > 0 && !has(entries, events.RotationCompleted) {
				c.Emit = append(c.Emit, events.Outgoing{Name: events.AccessRevoked,
					ID: fmt.Sprintf("%s/access.revoked/%d/resume-%d", inc.ID, st.RevokedRound, n), Data: st.Revoked})
			}
		}
		e.log.InfoContext(ctx, "resume requested", slog.String("incident_id", inc.ID), slog.String("phase", string(inc.Phase)),
			slog.String("requested_by", d.RequestedBy), slog.Int("reannounced", len(c.Emit)))
		return c, nil
	})
}

// Abort closes the incident as failed with the operator's reason: the
// report is stored with it and incident.resolved announces the outcome,
// so the next breach opens a new incident.
func (e *Engine) Abort(ctx context.Context, req reporting.Entry, d events.IncidentControlData) error {
	if d.Reason == "" {
		return ErrNoReason
	}
	return e.control(ctx, d.IncidentID, func(inc incident.Incident) (Change, error) {
		ri, err := e.reportIncident(ctx, inc.ID)
		if err != nil {
			return Change{}, err
		}
		entries, err := e.store.Timeline(ctx, inc.ID)
		if err != nil {
			return Change{}, err
		}
		entries = append(entries, req)
		at := time.Now().UTC()
		reason := fmt.Sprintf("aborted by %s: %s", d.RequestedBy, d.Reason)
		rep := reporting.Build(ri, entries, "failed", reason, at)
		e.log.WarnContext(ctx, "incident aborted by an operator", slog.String("incident_id", inc.ID), slog.String("phase", string(inc.Phase)),
			slog.String("requested_by", d.RequestedBy), slog.String("reason", d.Reason))
		return Change{IncidentID: inc.ID, Version: inc.Version, Phase: incident.PhaseFailed, ResolvedAt: at, FailureReason: reason,
			Report: &rep, Stuck: &Stuck{}, Timeline: []reporting.Entry{req}, Emit: []events.Outgoing{ResolvedEvent(rep)}}, nil
	})
}

// control applies an operator's change, unfenced (any process records
// it), reading the incident again when the engine changed it meanwhile.
func (e *Engine) control(ctx context.Context, id string, change func(incident.Incident) (Change, error)) error {
	for range 20 {
		inc, err := e.store.Incident(ctx, id)
		if err != nil {
			return err
		}
		if !inc.Phase.Open() {
			return fmt.Errorf("%w: %s is %s", ErrClosed, id, inc.Phase)
		}
		c, err := change(inc)
		if err != nil {
			return err
		}
		err = e.store.Apply(ctx, Fence{}, c)
		if errors.Is(err, ErrConflict) {
			continue
		}
		if err == nil {
			e.mu.Lock()
			delete(e.trouble, id)
			e.mu.Unlock()
			e.Wake()
		}
		return err
	}
	return fmt.Errorf("incident %s kept changing: %w", id, ErrConflict)
}

// ErrNotAwaiting is returned by Confirm for an incident that does not wait
// for confirmation (its breach sealed Vault by itself, or it was
// confirmed already).
var ErrNotAwaiting = errors.New("incident does not wait for confirmation")

// Confirm records an operator's confirmation of an incident whose breach
// was not allowed to seal by itself: its first seal round starts, and the
// engine seals every node at once.
func (e *Engine) Confirm(ctx context.Context, req reporting.Entry, d events.IncidentControlData) error {
	return e.control(ctx, d.IncidentID, func(inc incident.Incident) (Change, error) {
		if inc.Phase != incident.PhaseAwaiting {
			return Change{}, fmt.Errorf("%w: %s is %s", ErrNotAwaiting, inc.ID, inc.Phase)
		}
		e.log.WarnContext(ctx, "sealing confirmed by an operator", slog.String("incident_id", inc.ID), slog.String("requested_by", d.RequestedBy))
		return Change{IncidentID: inc.ID, Version: inc.Version, Phase: incident.PhaseContaining, NewRound: true, Timeline: []reporting.Entry{req}}, nil
	})
}

// RefreshReport rebuilds a closed incident's report from its timeline,
// keeping its outcome and time: corrected totals that arrive after the end
// (failed tenants retried with lockdown retry, rotated and told) reach the
// report. An open incident is left to the engine, which builds its report
// when it resolves.
func (e *Engine) RefreshReport(ctx context.Context, id string) error {
	for range 20 {
		inc, err := e.store.Incident(ctx, id)
		if err != nil || inc.Phase.Open() {
			return err
		}
		old, err := e.store.Report(ctx, id)
		if err != nil {
			return err
		}
		ri, err := e.reportIncident(ctx, id)
		if err != nil {
			return err
		}
		entries, err := e.store.Timeline(ctx, id)
		if err != nil {
			return err
		}
		// The review is in the timeline too: Build folds it in.
		rep := reporting.Build(ri, entries, old.Outcome, old.Reason, old.ResolvedAt)
		err = e.store.Apply(ctx, Fence{}, Change{IncidentID: id, Version: inc.Version, Report: &rep})
		if errors.Is(err, ErrConflict) {
			continue
		}
		if err == nil {
			e.log.InfoContext(ctx, "report of a closed incident refreshed", slog.String("incident_id", id),
				slog.Int("tenants_rotated", rep.Actions.TenantsRotated), slog.Int("tenants_notified", rep.Actions.TenantsNotified))
		}
		return err
	}
	return fmt.Errorf("incident %s kept changing: %w", id, ErrConflict)
}

// ErrReviewFinal is returned by Review when the incident's review was
// marked final: it takes no more changes.
var ErrReviewFinal = errors.New("the incident's review is final")

// Review records an operator's review request in the timeline and, for a
// closed incident, regenerates its stored report with it (an open
// incident's report is built with it at resolution). A request that is
// invalid, names no incident of this containment or comes after the
// review was made final is refused (the caller dead-letters it, which
// tells the operator why).
func (e *Engine) Review(ctx context.Context, req reporting.Entry, d events.IncidentReviewData) error {
	if err := d.Validate(); err != nil {
		return err
	}
	inc, err := e.store.Incident(ctx, d.IncidentID)
	if err != nil {
		return err
	}
	if !inc.Phase.Open() {
		old, err := e.store.Report(ctx, inc.ID)
		if err != nil {
			return err
		}
		if old.ReviewState == report.ReviewFinal {
			return fmt.Errorf("%w: %s", ErrReviewFinal, inc.ID)
		}
	}
	if err := e.store.Apply(ctx, Fence{}, Change{IncidentID: inc.ID, Version: inc.Version, Timeline: []reporting.Entry{req}}); err != nil {
		return err
	}
	e.log.InfoContext(ctx, "review recorded", slog.String("incident_id", inc.ID), slog.String("requested_by", d.RequestedBy), slog.Bool("final", d.Final))
	return e.RefreshReport(ctx, inc.ID)
}
