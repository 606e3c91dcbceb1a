//! The order service: checkout across sellers, the saga's failures, the order's life.

mod checkout;
mod failures;
mod lifecycle;
mod online;
