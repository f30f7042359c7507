// Package vaultadmin is containment's adapter for the recovery phases: it
// implements recovery.Vault over github.com/hashicorp/vault/api with the
// recovery token (policy deploy/vault/policies/lockdown-recovery.hcl).
// Every call it makes is listed, with its capability, in
// docs/operations.md.
package vaultadmin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/services/containment/internal/recovery"
)

// Admin implements recovery.Vault.
type Admin struct{ c *vault.Client }

// New builds a client for addr with the recovery token. Standbys forward
// requests to the active node, so any node's address works.
func New(addr, token string, timeout time.Duration) (*Admin, error) {
	cfg := vault.DefaultConfig()
	if cfg.Error != nil {
		return nil, cfg.Error
	}
	cfg.Address, cfg.Timeout, cfg.MaxRetries = addr, timeout, 0 // the engine retries each step itself, with backoff and without limit
	c, err := vault.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.ClearNamespace()
	c.SetToken(token)
	return &Admin{c: c}, nil
}

// SelfAccessor reads auth/token/lookup-self (default policy).
func (a *Admin) SelfAccessor(ctx context.Context) (string, error) {
	s, err := a.c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return "", err
	}
	acc, _ := s.Data["accessor"].(string)
	if acc == "" {
		return "", errors.New("lookup-self returned no accessor")
	}
	return acc, nil
}

// AuthMounts reads sys/auth.
func (a *Admin) AuthMounts(ctx context.Context) (map[string]recovery.AuthMount, error) {
	m, err := a.c.Sys().ListAuthWithContext(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]recovery.AuthMount{}
	for path, mount := range m {
		out[strings.TrimSuffix(path, "/")] = recovery.AuthMount{Type: mount.Type, MaxLeaseTTL: time.Duration(mount.Config.MaxLeaseTTL) * time.Second}
	}
	return out, nil
}

// Policies lists sys/policies/acl.
func (a *Admin) Policies(ctx context.Context) ([]string, error) {
	return a.c.Sys().ListPoliciesWithContext(ctx)
}

// DeletePolicy deletes sys/policies/acl/:name.
func (a *Admin) DeletePolicy(ctx context.Context, name string) error {
	return a.c.Sys().DeletePolicyWithContext(ctx, name)
}

// DisableAuth deletes sys/auth/:path, which revokes the method's tokens.
func (a *Admin) DisableAuth(ctx context.Context, path string) error {
	return a.c.Sys().DisableAuthWithContext(ctx, path)
}

// EnableAuth writes sys/auth/:path.
func (a *Admin) EnableAuth(ctx context.Context, path, typ, description string) error {
	return a.c.Sys().EnableAuthWithOptionsWithContext(ctx, path, &vault.EnableAuthOptions{Type: typ, Description: description})
}

// WriteAuth writes auth/:path (a method's config or role).
func (a *Admin) WriteAuth(ctx context.Context, path string, data map[string]any) error {
	_, err := a.c.Logical().WriteWithContext(ctx, "auth/"+path, data)
	return err
}

// TokenAccessors lists auth/token/accessors (needs sudo).
func (a *Admin) TokenAccessors(ctx context.Context) ([]string, error) {
	s, err := a.c.Logical().ListWithContext(ctx, "auth/token/accessors")
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, nil
	}
	keys, _ := s.Data["keys"].([]any)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		if str, ok := k.(string); ok {
			out = append(out, str)
		}
	}
	return out, nil
}

// RevokeAccessor writes auth/token/revoke-accessor.
func (a *Admin) RevokeAccessor(ctx context.Context, accessor string) error {
	return a.c.Auth().Token().RevokeAccessorWithContext(ctx, accessor)
}

// RevokePrefix writes sys/leases/revoke-prefix/:prefix (needs sudo).
func (a *Admin) RevokePrefix(ctx context.Context, prefix string) error {
	return a.c.Sys().RevokePrefixWithContext(ctx, prefix)
}

// Rotate writes sys/rotate (needs sudo).
func (a *Admin) Rotate(ctx context.Context) error { return a.c.Sys().RotateWithContext(ctx) }

// KeyTerm reads sys/key-status.
func (a *Admin) KeyTerm(ctx context.Context) (int, error) {
	k, err := a.c.Sys().KeyStatusWithContext(ctx)
	if err != nil {
		return 0, err
	}
	return k.Term, nil
}

