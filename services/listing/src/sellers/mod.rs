//! Sellers: farm households and cooperatives with their members.

pub mod cooperatives;
pub mod households;
pub mod profile;
