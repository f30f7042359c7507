package events

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Validator is implemented by every event's data: it reports every problem
// of the value at once, so a sender sees the whole list.
type Validator interface {
	Validate() error
}

// Severity of a breach, as the SIEM rates it.
type Severity string

// Severities accepted by the breach contract.
const (
	SeverityCritical Severity = "critical"
	SeverityHigh     Severity = "high"
	SeverityMedium   Severity = "medium"
	SeverityLow      Severity = "low"
)

// Valid reports whether s is one of the four contract severities.
func (s Severity) Valid() bool {
	switch s {
	case SeverityCritical, SeverityHigh, SeverityMedium, SeverityLow:
		return true
	}
	return false
}

// problems collects validation failures so they are reported together.
type problems []string

func (p *problems) addf(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return errors.New(strings.Join(p, "; "))
}

func (p *problems) require(field, value string) {
	if strings.TrimSpace(value) == "" {
		p.addf("%s is required", field)
	}
}

// BreachDetectedData is the external breach contract (shared/DESIGN.md).
type BreachDetectedData struct {
	Summary    string    `json:"summary" doc:"What the detector saw, one line."`
	Severity   Severity  `json:"severity" doc:"critical, high, medium or low." enum:"critical,high,medium,low"`
	DetectedAt time.Time `json:"detected_at,omitempty" doc:"When the breach was detected (RFC 3339); defaults to the event time."`
	Indicators []string  `json:"indicators,omitempty" doc:"Free-form indicators of compromise."`
	// VaultCluster names the Vault cluster when the platform runs several.
	VaultCluster string `json:"vault_cluster,omitempty" doc:"The Vault cluster concerned, when the platform runs several."`
}

// Validate checks the required fields and the severity.
func (d BreachDetectedData) Validate() error {
	var p problems
	p.require("summary", d.Summary)
	if d.Severity == "" {
		p.addf("severity is required")
	} else if !d.Severity.Valid() {
		p.addf("severity %q is not one of critical, high, medium, low", d.Severity)
	}
	return p.err()
}

// IncidentOpenedData announces a new incident.
type IncidentOpenedData struct {
	IncidentID    string    `json:"incident_id" doc:"The incident's id."`
	BreachEventID string    `json:"breach_event_id" doc:"Id of the breach event that opened it."`
	DetectedAt    time.Time `json:"detected_at" doc:"When the breach was detected."`
	Severity      Severity  `json:"severity" doc:"Severity of the opening breach."`
	Summary       string    `json:"summary" doc:"Summary of the opening breach."`
}

// Validate checks the ids.
func (d IncidentOpenedData) Validate() error {
	var p problems
	p.require("incident_id", d.IncidentID)
	p.require("breach_event_id", d.BreachEventID)
	return p.err()
}

// NodeSeal records how one Vault node was sealed.
type NodeSeal struct {
	Address     string    `json:"address" doc:"The node's API address."`
	Method      string    `json:"method" doc:"api (sys/seal), fence (restart/pod deletion) or already_sealed."`
	RequestedAt time.Time `json:"requested_at" doc:"When the seal or fence was requested."`
	ConfirmedAt time.Time `json:"confirmed_at" doc:"When sys/seal-status first reported sealed."`
}

// VaultSealedData reports that every node is confirmed sealed.
type VaultSealedData struct {
	IncidentID string     `json:"incident_id" doc:"The incident."`
	Nodes      []NodeSeal `json:"nodes" doc:"One entry per configured node."`
	LatencyMS  int64      `json:"latency_ms" doc:"Breach event time to the last confirmation, in milliseconds."`
}

// Validate checks the incident id and that nodes are listed.
func (d VaultSealedData) Validate() error {
	var p problems
	p.require("incident_id", d.IncidentID)
	if len(d.Nodes) == 0 {
		p.addf("nodes must list at least one node")
	}
	return p.err()
}

