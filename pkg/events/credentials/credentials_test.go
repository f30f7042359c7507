package credentials_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/lockdown/lockdown/pkg/events/credentials"
)

func TestCatalogue(t *testing.T) {
	t.Run("the shipped catalogue is valid", func(t *testing.T) {
		if _, err := credentials.Load(filepath.Join("..", "..", "..", "deploy", "rotation", "catalogue.json")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("every problem is reported at once", func(t *testing.T) {
		_, err := credentials.Parse([]byte(`{"entries": [
			{"name": "Bad Name", "kind": "transit", "mount": "transit", "keys": ["a"]},
			{"name": "t", "kind": "transit", "mount": "../sys", "keys": []},
			{"name": "t", "kind": "ssh", "mount": "secret"},
			{"name": "d", "kind": "database", "mount": "database"},
			{"name": "k", "kind": "kv", "mount": "secret", "paths": ["a/../b"], "fields": {"password": "md5", "lockdown_write": "password"}},
			{"name": "p", "kind": "pki", "mount": "pki", "certificates": [{"role": "r", "common_name": "c", "store_mount": "secret", "store_path": "platform/c"}]},
			{"name": "q", "kind": "kv", "mount": "secret", "paths": ["platform/**"], "fields": {"password": "password"}, "keys": ["x"]},
			{"name": "u", "kind": "aws", "mount": "aws"}
		]}`))
		if !errors.Is(err, credentials.ErrInvalidCatalogue) {
			t.Fatalf("got %v", err)
		}
		for _, want := range []string{`"Bad Name"`, `mount "../sys"`, `keys: at least one`, `named twice`, `kind ssh is per tenant`,
			`connections or static_roles`, `path pattern "a/../b"`, `unknown generator "md5"`, `field "lockdown_write"`,
			`also matched by kv entry "q"`, `keys does not apply to kind kv`, `unknown kind "aws"`} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the error does not say %s:\n%v", want, err)
			}
		}
	})
	t.Run("a misspelt parameter is refused", func(t *testing.T) {
		_, err := credentials.Parse([]byte(`{"entries": [{"name": "t", "kind": "transit", "mount": "transit", "key": ["a"]}]}`))
		if !errors.Is(err, credentials.ErrInvalidCatalogue) || !strings.Contains(err.Error(), `"key"`) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestMatchPath(t *testing.T) {
	for _, c := range []struct {
		patterns []string
		path     string
		want     bool
	}{
		{[]string{"platform/**"}, "platform/db", true},
		{[]string{"platform/**"}, "platform/a/b/c", true},
		{[]string{"platform/**"}, "platform", false},
		{[]string{"platform/**"}, "platforms/x", false},
		{[]string{"platform/*"}, "platform/a/b", false},
		{[]string{"svc/*/token"}, "svc/mail/token", true},
		{[]string{"svc/*/token"}, "svc/mail/other", false},
	} {
		if got := credentials.MatchPath(c.patterns, c.path); got != c.want {
			t.Errorf("MatchPath(%v, %q) = %v, want %v", c.patterns, c.path, got, c.want)
		}
	}
}

func TestCoverage(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "deploy", "rotation", "catalogue.json"))
	if err != nil {
		t.Fatal(err)
	}
	cat, err := credentials.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	cov := cat.Coverage(credentials.Estate{TenantMount: "secret", Mounts: []credentials.Mount{
		{Path: "sys/", Type: "system"}, {Path: "cubbyhole/", Type: "cubbyhole"},
		{Path: "secret/", Type: "kv", Items: []string{"tenants/acme/ssh", "tenants/acme/smtp", "tenants/acme/dkim", "api_keys/acme/k1", "api_keys/acme/k2",
			"tenants/acme/notes", "platform/db", "platform/a/b", "pki-certs/smtp-relay", "legacy/token"}},
		{Path: "transit/", Type: "transit", Items: []string{"keys/mail", "keys/archive"}},
		{Path: "database/", Type: "database", Items: []string{"config/platform", "static-roles/app"}},
		{Path: "pki/", Type: "pki", Items: []string{"roles/smtp-relay"}},
		{Path: "aws/", Type: "aws"},
		{Path: "kv-old/", Type: "kv", Items: []string{"x"}},
	}})
	var gaps []string
	for _, g := range cov.Uncovered {
		gaps = append(gaps, g.Mount+":"+g.Item)
	}
	slices.Sort(gaps)
	want := []string{"aws:", "kv-old:", "secret:legacy/token", "secret:tenants/acme/notes"}
	if !slices.Equal(gaps, want) {
		t.Errorf("uncovered %v, want %v", gaps, want)
	}
	counts := map[credentials.Kind]int{}
	for _, k := range cov.Kinds {
		counts[k.Kind] = k.Count
	}
	wantCounts := map[credentials.Kind]int{credentials.SSH: 1, credentials.SMTP: 1, credentials.DKIM: 1, credentials.APIKeys: 2,
		credentials.Transit: 2, credentials.Database: 2, credentials.PKI: 2, credentials.KV: 2}
	for k, n := range wantCounts {
		if counts[k] != n {
			t.Errorf("%s: %d, want %d", k, counts[k], n)
		}
	}
	if cov.Tenants != 1 {
		t.Errorf("tenants %d", cov.Tenants)
	}
}

func TestResultSchemaNamesEveryKind(t *testing.T) {
	f, _ := reflect.TypeFor[credentials.Result]().FieldByName("Kind")
	var names []string
	for _, i := range credentials.Kinds() {
		names = append(names, string(i.Kind))
	}
	if got := f.Tag.Get("enum"); got != strings.Join(names, ",") {
		t.Errorf("Result.Kind's enum tag is %q, the registry has %q", got, strings.Join(names, ","))
	}
	f, _ = reflect.TypeFor[credentials.Result]().FieldByName("State")
	var states []string
	for _, s := range credentials.States() {
		states = append(states, string(s))
	}
	if got := f.Tag.Get("enum"); got != strings.Join(states, ",") {
		t.Errorf("Result.State's enum tag is %q, want %q", got, strings.Join(states, ","))
	}
}

func TestNormalSerial(t *testing.T) {
	t.Run("Vault's colon-separated bytes equal the CRL's hex", func(t *testing.T) {
		if a, b := credentials.NormalSerial("0a:1B:ff"), credentials.NormalSerial("a1bff"); a != b {
			t.Fatalf("%q != %q", a, b)
		}
	})
	t.Run("different serials differ", func(t *testing.T) {
		if credentials.NormalSerial("0a:1b") == credentials.NormalSerial("0a:1c") {
			t.Fatal("equal")
		}
	})
}
