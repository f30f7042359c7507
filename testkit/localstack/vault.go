package localstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/platform/vaultclient"
	"github.com/lockdown/lockdown/pkg/platform/vaultdecl"
)

// Vault shape of the local stack: what the runbook's defaults assume.
const (
	VaultShares    = 5
	VaultThreshold = 3
	// VaultKVMount is the KV v2 mount holding tenants' secrets.
	VaultKVMount = "secret"
)

// VaultAuthMethods are the auth methods enabled on the local Vault: the
// ones the runbook disables during an incident.
var VaultAuthMethods = []string{"approle", "jwt"}

// Vault is a real, non-dev Vault server with file storage, initialised
// with 5 shares / threshold 3, unsealed, with a file audit device, KV v2 at
// secret/ and the approle and jwt auth methods enabled.
type Vault struct {
	// Addr is the API address, http://127.0.0.1:<port>.
	Addr        string
	Port        int
	ClusterPort int
	// Holders, when set, are the key holders' PGP keys a drill's
	// containment encrypts the new shares for (PlayRekey decrypts them).
	Holders *KeyHolders
	// RootToken and UnsealKeys stay inside the process that started the
	// stack: tests and the drill play the key holders with them.
	RootToken  string
	UnsealKeys []string
	// AuditLog is the path of the file audit device's log.
	AuditLog string
	// Lockdown's tokens, as the install step issues them: periodic orphan
	// tokens, each with one policy of deploy/vault/policies.
	LockdownTokens
}

// LockdownTokens are containment's Vault tokens and their accessors (the
// accessors go to LOCKDOWN_KEEP_ACCESSORS so the lockdown never revokes
// Lockdown itself).
type LockdownTokens struct {
	// SealToken holds only lockdown-seal: sys/seal.
	SealToken    string
	SealAccessor string
	// RecoveryToken holds only lockdown-recovery: phases 4, 5 and 8.
	RecoveryToken    string
	RecoveryAccessor string
	// RotatorToken holds only lockdown-rotator: phase 6.
	RotatorToken    string
	RotatorAccessor string
	// SealFile, RecoveryFile and RotatorFile hold the same tokens (0600),
	// as the services read them (LOCKDOWN_*_TOKEN_FILE): containment
	// replaces each with a successor in every incident, so after one the
	// tokens above are revoked and the files hold the live ones.
	SealFile, RecoveryFile, RotatorFile string
	// RootAccessor is the accessor of the stack's root token: tests that
	// keep using it after a lockdown list it as break-glass
	// (LOCKDOWN_BREAK_GLASS takes accessors only).
	RootAccessor string
	// BaselineFile declares Vault's security configuration as the install
	// step left it (vaultdecl.FromLive, as `lockdown install vault
	// --baseline-from-live` writes it), for LOCKDOWN_VAULT_BASELINE:
	// anything a test's intruder adds later is not in it.
	BaselineFile string
}

// Client returns an API client for the node authenticated with the root
// token. VAULT_* environment variables are ignored so a developer's own
// Vault settings cannot leak in.
func (v *Vault) Client() (*vault.Client, error) {
	c, err := newVaultClient(v.Addr)
	if err != nil {
		return nil, err
	}
	c.SetToken(v.RootToken)
	return c, nil
}

// Unseal submits threshold shares, as the key holders would.
func (v *Vault) Unseal(ctx context.Context) error {
	c, err := newVaultClient(v.Addr)
	if err != nil {
		return err
	}
	// Shares in order until Vault opens: the threshold may differ from the
	// stack's own when the drill plays the holders of another Vault.
	for _, k := range v.UnsealKeys {
		st, err := c.Sys().UnsealWithContext(ctx, k)
		if err != nil {
			return fmt.Errorf("vault unseal: %w", err)
		}
		if !st.Sealed {
			return nil
		}
	}
	return fmt.Errorf("vault still sealed after all %d shares", len(v.UnsealKeys))
}

