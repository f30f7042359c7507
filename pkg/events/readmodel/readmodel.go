// Package readmodel declares the incident document containment keeps in
// the key-value bucket events.BucketIncidents: everything an operator's
// view of an incident shows, in one JSON value per incident, rewritten
// after every change. It is part of the contract: readers (the CLI, the
// console) decode it with Decode and need nothing else from containment.
//
// The document holds no secret: nonces of the rekey ceremony are public
// to the key holders by design, shares never reach containment's records.
package readmodel

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/report"
)

// SchemaVersion is the document's schema version. A reader refuses a
// newer one (ErrNewerSchema) instead of showing a half-understood state.
const SchemaVersion = 1

// ErrNewerSchema is returned by Decode when the document was written by a
// containment newer than the reader: upgrade the CLI.
var ErrNewerSchema = errors.New("incident document has a newer schema than this reader")

// MaxFailures bounds the failures a document lists (FailuresTotal counts
// them all): on a bad day ten thousand tenants can fail, and a key-value
// entry must stay small. The report lists every one.
const MaxFailures = 50

// Incident is one incident as its readers see it.
type Incident struct {
	Schema int `json:"schema" doc:"The document's schema version (1)."`
	// Version increases with every change containment records for the
	// incident; UpdatedAt is when this document was written.
	Version    int64      `json:"version" doc:"Containment's change counter of the incident (higher is newer)."`
	UpdatedAt  time.Time  `json:"updated_at" doc:"When containment wrote this document."`
	ID         string     `json:"id" doc:"The incident id."`
	Phase      string     `json:"phase" doc:"The incident's phase (opened, awaiting_confirmation, sealing, sealed, unsealed, recovering, resolved, failed)."`
	Severity   string     `json:"severity" doc:"The breach's severity."`
	Summary    string     `json:"summary" doc:"The breach's summary."`
	Source     string     `json:"source" doc:"The detector that raised it."`
	OpenedBy   string     `json:"opened_by_event" doc:"Id of the breach event that opened it: the one that sealed, when a re-detection was recorded before it (the stream's incident.opened keeps what was known then)."`
	DetectedAt time.Time  `json:"detected_at" doc:"When the breach was detected."`
	OpenedAt   time.Time  `json:"opened_at" doc:"When containment opened the incident."`
	SealedAt   *time.Time `json:"sealed_at,omitempty" doc:"When every node was confirmed sealed."`
	UnsealedAt *time.Time `json:"unsealed_at,omitempty" doc:"When the key holders' unseal was seen."`
	ResolvedAt *time.Time `json:"resolved_at,omitempty" doc:"When the incident was closed."`
	Detections int        `json:"detections" doc:"Breach events merged into the incident."`
	SealRounds int        `json:"seal_rounds" doc:"Seal rounds (a breach during recovery seals again)."`
	Seals      []Seal     `json:"seals,omitempty" doc:"Every node's seal, per round."`
	Gate       []GateNode `json:"unseal_gate,omitempty" doc:"Each node's seal status while the key holders unseal."`
	// Phases are the runbook's phases with their targets, built from the
	// timeline exactly as the report builds them.
	Phases []report.Phase `json:"phases" doc:"The runbook's phases: start, end, duration against the runbook's and Lockdown's targets."`
	// Recovery: revocation, the rekey ceremony, restore.
	Recovery *Recovery `json:"recovery,omitempty" doc:"Revocation, the rekey ceremony and the restore (once access is revoked)."`
	// Rotation and Notification: phase 6 and 7 progress.
	Rotation     *Progress `json:"rotation,omitempty" doc:"Rotation progress over the planned tenants."`
	Notification *Progress `json:"notification,omitempty" doc:"Notification progress over the planned tenants."`
	// Failures are the first MaxFailures failures; FailuresTotal counts all.
	Failures      []report.Failure `json:"failures,omitempty" doc:"The first failures (at most 50)."`
	FailuresTotal int              `json:"failures_total" doc:"Every failure recorded."`
	// StuckReason says why the incident cannot move (since StuckSince);
	// FailureReason why it was closed as failed.
	StuckReason   string     `json:"stuck_reason,omitempty" doc:"Why the incident cannot move now."`
	StuckSince    *time.Time `json:"stuck_since,omitempty" doc:"Since when it is stuck."`
	FailureReason string     `json:"failure_reason,omitempty" doc:"Why it was closed as failed."`
	// TraceID is the incident's trace; readers link it to their Jaeger.
	TraceID string `json:"trace_id,omitempty" doc:"The incident's trace id (W3C)."`
	// TraceURL is filled by a reader that knows the Jaeger UI.
	TraceURL string `json:"trace_url,omitempty" doc:"Not written by containment: a reader's link to the trace."`
	// Report says which report the reports bucket holds for it.
	Report ReportRef `json:"report" doc:"The report kept in the reports object store."`
}

