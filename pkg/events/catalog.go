package events

import (
	"reflect"
	"sort"
	"strings"
)

// TypePrefix and TypeSuffix frame every CloudEvents type Lockdown emits:
// io.lockdown.<name>.v1.
const (
	TypePrefix = "io.lockdown."
	TypeSuffix = ".v1"
	// SubjectPrefix is the root of every NATS subject Lockdown uses.
	SubjectPrefix = "lockdown."
)

// Name identifies an event independently of its version, e.g. "breach.detected".
type Name string

// Event names, one per step of the runbook in shared/DESIGN.md.
const (
	BreachDetected           Name = "breach.detected"
	IncidentOpened           Name = "incident.opened"
	VaultSealed              Name = "vault.sealed"
	ContainmentFailed        Name = "containment.failed"
	VaultUnsealed            Name = "vault.unsealed"
	AssessmentCompleted      Name = "assessment.completed"
	AccessRevoked            Name = "access.revoked"
	UnsealKeysRotated        Name = "unsealkeys.rotated"
	VaultReconciled          Name = "vault.reconciled"
	RotationPlanned          Name = "rotation.planned"
	RotationJob              Name = "rotation.job"
	RotationTenantCompleted  Name = "rotation.tenant.completed"
	RotationTenantFailed     Name = "rotation.tenant.failed"
	RotationCompleted        Name = "rotation.completed"
	RotationDKIMActivated    Name = "rotation.dkim.activated"
	RotationPlatformJob      Name = "rotation.platform.job"
	RotationPlatformDone     Name = "rotation.platform.completed"
	NotificationSent         Name = "notification.sent"
	NotificationFailed       Name = "notification.failed"
	NotificationsCompleted   Name = "notifications.completed"
	AccessRestored           Name = "access.restored"
	IncidentResolved         Name = "incident.resolved"
	IncidentStuck            Name = "incident.stuck"
	Audit                    Name = "audit"
	IncidentResumeRequested  Name = "incident.resume.requested"
	IncidentAbortRequested   Name = "incident.abort.requested"
	IncidentConfirmRequested Name = "incident.confirm.requested"
	RotationRetryRequested   Name = "rotation.retry.requested"
	IncidentReviewRequested  Name = "incident.review.requested"
	DeadLetter               Name = "deadletter"
)

// Type is the CloudEvents type of the event, e.g. io.lockdown.breach.detected.v1.
func (n Name) Type() string { return TypePrefix + string(n) + TypeSuffix }

// Subject is the NATS subject the event is published on. Dead letters are
// published below it, one subject per consumer (see DeadLetterSubject).
func (n Name) Subject() string { return SubjectPrefix + string(n) }

// Spec describes one event of the contract.
type Spec struct {
	Name Name
	// Description says what the event means, for docs/events.md.
	Description string
	// Publishers are the NATS users allowed to publish it (deploy/nats is
	// generated from them).
	Publishers []string
	// Consumers are the services that act on it.
	Consumers []string
	// Stream is the JetStream stream that stores it.
	Stream string
	// Watchers are services that follow the event live (a plain NATS
	// subscription in every process, best effort) besides its consumers.
	Watchers []string
	// data is a zero value of the event's data struct.
	data any
}

// Type is the CloudEvents type of the spec's event.
func (s Spec) Type() string { return s.Name.Type() }

// Subject is the NATS subject of the spec's event.
func (s Spec) Subject() string { return s.Name.Subject() }

// FilterSubject is the subject filter that matches every message of the
// event: its subject, or for dead letters every consumer's subject below it.
func (s Spec) FilterSubject() string {
	if s.Name == DeadLetter {
		return s.Subject() + ".>"
	}
	return s.Subject()
}

// NewData returns a pointer to a fresh value of the event's data struct.
func (s Spec) NewData() any { return reflect.New(reflect.TypeOf(s.data)).Interface() }

// DataType is the Go type of the event's data.
func (s Spec) DataType() reflect.Type { return reflect.TypeOf(s.data) }

