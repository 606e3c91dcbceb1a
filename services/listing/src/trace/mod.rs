//! Traceability: every lot has a link (a GS1 Digital Link when its listing has a GTIN, else
//! a short `/t/<lot id>` link) that a QR code on the produce carries, and a public page at
//! that link that tells a buyer where the lot comes from: product, lot, harvest date,
//! producer (and the member household of a cooperative's pooled lot), commune and province,
//! map point, certifications with their validity, OCOP stars and the lot's timeline. The
//! same content is JSON by content negotiation. It shows nothing private: no phone numbers,
//! no street, no buyer.
//!
//! Everything on the page comes from what the seller already recorded when listing,
//! harvesting and selling: nothing is typed in twice.

mod page;
pub mod qr;

use std::time::Duration;

use axum::{
    extract::{Query as AxumQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, NaiveDate, Utc};
use nongsan_shared::{
    ApiError, ListingId, Text,
    auth::{Actor, Role},
    error::Lang,
    gs1,
    http::{Json, Path},
};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;

use crate::{
    access::{may_manage, owner_of},
    app::AppState,
    catalog::store::{CertificationView, ListingView, emit_changed, load_listing},
    error::{ListingError, Problems, Result},
    search::dirty::mark_dirty,
    sellers::profile::Point,
};

/// The product of a lot.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TraceProduct {
    /// The listing.
    pub listing_id: ListingId,
    /// Its name.
    pub name: String,
    /// Category code.
    pub category: String,
    /// Category name, in the page's language.
    pub category_name: String,
    /// Unit code.
    pub unit: String,
    /// GTIN, 14 digits.
    pub gtin: Option<String>,
    /// First photo.
    pub photo: Option<String>,
}

/// The lot itself.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TraceLot {
    /// Id.
    pub id: uuid::Uuid,
    /// Lot code.
    pub code: String,
    /// Harvest date.
    pub harvest_date: NaiveDate,
}

/// Who produced it, and where (no street, no phone).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TraceProducer {
    /// `household` or `cooperative`: who sells it.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// For a cooperative's pooled lot: the member household that grew it.
    pub member_household: Option<String>,
    /// Commune code (2025).
    pub commune_code: String,
    /// Commune name.
    pub commune_name: String,
    /// Province code (2025).
    pub province_code: String,
    /// Province name.
    pub province_name: String,
    /// The growing area's point, when the seller gave one.
    pub point: Option<Point>,
}

/// A certification as the page shows it: as on the listing, with its kind's name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TraceCertification {
    /// The kind's name.
    pub name: String,
    /// The certification, its validity today and its verification.
    #[serde(flatten)]
    pub certification: CertificationView,
}

/// One step of the lot's life.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TraceEvent {
    /// `harvested`, `stocked`, `pooled` (taken into the cooperative) or `sold`.
    pub step: String,
    /// The day it happened.
    pub day: NaiveDate,
    /// For `sold`: in how many orders.
    pub orders: Option<i64>,
    /// What happened, in the page's language.
    pub text: String,
}

/// Everything the public page of a lot shows.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LotTrace {
    /// The lot's link (what its QR code holds).
    pub link: String,
    /// The product.
    pub product: TraceProduct,
    /// The lot.
    pub lot: TraceLot,
    /// Its producer.
    pub producer: TraceProducer,
    /// Certifications of the product, with their validity today.
    pub certifications: Vec<TraceCertification>,
    /// OCOP stars.
    pub ocop_stars: Option<i16>,
    /// The lot's timeline, oldest first.
    pub events: Vec<TraceEvent>,
}

/// Vietnam's day of an instant.
fn vietnam_day(at: DateTime<Utc>) -> NaiveDate {
    (at + chrono::Duration::hours(7)).date_naive()
}

