//! Checkouts in PostgreSQL: storing a checkout with one order per seller (and
//! `order.placed` per order), reading whose a checkout is, marking one failed or expired.

use chrono::{DateTime, SubsecRound, Utc};
use nongsan_shared::{AccountId, CheckoutId, OrderId, Text, Vnd, events};
use sqlx::PgConnection;

use nongsan_shared::contracts::{
    events::{EventType, OrderEvent},
    orders::OrderStatus,
    reservations::{ReservationView, ReservedLine},
    sellers::Seller,
};

use super::request::{NewCheckout, PaymentMethod};
use crate::{
    error::{OrderError, Result},
    idempotency::Claim,
    views::{CheckoutView, Delivery, OrderLine, OrderView},
};

/// A checkout about to be stored: what the saga decided besides the request.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    /// The checkout's id (also its reservation's).
    pub id: CheckoutId,
    /// Who checks out.
    pub buyer: AccountId,
    /// The delivery fee of each seller's order.
    pub fee: Vnd,
    /// When it expires unpaid (or, cash on delivery, unconfirmed).
    pub expires_at: DateTime<Utc>,
}

/// The checkout and one order per seller, in one transaction, with `order.placed` per order.
/// With `answers`, the checkout's view is also stored there as the key's answer (when the
/// view is the whole answer: no payment to open), and returned as it was stored.
pub async fn insert_checkout(
    hot: &nongsan_shared::db::HotPool,
    at: Placement,
    c: &NewCheckout,
    reservation: &ReservationView,
    answers: Option<&Claim>,
) -> Result<(CheckoutView, Option<serde_json::Value>)> {
    let Placement {
        id,
        buyer,
        fee,
        expires_at,
    } = at;
    // Group lines by seller, in the order sellers first appear.
    let mut sellers: Vec<(&Seller, Vec<&ReservedLine>)> = Vec::new();
    for line in &reservation.lines {
        match sellers.iter_mut().find(|(s, _)| **s == line.seller) {
            Some((_, lines)) => lines.push(line),
            None => sellers.push((&line.seller, vec![line])),
        }
    }
    let sum = |lines: &[&ReservedLine]| {
        lines
            .iter()
            .try_fold(Vnd::ZERO, |acc, l| acc.checked_add(l.line_total))
    };
    let items_total = sum(&reservation.lines.iter().collect::<Vec<_>>())
        .ok_or_else(|| anyhow::anyhow!("total overflow"))?;
    let delivery_total = Vnd(fee
        .get()
        .saturating_mul(i64::try_from(sellers.len()).unwrap_or(i64::MAX)));
    let grand_total = items_total
        .checked_add(delivery_total)
        .ok_or_else(|| anyhow::anyhow!("total overflow"))?;
    let status = if c.payment_method == PaymentMethod::Cod {
        OrderStatus::Placed
    } else {
        OrderStatus::PendingPayment
    };
    let d = &c.delivery;
    let delivery = Delivery {
        province_code: d.province_code().to_owned(),
        commune_code: d.commune_code().to_owned(),
        street: d.street().to_owned(),
        recipient_name: d.recipient_name().to_owned(),
        recipient_phone: d.recipient_phone().clone(),
    };
    // When the checkout and its orders were made, as stored (PostgreSQL keeps microseconds):
    // the answer stored with them carries it, so it is chosen before the statement, by this
    // process's clock as `expires_at` is (later changes stamp `updated_at` with the
    // database's: the hosts' clocks are expected to agree, as NTP keeps them).
    let at = Utc::now().trunc_subsecs(6);
    let mut orders = OrderRows::default();
    let mut rows = LineRows::default();
    let mut placed = Vec::with_capacity(sellers.len());
    let mut views = Vec::with_capacity(sellers.len());
    for (seller, lines) in &sellers {
        let order = OrderId::new();
        let items = sum(lines).ok_or_else(|| anyhow::anyhow!("total overflow"))?;
        let total = items
            .checked_add(fee)
            .ok_or_else(|| anyhow::anyhow!("total overflow"))?;
        orders.id.push(order.0);
        orders.seller_kind.push(seller.kind.as_str().to_owned());
        orders.seller_id.push(seller.id);
        orders.seller_name.push(seller.name.clone());
        orders.items.push(items.get());
        orders.total.push(total.get());
        for (n, l) in lines.iter().enumerate() {
            rows.order.push(order.0);
            rows.line_no.push(i32::try_from(n).unwrap_or(i32::MAX));
            rows.listing.push(l.listing_id.0);
            rows.title.push(l.title.clone());
            rows.unit.push(l.unit.clone());
            rows.quantity.push(l.quantity.as_decimal());
            rows.unit_price.push(l.unit_price.get());
            rows.line_total.push(l.line_total.get());
        }
        let event = OrderEvent {
            order_id: order,
            checkout_id: id,
            reservation_id: reservation.id,
            listing_ids: lines.iter().map(|l| l.listing_id).collect(),
            buyer_id: buyer,
            seller: (*seller).clone(),
            from: None,
            status,
            action: None,
            reason: None,
            payment_method: c.payment_method,
            total_vnd: total,
            cash_collected: false,
        };
        placed.push((EventType::OrderPlaced, order.to_string(), 1, event));
        views.push(OrderView {
            id: order,
            checkout_id: id,
            buyer_id: buyer,
            seller: (*seller).clone(),
            status,
            payment_method: c.payment_method,
            items_total: items,
            delivery_fee: fee,
            total,
            cash_collected: false,
            reason: None,
            delivery: delivery.clone(),
            lines: lines
                .iter()
                .map(|l| OrderLine {
                    listing_id: l.listing_id,
                    title: l.title.clone(),
                    unit: l.unit.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                    line_total: l.line_total,
                    lots: None,
                })
                .collect(),
            refunds: Vec::new(),
            created_at: at,
            updated_at: at,
        });
    }
    // The view is what is written, not read back: the same as `load_checkout` would read
    // (the checkout test compares the answer with a later read), four statements fewer.
    views.sort_by(|a, b| a.seller.name.cmp(&b.seller.name).then(a.id.cmp(&b.id)));
    let view = CheckoutView {
        id,
        status: status.as_str().to_owned(),
        payment_method: c.payment_method.as_str().to_owned(),
        // As stored: PostgreSQL keeps microseconds.
        expires_at: expires_at.trunc_subsecs(6),
        delivery,
        items_total,
        delivery_total,
        grand_total,
        orders: views,
        payment_url: None,
        payment_client_secret: None,
    };
    let answer = answers
        .map(|_| serde_json::to_value(&view))
        .transpose()
        .map_err(anyhow::Error::from)?;
    let (answer_account, answer_key) = answers.map(Claim::key).unzip();
    let events = events::OutboxRows::of(&placed)?;
    // The checkout, its orders and lines, every `order.placed`, and the key's answer, in one
    // statement and so one transaction without BEGIN and COMMIT of its own: a
    // data-modifying WITH always runs whole, and its foreign keys are checked when it ends.
    // The checkout claims its reservation in the same statement: if the listing service's
    // orphan sweep gave the reservation up first, the claim is taken and nothing is stored
    // (see `super::orphans`). Nothing is stored either when the key no longer names this
    // checkout: its row given back by a request that took the key over from this stalled one,
    // and perhaps claimed since for another checkout (`idempotency_key_gone`). No `NOTIFY`:
    // the relay of this process is woken after the commit (see `events::committed` for why).
    let mut conn = hot.acquire().await?;
    let stored = sqlx::query!(
        "WITH claim AS (
             INSERT INTO reservation_claims (reservation_id, outcome) VALUES ($27, 'placed')),
         c AS (
             INSERT INTO checkouts (id, buyer_id, reservation_id, payment_method, status, province_code, commune_code, street, recipient_name,
                recipient_phone, items_total, delivery_total, grand_total, expires_at, created_at, updated_at)
             VALUES ($1, $2, $27, $28, $3, $29, $30, $31, $32, $33, $34, $35, $36, $37, $38, $38)),
         o AS (
             INSERT INTO orders (id, checkout_id, buyer_id, seller_kind, seller_id, seller_name, status, items_total, delivery_fee, total, expires_at, created_at, updated_at)
             SELECT o.id, $1, $2, o.kind, o.seller_id, o.name, $3, o.items, $4, o.total, $37, $38, $38
             FROM UNNEST($5::uuid[], $6::text[], $7::uuid[], $8::text[], $9::int8[], $10::int8[]) AS o (id, kind, seller_id, name, items, total)),
         l AS (
             INSERT INTO order_lines (order_id, line_no, listing_id, title, unit, quantity, unit_price, line_total)
             SELECT * FROM UNNEST($11::uuid[], $12::int4[], $13::uuid[], $14::text[], $15::text[], $16::numeric[], $17::int8[], $18::int8[])),
         e AS (
             INSERT INTO outbox (id, event_type, aggregate_id, version, payload)
             SELECT * FROM UNNEST($19::uuid[], $20::text[], $21::text[], $22::int8[], $23::jsonb[])),
         k AS (
             UPDATE idempotency_keys SET state = 'done', response = $26 WHERE buyer_id = $24 AND key = $25 AND checkout_id = $1 RETURNING 1)
         SELECT CASE WHEN $24::uuid IS NOT NULL AND NOT EXISTS (SELECT FROM k) THEN idempotency_key_gone() ELSE 1 END AS stored",
        id.0,
        buyer.0,
        status as _,
        fee as _,
        &orders.id,
        &orders.seller_kind,
        &orders.seller_id,
        &orders.seller_name,
        &orders.items,
        &orders.total,
        &rows.order,
        &rows.line_no,
        &rows.listing,
        &rows.title,
        &rows.unit,
        &rows.quantity,
        &rows.unit_price,
        &rows.line_total,
        &events.ids,
        &events.types,
        &events.aggregates,
        &events.versions,
        &events.payloads,
        answer_account.map(|a| a.0),
        answer_key,
        answer.as_ref(),
        reservation.id.0,
        c.payment_method.as_str(),
        d.province_code(),
        d.commune_code(),
        d.street(),
        d.recipient_name(),
        d.recipient_phone().as_str(),
        items_total as _,
        delivery_total as _,
        grand_total as _,
        expires_at,
        at,
    )
    .fetch_one(&mut *conn)
    .await;
    // Answered and committed. A connection whose statement failed is dropped, and so checked
    // (PostgreSQL ends a connection with a database error too, when it shuts down).
    if stored.is_ok() {
        conn.release();
    }
    match stored {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("NK001") => {
            return Err(OrderError::taken_over());
        }
        Err(sqlx::Error::Database(e)) if e.constraint() == Some("reservation_claims_pkey") => {
            return Err(OrderError::Conflict(
                "reservation_expired",
                Text::new(
                    "This checkout took too long and its stock was given back; check out again with a new Idempotency-Key.",
                    "Lượt thanh toán này quá lâu nên hàng đã được trả lại; hãy thanh toán lại với Idempotency-Key mới.",
                ),
            ));
        }
        other => other?,
    };
    events::committed(crate::NAME);
    Ok((view, answer))
}

