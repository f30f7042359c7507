package app_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/keycheck"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/pkg/platform/vaulttoken"
	"github.com/lockdown/lockdown/services/containment/internal/recovery"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/testwait"
)

// TestRedTeam plays an intruder who holds Vault root and fights back,
// against a real Vault and containment holding only its own tokens. Before
// the breach the intruder plants persistence with a root token of its own:
// a file audit device logging in clear (log_raw), a socket audit device to
// a listener of its own, an undeclared lockdown-* policy, a grant added to
// the default policy, Lockdown's rotator token role bound to another
// network, a userpass mount with a user, a KV mount, an identity group
// carrying a policy, a batch token, audit_non_hmac keys on the tenants'
// mount, an audited request header. During the incident a second hand
// mints orphan tokens in a loop with every root token it holds, and runs
// sys/generate-root with the old unseal shares while the key holders are
// in the ceremony. The test plays the rotator's writes (with the rotator's
// successor token, after access.revoked) and the key holders.
//
// After resolution: every credential the intruder made is refused,
// nothing it planted remains, none of the new secret values reached its
// devices, and access.revoked lists each removed or restored object.
func TestRedTeam(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	s := fullStack(t, ctx)
	root, err := s.Vault.Client()
	must(t, err)
	pool := poolOf(t, ctx, s)

	// The intruder's own root token: a leaked or generated root token is
	// the common compromise.
	rootTok, err := root.Auth().Token().CreateOrphanWithContext(ctx, &vault.TokenCreateRequest{Policies: []string{"root"}, DisplayName: "intruder"})
	must(t, err)
	intruder := clientAs(t, root, rootTok.Auth.ClientToken)

	// Its planted persistence.
	tapFile := filepath.Join(t.TempDir(), "tap.log")
	must(t, intruder.Sys().EnableAuditWithOptionsWithContext(ctx, "intruder-tap", &vault.EnableAuditOptions{Type: "file",
		Options: map[string]string{"file_path": tapFile, "log_raw": "true"}}))
	sock := listenAndKeep(t)
	must(t, intruder.Sys().EnableAuditWithOptionsWithContext(ctx, "intruder-socket", &vault.EnableAuditOptions{Type: "socket",
		Options: map[string]string{"address": sock.addr, "socket_type": "tcp", "log_raw": "true"}}))
	must(t, intruder.Sys().PutPolicyWithContext(ctx, "lockdown-persist", `path "secret/*" { capabilities = ["read", "list"] }`))
	defaultBefore, err := intruder.Sys().GetPolicyWithContext(ctx, "default")
	must(t, err)
	// The grant is buried in 300 KB of comments: the evidence must stay
	// small and still show it.
	padding := strings.Repeat("# routine maintenance note, nothing to see here\n", 6000)
	must(t, intruder.Sys().PutPolicyWithContext(ctx, "default", defaultBefore+padding+"path \"secret/*\" { capabilities = [\"read\", \"list\"] }\n"+padding))
	// Lockdown's own recovery policy, which its token cannot rewrite: a
	// harmless-looking line the reconciliation must report all the same.
	recoveryPolicy, err := intruder.Sys().GetPolicyWithContext(ctx, "lockdown-recovery")
	must(t, err)
	must(t, intruder.Sys().PutPolicyWithContext(ctx, "lockdown-recovery", recoveryPolicy+"\n# reviewed\n"))
	must(t, write(ctx, intruder, "auth/token/roles/lockdown-rotator", map[string]any{"token_bound_cidrs": []string{"10.66.0.0/16"}, "token_explicit_max_ttl": "10m"}))
	must(t, intruder.Sys().EnableAuthWithOptionsWithContext(ctx, "backup-login", &vault.EnableAuthOptions{Type: "userpass"}))
	must(t, intruder.Sys().PutPolicyWithContext(ctx, "ops-readonly", `path "secret/*" { capabilities = ["read", "list"] }`))
	must(t, write(ctx, intruder, "auth/backup-login/users/svc-backup", map[string]any{"password": "intruder-password-9f2", "token_policies": "ops-readonly"}))
	must(t, intruder.Sys().MountWithContext(ctx, "exfil", &vault.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}))
	must(t, write(ctx, intruder, "identity/group", map[string]any{"name": "intruder-group", "policies": []string{"ops-readonly"}}))
	must(t, write(ctx, intruder, "sys/mounts/secret/tune", map[string]any{"audit_non_hmac_request_keys": []string{"data"}}))
	must(t, write(ctx, intruder, "sys/config/auditing/request-headers/X-Vault-Token", map[string]any{"hmac": false}))
	batch, err := intruder.Auth().Token().CreateOrphanWithContext(ctx, &vault.TokenCreateRequest{Type: "batch", Policies: []string{"default"}, TTL: "2h"})
	must(t, err)
	batchToken := batch.Auth.ClientToken
	must(t, write(ctx, root, "secret/data/tenants/acme/smtp", map[string]any{"data": map[string]any{"password": "old"}}))
	if !readsSecret(ctx, root, batchToken) {
		t.Fatal("setup: the batch token cannot read secrets through the edited default policy")
	}

	// The second hand: mints orphans with every root token it holds, from
	// before the breach until the incident resolves.
	minter := newMinter(root)
	minter.add(rootTok.Auth.ClientToken)
	mintCtx, stopMinting := context.WithCancel(ctx)
	defer stopMinting()
	go minter.run(mintCtx, 20*time.Millisecond, 10000)
	testwait.For(t, 10*time.Second, "the intruder to mint its first orphans", func() bool { return minter.count() > 5 })

	c := startContainment(t, s, nil, nil, nil, nil)
	t.Cleanup(func() { c.stop() })
	siem, _ := connectAs(t, s, events.UserSIEM)
	ev := newBreach(t, "red team: root token used from an unknown address")
	publishAsSIEM(t, siem, ev, nil)
	_, opened := waitEvent(t, s, events.IncidentOpened, 10*time.Second, func(d events.IncidentOpenedData) bool { return d.BreachEventID == ev.ID() })
	incidentID := opened.IncidentID
	waitEvent(t, s, events.VaultSealed, 10*time.Second, func(d events.VaultSealedData) bool { return d.IncidentID == incidentID })
	must(t, s.Vault.Unseal(ctx))
	_, revoked := waitEvent(t, s, events.AccessRevoked, 60*time.Second, func(d events.AccessRevokedData) bool { return d.IncidentID == incidentID })

	t.Run("the revocation completes despite an undeclared lockdown-* policy and reports every planted object", func(t *testing.T) {
		want := map[string]string{
			recovery.KindAuditDevice + "/intruder-tap": events.VaultRemoved, recovery.KindAuditDevice + "/intruder-socket": events.VaultRemoved,
			recovery.KindPolicy + "/default": events.VaultRestored, recovery.KindTokenRole + "/lockdown-rotator": events.VaultRestored,
			recovery.KindSecretsMount + "/exfil": events.VaultRemoved, recovery.KindIdentityGroup + "/intruder-group": events.VaultRemoved,
			recovery.KindMountTuning + "/secret": events.VaultRestored, recovery.KindAuditedHeader + "/x-vault-token": events.VaultRemoved,
			recovery.KindPolicy + "/lockdown-recovery": events.VaultDetected,
		}
		got := map[string]events.VaultChange{}
		for _, ch := range revoked.Reconciled {
			got[ch.Kind+"/"+ch.Name] = ch
		}
		for key, action := range want {
			if ch, ok := got[key]; !ok || ch.Action != action {
				t.Errorf("%s: reported %+v, want %s", key, ch, action)
			}
		}
		if ch := got[recovery.KindPolicy+"/default"]; !strings.Contains(ch.Previous, `path "secret/*"`) || ch.PreviousSHA256 == "" || len(ch.Previous) > events.PreviousLimit {
			t.Errorf("the edited default policy's evidence (%d bytes) does not show the intruder's grant within %d bytes", len(ch.Previous), events.PreviousLimit)
		}
		if !slices.Contains(revoked.PoliciesDeleted, "lockdown-persist") || !slices.Contains(revoked.PoliciesDeleted, "ops-readonly") {
			t.Errorf("policies deleted %v", revoked.PoliciesDeleted)
		}
		if !slices.Contains(revoked.AuthMethodsRemoved, "backup-login") {
			t.Errorf("auth methods removed %v", revoked.AuthMethodsRemoved)
		}
		if revoked.SweepPasses < 1 || revoked.TokensRevoked < 5 {
			t.Errorf("sweep: %d passes, %d tokens revoked", revoked.SweepPasses, revoked.TokensRevoked)
		}
	})

	// The rotator's writes, with its successor token (the role it was
	// minted from had been bound to another network by the intruder).
	rotatorToken, err := vaulttoken.Open("", s.Vault.RotatorFile)
	must(t, err)
	rotator := clientAs(t, root, rotatorToken.Token())
	var newValues []string
	for i := range 5 {
		tenant := fmt.Sprintf("tenant-%03d", i)
		pem := "-----BEGIN OPENSSH PRIVATE KEY-----\n" + randomText(t, 64) + "\n" + randomText(t, 64) + "\n-----END OPENSSH PRIVATE KEY-----\n"
		password := randomText(t, 40)
		for secret, data := range map[string]map[string]any{"ssh": {"private_key": pem}, "smtp": {"password": password}} {
			if _, err := rotator.Logical().WriteWithContext(ctx, "secret/data/tenants/"+tenant+"/"+secret, map[string]any{"data": data}); err != nil {
				t.Fatalf("the rotator's successor token cannot write %s's %s: %v", tenant, secret, err)
			}
		}
		newValues = append(newValues, pem, password)
	}

	// The ceremony, with the intruder running generate-root with the old
	// shares while the holders are at it.
	nonce := waitCeremony(t, ctx, pool, incidentID, func(c recovery.Ceremony) bool { return c.Nonce != "" }).Nonce
	holders, err := s.Vault.Client()
	must(t, err)
	holders.ClearToken()
	old := slices.Clone(s.Vault.UnsealKeys)
	_, err = holders.Sys().RekeyUpdateWithContext(ctx, old[0], nonce)
	must(t, err)
	t.Run("a generate-root attempt made at a person's pace during the ceremony is cancelled and raised as an alarm", func(t *testing.T) {
		slow, err := holders.Sys().GenerateRootInitWithContext(ctx, "", "")
		must(t, err)
		testwait.For(t, 10*time.Second, "containment to cancel the attempt", func() bool {
			st, err := holders.Sys().GenerateRootStatusWithContext(ctx)
			return err == nil && !st.Started
		})
		if _, err := holders.Sys().GenerateRootUpdateWithContext(ctx, old[1], slow.Nonce); err == nil {
			t.Error("the cancelled attempt still takes shares")
		}
		_, alarm := waitEvent(t, s, events.VaultReconciled, 10*time.Second, func(d events.VaultReconciledData) bool {
			return d.IncidentID == incidentID && d.Stage == "ceremony"
		})
		if alarm.GenerateRootCancelled != 1 {
			t.Errorf("alarm %+v", alarm)
		}
		waitEvent(t, s, events.Audit, 10*time.Second, func(d events.AuditData) bool {
			return d.IncidentID == incidentID && d.Record == "generate_root_cancelled" && d.Severity == "critical"
		})
	})
	var generated string
	var cancelledAttempts int
	for attempt := 0; attempt < 50 && generated == ""; attempt++ {
		tok, err := tryGenerateRoot(ctx, holders, old[:localstack.VaultThreshold])
		if err != nil {
			cancelledAttempts++ // containment cancelled it between two updates
			continue
		}
		generated = tok
		minter.add(generated)
	}
	if generated != "" {
		testwait.For(t, 10*time.Second, "the intruder to mint with its generated root token", func() bool { return minter.mintedWith(generated) > 0 })
	}
	var last *vault.RekeyUpdateResponse
	for _, k := range old[1:localstack.VaultThreshold] {
		last, err = holders.Sys().RekeyUpdateWithContext(ctx, k, nonce)
		must(t, err)
	}
	if !last.Complete {
		t.Fatal("rekey not complete after the quorum")
	}
	waitCeremony(t, ctx, pool, incidentID, func(c recovery.Ceremony) bool { return c.Phase == recovery.CeremonyVerifying })
	for _, k := range last.Keys[:localstack.VaultThreshold] {
		_, err := holders.Sys().RekeyVerificationUpdateWithContext(ctx, k, last.VerificationNonce)
		must(t, err)
	}
	s.Vault.UnsealKeys = last.Keys
	_, afterRekey := waitEvent(t, s, events.VaultReconciled, 30*time.Second, func(d events.VaultReconciledData) bool {
		return d.IncidentID == incidentID && d.Stage == "after_rekey"
	})

	t.Run("a second breach after the rekey completed gets a full round: seal, revocation and a new ceremony", func(t *testing.T) {
		second := newBreach(t, "red team: second detection after the rekey")
		publishAsSIEM(t, siem, second, nil)
		waitEvent(t, s, events.VaultSealed, 10*time.Second, func(d events.VaultSealedData) bool { return d.IncidentID == incidentID && d.Round == 2 })
		must(t, s.Vault.Unseal(ctx))
		waitEvent(t, s, events.AccessRevoked, 30*time.Second, func(d events.AccessRevokedData) bool { return d.IncidentID == incidentID && d.Round == 2 })
		c2 := waitCeremony(t, ctx, pool, incidentID, func(c recovery.Ceremony) bool { return c.Round == 2 && c.Nonce != "" })
		if c2.Nonce == nonce || c2.Phase != recovery.CeremonyCollecting {
			t.Fatalf("round 2's ceremony: phase %s, same nonce as round 1: %v", c2.Phase, c2.Nonce == nonce)
		}
		must(t, s.Vault.PlayRekey(ctx, c2.Nonce, 0))
		// Each round's ceremony is announced under an id of its own.
		testwait.For(t, 20*time.Second, "round 2's unsealkeys.rotated", func() bool {
			return countEvents(t, s, events.UnsealKeysRotated, func(d events.UnsealKeysRotatedData) bool { return d.IncidentID == incidentID && d.Shares == 5 }) == 2
		})
		waitEvent(t, s, events.VaultReconciled, 30*time.Second, func(d events.VaultReconciledData) bool {
			return d.IncidentID == incidentID && d.Stage == "after_rekey" && d.Round == 2
		})
	})
	// The rotation's claims, which containment checks in Vault before the
	// restore: the five tenants the rotator wrote; acme, planted before the
	// breach and never rotated, reported failed.
	for i := range 5 {
		publishAs(t, s, events.ServiceRotator, events.RotationTenantCompleted, events.RotationTenantCompletedData{IncidentID: incidentID,
			TenantID: fmt.Sprintf("tenant-%03d", i), SSHFingerprint: "SHA256:test", DKIMSelector: "s1", DKIMRecord: "v=DKIM1; p=", SMTPPasswordRotate: true})
	}
	publishAs(t, s, events.ServiceRotator, events.RotationTenantFailed, events.RotationTenantFailedData{IncidentID: incidentID, TenantID: "acme",
		Step: "ssh", Reason: "red team: left unrotated on purpose"})
	publishAs(t, s, events.ServiceRotator, events.RotationCompleted, events.RotationCompletedData{IncidentID: incidentID, Completed: 5, Failed: 1})
	publishAs(t, s, events.ServiceNotifier, events.NotificationsCompleted, events.NotificationsCompletedData{IncidentID: incidentID, Sent: 5, Failed: 1})
	_, beforeRestore := waitEvent(t, s, events.VaultReconciled, 30*time.Second, func(d events.VaultReconciledData) bool {
		return d.IncidentID == incidentID && d.Stage == "before_restore"
	})
	waitEvent(t, s, events.IncidentResolved, 30*time.Second, func(d events.IncidentResolvedData) bool { return d.IncidentID == incidentID })
	stopMinting()
	minter.wait()

	t.Run("every credential the intruder made is refused after resolution", func(t *testing.T) {
		alive := 0
		for _, tok := range minter.all() {
			if tokenAlive(ctx, s.Vault.Addr, tok) {
				alive++
			}
		}
		if alive > 0 {
			t.Errorf("%d of %d tokens the intruder minted (root tokens, orphans) still work", alive, len(minter.all()))
		}
		if generated != "" && tokenAlive(ctx, s.Vault.Addr, generated) {
			t.Error("the root token generated with the old shares during the ceremony still works")
		}
		if generated == "" && cancelledAttempts == 0 {
			t.Error("generate-root with the old shares neither succeeded nor was cancelled")
		}
		if readsSecret(ctx, root, batchToken) {
			t.Error("the intruder's batch token still reads secrets (default policy not restored)")
		}
		login := clientAs(t, root, "")
		if _, err := login.Logical().WriteWithContext(ctx, "auth/backup-login/login/svc-backup", map[string]any{"password": "intruder-password-9f2"}); err == nil {
			t.Error("the intruder's userpass login still works")
		}
		t.Logf("intruder: %d tokens minted, generate-root obtained=%v, %d attempts cancelled; sweeps revoked %d after the rekey and %d before restore",
			len(minter.all()), generated != "", cancelledAttempts, afterRekey.TokensRevoked, beforeRestore.TokensRevoked)
	})

	t.Run("nothing the intruder planted remains", func(t *testing.T) {
		devices, err := root.Sys().ListAuditWithContext(ctx)
		must(t, err)
		for path := range devices {
			if strings.HasPrefix(path, "intruder") {
				t.Errorf("audit device %s remains", path)
			}
		}
		policies, err := root.Sys().ListPoliciesWithContext(ctx)
		must(t, err)
		for _, p := range []string{"lockdown-persist", "ops-readonly"} {
			if slices.Contains(policies, p) {
				t.Errorf("policy %s remains", p)
			}
		}
		def, err := root.Sys().GetPolicyWithContext(ctx, "default")
		must(t, err)
		if strings.Contains(def, `path "secret/*"`) {
			t.Error("the intruder's grant remains in the default policy")
		}
		mounts, err := root.Sys().ListMountsWithContext(ctx)
		must(t, err)
		if _, ok := mounts["exfil/"]; ok {
			t.Error("the intruder's KV mount remains")
		}
		if keys := mounts["secret/"].Config.AuditNonHMACRequestKeys; len(keys) > 0 {
			t.Errorf("the tenants' mount still has audit_non_hmac_request_keys %v", keys)
		}
		auth, err := root.Sys().ListAuthWithContext(ctx)
		must(t, err)
		if _, ok := auth["backup-login/"]; ok {
			t.Error("the intruder's userpass mount remains")
		}
		role, err := root.Logical().ReadWithContext(ctx, "auth/token/roles/lockdown-rotator")
		must(t, err)
		if cidrs, _ := role.Data["token_bound_cidrs"].([]any); len(cidrs) > 0 || fmt.Sprint(role.Data["token_explicit_max_ttl"]) != "0" {
			t.Errorf("Lockdown's rotator role still carries the intruder's limits: cidrs %v, explicit max ttl %v", cidrs, role.Data["token_explicit_max_ttl"])
		}
		group, err := root.Logical().ReadWithContext(ctx, "identity/group/name/intruder-group")
		must(t, err)
		if group != nil {
			t.Error("the intruder's identity group remains")
		}
		headers, err := root.Logical().ReadWithContext(ctx, "sys/config/auditing/request-headers")
		must(t, err)
		if h, _ := headers.Data["headers"].(map[string]any); h["x-vault-token"] != nil {
			t.Error("the intruder's audited header (tokens in clear) remains")
		}
	})

	t.Run("none of the new secret values reached the intruder's audit devices", func(t *testing.T) {
		tap, err := os.ReadFile(tapFile)
		must(t, err)
		captured := map[string][]byte{"file device": tap, "socket device": sock.bytes()}
		// The devices did work before the revocation: the old secret's
		// write is in clear in both (the check can find what it looks for).
		for name, b := range captured {
			if !bytes.Contains(b, []byte("secret/data/tenants/acme/smtp")) {
				t.Errorf("setup: the intruder's %s recorded nothing before the breach", name)
			}
		}
		for name, b := range captured {
			leaked := 0
			for _, v := range newValues {
				if keycheck.Leaked(b, v) {
					leaked++
				}
			}
			if leaked > 0 {
				t.Errorf("%d of %d new secret values found in the intruder's %s", leaked, len(newValues), name)
			}
		}
	})
}

