// Package runner is the skeleton of every Lockdown service process: load and
// validate the config, set up telemetry, connect to NATS and make sure the
// JetStream topology exists, run the service until SIGINT/SIGTERM, then
// drain gracefully. A service's main.go is one call to Main.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/pkg/platform/health"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
	"github.com/lockdown/lockdown/pkg/platform/stream"
	"github.com/lockdown/lockdown/pkg/platform/telemetry"
	"github.com/lockdown/lockdown/pkg/platform/unavailable"
)

// Configurable is a service config struct: it embeds config.Common.
type Configurable interface {
	Base() config.Common
}

// Runtime is what the runner hands a service.
type Runtime struct {
	Service        string
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	// MeterProvider receives the service's metrics (nil: none).
	MeterProvider metric.MeterProvider
	// Health holds the readiness checks served on LOCKDOWN_HEALTH_ADDR;
	// the runner registers NATS and the service's consumers, services add
	// PostgreSQL and Vault.
	Health *health.Server
	NATS   *natsconn.Conn

	// waits are the dependencies the service's consumers wait for now
	// (durable → why), for readiness.
	waitsMu sync.Mutex
	waits   map[string]string
	// poisonCount and lastPoison are the messages given up as poison.
	poisonCount int
	lastPoison  string
}

// Main runs a service and exits the process: 0 after a clean shutdown, 1
// when the service failed, 2 when the configuration is invalid.
func Main[C Configurable](service string, run func(ctx context.Context, rt *Runtime, cfg C) error) {
	if len(os.Args) == 2 && os.Args[1] == "healthcheck" {
		// The images have no shell or curl: the binary probes itself
		// (docker-compose.yml's healthcheck).
		os.Exit(Healthcheck(os.Getenv(config.Prefix+"HEALTH_ADDR"), os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := Run(ctx, service, os.Stderr, run)
	stop()
	os.Exit(code)
}

// Run is Main without the exit, for tests: it returns the exit code.
func Run[C Configurable](ctx context.Context, service string, logOut io.Writer, run func(ctx context.Context, rt *Runtime, cfg C) error) int {
	// C is a pointer to the service's config struct.
	cfg := newConfig[C]()
	if err := config.Load(cfg); err != nil {
		stderrf(logOut, "%s: %v\n", service, err)
		return 2
	}
	base := cfg.Base()
	level, _ := base.SlogLevel() // validated by Load
	tel, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: service, LogOutput: logOut, LogLevel: level})
	if err != nil {
		stderrf(logOut, "%s: %v\n", service, err)
		return 1
	}
	logger := tel.Logger
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(sctx); err != nil {
			logger.Warn("telemetry shutdown", slog.Any("error", err))
		}
	}()

	connectCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	nc, err := natsconn.Connect(connectCtx, natsconn.Options{URL: base.NATSURL, User: base.NATSUser, Password: base.NATSPassword, Name: "lockdown-" + service, Logger: logger})
	if err == nil {
		// Only the install step may create streams and consumers.
		err = stream.VerifyTopology(connectCtx, nc.JS, service)
	}
	cancel()
	if err != nil {
		logger.Error("cannot reach NATS JetStream", slog.Any("error", err))
		if nc != nil {
			nc.NC.Close()
		}
		return 1
	}
	logger.Info("started", slog.Bool("tracing_exported", tel.Exporting))
	rt := NewRuntime(service, logger, tel.TracerProvider, tel.MeterProvider, nc)
	rt.Health.Add("nats", natsReady(nc, service))
	rt.Health.AddAlarm("poison", rt.PoisonAlarm)
	healthCtx, stopHealth := context.WithCancel(ctx)
	healthDone := make(chan error, 1)
	if base.HealthAddr != "" {
		go func() { healthDone <- rt.Health.Serve(healthCtx, base.HealthAddr, logger) }()
	} else {
		healthDone <- nil
	}
	runErr := run(ctx, rt, cfg)
	stopHealth()
	if err := <-healthDone; err != nil {
		logger.Error("health endpoints", slog.Any("error", err))
	}

	drainCtx, cancel := context.WithTimeout(context.Background(), base.ShutdownTimeout)
	defer cancel()
	if err := nc.Close(drainCtx); err != nil {
		logger.Warn("nats drain", slog.Any("error", err))
	}
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		logger.Error("stopped with error", slog.Any("error", runErr))
		return 1
	}
	logger.Info("stopped")
	return 0
}

// natsReady checks that the connection is up and that every durable
// consumer of the service exists on the server.
func natsReady(nc *natsconn.Conn, service string) health.Check {
	return func(ctx context.Context) error {
		if !nc.NC.IsConnected() {
			return fmt.Errorf("not connected (%s)", nc.NC.Status())
		}
		for _, c := range events.Consumers() {
			if c.Service != service {
				continue
			}
			if _, err := nc.JS.Consumer(ctx, c.Stream, c.Durable); err != nil {
				return fmt.Errorf("consumer %s: %w", c.Durable, err)
			}
		}
		return nil
	}
}

