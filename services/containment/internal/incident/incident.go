// Package incident is containment's domain of the first minutes: sealing
// every Vault node on a breach — at once, before and independently of
// PostgreSQL — and recording the detection and the seal round when the
// database answers. The later steps of an incident are driven by package
// engine from what is recorded here. It imports no transport: the store,
// the Vault nodes and the fence action are ports (small interfaces) that
// the app wires to PostgreSQL, Vault's API and a command.
package incident

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
)

// Phase is where an incident stands in the runbook.
type Phase string

// Phases owned by containment (later phases are added by their issues).
const (
	// PhaseAwaiting: a breach that may not seal Vault by itself (its
	// severity or Vault cluster is outside the auto-seal policy) opened
	// the incident; it waits for an operator's lockdown confirm.
	PhaseAwaiting Phase = "awaiting_confirmation"
	// PhaseContaining: the incident is open and nodes are being sealed.
	PhaseContaining Phase = "containing"
	// PhaseSealed: every node is confirmed sealed; the unseal gate is open.
	PhaseSealed Phase = "sealed"
	// PhaseUnsealed: the key holders unsealed the active node; access is
	// revoked next (once per seal round).
	PhaseUnsealed Phase = "unsealed"
	// PhaseRecovering: access is revoked; the rekey ceremony, rotation,
	// notification and restoration follow.
	PhaseRecovering Phase = "recovering"
	PhaseResolved   Phase = "resolved"
	// PhaseFailed: an operator aborted the incident (lockdown abort).
	PhaseFailed Phase = "failed"
)

// Open reports whether an incident in this phase is still open.
func (p Phase) Open() bool { return p != PhaseResolved && p != PhaseFailed }

// Incident is one response to a breach.
type Incident struct {
	ID         string
	OpenedBy   string // the breach event id that opened it
	DetectedAt time.Time
	Severity   events.Severity
	Summary    string
	Source     string
	Phase      Phase
	OpenedAt   time.Time
	SealedAt   time.Time
	UnsealedAt time.Time
	// BreachPublishedAt is the opening breach event's time: containment
	// latency is measured from it.
	BreachPublishedAt time.Time
	Detections        int
	SealRound         int
	Gate              []NodeStatus
	// TraceParent is the trace the opening breach started: the incident's
	// loops continue it, so one incident is one trace.
	TraceParent string
	// Version counts the incident's recorded changes: every write of the
	// engine is a compare-and-swap on it.
	Version int64
	// RoundSealed tells whether the current seal round is confirmed on
	// every node (false while a node is still being sealed);
	// RoundBreachAt is the time of the breach event that started it (its
	// latency counts from it).
	RoundSealed   bool
	RoundBreachAt time.Time
	// StuckReason and StuckSince say why the incident cannot move ("" when
	// it can); Redrives counts operators' resume requests.
	StuckReason string
	StuckSince  time.Time
	Redrives    int
	// FailureReason is an aborted incident's reason.
	FailureReason string
}

// Detection is one breach event as received.
type Detection struct {
	EventID string
	Source  string
	Time    time.Time // the CloudEvent's time: when it was published
	Breach  events.BreachDetectedData
	// TraceParent is the trace context of the breach's processing.
	TraceParent string
	// Unsealed is set when the breach was not allowed to seal (the
	// auto-seal policy): it is recorded without a seal round, and a new
	// incident waits for confirmation.
	Unsealed bool
}

// Policy says which breaches may seal Vault by themselves.
type Policy struct {
	// Severities that seal at once (default: critical and high).
	Severities []events.Severity
	// Clusters whose breaches seal at once (a breach's vault_cluster);
	// empty: any.
	Clusters []string
}

// Auto reports whether a breach may seal Vault without an operator.
func (p Policy) Auto(b events.BreachDetectedData) bool {
	if !slices.Contains(p.Severities, b.Severity) {
		return false
	}
	return len(p.Clusters) == 0 || b.VaultCluster == "" || slices.Contains(p.Clusters, b.VaultCluster)
}

// Outcome says what recording a detection did.
type Outcome string

// Outcomes of Store.RecordDetection.
const (
	// Opened: the detection opened a new incident.
	Opened Outcome = "opened"
	// Attached: an incident was already open; the detection joined it.
	Attached Outcome = "attached"
	// Duplicate: this event id was recorded before.
	Duplicate Outcome = "duplicate"
)

// NodeStatus is one node's seal status, as sys/seal-status and sys/health
// report it (neither needs a token).
type NodeStatus struct {
	Address   string `json:"address"`
	Reachable bool   `json:"reachable"`
	Sealed    bool   `json:"sealed"`
	// Active is true for the unsealed node that serves requests; an
	// unsealed standby has Active false.
	Active bool `json:"active"`
	// Threshold (t), Shares (n) and Progress of the unseal in progress.
	Threshold int    `json:"t"`
	Shares    int    `json:"n"`
	Progress  int    `json:"progress"`
	Error     string `json:"error,omitempty"`
}

// Store records breaches (containment's PostgreSQL schema).
type Store interface {
	// RecordBreach records a detection and the seal round it caused, in
	// one transaction: it opens an incident when none is open, attaches to
	// the open one otherwise, and reports a duplicate event id. When the
	// round sealed anything (or the incident is new, or past its unseal
	// gate) it starts a new seal round with these seals. The events
	// returned by emit are written to the outbox in the same transaction.
	RecordBreach(ctx context.Context, d Detection, seals []events.NodeSeal, emit func(Incident, Outcome, bool) []events.Outgoing) (Incident, Outcome, error)
	// OpenIncident returns the open incident, or ErrNoOpenIncident.
	OpenIncident(ctx context.Context) (Incident, error)
}

// ErrNoOpenIncident is returned when no incident is open.
var ErrNoOpenIncident = errors.New("no open incident")

// ErrStandby is returned by Vault.Seal when the node is a standby, which
// Vault refuses to seal ("please restart instead"): it must be fenced.
var ErrStandby = errors.New("vault node is a standby and cannot be sealed through the API")

// Vault talks to the configured nodes.
type Vault interface {
	Nodes() []string
	Status(ctx context.Context, node string) NodeStatus
	// Seal seals a node (sys/seal with the seal-only token). It returns
	// ErrStandby for a standby.
	Seal(ctx context.Context, node string) error
}

// Fencer takes a node Vault will not seal through its API out of service,
// so it comes back sealed (a Shamir-sealed node restarts sealed).
type Fencer interface {
	Fence(ctx context.Context, node string) error
}
