// Package engine drives every open incident from its recorded state: the
// incident's phase and recovery progress in PostgreSQL say what comes
// next, so whatever message was lost, duplicated or dead-lettered, and
// whichever process died, the incident moves on once its dependencies
// answer. One containment process drives at a time: it holds a lease
// with a fencing token, and every write it makes checks that token and
// compares-and-swaps the incident's version in the same transaction as
// the events the write implies (the outbox).
//
// It imports no transport: the store, Vault (through the incident
// sealer and the recovery operations) and the clock are ports.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/pkg/platform/failpoint"
	"github.com/lockdown/lockdown/pkg/platform/telemetry"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
	"github.com/lockdown/lockdown/services/containment/internal/recovery"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
)

// ErrConflict is returned by Store.Apply when the incident changed since
// it was read (its version moved): the step is taken again from the new
// state.
var ErrConflict = errors.New("incident changed meanwhile")

// ErrNotLeader is returned by Store.Apply, Acquire and Renew when this
// process does not hold the lease (another does, or it expired).
var ErrNotLeader = errors.New("not the leader")

// Fence is a held lease: the holder and its fencing token (incremented at
// every change of holder). The zero Fence writes unfenced (operator
// requests, which any process may record).
type Fence struct {
	Holder string
	Token  int64
}

// Stuck says why an incident cannot move; a zero Reason clears it.
type Stuck struct {
	Reason string
	Since  time.Time
}

// Change is one recorded step of an incident: a compare-and-swap on the
// incident's version, the fields the step changes, and the events it
// implies, written in one transaction.
type Change struct {
	IncidentID string
	Version    int64
	// Phase and the times: zero values keep what is recorded.
	Phase                            incident.Phase
	SealedAt, UnsealedAt, ResolvedAt time.Time
	// RoundSealed, when set, records whether the current round is
	// confirmed on every node; Seals are its node seals. NewRound starts
	// a seal round (an operator's confirmation).
	RoundSealed *bool
	NewRound    bool
	Seals       []events.NodeSeal
	Gate        []incident.NodeStatus
	Recovery    *recovery.State
	Stuck       *Stuck
	Redrives    *int
	// FailureReason ends an aborted incident.
	FailureReason string
	Report        *report.Report
	// Emit are written to the outbox and to the incident's timeline;
	// Timeline are events received that the timeline must hold now.
	Emit     []events.Outgoing
	Timeline []reporting.Entry
}

// Store is the engine's view of containment's database.
type Store interface {
	OpenIncidents(ctx context.Context) ([]incident.Incident, error)
	Incident(ctx context.Context, id string) (incident.Incident, error)
	LoadRecovery(ctx context.Context, incidentID string) (recovery.State, error)
	Timeline(ctx context.Context, incidentID string) ([]reporting.Entry, error)
	// Recorded says which of the given event types the incident's
	// timeline holds: what a recovery pass needs after every change, at
	// the cost of an index lookup instead of the whole timeline (30,000
	// entries at 10,000 tenants).
	Recorded(ctx context.Context, incidentID string, types ...events.Name) (map[events.Name]bool, error)
	ReportIncident(ctx context.Context, incidentID string) (reporting.Incident, error)
	// Report returns a closed incident's stored report.
	Report(ctx context.Context, incidentID string) (report.Report, error)
	// Apply records a change; ErrConflict when the version moved,
	// ErrNotLeader when f is not the current lease.
	Apply(ctx context.Context, f Fence, c Change) error
	// Acquire takes the lease for ttl when it is free or expired (or
	// already ours) and returns it; ErrNotLeader when another holds it.
	Acquire(ctx context.Context, holder string, ttl time.Duration) (Fence, error)
	// Renew extends the lease; ErrNotLeader when it was lost.
	Renew(ctx context.Context, f Fence, ttl time.Duration) error
	// Release gives the lease up (a clean shutdown), so a standby takes
	// over at once instead of after the ttl.
	Release(ctx context.Context, f Fence) error
}

// Config of the engine.
type Config struct {
	// Process names this containment process in events and the report.
	Process string
	// LeaderTTL is how long a lease lasts without renewal: a standby
	// takes over within it after the leader dies.
	LeaderTTL time.Duration
	// Tick is how often the open incidents are driven (the unseal gate's
	// poll); RekeyPoll how often the ceremony is read; SealDeadline how
	// long one sealing pass may take.
	Tick, RekeyPoll, SealDeadline time.Duration
	// StuckAfter: a step failing for longer marks the incident stuck.
	StuckAfter time.Duration
	// JaegerURL is the Jaeger UI the reports link their trace in.
	JaegerURL string
}

// reportIncident is what the store knows of the incident for its report,
// with the link to its trace.
func (e *Engine) reportIncident(ctx context.Context, id string) (reporting.Incident, error) {
	ri, err := e.store.ReportIncident(ctx, id)
	ri.JaegerURL = e.cfg.JaegerURL
	return ri, err
}

