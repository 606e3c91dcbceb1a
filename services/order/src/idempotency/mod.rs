//! Idempotency keys (as zero2prod's `idempotency/`): a request that carries an
//! `Idempotency-Key` header is served once per account and key.
//!
//! A handler reads the key ([`IdempotencyKey`]), makes a [`Claim`] of it with a hash of the
//! request as sent, and [`claim`]s it:
//!
//! - [`Claimed::Mine`]: this request serves the key, with the id reserved for it (the same
//!   id again when a request that died mid-way is taken over); on success it stores the
//!   answer with [`complete`], on failure it gives the key back with [`unclaim`], or, when
//!   the listing service's answer to its reservation was lost, leaves it to the next
//!   request with it ([`leave_for_retry`]), which takes it over at once with the same id;
//! - [`Claimed::Done`]: the key was served before: the stored answer is replayed.
//!
//! The same key with another request is `idempotency_key_reused` (422); a key still being
//! served by another request after 30 seconds is `idempotency_key_in_use` (409).

mod store;

pub use nongsan_shared::idempotency_key::{HEADER, IdempotencyKey};
pub use store::{Claim, Claimed, Hold, claim, complete, leave_for_retry, unclaim};
