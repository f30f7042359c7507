-- The totals notifications.completed announced: when tenants are retried
-- (lockdown retry) and told after the announcement, the totals change and
-- a corrected notifications.completed follows.
ALTER TABLE plans ADD COLUMN announced_sent int;
ALTER TABLE plans ADD COLUMN announced_failed int;
UPDATE plans SET announced_sent = 0, announced_failed = 0 WHERE announced_at IS NOT NULL;
