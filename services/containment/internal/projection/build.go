package projection

import (
	"encoding/json"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/readmodel"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
)

// Build turns a snapshot into the incident's document and its draft
// report. The phases, counts and failures come from reporting.Build over the
// timeline: the document and the report cannot disagree.
func Build(s Snapshot) (readmodel.Incident, report.Report) {
	inc := s.Incident
	rinc := reporting.Incident{ID: inc.ID, Severity: string(inc.Severity), Summary: inc.Summary, Source: inc.Source, DetectedAt: inc.DetectedAt,
		OpenedAt: inc.OpenedAt, Detections: inc.Detections, TraceParent: inc.TraceParent}
	end := s.ReadAt
	if s.ResolvedAt != nil {
		end = *s.ResolvedAt
	}
	closed := inc.Phase == incident.PhaseResolved || inc.Phase == incident.PhaseFailed
	draft := reporting.Build(rinc, s.Timeline, "open", "not resolved yet: a draft", end)
	if closed && s.Report != nil {
		// The stored report is the one: its review, its outcome.
		draft = *s.Report
	}
	doc := readmodel.Incident{
		Schema: readmodel.SchemaVersion, Version: inc.Version, ID: inc.ID, Phase: string(inc.Phase), Severity: string(inc.Severity),
		Summary: inc.Summary, Source: inc.Source, OpenedBy: inc.OpenedBy, DetectedAt: inc.DetectedAt, OpenedAt: inc.OpenedAt,
		SealedAt: when(inc.SealedAt), UnsealedAt: when(inc.UnsealedAt), ResolvedAt: s.ResolvedAt,
		Detections: inc.Detections, SealRounds: inc.SealRound, Phases: draft.Phases,
		StuckReason: inc.StuckReason, StuckSince: when(inc.StuckSince), FailureReason: inc.FailureReason,
		TraceID: reporting.TraceID(inc.TraceParent), FailuresTotal: len(draft.Failures),
	}
	doc.Failures = draft.Failures[:min(len(draft.Failures), readmodel.MaxFailures)]
	for _, seal := range s.Seals {
		doc.Seals = append(doc.Seals, readmodel.Seal{Round: seal.Round, NodeSeal: events.NodeSeal{Address: seal.Address, Method: seal.Method,
			RequestedAt: seal.RequestedAt, ConfirmedAt: seal.ConfirmedAt}})
	}
	for _, g := range inc.Gate {
		doc.Gate = append(doc.Gate, readmodel.GateNode{Address: g.Address, Reachable: g.Reachable, Sealed: g.Sealed, Active: g.Active,
			Threshold: g.Threshold, Shares: g.Shares, Progress: g.Progress})
	}
	if r := s.Recovery; r != nil {
		c := r.Ceremony
		doc.Recovery = &readmodel.Recovery{AccessRevokedAt: r.AccessRevokedAt, KeptReasons: r.KeptReasons,
			Revoked: readmodel.Revoked{AuthMethodsDisabled: r.Revoked.AuthMethodsDisabled, TokensRevoked: r.Revoked.TokensRevoked,
				TokensKept: r.Revoked.TokensKept, LeasePrefixes: r.Revoked.LeasePrefixes, KeyTerm: r.Revoked.KeyTerm},
			Ceremony: readmodel.Ceremony{Phase: c.Phase, Nonce: c.Nonce, RecoveryKeys: c.RecoveryKeys, T: c.Threshold, N: c.Shares,
				Progress: c.Progress, VerifyNonce: c.VerifyNonce, VerifyProgress: c.VerifyProgress, Fingerprints: c.Fingerprints,
				StartedAt: c.StartedAt, CompletedAt: c.CompletedAt, ConfirmedBy: c.ConfirmedBy, Restarts: c.Restarts, Note: c.Note},
			RotationDone: r.RotationDone, NotifiedDone: r.NotifiedDone, RestoredAt: r.RestoredAt}
	}
	if since, ok := firstOf(s.Timeline, events.RotationPlanned); ok {
		rot, note := progress(s.Timeline, draft.Actions, since)
		rot.Settle(end)
		note.Settle(end)
		doc.Rotation, doc.Notification = &rot, &note
	}
	return doc, draft
}

// progress counts the tenants rotated and notified so far: each tenant's
// latest outcome (a retried tenant that failed and then completed counts
// once, as completed). Once rotation.completed or notifications.completed
// is recorded, its totals are the ones the report gives.
func progress(entries []reporting.Entry, a report.Actions, since time.Time) (rot, note readmodel.Progress) {
	rotated, notified := map[string]bool{}, map[string]bool{}
	for _, e := range entries {
		var d struct {
			TenantID string `json:"tenant_id"`
		}
		switch e.Type {
		case events.RotationTenantCompleted, events.RotationTenantFailed, events.NotificationSent, events.NotificationFailed:
			if json.Unmarshal(e.Data, &d) != nil || d.TenantID == "" {
				continue
			}
		}
		switch e.Type {
		case events.RotationTenantCompleted:
			rotated[d.TenantID] = true
		case events.RotationTenantFailed:
			if _, ok := rotated[d.TenantID]; !ok { // a failure never undoes a completion
				rotated[d.TenantID] = false
			}
		case events.NotificationSent:
			notified[d.TenantID] = true
		case events.NotificationFailed:
			if _, ok := notified[d.TenantID]; !ok {
				notified[d.TenantID] = false
			}
		}
	}
	count := func(m map[string]bool) (ok, failed int) {
		for _, v := range m {
			if v {
				ok++
			} else {
				failed++
			}
		}
		return ok, failed
	}
	rot = readmodel.Progress{Planned: a.TenantsPlanned, Since: since}
	note = readmodel.Progress{Planned: a.TenantsPlanned, Since: since}
	rot.Completed, rot.Failed = count(rotated)
	note.Completed, note.Failed = count(notified)
	if _, done := firstOf(entries, events.RotationCompleted); done {
		rot.Completed, rot.Failed = a.TenantsRotated, a.TenantsFailed
	}
	if _, done := firstOf(entries, events.NotificationsCompleted); done {
		note.Completed, note.Failed = a.TenantsNotified, a.NotificationsFailed
	}
	return rot, note
}

func firstOf(entries []reporting.Entry, n events.Name) (time.Time, bool) {
	for _, e := range entries {
		if e.Type == n {
			return e.Time, true
		}
	}
	return time.Time{}, false
}

func when(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
