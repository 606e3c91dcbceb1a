-- Stripe events acted on, by id: a delivery seen before changes nothing.
CREATE TABLE stripe_events (
    id           text PRIMARY KEY,
    event_type   text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);

-- A Stripe payment's PaymentIntent client secret, answered again to a repeated open.
ALTER TABLE payments ADD COLUMN client_secret text;