// Service names, used as producers, consumers and CloudEvents sources.
const (
	ServiceContainment = "containment"
	ServiceAssessor    = "assessor"
	ServiceRotator     = "rotator"
	ServiceNotifier    = "notifier"
	ServiceCLI         = "lockdown-cli"
	// UserSIEM is the NATS user of the detector: the only one, besides
	// containment's HTTP intake, that may publish breach events.
	// `lockdown trigger` publishes with its credentials.
	UserSIEM = "siem"
	// UserOperator is the NATS user of the lockdown CLI: it reads every
	// stream and replays dead letters, but cannot publish breaches.
	UserOperator = "operator"
	// AnyConsumer stands for every service that runs a consumer.
	AnyConsumer = "any consumer"
)

// Catalog lists every event of the contract in runbook order.
var catalog = []Spec{
	{Name: BreachDetected, Stream: StreamEvents, data: BreachDetectedData{},
		Description: "A detector reports unauthorised access to Vault: the SIEM with `nats pub` (or `lockdown trigger` with the SIEM's credentials), or containment's HTTP intake `POST /v1/breaches`. The external contract of Lockdown.",
		Publishers:  []string{UserSIEM, ServiceContainment}, Consumers: []string{ServiceContainment}},
	{Name: IncidentOpened, Stream: StreamEvents, data: IncidentOpenedData{},
		Description: "Containment opened an incident for a first valid breach event.",
		Publishers:  []string{ServiceContainment}, Consumers: []string{ServiceAssessor, ServiceCLI},
		Watchers: []string{ServiceRotator}}, // every rotator pre-generates key material while the incident waits
	{Name: VaultSealed, Stream: StreamEvents, data: VaultSealedData{},
		Description: "Every configured Vault node is confirmed sealed (per node: how, when requested, when confirmed).",
		Publishers:  []string{ServiceContainment}, Consumers: []string{ServiceCLI}},
	{Name: ContainmentFailed, Stream: StreamEvents, data: ContainmentFailedData{},
		Description: "A node was not confirmed sealed within the deadline; containment keeps trying.",
		Publishers:  []string{ServiceContainment}, Consumers: []string{ServiceCLI}},
	{Name: VaultUnsealed, Stream: StreamEvents, data: VaultUnsealedData{},
		Description: "The key holders unsealed the active node; the unseal gate is passed.",
		Publishers:  []string{ServiceContainment}, Consumers: []string{ServiceContainment}},
	{Name: AssessmentCompleted, Stream: StreamEvents, data: AssessmentCompletedData{},
		Description: "The assessor finished reading the audit log: scope, affected tenants, actors. Never secret values.",
		Publishers:  []string{ServiceAssessor}, Consumers: []string{ServiceRotator}},
	{Name: AccessRevoked, Stream: StreamEvents, data: AccessRevokedData{},
		Description: "Compromised auth methods disabled, tokens and leases revoked, keyring rotated. Rotation may not start before it.",
		Publishers:  []string{ServiceContainment}, Consumers: []string{ServiceRotator}},
	{Name: VaultReconciled, Stream: StreamEvents, data: VaultReconciledData{},
		Description: "Containment swept Vault again after the revocation — once the rekey is proven and again just before access is restored: every token minted meanwhile by anyone but Lockdown revoked, Vault's security configuration reconciled with the declaration again. Stage ceremony is an alarm: a sys/generate-root attempt was cancelled while the key holders were in the ceremony.",
		Publishers:  []string{ServiceContainment}, Consumers: []string{ServiceCLI},
		Watchers: []string{UserSIEM}}, // the SIEM subscribes to be told of the alarms
	{Name: UnsealKeysRotated, Stream: StreamEvents, data: UnsealKeysRotatedData{},
		Description: "The rekey ceremony completed: new unseal shares issued (fingerprints only).",
		Publishers:  []string{ServiceContainment}, Consumers: []string{ServiceCLI}},
	{Name: RotationPlanned, Stream: StreamEvents, data: RotationPlannedData{},
		Description: "The rotator planned one job per tenant for the incident.",
		Publishers:  []string{ServiceRotator}, Consumers: []string{ServiceNotifier, ServiceCLI}},
	{Name: RotationJob, Stream: StreamJobs, data: RotationJobData{},
		Description: "One tenant's rotation job on the work queue; any rotator process takes it.",
		Publishers:  []string{ServiceRotator}, Consumers: []string{ServiceRotator}},
	{Name: RotationPlatformJob, Stream: StreamJobs, data: RotationPlatformJobData{},
		Description: "One platform-wide catalogue entry's rotation job (transit keys, database credentials, certificates, platform secrets); any rotator process takes it.",
		Publishers:  []string{ServiceRotator}, Consumers: []string{ServiceRotator}},
	{Name: RotationPlatformDone, Stream: StreamEvents, data: RotationPlatformCompletedData{},
		Description: "One platform-wide catalogue entry was rotated, or failed for good (result.state).",
		Publishers:  []string{ServiceRotator}, Consumers: []string{ServiceCLI}},
	{Name: RotationTenantCompleted, Stream: StreamEvents, data: RotationTenantCompletedData{},
		Description: "One tenant's SSH, SMTP and DKIM secrets were rotated and its API keys destroyed.",
		Publishers:  []string{ServiceRotator}, Consumers: []string{ServiceNotifier}},
	{Name: RotationTenantFailed, Stream: StreamEvents, data: RotationTenantFailedData{},
		Description: "One tenant's rotation failed permanently.",
		Publishers:  []string{ServiceRotator}, Consumers: []string{ServiceNotifier, ServiceCLI}},
	{Name: RotationCompleted, Stream: StreamEvents, data: RotationCompletedData{},
		Description: "Every job of the plan — each tenant's and each platform-wide catalogue entry's — has a final state.",
		Publishers:  []string{ServiceRotator}, Consumers: []string{ServiceContainment}},
	{Name: RotationDKIMActivated, Stream: StreamEvents, data: RotationDKIMActivatedData{},
		Description: "A tenant that publishes its own DKIM records published the new one, and its new key became active (after a rotation.tenant.completed with dkim_state awaiting_dns).",
		Publishers:  []string{ServiceRotator}, Consumers: []string{ServiceCLI}},
	{Name: NotificationSent, Stream: StreamEvents, data: NotificationSentData{},
		Description: "A tenant was notified on one channel.",
		Publishers:  []string{ServiceNotifier}, Consumers: []string{ServiceCLI}},
	{Name: NotificationFailed, Stream: StreamEvents, data: NotificationFailedData{},
		Description: "A tenant could not be notified on one channel (permanent failure).",
		Publishers:  []string{ServiceNotifier}, Consumers: []string{ServiceCLI}},
	{Name: NotificationsCompleted, Stream: StreamEvents, data: NotificationsCompletedData{},
		Description: "Every tenant of the plan has a final notification state.",
		Publishers:  []string{ServiceNotifier}, Consumers: []string{ServiceContainment}},
	{Name: AccessRestored, Stream: StreamEvents, data: AccessRestoredData{},
		Description: "Auth methods re-enabled and their configuration re-applied.",
		Publishers:  []string{ServiceContainment}, Consumers: []string{ServiceCLI}},
	{Name: IncidentResolved, Stream: StreamEvents, data: IncidentResolvedData{},
		Description: "The incident ended (resolved or failed); carries the report's headline (the whole report is in PostgreSQL: lockdown report).",
		Publishers:  []string{ServiceContainment}, Consumers: []string{ServiceCLI}},
	{Name: IncidentStuck, Stream: StreamEvents, data: IncidentStuckData{},
		Description: "An open incident cannot move: a dependency (Vault, PostgreSQL, NATS) has failed its step for longer than LOCKDOWN_STUCK_AFTER. Raised again with the next reason; the incident moves on by itself once the dependency answers.",
		Publishers:  []string{ServiceContainment}, Consumers: []string{ServiceCLI},
		Watchers: []string{UserSIEM}}, // the SIEM subscribes to be told
	{Name: Audit, Stream: StreamEvents, data: AuditData{},
		Description: "One action Lockdown took on Vault (seal, revoke, rekey, rotate, destroy, restore) as a compliance record with its severity and counts — the runbook's `api_keys_revoked_emergency` among them. Derived by containment from the incident's events as it records them; not part of the timeline.",
		Publishers:  []string{ServiceContainment}, Consumers: []string{ServiceCLI},
		Watchers: []string{UserSIEM}}, // the SIEM (or any compliance tool with its credentials) subscribes
	{Name: IncidentResumeRequested, Stream: StreamEvents, data: IncidentControlData{},
		Description: "An operator asked (`lockdown resume`) to drive the incident now: containment retries its step at once and re-announces the step's event to the services waiting on it.",
		Publishers:  []string{UserOperator}, Consumers: []string{ServiceContainment}},
	{Name: IncidentAbortRequested, Stream: StreamEvents, data: IncidentControlData{},
		Description: "An operator closed the incident as failed (`lockdown abort`), with a reason: it ends with its report, and the next breach opens a new incident.",
		Publishers:  []string{UserOperator}, Consumers: []string{ServiceContainment}},
	{Name: IncidentConfirmRequested, Stream: StreamEvents, data: IncidentControlData{},
		Description: "An operator confirmed (`lockdown confirm`) an incident whose breach was not allowed to seal Vault by itself (a severity or Vault cluster outside LOCKDOWN_AUTO_SEAL_*): containment seals now and the runbook goes on.",
		Publishers:  []string{UserOperator}, Consumers: []string{ServiceContainment}},
	{Name: IncidentReviewRequested, Stream: StreamEvents, data: IncidentReviewData{},
		Description: "An operator recorded the post-incident review (`lockdown review`): root cause, lessons learned, preventive measures, and whether the review is final. Each request is in the timeline with who made it; the report is regenerated with them. A review once final takes no more changes.",
		Publishers:  []string{UserOperator}, Consumers: []string{ServiceContainment}},
	{Name: RotationRetryRequested, Stream: StreamEvents, data: RotationRetryData{},
		Description: "An operator asked (`lockdown retry`) to rotate again the tenants whose rotation failed (or one of them), and the failed platform-wide catalogue entries, once the cause is mended: their jobs run again, the tenants are notified, and corrected totals follow (`rotation.completed`, `notifications.completed`, the report).",
		Publishers:  []string{UserOperator}, Consumers: []string{ServiceRotator}},
	{Name: DeadLetter, Stream: StreamDeadLetters, data: DeadLetterData{},
		Description: "A message a consumer could not process: the reason and the original message. Published on `lockdown.deadletter.<durable>`.",
		Publishers:  []string{AnyConsumer}, Consumers: []string{ServiceCLI}},
}

