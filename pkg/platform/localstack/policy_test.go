package localstack_test

import (
	"context"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/localstack"
)

// TestLeastPrivilege proves what each service's Vault token may not do.
// What each may do is proven by the integration tests, which run every
// service with exactly these tokens (never the root token).
func TestLeastPrivilege(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := localstack.Start(ctx, localstack.Options{Vault: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	root, err := s.Vault.Client()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := root.KVv2(localstack.VaultKVMount).Put(ctx, "tenants/acme/ssh", map[string]any{"private_key": "x"}); err != nil {
		t.Fatal(err)
	}
	as := func(token string) *vault.Client {
		c, err := root.Clone()
		if err != nil {
			t.Fatal(err)
		}
		c.SetToken(token)
		return c
	}
	denied := func(t *testing.T, what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("%s: want permission denied, got %v", what, err)
		}
	}
	rotator, seal, recovery := as(s.Vault.RotatorToken), as(s.Vault.SealToken), as(s.Vault.RecoveryToken)

	t.Run("the rotator's token reads and writes tenant secrets but cannot seal Vault or read sys/", func(t *testing.T) {
		if _, err := rotator.KVv2(localstack.VaultKVMount).Get(ctx, "tenants/acme/ssh"); err != nil {
			t.Fatalf("read a tenant secret: %v", err)
		}
		denied(t, "sys/seal", rotator.Sys().SealWithContext(ctx))
		_, err := rotator.Logical().ReadWithContext(ctx, "sys/policies/acl/lockdown-rotator")
		denied(t, "read sys/policies", err)
		_, err = rotator.Logical().ListWithContext(ctx, "auth/token/accessors")
		denied(t, "list token accessors", err)
		_, err = rotator.Logical().WriteWithContext(ctx, "secret/data/other/thing", map[string]any{"data": map[string]any{"a": "b"}})
		denied(t, "write outside tenants/", err)
	})
	t.Run("the seal token can seal and nothing else: no secrets, no tokens", func(t *testing.T) {
		_, err := seal.KVv2(localstack.VaultKVMount).Get(ctx, "tenants/acme/ssh")
		denied(t, "read a tenant secret", err)
		_, err = seal.Logical().ListWithContext(ctx, "auth/token/accessors")
		denied(t, "list token accessors", err)
		_, err = seal.Logical().WriteWithContext(ctx, "sys/rotate", nil)
		denied(t, "rotate the keyring", err)
	})
	t.Run("the recovery token revokes and rekeys but reads no secret and cannot seal", func(t *testing.T) {
		_, err := recovery.KVv2(localstack.VaultKVMount).Get(ctx, "tenants/acme/ssh")
		denied(t, "read a tenant secret", err)
		denied(t, "sys/seal", recovery.Sys().SealWithContext(ctx))
		if _, err := recovery.Logical().ListWithContext(ctx, "auth/token/accessors"); err != nil {
			t.Fatalf("list token accessors (needed to revoke): %v", err)
		}
	})
	t.Run("the assessor and the notifier get no Vault token at all", func(t *testing.T) {
		for _, svc := range []string{events.ServiceAssessor, events.ServiceNotifier} {
			for _, kv := range s.Env(svc) {
				if strings.HasPrefix(kv, "LOCKDOWN_VAULT_TOKEN=") || strings.Contains(kv, "_TOKEN=") {
					t.Errorf("%s is given %s", svc, strings.SplitN(kv, "=", 2)[0])
				}
			}
		}
	})
}
