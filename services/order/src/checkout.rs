//! Checkout: one basket from several farms, one payment. The saga:
//!
//! 1. the `Idempotency-Key` is claimed (the same key returns the same checkout, also when two
//!    identical requests race; another body with it is 422);
//! 2. every line is reserved through the listing service, all or nothing, with the checkout id
//!    as reservation id (so a retry cannot reserve twice) and a time to live past the
//!    checkout's own expiry;
//! 3. the checkout and one order per seller are stored, with `order.placed` per order;
//! 4. for an online payment, the payment service opens the payment;
//! 5. a failure after step 2 releases the reservation; a crash leaves it to expire.

use std::time::Duration;

use axum::{
    Json as AxumJson,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chrono::Utc;
use nongsan_shared::{
    AccountId, CheckoutId, FieldError, ListingId, OrderId, Quantity, ReservationId, Text, Vnd,
    auth::{Actor, Role},
    client::CallError,
    events, failpoint,
    http::{Json, Path},
    reference::reference,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::{
    AppState,
    error::{OrderError, Result},
    views::{CheckoutView, Delivery, load_checkout},
};
pub use nongsan_shared::contracts::payments::PaymentMethod;
use nongsan_shared::contracts::{
    events::{EventType, OrderEvent},
    orders::OrderStatus,
    payments::{OpenPayment, OpenedPayment},
    reservations::{
        LineRequest, ReservationRequest, ReservationStatus, ReservationView, ReservedLine,
    },
    sellers::Seller,
};

/// One line of the basket.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineInput {
    /// The listing.
    pub listing_id: ListingId,
    /// How much, in its unit.
    pub quantity: Quantity,
}

/// A checkout request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// The basket: at most 50 lines, one per listing.
    pub lines: Vec<LineInput>,
    /// Where it goes.
    pub delivery: Delivery,
    /// How it is paid.
    pub payment_method: PaymentMethod,
}

fn check(r: &CheckoutRequest) -> Result<()> {
    let mut errors = Vec::new();
    let mut bad = |field: String, code: &'static str, en: &str, vi: &str| {
        errors.push(FieldError::new(field, code, Text::new(en, vi)))
    };
    if r.lines.is_empty() {
        bad(
            "lines".into(),
            "empty",
            "the basket is empty",
            "giỏ hàng trống",
        );
    }
    if r.lines.len() > 50 {
        bad(
            "lines".into(),
            "too_many",
            "must have at most 50 lines",
            "tối đa 50 dòng",
        );
    }
    for (i, l) in r.lines.iter().enumerate() {
        if !l.quantity.is_positive() {
            bad(
                format!("lines[{i}].quantity"),
                "not_positive",
                "must be more than 0",
                "phải lớn hơn 0",
            );
        }
        if r.lines[..i].iter().any(|o| o.listing_id == l.listing_id) {
            bad(
                format!("lines[{i}].listing_id"),
                "duplicate",
                "appears on an earlier line",
                "đã có ở dòng trước",
            );
        }
    }
    let d = &r.delivery;
    if d.street.trim().is_empty() || d.street.chars().count() > 300 {
        bad(
            "delivery.street".into(),
            "invalid_length",
            "must have 1 to 300 characters",
            "phải có từ 1 đến 300 ký tự",
        );
    }
    if d.recipient_name.trim().is_empty() || d.recipient_name.chars().count() > 200 {
        bad(
            "delivery.recipient_name".into(),
            "invalid_length",
            "must have 1 to 200 characters",
            "phải có từ 1 đến 200 ký tự",
        );
    }
    let address = reference().check_address(&d.province_code, &d.commune_code);
    errors.extend(
        address
            .into_iter()
            .map(|(part, reason)| reason.at(format!("delivery.{part}"))),
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(OrderError::Invalid(errors))
    }
}

/// The key, the buyer and the request's hash.
struct Claim {
    buyer: AccountId,
    key: String,
    hash: Vec<u8>,
}

/// How long a claim may stay `started` before another request with the key takes it over
/// (its first holder died between claiming and finishing).
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

enum Claimed {
    /// This request serves the key, for this checkout id.
    Mine(CheckoutId),
    /// It was served before: the answer.
    Done(serde_json::Value),
}

