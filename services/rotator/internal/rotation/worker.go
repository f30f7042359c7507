package rotation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/pkg/platform/failpoint"
	"github.com/lockdown/lockdown/services/rotator/internal/keys"
	"github.com/lockdown/lockdown/services/rotator/internal/kinds"
	"github.com/lockdown/lockdown/services/rotator/internal/kinds/apikeys"
	"github.com/lockdown/lockdown/services/rotator/internal/kinds/dkim"
)

// ErrUnknownTenant is returned for a job whose tenant is not in the
// directory: a permanent failure.
var ErrUnknownTenant = errors.New("tenant not in the directory")

// Config of the worker.
type Config struct {
	// Mount is the KV v2 mount (default secret).
	Mount string
	// DKIM makes the DKIM keys (its package: type and size); APIKeys
	// destroys the API keys (its package).
	DKIM    dkim.Kind
	APIKeys apikeys.Kind
	// DKIMSelectors are the two selectors a delegated tenant's DNS points
	// into the platform's DKIM zone; a rollover alternates between them.
	DKIMSelectors [2]string
	// Instance names this process in the events it emits (host/pid), so a
	// report shows how the work divided among rotator processes.
	Instance string
	// Secrets are the tenant secrets a job replaces, one package per kind
	// (kinds.TenantSecret), in the order it writes them.
	Secrets []kinds.TenantSecret
	// Failpoints are the crash tests' kill points (nil: none):
	// "rotator.job.secret.written" fires after each secret's Vault write,
	// before it is recorded; "rotator.dkim.published" after a DKIM record
	// is published, before it is read back and recorded.
	Failpoints *failpoint.Set
}

// Worker runs tenant jobs.
type Worker struct {
	cfg    Config
	store  Store
	vault  Vault
	dns    DNS
	pregen *Pregen
}

// NewWorker wires a worker; pregen (may be nil) holds material generated
// ahead of the jobs; dns (may be nil: DKIM keys are then made active at
// once, unverified) publishes and checks DKIM records.
func NewWorker(cfg Config, store Store, vault Vault, dns DNS, pregen *Pregen) *Worker {
	return &Worker{cfg: cfg, store: store, vault: vault, dns: dns, pregen: pregen}
}

// path is where a tenant's secret of kind k lives in the KV v2 mount (the
// contract's layout; the staged DKIM key is the DKIM kind's second path).
func (w *Worker) path(tenant string, k credentials.Kind) string {
	if k == stagedSecret {
		return credentials.DKIM.Path(tenant, 1)
	}
	return k.Path(tenant, 0)
}

// Selector is the DKIM selector of an incident: new per incident, so the
// old key keeps verifying mail already sent while DNS moves over.
func Selector(incidentID string, at time.Time) string {
	id := strings.ReplaceAll(incidentID, "-", "")
	if len(id) > 8 {
		id = id[:8]
	}
	return "ld" + at.UTC().Format("20060102") + "-" + strings.ToLower(id)
}

