//! Refunds: money given back to a buyer, in full or in part, several per payment, never
//! more than was captured.
//!
//! A refund is asked in two ways: the order side owes it (`order.refund_due`: an order
//! cancelled, declined or returned after payment, or a payment that came for orders no
//! longer alive), or an operator refunds part of an order (damaged goods) with a note. It
//! is stored `pending` first (in the same transaction as the ask, keyed so it is asked
//! once), then the worker asks the provider and records the answer; a provider that does
//! not answer is asked again later. The bound is the database's: a refund counts against
//! its payment while pending or succeeded (`refund_exceeds_captured`).

use std::time::Duration;

use axum::{Json as AxumJson, extract::State, http::HeaderMap, http::StatusCode};
use chrono::{DateTime, Utc};
use nongsan_shared::{
    ApiError, CheckoutId, FieldError, ListingId, OrderId, PaymentId, Problems, RefundId, Text, Vnd,
    auth::{Actor, Role},
    contracts::{
        events::{EventType, OrderEvent, RefundDue, RefundEvent},
        payments::{PaymentMethod, PaymentStatus, RefundReason, RefundStatus},
    },
    events::{self, Envelope, Handler},
    failpoint,
    http::Json,
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::{AppState, ledger, momo, vnpay};

/// `order.placed` of an order paid online: remembers its checkout, total, seller and payment
/// method: what a refund for that order may reach, and what the ledger books it from (a
/// capture that came first is booked for it now).
///
/// A cash-on-delivery order is not taken here (see [`TrackOrder::wants`]): nothing of it is
/// paid, refundable or booked before its cash is collected. Its delivery remembers it
/// (`ledger::remember_order` fills what is missing), and its sale and its delivery settle it
/// one after the other, whichever comes first (`ledger::lock_order`).
/// So a cash-on-delivery checkout costs the payment service no inbox rows and no orders of
/// its own.
#[derive(Debug, Clone, Copy)]
pub struct TrackOrder;

#[async_trait::async_trait]
impl Handler for TrackOrder {
    /// Every order but a cash-on-delivery one (read from the event's body as it came; one
    /// that cannot be read is taken, and fails in [`TrackOrder::handle`] as before).
    fn wants(&self, event: &Envelope) -> bool {
        event.data.get("payment_method").and_then(|m| m.as_str())
            != Some(PaymentMethod::Cod.as_str())
    }

    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> anyhow::Result<()> {
        let order: OrderEvent = event.body()?;
        // A cash-on-delivery order taken before `wants` refused them (stored in the inbox by
        // an earlier version): remembered, and nothing settled. At placement only a capture
        // that came first can be due for booking, and cash on delivery has none.
        if order.payment_method == PaymentMethod::Cod {
            return ledger::remember_order(tx, &order, None).await;
        }
        ledger::lock_checkout(tx, order.checkout_id.0).await?;
        ledger::remember_order(tx, &order, None).await?;
        ledger::settle_order(tx, order.order_id, "order placed").await?;
        Ok(())
    }
}

/// `order.refund_due`: stores the refund the order side owes, keyed by order and reason, so
/// a repeated event asks it once. What was already refunded of the order (an operator's
/// partial refund) is not refunded again.
#[derive(Debug, Clone)]
pub struct AskRefund {
    /// Wakes the worker.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl Handler for AskRefund {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> anyhow::Result<()> {
        let due: RefundDue = event.body()?;
        // The order's row first, then its payment's: the order every path locks them in.
        sqlx::query!(
            "SELECT order_id FROM payment_orders WHERE order_id = $1 FOR UPDATE",
            due.order_id.0
        )
        .fetch_optional(&mut *tx)
        .await?;
        let payment = sqlx::query!(
            r#"SELECT id AS "id: PaymentId", status AS "status: PaymentStatus", captured_vnd, refunded_vnd
               FROM payments WHERE checkout_id = $1 FOR UPDATE"#,
            due.checkout_id.0,
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no payment for checkout {}", due.checkout_id))?;
        // The order side owes a refund only after a capture; until this service has recorded
        // it too, the inbox tries again.
        anyhow::ensure!(
            payment.status == PaymentStatus::Succeeded,
            "payment {} of checkout {} is not captured yet",
            payment.id,
            due.checkout_id
        );
        let of_order = refunded_for_order(tx, due.order_id).await?;
        let amount =
            (due.amount_vnd.get() - of_order).min(payment.captured_vnd - payment.refunded_vnd);
        if amount <= 0 {
            tracing::info!(order = %due.order_id, reason = due.reason.as_str(), "nothing left to refund");
            return Ok(());
        }
        let key = format!("{}:{}", due.order_id, due.reason.as_str());
        sqlx::query!(
            "INSERT INTO refunds (id, payment_id, order_id, amount_vnd, reason, idempotency_key) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (payment_id, idempotency_key) DO NOTHING",
            RefundId::new().0,
            payment.id.0,
            due.order_id.0,
            amount,
            due.reason as _,
            key,
        )
        .execute(&mut *tx)
        .await?;
        ledger::settle_order(tx, due.order_id, "refund asked").await?;
        self.wake.notify_one();
        Ok(())
    }
}

/// What is refunded of an order so far, or being refunded (failed refunds do not count).
async fn refunded_for_order(conn: &mut PgConnection, order: OrderId) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"SELECT COALESCE(sum(amount_vnd), 0)::bigint AS "sum!" FROM refunds WHERE order_id = $1 AND status <> 'failed'"#,
        order.0,
    )
    .fetch_one(conn)
    .await?)
}

