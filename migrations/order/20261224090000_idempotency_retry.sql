-- A key whose request lost the listing service's answer to its reservation (a timeout, a
-- 5xx, a connection cut) is left 'retry': the reservation may or may not have been made. The
-- next request with the key takes it over at once, with the same checkout id, so its
-- reservation is the same one (the listing service answers a reservation id it has with
-- what it made) rather than a second hold on the stock. Given back instead ('started'
-- deleted), the retry made a new checkout id and held the stock twice until the orphan
-- sweep gave the first hold back.
--
-- The new check is added NOT VALID here, which reads no row, and validated by the next
-- migration, in a transaction of its own: validating reads every key (the table only grows)
-- without holding off the checkouts that write them meanwhile, where a check added valid
-- holds them off for the whole read. A process of the release before this one does not take
-- a 'retry' key over: upgrade the order processes together, or its buyers' retries of such
-- keys wait 30 s and are told the key is in use.
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_state_check;
ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_state_check
    CHECK (state IN ('started', 'retry', 'done')) NOT VALID;
