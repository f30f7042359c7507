-- Vault HMACs token accessors with a salt of each audit device's own, so
-- one token appears under a different accessor in every device's log.
-- Each entry records the device it came through, and token_links ties
-- the accessors of one token together: an entry that reaches the assessor
-- through two devices (the same request id and type) names the same token
-- under both accessors. identity is the token's one name across devices
-- (the least of its linked accessors); an accessor without a row here is
-- its own identity.
ALTER TABLE audit_entries ADD COLUMN device text NOT NULL DEFAULT '';

CREATE TABLE token_links (
    accessor text PRIMARY KEY,
    device   text NOT NULL,
    identity text NOT NULL
);
CREATE INDEX token_links_identity ON token_links (identity);
