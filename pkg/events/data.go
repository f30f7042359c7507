package events

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lockdown/lockdown/pkg/events/credentials"
)

// Severity of a breach, as the SIEM rates it.
type Severity string

// Severities accepted by the breach contract.
const (
	SeverityCritical Severity = "critical"
	SeverityHigh     Severity = "high"
	SeverityMedium   Severity = "medium"
	SeverityLow      Severity = "low"
)

// BreachDetectedData is the external breach contract (shared/DESIGN.md).
type BreachDetectedData struct {
	Summary    string    `json:"summary" doc:"What the detector saw, one line."`
	Severity   Severity  `json:"severity" doc:"critical, high, medium or low." enum:"critical,high,medium,low"`
	DetectedAt time.Time `json:"detected_at,omitempty" doc:"When the breach was detected (RFC 3339); defaults to the event time."`
	Indicators []string  `json:"indicators,omitempty" doc:"Free-form indicators of compromise (at most 100 kept, each cut at 256 bytes)." maxItems:"100" itemMax:"256"`
	// VaultCluster names the Vault cluster when the platform runs several.
	VaultCluster string `json:"vault_cluster,omitempty" doc:"The Vault cluster concerned, when the platform runs several."`
}

// IncidentOpenedData announces a new incident.
type IncidentOpenedData struct {
	IncidentID    string    `json:"incident_id" doc:"The incident's id."`
	BreachEventID string    `json:"breach_event_id" doc:"Id of the breach event that opened it."`
	DetectedAt    time.Time `json:"detected_at" doc:"When the breach was detected."`
	Severity      Severity  `json:"severity" doc:"Severity of the opening breach." enum:"critical,high,medium,low"`
	Summary       string    `json:"summary" doc:"Summary of the opening breach."`
}

// NodeSeal records how one Vault node was sealed.
type NodeSeal struct {
	Address     string    `json:"address" doc:"The node's API address." max:"256"`
	Method      string    `json:"method" doc:"api (sys/seal), fence (restart/pod deletion), already_sealed, or fenced_unreachable (the node answered nothing for a whole sealing pass; the fence command ran and it is taken as down)."`
	RequestedAt time.Time `json:"requested_at" doc:"When the seal or fence was requested."`
	ConfirmedAt time.Time `json:"confirmed_at" doc:"When sys/seal-status first reported sealed."`
}

// VaultSealedData reports that every node is confirmed sealed.
type VaultSealedData struct {
	IncidentID string     `json:"incident_id" doc:"The incident."`
	Round      int        `json:"round,omitempty" doc:"The seal round (1 for the first seal; a breach during recovery starts another)."`
	Nodes      []NodeSeal `json:"nodes" doc:"One entry per configured node." maxItems:"64"`
	LatencyMS  int64      `json:"latency_ms" doc:"Breach event time to the last confirmation, in milliseconds."`
	Process    string     `json:"process,omitempty" doc:"The containment process that sealed."`
}

// ContainmentFailedData names nodes not sealed within the deadline.
type ContainmentFailedData struct {
	IncidentID string   `json:"incident_id" doc:"The incident."`
	Round      int      `json:"round,omitempty" doc:"The seal round."`
	Nodes      []string `json:"nodes" doc:"Addresses of the nodes still unsealed." maxItems:"64" itemMax:"256"`
	Reason     string   `json:"reason" doc:"Why they are not sealed (last error)."`
}

// VaultUnsealedData reports that the unseal gate passed.
type VaultUnsealedData struct {
	IncidentID string `json:"incident_id" doc:"The incident."`
	Round      int    `json:"round,omitempty" doc:"The seal round whose gate passed: every round is followed by its own revocation."`
	Address    string `json:"address" doc:"The active node that was unsealed."`
	GateMS     int64  `json:"gate_ms" doc:"Milliseconds from sealed to unsealed."`
	Process    string `json:"process,omitempty" doc:"The containment process that saw the gate pass."`
}

