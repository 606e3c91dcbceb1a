//! Identity: accounts, passwords, sessions, roles and activation.

pub mod accounts;
pub mod activation;
pub mod passwords;
pub mod roles;
pub mod sessions;
pub mod store;
