package cli

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/keycheck"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/tenantseed"
)

// The fault-injection suite: whole incidents on the real local
// stack with two rotators, each under one fault, each checked against the
// same invariants. `make chaos` runs it at full size (300 tenants,
// 3-minute outages, three seeds of random SIGKILLs) and writes the table
// of docs/reliability.md; `make test` runs a shortened pass.

// chaosConfig sizes the suite from the environment.
type chaosConfig struct {
	tenants int
	outage  time.Duration
	seeds   int
	table   string // where to write the Markdown table ("" for none)
}

func chaosFromEnv(t *testing.T) chaosConfig {
	t.Helper()
	c := chaosConfig{tenants: 40, outage: 20 * time.Second, seeds: 1, table: os.Getenv("LOCKDOWN_CHAOS_TABLE")}
	if v := os.Getenv("LOCKDOWN_CHAOS_TENANTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 10 {
			t.Fatalf("LOCKDOWN_CHAOS_TENANTS=%q: want a number of at least 10", v)
		}
		c.tenants = n
	}
	if v := os.Getenv("LOCKDOWN_CHAOS_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("LOCKDOWN_CHAOS_OUTAGE=%q: want a duration", v)
		}
		c.outage = d
	}
	if v := os.Getenv("LOCKDOWN_CHAOS_SEEDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("LOCKDOWN_CHAOS_SEEDS=%q: want a positive number", v)
		}
		c.seeds = n
	}
	return c
}

// notifyInFlight is NOTIFY_CONCURRENCY's default: the sends one notifier
// death (or relay stop) can leave accepted and unrecorded.
const notifyInFlight = 8

// chaosRow is one line of the table.
type chaosRow struct {
	scenario, faults           string
	took                       time.Duration
	lost, dupRotations         int
	dupNotices, mismatched     int
	deadLetters, unfinished    int
	repeats                    int // one message delivered twice (same Message-ID)
	rotated, notified, tenants int
}

func TestChaos(t *testing.T) {
	t.Parallel() // its own stack, nothing in the environment: beside the other long system tests
	cfg := chaosFromEnv(t)
	var rows []chaosRow
	t.Cleanup(func() { writeChaosTable(t, cfg, rows) })

	t.Run("one stack, two rotators", func(t *testing.T) {
		s := chaosSystem(t, cfg, localstack.All())
		baseline := s.chaosIncident(cfg, "no fault", nil)
		rows = append(rows, baseline)
		for seed := range cfg.seeds {
			rows = append(rows, s.chaosIncident(cfg, fmt.Sprintf("SIGKILL of random services (seed %d)", seed+1), func(ctx context.Context, id string) string {
				return s.killAtRandom(ctx, uint64(seed+1))
			}))
		}
		rows = append(rows, s.chaosIncident(cfg, "Vault sealed mid-rotation", func(ctx context.Context, id string) string {
			if !s.awaitRotated(ctx, id, cfg.tenants/3) {
				return "none: the incident ended first"
			}
			root, err := s.stack.Vault.Client()
			must(t, err)
			s.holdersAway.Store(true)
			defer s.holdersAway.Store(false)
			must(t, root.Sys().SealWithContext(ctx))
			sleepCtx(ctx, cfg.outage)
			return fmt.Sprintf("Vault sealed for %s after %d tenants", cfg.outage, cfg.tenants/3)
		}))
		rows = append(rows, s.chaosIncident(cfg, "PostgreSQL stopped mid-rotation", func(ctx context.Context, id string) string {
			if !s.awaitRotated(ctx, id, cfg.tenants/3) {
				return "none: the incident ended first"
			}
			must(t, s.stack.StopPostgres())
			sleepCtx(ctx, cfg.outage)
			must(t, s.stack.StartPostgres(context.WithoutCancel(ctx)))
			return fmt.Sprintf("PostgreSQL stopped for %s after %d tenants", cfg.outage, cfg.tenants/3)
		}))
		rows = append(rows, s.chaosIncident(cfg, "Mailpit stopped mid-notification", func(ctx context.Context, id string) string {
			if !s.awaitNotified(ctx, id, 1) {
				return "none: the incident ended first"
			}
			must(t, s.stack.StopMailpit())
			s.relayStops.Add(1)
			sleepCtx(ctx, cfg.outage)
			must(t, s.stack.StartMailpit(context.WithoutCancel(ctx)))
			return fmt.Sprintf("Mailpit stopped for %s after the first messages", cfg.outage)
		}))
		rows = append(rows, s.chaosIncident(cfg, "second breach during rotation", func(ctx context.Context, id string) string {
			if !s.awaitRotated(ctx, id, cfg.tenants/3) {
				return "none: the incident ended first"
			}
			s.breach("a second detection during rotation")
			return fmt.Sprintf("a second breach after %d tenants: Vault sealed again, unsealed by the holders", cfg.tenants/3)
		}))
	})

	t.Run("three-node JetStream cluster, two rotators", func(t *testing.T) {
		opts := localstack.All()
		opts.NATSNodes = 3
		s := chaosSystem(t, cfg, opts)
		rows = append(rows, s.chaosIncident(cfg, "NATS stream leader killed", func(ctx context.Context, id string) string {
			if !s.awaitRotated(ctx, id, cfg.tenants/4) {
				return "none: the incident ended first"
			}
			lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			victim, err := s.stack.NATS.LeaderOf(lctx, s.op.JS, events.StreamJobs)
			cancel()
			must(t, err)
			must(t, s.stack.KillNATSNode(victim))
			sleepCtx(ctx, cfg.outage)
			must(t, s.stack.RestartNATSNode(context.WithoutCancel(ctx), victim))
			return fmt.Sprintf("%s (leader of %s) killed for %s", s.stack.NATS.Nodes[victim].Name, events.StreamJobs, cfg.outage)
		}))
	})
}

