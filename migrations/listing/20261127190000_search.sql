-- Listings whose search document must be written again (see search::indexer).
CREATE TABLE search_dirty (
    listing_id uuid        PRIMARY KEY REFERENCES listings (id),
    marked_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX search_dirty_marked ON search_dirty (marked_at);
