package drill_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lockdown/lockdown/cmd/lockdown/internal/cli"
	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// TestDrill runs Lockdown's main job end to end with two rotator
// processes, and checks its outcome, the trace, the division of work, and
// the hand-over files that `status` and `report` wrote.
func TestDrill(t *testing.T) {
	t.Parallel() // its own stack, nothing in the environment: beside the other long system tests
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin, err := localstack.Service(events.ServiceContainment)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	const tenants = 24
	code, stdout, stderr := runDrill(ctx, "--tenants", "24", "--rotators", "2", "--intruder-reads", "4", "--json", "--holder-delay", "5s",
		"--bin-dir", filepath.Dir(bin), "--out", out)
	var res struct {
		OK       bool
		Problems []string
		Breach   struct {
			IncidentID         string `json:"incident_id"`
			TraceID            string `json:"trace_id"`
			GateMS             int64  `json:"gate_ms"`
			HolderDelayMS      int64  `json:"holder_delay_ms"`
			UnsealToNotifiedMS int64  `json:"unseal_to_notified_ms"`
			Services           []string
			Spans              int
		}
		Intruder []string `json:"intruder_read_tenants"`
		Verified struct {
			Tenants        int
			RotatedInVault int `json:"rotated_in_vault"`
			APIKeysLeft    int `json:"api_keys_left"`
			TenantsMailed  int `json:"tenants_mailed"`
		}
		Report report.Report
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("exit %d, output not JSON: %v\nstderr: %s", code, err, stderr)
	}
	t.Run("the drill passes and exits 0", func(t *testing.T) {
		if code != cli.ExitOK || !res.OK || len(res.Problems) != 0 {
			t.Fatalf("exit %d, ok %v, problems %v, stderr %s", code, res.OK, res.Problems, stderr)
		}
	})
	t.Run("the key holders arrive after --holder-delay, and the drill times the unseal to every tenant notified", func(t *testing.T) {
		if res.Breach.HolderDelayMS != 5000 || res.Breach.GateMS < 5000 {
			t.Fatalf("holders arrived after %d ms, the gate passed after %d ms; want 5000 and at least that", res.Breach.HolderDelayMS, res.Breach.GateMS)
		}
		if res.Breach.UnsealToNotifiedMS <= 0 {
			t.Fatalf("unseal → notified %d ms", res.Breach.UnsealToNotifiedMS)
		}
		t.Logf("unseal → every tenant rotated and notified: %d ms (%d tenants)", res.Breach.UnsealToNotifiedMS, tenants)
	})
	t.Run("the report carries the trace id and its link in Jaeger", func(t *testing.T) {
		r := res.Report
		if r.TraceID == "" || r.TraceID != res.Breach.TraceID || !strings.HasPrefix(r.TraceURL, "http://127.0.0.1:") || !strings.HasSuffix(r.TraceURL, "/trace/"+r.TraceID) {
			t.Fatalf("trace %q, link %q (breach trace %q)", r.TraceID, r.TraceURL, res.Breach.TraceID)
		}
	})
	t.Run("Lockdown's own tokens were replaced and the rotators carried on with the successor", func(t *testing.T) {
		a := res.Report.Actions
		if strings.Join(a.LockdownTokensReplaced, ",") != "seal,rotator,recovery" || len(a.LockdownTokensNotReplaced) != 0 {
			t.Fatalf("replaced %v, not replaced %v", a.LockdownTokensReplaced, a.LockdownTokensNotReplaced)
		}
		// Every tenant was rotated after the replacement (the rotators'
		// install-time token was revoked before the first job) and checked
		// in Vault with the successor.
		if res.Verified.RotatedInVault != tenants {
			t.Fatalf("%d of %d tenants rotated in Vault", res.Verified.RotatedInVault, tenants)
		}
	})
	t.Run("the report's counts match what Vault and Mailpit hold", func(t *testing.T) {
		a := res.Report.Actions
		if res.Verified.Tenants != tenants || res.Verified.RotatedInVault != tenants || res.Verified.APIKeysLeft != 0 || res.Verified.TenantsMailed != tenants ||
			a.TenantsRotated != tenants || a.TenantsNotified != tenants || res.Report.Outcome != "resolved" {
			t.Fatalf("verified %+v, report actions %+v", res.Verified, a)
		}
		for _, tn := range res.Intruder {
			if !slices.Contains(res.Report.AffectedTenants, tn) {
				t.Errorf("the intruder read %s, the report's affected tenants are %v", tn, res.Report.AffectedTenants)
			}
		}
	})
	t.Run("Jaeger returns one trace with spans of containment, assessor, rotator and notifier", func(t *testing.T) {
		for _, svc := range []string{events.ServiceContainment, events.ServiceAssessor, events.ServiceRotator, events.ServiceNotifier} {
			if !slices.Contains(res.Breach.Services, svc) {
				t.Errorf("trace %s (%d spans) has no span of %s: %v", res.Breach.TraceID, res.Breach.Spans, svc, res.Breach.Services)
			}
		}
	})
	t.Run("both rotator processes did work", func(t *testing.T) {
		by := res.Report.Actions.RotatedBy
		total := 0
		for _, n := range by {
			total += n
		}
		if len(by) != 2 || total != tenants {
			t.Fatalf("work by process: %v", by)
		}
	})
	t.Run("status --json shows every phase with its targets and the finished progress", func(t *testing.T) {
		var st struct {
			ID           string
			Phase        string
			Phases       []report.Phase
			Rotation     struct{ Planned, Completed, Remaining int }
			Notification struct{ Planned, Completed, Remaining int }
		}
		readJSON(t, filepath.Join(out, "status.json"), &st)
		if st.ID != res.Breach.IncidentID || st.Phase != "resolved" || st.Rotation.Completed != tenants || st.Notification.Completed != tenants || st.Rotation.Remaining != 0 {
			t.Fatalf("status: %+v", st)
		}
		names := map[string]bool{}
		for _, p := range st.Phases {
			names[p.Name] = true
			if p.Duration <= 0 || p.End.Before(p.Start) {
				t.Errorf("phase %+v", p)
			}
		}
		for _, want := range []string{"containment", "assessment", "unseal-key rotation", "secret rotation", "notification", "total"} {
			if !names[want] {
				t.Errorf("status lacks phase %s", want)
			}
		}
		for _, p := range st.Phases {
			if p.Name == "containment" && (p.RunbookTarget != 5*time.Minute || !p.Met) {
				t.Errorf("containment %+v", p)
			}
		}
	})
	t.Run("report --format json is the stored report and the Markdown names the incident", func(t *testing.T) {
		var r report.Report
		readJSON(t, filepath.Join(out, "report.json"), &r)
		if r.IncidentID != res.Breach.IncidentID || r.RootCause != report.RootCausePending || len(r.Actions.Rotations) != tenants || len(r.Timeline) == 0 {
			t.Fatalf("report: %s, %q, %d rotations, %d timeline lines", r.IncidentID, r.RootCause, len(r.Actions.Rotations), len(r.Timeline))
		}
		md, err := os.ReadFile(filepath.Join(out, "report.md"))
		if err != nil || !strings.Contains(string(md), "# Post-incident report: "+res.Breach.IncidentID) || !strings.Contains(string(md), "Root cause: TBD - under investigation") {
			t.Fatalf("report.md: %v\n%s", err, md)
		}
	})
	t.Run("status --watch writes plain lines when its output is not a terminal", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(out, "status-watch.txt"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "\x1b[") || !strings.Contains(string(b), "phase resolved") || !strings.Contains(string(b), "rotation 24/24 done") {
			t.Fatalf("status --watch printed %q", b)
		}
	})
}

func readJSON(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