/// Reads a lot's trace, in `lang`; `None` when there is no such lot.
pub async fn load_trace(
    conn: &mut PgConnection,
    base: &str,
    lot_id: uuid::Uuid,
    lang: Lang,
) -> Result<Option<LotTrace>> {
    let Some(lot) = sqlx::query_as!(
        LotRow,
        r#"SELECT l.id, l.lot_code, l.harvest_date, l.listing_id AS "listing_id: ListingId", h.name AS "grower?"
           FROM lots l LEFT JOIN households h ON h.account_id = l.household_id WHERE l.id = $1"#,
        lot_id,
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let listing = load_listing(conn, lot.listing_id).await?;
    Ok(Some(trace_of(conn, base, lot, listing, lang).await?))
}

/// A lot as its trace reads it.
struct LotRow {
    id: uuid::Uuid,
    lot_code: String,
    harvest_date: NaiveDate,
    listing_id: ListingId,
    grower: Option<String>,
}

/// The trace of a lot of `listing`.
async fn trace_of(
    conn: &mut PgConnection,
    base: &str,
    lot: LotRow,
    listing: ListingView,
    lang: Lang,
) -> Result<LotTrace> {
    let lot_id = lot.id;
    let vi = lang == Lang::Vi;
    let r = nongsan_shared::reference::reference();
    let category_name = r
        .categories
        .iter()
        .find(|c| c.code == listing.category)
        .map(|c| {
            if vi {
                c.name_vi.clone()
            } else {
                c.name_en.clone()
            }
        })
        .unwrap_or_else(|| listing.category.clone());
    let cooperative =
        listing.seller.kind == nongsan_shared::contracts::sellers::SellerKind::Cooperative;
    let moves = sqlx::query!(
        r#"SELECT kind, min(at) AS "first!", max(at) AS "last!", count(DISTINCT reservation_id) AS "orders!"
           FROM stock_movements WHERE lot_id = $1 GROUP BY kind"#,
        lot_id,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut events = vec![TraceEvent {
        step: "harvested".to_owned(),
        day: lot.harvest_date,
        orders: None,
        text: if vi { "Thu hoạch" } else { "Harvested" }.to_owned(),
    }];
    if let Some(intake) = moves.iter().find(|m| m.kind == "intake") {
        let (step, text) = match (cooperative, vi) {
            (true, true) => ("pooled", "Nhập vào kho hợp tác xã"),
            (true, false) => ("pooled", "Taken into the cooperative's stock"),
            (false, true) => ("stocked", "Nhập kho để bán"),
            (false, false) => ("stocked", "Put up for sale"),
        };
        events.push(TraceEvent {
            step: step.to_owned(),
            day: vietnam_day(intake.first),
            orders: None,
            text: text.to_owned(),
        });
    }
    if let Some(sale) = moves.iter().find(|m| m.kind == "sale") {
        events.push(TraceEvent {
            step: "sold".to_owned(),
            day: vietnam_day(sale.last),
            orders: Some(sale.orders),
            text: if vi {
                format!("Đã bán trong {} đơn hàng", sale.orders)
            } else {
                format!(
                    "Sold in {} order{}",
                    sale.orders,
                    if sale.orders == 1 { "" } else { "s" }
                )
            },
        });
    }
    let certifications = listing
        .certifications
        .iter()
        .map(|c| TraceCertification {
            name: r
                .certifications
                .iter()
                .find(|k| k.code == c.kind)
                .map(|k| k.name.clone())
                .unwrap_or_else(|| c.kind.clone()),
            certification: c.clone(),
        })
        .collect();
    Ok(LotTrace {
        link: gs1::lot_link(
            base,
            listing.gtin.as_deref(),
            &lot.lot_code,
            lot.id,
            lot.harvest_date,
        ),
        product: TraceProduct {
            listing_id: listing.id,
            name: listing.title,
            category: listing.category,
            category_name,
            unit: listing.unit,
            gtin: listing.gtin,
            photo: listing.photos.into_iter().next(),
        },
        lot: TraceLot {
            id: lot.id,
            code: lot.lot_code,
            harvest_date: lot.harvest_date,
        },
        producer: TraceProducer {
            kind: listing.seller.kind.as_str().to_owned(),
            name: listing.seller.name,
            member_household: if cooperative { lot.grower } else { None },
            commune_code: listing.origin.commune_code,
            commune_name: listing.origin.commune_name,
            province_code: listing.origin.province_code,
            province_name: listing.origin.province_name,
            point: listing.origin.point,
        },
        certifications,
        ocop_stars: listing.ocop_stars,
        events,
    })
}

/// Whether the caller wants JSON rather than a page.
fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let json = accept.find("application/json");
    let html = accept.find("text/html");
    match (json, html) {
        (Some(j), Some(h)) => j < h,
        (Some(_), None) => true,
        _ => false,
    }
}

fn lang_of(headers: &HeaderMap) -> Lang {
    Lang::from_accept_language(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// The answer for a lot: its page or its JSON, or a 404 page in the asker's language.
async fn answer(app: &AppState, headers: &HeaderMap, lot: Option<uuid::Uuid>) -> Result<Response> {
    let lang = lang_of(headers);
    let json = wants_json(headers);
    let trace = match lot {
        Some(id) => {
            let mut conn = app.pool.acquire().await?;
            load_trace(&mut conn, &app.trace_base, id, lang).await?
        }
        None => None,
    };
    Ok(match (trace, json) {
        (Some(t), true) => axum::Json(t).into_response(),
        (Some(t), false) => page::html(StatusCode::OK, page::lot_page(&t, lang)),
        (None, true) => ListingError::NotFound("lot").into_response(),
        (None, false) => page::html(StatusCode::NOT_FOUND, page::not_found(lang)),
    })
}

/// A malformed link: 400, as a page or a problem.
fn malformed(headers: &HeaderMap, detail_en: &str, detail_vi: &str) -> Response {
    let lang = lang_of(headers);
    if wants_json(headers) {
        ApiError::bad_request("malformed_link", Text::new(detail_en, detail_vi)).into_response()
    } else {
        let detail = if lang == Lang::Vi {
            detail_vi
        } else {
            detail_en
        };
        page::html(StatusCode::BAD_REQUEST, page::bad_link(lang, detail))
    }
}

/// Whether `h` is a harvest date as AI 7007 writes it: YYMMDD, a real day, or DD `00` when
/// only the month is known (GS1 General Specifications, dates with a day of 00).
fn harvest_date_is_valid(h: &str) -> bool {
    harvest_days(h).is_some()
}

/// The days a 7007 harvest date (YYMMDD) names, first and last: one day, or a whole month
/// when its day is 00 (GS1).
fn harvest_days(h: &str) -> Option<(NaiveDate, NaiveDate)> {
    if h.len() != 6 || !h.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match h.strip_suffix("00") {
        Some(month) => {
            let first = NaiveDate::parse_from_str(&format!("{month}01"), "%y%m%d").ok()?;
            let last = first
                .checked_add_months(chrono::Months::new(1))?
                .pred_opt()?;
            Some((first, last))
        }
        None => NaiveDate::parse_from_str(h, "%y%m%d").ok().map(|d| (d, d)),
    }
}

/// The Digital Link's query: the harvest date (AI 7007), when given.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DigitalLinkQuery {
    /// Harvest date, YYMMDD (AI 7007).
    #[serde(rename = "7007")]
    #[param(rename = "7007")]
    pub harvest: Option<String>,
}

/// A lot's public page by its GS1 Digital Link (`/01/<GTIN>/10/<lot>`): HTML in Vietnamese
/// (English by `Accept-Language`), or JSON when `Accept` asks for it. A malformed link is
/// 400; an unknown lot is a 404 page.
#[utoipa::path(get, path = "/01/{gtin}/10/{lot}", tag = "traceability",
    params(("gtin" = String, Path, description = "GTIN-8, -12, -13 or -14"), ("lot" = String, Path, description = "Lot code (AI 10), percent-encoded as GS1 Digital Link writes it"), DigitalLinkQuery),
    responses((status = 200, description = "The lot's page (HTML), or its trace as JSON when `Accept` asks for it", content((String = "text/html"), (LotTrace = "application/json"))),
        (status = 400, description = "Not a GS1 Digital Link of a lot", content((String = "text/html"), (nongsan_shared::error::ProblemSchema = "application/problem+json"))),
        (status = 404, description = "No such lot", content((String = "text/html"), (nongsan_shared::error::ProblemSchema = "application/problem+json")))))]
