// Package rotation is the rotator's domain: plan one job per tenant once an
// incident is assessed and its access revoked, and run a tenant's job — new
// SSH, SMTP and DKIM secrets written with check-and-set, every API key
// destroyed — so that a redelivered job finishes what is not done and never
// writes a second version. It imports no transport.
package rotation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/credentials"
)

// Job is one planned tenant.
type Job struct {
	TenantID string
	Affected bool
	// Invalid, when set, says why the tenant's id cannot be used (it is
	// planned as failed: its id never becomes a Vault path).
	Invalid string
}

// Job states.
const (
	StatePending   = "pending"
	StateCompleted = "completed"
	StateFailed    = "failed"
)

// SecretStep records one secret written: its new KV version, and the
// public parts worth reporting.
type SecretStep struct {
	Version int `json:"version"`
	// Fingerprint is the secret's public part, as its kind says (an SSH
	// key's fingerprint).
	Fingerprint string `json:"fingerprint,omitempty"`
	Selector    string `json:"selector,omitempty"`
	Record      string `json:"record,omitempty"`
}

// KeysStep records the API keys' destruction: how many were found (before
// any was destroyed) and whether all are gone.
type KeysStep struct {
	Found int  `json:"found"`
	Done  bool `json:"done"`
}

// Steps are a job's recorded progress. Stored as one JSON object: each
// replaced secret under its kind's name ("ssh", "smtp"), and "dkim",
// "api_keys", "dkim_cutover".
type Steps struct {
	// Secrets are the tenant secrets written (kinds.TenantSecret), by kind.
	Secrets map[credentials.Kind]*SecretStep `json:"-"`
	// DKIM is the new key staged at tenants/{id}/dkim-pending.
	DKIM    *SecretStep `json:"-"`
	APIKeys *KeysStep   `json:"-"`
	// Cutover is the DKIM key's way from staged to active (dkim.go).
	Cutover *Cutover `json:"-"`
}

// Secret returns the recorded step of a tenant secret (nil: not written).
func (s Steps) Secret(k credentials.Kind) *SecretStep { return s.Secrets[k] }

// setSecret records a tenant secret's step.
func (s *Steps) setSecret(k credentials.Kind, step *SecretStep) {
	if s.Secrets == nil {
		s.Secrets = map[credentials.Kind]*SecretStep{}
	}
	s.Secrets[k] = step
}

// The keys of Steps' JSON object that are not a secret's kind.
const (
	stepsDKIM    = string(credentials.DKIM) // the staged key's step
	stepsAPIKeys = string(credentials.APIKeys)
	stepsCutover = "dkim_cutover"
)

// AwaitingDNSPath is the JSON path, in a job's stored steps, of the flag
// saying its DKIM key waits for the tenant's DNS (the store's query of the
// jobs to re-check takes it, rather than a copy of the JSON names).
func AwaitingDNSPath() []string { return []string{stepsCutover, cutoverAwaiting} }

// MarshalJSON writes the steps as one object (the shape a job's steps have
// always been stored in: rows of jobs in flight read back unchanged).
func (s Steps) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	for k, v := range s.Secrets {
		if v != nil {
			m[string(k)] = v
		}
	}
	if s.DKIM != nil {
		m[stepsDKIM] = s.DKIM
	}
	if s.APIKeys != nil {
		m[stepsAPIKeys] = s.APIKeys
	}
	if s.Cutover != nil {
		m[stepsCutover] = s.Cutover
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (s *Steps) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*s = Steps{}
	for k, v := range raw {
		if string(v) == "null" {
			continue
		}
		var err error
		switch k {
		case stepsDKIM:
			s.DKIM = &SecretStep{}
			err = json.Unmarshal(v, s.DKIM)
		case stepsAPIKeys:
			s.APIKeys = &KeysStep{}
			err = json.Unmarshal(v, s.APIKeys)
		case stepsCutover:
			s.Cutover = &Cutover{}
			err = json.Unmarshal(v, s.Cutover)
		default:
			step := &SecretStep{}
			err = json.Unmarshal(v, step)
			s.setSecret(credentials.Kind(k), step)
		}
		if err != nil {
			return fmt.Errorf("steps %s: %w", k, err)
		}
	}
	return nil
}

// JobState is a job as stored.
type JobState struct {
	State  string
	Steps  Steps
	Reason string
	// TenantKnown says whether the directory has the tenant (read in the
	// same query: one round trip per job start).
	TenantKnown bool
}

// TenantDNS is what the directory says about a tenant's DKIM records.
type TenantDNS struct {
	Known  bool
	Domain string
	// Delegation is the name in the platform's DKIM zone the tenant's
	// selectors point into by CNAME ("" when the tenant publishes its own).
	Delegation string
}

// Awaiting is a completed job whose DKIM key waits for the tenant's DNS.
type Awaiting struct {
	IncidentID, TenantID string
	Domain               string
	Steps                Steps
}

// PlatformJob is one planned catalogue entry.
type PlatformJob struct {
	Entry string
	Kind  credentials.Kind
}

// Progress of a plan: its tenants' jobs, and Pending counts the platform
// entries' too (the plan completes when nothing of either is pending).
type Progress struct {
	Planned, Completed, Failed, Pending int
	// PlatformCompleted and PlatformFailed count the catalogue entries.
	PlatformCompleted, PlatformFailed int
	// Retries counts the operator's retries of the plan (lockdown retry).
	Retries int
}