// Actor is one identity seen in the audit log: an entity, a token without
// an entity (one actor across every audit device that logged it), or the
// anonymous requests. Accessors are as Vault wrote them (HMAC'd), never
// token values.
type Actor struct {
	Key             string           `max:"256" json:"key" doc:"What the actor is keyed by: entity:<entity id>, token:<identity> (the least of the token's accessor HMACs across audit devices) or anonymous. Never a display name or an address."`
	EntityID        string           `json:"entity_id,omitempty" doc:"Vault entity id." max:"128"`
	Accessors       []DeviceAccessor `json:"accessors,omitempty" doc:"Accessor HMACs the actor's tokens appeared under, with the audit device that wrote each (each device salts its own); at most 8, accessors_total counts them all." maxItems:"8" total:"accessors_total"`
	AccessorsTotal  int              `json:"accessors_total,omitempty" doc:"How many accessors there were when accessors was cut."`
	DisplayNames    []string         `json:"display_names,omitempty" doc:"Vault auth display names it used (chosen by token creators: explanation only); at most 8." maxItems:"8" itemMax:"128"`
	RemoteAddresses []string         `json:"remote_addresses,omitempty" doc:"Client addresses it came from; at most 8." maxItems:"8" itemMax:"64"`
	Tenants         []string         `json:"tenants,omitempty" doc:"Tenants whose secrets it read; at most 20, tenants_total counts them all (the full list is in the assessor's records)." maxItems:"20" itemMax:"63" total:"tenants_total"`
	TenantsTotal    int              `json:"tenants_total,omitempty" doc:"How many tenants it read when tenants was cut."`
	Reads           int              `json:"reads" doc:"Successful secret reads and lists."`
	Denied          int              `json:"denied" doc:"Requests refused with permission denied."`
	PatternHits     int              `json:"pattern_hits" doc:"Requests on suspicious paths."`
	Trusted         bool             `json:"trusted" doc:"Its entity is one of the platform's trusted identities."`
	Suspect         bool             `json:"suspect" doc:"It stands out (see reasons)."`
	Reasons         []string         `json:"reasons,omitempty" doc:"Why it stands out: denied requests, suspicious paths, a token revoked since; at most 8." maxItems:"8" itemMax:"256"`
}

// DeviceAccessor is a token accessor HMAC as one audit device wrote it.
type DeviceAccessor struct {
	Device   string `json:"device,omitempty" doc:"The audit device (empty when the accessor was seen through one device only)." max:"128"`
	Accessor string `json:"accessor" doc:"The accessor, HMAC'd with that device's salt." max:"128"`
}

// AssessmentCompletedData is the assessor's verdict.
type AssessmentCompletedData struct {
	IncidentID       string    `json:"incident_id" doc:"The incident."`
	WindowStart      time.Time `json:"window_start" doc:"Start of the audit window read."`
	WindowEnd        time.Time `json:"window_end" doc:"End of the audit window read."`
	Scope            string    `json:"scope" doc:"widespread or limited." enum:"widespread,limited"`
	SuspiciousEvents int       `json:"suspicious_events" doc:"Count of suspicious audit events."`
	SecretsAccessed  int       `json:"secrets_accessed" doc:"Count of successful secret reads/lists."`
	AffectedTenants  []string  `json:"affected_tenants" doc:"Tenants whose secrets were read by an actor that is not a trusted platform identity, or by a trusted one that stands out; at most 4,000: when affected_total is larger the list was cut, and a rotation of the affected tenants rotates every tenant instead (more, never fewer)." maxItems:"4000" itemMax:"63" total:"affected_total"`
	AffectedTotal    int       `json:"affected_total,omitempty" doc:"How many tenants were affected when affected_tenants was cut."`
	Actors           []Actor   `json:"actors" doc:"Identities grouped from the audit log, the most suspicious first; at most 20, actors_total counts them all." maxItems:"20" total:"actors_total"`
	ActorsTotal      int       `json:"actors_total,omitempty" doc:"How many actors there were when actors was cut."`
}

