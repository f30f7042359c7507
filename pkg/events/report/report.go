// Package report builds the post-incident report from an incident's
// timeline: the events every service emitted for it. The events carry no
// secret, so neither does the report. Containment builds and stores it
// when the incident resolves; the CLI renders it (Markdown or JSON). It is
// part of the contract: `lockdown report --format json` prints Report.
package report

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
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

// Entry is one event of the incident's timeline.
type Entry struct {
	EventID string          `json:"event_id"`
	Type    events.Name     `json:"type"`
	Time    time.Time       `json:"time"`
	Source  string          `json:"source"`
	Data    json.RawMessage `json:"data"`
}

// Incident is what containment knows of the incident beyond its events.
type Incident struct {
	ID         string
	Severity   string
	Summary    string
	Source     string // the detector that raised it
	DetectedAt time.Time
	OpenedAt   time.Time
	Detections int
	// TraceParent is the incident's W3C traceparent (the breach's trace);
	// its trace id goes into the report so an operator handed an incident
	// id finds the trace in Jaeger.
	TraceParent string
	// JaegerURL is the Jaeger UI the report links the trace in (empty: no
	// link).
	JaegerURL string
}

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

// Target is a phase's targets: the written runbook's and Lockdown's own.
type Target struct{ Runbook, Lockdown time.Duration }

// Targets are the runbook's phase targets (shared/DESIGN.md) beside
// Lockdown's. Human-paced phases have no Lockdown target.
var Targets = map[string]Target{
	"containment":         {5 * time.Minute, time.Second},
	"assessment":          {15 * time.Minute, time.Minute},
	"revoke access":       {0, time.Minute},
	"unseal-key rotation": {30 * time.Minute, 0},
	"secret rotation":     {2 * time.Hour, 10 * time.Minute},
	"notification":        {0, 15 * time.Minute},
	"restore access":      {0, time.Minute},
	"total":               {4 * time.Hour, 0},
}

