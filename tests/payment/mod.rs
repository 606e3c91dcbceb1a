//! Money: refunds that always happen (owed by the order side, or an operator's), bounded
//! by the capture; pending payments settled by asking the provider; the methods on offer;
//! the ledger, balances, statements and payouts.

mod ledger;
mod methods;
mod momo;
mod reconcile;
mod refunds;
mod secrets;
mod stripe;
