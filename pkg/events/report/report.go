// Package report is the post-incident report: its type and its Markdown
// renderer. It is part of the contract — `lockdown report --format json`
// prints Report — and holds no secret. Containment builds it from the
// incident's timeline (services/containment/internal/reporting) and
// stores it; the CLI and the console read and render it.
package report

import (
	"strings"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/credentials"
)

// ReviewChange is one recorded change of the review.
type ReviewChange struct {
	By      string    `json:"by"`
	At      time.Time `json:"at"`
	Changed []string  `json:"changed"` // root_cause, lessons_learned, preventive_measures, final
	// Ignored: the review was already final.
	Ignored bool `json:"ignored,omitempty"`
}

// Review states.
const (
	ReviewDraft = "draft"
	ReviewFinal = "final"
)

// RootCausePending is the root cause until the review writes one.
const RootCausePending = "TBD - under investigation"

// Report is the post-incident report.
type Report struct {
	IncidentID         string         `json:"incident_id"`
	Outcome            string         `json:"outcome"` // resolved or failed
	Reason             string         `json:"reason,omitempty"`
	Severity           string         `json:"severity"`
	Summary            string         `json:"summary"`
	DetectedBy         string         `json:"detected_by"`
	Detections         int            `json:"detections"`
	DetectedAt         time.Time      `json:"detected_at"`
	TraceID            string         `json:"trace_id,omitempty"`
	TraceURL           string         `json:"trace_url,omitempty"`
	ResolvedAt         time.Time      `json:"resolved_at"`
	Scope              string         `json:"scope"`
	AffectedTenants    []string       `json:"affected_tenants"`
	AffectedCount      int            `json:"affected_tenant_count"`
	Actors             []events.Actor `json:"actors"`
	Actions            Actions        `json:"actions"`
	Phases             []Phase        `json:"phases"`
	Failures           []Failure      `json:"failures"`
	Timeline           []Line         `json:"timeline"`
	RootCause          string         `json:"root_cause"`
	LessonsLearned     []string       `json:"lessons_learned"`
	PreventiveMeasures []string       `json:"preventive_measures"`
	// ReviewState is draft until an operator marks the review final
	// (lockdown review --final); ReviewHistory lists every change, with
	// who made it.
	ReviewState   string         `json:"review_state"`
	ReviewHistory []ReviewChange `json:"review_history"`
	// CoveragePlanAt and Uncovered come from the last `lockdown plan`
	// when the report is shown with it: what Vault held then that no
	// kind or catalogue entry rotates.
	CoveragePlanAt *time.Time        `json:"coverage_plan_at,omitempty"`
	Uncovered      []credentials.Gap `json:"uncovered,omitempty"`
}

// Actions is what Lockdown did.
type Actions struct {
	Seals               []events.NodeSeal `json:"seals"`
	AuthMethodsDisabled []string          `json:"auth_methods_disabled"`
	AuthMethodsRemoved  []string          `json:"auth_methods_removed"`
	PoliciesDeleted     []string          `json:"policies_deleted"`
	BatchTokenMaxTTL    string            `json:"batch_token_max_ttl,omitempty"`
	// LockdownTokensReplaced and LockdownTokensNotReplaced name Lockdown's
	// own tokens by whether the incident replaced them (the last round's).
	LockdownTokensReplaced    []string `json:"lockdown_tokens_replaced"`
	LockdownTokensNotReplaced []string `json:"lockdown_tokens_not_replaced,omitempty"`
	TokensRevoked             int      `json:"tokens_revoked"`
	TokensKept                int      `json:"tokens_kept"`
	// VaultChanges are the objects of Vault's security configuration the
	// revocations and sweeps removed, restored or detected, with their
	// previous definitions; GenerateRootCancelled counts the
	// sys/generate-root attempts cancelled (alarms).
	VaultChanges          []events.VaultChange `json:"vault_changes,omitempty"`
	GenerateRootCancelled int                  `json:"generate_root_cancelled"`
	SweepTokensRevoked    int                  `json:"tokens_revoked_by_later_sweeps"`
	LeasePrefixes         []string             `json:"lease_prefixes_revoked"`
	KeyringTerm           int                  `json:"keyring_term"`
	UnsealKeys            *UnsealKeys          `json:"unseal_keys,omitempty"`
	TenantsPlanned        int                  `json:"tenants_planned"`
	TenantsRotated        int                  `json:"tenants_rotated"`
	TenantsFailed         int                  `json:"tenants_failed"`
	APIKeysDestroyed      int                  `json:"api_keys_destroyed"`
	Rotations             []TenantRotation     `json:"rotations"`
	RotatedBy             map[string]int       `json:"rotated_by"` // rotator process → tenants
	TenantsNotified       int                  `json:"tenants_notified"`
	NotificationsFailed   int                  `json:"tenants_not_notified"`
	MessagesSent          map[string]int       `json:"messages_sent"` // channel → count
	AuthMethodsRestored   []string             `json:"auth_methods_restored"`
	// Credentials is the per-kind table: every credential kind with how
	// many were rotated (or destroyed), failed and left pending, from the
	// per-kind results of the tenants' jobs and of the catalogue's
	// platform-wide entries (the latest of each, after retries).
	Credentials []CredentialRow `json:"credentials"`
	// SealRounds counts seal rounds (a breach during recovery seals again,
	// and its unseal is followed by another revocation).
	SealRounds int `json:"seal_rounds"`
	// DrivenBy names the containment processes that took each step (a
	// standby that took over from a dead leader appears beside it).
	DrivenBy map[string][]string `json:"driven_by"` // process → steps
}

