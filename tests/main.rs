//! nongsan's end-to-end tests: the real services against real PostgreSQL and Redis. One test
//! binary, so the harness and the build are shared.

mod foundation;
mod listing;
mod order;
mod payment;
mod search;
mod support;
