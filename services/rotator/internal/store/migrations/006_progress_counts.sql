-- A plan's progress as counters kept by the database itself: every job
-- that became final used to count all the plan's jobs (under the plan's
-- lock, one job after another), so a 10,000-tenant plan cost 10,000 row
-- reads per tenant — quadratic in the incident. Triggers keep one row per
-- incident in step with every insert, state change and delete of a job,
-- whatever statement made it (plan, finish, retry, a forged job's row), in
-- the same transaction: the counters cannot drift from the rows.
CREATE TABLE progress (
    incident_id        text PRIMARY KEY,
    pending            int NOT NULL DEFAULT 0,
    completed          int NOT NULL DEFAULT 0,
    failed             int NOT NULL DEFAULT 0,
    platform_pending   int NOT NULL DEFAULT 0,
    platform_completed int NOT NULL DEFAULT 0,
    platform_failed    int NOT NULL DEFAULT 0
);

-- count_job adds d (1 or -1) to the counter of state, for a tenant job or
-- a platform job.
CREATE FUNCTION count_job(incident text, platform boolean, state text, d int) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rotator.progress AS p (incident_id, pending, completed, failed, platform_pending, platform_completed, platform_failed)
    VALUES (incident,
        CASE WHEN NOT platform AND state = 'pending' THEN d ELSE 0 END,
        CASE WHEN NOT platform AND state = 'completed' THEN d ELSE 0 END,
        CASE WHEN NOT platform AND state = 'failed' THEN d ELSE 0 END,
        CASE WHEN platform AND state = 'pending' THEN d ELSE 0 END,
        CASE WHEN platform AND state = 'completed' THEN d ELSE 0 END,
        CASE WHEN platform AND state = 'failed' THEN d ELSE 0 END)
    ON CONFLICT (incident_id) DO UPDATE SET
        pending = p.pending + EXCLUDED.pending, completed = p.completed + EXCLUDED.completed, failed = p.failed + EXCLUDED.failed,
        platform_pending = p.platform_pending + EXCLUDED.platform_pending,
        platform_completed = p.platform_completed + EXCLUDED.platform_completed,
        platform_failed = p.platform_failed + EXCLUDED.platform_failed;
END $$;

CREATE FUNCTION count_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    platform boolean := TG_TABLE_NAME = 'platform_jobs';
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.state = NEW.state AND OLD.incident_id = NEW.incident_id THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM rotator.count_job(OLD.incident_id, platform, OLD.state, -1);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM rotator.count_job(NEW.incident_id, platform, NEW.state, 1);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_progress AFTER INSERT OR DELETE OR UPDATE OF state, incident_id ON jobs
    FOR EACH ROW EXECUTE FUNCTION count_jobs();
CREATE TRIGGER platform_jobs_progress AFTER INSERT OR DELETE OR UPDATE OF state, incident_id ON platform_jobs
    FOR EACH ROW EXECUTE FUNCTION count_jobs();

INSERT INTO progress (incident_id, pending, completed, failed)
SELECT incident_id, count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'completed'), count(*) FILTER (WHERE state = 'failed')
FROM jobs GROUP BY incident_id;
INSERT INTO progress AS p (incident_id, platform_pending, platform_completed, platform_failed)
SELECT incident_id, count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'completed'), count(*) FILTER (WHERE state = 'failed')
FROM platform_jobs GROUP BY incident_id
ON CONFLICT (incident_id) DO UPDATE SET platform_pending = EXCLUDED.platform_pending,
    platform_completed = EXCLUDED.platform_completed, platform_failed = EXCLUDED.platform_failed;
