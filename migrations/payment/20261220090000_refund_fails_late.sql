-- A refund that succeeded may still fail at the provider: Stripe sends `refund.failed` when
-- the buyer's bank cannot take the money back, days after the refund answered `succeeded`.
-- The refund is then failed, and its amount counts against its payment no more (the buyer
-- is still owed it: an operator refunds again). Any other change of an ended refund stays
-- refused.
CREATE OR REPLACE FUNCTION count_refund() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
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
    IF OLD.status <> NEW.status AND OLD.status <> 'pending'
       AND NOT (OLD.status = 'succeeded' AND NEW.status = 'failed') THEN
        RAISE EXCEPTION 'a refund that ended (%) does not change again, but to failed from succeeded', OLD.status;
    END IF;
    IF OLD.status <> 'failed' AND NEW.status = 'failed' THEN
        UPDATE payments SET refunded_vnd = refunded_vnd - OLD.amount_vnd WHERE id = OLD.payment_id;
    END IF;
    RETURN NEW;
END;
$$;