// AccessRevokedData counts what phase 4 revoked. Counts only, never tokens.
type AccessRevokedData struct {
	IncidentID          string   `json:"incident_id" doc:"The incident."`
	AuthMethodsDisabled []string `json:"auth_methods_disabled" doc:"Mount paths of the disabled auth methods (at most 100 listed)." maxItems:"100" itemMax:"256"`
	TokensRevoked       int      `json:"tokens_revoked" doc:"Tokens revoked by accessor."`
	TokensKept          int      `json:"tokens_kept" doc:"Tokens kept (Lockdown's own, break-glass)."`
	LeasePrefixes       []string `json:"lease_prefixes" doc:"Lease prefixes revoked (at most 100 listed)." maxItems:"100" itemMax:"256"`
	AuthMethodsRemoved  []string `json:"auth_methods_removed,omitempty" doc:"Mount paths of auth methods not in the baseline (deploy/vault/baseline.json): disabled for good, never restored (at most 100 listed)." maxItems:"100" itemMax:"256"`
	PoliciesDeleted     []string `json:"policies_deleted,omitempty" doc:"ACL policies not in the baseline, deleted; at most 500 listed, policies_deleted_total counts them all." maxItems:"500" itemMax:"128" total:"policies_deleted_total"`
	PoliciesTotal       int      `json:"policies_deleted_total,omitempty" doc:"How many policies were deleted when policies_deleted was cut."`
	BatchTokenMaxTTL    string   `json:"batch_token_max_ttl,omitempty" doc:"Batch tokens have no accessor and cannot be revoked: the longest a batch token issued before the revocation may still live (the largest max_lease_ttl of the auth methods; 'system' when one uses Vault's system maximum, 768h unless configured)."`
	KeyTerm             int      `json:"key_term" doc:"Barrier key term after sys/rotate."`
	TokensReplaced      []string `maxItems:"8" itemMax:"64" json:"tokens_replaced,omitempty" doc:"Lockdown's own tokens (seal, recovery, rotator) replaced by successors minted from their token roles before the sweep, which then revoked the old ones."`
	TokensNotReplaced   []string `maxItems:"8" itemMax:"64" json:"tokens_not_replaced,omitempty" doc:"Lockdown's own tokens that could not be replaced (given in the environment rather than a token file): still the ones issued at install."`
	Round               int      `json:"round,omitempty" doc:"The seal round this revocation followed."`
	Process             string   `json:"process,omitempty" doc:"The containment process that revoked."`
	// Reconciliation of Vault's security configuration against the
	// declaration (deploy/vault/baseline.json), done before any token is
	// revoked and before the rotation may start.
	Reconciled      []VaultChange `json:"reconciled,omitempty" doc:"Objects of Vault's security configuration that differed from the declaration: removed, restored or detected, with its previous definition as evidence; at most 30, reconciled_total counts them all." maxItems:"30" total:"reconciled_total"`
	ReconciledTotal int           `json:"reconciled_total,omitempty" doc:"How many objects were reconciled when reconciled was cut."`
	SweepPasses     int           `json:"sweep_passes,omitempty" doc:"Listings of auth/token/accessors until one held only the kept tokens (a token minted during the sweep is caught by the next pass)."`
	// GenerateRootCancelled counts sys/generate-root attempts cancelled
	// during the revocation (anyone holding a quorum of the old shares can
	// start one until the rekey completes).
	GenerateRootCancelled int `json:"generate_root_cancelled,omitempty" doc:"sys/generate-root attempts found in progress and cancelled during the revocation."`
}

// Actions of a VaultChange.
const (
	// VaultRemoved: the object was not declared and was removed.
	VaultRemoved = "removed"
	// VaultRestored: the object is declared and was put back as declared.
	VaultRestored = "restored"
	// VaultDetected: the object differs from the declaration and Lockdown
	// cannot change it with its own rights (an operator must).
	VaultDetected = "detected"
)

// VaultChange is one object of Vault's security configuration that
// differed from the declaration. Previous is its definition as Vault
// showed it before the change (never a secret value: Vault does not return
// one from any endpoint read here), cut at PreviousLimit bytes.
type VaultChange struct {
	Kind           string `json:"kind" doc:"What the object is." enum:"audit_device,audited_header,auth_mount,secrets_mount,mount_tuning,policy,token_role,identity_entity,identity_group,plugin"`
	Name           string `json:"name" doc:"Its path or name." max:"256"`
	Action         string `json:"action" doc:"removed (not declared), restored (declared, put back as declared) or detected (differs, and Lockdown cannot mend it: see docs/security.md)." enum:"removed,restored,detected"`
	Why            string `json:"why,omitempty" doc:"What differed." max:"512"`
	Previous       string `json:"previous,omitempty" doc:"The previous definition as Vault returned it (JSON or policy text), cut at 2,048 bytes." max:"8192"`
	PreviousSHA256 string `json:"previous_sha256,omitempty" doc:"SHA-256 of the whole previous definition."`
}

