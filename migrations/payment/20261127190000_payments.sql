-- The payment service: one payment per checkout, and every provider notification it acted on.

CREATE TABLE payments (
    id            uuid PRIMARY KEY,
    checkout_id   uuid        NOT NULL UNIQUE,
    buyer_id      uuid        NOT NULL,
    method        text        NOT NULL CHECK (method IN ('vnpay', 'stripe')),
    amount_vnd    bigint      NOT NULL CHECK (amount_vnd > 0),
    txn_ref       text        NOT NULL UNIQUE,          -- our reference at the provider (vnp_TxnRef)
    status        text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    provider_ref  text,                                 -- the provider's transaction number
    payment_url   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
