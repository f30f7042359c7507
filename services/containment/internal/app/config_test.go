package app_test

import (
	"flag"
	"strings"
	"testing"

	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/pkg/platform/config/configtest"
	"github.com/lockdown/lockdown/services/containment/internal/app"
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
	t.Run("the intake never runs unauthenticated", func(t *testing.T) {
		err := config.LoadFrom(&app.Config{}, env(map[string]string{"LOCKDOWN_DATABASE_URL": "postgres://x", "LOCKDOWN_VAULT_ADDR": "http://v:8200",
			"LOCKDOWN_VAULT_SEAL_TOKEN": "t", "LOCKDOWN_INTAKE_ADDR": "127.0.0.1:0"}))
		if err == nil || !strings.Contains(err.Error(), "never runs unauthenticated") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("docs/config/containment.md lists every variable", func(t *testing.T) {
		configtest.Docs(t, "containment", &app.Config{}, *update)
	})
}