// Run runs one tenant's job. alive is called between steps (InProgress).
// It returns nil when the job is completed (now or before), an error
// wrapping ErrUnknownTenant for a permanent failure, and any other error
// for a transient one (the job is retried and resumes where it stopped).
func (w *Worker) Run(ctx context.Context, job events.RotationJobData, alive func()) (err error) {
	if err := events.ValidTenantID(job.TenantID); err != nil {
		return fmt.Errorf("%w: %v", ErrUnknownTenant, err) // never a path
	}
	// Material generated while the incident waited at the gate, if this
	// process has it; else it is generated here.
	pre, havePre := w.pregen.Take(job.IncidentID, job.TenantID)
	tenant, err := w.store.Directory(ctx, job.TenantID)
	if err != nil {
		return err
	}
	if !tenant.Known {
		return fmt.Errorf("%w: %q", ErrUnknownTenant, job.TenantID)
	}
	todo, err := w.material(job, pre, havePre)
	if err != nil {
		return err
	}
	// Each secret's write id and the public parts of its material are
	// recorded before any Vault write, in the same round trip that loads
	// the job: a version found later under one of them (written by an
	// attempt that died, or by a concurrent worker that won the
	// check-and-set) is then adopted with what it really holds. The
	// rotator never reads a secret back: the write id is a key name in the
	// data, which Vault's subkeys endpoint shows without the values.
	intents := make(map[string]SecretStep, len(todo))
	for _, sw := range todo {
		intents[sw.id] = sw.step
	}
	st, err := w.store.StartJob(ctx, job.IncidentID, job.TenantID, intents)
	if err != nil {
		return err
	}
	if st.State != StatePending {
		// Already final: a redelivery. The events of the final record were
		// written with it (the outbox): nothing is left to do.
		return nil
	}
	if !st.TenantKnown {
		return fmt.Errorf("%w: %q", ErrUnknownTenant, job.TenantID)
	}
	steps := st.Steps
	// Only what a retry could not redo is recorded as it happens: the API
	// keys' count before any is destroyed, and each write id before its
	// write (a retry adopts what was written under it). Every other step
	// is idempotent and is recorded with the next record, or with the
	// job's end — or, when this attempt fails, before it returns, so that
	// a tenant told of a later failure hears all that was done.
	unsaved := false
	save := func(writes map[string]SecretStep) error {
		alive()
		if err := w.store.SaveSteps(ctx, job.IncidentID, job.TenantID, steps, writes); err != nil {
			return err
		}
		unsaved = false
		return nil
	}
	defer func() {
		if err != nil && unsaved {
			err = errors.Join(err, save(nil))
		}
	}()
	todo = slices.DeleteFunc(todo, func(sw secretWrite) bool { return steps.Secret(sw.secret) != nil })
	for _, sw := range todo {
		step, _, err := w.write(ctx, job, sw)
		if err != nil {
			return fmt.Errorf("%s: %w", sw.secret, err)
		}
		alive()
		steps.setSecret(sw.secret, &step)
		unsaved = true
	}
	if steps.APIKeys == nil || !steps.APIKeys.Done {
		keys, err := w.cfg.APIKeys.Keys(ctx, w.vault, job.TenantID)
		if err != nil {
			return fmt.Errorf("api keys: %w", err)
		}
		if steps.APIKeys == nil {
			// Count before destroying, so a retry after a crash mid-way
			// still reports every key; this also records the secrets.
			steps.APIKeys = &KeysStep{Found: len(keys)}
			if err := save(nil); err != nil {
				return err
			}
		}
		if err := w.cfg.APIKeys.Destroy(ctx, w.vault, job.TenantID, keys); err != nil {
			return fmt.Errorf("api key destroy: %w", err)
		}
		// Recorded with the DKIM key's write id, in the same round trip
		// (or by the deferred save, if the DKIM step fails first).
		steps.APIKeys.Done, unsaved = true, true
	}
	// The DKIM key last: its selector depends on the platform's DNS, and
	// an outage there must not hold back the other secrets.
	var staged map[string]any // what this attempt staged, if it did
	if steps.DKIM == nil {
		step, cut, data, err := w.stage(ctx, job, tenant, pre, havePre, save)
		if err != nil {
			return err
		}
		// Recorded before the cut-over, which may wait for DNS: a retry
		// then resumes the cut-over of this key.
		steps.DKIM, steps.Cutover, staged = &step, cut, data
		if err := save(nil); err != nil {
			return err
		}
	}
	complete := steps.DKIM != nil && steps.APIKeys != nil
	for _, k := range w.cfg.Secrets {
		complete = complete && steps.Secret(k.Kind()) != nil
	}
	if !complete {
		return fmt.Errorf("job %s/%s is completing without its steps recorded", job.IncidentID, job.TenantID)
	}
	if err := w.cutover(ctx, job, tenant, &steps, staged, func() { alive(); unsaved = true }); err != nil {
		return err
	}
	return w.store.Finish(ctx, job.IncidentID, job.TenantID, StateCompleted, "", &steps, w.events(job, StateCompleted, "", steps, tenant.Domain))
}

// material makes each tenant secret's new data (the kinds' packages; from
// pre-generation when this process has it), each under a fresh write id.
func (w *Worker) material(job events.RotationJobData, pre keys.Set, havePre bool) ([]secretWrite, error) {
	var from *keys.Set
	if havePre {
		from = &pre
	}
	todo := make([]secretWrite, 0, len(w.cfg.Secrets))
	for _, k := range w.cfg.Secrets {
		data, public, err := k.New(job.TenantID, from)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k.Kind(), err)
		}
		sw := secretWrite{secret: k.Kind(), data: data, step: SecretStep{Fingerprint: public}}
		if err := stamp(job, &sw); err != nil {
			return nil, err
		}
		todo = append(todo, sw)
	}
	return todo, nil
}

