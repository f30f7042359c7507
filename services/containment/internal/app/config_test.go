package app_test

import (
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/services/containment/internal/app"
	"github.com/lockdown/lockdown/testkit/configtest"
)

var update = flag.Bool("update", false, "rewrite docs/config/containment.md")

func TestConfig(t *testing.T) {
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	t.Run("a missing database, Vault and seal token are reported together", func(t *testing.T) {
		err := config.LoadFrom(&app.Config{}, env(nil))
		for _, want := range []string{"LOCKDOWN_DATABASE_URL", "LOCKDOWN_VAULT_ADDRS", "LOCKDOWN_VAULT_SEAL_TOKEN"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error does not name %s: %v", want, err)
			}
		}
	})
	t.Run("break-glass takes accessors only: a display name such as root is refused", func(t *testing.T) {
		err := config.LoadFrom(&app.Config{}, env(map[string]string{"LOCKDOWN_BREAK_GLASS": "root,hAZJGO5CvQ4J5JLD3nU1Jq5m", "LOCKDOWN_KEEP_ACCESSORS": "lockdown seal"}))
		if err == nil || !strings.Contains(err.Error(), `BREAK_GLASS: not a token accessor: "root"`) || !strings.Contains(err.Error(), `KEEP_ACCESSORS: not a token accessor: "lockdown seal"`) {
			t.Fatalf("got %v", err)
		}
		if strings.Contains(err.Error(), "hAZJGO5CvQ4J5JLD3nU1Jq5m") {
			t.Fatalf("a well-formed accessor was refused: %v", err)
		}
	})
	t.Run("the intake never runs unauthenticated", func(t *testing.T) {
		err := config.LoadFrom(&app.Config{}, env(map[string]string{"LOCKDOWN_DATABASE_URL": "postgres://x", "LOCKDOWN_VAULT_ADDR": "http://v:8200",
			"LOCKDOWN_VAULT_SEAL_TOKEN": "t", "LOCKDOWN_INTAKE_ADDR": "127.0.0.1:0"}))
		if err == nil || !strings.Contains(err.Error(), "never runs unauthenticated") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("an intake beyond loopback needs TLS, and the auto-seal severities are checked", func(t *testing.T) {
		base := map[string]string{"LOCKDOWN_DATABASE_URL": "postgres://x", "LOCKDOWN_VAULT_ADDR": "http://v:8200", "LOCKDOWN_VAULT_SEAL_TOKEN": "t",
			"LOCKDOWN_VAULT_RECOVERY_TOKEN": "r", "LOCKDOWN_INTAKE_HMAC_KEY": "k"}
		for k, v := range repoFiles(t) {
			base[k] = v
		}
		with := func(extra map[string]string) error {
			m := map[string]string{}
			for k, v := range base {
				m[k] = v
			}
			for k, v := range extra {
				m[k] = v
			}
			return config.LoadFrom(&app.Config{}, env(m))
		}
		if err := with(map[string]string{"LOCKDOWN_INTAKE_ADDR": "0.0.0.0:8081"}); err == nil || !strings.Contains(err.Error(), "INTAKE_TLS_CERT and INTAKE_TLS_KEY are required") {
			t.Fatalf("plain HTTP on every address: %v", err)
		}
		if err := with(map[string]string{"LOCKDOWN_INTAKE_ADDR": "127.0.0.1:8081"}); err != nil {
			t.Fatalf("plain HTTP on loopback refused: %v", err)
		}
		if err := with(map[string]string{"LOCKDOWN_AUTO_SEAL_SEVERITIES": "critical,urgent"}); err == nil || !strings.Contains(err.Error(), `"urgent"`) {
			t.Fatalf("an unknown severity: %v", err)
		}
	})
	t.Run("a missing baseline is a configuration error at start, with the variable named", func(t *testing.T) {
		m := map[string]string{"LOCKDOWN_DATABASE_URL": "postgres://x", "LOCKDOWN_VAULT_ADDR": "http://v:8200", "LOCKDOWN_VAULT_SEAL_TOKEN": "t",
			"LOCKDOWN_VAULT_RECOVERY_TOKEN": "r"}
		for k, v := range repoFiles(t) {
			m[k] = v
		}
		if err := config.LoadFrom(&app.Config{}, env(m)); err != nil {
			t.Fatalf("the repository's files refused: %v", err)
		}
		m["LOCKDOWN_VAULT_BASELINE"] = filepath.Join(t.TempDir(), "baseline.json")
		err := config.LoadFrom(&app.Config{}, env(m))
		if err == nil || !strings.Contains(err.Error(), "LOCKDOWN_VAULT_BASELINE") || !strings.Contains(err.Error(), "no such file") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("docs/config/containment.md lists every variable", func(t *testing.T) {
		configtest.Docs(t, "containment", &app.Config{}, *update)
	})
}

// repoFiles points the file settings at the repository's deploy/vault.
func repoFiles(t *testing.T) map[string]string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", "..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	v := filepath.Join(root, "deploy", "vault")
	return map[string]string{"LOCKDOWN_VAULT_BASELINE": filepath.Join(v, "baseline.json"), "LOCKDOWN_AUTH_DIR": filepath.Join(v, "auth"),
		"LOCKDOWN_VAULT_POLICY_DIR": filepath.Join(v, "policies")}
}
