// Package vaultadmin is containment's adapter for the recovery phases: it
// implements recovery.Vault over github.com/hashicorp/vault/api with the
// recovery token (policy deploy/vault/policies/lockdown-recovery.hcl).
// Every call it makes is listed, with its capability, in
// docs/operations.md.
package vaultadmin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/platform/retry"
	"github.com/lockdown/lockdown/pkg/platform/vaultclient"
	"github.com/lockdown/lockdown/pkg/platform/vaultdecl"
	"github.com/lockdown/lockdown/services/containment/internal/recovery"
)

// Admin implements recovery.Vault.
type Admin struct {
	c     *vault.Client
	nodes []string
}

// New builds a client for the nodes with the recovery token. It talks to
// one node at a time and Follow moves it to the active one: standbys
// forward requests to the active node, but a sealed node answers nothing,
// and the key holders may unseal the nodes in any order.
func New(nodes []string, token string, timeout time.Duration) (*Admin, error) {
	if len(nodes) == 0 {
		return nil, errors.New("vaultadmin: no Vault node")
	}
	// The engine retries each step itself, with backoff and without limit.
	c, err := vaultclient.New(vaultclient.Options{Address: nodes[0], Token: token, Timeout: timeout})
	if err != nil {
		return nil, err
	}
	return &Admin{c: c, nodes: nodes}, nil
}

// ErrNoActiveNode is returned by Follow when no node is unsealed and
// active.
var ErrNoActiveNode = errors.New("no Vault node is unsealed and active")

// Follow points the client at the active node: the current one when it is
// active (one sys/health read), else the first node that is.
func (a *Admin) Follow(ctx context.Context) error {
	if len(a.nodes) == 1 {
		return nil
	}
	current := a.c.Address()
	if a.active(ctx, current) {
		return nil
	}
	for _, n := range a.nodes {
		if n != current && a.active(ctx, n) {
			a.c.SetAddress(n) //nolint:errcheck // the address was parsed when the node was configured
			return nil
		}
	}
	return ErrNoActiveNode
}

// active reads sys/health on node (no token): 200 is the active, unsealed
// node (standbys answer 429, sealed nodes 503).
func (a *Admin) active(ctx context.Context, node string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(node, "/")+"/v1/sys/health", nil)
	if err != nil {
		return false
	}
	resp, err := a.c.CloneConfig().HttpClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close() // only the status matters
	return resp.StatusCode == http.StatusOK
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

// SetToken swaps the recovery token in (its successor, after containment
// replaced it).
func (a *Admin) SetToken(token string) { a.c.SetToken(token) }

// CreateToken writes auth/token/create/:role (update on it; the role fixes
// the policy, orphan and period).
func (a *Admin) CreateToken(ctx context.Context, role string) (string, string, error) {
	s, err := a.c.Auth().Token().CreateWithRoleWithContext(ctx, &vault.TokenCreateRequest{}, role)
	if err != nil {
		return "", "", err
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" || s.Auth.Accessor == "" {
		return "", "", fmt.Errorf("auth/token/create/%s returned no token", role)
	}
	return s.Auth.ClientToken, s.Auth.Accessor, nil
}

