package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
	"github.com/lockdown/lockdown/pkg/platform/runner"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/pkg/platform/telemetry"
	"github.com/lockdown/lockdown/pkg/platform/vaulttoken"
	"github.com/lockdown/lockdown/services/containment/internal/app"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
	"github.com/lockdown/lockdown/services/containment/internal/store"
	"github.com/lockdown/lockdown/services/containment/internal/vaultnodes"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/testwait"
)

// Secrets the intake is configured with in tests; the log check looks for them.
const (
	testHMACKey     = "intake-hmac-key-7f3a9c"
	testBearerToken = "intake-bearer-token-51d2e8"
)

// syncBuffer collects a service's JSON log lines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fullStack runs what containment's recovery needs: NATS with Lockdown's
// users, PostgreSQL and a real Vault; it is closed with the test.
func fullStack(t testing.TB, ctx context.Context) *localstack.Stack {
	t.Helper()
	s := localstack.StartTest(t, ctx, localstack.Options{NATS: true, NATSAuth: true, Postgres: true, Vault: true})
	return s
}

// running is one containment instance started by a test.
type running struct {
	logs   *syncBuffer
	tel    *telemetry.Telemetry
	intake string
	stop   func()
	// metrics reads the instance's OTel metrics (enginePasses).
	metrics *sdkmetric.ManualReader
}

// startContainment runs containment in-process against the stack, as the
// containment NATS user, with the seal-only token and the real store.
// nodes and fencer default to the stack's single Vault. The caller stops it
// (stop is idempotent).
func startContainment(t testing.TB, s *localstack.Stack, nodes []string, tokens *localstack.LockdownTokens, fencer incident.Fencer, tune func(*app.Config)) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	tel, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: events.ServiceContainment, LogOutput: logs, OTLPEndpoint: jaegerEndpoint(s)})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := natsconn.Connect(ctx, natsconn.Options{URL: s.NATS.URL, User: events.ServiceContainment,
		Password: s.NATS.Password(events.ServiceContainment), Name: "containment-test", Logger: tel.Logger})
	if err != nil {
		t.Fatal(err)
	}
	// What the runner does at start, with containment's own permissions.
	if err := stream.VerifyTopology(ctx, conn.JS, events.ServiceContainment); err != nil {
		t.Fatal(err)
	}
	if nodes == nil {
		nodes, tokens = []string{s.Vault.Addr}, &s.Vault.LockdownTokens
	}
	root, err := localstack.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &app.Config{
		Common:            config.Common{ShutdownTimeout: 5 * time.Second},
		DatabaseURL:       s.Postgres.URL,
		BreachConcurrency: 4, VaultAddrs: nodes, VaultSealTokenFile: tokens.SealFile, VaultTimeout: 2 * time.Second,
		VaultRecoveryTokenFile: tokens.RecoveryFile, RotatorTokenFile: tokens.RotatorFile, DisableAuth: []string{"approle", "jwt"},
		BreakGlass:  []string{tokens.RootAccessor},
		RekeyShares: 5, RekeyThreshold: 3, RekeyRequireVerification: true, RekeyPoll: 50 * time.Millisecond,
		AuthDir: filepath.Join(root, "deploy", "vault", "auth"), VaultBaseline: tokens.BaselineFile,
		VaultPolicyDir: filepath.Join(root, "deploy", "vault", "policies"),
		SealDeadline:   10 * time.Second, SealPoll: 10 * time.Millisecond, FenceRetry: 15 * time.Second, GatePoll: 50 * time.Millisecond,
		IntakeAddr: freeAddr(t), IntakeHMACKey: testHMACKey, IntakeBearerTokens: []string{testBearerToken}, IntakeMaxSkew: 5 * time.Minute, IntakeMaxBody: 65536,
		AutoSealSeverities: []string{"critical", "high"},
		FenceTimeout:       30 * time.Second,
	}
	if tune != nil {
		tune(cfg)
	}
	db, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	va, err := cfg.VaultAdapters()
	if err != nil {
		t.Fatal(err)
	}
	if fencer == nil {
		fencer = vaultnodes.CommandFencer{}
	}
	done := make(chan error, 1)
	metrics := sdkmetric.NewManualReader()
	go func() {
		rt := runner.NewRuntime(events.ServiceContainment, tel.Logger, tel.TracerProvider, sdkmetric.NewMeterProvider(sdkmetric.WithReader(metrics)), conn)
		done <- app.Serve(ctx, rt, cfg, app.Adapters{Store: db, Vault: va.Nodes, Fencer: fencer, Admin: va.Admin, VaultLog: va.Admin,
			OwnTokens: va.Own, NotReplaceable: va.NotReplaceable, TokenSources: []*vaulttoken.Source{va.Seal, va.Recovery}})
	}()
	r := &running{logs: logs, tel: tel, intake: "http://" + cfg.IntakeAddr, metrics: metrics}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("containment's log:\n%s", logs.String())
		}
	})
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("containment: %v", err)
			}
			_ = conn.Close(context.Background())
			db.Close()
			flush, c := context.WithTimeout(context.Background(), 10*time.Second)
			defer c()
			_ = tel.Shutdown(flush)
		})
	}
	waitHTTP(t, r.intake)
	return r
}

