-- Signatures the HTTP intake accepted, until their timestamp leaves the
-- window: a captured request replayed within it is refused. Signatures
-- are HMACs of public requests: nothing secret.
CREATE TABLE intake_seen (
    signature  text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX intake_seen_expires ON intake_seen (expires_at);
