package audit_test

import (
	"errors"
	"testing"

	"github.com/lockdown/lockdown/services/assessor/internal/audit"
)

func TestTemplates(t *testing.T) {
	tpl, err := audit.ParseTemplates([]string{"secret/data/tenants/{tenant}/", "secret/metadata/tenants/{tenant}/", "secret/data/api_keys/{tenant}/"})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("the tenant is found only where a template puts it", func(t *testing.T) {
		cases := map[string]string{
			"secret/data/tenants/acme/ssh":          "acme",
			"secret/metadata/tenants/acme/dkim":     "acme",
			"secret/data/api_keys/globex/k-1":       "globex",
			"secret/data/tenants/":                  "",
			"secret/data/config/mailer":             "",
			"secret/data/tenantsX/acme/ssh":         "",
			"sys/policies/acl/tenants/acme/x":       "",
			"other/data/tenants/acme/ssh":           "",
			"secret/data/tenants/acme":              "acme",
			"secret/data/tenants/acme/nested/deep/": "acme",
		}
		for path, want := range cases {
			if got := tpl.Tenant(path); got != want {
				t.Errorf("%s: %q, want %q", path, got, want)
			}
		}
	})
	t.Run("a template without {tenant} is refused", func(t *testing.T) {
		if _, err := audit.ParseTemplates([]string{"secret/data/tenants/"}); err == nil {
			t.Fatal("want an error")
		}
	})
}

func TestParse(t *testing.T) {
	tpl, _ := audit.ParseTemplates([]string{"secret/data/tenants/{tenant}/"})
	t.Run("a denied read is classified as denied, a successful tenant read as read", func(t *testing.T) {
		denied, err := audit.Parse([]byte(`{"time":"2026-11-25T10:00:00Z","type":"response","error":"1 error occurred:\n\t* permission denied\n\n","auth":{"accessor":"hmac-sha256:x"},"request":{"id":"a","operation":"read","path":"secret/data/tenants/acme/ssh"}}`), tpl)
		if err != nil || denied.Classify() != audit.KindDenied || denied.Tenant != "acme" {
			t.Fatalf("%+v %v", denied, err)
		}
		read, err := audit.Parse([]byte(`{"time":"2026-11-25T10:00:00Z","type":"response","auth":{"accessor":"hmac-sha256:x","display_name":"token-app"},"request":{"id":"b","operation":"read","path":"secret/data/tenants/acme/ssh"}}`), tpl)
		if err != nil || read.Classify() != audit.KindRead || read.DisplayName != "token-app" {
			t.Fatalf("%+v %v", read, err)
		}
	})
	t.Run("a revoke-accessor request records the accessor it revokes", func(t *testing.T) {
		e, err := audit.Parse([]byte(`{"time":"2026-11-25T10:00:00Z","type":"response","request":{"id":"c","operation":"update","path":"auth/token/revoke-accessor","data":{"accessor":"hmac-sha256:victim"}}}`), tpl)
		if err != nil || e.RevokedAccessor != "hmac-sha256:victim" {
			t.Fatalf("%+v %v", e, err)
		}
	})
	t.Run("lines that are not audit entries are malformed", func(t *testing.T) {
		for _, l := range []string{``, `{}`, `[1]`, `{"type":"request","time":"x","request":{"id":"a"}}`, `{"type":"other","time":"2026-11-25T10:00:00Z","request":{"id":"a"}}`} {
			if _, err := audit.Parse([]byte(l), tpl); !errors.Is(err, audit.ErrMalformed) {
				t.Errorf("%q: %v", l, err)
			}
		}
	})
}
