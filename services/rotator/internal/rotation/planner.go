package rotation

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/lockdown/lockdown/pkg/events"
)

// Policies of a plan.
const (
	PolicyAll      = "all"      // every tenant, as the runbook does
	PolicyAffected = "affected" // the tenants the assessment names
)

// Plan records one of the plan's two conditions; when both hold (the
// incident is assessed and its access revoked) it plans one job per tenant
// and publishes them. Planning again is harmless: jobs are de-duplicated
// by incident and tenant, in PostgreSQL and in JetStream.
func Plan(ctx context.Context, store Store, pub Publisher, policy, incidentID string, assessed, revoked bool, affected []string) error {
	ready, affectedTenants, err := store.Gate(ctx, incidentID, assessed, revoked, affected)
	if err != nil || !ready {
		return err
	}
	jobs, err := plan(ctx, store, policy, affectedTenants)
	if err != nil {
		return err
	}
	if err := store.SavePlan(ctx, incidentID, policy, jobs); err != nil {
		return err
	}
	for _, j := range jobs {
		if err := pub.PublishWithID(ctx, eventsRotationJob, incidentID+"/"+j.TenantID, jobData(incidentID, j)); err != nil {
			return fmt.Errorf("publish job %s: %w", j.TenantID, err)
		}
	}
	if err := pub.PublishWithID(ctx, eventsRotationPlanned, incidentID+"/rotation.planned", plannedData(incidentID, policy, len(jobs))); err != nil {
		return err
	}
	if len(jobs) == 0 {
		// Nothing to rotate: the phase is over at once, or restore would
		// wait for a completion that never comes.
		return pub.PublishWithID(ctx, eventsRotationCompleted, incidentID+"/rotation.completed", events.RotationCompletedData{IncidentID: incidentID})
	}
	return nil
}

// plan lists the jobs: every directory tenant (policy all) or the affected
// ones, plus any affected tenant the directory lacks — it fails loudly
// instead of being skipped.
func plan(ctx context.Context, store Store, policy string, affected []string) ([]Job, error) {
	known, err := store.Tenants(ctx)
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	if policy == PolicyAll {
		for _, t := range known {
			ids[t] = true
		}
	}
	for _, t := range affected {
		ids[t] = true
	}
	out := make([]Job, 0, len(ids))
	for t := range ids {
		out = append(out, Job{TenantID: t, Affected: slices.Contains(affected, t)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TenantID < out[j].TenantID })
	return out, nil
}
