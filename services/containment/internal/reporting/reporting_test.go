package reporting_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// fixture is a small incident's timeline at fixed times.
func fixture(t *testing.T) (reporting.Incident, []reporting.Entry, time.Time) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	var entries []reporting.Entry
	add := func(ms int, name events.Name, source string, data any) {
		b, err := json.Marshal(data)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, reporting.Entry{EventID: string(name) + "-" + time.Duration(ms).String(), Type: name, Time: at(ms), Source: source, Data: b})
	}
	id := "0b6e2f3a-1111-4222-8333-944445555666"
	// Out of order on purpose: Build sorts by time.
	add(60_400, events.AccessRestored, "/lockdown/containment", events.AccessRestoredData{IncidentID: id, AuthMethods: []string{"approle", "jwt"}})
	add(120, events.IncidentOpened, "/lockdown/containment", events.IncidentOpenedData{IncidentID: id, Severity: events.SeverityCritical, Summary: "root token used from an unknown address"})
	add(610, events.VaultSealed, "/lockdown/containment", events.VaultSealedData{IncidentID: id, LatencyMS: 600,
		Nodes: []events.NodeSeal{{Address: "https://vault-0:8200", Method: "api", RequestedAt: at(130), ConfirmedAt: at(600)}}})
	add(900, events.AssessmentCompleted, "/lockdown/assessor", events.AssessmentCompletedData{IncidentID: id, Scope: "limited", SuspiciousEvents: 7,
		AffectedTenants: []string{"tenant-002", "tenant-001"}, Actors: []events.Actor{{Key: "token:hmac-sha256:ab12", DisplayNames: []string{"token"},
			Accessors:       []events.DeviceAccessor{{Device: "file", Accessor: "hmac-sha256:ab12"}, {Device: "socket", Accessor: "hmac-sha256:cd34"}},
			RemoteAddresses: []string{"203.0.113.9"}, Reads: 6, Denied: 1, Suspect: true, Reasons: []string{"1 request denied"}, Tenants: []string{"tenant-001", "tenant-002"}}}})
	add(30_000, events.VaultUnsealed, "/lockdown/containment", events.VaultUnsealedData{IncidentID: id, Address: "https://vault-0:8200", GateMS: 29_390})
	add(30_050, events.AccessRevoked, "/lockdown/containment", events.AccessRevokedData{IncidentID: id, AuthMethodsDisabled: []string{"approle", "jwt"}, TokensRevoked: 4, TokensKept: 2, KeyTerm: 2})
	add(30_100, events.RotationPlanned, "/lockdown/rotator", events.RotationPlannedData{IncidentID: id, Policy: "all", Tenants: 3})
	add(31_000, events.RotationTenantCompleted, "/lockdown/rotator", events.RotationTenantCompletedData{IncidentID: id, TenantID: "tenant-002", SSHFingerprint: "SHA256:bbb", DKIMSelector: "ld20261125-0b6e2f3a", APIKeysDestroyed: 2, SMTPPasswordRotate: true, Affected: true, RotatedBy: "host-a/11", DKIMState: "active",
		Results: []credentials.Result{{Kind: credentials.SSH, State: credentials.Rotated, Count: 1}, {Kind: credentials.SMTP, State: credentials.Rotated, Count: 1},
			{Kind: credentials.APIKeys, State: credentials.Destroyed, Count: 2}, {Kind: credentials.DKIM, State: credentials.Rotated, Count: 1}}})
	add(31_200, events.RotationTenantCompleted, "/lockdown/rotator", events.RotationTenantCompletedData{IncidentID: id, TenantID: "tenant-001", SSHFingerprint: "SHA256:aaa", DKIMSelector: "ld20261125-0b6e2f3a", APIKeysDestroyed: 1, SMTPPasswordRotate: true, Affected: true, RotatedBy: "host-b/12", DKIMState: "awaiting_dns",
		Results: []credentials.Result{{Kind: credentials.SSH, State: credentials.Rotated, Count: 1}, {Kind: credentials.SMTP, State: credentials.Rotated, Count: 1},
			{Kind: credentials.APIKeys, State: credentials.Destroyed, Count: 1}, {Kind: credentials.DKIM, State: credentials.AwaitingDNS}}})
	add(31_300, events.RotationTenantFailed, "/lockdown/rotator", events.RotationTenantFailedData{IncidentID: id, TenantID: "ghost", Step: "plan", Reason: "tenant not in the directory"})
	add(31_350, events.RotationPlatformDone, "/lockdown/rotator", events.RotationPlatformCompletedData{IncidentID: id, Entry: "platform-transit",
		Result: credentials.Result{Kind: credentials.Transit, State: credentials.Rotated, Count: 2, Public: "archive v2, mail v2"}, Items: []string{"archive", "mail"}})
	add(31_360, events.RotationPlatformDone, "/lockdown/rotator", events.RotationPlatformCompletedData{IncidentID: id, Entry: "platform-pki",
		Result: credentials.Result{Kind: credentials.PKI, State: credentials.Rotated, Count: 1, Public: "new serials 1a:2b; 2 certificates revoked"}, Items: []string{"secret/pki-certs/relay"}})
	add(31_400, events.RotationCompleted, "/lockdown/rotator", events.RotationCompletedData{IncidentID: id, Completed: 2, Failed: 1, Platform: 2})
	add(31_500, events.NotificationSent, "/lockdown/notifier", events.NotificationSentData{IncidentID: id, TenantID: "tenant-002", Channel: "email", MessageID: "<x@y>"})
	add(31_600, events.NotificationSent, "/lockdown/notifier", events.NotificationSentData{IncidentID: id, TenantID: "tenant-001", Channel: "email", MessageID: "<z@y>"})
	add(31_700, events.NotificationSent, "/lockdown/notifier", events.NotificationSentData{IncidentID: id, TenantID: "tenant-001", Channel: "webhook"})
	add(31_800, events.NotificationsCompleted, "/lockdown/notifier", events.NotificationsCompletedData{IncidentID: id, Sent: 2, Failed: 1})
	add(45_000, events.UnsealKeysRotated, "/lockdown/containment", events.UnsealKeysRotatedData{IncidentID: id, Shares: 5, Threshold: 3, Verified: true, Proof: "pgp_backup", PGPFingerprints: []string{"AAAA1111", "BBBB2222"}})
	inc := reporting.Incident{ID: id, Severity: "critical", Summary: "root token used from an unknown address", Source: "/siem/splunk", DetectedAt: t0, OpenedAt: at(120), Detections: 1,
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	return inc, entries, at(60_500)
}