// ContainmentFailedData names nodes not sealed within the deadline.
type ContainmentFailedData struct {
	IncidentID string   `json:"incident_id" doc:"The incident."`
	Nodes      []string `json:"nodes" doc:"Addresses of the nodes still unsealed."`
	Reason     string   `json:"reason" doc:"Why they are not sealed (last error)."`
}

// Validate checks the incident id.
func (d ContainmentFailedData) Validate() error {
	var p problems
	p.require("incident_id", d.IncidentID)
	return p.err()
}

// VaultUnsealedData reports that the unseal gate passed.
type VaultUnsealedData struct {
	IncidentID string `json:"incident_id" doc:"The incident."`
	Address    string `json:"address" doc:"The active node that was unsealed."`
	GateMS     int64  `json:"gate_ms" doc:"Milliseconds from sealed to unsealed."`
}

// Validate checks the incident id.
func (d VaultUnsealedData) Validate() error {
	var p problems
	p.require("incident_id", d.IncidentID)
	return p.err()
}

// Actor is one identity seen in the audit log. Accessors are as Vault wrote
// them (HMAC'd), never token values.
type Actor struct {
	DisplayName   string   `json:"display_name,omitempty" doc:"Vault auth display name."`
	EntityID      string   `json:"entity_id,omitempty" doc:"Vault entity id."`
	Accessor      string   `json:"accessor,omitempty" doc:"Token accessor as written in the audit log (HMAC'd)."`
	RemoteAddress string   `json:"remote_address,omitempty" doc:"Client address."`
	Tenants       []string `json:"tenants,omitempty" doc:"Tenants whose secrets it read."`
	Reads         int      `json:"reads" doc:"Successful secret reads and lists."`
	Denied        int      `json:"denied" doc:"Requests refused (permission denied and other errors)."`
}

// AssessmentCompletedData is the assessor's verdict.
type AssessmentCompletedData struct {
	IncidentID       string    `json:"incident_id" doc:"The incident."`
	WindowStart      time.Time `json:"window_start" doc:"Start of the audit window read."`
	WindowEnd        time.Time `json:"window_end" doc:"End of the audit window read."`
	Scope            string    `json:"scope" doc:"widespread or limited." enum:"widespread,limited"`
	SuspiciousEvents int       `json:"suspicious_events" doc:"Count of suspicious audit events."`
	SecretsAccessed  int       `json:"secrets_accessed" doc:"Count of successful secret reads/lists."`
	AffectedTenants  []string  `json:"affected_tenants" doc:"Tenants whose secrets were read."`
	Actors           []Actor   `json:"actors" doc:"Identities grouped from the audit log."`
}

// Validate checks the incident id and scope.
func (d AssessmentCompletedData) Validate() error {
	var p problems
	p.require("incident_id", d.IncidentID)
	if d.Scope != "widespread" && d.Scope != "limited" {
		p.addf("scope %q is not widespread or limited", d.Scope)
	}
	return p.err()
}

// AccessRevokedData counts what phase 4 revoked. Counts only, never tokens.
type AccessRevokedData struct {
	IncidentID          string   `json:"incident_id" doc:"The incident."`
	AuthMethodsDisabled []string `json:"auth_methods_disabled" doc:"Mount paths of the disabled auth methods."`
	TokensRevoked       int      `json:"tokens_revoked" doc:"Tokens revoked by accessor."`
	TokensKept          int      `json:"tokens_kept" doc:"Tokens kept (Lockdown's own, break-glass)."`
	LeasePrefixes       []string `json:"lease_prefixes" doc:"Lease prefixes revoked."`
	KeyTerm             int      `json:"key_term" doc:"Barrier key term after sys/rotate."`
}

// Validate checks the incident id.
func (d AccessRevokedData) Validate() error {
	var p problems
	p.require("incident_id", d.IncidentID)
	return p.err()
}

