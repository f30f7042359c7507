package rotation

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/failpoint"
	"github.com/lockdown/lockdown/services/rotator/internal/keys"
)

// ErrUnknownTenant is returned for a job whose tenant is not in the
// directory: a permanent failure.
var ErrUnknownTenant = errors.New("tenant not in the directory")

// Config of the worker.
type Config struct {
	// Mount is the KV v2 mount (default secret).
	Mount string
	// DKIMType is rsa or ed25519; DKIMBits the RSA size.
	DKIMType string
	DKIMBits int
	// Instance names this process in the events it emits (host/pid), so a
	// report shows how the work divided among rotator processes.
	Instance string
	// Failpoints are the crash tests' kill points (nil: none):
	// "rotator.job.secret.written" fires after each secret's Vault write,
	// before it is recorded.
	Failpoints *failpoint.Set
}

// Worker runs tenant jobs.
type Worker struct {
	cfg    Config
	store  Store
	vault  Vault
	pregen *Pregen
}

// NewWorker wires a worker; pregen (may be nil) holds material generated
// ahead of the jobs.
func NewWorker(cfg Config, store Store, vault Vault, pregen *Pregen) *Worker {
	return &Worker{cfg: cfg, store: store, vault: vault, pregen: pregen}
}

// Paths of a tenant's secrets in the KV v2 mount (docs/operations.md).
func (w *Worker) path(tenant, secret string) string { return "tenants/" + tenant + "/" + secret }

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
func (w *Worker) Run(ctx context.Context, job events.RotationJobData, alive func()) error {
	st, err := w.store.LoadJob(ctx, job.IncidentID, job.TenantID)
	if err != nil {
		return err
	}
	if st.State != StatePending {
		// Already final: a redelivery. The events of the final record were
		// written with it (the outbox): nothing is left to do.
		return nil
	}
	if err := events.ValidTenantID(job.TenantID); err != nil {
		return fmt.Errorf("%w: %v", ErrUnknownTenant, err) // never a path
	}
	if !st.TenantKnown {
		return fmt.Errorf("%w: %q", ErrUnknownTenant, job.TenantID)
	}
	steps := st.Steps
	// Material generated while the incident waited at the gate, if this
	// process has it; else each step generates its own.
	pre, havePre := w.pregen.Take(job.IncidentID, job.TenantID)
	save := func() error { alive(); return w.store.SaveSteps(ctx, job.IncidentID, job.TenantID, steps) }
	// The three secrets are recorded together with the API key count, and
	// the rest with the final state: a crash before a record is safe
	// because each new version carries the incident id, which the retry
	// recognises (see write) instead of writing again.
	saveSecret := func() error { alive(); return nil }
	now := time.Now().UTC().Format(time.RFC3339)
	mark := func(data map[string]any) map[string]any {
		data["lockdown_incident"], data["rotated_at"] = job.IncidentID, now
		return data
	}
	if steps.SSH == nil {
		k, err := pre.SSH, error(nil)
		if !havePre {
			k, err = keys.NewSSH("lockdown-" + job.TenantID)
		}
		if err != nil {
			return err
		}
		v, adopted, err := w.write(ctx, job.IncidentID, w.path(job.TenantID, "ssh"), mark(map[string]any{
			"private_key": k.PrivateKey, "public_key": k.PublicKey, "fingerprint": k.Fingerprint}))
		if err != nil {
			return fmt.Errorf("ssh: %w", err)
		}
		steps.SSH = &SecretStep{Version: v, Fingerprint: k.Fingerprint}
		if adopted != nil {
			steps.SSH.Fingerprint = adopted.Fingerprint
		}
		if err := saveSecret(); err != nil {
			return err
		}
	}
	if steps.SMTP == nil {
		pw, err := pre.SMTPPassword, error(nil)
		if !havePre {
			pw, err = keys.NewPassword(40)
		}
		if err != nil {
			return err
		}
		v, _, err := w.write(ctx, job.IncidentID, w.path(job.TenantID, "smtp"), mark(map[string]any{"username": job.TenantID, "password": pw}))
		if err != nil {
			return fmt.Errorf("smtp: %w", err)
		}
		steps.SMTP = &SecretStep{Version: v}
		if err := saveSecret(); err != nil {
			return err
		}
	}
	if steps.DKIM == nil {
		d, err := pre.DKIM, error(nil)
		if !havePre {
			d, err = keys.NewDKIM(w.cfg.DKIMType, w.cfg.DKIMBits, Selector(job.IncidentID, time.Now()))
		}
		if err != nil {
			return err
		}
		v, adopted, err := w.write(ctx, job.IncidentID, w.path(job.TenantID, "dkim"), mark(map[string]any{
			"selector": d.Selector, "private_key": d.PrivateKey, "dns_record": d.Record, "key_type": d.Type}))
		if err != nil {
			return fmt.Errorf("dkim: %w", err)
		}
		steps.DKIM = &SecretStep{Version: v, Selector: d.Selector, Record: d.Record}
		if adopted != nil {
			steps.DKIM.Selector, steps.DKIM.Record = adopted.Selector, adopted.Record
		}
		if err := saveSecret(); err != nil {
			return err
		}
	}
	if steps.APIKeys == nil || !steps.APIKeys.Done {
		folder := "api_keys/" + job.TenantID + "/"
		keys, err := w.vault.List(ctx, folder)
		if err != nil {
			return fmt.Errorf("api keys: %w", err)
		}
		if steps.APIKeys == nil {
			// Count before destroying, so a retry after a crash mid-way
			// still reports every key; this also records the secrets.
			steps.APIKeys = &KeysStep{Found: len(keys)}
			if err := save(); err != nil {
				return err
			}
		}
		for _, k := range keys {
			if err := w.vault.Destroy(ctx, folder+k); err != nil {
				return fmt.Errorf("api key destroy: %w", err)
			}
		}
		steps.APIKeys.Done = true
	}
	if steps.SSH == nil || steps.DKIM == nil || steps.APIKeys == nil {
		return fmt.Errorf("job %s/%s is completing without its steps recorded", job.IncidentID, job.TenantID)
	}
	return w.store.Finish(ctx, job.IncidentID, job.TenantID, StateCompleted, "", &steps, w.events(job, StateCompleted, "", steps))
}

