-- MoMo, the e-wallet, is a payment method too.
ALTER TABLE checkouts DROP CONSTRAINT checkouts_payment_method_check;
ALTER TABLE checkouts ADD CONSTRAINT checkouts_payment_method_check CHECK (payment_method IN ('cod', 'vnpay', 'stripe', 'momo'));
