-- The durable incident engine: every write of the engine is a
-- compare-and-swap on the incident's version, made by the holder of the
-- lease (fencing token checked in the same transaction); the stuck mark,
-- the operators' resume count and an abort's reason; the breach time of
-- the current seal round (its latency counts from it). The outbox table
-- is created at start by pkg/platform/outbox.
ALTER TABLE incidents ADD COLUMN version bigint NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN round_sealed boolean NOT NULL DEFAULT false;
ALTER TABLE incidents ADD COLUMN round_breach_at timestamptz;
ALTER TABLE incidents ADD COLUMN stuck_reason text NOT NULL DEFAULT '';
ALTER TABLE incidents ADD COLUMN stuck_since timestamptz;
ALTER TABLE incidents ADD COLUMN redrives int NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN failure_reason text NOT NULL DEFAULT '';
UPDATE incidents SET round_sealed = (phase <> 'containing'), round_breach_at = breach_published_at;

-- One row per lease: the process that drives the open incidents.
CREATE TABLE lease (
    name        text PRIMARY KEY,
    holder      text NOT NULL,
    token       bigint NOT NULL,
    expires_at  timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL
);
