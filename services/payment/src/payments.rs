//! Opening payments for checkouts, and VNPay's IPN, the only thing that changes a VNPay
//! payment's state. A payment's result is recorded once, however often it is notified, and
//! told as `payment.succeeded` or `payment.failed` in the same transaction.

use std::collections::BTreeMap;

use axum::{Json as AxumJson, extract::State, http::StatusCode};
use chrono::Utc;
use nongsan_shared::{
    ApiError, CheckoutId, FieldError, PaymentId, Problems, Text, Vnd,
    auth::{Actor, Role},
    events,
    http::Json,
};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::{AppState, momo, vnpay};
use nongsan_shared::contracts::{
    events::{EventType, PaymentEvent},
    payments::{OpenPayment, OpenedPayment, PaymentMethod, PaymentStatus},
};

fn unavailable_method(method: PaymentMethod) -> FieldError {
    FieldError::new(
        "method",
        "payment_method_unavailable",
        Text::new(
            format!("{} payments are not set up here", method.as_str()),
            format!("Chưa hỗ trợ thanh toán {} tại đây", method.as_str()),
        ),
    )
}

/// Internal: opens (or, for a checkout that has one, returns) the payment of a checkout.
#[utoipa::path(post, path = "/v1/internal/payments", tag = "payment", request_body = OpenPayment,
    responses((status = 201, body = OpenedPayment), (status = 422, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn open_payment(
    State(app): State<AppState>,
    actor: Actor,
    Json(p): Json<OpenPayment>,
) -> Result<(StatusCode, AxumJson<OpenedPayment>), ApiError> {
    if actor.role != Role::Service {
        return Err(ApiError::forbidden());
    }
    let s = &app.settings;
    let mut problems = Problems::new();
    problems.check(
        p.amount_vnd.get() <= 0,
        "amount_vnd",
        "not_positive",
        "must be more than 0",
        "phải lớn hơn 0",
    );
    if p.method == PaymentMethod::Cod || !s.payment_methods().contains(&p.method) {
        problems.add(unavailable_method(p.method));
    }
    problems.finish()?;
    // One payment per checkout: a repeated open answers the one made.
    if let Some(opened) = opened_for(&app, p.checkout_id).await? {
        return Ok((StatusCode::CREATED, AxumJson(opened)));
    }
    let id = PaymentId::new();
    let now = Utc::now();
    let expires =
        now + chrono::Duration::seconds(i64::try_from(s.checkout_ttl_secs).unwrap_or(900));
    // Providers want the buyer's address; one we do not know is said as the loopback, as
    // VNPay's own examples do.
    let ip = p
        .client_ip
        .map_or_else(|| "127.0.0.1".to_owned(), |ip| ip.to_string());
    if p.method == PaymentMethod::Momo
        && !(momo::MIN_VND..=momo::MAX_VND).contains(&p.amount_vnd.get())
    {
        return Err(Problems::from(FieldError::new(
            "amount_vnd",
            "amount_out_of_range",
            Text::new(
                format!(
                    "MoMo takes wallet payments from {} to {} đồng",
                    momo::MIN_VND,
                    momo::MAX_VND
                ),
                format!(
                    "MoMo chỉ nhận thanh toán ví từ {} đến {} đồng",
                    momo::MIN_VND,
                    momo::MAX_VND
                ),
            ),
        ))
        .into());
    }
    let (txn_ref, url, client_secret, created) = match (p.method, &app.stripe) {
        (PaymentMethod::Momo, _) => {
            let (Some(partner), Some(access), Some(secret)) =
                (&s.momo_partner_code, &s.momo_access_key, &s.momo_secret_key)
            else {
                return Err(Problems::from(unavailable_method(p.method)).into());
            };
            let order_id = p.checkout_id.0.simple().to_string();
            let body = momo::create_body(
                secret.expose_secret(),
                &momo::Create {
                    partner_code: partner,
                    access_key: access,
                    order_id: &order_id,
                    request_id: &id.0.simple().to_string(),
                    amount: p.amount_vnd.get(),
                    order_info: &format!("Thanh toan don hang {order_id}"),
                    redirect_url: &s.momo_redirect_url,
                    ipn_url: &s.momo_ipn_url,
                    extra_data: "",
                },
            );
            let unavailable = |why: String| {
                tracing::warn!(why, "MoMo did not open the payment");
                ApiError::unavailable(
                    "provider_unavailable",
                    Text::new(
                        "MoMo did not open the payment; nothing was charged",
                        "MoMo không mở được thanh toán; chưa thu tiền",
                    ),
                )
            };
            let answer = momo::call(&app.http, &s.momo_endpoint, "/v2/gateway/api/create", &body)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            let pay_url = match (answer.result_code, answer.pay_url) {
                (0, Some(url)) => url,
                (code, _) => return Err(unavailable(format!("{code}: {}", answer.message))),
            };
            (order_id, Some(pay_url), None, None)
        }
        (PaymentMethod::Stripe, Some(stripe)) => {
            let (intent, secret) = stripe
                .open(p.checkout_id, p.amount_vnd)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "Stripe did not open the payment");
                    ApiError::unavailable(
                        "provider_unavailable",
                        Text::new(
                            "Stripe did not answer; nothing was charged",
                            "Stripe không phản hồi; chưa thu tiền",
                        ),
                    )
                })?;
            (intent, None, Some(secret), None)
        }
        _ => {
            let (Some(tmn), Some(secret)) = (&s.vnpay_tmn_code, &s.vnpay_hash_secret) else {
                return Err(Problems::from(unavailable_method(p.method)).into());
            };
            let txn_ref = p.checkout_id.0.simple().to_string();
            let url = vnpay::payment_url(
                &s.vnpay_pay_url,
                secret.expose_secret(),
                &vnpay::PayRequest {
                    tmn_code: tmn,
                    amount_vnd: p.amount_vnd.get(),
                    txn_ref: &txn_ref,
                    order_info: &format!("Thanh toan don hang {txn_ref}"),
                    return_url: &s.vnpay_return_url,
                    ip: &ip,
                    created: now,
                    expires,
                },
            );
            (txn_ref, Some(url), None, Some(vnpay::vn_time(now)))
        }
    };
    sqlx::query!(
        "INSERT INTO payments (id, checkout_id, buyer_id, method, amount_vnd, txn_ref, payment_url, client_ip, provider_created, expires_at, client_secret)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (checkout_id) DO NOTHING",
        id.0,
        p.checkout_id.0,
        p.buyer_id.0,
        p.method as _,
        p.amount_vnd as _,
        &txn_ref,
        url,
        &ip,
        created,
        expires,
        client_secret,
    )
    .execute(&app.pool)
    .await?;
    let opened = opened_for(&app, p.checkout_id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the payment just stored is gone")))?;
    Ok((StatusCode::CREATED, AxumJson(opened)))
}

