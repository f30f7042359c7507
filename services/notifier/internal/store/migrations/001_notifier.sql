-- Notifier's schema: one row per incident, tenant and channel written
-- around each send (exactly once), one outcome per tenant, and the plan's
-- size so the phase knows when it is complete. No message bodies: they
-- are rebuilt from the rotation event and the templates.
CREATE TABLE deliveries (
    incident_id text NOT NULL,
    tenant_id   text NOT NULL,
    channel     text NOT NULL,                  -- email, webhook
    state       text NOT NULL,                  -- sending, sent, failed
    attempts    int NOT NULL DEFAULT 1,
    reason      text NOT NULL DEFAULT '',
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (incident_id, tenant_id, channel)
);

CREATE TABLE outcomes (
    incident_id text NOT NULL,
    tenant_id   text NOT NULL,
    state       text NOT NULL,                  -- sent, failed
    reason      text NOT NULL DEFAULT '',
    decided_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (incident_id, tenant_id)
);

CREATE TABLE plans (
    incident_id  text PRIMARY KEY,
    tenants      int NOT NULL,
    announced_at timestamptz
);