// Affected is what the assessment said was read: the tenants it listed,
// and whether the list was cut (assessment.completed carries at most a
// bounded number; affected_total says how many there were).
type Affected struct {
	Tenants []string
	Cut     bool
}

// Store is the rotator's database.
type Store interface {
	Gate(ctx context.Context, incidentID string, assessed, revoked bool, affected Affected) (ready bool, _ Affected, err error)
	Tenants(ctx context.Context) ([]string, error)
	// Directory reads a tenant's DKIM publication from the directory.
	Directory(ctx context.Context, tenantID string) (TenantDNS, error)
	// Awaiting returns up to limit completed jobs whose DKIM key waits for
	// the tenant's DNS, each locked for this caller until done is called
	// (other processes skip them): done(steps, emit) records the new steps
	// and writes the events in the same transaction; done(nil, nil) just
	// lets go.
	Awaiting(ctx context.Context, limit int, each func(Awaiting) (*Steps, []events.Outgoing, error)) (int, error)
	// SavePlan stores the plan and its jobs, and the events announcing
	// them in the same transaction, once: created is false (and nothing is
	// emitted) when the incident was planned before.
	SavePlan(ctx context.Context, incidentID, policy string, jobs []Job, platform []PlatformJob, emit []events.Outgoing) (created bool, err error)
	// StartPlatform returns a catalogue entry's job as the plan recorded
	// it (its state and the kind's record); planned is false when the
	// incident's plan has no such entry of that kind.
	StartPlatform(ctx context.Context, incidentID, entry string, kind credentials.Kind) (state string, record []byte, planned bool, err error)
	// SavePlatform records a catalogue entry's progress.
	SavePlatform(ctx context.Context, incidentID, entry string, record []byte) error
	// FinishPlatform sets the entry's final state once, with the events
	// emit returns for the plan's progress after it (as Finish).
	FinishPlatform(ctx context.Context, incidentID, entry, state, reason string, emit func(Progress) []events.Outgoing) error
	// StartJob adds write ids, with the public parts each carries, to the
	// job's record before any write is attempted (never a secret), and
	// returns the job as recorded.
	StartJob(ctx context.Context, incidentID, tenantID string, writes map[string]SecretStep) (JobState, error)
	// Retry sets the plan's failed jobs (or one tenant's, when failed)
	// pending again under a new retry number and writes the events that
	// run them in the same transaction; it returns the jobs retried.
	// Without a tenant, the plan's failed platform entries go back to
	// pending too.
	Retry(ctx context.Context, incidentID, tenantID string, emit func(retry int, jobs []Job, platform []PlatformJob) []events.Outgoing) ([]Job, []PlatformJob, error)
	// SaveSteps records the job's steps and, in the same round trip, adds
	// write ids as StartJob does (writes may be nil).
	SaveSteps(ctx context.Context, incidentID, tenantID string, steps Steps, writes map[string]SecretStep) error
	// Steps returns a job's recorded steps (none for a job never started).
	Steps(ctx context.Context, incidentID, tenantID string) (Steps, error)
	// Write returns what was recorded for one of the job's write ids (ok
	// false when the id is not this job's).
	Write(ctx context.Context, incidentID, tenantID, writeID string) (step SecretStep, ok bool, err error)
	// Finish sets the job's final state (and its steps, when given) once,
	// and in the same transaction writes the events emit returns for the
	// plan's progress after it (read under a lock of the plan, so that of
	// jobs finishing together exactly one sees none left). A job already
	// final is left as it is and emits nothing.
	Finish(ctx context.Context, incidentID, tenantID, state, reason string, steps *Steps, emit func(Progress) []events.Outgoing) error
}

// ErrCASMismatch is returned by Vault.WriteCAS when the secret changed
// since its version was read.
var ErrCASMismatch = errors.New("check-and-set version mismatch")

// Vault is the KV v2 mount holding tenants' secrets.
type Vault interface {
	// Latest returns the current version of a secret (0 when none) and the
	// write id its data carries under WriteKey ("" when none), without
	// reading the secret's values.
	Latest(ctx context.Context, path string) (version int, writeID string, err error)
	// WriteCAS writes a new version only if the current one is cas.
	WriteCAS(ctx context.Context, path string, data map[string]any, cas int) (int, error)
	// List returns the keys directly under a folder.
	List(ctx context.Context, folder string) ([]string, error)
	// Destroy removes a secret's metadata and every version for good.
	Destroy(ctx context.Context, path string) error
	// ReadStaged reads a staged DKIM key (tenants/{id}/dkim-pending): the
	// one secret the rotator may read back, to make it active once its
	// record is published (nil when there is none).
	ReadStaged(ctx context.Context, path string) (map[string]any, error)
}

// DNS is where DKIM records are published and checked.
type DNS interface {
	// Publish makes record the only DKIM record at name in the platform's
	// DKIM zone (RFC 2136, signed with its TSIG key).
	Publish(ctx context.Context, name, record string) error
	// Authoritative returns the records at name on the platform's
	// authoritative server.
	Authoritative(ctx context.Context, name string) ([]string, error)
	// Resolve returns the records a tenant's own DNS shows at name,
	// following CNAMEs.
	Resolve(ctx context.Context, name string) ([]string, error)
}
