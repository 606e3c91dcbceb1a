-- A buyer's open cash-on-delivery checkouts are bounded (NONGSAN_MAX_OPEN_COD_CHECKOUTS). The
-- bound counted the checkouts stored; checkouts sent at once each counted before any was
-- stored, and all passed (8 with a bound of 2). Each claim of a cash-on-delivery checkout's
-- key is marked, and counted with the stored ones while it is on its way; and the claims of
-- one buyer count one after another: this function takes a lock per buyer (held to the end
-- of the claim's transaction), and, being volatile, its count sees every claim committed
-- before it had the lock, which its statement's own snapshot would not.
ALTER TABLE idempotency_keys ADD COLUMN cod boolean NOT NULL DEFAULT false;
-- The claims on their way only: a buyer's keys of every checkout ever made are not read.
CREATE INDEX idempotency_keys_cod_started ON idempotency_keys (buyer_id) WHERE cod AND state = 'started';

CREATE FUNCTION open_cod_checkouts(buyer uuid, own_key text) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(buyer::text, 20261218));
    RETURN (SELECT count(DISTINCT checkout_id) FROM orders WHERE buyer_id = buyer AND status = 'placed')
         + (SELECT count(*) FROM idempotency_keys
            WHERE buyer_id = buyer AND cod AND state = 'started' AND key <> own_key
              AND created_at > now() - interval '60 seconds');
END
$$;