/// The refund worker: asks the provider for every pending refund that is due, as soon as
/// one is stored and at least every `payment_sweep_ms`.
pub async fn run_worker(app: AppState, wake: std::sync::Arc<tokio::sync::Notify>) {
    let every = Duration::from_millis(app.settings.payment_sweep_ms.max(10));
    loop {
        match process_due(&app).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(refunds = n, "refunds asked of their providers"),
            Err(e) => tracing::warn!(error = %e, "the refund worker failed; it tries again"),
        }
        let _ = tokio::time::timeout(every, wake.notified()).await;
    }
}

/// Asks the provider for each due pending refund; answers how many were asked.
pub async fn process_due(app: &AppState) -> anyhow::Result<usize> {
    let due = sqlx::query_scalar!(
        r#"SELECT id AS "id: RefundId" FROM refunds WHERE status = 'pending' AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT 20"#,
    )
    .fetch_all(&app.pool)
    .await?;
    let mut n = 0;
    for id in due {
        if process(app, id).await?.is_some() {
            n += 1;
        }
    }
    Ok(n)
}

/// A refund as stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RefundView {
    /// Id.
    pub id: RefundId,
    /// The payment refunded.
    pub payment_id: PaymentId,
    /// The order it is for.
    pub order_id: Option<OrderId>,
    /// How much.
    pub amount_vnd: Vnd,
    /// Why.
    pub reason: RefundReason,
    /// The operator's note.
    pub note: Option<String>,
    /// Where it stands.
    pub status: RefundStatus,
    /// The provider's refund transaction, once it succeeded.
    pub provider_ref: Option<String>,
    /// Asked at.
    pub created_at: DateTime<Utc>,
}

async fn load(conn: &mut PgConnection, id: RefundId) -> anyhow::Result<RefundView> {
    Ok(sqlx::query_as!(
        RefundView,
        r#"SELECT id AS "id: RefundId", payment_id AS "payment_id: PaymentId", order_id AS "order_id: OrderId",
                amount_vnd AS "amount_vnd: Vnd", reason AS "reason: RefundReason", note,
                status AS "status: RefundStatus", provider_ref, created_at
           FROM refunds WHERE id = $1"#,
        id.0,
    )
    .fetch_one(conn)
    .await?)
}

