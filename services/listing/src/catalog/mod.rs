//! The catalog: listings (what a seller offers, at what price, from where) and the reference
//! lists they are written with.

pub mod cache;
pub mod input;
pub mod listings;
pub mod reference;
pub mod store;
pub mod warm;