// clientAs is a client of the stack's Vault with token ("" for none).
func clientAs(t *testing.T, base *vault.Client, token string) *vault.Client {
	t.Helper()
	c, err := base.Clone()
	must(t, err)
	if token == "" {
		c.ClearToken()
	} else {
		c.SetToken(token)
	}
	return c
}

// readsSecret says whether token can read a tenant secret.
func readsSecret(ctx context.Context, base *vault.Client, token string) bool {
	c, err := base.Clone()
	if err != nil {
		return false
	}
	c.SetToken(token)
	s, err := c.Logical().ReadWithContext(ctx, "secret/data/tenants/acme/smtp")
	return err == nil && s != nil
}

// tryGenerateRoot runs sys/generate-root with shares, as an intruder
// holding a quorum of the old shares would; an error when the attempt was
// cancelled under it.
func tryGenerateRoot(ctx context.Context, c *vault.Client, shares []string) (string, error) {
	init, err := c.Sys().GenerateRootInitWithContext(ctx, "", "")
	if err != nil {
		return "", err
	}
	var st *vault.GenerateRootStatusResponse
	for _, k := range shares {
		if st, err = c.Sys().GenerateRootUpdateWithContext(ctx, k, init.Nonce); err != nil {
			return "", err
		}
	}
	if !st.Complete {
		return "", errors.New("generate-root did not complete")
	}
	raw, err := base64.RawStdEncoding.DecodeString(st.EncodedToken)
	if err != nil || len(raw) != len(init.OTP) {
		return "", errors.New("malformed encoded root token")
	}
	for i := range raw {
		raw[i] ^= init.OTP[i]
	}
	return string(raw), nil
}

