package incident

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/telemetry"
)

// Timing configures the responder's loops.
type Timing struct {
	// SealDeadline: a node not confirmed sealed by then raises
	// containment.failed; sealing goes on.
	SealDeadline time.Duration
	// SealPoll: how often a node still unsealed is re-read while sealing.
	SealPoll time.Duration
	// FenceRetry: how long after fencing a node it may be fenced again if
	// it is still unsealed.
	FenceRetry time.Duration
	// GatePoll: how often the unseal gate reads every node's status.
	GatePoll time.Duration
}

// Seal methods recorded per node.
const (
	MethodAPI           = "api"
	MethodFence         = "fence"
	MethodAlreadySealed = "already_sealed"
)

// Responder runs containment's part of the runbook: it opens incidents,
// seals every node, and watches the unseal gate. One loop runs per open
// incident at a time (sealing, then the gate).
type Responder struct {
	store  Store
	vault  Vault
	fencer Fencer
	pub    Publisher
	log    *slog.Logger
	timing Timing

	mu      sync.Mutex
	loop    map[string]context.CancelFunc // incident id → its running loop
	loopsWG sync.WaitGroup
	ctx     context.Context // the service's lifetime; loops stop with it
}

// NewResponder wires the responder. ctx bounds every background loop.
func NewResponder(ctx context.Context, store Store, vault Vault, fencer Fencer, pub Publisher, log *slog.Logger, timing Timing) *Responder {
	return &Responder{store: store, vault: vault, fencer: fencer, pub: pub, log: log, timing: timing,
		loop: map[string]context.CancelFunc{}, ctx: ctx}
}

// Wait blocks until every background loop has stopped (after ctx ends).
func (r *Responder) Wait() { r.loopsWG.Wait() }

// HandleBreach records a detection and starts or resumes the response. It
// returns once the detection is durably recorded and the seal is under
// way; the seal itself runs in the incident's loop.
func (r *Responder) HandleBreach(ctx context.Context, d Detection) (Incident, Outcome, error) {
	inc, outcome, err := r.store.RecordDetection(ctx, d)
	if err != nil {
		return Incident{}, "", fmt.Errorf("record detection: %w", err)
	}
	log := r.log.With(slog.String("incident_id", inc.ID), slog.String("event_id", d.EventID), slog.String("outcome", string(outcome)))
	switch outcome {
	case Opened:
		// Seal first: every millisecond counts; the announcement follows.
		r.startContainment(inc)
		log.InfoContext(ctx, "incident opened; sealing every node", slog.String("severity", string(inc.Severity)))
		return inc, outcome, r.announce(ctx, inc)
	case Duplicate:
		// A redelivery after a crash between recording and announcing:
		// announce again (JetStream drops it if it went out) and make
		// sure the incident's loop runs.
		log.InfoContext(ctx, "detection already recorded")
		if inc.OpenedBy == d.EventID && inc.Phase.Open() {
			r.ensureLoop(inc)
			return inc, outcome, r.announce(ctx, inc)
		}
		return inc, outcome, nil
	default: // Attached
		unsealed := r.unsealedNodes(ctx)
		if len(unsealed) == 0 {
			log.InfoContext(ctx, "detection attached to the open incident; every node is sealed")
			r.ensureLoop(inc)
			return inc, outcome, nil
		}
		log.WarnContext(ctx, "detection attached to the open incident; nodes found unsealed: sealing again", slog.Any("nodes", unsealed))
		inc.BreachPublishedAt = d.Time // this round's latency counts from this detection
		r.startContainment(inc)
		return inc, outcome, nil
	}
}

// Resume picks up the open incident after a restart: sealing if it was
// sealing, watching the gate if it was sealed.
func (r *Responder) Resume(ctx context.Context) error {
	inc, err := r.store.OpenIncident(ctx)
	if errors.Is(err, ErrNoOpenIncident) {
		return nil
	}
	if err != nil {
		return err
	}
	r.log.InfoContext(ctx, "resuming open incident", slog.String("incident_id", inc.ID), slog.String("phase", string(inc.Phase)))
	r.ensureLoop(inc)
	return nil
}

func (r *Responder) announce(ctx context.Context, inc Incident) error {
	return r.pub.PublishWithID(ctx, events.IncidentOpened, inc.ID+"/incident.opened", events.IncidentOpenedData{
		IncidentID: inc.ID, BreachEventID: inc.OpenedBy, DetectedAt: inc.DetectedAt, Severity: inc.Severity, Summary: inc.Summary,
	})
}

