package app_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	vault "github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/keycheck"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/services/rotator/internal/store"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/tenantseed"
	"github.com/lockdown/lockdown/testkit/testwait"
)

type fixture struct {
	s      *localstack.Stack
	root   *vault.Client
	pool   *pgxpool.Pool
	apiKey map[string][]string // tenant → its API key paths
}

// seed fills the directory and Vault: n tenants with SSH, SMTP and DKIM
// secrets and 1–5 API keys each.
func seed(t testing.TB, ctx context.Context, n int) *fixture {
	t.Helper()
	return seedOn(t, ctx, localstack.Options{NATS: true, NATSAuth: true, Postgres: true, Vault: true}, n)
}

// seedOn is seed on a stack started with opts.
func seedOn(t testing.TB, ctx context.Context, opts localstack.Options, n int) *fixture {
	t.Helper()
	s := localstack.StartTest(t, ctx, opts)
	db, err := store.Open(ctx, s.Postgres.URL) // the rotator's migrations create the directory
	must(t, err)
	db.Close()
	pool, err := pgxpool.New(ctx, s.Postgres.URL)
	must(t, err)
	t.Cleanup(pool.Close)
	root, err := s.Vault.Client()
	must(t, err)
	f := &fixture{s: s, root: root, pool: pool, apiKey: map[string][]string{}}
	t.Cleanup(func() { checkProgressCounts(t, pool) })
	seeded, err := tenantseed.Seed(ctx, pool, root, tenantseed.Options{Count: n,
		APIKeys: func(i int) int { return 1 + i%5 }, APIKeyVersions: 2}) // two versions, to prove all are destroyed
	must(t, err)
	for _, tn := range seeded {
		f.apiKey[tn.ID] = tn.APIKeyPaths
	}
	return f
}

// checkProgressCounts fails the test when the progress counters the
// database keeps (migration 006) differ from a count of the jobs
// themselves, for any incident the test made: every test of the rotator
// (plans, crashes, retries, forged jobs) checks them this way.
func checkProgressCounts(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	rows, err := pool.Query(context.Background(), `WITH counted AS (
		SELECT incident_id, count(*) FILTER (WHERE state = 'pending') AS pending, count(*) FILTER (WHERE state = 'completed') AS completed,
		  count(*) FILTER (WHERE state = 'failed') AS failed, 0 AS pp, 0 AS pc, 0 AS pf FROM rotator.jobs GROUP BY incident_id
		UNION ALL
		SELECT incident_id, 0, 0, 0, count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'completed'),
		  count(*) FILTER (WHERE state = 'failed') FROM rotator.platform_jobs GROUP BY incident_id),
	  want AS (SELECT incident_id, sum(pending) p, sum(completed) c, sum(failed) f, sum(pp) pp, sum(pc) pc, sum(pf) pf FROM counted GROUP BY incident_id)
	SELECT coalesce(w.incident_id, g.incident_id), concat_ws(' ', w.p, w.c, w.f, w.pp, w.pc, w.pf),
	  concat_ws(' ', g.pending, g.completed, g.failed, g.platform_pending, g.platform_completed, g.platform_failed)
	FROM want w FULL JOIN rotator.progress g ON g.incident_id = w.incident_id
	WHERE concat_ws(' ', w.p, w.c, w.f, w.pp, w.pc, w.pf) IS DISTINCT FROM
	  concat_ws(' ', g.pending, g.completed, g.failed, g.platform_pending, g.platform_completed, g.platform_failed)
	  AND NOT (w.incident_id IS NULL AND g.pending = 0 AND g.completed = 0 AND g.failed = 0
	    AND g.platform_pending = 0 AND g.platform_completed = 0 AND g.platform_failed = 0)`)
	if err != nil {
		t.Errorf("progress counters: %v", err)
		return
	}
	var incident, want, got string
	_, err = pgx.ForEachRow(rows, []any{&incident, &want, &got}, func() error {
		t.Errorf("incident %s: jobs count pending/completed/failed/platform %q, the counters say %q", incident, want, got)
		return nil
	})
	if err != nil {
		t.Errorf("progress counters: %v", err)
	}
}

