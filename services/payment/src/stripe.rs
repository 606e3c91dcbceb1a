//! Stripe, for international cards, through `async-stripe`: a PaymentIntent in VND (a
//! zero-decimal currency: the amount is in đồng) opened with an idempotency key derived from
//! the checkout, its webhook (the `Stripe-Signature` checked over the raw body, 300 s
//! tolerance, each event acted on once), refunds, and asking a PaymentIntent's state for
//! the reconciler.
//!
//! A declined card does not end a payment: the buyer may try another card on the same
//! PaymentIntent until the checkout expires, so only `payment_intent.succeeded` settles
//! one. Events may come in any order and more than once; an event that comes before its
//! payment is stored is refused (Stripe sends it again).

use std::collections::HashMap;

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chrono::Utc;
use hmac::{Hmac, Mac};
use nongsan_shared::{
    ApiError, CheckoutId, PaymentId, RefundId, Text, Vnd,
    contracts::payments::{PaymentMethod, PaymentStatus},
};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_core::{
    PaymentIntentStatus,
    payment_intent::{CreatePaymentIntent, RetrievePaymentIntent},
    refund::{CreateRefund, RetrieveRefund},
};

use crate::{
    AppState,
    payments::{Settled, settle},
    refunds,
};

/// The metadata key of a refund made by nongsan: our refund's id (simple form).
pub const REFUND_METADATA: &str = "nongsan_refund";

/// How old a webhook's signature may be, seconds.
pub const TOLERANCE_SECS: i64 = 300;

/// Stripe, when its keys are set.
pub struct Stripe {
    client: Client,
    webhook_secret: SecretString,
}

impl std::fmt::Debug for Stripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stripe").finish_non_exhaustive()
    }
}

impl Stripe {
    /// From the settings: `None` when Stripe is not set up.
    pub fn from_settings(s: &nongsan_shared::config::Settings) -> anyhow::Result<Option<Self>> {
        let (Some(key), Some(webhook_secret)) = (&s.stripe_secret_key, &s.stripe_webhook_secret)
        else {
            return Ok(None);
        };
        let mut builder =
            ClientBuilder::new(key.expose_secret()).timeout(std::time::Duration::from_secs(20));
        if let Some(url) = &s.stripe_api_url {
            builder = builder.url(url.clone());
        }
        let client = builder
            .build()
            .map_err(|e| anyhow::anyhow!("the Stripe client: {e}"))?;
        Ok(Some(Self {
            client,
            webhook_secret: webhook_secret.clone(),
        }))
    }

    /// Opens the PaymentIntent of a checkout: (its id, its client secret). The same
    /// checkout always asks with the same idempotency key, so a retried call opens one.
    pub async fn open(
        &self,
        checkout: CheckoutId,
        amount: Vnd,
    ) -> Result<(String, String), StripeError> {
        // Only what the idempotency key is made of: a retry sends the same parameters.
        let metadata = HashMap::from([("checkout_id".to_owned(), checkout.to_string())]);
        let intent = CreatePaymentIntent::new(amount.get(), stripe_types::Currency::VND)
            .metadata(metadata)
            .customize()
            .request_strategy(RequestStrategy::Idempotent(idempotency_key(&format!(
                "nongsan-checkout-{checkout}"
            ))))
            .send(&self.client)
            .await?;
        Ok((
            intent.id.to_string(),
            intent.client_secret.unwrap_or_default(),
        ))
    }

    /// Refunds `amount` of a PaymentIntent, keyed by our refund id, which the refund also
    /// carries in its metadata (`nongsan_refund`, read back from its webhooks): (Stripe's
    /// refund id, its status: `succeeded`, `pending`, `requires_action`, `failed` or
    /// `canceled`).
    pub async fn refund(
        &self,
        intent: &str,
        amount: i64,
        refund_id: &str,
    ) -> Result<(String, Option<String>), StripeError> {
        let create = |tagged: bool| {
            let refund = CreateRefund::new().payment_intent(intent).amount(amount);
            if tagged {
                refund.metadata(HashMap::from([(
                    REFUND_METADATA.to_owned(),
                    refund_id.to_owned(),
                )]))
            } else {
                refund
            }
        };
        let key = format!("nongsan-refund-{refund_id}");
        let made = match self.create_refund(create(true), &key).await {
            // 400: the key was used with other parameters: a refund asked before refunds
            // carried their id (its answer lost, asked again since). Asked again as it was
            // then, Stripe answers what it made. (409 is the same key's request still running
            // at Stripe: asked again later, as it is.) Whatever Stripe says of a key, the
            // refund is not refused: see `refunds::stripe_refused`.
            Err(StripeError::Stripe(e, 400))
                if e.type_ == stripe::ApiErrorsType::IdempotencyError =>
            {
                self.create_refund(create(false), &key).await
            }
            made => made,
        }?;
        Ok((made.id.to_string(), made.status))
    }

