package app_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	vault "github.com/hashicorp/vault/api"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/dkimdns"
	"github.com/lockdown/lockdown/pkg/platform/keycheck"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/services/rotator/internal/store"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/tenantseed"
	"github.com/lockdown/lockdown/testkit/testwait"
)

// dkimSelectors is the rotator's default pair (LOCKDOWN_DKIM_SELECTORS).
var dkimSelectors = [2]string{"ld1", "ld2"}

// TestDKIMRollover rolls every tenant's DKIM key over through a real
// authoritative DNS server (Knot): tenants 1, 2, 4, 5… delegate their
// selectors into the platform's zone, every third publishes its own. A
// sampler checks throughout that the key Vault holds as active verifies
// against the record DNS serves for its selector (by a signature, not by
// comparing strings). The DNS server is down when the incident starts, and
// one rotator kills itself right after publishing a record.
func TestDKIMRollover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	const n = 9
	s := localstack.StartTest(t, ctx, localstack.Options{NATS: true, NATSAuth: true, Postgres: true, Vault: true, DNS: true})
	db, err := store.Open(ctx, s.Postgres.URL)
	must(t, err)
	pool := db.Pool()
	t.Cleanup(db.Close)
	root, err := s.Vault.Client()
	must(t, err)
	delegated := func(i int) bool { return i%3 != 2 }
	seedDKIM, err := s.DNS.SeedDKIM(dkimSelectors, delegated)
	must(t, err)
	_, err = tenantseed.Seed(ctx, pool, root, tenantseed.Options{Count: n, DKIM: seedDKIM})
	must(t, err)
	domain := func(i int) string { return tenantseed.ID(i) + "." + strings.TrimSuffix(s.DNS.TenantZone, ".") }
	resolver := s.DNS.Resolver()
	kv := root.KVv2("secret")

	// The sampler: for every tenant, mail signed with the active key in
	// Vault must pass DKIM against what DNS serves for its selector
	// (through a delegated tenant's CNAME). A sample whose Vault key changed while DNS was read
	// is inconclusive and dropped (the record it needed was replaced
	// after the cut-over, as it should be).
	var mu sync.Mutex
	samples, problems := 0, []string{}
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var sampling sync.WaitGroup
	sampling.Add(1)
	go func() {
		defer sampling.Done()
		for sampleCtx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
			for i := range n {
				conclusive, err := keycheck.ActiveDKIM(sampleCtx, kv, "tenants/"+tenantseed.ID(i)+"/dkim", domain(i), resolver.LookupFunc(sampleCtx))
				if !conclusive {
					continue
				}
				mu.Lock()
				samples++
				if err != nil && len(problems) < 5 {
					problems = append(problems, err.Error())
				}
				mu.Unlock()
			}
		}
	}()

	js := operator(t, ctx, s)
	must(t, s.StopDNS())
	// One rotator dies right after publishing a record, before recording
	// it; the other carries on (and the dead one's jobs come back to it).
	pids := startRotators(t, s, 1, "LOCKDOWN_DKIM_RECHECK=1s", "LOCKDOWN_TEST_FAILPOINTS=rotator.dkim.published", "LOCKDOWN_ROTATION_CONCURRENCY=1")
	const incident = "inc-dkim"
	startIncident(t, ctx, s, incident, nil)
	// SSH, SMTP and API keys do not wait for DNS, for any tenant (the
	// consumer is not paused); a delegated tenant's DKIM key does, and a
	// tenant that publishes its own completes, its key waiting for its DNS.
	delegatedCount := 0
	for i := range n {
		if delegated(i) {
			delegatedCount++
		}
	}
	var waiting, awaiting int
	t.Cleanup(func() {
		if t.Failed() {
			rows, _ := pool.Query(context.Background(), `SELECT tenant_id, state, steps::text FROM rotator.jobs WHERE incident_id = $1 ORDER BY tenant_id`, incident)
			for rows.Next() {
				var id, state, steps string
				_ = rows.Scan(&id, &state, &steps)
				t.Logf("%s %s %.300s", id, state, steps)
			}
			t.Logf("waiting %d awaiting %d", waiting, awaiting)
		}
	})
	testwait.For(t, time.Minute, "every job to destroy its API keys, and the delegated ones to wait for DNS", func() bool {
		_ = pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'pending' AND (steps->'api_keys'->>'done')::boolean AND NOT steps ? 'dkim'),
			count(*) FILTER (WHERE state = 'completed' AND (steps->'dkim_cutover'->>'awaiting')::boolean)
			FROM rotator.jobs WHERE incident_id = $1`, incident).Scan(&waiting, &awaiting)
		return waiting == delegatedCount && awaiting == n-delegatedCount
	})
	must(t, s.StartDNS(ctx))
	select {
	case <-s.Exited(pids[0]):
	case <-time.After(2 * time.Minute):
		t.Fatal("the rotator armed to die after publishing a record never did")
	}
	startRotatorsNamed(t, s, "rotator-b", "LOCKDOWN_DKIM_RECHECK=1s")
	completed := awaitCompleted(t, ctx, js, incident)
	if completed.Completed != n || completed.Failed != 0 {
		t.Fatalf("rotation completed %d, failed %d; want %d, 0", completed.Completed, completed.Failed, n)
	}

	t.Run("a delegated tenant's new selector resolves to the active key and its old one is revoked", func(t *testing.T) {
		for i := range n {
			if !delegated(i) {
				continue
			}
			id := tenantseed.ID(i)
			active, err := kv.Get(ctx, "tenants/"+id+"/dkim")
			must(t, err)
			sel, _ := active.Data["selector"].(string)
			if sel != dkimSelectors[1] || active.Data["lockdown_incident"] != incident {
				t.Fatalf("%s: active selector %q of incident %v, want %s of %s", id, sel, active.Data["lockdown_incident"], dkimSelectors[1], incident)
			}
			if err := keycheck.DKIMMessage(active.Data["private_key"].(string), domain(i), sel, resolver.LookupFunc(ctx)); err != nil {
				t.Fatalf("%s: mail signed with the active key fails DKIM: %v", id, err)
			}
			old, err := resolver.Lookup(ctx, dkimSelectors[0]+"._domainkey."+domain(i))
			must(t, err)
			if len(old) != 1 || old[0] != dkimdns.RevokedRecord {
				t.Fatalf("%s: old selector serves %q, want the revoked record", id, old)
			}
			if _, err := kv.GetMetadata(ctx, "tenants/"+id+"/dkim-pending"); err == nil || !strings.Contains(err.Error(), "not found") {
				t.Fatalf("%s: the staged copy survived (%v)", id, err)
			}
		}
	})

	t.Run("a tenant that publishes its own records keeps its key until its DNS shows the new one", func(t *testing.T) {
		for i := range n {
			if delegated(i) {
				continue
			}
			id := tenantseed.ID(i)
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_, d, err := stream.Await(wctx, js, events.RotationTenantCompleted, func(_ event.Event, d events.RotationTenantCompletedData) bool {
				return d.IncidentID == incident && d.TenantID == id
			})
			cancel()
			must(t, err)
			if d.DKIMState != "awaiting_dns" || d.DKIMName != d.DKIMSelector+"._domainkey."+domain(i) {
				t.Fatalf("%s: dkim_state %q at %q, want awaiting_dns at the tenant's selector", id, d.DKIMState, d.DKIMName)
			}
			active, err := kv.Get(ctx, "tenants/"+id+"/dkim")
			must(t, err)
			if active.Data["selector"] != tenantseed.SeedSelector {
				t.Fatalf("%s: the new key is active (selector %v) before the tenant published it", id, active.Data["selector"])
			}
			// The tenant publishes the record it was told, in its own zone.
			must(t, s.DNS.TenantClient().ReplaceTXT(ctx, s.DNS.TenantZone, d.DKIMName, d.DKIMRecord, 60))
			wctx, cancel = context.WithTimeout(ctx, 30*time.Second)
			_, act, err := stream.Await(wctx, js, events.RotationDKIMActivated, func(_ event.Event, a events.RotationDKIMActivatedData) bool {
				return a.IncidentID == incident && a.TenantID == id
			})
			cancel()
			must(t, err)
			active, err = kv.Get(ctx, "tenants/"+id+"/dkim")
			must(t, err)
			if active.Data["selector"] != d.DKIMSelector || act.Selector != d.DKIMSelector {
				t.Fatalf("%s: after activation Vault holds selector %v, want %s", id, active.Data["selector"], d.DKIMSelector)
			}
			if err := keycheck.DKIMMessage(active.Data["private_key"].(string), domain(i), d.DKIMSelector, resolver.LookupFunc(ctx)); err != nil {
				t.Fatalf("%s: mail signed with the activated key fails DKIM: %v", id, err)
			}
		}
	})

	stopSampling()
	sampling.Wait()
	t.Run("the active key had a published record at every sample", func(t *testing.T) {
		mu.Lock()
		defer mu.Unlock()
		if samples < n {
			t.Fatalf("only %d conclusive samples", samples)
		}
		if len(problems) > 0 {
			t.Fatalf("%d samples; problems:\n%s", samples, strings.Join(problems, "\n"))
		}
		t.Logf("%d conclusive samples", samples)
	})
}

// TestDKIMKilledBetweenStageAndRecord kills the rotator with SIGKILL right
// after it staged a tenant's new DKIM key in Vault, before it recorded the
// staging: the next process must adopt the staged key — publish its
// record and make it active — not the key it generates anew, whose record
// the staged one does not match.
func TestDKIMKilledBetweenStageAndRecord(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const n = 3
	s, _, root := delegatedTenants(t, ctx, n)
	js := operator(t, ctx, s)
	// One job at a time and no pre-generation: the first job's third
	// write is its staged DKIM key (after SSH and SMTP), and the retry
	// makes a key of its own.
	env := []string{"LOCKDOWN_PREGENERATE=false", "LOCKDOWN_ROTATION_CONCURRENCY=1"}
	pids := startRotators(t, s, 1, append(env, "LOCKDOWN_TEST_FAILPOINTS=rotator.job.secret.written:3")...)
	const incident = "inc-dkim-staged"
	startIncident(t, ctx, s, incident, nil)
	select {
	case <-s.Exited(pids[0]):
	case <-time.After(2 * time.Minute):
		t.Fatal("the rotator armed to die after staging a DKIM key never did")
	}
	startRotatorsNamed(t, s, "rotator-b", env...)
	completed := awaitCompleted(t, ctx, js, incident)
	if completed.Completed != n || completed.Failed != 0 {
		t.Fatalf("rotation completed %d, failed %d; want %d, 0", completed.Completed, completed.Failed, n)
	}
	kv := root.KVv2("secret")
	resolver := s.DNS.Resolver()
	for i := range n {
		id := tenantseed.ID(i)
		active, err := kv.Get(ctx, "tenants/"+id+"/dkim")
		must(t, err)
		sel, _ := active.Data["selector"].(string)
		if active.Data["lockdown_incident"] != incident {
			t.Fatalf("%s: the active DKIM key is not the incident's", id)
		}
		domain := id + "." + strings.TrimSuffix(s.DNS.TenantZone, ".")
		if err := keycheck.DKIMMessage(active.Data["private_key"].(string), domain, sel, resolver.LookupFunc(ctx)); err != nil {
			t.Fatalf("%s: mail signed with the active key fails DKIM: %v", id, err)
		}
	}
}

// delegatedTenants starts a stack with a DNS server and seeds n tenants,
// each delegating its DKIM selectors into the platform's zone.
func delegatedTenants(t *testing.T, ctx context.Context, n int) (*localstack.Stack, *store.Store, *vault.Client) {
	t.Helper()
	s := localstack.StartTest(t, ctx, localstack.Options{NATS: true, NATSAuth: true, Postgres: true, Vault: true, DNS: true})
	db, err := store.Open(ctx, s.Postgres.URL)
	must(t, err)
	t.Cleanup(db.Close)
	root, err := s.Vault.Client()
	must(t, err)
	seedDKIM, err := s.DNS.SeedDKIM(dkimSelectors, func(int) bool { return true })
	must(t, err)
	_, err = tenantseed.Seed(ctx, db.Pool(), root, tenantseed.Options{Count: n, DKIM: seedDKIM})
	must(t, err)
	return s, db, root
}

// startRotatorsNamed runs one more rotator under its own log name.
func startRotatorsNamed(t testing.TB, s *localstack.Stack, name string, env ...string) int {
	t.Helper()
	bin, err := localstack.Service(events.ServiceRotator)
	must(t, err)
	pid, _, err := s.Spawn(name, bin, nil, append(s.Env(events.ServiceRotator), env...))
	must(t, err)
	return pid
}

// TestDKIMAnswerThatNeverSucceeds: a tenant whose DKIM delegation points
// outside the platform's zone is answered REFUSED by the authoritative
// server, at every try. Before, the job was retried forever and the
// rotation (so the restore of access) never completed; now that tenant's
// DKIM step fails with the answer as its reason, and the rotation completes.
func TestDKIMAnswerThatNeverSucceeds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const n = 3
	s, db, _ := delegatedTenants(t, ctx, n)
	outside := tenantseed.ID(0)
	_, err := db.Pool().Exec(ctx, `UPDATE directory.tenants SET dkim_delegation = 'dkim.elsewhere.example.' WHERE id = $1`, outside)
	must(t, err)
	js := operator(t, ctx, s)
	startRotators(t, s, 1)
	const incident = "inc-refused"
	startIncident(t, ctx, s, incident, nil)
	completed := awaitCompleted(t, ctx, js, incident)
	if completed.Completed != n-1 || completed.Failed != 1 {
		t.Fatalf("rotation completed %d, failed %d; want %d, 1", completed.Completed, completed.Failed, n-1)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	_, failed, err := stream.Await(wctx, js, events.RotationTenantFailed, func(_ event.Event, d events.RotationTenantFailedData) bool {
		return d.IncidentID == incident && d.TenantID == outside
	})
	must(t, err)
	if failed.Step != "dkim" || !strings.Contains(failed.Reason, "REFUSED") {
		t.Fatalf("failed at step %q: %s", failed.Step, failed.Reason)
	}
}
