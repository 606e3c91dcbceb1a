-- Traceability: a listing's GTIN (its lots' QR codes are then GS1 Digital Links), an
-- operator's verification of each certification, and what the public lot page and the
-- certification expiry sweep look up.

ALTER TABLE listings ADD COLUMN gtin text CHECK (gtin ~ '^[0-9]{14}$');
CREATE INDEX listings_gtin ON listings (gtin) WHERE gtin IS NOT NULL;

ALTER TABLE listing_certifications
    ADD COLUMN verification text NOT NULL DEFAULT 'pending' CHECK (verification IN ('pending', 'verified', 'rejected')),
    ADD COLUMN verified_by  uuid,
    ADD COLUMN verified_at  timestamptz;
CREATE INDEX listing_certifications_until ON listing_certifications (valid_until);

-- A lot's sales (the public page counts them) and its movements (its timeline).
CREATE INDEX allocations_lot ON allocations (lot_id);
CREATE INDEX stock_movements_lot ON stock_movements (lot_id) WHERE lot_id IS NOT NULL;