    async fn create_refund(
        &self,
        refund: CreateRefund,
        key: &str,
    ) -> Result<stripe_core::Refund, StripeError> {
        refund
            .customize()
            .request_strategy(RequestStrategy::Idempotent(idempotency_key(key)))
            .send(&self.client)
            .await
    }

    /// A refund's status now (a refund Stripe answered `pending` is asked again this way, not
    /// made again: an idempotency key is kept for 24 hours only).
    pub async fn refund_status(&self, refund: &str) -> Result<Option<String>, StripeError> {
        Ok(RetrieveRefund::new(refund).send(&self.client).await?.status)
    }

    /// A PaymentIntent's state and what it received.
    pub async fn state(&self, intent: &str) -> Result<(PaymentIntentStatus, i64), StripeError> {
        let intent = RetrievePaymentIntent::new(intent)
            .send(&self.client)
            .await?;
        Ok((intent.status, intent.amount_received))
    }
}

fn idempotency_key(key: &str) -> IdempotencyKey {
    IdempotencyKey::new(key).expect("our keys are short and not empty")
}

/// Why a webhook signature is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadSignature {
    /// No `t=` or no `v1=` in the header.
    Malformed,
    /// Signed longer ago (or further ahead) than the tolerance.
    Stale,
    /// No `v1` matches.
    Mismatch,
}

/// Checks a `Stripe-Signature` header (`t=<unix>,v1=<hex>[,v1=...]`) over the raw body:
/// some `v1` is `hex(HMAC-SHA256(secret, "<t>." + body))`, and `t` is within `tolerance`
/// seconds of `now`.
pub fn verify_signature(
    header: &str,
    body: &[u8],
    secret: &str,
    now: i64,
    tolerance: i64,
) -> Result<(), BadSignature> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.push(v),
            _ => {}
        }
    }
    let t = timestamp.ok_or(BadSignature::Malformed)?;
    if signatures.is_empty() {
        return Err(BadSignature::Malformed);
    }
    if now.abs_diff(t) > tolerance.unsigned_abs() {
        return Err(BadSignature::Stale);
    }
    let matches = |hex: &str| {
        let Some(given) = crate::hex::decode(hex) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&given).is_ok()
    };
    if signatures.into_iter().any(matches) {
        Ok(())
    } else {
        Err(BadSignature::Mismatch)
    }
}

/// `t=<t>,v1=<signature>`: how Stripe signs `body` at `t` (for tests and tools).
pub fn sign_header(body: &[u8], secret: &str, t: i64) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={t},v1={}",
        crate::hex::encode(&mac.finalize().into_bytes())
    )
}

/// The part of an event nongsan reads.
#[derive(Debug, serde::Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Debug, serde::Deserialize)]
struct EventData {
    object: EventObject,
}

#[derive(Debug, serde::Deserialize)]
struct EventObject {
    id: String,
    #[serde(default)]
    amount_received: i64,
    /// A refund's status.
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

/// What a refund's Stripe status says: `succeeded` is done, `failed` and `canceled` are
/// final refusals, and `pending` or `requires_action` (or a status Stripe adds later) is
/// still being processed.
pub fn refund_answer(refund: &str, status: &str) -> refunds::Answer {
    match status {
        "succeeded" => refunds::Answer::Done(refund.to_owned()),
        "failed" | "canceled" => refunds::Answer::Refused(format!("{status}: {refund}")),
        _ => refunds::Answer::Processing(refund.to_owned()),
    }
}

fn bad_request(code: &'static str, en: &str, vi: &str) -> ApiError {
    ApiError::bad_request(code, Text::new(en, vi))
}

/// Stripe's webhook: `payment_intent.succeeded` settles the payment; other events are
/// acknowledged. A bad or stale signature is 400 and changes nothing; an event seen before
/// is acknowledged again and changes nothing.
#[utoipa::path(post, path = "/v1/payments/stripe/webhook", tag = "payment",
    request_body(content = String, description = "The event, as Stripe sent it (signed raw body)", content_type = "application/json"),
    params(("Stripe-Signature" = String, Header, description = "t=<unix time>,v1=<HMAC-SHA256>")),
    responses((status = 200, description = "Recorded, or seen before"), (status = 400, description = "bad_signature, stale_signature, not_an_event", body = nongsan_shared::error::ProblemSchema),
        (status = 404, description = "Stripe is not set up here", body = nongsan_shared::error::ProblemSchema),
        (status = 503, description = "payment_not_stored_yet: the event came before its payment was stored (Stripe sends it again)", body = nongsan_shared::error::ProblemSchema)))]