pub async fn lot_by_digital_link(
    State(app): State<AppState>,
    headers: HeaderMap,
    path: std::result::Result<
        axum::extract::Path<(String, String)>,
        axum::extract::rejection::PathRejection,
    >,
    query: std::result::Result<
        AxumQuery<DigitalLinkQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Response> {
    // A path or query axum cannot read (not UTF-8 once decoded, a repeated 7007) is a
    // malformed link like any other: the link's page, not axum's text.
    let (Ok(axum::extract::Path((gtin, lot))), Ok(AxumQuery(q))) = (path, query) else {
        return Ok(malformed(
            &headers,
            "this is not a GS1 Digital Link of a lot",
            "đây không phải GS1 Digital Link của một lô hàng",
        ));
    };
    let Ok(gtin) = gs1::gtin14(&gtin) else {
        return Ok(malformed(
            &headers,
            "the GTIN is not 8, 12, 13 or 14 digits with a valid check digit",
            "mã GTIN không phải 8, 12, 13 hoặc 14 chữ số với số kiểm tra đúng",
        ));
    };
    if !gs1::valid_lot(&lot) {
        return Ok(malformed(
            &headers,
            "the lot is not 1 to 20 characters of GS1's set",
            "mã lô không phải 1 đến 20 ký tự hợp lệ của GS1",
        ));
    }
    if let Some(h) = &q.harvest
        && !harvest_date_is_valid(h)
    {
        return Ok(malformed(
            &headers,
            "7007 (harvest date) must be YYMMDD",
            "7007 (ngày thu hoạch) phải có dạng YYMMDD",
        ));
    }
    let mut conn = app.pool.acquire().await?;
    // Among the lots of the GTIN's owner (no other seller's listing answers its links): a
    // pooled lot keeps its code, and the latest lot of that code is where it was sold from.
    // A code used again for a later harvest (another listing of the same product) is told
    // apart by the link's harvest date, when it has one.
    let harvest = q.harvest.as_deref().and_then(harvest_days);
    let found = sqlx::query_scalar!(
        "SELECT l.id FROM lots l JOIN listings g ON g.id = l.listing_id
         JOIN gtin_owners o ON o.gtin = g.gtin AND (o.household_id = g.household_id OR o.cooperative_id = g.cooperative_id)
         WHERE g.gtin = $1 AND l.lot_code = $2
         ORDER BY (l.harvest_date BETWEEN $3 AND $4) IS TRUE DESC, l.created_at DESC LIMIT 1",
        gtin,
        lot,
        harvest.map(|h| h.0),
        harvest.map(|h| h.1),
    )
    .fetch_optional(&mut *conn)
    .await?;
    drop(conn);
    answer(&app, &headers, found).await
}

/// A lot's public page by its short link (`/t/<lot id>`), for lots without a GTIN.
#[utoipa::path(get, path = "/t/{id}", tag = "traceability",
    params(("id" = String, Path, description = "The lot's id")),
    responses((status = 200, description = "The lot's page (HTML), or its trace as JSON when `Accept` asks for it", content((String = "text/html"), (LotTrace = "application/json"))),
        (status = 400, description = "Not a lot id", content((String = "text/html"), (nongsan_shared::error::ProblemSchema = "application/problem+json"))),
        (status = 404, description = "No such lot", content((String = "text/html"), (nongsan_shared::error::ProblemSchema = "application/problem+json")))))]
