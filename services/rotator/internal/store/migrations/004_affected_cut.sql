-- An assessment of more affected tenants than assessment.completed may
-- carry (pkg/events: affected_tenants lists at most 4,000, affected_total
-- counts them all) is cut: a plan of the affected tenants then rotates
-- every tenant instead, never fewer than were read.
ALTER TABLE gates ADD COLUMN affected_cut boolean NOT NULL DEFAULT false;