async fn claim(app: &AppState, c: &Claim) -> Result<Claimed> {
    let started = tokio::time::Instant::now();
    loop {
        let fresh = CheckoutId::new();
        let row = sqlx::query!(
            r#"WITH ins AS (
                INSERT INTO idempotency_keys (buyer_id, key, request_hash, checkout_id, state) VALUES ($1, $2, $3, $4, 'started')
                ON CONFLICT (buyer_id, key) DO NOTHING RETURNING request_hash, checkout_id, state, response, true AS mine)
             SELECT request_hash AS "request_hash!", checkout_id AS "checkout_id!: CheckoutId", state AS "state!",
                    response AS "response?", mine AS "mine!" FROM ins
             UNION ALL
             SELECT request_hash, checkout_id, state, response, false FROM idempotency_keys WHERE buyer_id = $1 AND key = $2
             LIMIT 1"#,
            c.buyer.0,
            &c.key,
            &c.hash,
            fresh.0,
        )
        .fetch_one(&app.pool)
        .await?;
        if row.mine {
            return Ok(Claimed::Mine(row.checkout_id));
        }
        if row.request_hash != c.hash {
            return Err(OrderError::KeyReused);
        }
        if row.state == "done" {
            return Ok(Claimed::Done(row.response.unwrap_or_default()));
        }
        // Another request holds the key: wait for its answer, or take over if it died.
        let taken = sqlx::query_scalar!(
            r#"UPDATE idempotency_keys SET created_at = now() WHERE buyer_id = $1 AND key = $2 AND state = 'started'
               AND created_at < now() - make_interval(secs => $3) RETURNING checkout_id AS "checkout_id: CheckoutId""#,
            c.buyer.0,
            &c.key,
            ABANDONED_AFTER.as_secs_f64(),
        )
        .fetch_optional(&app.pool)
        .await?;
        if let Some(checkout) = taken {
            return Ok(Claimed::Mine(checkout));
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(OrderError::KeyInUse);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn unclaim(app: &AppState, c: &Claim) {
    let _ = sqlx::query!(
        "DELETE FROM idempotency_keys WHERE buyer_id = $1 AND key = $2 AND state = 'started'",
        c.buyer.0,
        &c.key,
    )
    .execute(&app.pool)
    .await;
}

/// Check out a basket: one checkout, one order per seller.
#[utoipa::path(post, path = "/v1/checkouts", tag = "order", request_body = CheckoutRequest,
    params(("Idempotency-Key" = String, Header, description = "Required; the same key returns the same checkout")),
    responses(
        (status = 201, body = CheckoutView), (status = 200, description = "The checkout made earlier with this key", body = CheckoutView),
        (status = 409, description = "insufficient_stock, listing_unavailable", body = nongsan_shared::error::ProblemSchema),
        (status = 422, description = "validation_failed, idempotency_key_reused", body = nongsan_shared::error::ProblemSchema),
        (status = 503, description = "The listing or payment service is unavailable; nothing was ordered", body = nongsan_shared::error::ProblemSchema)),
    security(("bearer" = [])))]
