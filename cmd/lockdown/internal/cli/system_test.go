package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/readmodel"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/tenantseed"
	"github.com/lockdown/lockdown/testkit/testwait"
)

// system is the whole of Lockdown on a local stack, its services running
// as processes the test can SIGKILL and restart: the harness of the
// worst-day tests.
type system struct {
	t     *testing.T
	ctx   context.Context
	stack *localstack.Stack
	bin   string
	// directory reaches the platform's tenant directory (the platform's
	// data, which a test changes as the platform would); no test reads a
	// Lockdown service's tables.
	directory *pgxpool.Pool
	op        *natsconn.Conn // the operator's connection: reads streams

	mu    sync.Mutex
	procs map[string]*sysProc
	// holdersAway keeps the key holders from unsealing (a test holding
	// Vault sealed for an outage).
	holdersAway atomic.Bool
	// relayStops counts the SMTP relay's stops (TestChaos: each is a
	// window for the same message twice).
	relayStops atomic.Int32
	// rm reads the incidents' documents (document), opened on first use.
	rm *stream.ReadModel
}

// sysProc is one service process; restarts counts how often it was
// started again after it died.
type sysProc struct {
	name, service string
	env           []string
	pid           int
	restarts      int
	// health is its /healthz and /readyz address: what the tests know of
	// a service's state beyond the events (no test reads its tables).
	health string
	// respawn: start it again (without its failpoints) when it dies.
	respawn bool
}

// newSystem starts the stack and seeds tenants; services are started by
// the test (start).
func newSystem(t *testing.T, timeout time.Duration, tenants int) *system {
	t.Helper()
	return newSystemWith(t, timeout, tenants, localstack.All())
}

// newSystemWith is newSystem on a stack with other options (a NATS
// cluster).
func newSystemWith(t *testing.T, timeout time.Duration, tenants int, opts localstack.Options) *system {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	// LOCKDOWN_TEST_KEEP=1 keeps the stack's folder (every server's and
	// service's log) for a failed run to be read.
	opts.KeepDir = os.Getenv("LOCKDOWN_TEST_KEEP") != ""
	stack, err := localstack.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if opts.KeepDir {
			t.Logf("stack folder kept: %s", stack.Dir)
		}
		// The context first: a respawning watcher must see the test over
		// before the stack's close kills its process.
		cancel()
		_ = stack.Close()
	})
	bin, err := localstack.ServiceDir()
	if err != nil {
		t.Fatal(err)
	}
	s := &system{t: t, ctx: ctx, stack: stack, bin: bin, procs: map[string]*sysProc{}}
	if s.directory, err = pgxpool.New(ctx, stack.Postgres.URL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.directory.Close)
	if s.op, err = natsconn.Connect(ctx, natsconn.Options{URL: stack.NATS.URL, User: events.UserOperator, Password: stack.NATS.Password(events.UserOperator)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.op.Close(context.Background()) })
	if tenants > 0 {
		root, err := stack.Vault.Client()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tenantseed.SeedURL(ctx, stack.Postgres.URL, root, tenantseed.Options{Count: tenants}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// start runs a service process under name with extra environment (which
// may arm failpoints). With respawn, the process is started again — with
// the same environment minus the failpoints — whenever it dies.
func (s *system) start(name, service string, respawn bool, env ...string) {
	s.t.Helper()
	p := &sysProc{name: name, service: service, env: env, respawn: respawn}
	s.mu.Lock()
	s.procs[name] = p
	s.mu.Unlock()
	if err := s.launch(p, env); err != nil {
		s.t.Fatal(err)
	}
}

// launch spawns the process and, with respawn, watches it. It is called
// from the test's goroutine (start) and from the watcher's: it reports
// instead of failing the test.
func (s *system) launch(p *sysProc, extra []string) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	health := l.Addr().String()
	_ = l.Close() // reserved for the process, which binds it at start
	env := append(s.stack.Env(p.service), extra...)
	pid, _, err := s.stack.Spawn(p.name, filepath.Join(s.bin, p.service), nil, append(env, "LOCKDOWN_HEALTH_ADDR="+health))
	if err != nil {
		return err
	}
	s.mu.Lock()
	p.pid, p.health = pid, health
	s.mu.Unlock()
	exited := s.stack.Exited(pid)
	go func() {
		select {
		case <-exited:
		case <-s.ctx.Done():
			return
		}
		s.mu.Lock()
		again := p.respawn && p.pid == pid && s.ctx.Err() == nil
		if again {
			p.restarts++
		}
		s.mu.Unlock()
		if again {
			if err := s.launch(p, withoutFailpoints(p.env)); err != nil && s.ctx.Err() == nil {
				s.t.Errorf("respawning %s: %v", p.name, err)
			}
		}
	}()
	return nil
}

func withoutFailpoints(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "LOCKDOWN_TEST_FAILPOINTS=") })
}

