-- A page of one category (`GET /v1/listings?category=`) walked the active listings in id
-- order until it had a page: the whole catalog for a category with few listings. Indexed
-- by category for the active ones, PostgreSQL reads a small category's listings alone (and
-- still walks the id order for a large one, where a page is found at once).
CREATE INDEX listings_active_by_category ON listings (category_code, id) WHERE status = 'active';
