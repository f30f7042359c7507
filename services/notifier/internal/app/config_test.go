package app_test

import (
	"flag"
	"strings"
	"testing"

	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/services/notifier/internal/app"
	"github.com/lockdown/lockdown/testkit/configtest"
)

var update = flag.Bool("update", false, "rewrite docs/config/notifier.md")

func TestConfig(t *testing.T) {
	t.Run("every problem is reported together", func(t *testing.T) {
		err := config.LoadFrom(&app.Config{}, func(k string) (string, bool) {
			v, ok := map[string]string{
				"LOCKDOWN_SMTP_TLS": "ssl", "LOCKDOWN_MAIL_FROM": "nobody", "LOCKDOWN_WEBHOOK_SECRET": "short",
				"LOCKDOWN_WEBHOOK_ALLOW": "10.0.0.0/33", "LOCKDOWN_SUBJECT": "{{.Nope", "LOCKDOWN_NOTIFY_RATE": "0",
			}[k]
			return v, ok
		})
		for _, want := range []string{"LOCKDOWN_DATABASE_URL", "LOCKDOWN_SMTP_ADDR", "LOCKDOWN_SMTP_TLS", "LOCKDOWN_MAIL_FROM",
			"LOCKDOWN_WEBHOOK_SECRET", "LOCKDOWN_WEBHOOK_ALLOW", "LOCKDOWN_SUBJECT", "LOCKDOWN_NOTIFY_RATE"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error does not name %s: %v", want, err)
			}
		}
	})
	t.Run("a template folder without the four files is refused at start", func(t *testing.T) {
		err := config.LoadFrom(&app.Config{}, func(k string) (string, bool) {
			v, ok := map[string]string{"LOCKDOWN_TEMPLATE_DIR": t.TempDir()}[k]
			return v, ok
		})
		if err == nil || !strings.Contains(err.Error(), "affected") && !strings.Contains(err.Error(), "precautionary") {
			t.Fatalf("error: %v", err)
		}
	})
	t.Run("docs/config/notifier.md lists every variable", func(t *testing.T) {
		configtest.Docs(t, "notifier", &app.Config{}, *update)
	})
}