// AuthMounts reads sys/auth.
func (a *Admin) AuthMounts(ctx context.Context) (map[string]recovery.AuthMount, error) {
	m, err := a.c.Sys().ListAuthWithContext(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]recovery.AuthMount{}
	for path, mount := range m {
		out[strings.TrimSuffix(path, "/")] = recovery.AuthMount{Type: mount.Type, MaxLeaseTTL: time.Duration(mount.Config.MaxLeaseTTL) * time.Second, Raw: raw(mount),
			AuditNonHMACKeys: append(slices.Clone(mount.Config.AuditNonHMACRequestKeys), mount.Config.AuditNonHMACResponseKeys...)}
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
	return vaultdecl.ListKeys(ctx, a.c, "auth/token/accessors")
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

// Watch feeds w from Vault's server log (sys/monitor, read capability, at
// info level in JSON) while w wants it, until ctx ends. The stream is open
// only while a ceremony needs it, because an open request holds Vault's
// state lock for reading for as long as it lasts, and every state change
// waits for it: a seal (Vault marks itself sealed at once, then waits up to
// 90 s for in-flight requests) and, with no limit, an unseal call — even
// one on a node already unsealed — or a step-down; meanwhile Vault answers
// nothing, seal status included. So the stream is closed on Vault's
// "marked as sealed" line, and a watchdog request every second closes it
// when Vault stops answering (see answers). The stream is
// reopened with backoff (it ends when Vault seals or restarts) and to the
// active node when leadership moves (rekeys run on the active node, and
// only its log shows them). The lines are parsed, never logged: Vault's
// log is its operators', not Lockdown's.
func (a *Admin) Watch(ctx context.Context, w *recovery.Witness, log *slog.Logger) {
	reconnect := retry.Policy{Initial: time.Second, Max: 15 * time.Second}.Start()
	for ctx.Err() == nil {
		if !w.Wanted() {
			select {
			case <-ctx.Done():
			case <-w.Woken():
			case <-time.After(time.Second):
			}
			continue
		}
		started := time.Now()
		err := a.watchOnce(ctx, w)
		w.Disconnected(err)
		if ctx.Err() != nil || !w.Wanted() {
			continue
		}
		if time.Since(started) > time.Minute {
			reconnect.Reset() // a stream that lasted was not a failure
		}
		wait := reconnect.Next()
		log.DebugContext(ctx, "Vault log stream ended; reconnecting", slog.Any("error", err), slog.Duration("after", wait))
		retry.Sleep(ctx, wait)
	}
}

// errNotWanted ends a stream no ceremony needs any more.
var errNotWanted = errors.New("no ceremony needs the stream")

// errStateChange ends a stream that holds a Vault state change back.
var errStateChange = errors.New("a Vault state change is waiting for the stream")

// watchdogTimeout is how long the watchdog's request may take before the
// stream is taken to hold a state change back.
const watchdogTimeout = 2 * time.Second

// answers is the stream's watchdog: a request that, like the stream,
// takes Vault's state lock for reading (auth/token/lookup-self goes
// through the router). Go's RWMutex lets no new reader in while a writer
// waits, so when it does not answer in time a state change — an unseal
// call (even on an unsealed node), a seal, a step-down — is waiting for
// every request in flight to end, the stream's included, which never ends
// by itself. Vault then answers nothing at all, to anyone.
func answers(ctx context.Context, c *vault.Client) bool {
	ctx, cancel := context.WithTimeout(ctx, watchdogTimeout)
	defer cancel()
	_, err := c.Auth().Token().LookupSelfWithContext(ctx)
	return !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil
}

// watchdogClient is a client of the stream's node with the recovery token.
func (a *Admin) watchdogClient(addr string) (*vault.Client, error) {
	c, err := a.c.Clone()
	if err != nil {
		return nil, err
	}
	c.SetToken(a.c.Token())
	return c, c.SetAddress(addr)
}

// Vault's signs that it is sealing. It logs "marked as sealed" (to every
// monitor, whatever its own log level) the moment it marks itself sealed,
// before it waits for in-flight requests; sys/monitor also writes the
// notice, without a newline and unflushed, once a second while sealed.
// Either ends the stream.
var sealNotice = []byte("core received sealed state change")

const logMarkedSealed = "marked as sealed"

func (a *Admin) watchOnce(ctx context.Context, w *recovery.Witness) error {
	addr, err := a.activeAddr(ctx)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, strings.TrimSuffix(addr, "/")+"/v1/sys/monitor?log_level=info&log_format=json", nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Vault-Token", a.c.Token())
	// The configured client's timeout would cut the stream: a copy
	// without it, with the same TLS settings.
	hc := *a.c.CloneConfig().HttpClient
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("sys/monitor: %w", err)
	}
	defer func() { _ = resp.Body.Close() }() // a response body: nothing to lose
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("sys/monitor: %s", resp.Status)
	}
	watchdog, err := a.watchdogClient(addr)
	if err != nil {
		return err
	}
	w.Connected(time.Now())
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for i := 1; ; i++ {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
			if !w.Wanted() {
				cancel(errNotWanted)
				return
			}
			if !answers(sctx, watchdog) {
				// A state change (an unseal call, a seal, a step-down)
				// waits for every request in flight, this stream too, and
				// Vault answers nothing meanwhile: let it through.
				cancel(errStateChange)
				return
			}
			if i%int(leaderCheck/time.Second) == 0 {
				if now, err := a.activeAddr(sctx); err == nil && now != addr {
					cancel(errors.New("leadership moved")) // watch the new active node
					return
				}
			}
		}
	}()
	err = readLog(resp.Body, w)
	if cause := context.Cause(sctx); cause != nil {
		return cause
	}
	return err
}

