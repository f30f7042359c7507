// Package reporting builds the post-incident report (report.Report) from
// an incident's timeline: the events every service emitted for it, which
// carry no secret, so neither does the report. Containment builds it as a
// draft while the incident runs and stores the final one when it ends;
// the CLI and the console only read it (the report type and its renderer
// are the contract's, pkg/events/report).
package reporting

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/pkg/events/report"
	"github.com/lockdown/lockdown/services/containment/internal/incident"
)

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

// Target is a phase's targets: the written runbook's and Lockdown's own.
type Target struct{ Runbook, Lockdown time.Duration }

// targets are the runbook's phase targets (shared/DESIGN.md) beside
// Lockdown's. Human-paced phases have no Lockdown target.
func targets() map[string]Target {
	return map[string]Target{
		"containment":         {5 * time.Minute, time.Second},
		"assessment":          {15 * time.Minute, time.Minute},
		"revoke access":       {0, time.Minute},
		"unseal-key rotation": {30 * time.Minute, 0},
		"secret rotation":     {2 * time.Hour, 10 * time.Minute},
		"notification":        {0, 15 * time.Minute},
		"restore access":      {0, time.Minute},
		"total":               {4 * time.Hour, 0},
	}
}

// Build makes the report from the incident and its timeline (any order).
// resolvedAt is when the incident ended; outcome is resolved or failed. An
// event whose data does not decode is listed among the failures.
func Build(inc Incident, entries []Entry, outcome, reason string, resolvedAt time.Time) report.Report {
	entries = slices.Clone(entries)
	slices.SortStableFunc(entries, Order)
	r := report.Report{
		IncidentID: inc.ID, Outcome: outcome, Reason: reason, Severity: inc.Severity, Summary: inc.Summary,
		DetectedBy: inc.Source, Detections: inc.Detections, DetectedAt: inc.DetectedAt, ResolvedAt: resolvedAt, TraceID: TraceID(inc.TraceParent), TraceURL: report.TraceLink(inc.JaegerURL, TraceID(inc.TraceParent)),
		AffectedTenants: []string{}, Actors: []events.Actor{}, Failures: []report.Failure{}, Timeline: []report.Line{},
		RootCause: report.RootCausePending, LessonsLearned: []string{}, PreventiveMeasures: []string{}, ReviewState: report.ReviewDraft, ReviewHistory: []report.ReviewChange{},
		Actions: report.Actions{Seals: []events.NodeSeal{}, AuthMethodsDisabled: []string{}, AuthMethodsRemoved: []string{}, PoliciesDeleted: []string{}, LeasePrefixes: []string{}, LockdownTokensReplaced: []string{}, Rotations: []report.TenantRotation{},
			RotatedBy: map[string]int{}, MessagesSent: map[string]int{}, AuthMethodsRestored: []string{}, DrivenBy: map[string][]string{}},
	}
	first := map[events.Name]time.Time{}
	// The latest per-kind results of each tenant and each catalogue entry
	// (a retry's outcome replaces the first one's).
	tenantResults := map[string][]credentials.Result{}
	platformResults := map[string]credentials.Result{}
	var sealedEnd time.Time // the first round's last node confirmed sealed
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
		if f, ok := FailureOf(e); ok {
			r.Failures = append(r.Failures, f)
		}
		line := report.Line{Time: e.Time, Type: e.Type, Source: e.Source}
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
					sealedEnd = incident.LastConfirmed(d.Nodes)
				}
				a.Seals = append(a.Seals, d.Nodes...)
				a.SealRounds++
				drove(d.Process, "seal")
				line.Summary = fmt.Sprintf("%d node(s) confirmed sealed, %d ms after the breach event", len(d.Nodes), d.LatencyMS)
			}
		case events.ContainmentFailed:
			var d events.ContainmentFailedData
			if err = json.Unmarshal(e.Data, &d); err == nil {
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
				a.UnsealKeys = &report.UnsealKeys{Shares: d.Shares, Threshold: d.Threshold, PGPFingerprints: nonNil(d.PGPFingerprints), Verified: d.Verified, Proof: d.Proof, RecoveryKeys: d.RecoveryKeys}
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
				a.Rotations = append(a.Rotations, report.TenantRotation{TenantID: d.TenantID, Affected: d.Affected, SSHFingerprint: d.SSHFingerprint,
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
				tenantResults[d.TenantID] = d.Results
				line.Summary = fmt.Sprintf("%s rotation failed at %s", d.TenantID, d.Step)
			}
		case events.RotationPlatformDone:
			var d events.RotationPlatformCompletedData
			if err = json.Unmarshal(e.Data, &d); err == nil {
				platformResults[d.Entry] = d.Result
				line.Summary = fmt.Sprintf("platform entry %s (%s): %s, %d credentials", d.Entry, d.Result.Kind, d.Result.State, d.Result.Count)
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
				change := applyReview(&r, d, e.Time)
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
			// report: it is listed as a failure of the record itself
			// (FailureOf has listed those of the types it reads).
			if !reportsFailure(e.Type) {
				r.Failures = append(r.Failures, unreadable(e, err))
			}
			line.Summary = "unreadable: " + err.Error()
		}
		r.Timeline = append(r.Timeline, line)
	}
	sort.Slice(a.Rotations, func(i, j int) bool { return a.Rotations[i].TenantID < a.Rotations[j].TenantID })
	a.Credentials = credentialRows(tenantResults, platformResults)
	sort.Strings(r.AffectedTenants)

	r.Phases = Phases(inc, first, sealedEnd, resolvedAt)
	return r
}

