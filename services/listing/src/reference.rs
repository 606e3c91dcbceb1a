//! The reference data lives in the shared crate: every service validates addresses.
pub use nongsan_shared::reference::*;
