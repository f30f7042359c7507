package projection_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/readmodel"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
	"github.com/lockdown/lockdown/services/containment/internal/projection"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
)

// records is a fake Source: the pure logic of the projector (when it
// writes, what it retries) is tested here; TestContainment proves the
// read model on the real stack.
type records struct {
	mu    sync.Mutex
	snaps map[string]projection.Snapshot
	marks map[string]string
}

func (r *records) Markers(context.Context, int) (map[string]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]string{}
	for k, v := range r.marks {
		out[k] = v
	}
	return out, nil
}

func (r *records) Snapshot(_ context.Context, id, _ string) (projection.Snapshot, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.snaps[id]
	s.ReadAt = time.Now()
	return s, nil
}

func (r *records) set(id, marker string, s projection.Snapshot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snaps[id], r.marks[id] = s, marker
}

// buckets is a fake Sink that can be made to fail (NATS down).
type buckets struct {
	down    bool
	docs    map[string]readmodel.Incident
	reports map[string]report.Report
	writes  int
}

var errDown = errors.New("nats: no servers available for connection")

func (b *buckets) PutIncident(_ context.Context, d readmodel.Incident) error {
	if b.down {
		return errDown
	}
	b.writes++
	b.docs[d.ID] = d
	return nil
}

func (b *buckets) PutReport(_ context.Context, id string, r report.Report) error {
	if b.down {
		return errDown
	}
	b.reports[id] = r
	return nil
}

const id = "7f0c2a56-0d4e-4f7e-9d43-1b7a3c0e5a11"

func entry(t testing.TB, n events.Name, at time.Time, data any) reporting.Entry {
	t.Helper()
	raw, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	return reporting.Entry{EventID: fmt.Sprintf("%s/%d", n, at.UnixNano()), Type: n, Time: at, Source: "/test", Data: raw}
}

