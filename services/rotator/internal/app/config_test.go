package app_test

import (
	"flag"
	"strings"
	"testing"

	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/services/rotator/internal/app"
	"github.com/lockdown/lockdown/testkit/configtest"
)

var update = flag.Bool("update", false, "rewrite docs/config/rotator.md")

func TestConfig(t *testing.T) {
	t.Run("bad policy, key type and size are reported together", func(t *testing.T) {
		err := config.LoadFrom(&app.Config{}, func(k string) (string, bool) {
			v, ok := map[string]string{"LOCKDOWN_ROTATION_POLICY": "some", "LOCKDOWN_DKIM_KEY_TYPE": "dsa"}[k]
			return v, ok
		})
		for _, want := range []string{"LOCKDOWN_DATABASE_URL", "LOCKDOWN_VAULT_ADDR", "LOCKDOWN_ROTATION_POLICY", "LOCKDOWN_DKIM_KEY_TYPE"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error does not name %s: %v", want, err)
			}
		}
	})
	t.Run("a DNS update interval and a concurrency outside their bounds are refused together", func(t *testing.T) {
		err := config.LoadFrom(&app.Config{}, func(k string) (string, bool) {
			v, ok := map[string]string{"LOCKDOWN_DKIM_DNS_UPDATE_INTERVAL": "-1s", "LOCKDOWN_ROTATION_CONCURRENCY": "100000"}[k]
			return v, ok
		})
		for _, want := range []string{"LOCKDOWN_DKIM_DNS_UPDATE_INTERVAL", "LOCKDOWN_ROTATION_CONCURRENCY"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error does not name %s: %v", want, err)
			}
		}
	})
	t.Run("docs/config/rotator.md lists every variable", func(t *testing.T) {
		configtest.Docs(t, "rotator", &app.Config{}, *update)
	})
}