// ensureLoop starts the loop the incident's phase needs, unless one runs.
func (r *Responder) ensureLoop(inc Incident) {
	r.mu.Lock()
	_, running := r.loop[inc.ID]
	r.mu.Unlock()
	if running {
		return
	}
	switch inc.Phase {
	case PhaseContaining:
		r.startContainment(inc)
	case PhaseSealed:
		r.startLoop(inc.ID, inc.TraceParent, func(ctx context.Context) { r.watchGate(ctx, inc.ID, inc.SealedAt) })
	}
}

// startContainment replaces whatever loop the incident runs with a new
// seal round followed by the gate watch.
func (r *Responder) startContainment(inc Incident) {
	r.startLoop(inc.ID, inc.TraceParent, func(ctx context.Context) {
		sealedAt, err := r.contain(ctx, inc)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Error("containment stopped", slog.String("incident_id", inc.ID), slog.Any("error", err))
			}
			return
		}
		r.watchGate(ctx, inc.ID, sealedAt)
	})
}

func (r *Responder) startLoop(id, traceParent string, fn func(ctx context.Context)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cancel, ok := r.loop[id]; ok {
		cancel()
	}
	// The loop outlives the message that started it (and resumes after a
	// restart): it continues the incident's trace from the stored context.
	ctx, cancel := context.WithCancel(telemetry.WithTraceParent(r.ctx, traceParent))
	r.loop[id] = cancel
	r.loopsWG.Add(1)
	go func() {
		defer r.loopsWG.Done()
		fn(ctx)
		r.mu.Lock()
		defer r.mu.Unlock()
		if ctx.Err() == nil || r.ctx.Err() != nil {
			delete(r.loop, id)
		}
		cancel()
	}()
}

// contain runs one seal round: every node sealed and confirmed, recorded,
// announced.
func (r *Responder) contain(ctx context.Context, inc Incident) (time.Time, error) {
	round, err := r.store.StartSealRound(ctx, inc.ID)
	if err != nil {
		return time.Time{}, fmt.Errorf("start seal round: %w", err)
	}
	seals := r.sealAll(ctx, inc)
	if ctx.Err() != nil {
		return time.Time{}, ctx.Err()
	}
	last := time.Time{}
	for _, s := range seals {
		if s.ConfirmedAt.After(last) {
			last = s.ConfirmedAt
		}
	}
	if err := r.store.RecordSealed(ctx, inc.ID, round, seals, last); err != nil {
		return time.Time{}, fmt.Errorf("record sealed: %w", err)
	}
	latency := last.Sub(inc.BreachPublishedAt)
	r.log.Info("every vault node confirmed sealed", slog.String("incident_id", inc.ID), slog.Int("round", round),
		slog.Duration("since_breach_published", latency))
	r.publish(ctx, events.VaultSealed, fmt.Sprintf("%s/vault.sealed/%d", inc.ID, round), events.VaultSealedData{
		IncidentID: inc.ID, Nodes: seals, LatencyMS: latency.Milliseconds(),
	})
	return last, nil
}

