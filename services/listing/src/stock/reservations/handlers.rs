//! The internal reservation endpoints the order service calls.

use axum::{Json as AxumJson, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use nongsan_shared::{
    AccountId, ListingId, Quantity, ReservationId, Vnd,
    auth::{Actor, Role},
    contracts::reservations::ReservationStatus,
    events,
    http::{Json, Path},
    invalid::Invalid,
    money::MAX_VND,
};

use crate::{
    app::{App, AppState},
    catalog::cache::Ticket,
    error::{ListingError, Problems, Result},
    stock::{
        levels::{Announce, Locked, Movement, NewLines, StockLevels, apply_locked},
        reservations::{
            model::{ReservationRequest, ReservationView, ReservedLine, check_request},
            store::{commit, load, release, seller},
        },
    },
};

/// Only the order service holds, commits and releases stock: an operator who could would
/// move stock outside any order.
fn require_service(actor: &Actor) -> Result<()> {
    if actor.role == Role::Service {
        Ok(())
    } else {
        Err(ListingError::Forbidden)
    }
}

/// The order service, or an operator looking into a reservation.
fn require_service_or_operator(actor: &Actor) -> Result<()> {
    if matches!(actor.role, Role::Service | Role::Operator) {
        Ok(())
    } else {
        Err(ListingError::Forbidden)
    }
}

/// Reserve lines all or nothing. The same id again answers the same reservation (200); the
/// same id with other lines is 422 `reservation_id_reused`.
#[utoipa::path(post, path = "/v1/internal/reservations", tag = "reservations", request_body = ReservationRequest,
    responses((status = 201, body = ReservationView), (status = 200, description = "Already made with this id", body = ReservationView),
        (status = 403, description = "Not the order service", body = nongsan_shared::error::ProblemSchema),
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
    // It runs when this process keeps a line's listing short of what the line asks (the
    // level the listing pages keep, which this check and the locked path below keep too), or
    // keeps no levels at all; otherwise it would cost every reservation a round trip for
    // nothing, as the locked path finds short stock and a used id too. A reservation id
    // already used reads no stock and takes no lock here: its answer is the reservation
    // (without this check, the locked statement finds it, having taken the stock rows'
    // locks: a retry, which is rare).
    let ids: Vec<uuid::Uuid> = r.lines.iter().map(|l| l.listing_id.0).collect();
    // One connection for the check and the reservation's transaction, given back without a
    // round trip once answered (`HotConn::release`).
    let mut conn = app.hot.acquire().await?;
    let short = !app.views.keeps_levels()
        || r.lines.iter().any(|l| {
            app.views
                .level(l.listing_id)
                .is_some_and(|available| available < l.quantity)
        });
    if short {
        // Taken before the levels are read: the levels read are kept unless their listing
        // changed meanwhile, so that a level found enough no longer sends requests here.
        let tickets: Vec<Ticket> = r
            .lines
            .iter()
            .map(|l| app.views.level_ticket(l.listing_id))
            .collect();
        let read = sqlx::query!(
            r#"SELECT m.used AS "used!", s.listing_id AS "listing_id?: ListingId", s.on_hand AS "on_hand?: Quantity", s.reserved AS "reserved?: Quantity",
                 l.status AS "status?"
               FROM (SELECT EXISTS (SELECT 1 FROM reservations WHERE id = $2) AS used) m
               LEFT JOIN stock s ON NOT m.used AND s.listing_id = ANY((SELECT $1::uuid[])::uuid[])
               LEFT JOIN listings l ON l.id = s.listing_id"#,
            &ids,
            r.id as _,
        )
        .fetch_all(&mut *conn)
        .await?;
        if read.first().is_some_and(|row| row.used) {
            return made_before(&app, &mut conn, &r, &request).await;
        }
        // A listing not for sale is refused as such under the locks below, whatever its stock:
        // its stock is not told.
        let for_sale = read
            .iter()
            .all(|s| s.status.as_deref().is_none_or(|status| status == "active"));
        let available: Vec<(ListingId, Quantity)> = read
            .into_iter()
            .filter_map(|s| {
                Some((
                    s.listing_id?,
                    StockLevels::available_of(s.on_hand?, s.reserved?),
                ))
            })
            .collect();
        for ticket in &tickets {
            if let Some((_, free)) = available.iter().find(|a| a.0 == ticket.listing()) {
                app.views.put_level(ticket, *free);
            }
        }
        // As under the locks, a listing unknown or not for sale decides before short stock:
        // then the locked path answers.
        let all_known = r
            .lines
            .iter()
            .all(|l| available.iter().any(|a| a.0 == l.listing_id));
        if let Some(refused) = first_short(&r, &available).filter(|_| for_sale && all_known) {
            conn.release();
            return Err(refused);
        }
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    // The reservation's row, then every line's listing with its stock row, in one statement.
    // The rows are locked in one order (listing id) so concurrent reservations cannot
    // deadlock: one statement whatever the number of lines. The same id again (a retried
    // request) inserts nothing, and waits for a first request still running to end.
    // `ANY((SELECT $1)::uuid[])` hides the array's length from the planner: with it known, every
    // custom plan looks cheaper than the generic one, and PostgreSQL would plan this join at
    // every call (0.7 ms, measured with pg_stat_statements) instead of once per connection.
    let rows = sqlx::query!(
        r#"WITH made AS (
             INSERT INTO reservations (id, status, request, expires_at, holder_id) VALUES ($2, 'active', $3, now() + make_interval(secs => $4), $5)
             ON CONFLICT (id) DO NOTHING RETURNING expires_at)
           SELECT (SELECT expires_at FROM made) AS "made_expiring?",
            s.listing_id AS "listing_id: ListingId", s.on_hand AS "on_hand: Quantity", s.reserved AS "reserved: Quantity",
            l.low_stock_threshold AS "threshold: Quantity", l.status, l.min_order AS "min_order: Quantity", l.step AS "step: Quantity",
            l.price_vnd AS "price_vnd: Vnd", l.title, l.unit_code, l.household_id AS "household_id: AccountId", l.cooperative_id,
            COALESCE(h.name, c.name) AS "seller_name!", l.gtin
           FROM stock s JOIN listings l ON l.id = s.listing_id
           LEFT JOIN households h ON h.account_id = l.household_id LEFT JOIN cooperatives c ON c.id = l.cooperative_id
           WHERE s.listing_id = ANY((SELECT $1::uuid[])::uuid[]) ORDER BY s.listing_id FOR UPDATE OF s"#,
        &ids,
        r.id as _,
        &request,
        f64::from(ttl),
        r.holder as _,
    )
    .fetch_all(&mut *tx)
    .await?;
    let made = match rows.first().map(|row| row.made_expiring) {
        // Made by a request that committed after the check above (or ran at the same time,
        // and was waited for).
        Some(None) => return made_before(&app, &mut tx, &r, &request).await,
        // No row: none of the listings exists, and the first line is refused below (listings
        // are never deleted, so no reservation made before can be for them).
        made => made.flatten(),
    };
    // The lines are checked in the order their rows were locked: a listing that does not
    // exist or is not for sale decides first (whatever its stock, which is not told), then
    // short stock, then every line's quantity problems together. The answer keeps the
    // request's order, built from what was read under the locks, not read back.
    let mut order: Vec<usize> = (0..r.lines.len()).collect();
    order.sort_by_key(|&i| r.lines[i].listing_id);
    let mut found = Vec::with_capacity(order.len());
    for i in order {
        let line = &r.lines[i];
        // Every listing has its stock row from its creation: no row, no listing.
        let Some(listing) = rows.iter().find(|s| s.listing_id == line.listing_id) else {
            return Err(ListingError::field(
                format!("lines[{i}].listing_id"),
                Invalid::new(
                    "unknown_listing",
                    "is not a listing",
                    "không phải tin đăng bán",
                ),
            ));
        };
        if listing.status != "active" {
            return Err(ListingError::conflict(
                "listing_unavailable",
                format!("Listing {} is not for sale now.", line.listing_id),
                format!("Tin {} hiện không bán.", line.listing_id),
            ));
        }
        found.push((i, line, listing));
    }
    // Then short stock, in the request's order, as the check without a lock decides it: a
    // request gets the same answer whichever way it went. The levels read under the locks
    // are kept (no change can come before this writer's own).
    let levels: Vec<(ListingId, Quantity)> = rows
        .iter()
        .map(|s| {
            (
                s.listing_id,
                StockLevels::available_of(s.on_hand, s.reserved),
            )
        })
        .collect();
    for (listing, free) in &levels {
        app.views.put_level_locked(*listing, *free);
    }
    if let Some(refused) = first_short(&r, &levels) {
        return Err(refused);
    }
    let mut reserved: Vec<Option<ReservedLine>> = r.lines.iter().map(|_| None).collect();
    let mut locked = Vec::with_capacity(found.len());
    let mut moves = Vec::with_capacity(found.len());
    let mut p = Problems::default();
    let mut basket_total = Some(Vnd::ZERO);
    for (i, line, listing) in found {
        let field = |f: &str| format!("lines[{i}].{f}");
        let (min_order, step, price) = (listing.min_order, listing.step, listing.price_vnd);
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
        // No line, and no basket, may cost more than the platform takes in one amount.
        let line_total = price.times(line.quantity).filter(|t| t.get() <= MAX_VND);
        basket_total = basket_total
            .zip(line_total)
            .and_then(|(sum, t)| sum.checked_add(t))
            .filter(|sum| sum.get() <= MAX_VND);
        p.check(
            line_total.is_none(),
            &field("quantity"),
            "total_too_large",
            "would cost more than 100,000,000,000 đồng",
            "sẽ có giá trị hơn 100.000.000.000 đồng",
        );
        locked.push(Locked {
            listing: line.listing_id,
            on_hand: listing.on_hand,
            reserved: listing.reserved,
            threshold: listing.threshold,
        });
        moves.push(Movement {
            listing: line.listing_id,
            lot: None,
            kind: "reservation",
            on_hand: Quantity::ZERO,
            reserved: line.quantity,
            reason: None,
            reservation: Some(r.id),
            actor: Some(&actor),
        });
        if let Some(slot) = reserved.get_mut(i) {
            *slot = Some(ReservedLine {
                line_no: i32::try_from(i).unwrap_or(i32::MAX),
                listing_id: line.listing_id,
                title: listing.title.clone(),
                unit: listing.unit_code.clone(),
                quantity: line.quantity,
                unit_price: price,
                line_total: line_total.unwrap_or(Vnd::ZERO),
                seller: seller(
                    listing.household_id,
                    listing.cooperative_id,
                    listing.seller_name.clone(),
                ),
                gtin: listing.gtin.clone(),
                allocations: Vec::new(),
            });
        }
    }
    p.check(
        basket_total.is_none() && p.is_empty(),
        "lines",
        "total_too_large",
        "would cost more than 100,000,000,000 đồng together",
        "tổng giá trị sẽ hơn 100.000.000.000 đồng",
    );
    p.finish()?;
    let expires_at =
        made.ok_or_else(|| anyhow::anyhow!("a reservation with listings but no row made"))?;
    // The reservation announces its levels itself once committed ([`reserved_answer`]): the
    // hottest write of the marketplace takes no turn on PostgreSQL's notification lock. Its
    // lines, and with a holder that holder's share of each listing, go in the same statement
    // as its movements.
    let lines: Vec<&ReservedLine> = reserved.iter().flatten().collect();
    let new_lines = NewLines {
        reservation: r.id,
        lines: &lines,
        holder: r.holder,
        share_percent: i32::try_from(app.max_hold_share_percent).unwrap_or(100),
    };
    let (_, over) = apply_locked(
        &mut tx,
        &locked,
        &moves,
        Announce::ByCaller,
        Some(new_lines),
    )
    .await?;
    if let Some(i) = r.lines.iter().position(|l| over.contains(&l.listing_id)) {
        let share = app.max_hold_share_percent;
        return Err(ListingError::field(
            format!("lines[{i}].quantity"),
            Invalid::new(
                "hold_limit",
                format!(
                    "would hold more than {share}% of this listing's stock in orders its seller has not confirmed"
                ),
                format!("vượt quá {share}% hàng của tin này trong các đơn người bán chưa xác nhận"),
            ),
        ));
    }
    let answer = reserved_answer(&app, tx, &r, expires_at, reserved).await?;
    // Committed: given back at once. Every early return above drops it instead, which sends
    // the rollback its transaction queued before the connection is used again.
    conn.release();
    Ok(answer)
}

/// The first line, in the request's order, that asks more than its listing has free
/// (`free`: each listing's available stock as read), as its refusal.
fn first_short(r: &ReservationRequest, free: &[(ListingId, Quantity)]) -> Option<ListingError> {
    r.lines.iter().find_map(|line| {
        let (_, available) = free.iter().find(|(id, _)| *id == line.listing_id)?;
        (*available < line.quantity).then_some(ListingError::InsufficientStock {
            listing: line.listing_id,
            available: *available,
        })
    })
}

/// The answer to a reservation id already used: the reservation made with it, when the lines
/// are the same; `reservation_id_reused` when not.
async fn made_before(
    app: &App,
    conn: &mut sqlx::PgConnection,
    r: &ReservationRequest,
    request: &serde_json::Value,
) -> Result<(StatusCode, AxumJson<ReservationView>)> {
    let earlier = sqlx::query_scalar!("SELECT request FROM reservations WHERE id = $1", r.id as _)
        .fetch_one(&mut *conn)
        .await?;
    if earlier != *request {
        return Err(ListingError::field(
            "id",
            Invalid::new(
                "reservation_id_reused",
                "was used for a reservation with other lines",
                "đã được dùng cho một lần giữ hàng khác",
            ),
        ));
    }
    // The first attempt may have committed and stopped before announcing (a caller that gave
    // up): announcing again costs a forgotten page at most.
    let _announce = Announcement::of(app, r);
    Ok((StatusCode::OK, AxumJson(load(conn, r.id).await?)))
}

/// Commits a new reservation, announces its listings' new levels (their pages forgotten here
/// at once, in the other listing processes soon) and its `stock.changed` to this process's
/// relay, and answers it.
async fn reserved_answer(
    app: &App,
    tx: sqlx::Transaction<'_, sqlx::Postgres>,
    r: &ReservationRequest,
    expires_at: DateTime<Utc>,
    reserved: Vec<Option<ReservedLine>>,
) -> Result<(StatusCode, AxumJson<ReservationView>)> {
    // Announced however this ends, once the commit was sent: a caller that stops waiting
    // (a timeout, a buyer gone) drops this future at the commit, which PostgreSQL may still
    // complete. An announcement of a commit that failed only forgets pages.
    let _announce = Announcement::of(app, r);
    tx.commit().await?;
    // Tests lose the answer of a reservation made here.
    nongsan_shared::failpoint::hit("reservation.after_commit")?;
    Ok((
        StatusCode::CREATED,
        AxumJson(ReservationView {
            id: r.id,
            status: ReservationStatus::Active,
            expires_at,
            lines: reserved.into_iter().flatten().collect(),
        }),
    ))
}

/// A reservation.
#[utoipa::path(get, path = "/v1/internal/reservations/{id}", tag = "reservations", params(("id" = String, Path)),
    responses((status = 200, body = ReservationView), (status = 404, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn get_reservation(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<ReservationId>,
) -> Result<AxumJson<ReservationView>> {
    require_service_or_operator(&actor)?;
    let mut conn = app.pool.acquire().await?;
    let mut view = load(&mut conn, id).await?;
    with_trace_links(&app.trace_base, &mut view);
    Ok(AxumJson(view))
}

/// Gives each lot that filled a line its traceability link.
fn with_trace_links(base: &str, view: &mut ReservationView) {
    for line in &mut view.lines {
        for a in &mut line.allocations {
            if let Some(lot) = a.lot_id {
                a.trace_url = Some(nongsan_shared::gs1::lot_link(
                    base,
                    line.gtin.as_deref(),
                    &a.lot_code,
                    lot,
                    a.harvest_date,
                ));
            }
        }
    }
}

/// Commit a reservation: the stock is sold.
#[utoipa::path(post, path = "/v1/internal/reservations/{id}/commit", tag = "reservations", params(("id" = String, Path)),
    responses((status = 200, body = ReservationView), (status = 403, description = "Not the order service", body = nongsan_shared::error::ProblemSchema),
        (status = 409, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
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
    forget_pages(&app, &view);
    Ok(AxumJson(view))
}

/// Release a reservation: the stock is available again.
#[utoipa::path(post, path = "/v1/internal/reservations/{id}/release", tag = "reservations", params(("id" = String, Path)),
    responses((status = 200, body = ReservationView), (status = 403, description = "Not the order service", body = nongsan_shared::error::ProblemSchema),
        (status = 409, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
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
    forget_pages(&app, &view);
    Ok(AxumJson(view))
}

/// The listings' kept pages show their stock: forgotten once the change is committed, so that
/// the checkout's next read shows it (other processes learn of it by notification).
fn forget_pages(app: &AppState, view: &ReservationView) {
    for line in &view.lines {
        app.views.forget(line.listing_id);
    }
}

/// Announces a reservation's listings
/// ([`ViewCache::announce`](crate::catalog::cache::ViewCache::announce)) and wakes this
/// process's relay when dropped: on every way out of the code after its commit was sent, a
/// cancelled future's included.
struct Announcement<'a> {
    app: &'a App,
    listings: Vec<ListingId>,
}

impl<'a> Announcement<'a> {
    fn of(app: &'a App, r: &ReservationRequest) -> Self {
        Self {
            app,
            listings: r.lines.iter().map(|l| l.listing_id).collect(),
        }
    }
}

impl Drop for Announcement<'_> {
    fn drop(&mut self) {
        for id in &self.listings {
            self.app.views.announce(*id);
        }
        events::committed(crate::NAME);
    }
}