// chaosSystem is the stack with the four services, two rotators and the
// test's root token kept (break-glass) to check Vault afterwards.
func chaosSystem(t *testing.T, cfg chaosConfig, opts localstack.Options) *system {
	t.Helper()
	s := newSystemWith(t, 60*time.Minute, cfg.tenants, opts)
	root, err := s.stack.Vault.Client()
	must(t, err)
	self, err := root.Auth().Token().LookupSelfWithContext(s.ctx)
	must(t, err)
	accessor, _ := self.Data["accessor"].(string)
	for _, svc := range []string{events.ServiceContainment, events.ServiceAssessor, events.ServiceNotifier} {
		env := []string{}
		switch svc {
		case events.ServiceContainment:
			env = append(slices.Clone(fastLease), "LOCKDOWN_BREAK_GLASS="+accessor)
		case events.ServiceNotifier:
			// The default pace, 20 messages a second: notification lasts
			// long enough for a relay outage to land in it.
			env = []string{}
		}
		s.start(svc, svc, true, env...)
	}
	for i := range 2 {
		s.start(fmt.Sprintf("rotator-%d", i+1), events.ServiceRotator, true, "LOCKDOWN_DKIM_KEY_TYPE=ed25519")
	}
	s.waitLeader()
	return s
}

// chaosIncident runs one incident with a fault injected by inject (nil:
// none) beside it, and checks the invariants.
func (s *system) chaosIncident(cfg chaosConfig, scenario string, inject func(ctx context.Context, id string) string) chaosRow {
	t := s.t
	row := chaosRow{scenario: scenario, faults: "none", tenants: cfg.tenants}
	s.seedAPIKeys(cfg.tenants)
	before := s.versions(cfg.tenants)
	dlBefore := s.deadLetters()
	notifierBefore, relayBefore := s.restarts(events.ServiceNotifier), s.relayStops.Load()
	start := time.Now()
	eventID := s.breach("chaos: " + scenario)
	ctx, stop := context.WithCancel(s.ctx)
	var wg sync.WaitGroup
	if inject != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := s.incidentOf(eventID)
			row.faults = inject(ctx, id)
		}()
	}
	id, resolved := s.runIncident(eventID)
	row.took = time.Since(start)
	stop()
	wg.Wait()
	if resolved.Outcome != "resolved" {
		row.unfinished++
		t.Errorf("%s: incident ended %s", scenario, resolved.Outcome)
	}
	s.settled()
	row.deadLetters = s.deadLetters() - dlBefore
	s.checkInvariants(id, cfg.tenants, before, &row)
	// The same message twice is SMTP's window: a send the relay accepted
	// and the notifier did not record, because it died or the relay went
	// away before answering — at most the sends in flight at each.
	windows := s.restarts(events.ServiceNotifier) - notifierBefore + int(s.relayStops.Load()-relayBefore)
	if row.repeats > notifyInFlight*windows {
		t.Errorf("%s: the same message sent twice %d times, beyond SMTP's window (%d sends in flight × %d notifier deaths and relay stops)",
			scenario, row.repeats, notifyInFlight, windows)
	}
	t.Logf("%s: %s in %s; lost %d, duplicate rotations %d, duplicate notices %d, same message twice %d, mismatched %d, dead letters %d",
		scenario, row.faults, row.took.Round(time.Second), row.lost, row.dupRotations, row.dupNotices, row.repeats, row.mismatched, row.deadLetters)
	if row.lost+row.dupRotations+row.dupNotices+row.mismatched+row.deadLetters+row.unfinished > 0 {
		t.Errorf("%s: invariants broken", scenario)
	}
	if inject != nil && strings.HasPrefix(row.faults, "none") {
		t.Errorf("%s: the fault never landed (%s): the scenario proved nothing", scenario, row.faults)
	}
	return row
}