// PreviousLimit bounds the evidence one VaultChange carries: an intruder's
// policy can be megabytes, and the event must stay small.
const PreviousLimit = 2048

// VaultReconciledData reports a sweep after the first revocation: after the
// rekey is proven (the old shares are dead, so nobody can generate a root
// token with them any more) and just before access is restored; and, as an
// alarm, every sys/generate-root attempt cancelled during the ceremony.
type VaultReconciledData struct {
	IncidentID            string        `json:"incident_id" doc:"The incident."`
	Stage                 string        `json:"stage" doc:"When it ran: after_rekey, before_restore, or ceremony (an alarm: a sys/generate-root attempt was cancelled while the holders were in the ceremony)." enum:"after_rekey,before_restore,ceremony"`
	Round                 int           `json:"round,omitempty" doc:"The seal round."`
	Reconciled            []VaultChange `json:"reconciled,omitempty" doc:"Objects of Vault's security configuration that differed from the declaration since the revocation; at most 30, reconciled_total counts them all." maxItems:"30" total:"reconciled_total"`
	ReconciledTotal       int           `json:"reconciled_total,omitempty" doc:"How many objects were reconciled when reconciled was cut."`
	TokensRevoked         int           `json:"tokens_revoked" doc:"Tokens that appeared since the revocation (minted by someone else than Lockdown), revoked."`
	SweepPasses           int           `json:"sweep_passes" doc:"Listings until one held only the kept tokens."`
	GenerateRootCancelled int           `json:"generate_root_cancelled,omitempty" doc:"sys/generate-root attempts cancelled."`
	Process               string        `json:"process,omitempty" doc:"The containment process."`
}

// UnsealKeysRotatedData reports the rekey ceremony's result.
type UnsealKeysRotatedData struct {
	IncidentID      string   `json:"incident_id" doc:"The incident."`
	Shares          int      `json:"shares" doc:"Number of new shares."`
	Threshold       int      `json:"threshold" doc:"New threshold."`
	PGPFingerprints []string `json:"pgp_fingerprints,omitempty" doc:"Holders' PGP key fingerprints, one per share." maxItems:"256" itemMax:"128"`
	Verified        bool     `json:"verified" doc:"Whether the ceremony went through Vault's verification of the new shares (seen verifying, then ended)."`
	Proof           string   `json:"proof,omitempty" doc:"How completion is known (a ceremony without proof is restarted, never announced): pgp_backup (PGP keys, no verification: Vault's encrypted backup, written in the call that rekeys, carries this ceremony's nonce) or vault_log (Vault's server log, watched through sys/monitor without a gap, showed the barrier rekeyed after this ceremony's start; the rekey endpoints are not audited, so nothing else shows it)."`
	RecoveryKeys    bool     `json:"recovery_keys" doc:"True when recovery keys (auto-unseal) were rekeyed."`
	Process         string   `json:"process,omitempty" doc:"The containment process that saw the ceremony complete."`
}

// Validate checks the share arithmetic (required fields are checked by Validate).
func (d UnsealKeysRotatedData) Validate() error {
	if d.Threshold < 1 || d.Threshold > d.Shares {
		return fmt.Errorf("threshold %d must be between 1 and shares (%d)", d.Threshold, d.Shares)
	}
	return nil
}

// RotationPlannedData records the plan.
type RotationPlannedData struct {
	IncidentID string `json:"incident_id" doc:"The incident."`
	Policy     string `json:"policy" doc:"all or affected." enum:"all,affected"`
	Tenants    int    `json:"tenants" doc:"Number of jobs planned."`
	Platform   int    `json:"platform,omitempty" doc:"Number of platform-wide catalogue entries planned (one rotation.platform.job each)."`
}

