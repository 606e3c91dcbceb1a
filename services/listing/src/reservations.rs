//! Reservations, the internal API the order service calls: reserve several lines all or
//! nothing for a time, idempotent by the caller's reservation id; commit, which turns the
//! reservation into a sale filled from lots oldest harvest first; release; and a sweeper that
//! releases what expired.

use std::time::Duration;

use axum::{Json as AxumJson, extract::State, http::StatusCode};
use chrono::{DateTime, NaiveDate, Utc};
use nongsan_shared::{
    AccountId, ListingId, Quantity, ReservationId, Vnd,
    auth::{Actor, Role},
    http::{Json, Path},
    invalid::Invalid,
    telemetry::worth_logging,
};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;

use crate::{
    access::AppState,
    error::{ListingError, Problems, Result},
    inventory::{Movement, apply, lock_stock},
    listings::SellerView,
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

fn require_service(actor: &Actor) -> Result<()> {
    if matches!(actor.role, Role::Service | Role::Operator) {
        Ok(())
    } else {
        Err(ListingError::Forbidden)
    }
}

fn check_request(r: &ReservationRequest) -> Result<()> {
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

/// Loads a reservation with its lines, sellers and allocations.
pub async fn load(conn: &mut PgConnection, id: ReservationId) -> Result<ReservationView> {
    let (status, expires_at): (String, DateTime<Utc>) =
        sqlx::query_as("SELECT status, expires_at FROM reservations WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(ListingError::NotFound("reservation"))?;
    type Row = (
        i32,
        ListingId,
        String,
        String,
        Quantity,
        Vnd,
        Option<AccountId>,
        Option<uuid::Uuid>,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT r.line_no, r.listing_id, l.title, l.unit_code, r.quantity, r.unit_price, l.household_id, l.cooperative_id, COALESCE(h.name, c.name)
         FROM reservation_lines r JOIN listings l ON l.id = r.listing_id
         LEFT JOIN households h ON h.account_id = l.household_id LEFT JOIN cooperatives c ON c.id = l.cooperative_id
         WHERE r.reservation_id = $1 ORDER BY r.line_no",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let allocations: Vec<(i32, String, NaiveDate, Option<AccountId>, Quantity)> = sqlx::query_as(
        "SELECT a.line_no, l.lot_code, l.harvest_date, l.household_id, a.quantity FROM allocations a JOIN lots l ON l.id = a.lot_id
         WHERE a.reservation_id = $1 ORDER BY a.line_no, l.harvest_date, l.created_at",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let lines = rows
        .into_iter()
        .map(
            |(line_no, listing_id, title, unit, quantity, unit_price, household, coop, name)| {
                ReservedLine {
                    line_no,
                    listing_id,
                    title,
                    unit,
                    quantity,
                    unit_price,
                    line_total: unit_price.times(quantity).unwrap_or(Vnd(i64::MAX)),
                    seller: match (household, coop) {
                        (Some(h), _) => SellerView {
                            kind: "household",
                            id: h.0,
                            name,
                        },
                        (_, c) => SellerView {
                            kind: "cooperative",
                            id: c.unwrap_or_default(),
                            name,
                        },
                    },
                    allocations: allocations
                        .iter()
                        .filter(|a| a.0 == line_no)
                        .map(|a| Allocation {
                            lot_code: a.1.clone(),
                            harvest_date: a.2,
                            household_id: a.3,
                            quantity: a.4,
                        })
                        .collect(),
                }
            },
        )
        .collect();
    Ok(ReservationView {
        id,
        status,
        expires_at,
        lines,
    })
}

/// Reserve lines all or nothing. The same id again answers the same reservation (200); the
/// same id with other lines is 422 `reservation_id_reused`.
#[utoipa::path(post, path = "/v1/internal/reservations", tag = "reservations", request_body = ReservationRequest,
    responses((status = 201, body = ReservationView), (status = 200, description = "Already made with this id", body = ReservationView),
        (status = 409, description = "insufficient_stock or listing_unavailable", body = nongsan_shared::error::ProblemSchema),
        (status = 422, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn create_reservation(
    State(app): State<AppState>,
    actor: Actor,
    Json(r): Json<ReservationRequest>,
) -> Result<(StatusCode, AxumJson<ReservationView>)> {
    require_service(&actor)?;
    check_request(&r)?;
    let ttl = r.ttl_secs.unwrap_or(900);
    let request = serde_json::to_value(&r.lines).map_err(anyhow::Error::from)?;
    // A sold-out listing answers at once, without queueing for its stock row: under a rush
    // for the last kilograms most requests end here. The check under the lock below decides.
    let new_id = sqlx::query_scalar::<_, bool>(
        "SELECT NOT EXISTS (SELECT 1 FROM reservations WHERE id = $1)",
    )
    .bind(r.id)
    .fetch_one(&app.pool)
    .await?;
    if new_id {
        let ids: Vec<uuid::Uuid> = r.lines.iter().map(|l| l.listing_id.0).collect();
        let available: Vec<(ListingId, Quantity, Quantity)> = sqlx::query_as(
            "SELECT listing_id, on_hand, reserved FROM stock WHERE listing_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&app.pool)
        .await?;
        for line in &r.lines {
            if let Some((_, on_hand, reserved)) = available.iter().find(|a| a.0 == line.listing_id)
            {
                let free = on_hand.checked_sub(*reserved).unwrap_or(Quantity::ZERO);
                if free < line.quantity {
                    return Err(ListingError::InsufficientStock {
                        listing: line.listing_id,
                        available: free,
                    });
                }
            }
        }
    }
    let mut tx = app.pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO reservations (id, status, request, expires_at) VALUES ($1, 'active', $2, now() + make_interval(secs => $3))
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(r.id)
    .bind(&request)
    .bind(f64::from(ttl))
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !inserted {
        let earlier: serde_json::Value =
            sqlx::query_scalar("SELECT request FROM reservations WHERE id = $1")
                .bind(r.id)
                .fetch_one(&mut *tx)
                .await?;
        if earlier != request {
            return Err(ListingError::field(
                "id",
                Invalid::new(
                    "reservation_id_reused",
                    "was used for a reservation with other lines",
                    "đã được dùng cho một lần giữ hàng khác",
                ),
            ));
        }
        return Ok((StatusCode::OK, AxumJson(load(&mut tx, r.id).await?)));
    }
    // Lock stock rows in one order (listing id) so concurrent reservations cannot deadlock.
    let mut order: Vec<usize> = (0..r.lines.len()).collect();
    order.sort_by_key(|&i| r.lines[i].listing_id);
    for i in order {
        let line = &r.lines[i];
        let listing: Option<(String, Quantity, Quantity, Vnd)> =
            sqlx::query_as("SELECT status, min_order, step, price_vnd FROM listings WHERE id = $1")
                .bind(line.listing_id)
                .fetch_optional(&mut *tx)
                .await?;
        let field = |f: &str| format!("lines[{i}].{f}");
        let Some((status, min_order, step, price)) = listing else {
            return Err(ListingError::field(
                field("listing_id"),
                Invalid::new(
                    "unknown_listing",
                    "is not a listing",
                    "không phải tin đăng bán",
                ),
            ));
        };
        if status != "active" {
            return Err(ListingError::conflict(
                "listing_unavailable",
                format!("Listing {} is not for sale now.", line.listing_id),
                format!("Tin {} hiện không bán.", line.listing_id),
            ));
        }
        let mut p = Problems::default();
        p.check(
            line.quantity < min_order,
            &field("quantity"),
            "below_minimum",
            &format!("must be at least the minimum order {min_order}"),
            &format!("phải ít nhất bằng số lượng tối thiểu {min_order}"),
        );
        p.check(
            !line.quantity.is_multiple_of(step),
            &field("quantity"),
            "off_step",
            &format!("must be a multiple of {step}"),
            &format!("phải là bội số của {step}"),
        );
        p.finish()?;
        apply(
            &mut tx,
            line.listing_id,
            &[Movement {
                listing: line.listing_id,
                lot: None,
                kind: "reservation",
                on_hand: Quantity::ZERO,
                reserved: line.quantity,
                reason: None,
                reservation: Some(r.id),
                actor: Some(&actor),
            }],
        )
        .await?;
        sqlx::query("INSERT INTO reservation_lines (reservation_id, line_no, listing_id, quantity, unit_price) VALUES ($1, $2, $3, $4, $5)")
            .bind(r.id)
            .bind(i32::try_from(i).unwrap_or(i32::MAX))
            .bind(line.listing_id)
            .bind(line.quantity)
            .bind(price)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    // Read back after the commit, so the stock rows are not held while the answer is built.
    let mut conn = app.pool.acquire().await?;
    Ok((StatusCode::CREATED, AxumJson(load(&mut conn, r.id).await?)))
}

/// A reservation.
#[utoipa::path(get, path = "/v1/internal/reservations/{id}", tag = "reservations", params(("id" = String, Path)),
    responses((status = 200, body = ReservationView), (status = 404, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn get_reservation(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<ReservationId>,
) -> Result<AxumJson<ReservationView>> {
    require_service(&actor)?;
    let mut conn = app.pool.acquire().await?;
    Ok(AxumJson(load(&mut conn, id).await?))
}

async fn lock_reservation(conn: &mut PgConnection, id: ReservationId) -> Result<String> {
    sqlx::query_scalar("SELECT status FROM reservations WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or(ListingError::NotFound("reservation"))
}

/// The lines of a reservation in `state`, within `only` when given, in listing order.
async fn lines_of(
    conn: &mut PgConnection,
    id: ReservationId,
    state: &str,
    only: Option<&[ListingId]>,
) -> Result<Vec<(i32, ListingId, Quantity)>> {
    let only: Option<Vec<uuid::Uuid>> = only.map(|o| o.iter().map(|l| l.0).collect());
    Ok(sqlx::query_as(
        "SELECT line_no, listing_id, quantity FROM reservation_lines
         WHERE reservation_id = $1 AND state = $2 AND ($3::uuid[] IS NULL OR listing_id = ANY($3))
         ORDER BY listing_id",
    )
    .bind(id)
    .bind(state)
    .bind(only)
    .fetch_all(conn)
    .await?)
}

async fn set_line_state(
    conn: &mut PgConnection,
    id: ReservationId,
    line_no: i32,
    state: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE reservation_lines SET state = $3 WHERE reservation_id = $1 AND line_no = $2",
    )
    .bind(id)
    .bind(line_no)
    .bind(state)
    .execute(conn)
    .await?;
    Ok(())
}

/// The reservation's status follows its lines: active while any is reserved, committed once
/// none is and some were sold, else `closed_as` (released or expired).
async fn refresh_status(conn: &mut PgConnection, id: ReservationId, closed_as: &str) -> Result<()> {
    sqlx::query(
        "UPDATE reservations SET
            status = CASE
                WHEN EXISTS (SELECT 1 FROM reservation_lines WHERE reservation_id = $1 AND state = 'reserved') THEN 'active'
                WHEN EXISTS (SELECT 1 FROM reservation_lines WHERE reservation_id = $1 AND state IN ('committed', 'returned')) THEN 'committed'
                ELSE $2 END,
            closed_at = CASE
                WHEN EXISTS (SELECT 1 FROM reservation_lines WHERE reservation_id = $1 AND state = 'reserved') THEN NULL
                ELSE COALESCE(closed_at, now()) END
         WHERE id = $1",
    )
    .bind(id)
    .bind(closed_as)
    .execute(conn)
    .await?;
    Ok(())
}

/// Turns reserved lines (all, or those of `only`'s listings) into a sale, filling each from
/// the listing's lots oldest harvest first. Committing again answers the same; lines that
/// were released or expired cannot be committed.
pub async fn commit(
    conn: &mut PgConnection,
    id: ReservationId,
    only: Option<&[ListingId]>,
    actor: Option<&Actor>,
) -> Result<()> {
    lock_reservation(conn, id).await?;
    let closed = lines_of(conn, id, "released", only).await?;
    if !closed.is_empty() {
        return Err(ListingError::conflict(
            "reservation_closed",
            "The reservation was released or expired; it cannot be committed.",
            "Lượt giữ hàng đã hủy hoặc hết hạn; không thể chốt.",
        ));
    }
    for (line_no, listing, quantity) in lines_of(conn, id, "reserved", only).await? {
        lock_stock(conn, listing).await?;
        let lots: Vec<(uuid::Uuid, Quantity)> = sqlx::query_as(
            "SELECT id, on_hand FROM lots WHERE listing_id = $1 AND on_hand > 0 ORDER BY harvest_date, created_at FOR UPDATE",
        )
        .bind(listing)
        .fetch_all(&mut *conn)
        .await?;
        let mut left = quantity;
        let mut moves = Vec::new();
        for (lot, on_hand) in lots {
            if !left.is_positive() {
                break;
            }
            let take = left.min(on_hand);
            left = left.checked_sub(take).unwrap_or(Quantity::ZERO);
            moves.push(Movement {
                listing,
                lot: Some(lot),
                kind: "sale",
                on_hand: -take,
                reserved: -take,
                reason: None,
                reservation: Some(id),
                actor,
            });
            sqlx::query("INSERT INTO allocations (reservation_id, line_no, lot_id, quantity) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(line_no)
                .bind(lot)
                .bind(take)
                .execute(&mut *conn)
                .await?;
        }
        if left.is_positive() {
            // Lots always sum to on-hand, and on-hand covers what is reserved.
            return Err(anyhow::anyhow!(
                "lots of listing {listing} do not cover its reserved stock"
            )
            .into());
        }
        apply(conn, listing, &moves).await?;
        set_line_state(conn, id, line_no, "committed").await?;
    }
    refresh_status(conn, id, "released").await
}

/// Gives reserved stock back (all lines, or those of `only`'s listings); `closed_as` is
/// `released` or `expired`. Releasing again answers the same. Sold lines stay sold: without
/// `only`, a reservation with sold lines cannot be released.
pub async fn release(
    conn: &mut PgConnection,
    id: ReservationId,
    closed_as: &'static str,
    only: Option<&[ListingId]>,
    actor: Option<&Actor>,
) -> Result<()> {
    lock_reservation(conn, id).await?;
    if only.is_none() && !lines_of(conn, id, "committed", None).await?.is_empty() {
        return Err(ListingError::conflict(
            "invalid_transition",
            "A committed reservation cannot be released; return the goods instead.",
            "Lượt giữ hàng đã chốt không thể hủy giữ; hãy trả hàng.",
        ));
    }
    for (line_no, listing, quantity) in lines_of(conn, id, "reserved", only).await? {
        apply(
            conn,
            listing,
            &[Movement {
                listing,
                lot: None,
                kind: "release",
                on_hand: Quantity::ZERO,
                reserved: -quantity,
                reason: Some(closed_as),
                reservation: Some(id),
                actor,
            }],
        )
        .await?;
        set_line_state(conn, id, line_no, "released").await?;
    }
    refresh_status(conn, id, closed_as).await
}

/// Gives back the stock of `only`'s listings whatever happened to it: reserved lines are
/// released, sold lines are returned to the lots they came from.
pub async fn give_back(
    conn: &mut PgConnection,
    id: ReservationId,
    only: &[ListingId],
    reason: &str,
    actor: Option<&Actor>,
) -> Result<()> {
    release(conn, id, "released", Some(only), actor).await?;
    for (line_no, listing, _) in lines_of(conn, id, "committed", Some(only)).await? {
        let lots: Vec<(uuid::Uuid, Quantity)> = sqlx::query_as(
            "SELECT lot_id, quantity FROM allocations WHERE reservation_id = $1 AND line_no = $2",
        )
        .bind(id)
        .bind(line_no)
        .fetch_all(&mut *conn)
        .await?;
        let moves: Vec<Movement> = lots
            .into_iter()
            .map(|(lot, q)| Movement {
                listing,
                lot: Some(lot),
                kind: "return",
                on_hand: q,
                reserved: Quantity::ZERO,
                reason: Some(reason),
                reservation: Some(id),
                actor,
            })
            .collect();
        apply(conn, listing, &moves).await?;
        set_line_state(conn, id, line_no, "returned").await?;
    }
    refresh_status(conn, id, "released").await
}

/// Commit a reservation: the stock is sold.
#[utoipa::path(post, path = "/v1/internal/reservations/{id}/commit", tag = "reservations", params(("id" = String, Path)),
    responses((status = 200, body = ReservationView), (status = 409, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn commit_reservation(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<ReservationId>,
) -> Result<AxumJson<ReservationView>> {
    require_service(&actor)?;
    let mut tx = app.pool.begin().await?;
    commit(&mut tx, id, None, Some(&actor)).await?;
    let view = load(&mut tx, id).await?;
    tx.commit().await?;
    Ok(AxumJson(view))
}

/// Release a reservation: the stock is available again.
#[utoipa::path(post, path = "/v1/internal/reservations/{id}/release", tag = "reservations", params(("id" = String, Path)),
    responses((status = 200, body = ReservationView), (status = 409, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn release_reservation(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<ReservationId>,
) -> Result<AxumJson<ReservationView>> {
    require_service(&actor)?;
    let mut tx = app.pool.begin().await?;
    release(&mut tx, id, "released", None, Some(&actor)).await?;
    let view = load(&mut tx, id).await?;
    tx.commit().await?;
    Ok(AxumJson(view))
}

/// Releases expired reservations, one transaction each; returns how many.
pub async fn sweep_once(pool: &PgPool) -> Result<usize> {
    let due: Vec<ReservationId> = sqlx::query_scalar("SELECT id FROM reservations WHERE status = 'active' AND expires_at <= now() ORDER BY expires_at LIMIT 100")
        .fetch_all(pool)
        .await?;
    let mut n = 0;
    for id in due {
        let mut tx = pool.begin().await?;
        // Another sweeper (or a commit) may have got there first.
        let still_due: bool = sqlx::query_scalar("SELECT status = 'active' AND expires_at <= now() FROM reservations WHERE id = $1 FOR UPDATE SKIP LOCKED")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or(false);
        if still_due {
            let reserved: Vec<ListingId> = lines_of(&mut tx, id, "reserved", None)
                .await?
                .into_iter()
                .map(|l| l.1)
                .collect();
            release(&mut tx, id, "expired", Some(&reserved), None).await?;
            n += 1;
        }
        tx.commit().await?;
    }
    Ok(n)
}

/// Runs the sweeper every `every` until aborted.
pub async fn run_sweeper(pool: PgPool, every: Duration) {
    let mut failures = 0u32;
    loop {
        match sweep_once(&pool).await {
            Ok(n) => {
                failures = 0;
                if n > 0 {
                    tracing::info!(expired = n, "released expired reservations");
                }
            }
            Err(e) => {
                failures += 1;
                if worth_logging(failures) {
                    tracing::warn!(error = %e, "reservation sweeper failed; retrying");
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// The part of an order event the listing service acts on.
#[derive(Debug, Deserialize)]
struct OrderStock {
    reservation_id: ReservationId,
    listing_ids: Vec<ListingId>,
}

/// `order.paid` and a cash-on-delivery `order.confirmed`: the order's lines are sold.
#[derive(Debug, Clone, Copy)]
pub struct CommitOrderLines;

#[async_trait::async_trait]
impl nongsan_shared::events::Handler for CommitOrderLines {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &nongsan_shared::events::Envelope,
    ) -> anyhow::Result<()> {
        let o: OrderStock = serde_json::from_value(event.data.clone())?;
        commit(tx, o.reservation_id, Some(&o.listing_ids), None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// `order.cancelled` (cancelled, declined, expired) and `order.returned`: the order's stock
/// comes back, released if it was only reserved, returned to its lots if it was sold.
#[derive(Debug, Clone, Copy)]
pub struct GiveBackOrderLines;

#[async_trait::async_trait]
impl nongsan_shared::events::Handler for GiveBackOrderLines {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &nongsan_shared::events::Envelope,
    ) -> anyhow::Result<()> {
        let o: OrderStock = serde_json::from_value(event.data.clone())?;
        give_back(
            tx,
            o.reservation_id,
            &o.listing_ids,
            &event.event_type,
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
    }
}
