//! The reservation request and answer, and the checks of a request.

use chrono::{DateTime, NaiveDate, Utc};
use nongsan_shared::{AccountId, ListingId, Quantity, ReservationId, Vnd};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    error::{Problems, Result},
    sellers::profile::SellerView,
};

/// Longest a reservation may be held: three days (a cash-on-delivery order waiting for its
/// seller to confirm).
const MAX_TTL_SECS: u32 = 3 * 24 * 3600;

/// One line to reserve.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    /// The listing.
    pub listing_id: ListingId,
    /// How much, in the listing's unit.
    pub quantity: Quantity,
}

/// A reservation to make.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationRequest {
    /// Chosen by the caller; sending the same id again returns the same reservation.
    pub id: ReservationId,
    /// Seconds to hold the stock, 1–259200 (3 days; default 900).
    pub ttl_secs: Option<u32>,
    /// The lines, at most 100, one per listing.
    pub lines: Vec<LineRequest>,
}

/// Which lot filled (part of) a line.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow, PartialEq)]
pub struct Allocation {
    /// Lot code.
    pub lot_code: String,
    /// Harvest date.
    pub harvest_date: NaiveDate,
    /// The household that grew it.
    pub household_id: Option<AccountId>,
    /// How much of the line it filled.
    pub quantity: Quantity,
}

/// A reserved line, priced.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReservedLine {
    /// Position in the request.
    pub line_no: i32,
    /// The listing.
    pub listing_id: ListingId,
    /// Its title now.
    pub title: String,
    /// Its unit.
    pub unit: String,
    /// Quantity.
    pub quantity: Quantity,
    /// Price per unit when reserved.
    pub unit_price: Vnd,
    /// Price × quantity, rounded to whole đồng.
    pub line_total: Vnd,
    /// Who sells it.
    pub seller: SellerView,
    /// The lots that filled it, once committed.
    pub allocations: Vec<Allocation>,
}

/// A reservation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReservationView {
    /// Id.
    pub id: ReservationId,
    /// active, committed, released or expired.
    pub status: String,
    /// When an active reservation expires.
    pub expires_at: DateTime<Utc>,
    /// The lines.
    pub lines: Vec<ReservedLine>,
}

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
            "must be 1 to 3600",
            "phải từ 1 đến 3600",
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
    p.finish()
}
