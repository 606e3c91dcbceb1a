-- When the order service said a checkout was stored with the reservation. Until then the
-- reservation may be an orphan (its checkout died between reserving and storing): a minute
-- after it was made the listing service asks, and gives its stock back if none was stored.
-- Reservations made before this column are asked about too (the order service's claims
-- start from every checkout it had stored), so old orphans come back as well.
ALTER TABLE reservations ADD COLUMN checkout_confirmed_at timestamptz;
CREATE INDEX reservations_unconfirmed ON reservations (created_at)
    WHERE status = 'active' AND checkout_confirmed_at IS NULL;
