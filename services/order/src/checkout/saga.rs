//! Steps 2–5 of a checkout, the reservation saga: reserve every line through the listing
//! service, store the checkout and its orders, open the payment; a failure after the
//! reservation gives the stock back (compensation) once the checkout is known not to be
//! stored, and a crash leaves it to the listing service's orphan sweep.

use chrono::Utc;
use nongsan_shared::{
    CheckoutId, ReservationId, Text, Vnd, auth::Actor, client::CallError, failpoint,
};

use nongsan_shared::contracts::{
    payments::{OpenPayment, OpenedPayment},
    reservations::{LineRequest, ReservationRequest, ReservationStatus, ReservationView},
};

use super::{
    request::{NewCheckout, PaymentMethod},
    store::{self, Placement},
};
use crate::{
    AppState,
    error::{OrderError, Result},
    idempotency::Claim,
    views::CheckoutView,
};

/// Places checkout `id`: reserves, stores, opens the payment. `open_cod` is the buyer's
/// open cash-on-delivery checkouts when the claim counted them. `client_ip` is the buyer's
/// address, which online providers want with the payment. Returns the checkout, and its
/// answer when it was stored as `claim`'s with the checkout (cash on delivery: nothing
/// follows the checkout's transaction); otherwise the caller completes the claim.
pub async fn place(
    app: &AppState,
    actor: &Actor,
    id: CheckoutId,
    claim: &Claim,
    c: &NewCheckout,
    open_cod: Option<i64>,
    client_ip: Option<std::net::IpAddr>,
) -> Result<(CheckoutView, Option<serde_json::Value>)> {
    if !app.settings.payment_methods().contains(&c.payment_method) {
        // Refused before any stock is held.
        return Err(OrderError::Invalid(vec![nongsan_shared::FieldError::new(
            "payment_method",
            "payment_method_unavailable",
            nongsan_shared::Text::new(
                format!(
                    "{} payments are not offered here; see /v1/payments/methods",
                    c.payment_method.as_str()
                ),
                format!(
                    "Chưa hỗ trợ thanh toán {} tại đây; xem /v1/payments/methods",
                    c.payment_method.as_str()
                ),
            ),
        )]));
    }
    if c.payment_method == PaymentMethod::Cod {
        // Cash-on-delivery stock is held until a seller confirms: bounded per buyer.
        let open = match open_cod {
            Some(n) => n,
            None => {
                sqlx::query_scalar!(
                    r#"SELECT count(DISTINCT checkout_id) AS "open!" FROM orders WHERE buyer_id = $1 AND status = 'placed'"#,
                    actor.account_id.0,
                )
                .fetch_one(&app.pool)
                .await?
            }
        };
        let max = app.settings.max_open_cod_checkouts;
        if open >= i64::from(max) {
            return Err(OrderError::Invalid(vec![nongsan_shared::FieldError::new(
                "payment_method",
                "too_many_open_orders",
                nongsan_shared::Text::new(
                    format!(
                        "cash on delivery is refused while {max} of your cash-on-delivery checkouts wait for their sellers; pay online or wait for a confirmation"
                    ),
                    format!(
                        "không nhận thanh toán khi nhận hàng khi đã có {max} lượt đặt hàng đang chờ người bán xác nhận; hãy thanh toán trực tuyến hoặc chờ xác nhận"
                    ),
                ),
            )]));
        }
    }
    let ttl = match c.payment_method {
        PaymentMethod::Cod => app.settings.cod_confirm_ttl_secs,
        _ => app.settings.checkout_ttl_secs,
    };
    let reservation_id = ReservationId(id.0);
    // The reservation outlives the checkout by a margin: a payment that arrives just before
    // the checkout expires still finds its stock.
    let body = ReservationRequest {
        id: reservation_id,
        ttl_secs: Some(u32::try_from(ttl.saturating_add(ttl.min(600))).unwrap_or(u32::MAX)),
        lines: c
            .basket
            .lines()
            .iter()
            .map(|l| LineRequest {
                listing_id: l.listing_id,
                quantity: l.quantity,
            })
            .collect(),
        // Cash-on-delivery stock is held until a seller confirms, up to two days: bounded per
        // buyer. An online payment holds for minutes.
        holder: (c.payment_method == PaymentMethod::Cod).then_some(actor.account_id),
    };
    let reservation: ReservationView = match app
        .peers
        .listing
        .post("/v1/internal/reservations", &body)
        .await
    {
        Ok(r) => r,
        // Refused: nothing is held.
        Err(e @ CallError::Status { status, .. }) if status.is_client_error() => {
            return Err(e.into());
        }
        // No answer: the stock may be held under this id, for the retry to take.
        Err(e) => return Err(OrderError::ReservationUnknown(e)),
    };
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
    let placement = Placement {
        id,
        buyer: actor.account_id,
        fee: Vnd(app.settings.delivery_fee_vnd),
        expires_at: Utc::now()
            + chrono::Duration::seconds(i64::try_from(ttl).unwrap_or(i64::MAX / 2)),
    };
    let cod = c.payment_method == PaymentMethod::Cod;
    let stored =
        store::insert_checkout(&app.hot, placement, c, &reservation, cod.then_some(claim)).await;
    let (mut view, answer) = match stored {
        Ok(v) => v,
        // What holds the reservation decides, not the error: an earlier attempt of this
        // checkout (retried after its answer was lost) may have stored it, and then its
        // stock must stay held.
        Err(e) => match super::orphans::settle(&app.pool, vec![reservation_id.0]).await {
            Ok((placed, _)) if !placed.is_empty() => {
                let mut conn = app.pool.acquire().await?;
                (crate::views::load_checkout(&mut conn, id).await?, None)
            }
            // Given up for good (just now, or by the listing service's orphan sweep).
            Ok(_) => {
                release(app, reservation_id).await;
                return Err(e);
            }
            // Nothing can be known now: the orphan sweep asks again later.
            Err(_) => return Err(e),
        },
    };
    failpoint::hit("checkout.after_store")?;
    if c.payment_method != PaymentMethod::Cod {
        let open = OpenPayment {
            checkout_id: id,
            method: c.payment_method,
            amount_vnd: view.grand_total,
            buyer_id: actor.account_id,
            client_ip,
        };
        let opened: std::result::Result<OpenedPayment, CallError> =
            app.peers.payment.post("/v1/internal/payments", &open).await;
        match opened {
            Ok(p) => {
                view.payment_url = p.payment_url;
                view.payment_client_secret = p.client_secret;
            }
            // The payment refused the request itself (an amount its provider does not take):
            // the buyer is told why; nothing was ordered.
            Err(e @ CallError::Status { status, .. }) if status.is_client_error() => {
                mark_failed(app, id, "payment could not be opened").await;
                release(app, reservation_id).await;
                return Err(OrderError::Peer(e));
            }
            Err(e) => {
                mark_failed(app, id, "payment could not be opened").await;
                release(app, reservation_id).await;
                return Err(OrderError::PaymentUnavailable(e.to_string()));
            }
        }
    }
    Ok((view, answer))
}

