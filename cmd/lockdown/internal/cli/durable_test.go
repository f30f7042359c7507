package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/readmodel"
	"github.com/lockdown/lockdown/pkg/platform/vaulttoken"
	"github.com/lockdown/lockdown/testkit/testwait"
)

// The worst-day tests of the incident engine: every service is
// a process, killed with SIGKILL at named points (failpoints armed by the
// test-only LOCKDOWN_TEST_FAILPOINTS) or left without its database or
// Vault, and every incident must still complete with each event exactly
// once in the stream and nothing left pending.

// fastLease makes a standby (or a restarted process) take over quickly.
var fastLease = []string{"LOCKDOWN_LEADER_TTL=3s"}

func TestCrashAtEveryCommit(t *testing.T) {
	t.Parallel() // its own stack, nothing in the environment: beside the other long system tests
	const tenants = 5
	s := newSystem(t, 45*time.Minute, tenants)
	s.startAll(map[string][]string{events.ServiceContainment: fastLease})
	for _, p := range []struct{ service, point string }{
		{events.ServiceContainment, "containment.breach.sealed"},
		{events.ServiceContainment, "containment.breach.recorded"},
		{events.ServiceContainment, "outbox.published"},
		{events.ServiceContainment, "containment.engine.unsealed"},
		{events.ServiceContainment, "containment.recovery.removed"},
		{events.ServiceContainment, "containment.engine.revoked"},
		{events.ServiceContainment, "containment.engine.ceremony"},
		{events.ServiceContainment, "containment.engine.rotated"},
		{events.ServiceContainment, "containment.engine.swept"},
		{events.ServiceContainment, "containment.engine.restored"},
		{events.ServiceContainment, "containment.engine.resolved"},
		{events.ServiceContainment, "containment.readmodel.report"},
		{events.ServiceRotator, "rotator.planner.saved"},
		{events.ServiceRotator, "rotator.job.finished"},
		{events.ServiceRotator, "outbox.published"},
	} {
		t.Run(fmt.Sprintf("%s SIGKILLed right after %s: the incident completes, every event once, nothing pending", p.service, p.point), func(t *testing.T) {
			s.t = t
			before := s.restarts(p.service)
			s.arm(p.service, p.point)
			id, resolved := s.runIncident(s.breach("crash test at " + p.point))
			if resolved.Outcome != "resolved" {
				t.Fatalf("incident %s ended %s", id, resolved.Outcome)
			}
			// The kill can come after the event it follows is visible (the
			// outbox relay publishes from another goroutine than the one
			// that reaches the failpoint): wait for it a moment.
			testwait.For(t, 30*time.Second, fmt.Sprintf("the failpoint to kill %s (restarts %d → %d)", p.service, before, before+1), func() bool {
				return s.restarts(p.service) == before+1
			})
			counts, twice := s.eventCounts(id)
			if len(twice) > 0 {
				t.Fatalf("event ids in the stream twice: %v", twice)
			}
			// Killed after disabling approle and before recording it, the
			// next leader no longer finds approle enabled: the report must
			// still list both methods it disabled.
			revoked := await(s, events.AccessRevoked, time.Minute, func(d events.AccessRevokedData) bool { return d.IncidentID == id })
			if strings.Join(revoked.AuthMethodsDisabled, ",") != "approle,jwt" {
				t.Errorf("access.revoked lists %v disabled, want approle,jwt", revoked.AuthMethodsDisabled)
			}
			for name, want := range map[events.Name]int{
				events.IncidentOpened: 1, events.VaultSealed: 1, events.AssessmentCompleted: 1, events.VaultUnsealed: 1, events.AccessRevoked: 1,
				events.UnsealKeysRotated: 1, events.RotationPlanned: 1, events.RotationTenantCompleted: tenants, events.RotationCompleted: 1,
				events.NotificationsCompleted: 1, events.AccessRestored: 1, events.IncidentResolved: 1,
				events.VaultReconciled: 2, // after the rekey and before restore
			} {
				if counts[name] != want {
					t.Errorf("%s: %d in the stream, want %d", name, counts[name], want)
				}
			}
			// The read model is derived: whatever the kill interrupted,
			// it ends showing the incident resolved with its final report.
			rep, err := s.report(id)
			if err != nil || rep.Outcome != "resolved" || rep.Actions.TenantsRotated != tenants {
				t.Fatalf("the read model's report: %v, outcome %q, %d rotated", err, rep.Outcome, rep.Actions.TenantsRotated)
			}
			s.settled()
		})
	}
}

