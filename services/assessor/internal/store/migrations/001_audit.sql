-- Assessor's schema: Vault's audit entries (raw line plus the columns the
-- assessment queries), hourly aggregates maintained at ingest so that an
-- assessment over 24 h reads thousands of rows instead of millions, tokens
-- seen revoked, and the assessments.
CREATE TABLE audit_entries (
    request_id     text NOT NULL,
    type           text NOT NULL,
    time           timestamptz NOT NULL,
    operation      text NOT NULL DEFAULT '',
    path           text NOT NULL DEFAULT '',
    mount_type     text NOT NULL DEFAULT '',
    remote_address text NOT NULL DEFAULT '',
    display_name   text NOT NULL DEFAULT '',
    entity_id      text NOT NULL DEFAULT '',
    accessor       text NOT NULL DEFAULT '',
    policies       text[] NOT NULL DEFAULT '{}',
    error          text NOT NULL DEFAULT '',
    tenant         text NOT NULL DEFAULT '',
    kind           text NOT NULL DEFAULT '',
    pattern_hit    boolean NOT NULL DEFAULT false,
    raw            text NOT NULL,
    PRIMARY KEY (request_id, type)
);
-- The window's edges (partial hours) and the listing of a suspect's reads
-- (scanned in time order up to the listing limit: an index per actor would
-- cost every ingested read more than it saves the one assessment).
CREATE INDEX audit_entries_time ON audit_entries (time) WHERE type = 'response';
-- Suspicious events are few: their own small index.
CREATE INDEX audit_entries_suspicious ON audit_entries (time) WHERE type = 'response' AND (kind IN ('denied', 'error') OR pattern_hit);

CREATE TABLE audit_hourly (
    hour           timestamptz NOT NULL,
    accessor       text NOT NULL,
    entity_id      text NOT NULL,
    display_name   text NOT NULL,
    remote_address text NOT NULL,
    tenant         text NOT NULL,
    kind           text NOT NULL,
    pattern_hits   bigint NOT NULL DEFAULT 0,
    count          bigint NOT NULL,
    PRIMARY KEY (hour, accessor, entity_id, display_name, remote_address, tenant, kind)
);

CREATE TABLE revoked_accessors (
    accessor text NOT NULL,
    time     timestamptz NOT NULL,
    PRIMARY KEY (accessor, time)
);

CREATE TABLE assessments (
    incident_id  text PRIMARY KEY,
    result       jsonb NOT NULL,
    completed_at timestamptz NOT NULL DEFAULT now()
);