pub async fn handle_webhook(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let Some(stripe) = &app.stripe else {
        // Without Stripe's keys there is no Stripe endpoint here.
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            Text::new(
                "Stripe is not set up here.",
                "Chưa thiết lập Stripe tại đây.",
            ),
        ));
    };
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match verify_signature(
        header,
        &body,
        stripe.webhook_secret.expose_secret(),
        Utc::now().timestamp(),
        TOLERANCE_SECS,
    ) {
        Ok(()) => {}
        Err(BadSignature::Stale) => {
            return Err(bad_request(
                "stale_signature",
                "the signature is older than 300 seconds",
                "chữ ký đã quá 300 giây",
            ));
        }
        Err(_) => {
            return Err(bad_request(
                "bad_signature",
                "the Stripe-Signature header does not sign this body",
                "tiêu đề Stripe-Signature không khớp nội dung",
            ));
        }
    }
    let event: Event = serde_json::from_slice(&body).map_err(|_| {
        bad_request(
            "not_an_event",
            "the body is not a Stripe event",
            "nội dung không phải sự kiện Stripe",
        )
    })?;
    let mut tx = app.pool.begin().await?;
    let first = sqlx::query!(
        "INSERT INTO stripe_events (id, event_type) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        event.id,
        event.kind,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !first {
        return Ok(StatusCode::OK);
    }
    match event.kind.as_str() {
        "payment_intent.succeeded" => {
            let payment = sqlx::query!(
                r#"SELECT id AS "id: PaymentId", checkout_id AS "checkout_id: CheckoutId", amount_vnd AS "amount_vnd: Vnd",
                        status AS "status: PaymentStatus"
                   FROM payments WHERE method = 'stripe' AND txn_ref = $1 FOR UPDATE"#,
                event.data.object.id,
            )
            .fetch_optional(&mut *tx)
            .await?;
            let Some(p) = payment else {
                let ours = event
                    .data
                    .object
                    .metadata
                    .get("checkout_id")
                    .is_some_and(|c| c.parse::<CheckoutId>().is_ok());
                if !ours {
                    // Not a PaymentIntent nongsan opened (each carries its checkout's id):
                    // another integration's on the same account. Recorded, and acknowledged
                    // so that Stripe stops sending it.
                    tx.commit().await?;
                    tracing::info!(intent = %event.data.object.id, "a Stripe event for a PaymentIntent nongsan did not open; ignored");
                    return Ok(StatusCode::OK);
                }
                // Not stored yet (the event overtook us): not recorded, so Stripe's next
                // delivery is acted on.
                return Err(ApiError::unavailable(
                    "payment_not_stored_yet",
                    Text::new("the payment is not stored yet", "thanh toán chưa được lưu"),
                ));
            };
            if event.data.object.amount_received != p.amount_vnd.get() {
                tracing::error!(payment = %p.id, received = event.data.object.amount_received, "Stripe reports another amount; left for an operator");
            } else {
                settle(
                    &mut tx,
                    &Settled {
                        id: p.id,
                        checkout: p.checkout_id,
                        amount: p.amount_vnd,
                        method: PaymentMethod::Stripe,
                        from: p.status,
                        succeeded: true,
                        provider_ref: event.data.object.id.clone(),
                    },
                )
                .await?;
            }
        }
        "payment_intent.payment_failed" => {
            // The buyer may try another card; the checkout's own expiry ends it.
            tracing::info!(intent = event.data.object.id, "a card was declined");
        }
        // A refund's status changed: one answered `pending` ended, or one that succeeded
        // failed later (the buyer's bank could not take it back). Ours carry our id in their
        // metadata, but for a refund first asked before they did (recovered since without
        // it): that one is known by its Stripe id. Refunds made elsewhere (the Stripe
        // dashboard) are not ours to record.
        "refund.updated" | "refund.failed" | "charge.refund.updated" => {
            let object = &event.data.object;
            let tagged = object
                .metadata
                .get(REFUND_METADATA)
                .and_then(|id| id.parse::<uuid::Uuid>().ok())
                .map(RefundId);
            let ours = match tagged {
                Some(id) => Some(id),
                None => sqlx::query_scalar!(
                    r#"SELECT r.id AS "id: RefundId" FROM refunds r JOIN payments p ON p.id = r.payment_id
                       WHERE r.provider_ref = $1 AND p.method = 'stripe'"#,
                    object.id,
                )
                .fetch_optional(&mut *tx)
                .await?,
            };
            match (ours, object.status.as_deref()) {
                (Some(refund), Some(status)) => {
                    refunds::provider_said(&mut tx, refund, refund_answer(&object.id, status))
                        .await?;
                }
                _ => tracing::info!(
                    refund = object.id,
                    "a Stripe refund that nongsan did not make"
                ),
            }
        }
        other => tracing::debug!(event = other, "a Stripe event nongsan does not act on"),
    }
    tx.commit().await?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a fake Stripe was asked: each refund request's idempotency key and body.
    type Asked = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

    /// A Stripe client on a fake Stripe whose refund endpoint answers `answer(tagged)`, tagged
    /// when the request carries metadata.
    async fn on_fake_stripe(
        answer: fn(bool) -> (axum::http::StatusCode, serde_json::Value),
    ) -> (Stripe, Asked) {
        use axum::{Json, http::HeaderMap, routing::post};
        let asked = Asked::default();
        let seen = asked.clone();
        let fake = axum::Router::new().route(
            "/v1/refunds",
            post(move |headers: HeaderMap, body: String| {
                let seen = seen.clone();
                async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|k| k.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let (status, json) = answer(body.contains("metadata"));
                    seen.lock().unwrap().push((key, body));
                    (status, Json(json))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, fake).await });
        let settings = nongsan_shared::config::Settings {
            stripe_secret_key: Some("sk_test_123".to_owned().into()),
            stripe_webhook_secret: Some("whsec_123".to_owned().into()),
            stripe_api_url: Some(format!("http://{addr}/")),
            ..Default::default()
        };
        let stripe = Stripe::from_settings(&settings)
            .unwrap()
            .expect("Stripe set up");
        (stripe, asked)
    }

    fn idempotency_error() -> serde_json::Value {
        serde_json::json!({"error": {
            "type": "idempotency_error",
            "message": "Keys for idempotent requests can only be used with the same parameters they were first used with."
        }})
    }

    /// A refund asked before refunds carried our id in their metadata, whose answer was lost:
    /// asked again with the metadata under the same idempotency key, Stripe refuses the key
    /// (400 `idempotency_error`); asked again as it was first asked, Stripe answers the refund
    /// it made. Before, the refusal was final: booked failed, its amount refunded a second
    /// time.
    #[tokio::test]
    async fn a_refund_whose_key_was_used_without_our_id_is_asked_again_as_it_was() {
        use axum::http::StatusCode;
        // Stripe as it answers a key first used for a refund without metadata.
        let (stripe, asked) = on_fake_stripe(|tagged| {
            if tagged {
                (StatusCode::BAD_REQUEST, idempotency_error())
            } else {
                (
                    StatusCode::OK,
                    serde_json::json!({
                        "id": "re_made_before", "object": "refund", "amount": 10_000,
                        "created": T, "currency": "vnd", "status": "succeeded",
                        "payment_intent": "pi_1"
                    }),
                )
            }
        })
        .await;

        let made = stripe
            .refund("pi_1", 10_000, "r1")
            .await
            .expect("the refund");

        assert_eq!(
            made,
            ("re_made_before".to_owned(), Some("succeeded".to_owned()))
        );
        let asked = asked.lock().unwrap();
        assert_eq!(asked.len(), 2, "{asked:?}");
        assert!(
            asked[0].1.contains("metadata") && !asked[1].1.contains("metadata"),
            "{asked:?}"
        );
        assert!(
            asked.iter().all(|(key, _)| key == "nongsan-refund-r1"),
            "{asked:?}"
        );
    }

    /// 409 `idempotency_error`: the same key's first request is still running at Stripe (ours
    /// timed out). Asked again at once without the metadata, Stripe would answer 400 and the
    /// refund would be booked failed while Stripe makes it; it is left to be asked again later.
    #[tokio::test]
    async fn a_refund_whose_key_is_still_in_use_at_stripe_is_not_asked_again_at_once() {
        let (stripe, asked) =
            on_fake_stripe(|_| (axum::http::StatusCode::CONFLICT, idempotency_error())).await;

        let answer = stripe.refund("pi_1", 10_000, "r1").await;

        assert!(
            matches!(&answer, Err(StripeError::Stripe(e, 409)) if e.type_ == stripe::ApiErrorsType::IdempotencyError),
            "{answer:?}"
        );
        assert_eq!(asked.lock().unwrap().len(), 1, "asked once");
    }

    const T: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1"}"#;

    #[test]
    fn a_refund_is_done_when_succeeded_refused_when_failed_or_canceled_and_otherwise_processing() {
        assert_eq!(
            refund_answer("re_1", "succeeded"),
            refunds::Answer::Done("re_1".into())
        );
        for end in ["failed", "canceled"] {
            assert_eq!(
                refund_answer("re_1", end),
                refunds::Answer::Refused(format!("{end}: re_1"))
            );
        }
        for on in [
            "pending",
            "requires_action",
            "",
            "a_status_stripe_adds_later",
        ] {
            assert_eq!(
                refund_answer("re_1", on),
                refunds::Answer::Processing("re_1".into()),
                "{on}"
            );
        }
    }

    #[test]
    fn a_signature_is_stripes_hmac_sha256_over_the_timestamp_and_the_raw_body() {
        // Computed independently (Python's hmac) for secret whsec_x at t = 1700000000.
        assert_eq!(
            sign_header(BODY, "whsec_x", T),
            "t=1700000000,v1=366e40c480fe3a9e6a03609dca079cea86d77ae82d5a56b5348208247317a8d1"
        );
    }

    #[test]
    fn the_signature_holds_for_300_seconds_and_not_one_more() {
        let header = sign_header(BODY, "whsec_x", T);
        assert_eq!(verify_signature(&header, BODY, "whsec_x", T, 300), Ok(()));
        assert_eq!(
            verify_signature(&header, BODY, "whsec_x", T + 300, 300),
            Ok(())
        );
        assert_eq!(
            verify_signature(&header, BODY, "whsec_x", T + 301, 300),
            Err(BadSignature::Stale)
        );
    }

    /// A timestamp far from now is stale, never an overflow (a panic, or in a release build
    /// a wrapped difference that passes for fresh).
    #[test]
    fn a_timestamp_at_the_ends_of_the_range_is_stale() {
        for t in [i64::MIN, i64::MIN + T, i64::MAX] {
            let header = format!("t={t},v1=00");
            assert_eq!(
                verify_signature(&header, BODY, "whsec_x", T, 300),
                Err(BadSignature::Stale),
                "t={t}"
            );
        }
    }

    #[test]
    fn another_secret_another_body_or_a_broken_header_is_refused() {
        let header = sign_header(BODY, "whsec_x", T);
        assert_eq!(
            verify_signature(&header, BODY, "whsec_y", T, 300),
            Err(BadSignature::Mismatch)
        );
        assert_eq!(
            verify_signature(&header, br#"{"id":"evt_2"}"#, "whsec_x", T, 300),
            Err(BadSignature::Mismatch)
        );
        for broken in [
            "",
            "t=1700000000",
            "v1=00",
            "t=x,v1=00",
            "t=1700000000,v1=é",
        ] {
            assert!(
                verify_signature(broken, BODY, "whsec_x", T, 300).is_err(),
                "{broken}"
            );
        }
        // Any matching v1 of several is enough (Stripe signs with each active secret).
        let two = format!("{header},v1=00");
        let (t, v1) = two.split_once(',').unwrap();
        let reordered = format!("{t},v1=00,{v1}");
        assert_eq!(
            verify_signature(&reordered, BODY, "whsec_x", T, 300),
            Ok(())
        );
    }
}
