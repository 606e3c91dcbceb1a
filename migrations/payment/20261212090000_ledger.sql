-- The double-entry ledger, commission, seller balances, payouts and cooperative member
-- settlement.
--
-- Sign: an entry's amount is positive for a debit and negative for a credit. Money the
-- platform holds (at a provider, in a courier's hands) is a debit balance; money it owes
-- (to a seller, a member household, a buyer being refunded) and what it earned (commission)
-- are credit balances. Every transaction's entries sum to zero (checked by the database
-- when the transaction commits); entries and transactions are never updated or deleted;
-- every balance is a sum of entries.

CREATE TABLE ledger_accounts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN (
                     'provider_clearing',  -- captured by a provider, not yet refunded (per provider)
                     'cod_in_transit',     -- cash collected on delivery
                     'seller_pending',     -- paid, not yet delivered (per seller)
                     'seller_payable',     -- delivered: the seller's net, held then available (per seller)
                     'member_payable',     -- a cooperative's sale owed to a member household (per cooperative and member)
                     'payout_in_flight',   -- in a payout batch, not yet confirmed by the bank (per owner)
                     'commission',         -- the platform's commission
                     'refunds_payable',    -- refunds asked, not yet confirmed by the provider
                     'payouts_sent'        -- money sent to sellers' banks
                 )),
    provider     text,   -- provider_clearing: vnpay, stripe, momo
    owner_kind   text CHECK (owner_kind IN ('household', 'cooperative')),
    owner_id     uuid,   -- the seller (or the cooperative, for member_payable)
    member_id    uuid,   -- member_payable: the member household
    -- One text naming the account, so that finding it is one index lookup.
    key          text GENERATED ALWAYS AS (kind || ':' || COALESCE(provider, '') || ':' || COALESCE(owner_kind, '') || ':'
                     || COALESCE(owner_id::text, '') || ':' || COALESCE(member_id::text, '')) STORED UNIQUE
);
CREATE INDEX ledger_accounts_owner ON ledger_accounts (owner_kind, owner_id);
CREATE INDEX ledger_accounts_member ON ledger_accounts (member_id) WHERE member_id IS NOT NULL;

CREATE TABLE ledger_transactions (
    id            uuid PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('order', 'payout', 'payout_paid', 'payout_failed')),
    order_id      uuid,             -- 'order': what moved the order's money (capture, refund, delivery)
    payout_line   uuid,             -- payouts
    available_at  timestamptz,      -- seller_payable and member_payable entries count as available from then (the hold)
    memo          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_transactions_order ON ledger_transactions (order_id) WHERE order_id IS NOT NULL;

CREATE TABLE ledger_entries (
    transaction_id  uuid   NOT NULL REFERENCES ledger_transactions (id),
    account_id      bigint NOT NULL REFERENCES ledger_accounts (id),
    amount_vnd      bigint NOT NULL CHECK (amount_vnd <> 0),
    PRIMARY KEY (transaction_id, account_id)
);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id);

CREATE FUNCTION ledger_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger % are never updated or deleted', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER ledger_entries_kept BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_kept();
CREATE TRIGGER ledger_entries_not_truncated BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_kept();
CREATE TRIGGER ledger_transactions_kept BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_kept();
CREATE TRIGGER ledger_transactions_not_truncated BEFORE TRUNCATE ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_kept();
-- An account's row is locked (SELECT ... FOR UPDATE) by whoever checks its balance before
-- taking from it, but never changed: changing its owner would move its balance.
CREATE TRIGGER ledger_accounts_kept BEFORE UPDATE OR DELETE ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_kept();

-- A transaction balances when the database transaction that wrote it commits.
CREATE FUNCTION ledger_balanced() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    total numeric;
BEGIN
    SELECT sum(amount_vnd) INTO total FROM ledger_entries WHERE transaction_id = NEW.transaction_id;
    IF total <> 0 THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: its entries sum to %', NEW.transaction_id, total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;
CREATE CONSTRAINT TRIGGER ledger_entries_balance AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_balanced();

-- What the ledger books an order from: its seller and method (from `order.placed`, for every
-- order now, cash ones included), its delivery (`order.delivered`), and its lines and lots
-- (`stock.sold`, from the listing service).
ALTER TABLE payment_orders
    ADD COLUMN seller_kind    text CHECK (seller_kind IN ('household', 'cooperative')),
    ADD COLUMN seller_id      uuid,
    ADD COLUMN seller_name    text,
    ADD COLUMN method         text,
    ADD COLUMN delivered_at   timestamptz,
    ADD COLUMN available_at   timestamptz;          -- delivered_at plus the hold: when its money may be paid out
