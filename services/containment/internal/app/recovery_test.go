package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/vaulttoken"
	"github.com/lockdown/lockdown/services/containment/internal/recovery"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/testwait"
)

// TestRecovery runs phases 4, 5 and 8 against the real Vault, with
// containment holding only its install-time tokens (lockdown-seal and
// lockdown-recovery policies), and the test playing the platform's clients
// and the key holders.
func TestRecovery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := fullStack(t, ctx)
	root, err := s.Vault.Client()
	must(t, err)
	pool, err := pgxpool.New(ctx, s.Postgres.URL)
	must(t, err)
	defer pool.Close()

	// Before the incident: an approle client of the platform logs in, and
	// some token exists.
	must(t, write(ctx, root, "auth/approle/role/mailer", map[string]any{"token_policies": "default"}))
	must(t, write(ctx, root, "auth/approle/role/mailer/role-id", map[string]any{"role_id": "mailer-7d1f2c"}))
	secretID := newSecretID(t, ctx, root)
	approleToken, err := approleLogin(ctx, s.Vault.Addr, secretID)
	if err != nil {
		t.Fatalf("approle login before the incident: %v", err)
	}
	pre, err := root.Auth().Token().CreateWithContext(ctx, &vault.TokenCreateRequest{DisplayName: "pre-incident", Policies: []string{"default"}})
	must(t, err)
	keyBefore, err := root.Sys().KeyStatusWithContext(ctx)
	must(t, err)
	// The intruder's footholds: a root token of its own (generate-root names
	// every root token "root", like the break-glass one), an auth method and
	// a policy.
	intruderRoot := generateRoot(t, ctx, root, s.Vault.UnsealKeys[:localstack.VaultThreshold])
	must(t, root.Sys().EnableAuthWithOptionsWithContext(ctx, "backdoor", &vault.EnableAuthOptions{Type: "userpass"}))
	must(t, root.Sys().PutPolicyWithContext(ctx, "backdoor-admin", `path "*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }`))
	must(t, write(ctx, root, "auth/backdoor/users/eve", map[string]any{"password": "intruder-password", "token_policies": "backdoor-admin"}))

	c := startContainment(t, s, nil, nil, nil, nil)
	t.Cleanup(func() { c.stop() })
	siem, _ := connectAs(t, s, events.UserSIEM)
	// The SIEM follows the audit feed live, with its own credentials.
	auditFeed, err := siem.SubscribeSync(events.Audit.Subject())
	must(t, err)
	must(t, siem.Flush())
	ev := newBreach(t, "recovery test")
	publishAsSIEM(t, siem, ev, nil)
	_, opened := waitEvent(t, s, events.IncidentOpened, 10*time.Second, func(d events.IncidentOpenedData) bool { return d.BreachEventID == ev.ID() })
	incidentID := opened.IncidentID
	waitEvent(t, s, events.VaultSealed, 10*time.Second, func(d events.VaultSealedData) bool { return d.IncidentID == incidentID })
	must(t, s.Vault.Unseal(ctx))

	t.Run("on unseal, access is revoked: approle logins fail, old tokens die, Lockdown's tokens are replaced, the keyring turns", func(t *testing.T) {
		_, revoked := waitEvent(t, s, events.AccessRevoked, 20*time.Second, func(d events.AccessRevokedData) bool { return d.IncidentID == incidentID })
		if strings.Join(revoked.AuthMethodsDisabled, ",") != "approle,jwt" || revoked.TokensRevoked < 1 || revoked.TokensKept < 4 {
			t.Fatalf("access.revoked %+v", revoked)
		}
		if _, err := approleLogin(ctx, s.Vault.Addr, secretID); err == nil {
			t.Fatal("an approle login still works after access.revoked")
		}
		for name, tok := range map[string]string{"approle token": approleToken, "pre-incident token": pre.Auth.ClientToken} {
			if tokenAlive(ctx, s.Vault.Addr, tok) {
				t.Errorf("the %s survived", name)
			}
		}
		// No token of Lockdown's from before the incident survives: each was
		// replaced by a successor in its token file, with the same policy.
		if strings.Join(revoked.TokensReplaced, ",") != "seal,rotator,recovery" || len(revoked.TokensNotReplaced) != 0 {
			t.Errorf("tokens replaced %v, not replaced %v", revoked.TokensReplaced, revoked.TokensNotReplaced)
		}
		for name, tok := range map[string]string{"seal": s.Vault.SealToken, "recovery": s.Vault.RecoveryToken, "rotator": s.Vault.RotatorToken} {
			if tokenAlive(ctx, s.Vault.Addr, tok) {
				t.Errorf("Lockdown's pre-incident %s token survived", name)
			}
		}
		for name, file := range map[string]string{"seal": s.Vault.SealFile, "recovery": s.Vault.RecoveryFile, "rotator": s.Vault.RotatorFile} {
			successor, err := vaulttoken.Open("", file)
			must(t, err)
			c, err := s.Vault.Client()
			must(t, err)
			c.SetToken(successor.Token())
			self, err := c.Auth().Token().LookupSelfWithContext(ctx)
			if err != nil {
				t.Errorf("the %s token's successor does not work: %v", name, err)
				continue
			}
			if policies, _ := self.TokenPolicies(); !slices.Contains(policies, "lockdown-"+name) || slices.Contains(policies, "root") {
				t.Errorf("the %s token's successor has policies %v", name, policies)
			}
		}
		if tokenAlive(ctx, s.Vault.Addr, intruderRoot) {
			t.Error("the intruder's root token survived (break-glass is by accessor, never by the name root)")
		}
		if !tokenAlive(ctx, s.Vault.Addr, s.Vault.RootToken) {
			t.Error("the break-glass root token (kept by accessor) was revoked")
		}
		mounts, err := root.Sys().ListAuthWithContext(ctx)
		must(t, err)
		if _, ok := mounts["backdoor/"]; ok || !slices.Contains(revoked.AuthMethodsRemoved, "backdoor") {
			t.Errorf("the intruder's auth method: still mounted %v, reported removed %v", ok, revoked.AuthMethodsRemoved)
		}
		policies, err := root.Sys().ListPoliciesWithContext(ctx)
		must(t, err)
		if slices.Contains(policies, "backdoor-admin") || !slices.Contains(revoked.PoliciesDeleted, "backdoor-admin") {
			t.Errorf("the intruder's policy: policies now %v, reported deleted %v", policies, revoked.PoliciesDeleted)
		}
		for _, own := range []string{"lockdown-seal", "lockdown-recovery", "lockdown-rotator"} {
			if !slices.Contains(policies, own) {
				t.Errorf("Lockdown's policy %s was deleted", own)
			}
		}
		if revoked.BatchTokenMaxTTL == "" {
			t.Error("the report does not say how long batch tokens may live")
		}
		after, err := root.Sys().KeyStatusWithContext(ctx)
		must(t, err)
		if after.Term <= keyBefore.Term || revoked.KeyTerm != after.Term {
			t.Fatalf("key term %d → %d (event says %d)", keyBefore.Term, after.Term, revoked.KeyTerm)
		}
	})

	t.Run("with every tenant rotated and notified but the ceremony unfinished, the incident stays open and access is not restored", func(t *testing.T) {
		publishAs(t, s, events.ServiceRotator, events.RotationCompleted, events.RotationCompletedData{IncidentID: incidentID, Completed: 3})
		publishAs(t, s, events.ServiceNotifier, events.NotificationsCompleted, events.NotificationsCompletedData{IncidentID: incidentID, Sent: 3})
		testwait.For(t, 10*time.Second, "rotation and notification to be recorded", func() bool {
			st := loadRecovery(t, ctx, pool, incidentID)
			return st.RotationDone && st.NotifiedDone
		})
		// Both are recorded: every pass of the engine from now on sees them.
		c.awaitPasses(t, 10)
		st := loadRecovery(t, ctx, pool, incidentID)
		if !st.RestoredAt.IsZero() || st.Ceremony.Phase == recovery.CeremonyCompleted {
			t.Fatalf("restored at %v with the ceremony %q", st.RestoredAt, st.Ceremony.Phase)
		}
		if n := countEvents(t, s, events.AccessRestored, func(d events.AccessRestoredData) bool { return d.IncidentID == incidentID }); n != 0 {
			t.Fatalf("access.restored before the unseal keys were rotated (%d)", n)
		}
		var phase string
		must(t, pool.QueryRow(ctx, `SELECT phase FROM containment.incidents WHERE id = $1`, incidentID).Scan(&phase))
		if phase != "recovering" {
			t.Fatalf("phase %s, want recovering until the unseal keys are rotated", phase)
		}
		if _, err := approleLogin(ctx, s.Vault.Addr, secretID); err == nil {
			t.Fatal("approle is back before the unseal keys were rotated")
		}
	})

	var newKeys []string
	t.Run("the rekey ceremony survives a restart and ends with new shares: old ones fail, new ones unseal", func(t *testing.T) {
		nonce := waitCeremony(t, ctx, pool, incidentID, func(c recovery.Ceremony) bool { return c.Nonce != "" }).Nonce
		holders, err := s.Vault.Client()
		must(t, err)
		holders.ClearToken() // rekey takes shares, not a token
		old := append([]string(nil), s.Vault.UnsealKeys...)
		if _, err := holders.Sys().RekeyUpdateWithContext(ctx, old[0], nonce); err != nil {
			t.Fatal(err)
		}
		// Containment restarts mid-ceremony: the new instance resumes the
		// same ceremony instead of starting another.
		c.stop()
		c = startContainment(t, s, nil, nil, nil, nil)
		cer := waitCeremony(t, ctx, pool, incidentID, func(c recovery.Ceremony) bool { return c.Progress == 1 })
		if cer.Nonce != nonce {
			t.Fatalf("after the restart the nonce is %s, want %s", cer.Nonce, nonce)
		}
		var last *vault.RekeyUpdateResponse
		for _, k := range old[1:3] {
			last, err = holders.Sys().RekeyUpdateWithContext(ctx, k, nonce)
			must(t, err)
		}
		if !last.Complete || len(last.Keys) != 5 || last.VerificationNonce == "" {
			t.Fatalf("rekey update: complete %v, %d keys, verification nonce set %v", last.Complete, len(last.Keys), last.VerificationNonce != "")
		}
		newKeys = last.Keys
		waitCeremony(t, ctx, pool, incidentID, func(c recovery.Ceremony) bool { return c.Phase == recovery.CeremonyVerifying })
		for _, k := range newKeys[:3] {
			_, err := holders.Sys().RekeyVerificationUpdateWithContext(ctx, k, last.VerificationNonce)
			must(t, err)
		}
		_, rotated := waitEvent(t, s, events.UnsealKeysRotated, 20*time.Second, func(d events.UnsealKeysRotatedData) bool { return d.IncidentID == incidentID })
		// Verified, and proven by Vault's log of the barrier rekey — by a
		// containment that did not see the ceremony start (it restarted
		// mid-ceremony) but saw it running.
		if rotated.Shares != 5 || rotated.Threshold != 3 || !rotated.Verified || rotated.Proof != recovery.ProofVaultLog {
			t.Fatalf("unsealkeys.rotated %+v", rotated)
		}
		// Seal, then try the old shares (refused) and the new ones.
		must(t, root.Sys().SealWithContext(ctx))
		for _, k := range old[:3] {
			if st, err := holders.Sys().UnsealWithContext(ctx, k); err == nil && !st.Sealed {
				t.Fatal("the old shares still unseal Vault")
			}
		}
		if !sealed(t, s.Vault.Addr) {
			t.Fatal("Vault is unsealed after the old shares")
		}
		_, err = holders.Sys().ResetUnsealProcessWithContext(ctx)
		must(t, err)
		s.Vault.UnsealKeys = newKeys
		if err := s.Vault.Unseal(ctx); err != nil {
			t.Fatalf("the new shares do not unseal Vault: %v", err)
		}
	})

	t.Run("a rotation.completed that Vault does not bear out keeps access closed, and says why", func(t *testing.T) {
		// The rotator's NATS credential is enough to announce a completion;
		// before, restore ran on it before any tenant was rotated.
		publishAs(t, s, events.ServiceRotator, events.RotationCompleted, events.RotationCompletedData{IncidentID: incidentID, Completed: 3})
		publishAs(t, s, events.ServiceNotifier, events.NotificationsCompleted, events.NotificationsCompletedData{IncidentID: incidentID, Sent: 3})
		testwait.For(t, 20*time.Second, "the engine to refuse the claim", func() bool {
			return strings.Contains(c.logs.String(), "restore withheld")
		})
		c.awaitPasses(t, 10) // passes that see the refuted claim
		if st := loadRecovery(t, ctx, pool, incidentID); !st.RestoredAt.IsZero() {
			t.Fatal("access was restored on an unproven rotation")
		}
		if n := countEvents(t, s, events.AccessRestored, func(d events.AccessRestoredData) bool { return d.IncidentID == incidentID }); n != 0 {
			t.Fatalf("%d access.restored", n)
		}
	})

	t.Run("after rotation and notification complete, access is restored from deploy/vault/auth, twice harmlessly", func(t *testing.T) {
		// The rotation the claims describe, as the rotator writes it: one
		// tenant (its secrets and the runbook's api_keys_revoked_emergency
		// record, audited below).
		rotateForTest(t, ctx, s, root, incidentID, "tenant-001")
		for i := range 2 {
			publishAs(t, s, events.ServiceRotator, events.RotationCompleted, events.RotationCompletedData{IncidentID: incidentID, Completed: 1})
			publishAs(t, s, events.ServiceNotifier, events.NotificationsCompleted, events.NotificationsCompletedData{IncidentID: incidentID, Sent: 3})
			_, restored := waitEvent(t, s, events.AccessRestored, 20*time.Second, func(d events.AccessRestoredData) bool { return d.IncidentID == incidentID })
			if strings.Join(restored.AuthMethods, ",") != "approle,jwt" {
				t.Fatalf("round %d: access.restored %+v", i, restored)
			}
			testwait.For(t, 10*time.Second, "the restore to be recorded", func() bool {
				st := loadRecovery(t, ctx, pool, incidentID)
				return !st.RestoredAt.IsZero() && st.RotationDone && st.NotifiedDone
			})
		}
		// The role comes back with the role id of deploy/vault/auth/approle.json;
		// a fresh secret id logs in again.
		if _, err := approleLogin(ctx, s.Vault.Addr, newSecretID(t, ctx, root)); err != nil {
			t.Fatalf("approle login after restore: %v", err)
		}
		cfg, err := root.Logical().ReadWithContext(ctx, "auth/jwt/config")
		if err != nil || cfg == nil || cfg.Data["bound_issuer"] != "https://ci.example.internal" {
			t.Fatalf("jwt config not restored: %v %v", cfg, err)
		}
		waitEvent(t, s, events.IncidentResolved, 20*time.Second, func(d events.IncidentResolvedData) bool { return d.IncidentID == incidentID })
	})

	t.Run("every action on Vault is audited once, and the SIEM receives the records live", func(t *testing.T) {
		// tenant-001 was rotated before the restore (rotateForTest).
		want := map[string]string{"vault_sealed": "critical", "access_revoked": "critical", "unseal_keys_rotated": "high", "access_restored": "info",
			"tenant_secrets_rotated": "high", "api_keys_revoked_emergency": "critical",
			// The sweeps after the rekey and just before the restore.
			"vault_swept_after_rekey": "critical", "vault_swept_before_restore": "critical"}
		got := map[string]events.AuditData{}
		deadline := time.Now().Add(20 * time.Second)
		for len(got) < len(want) && time.Now().Before(deadline) {
			m, err := auditFeed.NextMsg(time.Until(deadline))
			if err != nil {
				break
			}
			ev, _, err := events.Decode(m.Header, m.Data)
			must(t, err)
			d, err := events.DataAs[events.AuditData](ev)
			must(t, err)
			if d.IncidentID != incidentID {
				continue
			}
			if _, seen := got[d.Record]; seen {
				t.Errorf("%s audited twice", d.Record)
			}
			got[d.Record] = d
		}
		for record, severity := range want {
			d, ok := got[record]
			if !ok || d.Severity != severity || d.EventID == "" {
				t.Errorf("%s: %+v (want severity %s)", record, d, severity)
			}
		}
		if d := got["api_keys_revoked_emergency"]; d.Tenant != "tenant-001" || d.Counts["keys_revoked"] != 4 || d.Action != "destroy" {
			t.Errorf("api_keys_revoked_emergency %+v", d)
		}
		if d := got["access_revoked"]; d.Counts["tokens_revoked"] < 1 || d.Counts["lockdown_tokens_replaced"] != 3 {
			t.Errorf("access_revoked %+v", d)
		}
		if d := got["unseal_keys_rotated"]; d.Counts["shares"] != 5 || d.Detail != "proven by vault_log" {
			t.Errorf("unseal_keys_rotated %+v", d)
		}
		if n := countEvents(t, s, events.Audit, func(d events.AuditData) bool { return d.IncidentID == incidentID }); n != len(want) {
			t.Errorf("%d audit records stored, want %d (one per action)", n, len(want))
		}
	})

	t.Run("no token or share reaches containment's log", func(t *testing.T) {
		c.stop()
		secrets := append([]string{s.Vault.RootToken, s.Vault.SealToken, s.Vault.RecoveryToken, s.Vault.RotatorToken, approleToken, pre.Auth.ClientToken, secretID}, newKeys...)
		for _, file := range []string{s.Vault.SealFile, s.Vault.RecoveryFile, s.Vault.RotatorFile} {
			successor, err := vaulttoken.Open("", file)
			must(t, err)
			secrets = append(secrets, successor.Token())
		}
		assertNoSecrets(t, c.logs.String(), secrets...)
	})
}