/// What a provider said to a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Money given back: the provider's reference.
    Done(String),
    /// Refused for good, or failed after it was taken: its code and message.
    Refused(String),
    /// Taken, and still being processed (Stripe's `pending`): the provider's reference. It
    /// is asked how it stands later, and its webhook may end it first.
    Processing(String),
    /// No usable answer: ask again later.
    Later(String),
}

/// A refund and its payment, as recording an answer needs them.
struct Asked {
    amount_vnd: Vnd,
    attempts: i32,
    status: RefundStatus,
    reason: RefundReason,
    order_id: Option<OrderId>,
    payment_id: PaymentId,
    checkout_id: CheckoutId,
}

/// Asks the provider for one pending refund that is due (locked, so one worker asks it at a
/// time) and records the answer; `None` when it is not pending, not due yet (asked already,
/// and waiting out its backoff), or another worker holds it.
pub async fn process(app: &AppState, id: RefundId) -> anyhow::Result<Option<RefundView>> {
    let mut tx = app.pool.begin().await?;
    let Some(r) = sqlx::query!(
        r#"SELECT r.amount_vnd AS "amount_vnd: Vnd", r.attempts, r.requested_by, r.reason AS "reason: RefundReason", r.order_id AS "order_id: OrderId",
                r.provider_ref AS refund_ref, p.id AS "payment_id: PaymentId", p.checkout_id AS "checkout_id: CheckoutId", p.method AS "method: PaymentMethod",
                p.txn_ref, p.provider_ref, p.provider_created, p.captured_vnd
           FROM refunds r JOIN payments p ON p.id = r.payment_id
           WHERE r.id = $1 AND r.status = 'pending' AND r.next_attempt_at <= now() FOR UPDATE OF r SKIP LOCKED"#,
        id.0,
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };
    let answer = match r.method {
        PaymentMethod::Vnpay => {
            let s = &app.settings;
            match (&s.vnpay_tmn_code, &s.vnpay_hash_secret) {
                (Some(tmn), Some(secret)) => {
                    let by = r
                        .requested_by
                        .map_or_else(|| "nongsan".to_owned(), |a| a.to_string());
                    let body = vnpay::api_request(
                        tmn,
                        secret.expose_secret(),
                        &vnpay::ApiCall::Refund {
                            txn_ref: &r.txn_ref,
                            transaction_date: r.provider_created.as_deref().unwrap_or(""),
                            transaction_no: r.provider_ref.as_deref().unwrap_or(""),
                            amount_vnd: r.amount_vnd.get(),
                            full: r.amount_vnd.get() == r.captured_vnd,
                            by: &by,
                        },
                        &id.0.simple().to_string(),
                        Utc::now(),
                        "127.0.0.1",
                    );
                    match vnpay::call_api(&app.http, &s.vnpay_api_url, &body).await {
                        Ok(a) if a.response_code == "00" => Answer::Done(a.transaction_no),
                        // 99: VNPay's "unknown error"; 94: a request already being handled.
                        Ok(a) if matches!(a.response_code.as_str(), "99" | "94") => {
                            Answer::Later(format!("{}: {}", a.response_code, a.message))
                        }
                        Ok(a) => Answer::Refused(format!("{}: {}", a.response_code, a.message)),
                        Err(e) => Answer::Later(e.to_string()),
                    }
                }
                _ => Answer::Later("VNPay is not set up here".to_owned()),
            }
        }
        PaymentMethod::Stripe => match (&app.stripe, &r.refund_ref) {
            // Made before and answered `pending`: asked how it stands, not made again.
            (Some(stripe), Some(made)) => match stripe.refund_status(made).await {
                Ok(status) => crate::stripe::refund_answer(made, status.as_deref().unwrap_or("")),
                Err(e) => Answer::Later(e.to_string()),
            },
            (Some(stripe), None) => match stripe
                .refund(&r.txn_ref, r.amount_vnd.get(), &id.0.simple().to_string())
                .await
            {
                Ok((made, status)) => {
                    // localstripe answers every refund `succeeded`: a test reads it as
                    // `pending` through this fail point.
                    let status = if failpoint::hit("refund.stripe_pending").is_err() {
                        Some("pending".to_owned())
                    } else {
                        status
                    };
                    crate::stripe::refund_answer(&made, status.as_deref().unwrap_or(""))
                }
                // Stripe refused the request itself (4xx): asking again will not help.
                Err(stripe::StripeError::Stripe(e, status)) if stripe_refused(status, &e.type_) => {
                    Answer::Refused(format!(
                        "{status}: {}",
                        e.message.as_deref().unwrap_or("refused")
                    ))
                }
                Err(e) => Answer::Later(e.to_string()),
            },
            (None, _) => Answer::Later("Stripe is not set up here".to_owned()),
        },
        PaymentMethod::Momo => {
            let s = &app.settings;
            match (&s.momo_partner_code, &s.momo_access_key, &s.momo_secret_key) {
                (Some(partner), Some(access), Some(secret)) => {
                    let reference = id.0.simple().to_string();
                    let keys = momo::Keys {
                        partner_code: partner,
                        access_key: access,
                        secret: secret.expose_secret(),
                    };
                    let body = momo::refund_body(
                        keys,
                        &reference,
                        &reference,
                        r.amount_vnd.get(),
                        r.provider_ref.as_deref().unwrap_or(""),
                        &format!("Hoan tien don hang {}", r.txn_ref),
                    );
                    match momo::call(&app.http, &s.momo_endpoint, "/v2/gateway/api/refund", &body)
                        .await
                    {
                        // Our refund's orderId is used: an earlier attempt whose answer was
                        // lost made it. Its payment's refunds say how it ended.
                        Ok(a) if a.result_code == momo::DUPLICATED_ORDER_ID => {
                            let query = momo::query_body(
                                keys,
                                &r.txn_ref,
                                &uuid::Uuid::now_v7().simple().to_string(),
                            );
                            match momo::call(
                                &app.http,
                                &s.momo_endpoint,
                                "/v2/gateway/api/query",
                                &query,
                            )
                            .await
                            {
                                Ok(q) => momo_refund_made(&q, &reference),
                                Err(e) => Answer::Later(e.to_string()),
                            }
                        }
                        Ok(a) => {
                            momo_refund_answer(a.result_code, &a.message, a.trans_id, &reference)
                        }
                        Err(e) => Answer::Later(e.to_string()),
                    }
                }
                _ => Answer::Later("MoMo is not set up here".to_owned()),
            }
        }
        other => Answer::Later(format!("refunds through {} are not built", other.as_str())),
    };
    let asked = Asked {
        amount_vnd: r.amount_vnd,
        attempts: r.attempts,
        status: RefundStatus::Pending,
        reason: r.reason,
        order_id: r.order_id,
        payment_id: r.payment_id,
        checkout_id: r.checkout_id,
    };
    record(&mut tx, id, &asked, answer).await?;
    let view = load(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Some(view))
}

