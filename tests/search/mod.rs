//! Search: the contract both engines keep, live indexing, and the Meilisearch adapter's
//! requests.

mod contract;
mod live;
mod meilisearch;
mod scale;