// leaderCheck is how often an open stream checks that its node is still
// the active one.
const leaderCheck = 5 * time.Second

// maxLogLine bounds one line of Vault's log; a longer one is a gap.
const maxLogLine = 4 << 20

// readLog feeds w one line at a time. It reads raw bytes rather than lines
// because the seal notice comes without a newline and must end the stream
// at once.
func readLog(body io.Reader, w *recovery.Witness) error {
	buf := make([]byte, 32<<10)
	var pending []byte
	for {
		n, err := body.Read(buf)
		pending = append(pending, buf[:n]...)
		if bytes.Contains(pending, sealNotice) {
			return errors.New("sys/monitor: Vault sealed") // sealing cleared any rekey
		}
		for {
			i := bytes.IndexByte(pending, '\n')
			if i < 0 {
				break
			}
			l := parseLogLine(pending[:i])
			if l.Message == logMarkedSealed {
				return errors.New("sys/monitor: Vault sealed") // sealing cleared any rekey
			}
			w.Line(l)
			pending = pending[i+1:]
		}
		if len(pending) > maxLogLine {
			w.Line(recovery.VaultLogLine{Dropped: true})
			pending = nil
		}
		if err != nil {
			if err == io.EOF {
				return errors.New("sys/monitor: stream ended")
			}
			return fmt.Errorf("sys/monitor: %w", err)
		}
	}
}

// parseLogLine reads one JSON log line. "Monitor dropped N logs", or a
// line that is not JSON, is a gap after which the stream proves nothing.
func parseLogLine(line []byte) recovery.VaultLogLine {
	var l struct {
		Message string `json:"@message"`
		Nonce   string `json:"nonce"`
	}
	if len(bytes.TrimSpace(line)) == 0 {
		return recovery.VaultLogLine{}
	}
	if err := json.Unmarshal(line, &l); err != nil {
		return recovery.VaultLogLine{Dropped: true}
	}
	return recovery.VaultLogLine{Message: l.Message, Nonce: l.Nonce}
}

// activeAddr is the active node's API address (sys/leader), or the
// configured one when Vault runs without HA.
func (a *Admin) activeAddr(ctx context.Context) (string, error) {
	l, err := a.c.Sys().LeaderWithContext(ctx)
	if err != nil {
		return "", fmt.Errorf("sys/leader: %w", err)
	}
	if l.HAEnabled && l.LeaderAddress != "" {
		return l.LeaderAddress, nil
	}
	return a.c.Address(), nil
}

// LookupToken reads auth/token/lookup-self with token (default policy).
func (a *Admin) LookupToken(ctx context.Context, token string) (recovery.TokenInfo, error) {
	c, err := a.c.Clone()
	if err != nil {
		return recovery.TokenInfo{}, err
	}
	if err := c.SetAddress(a.c.Address()); err != nil {
		return recovery.TokenInfo{}, err
	}
	c.SetToken(token)
	s, err := c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return recovery.TokenInfo{}, err
	}
	if s == nil || s.Data == nil {
		return recovery.TokenInfo{}, errors.New("lookup-self returned nothing")
	}
	d := s.Data
	info := recovery.TokenInfo{Accessor: str(d["accessor"]), Policies: strs(d["policies"]), Orphan: d["orphan"] == true,
		Renewable: d["renewable"] == true, Period: num(d["period"]), ExplicitMaxTTL: num(d["explicit_max_ttl"]), NumUses: num(d["num_uses"]),
		Type: str(d["type"]), BoundCIDRs: strs(d["bound_cidrs"]), Role: str(d["role"])}
	if info.Period == 0 {
		// Vault 1.21 shows no period for a token whose period its role
		// set; its creation TTL is that period.
		info.Period = num(d["creation_ttl"])
	}
	return info, nil
}