/// Records what the provider said of a refund after it was asked (Stripe's refund webhooks):
/// a pending refund ends, and one that succeeded and then failed at the provider (the
/// buyer's bank could not take the money back) is failed: its amount counts against its
/// payment no more, its order's ledger gives back what the refund took, and its order shows
/// it failed, for an operator to refund again. Anything else (said again, or said of a
/// refund already failed) changes nothing. The refund's row is locked meanwhile, so a worker
/// asking the provider at the same time records first or after.
pub async fn provider_said(
    conn: &mut PgConnection,
    id: RefundId,
    answer: Answer,
) -> anyhow::Result<()> {
    let Some(r) = sqlx::query_as!(
        Asked,
        r#"SELECT r.amount_vnd AS "amount_vnd: Vnd", r.attempts, r.status AS "status: RefundStatus", r.reason AS "reason: RefundReason",
                r.order_id AS "order_id: OrderId", p.id AS "payment_id: PaymentId", p.checkout_id AS "checkout_id: CheckoutId"
           FROM refunds r JOIN payments p ON p.id = r.payment_id
           WHERE r.id = $1 FOR UPDATE OF r"#,
        id.0,
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        tracing::warn!(refund = %id, "the provider spoke of a refund nongsan does not hold");
        return Ok(());
    };
    let goes_on = match (r.status, &answer) {
        (RefundStatus::Pending, _) => true,
        (RefundStatus::Succeeded, Answer::Refused(said)) => {
            tracing::warn!(refund = %id, said, "a refund that succeeded failed at the provider");
            true
        }
        _ => false,
    };
    if goes_on {
        record(conn, id, &r, answer).await?;
    }
    Ok(())
}

