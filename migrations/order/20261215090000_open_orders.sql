-- A buyer's cash-on-delivery checkouts that wait for their sellers are counted at every
-- checkout; through `orders_buyer` that read every order the buyer ever made.
CREATE INDEX orders_placed_by_buyer ON orders (buyer_id, checkout_id) WHERE status = 'placed';