// CredentialRow is one kind's line of the per-kind table.
type CredentialRow struct {
	Kind  credentials.Kind  `json:"kind"`
	Title string            `json:"title"`
	Scope credentials.Scope `json:"scope"`
	// Rotated counts the credentials replaced or destroyed (API keys,
	// transit keys, secrets…); Jobs the tenants or entries that did.
	Rotated int `json:"rotated"`
	Jobs    int `json:"jobs"`
	// Failed counts the tenants or entries whose step of this kind failed;
	// Pending those not reached, or waiting (a DKIM key for the tenant's
	// DNS).
	Failed  int `json:"failed"`
	Pending int `json:"pending"`
	// NotCovered counts what Vault held of the kind that nothing rotates,
	// by the last `lockdown plan` (set when the report is shown with it;
	// -1 unknown).
	NotCovered int `json:"not_covered"`
}

// UnsealKeys is the rekey ceremony's result.
type UnsealKeys struct {
	Shares          int      `json:"shares"`
	Threshold       int      `json:"threshold"`
	PGPFingerprints []string `json:"pgp_fingerprints"`
	Verified        bool     `json:"verified"`
	Proof           string   `json:"proof,omitempty"`
	RecoveryKeys    bool     `json:"recovery_keys"`
}

// TenantRotation is one tenant's rotation, as recorded (public values only).
type TenantRotation struct {
	TenantID       string `json:"tenant_id"`
	Affected       bool   `json:"affected"`
	SSHFingerprint string `json:"ssh_fingerprint"`
	DKIMSelector   string `json:"dkim_selector"`
	// DKIMState is how far the DKIM key went: active, awaiting_dns or
	// unverified (rotation.tenant.completed, then rotation.dkim.activated).
	DKIMState        string `json:"dkim_state,omitempty"`
	SMTPRotated      bool   `json:"smtp_rotated"`
	APIKeysDestroyed int    `json:"api_keys_destroyed"`
	RotatedBy        string `json:"rotated_by,omitempty"`
}

// Phase is one runbook phase with its duration against its targets.
type Phase struct {
	Name           string        `json:"name"`
	Start          time.Time     `json:"start"`
	End            time.Time     `json:"end"`
	Duration       time.Duration `json:"duration_ns"`
	RunbookTarget  time.Duration `json:"runbook_target_ns,omitempty"`
	LockdownTarget time.Duration `json:"lockdown_target_ns,omitempty"`
	// Met is false when a target exists and the phase took longer.
	Met bool `json:"met"`
}

// Failure is one thing that went wrong.
type Failure struct {
	Time     time.Time   `json:"time"`
	Type     events.Name `json:"type"`
	TenantID string      `json:"tenant_id,omitempty"`
	What     string      `json:"what"`
	Reason   string      `json:"reason"`
}

// Line is one event of the timeline, summarised.
type Line struct {
	Time    time.Time   `json:"time"`
	Type    events.Name `json:"type"`
	Source  string      `json:"source"`
	Summary string      `json:"summary"`
}

// AddCoverage fills the table's not-covered column from a plan (lockdown
// plan), and lists its gaps.
func (r *Report) AddCoverage(p credentials.Plan) {
	at := p.At
	r.CoveragePlanAt, r.Uncovered = &at, p.Uncovered
	byEngine := map[string]int{}
	for _, g := range p.Uncovered {
		byEngine[g.Type]++
	}
	for i, row := range r.Actions.Credentials {
		info, _ := credentials.Of(row.Kind)
		r.Actions.Credentials[i].NotCovered = 0
		if info.Scope == credentials.PlatformWide {
			r.Actions.Credentials[i].NotCovered = byEngine[info.Engine]
		}
	}
}

// TraceLink is the page of a trace in the Jaeger UI at jaegerURL ("" when
// either is unknown).
func TraceLink(jaegerURL, traceID string) string {
	if jaegerURL == "" || traceID == "" {
		return ""
	}
	return strings.TrimSuffix(jaegerURL, "/") + "/trace/" + traceID
}