// GenerateRootCancel reads sys/generate-root/attempt and deletes the
// attempt in progress (neither needs a token).
func (a *Admin) GenerateRootCancel(ctx context.Context) (bool, error) {
	st, err := a.c.Sys().GenerateRootStatusWithContext(ctx)
	if err != nil {
		return false, err
	}
	if !st.Started {
		return false, nil
	}
	return true, a.c.Sys().GenerateRootCancelWithContext(ctx)
}

// TenantFolders lists <mount>/metadata/tenants/ (list): the tenants with
// secrets, without the trailing slash.
func (a *Admin) TenantFolders(ctx context.Context, mount string) ([]string, error) {
	keys, err := vaultdecl.ListKeys(ctx, a.c, mount+"/metadata/tenants")
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		if strings.HasSuffix(k, "/") {
			out = append(out, strings.TrimSuffix(k, "/"))
		}
	}
	return out, nil
}

// SecretWritten reads <mount>/metadata/<path> (read): when the current
// version was written. Metadata holds no secret value.
func (a *Admin) SecretWritten(ctx context.Context, mount, path string) (time.Time, bool, error) {
	m, err := a.c.KVv2(mount).GetMetadata(ctx, path)
	if errors.Is(err, vault.ErrSecretNotFound) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, err
	}
	if v, ok := m.Versions[strconv.Itoa(m.CurrentVersion)]; ok && !v.CreatedTime.IsZero() {
		return v.CreatedTime, true, nil
	}
	return m.UpdatedTime, true, nil
}

// AuditDevices reads sys/audit (sudo).
func (a *Admin) AuditDevices(ctx context.Context) (map[string]recovery.LiveAuditDevice, error) {
	m, err := a.c.Sys().ListAuditWithContext(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]recovery.LiveAuditDevice{}
	for path, d := range m {
		opts := d.Options
		if opts == nil {
			opts = map[string]string{}
		}
		out[strings.TrimSuffix(path, "/")] = recovery.LiveAuditDevice{Type: d.Type, Options: opts, Raw: raw(d)}
	}
	return out, nil
}

// DisableAudit deletes sys/audit/:path (sudo).
func (a *Admin) DisableAudit(ctx context.Context, path string) error {
	return a.c.Sys().DisableAuditWithContext(ctx, path)
}

// AuditedHeaders reads sys/config/auditing/request-headers (sudo).
func (a *Admin) AuditedHeaders(ctx context.Context) (map[string]string, error) {
	s, err := a.c.Logical().ReadWithContext(ctx, "sys/config/auditing/request-headers")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	if s == nil {
		return out, nil
	}
	headers, _ := s.Data["headers"].(map[string]any)
	for name, def := range headers {
		out[name] = raw(def)
	}
	return out, nil
}

// DeleteAuditedHeader deletes sys/config/auditing/request-headers/:name (sudo).
func (a *Admin) DeleteAuditedHeader(ctx context.Context, name string) error {
	_, err := a.c.Logical().DeleteWithContext(ctx, "sys/config/auditing/request-headers/"+name)
	return err
}

// SecretsMounts reads sys/mounts.
func (a *Admin) SecretsMounts(ctx context.Context) (map[string]recovery.Mount, error) {
	m, err := a.c.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]recovery.Mount{}
	for path, mount := range m {
		out[strings.TrimSuffix(path, "/")] = recovery.Mount{Type: mount.Type, Raw: raw(mount),
			AuditNonHMACKeys: append(slices.Clone(mount.Config.AuditNonHMACRequestKeys), mount.Config.AuditNonHMACResponseKeys...)}
	}
	return out, nil
}

// DisableSecrets deletes sys/mounts/:path, and with it the mount's data.
func (a *Admin) DisableSecrets(ctx context.Context, path string) error {
	return a.c.Sys().UnmountWithContext(ctx, path)
}

// ClearAuditKeys writes sys/mounts/:path/tune (or sys/auth/:path/tune)
// with empty audit_non_hmac_request_keys and audit_non_hmac_response_keys.
func (a *Admin) ClearAuditKeys(ctx context.Context, auth bool, path string) error {
	prefix := "sys/mounts/"
	if auth {
		prefix = "sys/auth/"
	}
	_, err := a.c.Logical().WriteWithContext(ctx, prefix+path+"/tune", map[string]any{
		"audit_non_hmac_request_keys": []string{}, "audit_non_hmac_response_keys": []string{}})
	return err
}

