// Package incident is containment's domain: opening an incident from a
// breach detection, sealing every Vault node until each is confirmed
// sealed, and watching the unseal gate. It imports no transport: the
// store, the Vault nodes, the fence action and the event publisher are
// ports (small interfaces) that the app wires to PostgreSQL, Vault's API,
// a command and JetStream.
package incident

import (
	"context"
	"errors"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
)

// Phase is where an incident stands in the runbook.
type Phase string

// Phases owned by containment (later phases are added by their issues).
const (
	// PhaseContaining: the incident is open and nodes are being sealed.
	PhaseContaining Phase = "containing"
	// PhaseSealed: every node is confirmed sealed; the unseal gate is open.
	PhaseSealed Phase = "sealed"
	// PhaseUnsealed: the key holders unsealed the active node.
	PhaseUnsealed Phase = "unsealed"
	PhaseResolved Phase = "resolved"
	PhaseFailed   Phase = "failed"
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
}

// Detection is one breach event as received.
type Detection struct {
	EventID string
	Source  string
	Time    time.Time // the CloudEvent's time: when it was published
	Breach  events.BreachDetectedData
	// TraceParent is the trace context of the breach's processing.
	TraceParent string
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

// Store keeps incidents durably (containment's PostgreSQL schema).
type Store interface {
	// RecordDetection records a breach detection: it opens an incident
	// when none is open, attaches to the open one otherwise, and reports a
	// duplicate event id. It is atomic.
	RecordDetection(ctx context.Context, d Detection) (Incident, Outcome, error)
	// StartSealRound moves the incident to PhaseContaining and returns the
	// new round number (1 for the first seal, more for re-seals).
	StartSealRound(ctx context.Context, incidentID string) (int, error)
	// RecordSealed stores the round's per-node seals and moves the incident
	// to PhaseSealed.
	RecordSealed(ctx context.Context, incidentID string, round int, seals []events.NodeSeal, at time.Time) error
	// RecordGate stores the latest unseal-gate status of every node.
	RecordGate(ctx context.Context, incidentID string, gate []NodeStatus) error
	// RecordUnsealed moves the incident to PhaseUnsealed.
	RecordUnsealed(ctx context.Context, incidentID string, at time.Time) error
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

// Publisher emits the incident's events. id makes a publish idempotent:
// the same id is de-duplicated by JetStream, so a retried step never emits
// twice.
type Publisher interface {
	PublishWithID(ctx context.Context, name events.Name, id string, data any) error
}