// Phases are the runbook's phases a timeline has started and ended, with
// their targets: first holds the earliest time of each event type, and
// sealedEnd when the first seal round's last node was confirmed sealed
// (zero: the first vault.sealed's time).
func Phases(inc Incident, first map[events.Name]time.Time, sealedEnd, resolvedAt time.Time) []report.Phase {
	phases := []report.Phase{}
	phase := func(name string, start, end time.Time) {
		if start.IsZero() || end.IsZero() {
			return
		}
		t := targets()[name]
		d := end.Sub(start)
		phases = append(phases, report.Phase{Name: name, Start: start, End: end, Duration: d, RunbookTarget: t.Runbook, LockdownTarget: t.Lockdown,
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
	return phases
}

// Order is the timeline's order: by time, then by event id (so that the
// report does not depend on the order entries were read in).
func Order(a, b Entry) int {
	return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.EventID, b.EventID))
}

// reportsFailure says whether FailureOf reads events of type n.
func reportsFailure(n events.Name) bool {
	switch n {
	case events.ContainmentFailed, events.RotationTenantFailed, events.RotationPlatformDone, events.NotificationFailed, events.IncidentStuck:
		return true
	}
	return false
}

// FailureOf is the failure an entry reports, if it reports one: a seal
// not made in time, a tenant not rotated or not told, a catalogue entry
// that failed, an incident stuck; or the entry itself, when it is of one
// of those types and does not decode. The report lists them in timeline
// order, and so does the incident's document, which reads them entry by
// entry as they are recorded.
func FailureOf(e Entry) (report.Failure, bool) {
	if !reportsFailure(e.Type) {
		return report.Failure{}, false
	}
	f := report.Failure{Time: e.Time, Type: e.Type}
	var err error
	switch e.Type {
	case events.ContainmentFailed:
		var d events.ContainmentFailedData
		if err = json.Unmarshal(e.Data, &d); err == nil {
			f.What, f.Reason = fmt.Sprintf("nodes %v not sealed in time", d.Nodes), d.Reason
		}
	case events.RotationTenantFailed:
		var d events.RotationTenantFailedData
		if err = json.Unmarshal(e.Data, &d); err == nil {
			f.TenantID, f.What, f.Reason = d.TenantID, "rotation ("+d.Step+")", d.Reason
		}
	case events.RotationPlatformDone:
		var d events.RotationPlatformCompletedData
		if err = json.Unmarshal(e.Data, &d); err == nil {
			if d.Result.State != credentials.Failed {
				return report.Failure{}, false
			}
			f.What, f.Reason = "platform entry "+d.Entry+" ("+string(d.Result.Kind)+")", d.Result.Reason
		}
	case events.NotificationFailed:
		var d events.NotificationFailedData
		if err = json.Unmarshal(e.Data, &d); err == nil {
			f.TenantID, f.What, f.Reason = d.TenantID, "notification ("+d.Channel+")", d.Reason
		}
	case events.IncidentStuck:
		var d events.IncidentStuckData
		if err = json.Unmarshal(e.Data, &d); err == nil {
			f.What, f.Reason = "stuck in phase "+d.Phase, d.Reason
		}
	}
	if err != nil {
		return unreadable(e, err), true
	}
	return f, true
}

// unreadable is the failure of an event that does not decode.
func unreadable(e Entry, err error) report.Failure {
	return report.Failure{Time: e.Time, Type: e.Type, What: "unreadable event " + e.EventID, Reason: err.Error()}
}

// credentialRows sums the per-kind results into the table, one row per
// kind of the contract.
func credentialRows(tenants map[string][]credentials.Result, platform map[string]credentials.Result) []report.CredentialRow {
	rows := []report.CredentialRow{}
	at := map[credentials.Kind]int{}
	for _, k := range credentials.Kinds() {
		at[k.Kind] = len(rows)
		rows = append(rows, report.CredentialRow{Kind: k.Kind, Title: k.Title, Scope: k.Scope, NotCovered: -1})
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
func applyReview(r *report.Report, d events.IncidentReviewData, at time.Time) report.ReviewChange {
	c := report.ReviewChange{By: d.RequestedBy, At: at, Changed: []string{}, Ignored: r.ReviewState == report.ReviewFinal}
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
			r.ReviewState = report.ReviewFinal
		}
	}
	r.ReviewHistory = append(r.ReviewHistory, c)
	return c
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
