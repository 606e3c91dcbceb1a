//! Stripe end to end against localstripe, through async-stripe: a card payment confirmed by
//! a signed webhook, forged and stale webhooks refused, an event delivered three times
//! credited once, a declined card, and a late payment refunded.

use std::time::Duration;

use nongsan_payment::stripe::sign_header;
use serde_json::{Value, json};

use crate::support::{
    TestApp, TestDb,
    calls::basket,
    client::{Client, Request},
    eventually,
    localstripe::{LocalStripe, SECRET_KEY, intent_of},
    test_settings,
    user::User,
};

const WEBHOOK_SECRET: &str = "whsec_nongsan_tests";

/// The app with Stripe at `stripe` (whose webhooks it receives), `tune` applied.
async fn app_with(
    stripe: &LocalStripe,
    tune: impl FnOnce(&mut nongsan_shared::config::Settings),
) -> TestApp {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db).await;
    settings.stripe_secret_key = Some(SECRET_KEY.into());
    settings.stripe_webhook_secret = Some(WEBHOOK_SECRET.into());
    settings.stripe_api_url = Some(stripe.url.clone());
    settings.payment_sweep_ms = 100;
    tune(&mut settings);
    let app = TestApp::spawn_with(settings, db).await;
    stripe
        .webhook_to(&app.api.url("/v1/payments/stripe/webhook"), WEBHOOK_SECRET)
        .await;
    app
}

/// A card checkout of `quantity` kg; answers (checkout, PaymentIntent id).
async fn card_checkout(
    api: &Client,
    buyer: &User,
    listing: &str,
    quantity: &str,
    key: &str,
) -> (Value, String) {
    let (status, c) = api
        .checkout(buyer, key, &basket(&[(listing, quantity)], "stripe"))
        .await;
    assert_eq!(status, 201, "{c}");
    let secret = c["payment_client_secret"]
        .as_str()
        .unwrap_or_else(|| panic!("no client secret: {c}"));
    let intent = intent_of(secret).to_owned();
    (c, intent)
}

async fn webhook(api: &Client, body: &str, signature: &str) -> u16 {
    api.send(
        Request::post("/v1/payments/stripe/webhook")
            .header("stripe-signature", signature)
            .body("application/json", body.as_bytes().to_vec()),
    )
    .await
    .status
}

#[tokio::test]
async fn a_card_payment_confirmed_at_stripe_pays_the_orders_and_sells_the_stock_once() {
    let stripe = LocalStripe::start().await;
    let app = app_with(&stripe, |_| {}).await;
    let api = &app.api;
    let (status, methods) = api.get("/v1/payments/methods", None).await;
    assert_eq!(status, 200);
    assert_eq!(methods["items"], json!(["cod", "vnpay", "stripe"]));
    let (seller, buyer, listing) = api.shop().await;

    let (c, intent) = card_checkout(api, &buyer, &listing, "2", "card-1").await;
    assert_eq!(c["status"], "pending_payment");
    assert_eq!(api.stock(&seller, &listing).await.levels.reserved, "2");
    let (status, paid) = stripe.pay(&intent, "pm_card_visa").await;
    assert_eq!(
        (status, paid["status"].as_str()),
        (200, Some("succeeded")),
        "{paid}"
    );
    assert_eq!(
        paid["amount"].as_i64(),
        c["grand_total"].as_i64(),
        "VND is zero-decimal: the amount is in đồng"
    );

    let id = c["id"].as_str().unwrap();
    api.paid_and_sold(&buyer, id, &seller, &listing, "8").await;

    // A second checkout, paid at Stripe, and its event delivered by hand: forged, stale, then
    // three times.
    let (c, intent) = card_checkout(api, &buyer, &listing, "1", "card-2").await;
    let amount = c["grand_total"].as_i64().unwrap();
    let event = json!({
        "id": "evt_nongsan_1", "object": "event", "type": "payment_intent.succeeded", "created": 1,
        "data": { "object": { "id": intent, "object": "payment_intent", "amount": amount, "amount_received": amount, "status": "succeeded" } }
    })
    .to_string();
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        webhook(
            api,
            &event,
            &sign_header(event.as_bytes(), "whsec_wrong", now)
        )
        .await,
        400
    );
    assert_eq!(
        webhook(
            api,
            &event,
            &sign_header(event.as_bytes(), WEBHOOK_SECRET, now - 301)
        )
        .await,
        400
    );
    assert_eq!(webhook(api, &event, "t=1,v1=00").await, 400);
    let checkout = c["id"].as_str().unwrap();
    let (_, read) = api.read_checkout(&buyer, checkout).await;
    assert_eq!(
        read["status"], "pending_payment",
        "refused webhooks change nothing"
    );
    for _ in 0..3 {
        assert_eq!(
            webhook(
                api,
                &event,
                &sign_header(event.as_bytes(), WEBHOOK_SECRET, now)
            )
            .await,
            200
        );
    }
    eventually(
        Duration::from_secs(20),
        "the second checkout to be paid",
        || async {
            let (_, c) = api.read_checkout(&buyer, checkout).await;
            (c["status"] == "paid").then_some(())
        },
    )
    .await;
    let payments = app.db.pool("payment").await;
    let credited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE event_type = 'payment.succeeded' AND payload->>'checkout_id' = $1",
    )
    .bind(checkout)
    .fetch_one(&payments)
    .await
    .unwrap();
    assert_eq!(credited, 1, "the same event three times credits once");

    // Out of order: a failure reported after the success changes nothing.
    let late_failure = json!({
        "id": "evt_nongsan_2", "object": "event", "type": "payment_intent.payment_failed", "created": 1,
        "data": { "object": { "id": intent, "object": "payment_intent", "amount": amount, "amount_received": 0, "status": "requires_payment_method" } }
    })
    .to_string();
    assert_eq!(
        webhook(
            api,
            &late_failure,
            &sign_header(late_failure.as_bytes(), WEBHOOK_SECRET, now)
        )
        .await,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, read) = api.read_checkout(&buyer, checkout).await;
    assert_eq!(read["status"], "paid", "{read}");
    let status: String = sqlx::query_scalar("SELECT status FROM payments WHERE txn_ref = $1")
        .bind(&intent)
        .fetch_one(&payments)
        .await
        .unwrap();
    assert_eq!(status, "succeeded");
    app.stop().await;
}

