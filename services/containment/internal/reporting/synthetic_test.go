package reporting_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
)

// synthetic generates the whole timeline of an incident over n tenants —
// every event through events.New, as the services make them — without
// rotating anything: the assessment names every tenant (and n actors, each
// reading every tenant), the revocation meets a Vault of n intruder
// policies and n changed objects, every tenant is rotated and notified by
// email and webhook. It returns the entries and the largest event.
func synthetic(tb testing.TB, n int) (reporting.Incident, []reporting.Entry, int) {
	tb.Helper()
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	id := "0b6e2f3a-1111-4222-8333-944445555666"
	var entries []reporting.Entry
	largest := 0
	add := func(ms int, name events.Name, data any) {
		ev, err := events.New(name, "/lockdown/synthetic", data)
		if err != nil {
			tb.Fatalf("%s: %v", name, err)
		}
		body, err := events.Marshal(ev)
		if err != nil {
			tb.Fatal(err)
		}
		if len(body) > events.MaxEventBytes {
			tb.Fatalf("%s is %d bytes, over the contract's %d", name, len(body), events.MaxEventBytes)
		}
		largest = max(largest, len(body))
		entries = append(entries, reporting.Entry{EventID: ev.ID(), Type: name, Time: t0.Add(time.Duration(ms) * time.Millisecond), Source: ev.Source(), Data: ev.Data()})
	}
	tenants := make([]string, n)
	for i := range tenants {
		tenants[i] = fmt.Sprintf("tenant-%06d", i)
	}
	summary := strings.Repeat("<", 200_000) // a SIEM's worst: cut by the contract
	add(100, events.IncidentOpened, events.IncidentOpenedData{IncidentID: id, BreachEventID: "b-1", Severity: events.SeverityCritical, Summary: summary})
	add(600, events.VaultSealed, events.VaultSealedData{IncidentID: id, LatencyMS: 500, Nodes: []events.NodeSeal{{Address: "https://vault-0:8200", Method: "api"}}})
	actors := make([]events.Actor, n)
	for i := range actors {
		actors[i] = events.Actor{Key: fmt.Sprintf("token:hmac-sha256:%06d", i), Tenants: tenants, Reads: n, Suspect: true, Reasons: []string{"suspicious path"}}
	}
	add(900, events.AssessmentCompleted, events.AssessmentCompletedData{IncidentID: id, Scope: "widespread", AffectedTenants: tenants, Actors: actors, SecretsAccessed: n})
	policies := make([]string, n)
	changes := make([]events.VaultChange, n)
	for i := range policies {
		policies[i] = fmt.Sprintf("intruder-%06d", i)
		changes[i] = events.VaultChange{Kind: "policy", Name: policies[i], Action: events.VaultRemoved, Previous: strings.Repeat(`path "*" { capabilities = ["sudo"] } `, 100)}
	}
	add(30_000, events.VaultUnsealed, events.VaultUnsealedData{IncidentID: id, Address: "https://vault-0:8200", GateMS: 29_000})
	add(30_050, events.AccessRevoked, events.AccessRevokedData{IncidentID: id, AuthMethodsDisabled: []string{"approle", "jwt"}, PoliciesDeleted: policies, Reconciled: changes, TokensRevoked: n})
	add(30_100, events.RotationPlanned, events.RotationPlannedData{IncidentID: id, Policy: "all", Tenants: n})
	for i, tn := range tenants {
		add(30_200+i, events.RotationJob, events.RotationJobData{IncidentID: id, TenantID: tn, Affected: true})
	}
	for i, tn := range tenants {
		add(40_000+i, events.RotationTenantCompleted, events.RotationTenantCompletedData{IncidentID: id, TenantID: tn, SSHFingerprint: "SHA256:" + tn,
			DKIMSelector: "ld20261202", DKIMRecord: "v=DKIM1; k=ed25519; p=" + strings.Repeat("A", 44), SMTPPasswordRotate: true, APIKeysDestroyed: 2, Affected: true, DKIMState: "active"})
	}
	add(200_000, events.RotationCompleted, events.RotationCompletedData{IncidentID: id, Completed: n})
	for i, tn := range tenants {
		add(200_100+i, events.NotificationSent, events.NotificationSentData{IncidentID: id, TenantID: tn, Channel: "email", MessageID: "<" + tn + "@lockdown>"})
	}
	add(400_000, events.NotificationsCompleted, events.NotificationsCompletedData{IncidentID: id, Sent: n})
	add(400_100, events.AccessRestored, events.AccessRestoredData{IncidentID: id, AuthMethods: []string{"approle", "jwt"}})
	inc := reporting.Incident{ID: id, Severity: "critical", Summary: "synthetic", Source: "/siem", DetectedAt: t0, OpenedAt: t0.Add(100 * time.Millisecond), Detections: 1}
	return inc, entries, largest
}

// TestSyntheticIncident runs a 100,000-tenant incident's events through the
// contract and the report: every event stays under its bound, and the
// report counts what the events cut.
func TestSyntheticIncident(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 tenants")
	}
	const n = 100_000
	inc, entries, largest := synthetic(t, n)
	r := reporting.Build(inc, entries, "resolved", "", time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC))
	if r.AffectedCount != n {
		t.Errorf("report counts %d affected tenants, want %d (the event lists %d)", r.AffectedCount, n, len(r.AffectedTenants))
	}
	if r.Actions.TenantsRotated != n || r.Actions.TenantsNotified != n {
		t.Errorf("report: %d rotated, %d notified", r.Actions.TenantsRotated, r.Actions.TenantsNotified)
	}
	body, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events, the largest %d bytes (bound %d); report %d bytes", len(entries), largest, events.MaxEventBytes, len(body))
}

// BenchmarkSyntheticIncident measures making an incident's events (every
// one through events.New and its bound) and building its report (JSON and
// Markdown), at 10,000 tenants (the baseline) and at 100,000.
func BenchmarkSyntheticIncident(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("tenants=%d", n), func(b *testing.B) {
			for range b.N {
				inc, entries, largest := synthetic(b, n)
				r := reporting.Build(inc, entries, "resolved", "", time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC))
				body, _ := json.Marshal(r)
				var md bytes.Buffer
				if err := r.Markdown(&md); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(len(entries)), "events")
				b.ReportMetric(float64(largest), "largest-event-bytes")
				b.ReportMetric(float64(len(body)), "report-bytes")
				b.ReportMetric(float64(md.Len()), "markdown-bytes")
			}
		})
	}
}