// RecoverySeal reads sys/seal-status (no token): auto-unseal clusters have
// recovery keys instead of unseal keys.
func (a *Admin) RecoverySeal(ctx context.Context) (bool, error) {
	s, err := a.c.Sys().SealStatusWithContext(ctx)
	if err != nil {
		return false, err
	}
	return s.RecoverySeal, nil
}

// RekeyStatus reads sys/rekey/init or sys/rekey-recovery-key/init.
func (a *Admin) RekeyStatus(ctx context.Context, rec bool) (recovery.RekeyStatus, error) {
	var s *vault.RekeyStatusResponse
	var err error
	if rec {
		s, err = a.c.Sys().RekeyRecoveryKeyStatusWithContext(ctx)
	} else {
		s, err = a.c.Sys().RekeyStatusWithContext(ctx)
	}
	if err != nil {
		return recovery.RekeyStatus{}, err
	}
	return status(s), nil
}

func status(s *vault.RekeyStatusResponse) recovery.RekeyStatus {
	return recovery.RekeyStatus{Started: s.Started, Nonce: s.Nonce, T: s.T, N: s.N, Progress: s.Progress,
		PGPFingerprints: s.PGPFingerprints, VerificationNonce: s.VerificationNonce}
}

// RekeyInit writes sys/rekey/init (or the recovery-key variant). With PGP
// keys it asks Vault to keep the encrypted backup: its nonce proves the
// ceremony completed.
func (a *Admin) RekeyInit(ctx context.Context, rec bool, shares, threshold int, pgpKeys []string, verify bool) (recovery.RekeyStatus, error) {
	req := &vault.RekeyInitRequest{SecretShares: shares, SecretThreshold: threshold, PGPKeys: pgpKeys,
		Backup: len(pgpKeys) > 0, RequireVerification: verify}
	var s *vault.RekeyStatusResponse
	var err error
	if rec {
		s, err = a.c.Sys().RekeyRecoveryKeyInitWithContext(ctx, req)
	} else {
		s, err = a.c.Sys().RekeyInitWithContext(ctx, req)
	}
	if err != nil {
		return recovery.RekeyStatus{}, err
	}
	return status(s), nil
}

// RekeyCancel deletes sys/rekey/init (or the recovery-key variant) with
// the rekey's nonce. (The api's RekeyRecoveryKeyCancelWithContext, without
// a nonce, deletes the barrier rekey instead: the nonce variants are right.)
func (a *Admin) RekeyCancel(ctx context.Context, rec bool, nonce string) error {
	if rec {
		return a.c.Sys().RekeyRecoveryKeyCancelWithContextWithNonce(ctx, nonce)
	}
	return a.c.Sys().RekeyCancelWithContextWithNonce(ctx, nonce)
}

// RekeyVerifyStatus reads sys/rekey/verify (or the recovery-key variant).
func (a *Admin) RekeyVerifyStatus(ctx context.Context, rec bool) (recovery.VerifyStatus, error) {
	var s *vault.RekeyVerificationStatusResponse
	var err error
	if rec {
		s, err = a.c.Sys().RekeyRecoveryKeyVerificationStatusWithContext(ctx)
	} else {
		s, err = a.c.Sys().RekeyVerificationStatusWithContext(ctx)
	}
	if err != nil {
		return recovery.VerifyStatus{}, err
	}
	return recovery.VerifyStatus{Started: s.Started, Nonce: s.Nonce, T: s.T, N: s.N, Progress: s.Progress}, nil
}

// RekeyBackup reads sys/rekey/backup (needs sudo); "" when none exists.
func (a *Admin) RekeyBackup(ctx context.Context, rec bool) (string, error) {
	var b *vault.RekeyRetrieveResponse
	var err error
	if rec {
		b, err = a.c.Sys().RekeyRetrieveRecoveryBackupWithContext(ctx)
	} else {
		b, err = a.c.Sys().RekeyRetrieveBackupWithContext(ctx)
	}
	// No backup is a 400 "no backed-up keys found" (a 404 on older Vaults),
	// not an outage: a ceremony cancelled before its quorum left none.
	var re *vault.ResponseError
	if errors.As(err, &re) && (re.StatusCode == http.StatusNotFound ||
		(re.StatusCode == http.StatusBadRequest && strings.Contains(strings.Join(re.Errors, " "), "no backed-up keys found"))) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("rekey backup: %w", err)
	}
	if b == nil {
		return "", nil
	}
	return b.Nonce, nil
}