CREATE INDEX payment_orders_seller ON payment_orders (seller_kind, seller_id, delivered_at);

-- The line an operator's partial refund is for (the listing of one of the order's lines).
ALTER TABLE refunds ADD COLUMN listing_id uuid;

-- An order's lines as sold, with the rates in force when they were sold and what the
-- ledger last booked for each (kept current as refunds change them).
CREATE TABLE sale_lines (
    order_id        uuid    NOT NULL,
    listing_id      uuid    NOT NULL,
    title           text    NOT NULL,
    category        text    NOT NULL,
    unit            text    NOT NULL,
    quantity        numeric(15, 3) NOT NULL CHECK (quantity > 0),
    line_total      bigint  NOT NULL CHECK (line_total >= 0),
    rate_bps        integer NOT NULL CHECK (rate_bps BETWEEN 0 AND 10000),
    coop_fee_bps    integer CHECK (coop_fee_bps BETWEEN 0 AND 10000),
    gross_vnd       bigint  NOT NULL DEFAULT 0,   -- line total less refunds of this line, as booked
    commission_vnd  bigint  NOT NULL DEFAULT 0,   -- as booked
    PRIMARY KEY (order_id, listing_id)
);

CREATE TABLE sale_lots (
    order_id      uuid    NOT NULL,
    listing_id    uuid    NOT NULL,
    lot_code      text    NOT NULL,
    household_id  uuid,
    quantity      numeric(15, 3) NOT NULL CHECK (quantity > 0),
    part_vnd      bigint  NOT NULL DEFAULT 0,   -- the lot's part of the line's net, as booked
    fee_vnd       bigint  NOT NULL DEFAULT 0,   -- the cooperative's fee on it
    share_vnd     bigint  NOT NULL DEFAULT 0,   -- what the member household is owed
    PRIMARY KEY (order_id, listing_id, lot_code),
    FOREIGN KEY (order_id, listing_id) REFERENCES sale_lines (order_id, listing_id)
);
CREATE INDEX sale_lots_household ON sale_lots (household_id) WHERE household_id IS NOT NULL;

-- Commission rates in basis points (1/100 of a percent): by category, and a seller's own,
-- which wins. Without either the configured default applies.
CREATE TABLE commission_rates (
    category    text PRIMARY KEY,
    rate_bps    integer NOT NULL CHECK (rate_bps BETWEEN 0 AND 10000),
    set_by      uuid NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE seller_commission_rates (
    seller_kind text NOT NULL CHECK (seller_kind IN ('household', 'cooperative')),
    seller_id   uuid NOT NULL,
    rate_bps    integer NOT NULL CHECK (rate_bps BETWEEN 0 AND 10000),
    set_by      uuid NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (seller_kind, seller_id)
);
-- A cooperative's own fee on what its members' lots sell for, set by its manager.
CREATE TABLE cooperative_fees (
    cooperative_id uuid PRIMARY KEY,
    rate_bps       integer NOT NULL CHECK (rate_bps BETWEEN 0 AND 10000),
    set_by         uuid NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Where a payout goes: a household's or a cooperative's bank account.
CREATE TABLE payout_accounts (
    owner_kind      text NOT NULL CHECK (owner_kind IN ('household', 'cooperative')),
    owner_id        uuid NOT NULL,
    bank            text NOT NULL,
    account_number  text NOT NULL,
    account_name    text NOT NULL,
    set_by          uuid NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_kind, owner_id)
);

CREATE TABLE payout_batches (
    id          uuid PRIMARY KEY,
    created_by  uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE payout_lines (
    id              uuid PRIMARY KEY,
    batch_id        uuid   NOT NULL REFERENCES payout_batches (id),
    account_id      bigint NOT NULL REFERENCES ledger_accounts (id),  -- the balance it was taken from
    owner_kind      text   NOT NULL,
    owner_id        uuid   NOT NULL,   -- who is paid: the seller, or the member household
    cooperative_id  uuid,              -- a member's share: the cooperative that owes it
    amount_vnd      bigint NOT NULL CHECK (amount_vnd > 0),
    bank            text   NOT NULL,
    account_number  text   NOT NULL,
    account_name    text   NOT NULL,
    reference       text   NOT NULL UNIQUE,
    status          text   NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'paid', 'failed')),
    note            text,
    updated_by      uuid,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payout_lines_batch ON payout_lines (batch_id);
