package cli_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/cmd/lockdown/internal/cli"
	"github.com/lockdown/lockdown/pkg/platform/vaultdecl"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// TestInstallVault runs `lockdown install vault --baseline-from-live`
// against a real Vault: it writes the baseline containment and the
// rotator load, with the platform's objects and without Vault's,
// Lockdown's or the declared auth methods; it refuses a Vault with an
// audit device logging in clear; it prints no token.
func TestInstallVault(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{Vault: true})
	root, err := localstack.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	authDir := filepath.Join(root, "deploy", "vault", "auth")

	t.Run("every missing input is named at once", func(t *testing.T) {
		t.Setenv("VAULT_TOKEN", "")
		t.Setenv("VAULT_ADDR", "")
		t.Setenv("LOCKDOWN_VAULT_ADDR", "")
		code, _, errOut := run(ctx, "install", "vault", "--auth-dir", t.TempDir())
		if code != cli.ExitUsage {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		for _, want := range []string{"--baseline-from-live", "--vault-addr", "VAULT_TOKEN", "--auth-dir"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("%s is not named: %s", want, errOut)
			}
		}
	})

	v, err := s.Vault.Client()
	if err != nil {
		t.Fatal(err)
	}
	// The platform's own objects besides the stack's.
	if err := v.Sys().PutPolicyWithContext(ctx, "mailer", `path "secret/data/mailer/*" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	if err := v.Sys().MountWithContext(ctx, "mail-transit", &vault.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_TOKEN", s.Vault.RootToken)
	out := filepath.Join(t.TempDir(), "baseline.json")

	t.Run("the baseline holds the platform's objects and loads as containment and the rotator load it", func(t *testing.T) {
		code, stdout, errOut := run(ctx, "install", "vault", "--baseline-from-live", "--vault-addr", s.Vault.Addr, "--auth-dir", authDir, "--out", out)
		if code != cli.ExitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		if strings.Contains(stdout+errOut, s.Vault.RootToken) {
			t.Fatal("the token was printed")
		}
		b, err := vaultdecl.Load(out)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.AuditDevices) != 1 || b.AuditDevices[0].Path != "file" || b.AuditDevices[0].Options["file_path"] != s.Vault.AuditLog {
			t.Errorf("audit devices %+v", b.AuditDevices)
		}
		if strings.Join(b.SecretsMounts, ",") != "database,mail-transit,pki,secret,transit" || strings.Join(b.Policies, ",") != "mailer" || len(b.AuthMounts) != 0 {
			t.Errorf("secrets mounts %v, policies %v, auth mounts %v (want the stack's database, pki, secret, transit and mail-transit; mailer; none: approle and jwt are declared in deploy/vault/auth)",
				b.SecretsMounts, b.Policies, b.AuthMounts)
		}
		if len(b.TokenRoles) != 0 {
			t.Errorf("token roles %v: Lockdown's own belong to no baseline", b.TokenRoles)
		}
	})

	t.Run("a Vault with an audit device logging in clear is refused", func(t *testing.T) {
		if err := v.Sys().EnableAuditWithOptionsWithContext(ctx, "tap", &vault.EnableAuditOptions{Type: "file",
			Options: map[string]string{"file_path": filepath.Join(t.TempDir(), "tap.log"), "log_raw": "true"}}); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := run(ctx, "install", "vault", "--baseline-from-live", "--vault-addr", s.Vault.Addr, "--auth-dir", authDir)
		if code != cli.ExitFailure || !strings.Contains(errOut, "log_raw") {
			t.Fatalf("exit %d: %s", code, errOut)
		}
	})
}