// RotationPlatformJobData is one platform-wide catalogue entry's rotation
// job (deploy/rotation/catalogue.json).
type RotationPlatformJobData struct {
	IncidentID string           `json:"incident_id" doc:"The incident."`
	Entry      string           `json:"entry" doc:"The catalogue entry's name." max:"64"`
	Kind       credentials.Kind `json:"kind" doc:"The entry's credential kind (transit, database, pki, kv)." max:"32"`
}

// RotationPlatformCompletedData reports one catalogue entry's rotation,
// done or failed for good. Only counts and public parts: key versions,
// certificate serials, secret paths.
type RotationPlatformCompletedData struct {
	IncidentID string             `json:"incident_id" doc:"The incident."`
	Entry      string             `json:"entry" doc:"The catalogue entry's name." max:"64"`
	Result     credentials.Result `json:"result" doc:"The kind's result: state rotated or failed, how many credentials, what is public of the new ones."`
	Items      []string           `maxItems:"200" itemMax:"256" total:"items_total" json:"items,omitempty" doc:"What was rotated: transit keys, connections and static roles, certificate roles, secret paths."`
	ItemsTotal int                `json:"items_total,omitempty" doc:"How many items there were (items lists at most 200)."`
	RotatedBy  string             `json:"rotated_by,omitempty" doc:"The rotator process that did the work (host/pid)."`
}

// RotationJobData is one tenant's rotation job.
type RotationJobData struct {
	IncidentID string `json:"incident_id" doc:"The incident."`
	TenantID   string `json:"tenant_id" doc:"The tenant to rotate."`
	Affected   bool   `json:"affected" doc:"Whether the assessment found its secrets read."`
}

// RotationTenantCompletedData reports one tenant's rotation. The DKIM record
// is public by nature; no secret value is carried.
type RotationTenantCompletedData struct {
	IncidentID          string               `json:"incident_id" doc:"The incident."`
	TenantID            string               `json:"tenant_id" doc:"The tenant."`
	SSHFingerprint      string               `json:"ssh_fingerprint" doc:"SHA256 fingerprint of the new SSH public key."`
	DKIMSelector        string               `json:"dkim_selector" doc:"The new DKIM selector."`
	DKIMRecord          string               `json:"dkim_record" doc:"The DNS TXT record value to publish (public key)." max:"4096"`
	APIKeysDestroyed    int                  `json:"api_keys_destroyed" doc:"API keys destroyed (all versions and metadata)."`
	SMTPPasswordRotate  bool                 `json:"smtp_password_rotated" doc:"Whether the SMTP password was rotated."`
	Affected            bool                 `json:"affected" doc:"Whether the assessment found its secrets read."`
	RotatedBy           string               `json:"rotated_by,omitempty" doc:"The rotator process that did the work (host/pid)."`
	DKIMState           string               `json:"dkim_state,omitempty" doc:"active: the new key's record was published in the platform's DKIM zone (the tenant's selector is delegated there), read back from the authoritative server, then the key made active and the old selector revoked; awaiting_dns: the tenant must publish dkim_record at dkim_name, and the old key signs until its DNS shows it (rotation.dkim.activated follows); unverified: no DNS is configured, the key is active at once."`
	DKIMName            string               `json:"dkim_name,omitempty" doc:"Where the record lives in the tenant's DNS: <selector>._domainkey.<domain>."`
	DKIMRevokedSelector string               `json:"dkim_revoked_selector,omitempty" doc:"The delegated selector given a revoked record (p=), so the old key no longer verifies."`
	Results             []credentials.Result `maxItems:"16" json:"results,omitempty" doc:"One result per credential kind of the tenant (pkg/events/credentials), in the order the job handles them: what reports and notices render without knowing any kind."`
}

// RotationDKIMActivatedData reports that a tenant's DNS showed the new
// DKIM record and the new key became the one the platform signs with.
type RotationDKIMActivatedData struct {
	IncidentID  string `json:"incident_id" doc:"The incident."`
	TenantID    string `json:"tenant_id" doc:"The tenant."`
	Selector    string `json:"selector" doc:"The selector now active."`
	Name        string `json:"name" doc:"The name whose record was found: <selector>._domainkey.<domain>."`
	ActivatedBy string `json:"activated_by,omitempty" doc:"The rotator process that made the key active (host/pid)."`
}