// arm restarts a service with a failpoint: it kills itself there, and is
// started again without it.
func (s *system) arm(name, point string) {
	s.t.Helper()
	s.mu.Lock()
	p := s.procs[name]
	p.respawn = false
	s.mu.Unlock()
	s.kill(name)
	s.mu.Lock()
	// No pid: the watcher of the killed process, whenever it runs, sees
	// that it is not the current one and starts nothing.
	p.pid, p.respawn = -1, true
	s.mu.Unlock()
	if err := s.launch(p, append(append([]string{}, p.env...), "LOCKDOWN_TEST_FAILPOINTS="+point)); err != nil {
		s.t.Fatal(err)
	}
	if name == events.ServiceContainment {
		s.waitLeader()
	}
}

func TestPostgresOutage(t *testing.T) {
	t.Parallel() // its own stack, nothing in the environment: beside the other long system tests
	s := newSystem(t, 20*time.Minute, 4)
	s.startAll(map[string][]string{events.ServiceContainment: fastLease})

	t.Run("with PostgreSQL stopped a breach still seals Vault at once, and the incident completes with its real seal time once PostgreSQL is back", func(t *testing.T) {
		s.t = t
		if err := s.stack.StopPostgres(); err != nil {
			t.Fatal(err)
		}
		published := time.Now()
		eventID := s.breach("breach during a PostgreSQL outage")
		testwait.For(t, 10*time.Second, "Vault sealed with PostgreSQL down", s.sealedNow)
		sealedAfter := time.Since(published)
		t.Logf("Vault sealed %s after the breach was published, PostgreSQL down", sealedAfter.Round(time.Millisecond))
		time.Sleep(time.Until(published.Add(2 * time.Minute)))
		if err := s.stack.StartPostgres(s.ctx); err != nil {
			t.Fatal(err)
		}
		// The SIEM detects again as the database returns: this one may be
		// recorded before the breach that sealed (that one waits out its
		// backoff). Before, it then opened the incident as round 1 (its
		// seals "already sealed", no request time) and the real breach
		// became round 2.
		redetection := s.breach("re-detection as PostgreSQL returns")
		id := s.incidentOf(eventID, redetection)
		// The key holders arrive after both detections are recorded, as
		// people do (minutes, against the breach's record retry of at most
		// RecordRetryMax = 5 s): the takeover is for a round that has not
		// passed its gate. Unsealing at once raced the breach's record on
		// a loaded machine: once round 1 is unsealed, the breach that
		// sealed is attached, not the opener.
		var doc readmodel.Incident
		testwait.For(t, time.Minute, "both detections in the incident's document", func() bool {
			var err error
			doc, err = s.document(id)
			return err == nil && doc.Detections == 2
		})
		id, resolved := s.runOpened(id)
		if resolved.Outcome != "resolved" {
			t.Fatalf("incident ended %s", resolved.Outcome)
		}
		// One incident for both detections, opened by the breach that
		// sealed even when the re-detection was recorded first.
		doc, err := s.document(id)
		if err != nil {
			t.Fatal(err)
		}
		if doc.OpenedBy != eventID {
			t.Fatalf("incident opened by %s (the breach: %s, the re-detection: %s)", doc.OpenedBy, eventID, redetection)
		}
		unrequested := 0
		for _, seal := range doc.Seals {
			if seal.RequestedAt.IsZero() {
				unrequested++
			}
		}
		if doc.SealRounds != 1 || unrequested != 0 {
			t.Fatalf("%d seal round(s), %d seal(s) without a request time; want one round, none", doc.SealRounds, unrequested)
		}
		sealed := await(s, events.VaultSealed, time.Minute, func(d events.VaultSealedData) bool { return d.IncidentID == id })
		// The recorded latency is the seal's, not the database's return:
		// PostgreSQL came back two minutes after the breach.
		if sealed.LatencyMS <= 0 || sealed.LatencyMS > 30_000 {
			t.Fatalf("vault.sealed records %d ms from breach to seal; the seal took %s", sealed.LatencyMS, sealedAfter)
		}
		t.Logf("recorded seal latency %d ms", sealed.LatencyMS)
		if n := s.deadLetters(); n != 0 {
			t.Fatalf("%d dead letters", n)
		}
		s.settled()
	})

	t.Run("an operator resumes a stuck incident and aborts another; the next breach opens a new incident", func(t *testing.T) {
		s.t = t
		eventID := s.breach("to be resumed and aborted")
		id := s.incidentOf(eventID)
		await(s, events.VaultSealed, time.Minute, func(d events.VaultSealedData) bool { return d.IncidentID == id })
		if err := s.stack.Vault.Unseal(s.ctx); err != nil {
			t.Fatal(err)
		}
		await(s, events.AccessRevoked, time.Minute, func(d events.AccessRevokedData) bool { return d.IncidentID == id })
		// As the operator, in-process, exactly as the binary runs it.
		var out, errOut bytes.Buffer
		if code := Main(s.ctx, s.asOperator("resume", id, "--as", "alice@soc"), &out, &errOut); code != ExitOK {
			t.Fatalf("lockdown resume: exit %d: %s", code, errOut.String())
		}
		// The planner may have dead-lettered access.revoked: while the
		// rotation has not completed it is announced again under a new
		// id. The rotators may finish the four tenants before the resume
		// is handled (a loaded machine: CI did); then there is nothing to
		// announce again.
		testwait.For(t, time.Minute, "access.revoked announced again, or the rotation completed before the resume", func() bool {
			again, completed := false, false
			s.scanEvents(events.AccessRevoked.Subject(), func(ev event.Event) {
				again = again || strings.HasPrefix(ev.ID(), id+"/") && strings.HasSuffix(ev.ID(), "/resume-1")
			})
			s.scanEvents(events.RotationCompleted.Subject(), func(ev event.Event) {
				if d, err := events.DataAs[events.RotationCompletedData](ev); err == nil && d.IncidentID == id {
					completed = true
				}
			})
			return again || completed
		})
		if code := Main(s.ctx, s.asOperator("abort", id), &out, &errOut); code != ExitUsage {
			t.Fatalf("abort without a reason: exit %d", code)
		}
		if code := Main(s.ctx, s.asOperator("abort", id, "--as", "alice@soc", "--reason", "false positive: a red-team exercise"), &out, &errOut); code != ExitOK {
			t.Fatalf("lockdown abort: exit %d: %s", code, errOut.String())
		}
		resolved := await(s, events.IncidentResolved, time.Minute, func(d events.IncidentResolvedData) bool { return d.IncidentID == id })
		if resolved.Outcome != "failed" || !strings.Contains(resolved.Reason, "alice@soc") || !strings.Contains(resolved.Reason, "red-team") {
			t.Fatalf("incident.resolved %+v", resolved)
		}
		r, err := s.report(id)
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, l := range r.Timeline {
			lines = append(lines, l.Summary)
		}
		all := strings.Join(lines, "\n")
		if r.Outcome != "failed" || !strings.Contains(r.Reason, "red-team") || !strings.Contains(all, "resume requested by alice@soc") ||
			!strings.Contains(all, "abort requested by alice@soc") {
			t.Fatalf("report outcome %s reason %q, timeline:\n%s", r.Outcome, r.Reason, all)
		}
		next, resolvedNext := s.runIncident(s.breach("after the abort"))
		if next == id || resolvedNext.Outcome != "resolved" {
			t.Fatalf("the breach after the abort went to %s (%s)", next, resolvedNext.Outcome)
		}
		s.settled()
	})
}

