package app_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/services/rotator/internal/app"
)

// TestRotatorPolicy checks the rotator's policy file grants exactly what
// the shipped catalogue's entries need (its generated part), so a
// catalogue changed without its policy fails here, not on the day.
// -update rewrites the file.
func TestRotatorPolicy(t *testing.T) {
	root := filepath.Join("..", "..", "..", "..")
	file := filepath.Join(root, "deploy", "vault", "policies", "lockdown-rotator.hcl")
	current, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := credentials.Load(filepath.Join(root, "deploy", "rotation", "catalogue.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := app.RenderPolicy(string(current), cat)
	if *update {
		if err := os.WriteFile(file, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if string(current) != want {
		t.Errorf("%s does not match deploy/rotation/catalogue.json: run `make docs` (or `rotator policy`)", file)
	}
	t.Run("no generated path grants a read of a secret's data", func(t *testing.T) {
		_, generated, _ := strings.Cut(want, app.PolicyMarker)
		for _, line := range strings.Split(generated, "\n") {
			if strings.HasPrefix(line, "path ") && (strings.Contains(line, "/data/") || strings.Contains(line, "/creds/") || strings.Contains(line, "/export/")) {
				next := generated[strings.Index(generated, line)+len(line):]
				caps, _, _ := strings.Cut(next, "}")
				if strings.Contains(caps, `"read"`) {
					t.Errorf("%s grants read", line)
				}
			}
		}
	})
}

// TestRegistry checks every platform-wide kind of the contract has a
// package registered, and that a catalogue naming a kind without one, or
// an invalid catalogue, stops the rotator at start (exit 2).
func TestRegistry(t *testing.T) {
	reg := app.Registry()
	for _, k := range credentials.OfScope(credentials.PlatformWide) {
		if _, ok := reg[k]; !ok {
			t.Errorf("kind %s has no package registered", k)
		}
	}
	// Every per-tenant kind the contract replaces by one secret (neither
	// destroyed nor waiting for the tenant) has its package.
	secrets := map[credentials.Kind]bool{}
	for _, k := range app.TenantSecrets() {
		secrets[k.Kind()] = true
	}
	for _, info := range credentials.Kinds() {
		if info.Scope == credentials.PerTenant && !info.Destroys && !info.WaitsForTenant && !secrets[info.Kind] {
			t.Errorf("per-tenant kind %s has no package", info.Kind)
		}
	}
	bad := filepath.Join(t.TempDir(), "catalogue.json")
	if err := os.WriteFile(bad, []byte(`{"entries": [{"name": "t", "kind": "transit", "mount": "transit"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	err := config.LoadFrom(&app.Config{}, func(k string) (string, bool) {
		v, ok := map[string]string{"LOCKDOWN_ROTATION_CATALOGUE": bad}[k]
		return v, ok
	})
	if err == nil || !strings.Contains(err.Error(), "LOCKDOWN_ROTATION_CATALOGUE") || !strings.Contains(err.Error(), "keys: at least one") {
		t.Errorf("an invalid catalogue is not refused at start: %v", err)
	}
}