// RotationTenantFailedData reports a permanent rotation failure.
type RotationTenantFailedData struct {
	IncidentID       string               `json:"incident_id" doc:"The incident."`
	TenantID         string               `json:"tenant_id" doc:"The tenant."`
	Step             string               `json:"step" doc:"The step that failed (ssh, smtp, dkim, api_keys)."`
	Reason           string               `json:"reason" doc:"Why."`
	Replaced         []string             `maxItems:"16" itemMax:"64" json:"replaced,omitempty" doc:"Secrets already replaced before the failure (ssh, smtp, dkim; dkim only once the new key is active)."`
	APIKeysDestroyed int                  `json:"api_keys_destroyed,omitempty" doc:"API keys already destroyed (all of the tenant's when api_keys is in replaced)."`
	Results          []credentials.Result `maxItems:"16" json:"results,omitempty" doc:"One result per credential kind: done before the failure, failed (the kind of step), or pending."`
}

// RotationCompletedData closes the rotation phase.
type RotationCompletedData struct {
	IncidentID     string `json:"incident_id" doc:"The incident."`
	Completed      int    `json:"completed" doc:"Tenants rotated."`
	Failed         int    `json:"failed" doc:"Tenants failed."`
	Retry          int    `json:"retry,omitempty" doc:"0 for the plan's first completion; n after the nth retry (lockdown retry): the totals are corrected."`
	Platform       int    `json:"platform,omitempty" doc:"Platform-wide catalogue entries rotated."`
	PlatformFailed int    `json:"platform_failed,omitempty" doc:"Platform-wide catalogue entries failed."`
}

// NotificationSentData reports one delivered notification.
type NotificationSentData struct {
	IncidentID string `json:"incident_id" doc:"The incident."`
	TenantID   string `json:"tenant_id" doc:"The tenant."`
	Channel    string `json:"channel" doc:"email or webhook." enum:"email,webhook"`
	Notice     string `json:"notice,omitempty" doc:"Which notice: empty for the rotated one, incomplete for the notice to a tenant whose rotation failed (a rotated notice may follow after a retry)." enum:",incomplete"`
	MessageID  string `json:"message_id,omitempty" doc:"The email Message-ID (stable per incident and tenant)."`
}

// NotificationFailedData reports a permanent notification failure.
type NotificationFailedData struct {
	IncidentID string `json:"incident_id" doc:"The incident."`
	TenantID   string `json:"tenant_id" doc:"The tenant."`
	Channel    string `json:"channel" doc:"email or webhook." enum:"email,webhook"`
	Notice     string `json:"notice,omitempty" doc:"Which notice: empty for the rotated one, incomplete for the notice to a tenant whose rotation failed (a rotated notice may follow after a retry)." enum:",incomplete"`
	Reason     string `json:"reason" doc:"Why."`
}

// NotificationsCompletedData closes the notification phase.
type NotificationsCompletedData struct {
	IncidentID string `json:"incident_id" doc:"The incident."`
	Sent       int    `json:"sent" doc:"Tenants notified."`
	Failed     int    `json:"failed" doc:"Tenants whose notification failed."`
	Late       int    `json:"late,omitempty" doc:"Tenants not yet reached at their deadline (LOCKDOWN_NOTIFY_TENANT_DEADLINE): the phase ends without them and their delivery goes on; a corrected completion follows when it ends."`
	Corrected  bool   `json:"corrected,omitempty" doc:"The totals changed after an earlier announcement (tenants retried with lockdown retry and told since)."`
}

// AccessRestoredData reports re-enabled auth methods.
type AccessRestoredData struct {
	IncidentID  string   `json:"incident_id" doc:"The incident."`
	AuthMethods []string `json:"auth_methods" doc:"Auth mounts re-enabled and re-configured (at most 100 listed)." maxItems:"100" itemMax:"256"`
	Round       int      `json:"round,omitempty" doc:"The seal round after which access was restored: a breach after a restore starts another round, which revokes access again and restores it after its own ceremony."`
	Process     string   `json:"process,omitempty" doc:"The containment process that restored."`
}