// minter mints orphan tokens in a loop with every root token it holds,
// keeping every token it made.
type minter struct {
	base   *vault.Client
	mu     sync.Mutex
	roots  []string
	minted []string
	by     map[string]int
	done   chan struct{}
}

func newMinter(base *vault.Client) *minter {
	return &minter{base: base, by: map[string]int{}, done: make(chan struct{})}
}

func (m *minter) add(root string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.roots = append(m.roots, root)
	m.minted = append(m.minted, root)
}

func (m *minter) run(ctx context.Context, every time.Duration, limit int) {
	defer close(m.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for ctx.Err() == nil && m.count() < limit {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		roots := slices.Clone(m.roots)
		m.mu.Unlock()
		for _, r := range roots {
			c, err := m.base.Clone()
			if err != nil {
				continue
			}
			c.SetToken(r)
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			s, err := c.Auth().Token().CreateOrphanWithContext(cctx, &vault.TokenCreateRequest{Policies: []string{"root"}, DisplayName: "persist"})
			cancel()
			if err != nil || s == nil || s.Auth == nil {
				continue
			}
			m.mu.Lock()
			m.minted = append(m.minted, s.Auth.ClientToken)
			m.by[r]++
			m.mu.Unlock()
		}
	}
}

func (m *minter) wait() { <-m.done }

func (m *minter) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.minted)
}