pub async fn lot_by_short_link(
    State(app): State<AppState>,
    headers: HeaderMap,
    id: std::result::Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response> {
    let Some(Ok(id)) = id.ok().map(|p| p.0.parse::<uuid::Uuid>()) else {
        return Ok(malformed(
            &headers,
            "this is not a lot's link",
            "đây không phải đường dẫn của một lô hàng",
        ));
    };
    answer(&app, &headers, Some(id)).await
}

/// A lot's link, or 404.
async fn link_of(app: &AppState, id: uuid::Uuid) -> Result<String> {
    let mut conn = app.pool.acquire().await?;
    let lot = sqlx::query!(
        "SELECT l.lot_code, l.harvest_date, g.gtin FROM lots l JOIN listings g ON g.id = l.listing_id WHERE l.id = $1",
        id,
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(ListingError::NotFound("lot"))?;
    Ok(gs1::lot_link(
        &app.trace_base,
        lot.gtin.as_deref(),
        &lot.lot_code,
        id,
        lot.harvest_date,
    ))
}

/// A lot's QR code as PNG (it holds the lot's link).
#[utoipa::path(get, path = "/v1/lots/{id}/qr.png", tag = "traceability",
    params(("id" = uuid::Uuid, Path, description = "The lot")),
    responses((status = 200, content_type = "image/png", body = Vec<u8>), (status = 404, body = nongsan_shared::error::ProblemSchema)))]