// Engine drives open incidents while it holds the lease.
type Engine struct {
	cfg    Config
	store  Store
	sealer *incident.Sealer
	rec    *recovery.Recoverer
	log    *slog.Logger
	fp     *failpoint.Set
	phases metric.Float64Histogram
	// passes counts the leader's passes over the open incidents: a leader
	// whose count stops has stalled, and a test that checks nothing
	// happened waits for passes instead of sleeping.
	passes metric.Int64Counter

	wake   chan struct{}
	leader atomic.Bool

	mu      sync.Mutex
	trouble map[string]*trouble // incident id → its failing step
	// failedRounds are the seal rounds already reported as
	// containment.failed (incident/round).
	failedRounds map[string]bool
	// refuted is the last verification of an incident's rotation claims
	// that failed: repeated at most every reverifyEvery while the
	// timeline is unchanged (each costs two metadata reads per tenant).
	refuted map[string]refutation
}

// refutation is a failed verification and what it was made from.
type refutation struct {
	at      time.Time
	entries int
	err     error
}

// reverifyEvery bounds how often unchanged rotation claims that Vault did
// not bear out are checked again.
const reverifyEvery = 30 * time.Second

// trouble tracks a step that keeps failing.
type trouble struct {
	since   time.Time
	reason  string
	retries int
	marked  string // the reason last raised as incident.stuck
}

// New wires an engine; mp (nil for none) receives each resolved
// incident's phase durations.
func New(cfg Config, store Store, sealer *incident.Sealer, rec *recovery.Recoverer, log *slog.Logger, fp *failpoint.Set, mp metric.MeterProvider) *Engine {
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.LeaderTTL, 10 * time.Second}, {&cfg.Tick, 250 * time.Millisecond}, {&cfg.RekeyPoll, time.Second},
		{&cfg.SealDeadline, 10 * time.Second}, {&cfg.StuckAfter, 2 * time.Minute}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	phases, _ := mp.Meter("github.com/lockdown/lockdown/services/containment").Float64Histogram("lockdown.incident.phase.duration",
		metric.WithUnit("s"), metric.WithDescription("Duration of each runbook phase of a resolved incident."),
		metric.WithExplicitBucketBoundaries(0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400))
	passes, _ := mp.Meter("github.com/lockdown/lockdown/services/containment").Int64Counter("lockdown.engine.passes",
		metric.WithDescription("Passes of the leading engine over every open incident."))
	return &Engine{cfg: cfg, store: store, sealer: sealer, rec: rec, log: log, fp: fp, phases: phases, passes: passes,
		wake: make(chan struct{}, 1), trouble: map[string]*trouble{}, failedRounds: map[string]bool{}, refuted: map[string]refutation{}}
}

// Wake makes the engine drive the open incidents now instead of at its
// next tick (a breach recorded, an event received).
func (e *Engine) Wake() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Leader reports whether this process holds the lease now.
func (e *Engine) Leader() bool { return e.leader.Load() }

// Run competes for the lease until ctx ends and drives while it holds it.
func (e *Engine) Run(ctx context.Context) error {
	retry := min(e.cfg.LeaderTTL/3, time.Second)
	for ctx.Err() == nil {
		f, err := e.store.Acquire(ctx, e.cfg.Process, e.cfg.LeaderTTL)
		if err != nil {
			if !errors.Is(err, ErrNotLeader) && ctx.Err() == nil {
				e.log.Warn("lease not acquired (PostgreSQL?); retrying", slog.Any("error", err))
			}
			select {
			case <-ctx.Done():
			case <-time.After(retry):
			}
			continue
		}
		e.log.Info("leading: this process drives the open incidents", slog.Int64("fencing_token", f.Token))
		e.leader.Store(true)
		leadCtx, stop := context.WithCancel(ctx)
		renewed := make(chan struct{})
		go func() { defer close(renewed); e.keepLease(leadCtx, stop, f) }()
		e.lead(leadCtx, f)
		stop()
		<-renewed
		e.leader.Store(false)
		if ctx.Err() != nil {
			// A clean shutdown hands over at once.
			release, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if err := e.store.Release(release, f); err == nil {
				e.log.Info("lease released")
			}
			cancel()
		} else {
			e.log.Warn("lease lost: standing by")
		}
	}
	return nil
}

// keepLease renews the lease every third of its ttl and ends the lead
// (stop) when it is lost, or when it could not be renewed for half the
// ttl: by then another process may be about to take over, and this one
// must have stopped touching Vault before it does.
func (e *Engine) keepLease(ctx context.Context, stop context.CancelFunc, f Fence) {
	lastOK := time.Now()
	t := time.NewTicker(e.cfg.LeaderTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, e.cfg.LeaderTTL/3)
		err := e.store.Renew(rctx, f, e.cfg.LeaderTTL)
		cancel()
		switch {
		case err == nil:
			lastOK = time.Now()
		case errors.Is(err, ErrNotLeader):
			stop()
			return
		case time.Since(lastOK) > e.cfg.LeaderTTL/2:
			e.log.Warn("lease not renewed for half its ttl: stepping down", slog.Any("error", err))
			stop()
			return
		}
	}
}

