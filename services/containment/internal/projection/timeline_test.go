package projection

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/pkg/events/readmodel"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
)

func TestTimelineAdd(t *testing.T) {
	at := time.Date(2026, 12, 3, 1, 0, 0, 0, time.UTC)
	entry := func(id string, sec int) reporting.Entry {
		return reporting.Entry{EventID: id, Type: events.NotificationSent, Time: at.Add(time.Duration(sec) * time.Second)}
	}
	ids := func(tl *timeline) string {
		s := ""
		for _, e := range tl.entries {
			s += e.EventID
		}
		return s
	}
	var tl timeline
	tl.add([]reporting.Entry{entry("a", 1), entry("b", 2)}, "10")
	t.Run("an entry read again is kept once", func(t *testing.T) {
		tl.add([]reporting.Entry{entry("b", 2), entry("c", 3)}, "12")
		if got := ids(&tl); got != "abc" {
			t.Fatalf("got %q, want abc", got)
		}
	})
	t.Run("the same id of another type is another entry", func(t *testing.T) {
		other := entry("c", 5)
		other.Type = events.RotationTenantCompleted
		tl.add([]reporting.Entry{other}, "14")
		if got := ids(&tl); got != "abcc" {
			t.Fatalf("got %q, want abcc", got)
		}
	})
	if tl.cursor != "14" {
		t.Fatalf("cursor %q, want the last read's", tl.cursor)
	}
}

// TestTimelineFold folds one incident's timeline read in many orders and
// many reads, as the projector reads it while services record events
// concurrently: the document must always be what the report built from
// the whole timeline says.
func TestTimelineFold(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)
	at := func(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }
	n := 0
	entry := func(name events.Name, sec float64, data any) reporting.Entry {
		raw, err := json.Marshal(data)
		if err != nil {
			t.Fatal(err)
		}
		n++
		return reporting.Entry{EventID: fmt.Sprintf("e%03d", n), Type: name, Time: at(sec), Source: "/test", Data: raw}
	}
	const id = "inc-1"
	all := []reporting.Entry{
		entry(events.IncidentOpened, 0.1, events.IncidentOpenedData{IncidentID: id}),
		entry(events.VaultSealed, 0.5, events.VaultSealedData{IncidentID: id, Nodes: []events.NodeSeal{{Address: "a", ConfirmedAt: at(0.4)}, {Address: "b", ConfirmedAt: at(0.45)}}}),
		entry(events.AssessmentCompleted, 2, events.AssessmentCompletedData{IncidentID: id}),
		entry(events.VaultUnsealed, 60, events.VaultUnsealedData{IncidentID: id}),
		entry(events.AccessRevoked, 61, events.AccessRevokedData{IncidentID: id}),
		entry(events.RotationPlanned, 62, events.RotationPlannedData{IncidentID: id, Tenants: 6}),
		entry(events.ContainmentFailed, 63, events.ContainmentFailedData{IncidentID: id, Nodes: []string{"c"}, Reason: "timeout"}),
		// A second seal round later: the phases are the first round's.
		entry(events.VaultSealed, 64, events.VaultSealedData{IncidentID: id, Nodes: []events.NodeSeal{{Address: "a", ConfirmedAt: at(63.9)}}}),
		entry(events.VaultUnsealed, 64.2, events.VaultUnsealedData{IncidentID: id}),
		entry(events.AccessRevoked, 64.4, events.AccessRevokedData{IncidentID: id}),
		entry(events.RotationPlatformDone, 65, events.RotationPlatformCompletedData{IncidentID: id, Entry: "db", Result: credentials.Result{Kind: credentials.Database, State: credentials.Failed, Reason: "refused"}}),
		{EventID: "e-bad", Type: events.NotificationFailed, Time: at(65.5), Source: "/test", Data: json.RawMessage(`{"tenant_id":`)},
	}
	for i := range 6 {
		tenant := fmt.Sprintf("t%d", i)
		sec := 66 + float64(i)
		if i == 2 { // failed, then completed by the retry
			all = append(all, entry(events.RotationTenantFailed, sec, events.RotationTenantFailedData{IncidentID: id, TenantID: tenant, Step: "ssh", Reason: "refused"}))
			sec += 20
		}
		if i == 5 { // failed for good, and not told
			all = append(all, entry(events.RotationTenantFailed, sec, events.RotationTenantFailedData{IncidentID: id, TenantID: tenant, Step: "dkim", Reason: "dns"}),
				entry(events.NotificationFailed, sec+0.5, events.NotificationFailedData{IncidentID: id, TenantID: tenant, Channel: "email", Reason: "550"}))
			continue
		}
		all = append(all, entry(events.RotationTenantCompleted, sec, events.RotationTenantCompletedData{IncidentID: id, TenantID: tenant}),
			entry(events.NotificationSent, sec+0.5, events.NotificationSentData{IncidentID: id, TenantID: tenant, Channel: "email"}))
	}
	partial := slices.Clone(all)
	all = append(all,
		entry(events.RotationCompleted, 100, events.RotationCompletedData{IncidentID: id, Completed: 5, Failed: 1}),
		entry(events.NotificationsCompleted, 101, events.NotificationsCompletedData{IncidentID: id, Sent: 5, Failed: 1}))
	snap := Snapshot{Incident: incident.Incident{ID: id, Phase: incident.PhaseRecovering, DetectedAt: t0}, ReadAt: at(120)}

	check := func(t *testing.T, entries []reporting.Entry, wantRotated, wantRotationFailed, wantNotified int) {
		t.Helper()
		rng := rand.New(rand.NewPCG(1, uint64(len(entries))))
		for round := range 50 {
			order := slices.Clone(entries)
			rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			var tl timeline
			for len(order) > 0 { // reads of 1 to 5 entries, some read twice
				k := min(len(order), 1+rng.IntN(5))
				tl.add(order[:k+rng.IntN(min(2, len(order)-k+1))], fmt.Sprint(round))
				order = order[k:]
			}
			doc, draft := tl.document(snap), tl.draft(snap)
			if !reflect.DeepEqual(doc.Phases, draft.Phases) {
				t.Fatalf("round %d: phases %+v, the report's %+v", round, doc.Phases, draft.Phases)
			}
			if !reflect.DeepEqual(doc.Failures, draft.Failures) || doc.FailuresTotal != len(draft.Failures) {
				t.Fatalf("round %d: failures %+v, the report's %+v", round, doc.Failures, draft.Failures)
			}
			if r, nt := doc.Rotation, doc.Notification; r == nil || r.Planned != 6 || r.Completed != wantRotated || r.Failed != wantRotationFailed || nt.Completed != wantNotified {
				t.Fatalf("round %d: rotation %+v, notification %+v", round, r, nt)
			}
		}
	}
	t.Run("while the rotation runs, a tenant that failed and then completed counts once, as completed", func(t *testing.T) {
		check(t, partial, 5, 1, 5)
	})
	t.Run("once the completions are recorded, their totals are the document's", func(t *testing.T) {
		check(t, all, 5, 1, 5)
	})
	t.Run("the containment phase ends when the first round's last node was confirmed", func(t *testing.T) {
		var tl timeline
		tl.add(all, "")
		if p := tl.document(snap).Phases[0]; p.Name != "containment" || !p.End.Equal(at(0.45)) {
			t.Fatalf("first phase %+v", p)
		}
	})
}