// kill SIGKILLs a service process (it is respawned if it was started so).
func (s *system) kill(name string) {
	s.t.Helper()
	s.mu.Lock()
	pid := s.procs[name].pid
	s.mu.Unlock()
	if err := s.stack.Kill(pid); err != nil {
		s.t.Fatal(err)
	}
}

// restarts tells how often a process was started again after it died.
func (s *system) restarts(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.procs[name].restarts
}

// startAll starts the four services (one of each), respawned when they
// die; env adds to one service's environment ("containment=…").
func (s *system) startAll(env map[string][]string) {
	for _, svc := range []string{events.ServiceContainment, events.ServiceAssessor, events.ServiceRotator, events.ServiceNotifier} {
		s.start(svc, svc, true, env[svc]...)
	}
	s.waitLeader()
}

// waitLeader waits until a containment process says it leads (its
// /readyz "engine" info) and returns its process name.
func (s *system) waitLeader() string {
	s.t.Helper()
	return s.waitLeaderOtherThan("")
}

// waitLeaderOtherThan waits until a containment process other than the
// named one leads, and returns its process name.
func (s *system) waitLeaderOtherThan(not string) string {
	s.t.Helper()
	var leader string
	testwait.For(s.t, time.Minute, "a containment leader", func() bool {
		for _, p := range s.procsOf(events.ServiceContainment) {
			if engine, ok := s.info(p)["engine"]; ok {
				if name, leads := strings.CutPrefix(engine, "leader "); leads && name != not {
					leader = name
					return true
				}
			}
		}
		return false
	})
	return leader
}

// outboxPending is what the first answering process of the service says
// its outbox holds (/readyz info outbox_pending; "no answer" when none
// answers).
func (s *system) outboxPending(service string) string {
	for _, p := range s.procsOf(service) {
		if n, answered := s.info(p)["outbox_pending"]; answered {
			return n
		}
	}
	return "no answer"
}

// procsOf lists the started processes of a service.
func (s *system) procsOf(service string) []*sysProc {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*sysProc
	for _, p := range s.procs {
		if p.service == service {
			out = append(out, p)
		}
	}
	return out
}