/// A checkout's orders as the columns of their one statement.
#[derive(Default)]
struct OrderRows {
    id: Vec<uuid::Uuid>,
    seller_kind: Vec<String>,
    seller_id: Vec<uuid::Uuid>,
    seller_name: Vec<String>,
    items: Vec<i64>,
    total: Vec<i64>,
}

/// Their lines likewise.
#[derive(Default)]
struct LineRows {
    order: Vec<uuid::Uuid>,
    line_no: Vec<i32>,
    listing: Vec<uuid::Uuid>,
    title: Vec<String>,
    unit: Vec<String>,
    quantity: Vec<rust_decimal::Decimal>,
    unit_price: Vec<i64>,
    line_total: Vec<i64>,
}

/// Marks a checkout failed (its payment could not be opened, after its orders were stored);
/// answers its orders, for the caller to cancel in the same transaction. The orders' rows
/// are locked before the checkout's, in the order every transition takes them.
pub async fn mark_failed(conn: &mut PgConnection, id: CheckoutId) -> Result<Vec<OrderId>> {
    let orders = sqlx::query_scalar!(
        r#"SELECT id AS "id: OrderId" FROM orders WHERE checkout_id = $1 ORDER BY id FOR UPDATE"#,
        id.0,
    )
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE checkouts SET status = 'failed', updated_at = now() WHERE id = $1",
        id.0,
    )
    .execute(&mut *conn)
    .await?;
    Ok(orders)
}

