-- The event tables of one service schema (the connection's search_path).
-- outbox: facts this service emits, written in the same transaction as the change.
CREATE TABLE outbox (
    id            uuid PRIMARY KEY,            -- UUIDv7: ordered by time
    event_type    text        NOT NULL,        -- e.g. order.paid
    aggregate_id  text        NOT NULL,
    version       bigint      NOT NULL DEFAULT 1,
    payload       jsonb       NOT NULL,
    occurred_at   timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- inbox: events this service has received, handled at most once each.
-- status: pending → done, or dead after too many failed attempts (the dead-letter list).
CREATE TABLE inbox (
    event_id        uuid        PRIMARY KEY,
    event_type      text        NOT NULL,
    source          text        NOT NULL,     -- the producing service
    event           jsonb       NOT NULL,     -- the whole envelope as received
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    received_at     timestamptz NOT NULL DEFAULT now(),
    handled_at      timestamptz
);
CREATE INDEX inbox_due ON inbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX inbox_dead ON inbox (received_at) WHERE status = 'dead';