// lead drives the open incidents until ctx ends.
func (e *Engine) lead(ctx context.Context, f Fence) {
	for ctx.Err() == nil {
		next := 4 * e.cfg.Tick
		incs, err := e.store.OpenIncidents(ctx)
		if err != nil && ctx.Err() == nil {
			e.log.Warn("open incidents not read (PostgreSQL?); retrying", slog.Any("error", err))
			next = time.Second
		}
		for _, inc := range incs {
			next = min(next, e.drive(ctx, f, inc))
		}
		if err == nil {
			e.passes.Add(ctx, 1)
		}
		select {
		case <-ctx.Done():
		case <-e.wake:
		case <-time.After(next):
		}
	}
}

// drive takes the incident's next step and returns how long to wait
// before the next one. A failing step is retried with backoff and, past
// StuckAfter, raised as incident.stuck; the first success clears it.
func (e *Engine) drive(ctx context.Context, f Fence, inc incident.Incident) time.Duration {
	ctx = telemetry.WithTraceParent(ctx, inc.TraceParent)
	wait, err := e.step(ctx, f, inc)
	switch {
	case err == nil:
		e.recovered(ctx, f, inc)
		return wait
	case errors.Is(err, ErrConflict):
		return 0 // changed meanwhile (a breach, an operator): read it again
	case errors.Is(err, ErrNotLeader) || ctx.Err() != nil:
		return e.cfg.Tick
	}
	return e.failed(ctx, f, inc, err)
}

// failed records a failing step and returns the backoff before the retry.
func (e *Engine) failed(ctx context.Context, f Fence, inc incident.Incident, err error) time.Duration {
	e.mu.Lock()
	tr := e.trouble[inc.ID]
	if tr == nil {
		tr = &trouble{since: time.Now()}
		e.trouble[inc.ID] = tr
	}
	tr.retries++
	tr.reason = err.Error()
	retries, since, marked := tr.retries, tr.since, tr.marked
	e.mu.Unlock()
	e.log.WarnContext(ctx, "incident step failed; retrying", slog.String("incident_id", inc.ID), slog.String("phase", string(inc.Phase)),
		slog.Int("retries", retries), slog.Any("error", err))
	if time.Since(since) >= e.cfg.StuckAfter && marked != err.Error() {
		n := inc.Redrives*1000 + retries // unique per raise within the incident
		c := Change{IncidentID: inc.ID, Version: inc.Version, Stuck: &Stuck{Reason: err.Error(), Since: since},
			Emit: []events.Outgoing{{Name: events.IncidentStuck, ID: fmt.Sprintf("%s/incident.stuck/%d", inc.ID, n), Data: events.IncidentStuckData{
				IncidentID: inc.ID, Phase: string(inc.Phase), Reason: err.Error(), Since: since}}}}
		if aerr := e.store.Apply(ctx, f, c); aerr == nil {
			e.mu.Lock()
			tr.marked = err.Error()
			e.mu.Unlock()
			e.log.ErrorContext(ctx, "incident stuck: a dependency has failed its step for too long", slog.String("incident_id", inc.ID),
				slog.String("phase", string(inc.Phase)), slog.Time("since", since), slog.Any("error", err))
		}
	}
	return min(100*time.Millisecond<<min(retries, 6), 5*time.Second)
}

// recovered forgets a step's trouble after a success and clears a
// recorded stuck reason.
func (e *Engine) recovered(ctx context.Context, f Fence, inc incident.Incident) {
	e.mu.Lock()
	delete(e.trouble, inc.ID)
	e.mu.Unlock()
	if inc.StuckReason == "" {
		return
	}
	cur, err := e.store.Incident(ctx, inc.ID)
	if err != nil || cur.StuckReason == "" {
		return
	}
	if err := e.store.Apply(ctx, f, Change{IncidentID: cur.ID, Version: cur.Version, Stuck: &Stuck{}}); err == nil {
		e.log.InfoContext(ctx, "incident moving again", slog.String("incident_id", inc.ID), slog.String("phase", string(cur.Phase)))
	}
}

// apply records a change and, once it is committed, passes the named
// failpoint: the crash tests kill the process right after each commit
// that carries events.
func (e *Engine) apply(ctx context.Context, f Fence, point string, c Change) error {
	if err := e.store.Apply(ctx, f, c); err != nil {
		return err
	}
	e.fp.Hit("containment.engine." + point)
	return nil
}

// recordPhases sends a resolved incident's phase durations to the meter.
func (e *Engine) recordPhases(ctx context.Context, rep report.Report) {
	for _, p := range rep.Phases {
		e.phases.Record(ctx, p.Duration.Seconds(), metric.WithAttributes(attribute.String("lockdown.phase", p.Name), attribute.Bool("lockdown.target_met", p.Met)))
	}
}