// vaultServerConfig is the part of a local Vault node's configuration that
// does not depend on its storage: a plain-HTTP loopback listener. It logs
// at info, Vault's default, as containment's ceremony witness needs (the
// barrier rekey is logged at info).
func vaultServerConfig(port, clusterPort int) string {
	return fmt.Sprintf(`listener "tcp" {
  address         = "127.0.0.1:%d"
  cluster_address = "127.0.0.1:%d"
  tls_disable     = true
}
api_addr      = "http://127.0.0.1:%d"
cluster_addr  = "https://127.0.0.1:%d"
disable_mlock = true
ui            = false
log_level     = "info"
`, port, clusterPort, port, clusterPort)
}

func newVaultClient(addr string) (*vault.Client, error) {
	c, err := vaultclient.New(vaultclient.Options{Address: addr})
	if err != nil {
		return nil, err
	}
	c.ClearNamespace()
	return c, nil
}

func (s *Stack) startVault(ctx context.Context) error {
	bin, err := tool("vault")
	if err != nil {
		return err
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	dir := filepath.Join(s.Dir, "vault")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return err
	}
	addr := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	conf := fmt.Sprintf(`storage "file" {
  path = %q
}
`, filepath.Join(dir, "data")) + vaultServerConfig(ports[0], ports[1])
	confPath := filepath.Join(dir, "vault.hcl")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	p, err := startProcess("vault", s.Dir, bin, []string{"server", "-config", confPath}, vaultNodeEnv, nil)
	if err != nil {
		return err
	}
	s.procs = append(s.procs, p)
	c, err := newVaultClient(addr)
	if err != nil {
		return err
	}
	if err := p.waitReady(ctx, func(ctx context.Context) error {
		_, err := c.Sys().SealStatusWithContext(ctx)
		return err
	}); err != nil {
		return err
	}
	v := &Vault{Addr: addr, Port: ports[0], ClusterPort: ports[1], AuditLog: filepath.Join(dir, "audit.log")}
	init, err := c.Sys().InitWithContext(ctx, &vault.InitRequest{SecretShares: VaultShares, SecretThreshold: VaultThreshold})
	if err != nil {
		return fmt.Errorf("vault init: %w", err)
	}
	v.RootToken, v.UnsealKeys = init.RootToken, init.Keys
	if err := v.Unseal(ctx); err != nil {
		return err
	}
	c.SetToken(v.RootToken)
	// After unseal the node needs a moment to become active.
	if err := p.waitReady(ctx, func(ctx context.Context) error {
		h, err := c.Sys().HealthWithContext(ctx)
		if err != nil {
			return err
		}
		if h.Sealed || h.Standby {
			return errors.New("not active yet")
		}
		_, err = c.Sys().ListMountsWithContext(ctx)
		return err
	}); err != nil {
		return err
	}
	if err := c.Sys().EnableAuditWithOptionsWithContext(ctx, "file", &vault.EnableAuditOptions{
		Type: "file", Options: map[string]string{"file_path": v.AuditLog},
	}); err != nil {
		return fmt.Errorf("vault audit enable: %w", err)
	}
	if err := c.Sys().MountWithContext(ctx, VaultKVMount, &vault.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		return fmt.Errorf("vault mount kv: %w", err)
	}
	if err := mountPlatform(ctx, c); err != nil {
		return err
	}
	for _, m := range VaultAuthMethods {
		if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, m, &vault.EnableAuthOptions{Type: m}); err != nil {
			return fmt.Errorf("vault auth enable %s: %w", m, err)
		}
	}
	if v.LockdownTokens, err = lockdownTokens(ctx, c, dir); err != nil {
		return err
	}
	s.Vault = v
	return nil
}