// faultyVault stands in front of Vault and answers 503 to every request
// made with one token while failing is set: Vault overloaded or restarting
// for one client, as containment's recovery token sees it. The token is
// read from its file on each request: containment replaces it in every
// incident.
type faultyVault struct {
	proxy   *httputil.ReverseProxy
	token   func() string
	failing atomic.Bool
	refused atomic.Int64
}

func (f *faultyVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.failing.Load() && r.Header.Get("X-Vault-Token") == f.token() {
		f.refused.Add(1)
		http.Error(w, `{"errors":["service unavailable"]}`, http.StatusServiceUnavailable)
		return
	}
	f.proxy.ServeHTTP(w, r)
}

func TestVaultUnavailableAndResealed(t *testing.T) {
	t.Parallel() // its own stack, nothing in the environment: beside the other long system tests
	s := newSystem(t, 25*time.Minute, 4)
	target, _ := url.Parse(s.stack.Vault.Addr)
	fv := &faultyVault{proxy: httputil.NewSingleHostReverseProxy(target), token: func() string {
		src, err := vaulttoken.Open("", s.stack.Vault.RecoveryFile)
		if err != nil {
			return ""
		}
		return src.Token()
	}}
	front := httptest.NewServer(fv)
	t.Cleanup(front.Close)
	// The test's root token survives the revocations as break-glass: it
	// mints the token the second round must revoke.
	rootAPI, err := s.stack.Vault.Client()
	must(t, err)
	self, err := rootAPI.Auth().Token().LookupSelfWithContext(s.ctx)
	must(t, err)
	rootAccessor, _ := self.Data["accessor"].(string)
	s.startAll(map[string][]string{events.ServiceContainment: append([]string{"LOCKDOWN_VAULT_ADDRS=" + front.URL, "LOCKDOWN_STUCK_AFTER=1m",
		"LOCKDOWN_BREAK_GLASS=" + rootAccessor}, fastLease...)})

	t.Run("Vault answering 503 to the recovery token for 3 minutes after unseal delays revocation, raises incident.stuck, and nothing is dead-lettered", func(t *testing.T) {
		s.t = t
		eventID := s.breach("breach, then Vault unavailable to containment")
		id := s.incidentOf(eventID)
		await(s, events.VaultSealed, time.Minute, func(d events.VaultSealedData) bool { return d.IncidentID == id })
		fv.failing.Store(true)
		if err := s.stack.Vault.Unseal(s.ctx); err != nil {
			t.Fatal(err)
		}
		await(s, events.VaultUnsealed, time.Minute, func(d events.VaultUnsealedData) bool { return d.IncidentID == id })
		outage := time.Now()
		stuck := await(s, events.IncidentStuck, 3*time.Minute, func(d events.IncidentStuckData) bool { return d.IncidentID == id })
		if stuck.Phase != "unsealed" || !strings.Contains(stuck.Reason, "503") {
			t.Fatalf("incident.stuck %+v", stuck)
		}
		// lockdown status shows why it does not move, from the read
		// model, as the operator.
		// The read model follows the change that raised incident.stuck
		// within a moment (written after the commit, as the event is
		// published): wait for it rather than race it.
		var view struct {
			StuckReason string `json:"stuck_reason"`
		}
		statusErr := ""
		testwait.For(t, 10*time.Second, "status --json to show why the incident is stuck", func() bool {
			var out, errOut bytes.Buffer
			if code := Main(s.ctx, s.asOperator("status", id, "--json"), &out, &errOut); code != ExitOK {
				statusErr = errOut.String()
				return false
			}
			return json.Unmarshal(out.Bytes(), &view) == nil && strings.Contains(view.StuckReason, "503")
		})
		if statusErr != "" && view.StuckReason == "" {
			t.Fatalf("lockdown status: %s", statusErr)
		}
		time.Sleep(time.Until(outage.Add(3 * time.Minute)))
		counts, _ := s.eventCounts(id)
		if counts[events.AccessRevoked] != 0 {
			t.Fatal("access.revoked while Vault refused the recovery token")
		}
		fv.failing.Store(false)
		t.Logf("Vault refused the recovery token %d times in 3 minutes", fv.refused.Load())
		await(s, events.AccessRevoked, time.Minute, func(d events.AccessRevokedData) bool { return d.IncidentID == id })
		_, resolved := s.runIncident(eventID)
		if resolved.Outcome != "resolved" {
			t.Fatalf("incident ended %s", resolved.Outcome)
		}
		if n := s.deadLetters(); n != 0 {
			t.Fatalf("%d dead letters", n)
		}
		s.settled()
	})

	t.Run("a second breach after unseal seals again, and the next unseal revokes a token minted in between", func(t *testing.T) {
		s.t = t
		eventID := s.breach("first detection")
		id := s.incidentOf(eventID)
		await(s, events.VaultSealed, time.Minute, func(d events.VaultSealedData) bool { return d.IncidentID == id && d.Round == 1 })
		if err := s.stack.Vault.Unseal(s.ctx); err != nil {
			t.Fatal(err)
		}
		await(s, events.AccessRevoked, time.Minute, func(d events.AccessRevokedData) bool { return d.IncidentID == id && d.Round == 1 })
		firstNonce, err := s.nonce(id)
		if err != nil {
			t.Fatal(err)
		}
		root, err := s.stack.Vault.Client()
		if err != nil {
			t.Fatal(err)
		}
		minted, err := root.Auth().Token().CreateWithContext(s.ctx, &vault.TokenCreateRequest{Policies: []string{"default"}, DisplayName: "minted-between-rounds"})
		if err != nil {
			t.Fatal(err)
		}
		s.breach("second detection while recovering")
		sealed := await(s, events.VaultSealed, time.Minute, func(d events.VaultSealedData) bool { return d.IncidentID == id && d.Round == 2 })
		if !s.sealedNow() {
			t.Fatalf("vault.sealed round 2 %+v but Vault is unsealed", sealed)
		}
		if err := s.stack.Vault.Unseal(s.ctx); err != nil {
			t.Fatal(err)
		}
		revoked := await(s, events.AccessRevoked, time.Minute, func(d events.AccessRevokedData) bool { return d.IncidentID == id && d.Round == 2 })
		if revoked.TokensRevoked < 1 {
			t.Fatalf("round 2 revoked %d tokens", revoked.TokensRevoked)
		}
		check, _ := vault.NewClient(&vault.Config{Address: s.stack.Vault.Addr})
		check.SetToken(minted.Auth.ClientToken)
		if _, err := check.Auth().Token().LookupSelfWithContext(s.ctx); err == nil {
			t.Fatal("the token minted between the rounds still works")
		}
		// Vault cleared the first ceremony when it sealed: a new one opens.
		var nonce string
		testwait.For(t, time.Minute, "a new ceremony after the second unseal", func() bool {
			n, err := s.nonce(id)
			nonce = n
			return err == nil && n != firstNonce
		})
		if err := s.stack.Vault.PlayRekey(s.ctx, nonce, 3*time.Second); err != nil {
			t.Fatal(err)
		}
		resolved := await(s, events.IncidentResolved, 5*time.Minute, func(d events.IncidentResolvedData) bool { return d.IncidentID == id })
		if resolved.Outcome != "resolved" {
			t.Fatalf("incident ended %s", resolved.Outcome)
		}
		r, err := s.report(id)
		if err != nil {
			t.Fatal(err)
		}
		if r.Actions.SealRounds != 2 {
			t.Fatalf("report: %d seal rounds", r.Actions.SealRounds)
		}
		s.settled()
	})
}