// IncidentResolvedData ends the incident.
type IncidentResolvedData struct {
	IncidentID string    `json:"incident_id" doc:"The incident."`
	Outcome    string    `json:"outcome" doc:"resolved, or failed (an operator aborted it: lockdown abort)." enum:"resolved,failed"`
	Reason     string    `json:"reason,omitempty" doc:"Why it failed, when it did."`
	ResolvedAt time.Time `json:"resolved_at" doc:"When it ended."`
	// The report's headline; the whole report (it grows with the tenants)
	// is stored in PostgreSQL and printed by `lockdown report`.
	AffectedTenants int `json:"affected_tenants" doc:"Tenants the assessment found read."`
	TenantsRotated  int `json:"tenants_rotated" doc:"Tenants whose secrets were rotated."`
	TenantsNotified int `json:"tenants_notified" doc:"Tenants notified."`
	Failures        int `json:"failures" doc:"Failures listed in the report."`
}

// DeadLetterData carries a message a consumer gave up on, so it can be
// replayed after a fix: byte for byte up to DeadLetterDataLimit; a longer
// original is cut, and replay reads it whole from its stream (by
// OriginalStream and OriginalSequence, checked against OriginalSHA256).
type DeadLetterData struct {
	Consumer         string              `json:"consumer" doc:"Durable name of the consumer that gave up."`
	Reason           string              `json:"reason" doc:"Why it gave up (cut at 1,024 bytes)."`
	Subject          string              `json:"subject" doc:"The original subject."`
	Deliveries       uint64              `json:"deliveries" doc:"How many times it was delivered."`
	OriginalHeaders  map[string][]string `json:"original_headers,omitempty" doc:"The original NATS headers (at most 16, four values each, each value cut at 256 bytes)."`
	OriginalData     []byte              `json:"original_data" doc:"The original payload (base64), cut at 64 KiB (see original_size)."`
	OriginalSize     int                 `json:"original_size,omitempty" doc:"The original payload's size in bytes; larger than original_data when it was cut."`
	OriginalSHA256   string              `json:"original_sha256,omitempty" doc:"SHA-256 of the whole original payload (hex)."`
	OriginalStream   string              `json:"original_stream,omitempty" doc:"The stream that holds the original."`
	OriginalSequence uint64              `json:"original_sequence,omitempty" doc:"The original's sequence in that stream."`
	FailedAt         time.Time           `json:"failed_at" doc:"When the consumer gave up."`
}

// Truncated reports whether the dead letter holds only the start of the
// original payload.
func (d DeadLetterData) Truncated() bool { return d.OriginalSize > len(d.OriginalData) }

// Dead letter limits: a dead letter must always be writable, whatever the
// size of what it carries (base64 makes a payload a third larger, and a
// message over the server's max_payload cannot be published at all).
const (
	DeadLetterDataLimit   = 64 << 10
	DeadLetterReasonLimit = 1024
	DeadLetterHeaderLimit = 256
	DeadLetterHeaders     = 16
)

// IncidentStuckData says why an open incident cannot move.
type IncidentStuckData struct {
	IncidentID string    `json:"incident_id" doc:"The incident."`
	Phase      string    `json:"phase" doc:"The phase it is stuck in."`
	Reason     string    `json:"reason" doc:"The step's last error (names the dependency, never a secret)."`
	Since      time.Time `json:"since" doc:"When the step first failed."`
}