/// Whose checkout `id` is; `None` when there is none.
pub async fn buyer_of(conn: &mut PgConnection, id: CheckoutId) -> Result<Option<AccountId>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT buyer_id AS "buyer_id: AccountId" FROM checkouts WHERE id = $1"#,
        id.0,
    )
    .fetch_optional(&mut *conn)
    .await?)
}

/// The buyer's latest 50 checkouts, newest first.
pub async fn latest_of(
    conn: &mut PgConnection,
    buyer: AccountId,
    before: Option<CheckoutId>,
    limit: i64,
) -> Result<Vec<CheckoutId>> {
    // Checkout ids are UUIDv7: their order is their creation order.
    Ok(sqlx::query_scalar!(
        r#"SELECT id AS "id: CheckoutId" FROM checkouts WHERE buyer_id = $1 AND ($2::uuid IS NULL OR id < $2)
           ORDER BY id DESC LIMIT $3"#,
        buyer.0,
        before.map(|b| b.0),
        limit,
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// Up to 100 orders whose checkout expired while they wait for payment or confirmation,
/// the longest expired first.
pub async fn due_to_expire(conn: impl sqlx::PgExecutor<'_>) -> Result<Vec<OrderId>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT id AS "id: OrderId" FROM orders
         WHERE expires_at <= now() AND status IN ('pending_payment', 'placed') ORDER BY expires_at LIMIT 100"#,
    )
    .fetch_all(conn)
    .await?)
}

/// Marks the checkout of `order` expired, when it still waits for payment.
pub async fn mark_expired(conn: &mut PgConnection, order: OrderId) -> Result<()> {
    sqlx::query!(
        "UPDATE checkouts SET status = 'expired', updated_at = now() WHERE id = (SELECT checkout_id FROM orders WHERE id = $1) AND status = 'pending_payment'",
        order.0,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