// oneIncident is a Source of one incident whose snapshot the test sets.
type oneIncident struct{ snap Snapshot }

func (o *oneIncident) Markers(context.Context, int) (map[string]string, error) {
	return map[string]string{o.snap.Incident.ID: fmt.Sprintf("%d/%s/", o.snap.Incident.Version, o.snap.Incident.Phase)}, nil
}

func (o *oneIncident) Snapshot(context.Context, string, string) (Snapshot, error) { return o.snap, nil }

type dropAll struct{}

func (dropAll) PutIncident(context.Context, readmodel.Incident) error  { return nil }
func (dropAll) PutReport(context.Context, string, report.Report) error { return nil }

func TestClosedIncidentLetsGoOfItsEntries(t *testing.T) {
	// The projector times its builds by the clock (the gap since the last
	// one): the passes' times must be the clock's too.
	at := time.Now()
	src := &oneIncident{snap: Snapshot{Incident: incident.Incident{ID: "inc-1", Phase: incident.PhaseRecovering, Version: 1}, ReadAt: at,
		Timeline: []reporting.Entry{{EventID: "e1", Type: events.IncidentOpened, Time: at, Data: json.RawMessage(`{}`)}}}}
	p := New(Config{MinGap: time.Nanosecond, ProgressGap: time.Nanosecond}, src, dropAll{}, nil, slog.New(slog.DiscardHandler))
	p.Pass(context.Background(), at)
	if n := len(p.written["inc-1"].timeline.entries); n != 1 {
		t.Fatalf("an open incident keeps %d entries, want 1 (its draft reads them)", n)
	}
	src.snap.Incident.Phase, src.snap.Incident.Version, src.snap.Report = incident.PhaseResolved, 2, &report.Report{}
	p.Pass(context.Background(), at.Add(time.Hour))
	if n := len(p.written["inc-1"].timeline.entries); n != 0 {
		t.Fatalf("a closed incident keeps %d entries, want none (its report is the stored one)", n)
	}
}
