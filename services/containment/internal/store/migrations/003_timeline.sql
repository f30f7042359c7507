-- Every event of an incident, as emitted (events carry no secret), for the
-- post-incident report; and the report once the incident resolves.
CREATE TABLE timeline (
    event_id    text PRIMARY KEY,
    incident_id text NOT NULL,
    type        text NOT NULL,
    time        timestamptz NOT NULL,
    source      text NOT NULL,
    data        jsonb NOT NULL
);
CREATE INDEX timeline_incident ON timeline (incident_id, time);

CREATE TABLE reports (
    incident_id uuid PRIMARY KEY REFERENCES incidents (id),
    outcome     text NOT NULL,
    report      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