func write(ctx context.Context, c *vault.Client, path string, data map[string]any) error {
	_, err := c.Logical().WriteWithContext(ctx, path, data)
	return err
}

// generateRoot makes a root token the way an intruder holding a quorum of
// shares would: sys/generate-root with Vault's own one-time pad.
func generateRoot(t *testing.T, ctx context.Context, c *vault.Client, shares []string) string {
	t.Helper()
	init, err := c.Sys().GenerateRootInitWithContext(ctx, "", "")
	must(t, err)
	var st *vault.GenerateRootStatusResponse
	for _, k := range shares {
		st, err = c.Sys().GenerateRootUpdateWithContext(ctx, k, init.Nonce)
		must(t, err)
	}
	if !st.Complete {
		t.Fatal("generate-root did not complete")
	}
	raw, err := base64.RawStdEncoding.DecodeString(st.EncodedToken)
	must(t, err)
	if len(raw) != len(init.OTP) {
		t.Fatalf("encoded root token of %d bytes for a one-time pad of %d", len(raw), len(init.OTP))
	}
	for i := range raw {
		raw[i] ^= init.OTP[i]
	}
	return string(raw)
}

func newSecretID(t *testing.T, ctx context.Context, root *vault.Client) string {
	t.Helper()
	sec, err := root.Logical().WriteWithContext(ctx, "auth/approle/role/mailer/secret-id", nil)
	must(t, err)
	return sec.Data["secret_id"].(string)
}