// ReportRef says which report events.BucketReports holds.
type ReportRef struct {
	State string    `json:"state,omitempty" doc:"final (the incident is closed), draft, or empty (none written yet)." enum:"final,draft,"`
	At    time.Time `json:"at,omitempty" doc:"When it was written."`
}

// Report states.
const (
	ReportFinal = "final"
	ReportDraft = "draft"
)

// Seal is one node's seal in one round.
type Seal struct {
	Round int `json:"round" doc:"The seal round."`
	events.NodeSeal
}

// GateNode is one node's seal status as containment last read it.
type GateNode struct {
	Address   string `json:"address" doc:"The node's API address."`
	Reachable bool   `json:"reachable" doc:"It answered sys/seal-status."`
	Sealed    bool   `json:"sealed" doc:"It is sealed."`
	Active    bool   `json:"active" doc:"Unsealed and serving (not a standby)."`
	Threshold int    `json:"t" doc:"Unseal threshold."`
	Shares    int    `json:"n" doc:"Unseal shares."`
	Progress  int    `json:"progress" doc:"Unseal shares submitted so far."`
}

// State of a node as a word for the screen.
func (g GateNode) State() string {
	switch {
	case !g.Reachable:
		return "unreachable"
	case !g.Sealed && g.Active:
		return "unsealed, active"
	case !g.Sealed:
		return "unsealed, standby"
	}
	return "sealed"
}

// Recovery is phases 4, 5 and 8: revocation, the ceremony, the restore.
type Recovery struct {
	AccessRevokedAt time.Time `json:"access_revoked_at" doc:"When access was revoked."`
	Revoked         Revoked   `json:"revoked" doc:"What the revocation removed."`
	// KeptReasons counts the tokens kept, by reason.
	KeptReasons  map[string]int `json:"kept_reasons,omitempty" doc:"Tokens kept, by reason."`
	Ceremony     Ceremony       `json:"ceremony" doc:"The rekey ceremony."`
	RotationDone bool           `json:"rotation_done" doc:"Rotation has completed."`
	NotifiedDone bool           `json:"notifications_done" doc:"Notifications have completed."`
	RestoredAt   time.Time      `json:"restored_at" doc:"When access was restored."`
}

// Revoked counts what the revocation removed.
type Revoked struct {
	AuthMethodsDisabled []string `json:"auth_methods_disabled" doc:"Auth methods disabled."`
	TokensRevoked       int      `json:"tokens_revoked" doc:"Tokens revoked."`
	TokensKept          int      `json:"tokens_kept" doc:"Tokens kept."`
	LeasePrefixes       []string `json:"lease_prefixes" doc:"Lease prefixes revoked."`
	KeyTerm             int      `json:"key_term" doc:"The keyring term after rotation."`
}

