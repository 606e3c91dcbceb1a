//! The foundation: the binary on embedded defaults, the HTTP edge, events, the split shape.

mod authorization;
mod cli;
pub mod docs;
mod events;
mod hot_pool;
mod http_edge;
mod limits;
mod setup;
mod split;
mod walkthrough;
