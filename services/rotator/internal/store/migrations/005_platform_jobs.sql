-- One job per platform-wide entry of the rotation catalogue (transit keys,
-- database credentials, certificates, platform secrets), beside the
-- tenants' jobs: the plan completes when both have a final state. record
-- holds the kind's progress (versions, serials, write ids: never a
-- secret); result the kind's outcome as announced.
CREATE TABLE platform_jobs (
    incident_id text NOT NULL,
    entry       text NOT NULL,
    kind        text NOT NULL,
    state       text NOT NULL DEFAULT 'pending',   -- pending, completed, failed
    record      jsonb NOT NULL DEFAULT '{}',
    reason      text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (incident_id, entry)
);
ALTER TABLE plans ADD COLUMN platform int NOT NULL DEFAULT 0;