/// The payment opened for a checkout, if any.
async fn opened_for(
    app: &AppState,
    checkout: CheckoutId,
) -> Result<Option<OpenedPayment>, ApiError> {
    Ok(sqlx::query_as!(
        OpenedPayment,
        r#"SELECT id AS "id: PaymentId", status AS "status: PaymentStatus", payment_url, client_secret FROM payments WHERE checkout_id = $1"#,
        checkout.0,
    )
    .fetch_optional(&app.pool)
    .await?)
}

/// VNPay's answer codes, in the order the checks are made.
fn rsp(code: &str, message: &str) -> AxumJson<serde_json::Value> {
    AxumJson(json!({ "RspCode": code, "Message": message }))
}

/// VNPay's IPN: a server-to-server GET with the result of a payment.
#[utoipa::path(get, path = "/v1/payments/vnpay/ipn", tag = "payment",
    responses((status = 200, description = "VNPay's RspCode/Message JSON: 00 recorded, 02 already recorded, 01 unknown, 04 wrong amount, 97 bad signature, 99 error")))]
pub async fn handle_vnpay_ipn(
    State(app): State<AppState>,
    axum::extract::Query(params): axum::extract::Query<BTreeMap<String, String>>,
) -> AxumJson<serde_json::Value> {
    let Some(secret) = &app.settings.vnpay_hash_secret else {
        return rsp("97", "Invalid signature");
    };
    if !vnpay::verify(secret.expose_secret(), &params) {
        return rsp("97", "Invalid signature");
    }
    match record_vnpay_result(&app, &params).await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::error!(error = %e, "VNPay IPN failed");
            rsp("99", "Unknow error")
        }
    }
}

