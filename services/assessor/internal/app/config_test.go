package app_test

import (
	"flag"
	"strings"
	"testing"

	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/services/assessor/internal/app"
	"github.com/lockdown/lockdown/testkit/configtest"
)

var update = flag.Bool("update", false, "rewrite docs/config/assessor.md")

func TestConfig(t *testing.T) {
	t.Run("a missing database and a template without {tenant} are reported together", func(t *testing.T) {
		err := config.LoadFrom(&app.Config{}, func(k string) (string, bool) {
			if k == "LOCKDOWN_TENANT_TEMPLATES" {
				return "secret/data/tenants/", true
			}
			return "", false
		})
		for _, want := range []string{"LOCKDOWN_DATABASE_URL", "LOCKDOWN_TENANT_TEMPLATES"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error does not name %s: %v", want, err)
			}
		}
	})
	t.Run("a display name among the trusted actors is refused at start, an entity id is taken", func(t *testing.T) {
		load := func(trusted string) (*app.Config, error) {
			cfg := &app.Config{}
			return cfg, config.LoadFrom(cfg, func(k string) (string, bool) {
				switch k {
				case "LOCKDOWN_DATABASE_URL":
					return "postgres://x", true
				case "LOCKDOWN_TRUSTED_ACTORS":
					return trusted, true
				}
				return "", false
			})
		}
		_, err := load("token-mailer")
		if err == nil || !strings.Contains(err.Error(), `"token-mailer" is not a Vault entity id`) || !strings.Contains(err.Error(), "display names") {
			t.Fatalf("a display name was not refused clearly: %v", err)
		}
		cfg, err := load("6b8f0c1e-3d0a-4c6e-9f1d-2a7e5b9c4d31")
		if err != nil || len(cfg.TrustedActors) != 1 {
			t.Fatalf("an entity id was refused: %v", err)
		}
	})
	t.Run("the runbook's test tenant is excluded by default", func(t *testing.T) {
		cfg := &app.Config{}
		// Without the required settings Load fails: only the defaults are looked at.
		_ = config.LoadFrom(cfg, func(k string) (string, bool) { return "", false })
		if len(cfg.ExcludeTenants) != 1 || cfg.ExcludeTenants[0] != "test-tenant-id" {
			t.Fatalf("EXCLUDE_TENANTS defaults to %v, want [test-tenant-id]", cfg.ExcludeTenants)
		}
	})
	t.Run("docs/config/assessor.md lists every variable", func(t *testing.T) {
		configtest.Docs(t, "assessor", &app.Config{}, *update)
	})
}
