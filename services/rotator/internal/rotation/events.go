package rotation

import "github.com/lockdown/lockdown/pkg/events"

// The events the rotation emits, built in one place.
const (
	eventsTenantCompleted   = events.RotationTenantCompleted
	eventsTenantFailed      = events.RotationTenantFailed
	eventsRotationCompleted = events.RotationCompleted
	eventsDKIMActivated     = events.RotationDKIMActivated
)

func jobData(incidentID string, j Job) events.RotationJobData {
	return events.RotationJobData{IncidentID: incidentID, TenantID: j.TenantID, Affected: j.Affected}
}

func plannedData(incidentID, policy string, n int) events.RotationPlannedData {
	return events.RotationPlannedData{IncidentID: incidentID, Policy: policy, Tenants: n}
}