// killAtRandom SIGKILLs a random service every 0.3 to 2 seconds until ctx
// ends and says what it killed.
func (s *system) killAtRandom(ctx context.Context, seed uint64) string {
	r := rand.New(rand.NewPCG(seed, seed*7919))
	victims := []string{events.ServiceContainment, events.ServiceAssessor, "rotator-1", "rotator-2", events.ServiceNotifier}
	killed := map[string]int{}
	n := 0
	for {
		select {
		case <-ctx.Done():
			parts := make([]string, 0, len(killed))
			for _, v := range victims {
				if killed[v] > 0 {
					parts = append(parts, fmt.Sprintf("%s ×%d", v, killed[v]))
				}
			}
			if n == 0 {
				return "none: the incident ended before the first SIGKILL"
			}
			return fmt.Sprintf("%d SIGKILLs: %s", n, strings.Join(parts, ", "))
		case <-time.After(time.Duration(300+r.IntN(1700)) * time.Millisecond):
		}
		v := victims[r.IntN(len(victims))]
		s.mu.Lock()
		pid := s.procs[v].pid
		s.mu.Unlock()
		if pid > 0 && s.stack.Kill(pid) == nil {
			killed[v]++
			n++
		}
	}
}

// awaitRotated waits until n tenants of the incident are announced
// rotated (or ctx ends: the incident is over).
func (s *system) awaitRotated(ctx context.Context, id string, n int) bool {
	return awaitTenants(ctx, s, events.RotationTenantCompleted, n, func(d events.RotationTenantCompletedData) (string, bool) {
		return d.TenantID, d.IncidentID == id
	})
}

// awaitNotified waits until n tenants of the incident were sent a message,
// and reports whether they were before ctx ended.
func (s *system) awaitNotified(ctx context.Context, id string, n int) bool {
	return awaitTenants(ctx, s, events.NotificationSent, n, func(d events.NotificationSentData) (string, bool) {
		return d.TenantID, d.IncidentID == id
	})
}

// awaitTenants follows the stored events of name until n different tenants
// matched, and reports whether they did before ctx ended.
func awaitTenants[T any](ctx context.Context, s *system, name events.Name, n int, match func(T) (tenant string, ok bool)) bool {
	seen := map[string]bool{}
	_, _, err := stream.Await(ctx, s.op.JS, name, func(_ event.Event, d T) bool {
		if tenant, ok := match(d); ok {
			seen[tenant] = true
		}
		return len(seen) >= n
	})
	return err == nil
}

