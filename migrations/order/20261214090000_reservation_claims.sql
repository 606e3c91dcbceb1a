-- What became of each reservation made for a checkout (the reservation id is the checkout id):
-- 'placed' when the checkout was stored with it (written in the checkout's own transaction),
-- 'abandoned' when the listing service's orphan sweep asked and no checkout had been stored.
-- A checkout and the sweep race for this one primary key, so exactly one of them wins, and a
-- checkout can never be stored with a reservation whose stock was given back.
CREATE TABLE reservation_claims (
    reservation_id uuid PRIMARY KEY,
    outcome        text        NOT NULL CHECK (outcome IN ('placed', 'abandoned')),
    claimed_at     timestamptz NOT NULL DEFAULT now()
);

INSERT INTO reservation_claims (reservation_id, outcome, claimed_at)
SELECT reservation_id, 'placed', created_at FROM checkouts;
