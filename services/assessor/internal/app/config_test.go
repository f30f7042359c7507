package app_test

import (
	"flag"
	"strings"
	"testing"

	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/pkg/platform/config/configtest"
	"github.com/lockdown/lockdown/services/assessor/internal/app"
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
	t.Run("docs/config/assessor.md lists every variable", func(t *testing.T) {
		configtest.Docs(t, "assessor", &app.Config{}, *update)
	})
}
