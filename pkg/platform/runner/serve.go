package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/failpoint"
	"github.com/lockdown/lockdown/pkg/platform/health"
	"github.com/lockdown/lockdown/pkg/platform/natsconn"
	"github.com/lockdown/lockdown/pkg/platform/stream"
)

// ErrWiring is returned by Serve when the service's handlers and the
// contract's durable consumers do not match: a handler for a durable the
// contract does not give the service, or a durable of the service without
// a handler. It is a programming error, reported at start.
var ErrWiring = errors.New("wiring does not match the contract's consumers")

// Wiring is a service's work: a handler for each of its durable consumers,
// by the contract's name (events.Consumer*), and the loops that run beside
// them (an engine, an outbox relay, an HTTP intake).
type Wiring struct {
	Consumers map[string]Consumer
	Loops     map[string]func(context.Context) error
}

// Consumer is one durable's handler, and what it changes of the options
// every consumer of the service shares (Runtime.ConsumerOptions):
// concurrency, OnPermanent, more middleware.
type Consumer struct {
	Handler stream.Handler
	Tune    func(*stream.ConsumerOptions)
}

// NewRuntime is the Runtime the runner builds at start, for a caller that
// connected itself (the tests run a service in their own process with
// it). tp and mp may be nil (none).
func NewRuntime(service string, logger *slog.Logger, tp trace.TracerProvider, mp metric.MeterProvider, nc *natsconn.Conn) *Runtime {
	return &Runtime{Service: service, Logger: logger, TracerProvider: tp, MeterProvider: mp, NATS: nc, Health: health.New(2 * time.Second)}
}

// Failpoints reads the crash tests' kill points from the environment
// (failpoint.EnvVar; none in production) and logs them when armed.
func (rt *Runtime) Failpoints() (*failpoint.Set, error) {
	fp, err := failpoint.FromEnv()
	if err != nil {
		return nil, err
	}
	if armed := fp.Armed(); len(armed) > 0 {
		rt.Logger.Warn("test failpoints armed: this process kills itself at them", slog.Any("failpoints", armed))
	}
	return fp, nil
}

// Serve checks the wiring against the contract, then runs every consumer
// and loop until ctx ends or one of them fails (the others are then
// stopped): consumers stop fetching and drain their handlers for up to
// drain.
func (rt *Runtime) Serve(ctx context.Context, drain time.Duration, w Wiring) error {
	specs, err := rt.consumerSpecs(w)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, spec := range specs {
		c := w.Consumers[spec.Durable]
		opts := rt.ConsumerOptions(drain)
		if c.Tune != nil {
			c.Tune(&opts)
		}
		consumer := stream.NewConsumer(rt.NATS.JS, spec, c.Handler, opts)
		g.Go(func() error { return consumer.Run(gctx) })
	}
	for name, loop := range w.Loops {
		g.Go(func() error {
			if err := loop(gctx); err != nil {
				return fmt.Errorf("%s: %w", name, err) // during the drain too: a shutdown that failed says so
			}
			return nil
		})
	}
	return g.Wait()
}

// consumerSpecs returns the contract's specs of the wired durables, or
// ErrWiring naming every mismatch.
func (rt *Runtime) consumerSpecs(w Wiring) ([]events.ConsumerSpec, error) {
	var problems []string
	var specs []events.ConsumerSpec
	for durable, c := range w.Consumers {
		spec, ok := events.ConsumerOf(durable)
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s: no such durable consumer", durable))
		case spec.Service != rt.Service:
			problems = append(problems, fmt.Sprintf("%s: a consumer of %s, not %s", durable, spec.Service, rt.Service))
		case c.Handler == nil:
			problems = append(problems, fmt.Sprintf("%s: no handler", durable))
		default:
			specs = append(specs, spec)
		}
	}
	for _, spec := range events.Consumers() {
		if _, wired := w.Consumers[spec.Durable]; spec.Service == rt.Service && !wired {
			problems = append(problems, fmt.Sprintf("%s: the service's consumer has no handler", spec.Durable))
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return nil, fmt.Errorf("%w: %s", ErrWiring, strings.Join(slices.Compact(problems), "; "))
	}
	sort.Slice(specs, func(i, j int) bool { return specs[i].Durable < specs[j].Durable })
	return specs, nil
}

// OpenStore opens a service's store and a context for the background work
// of its adapters (token renewals), for an Open: release closes both, and
// must be called when Open fails after this, or when the adapters are
// closed. ctx must outlive the adapters (Run's does).
func OpenStore[S interface{ Close() }](ctx context.Context, open func(context.Context) (S, error)) (store S, background context.Context, release func(), err error) {
	store, err = open(ctx)
	if err != nil {
		return store, nil, nil, err
	}
	background, stop := context.WithCancel(ctx)
	return store, background, func() { stop(); store.Close() }, nil
}

// OpenAndServe is a service's Run: it opens the adapters with open, serves with
// them until ctx ends, and closes them.
func OpenAndServe[C, A any](ctx context.Context, rt *Runtime, cfg C,
	open func(context.Context, *Runtime, C) (A, func(), error), serve func(context.Context, *Runtime, C, A) error) error {
	a, closeAdapters, err := open(ctx, rt, cfg)
	if err != nil {
		return err
	}
	defer closeAdapters()
	return serve(ctx, rt, cfg, a)
}
