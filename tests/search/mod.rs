//! Search: the contract both engines keep, live indexing, and the Meilisearch adapter's
//! requests.

pub mod contract;
mod live;
mod meilisearch;
mod scale;
