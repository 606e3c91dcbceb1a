//! The listing service: identity, sellers, catalog, inventory, reservations, cooperatives.

mod access;
mod catalog;
mod cooperative;
mod identity;
mod page_cache;
mod reservations;
mod sessions;
mod traceability;