// stamp gives a secret's data a fresh write id and the incident.
func stamp(job events.RotationJobData, sw *secretWrite) error {
	id, err := newWriteID(job.IncidentID)
	if err != nil {
		return err
	}
	now := time.Now().UTC().Format(time.RFC3339)
	sw.id = id
	sw.data["lockdown_incident"], sw.data["rotated_at"] = job.IncidentID, now
	sw.data[WriteKey] = map[string]any{id: now}
	return nil
}

// Fail records a job's permanent failure, with its event. The step is kept
// in the recorded reason ("step: reason").
func (w *Worker) Fail(ctx context.Context, job events.RotationJobData, step, reason string) error {
	recorded := step + ": " + reason
	// What was done before the failure goes to the tenant: the steps
	// recorded so far (none when the job never started).
	done, err := w.store.Steps(ctx, job.IncidentID, job.TenantID)
	if err != nil {
		return err
	}
	return w.store.Finish(ctx, job.IncidentID, job.TenantID, StateFailed, recorded, nil, w.events(job, StateFailed, recorded, done, ""))
}

// Replaced names the secrets a job's steps have replaced, in the order
// the job replaces them, and the API keys destroyed so far.
func (s Steps) Replaced() (secrets []string, apiKeysDestroyed int) {
	for _, r := range s.Results("", "") {
		if r.State.Done() && r.State != credentials.AwaitingDNS {
			secrets = append(secrets, string(r.Kind))
		}
		if r.Kind == credentials.APIKeys && r.State.Done() {
			apiKeysDestroyed = r.Count
		}
	}
	return secrets, apiKeysDestroyed
}

// Results are the job's outcome per credential kind, in the order the
// contract lists the tenant kinds: what reports and notices render. A
// kind not reached is pending; failedStep (a kind's name, when the job
// failed at it) is failed with the reason.
func (s Steps) Results(failedStep, reason string) []credentials.Result {
	var out []credentials.Result
	for _, k := range credentials.OfScope(credentials.PerTenant) {
		r := credentials.Result{Kind: k, State: credentials.Pending}
		if st := s.Secret(k); st != nil {
			r = credentials.Result{Kind: k, State: credentials.Rotated, Count: 1, Public: st.Fingerprint}
		}
		switch k {
		case credentials.APIKeys:
			if s.APIKeys != nil && s.APIKeys.Done {
				r = credentials.Result{Kind: k, State: credentials.Destroyed, Count: s.APIKeys.Found}
			}
		case credentials.DKIM:
			if s.DKIM != nil && s.Cutover != nil {
				r = credentials.Result{Kind: k, State: s.Cutover.Result(), Count: 1, Public: s.DKIM.Selector}
				if !r.State.Done() {
					r.Count = 0
				}
			}
		}
		if string(k) == failedStep && !r.State.Done() {
			r.State, r.Reason = credentials.Failed, reason
		}
		out = append(out, r)
	}
	return out
}

// events returns what a job's final record emits, in the same transaction
// (the outbox): its tenant's event and, when no job of the plan is left
// pending after it, rotation.completed. The store calls it with the plan's
// progress, read under a lock of the plan, so exactly one job — the last
// to finish — emits rotation.completed.
func (w *Worker) events(job events.RotationJobData, state, reason string, steps Steps, domain string) func(Progress) []events.Outgoing {
	return func(p Progress) []events.Outgoing {
		var out []events.Outgoing
		// A retried plan's events carry the retry's number: a tenant that
		// fails again, and the corrected totals, are new events.
		suffix := ""
		if p.Retries > 0 {
			suffix = fmt.Sprintf("/retry-%d", p.Retries)
		}
		switch state {
		case StateCompleted:
			out = append(out, events.Outgoing{Name: eventsTenantCompleted, ID: job.IncidentID + "/" + job.TenantID + "/completed", Data: events.RotationTenantCompletedData{
				IncidentID: job.IncidentID, TenantID: job.TenantID, SSHFingerprint: fingerprint(steps.Secret(credentials.SSH)), DKIMSelector: steps.DKIM.Selector,
				DKIMRecord: steps.DKIM.Record, APIKeysDestroyed: steps.APIKeys.Found, SMTPPasswordRotate: steps.Secret(credentials.SMTP) != nil, Affected: job.Affected,
				RotatedBy: w.cfg.Instance, DKIMState: steps.Cutover.State(), DKIMName: DKIMName(steps.DKIM.Selector, domain),
				DKIMRevokedSelector: steps.Cutover.revoked(), Results: steps.Results("", ""),
			}})
		case StateFailed:
			step, why, ok := strings.Cut(reason, ": ")
			if !ok {
				step, why = "unknown", reason
			}
			replaced, destroyed := steps.Replaced()
			out = append(out, events.Outgoing{Name: eventsTenantFailed, ID: job.IncidentID + "/" + job.TenantID + "/failed" + suffix, Data: events.RotationTenantFailedData{
				IncidentID: job.IncidentID, TenantID: job.TenantID, Step: step, Reason: why, Replaced: replaced, APIKeysDestroyed: destroyed,
				Results: steps.Results(step, why),
			}})
		}
		if p.Pending == 0 && p.Planned > 0 {
			out = append(out, completion(job.IncidentID, suffix, p))
		}
		return out
	}
}

