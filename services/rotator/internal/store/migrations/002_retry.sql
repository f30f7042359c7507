-- lockdown retry: how many times an operator had the plan's failed
-- tenants rotated again. Events of a retried plan carry it in their ids,
-- so corrected totals are new events, not duplicates.
ALTER TABLE plans ADD COLUMN retries int NOT NULL DEFAULT 0;
