-- Text that is printed on one line (a listing's title, a certificate's number and issuer, a
-- household's or cooperative's name and street) is refused by the API when it holds a
-- control character (a line break, a tab...) or a bidirectional mark, embedding, override or
-- isolate (`Problems::check_one_line`). Rows written before that check kept such text, and
-- since a PATCH checks the whole record, every change of such a listing, household or
-- cooperative was refused for a field its sender had not touched: a farmer changing a price
-- was told the title was wrong. Each such character becomes a space here. The listings whose
-- search document changes are marked for the search indexer. Rows without such text are not
-- touched.
CREATE OR REPLACE FUNCTION pg_temp.one_line(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT btrim(regexp_replace(t, '[\x01-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]', ' ', 'g'))
$$;
CREATE OR REPLACE FUNCTION pg_temp.not_one_line(t text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT t ~ '[\x01-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]'
$$;

WITH changed AS (
    UPDATE listings SET title = pg_temp.one_line(title), version = version + 1, updated_at = now()
    WHERE pg_temp.not_one_line(title)
    RETURNING id)
INSERT INTO search_dirty (listing_id) SELECT id FROM changed ON CONFLICT (listing_id) DO NOTHING;

UPDATE listing_certifications SET number = pg_temp.one_line(number), issuer = pg_temp.one_line(issuer)
WHERE pg_temp.not_one_line(number) OR pg_temp.not_one_line(issuer);

WITH changed AS (
    UPDATE households SET name = pg_temp.one_line(name), street = pg_temp.one_line(street), updated_at = now()
    WHERE pg_temp.not_one_line(name) OR pg_temp.not_one_line(street)
    RETURNING account_id)
INSERT INTO search_dirty (listing_id)
SELECT l.id FROM listings l JOIN changed c ON c.account_id = l.household_id
ON CONFLICT (listing_id) DO NOTHING;

WITH changed AS (
    UPDATE cooperatives SET name = pg_temp.one_line(name), street = pg_temp.one_line(street)
    WHERE pg_temp.not_one_line(name) OR pg_temp.not_one_line(street)
    RETURNING id)
INSERT INTO search_dirty (listing_id)
SELECT l.id FROM listings l JOIN changed c ON c.id = l.cooperative_id
ON CONFLICT (listing_id) DO NOTHING;