// Catalog returns every event of the contract in runbook order. The slice
// is a copy; changing it changes nothing.
func Catalog() []Spec { return append([]Spec(nil), catalog...) }

// Lookup finds the spec of a CloudEvents type.
func Lookup(ceType string) (Spec, bool) {
	for _, s := range catalog {
		if s.Type() == ceType {
			return s, true
		}
	}
	return Spec{}, false
}

// SpecOf returns the spec of a known event name. It panics on a name that is
// not in the catalog: that is a programming error, caught by tests.
func SpecOf(n Name) Spec {
	for _, s := range catalog {
		if s.Name == n {
			return s
		}
	}
	panic("events: unknown event name " + string(n))
}

// OutboxDeadLetters names the dead letters of a service's outbox relay:
// an event JetStream refused for good is parked and announced on
// DeadLetterSubject(OutboxDeadLetters(service)). No consumer has the name,
// so such a letter is listed by `lockdown dlq` and never replayed (the
// same message would be refused again).
func OutboxDeadLetters(service string) string { return "outbox-" + service }

// DeadLetterSubject is the subject a consumer's dead letters go to.
func DeadLetterSubject(durable string) string {
	return DeadLetter.Subject() + "." + durable
}

// subjectsOf lists the subjects of the events stored in a stream.
func subjectsOf(stream string) []string {
	var out []string
	for _, s := range catalog {
		if s.Stream != stream {
			continue
		}
		out = append(out, s.FilterSubject())
	}
	sort.Strings(out)
	return out
}

// serviceName turns a producer label into the CloudEvents source used by a
// service: /lockdown/<service>.
func SourceOf(service string) string {
	return "/lockdown/" + strings.ToLower(service)
}
