-- Rotator's schema: the two conditions of a plan, the plan, and one row per
-- tenant job with each step's result (KV versions, counts, the DKIM
-- selector and public record). Never a secret value.
CREATE TABLE gates (
    incident_id text PRIMARY KEY,
    assessed    boolean NOT NULL DEFAULT false,
    revoked     boolean NOT NULL DEFAULT false,
    affected    text[] NOT NULL DEFAULT '{}'
);

CREATE TABLE plans (
    incident_id text PRIMARY KEY,
    policy      text NOT NULL,
    tenants     int NOT NULL,
    planned_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    incident_id text NOT NULL,
    tenant_id   text NOT NULL,
    affected    boolean NOT NULL DEFAULT false,
    state       text NOT NULL DEFAULT 'pending',   -- pending, completed, failed
    steps       jsonb NOT NULL DEFAULT '{}',
    reason      text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (incident_id, tenant_id)
);
CREATE INDEX jobs_open ON jobs (incident_id) WHERE state = 'pending';