// startRotators runs n rotator processes from the binary `make build` puts
// in .bin, with the stack's rotator credentials; it returns their pids.
func startRotators(t testing.TB, s *localstack.Stack, n int, env ...string) []int {
	t.Helper()
	bin, err := localstack.Service(events.ServiceRotator)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for i := range n {
		pid, _, err := s.Spawn(fmt.Sprintf("rotator-%d", i+1), bin, nil, append(append(s.Env(events.ServiceRotator), "LOCKDOWN_ROTATION_CONCURRENCY=4"), env...))
		must(t, err)
		pids = append(pids, pid)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		// The rotators' own words are the quickest way to a cause.
		for i := range n {
			log, _ := os.ReadFile(filepath.Join(s.Dir, fmt.Sprintf("rotator-%d.log", i+1)))
			t.Logf("rotator-%d log (last 4 KiB):\n%s", i+1, tail(log, 4096))
		}
	})
	return pids
}

// startIncident announces what the planner waits for: the assessment and
// the revoked access.
func startIncident(t testing.TB, ctx context.Context, s *localstack.Stack, id string, affected []string) {
	t.Helper()
	publish := func(user string, name events.Name, data any) {
		conn, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: user, Password: s.NATS.Password(user)})
		must(t, err)
		defer func() { _ = conn.Close(context.Background()) }()
		must(t, stream.NewPublisher(conn.JS, events.SourceOf(user), nil).PublishWithID(ctx, name, id+"/"+string(name), data))
	}
	if affected == nil {
		affected = []string{}
	}
	publish(events.ServiceAssessor, events.AssessmentCompleted, events.AssessmentCompletedData{IncidentID: id, Scope: "limited", AffectedTenants: affected,
		WindowStart: time.Now().Add(-time.Hour), WindowEnd: time.Now()})
	publish(events.ServiceContainment, events.AccessRevoked, events.AccessRevokedData{IncidentID: id})
}

// openIncident announces an incident the way containment does.
func openIncident(t testing.TB, ctx context.Context, s *localstack.Stack, id string) {
	t.Helper()
	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: events.ServiceContainment, Password: s.NATS.Password(events.ServiceContainment)})
	must(t, err)
	defer func() { _ = conn.Close(context.Background()) }()
	must(t, stream.NewPublisher(conn.JS, events.SourceOf(events.ServiceContainment), nil).PublishWithID(ctx, events.IncidentOpened, id+"/incident.opened",
		events.IncidentOpenedData{IncidentID: id, BreachEventID: "b-" + id, DetectedAt: time.Now(), Severity: events.SeverityHigh, Summary: "test"}))
}

func operator(t testing.TB, ctx context.Context, s *localstack.Stack) jetstream.JetStream {
	t.Helper()
	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: events.UserOperator, Password: s.NATS.Password(events.UserOperator)})
	must(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn.JS
}

func awaitCompleted(t testing.TB, ctx context.Context, js jetstream.JetStream, id string) events.RotationCompletedData {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	_, d, err := stream.Await(wctx, js, events.RotationCompleted, func(_ event.Event, d events.RotationCompletedData) bool { return d.IncidentID == id })
	must(t, err)
	return d
}

// TestRotationKilledBetweenWriteAndRecord kills the rotator with SIGKILL
// right after a secret is written to Vault and before it is recorded, in
// several jobs: the retry finds the version its incident wrote and must
// record that version's public parts, not the material it generates anew.
func TestRotationKilledBetweenWriteAndRecord(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	const tenants = 12
	f := seed(t, ctx, tenants)
	js := operator(t, ctx, f.s)
	incident := "inc-adopt"
	// No pre-generation: every attempt generates its own keys, so a
	// recorded fingerprint that is not Vault's shows at once.
	env := []string{"LOCKDOWN_PREGENERATE=false"}
	bin, err := localstack.Service(events.ServiceRotator)
	must(t, err)
	startIncident(t, ctx, f.s, incident, nil)
	// Crash at the 1st, then the 4th, 7th… write of each process: SSH of
	// one job, DKIM of another, SMTP of a third.
	for i, point := range []string{"rotator.job.secret.written:1", "rotator.job.secret.written:3", "rotator.job.secret.written:2"} {
		pid, _, err := f.s.Spawn(fmt.Sprintf("rotator-crash-%d", i), bin, nil, append(f.s.Env(events.ServiceRotator), append(env, "LOCKDOWN_TEST_FAILPOINTS="+point, "LOCKDOWN_ROTATION_CONCURRENCY=1")...))
		must(t, err)
		select {
		case <-f.s.Exited(pid):
		case <-time.After(time.Minute):
			t.Fatalf("the rotator did not reach failpoint %s", point)
		}
	}
	pid, _, err := f.s.Spawn("rotator-final", bin, nil, append(f.s.Env(events.ServiceRotator), env...))
	must(t, err)
	defer func() { _ = f.s.Kill(pid) }()
	done := awaitCompleted(t, ctx, js, incident)
	if done.Completed != tenants || done.Failed != 0 {
		t.Fatalf("rotation.completed %+v, want %d completed", done, tenants)
	}
	checkRotatedOnce(t, ctx, f, js, incident, tenants)
}