// UnsealKeysRotatedData reports the rekey ceremony's result.
type UnsealKeysRotatedData struct {
	IncidentID      string   `json:"incident_id" doc:"The incident."`
	Shares          int      `json:"shares" doc:"Number of new shares."`
	Threshold       int      `json:"threshold" doc:"New threshold."`
	PGPFingerprints []string `json:"pgp_fingerprints,omitempty" doc:"Holders' PGP key fingerprints, one per share."`
	Verified        bool     `json:"verified" doc:"Whether the new shares were verified."`
	RecoveryKeys    bool     `json:"recovery_keys" doc:"True when recovery keys (auto-unseal) were rekeyed."`
}

// Validate checks the incident id and the share arithmetic.
func (d UnsealKeysRotatedData) Validate() error {
	var p problems
	p.require("incident_id", d.IncidentID)
	if d.Threshold < 1 || d.Threshold > d.Shares {
		p.addf("threshold %d must be between 1 and shares (%d)", d.Threshold, d.Shares)
	}
	return p.err()
}

// RotationPlannedData records the plan.
type RotationPlannedData struct {
	IncidentID string `json:"incident_id" doc:"The incident."`
	Policy     string `json:"policy" doc:"all or affected." enum:"all,affected"`
	Tenants    int    `json:"tenants" doc:"Number of jobs planned."`
}

// Validate checks the incident id and policy.
func (d RotationPlannedData) Validate() error {
	var p problems
	p.require("incident_id", d.IncidentID)
	if d.Policy != "all" && d.Policy != "affected" {
		p.addf("policy %q is not all or affected", d.Policy)
	}
	return p.err()
}

// RotationJobData is one tenant's rotation job.
type RotationJobData struct {
	IncidentID string `json:"incident_id" doc:"The incident."`
	TenantID   string `json:"tenant_id" doc:"The tenant to rotate."`
	Affected   bool   `json:"affected" doc:"Whether the assessment found its secrets read."`
}

// Validate checks the ids.
func (d RotationJobData) Validate() error {
	var p problems
	p.require("incident_id", d.IncidentID)
	p.require("tenant_id", d.TenantID)
	return p.err()
}

// RotationTenantCompletedData reports one tenant's rotation. The DKIM record
// is public by nature; no secret value is carried.
type RotationTenantCompletedData struct {
	IncidentID         string `json:"incident_id" doc:"The incident."`
	TenantID           string `json:"tenant_id" doc:"The tenant."`
	SSHFingerprint     string `json:"ssh_fingerprint" doc:"SHA256 fingerprint of the new SSH public key."`
	DKIMSelector       string `json:"dkim_selector" doc:"The new DKIM selector."`
	DKIMRecord         string `json:"dkim_record" doc:"The DNS TXT record value to publish (public key)."`
	APIKeysDestroyed   int    `json:"api_keys_destroyed" doc:"API keys destroyed (all versions and metadata)."`
	SMTPPasswordRotate bool   `json:"smtp_password_rotated" doc:"Whether the SMTP password was rotated."`
	Affected           bool   `json:"affected" doc:"Whether the assessment found its secrets read."`
}

// Validate checks the ids.
func (d RotationTenantCompletedData) Validate() error {
	var p problems
	p.require("incident_id", d.IncidentID)
	p.require("tenant_id", d.TenantID)
	return p.err()
}

// RotationTenantFailedData reports a permanent rotation failure.
type RotationTenantFailedData struct {
	IncidentID string `json:"incident_id" doc:"The incident."`
	TenantID   string `json:"tenant_id" doc:"The tenant."`
	Step       string `json:"step" doc:"The step that failed (ssh, smtp, dkim, api_keys)."`
	Reason     string `json:"reason" doc:"Why."`
}

// Validate checks the ids and reason.
func (d RotationTenantFailedData) Validate() error {
	var p problems
	p.require("incident_id", d.IncidentID)
	p.require("tenant_id", d.TenantID)
	p.require("reason", d.Reason)
	return p.err()
}

// RotationCompletedData closes the rotation phase.
type RotationCompletedData struct {
	IncidentID string `json:"incident_id" doc:"The incident."`
	Completed  int    `json:"completed" doc:"Tenants rotated."`
	Failed     int    `json:"failed" doc:"Tenants failed."`
}