// Policy reads sys/policies/acl/:name ("" when it does not exist).
func (a *Admin) Policy(ctx context.Context, name string) (string, error) {
	s, err := a.c.Logical().ReadWithContext(ctx, "sys/policies/acl/"+name)
	if err != nil {
		return "", err
	}
	if s == nil {
		return "", nil
	}
	return str(s.Data["policy"]), nil
}

// PutPolicy writes sys/policies/acl/:name.
func (a *Admin) PutPolicy(ctx context.Context, name, text string) error {
	return a.c.Sys().PutPolicyWithContext(ctx, name, text)
}

// TokenRoles lists auth/token/roles.
func (a *Admin) TokenRoles(ctx context.Context) ([]string, error) {
	return vaultdecl.ListKeys(ctx, a.c, "auth/token/roles")
}

// TokenRole reads auth/token/roles/:name (nil when absent).
func (a *Admin) TokenRole(ctx context.Context, name string) (map[string]any, error) {
	s, err := a.c.Logical().ReadWithContext(ctx, "auth/token/roles/"+name)
	if err != nil || s == nil {
		return nil, err
	}
	return s.Data, nil
}

// WriteTokenRole writes auth/token/roles/:name.
func (a *Admin) WriteTokenRole(ctx context.Context, name string, data map[string]any) error {
	_, err := a.c.Logical().WriteWithContext(ctx, "auth/token/roles/"+name, data)
	return err
}

// DeleteTokenRole deletes auth/token/roles/:name.
func (a *Admin) DeleteTokenRole(ctx context.Context, name string) error {
	_, err := a.c.Logical().DeleteWithContext(ctx, "auth/token/roles/"+name)
	return err
}

// Identities lists identity/<kind>/id with each one's name and policies
// (kind: entity or group).
func (a *Admin) Identities(ctx context.Context, kind string) ([]recovery.Identity, error) {
	ids, err := vaultdecl.ListKeys(ctx, a.c, "identity/"+kind+"/id")
	if err != nil {
		return nil, err
	}
	var out []recovery.Identity
	for _, id := range ids {
		// The listing carries names but not policies: each is read.
		r, err := a.c.Logical().ReadWithContext(ctx, "identity/"+kind+"/id/"+id)
		if err != nil {
			return nil, err
		}
		if r == nil {
			continue
		}
		out = append(out, recovery.Identity{ID: id, Name: str(r.Data["name"]), Policies: strs(r.Data["policies"]), Raw: raw(r.Data)})
	}
	return out, nil
}

// DeleteIdentity deletes identity/<kind>/id/:id.
func (a *Admin) DeleteIdentity(ctx context.Context, kind, id string) error {
	_, err := a.c.Logical().DeleteWithContext(ctx, "identity/"+kind+"/id/"+id)
	return err
}

// Plugins reads sys/plugins/catalog (sudo) and returns the external
// plugins: Vault's built-in ones are part of the binary.
func (a *Admin) Plugins(ctx context.Context) ([]recovery.Plugin, error) {
	s, err := a.c.Logical().ReadWithContext(ctx, "sys/plugins/catalog")
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, nil
	}
	detailed, _ := s.Data["detailed"].([]any)
	var out []recovery.Plugin
	for _, d := range detailed {
		p, _ := d.(map[string]any)
		if p == nil || p["builtin"] == true {
			continue
		}
		out = append(out, recovery.Plugin{Type: str(p["type"]), Name: str(p["name"]), Version: str(p["version"]), Raw: raw(p)})
	}
	return out, nil
}

// DeregisterPlugin deletes sys/plugins/catalog/:type/:name (sudo).
func (a *Admin) DeregisterPlugin(ctx context.Context, p recovery.Plugin) error {
	path := "sys/plugins/catalog/" + p.Type + "/" + p.Name
	if p.Version != "" {
		path += "?version=" + p.Version
	}
	_, err := a.c.Logical().DeleteWithContext(ctx, path)
	return err
}

func raw(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func strs(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, e := range l {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// num reads a JSON number the api decodes as json.Number.
func num(v any) int {
	switch t := v.(type) {
	case json.Number:
		n, _ := t.Int64()
		return int(n)
	case float64:
		return int(t)
	}
	return 0
}
