//! The reservation request and answer (their types are the contract in
//! `nongsan_shared::contracts::reservations`), and the checks of a request.

pub use nongsan_shared::contracts::reservations::{
    Allocation, LineRequest, ReservationRequest, ReservationStatus, ReservationView, ReservedLine,
};

use crate::error::{Problems, Result};

/// Longest a reservation may be held: three days (a cash-on-delivery order waiting for its
/// seller to confirm).
const MAX_TTL_SECS: u32 = 3 * 24 * 3600;

pub(crate) fn check_request(r: &ReservationRequest) -> Result<()> {
    let mut p = Problems::default();
    p.check(
        r.lines.is_empty(),
        "lines",
        "empty",
        "must have at least one line",
        "phải có ít nhất một dòng",
    );
    p.check(
        r.lines.len() > 100,
        "lines",
        "too_many",
        "must have at most 100 lines",
        "tối đa 100 dòng",
    );
    if let Some(ttl) = r.ttl_secs {
        p.check(
            !(1..=MAX_TTL_SECS).contains(&ttl),
            "ttl_secs",
            "out_of_range",
            "must be 1 to 259200 seconds (three days)",
            "phải từ 1 đến 259200 giây (ba ngày)",
        );
    }
    for (i, l) in r.lines.iter().enumerate() {
        p.check(
            !l.quantity.is_positive(),
            &format!("lines[{i}].quantity"),
            "not_positive",
            "must be more than 0",
            "phải lớn hơn 0",
        );
        p.check(
            r.lines[..i].iter().any(|o| o.listing_id == l.listing_id),
            &format!("lines[{i}].listing_id"),
            "duplicate",
            "appears on an earlier line",
            "đã có ở dòng trước",
        );
    }
    Ok(p.finish()?)
}