// info reads a process's /readyz "info" (nil when it does not answer:
// dead, or still starting).
func (s *system) info(p *sysProc) map[string]string {
	s.mu.Lock()
	addr := p.health
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(s.ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return nil
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer func() { _ = resp.Body.Close() }()
	var body struct {
		Info map[string]string `json:"info"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return nil
	}
	return body.Info
}

// breach publishes a breach as the SIEM does and returns its event id.
func (s *system) breach(summary string) string {
	s.t.Helper()
	conn, err := natsconn.Connect(s.ctx, natsconn.Options{URL: s.stack.NATS.URL, User: events.UserSIEM, Password: s.stack.NATS.Password(events.UserSIEM)})
	if err != nil {
		s.t.Fatal(err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	ev, err := stream.NewPublisher(conn.JS, "/siem/test", nil).Publish(s.ctx, events.BreachDetected,
		events.BreachDetectedData{Summary: summary, Severity: events.SeverityCritical})
	if err != nil {
		s.t.Fatal(err)
	}
	return ev.ID()
}

// await waits for an event of the incident (or matching) in the stream.
func await[T any](s *system, name events.Name, timeout time.Duration, match func(T) bool) T {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	_, d, err := stream.Await(ctx, s.op.JS, name, func(_ event.Event, d T) bool { return match(d) })
	if err != nil {
		s.t.Fatalf("no %s within %s: %v", name, timeout, err)
	}
	return d
}

// incidentOf waits for the incident one of the breaches opened (the
// incident.opened that names it). A re-detection recorded before the
// breach that sealed opens the incident and is named there; the document's
// opened_by_event then names the breach (TestPostgresOutage).
func (s *system) incidentOf(eventIDs ...string) string {
	s.t.Helper()
	return await(s, events.IncidentOpened, 5*time.Minute, func(d events.IncidentOpenedData) bool { return slices.Contains(eventIDs, d.BreachEventID) }).IncidentID
}

// runIncident plays a whole incident after a breach: the key holders
// unseal, then follow the ceremony as `lockdown status` shows it — when
// Lockdown opens a new ceremony (one it could not prove completed, or one
// Vault cleared), they run that one too — and it waits for the end.
func (s *system) runIncident(eventID string) (string, events.IncidentResolvedData) {
	s.t.Helper()
	return s.runOpened(s.incidentOf(eventID))
}

// runOpened is runIncident for an incident already known.
func (s *system) runOpened(id string) (string, events.IncidentResolvedData) {
	s.t.Helper()
	await(s, events.VaultSealed, 5*time.Minute, func(d events.VaultSealedData) bool { return d.IncidentID == id })
	if err := s.stack.Vault.Unseal(s.ctx); err != nil {
		s.t.Fatal(err)
	}
	return id, s.holdersUntilResolved(id)
}

// holdersUntilResolved plays the key holders until the incident resolves.
func (s *system) holdersUntilResolved(id string) events.IncidentResolvedData {
	s.t.Helper()
	holders, stop := context.WithCancel(s.ctx)
	done := make(chan struct{})
	go func() { defer close(done); s.playHolders(holders, id) }()
	resolved := await(s, events.IncidentResolved, 8*time.Minute, func(d events.IncidentResolvedData) bool { return d.IncidentID == id })
	stop()
	<-done
	return resolved
}

// playHolders unseals Vault whenever Lockdown (or an outage) sealed it and
// runs every ceremony the incident opens, until ctx ends.
func (s *system) playHolders(ctx context.Context, id string) {
	played := ""
	for ctx.Err() == nil {
		if !s.holdersAway.Load() && s.sealedNow() {
			if err := s.stack.Vault.Unseal(ctx); err != nil && ctx.Err() == nil {
				s.t.Logf("key holders: unseal: %v", err)
			}
		}
		c, err := s.ceremony(id)
		nonce, phase := c.Nonce, c.Phase
		if err == nil && nonce != "" && nonce != played && phase == "collecting_current_shares" {
			played = nonce
			if err := s.stack.Vault.PlayRekey(ctx, nonce, time.Second); err != nil && ctx.Err() == nil {
				s.t.Logf("key holders: ceremony %s: %v", nonce, err)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// eventCounts reads every event of an incident in the events stream and
// counts them by type (and the ids seen twice, which must never happen).
func (s *system) eventCounts(incidentID string) (map[events.Name]int, []string) {
	s.t.Helper()
	counts, seen := map[events.Name]int{}, map[string]bool{}
	var twice []string
	for _, ev := range s.incidentEvents(incidentID) {
		if seen[ev.ID()] {
			twice = append(twice, ev.ID())
		}
		seen[ev.ID()] = true
		spec, _ := events.Lookup(ev.Type())
		counts[spec.Name]++
	}
	return counts, twice
}

// incidentEvents reads every event of the incident in the events stream,
// in stream order (a duplicate publish shows twice).
func (s *system) incidentEvents(incidentID string) []event.Event {
	s.t.Helper()
	var out []event.Event
	s.scanEvents(">", func(ev event.Event) {
		if strings.Contains(string(ev.Data()), incidentID) {
			out = append(out, ev)
		}
	})
	return out
}

// scanEvents reads every stored event on subject (wildcards allowed) in
// stream order, as the operator (no consumer: readers may not create
// one). A JetStream cluster whose node was just restarted can fail a read
// while its stream leader settles: the scan is tried again for a minute
// rather than a short read taken for the whole.
func (s *system) scanEvents(subject string, each func(event.Event)) {
	s.t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		var got []event.Event
		err := stream.Scan(s.ctx, s.op.JS, events.StreamEvents, subject, false, func(m *jetstream.RawStreamMsg) bool {
			if ev, _, err := events.Decode(m.Header, m.Data); err == nil {
				got = append(got, ev)
			}
			return true
		})
		if err == nil {
			for _, ev := range got {
				each(ev)
			}
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatal(err)
		}
	}
}

// awaitHandled waits until the durable consumer has acknowledged every
// stored event of the incident with one of the names: the service has
// handled them (a handler acknowledges only when done). It is the barrier
// of a check that their handling changed nothing.
func (s *system) awaitHandled(durable, incidentID string, names ...events.Name) {
	s.t.Helper()
	var last uint64
	for _, name := range names {
		spec := events.SpecOf(name)
		err := stream.Scan(s.ctx, s.op.JS, spec.Stream, spec.FilterSubject(), false, func(m *jetstream.RawStreamMsg) bool {
			if strings.Contains(string(m.Data), incidentID) {
				last = max(last, m.Sequence)
			}
			return true
		})
		if err != nil {
			s.t.Fatal(err)
		}
	}
	if last == 0 {
		s.t.Fatalf("no %v stored for incident %s", names, incidentID)
	}
	spec, ok := events.ConsumerOf(durable)
	if !ok {
		s.t.Fatalf("no consumer %s", durable)
	}
	testwait.For(s.t, 2*time.Minute, fmt.Sprintf("%s to handle stream message %d", durable, last), func() bool {
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		defer cancel()
		cons, err := s.op.JS.Consumer(ctx, spec.Stream, durable)
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && info.AckFloor.Stream >= last
	})
	// What the handlers committed is published by the outbox relay after
	// the acknowledgement: wait for it too (the services without an
	// outbox publish before they acknowledge).
	if spec.Service == events.ServiceContainment || spec.Service == events.ServiceRotator {
		testwait.For(s.t, time.Minute, spec.Service+"'s outbox to be published", func() bool { return s.outboxPending(spec.Service) == "0" })
	}
}

// settled waits until no declared consumer has a message pending or
// unacknowledged and both outboxes are empty (the services' /readyz):
// nothing is left behind.
func (s *system) settled() {
	s.t.Helper()
	var last string
	ok := false
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) && !ok {
		ok, last = true, ""
		for _, c := range events.Consumers() {
			// Bounded: see deadLetters.
			ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
			cons, err := s.op.JS.Consumer(ctx, c.Stream, c.Durable)
			if err != nil {
				cancel()
				ok, last = false, err.Error()
				break
			}
			info, err := cons.Info(ctx)
			cancel()
			if err != nil || info.NumPending > 0 || info.NumAckPending > 0 {
				ok, last = false, fmt.Sprintf("%s: %d pending, %d unacknowledged (%v)", c.Durable, info.NumPending, info.NumAckPending, err)
				break
			}
		}
		// Every committed event published: the outboxes are empty, as the
		// services' /readyz says (any live process of the schema's service).
		for _, service := range []string{events.ServiceContainment, events.ServiceRotator} {
			if pending := s.outboxPending(service); pending != "0" {
				ok, last = false, fmt.Sprintf("%s's outbox: %s pending", service, pending)
			}
		}
		if !ok {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if !ok {
		s.t.Fatalf("not settled: %s", last)
	}
}

// deadLetters counts the dead letters in the stream. Each request is
// bounded and asked again: on a cluster whose stream leader was just
// killed, a JetStream API reply is now and then lost, and a request under
// the test's long context would wait for it for good.
func (s *system) deadLetters() int {
	s.t.Helper()
	var last error
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		st, err := s.op.JS.Stream(ctx, events.StreamDeadLetters)
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = st.Info(ctx)
		}
		cancel()
		if err == nil {
			return int(info.State.Msgs)
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	s.t.Fatalf("dead-letter stream: %v", last)
	return 0
}

// sealedNow reads the stack Vault's seal status without a token.
func (s *system) sealedNow() bool {
	resp, err := http.Get(s.stack.Vault.Addr + "/v1/sys/seal-status")
	if err != nil {
		return false
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return strings.Contains(string(b), `"sealed":true`)
}

// report waits up to a minute for the incident's final report in the read
// model.
func (s *system) report(id string) (report.Report, error) {
	ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
	defer cancel()
	return StoredReport(ctx, s.operator(), id)
}

// operator is the stack's operator identity (the read model's reader).
func (s *system) operator() NATS {
	return NATS{URL: s.stack.NATS.URL, User: events.UserOperator, Password: s.stack.NATS.Password(events.UserOperator)}
}

// asOperator is a CLI command line run as the operator against the test's
// stack: the connection in flags and the password in a file, not in the
// process's environment, which tests running in parallel share.
func (s *system) asOperator(args ...string) []string {
	s.t.Helper()
	path := filepath.Join(s.t.TempDir(), "operator-password")
	must(s.t, os.WriteFile(path, []byte(s.stack.NATS.Password(events.UserOperator)), 0o600))
	return append(args, "--nats-url", s.stack.NATS.URL, "--nats-password-file", path)
}

// document reads the incident's document from the read model, as the
// operator's CLI does (zero before containment wrote one).
func (s *system) document(id string) (readmodel.Incident, error) {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	s.mu.Lock()
	rm := s.rm
	s.mu.Unlock()
	if rm == nil {
		var err error
		if rm, err = stream.OpenReadModel(ctx, s.op.JS); err != nil {
			return readmodel.Incident{}, err
		}
		s.mu.Lock()
		s.rm = rm
		s.mu.Unlock()
	}
	doc, err := rm.Incident(ctx, id)
	if errors.Is(err, stream.ErrNoIncident) {
		return readmodel.Incident{}, nil
	}
	return doc, err
}

// ceremony reads the incident's rekey ceremony from the read model.
func (s *system) ceremony(id string) (readmodel.Ceremony, error) {
	doc, err := s.document(id)
	if err != nil || doc.Recovery == nil {
		return readmodel.Ceremony{}, err
	}
	return doc.Recovery.Ceremony, nil
}

// nonce reads the rekey ceremony's nonce from the read model (waiting up
// to 10 s for the ceremony to open).
func (s *system) nonce(id string) (string, error) {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	rm, err := OpenReadModel(ctx, s.operator())
	if err != nil {
		return "", err
	}
	defer rm.Close()
	return CeremonyNonce(ctx, rm, id)
}