// seedAPIKeys gives every tenant two API keys again (the last incident
// destroyed them): each incident must destroy them all.
func (s *system) seedAPIKeys(tenants int) {
	s.t.Helper()
	root, err := s.stack.Vault.Client()
	must(s.t, err)
	kv := root.KVv2(localstack.VaultKVMount)
	var wg sync.WaitGroup
	errs := make(chan error, tenants)
	sem := make(chan struct{}, 8)
	for i := range tenants {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			for k := range 2 {
				if _, err := kv.Put(s.ctx, fmt.Sprintf("api_keys/%s/chaos-%d", tenantseed.ID(i), k), map[string]any{"key": "issued before the incident"}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		s.t.Fatal(err)
	}
}

// versions reads the current version of every tenant secret.
func (s *system) versions(tenants int) map[string]int {
	s.t.Helper()
	root, err := s.stack.Vault.Client()
	must(s.t, err)
	kv := root.KVv2(localstack.VaultKVMount)
	out := map[string]int{}
	for i := range tenants {
		for _, secret := range []string{"ssh", "smtp", "dkim"} {
			path := "tenants/" + tenantseed.ID(i) + "/" + secret
			meta, err := kv.GetMetadata(s.ctx, path)
			must(s.t, err)
			out[path] = meta.CurrentVersion
		}
	}
	return out
}

// checkInvariants counts what the incident left wrong: tenants not
// rotated or rotated twice, recorded public parts that are not Vault's,
// API keys left, tenants told never or twice.
func (s *system) checkInvariants(id string, tenants int, before map[string]int, row *chaosRow) {
	t := s.t
	root, err := s.stack.Vault.Client()
	must(t, err)
	kv := root.KVv2(localstack.VaultKVMount)
	recorded := s.tenantCompletions(id)
	for i := range tenants {
		tenant := tenantseed.ID(i)
		lost := false
		for _, secret := range []string{"ssh", "smtp", "dkim"} {
			path := "tenants/" + tenant + "/" + secret
			latest, err := kv.Get(s.ctx, path)
			must(t, err)
			switch v := latest.VersionMetadata.Version - before[path]; {
			case v == 0 || latest.Data["lockdown_incident"] != id:
				lost = true
			case v > 1:
				row.dupRotations++
				t.Errorf("%s: %d new versions", path, v)
			}
			priv, _ := latest.Data["private_key"].(string)
			rec := recorded[tenant]
			switch {
			case secret == "ssh" && keycheck.MatchSSH(priv, rec.SSHFingerprint) != nil,
				secret == "dkim" && keycheck.MatchDKIM(priv, rec.DKIMRecord) != nil:
				row.mismatched++
				t.Errorf("%s: the recorded public part is not Vault's key", path)
			}
		}
		keys, err := root.Logical().ListWithContext(s.ctx, localstack.VaultKVMount+"/metadata/api_keys/"+tenant)
		must(t, err)
		if keys != nil && len(keys.Data["keys"].([]any)) > 0 {
			lost = true
			t.Errorf("%s: API keys left: %v", tenant, keys.Data["keys"])
		}
		if lost {
			row.lost++
			t.Errorf("%s not rotated", tenant)
		} else {
			row.rotated++
		}
	}
	msgs, err := s.stack.Mailpit.Messages(s.ctx)
	must(t, err)
	// Per recipient: the distinct messages (by Message-ID) and the copies.
	// Two messages are a duplicate notice; one message delivered twice
	// (the same Message-ID) is the one window SMTP leaves — a SIGKILL
	// between the relay's acceptance and the notifier's record — counted
	// as a repeat, and collapsed by mail stores that honour Message-ID.
	per, copies := map[string]map[string]bool{}, map[string]int{}
	for _, m := range msgs {
		if contains(m.Headers["X-Lockdown-Incident"], id) {
			for _, to := range m.To {
				if per[to.Address] == nil {
					per[to.Address] = map[string]bool{}
				}
				per[to.Address][m.MessageID] = true
				copies[to.Address]++
			}
		}
	}
	for addr, ids := range per {
		if len(ids) > 1 {
			row.dupNotices += len(ids) - 1
			t.Errorf("%s got %d different messages", addr, len(ids))
		}
		row.repeats += copies[addr] - len(ids)
	}
	row.notified = len(per)
	if len(per) < tenants {
		row.lost += tenants - len(per)
		t.Errorf("%d of %d tenants told", len(per), tenants)
	}
}

// tenantCompletions reads the incident's rotation.tenant.completed events
// by tenant.
func (s *system) tenantCompletions(id string) map[string]events.RotationTenantCompletedData {
	s.t.Helper()
	out := map[string]events.RotationTenantCompletedData{}
	s.scanEvents(events.RotationTenantCompleted.Subject(), func(ev event.Event) {
		if d, err := events.DataAs[events.RotationTenantCompletedData](ev); err == nil && d.IncidentID == id {
			out[d.TenantID] = d
		}
	})
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// writeChaosTable prints the table and writes it where LOCKDOWN_CHAOS_TABLE
// says.
func writeChaosTable(t *testing.T, cfg chaosConfig, rows []chaosRow) {
	if len(rows) == 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| scenario | faults injected | incident time | vs fault-free | tenants rotated | tenants notified | tenants lost | duplicate rotations | duplicate notifications | same message twice | mismatched records | dead letters |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	base := rows[0].took
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %+.0f%% | %d/%d | %d/%d | %d | %d | %d | %d | %d | %d |\n", r.scenario, r.faults, r.took.Round(time.Second),
			100*(r.took.Seconds()-base.Seconds())/base.Seconds(), r.rotated, r.tenants, r.notified, r.tenants, r.lost, r.dupRotations, r.dupNotices, r.repeats, r.mismatched, r.deadLetters)
	}
	t.Logf("chaos suite, %d tenants, outages of %s, %d seed(s), %s:\n%s", cfg.tenants, cfg.outage, cfg.seeds, time.Now().UTC().Format("2006-01-02"), b.String())
	if cfg.table != "" {
		if err := os.WriteFile(cfg.table, []byte(b.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}