pub async fn lot_qr_png(
    State(app): State<AppState>,
    Path(id): Path<uuid::Uuid>,
) -> Result<Response> {
    let link = link_of(&app, id).await?;
    let png = qr::png(&link, 8)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        png,
    )
        .into_response())
}

/// A lot's QR code as SVG (it holds the lot's link).
#[utoipa::path(get, path = "/v1/lots/{id}/qr.svg", tag = "traceability",
    params(("id" = uuid::Uuid, Path, description = "The lot")),
    responses((status = 200, content_type = "image/svg+xml", body = String), (status = 404, body = nongsan_shared::error::ProblemSchema)))]
pub async fn lot_qr_svg(
    State(app): State<AppState>,
    Path(id): Path<uuid::Uuid>,
) -> Result<Response> {
    let link = link_of(&app, id).await?;
    let svg = qr::svg(&link, 240)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        svg,
    )
        .into_response())
}

/// Labels a sheet holds at most (a page of an A4 sheet is 12; a sheet prints over pages).
const LABELS_MAX: i64 = 200;

/// A printable sheet of labels for a listing's lots that have stock (product, lot, harvest
/// date, producer and QR code each), for its seller.
#[utoipa::path(get, path = "/v1/listings/{id}/labels", tag = "traceability",
    params(("id" = ListingId, Path, description = "The listing")),
    responses((status = 200, content_type = "text/html", body = String), (status = 403, body = nongsan_shared::error::ProblemSchema),
        (status = 404, body = nongsan_shared::error::ProblemSchema)),
    security(("bearer" = [])))]
pub async fn listing_labels(
    State(app): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Path(id): Path<ListingId>,
) -> Result<Response> {
    let mut conn = app.pool.acquire().await?;
    let owner = owner_of(&mut conn, id).await?;
    may_manage(&mut conn, &actor, owner).await?;
    let lang = lang_of(&headers);
    // The listing is read once for the whole sheet.
    let listing = load_listing(&mut conn, id).await?;
    let lots = sqlx::query_as!(
        LotRow,
        r#"SELECT l.id, l.lot_code, l.harvest_date, l.listing_id AS "listing_id: ListingId", h.name AS "grower?"
           FROM lots l LEFT JOIN households h ON h.account_id = l.household_id
           WHERE l.listing_id = $1 AND l.on_hand > 0 ORDER BY l.harvest_date, l.created_at LIMIT $2"#,
        id as _,
        LABELS_MAX,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut labels = Vec::with_capacity(lots.len());
    for lot in lots {
        let t = trace_of(&mut conn, &app.trace_base, lot, listing.clone(), lang).await?;
        let svg = qr::svg(&t.link, 160)?;
        labels.push((t, svg));
    }
    Ok(page::html(StatusCode::OK, page::labels(&labels, lang)))
}

/// An operator's finding on a certification.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    /// `verified` or `rejected` (a rejected certificate does not count for the badge or the
    /// search facet).
    pub status: String,
}

