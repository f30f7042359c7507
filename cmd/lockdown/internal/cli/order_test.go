package cli

import (
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
)

// TestRotateAfterRekey runs the whole system with LOCKDOWN_ROTATE_AFTER=rekey
// (runbook order: unseal keys before secrets): while the key holders leave
// the ceremony unfinished, access is revoked but no tenant's secret is
// written and the incident stays open; once they finish, every tenant is
// rotated and notified, access is restored and the incident resolves.
func TestRotateAfterRekey(t *testing.T) {
	t.Parallel() // its own stack, nothing in the environment: beside the other long system tests
	const tenants = 6
	s := newSystem(t, 15*time.Minute, tenants)
	s.startAll(map[string][]string{events.ServiceRotator: {"LOCKDOWN_ROTATE_AFTER=rekey"}})
	id := s.incidentOf(s.breach("rotation waits for the rekey"))
	await(s, events.VaultSealed, 2*time.Minute, func(d events.VaultSealedData) bool { return d.IncidentID == id })
	if err := s.stack.Vault.Unseal(s.ctx); err != nil {
		t.Fatal(err)
	}
	await(s, events.AccessRevoked, 2*time.Minute, func(d events.AccessRevokedData) bool { return d.IncidentID == id })
	await(s, events.AssessmentCompleted, 2*time.Minute, func(d events.AssessmentCompletedData) bool { return d.IncidentID == id })

	t.Run("with the ceremony unfinished, nothing is rotated and the incident stays open", func(t *testing.T) {
		// The planner has handled both events: only the rekey is missing.
		s.awaitHandled(events.ConsumerRotatorPlanner, id, events.AccessRevoked, events.AssessmentCompleted)
		counts, _ := s.eventCounts(id)
		for _, n := range []events.Name{events.RotationPlanned, events.RotationTenantCompleted, events.AccessRestored, events.IncidentResolved, events.UnsealKeysRotated} {
			if counts[n] != 0 {
				t.Errorf("%d %s before the unseal keys were rotated", counts[n], n)
			}
		}
	})

	t.Run("once the holders finish, every tenant is rotated and notified and the incident resolves", func(t *testing.T) {
		resolved := s.holdersUntilResolved(id)
		if resolved.TenantsRotated != tenants || resolved.TenantsNotified != tenants || resolved.Failures != 0 {
			t.Fatalf("incident.resolved %+v", resolved)
		}
		// The rotation was planned after the rekey, never before.
		rotated := await(s, events.UnsealKeysRotated, time.Minute, func(d events.UnsealKeysRotatedData) bool { return d.IncidentID == id })
		if rotated.Proof == "" {
			t.Fatalf("unsealkeys.rotated without proof: %+v", rotated)
		}
		// In the stream's order (the outbox publishes in commit order), not
		// only by the time the check above ran.
		var order []events.Name
		for _, ev := range s.incidentEvents(id) {
			spec, _ := events.Lookup(ev.Type())
			if spec.Name == events.UnsealKeysRotated || spec.Name == events.RotationPlanned {
				order = append(order, spec.Name)
			}
		}
		if len(order) < 2 || order[0] != events.UnsealKeysRotated {
			t.Fatalf("stored in the order %v, want unsealkeys.rotated before rotation.planned", order)
		}
	})
}