func (m *minter) mintedWith(root string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.by[root]
}

func (m *minter) all() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.minted)
}

// keeper is the intruder's socket audit listener: it accepts Vault's
// connections and keeps every byte.
type keeper struct {
	addr string
	syncBuffer
}

func listenAndKeep(t *testing.T) *keeper {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	k := &keeper{addr: l.Addr().String()}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = conn.Close() }()
				_, _ = io.Copy(k, conn) // ends with the connection
			}()
		}
	}()
	return k
}

func (k *keeper) bytes() []byte { return []byte(k.String()) }

func randomText(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n/2+1)
	_, err := rand.Read(b)
	must(t, err)
	return hex.EncodeToString(b)[:n]
}

// TestTimelineIDs: an event id is its producer's choice. The operator's
// credential publishes a review request under the id the rotator's
// rotation.completed carries; the real completion must still be recorded.
func TestTimelineIDs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := fullStack(t, ctx)
	pool := poolOf(t, ctx, s)
	c := startContainment(t, s, nil, nil, nil, nil)
	t.Cleanup(func() { c.stop() })
	siem, _ := connectAs(t, s, events.UserSIEM)
	ev := newBreach(t, "timeline ids")
	publishAsSIEM(t, siem, ev, nil)
	_, opened := waitEvent(t, s, events.IncidentOpened, 10*time.Second, func(d events.IncidentOpenedData) bool { return d.BreachEventID == ev.ID() })
	id := opened.IncidentID
	taken := id + "/rotation.completed"
	publishWithID := func(user string, name events.Name, data any) {
		nc, _ := connectAs(t, s, user)
		must(t, stream.NewPublisher(jsOf(t, nc), events.SourceOf(user), nil).PublishWithID(ctx, name, taken, data))
	}
	recorded := func() []string {
		rows, err := pool.Query(ctx, `SELECT type FROM containment.timeline WHERE event_id = $1 ORDER BY type`, taken)
		must(t, err)
		types, err := pgx.CollectRows(rows, pgx.RowTo[string])
		must(t, err)
		return types
	}
	publishWithID(events.UserOperator, events.IncidentReviewRequested, events.IncidentReviewData{IncidentID: id, RequestedBy: "mallory", RootCause: "pre-empting the completion"})
	testwait.For(t, 10*time.Second, "the forged review to be recorded", func() bool { return len(recorded()) == 1 })
	publishWithID(events.ServiceRotator, events.RotationCompleted, events.RotationCompletedData{IncidentID: id, Completed: 1})
	testwait.For(t, 10*time.Second, "the real completion to be recorded beside it", func() bool {
		return strings.Join(recorded(), ",") == string(events.IncidentReviewRequested)+","+string(events.RotationCompleted)
	})
}
