-- The tenant directory: every tenant of the platform, the source of the
-- rotation plan and of notifications. The drill seeds it; in production the
-- platform keeps it in sync with its own tenant records.
CREATE TABLE tenants (
    id            text PRIMARY KEY,            -- as in Vault paths: tenants/{id}/…
    name          text NOT NULL,
    domain        text NOT NULL,               -- the DKIM record goes under it
    contact_email text NOT NULL,               -- where the notification goes
    webhook_url   text,                        -- optional signed webhook
    created_at    timestamptz NOT NULL DEFAULT now()
);
