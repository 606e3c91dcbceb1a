-- A cash-on-delivery checkout is stored with its key's answer, in one statement. When the key's
-- row is gone, the checkout must not be stored: its request stalled past the minute, another
-- request with the key took it over, was refused and gave the key back, and the stalled one
-- came to store after all. Stored, its answer would be kept nowhere, and the next request
-- with the key would place a second checkout. The statement calls this to fail whole.
CREATE FUNCTION idempotency_key_gone() RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION 'the idempotency key was given back by the request that took it over'
        USING ERRCODE = 'NK001';
END
$$;