pub async fn create_checkout(
    State(app): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Json(request): Json<CheckoutRequest>,
) -> Result<(StatusCode, AxumJson<serde_json::Value>)> {
    if actor.role != Role::Buyer {
        return Err(OrderError::Forbidden);
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("");
    if key.is_empty() || key.len() > 200 {
        return Err(OrderError::Invalid(vec![FieldError::new(
            "Idempotency-Key",
            "required",
            Text::new(
                "header is required (1 to 200 characters)",
                "là tiêu đề bắt buộc (1 đến 200 ký tự)",
            ),
        )]));
    }
    check(&request)?;
    let claim_ = Claim {
        buyer: actor.account_id,
        key: key.to_owned(),
        hash: Sha256::digest(serde_json::to_vec(&request).map_err(anyhow::Error::from)?).to_vec(),
    };
    let checkout_id = match claim(&app, &claim_).await? {
        Claimed::Done(answer) => return Ok((StatusCode::OK, AxumJson(answer))),
        Claimed::Mine(id) => id,
    };
    match place(&app, &actor, checkout_id, &request).await {
        Ok(view) => {
            let answer = serde_json::to_value(&view).map_err(anyhow::Error::from)?;
            sqlx::query!(
                "UPDATE idempotency_keys SET state = 'done', response = $3 WHERE buyer_id = $1 AND key = $2",
                claim_.buyer.0,
                &claim_.key,
                &answer,
            )
            .execute(&app.pool)
            .await?;
            Ok((StatusCode::CREATED, AxumJson(answer)))
        }
        Err(e) => {
            unclaim(&app, &claim_).await;
            Err(e)
        }
    }
}

/// Steps 2–4 of the saga.
async fn place(
    app: &AppState,
    actor: &Actor,
    id: CheckoutId,
    r: &CheckoutRequest,
) -> Result<CheckoutView> {
    let ttl = match r.payment_method {
        PaymentMethod::Cod => app.settings.cod_confirm_ttl_secs,
        _ => app.settings.checkout_ttl_secs,
    };
    let reservation_id = ReservationId(id.0);
    // The reservation outlives the checkout by a margin: a payment that arrives just before
    // the checkout expires still finds its stock.
    let body = ReservationRequest {
        id: reservation_id,
        ttl_secs: Some(u32::try_from(ttl.saturating_add(ttl.min(600))).unwrap_or(u32::MAX)),
        lines: r
            .lines
            .iter()
            .map(|l| LineRequest {
                listing_id: l.listing_id,
                quantity: l.quantity,
            })
            .collect(),
    };
    let reservation: ReservationView = app
        .peers
        .listing
        .post("/v1/internal/reservations", &body)
        .await?;
    if reservation.status != ReservationStatus::Active {
        // A retry after a crash: the first attempt's reservation expired meanwhile.
        return Err(OrderError::Conflict(
            "reservation_expired",
            Text::new(
                "This checkout's stock was given back; check out again with a new Idempotency-Key.",
                "Hàng của lượt thanh toán này đã được trả lại; hãy thanh toán lại với Idempotency-Key mới.",
            ),
        ));
    }
    failpoint::hit("checkout.after_reserve")?;
    failpoint::hit_async("checkout.before_store").await?;
    let stored = store(app, actor, id, r, &reservation, ttl).await;
    let mut view = match stored {
        Ok(v) => v,
        Err(e) => {
            release(app, reservation_id).await;
            return Err(e);
        }
    };
    if r.payment_method != PaymentMethod::Cod {
        let open = OpenPayment {
            checkout_id: id,
            method: r.payment_method,
            amount_vnd: view.grand_total,
            buyer_id: actor.account_id,
        };
        let opened: std::result::Result<OpenedPayment, CallError> =
            app.peers.payment.post("/v1/internal/payments", &open).await;
        match opened {
            Ok(p) => view.payment_url = p.payment_url,
            Err(e) => {
                fail_checkout(app, id).await;
                release(app, reservation_id).await;
                return Err(OrderError::PaymentUnavailable(e.to_string()));
            }
        }
    }
    Ok(view)
}

async fn release(app: &AppState, id: ReservationId) {
    let res: std::result::Result<serde_json::Value, _> = app
        .peers
        .listing
        .post(
            &format!("/v1/internal/reservations/{id}/release"),
            &serde_json::json!({}),
        )
        .await;
    if let Err(e) = res {
        // It expires by itself.
        tracing::warn!(reservation.id = %id, error = %e, "could not release a reservation; it will expire");
    }
}

async fn fail_checkout(app: &AppState, id: CheckoutId) {
    let res = sqlx::query!(
        "UPDATE checkouts SET status = 'failed', updated_at = now() WHERE id = $1",
        id.0,
    )
    .execute(&app.pool)
    .await;
    let res2 = sqlx::query!(
        "UPDATE orders SET status = 'cancelled', reason = 'payment could not be opened', updated_at = now() WHERE checkout_id = $1",
        id.0,
    )
    .execute(&app.pool)
    .await;
    if let Err(e) = res.and(res2) {
        tracing::error!(checkout.id = %id, error = %e, "could not mark a checkout failed");
    }
}

/// Step 3: the checkout and its orders, in one transaction.
async fn store(
    app: &AppState,
    actor: &Actor,
    id: CheckoutId,
    r: &CheckoutRequest,
    reservation: &ReservationView,
    ttl: u64,
) -> Result<CheckoutView> {
    let fee = Vnd(app.settings.delivery_fee_vnd);
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
    let status = if r.payment_method == PaymentMethod::Cod {
        OrderStatus::Placed
    } else {
        OrderStatus::PendingPayment
    };
    let expires_at =
        Utc::now() + chrono::Duration::seconds(i64::try_from(ttl).unwrap_or(i64::MAX / 2));
    let mut tx = app.pool.begin().await?;
    sqlx::query!(
        "INSERT INTO checkouts (id, buyer_id, reservation_id, payment_method, status, province_code, commune_code, street, recipient_name,
            recipient_phone, items_total, delivery_total, grand_total, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        id.0,
        actor.account_id.0,
        reservation.id.0,
        r.payment_method.as_str(),
        status as _,
        &r.delivery.province_code,
        &r.delivery.commune_code,
        r.delivery.street.trim(),
        r.delivery.recipient_name.trim(),
        r.delivery.recipient_phone.as_str(),
        items_total as _,
        delivery_total as _,
        grand_total as _,
        expires_at,
    )
    .execute(&mut *tx)
    .await?;
    for (seller, lines) in &sellers {
        let order = OrderId::new();
        let items = sum(lines).ok_or_else(|| anyhow::anyhow!("total overflow"))?;
        let total = items
            .checked_add(fee)
            .ok_or_else(|| anyhow::anyhow!("total overflow"))?;
        sqlx::query!(
            "INSERT INTO orders (id, checkout_id, buyer_id, seller_kind, seller_id, seller_name, status, items_total, delivery_fee, total)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            order.0,
            id.0,
            actor.account_id.0,
            seller.kind as _,
            seller.id,
            &seller.name,
            status as _,
            items as _,
            fee as _,
            total as _,
        )
        .execute(&mut *tx)
        .await?;
        for (n, l) in lines.iter().enumerate() {
            sqlx::query!(
                "INSERT INTO order_lines (order_id, line_no, listing_id, title, unit, quantity, unit_price, line_total)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                order.0,
                i32::try_from(n).unwrap_or(i32::MAX),
                l.listing_id.0,
                &l.title,
                &l.unit,
                l.quantity as _,
                l.unit_price as _,
                l.line_total as _,
            )
            .execute(&mut *tx)
            .await?;
        }
        let listing_ids: Vec<ListingId> = lines.iter().map(|l| l.listing_id).collect();
        let placed = OrderEvent {
            order_id: order,
            checkout_id: id,
            reservation_id: reservation.id,
            listing_ids,
            buyer_id: actor.account_id,
            seller: (*seller).clone(),
            from: None,
            status,
            action: None,
            reason: None,
            payment_method: r.payment_method,
            total_vnd: total,
            cash_collected: false,
            refund_due: false,
        };
        events::emit(
            &mut tx,
            EventType::OrderPlaced,
            &order.to_string(),
            1,
            &placed,
        )
        .await?;
    }
    let view = load_checkout(&mut tx, id).await?;
    tx.commit().await?;
    Ok(view)
}

/// A checkout (its buyer only; anyone else gets 404).
#[utoipa::path(get, path = "/v1/checkouts/{id}", tag = "order", params(("id" = String, Path)),
    responses((status = 200, body = CheckoutView), (status = 404, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn get_checkout(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<CheckoutId>,
) -> Result<AxumJson<CheckoutView>> {
    let mut conn = app.pool.acquire().await?;
    let owner = sqlx::query_scalar!(
        r#"SELECT buyer_id AS "buyer_id: AccountId" FROM checkouts WHERE id = $1"#,
        id.0,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if owner != Some(actor.account_id) {
        return Err(OrderError::NotFound("checkout"));
    }
    let mut view = load_checkout(&mut conn, id).await?;
    for order in &mut view.orders {
        crate::orders::attach_lots(&app, order).await;
    }
    Ok(AxumJson(view))
}

/// The buyer's checkouts, newest first.
#[utoipa::path(get, path = "/v1/checkouts", tag = "order", responses((status = 200, body = [CheckoutView])), security(("bearer" = [])))]
pub async fn list_checkouts(
    State(app): State<AppState>,
    actor: Actor,
) -> Result<AxumJson<Vec<CheckoutView>>> {
    let mut conn = app.pool.acquire().await?;
    let ids = sqlx::query_scalar!(
        r#"SELECT id AS "id: CheckoutId" FROM checkouts WHERE buyer_id = $1 ORDER BY created_at DESC LIMIT 50"#,
        actor.account_id.0,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(load_checkout(&mut conn, id).await?);
    }
    Ok(AxumJson(out))
}

/// Expires unpaid checkouts and unconfirmed cash orders; returns how many orders.
pub async fn expire_once(app: &AppState) -> Result<usize> {
    let due = sqlx::query_scalar!(
        r#"SELECT o.id AS "id: OrderId" FROM orders o JOIN checkouts c ON c.id = o.checkout_id
         WHERE c.expires_at <= now() AND o.status IN ('pending_payment', 'placed') ORDER BY c.expires_at LIMIT 100"#,
    )
    .fetch_all(&app.pool)
    .await?;
    let mut n = 0;
    for id in due {
        let mut tx = app.pool.begin().await?;
        if crate::orders::transition(
            &mut tx,
            id,
            crate::lifecycle::Action::Expire,
            None,
            Some("not paid or confirmed in time"),
        )
        .await
        .is_ok()
        {
            n += 1;
        }
        sqlx::query!(
            "UPDATE checkouts SET status = 'expired', updated_at = now() WHERE id = (SELECT checkout_id FROM orders WHERE id = $1) AND status = 'pending_payment'",
            id.0,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    Ok(n)
}

/// Runs [`expire_once`] every second until aborted.
pub async fn run_expirer(app: AppState) {
    let mut failures = 0u32;
    loop {
        match expire_once(&app).await {
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                if nongsan_shared::telemetry::worth_logging(failures) {
                    tracing::warn!(error = %e, "order expirer failed; retrying");
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
