-- The order service: checkouts (one basket, one payment), one order per seller, and the
-- idempotency keys that make a repeated checkout request return the same checkout.

CREATE TABLE idempotency_keys (
    buyer_id      uuid        NOT NULL,
    key           text        NOT NULL,
    request_hash  bytea       NOT NULL,           -- SHA-256 of the request body
    checkout_id   uuid        NOT NULL,           -- chosen when the key is first seen
    state         text        NOT NULL CHECK (state IN ('started', 'done')),
    response      jsonb,                          -- the checkout as answered, once done
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (buyer_id, key)
);

CREATE TABLE checkouts (
    id              uuid PRIMARY KEY,
    buyer_id        uuid        NOT NULL,
    reservation_id  uuid        NOT NULL UNIQUE,
    payment_method  text        NOT NULL CHECK (payment_method IN ('cod', 'vnpay', 'stripe')),
    status          text        NOT NULL CHECK (status IN ('pending_payment', 'placed', 'paid', 'expired', 'failed')),
    province_code   text        NOT NULL,
    commune_code    text        NOT NULL,
    street          text        NOT NULL,
    recipient_name  text        NOT NULL,
    recipient_phone text        NOT NULL,
    items_total     bigint      NOT NULL,
    delivery_total  bigint      NOT NULL,
    grand_total     bigint      NOT NULL,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX checkouts_buyer ON checkouts (buyer_id, created_at);
CREATE INDEX checkouts_expiring ON checkouts (expires_at) WHERE status IN ('pending_payment', 'placed');

CREATE TABLE orders (
    id              uuid PRIMARY KEY,
    checkout_id     uuid        NOT NULL REFERENCES checkouts (id),
    buyer_id        uuid        NOT NULL,
    seller_kind     text        NOT NULL CHECK (seller_kind IN ('household', 'cooperative')),
    seller_id       uuid        NOT NULL,
    seller_name     text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending_payment', 'placed', 'paid', 'confirmed', 'shipped', 'delivered',
                                                           'delivery_failed', 'returned', 'cancelled', 'declined', 'expired')),
    items_total     bigint      NOT NULL,
    delivery_fee    bigint      NOT NULL,
    total           bigint      NOT NULL,
    cash_collected  boolean     NOT NULL DEFAULT false,
    reason          text,
    version         bigint      NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_checkout ON orders (checkout_id);
CREATE INDEX orders_seller ON orders (seller_kind, seller_id, status, created_at);
CREATE INDEX orders_buyer ON orders (buyer_id, created_at);

CREATE TABLE order_lines (
    order_id    uuid    NOT NULL REFERENCES orders (id),
    line_no     integer NOT NULL,
    listing_id  uuid    NOT NULL,
    title       text    NOT NULL,
    unit        text    NOT NULL,
    quantity    numeric(15, 3) NOT NULL CHECK (quantity > 0),
    unit_price  bigint  NOT NULL,
    line_total  bigint  NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

-- Every change of an order's status: who, from what, to what, why.
CREATE TABLE order_transitions (
    id            uuid PRIMARY KEY,
    order_id      uuid        NOT NULL REFERENCES orders (id),
    from_status   text        NOT NULL,
    to_status     text        NOT NULL,
    actor_id      uuid,
    actor_role    text,
    on_behalf_of  uuid,
    reason        text,
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_transitions_order ON order_transitions (order_id, at);