// Fail records a job's permanent failure, with its event. The step is kept
// in the recorded reason ("step: reason").
func (w *Worker) Fail(ctx context.Context, job events.RotationJobData, step, reason string) error {
	recorded := step + ": " + reason
	return w.store.Finish(ctx, job.IncidentID, job.TenantID, StateFailed, recorded, nil, w.events(job, StateFailed, recorded, Steps{}))
}

// events returns what a job's final record emits, in the same transaction
// (the outbox): its tenant's event and, when no job of the plan is left
// pending after it, rotation.completed. The store calls it with the plan's
// progress, read under a lock of the plan, so exactly one job — the last
// to finish — emits rotation.completed.
func (w *Worker) events(job events.RotationJobData, state, reason string, steps Steps) func(Progress) []events.Outgoing {
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
				IncidentID: job.IncidentID, TenantID: job.TenantID, SSHFingerprint: steps.SSH.Fingerprint, DKIMSelector: steps.DKIM.Selector,
				DKIMRecord: steps.DKIM.Record, APIKeysDestroyed: steps.APIKeys.Found, SMTPPasswordRotate: true, Affected: job.Affected,
				RotatedBy: w.cfg.Instance,
			}})
		case StateFailed:
			step, why, ok := strings.Cut(reason, ": ")
			if !ok {
				step, why = "unknown", reason
			}
			out = append(out, events.Outgoing{Name: eventsTenantFailed, ID: job.IncidentID + "/" + job.TenantID + "/failed" + suffix, Data: events.RotationTenantFailedData{
				IncidentID: job.IncidentID, TenantID: job.TenantID, Step: step, Reason: why,
			}})
		}
		if p.Pending == 0 && p.Planned > 0 {
			out = append(out, events.Outgoing{Name: eventsRotationCompleted, ID: job.IncidentID + "/rotation.completed" + suffix, Data: events.RotationCompletedData{
				IncidentID: job.IncidentID, Completed: p.Completed, Failed: p.Failed, Retry: p.Retries,
			}})
		}
		return out
	}
}

// write gives a secret exactly one new version for the incident: if the
// latest version already carries the incident (written by an attempt that
// died before recording it) it is taken as is, and its mark is returned so
// the caller records the public parts of the key Vault holds, not of the
// material this attempt generated; otherwise the data is written with
// check-and-set on the version just read, so two workers on the same job
// cannot both write.
func (w *Worker) write(ctx context.Context, incidentID, path string, data map[string]any) (int, *Mark, error) {
	for range 2 {
		version, mark, err := w.vault.Latest(ctx, path)
		if err != nil {
			return 0, nil, err
		}
		if mark.Incident == incidentID {
			return version, &mark, nil
		}
		v, err := w.vault.WriteCAS(ctx, path, data, version)
		if errors.Is(err, ErrCASMismatch) {
			continue // someone wrote meanwhile: look again
		}
		if err == nil {
			w.cfg.Failpoints.Hit("rotator.job.secret.written")
		}
		return v, nil, err
	}
	return 0, nil, fmt.Errorf("%s: %w twice", path, ErrCASMismatch)
}