// Validate checks the incident id.
func (d RotationCompletedData) Validate() error {
	var p problems
	p.require("incident_id", d.IncidentID)
	return p.err()
}

// NotificationSentData reports one delivered notification.
type NotificationSentData struct {
	IncidentID string `json:"incident_id" doc:"The incident."`
	TenantID   string `json:"tenant_id" doc:"The tenant."`
	Channel    string `json:"channel" doc:"email or webhook." enum:"email,webhook"`
	MessageID  string `json:"message_id,omitempty" doc:"The email Message-ID (stable per incident and tenant)."`
}

// Validate checks the ids and channel.
func (d NotificationSentData) Validate() error {
	var p problems
	p.require("incident_id", d.IncidentID)
	p.require("tenant_id", d.TenantID)
	p.require("channel", d.Channel)
	return p.err()
}

// NotificationFailedData reports a permanent notification failure.
type NotificationFailedData struct {
	IncidentID string `json:"incident_id" doc:"The incident."`
	TenantID   string `json:"tenant_id" doc:"The tenant."`
	Channel    string `json:"channel" doc:"email or webhook." enum:"email,webhook"`
	Reason     string `json:"reason" doc:"Why."`
}

// Validate checks the ids and reason.
func (d NotificationFailedData) Validate() error {
	var p problems
	p.require("incident_id", d.IncidentID)
	p.require("tenant_id", d.TenantID)
	p.require("reason", d.Reason)
	return p.err()
}

// NotificationsCompletedData closes the notification phase.
type NotificationsCompletedData struct {
	IncidentID string `json:"incident_id" doc:"The incident."`
	Sent       int    `json:"sent" doc:"Tenants notified."`
	Failed     int    `json:"failed" doc:"Tenants whose notification failed."`
}

// Validate checks the incident id.
func (d NotificationsCompletedData) Validate() error {
	var p problems
	p.require("incident_id", d.IncidentID)
	return p.err()
}

// AccessRestoredData reports re-enabled auth methods.
type AccessRestoredData struct {
	IncidentID  string   `json:"incident_id" doc:"The incident."`
	AuthMethods []string `json:"auth_methods" doc:"Auth mounts re-enabled and re-configured."`
}

// Validate checks the incident id.
func (d AccessRestoredData) Validate() error {
	var p problems
	p.require("incident_id", d.IncidentID)
	return p.err()
}

// IncidentResolvedData ends the incident.
type IncidentResolvedData struct {
	IncidentID string    `json:"incident_id" doc:"The incident."`
	Outcome    string    `json:"outcome" doc:"resolved or failed." enum:"resolved,failed"`
	Reason     string    `json:"reason,omitempty" doc:"Why it failed, when it did."`
	ResolvedAt time.Time `json:"resolved_at" doc:"When it ended."`
}

// Validate checks the incident id and outcome.
func (d IncidentResolvedData) Validate() error {
	var p problems
	p.require("incident_id", d.IncidentID)
	if d.Outcome != "resolved" && d.Outcome != "failed" {
		p.addf("outcome %q is not resolved or failed", d.Outcome)
	}
	return p.err()
}

// DeadLetterData carries a message a consumer gave up on, byte for byte, so
// it can be replayed after a fix.
type DeadLetterData struct {
	Consumer        string              `json:"consumer" doc:"Durable name of the consumer that gave up."`
	Reason          string              `json:"reason" doc:"Why it gave up."`
	Subject         string              `json:"subject" doc:"The original subject."`
	Deliveries      uint64              `json:"deliveries" doc:"How many times it was delivered."`
	OriginalHeaders map[string][]string `json:"original_headers,omitempty" doc:"The original NATS headers."`
	OriginalData    []byte              `json:"original_data" doc:"The original payload (base64)."`
	FailedAt        time.Time           `json:"failed_at" doc:"When the consumer gave up."`
}

// Validate checks the consumer and reason.
func (d DeadLetterData) Validate() error {
	var p problems
	p.require("consumer", d.Consumer)
	p.require("reason", d.Reason)
	p.require("subject", d.Subject)
	return p.err()
}