/// Records a provider's answer to a refund locked by the caller: ended (its order's ledger
/// settled, `payment.refunded` emitted), or left pending to be asked again.
async fn record(
    conn: &mut PgConnection,
    id: RefundId,
    r: &Asked,
    answer: Answer,
) -> anyhow::Result<()> {
    let (status, provider_ref, said) = match answer {
        Answer::Done(reference) => (RefundStatus::Succeeded, Some(reference), None),
        Answer::Refused(said) => (RefundStatus::Failed, None, Some(said)),
        // Taken and still being processed: asked how it stands after the same pauses as a
        // provider that did not answer.
        Answer::Processing(reference) => {
            return again_later(conn, id, r, "processing at the provider", Some(reference)).await;
        }
        Answer::Later(said) => {
            tracing::warn!(refund = %id, said, "the provider did not take the refund yet; asked again later");
            return again_later(conn, id, r, &said, None).await;
        }
    };
    // Locks in the order every path takes them: the order's row, then (by the refund's
    // trigger) its payment's.
    if let Some(order) = r.order_id {
        sqlx::query!(
            "SELECT order_id FROM payment_orders WHERE order_id = $1 FOR UPDATE",
            order.0
        )
        .fetch_optional(&mut *conn)
        .await?;
    }
    // A refund that failed after it succeeded keeps the provider's reference it had.
    sqlx::query!(
        "UPDATE refunds SET status = $2, provider_ref = COALESCE($3, provider_ref), provider_answer = $4, attempts = attempts + 1, updated_at = now() WHERE id = $1",
        id.0,
        status as _,
        provider_ref,
        said,
    )
    .execute(&mut *conn)
    .await?;
    if let Some(order) = r.order_id {
        let why = match (r.status, status) {
            (_, RefundStatus::Succeeded) => "refund confirmed by the provider",
            (RefundStatus::Succeeded, _) => "refund failed at the provider after it succeeded",
            _ => "refund refused by the provider",
        };
        ledger::settle_order(&mut *conn, order, why).await?;
    }
    let body = RefundEvent {
        refund_id: id,
        payment_id: r.payment_id,
        checkout_id: r.checkout_id,
        order_id: r.order_id,
        amount_vnd: r.amount_vnd,
        reason: r.reason,
        status,
    };
    // The second ending of a refund (failed after it succeeded) is its second version.
    let version = if r.status == RefundStatus::Pending {
        1
    } else {
        2
    };
    events::emit(
        &mut *conn,
        EventType::PaymentRefunded,
        &id.to_string(),
        version,
        &body,
    )
    .await?;
    Ok(())
}

/// What MoMo's answer to a refund (or its record of one) says: 0 is done (MoMo's refund
/// transaction, or our reference without one); still being processed or MoMo's own error,
/// ask again; anything else refused.
fn momo_refund_answer(code: i64, message: &str, trans_id: Option<i64>, reference: &str) -> Answer {
    match code {
        0 => Answer::Done(trans_id.map_or_else(|| reference.to_owned(), |t| t.to_string())),
        99 | 1000 | 7000 | 7002 => Answer::Later(format!("{code}: {message}")),
        _ => Answer::Refused(format!("{code}: {message}")),
    }
}

