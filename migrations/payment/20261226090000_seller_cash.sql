-- Cash on delivery: the seller who delivers an order takes the buyer's cash and keeps it.
-- The ledger booked that cash as in transit to the platform (`cod_in_transit`) while it
-- credited the seller the sale's net, and a payout batch then paid that net out: the seller
-- had the buyer's cash and was paid for the sale again. Nothing recorded the cash reaching
-- the platform, and nothing in nongsan's flow brings it there.
--
-- A seller's cash is now an account of its own (`seller_cash`, a debit balance: the
-- platform is owed it). A payout batch takes it out of the seller's payable balance before
-- paying (`cash_netted` transactions, naming their batch), so the seller is paid what its
-- online sales earned less what its cash sales owe (their commission and, for a
-- cooperative, its members' shares). A cooperative's members' shares are paid first from the
-- cash the cooperative holds (`paid_by_cooperative`: the cooperative pays them), so the
-- platform never pays out money it did not receive.
--
-- Written so that running it again changes nothing more (its upgrade test runs it on a
-- database already migrated).

ALTER TABLE ledger_accounts DROP CONSTRAINT IF EXISTS ledger_accounts_kind_check;
ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_kind_check CHECK (kind IN (
    'provider_clearing', 'cod_in_transit', 'seller_cash', 'seller_pending', 'seller_payable',
    'member_payable', 'payout_in_flight', 'commission', 'refunds_payable', 'payouts_sent'));

ALTER TABLE ledger_transactions DROP CONSTRAINT IF EXISTS ledger_transactions_kind_check;
ALTER TABLE ledger_transactions ADD CONSTRAINT ledger_transactions_kind_check CHECK (kind IN (
    'order', 'payout', 'payout_paid', 'payout_failed', 'cash_netted', 'paid_by_cooperative'));
ALTER TABLE ledger_transactions ADD COLUMN IF NOT EXISTS payout_batch uuid;  -- cash_netted, paid_by_cooperative: the batch

-- The cash already booked in transit moves to its seller's cash: one transaction of each
-- order whose seller is known (every delivered cash order's is: its delivery remembers it),
-- with a UUIDv7 id as the application writes them.
CREATE TEMPORARY TABLE cod_moved AS
SELECT t.order_id, o.seller_kind, o.seller_id, sum(e.amount_vnd)::bigint AS amount,
       encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
           PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
           FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid AS tx
FROM ledger_entries e
JOIN ledger_transactions t ON t.id = e.transaction_id
JOIN ledger_accounts a ON a.id = e.account_id
JOIN payment_orders o ON o.order_id = t.order_id
WHERE a.kind = 'cod_in_transit' AND o.seller_kind IS NOT NULL AND o.seller_id IS NOT NULL
GROUP BY t.order_id, o.seller_kind, o.seller_id
HAVING sum(e.amount_vnd) <> 0;

INSERT INTO ledger_accounts (kind, owner_kind, owner_id)
SELECT DISTINCT 'seller_cash', seller_kind, seller_id FROM cod_moved
ON CONFLICT DO NOTHING;

INSERT INTO ledger_transactions (id, kind, order_id, memo)
SELECT tx, 'order', order_id, 'cash on delivery: the seller keeps the cash it collected (moved by a migration)'
FROM cod_moved;

INSERT INTO ledger_entries (transaction_id, account_id, amount_vnd)
SELECT m.tx, a.id, -m.amount FROM cod_moved m JOIN ledger_accounts a ON a.kind = 'cod_in_transit'
UNION ALL
SELECT m.tx, a.id, m.amount FROM cod_moved m
JOIN ledger_accounts a ON a.kind = 'seller_cash' AND a.owner_kind = m.seller_kind AND a.owner_id = m.seller_id;

DROP TABLE cod_moved;
