//! The listing service: identity, sellers, catalog, inventory, reservations, cooperatives.

mod access;
mod catalog;
mod cooperative;
mod identity;
mod reservations;
mod sessions;
mod traceability;
