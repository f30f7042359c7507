package rotation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/pkg/platform/failpoint"
	"github.com/lockdown/lockdown/services/rotator/internal/kinds"
)

// ErrUnknownEntry is returned for a platform job whose entry is not in
// this process's catalogue (or whose kind differs), or that the
// incident's plan does not have: a permanent failure — the catalogue
// changed between the plan and the job, or the job is forged.
var ErrUnknownEntry = errors.New("catalogue entry unknown to this rotator")

// Platform runs the catalogue's platform-wide entries with their kinds.
type Platform struct {
	Catalogue *credentials.Catalogue
	Kinds     kinds.Registry
	Vault     kinds.Vault
	Store     Store
	// Instance names this process in the events (host/pid).
	Instance string
	// Failpoints: "rotator.platform.saved" fires after each recorded step
	// of an entry (the crash tests' kill point; nil: none).
	Failpoints *failpoint.Set
}

// Jobs are the catalogue's entries as a plan's jobs.
func (p *Platform) Jobs() []PlatformJob {
	if p == nil || p.Catalogue == nil {
		return nil
	}
	out := make([]PlatformJob, len(p.Catalogue.Entries))
	for i, e := range p.Catalogue.Entries {
		out[i] = PlatformJob{Entry: e.Name, Kind: e.Kind}
	}
	return out
}

// Run runs one entry's job: nil once it is final (now or before), an
// error wrapping ErrUnknownEntry or kinds.ErrPermanent for a permanent
// failure, any other for a transient one (retried; the kind resumes from
// its record).
func (p *Platform) Run(ctx context.Context, job events.RotationPlatformJobData, alive func()) error {
	e, ok := p.Catalogue.Entry(job.Entry)
	if !ok || e.Kind != job.Kind {
		return fmt.Errorf("%w: %q (%s)", ErrUnknownEntry, job.Entry, job.Kind)
	}
	kind, ok := p.Kinds[e.Kind]
	if !ok {
		return fmt.Errorf("%w: kind %s has no package", ErrUnknownEntry, e.Kind)
	}
	state, raw, planned, err := p.Store.StartPlatform(ctx, job.IncidentID, e.Name, e.Kind)
	if err != nil {
		return err
	}
	if !planned {
		// A job no plan of this rotator made (forged with a rotator's
		// credential, or for an incident planned without this entry):
		// nothing in Vault is touched on its word.
		return fmt.Errorf("%w: incident %s has no planned entry %q", ErrUnknownEntry, job.IncidentID, e.Name)
	}
	if state != StatePending {
		return nil // a redelivery: final, its events went out with it
	}
	rec := &kinds.Record{}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, rec); err != nil {
			return err
		}
	}
	if rec.Items == nil {
		rec.Items = map[string]kinds.Item{}
	}
	save := func() error {
		alive()
		raw, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if err := p.Store.SavePlatform(ctx, job.IncidentID, e.Name, raw); err != nil {
			return err
		}
		p.Failpoints.Hit("rotator.platform.saved")
		return nil
	}
	if rec.Started.IsZero() {
		rec.Started = time.Now().UTC()
		if err := save(); err != nil {
			return err
		}
	}
	wrote := func() { p.Failpoints.Hit("rotator.platform.written") }
	result, items, err := kind.Rotate(ctx, p.Vault, kinds.Job{IncidentID: job.IncidentID, Entry: e, Save: save, Rec: rec, Wrote: wrote})
	if err != nil {
		return fmt.Errorf("%s %s: %w", e.Kind, e.Name, err)
	}
	return p.Store.FinishPlatform(ctx, job.IncidentID, e.Name, StateCompleted, "", p.events(job, result, items))
}

// Fail records an entry's permanent failure, with its event.
func (p *Platform) Fail(ctx context.Context, job events.RotationPlatformJobData, reason string) error {
	result := credentials.Result{Kind: job.Kind, State: credentials.Failed, Reason: reason}
	return p.Store.FinishPlatform(ctx, job.IncidentID, job.Entry, StateFailed, reason, p.events(job, result, nil))
}

// events returns what an entry's final record emits: its
// rotation.platform.completed and, when nothing of the plan is left
// pending, rotation.completed.
func (p *Platform) events(job events.RotationPlatformJobData, result credentials.Result, items []string) func(Progress) []events.Outgoing {
	return func(pr Progress) []events.Outgoing {
		suffix := ""
		if pr.Retries > 0 {
			suffix = fmt.Sprintf("/retry-%d", pr.Retries)
		}
		out := []events.Outgoing{{Name: events.RotationPlatformDone, ID: job.IncidentID + "/platform/" + job.Entry + "/done" + suffix,
			Data: events.RotationPlatformCompletedData{IncidentID: job.IncidentID, Entry: job.Entry, Result: result, Items: items, RotatedBy: p.Instance}}}
		if pr.Pending == 0 {
			out = append(out, completion(job.IncidentID, suffix, pr))
		}
		return out
	}
}