// approleLogin logs in as the mailer role, as a platform service would.
func approleLogin(ctx context.Context, addr, secretID string) (string, error) {
	c, err := vault.NewClient(&vault.Config{Address: addr})
	if err != nil {
		return "", err
	}
	c.ClearToken()
	sec, err := c.Logical().WriteWithContext(ctx, "auth/approle/login", map[string]any{"role_id": "mailer-7d1f2c", "secret_id": secretID})
	if err != nil {
		return "", err
	}
	return sec.Auth.ClientToken, nil
}

func tokenAlive(ctx context.Context, addr, token string) bool {
	c, err := vault.NewClient(&vault.Config{Address: addr})
	if err != nil {
		return false
	}
	c.SetToken(token)
	_, err = c.Auth().Token().LookupSelfWithContext(ctx)
	return err == nil
}

// publishAs publishes an event as one of deploy/nats's users.
// rotateForTest writes each tenant's rotated secrets (after the
// revocation, as the rotator would) and announces each tenant's
// completion as the rotator: what a restore verifies in Vault.
func rotateForTest(t *testing.T, ctx context.Context, s *localstack.Stack, root *vault.Client, incidentID string, tenants ...string) {
	t.Helper()
	for _, tn := range tenants {
		for _, secret := range []string{"ssh", "smtp"} {
			_, err := root.KVv2("secret").Put(ctx, "tenants/"+tn+"/"+secret, map[string]any{"rotated": "yes", "lockdown_incident": incidentID})
			must(t, err)
		}
		publishAs(t, s, events.ServiceRotator, events.RotationTenantCompleted, events.RotationTenantCompletedData{IncidentID: incidentID, TenantID: tn,
			SSHFingerprint: "SHA256:x", DKIMSelector: "s", DKIMRecord: "v=DKIM1; p=x", APIKeysDestroyed: 4, SMTPPasswordRotate: true})
	}
}

