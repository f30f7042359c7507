package projection

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/readmodel"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
)

// timeline is one incident's timeline as the projector has read it, kept
// between rebuilds so that each reads only the entries recorded since the
// last (Source.Snapshot's cursor), and folded entry by entry into what
// the document shows: a rebuild costs what was recorded since the last
// one, not the whole timeline (a 10,000-tenant incident has 30,000
// entries). Entries are recorded in about, not exactly, the order of
// their times (many services emit them at once), so everything folded
// here is kept in any order: the earliest time of each type, the totals
// of the latest event that carries them, each tenant's best outcome, the
// failures sorted as they come. The draft report is the full account,
// built from the entries (reporting.Build) only when it is written.
type timeline struct {
	entries []reporting.Entry
	keys    map[entryKey]struct{}
	cursor  string

	first map[events.Name]time.Time
	// sealed is the first vault.sealed (its time and id), sealedEnd when
	// its last node was confirmed sealed.
	sealed    *reporting.Entry
	sealedEnd time.Time
	// planned, rotation and notification are the latest events carrying
	// the report's totals.
	planned      latest[events.RotationPlannedData]
	rotation     latest[events.RotationCompletedData]
	notification latest[events.NotificationsCompletedData]
	failures     []failureAt
	// rotated and notified are each tenant's outcome so far.
	rotated, notified outcomes
}

// entryKey is what makes a timeline entry one (the table's key).
type entryKey struct {
	typ string
	id  string
}

// add folds the entries read since the cursor (some may be known
// already) and moves the cursor.
func (t *timeline) add(read []reporting.Entry, cursor string) {
	if t.keys == nil {
		t.keys, t.first = map[entryKey]struct{}{}, map[events.Name]time.Time{}
		t.rotated, t.notified = outcomes{of: map[string]bool{}}, outcomes{of: map[string]bool{}}
	}
	for _, e := range read {
		k := entryKey{string(e.Type), e.EventID}
		if _, ok := t.keys[k]; ok {
			continue
		}
		t.keys[k] = struct{}{}
		t.entries = append(t.entries, e)
		t.fold(e)
	}
	t.cursor = cursor
}

// fold applies one new entry to what the document shows. An entry that
// does not decode counts for nothing here; the report lists it.
func (t *timeline) fold(e reporting.Entry) {
	if at, ok := t.first[e.Type]; !ok || e.Time.Before(at) {
		t.first[e.Type] = e.Time
	}
	if f, ok := reporting.FailureOf(e); ok {
		// Failures are few: each is put in its place in the timeline's
		// order as it comes.
		at := failureAt{Failure: f, id: e.EventID}
		i, _ := slices.BinarySearchFunc(t.failures, at, func(a, b failureAt) int {
			return reporting.Order(reporting.Entry{Time: a.Time, EventID: a.id}, reporting.Entry{Time: b.Time, EventID: b.id})
		})
		t.failures = slices.Insert(t.failures, i, at)
	}
	var tenant struct {
		TenantID string `json:"tenant_id"`
	}
	switch e.Type {
	case events.VaultSealed:
		var d events.VaultSealedData
		if json.Unmarshal(e.Data, &d) == nil && (t.sealed == nil || reporting.Order(e, *t.sealed) < 0) {
			t.sealed, t.sealedEnd = &reporting.Entry{Time: e.Time, EventID: e.EventID}, incident.LastConfirmed(d.Nodes)
		}
	case events.RotationPlanned:
		t.planned.add(e)
	case events.RotationCompleted:
		t.rotation.add(e)
	case events.NotificationsCompleted:
		t.notification.add(e)
	case events.RotationTenantCompleted, events.RotationTenantFailed, events.NotificationSent, events.NotificationFailed:
		if json.Unmarshal(e.Data, &tenant) != nil || tenant.TenantID == "" {
			return
		}
	}
	switch e.Type {
	case events.RotationTenantCompleted:
		t.rotated.succeed(tenant.TenantID)
	case events.RotationTenantFailed:
		t.rotated.fail(tenant.TenantID)
	case events.NotificationSent:
		t.notified.succeed(tenant.TenantID)
	case events.NotificationFailed:
		t.notified.fail(tenant.TenantID)
	}
}

// failureAt is a failure and the event id that reported it.
type failureAt struct {
	report.Failure
	id string
}

// latest is the data of the latest event of one type, in the timeline's
// order (as the report reads it: the last one wins).
type latest[T any] struct {
	at   reporting.Entry // its time and id
	data T
	seen bool
}

func (l *latest[T]) add(e reporting.Entry) {
	var d T
	if json.Unmarshal(e.Data, &d) != nil || (l.seen && reporting.Order(e, l.at) < 0) {
		return
	}
	l.at, l.data, l.seen = reporting.Entry{Time: e.Time, EventID: e.EventID}, d, true
}