// ConsumerOptions are the options every consumer of the service shares:
// its logger, tracer and meter providers, the drain timeout on shutdown,
// the classification of PostgreSQL outages (unavailable.Middleware) and
// the record of the dependencies its consumers wait for (readiness).
// Callers set Concurrency, OnPermanent and more Middleware on the copy.
func (rt *Runtime) ConsumerOptions(drain time.Duration) stream.ConsumerOptions {
	return stream.ConsumerOptions{Logger: rt.Logger, TracerProvider: rt.TracerProvider, MeterProvider: rt.MeterProvider, DrainTimeout: drain,
		Middleware: []stream.Middleware{unavailable.Middleware}, OnDependency: rt.dependencyChanged, OnPoison: rt.poisoned}
}

// poisoned records a message given up as poison, for the readiness alarm.
func (rt *Runtime) poisoned(durable string, cause error) {
	rt.waitsMu.Lock()
	defer rt.waitsMu.Unlock()
	rt.poisonCount++
	rt.lastPoison = durable + ": " + cause.Error()
}

// PoisonAlarm is raised (in /readyz's alarms, not unready) once a message
// was given up as poison since the process started: its dead letter needs
// a look (lockdown dlq list).
func (rt *Runtime) PoisonAlarm(context.Context) error {
	rt.waitsMu.Lock()
	defer rt.waitsMu.Unlock()
	if rt.poisonCount == 0 {
		return nil
	}
	return fmt.Errorf("%d message(s) given up as poison since start (see lockdown dlq list); the last: %s", rt.poisonCount, truncateText(rt.lastPoison, 512))
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// dependencyChanged records a consumer starting or stopping to wait for a
// dependency that is down.
func (rt *Runtime) dependencyChanged(durable, dependency string, down bool, reason string, since time.Time) {
	rt.waitsMu.Lock()
	defer rt.waitsMu.Unlock()
	if rt.waits == nil {
		rt.waits = map[string]string{}
	}
	if down {
		rt.waits[durable] = fmt.Sprintf("%s down since %s: %s", dependency, since.UTC().Format(time.RFC3339), reason)
	} else {
		delete(rt.waits, durable)
	}
}

// DependenciesReady is a readiness check that fails while one of the
// service's consumers waits for a dependency that is down: the service
// cannot do its job until it answers. Workers (rotator, notifier,
// assessor) register it; containment does not, since its HTTP intake must
// stay in service while PostgreSQL is away.
func (rt *Runtime) DependenciesReady(context.Context) error {
	rt.waitsMu.Lock()
	defer rt.waitsMu.Unlock()
	if len(rt.waits) == 0 {
		return nil
	}
	parts := make([]string, 0, len(rt.waits))
	for durable, why := range rt.waits {
		parts = append(parts, durable+" waits: "+why)
	}
	sort.Strings(parts)
	return errors.New(strings.Join(parts, "; "))
}

// AddCheck registers a readiness check; a no-op on a runtime built
// without health endpoints (tests that call a service's RunWith).
func (rt *Runtime) AddCheck(name string, c health.Check) {
	if rt.Health != nil {
		rt.Health.Add(name, c)
	}
}

// AddInfo registers a fact shown in /readyz (health.Server.AddInfo); a
// no-op without health endpoints.
func (rt *Runtime) AddInfo(name string, f health.Info) {
	if rt.Health != nil {
		rt.Health.AddInfo(name, f)
	}
}

// AddAlarm registers a readiness alarm (health.Server.AddAlarm); a no-op
// without health endpoints.
func (rt *Runtime) AddAlarm(name string, c health.Check) {
	if rt.Health != nil {
		rt.Health.AddAlarm(name, c)
	}
}

// Healthcheck asks the service's own /readyz on addr (LOCKDOWN_HEALTH_ADDR;
// default :8080) and returns 0 when it is ready, 1 otherwise.
func Healthcheck(addr string, errOut io.Writer) int {
	if addr == "" {
		addr = ":8080"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		stderrf(errOut, "healthcheck: %v\n", err)
		return 1
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + net.JoinHostPort(host, port) + "/readyz")
	if err != nil {
		stderrf(errOut, "healthcheck: %v\n", err)
		return 1
	}
	defer func() { _ = resp.Body.Close() }() // a response body: nothing to lose
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		stderrf(errOut, "healthcheck: %s %s\n", resp.Status, body)
		return 1
	}
	return 0
}

// stderrf writes a line to the process's stderr (Main's logOut, the
// healthcheck's errOut): a write that fails there has nowhere else to be
// reported, and the exit code tells the outcome, so its error is dropped.
func stderrf(w io.Writer, format string, a ...any) { _, _ = fmt.Fprintf(w, format, a...) }

// OutboxDuplicate judges a relayed message JetStream called a duplicate
// (outbox.Relay.OnDuplicate): a republish after a crash passes; a message
// whose id someone else took (a forged Nats-Msg-Id) goes out again under a
// fresh id, with an alarm in the log.
func (rt *Runtime) OutboxDuplicate(ctx context.Context, m *nats.Msg, ack *jetstream.PubAck) error {
	_, reissued, err := stream.Reissue(ctx, rt.NATS.JS, ack, m)
	if reissued {
		rt.Logger.ErrorContext(ctx, "ALARM: an event's message id was taken by another message (forged Nats-Msg-Id); published again under a fresh id",
			slog.String("subject", m.Subject), slog.String("msg_id", m.Header.Get(jetstream.MsgIDHeader)))
	}
	return err
}