// TestRotation rotates 200 tenants with three rotator processes, one of
// which is killed with SIGKILL mid-run.
func TestRotation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	const tenants = 200
	f := seed(t, ctx, tenants)
	pids := startRotators(t, f.s, 3)
	js := operator(t, ctx, f.s)
	incident := "inc-rotation"
	startIncident(t, ctx, f.s, incident, nil)

	testwait.For(t, 2*time.Minute, "a quarter of the tenants", func() bool {
		var n int
		err := f.pool.QueryRow(ctx, `SELECT count(*) FROM rotator.jobs WHERE incident_id = $1 AND state = 'completed'`, incident).Scan(&n)
		return err == nil && n >= tenants/4
	})
	must(t, syscall.Kill(pids[0], syscall.SIGKILL))

	done := awaitCompleted(t, ctx, js, incident)
	if done.Completed != tenants || done.Failed != 0 {
		t.Fatalf("rotation.completed %+v, want %d completed", done, tenants)
	}
	checkRotatedOnce(t, ctx, f, js, incident, tenants)
}

// checkRotatedOnce proves the incident rotated each of the first n tenants
// exactly once: n rotation.tenant.completed events, one new version of
// each secret carrying the incident, the recorded SSH fingerprint and DKIM
// record those of the private keys Vault holds, and no API key left in any
// form.
func checkRotatedOnce(t *testing.T, ctx context.Context, f *fixture, js jetstream.JetStream, incident string, n int) {
	t.Helper()
	info, err := js.Stream(ctx, events.StreamEvents)
	must(t, err)
	si, err := info.Info(ctx, jetstream.WithSubjectFilter(events.RotationTenantCompleted.Subject()))
	must(t, err)
	if got := si.State.Subjects[events.RotationTenantCompleted.Subject()]; got != uint64(n) {
		t.Fatalf("%d rotation.tenant.completed events, want exactly %d", got, n)
	}
	kv := f.root.KVv2("secret")
	for i := range n {
		id := tenantseed.ID(i)
		for _, secret := range []string{"ssh", "smtp", "dkim"} {
			meta, err := kv.GetMetadata(ctx, "tenants/"+id+"/"+secret)
			must(t, err)
			latest, err := kv.Get(ctx, "tenants/"+id+"/"+secret)
			must(t, err)
			if meta.CurrentVersion != 2 || latest.Data["lockdown_incident"] != incident {
				t.Fatalf("%s/%s: version %d, incident %v: want exactly one new version carrying %s", id, secret, meta.CurrentVersion, latest.Data["lockdown_incident"], incident)
			}
			var recorded struct{ Fingerprint, Record string }
			must(t, f.pool.QueryRow(ctx, `SELECT coalesce(steps->$3->>'fingerprint', ''), coalesce(steps->$3->>'record', '') FROM rotator.jobs
				WHERE incident_id = $1 AND tenant_id = $2`, incident, id, secret).Scan(&recorded.Fingerprint, &recorded.Record))
			priv, _ := latest.Data["private_key"].(string)
			switch secret {
			case "ssh":
				if err := keycheck.MatchSSH(priv, recorded.Fingerprint); err != nil {
					t.Fatalf("%s: the recorded SSH fingerprint is not Vault's key: %v", id, err)
				}
			case "dkim":
				if err := keycheck.MatchDKIM(priv, recorded.Record); err != nil {
					t.Fatalf("%s: the recorded DKIM record is not Vault's key: %v", id, err)
				}
			}
		}
		for _, p := range f.apiKey[id] {
			if _, err := kv.GetMetadata(ctx, p); err == nil || !strings.Contains(err.Error(), "not found") {
				t.Fatalf("%s survived (%v)", p, err)
			}
		}
	}
}

