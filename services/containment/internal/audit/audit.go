// Package audit turns an incident's events into the compliance records of
// what Lockdown did to Vault (io.lockdown.audit.v1 on lockdown.audit, which
// the SIEM's user may subscribe to): one record per action, with its
// severity and counts, the runbook's api_keys_revoked_emergency among
// them. Containment derives them as it records each event in the
// timeline, in the same transaction (the outbox), so every action is
// audited once whichever service did it and whatever crashed in between.
// It imports no transport: it maps events to events.
package audit

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/services/containment/internal/reporting"
)

// Severities of the records.
const (
	Critical = "critical"
	High     = "high"
	Info     = "info"
)

// Records returns the audit records of one recorded event (none for an
// event that is not an action on Vault). Their ids derive from the
// event's, so a record written twice is one record.
func Records(e reporting.Entry) ([]events.Outgoing, error) {
	var recs []events.AuditData
	switch e.Type {
	case events.VaultSealed:
		var d events.VaultSealedData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return nil, err
		}
		nodes := make([]string, 0, len(d.Nodes))
		for _, n := range d.Nodes {
			nodes = append(nodes, n.Address+" ("+n.Method+")")
		}
		recs = append(recs, events.AuditData{IncidentID: d.IncidentID, Action: "seal", Record: "vault_sealed", Severity: Critical,
			Counts: map[string]int{"nodes_sealed": len(d.Nodes), "round": d.Round, "latency_ms": int(d.LatencyMS)}, Detail: strings.Join(nodes, ", ")})
	case events.AccessRevoked:
		var d events.AccessRevokedData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return nil, err
		}
		recs = append(recs, events.AuditData{IncidentID: d.IncidentID, Action: "revoke", Record: "access_revoked", Severity: Critical,
			Counts: map[string]int{"tokens_revoked": d.TokensRevoked, "tokens_kept": d.TokensKept, "auth_methods_disabled": len(d.AuthMethodsDisabled),
				"auth_methods_removed": len(d.AuthMethodsRemoved), "policies_deleted": len(d.PoliciesDeleted), "lockdown_tokens_replaced": len(d.TokensReplaced),
				"key_term": d.KeyTerm, "objects_reconciled": len(d.Reconciled), "sweep_passes": d.SweepPasses},
			Detail: fmt.Sprintf("disabled %v, removed %v, policies deleted %v; %s", d.AuthMethodsDisabled, d.AuthMethodsRemoved, d.PoliciesDeleted, changesDetail(d.Reconciled))})
		if d.GenerateRootCancelled > 0 {
			recs = append(recs, events.AuditData{IncidentID: d.IncidentID, Action: "cancel", Record: "generate_root_cancelled", Severity: Critical,
				Counts: map[string]int{"attempts": d.GenerateRootCancelled, "round": d.Round},
				Detail: "a sys/generate-root attempt (someone holding a quorum of unseal shares) was cancelled during the revocation"})
		}
	case events.VaultReconciled:
		var d events.VaultReconciledData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return nil, err
		}
		if d.GenerateRootCancelled > 0 {
			recs = append(recs, events.AuditData{IncidentID: d.IncidentID, Action: "cancel", Record: "generate_root_cancelled", Severity: Critical,
				Counts: map[string]int{"attempts": d.GenerateRootCancelled, "round": d.Round},
				Detail: "a sys/generate-root attempt (someone holding a quorum of unseal shares) was cancelled during " + d.Stage})
		}
		if d.Stage != "ceremony" {
			recs = append(recs, events.AuditData{IncidentID: d.IncidentID, Action: "revoke", Record: "vault_swept_" + d.Stage, Severity: Critical,
				Counts: map[string]int{"tokens_revoked": d.TokensRevoked, "objects_reconciled": len(d.Reconciled), "sweep_passes": d.SweepPasses},
				Detail: changesDetail(d.Reconciled)})
		}
	case events.UnsealKeysRotated:
		var d events.UnsealKeysRotatedData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return nil, err
		}
		recs = append(recs, events.AuditData{IncidentID: d.IncidentID, Action: "rekey", Record: "unseal_keys_rotated", Severity: High,
			Counts: map[string]int{"shares": d.Shares, "threshold": d.Threshold, "pgp_keys": len(d.PGPFingerprints)}, Detail: "proven by " + d.Proof})
	case events.RotationTenantCompleted:
		var d events.RotationTenantCompletedData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return nil, err
		}
		secrets := 2
		if d.SMTPPasswordRotate {
			secrets = 3
		}
		if len(d.Results) > 0 {
			secrets = 0
			for _, r := range d.Results {
				if info, _ := credentials.Of(r.Kind); r.State.Done() && !info.Destroys {
					secrets++
				}
			}
		}
		recs = append(recs,
			events.AuditData{IncidentID: d.IncidentID, Action: "rotate", Record: "tenant_secrets_rotated", Severity: High, Tenant: d.TenantID,
				Counts: map[string]int{"secrets_rotated": secrets}, Detail: dkimDetail(d)},
			events.AuditData{IncidentID: d.IncidentID, Action: "destroy", Record: "api_keys_revoked_emergency", Severity: Critical, Tenant: d.TenantID,
				Counts: map[string]int{"keys_revoked": d.APIKeysDestroyed}})
	case events.RotationPlatformDone:
		var d events.RotationPlatformCompletedData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return nil, err
		}
		rec := events.AuditData{IncidentID: d.IncidentID, Action: "rotate", Record: "platform_credentials_rotated", Severity: High,
			Counts: map[string]int{"credentials_rotated": d.Result.Count}, Detail: d.Entry + " (" + d.Result.Kind.Title() + "): " + d.Result.Public}
		if d.Result.State == credentials.Failed {
			rec.Record, rec.Severity, rec.Detail = "platform_credentials_not_rotated", Critical, d.Entry+" ("+d.Result.Kind.Title()+"): "+d.Result.Reason
		}
		recs = append(recs, rec)
	case events.RotationDKIMActivated:
		var d events.RotationDKIMActivatedData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return nil, err
		}
		recs = append(recs, events.AuditData{IncidentID: d.IncidentID, Action: "rotate", Record: "dkim_key_activated", Severity: High, Tenant: d.TenantID,
			Counts: map[string]int{"secrets_rotated": 1}, Detail: "the tenant's DNS shows " + d.Name})
	case events.AccessRestored:
		var d events.AccessRestoredData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return nil, err
		}
		recs = append(recs, events.AuditData{IncidentID: d.IncidentID, Action: "restore", Record: "access_restored", Severity: Info,
			Counts: map[string]int{"auth_methods_restored": len(d.AuthMethods)}, Detail: strings.Join(d.AuthMethods, ", ")})
	}
	out := make([]events.Outgoing, len(recs))
	for i, r := range recs {
		r.At, r.EventID = e.Time, e.EventID
		out[i] = events.Outgoing{Name: events.Audit, ID: fmt.Sprintf("%s/audit/%s", e.EventID, r.Record), Data: r}
	}
	return out, nil
}

// changesDetail lists reconciled objects as "action kind name".
func changesDetail(cs []events.VaultChange) string {
	if len(cs) == 0 {
		return "Vault's security configuration matched the declaration"
	}
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.Action + " " + c.Kind + " " + c.Name
	}
	return "reconciled: " + strings.Join(parts, ", ")
}

// dkimDetail says how far the tenant's DKIM key went.
func dkimDetail(d events.RotationTenantCompletedData) string {
	switch d.DKIMState {
	case "":
		return ""
	case "awaiting_dns":
		return "DKIM key staged; it becomes active when the tenant's DNS shows " + d.DKIMName
	default:
		detail := "DKIM key " + d.DKIMState + " (" + d.DKIMName + ")"
		if d.DKIMRevokedSelector != "" {
			detail += ", selector " + d.DKIMRevokedSelector + " revoked"
		}
		return detail
	}
}
