-- Containment's schema: incidents, the detections that opened or joined
-- them, and every node seal. Secrets are never stored here.
CREATE TABLE incidents (
    id                  uuid PRIMARY KEY,
    opened_by_event     text NOT NULL UNIQUE,
    detected_at         timestamptz NOT NULL,
    breach_published_at timestamptz NOT NULL,
    severity            text NOT NULL,
    summary             text NOT NULL,
    source              text NOT NULL,
    phase               text NOT NULL,
    opened_at           timestamptz NOT NULL DEFAULT now(),
    sealed_at           timestamptz,
    unsealed_at         timestamptz,
    resolved_at         timestamptz,
    seal_round          int NOT NULL DEFAULT 0,
    gate                jsonb NOT NULL DEFAULT '[]'
);

-- At most one incident is open: a new detection joins it instead.
CREATE UNIQUE INDEX incidents_one_open ON incidents ((true)) WHERE phase NOT IN ('resolved', 'failed');

CREATE TABLE detections (
    event_id    text PRIMARY KEY,
    incident_id uuid NOT NULL REFERENCES incidents (id),
    source      text NOT NULL,
    severity    text NOT NULL,
    summary     text NOT NULL,
    detected_at timestamptz NOT NULL,
    published_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    outcome     text NOT NULL
);
CREATE INDEX detections_incident ON detections (incident_id, received_at);

CREATE TABLE node_seals (
    incident_id  uuid NOT NULL REFERENCES incidents (id),
    round        int NOT NULL,
    address      text NOT NULL,
    method       text NOT NULL,
    requested_at timestamptz,
    confirmed_at timestamptz NOT NULL,
    PRIMARY KEY (incident_id, round, address)
);
