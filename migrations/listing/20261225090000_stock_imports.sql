-- A cooperative's stock imports, one row per file taken in, named by the digest of its rows
-- as read (listing, lot code, household, quantity, harvest date, in the file's order). A file
-- sent again (a retry after a lost answer) is refused instead of adding its stock a second
-- time, unless its manager asks for it again on purpose.
CREATE TABLE stock_imports (
    id uuid PRIMARY KEY,
    cooperative_id uuid NOT NULL REFERENCES cooperatives (id),
    digest bytea NOT NULL CHECK (octet_length(digest) = 32),
    rows integer NOT NULL CHECK (rows > 0),
    actor_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stock_imports_digest ON stock_imports (cooperative_id, digest, created_at);