// fingerprint is a recorded secret's public part ("" when none).
func fingerprint(s *SecretStep) string {
	if s == nil {
		return ""
	}
	return s.Fingerprint
}

// completion is rotation.completed for a plan's progress: emitted by
// whichever job, a tenant's or a catalogue entry's, finishes last.
func completion(incidentID, suffix string, p Progress) events.Outgoing {
	return events.Outgoing{Name: eventsRotationCompleted, ID: incidentID + "/rotation.completed" + suffix, Data: events.RotationCompletedData{
		IncidentID: incidentID, Completed: p.Completed, Failed: p.Failed, Retry: p.Retries,
		Platform: p.PlatformCompleted, PlatformFailed: p.PlatformFailed,
	}}
}

// WriteKey is the key of a rotated secret's data whose only key is the
// write id (its value is the time): Vault's subkeys endpoint shows key
// names without values, so the rotator learns which write produced the
// current version without the right to read any secret.
const WriteKey = "lockdown_write"

// secretWrite is one secret about to be written: its data, its write id
// and the public parts recorded under that id.
type secretWrite struct {
	// secret is the secret's name under tenants/{id}/: its kind's, or
	// the staged DKIM key's.
	secret credentials.Kind
	id     string
	data   map[string]any
	step   SecretStep
}

// newWriteID names one attempt's write of one secret: the incident and a
// random part, so no two attempts share it.
func newWriteID(incidentID string) (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return incidentID + "/" + hex.EncodeToString(b), nil
}

// write gives a secret exactly one new version for the incident: if the
// latest version was written under one of this job's recorded write ids
// (by an attempt that died before recording it, or a concurrent worker
// that won) it is adopted with the public parts recorded for that id, so
// what is recorded and told to the tenant is what Vault holds; otherwise
// the data is written with check-and-set on the version just read, so two
// workers on the same job cannot both write. It reports false when a
// version was adopted: Vault then holds that version's data, not sw's.
func (w *Worker) write(ctx context.Context, job events.RotationJobData, sw secretWrite) (SecretStep, bool, error) {
	path := w.path(job.TenantID, sw.secret)
	if sw.secret == stagedSecret {
		// The staged copy is destroyed after every activation, so the path
		// is usually empty: a write that expects no version at all needs
		// no look first (two Vault reads fewer per tenant). Anything there
		// — an earlier attempt's copy to adopt, or someone else's — fails
		// the check-and-set and takes the path below.
		v, err := w.vault.WriteCAS(ctx, path, sw.data, 0)
		if err == nil {
			w.cfg.Failpoints.Hit("rotator.job.secret.written")
			step := sw.step
			step.Version = v
			return step, true, nil
		}
		if !errors.Is(err, ErrCASMismatch) {
			return SecretStep{}, false, err
		}
	}
	for range 2 {
		version, writeID, err := w.vault.Latest(ctx, path)
		if err != nil {
			return SecretStep{}, false, err
		}
		// Only this incident's write ids can be this job's (a write id
		// starts with its incident): another incident's version costs no
		// lookup.
		if strings.HasPrefix(writeID, job.IncidentID+"/") {
			step, ok, err := w.store.Write(ctx, job.IncidentID, job.TenantID, writeID)
			if err != nil {
				return SecretStep{}, false, err
			}
			if ok {
				step.Version = version
				return step, false, nil
			}
		}
		v, err := w.vault.WriteCAS(ctx, path, sw.data, version)
		if errors.Is(err, ErrCASMismatch) {
			continue // someone wrote meanwhile: look again
		}
		if err != nil {
			return SecretStep{}, false, err
		}
		w.cfg.Failpoints.Hit("rotator.job.secret.written")
		step := sw.step
		step.Version = v
		return step, true, nil
	}
	return SecretStep{}, false, fmt.Errorf("%s: %w twice", path, ErrCASMismatch)
}