// TestUnknownTenant plans a tenant the directory lacks (the assessment
// named it): it fails with a dead letter, the others complete.
func TestUnknownTenant(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	f := seed(t, ctx, 5)
	startRotators(t, f.s, 1)
	js := operator(t, ctx, f.s)
	testwait.For(t, time.Minute, "the rotator watching incidents", func() bool {
		log, _ := os.ReadFile(filepath.Join(f.s.Dir, "rotator-1.log"))
		return strings.Contains(string(log), `"msg":"watching incidents for pre-generation"`)
	})
	// The incident opens first: while it waits at the gate the rotator
	// pre-generates the directory's key material, which the jobs then use.
	openIncident(t, ctx, f.s, "inc-ghost")
	testwait.For(t, time.Minute, "pre-generation", func() bool {
		log, _ := os.ReadFile(filepath.Join(f.s.Dir, "rotator-1.log"))
		if testing.Verbose() && strings.Contains(string(log), "pre-generated") {
			t.Log(string(log))
		}
		return strings.Contains(string(log), `"msg":"key material pre-generated","service":"rotator","incident_id":"inc-ghost","tenants":5`)
	})
	startIncident(t, ctx, f.s, "inc-ghost", []string{"tenant-001", "ghost"})
	done := awaitCompleted(t, ctx, js, "inc-ghost")
	if done.Completed != 5 || done.Failed != 1 {
		t.Fatalf("rotation.completed %+v, want 5 completed and 1 failed", done)
	}
	wctx, cancel2 := context.WithTimeout(ctx, 30*time.Second)
	defer cancel2()
	_, failed, err := stream.Await(wctx, js, events.RotationTenantFailed, func(_ event.Event, d events.RotationTenantFailedData) bool { return d.TenantID == "ghost" })
	must(t, err)
	if !strings.Contains(failed.Reason, "not in the directory") {
		t.Fatalf("reason %q", failed.Reason)
	}
	dls, err := js.Stream(ctx, events.StreamDeadLetters)
	must(t, err)
	di, err := dls.Info(ctx, jetstream.WithSubjectFilter(events.DeadLetterSubject(events.ConsumerRotatorJobs)))
	must(t, err)
	if di.State.Subjects[events.DeadLetterSubject(events.ConsumerRotatorJobs)] != 1 {
		t.Fatalf("dead letters %v", di.State.Subjects)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestVaultSealedMidRun seals Vault while jobs run: they back off and
// finish once it is unsealed, and none is marked failed for it.
func TestVaultSealedMidRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	const tenants = 60
	f := seed(t, ctx, tenants)
	startRotators(t, f.s, 1)
	js := operator(t, ctx, f.s)
	startIncident(t, ctx, f.s, "inc-sealed", nil)
	testwait.For(t, 2*time.Minute, "the first tenants", func() bool {
		var n int
		err := f.pool.QueryRow(ctx, `SELECT count(*) FROM rotator.jobs WHERE incident_id = 'inc-sealed' AND state = 'completed'`).Scan(&n)
		return err == nil && n >= 5
	})
	must(t, f.root.Sys().SealWithContext(ctx))
	// Let the workers meet the sealed Vault, then unseal as the key holders would.
	var stuck int
	testwait.For(t, 30*time.Second, "jobs to be retried against the sealed Vault", func() bool {
		err := f.pool.QueryRow(ctx, `SELECT count(*) FROM rotator.jobs WHERE incident_id = 'inc-sealed' AND state = 'pending'`).Scan(&stuck)
		return err == nil && stuck > 0
	})
	// Vault stays sealed until the rotator has met it and scheduled retries.
	testwait.For(t, 30*time.Second, "the rotator to back off", func() bool {
		log, _ := os.ReadFile(filepath.Join(f.s.Dir, "rotator-1.log"))
		return strings.Count(string(log), "transient failure; retrying later") >= 2
	})
	must(t, f.s.Vault.Unseal(ctx))
	done := awaitCompleted(t, ctx, js, "inc-sealed")
	if done.Completed != tenants || done.Failed != 0 {
		t.Fatalf("rotation.completed %+v, want all %d completed and none failed", done, tenants)
	}
}

// tail returns the last n bytes of b.
func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