/// Marks a listing's certification (by its position in the listing) verified or rejected
/// (operators).
#[utoipa::path(post, path = "/v1/listings/{id}/certifications/{position}/verification", tag = "traceability",
    params(("id" = ListingId, Path, description = "The listing"), ("position" = i32, Path, description = "The certification's place in the listing's list, from 0")),
    request_body = Verification,
    responses((status = 200, body = crate::catalog::store::ListingView), (status = 403, body = nongsan_shared::error::ProblemSchema),
        (status = 404, body = nongsan_shared::error::ProblemSchema), (status = 422, body = nongsan_shared::error::ProblemSchema)),
    security(("bearer" = [])))]
pub async fn verify_certification(
    State(app): State<AppState>,
    actor: Actor,
    Path((id, position)): Path<(ListingId, i32)>,
    Json(v): Json<Verification>,
) -> Result<axum::Json<crate::catalog::store::ListingView>> {
    if actor.role != Role::Operator {
        return Err(ListingError::Forbidden);
    }
    let mut p = Problems::new();
    p.check(
        !matches!(v.status.as_str(), "verified" | "rejected"),
        "status",
        "invalid_status",
        "must be verified or rejected",
        "phải là verified hoặc rejected",
    );
    p.finish()?;
    let mut tx = app.pool.begin().await?;
    let changed = sqlx::query!(
        "UPDATE listing_certifications SET verification = $3, verified_by = $4, verified_at = now() WHERE listing_id = $1 AND position = $2",
        id as _,
        position,
        v.status,
        actor.account_id as _,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(ListingError::NotFound("certification"));
    }
    sqlx::query!(
        "UPDATE listings SET version = version + 1, updated_at = now() WHERE id = $1",
        id as _
    )
    .execute(&mut *tx)
    .await?;
    let view = load_listing(&mut tx, id).await?;
    emit_changed(&mut tx, &view).await?;
    tx.commit().await?;
    app.views.forget(id);
    tracing::info!(listing = %id, position, status = %v.status, operator = %actor.account_id, "certification verified");
    Ok(axum::Json(view))
}

/// Listings whose certification ended in the last `days` days (and so drop out of its
/// search facet today) are indexed again.
pub async fn sweep_expired(conn: &mut PgConnection, days: i32) -> anyhow::Result<usize> {
    let today = crate::catalog::store::today_in_vietnam();
    let ids: Vec<ListingId> = sqlx::query_scalar!(
        r#"SELECT DISTINCT listing_id AS "id: ListingId" FROM listing_certifications
           WHERE valid_until < $1 AND valid_until >= $1 - $2::int
              OR valid_from = $1"#,
        today,
        days,
    )
    .fetch_all(&mut *conn)
    .await?;
    mark_dirty(conn, &ids).await?;
    Ok(ids.len())
}

/// Runs [`sweep_expired`] every `every` (two days back: a restart on the day after misses
/// nothing).
pub async fn run_certification_sweep(pool: PgPool, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    loop {
        tick.tick().await;
        let swept = async {
            let mut conn = pool.acquire().await?;
            sweep_expired(&mut conn, 2).await
        }
        .await;
        match swept {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                listings = n,
                "listings with certifications that ended or began are indexed again"
            ),
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "cannot look for expired certifications now"
            ),
        }
    }
}
