-- The tenants' outcomes counted by the database itself: the progress read
-- after every notice counted all the incident's outcomes, so a 10,000-tenant
-- incident cost 10,000 row reads per notice — quadratic in the incident. A
-- trigger keeps one row per incident in step with every insert, state
-- change and delete of an outcome, in the same transaction.
CREATE TABLE outcome_counts (
    incident_id text PRIMARY KEY,
    sent        int NOT NULL DEFAULT 0,
    failed      int NOT NULL DEFAULT 0,
    late        int NOT NULL DEFAULT 0
);

CREATE FUNCTION count_outcome(incident text, state text, d int) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO notifier.outcome_counts AS c (incident_id, sent, failed, late)
    VALUES (incident, CASE WHEN state = 'sent' THEN d ELSE 0 END, CASE WHEN state = 'failed' THEN d ELSE 0 END,
        CASE WHEN state = 'late' THEN d ELSE 0 END)
    ON CONFLICT (incident_id) DO UPDATE SET sent = c.sent + EXCLUDED.sent, failed = c.failed + EXCLUDED.failed, late = c.late + EXCLUDED.late;
END $$;

CREATE FUNCTION count_outcomes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.state = NEW.state AND OLD.incident_id = NEW.incident_id THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM notifier.count_outcome(OLD.incident_id, OLD.state, -1);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM notifier.count_outcome(NEW.incident_id, NEW.state, 1);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER outcomes_counted AFTER INSERT OR DELETE OR UPDATE OF state, incident_id ON outcomes
    FOR EACH ROW EXECUTE FUNCTION count_outcomes();

INSERT INTO outcome_counts (incident_id, sent, failed, late)
SELECT incident_id, count(*) FILTER (WHERE state = 'sent'), count(*) FILTER (WHERE state = 'failed'), count(*) FILTER (WHERE state = 'late')
FROM outcomes GROUP BY incident_id;
