-- A key whose request lost the listing service's answer to its reservation (a timeout, a
-- 5xx, a connection cut) is left 'retry': the reservation may or may not have been made. The
-- next request with the key takes it over at once, with the same checkout id, so its
-- reservation is the same one (the listing service answers a reservation id it has with
-- what it made) rather than a second hold on the stock. Given back instead ('started'
-- deleted), the retry made a new checkout id and held the stock twice until the orphan
-- sweep gave the first hold back.
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_state_check;
ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_state_check
    CHECK (state IN ('started', 'retry', 'done'));
