//! The common crate of nongsan: configuration, errors and the field-error collector, ids,
//! money and quantities, phone numbers, auth, the database, events, calls between services,
//! and telemetry.
//!
//! Every service depends on it; it depends on none of them.

pub mod auth;
pub mod client;
pub mod config;
pub mod contracts;
pub mod db;
pub mod embedded_pg;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod gs1;
pub mod http;
pub mod idempotency_key;
pub mod ids;
pub mod invalid;
pub mod money;
pub mod net;
pub mod paging;
pub mod patch;
pub mod phone;
pub mod problems;
pub mod quantity;
pub mod ratelimit;
pub mod reference;
pub mod runtime;
pub mod telemetry;

pub use error::{ApiError, FieldError, Text};
pub use ids::*;
pub use money::Vnd;
pub use phone::PhoneNumber;
pub use problems::Problems;
pub use quantity::Quantity;