// outcomes is each tenant's outcome of one kind (rotated, told) and their
// counts: a failure never undoes a success (a retried tenant that failed
// and then succeeded counts once, as a success), whatever order the two
// were recorded in.
type outcomes struct {
	of         map[string]bool
	ok, failed int
}

func (o *outcomes) succeed(tenant string) {
	ok, seen := o.of[tenant]
	switch {
	case !seen:
		o.ok++
	case !ok:
		o.failed--
		o.ok++
	}
	o.of[tenant] = true
}

func (o *outcomes) fail(tenant string) {
	if _, seen := o.of[tenant]; !seen {
		o.of[tenant] = false
		o.failed++
	}
}

// document is the incident's document from the timeline folded so far.
// A closed incident's stored report gives its phases, failures and
// totals (its review may have changed them).
func (t *timeline) document(s Snapshot) readmodel.Incident {
	inc, end := s.Incident, s.end()
	phases := reporting.Phases(s.reportingIncident(), t.first, t.sealedEnd, end)
	failures := make([]report.Failure, 0, min(len(t.failures), readmodel.MaxFailures))
	for _, f := range t.failures[:min(len(t.failures), readmodel.MaxFailures)] {
		failures = append(failures, f.Failure)
	}
	failuresTotal := len(t.failures)
	totals := report.Actions{TenantsPlanned: t.planned.data.Tenants, TenantsRotated: t.rotation.data.Completed, TenantsFailed: t.rotation.data.Failed,
		TenantsNotified: t.notification.data.Sent, NotificationsFailed: t.notification.data.Failed}
	if s.closed() && s.Report != nil {
		phases, failures, totals = s.Report.Phases, s.Report.Failures, s.Report.Actions
		failuresTotal = len(failures)
	}
	doc := readmodel.Incident{
		Schema: readmodel.SchemaVersion, Version: inc.Version, ID: inc.ID, Phase: string(inc.Phase), Severity: string(inc.Severity),
		Summary: inc.Summary, Source: inc.Source, OpenedBy: inc.OpenedBy, DetectedAt: inc.DetectedAt, OpenedAt: inc.OpenedAt,
		SealedAt: when(inc.SealedAt), UnsealedAt: when(inc.UnsealedAt), ResolvedAt: s.ResolvedAt,
		Detections: inc.Detections, SealRounds: inc.SealRound, Phases: phases,
		StuckReason: inc.StuckReason, StuckSince: when(inc.StuckSince), FailureReason: inc.FailureReason,
		TraceID: reporting.TraceID(inc.TraceParent), FailuresTotal: failuresTotal,
	}
	doc.Failures = slices.Clone(failures[:min(len(failures), readmodel.MaxFailures)])
	for _, seal := range s.Seals {
		doc.Seals = append(doc.Seals, readmodel.Seal{Round: seal.Round, NodeSeal: events.NodeSeal{Address: seal.Address, Method: seal.Method,
			RequestedAt: seal.RequestedAt, ConfirmedAt: seal.ConfirmedAt}})
	}
	for _, g := range inc.Gate {
		doc.Gate = append(doc.Gate, readmodel.GateNode{Address: g.Address, Reachable: g.Reachable, Sealed: g.Sealed, Active: g.Active,
			Threshold: g.Threshold, Shares: g.Shares, Progress: g.Progress})
	}
	doc.Recovery = recoveryOf(s)
	if since, ok := t.first[events.RotationPlanned]; ok {
		rot := readmodel.Progress{Planned: totals.TenantsPlanned, Since: since, Completed: t.rotated.ok, Failed: t.rotated.failed}
		note := readmodel.Progress{Planned: totals.TenantsPlanned, Since: since, Completed: t.notified.ok, Failed: t.notified.failed}
		// Once rotation.completed or notifications.completed is recorded,
		// its totals are the ones the report gives.
		if _, done := t.first[events.RotationCompleted]; done {
			rot.Completed, rot.Failed = totals.TenantsRotated, totals.TenantsFailed
		}
		if _, done := t.first[events.NotificationsCompleted]; done {
			note.Completed, note.Failed = totals.TenantsNotified, totals.NotificationsFailed
		}
		rot.Settle(end)
		note.Settle(end)
		doc.Rotation, doc.Notification = &rot, &note
	}
	return doc
}

// draft is the incident's report: the stored one once it is closed, else
// a draft built from every entry read.
func (t *timeline) draft(s Snapshot) report.Report {
	if s.closed() && s.Report != nil {
		return *s.Report
	}
	return reporting.Build(s.reportingIncident(), t.entries, "open", "not resolved yet: a draft", s.end())
}
