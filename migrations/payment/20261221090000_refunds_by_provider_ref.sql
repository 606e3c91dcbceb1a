-- A Stripe refund webhook without our id in its metadata (a refund first asked before refunds
-- carried it) is matched to our refund by Stripe's id for it. Every other refund webhook
-- (refunds made in Stripe's dashboard) asks too: one index lookup, not a scan of all refunds.
CREATE INDEX refunds_provider_ref ON refunds (provider_ref) WHERE provider_ref IS NOT NULL;