// Ceremony is the rekey ceremony's progress. It never holds a share.
type Ceremony struct {
	Phase          string    `json:"phase" doc:"collecting_current_shares, verifying_new_shares or completed (empty before it starts)."`
	Nonce          string    `json:"nonce" doc:"The nonce key holders pass to vault operator rekey."`
	RecoveryKeys   bool      `json:"recovery_keys" doc:"Recovery keys (auto-unseal) rather than unseal keys."`
	T              int       `json:"t" doc:"Threshold."`
	N              int       `json:"n" doc:"Shares."`
	Progress       int       `json:"progress" doc:"Current shares submitted."`
	VerifyNonce    string    `json:"verification_nonce" doc:"The nonce of the verification of the new shares."`
	VerifyProgress int       `json:"verification_progress" doc:"New shares verified."`
	Fingerprints   []string  `json:"pgp_fingerprints" doc:"The holders' PGP key fingerprints."`
	StartedAt      time.Time `json:"started_at" doc:"When the ceremony started."`
	CompletedAt    time.Time `json:"completed_at" doc:"When it completed."`
	ConfirmedBy    string    `json:"confirmed_by" doc:"How completion was proven."`
	Restarts       int       `json:"restarts" doc:"Times it was restarted."`
	Note           string    `json:"note" doc:"Why it was restarted."`
}

// Commands are what a key holder runs now, with the current nonce (none
// outside the ceremony's steps that need holders).
func (c Ceremony) Commands() []string {
	switch c.Phase {
	case "collecting_current_shares":
		return []string{"vault operator rekey -nonce=" + c.Nonce}
	case "verifying_new_shares":
		return []string{"vault operator rekey -verify -nonce=" + c.VerifyNonce}
	}
	return nil
}

// Progress is a phase's progress over the planned tenants. Rate is
// tenants finished per second since the plan; ETA the time left at it.
type Progress struct {
	Planned   int       `json:"planned" doc:"Tenants planned."`
	Completed int       `json:"completed" doc:"Tenants done."`
	Failed    int       `json:"failed" doc:"Tenants failed."`
	InFlight  int       `json:"in_flight" doc:"Tenants being worked on (0 where the events do not say)."`
	Remaining int       `json:"remaining" doc:"Tenants not yet done, failed or in flight."`
	Since     time.Time `json:"since" doc:"When the plan was made."`
	Rate      float64   `json:"rate_per_second" doc:"Tenants finished per second since the plan."`
	ETA       string    `json:"eta,omitempty" doc:"Time left at that rate."`
}

// Settle computes Remaining, Rate and ETA at now (a reader settles again
// when it shows the document later than it was written).
func (p *Progress) Settle(now time.Time) {
	p.Remaining = max(p.Planned-p.Completed-p.Failed-p.InFlight, 0)
	p.Rate, p.ETA = 0, ""
	done := p.Completed + p.Failed
	if el := now.Sub(p.Since).Seconds(); el > 0 && done > 0 {
		p.Rate = float64(done) / el
		if left := p.Planned - done; left > 0 {
			p.ETA = (time.Duration(float64(left)/p.Rate*1000) * time.Millisecond).Round(time.Second).String()
		}
	}
}

// Closed reports whether the incident has ended (resolved or failed).
func (i Incident) Closed() bool { return i.Phase == "resolved" || i.Phase == "failed" }

// Settle brings the progress figures to now (a closed incident's stay as
// written: its rates end with it).
func (i *Incident) Settle(now time.Time) {
	if i.Closed() {
		return
	}
	for _, p := range []*Progress{i.Rotation, i.Notification} {
		if p != nil && p.Remaining+p.InFlight > 0 {
			p.Settle(now)
		}
	}
}

// Decode reads a document; ErrNewerSchema when this reader is too old.
func Decode(data []byte) (Incident, error) {
	var i Incident
	if err := json.Unmarshal(data, &i); err != nil {
		return i, fmt.Errorf("incident document: %w", err)
	}
	if i.Schema > SchemaVersion {
		return i, fmt.Errorf("%w (%d > %d): upgrade lockdown", ErrNewerSchema, i.Schema, SchemaVersion)
	}
	return i, nil
}