async fn record_vnpay_result(
    app: &AppState,
    p: &BTreeMap<String, String>,
) -> anyhow::Result<AxumJson<serde_json::Value>> {
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    nongsan_shared::failpoint::hit("vnpay.ipn.record")?;
    let mut tx = app.pool.begin().await?;
    let row = sqlx::query!(
        r#"SELECT id AS "id: PaymentId", checkout_id AS "checkout_id: CheckoutId", amount_vnd AS "amount_vnd: Vnd",
                status AS "status: PaymentStatus"
           FROM payments WHERE method = 'vnpay' AND txn_ref = $1 FOR UPDATE"#,
        get("vnp_TxnRef"),
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(rsp("01", "Order not found"));
    };
    let (id, checkout, amount, status) = (row.id, row.checkout_id, row.amount_vnd, row.status);
    if get("vnp_Amount").parse::<i64>().ok() != amount.get().checked_mul(100) {
        return Ok(rsp("04", "invalid amount"));
    }
    let succeeded = get("vnp_ResponseCode") == "00" && get("vnp_TransactionStatus") == "00";
    let settled = settle(
        &mut tx,
        &Settled {
            id,
            checkout,
            amount,
            method: PaymentMethod::Vnpay,
            from: status,
            succeeded,
            provider_ref: get("vnp_TransactionNo").to_owned(),
        },
    )
    .await?;
    if !settled {
        return Ok(rsp("02", "Order already confirmed"));
    }
    tx.commit().await?;
    Ok(rsp("00", "Confirm Success"))
}

/// A provider's last word on a pending payment.
#[derive(Debug, Clone)]
pub struct Settled {
    /// The payment.
    pub id: PaymentId,
    /// Its checkout.
    pub checkout: CheckoutId,
    /// Its amount.
    pub amount: Vnd,
    /// Its provider.
    pub method: PaymentMethod,
    /// Where it stood (locked by the caller).
    pub from: PaymentStatus,
    /// The money was taken.
    pub succeeded: bool,
    /// The provider's transaction.
    pub provider_ref: String,
}

/// Whether a provider's word changes a payment that stands at `from`: a pending one takes
/// any answer; a failed one (given up on: its page closed) still takes a capture, which
/// the provider made after all and which must then be accounted for (and refunded by the
/// order side when its orders are gone); a succeeded one takes nothing more.
pub fn settles(from: PaymentStatus, succeeded: bool) -> bool {
    from == PaymentStatus::Pending || (from == PaymentStatus::Failed && succeeded)
}

/// Records the provider's last word on a payment the caller holds locked (the callback, or
/// the reconciler asking the provider), when it [`settles`] it, and tells it as
/// `payment.succeeded` or `payment.failed`, in the caller's transaction. Answers whether it
/// changed anything.
pub async fn settle(tx: &mut sqlx::PgConnection, s: &Settled) -> anyhow::Result<bool> {
    if !settles(s.from, s.succeeded) {
        return Ok(false);
    }
    let (new_status, event) = if s.succeeded {
        (PaymentStatus::Succeeded, EventType::PaymentSucceeded)
    } else {
        (PaymentStatus::Failed, EventType::PaymentFailed)
    };
    sqlx::query!(
        "UPDATE payments SET status = $2, provider_ref = $3, captured_vnd = CASE WHEN $4 THEN amount_vnd ELSE 0 END, updated_at = now()
         WHERE id = $1 AND status = $5",
        s.id.0,
        new_status as _,
        &s.provider_ref,
        s.succeeded,
        s.from as _,
    )
    .execute(&mut *tx)
    .await?;
    let body = PaymentEvent {
        payment_id: s.id,
        checkout_id: s.checkout,
        amount_vnd: s.amount,
        method: s.method,
        provider_ref: s.provider_ref.clone(),
    };
    let version = if s.from == PaymentStatus::Pending {
        1
    } else {
        2
    };
    events::emit(tx, event, &s.id.to_string(), version, &body).await?;
    if s.succeeded {
        // The capture is booked for every order of the checkout known here; an order that
        // arrives later is booked when it does (`order.placed`).
        crate::ledger::lock_checkout(tx, s.checkout.0).await?;
        let orders = sqlx::query_scalar!(
            r#"SELECT order_id AS "id: nongsan_shared::OrderId" FROM payment_orders WHERE checkout_id = $1 ORDER BY order_id"#,
            s.checkout.0,
        )
        .fetch_all(&mut *tx)
        .await?;
        for order in orders {
            crate::ledger::settle_order(tx, order, "payment captured").await?;
        }
    }
    Ok(true)
}

