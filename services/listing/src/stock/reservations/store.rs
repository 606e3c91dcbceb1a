//! Reservations in PostgreSQL: reading one, committing it into a sale filled from lots oldest
//! harvest first, releasing it, and giving back what a cancelled or returned order held.

use chrono::{DateTime, NaiveDate, Utc};
use nongsan_shared::{AccountId, ListingId, Quantity, ReservationId, Vnd, auth::Actor};
use sqlx::PgConnection;

use crate::{
    error::{ListingError, Result},
    stock::{
        levels::{Movement, apply, lock_in_order, lock_stock},
        reservations::model::{Allocation, ReservationView, ReservedLine},
    },
};
use nongsan_shared::contracts::{
    reservations::ReservationStatus,
    sellers::{Seller, SellerKind},
};

/// A listing's seller: its household, else its cooperative.
pub(crate) fn seller(
    household: Option<AccountId>,
    cooperative: Option<uuid::Uuid>,
    name: String,
) -> Seller {
    match (household, cooperative) {
        (Some(h), _) => Seller {
            kind: SellerKind::Household,
            id: h.0,
            name,
        },
        (_, c) => Seller {
            kind: SellerKind::Cooperative,
            id: c.unwrap_or_default(),
            name,
        },
    }
}

/// Loads a reservation with its lines, sellers and allocations.
pub async fn load(conn: &mut PgConnection, id: ReservationId) -> Result<ReservationView> {
    let (status, expires_at): (ReservationStatus, DateTime<Utc>) =
        sqlx::query!(
            r#"SELECT status AS "status: ReservationStatus", expires_at FROM reservations WHERE id = $1"#,
            id as _,
        )
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| (r.status, r.expires_at))
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
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query!(
        r#"SELECT r.line_no, r.listing_id AS "listing_id: ListingId", l.title, l.unit_code, r.quantity AS "quantity: Quantity",
            r.unit_price AS "unit_price: Vnd", l.household_id AS "household_id: AccountId", l.cooperative_id,
            COALESCE(h.name, c.name) AS "seller_name!", l.gtin
         FROM reservation_lines r JOIN listings l ON l.id = r.listing_id
         LEFT JOIN households h ON h.account_id = l.household_id LEFT JOIN cooperatives c ON c.id = l.cooperative_id
         WHERE r.reservation_id = $1 ORDER BY r.line_no"#,
        id as _,
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| {
        (
            r.line_no,
            r.listing_id,
            r.title,
            r.unit_code,
            r.quantity,
            r.unit_price,
            r.household_id,
            r.cooperative_id,
            r.seller_name,
            r.gtin,
        )
    })
    .collect();
    type AllocationRow = (
        i32,
        String,
        NaiveDate,
        Option<AccountId>,
        Quantity,
        uuid::Uuid,
    );
    let allocations: Vec<AllocationRow> = sqlx::query!(
        r#"SELECT a.line_no, l.lot_code, l.harvest_date, l.household_id AS "household_id: AccountId", a.quantity AS "quantity: Quantity", l.id
         FROM allocations a JOIN lots l ON l.id = a.lot_id
         WHERE a.reservation_id = $1 ORDER BY a.line_no, l.harvest_date, l.created_at"#,
        id as _,
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|a| (a.line_no, a.lot_code, a.harvest_date, a.household_id, a.quantity, a.id))
    .collect();
    let lines = rows
        .into_iter()
        .map(
            |(
                line_no,
                listing_id,
                title,
                unit,
                quantity,
                unit_price,
                household,
                coop,
                name,
                gtin,
            )| {
                ReservedLine {
                    line_no,
                    listing_id,
                    title,
                    unit,
                    quantity,
                    unit_price,
                    line_total: unit_price.times(quantity).unwrap_or(Vnd(i64::MAX)),
                    seller: seller(household, coop, name),
                    gtin,
                    allocations: allocations
                        .iter()
                        .filter(|a| a.0 == line_no)
                        .map(|a| Allocation {
                            lot_id: Some(a.5),
                            trace_url: None,
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

async fn lock_reservation(conn: &mut PgConnection, id: ReservationId) -> Result<String> {
    sqlx::query_scalar!(
        "SELECT status FROM reservations WHERE id = $1 FOR UPDATE",
        id as _
    )
    .fetch_optional(conn)
    .await?
    .ok_or(ListingError::NotFound("reservation"))
}

/// Locks what a batch of order events handled in one transaction touches: first their
/// reservations, then their listings' stock rows, each in id order. One event's handling
/// takes its reservation and then its stock rows in listing order; a batch taking them event
/// after event could hold a later listing while a checkout holds an earlier one and waits
/// for it: a deadlock, which PostgreSQL ends by failing one of them (the checkout's
/// reservation answered 500 in the ledger's random walk).
pub async fn lock_batch(
    conn: &mut PgConnection,
    reservations: &[ReservationId],
    listings: &[ListingId],
) -> Result<()> {
    let mut ids: Vec<uuid::Uuid> = reservations.iter().map(|r| r.0).collect();
    ids.sort_unstable();
    ids.dedup();
    sqlx::query_scalar!(
        "SELECT id FROM reservations WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &ids,
    )
    .fetch_all(&mut *conn)
    .await?;
    lock_in_order(conn, listings).await
}

/// The lines of a reservation in `state`, within `only` when given, in listing order.
pub(crate) async fn lines_of(
    conn: &mut PgConnection,
    id: ReservationId,
    state: &str,
    only: Option<&[ListingId]>,
) -> Result<Vec<(i32, ListingId, Quantity)>> {
    let only: Option<Vec<uuid::Uuid>> = only.map(|o| o.iter().map(|l| l.0).collect());
    Ok(sqlx::query!(
        r#"SELECT line_no, listing_id AS "listing_id: ListingId", quantity AS "quantity: Quantity" FROM reservation_lines
         WHERE reservation_id = $1 AND state = $2 AND ($3::uuid[] IS NULL OR listing_id = ANY($3))
         ORDER BY listing_id"#,
        id as _,
        state,
        only.as_deref(),
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|l| (l.line_no, l.listing_id, l.quantity))
    .collect())
}

async fn set_line_state(
    conn: &mut PgConnection,
    id: ReservationId,
    line_no: i32,
    state: &str,
) -> Result<()> {
    sqlx::query!(
        "UPDATE reservation_lines SET state = $3 WHERE reservation_id = $1 AND line_no = $2",
        id as _,
        line_no,
        state,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The reservation's status follows its lines: active while any is reserved, committed once
/// none is and some were sold, else `closed_as` (released or expired).
async fn refresh_status(conn: &mut PgConnection, id: ReservationId, closed_as: &str) -> Result<()> {
    sqlx::query!(
        "UPDATE reservations SET
            status = CASE
                WHEN EXISTS (SELECT 1 FROM reservation_lines WHERE reservation_id = $1 AND state = 'reserved') THEN 'active'
                WHEN EXISTS (SELECT 1 FROM reservation_lines WHERE reservation_id = $1 AND state IN ('committed', 'returned')) THEN 'committed'
                ELSE $2 END,
            closed_at = CASE
                WHEN EXISTS (SELECT 1 FROM reservation_lines WHERE reservation_id = $1 AND state = 'reserved') THEN NULL
                ELSE COALESCE(closed_at, now()) END
         WHERE id = $1",
        id as _,
        closed_as,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Turns reserved lines (all, or those of `only`'s listings) into a sale, filling each from
/// the listing's lots oldest harvest first. Committing again answers the same; lines that
/// were released or expired cannot be committed. Answers how many lines it sold now.
pub async fn commit(
    conn: &mut PgConnection,
    id: ReservationId,
    only: Option<&[ListingId]>,
    actor: Option<&Actor>,
) -> Result<usize> {
    lock_reservation(conn, id).await?;
    let closed = lines_of(conn, id, "released", only).await?;
    if !closed.is_empty() {
        return Err(ListingError::conflict(
            "reservation_closed",
            "The reservation was released or expired; it cannot be committed.",
            "Lượt giữ hàng đã hủy hoặc hết hạn; không thể chốt.",
        ));
    }
    let reserved = lines_of(conn, id, "reserved", only).await?;
    let sold = reserved.len();
    for (line_no, listing, quantity) in reserved {
        lock_stock(conn, listing).await?;
        let lots: Vec<(uuid::Uuid, Quantity)> = sqlx::query!(
            r#"SELECT id, on_hand AS "on_hand: Quantity" FROM lots WHERE listing_id = $1 AND on_hand > 0 ORDER BY harvest_date, created_at FOR UPDATE"#,
            listing as _,
        )
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|l| (l.id, l.on_hand))
        .collect();
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
            sqlx::query!(
                "INSERT INTO allocations (reservation_id, line_no, lot_id, quantity) VALUES ($1, $2, $3, $4)",
                id as _,
                line_no,
                lot,
                take as _,
            )
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
    refresh_status(conn, id, "released").await?;
    Ok(sold)
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
    // Its releases and its returns touch the same listings: all locked first, in id order,
    // after the reservation (the order commit and release take them in).
    lock_reservation(conn, id).await?;
    lock_in_order(conn, only).await?;
    release(conn, id, "released", Some(only), actor).await?;
    for (line_no, listing, _) in lines_of(conn, id, "committed", Some(only)).await? {
        let lots: Vec<(uuid::Uuid, Quantity)> = sqlx::query!(
            r#"SELECT lot_id, quantity AS "quantity: Quantity" FROM allocations WHERE reservation_id = $1 AND line_no = $2"#,
            id as _,
            line_no,
        )
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|a| (a.lot_id, a.quantity))
        .collect();
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
