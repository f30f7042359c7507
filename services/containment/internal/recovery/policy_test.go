package recovery_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockdown/lockdown/services/containment/internal/recovery"
	"github.com/lockdown/lockdown/testkit/golden"
)

var update = flag.Bool("update", false, "rewrite deploy/vault/policies/lockdown-recovery.hcl")

// TestRecoveryPolicy keeps the shipped recovery policy what the declared
// auth methods make of it.
func TestRecoveryPolicy(t *testing.T) {
	root := filepath.Join("..", "..", "..", "..")
	auth, err := recovery.LoadAuthSpecs(filepath.Join(root, "deploy", "vault", "auth"))
	if err != nil {
		t.Fatal(err)
	}
	baseline, err := recovery.LoadBaseline(filepath.Join(root, "deploy", "vault", "baseline.json"), filepath.Join(root, "deploy", "vault", "policies"), auth)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(root, "deploy", "vault", "policies", "lockdown-recovery.hcl")
	golden.Check(t, file, recovery.RecoveryPolicy(auth, baseline), *update, "make docs")
}

// TestBaseline checks that containment refuses a baseline that would let
// an incident delete a policy the declared roles hand out.
func TestBaseline(t *testing.T) {
	auth := []recovery.AuthSpec{{Path: "approle", Type: "approle", Writes: []recovery.Write{
		{Path: "role/mailer", Data: map[string]any{"token_policies": []any{"default", "mailer"}}},
		{Path: "role/cron", Data: map[string]any{"token_policies": "default,cron"}},
	}}}
	write := func(t *testing.T, body string) string {
		f := filepath.Join(t.TempDir(), "baseline.json")
		if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	t.Run("a role handing out a policy the baseline lacks is refused, every one named", func(t *testing.T) {
		_, err := recovery.LoadBaseline(write(t, `{"policies": []}`), "", auth)
		if err == nil || !strings.Contains(err.Error(), `"mailer"`) || !strings.Contains(err.Error(), `"cron"`) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("a complete baseline keeps its policies and Vault's and Lockdown's own", func(t *testing.T) {
		b, err := recovery.LoadBaseline(write(t, `{"policies": ["mailer", "cron"]}`), "", auth)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"mailer", "cron", "root", "default", "lockdown-recovery"} {
			if !recovery.KeepsPolicy(b, p) {
				t.Errorf("%s would be deleted", p)
			}
		}
		if recovery.KeepsPolicy(b, "backdoor-admin") {
			t.Error("an undeclared policy would be kept")
		}
	})
	t.Run("an audit device declared with log_raw is refused", func(t *testing.T) {
		_, err := recovery.LoadBaseline(write(t, `{"audit_devices": [{"path": "file", "type": "file", "options": {"file_path": "/x", "log_raw": "true"}}]}`), "", nil)
		if err == nil || !strings.Contains(err.Error(), "log_raw") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("Lockdown's policy directory must declare every policy of Lockdown's and default", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "lockdown-seal.hcl"), []byte(`path "sys/seal" { capabilities = ["update", "sudo"] }`), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := recovery.LoadBaseline(write(t, `{}`), dir, nil)
		if err == nil || !strings.Contains(err.Error(), "lockdown-rotator") || !strings.Contains(err.Error(), "default") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("an unknown field is refused", func(t *testing.T) {
		if _, err := recovery.LoadBaseline(write(t, `{"policy": ["x"]}`), "", nil); err == nil {
			t.Fatal("a misspelt field was accepted")
		}
	})
}
