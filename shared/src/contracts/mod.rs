//! What the services say to each other, written once: the bodies of every internal request
//! and answer, and of every event, with each event's name. The producer serialises these
//! types and the consumer reads the same types; no service keeps a private copy of another's
//! shape.
//!
//! | contract | from → to |
//! | --- | --- |
//! | [`reservations`] | order → listing: reserve, commit, release stock |
//! | [`access`] | order → listing: may this actor act for this seller? |
//! | [`payments`] | order → payment: open a payment for a checkout |
//! | [`events`] | every service → its followers, through the outbox |

pub mod access;
pub mod events;
pub mod orders;
pub mod payments;
pub mod reservations;
pub mod sellers;
