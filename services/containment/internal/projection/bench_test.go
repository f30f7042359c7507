package projection_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/readmodel"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
	"github.com/lockdown/lockdown/services/containment/internal/projection"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
)

// BenchmarkBuild measures one build of an incident's document and draft
// report from its timeline, as the projector makes it after a change,
// for incidents of 100 to 100,000 tenants (each rotated and notified by
// email and webhook, with realistic event sizes). The projector waits at
// least twice a build's time before the next build of the same incident.
//
//	go test -run '^$' -bench BenchmarkBuild -benchtime 5x ./services/containment/internal/projection/
func BenchmarkBuild(b *testing.B) {
	for _, tenants := range []int{100, 1000, 10000, 100000} {
		b.Run(fmt.Sprintf("%d tenants", tenants), func(b *testing.B) {
			t := b
			snap := snapshot(t, incident.PhaseRecovering, 0)
			t0 := snap.Incident.OpenedAt
			record := "v=DKIM1; k=rsa; p=" + strings.Repeat("A", 392)
			for i := range tenants {
				tenant := fmt.Sprintf("tenant-%05d", i)
				at := t0.Add(time.Duration(i) * time.Millisecond)
				snap.Timeline = append(snap.Timeline,
					entry(t, events.RotationTenantCompleted, at, events.RotationTenantCompletedData{IncidentID: id, TenantID: tenant,
						SSHFingerprint: "SHA256:" + strings.Repeat("x", 43), DKIMSelector: "ld2", DKIMRecord: record, APIKeysDestroyed: 2, RotatedBy: "rotator-1"}),
					entry(t, events.NotificationSent, at.Add(time.Millisecond), events.NotificationSentData{IncidentID: id, TenantID: tenant, Channel: "email"}),
					entry(t, events.NotificationSent, at.Add(2*time.Millisecond), events.NotificationSentData{IncidentID: id, TenantID: tenant, Channel: "webhook"}))
			}
			snap.ReadAt = t0.Add(time.Hour)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				doc, _ := projection.Build(snap)
				if doc.Rotation.Completed != tenants {
					b.Fatalf("%d rotated", doc.Rotation.Completed)
				}
			}
			b.ReportMetric(float64(len(snap.Timeline)), "entries")
		})
	}
}

// growing is a Source whose incident's timeline grows by what the
// benchmark appends; a snapshot returns what was recorded since its
// cursor, as containment's store does.
type growing struct {
	snap    projection.Snapshot
	entries []reporting.Entry
	version int
}

func (g *growing) Markers(context.Context, int) (map[string]string, error) {
	return map[string]string{id: fmt.Sprintf("%d/recovering/", g.version)}, nil
}

func (g *growing) Snapshot(_ context.Context, _, since string) (projection.Snapshot, error) {
	from := 0
	if since != "" {
		from, _ = strconv.Atoi(since)
	}
	s := g.snap
	s.Timeline, s.Cursor = g.entries[from:], strconv.Itoa(len(g.entries))
	return s, nil
}

type discard struct{ doc readmodel.Incident }

func (d *discard) PutIncident(_ context.Context, doc readmodel.Incident) error {
	d.doc = doc
	return nil
}
func (*discard) PutReport(context.Context, string, report.Report) error { return nil }

// BenchmarkRebuild measures what the projector does after each change of
// a running incident: read what was recorded since its last build (here
// 30 entries, about one second of the 10,000-tenant drill's rotation),
// fold it and write the document. It stays flat as the incident grows;
// BenchmarkBuild, the whole timeline at once, is what every change cost
// before and what the draft report still costs (written every 10 s).
//
//	go test -run '^$' -bench BenchmarkRebuild -benchtime 2000x ./services/containment/internal/projection/
func BenchmarkRebuild(b *testing.B) {
	for _, tenants := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("%d tenants", tenants), func(b *testing.B) {
			t := b
			snap := snapshot(t, incident.PhaseRecovering, 0)
			src := &growing{snap: snap, entries: snap.Timeline}
			t0 := snap.Incident.OpenedAt
			record := "v=DKIM1; k=rsa; p=" + strings.Repeat("A", 392)
			tenant := 0
			grow := func(n int) {
				for range n {
					name, at := fmt.Sprintf("tenant-%06d", tenant), t0.Add(time.Duration(tenant)*time.Millisecond)
					src.entries = append(src.entries,
						entry(t, events.RotationTenantCompleted, at, events.RotationTenantCompletedData{IncidentID: id, TenantID: name,
							SSHFingerprint: "SHA256:" + strings.Repeat("x", 43), DKIMSelector: "ld2", DKIMRecord: record, APIKeysDestroyed: 2, RotatedBy: "rotator-1"}),
						entry(t, events.NotificationSent, at.Add(time.Millisecond), events.NotificationSentData{IncidentID: id, TenantID: name, Channel: "email"}),
						entry(t, events.NotificationSent, at.Add(2*time.Millisecond), events.NotificationSentData{IncidentID: id, TenantID: name, Channel: "webhook"}))
					tenant++
				}
				src.version++
			}
			grow(tenants)
			sink := &discard{}
			p := projection.New(projection.Config{MinGap: time.Nanosecond, ProgressGap: time.Nanosecond, DraftEvery: 24 * time.Hour}, src, sink, nil, slog.New(slog.DiscardHandler))
			ctx := context.Background()
			now := time.Now()
			p.Pass(ctx, now) // the first build reads everything
			// The timeline grows by 10 tenants (30 entries) before each
			// pass: made beforehand, so only the projector is timed.
			batches := make([][]reporting.Entry, b.N)
			for i := range b.N {
				before := len(src.entries)
				grow(10)
				batches[i] = src.entries[before:]
			}
			all := src.entries
			src.entries = all[:len(all)-30*b.N]
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				src.entries = append(src.entries, batches[i]...)
				src.version++
				if !p.Pass(ctx, now.Add(time.Duration(i+1)*time.Hour)) {
					b.Fatal("not written")
				}
			}
			b.StopTimer()
			if got := sink.doc.Rotation.Completed; got != tenants+10*b.N {
				b.Fatalf("%d rotated, want %d", got, tenants+10*b.N)
			}
		})
	}
}