// lockdownTokens writes the deployment's policies and token roles and
// issues Lockdown's tokens from the roles the way docs/operations.md's
// install step does (periodic orphan tokens, so that no auth method's
// removal revokes them), into token files under dir/tokens.
func lockdownTokens(ctx context.Context, root *vault.Client, dir string) (LockdownTokens, error) {
	var t LockdownTokens
	if err := applyPolicies(ctx, root); err != nil {
		return t, err
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return t, err
	}
	issue := func(name string) (tok, acc, file string, err error) {
		role := "lockdown-" + name
		if _, err := root.Logical().WriteWithContext(ctx, "auth/token/roles/"+role, vaultdecl.TokenRole(role)); err != nil {
			return "", "", "", fmt.Errorf("vault token role %s: %w", role, err)
		}
		s, err := root.Auth().Token().CreateWithRoleWithContext(ctx, &vault.TokenCreateRequest{}, role)
		if err != nil {
			return "", "", "", fmt.Errorf("vault token %s: %w", role, err)
		}
		file = filepath.Join(tokens, name+".token")
		if err := os.WriteFile(file, []byte(s.Auth.ClientToken+"\n"), 0o600); err != nil {
			return "", "", "", err
		}
		return s.Auth.ClientToken, s.Auth.Accessor, file, nil
	}
	var err error
	if t.SealToken, t.SealAccessor, t.SealFile, err = issue("seal"); err != nil {
		return t, err
	}
	if t.RecoveryToken, t.RecoveryAccessor, t.RecoveryFile, err = issue("recovery"); err != nil {
		return t, err
	}
	if t.RotatorToken, t.RotatorAccessor, t.RotatorFile, err = issue("rotator"); err != nil {
		return t, err
	}
	self, err := root.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return t, fmt.Errorf("vault token lookup-self: %w", err)
	}
	t.RootAccessor, _ = self.Data["accessor"].(string)
	baseline, err := vaultdecl.FromLive(ctx, root, VaultAuthMethods)
	if err != nil {
		return t, fmt.Errorf("vault baseline: %w", err)
	}
	body, err := json.MarshalIndent(baseline, "", "  ")
	if err != nil {
		return t, err
	}
	t.BaselineFile = filepath.Join(dir, "baseline.json")
	return t, os.WriteFile(t.BaselineFile, body, 0o600)
}

// applyPolicies writes every policy of deploy/vault/policies, named after
// its file: the local Vault gets exactly the policies a deployment uses.
func applyPolicies(ctx context.Context, c *vault.Client) error {
	root, err := RepoRoot()
	if err != nil {
		return fmt.Errorf("vault policies: %w", err)
	}
	files, err := filepath.Glob(filepath.Join(root, "deploy", "vault", "policies", "*.hcl"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("vault policies: none found under %s/deploy/vault/policies", root)
	}
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		name := strings.TrimSuffix(filepath.Base(f), ".hcl")
		if err := c.Sys().PutPolicyWithContext(ctx, name, string(body)); err != nil {
			return fmt.Errorf("vault policy %s: %w", name, err)
		}
	}
	return nil
}

// PlayRekey plays the key holders in a rekey ceremony started by Lockdown
// (drill mode only: the stack's Vault is disposable and its shares are the
// test's own): it submits threshold current shares with the ceremony's
// nonce, then, when Vault asks for it, proves threshold new shares, and
// keeps the new shares as the stack's unseal keys. Real holders take
// seconds between the two steps (they must receive their new shares);
// pause stands for that, so the ceremony's watcher sees the verification
// phase as it would in a real ceremony.
func (v *Vault) PlayRekey(ctx context.Context, nonce string, pause time.Duration) error {
	c, err := newVaultClient(v.Addr)
	if err != nil {
		return err
	}
	var done *vault.RekeyUpdateResponse
	for _, k := range v.UnsealKeys {
		resp, err := c.Sys().RekeyUpdateWithContext(ctx, k, nonce)
		if err != nil {
			return fmt.Errorf("rekey update: %w", err)
		}
		if resp.Complete {
			done = resp
			break
		}
	}
	if done == nil {
		return errors.New("rekey not complete after threshold shares")
	}
	newKeys := done.Keys
	if len(done.PGPFingerprints) > 0 {
		// The new shares came encrypted for their holders: each opens
		// their own.
		if v.Holders == nil {
			return errors.New("the new shares are PGP-encrypted and the stack has no key holders")
		}
		newKeys = make([]string, len(done.KeysB64))
		for i, b64 := range done.KeysB64 {
			if newKeys[i], err = v.Holders.decrypt(i, b64); err != nil {
				return err
			}
		}
	}
	if done.VerificationRequired {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		for _, k := range newKeys {
			resp, err := c.Sys().RekeyVerificationUpdateWithContext(ctx, k, done.VerificationNonce)
			if err != nil {
				return fmt.Errorf("rekey verify: %w", err)
			}
			if resp.Complete {
				break
			}
		}
	}
	v.UnsealKeys = newKeys
	return nil
}
