package incident

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/failpoint"
	"github.com/lockdown/lockdown/pkg/platform/retry"
)

// Timing configures the responder.
type Timing struct {
	// SealDeadline: a node not confirmed sealed by then is reported
	// (containment.failed) and the engine keeps sealing it.
	SealDeadline time.Duration
	// RecordRetryMax caps the wait between attempts to record a breach
	// while PostgreSQL does not answer (default 5s).
	RecordRetryMax time.Duration
}

// Responder handles breach detections: seal first, record second. Any
// containment process runs it (leader or not): sealing is idempotent and
// must never wait for an election, a database or an acknowledgement.
type Responder struct {
	store   Store
	sealer  *Sealer
	policy  Policy
	log     *slog.Logger
	timing  Timing
	process string
	fp      *failpoint.Set
	// recorded is told (in-process) that a breach was recorded, so the
	// engine drives the incident at once instead of at its next tick.
	recorded func()
}

// NewResponder wires the responder. process names this containment
// process in the events it emits; recorded (may be nil) is called after
// each recorded breach.
func NewResponder(store Store, sealer *Sealer, policy Policy, log *slog.Logger, timing Timing, process string, fp *failpoint.Set, recorded func()) *Responder {
	if timing.RecordRetryMax <= 0 {
		timing.RecordRetryMax = 5 * time.Second
	}
	if recorded == nil {
		recorded = func() {}
	}
	return &Responder{store: store, sealer: sealer, policy: policy, log: log, timing: timing, process: process, fp: fp, recorded: recorded}
}

// HandleBreach seals every node at once, then records the detection and
// the seal round, retrying without limit while PostgreSQL does not answer
// (the message stays unacknowledged and in progress meanwhile, so nothing
// is lost if this process dies). It returns once the breach is recorded,
// or when ctx ends (the message is then redelivered: sealing again is a
// no-op on sealed nodes).
func (r *Responder) HandleBreach(ctx context.Context, d Detection) (Incident, Outcome, error) {
	log := r.log.With(slog.String("event_id", d.EventID))
	var seals []events.NodeSeal
	var problems map[string]string
	switch {
	case !r.policy.Auto(d.Breach):
		// Not allowed to seal by itself: recorded, and a new incident
		// waits for an operator's confirmation.
		d.Unsealed = true
		log.WarnContext(ctx, "breach outside the auto-seal policy: not sealing; lockdown confirm <incident> seals",
			slog.String("severity", string(d.Breach.Severity)), slog.String("vault_cluster", d.Breach.VaultCluster))
	default:
		seals, problems = r.sealer.SealAll(ctx, r.timing.SealDeadline)
	}
	switch {
	case d.Unsealed:
	case len(problems) == 0:
		log.InfoContext(ctx, "every vault node confirmed sealed; recording the breach", slog.Duration("since_breach_published", LastConfirmed(seals).Sub(d.Time)))
	default:
		log.ErrorContext(ctx, "nodes not confirmed sealed within the deadline; recording the breach, the engine keeps sealing", slog.Any("nodes", sortedKeys(problems)))
	}
	r.fp.Hit("containment.breach.sealed")
	var inc Incident
	var outcome Outcome
	err := retry.Do(ctx, retry.Policy{Initial: 100 * time.Millisecond, Max: r.timing.RecordRetryMax}, func(ctx context.Context) error {
		var err error
		inc, outcome, err = r.store.RecordBreach(ctx, d, seals, func(inc Incident, outcome Outcome, newRound bool) []events.Outgoing {
			return r.emit(inc, outcome, newRound, d, seals, problems)
		})
		return err
	}, func(err error, wait time.Duration) {
		log.WarnContext(ctx, "breach not recorded (PostgreSQL?); Vault stays sealed, retrying", slog.Any("error", err), slog.Duration("retry_in", wait))
	})
	if err != nil {
		return Incident{}, "", fmt.Errorf("record breach: %w", err)
	}
	r.fp.Hit("containment.breach.recorded")
	log.InfoContext(ctx, "breach recorded", slog.String("incident_id", inc.ID), slog.String("outcome", string(outcome)), slog.Int("round", inc.SealRound))
	r.recorded()
	return inc, outcome, nil
}

// emit returns the events a recorded breach implies: the incident's
// opening, and the seal round's outcome.
func (r *Responder) emit(inc Incident, outcome Outcome, newRound bool, d Detection, seals []events.NodeSeal, problems map[string]string) []events.Outgoing {
	var out []events.Outgoing
	if outcome == Opened {
		out = append(out, events.Outgoing{Name: events.IncidentOpened, ID: inc.ID + "/incident.opened", Data: events.IncidentOpenedData{
			IncidentID: inc.ID, BreachEventID: inc.OpenedBy, DetectedAt: inc.DetectedAt, Severity: inc.Severity, Summary: inc.Summary}})
	}
	if !newRound {
		return out
	}
	if len(problems) == 0 {
		out = append(out, SealedEvent(inc.ID, inc.SealRound, seals, d.Time, r.process))
	} else {
		out = append(out, FailedEvent(inc.ID, inc.SealRound, problems))
	}
	return out
}

// SealedEvent is vault.sealed for a confirmed round; latency counts from
// the breach event that started the round.
func SealedEvent(incidentID string, round int, seals []events.NodeSeal, breachAt time.Time, process string) events.Outgoing {
	return events.Outgoing{Name: events.VaultSealed, ID: fmt.Sprintf("%s/vault.sealed/%d", incidentID, round), Data: events.VaultSealedData{
		IncidentID: incidentID, Round: round, Nodes: seals, LatencyMS: LastConfirmed(seals).Sub(breachAt).Milliseconds(), Process: process}}
}

// FailedEvent is containment.failed for a round whose nodes were not all
// confirmed sealed in time.
func FailedEvent(incidentID string, round int, problems map[string]string) events.Outgoing {
	nodes := sortedKeys(problems)
	reasons := make([]string, len(nodes))
	for i, n := range nodes {
		reasons[i] = n + ": " + problems[n]
	}
	return events.Outgoing{Name: events.ContainmentFailed, ID: fmt.Sprintf("%s/containment.failed/%d", incidentID, round), Data: events.ContainmentFailedData{
		IncidentID: incidentID, Round: round, Nodes: nodes, Reason: strings.Join(reasons, "; ")}}
}

// LastConfirmed is when the last node of a round was confirmed sealed.
func LastConfirmed(seals []events.NodeSeal) time.Time {
	var last time.Time
	for _, s := range seals {
		if s.ConfirmedAt.After(last) {
			last = s.ConfirmedAt
		}
	}
	return last
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