func TestReport(t *testing.T) {
	inc, entries, resolved := fixture(t)
	r := reporting.Build(inc, entries, "resolved", "", resolved)
	t.Run("counts, actors, actions and failures come from the events", func(t *testing.T) {
		a := r.Actions
		if r.AffectedCount != 2 || r.Scope != "limited" || len(r.Actors) != 1 || a.TenantsRotated != 2 || a.TenantsFailed != 1 ||
			a.APIKeysDestroyed != 3 || a.MessagesSent["email"] != 2 || a.MessagesSent["webhook"] != 1 || a.TenantsNotified != 2 ||
			len(r.Failures) != 1 || a.RotatedBy["host-a/11"] != 1 || a.UnsealKeys == nil || len(a.UnsealKeys.PGPFingerprints) != 2 {
			t.Fatalf("report: %+v", r)
		}
		if r.RootCause != report.RootCausePending || r.LessonsLearned == nil || len(r.LessonsLearned) != 0 || len(r.PreventiveMeasures) != 0 {
			t.Fatalf("review fields: %q %v %v", r.RootCause, r.LessonsLearned, r.PreventiveMeasures)
		}
	})
	t.Run("each phase has its duration and is judged against its targets", func(t *testing.T) {
		got := map[string]report.Phase{}
		for _, p := range r.Phases {
			got[p.Name] = p
		}
		// To the last node's confirmation (600 ms), not to the event
		// recording it (610 ms): PostgreSQL may be down in between.
		if c := got["containment"]; c.Duration != 600*time.Millisecond || !c.Met {
			t.Errorf("containment %+v", c)
		}
		if u := got["unseal-key rotation"]; u.Duration != 14950*time.Millisecond || !u.Met {
			t.Errorf("unseal-key rotation %+v", u)
		}
		if len(got) != 8 {
			t.Errorf("%d phases", len(got))
		}
	})
	t.Run("the Markdown report matches the golden file", func(t *testing.T) {
		golden(t, "report.md", func(b *bytes.Buffer) error { return r.Markdown(b) })
	})
	t.Run("the JSON report matches the golden file", func(t *testing.T) {
		golden(t, "report.json", func(b *bytes.Buffer) error {
			enc := json.NewEncoder(b)
			enc.SetIndent("", "  ")
			return enc.Encode(r)
		})
	})
	t.Run("an event with a broken payload is listed as a failure, not a silent gap or a lost report", func(t *testing.T) {
		bad := append(slices.Clone(entries), reporting.Entry{EventID: "x", Type: events.RotationCompleted, Time: resolved, Data: []byte(`{"completed":"many"}`)})
		r := reporting.Build(inc, bad, "resolved", "", resolved)
		if len(r.Failures) != 2 || r.Failures[1].What != "unreadable event x" {
			t.Fatalf("%+v", r.Failures)
		}
	})
}

