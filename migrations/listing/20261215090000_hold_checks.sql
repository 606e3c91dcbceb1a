-- The hold-share check of a cash-on-delivery reservation sums what one buyer holds of one
-- listing. Without an index on the listing, PostgreSQL read every reservation line ever made
-- (17 ms at 37,000 lines, growing with them); with it, the listing's open lines.
CREATE INDEX reservation_lines_reserved ON reservation_lines (listing_id) WHERE state = 'reserved';
