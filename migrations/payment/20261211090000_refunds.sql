-- Refunds, and what the payment service needs to owe them rightly.
--
-- A payment records what the provider captured and what has been refunded of it; a refund
-- counts against its payment from the moment it is asked (pending) unless it fails. The
-- bound "never more than was captured" is the CHECK below, kept by the trigger on refunds:
-- no code path can write a refund that breaks it.

ALTER TABLE payments DROP CONSTRAINT payments_method_check;
ALTER TABLE payments ADD CONSTRAINT payments_method_check CHECK (method IN ('vnpay', 'stripe', 'momo'));
ALTER TABLE payments
    ADD COLUMN captured_vnd     bigint NOT NULL DEFAULT 0,
    ADD COLUMN refunded_vnd     bigint NOT NULL DEFAULT 0,
    ADD COLUMN client_ip        text,                -- the buyer's address, as the provider wants it
    ADD COLUMN provider_created text,                -- the create date sent to the provider (VNPay: yyyyMMddHHmmss GMT+7)
    ADD COLUMN expires_at       timestamptz,         -- when the provider stops taking this payment
    ADD COLUMN checked_at       timestamptz;         -- last asked of the provider by the reconciler
ALTER TABLE payments
    ADD CONSTRAINT payments_captured_bounds CHECK (captured_vnd >= 0 AND captured_vnd <= amount_vnd),
    ADD CONSTRAINT refund_exceeds_captured CHECK (refunded_vnd >= 0 AND refunded_vnd <= captured_vnd);
UPDATE payments SET captured_vnd = amount_vnd WHERE status = 'succeeded';
CREATE INDEX payments_pending ON payments (created_at) WHERE status = 'pending';

-- The online orders of each checkout (from `order.placed`): what a refund for one order may
-- reach.
CREATE TABLE payment_orders (
    order_id     uuid PRIMARY KEY,
    checkout_id  uuid        NOT NULL,
    total_vnd    bigint      NOT NULL CHECK (total_vnd > 0)
);
CREATE INDEX payment_orders_checkout ON payment_orders (checkout_id);

CREATE TABLE refunds (
    id               uuid PRIMARY KEY,
    payment_id       uuid        NOT NULL REFERENCES payments (id),
    order_id         uuid,
    amount_vnd       bigint      NOT NULL CHECK (amount_vnd > 0),
    reason           text        NOT NULL CHECK (reason IN ('not_payable', 'cancelled', 'declined', 'returned', 'operator')),
    note             text,                           -- the operator's words
    idempotency_key  text        NOT NULL,           -- order:reason for automatic refunds, the caller's key for an operator's
    status           text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    provider_ref     text,                           -- the provider's refund transaction
    provider_answer  text,                           -- its code and message, for an operator
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    requested_by     uuid,                           -- the operator, for an operator's refund
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (payment_id, idempotency_key)
);
CREATE INDEX refunds_due ON refunds (next_attempt_at) WHERE status = 'pending';
CREATE INDEX refunds_order ON refunds (order_id);

CREATE FUNCTION count_refund() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'refunds are never deleted';
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'failed' THEN
            UPDATE payments SET refunded_vnd = refunded_vnd + NEW.amount_vnd WHERE id = NEW.payment_id;
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.amount_vnd <> OLD.amount_vnd OR NEW.payment_id <> OLD.payment_id THEN
        RAISE EXCEPTION 'a refund''s amount and payment never change';
    END IF;
    IF OLD.status <> NEW.status AND OLD.status <> 'pending' THEN
        RAISE EXCEPTION 'a refund that ended (%) does not change again', OLD.status;
    END IF;
    IF OLD.status <> 'failed' AND NEW.status = 'failed' THEN
        UPDATE payments SET refunded_vnd = refunded_vnd - OLD.amount_vnd WHERE id = OLD.payment_id;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER refunds_count AFTER INSERT OR UPDATE ON refunds FOR EACH ROW EXECUTE FUNCTION count_refund();
CREATE TRIGGER refunds_kept BEFORE DELETE ON refunds FOR EACH ROW EXECUTE FUNCTION count_refund();