/// Compensation for a checkout stored and its payment opened whose key no longer names it
/// (see `idempotency::complete`): it is failed and its stock given back, as when its payment
/// could not be opened.
pub async fn abandon(app: &AppState, id: CheckoutId) {
    mark_failed(
        app,
        id,
        "the checkout stalled and its Idempotency-Key went to another request",
    )
    .await;
    release(app, ReservationId(id.0)).await;
}

/// Compensation for a checkout whose payment could not be opened after its orders were
/// stored, or that is abandoned: the checkout is marked failed and each order cancelled by
/// the state machine for `reason` (recorded, and announced with `order.cancelled`), in one
/// transaction. A failure is logged: the checkout then expires.
async fn mark_failed(app: &AppState, id: CheckoutId, reason: &str) {
    let failed = async {
        let mut tx = app.pool.begin().await?;
        for order in store::mark_failed(&mut tx, id).await? {
            crate::orders::transition(
                &mut tx,
                order,
                crate::lifecycle::Action::Cancel,
                None,
                Some(reason),
            )
            .await?;
        }
        tx.commit().await?;
        Ok::<_, OrderError>(())
    }
    .await;
    if let Err(e) = failed {
        tracing::error!(checkout.id = %id, error = %e, "could not mark a checkout failed");
    }
}

/// Compensation: gives the reservation's stock back. A failure is logged: it expires by
/// itself.
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
