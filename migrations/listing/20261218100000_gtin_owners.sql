-- A GTIN is one seller's: the first household or cooperative whose listing carries it.
-- Another seller's listing is refused it, and a lot's QR code (a GS1 Digital Link: GTIN and
-- lot code) opens a lot of the owner's listings only. Before, any seller could give a listing
-- of theirs someone else's GTIN, add a lot with the code printed on the other's produce, and
-- the QR codes already printed opened their lot (the newest of that code).
CREATE TABLE gtin_owners (
    gtin           text        PRIMARY KEY CHECK (gtin ~ '^[0-9]{14}$'),
    household_id   uuid,
    cooperative_id uuid,
    claimed_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((household_id IS NULL) <> (cooperative_id IS NULL))
);
-- Listings that carry a GTIN already: its first listing's seller owns it. Other sellers'
-- listings lose it: their lots' links become short links (/t/<lot id>), and the GTIN's links
-- open the owner's lots only.
INSERT INTO gtin_owners (gtin, household_id, cooperative_id, claimed_at)
SELECT DISTINCT ON (gtin) gtin, household_id, cooperative_id, created_at
FROM listings WHERE gtin IS NOT NULL ORDER BY gtin, created_at, id;
UPDATE listings l SET gtin = NULL
WHERE gtin IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM gtin_owners o
    WHERE o.gtin = l.gtin AND (o.household_id = l.household_id OR o.cooperative_id = l.cooperative_id));
