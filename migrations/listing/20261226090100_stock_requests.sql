-- Stock writes a seller may send again: a lot taken in, an adjustment. Each adds to the
-- stock, so a retry after a lost answer (a phone on a weak signal) added it twice, and the
-- marketplace sold produce that was never there. A request that carries an Idempotency-Key
-- is kept here with its answer, in the same transaction as its stock: the same key again
-- is answered from here, and changes nothing.
CREATE TABLE stock_requests (
    account_id  uuid NOT NULL,           -- who sent it (the helper or manager acting, if one)
    key         text NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    listing_id  uuid NOT NULL,
    request     jsonb NOT NULL,          -- what was asked, to tell the same request from another
    status      smallint,                -- its answer, written before the transaction commits
    response    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, key)
);
-- A key is kept for 7 days: each keyed request forgets its sender's older ones.
CREATE INDEX stock_requests_age ON stock_requests (account_id, created_at);