/// How the refund `reference` ended by its payment's query (`refundTrans`), asked after MoMo
/// answered that its orderId was used. Recorded as refused, an earlier attempt that MoMo
/// took would free its amount to be refunded a second time. Not listed: asked again.
fn momo_refund_made(query: &momo::Answer, reference: &str) -> Answer {
    match query.refunds().iter().find(|t| t.order_id == reference) {
        Some(t) => momo_refund_answer(
            t.result_code,
            "MoMo's refund of this payment",
            t.trans_id,
            reference,
        ),
        None => Answer::Later(format!(
            "{}: MoMo says this refund's orderId was used, and its payment lists no refund under it",
            momo::DUPLICATED_ORDER_ID
        )),
    }
}

/// Leaves a refund pending, to be asked again after its `attempts`-th attempt: in 1 s
/// doubling to at most 10 minutes; with the provider's reference when it gave one.
async fn again_later(
    conn: &mut PgConnection,
    id: RefundId,
    r: &Asked,
    said: &str,
    provider_ref: Option<String>,
) -> anyhow::Result<()> {
    let backoff = 2_i64.saturating_pow(u32::try_from(r.attempts.clamp(0, 10)).unwrap_or(10));
    sqlx::query!(
        "UPDATE refunds SET attempts = attempts + 1, provider_answer = $2, provider_ref = COALESCE($3, provider_ref),
                next_attempt_at = now() + make_interval(secs => $4), updated_at = now()
         WHERE id = $1",
        id.0,
        said,
        provider_ref,
        backoff.min(600) as f64,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An operator's refund of (part of) an order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// The order.
    #[schema(value_type = String)]
    pub order_id: OrderId,
    /// Đồng to give back: at most what was paid for the order and not refunded yet.
    #[schema(value_type = i64, minimum = 1)]
    pub amount_vnd: Vnd,
    /// Why (damaged goods...): 1 to 500 characters, shown to the buyer and the seller.
    pub note: String,
    /// The listing of the order line the refund is for, when it is for one line (the
    /// line's commission is then computed on what is left of it); at most what is left of
    /// that line.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub listing_id: Option<ListingId>,
}

fn exceeds(detail_en: String, detail_vi: String) -> ApiError {
    ApiError::validation(vec![FieldError::new(
        "amount_vnd",
        "refund_exceeds_captured",
        Text::new(detail_en, detail_vi),
    )])
}

/// Whether Stripe's answer to a refund is final: a 4xx, except 409 (another request with
/// the same idempotency key still running there, or a lock on the charge) and 429 (too many
/// requests, or a lock timeout), which Stripe documents as worth retrying. A refund asked
/// again carries the same idempotency key, so it cannot be made twice.
///
/// An `idempotency_error` is never a refusal: it says the key was first used otherwise (or
/// is in use), not whether that first use made a refund. Booked refused, a refund Stripe made
/// would be freed to be refunded again; left pending, an operator sees it.
fn stripe_refused(status: u16, kind: &stripe::ApiErrorsType) -> bool {
    (400..500).contains(&status)
        && !matches!(status, 409 | 429)
        && *kind != stripe::ApiErrorsType::IdempotencyError
}

/// An operator refunds part or all of a paid order, with a note (`Idempotency-Key`
/// required: the same key answers the same refund).
#[utoipa::path(post, path = "/v1/payments/refunds", tag = "payment", request_body = RefundRequest,
    params(("Idempotency-Key" = String, Header, description = "1 to 200 characters; a repeat answers the refund made with it")),
    responses((status = 201, body = RefundView), (status = 200, description = "The refund made earlier with this key", body = RefundView),
        (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 404, description = "No online payment for this order", body = nongsan_shared::error::ProblemSchema),
        (status = 409, description = "not_captured: the order's payment has not been taken; balance_too_low: delivered, and the seller was paid out what the refund would take back", body = nongsan_shared::error::ProblemSchema),
        (status = 422, description = "refund_exceeds_captured, validation_failed", body = nongsan_shared::error::ProblemSchema)),
    security(("bearer" = [])))]