// enginePasses reads how many passes over the open incidents the
// instance's engine has made (lockdown.engine.passes).
func (r *running) enginePasses(t testing.TB) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.metrics.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "lockdown.engine.passes" {
				var n int64
				for _, p := range sum.DataPoints {
					n += p.Value
				}
				return n
			}
		}
	}
	return 0
}

// awaitPasses waits until the engine has made n whole passes over the open
// incidents after the call: whatever was recorded before it has then been
// seen by the engine at least n-1 times. It is the barrier of every check
// that something did not happen.
func (r *running) awaitPasses(t testing.TB, n int64) {
	t.Helper()
	from := r.enginePasses(t)
	testwait.For(t, 30*time.Second, fmt.Sprintf("%d engine passes", n), func() bool { return r.enginePasses(t) >= from+n })
}

func jaegerEndpoint(s *localstack.Stack) string {
	if s.Jaeger == nil {
		return ""
	}
	return s.Jaeger.OTLPHTTPEndpoint
}

// freeAddr reserves a free loopback address for the intake.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// waitHTTP waits until the intake accepts connections.
func waitHTTP(t testing.TB, base string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/healthz-probe")
		if err == nil {
			_ = resp.Body.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("intake %s not listening", base)
}

// connectAs opens a plain NATS connection as one of deploy/nats's users;
// permission violations are sent to errs.
func connectAs(t testing.TB, s *localstack.Stack, user string) (*nats.Conn, <-chan error) {
	t.Helper()
	errs := make(chan error, 8)
	nc, err := nats.Connect(s.NATS.URL, nats.UserInfo(user, s.NATS.Password(user)), nats.CustomInboxPrefix(events.InboxPrefix(user)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

// publishAsSIEM publishes a breach the way a SIEM does with `nats pub`: a
// structured CloudEvent on plain NATS, optionally with extra headers.
func publishAsSIEM(t testing.TB, nc *nats.Conn, ev event.Event, headers map[string]string) {
	t.Helper()
	body, err := events.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(events.BreachDetected.Subject())
	msg.Data = body
	for k, v := range headers {
		msg.Header.Set(k, v)
	}
	if err := nc.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func newBreach(t testing.TB, summary string) event.Event {
	t.Helper()
	ev, err := events.New(events.BreachDetected, "/siem/test", events.BreachDetectedData{
		Summary: summary, Severity: events.SeverityCritical, Indicators: []string{"ip:203.0.113.7"}})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// waitEvent reads the events stream (as the operator) until an event of
// the given name matches, or fails the test.
func waitEvent[T any](t testing.TB, s *localstack.Stack, name events.Name, timeout time.Duration, match func(T) bool) (event.Event, T) {
	t.Helper()
	nc, _ := connectAs(t, s, events.UserOperator)
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ev, data, err := stream.Await(ctx, js, name, func(_ event.Event, d T) bool { return match(d) })
	if err != nil {
		t.Fatalf("no matching %s within %s: %v", name, timeout, err)
	}
	return ev, data
}

// countEvents counts the stored events of name that match, reading the
// events stream up to its last message; a reader that cannot read the
// stream fails the test (a count of zero must mean none were stored).
func countEvents[T any](t testing.TB, s *localstack.Stack, name events.Name, match func(T) bool) int {
	t.Helper()
	nc, _ := connectAs(t, s, events.UserOperator)
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spec := events.SpecOf(name)
	n := 0
	err = stream.Scan(ctx, js, spec.Stream, spec.FilterSubject(), false, func(m *jetstream.RawStreamMsg) bool {
		ev, _, err := events.Decode(m.Header, m.Data)
		if err != nil {
			t.Errorf("stored %s that does not decode: %v", name, err)
			return true
		}
		d, err := events.DataAs[T](ev)
		if err != nil {
			t.Errorf("stored %s whose data does not decode: %v", name, err)
			return true
		}
		if match(d) {
			n++
		}
		return true
	})
	if err != nil {
		t.Fatalf("count %s: %v", name, err)
	}
	return n
}

// sealed reads a node's seal status with no token, as `vault status` does.
func sealed(t testing.TB, addr string) bool {
	t.Helper()
	resp, err := http.Get(addr + "/v1/sys/seal-status")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var st struct {
		Sealed bool `json:"sealed"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st.Sealed
}

// resolveOpen ends the open incident so the next test opens its own.
func resolveOpen(t testing.TB, s *localstack.Stack) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, s.Postgres.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if inc, err := db.OpenIncident(ctx); err == nil {
		if err := db.Resolve(ctx, inc.ID, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
}

// assertNoSecrets fails if any secret of the stack or the intake reached a log.
func assertNoSecrets(t testing.TB, logs string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("a secret (%d chars, starting %q) appears in the log", len(s), s[:min(3, len(s))])
		}
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
