package projection

import (
	"time"

	"github.com/lockdown/lockdown/pkg/events/readmodel"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
)

// Build turns a snapshot into the incident's document and its draft
// report, from scratch. The projector keeps each incident's timeline
// folded between builds and makes the draft only when it writes it; both
// read the phases and the failures through reporting (Phases, FailureOf),
// so the document and the report cannot disagree.
func Build(s Snapshot) (readmodel.Incident, report.Report) {
	var t timeline
	t.add(s.Timeline, s.Cursor)
	return t.document(s), t.draft(s)
}

// end is when the incident's report ends: its resolution, or the read.
func (s Snapshot) end() time.Time {
	if s.ResolvedAt != nil {
		return *s.ResolvedAt
	}
	return s.ReadAt
}

// closed says whether the incident has ended (resolved or failed).
func (s Snapshot) closed() bool {
	return s.Incident.Phase == incident.PhaseResolved || s.Incident.Phase == incident.PhaseFailed
}

// reportingIncident is what the report needs of the incident.
func (s Snapshot) reportingIncident() reporting.Incident {
	inc := s.Incident
	return reporting.Incident{ID: inc.ID, Severity: string(inc.Severity), Summary: inc.Summary, Source: inc.Source, DetectedAt: inc.DetectedAt,
		OpenedAt: inc.OpenedAt, Detections: inc.Detections, TraceParent: inc.TraceParent}
}

// recoveryOf is the document's account of the recovery, if it began.
func recoveryOf(s Snapshot) *readmodel.Recovery {
	r := s.Recovery
	if r == nil {
		return nil
	}
	c := r.Ceremony
	return &readmodel.Recovery{AccessRevokedAt: r.AccessRevokedAt, KeptReasons: r.KeptReasons,
		Revoked: readmodel.Revoked{AuthMethodsDisabled: r.Revoked.AuthMethodsDisabled, TokensRevoked: r.Revoked.TokensRevoked,
			TokensKept: r.Revoked.TokensKept, LeasePrefixes: r.Revoked.LeasePrefixes, KeyTerm: r.Revoked.KeyTerm},
		Ceremony: readmodel.Ceremony{Phase: c.Phase, Nonce: c.Nonce, RecoveryKeys: c.RecoveryKeys, T: c.Threshold, N: c.Shares,
			Progress: c.Progress, VerifyNonce: c.VerifyNonce, VerifyProgress: c.VerifyProgress, Fingerprints: c.Fingerprints,
			StartedAt: c.StartedAt, CompletedAt: c.CompletedAt, ConfirmedBy: c.ConfirmedBy, Restarts: c.Restarts, Note: c.Note},
		RotationDone: r.RotationDone, NotifiedDone: r.NotifiedDone, RestoredAt: r.RestoredAt}
}

func when(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