func golden(t *testing.T, name string, write func(*bytes.Buffer) error) {
	t.Helper()
	var b bytes.Buffer
	if err := write(&b); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("%s differs from the golden file; got:\n%s", name, b.String())
	}
}

func TestCredentialsTable(t *testing.T) {
	inc, entries, end := fixture(t)
	retry := func(ms int, name events.Name, data any) {
		b, err := json.Marshal(data)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, reporting.Entry{EventID: fmt.Sprint(name, ms), Type: name, Time: end.Add(time.Duration(ms) * time.Millisecond), Source: "/lockdown/rotator", Data: b})
	}
	// A platform entry that failed, and a tenant whose retry completed
	// after it had failed at its DKIM step: the latest outcome counts.
	retry(1, events.RotationPlatformDone, events.RotationPlatformCompletedData{IncidentID: inc.ID, Entry: "platform-db",
		Result: credentials.Result{Kind: credentials.Database, State: credentials.Failed, Reason: "static role app not found"}})
	retry(2, events.RotationTenantFailed, events.RotationTenantFailedData{IncidentID: inc.ID, TenantID: "tenant-003", Step: "dkim", Reason: "REFUSED",
		Results: []credentials.Result{{Kind: credentials.SSH, State: credentials.Rotated, Count: 1}, {Kind: credentials.DKIM, State: credentials.Failed}}})
	retry(3, events.RotationTenantCompleted, events.RotationTenantCompletedData{IncidentID: inc.ID, TenantID: "tenant-003",
		Results: []credentials.Result{{Kind: credentials.SSH, State: credentials.Rotated, Count: 1}, {Kind: credentials.DKIM, State: credentials.Unverified, Count: 1}}})
	r := reporting.Build(inc, entries, "resolved", "", end.Add(time.Second))
	row := func(k credentials.Kind) report.CredentialRow {
		for _, c := range r.Actions.Credentials {
			if c.Kind == k {
				return c
			}
		}
		t.Fatalf("no row for %s", k)
		return report.CredentialRow{}
	}
	if db := row(credentials.Database); db.Failed != 1 || db.Rotated != 0 || db.NotCovered != -1 {
		t.Errorf("database row %+v", db)
	}
	if d := row(credentials.DKIM); d.Failed != 0 || d.Rotated != 2 || d.Pending != 1 {
		t.Errorf("dkim row %+v: the retry's completion replaces the failure", d)
	}
	r.AddCoverage(credentials.Plan{At: end, Coverage: credentials.Coverage{Uncovered: []credentials.Gap{
		{Mount: "secret", Type: "kv", Item: "legacy/ftp"}, {Mount: "totp", Type: "totp"}}}})
	if kv, ssh := row(credentials.KV), row(credentials.SSH); kv.NotCovered != 1 || ssh.NotCovered != 0 {
		t.Errorf("not covered: kv %d, ssh %d", kv.NotCovered, ssh.NotCovered)
	}
	var buf bytes.Buffer
	if err := r.Markdown(&buf); err != nil {
		t.Fatal(err)
	}
	md := buf.String()
	for _, want := range []string{"| database credentials | platform | 0 | 0 | 1 | 0 | 0 |", "- totp (totp) —", "Not covered, by `lockdown plan`"} {
		if !strings.Contains(md, want) {
			t.Errorf("the Markdown lacks %q", want)
		}
	}
}