/// What a buyer may pay with.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PaymentMethods {
    /// Cash on delivery always; each provider when it is set up here.
    pub items: Vec<PaymentMethod>,
}

/// The payment methods on offer: a checkout with any other is refused (422).
#[utoipa::path(get, path = "/v1/payments/methods", tag = "payment",
    responses((status = 200, body = PaymentMethods)))]
pub async fn list_methods(State(app): State<AppState>) -> AxumJson<PaymentMethods> {
    AxumJson(PaymentMethods {
        items: app.settings.payment_methods(),
    })
}

/// MoMo's IPN: a signed JSON POST with the result of a wallet payment, answered 204 once it
/// is recorded (or was before). A body MoMo did not sign, or for another amount, is 400 and
/// changes nothing.
#[utoipa::path(post, path = "/v1/payments/momo/ipn", tag = "payment",
    request_body(content = serde_json::Value, description = "MoMo's result (AIO v2), signed with HMAC-SHA256"),
    responses((status = 204, description = "Recorded, or recorded before"),
        (status = 400, description = "bad_signature, amount_mismatch", body = nongsan_shared::error::ProblemSchema),
        (status = 404, description = "No such payment, or MoMo is not set up here", body = nongsan_shared::error::ProblemSchema)))]
pub async fn handle_momo_ipn(
    State(app): State<AppState>,
    Json(ipn): Json<momo::Ipn>,
) -> Result<StatusCode, ApiError> {
    let s = &app.settings;
    let (Some(partner), Some(access), Some(secret)) =
        (&s.momo_partner_code, &s.momo_access_key, &s.momo_secret_key)
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            Text::new("MoMo is not set up here.", "Chưa thiết lập MoMo tại đây."),
        ));
    };
    if ipn.partner_code != *partner || !ipn.verify(access, secret.expose_secret()) {
        return Err(ApiError::bad_request(
            "bad_signature",
            Text::new("MoMo did not sign this result", "MoMo không ký kết quả này"),
        ));
    }
    let mut tx = app.pool.begin().await?;
    let payment = sqlx::query!(
        r#"SELECT id AS "id: PaymentId", checkout_id AS "checkout_id: CheckoutId", amount_vnd AS "amount_vnd: Vnd",
                status AS "status: PaymentStatus"
           FROM payments WHERE method = 'momo' AND txn_ref = $1 FOR UPDATE"#,
        ipn.order_id,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found("payment"))?;
    if ipn.amount != payment.amount_vnd.get() {
        return Err(ApiError::bad_request(
            "amount_mismatch",
            Text::new(
                "the amount is not this payment's",
                "số tiền không khớp với lần thanh toán",
            ),
        ));
    }
    // Not finished at MoMo: its final result decides, by IPN or when the reconciler asks.
    if momo::in_progress(ipn.result_code) {
        return Ok(StatusCode::NO_CONTENT);
    }
    settle(
        &mut tx,
        &Settled {
            id: payment.id,
            checkout: payment.checkout_id,
            amount: payment.amount_vnd,
            method: PaymentMethod::Momo,
            from: payment.status,
            succeeded: ipn.result_code == 0,
            provider_ref: ipn.trans_id.to_string(),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
