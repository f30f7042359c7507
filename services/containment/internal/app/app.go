// Package app is containment's composition root: it reads the config,
// builds the adapters (PostgreSQL store, Vault nodes, fence command,
// JetStream publisher, HTTP intake) and wires the breach consumer to the
// incident responder.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"golang.org/x/sync/errgroup"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/stream"
	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/pkg/platform/runner"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
	"github.com/lockdown/lockdown/services/containment/internal/intake"
	"github.com/lockdown/lockdown/services/containment/internal/store"
	"github.com/lockdown/lockdown/services/containment/internal/vaultnodes"
)

// Config is containment's configuration.
type Config struct {
	config.Common
	DatabaseURL string `env:"DATABASE_URL" secret:"true" doc:"PostgreSQL connection string (containment's schema is created at start)."`
	// Concurrency of the breach consumer: breaches are rare, but a burst
	// of detections of one incident must not queue behind each other.
	BreachConcurrency int `env:"CONTAINMENT_BREACH_CONCURRENCY" default:"4" doc:"Breach events handled at once by one process."`

	VaultAddrs     []string      `env:"VAULT_ADDRS" doc:"Every Vault node's API address, comma-separated (falls back to LOCKDOWN_VAULT_ADDR)."`
	VaultAddr      string        `env:"VAULT_ADDR" doc:"A single Vault node's address, when LOCKDOWN_VAULT_ADDRS is empty."`
	VaultSealToken string        `env:"VAULT_SEAL_TOKEN" secret:"true" doc:"Token whose only power is sys/seal (deploy/vault/policies/lockdown-seal.hcl)."`
	VaultTimeout   time.Duration `env:"VAULT_TIMEOUT" default:"2s" doc:"Timeout of one Vault API request."`
	FenceCommand   string        `env:"VAULT_FENCE_COMMAND" doc:"Command that restarts a standby Vault will not seal, split on spaces; {node} and {host} are replaced (e.g. 'systemctl restart vault'). Empty: standbys cannot be fenced and containment.failed is raised."`
	FenceTimeout   time.Duration `env:"VAULT_FENCE_TIMEOUT" default:"30s" doc:"Timeout of one fence command."`

	SealDeadline time.Duration `env:"SEAL_DEADLINE" default:"10s" doc:"A node not confirmed sealed by then raises containment.failed; sealing goes on."`
	SealPoll     time.Duration `env:"SEAL_POLL" default:"20ms" doc:"How often a node still unsealed is re-read while sealing."`
	FenceRetry   time.Duration `env:"FENCE_RETRY" default:"15s" doc:"How long after fencing a node it may be fenced again if still unsealed."`
	GatePoll     time.Duration `env:"GATE_POLL" default:"250ms" doc:"How often the unseal gate reads every node's seal status."`

	IntakeAddr         string        `env:"INTAKE_ADDR" doc:"Listen address of the HTTP breach intake (e.g. 127.0.0.1:8081); empty disables it."`
	IntakeBearerTokens []string      `env:"INTAKE_BEARER_TOKENS" secret:"true" doc:"Bearer tokens accepted by the intake, comma-separated."`
	IntakeHMACKey      string        `env:"INTAKE_HMAC_KEY" secret:"true" doc:"Key of the intake's X-Lockdown-Signature HMAC-SHA256."`
	IntakeMaxSkew      time.Duration `env:"INTAKE_MAX_SKEW" default:"5m" doc:"How old (or early) a signed request's timestamp may be."`
}

// Nodes returns the configured Vault nodes.
func (c *Config) Nodes() []string {
	if len(c.VaultAddrs) > 0 {
		return c.VaultAddrs
	}
	if c.VaultAddr != "" {
		return []string{c.VaultAddr}
	}
	return nil
}

// Validate reports every problem of the configuration at once.
func (c *Config) Validate() error {
	errs := []error{c.Common.Validate()}
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(config.Prefix+format, a...)) }
	if c.DatabaseURL == "" {
		bad("DATABASE_URL is required")
	}
	if len(c.Nodes()) == 0 {
		bad("VAULT_ADDRS (or VAULT_ADDR) is required")
	}
	for _, a := range c.Nodes() {
		if !strings.HasPrefix(a, "http://") && !strings.HasPrefix(a, "https://") {
			bad("VAULT_ADDRS: %q is not an http(s) URL", a)
		}
	}
	if c.VaultSealToken == "" {
		bad("VAULT_SEAL_TOKEN is required")
	}
	if c.BreachConcurrency < 1 {
		bad("CONTAINMENT_BREACH_CONCURRENCY must be at least 1")
	}
	for name, d := range map[string]time.Duration{"VAULT_TIMEOUT": c.VaultTimeout, "SEAL_DEADLINE": c.SealDeadline, "SEAL_POLL": c.SealPoll,
		"FENCE_RETRY": c.FenceRetry, "GATE_POLL": c.GatePoll, "VAULT_FENCE_TIMEOUT": c.FenceTimeout, "INTAKE_MAX_SKEW": c.IntakeMaxSkew} {
		if d <= 0 {
			bad("%s must be positive", name)
		}
	}
	if c.IntakeAddr != "" && len(c.IntakeBearerTokens) == 0 && c.IntakeHMACKey == "" {
		bad("INTAKE_ADDR needs INTAKE_BEARER_TOKENS or INTAKE_HMAC_KEY: the intake never runs unauthenticated")
	}
	return errors.Join(errs...)
}

