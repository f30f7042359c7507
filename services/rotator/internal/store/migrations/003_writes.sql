-- Write ids of a job's Vault writes, each with the public parts (SSH
-- fingerprint, DKIM selector and record) of the material written under it,
-- recorded before the write. The rotator cannot read secrets back: a version
-- found under one of its write ids is adopted with what is recorded here.
ALTER TABLE jobs ADD COLUMN writes jsonb NOT NULL DEFAULT '{}';