func publishAs(t *testing.T, s *localstack.Stack, user string, name events.Name, data any) {
	t.Helper()
	nc, _ := connectAs(t, s, user)
	ev, err := events.New(name, events.SourceOf(user), data)
	must(t, err)
	body, err := events.Marshal(ev)
	must(t, err)
	js := jsOf(t, nc)
	if _, err := js.Publish(context.Background(), name.Subject(), body); err != nil {
		t.Fatal(err)
	}
}

func poolOf(t *testing.T, ctx context.Context, s *localstack.Stack) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(ctx, s.Postgres.URL)
	must(t, err)
	t.Cleanup(pool.Close)
	return pool
}

func loadRecovery(t *testing.T, ctx context.Context, pool *pgxpool.Pool, incidentID string) recovery.State {
	t.Helper()
	var raw []byte
	var st recovery.State
	if err := pool.QueryRow(ctx, "SELECT state FROM containment.recovery WHERE incident_id = $1", incidentID).Scan(&raw); err == nil {
		must(t, json.Unmarshal(raw, &st))
	}
	return st
}

func waitCeremony(t *testing.T, ctx context.Context, pool *pgxpool.Pool, incidentID string, cond func(recovery.Ceremony) bool) recovery.Ceremony {
	t.Helper()
	var c recovery.Ceremony
	testwait.For(t, 20*time.Second, "the ceremony's state", func() bool {
		c = loadRecovery(t, ctx, pool, incidentID).Ceremony
		return cond(c)
	})
	return c
}
