package rotation

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/lockdown/lockdown/pkg/events"
)

// Policies of a plan.
const (
	PolicyAll      = "all"      // every tenant, as the runbook does
	PolicyAffected = "affected" // the tenants the assessment names
)

// Plan records one of the plan's two conditions; when both hold (the
// incident is assessed and its access revoked) it plans one job per tenant.
// The plan, its jobs and the events announcing them (every job,
// rotation.planned) are written in one transaction (the outbox), once:
// planning again finds the plan and emits nothing, so each event is in
// the stream exactly once whatever crashed where.
//
// platform are the rotation catalogue's platform-wide entries: one job
// each (rotation.platform.job), planned with the tenants' and in the same
// transaction; the plan completes when every job of both has a final
// state.
func Plan(ctx context.Context, store Store, policy, incidentID string, assessed, revoked bool, affected Affected, platform []PlatformJob) error {
	ready, aff, err := store.Gate(ctx, incidentID, assessed, revoked, affected)
	if err != nil || !ready {
		return err
	}
	if aff.Cut && policy == PolicyAffected {
		// The assessment named more tenants than its event could list:
		// rotating only the listed ones would leave read secrets in place.
		// Every tenant is rotated instead — more, never fewer.
		policy = PolicyAll
	}
	jobs, err := plan(ctx, store, policy, aff.Tenants, aff.Cut)
	if err != nil {
		return err
	}
	out := make([]events.Outgoing, 0, len(jobs)+2)
	runnable := 0
	for _, j := range jobs {
		if j.Invalid != "" {
			// Planned as failed: the tenant is reported, never a path.
			out = append(out, events.Outgoing{Name: eventsTenantFailed, ID: fmt.Sprintf("%s/invalid-%d/failed", incidentID, len(out)), Data: events.RotationTenantFailedData{
				IncidentID: incidentID, TenantID: j.TenantID, Step: "plan", Reason: j.Invalid}})
			continue
		}
		runnable++
		out = append(out, events.Outgoing{Name: events.RotationJob, ID: incidentID + "/" + j.TenantID, Data: jobData(incidentID, j)})
	}
	for _, p := range platform {
		out = append(out, events.Outgoing{Name: events.RotationPlatformJob, ID: incidentID + "/platform/" + p.Entry,
			Data: events.RotationPlatformJobData{IncidentID: incidentID, Entry: p.Entry, Kind: p.Kind}})
	}
	planned := plannedData(incidentID, policy, len(jobs))
	planned.Platform = len(platform)
	out = append(out, events.Outgoing{Name: events.RotationPlanned, ID: incidentID + "/rotation.planned", Data: planned})
	if runnable == 0 && len(platform) == 0 {
		// Nothing to rotate: the phase is over at once, or restore would
		// wait for a completion that never comes.
		out = append(out, events.Outgoing{Name: events.RotationCompleted, ID: incidentID + "/rotation.completed", Data: events.RotationCompletedData{
			IncidentID: incidentID, Failed: len(jobs)}})
	}
	if _, err := store.SavePlan(ctx, incidentID, policy, jobs, platform, out); err != nil {
		return fmt.Errorf("save plan: %w", err)
	}
	return nil
}

// plan lists the jobs: every directory tenant (policy all) or the affected
// ones, plus any affected tenant the directory lacks — it fails loudly
// instead of being skipped. A tenant whose id is not a valid one is
// planned as failed at once, with the reason. When the assessment's list
// was cut, which tenants were read is not known past it: every tenant is
// planned as affected and told its secrets may have been read — more,
// never fewer (a drill of 10,000 tenants found readers past the cut told
// "precautionary").
func plan(ctx context.Context, store Store, policy string, affected []string, cut bool) ([]Job, error) {
	known, err := store.Tenants(ctx)
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	if policy == PolicyAll {
		for _, t := range known {
			ids[t] = cut
		}
	}
	for _, t := range affected {
		ids[t] = true
	}
	out := make([]Job, 0, len(ids))
	for t, read := range ids {
		j := Job{TenantID: t, Affected: read}
		if err := events.ValidTenantID(t); err != nil {
			j.Invalid = err.Error()
		}
		out = append(out, j)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TenantID < out[j].TenantID })
	return out, nil
}

// ErrNothingToRetry is returned by Retry when the incident has no plan or
// nothing failed (no failed tenant of that id): a permanent answer to the
// request.
var ErrNothingToRetry = errors.New("nothing to retry")

// Retry runs the failed tenants' jobs again (one tenant's, when named)
// after an operator mended the cause: their jobs go back to pending and
// are published under the retry's number, in one transaction. Their
// completions then carry corrected totals.
//
// Without a tenant, the plan's failed platform-wide entries are run again
// too (their jobs resume from what each recorded).
func Retry(ctx context.Context, store Store, incidentID, tenantID string) ([]Job, []PlatformJob, error) {
	return store.Retry(ctx, incidentID, tenantID, func(retry int, jobs []Job, platform []PlatformJob) []events.Outgoing {
		out := make([]events.Outgoing, 0, len(jobs)+len(platform))
		for _, j := range jobs {
			out = append(out, events.Outgoing{Name: events.RotationJob, ID: fmt.Sprintf("%s/%s/retry-%d", incidentID, j.TenantID, retry), Data: jobData(incidentID, j)})
		}
		for _, p := range platform {
			out = append(out, events.Outgoing{Name: events.RotationPlatformJob, ID: fmt.Sprintf("%s/platform/%s/retry-%d", incidentID, p.Entry, retry),
				Data: events.RotationPlatformJobData{IncidentID: incidentID, Entry: p.Entry, Kind: p.Kind}})
		}
		return out
	})
}