#[tokio::test]
async fn a_declined_card_leaves_the_orders_unpaid_and_the_stock_held_until_the_checkout_expires() {
    let stripe = LocalStripe::start().await;
    let app = app_with(&stripe, |s| s.checkout_ttl_secs = 3).await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let (c, intent) = card_checkout(api, &buyer, &listing, "2", "declined").await;
    let (status, body) = stripe.pay(&intent, "pm_card_chargeCustomerFail").await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["code"], "card_declined");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = c["id"].as_str().unwrap();
    let (_, read) = api.read_checkout(&buyer, id).await;
    assert_eq!(read["orders"][0]["status"], "pending_payment", "{read}");
    assert_eq!(
        api.stock(&seller, &listing).await.levels.reserved,
        "2",
        "still held: the buyer may try another card"
    );
    eventually(
        Duration::from_secs(20),
        "the checkout to expire and give the stock back",
        || async {
            let (_, c) = api.read_checkout(&buyer, id).await;
            let s = api.stock(&seller, &listing).await.levels;
            (c["orders"][0]["status"] == "expired" && s.reserved == "0").then_some(())
        },
    )
    .await;
    assert!(
        stripe.refunds().await.is_empty(),
        "nothing was taken, nothing is given back"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_card_payment_that_arrives_after_the_checkout_expired_is_refunded_at_stripe_once() {
    let stripe = LocalStripe::start().await;
    let app = app_with(&stripe, |s| s.checkout_ttl_secs = 1).await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let (c, intent) = card_checkout(api, &buyer, &listing, "2", "late").await;
    let id = c["id"].as_str().unwrap();
    let order = c["orders"][0]["id"].as_str().unwrap();
    eventually(
        Duration::from_secs(15),
        "the checkout to expire",
        || async {
            let (_, c) = api.read_checkout(&buyer, id).await;
            (c["orders"][0]["status"] == "expired").then_some(())
        },
    )
    .await;
    let (status, body) = stripe.pay(&intent, "pm_card_visa").await;
    assert_eq!(status, 200, "{body}");

    let o = eventually(
        Duration::from_secs(20),
        "the refund to show on the order",
        || async {
            let (_, o) = api.read_order(&buyer, order).await;
            (o["refunds"].as_array().map(Vec::len) == Some(1)).then_some(o)
        },
    )
    .await;
    assert_eq!(o["refunds"][0]["status"], "succeeded", "{o}");
    assert_eq!(o["refunds"][0]["reason"], "not_payable");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refunds = stripe.refunds().await;
    assert_eq!(
        refunds.len(),
        1,
        "Stripe's refund endpoint is called once: {refunds:?}"
    );
    assert_eq!(refunds[0]["payment_intent"], intent.as_str());
    assert_eq!(refunds[0]["amount"].as_i64(), o["total"].as_i64());
    let s = api.stock(&seller, &listing).await.levels;
    assert_eq!(
        (s.on_hand.as_str(), s.reserved.as_str()),
        ("10", "0"),
        "nothing was sold"
    );
    app.stop().await;
}