// Build makes the report from the incident and its timeline (any order).
// resolvedAt is when the incident ended; outcome is resolved or failed. An
// event whose data does not decode is listed among the failures.
func Build(inc Incident, entries []Entry, outcome, reason string, resolvedAt time.Time) Report {
	entries = slices.Clone(entries)
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].Time.Before(entries[j].Time) })
	r := Report{
		IncidentID: inc.ID, Outcome: outcome, Reason: reason, Severity: inc.Severity, Summary: inc.Summary,
		DetectedBy: inc.Source, Detections: inc.Detections, DetectedAt: inc.DetectedAt, ResolvedAt: resolvedAt, TraceID: TraceID(inc.TraceParent), TraceURL: TraceLink(inc.JaegerURL, TraceID(inc.TraceParent)),
		AffectedTenants: []string{}, Actors: []events.Actor{}, Failures: []Failure{}, Timeline: []Line{},
		RootCause: RootCausePending, LessonsLearned: []string{}, PreventiveMeasures: []string{}, ReviewState: ReviewDraft, ReviewHistory: []ReviewChange{},
		Actions: Actions{Seals: []events.NodeSeal{}, AuthMethodsDisabled: []string{}, AuthMethodsRemoved: []string{}, PoliciesDeleted: []string{}, LeasePrefixes: []string{}, LockdownTokensReplaced: []string{}, Rotations: []TenantRotation{},
			RotatedBy: map[string]int{}, MessagesSent: map[string]int{}, AuthMethodsRestored: []string{}, DrivenBy: map[string][]string{}},
	}
	first := map[events.Name]time.Time{}
	// The latest per-kind results of each tenant and each catalogue entry
	// (a retry's outcome replaces the first one's).
	tenantResults := map[string][]credentials.Result{}
	platformResults := map[string]credentials.Result{}
	var sealedEnd time.Time // the first round's last node confirmed sealed
	last := map[events.Name]time.Time{}
	a := &r.Actions
	drove := func(process, step string) {
		if process != "" && !slices.Contains(a.DrivenBy[process], step) {
			a.DrivenBy[process] = append(a.DrivenBy[process], step)
		}
	}
	for _, e := range entries {
		if _, ok := first[e.Type]; !ok {
			first[e.Type] = e.Time
		}
		last[e.Type] = e.Time
		line := Line{Time: e.Time, Type: e.Type, Source: e.Source}
		var err error
		switch e.Type {
		case events.IncidentOpened:
			var d events.IncidentOpenedData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				line.Summary = fmt.Sprintf("incident opened (%s): %s", d.Severity, d.Summary)
			}
		case events.VaultSealed:
			var d events.VaultSealedData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				if a.SealRounds == 0 {
					// Containment ends when the nodes were confirmed sealed,
					// not when the event could be recorded (PostgreSQL may
					// have been down in between).
					for _, n := range d.Nodes {
						if n.ConfirmedAt.After(sealedEnd) {
							sealedEnd = n.ConfirmedAt
						}
					}
				}
				a.Seals = append(a.Seals, d.Nodes...)
				a.SealRounds++
				drove(d.Process, "seal")
				line.Summary = fmt.Sprintf("%d node(s) confirmed sealed, %d ms after the breach event", len(d.Nodes), d.LatencyMS)
			}
		case events.ContainmentFailed:
			var d events.ContainmentFailedData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				r.Failures = append(r.Failures, Failure{Time: e.Time, Type: e.Type, What: fmt.Sprintf("nodes %v not sealed in time", d.Nodes), Reason: d.Reason})
				line.Summary = fmt.Sprintf("not sealed within the deadline: %v", d.Nodes)
			}
		case events.AssessmentCompleted:
			var d events.AssessmentCompletedData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				// The event lists a bounded number; affected_total counts them all.
				r.Scope, r.AffectedTenants, r.AffectedCount = d.Scope, append([]string{}, d.AffectedTenants...), max(d.AffectedTotal, len(d.AffectedTenants))
				if d.Actors != nil {
					r.Actors = d.Actors
				}
				line.Summary = fmt.Sprintf("assessed: scope %s, %d affected tenants, %d suspicious events, %d actors", d.Scope, max(d.AffectedTotal, len(d.AffectedTenants)), d.SuspiciousEvents, max(d.ActorsTotal, len(d.Actors)))
			}
		case events.VaultUnsealed:
			var d events.VaultUnsealedData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				drove(d.Process, "unseal gate")
				line.Summary = fmt.Sprintf("key holders unsealed %s after %d ms at the gate", d.Address, d.GateMS)
			}
		case events.AccessRevoked:
			var d events.AccessRevokedData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				// Every seal round ends with its own revocation: counts add up.
				a.AuthMethodsDisabled = union(a.AuthMethodsDisabled, d.AuthMethodsDisabled)
				a.AuthMethodsRemoved = union(a.AuthMethodsRemoved, d.AuthMethodsRemoved)
				a.PoliciesDeleted = union(a.PoliciesDeleted, d.PoliciesDeleted)
				if d.BatchTokenMaxTTL != "" {
					a.BatchTokenMaxTTL = d.BatchTokenMaxTTL
				}
				a.TokensRevoked += d.TokensRevoked
				a.TokensKept, a.KeyringTerm = d.TokensKept, d.KeyTerm
				a.VaultChanges = append(a.VaultChanges, d.Reconciled...)
				a.GenerateRootCancelled += d.GenerateRootCancelled
				a.LockdownTokensReplaced, a.LockdownTokensNotReplaced = nonNil(d.TokensReplaced), d.TokensNotReplaced
				a.LeasePrefixes = nonNil(d.LeasePrefixes)
				drove(d.Process, "revoke access")
				line.Summary = fmt.Sprintf("auth methods %v disabled, %d tokens revoked (%d kept), keyring rotated to term %d", d.AuthMethodsDisabled, d.TokensRevoked, d.TokensKept, d.KeyTerm)
			}
		case events.VaultReconciled:
			var d events.VaultReconciledData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				a.VaultChanges = append(a.VaultChanges, d.Reconciled...)
				a.GenerateRootCancelled += d.GenerateRootCancelled
				a.SweepTokensRevoked += d.TokensRevoked
				a.TokensRevoked += d.TokensRevoked
				drove(d.Process, "sweep "+d.Stage)
				line.Summary = fmt.Sprintf("Vault swept again (%s): %d tokens revoked, %d objects reconciled, %d generate-root attempts cancelled",
					d.Stage, d.TokensRevoked, len(d.Reconciled), d.GenerateRootCancelled)
			}
		case events.UnsealKeysRotated:
			var d events.UnsealKeysRotatedData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				a.UnsealKeys = &UnsealKeys{Shares: d.Shares, Threshold: d.Threshold, PGPFingerprints: nonNil(d.PGPFingerprints), Verified: d.Verified, Proof: d.Proof, RecoveryKeys: d.RecoveryKeys}
				drove(d.Process, "rekey ceremony")
				line.Summary = fmt.Sprintf("unseal keys rotated: %d shares, threshold %d, verified %v", d.Shares, d.Threshold, d.Verified)
			}
		case events.RotationPlanned:
			var d events.RotationPlannedData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				a.TenantsPlanned = d.Tenants
				line.Summary = fmt.Sprintf("rotation planned: %d tenants (policy %s)", d.Tenants, d.Policy)
			}
		case events.RotationTenantCompleted:
			var d events.RotationTenantCompletedData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				a.Rotations = append(a.Rotations, TenantRotation{TenantID: d.TenantID, Affected: d.Affected, SSHFingerprint: d.SSHFingerprint,
					DKIMSelector: d.DKIMSelector, DKIMState: d.DKIMState, SMTPRotated: d.SMTPPasswordRotate, APIKeysDestroyed: d.APIKeysDestroyed, RotatedBy: d.RotatedBy})
				a.APIKeysDestroyed += d.APIKeysDestroyed
				tenantResults[d.TenantID] = d.Results
				if d.RotatedBy != "" {
					a.RotatedBy[d.RotatedBy]++
				}
				line.Summary = fmt.Sprintf("%s rotated (SSH, SMTP, DKIM %s), %d API keys destroyed", d.TenantID, d.DKIMSelector, d.APIKeysDestroyed)
			}
		case events.RotationDKIMActivated:
			var d events.RotationDKIMActivatedData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				for i := range a.Rotations {
					if a.Rotations[i].TenantID == d.TenantID {
						a.Rotations[i].DKIMState = "active"
					}
				}
				for i, res := range tenantResults[d.TenantID] {
					if res.Kind == credentials.DKIM {
						tenantResults[d.TenantID][i].State, tenantResults[d.TenantID][i].Count = credentials.Rotated, 1
					}
				}
				line.Summary = fmt.Sprintf("%s DKIM key %s active: the tenant's DNS shows %s", d.TenantID, d.Selector, d.Name)
			}
		case events.RotationTenantFailed:
			var d events.RotationTenantFailedData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				r.Failures = append(r.Failures, Failure{Time: e.Time, Type: e.Type, TenantID: d.TenantID, What: "rotation (" + d.Step + ")", Reason: d.Reason})
				tenantResults[d.TenantID] = d.Results
				line.Summary = fmt.Sprintf("%s rotation failed at %s", d.TenantID, d.Step)
			}
		case events.RotationPlatformDone:
			var d events.RotationPlatformCompletedData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				platformResults[d.Entry] = d.Result
				line.Summary = fmt.Sprintf("platform entry %s (%s): %s, %d credentials", d.Entry, d.Result.Kind, d.Result.State, d.Result.Count)
				if d.Result.State == credentials.Failed {
					r.Failures = append(r.Failures, Failure{Time: e.Time, Type: e.Type, What: "platform entry " + d.Entry + " (" + string(d.Result.Kind) + ")", Reason: d.Result.Reason})
				}
			}
		case events.RotationCompleted:
			var d events.RotationCompletedData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				a.TenantsRotated, a.TenantsFailed = d.Completed, d.Failed
				line.Summary = fmt.Sprintf("rotation completed: %d tenants, %d failed", d.Completed, d.Failed)
				if d.Platform+d.PlatformFailed > 0 {
					line.Summary += fmt.Sprintf("; platform entries: %d rotated, %d failed", d.Platform, d.PlatformFailed)
				}
			}
		case events.NotificationSent:
			var d events.NotificationSentData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				a.MessagesSent[d.Channel]++
				line.Summary = fmt.Sprintf("%s notified by %s", d.TenantID, d.Channel)
			}
		case events.NotificationFailed:
			var d events.NotificationFailedData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				r.Failures = append(r.Failures, Failure{Time: e.Time, Type: e.Type, TenantID: d.TenantID, What: "notification (" + d.Channel + ")", Reason: d.Reason})
				line.Summary = fmt.Sprintf("%s not notified by %s", d.TenantID, d.Channel)
			}
		case events.NotificationsCompleted:
			var d events.NotificationsCompletedData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				a.TenantsNotified, a.NotificationsFailed = d.Sent, d.Failed
				line.Summary = fmt.Sprintf("notifications completed: %d tenants notified, %d not", d.Sent, d.Failed)
				if d.Late > 0 {
					line.Summary += fmt.Sprintf(", %d late (past their deadline, still being tried)", d.Late)
				}
			}
		case events.AccessRestored:
			var d events.AccessRestoredData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				a.AuthMethodsRestored = nonNil(d.AuthMethods)
				drove(d.Process, "restore access")
				line.Summary = fmt.Sprintf("access restored: %v re-enabled", d.AuthMethods)
				if d.Round > 1 {
					line.Summary = fmt.Sprintf("access restored again after seal round %d: %v re-enabled", d.Round, d.AuthMethods)
				}
			}
		case events.IncidentStuck:
			var d events.IncidentStuckData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				r.Failures = append(r.Failures, Failure{Time: e.Time, Type: e.Type, What: "stuck in phase " + d.Phase, Reason: d.Reason})
				line.Summary = fmt.Sprintf("stuck in phase %s since %s: %s", d.Phase, d.Since.UTC().Format(time.RFC3339), d.Reason)
			}
		case events.IncidentResumeRequested:
			var d events.IncidentControlData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				line.Summary = "resume requested by " + d.RequestedBy
			}
		case events.IncidentConfirmRequested:
			var d events.IncidentControlData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				line.Summary = "sealing confirmed by " + d.RequestedBy
			}
		case events.IncidentAbortRequested:
			var d events.IncidentControlData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				line.Summary = fmt.Sprintf("abort requested by %s: %s", d.RequestedBy, d.Reason)
			}
		case events.IncidentReviewRequested:
			var d events.IncidentReviewData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				change := r.applyReview(d, e.Time)
				line.Summary = fmt.Sprintf("review by %s: %s", d.RequestedBy, strings.Join(change.Changed, ", "))
				if change.Ignored {
					line.Summary += " (ignored: the review was final)"
				}
			}
		default:
			line.Summary = string(e.Type)
		}
		if err != nil {
			// One unreadable event must not keep the incident from its
			// report: it is listed as a failure of the record itself.
			r.Failures = append(r.Failures, Failure{Time: e.Time, Type: e.Type, What: "unreadable event " + e.EventID, Reason: err.Error()})
			line.Summary = "unreadable: " + err.Error()
		}
		r.Timeline = append(r.Timeline, line)
	}
	sort.Slice(a.Rotations, func(i, j int) bool { return a.Rotations[i].TenantID < a.Rotations[j].TenantID })
	a.Credentials = credentialRows(tenantResults, platformResults)
	sort.Strings(r.AffectedTenants)

	phase := func(name string, start, end time.Time) {
		if start.IsZero() || end.IsZero() {
			return
		}
		t := Targets[name]
		d := end.Sub(start)
		r.Phases = append(r.Phases, Phase{Name: name, Start: start, End: end, Duration: d, RunbookTarget: t.Runbook, LockdownTarget: t.Lockdown,
			Met: (t.Runbook == 0 || d <= t.Runbook) && (t.Lockdown == 0 || d <= t.Lockdown)})
	}
	if sealedEnd.IsZero() {
		sealedEnd = first[events.VaultSealed]
	}
	phase("containment", inc.DetectedAt, sealedEnd)
	phase("assessment", first[events.IncidentOpened], first[events.AssessmentCompleted])
	phase("revoke access", first[events.VaultUnsealed], first[events.AccessRevoked])
	phase("unseal-key rotation", first[events.AccessRevoked], first[events.UnsealKeysRotated])
	phase("secret rotation", first[events.RotationPlanned], first[events.RotationCompleted])
	phase("notification", first[events.RotationPlanned], first[events.NotificationsCompleted])
	restoreStart := first[events.RotationCompleted]
	if n := first[events.NotificationsCompleted]; n.After(restoreStart) {
		restoreStart = n
	}
	phase("restore access", restoreStart, first[events.AccessRestored])
	phase("total", inc.DetectedAt, resolvedAt)
	if r.Phases == nil {
		r.Phases = []Phase{}
	}
	return r
}

