package app_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/platform/keycheck"
	"github.com/lockdown/lockdown/testkit/tenantseed"
	"github.com/lockdown/lockdown/testkit/testwait"
)

// TestAuditGate: an intruder with root added an audit device that logs in
// clear, and the rotator is told access was revoked (it is not: the
// device is still there). The rotator writes no secret while the device
// exists — it does not take containment's word for it — and rotates every
// tenant once the device is gone, none of the new values in the device's
// file.
func TestAuditGate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	const tenants = 8
	f := seed(t, ctx, tenants)
	tap := filepath.Join(t.TempDir(), "tap.log")
	must(t, f.root.Sys().EnableAuditWithOptionsWithContext(ctx, "intruder-tap", &vault.EnableAuditOptions{Type: "file",
		Options: map[string]string{"file_path": tap, "log_raw": "true"}}))
	startRotators(t, f.s, 1)
	js := operator(t, ctx, f.s)
	startIncident(t, ctx, f.s, "inc-gate", nil)

	t.Run("while an undeclared audit device exists no secret is written", func(t *testing.T) {
		testwait.For(t, time.Minute, "the rotator to meet the gate", func() bool {
			log, _ := os.ReadFile(filepath.Join(f.s.Dir, "rotator-1.log"))
			return strings.Count(string(log), "undeclared audit device") >= 2
		})
		kv := f.root.KVv2("secret")
		for i := range tenants {
			for _, secret := range []string{"ssh", "smtp", "dkim"} {
				meta, err := kv.GetMetadata(ctx, "tenants/"+tenantseed.ID(i)+"/"+secret)
				must(t, err)
				if meta.CurrentVersion != 1 {
					t.Fatalf("%s/%s was written (version %d) while the intruder's device was enabled", tenantseed.ID(i), secret, meta.CurrentVersion)
				}
			}
		}
	})

	t.Run("once the device is removed every tenant is rotated, and none of the new values reached it", func(t *testing.T) {
		must(t, f.root.Sys().DisableAuditWithContext(ctx, "intruder-tap"))
		done := awaitCompleted(t, ctx, js, "inc-gate")
		if done.Completed != tenants || done.Failed != 0 {
			t.Fatalf("rotation.completed %+v, want %d completed", done, tenants)
		}
		captured, err := os.ReadFile(tap)
		must(t, err)
		if !bytes.Contains(captured, []byte("sys/audit")) {
			t.Fatal("setup: the intruder's device recorded nothing")
		}
		kv := f.root.KVv2("secret")
		leaked := 0
		for i := range tenants {
			for _, secret := range []string{"ssh", "smtp", "dkim"} {
				s, err := kv.Get(ctx, "tenants/"+tenantseed.ID(i)+"/"+secret)
				must(t, err)
				for _, field := range []string{"private_key", "password"} {
					v, _ := s.Data[field].(string)
					if v == "" {
						continue
					}
					if keycheck.Leaked(captured, v) {
						leaked++
					}
				}
			}
		}
		if leaked > 0 {
			t.Fatalf("%d new secret values found in the intruder's audit file", leaked)
		}
	})
}
