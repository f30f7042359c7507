-- Recovery progress per incident (phases 4, 5, 8): what was revoked, the
-- rekey ceremony's nonce and progress, restoration. Counts, accessors'
-- reasons and PGP fingerprints only: never a token or a share.
CREATE TABLE recovery (
    incident_id uuid PRIMARY KEY REFERENCES incidents (id),
    state       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
