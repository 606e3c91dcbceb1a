//! Stock: lots, movements, reservations for checkouts, a cooperative's pooled stock and its
//! imports.

pub mod imports;
pub mod levels;
pub mod lots;
pub mod pooling;
pub mod requests;
pub mod reservations;