// publish emits an event from a background loop, retrying until it is
// stored or the loop ends: the id makes retries safe.
func (r *Responder) publish(ctx context.Context, name events.Name, id string, data any) {
	delay := 100 * time.Millisecond
	for {
		err := r.pub.PublishWithID(ctx, name, id, data)
		if err == nil {
			return
		}
		r.log.Warn("publish failed; retrying", slog.String("event", string(name)), slog.Any("error", err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// sealAll seals every node concurrently and returns when all are confirmed
// sealed (or ctx ends). Past the deadline it reports the nodes still
// unsealed with containment.failed, once, and keeps going.
func (r *Responder) sealAll(ctx context.Context, inc Incident) []events.NodeSeal {
	nodes := r.vault.Nodes()
	seals := make([]events.NodeSeal, len(nodes))
	lastErr := make([]string, len(nodes))
	var mu sync.Mutex
	var wg sync.WaitGroup
	done := make(chan struct{})
	for i, node := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := r.sealNode(ctx, node, func(msg string) { mu.Lock(); lastErr[i] = msg; mu.Unlock() })
			mu.Lock()
			seals[i] = s
			mu.Unlock()
		}()
	}
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return seals
	case <-ctx.Done():
		<-done
		return seals
	case <-time.After(r.timing.SealDeadline):
	}
	mu.Lock()
	var pending, reasons []string
	for i, s := range seals {
		if s.ConfirmedAt.IsZero() {
			pending = append(pending, nodes[i])
			reasons = append(reasons, nodes[i]+": "+lastErr[i])
		}
	}
	mu.Unlock()
	if len(pending) > 0 {
		r.log.Error("nodes not sealed within the deadline; still trying", slog.String("incident_id", inc.ID), slog.Any("nodes", pending))
		r.publish(ctx, events.ContainmentFailed, inc.ID+"/containment.failed/"+strings.Join(pending, ","), events.ContainmentFailedData{
			IncidentID: inc.ID, Nodes: pending, Reason: strings.Join(reasons, "; "),
		})
	}
	<-done
	return seals
}

// sealNode drives one node to sealed: seal it through the API while it is
// the active node, fence it while it is an unsealed standby, and confirm
// with its seal status. A standby that becomes active meanwhile is sealed
// through the API on the next read.
func (r *Responder) sealNode(ctx context.Context, node string, problem func(string)) events.NodeSeal {
	seal := events.NodeSeal{Address: node}
	var fencedAt time.Time
	for ctx.Err() == nil {
		st := r.vault.Status(ctx, node)
		switch {
		case st.Reachable && st.Sealed:
			if seal.Method == "" {
				seal.Method = MethodAlreadySealed
			}
			seal.ConfirmedAt = time.Now().UTC()
			return seal
		case st.Reachable && st.Active:
			if seal.RequestedAt.IsZero() {
				seal.RequestedAt = time.Now().UTC()
			}
			err := r.vault.Seal(ctx, node)
			if err == nil {
				seal.Method = MethodAPI
				continue // confirm at once
			}
			if !errors.Is(err, ErrStandby) {
				problem(err.Error())
				break
			}
			fallthrough // it turned standby between the two calls
		case st.Reachable: // an unsealed standby: Vault will not seal it
			if time.Since(fencedAt) < r.timing.FenceRetry {
				break
			}
			if seal.RequestedAt.IsZero() {
				seal.RequestedAt = time.Now().UTC()
			}
			fencedAt = time.Now()
			seal.Method = MethodFence
			if err := r.fencer.Fence(ctx, node); err != nil {
				problem("fence: " + err.Error())
				r.log.Error("fence failed", slog.String("node", node), slog.Any("error", err))
			}
		default:
			problem(st.Error) // unreachable: restarting after a fence, or down
		}
		select {
		case <-ctx.Done():
		case <-time.After(r.timing.SealPoll):
		}
	}
	return seal
}

// unsealedNodes lists the nodes that answer and are unsealed.
func (r *Responder) unsealedNodes(ctx context.Context) []string {
	var out []string
	for _, st := range r.statuses(ctx) {
		if st.Reachable && !st.Sealed {
			out = append(out, st.Address)
		}
	}
	return out
}

func (r *Responder) statuses(ctx context.Context) []NodeStatus {
	nodes := r.vault.Nodes()
	out := make([]NodeStatus, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); out[i] = r.vault.Status(ctx, n) }()
	}
	wg.Wait()
	return out
}

// watchGate follows the key holders' unseal: it records every change of
// the nodes' progress and emits vault.unsealed when the active node is
// unsealed.
func (r *Responder) watchGate(ctx context.Context, incidentID string, sealedAt time.Time) {
	var last []NodeStatus
	if sealedAt.IsZero() {
		sealedAt = time.Now()
	}
	for ctx.Err() == nil {
		gate := r.statuses(ctx)
		if !sameGate(gate, last) {
			if err := r.store.RecordGate(ctx, incidentID, gate); err != nil {
				r.log.Warn("gate status not recorded", slog.Any("error", err))
			} else {
				last = gate
			}
		}
		for _, st := range gate {
			if !st.Reachable || st.Sealed || !st.Active {
				continue
			}
			at := time.Now().UTC()
			if err := r.store.RecordUnsealed(ctx, incidentID, at); err != nil {
				r.log.Error("unseal not recorded; retrying", slog.Any("error", err))
				break
			}
			gateTime := at.Sub(sealedAt)
			r.log.Info("unseal gate passed", slog.String("incident_id", incidentID), slog.String("node", st.Address), slog.Duration("gate", gateTime))
			r.publish(ctx, events.VaultUnsealed, incidentID+"/vault.unsealed", events.VaultUnsealedData{
				IncidentID: incidentID, Address: st.Address, GateMS: gateTime.Milliseconds(),
			})
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(r.timing.GatePoll):
		}
	}
}

func sameGate(a, b []NodeStatus) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
