package projection_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
	"github.com/lockdown/lockdown/services/containment/internal/projection"
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