pub async fn refund_order(
    State(app): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Json(req): Json<RefundRequest>,
) -> Result<(StatusCode, AxumJson<RefundView>), ApiError> {
    if actor.role != Role::Operator {
        return Err(ApiError::forbidden());
    }
    let mut p = Problems::new();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.chars().count() <= 200);
    p.check(
        key.is_none(),
        "Idempotency-Key",
        "required",
        "is required: 1 to 200 characters",
        "là bắt buộc: 1 đến 200 ký tự",
    );
    p.check(
        req.amount_vnd.get() <= 0,
        "amount_vnd",
        "not_positive",
        "must be more than 0",
        "phải lớn hơn 0",
    );
    p.check_reason("note", Some(req.note.trim()));
    p.check(
        req.note.trim().is_empty(),
        "note",
        "required",
        "is required: say why the buyer gets money back",
        "là bắt buộc: ghi lý do hoàn tiền",
    );
    let key = p.finish_with(key)?;
    let mut tx = app.pool.begin().await?;
    // The order's row first, then its payment's: the order every path locks them in.
    sqlx::query!(
        "SELECT order_id FROM payment_orders WHERE order_id = $1 FOR UPDATE",
        req.order_id.0
    )
    .fetch_optional(&mut *tx)
    .await?;
    let order = sqlx::query!(
        r#"SELECT o.total_vnd, p.id AS "payment_id: PaymentId", p.status AS "status: PaymentStatus"
           FROM payment_orders o JOIN payments p ON p.checkout_id = o.checkout_id WHERE o.order_id = $1
           FOR UPDATE OF p"#,
        req.order_id.0,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found("online payment for this order"))?;
    let earlier = sqlx::query!(
        r#"SELECT id AS "id: RefundId", order_id AS "order_id: OrderId", amount_vnd FROM refunds WHERE payment_id = $1 AND idempotency_key = $2"#,
        order.payment_id.0,
        format!("operator:{key}"),
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(earlier) = earlier {
        if earlier.order_id != Some(req.order_id) || earlier.amount_vnd != req.amount_vnd.get() {
            return Err(ApiError::validation(vec![FieldError::new(
                "Idempotency-Key",
                "idempotency_key_reused",
                Text::new(
                    "was used for another refund",
                    "đã được dùng cho một lần hoàn tiền khác",
                ),
            )]));
        }
        let view = load(&mut tx, earlier.id).await?;
        return Ok((StatusCode::OK, AxumJson(view)));
    }
    if order.status != PaymentStatus::Succeeded {
        return Err(ApiError::conflict(
            "not_captured",
            Text::new(
                "this order's payment has not been taken: there is nothing to refund",
                "đơn này chưa được thanh toán: không có gì để hoàn",
            ),
        ));
    }
    let left = order.total_vnd - refunded_for_order(&mut tx, req.order_id).await?;
    if req.amount_vnd.get() > left {
        return Err(exceeds(
            format!("is more than is left to refund of this order ({left} đồng)"),
            format!("vượt quá số tiền còn có thể hoàn của đơn ({left} đồng)"),
        ));
    }
    if let Some(listing) = req.listing_id {
        let line = sqlx::query!(
            r#"SELECT l.line_total, COALESCE((SELECT sum(amount_vnd) FROM refunds r WHERE r.order_id = l.order_id AND r.listing_id = l.listing_id AND r.status <> 'failed'), 0)::bigint AS "refunded!"
               FROM sale_lines l WHERE l.order_id = $1 AND l.listing_id = $2"#,
            req.order_id.0,
            listing.0,
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| {
            ApiError::validation(vec![FieldError::new(
                "listing_id",
                "not_a_sold_line",
                Text::new(
                    "is not a line of this order that has been sold",
                    "không phải một dòng đã bán của đơn này",
                ),
            )])
        })?;
        let line_left = line.line_total - line.refunded;
        if req.amount_vnd.get() > line_left {
            return Err(exceeds(
                format!("is more than is left to refund of this line ({line_left} đồng)"),
                format!("vượt quá số tiền còn có thể hoàn của dòng này ({line_left} đồng)"),
            ));
        }
    }
    let id = RefundId::new();
    let inserted = sqlx::query!(
        "INSERT INTO refunds (id, payment_id, order_id, amount_vnd, reason, note, idempotency_key, requested_by, listing_id) VALUES ($1, $2, $3, $4, 'operator', $5, $6, $7, $8)",
        id.0,
        order.payment_id.0,
        req.order_id.0,
        req.amount_vnd as _,
        req.note.trim(),
        format!("operator:{key}"),
        actor.account_id.0,
        req.listing_id.map(|l| l.0),
    )
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        // The database's bound: the payment's refunds never exceed its capture.
        Err(sqlx::Error::Database(e)) if e.constraint() == Some("refund_exceeds_captured") => {
            return Err(exceeds(
                "is more than is left of the payment's capture".to_owned(),
                "vượt quá số tiền đã thu của lần thanh toán".to_owned(),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    // After delivery the refund comes out of the seller's (and members') balance, which
    // must cover it: what was paid out is not taken back here.
    ledger::lock_seller_balances(&mut tx, req.order_id).await?;
    let touched =
        ledger::settle_order(&mut tx, req.order_id, "refund asked by an operator").await?;
    nongsan_shared::failpoint::hit_async("refund.operator.before_balance_check").await?;
    if ledger::overdrawn(&mut tx, &touched).await?.is_some() {
        return Err(ApiError::conflict(
            "balance_too_low",
            Text::new(
                "the seller's unpaid balance does not cover this refund: it was paid out already",
                "số dư chưa thanh toán của người bán không đủ cho lần hoàn này: tiền đã được chuyển cho người bán",
            ),
        ));
    }
    tracing::info!(refund = %id, order = %req.order_id, amount_vnd = req.amount_vnd.get(), operator = %actor.account_id, "an operator asked a refund");
    tx.commit().await?;
    nongsan_shared::failpoint::hit_async("refund.operator.before_ask").await?;
    let view = ask_now(&app, id).await?;
    Ok((StatusCode::CREATED, AxumJson(view)))
}

/// Asks the provider for a refund now and answers how it ended. When the worker got to it
/// first, answers the worker's answer instead (waiting while the worker holds the refund's
/// row): a refund the provider left pending is asked again when its next attempt is due, not
/// at once.
async fn ask_now(app: &AppState, id: RefundId) -> anyhow::Result<RefundView> {
    if let Some(view) = process(app, id).await? {
        return Ok(view);
    }
    let mut tx = app.pool.begin().await?;
    sqlx::query!("SELECT id FROM refunds WHERE id = $1 FOR UPDATE", id.0)
        .fetch_one(&mut *tx)
        .await?;
    let view = load(&mut tx, id).await?;
    tx.commit().await?;
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::stripe_refused;

    #[test]
    fn stripe_refusals_are_final_but_a_conflict_or_a_rate_limit_is_asked_again() {
        use stripe::ApiErrorsType::{IdempotencyError, InvalidRequestError};
        for final_answer in [400, 402, 403, 404] {
            assert!(
                stripe_refused(final_answer, &InvalidRequestError),
                "{final_answer}"
            );
            assert!(
                !stripe_refused(final_answer, &IdempotencyError),
                "{final_answer}: a key's conflict is not the refund's refusal"
            );
        }
        for again in [409, 429, 500, 502, 503] {
            assert!(!stripe_refused(again, &InvalidRequestError), "{again}");
        }
    }
}
