//! `/v1/internal/reservations` (listing): the order service reserves a checkout's lines all or
//! nothing, then commits or releases them.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::sellers::Seller;
use crate::{AccountId, ListingId, Quantity, ReservationId, Vnd};

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
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationRequest {
    /// Chosen by the caller; sending the same id again returns the same reservation.
    pub id: ReservationId,
    /// Seconds to hold the stock, 1–259200 (3 days; default 900).
    pub ttl_secs: Option<u32>,
    /// The lines, at most 100, one per listing.
    pub lines: Vec<LineRequest>,
    /// Who holds the stock until a seller confirms (a cash-on-delivery buyer): one holder may
    /// hold at most the configured share of a listing's stock at once.
    #[serde(default)]
    pub holder: Option<AccountId>,
}

/// Where a reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ReservationStatus {
    /// Holding stock.
    Active,
    /// Sold (every line committed or given back).
    Committed,
    /// Given back by the caller.
    Released,
    /// Given back when its time ran out.
    Expired,
}

/// Which lot filled (part of) a line.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow, PartialEq)]
pub struct Allocation {
    /// The lot's id.
    #[serde(default)]
    pub lot_id: Option<uuid::Uuid>,
    /// Where a buyer reads where the lot comes from (its QR code's link).
    #[serde(default)]
    pub trace_url: Option<String>,
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
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
    pub seller: Seller,
    /// The product's GTIN, when it has one.
    #[serde(default)]
    pub gtin: Option<String>,
    /// The lots that filled it, once committed.
    #[serde(default)]
    pub allocations: Vec<Allocation>,
}

/// A reservation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReservationView {
    /// Id.
    pub id: ReservationId,
    /// Where it stands.
    pub status: ReservationStatus,
    /// When an active reservation expires.
    pub expires_at: DateTime<Utc>,
    /// The lines.
    pub lines: Vec<ReservedLine>,
}

/// The listing service asks which of these reservations have a checkout
/// (`POST /v1/internal/checkouts/reservation-outcomes`, order).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationsAsked {
    /// At most 1,000.
    pub reservation_ids: Vec<ReservationId>,
}

/// What became of each reservation asked about: final answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReservationOutcomes {
    /// A checkout was stored with these: their stock stays held.
    pub placed: Vec<ReservationId>,
    /// No checkout was stored with these, and none can be from now on: give their stock back.
    pub abandoned: Vec<ReservationId>,
}