func TestLeaderFailover(t *testing.T) {
	t.Parallel() // its own stack, nothing in the environment: beside the other long system tests
	s := newSystem(t, 15*time.Minute, 4)
	for _, name := range []string{"containment-a", "containment-b"} {
		s.start(name, events.ServiceContainment, false, append([]string{"LOCKDOWN_PROCESS_NAME=" + name}, fastLease...)...)
	}
	for _, svc := range []string{events.ServiceAssessor, events.ServiceRotator, events.ServiceNotifier} {
		s.start(svc, svc, true)
	}
	leader := s.waitLeader()

	t.Run("two containment processes: the leader SIGKILLed mid-ceremony, the standby takes over and completes the same ceremony once", func(t *testing.T) {
		s.t = t
		eventID := s.breach("breach with two containment processes")
		id := s.incidentOf(eventID)
		await(s, events.VaultSealed, time.Minute, func(d events.VaultSealedData) bool { return d.IncidentID == id })
		if err := s.stack.Vault.Unseal(s.ctx); err != nil {
			t.Fatal(err)
		}
		await(s, events.AccessRevoked, time.Minute, func(d events.AccessRevokedData) bool { return d.IncidentID == id })
		nonce, err := s.nonce(id)
		if err != nil {
			t.Fatal(err)
		}
		// The holders give their current shares, then take 15 s to prove
		// the new ones: the leader dies while they do.
		played := make(chan error, 1)
		go func() { played <- s.stack.Vault.PlayRekey(s.ctx, nonce, 15*time.Second) }()
		testwait.For(t, time.Minute, "the leader to record the verification phase", func() bool {
			c, err := s.ceremony(id)
			return err == nil && c.Phase == "verifying_new_shares"
		})
		s.kill(leader)
		killed := time.Now()
		standby := s.waitLeaderOtherThan(leader)
		t.Logf("%s took over %s after %s was killed", standby, time.Since(killed).Round(time.Millisecond), leader)
		if err := <-played; err != nil {
			t.Fatal(err)
		}
		resolved := await(s, events.IncidentResolved, 5*time.Minute, func(d events.IncidentResolvedData) bool { return d.IncidentID == id })
		if resolved.Outcome != "resolved" {
			t.Fatalf("incident ended %s", resolved.Outcome)
		}
		counts, twice := s.eventCounts(id)
		if counts[events.UnsealKeysRotated] != 1 || len(twice) > 0 {
			t.Fatalf("unsealkeys.rotated %d times, ids twice %v", counts[events.UnsealKeysRotated], twice)
		}
		r, err := s.report(id)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Actions.DrivenBy[leader]) == 0 || !contains(r.Actions.DrivenBy[standby], "rekey ceremony") {
			t.Fatalf("report's containment processes %v: want %s and %s (the ceremony)", r.Actions.DrivenBy, leader, standby)
		}
		c, err := s.ceremony(id)
		must(t, err)
		if c.Restarts != 0 || c.Nonce != nonce {
			t.Fatalf("the ceremony restarted %d times (nonce %s, was %s)", c.Restarts, c.Nonce, nonce)
		}
		s.settled()
	})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
