-- The check of 20261224090000, validated on its own (see there): SHARE UPDATE EXCLUSIVE, which
-- lets checkouts write keys while every row is read.
ALTER TABLE idempotency_keys VALIDATE CONSTRAINT idempotency_keys_state_check;
