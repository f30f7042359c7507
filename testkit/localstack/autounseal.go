package localstack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	vault "github.com/hashicorp/vault/api"
)

// StartAutoUnsealVault starts a second Vault that auto-unseals through the
// stack's Vault (the transit seal), so it has recovery keys instead of
// unseal keys: the shape of a cloud-KMS cluster, on loopback. The stack's
// Vault must be running; the returned Vault's UnsealKeys are its recovery
// keys (5 shares, threshold 3), and it gets Lockdown's tokens like the
// stack's Vault. It is stopped by Close like every other server.
func (s *Stack) StartAutoUnsealVault(ctx context.Context) (*Vault, error) {
	if s.Vault == nil {
		return nil, errors.New("localstack: the auto-unseal Vault needs the stack's Vault as its transit seal")
	}
	provider, err := s.Vault.Client()
	if err != nil {
		return nil, err
	}
	// The stack's Vault mounts transit at start (mountPlatform): the seal's
	// key lives there.
	if _, err := provider.Logical().WriteWithContext(ctx, "transit/keys/autounseal", nil); err != nil {
		return nil, fmt.Errorf("transit key: %w", err)
	}
	if err := provider.Sys().PutPolicyWithContext(ctx, "autounseal", `
path "transit/encrypt/autounseal" { capabilities = ["update"] }
path "transit/decrypt/autounseal" { capabilities = ["update"] }`); err != nil {
		return nil, err
	}
	sealTok, err := provider.Auth().Token().CreateOrphanWithContext(ctx, &vault.TokenCreateRequest{Policies: []string{"autounseal"}, Period: "768h"})
	if err != nil {
		return nil, err
	}
	bin, err := tool("vault")
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(s.Dir, "vault-autounseal")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`storage "file" {
  path = %q
}
seal "transit" {
  address    = %q
  token      = %q
  key_name   = "autounseal"
  mount_path = "transit/"
}
`, filepath.Join(dir, "data"), s.Vault.Addr, sealTok.Auth.ClientToken) + vaultServerConfig(ports[0], ports[1])
	confPath := filepath.Join(dir, "vault.hcl")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	p, err := startProcess("vault-autounseal", s.Dir, bin, []string{"server", "-config", confPath}, vaultNodeEnv, nil)
	if err != nil {
		return nil, err
	}
	s.procs = append(s.procs, p)
	v := &Vault{Addr: fmt.Sprintf("http://127.0.0.1:%d", ports[0]), Port: ports[0], ClusterPort: ports[1]}
	c, err := newVaultClient(v.Addr)
	if err != nil {
		return nil, err
	}
	if err := p.waitReady(ctx, func(ctx context.Context) error { _, err := c.Sys().SealStatusWithContext(ctx); return err }); err != nil {
		return nil, err
	}
	init, err := c.Sys().InitWithContext(ctx, &vault.InitRequest{RecoveryShares: VaultShares, RecoveryThreshold: VaultThreshold})
	if err != nil {
		return nil, fmt.Errorf("auto-unseal vault init: %w", err)
	}
	v.RootToken, v.UnsealKeys = init.RootToken, init.RecoveryKeys
	c.SetToken(v.RootToken)
	if err := p.waitReady(ctx, func(ctx context.Context) error {
		h, err := c.Sys().HealthWithContext(ctx)
		if err == nil && (h.Sealed || h.Standby) {
			err = errors.New("not unsealed and active yet")
		}
		return err
	}); err != nil {
		return nil, err
	}
	if v.LockdownTokens, err = lockdownTokens(ctx, c, dir); err != nil {
		return nil, err
	}
	return v, nil
}
