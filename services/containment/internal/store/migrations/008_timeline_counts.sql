-- The read model's projector looks at every recent incident after every
-- change; it used to count each incident's timeline for that, and to read
-- the whole timeline again for every rebuild: at 10,000 tenants, 30,000
-- rows per look, quadratic in the incident. Now the database keeps the
-- count (a trigger, in the inserting transaction), and each entry carries
-- the id of the transaction that recorded it, so a rebuild reads only the
-- entries of transactions that had not finished at its previous read
-- (pg_snapshot_xmin): a commit that lands late is never skipped.
CREATE TABLE timeline_counts (
    incident_id text PRIMARY KEY,
    entries     bigint NOT NULL DEFAULT 0
);

CREATE FUNCTION count_timeline() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO containment.timeline_counts AS c (incident_id, entries) VALUES (NEW.incident_id, 1)
        ON CONFLICT (incident_id) DO UPDATE SET entries = c.entries + 1;
    ELSE
        UPDATE containment.timeline_counts SET entries = entries - 1 WHERE incident_id = OLD.incident_id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER timeline_counted AFTER INSERT OR DELETE ON timeline
    FOR EACH ROW EXECUTE FUNCTION count_timeline();

INSERT INTO timeline_counts (incident_id, entries) SELECT incident_id, count(*) FROM timeline GROUP BY incident_id;

ALTER TABLE timeline ADD COLUMN recorded_by xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX timeline_incident_recorded ON timeline (incident_id, recorded_by);

-- A recovery pass asks after every change whether rotation.completed and
-- notifications.completed are recorded: an index lookup, not a read of the
-- whole timeline.
CREATE INDEX timeline_incident_type ON timeline (incident_id, type);
