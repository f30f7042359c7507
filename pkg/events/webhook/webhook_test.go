package webhook_test

import (
	"errors"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events/webhook"
)

func TestSignature(t *testing.T) {
	secret := webhook.TenantSecret([]byte("master"), "tenant-1")
	now := time.Unix(1_700_000_000, 0)
	body := []byte(`{"incident_id":"inc-1"}`)
	sig := webhook.Sign(secret, now, body)
	ts := "1700000000"

	t.Run("a signed body verifies", func(t *testing.T) {
		if err := webhook.Verify(secret, ts, sig, body, now, 5*time.Minute); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("every changed byte of the body fails", func(t *testing.T) {
		for i := range body {
			bad := append([]byte(nil), body...)
			bad[i] ^= 1
			if err := webhook.Verify(secret, ts, sig, bad, now, 5*time.Minute); !errors.Is(err, webhook.ErrBadSignature) {
				t.Fatalf("byte %d changed: %v", i, err)
			}
		}
	})
	t.Run("another tenant's secret fails", func(t *testing.T) {
		other := webhook.TenantSecret([]byte("master"), "tenant-2")
		if err := webhook.Verify(other, ts, sig, body, now, 5*time.Minute); !errors.Is(err, webhook.ErrBadSignature) {
			t.Fatal(err)
		}
	})
	t.Run("a changed timestamp fails", func(t *testing.T) {
		if err := webhook.Verify(secret, "1700000001", sig, body, now, 5*time.Minute); !errors.Is(err, webhook.ErrBadSignature) {
			t.Fatal(err)
		}
	})
	t.Run("an old timestamp is refused as a replay", func(t *testing.T) {
		if err := webhook.Verify(secret, ts, sig, body, now.Add(time.Hour), 5*time.Minute); !errors.Is(err, webhook.ErrStale) {
			t.Fatal(err)
		}
	})
	t.Run("a header without the version prefix fails", func(t *testing.T) {
		if err := webhook.Verify(secret, ts, sig[3:], body, now, 5*time.Minute); !errors.Is(err, webhook.ErrBadSignature) {
			t.Fatal(err)
		}
	})
}