// AuditData is one action Lockdown took on Vault, as a compliance tool
// reads it. Never a secret: counts, paths and ids only.
type AuditData struct {
	IncidentID string         `json:"incident_id" doc:"The incident."`
	Action     string         `json:"action" doc:"What was done to Vault (cancel: a sys/generate-root attempt cancelled, an alarm)." enum:"seal,revoke,rekey,rotate,destroy,restore,cancel"`
	Record     string         `json:"record" doc:"The runbook's name of the record: vault_sealed, access_revoked, unseal_keys_rotated, tenant_secrets_rotated, api_keys_revoked_emergency, platform_credentials_rotated (one catalogue entry; platform_credentials_not_rotated when it failed, critical), dkim_key_activated, access_restored; vault_swept_after_rekey and vault_swept_before_restore (the later sweeps); generate_root_cancelled (an alarm)."`
	Severity   string         `json:"severity" doc:"critical, high or info." enum:"critical,high,info"`
	Tenant     string         `json:"tenant,omitempty" doc:"The tenant acted on (rotate, destroy)."`
	Counts     map[string]int `json:"counts" doc:"What the action counted (nodes sealed, tokens revoked, keys revoked, …)."`
	Detail     string         `json:"detail,omitempty" doc:"One line more (how the rekey was proven, which auth methods were disabled)."`
	At         time.Time      `json:"at" doc:"When the action was recorded (the audited event's time)."`
	EventID    string         `json:"event_id" doc:"The event the record audits."`
}

// IncidentControlData is an operator's request about an incident.
type IncidentControlData struct {
	IncidentID  string `json:"incident_id" doc:"The incident."`
	RequestedBy string `json:"requested_by" doc:"Who asked (the operator's login and host, as the CLI reports them)."`
	Reason      string `json:"reason,omitempty" doc:"Why (required to abort)."`
}

// IncidentReviewData records (part of) the post-incident review. Empty
// fields leave what an earlier request recorded; given lists replace.
type IncidentReviewData struct {
	IncidentID         string   `json:"incident_id" doc:"The incident."`
	RequestedBy        string   `json:"requested_by" doc:"Who recorded it (the operator's login and host, as the CLI reports them)."`
	RootCause          string   `json:"root_cause,omitempty" doc:"The root cause." max:"4000"`
	LessonsLearned     []string `json:"lessons_learned,omitempty" doc:"Lessons learned, one per item." maxItems:"50" itemMax:"4000"`
	PreventiveMeasures []string `json:"preventive_measures,omitempty" doc:"Preventive measures, one per item." maxItems:"50" itemMax:"4000"`
	Final              bool     `json:"final,omitempty" doc:"The review is final: no later request changes it."`
}

// ErrInvalidReview is returned by IncidentReviewData.Validate.
var ErrInvalidReview = errors.New("invalid review")

// Review limits: a review is prose for people, not a document store.
const (
	maxReviewText  = 4000
	maxReviewItems = 50
)

// Validate reports every problem of a review request at once.
func (r IncidentReviewData) Validate() error {
	var errs []error
	if r.RequestedBy == "" {
		errs = append(errs, errors.New("requested_by is empty"))
	}
	if r.RootCause == "" && len(r.LessonsLearned) == 0 && len(r.PreventiveMeasures) == 0 && !r.Final {
		errs = append(errs, errors.New("nothing to record"))
	}
	if len(r.RootCause) > maxReviewText {
		errs = append(errs, fmt.Errorf("root cause longer than %d bytes", maxReviewText))
	}
	for name, items := range map[string][]string{"lessons learned": r.LessonsLearned, "preventive measures": r.PreventiveMeasures} {
		if len(items) > maxReviewItems {
			errs = append(errs, fmt.Errorf("more than %d %s", maxReviewItems, name))
		}
		for _, it := range items {
			if strings.TrimSpace(it) == "" || len(it) > maxReviewText {
				errs = append(errs, fmt.Errorf("%s: an item is empty or longer than %d bytes", name, maxReviewText))
				break
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidReview, errors.Join(errs...))
	}
	return nil
}

// RotationRetryData asks for failed tenants to be rotated again.
type RotationRetryData struct {
	IncidentID  string `json:"incident_id" doc:"The incident."`
	TenantID    string `json:"tenant_id,omitempty" doc:"One tenant to retry; empty: every tenant whose rotation failed, and every platform-wide catalogue entry that failed."`
	RequestedBy string `json:"requested_by" doc:"Who asked (the operator's login and host, as the CLI reports them)."`
}

// Outgoing is an event a service emits because its state changed: the
// state and the event are written in one transaction (the outbox), and
// the event is published afterwards with ID as its Nats-Msg-Id.
type Outgoing struct {
	Name Name
	ID   string
	Data any
}
