//! Reservations, the internal API the order service calls: reserve several lines all or
//! nothing for a time, idempotent by the caller's reservation id; commit, which turns the
//! reservation into a sale filled from lots oldest harvest first; release; and a sweeper that
//! releases what expired.

pub mod consumers;
pub mod handlers;
pub mod model;
pub mod store;
pub mod sweeper;
