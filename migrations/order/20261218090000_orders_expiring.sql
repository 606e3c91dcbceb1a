-- The expiry sweep runs every second. It read every checkout ever made (nothing indexed
-- `expires_at` for open orders: `checkouts_expiring` needs the checkout's status, and a
-- cash-on-delivery checkout stays `placed` for good). Each order now carries its checkout's
-- expiry (set once: a checkout's expiry never changes), indexed for the open orders only, so a
-- sweep reads the orders that are due and nothing else.
ALTER TABLE orders ADD COLUMN expires_at timestamptz;
UPDATE orders o SET expires_at = c.expires_at FROM checkouts c WHERE c.id = o.checkout_id;
ALTER TABLE orders ALTER COLUMN expires_at SET NOT NULL;
CREATE INDEX orders_expiring ON orders (expires_at) WHERE status IN ('pending_payment', 'placed');
DROP INDEX checkouts_expiring;