func snapshot(t testing.TB, phase incident.Phase, rotated int) projection.Snapshot {
	t0 := time.Date(2026, 11, 30, 7, 0, 0, 0, time.UTC)
	inc := incident.Incident{ID: id, Phase: phase, Severity: events.SeverityCritical, Summary: "root token used", Source: "/siem", DetectedAt: t0, OpenedAt: t0,
		SealedAt: t0.Add(time.Second), Version: int64(rotated), TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	s := projection.Snapshot{Incident: inc, ReadAt: t0.Add(time.Minute), Timeline: []reporting.Entry{
		entry(t, events.IncidentOpened, t0, events.IncidentOpenedData{IncidentID: id}),
		entry(t, events.RotationPlanned, t0.Add(10*time.Second), events.RotationPlannedData{IncidentID: id, Policy: "all", Tenants: 4}),
	}}
	for i := range rotated {
		s.Timeline = append(s.Timeline, entry(t, events.RotationTenantCompleted, t0.Add(time.Duration(11+i)*time.Second),
			events.RotationTenantCompletedData{IncidentID: id, TenantID: fmt.Sprintf("t%d", i)}))
	}
	return s
}

func TestProjector(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	newProjector := func(leader func() bool) (*projection.Projector, *records, *buckets) {
		src := &records{snaps: map[string]projection.Snapshot{}, marks: map[string]string{}}
		sink := &buckets{docs: map[string]readmodel.Incident{}, reports: map[string]report.Report{}}
		return projection.New(projection.Config{MinGap: time.Nanosecond, ProgressGap: time.Nanosecond}, src, sink, leader, log), src, sink
	}
	ctx := context.Background()

	t.Run("the document shows the phase, the trace and the rotation's progress from the timeline", func(t *testing.T) {
		doc, draft := projection.Build(snapshot(t, incident.PhaseRecovering, 3))
		if doc.Phase != "recovering" || doc.TraceID != "0af7651916cd43dd8448eb211c80319c" || doc.Schema != readmodel.SchemaVersion {
			t.Fatalf("document %+v", doc)
		}
		if doc.Rotation == nil || doc.Rotation.Planned != 4 || doc.Rotation.Completed != 3 || doc.Rotation.Remaining != 1 || doc.Rotation.ETA == "" {
			t.Fatalf("rotation %+v", doc.Rotation)
		}
		if draft.Outcome != "open" || len(draft.Actions.Rotations) != 3 {
			t.Fatalf("draft %+v", draft.Actions)
		}
	})

	t.Run("an incident that leaves the recent ones is forgotten, with the timeline kept for it", func(t *testing.T) {
		p, src, sink := newProjector(nil)
		src.set("inc-old", "1/resolved/3/1/1", snapshot(t, incident.PhaseResolved, 3))
		p.Pass(ctx, time.Now())
		before := sink.writes
		src.mu.Lock()
		delete(src.marks, "inc-old")
		src.mu.Unlock()
		p.Pass(ctx, time.Now())
		src.set("inc-old", "1/resolved/3/1/1", snapshot(t, incident.PhaseResolved, 3))
		p.Pass(ctx, time.Now())
		if sink.writes != before+1 {
			t.Fatalf("%d writes after it came back, want %d: the projector still held what it had written for it", sink.writes, before+1)
		}
	})

	t.Run("a write lost while NATS is down is made at the next pass", func(t *testing.T) {
		p, src, sink := newProjector(nil)
		src.set(id, "1", snapshot(t, incident.PhaseSealed, 0))
		sink.down = true
		if p.Pass(ctx, time.Now()) {
			t.Fatal("a pass with NATS down reported success")
		}
		sink.down = false
		if !p.Pass(ctx, time.Now().Add(time.Minute)) || sink.docs[id].Phase != "sealed" || sink.reports[id].Outcome != "open" {
			t.Fatalf("after NATS came back: %+v", sink.docs[id])
		}
	})

	t.Run("an unchanged incident is not written again; a change is", func(t *testing.T) {
		p, src, sink := newProjector(nil)
		src.set(id, "1", snapshot(t, incident.PhaseSealed, 0))
		p.Pass(ctx, time.Now())
		p.Pass(ctx, time.Now().Add(time.Minute))
		if sink.writes != 1 {
			t.Fatalf("%d writes of an unchanged incident", sink.writes)
		}
		src.set(id, "2", snapshot(t, incident.PhaseRecovering, 2))
		p.Pass(ctx, time.Now().Add(time.Minute))
		if sink.writes != 2 || sink.docs[id].Rotation.Completed != 2 {
			t.Fatalf("%d writes, document %+v", sink.writes, sink.docs[id])
		}
	})

	t.Run("a new phase is written at once; progress alone waits for its gap", func(t *testing.T) {
		src := &records{snaps: map[string]projection.Snapshot{}, marks: map[string]string{}}
		sink := &buckets{docs: map[string]readmodel.Incident{}, reports: map[string]report.Report{}}
		p := projection.New(projection.Config{MinGap: time.Nanosecond, ProgressGap: time.Hour}, src, sink, nil, log)
		src.set(id, "1/recovering/10", snapshot(t, incident.PhaseRecovering, 1))
		p.Pass(ctx, time.Now())
		src.set(id, "2/recovering/11", snapshot(t, incident.PhaseRecovering, 2))
		p.Pass(ctx, time.Now().Add(time.Second))
		if sink.writes != 1 || sink.docs[id].Rotation.Completed != 1 {
			t.Fatalf("a progress change inside the gap was written (%d writes)", sink.writes)
		}
		src.set(id, "3/resolved/12", snapshot(t, incident.PhaseResolved, 4))
		p.Pass(ctx, time.Now().Add(time.Second)) // past twice the build's time, far inside the progress gap
		if sink.writes != 2 || sink.docs[id].Phase != "resolved" {
			t.Fatalf("a new phase waited (%d writes, phase %s)", sink.writes, sink.docs[id].Phase)
		}
	})

	t.Run("a closed incident's stored report replaces the draft, and a review writes it again", func(t *testing.T) {
		p, src, sink := newProjector(nil)
		closed := snapshot(t, incident.PhaseResolved, 4)
		at := closed.Incident.OpenedAt.Add(time.Minute)
		closed.ResolvedAt = &at
		closed.Report = &report.Report{IncidentID: id, Outcome: "resolved"}
		src.set(id, "1", closed)
		p.Pass(ctx, time.Now())
		if sink.docs[id].Report.State != readmodel.ReportFinal || sink.reports[id].Outcome != "resolved" {
			t.Fatalf("document %+v, report %+v", sink.docs[id].Report, sink.reports[id])
		}
		reviewed := closed
		reviewed.Report = &report.Report{IncidentID: id, Outcome: "resolved", RootCause: "a leaked CI token"}
		src.set(id, "2", reviewed)
		p.Pass(ctx, time.Now().Add(time.Minute))
		if sink.reports[id].RootCause != "a leaked CI token" {
			t.Fatalf("report after the review %+v", sink.reports[id])
		}
	})

	t.Run("only the leader writes, and a new leader writes everything again", func(t *testing.T) {
		var leading bool
		var mu sync.Mutex
		// Each pass of Run asks leader once: the second question means the
		// first pass, a standby's, is over — the barrier, not a sleep.
		asked := make(chan struct{}, 16)
		p, src, sink := newProjector(func() bool {
			mu.Lock()
			defer mu.Unlock()
			select {
			case asked <- struct{}{}:
			default:
			}
			return leading
		})
		src.set(id, "1", snapshot(t, incident.PhaseSealed, 0))
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { _ = p.Run(rctx); close(done) }() // Run ends with ctx, without error
		for range 2 {
			p.Touch()
			select {
			case <-asked:
			case <-time.After(10 * time.Second):
				t.Fatal("the projector made no pass")
			}
		}
		if sink.writes != 0 {
			t.Fatal("a standby wrote the read model")
		}
		cancel()
		<-done
		mu.Lock()
		leading = true
		mu.Unlock()
		if !p.Pass(ctx, time.Now()) || sink.writes != 1 {
			t.Fatalf("the leader wrote %d documents", sink.writes)
		}
	})
}
