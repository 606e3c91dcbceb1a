//! Checkout: one basket from several farms, one payment. The saga:
//!
//! 1. the `Idempotency-Key` is claimed (the same key returns the same checkout, also when two
//!    identical requests race; another body with it is 422): [`crate::idempotency`];
//! 2. every line is reserved through the listing service, all or nothing, with the checkout id
//!    as reservation id (so a retry cannot reserve twice) and a time to live past the
//!    checkout's own expiry;
//! 3. the checkout and one order per seller are stored, with `order.placed` per order;
//! 4. for an online payment, the payment service opens the payment;
//! 5. a failure after step 2 releases the reservation; a crash between steps 2 and 3 leaves
//!    a reservation with no checkout, which the listing service asks about a minute later
//!    and gives back ([`orphans`]).
//!
//! The parts: [`request`] (the request as sent and its checked form), [`saga`] (steps 2–5),
//! [`store`] (its SQL), [`expiry`] (the worker expiring unpaid checkouts), [`orphans`] (the
//! answer about reservations without a checkout) and [`handlers`] (the endpoints,
//! re-exported here).

pub mod expiry;
pub mod handlers;
pub mod orphans;
pub mod request;
pub mod saga;
pub mod store;

pub use expiry::{expire_once, run_expirer};
pub use handlers::{
    __path_create_checkout, __path_get_checkout, __path_list_checkouts, create_checkout,
    get_checkout, list_checkouts,
};
pub use request::{CheckoutRequest, LineInput, NewCheckout, PaymentMethod};