// Run wires containment and blocks until ctx ends.
func Run(ctx context.Context, rt *runner.Runtime, cfg *Config) error {
	db, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer db.Close()
	nodes, err := vaultnodes.New(cfg.Nodes(), cfg.VaultSealToken, cfg.VaultTimeout)
	if err != nil {
		return err
	}
	var fencer vaultnodes.CommandFencer
	if cfg.FenceCommand != "" {
		fencer = vaultnodes.CommandFencer{Argv: strings.Fields(cfg.FenceCommand), Timeout: cfg.FenceTimeout}
	}
	return RunWith(ctx, rt, cfg, Deps{Store: db, Vault: nodes, Fencer: fencer})
}

// Deps are the adapters Run builds; tests pass their own fence (the local
// stack restarts a node) and share a store.
type Deps struct {
	Store interface {
		incident.Store
		intake.Incidents
	}
	Vault  incident.Vault
	Fencer incident.Fencer
}

// RunWith runs containment over the given adapters until ctx ends, then
// drains: the consumer stops fetching, in-flight handlers finish, the
// incident loops stop (they resume from PostgreSQL at the next start).
func RunWith(ctx context.Context, rt *runner.Runtime, cfg *Config, deps Deps) error {
	pub := stream.NewPublisher(rt.NATS.JS, events.SourceOf(events.ServiceContainment), rt.TracerProvider)
	responder := incident.NewResponder(ctx, deps.Store, deps.Vault, deps.Fencer, pub, rt.Logger, incident.Timing{
		SealDeadline: cfg.SealDeadline, SealPoll: cfg.SealPoll, FenceRetry: cfg.FenceRetry, GatePoll: cfg.GatePoll,
	})
	defer responder.Wait()
	if err := responder.Resume(ctx); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	spec, _ := events.ConsumerOf(events.ConsumerContainmentBreach)
	breaches := stream.NewConsumer(rt.NATS.JS, spec, BreachHandler(responder), stream.ConsumerOptions{
		Logger: rt.Logger, TracerProvider: rt.TracerProvider, Concurrency: cfg.BreachConcurrency, DrainTimeout: cfg.ShutdownTimeout,
	})
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return breaches.Run(gctx) })
	if cfg.IntakeAddr != "" {
		h := intake.New(intake.Config{BearerTokens: cfg.IntakeBearerTokens, HMACKey: cfg.IntakeHMACKey, MaxSkew: cfg.IntakeMaxSkew,
			MaxBody: 1 << 20, WaitIncident: 3 * time.Second}, breachPublisher{pub}, deps.Store, rt.Logger)
		g.Go(func() error { return serve(gctx, cfg.IntakeAddr, h.Routes(), cfg.ShutdownTimeout, rt.Logger) })
	}
	return g.Wait()
}

// BreachHandler turns a breach event into a detection for the responder.
// Invalid data is a permanent failure: it ends on the dead-letter subject
// and nothing is sealed.
func BreachHandler(r *incident.Responder) stream.Handler {
	return stream.Decoded(func(ctx context.Context, d *stream.Delivery, b events.BreachDetectedData) error {
		_, _, err := r.HandleBreach(ctx, incident.Detection{EventID: d.Event.ID(), Source: d.Event.Source(), Time: d.Event.Time(), Breach: b})
		return err
	})
}

// breachPublisher adapts the JetStream publisher to the intake's port.
type breachPublisher struct{ p *stream.Publisher }

func (b breachPublisher) PublishBreach(ctx context.Context, ev event.Event) (bool, error) {
	ack, err := b.p.PublishEvent(ctx, ev)
	if err != nil {
		return false, err
	}
	return ack.Duplicate, nil
}

// serve runs an HTTP server until ctx ends, then shuts it down gracefully.
func serve(ctx context.Context, addr string, h http.Handler, grace time.Duration, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("intake listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 15 * time.Second}
	log.Info("breach intake listening", slog.String("addr", ln.Addr().String()))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	return srv.Shutdown(sctx)
}
