-- Refunds as the payment service reported them (`payment.refunded`), shown on their order.
-- The payment service owns refunds and their bound; this is the buyer's and seller's view.
CREATE TABLE order_refunds (
    id           uuid PRIMARY KEY,                -- the payment service's refund id
    order_id     uuid        NOT NULL REFERENCES orders (id),
    checkout_id  uuid        NOT NULL,
    amount_vnd   bigint      NOT NULL CHECK (amount_vnd > 0),
    reason       text        NOT NULL CHECK (reason IN ('not_payable', 'cancelled', 'declined', 'returned', 'operator')),
    status       text        NOT NULL CHECK (status IN ('succeeded', 'failed')),
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_refunds_order ON order_refunds (order_id);
