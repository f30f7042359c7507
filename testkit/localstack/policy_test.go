package localstack_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// TestLeastPrivilege proves what each service's Vault token may not do.
// What each may do is proven by the integration tests, which run every
// service with exactly these tokens (never the root token).
func TestLeastPrivilege(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{Vault: true})
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

	t.Run("the rotator's token writes tenant secrets but reads none, and cannot seal Vault or read sys/", func(t *testing.T) {
		_, err := rotator.KVv2(localstack.VaultKVMount).Get(ctx, "tenants/acme/ssh")
		denied(t, "read a tenant secret", err)
		_, err = rotator.KVv2(localstack.VaultKVMount).GetVersion(ctx, "tenants/acme/ssh", 1)
		denied(t, "read an old version", err)
		if _, err := rotator.Logical().WriteWithContext(ctx, "secret/data/tenants/acme/ssh", map[string]any{"data": map[string]any{"private_key": "new"}, "options": map[string]any{"cas": 1}}); err != nil {
			t.Fatalf("write a tenant secret with check-and-set: %v", err)
		}
		if _, err := rotator.Logical().ReadWithContext(ctx, "secret/subkeys/tenants/acme/ssh"); err != nil {
			t.Fatalf("read a secret's subkeys (key names only): %v", err)
		}
		if _, err := rotator.Logical().ReadWithContext(ctx, "secret/metadata/tenants/acme/ssh"); err != nil {
			t.Fatalf("read a secret's metadata (the current version): %v", err)
		}
		denied(t, "sys/seal", rotator.Sys().SealWithContext(ctx))
		_, err = rotator.Logical().ReadWithContext(ctx, "sys/policies/acl/lockdown-rotator")
		denied(t, "read sys/policies", err)
		_, err = rotator.Logical().ListWithContext(ctx, "auth/token/accessors")
		denied(t, "list token accessors", err)
		_, err = rotator.Logical().WriteWithContext(ctx, "secret/data/other/thing", map[string]any{"data": map[string]any{"a": "b"}})
		denied(t, "write outside tenants/", err)
		_, err = rotator.Logical().WriteWithContext(ctx, "secret/data/tenants/acme/webhook", map[string]any{"data": map[string]any{"a": "b"}})
		denied(t, "write a tenant secret Lockdown does not rotate", err)
		_, err = rotator.Logical().WriteWithContext(ctx, "secret/metadata/tenants/acme/ssh", map[string]any{"max_versions": 1})
		denied(t, "change a secret's metadata", err)
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
	t.Run("the recovery token restores only the declared auth methods, roles and policies, and mints no credential", func(t *testing.T) {
		// What the restore does is allowed.
		if _, err := recovery.Logical().WriteWithContext(ctx, "auth/approle/role/mailer", map[string]any{
			"token_policies": []string{"default"}, "token_ttl": "1h", "token_max_ttl": "4h", "secret_id_ttl": "24h"}); err != nil {
			t.Fatalf("re-apply a declared role: %v", err)
		}
		_, err := recovery.Logical().WriteWithContext(ctx, "auth/approle/role/mailer", map[string]any{"token_policies": []string{"lockdown-recovery"}})
		denied(t, "give a declared role another policy", err)
		_, err = recovery.Logical().WriteWithContext(ctx, "auth/approle/role/evil", map[string]any{"token_policies": []string{"default"}})
		denied(t, "write an undeclared role", err)
		_, err = recovery.Logical().WriteWithContext(ctx, "auth/approle/role/mailer/secret-id", nil)
		denied(t, "mint a secret-id", err)
		_, err = recovery.Logical().WriteWithContext(ctx, "auth/jwt/config", map[string]any{"jwt_validation_pubkeys": []string{"attacker key"}})
		denied(t, "swap the jwt signing key", err)
		denied(t, "enable an undeclared auth method", recovery.Sys().EnableAuthWithOptionsWithContext(ctx, "backdoor", &vault.EnableAuthOptions{Type: "userpass"}))
		denied(t, "enable a declared path with another type", recovery.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &vault.EnableAuthOptions{Type: "userpass"}))
		denied(t, "delete Lockdown's own policy", recovery.Sys().DeletePolicyWithContext(ctx, "lockdown-seal"))
		_, err = recovery.Logical().WriteWithContext(ctx, "sys/policies/acl/anything", map[string]any{"policy": `path "*" { capabilities = ["sudo"] }`})
		denied(t, "write a policy", err)
		if _, err := recovery.Sys().ListPoliciesWithContext(ctx); err != nil {
			t.Fatalf("list policies (the baseline check): %v", err)
		}
	})
	t.Run("the recovery token reconciles Vault's security configuration only towards the declaration", func(t *testing.T) {
		if _, err := recovery.Sys().ListAuditWithContext(ctx); err != nil {
			t.Fatalf("list audit devices: %v", err)
		}
		denied(t, "enable an audit device", recovery.Sys().EnableAuditWithOptionsWithContext(ctx, "tap", &vault.EnableAuditOptions{Type: "file",
			Options: map[string]string{"file_path": "/tmp/tap.log", "log_raw": "true"}}))
		// A declared policy may be written with its declared text only.
		def, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "vault", "policies", "default.hcl"))
		if err != nil {
			t.Fatal(err)
		}
		if err := recovery.Sys().PutPolicyWithContext(ctx, "default", string(def)); err != nil {
			t.Fatalf("restore default to its declared text: %v", err)
		}
		denied(t, "write default with another text", recovery.Sys().PutPolicyWithContext(ctx, "default", `path "secret/*" { capabilities = ["read"] }`))
		denied(t, "rewrite lockdown-rotator to read secrets", recovery.Sys().PutPolicyWithContext(ctx, "lockdown-rotator", `path "secret/*" { capabilities = ["read"] }`))
		denied(t, "rewrite its own policy", recovery.Sys().PutPolicyWithContext(ctx, "lockdown-recovery", `path "*" { capabilities = ["sudo"] }`))
		denied(t, "delete Lockdown's own policy", recovery.Sys().DeletePolicyWithContext(ctx, "lockdown-rotator"))
		// An undeclared lockdown-* policy is the intruder's and may go.
		if err := root.Sys().PutPolicyWithContext(ctx, "lockdown-evil", `path "secret/*" { capabilities = ["read"] }`); err != nil {
			t.Fatal(err)
		}
		if err := recovery.Sys().DeletePolicyWithContext(ctx, "lockdown-evil"); err != nil {
			t.Fatalf("delete an undeclared lockdown-* policy: %v", err)
		}
		_, err = recovery.Logical().WriteWithContext(ctx, "auth/token/roles/lockdown-rotator", map[string]any{"allowed_policies": []string{"root"}})
		denied(t, "give Lockdown's token role another policy", err)
		_, err = recovery.Logical().WriteWithContext(ctx, "auth/token/roles/lockdown-rotator", map[string]any{"token_bound_cidrs": []string{"10.0.0.0/8"}})
		denied(t, "bind Lockdown's token role to a network", err)
		_, err = recovery.Logical().WriteWithContext(ctx, "auth/token/roles/anything", map[string]any{"allowed_policies": []string{"default"}})
		denied(t, "write another token role", err)
		_, err = recovery.Logical().WriteWithContext(ctx, "sys/mounts/secret/tune", map[string]any{"default_lease_ttl": "1h"})
		denied(t, "tune a mount beyond its audit keys", err)
		err = recovery.Sys().MountWithContext(ctx, "exfil", &vault.MountInput{Type: "kv"})
		denied(t, "mount a secrets engine", err)
	})
	t.Run("the rotator's token lists audit devices (its gate) and changes none", func(t *testing.T) {
		if _, err := rotator.Sys().ListAuditWithContext(ctx); err != nil {
			t.Fatalf("list audit devices: %v", err)
		}
		denied(t, "disable an audit device", rotator.Sys().DisableAuditWithContext(ctx, "file"))
		denied(t, "enable an audit device", rotator.Sys().EnableAuditWithOptionsWithContext(ctx, "tap", &vault.EnableAuditOptions{Type: "file",
			Options: map[string]string{"file_path": "/tmp/tap.log"}}))
	})
	t.Run("the rotator's token rotates the catalogue's platform credentials and reads none of them", func(t *testing.T) {
		if _, err := root.Logical().WriteWithContext(ctx, "transit/keys/mail", map[string]any{"exportable": true}); err != nil {
			t.Fatal(err)
		}
		if _, err := rotator.Logical().WriteWithContext(ctx, "transit/keys/mail/rotate", nil); err != nil {
			t.Errorf("rotate a transit key: %v", err)
		}
		_, err := rotator.Logical().ReadWithContext(ctx, "transit/export/encryption-key/mail")
		denied(t, "export a transit key", err)
		_, err = rotator.Logical().WriteWithContext(ctx, "transit/decrypt/mail", map[string]any{"ciphertext": "vault:v1:AAAA"})
		denied(t, "decrypt with a transit key", err)
		_, err = rotator.Logical().WriteWithContext(ctx, "transit/keys/mail/config", map[string]any{"deletion_allowed": true})
		denied(t, "reconfigure a transit key the catalogue does not raise", err)
		_, err = rotator.Logical().ReadWithContext(ctx, "database/static-creds/app")
		denied(t, "read a static role's password", err)
		_, err = rotator.Logical().ReadWithContext(ctx, "database/creds/app")
		denied(t, "mint database credentials", err)
		_, err = rotator.Logical().WriteWithContext(ctx, "database/config/platform", map[string]any{"plugin_name": "postgresql-database-plugin"})
		denied(t, "rewrite a database connection", err)
		_, err = rotator.Logical().WriteWithContext(ctx, "pki/issue/anything", map[string]any{"common_name": "evil.lockdown.test"})
		denied(t, "issue under a role the catalogue does not name", err)
		_, err = rotator.Logical().WriteWithContext(ctx, "pki/root/generate/internal", map[string]any{"common_name": "evil"})
		denied(t, "make a CA", err)
		_, err = rotator.Logical().ReadWithContext(ctx, "secret/data/platform/billing")
		denied(t, "read a platform secret (it may only patch listed fields)", err)
		_, err = rotator.Logical().ReadWithContext(ctx, "secret/data/pki-certs/smtp-relay")
		denied(t, "read a kept certificate's key", err)
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

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := localstack.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}