// credentialRows sums the per-kind results into the table, one row per
// kind of the contract.
func credentialRows(tenants map[string][]credentials.Result, platform map[string]credentials.Result) []CredentialRow {
	rows := []CredentialRow{}
	at := map[credentials.Kind]int{}
	for _, k := range credentials.Kinds() {
		at[k.Kind] = len(rows)
		rows = append(rows, CredentialRow{Kind: k.Kind, Title: k.Title, Scope: k.Scope, NotCovered: -1})
	}
	add := func(res credentials.Result) {
		i, ok := at[res.Kind]
		if !ok {
			return // a kind this reader does not know: newer than it
		}
		switch {
		case res.State == credentials.Failed:
			rows[i].Failed++
		case res.State.Done() && res.State != credentials.AwaitingDNS:
			rows[i].Rotated += res.Count
			rows[i].Jobs++
		default: // pending, or a DKIM key waiting for the tenant's DNS
			rows[i].Pending++
		}
	}
	for _, results := range tenants {
		for _, res := range results {
			add(res)
		}
	}
	for _, res := range platform {
		add(res)
	}
	return rows
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

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// union appends to list the items of more it lacks.
func union(list, more []string) []string {
	for _, m := range more {
		if !slices.Contains(list, m) {
			list = append(list, m)
		}
	}
	return list
}

// applyReview folds one review request into the report, in timeline order:
// given fields replace, nothing changes once the review is final.
func (r *Report) applyReview(d events.IncidentReviewData, at time.Time) ReviewChange {
	c := ReviewChange{By: d.RequestedBy, At: at, Changed: []string{}, Ignored: r.ReviewState == ReviewFinal}
	if d.RootCause != "" {
		c.Changed = append(c.Changed, "root_cause")
	}
	if len(d.LessonsLearned) > 0 {
		c.Changed = append(c.Changed, "lessons_learned")
	}
	if len(d.PreventiveMeasures) > 0 {
		c.Changed = append(c.Changed, "preventive_measures")
	}
	if d.Final {
		c.Changed = append(c.Changed, "final")
	}
	if !c.Ignored {
		if d.RootCause != "" {
			r.RootCause = d.RootCause
		}
		if len(d.LessonsLearned) > 0 {
			r.LessonsLearned = d.LessonsLearned
		}
		if len(d.PreventiveMeasures) > 0 {
			r.PreventiveMeasures = d.PreventiveMeasures
		}
		if d.Final {
			r.ReviewState = ReviewFinal
		}
	}
	r.ReviewHistory = append(r.ReviewHistory, c)
	return c
}

// TraceLink is the page of a trace in the Jaeger UI at jaegerURL ("" when
// either is unknown).
func TraceLink(jaegerURL, traceID string) string {
	if jaegerURL == "" || traceID == "" {
		return ""
	}
	return strings.TrimSuffix(jaegerURL, "/") + "/trace/" + traceID
}

// TraceID is the trace id of a W3C traceparent ("00-<trace id>-<span
// id>-<flags>"), or "" when there is none or it is malformed.
func TraceID(traceparent string) string {
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 || len(parts[1]) != 32 || strings.Trim(parts[1], "0123456789abcdef") != "" || strings.Trim(parts[1], "0") == "" {
		return ""
	}
	return parts[1]
}
