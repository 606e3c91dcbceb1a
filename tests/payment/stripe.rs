//! Stripe end to end against localstripe, through async-stripe: a card payment confirmed by
//! a signed webhook, forged and stale webhooks refused, an event delivered three times
//! credited once, a declined card, a late payment refunded, a refund Stripe answers
//! `pending`, and a refund that fails after it succeeded.

use std::time::Duration;

use nongsan_payment::stripe::sign_header;
use nongsan_shared::auth::Role;
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
    // Long enough for the declined payment and the reads after it (two calls to localstripe
    // on a loaded machine) before the checkout expires.
    let app = app_with(&stripe, |s| s.checkout_ttl_secs = 10).await;
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
        Duration::from_secs(30),
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

/// A paid card checkout of 1 kg and an operator's refund of 10,000 đ of its order, asked
/// until the payment side knows the order: (order id, what was paid, the first answer, the
/// buyer).
async fn paid_and_refunded(
    stripe: &LocalStripe,
    app: &TestApp,
    key: &str,
) -> (String, i64, Value, User) {
    let api = &app.api;
    let (_, buyer, listing) = api.shop().await;
    let (c, intent) = card_checkout(api, &buyer, &listing, "1", "refund-me").await;
    let (status, body) = stripe.pay(&intent, "pm_card_visa").await;
    assert_eq!(status, 200, "{body}");
    let checkout = c["id"].as_str().unwrap();
    eventually(
        Duration::from_secs(20),
        "the checkout to be paid",
        || async {
            let (_, c) = api.read_checkout(&buyer, checkout).await;
            (c["status"] == "paid").then_some(())
        },
    )
    .await;
    let order = c["orders"][0]["id"].as_str().unwrap().to_owned();
    let operator = User::minted(Role::Operator);
    let (status, refund) = eventually(
        Duration::from_secs(15),
        "the order to be known to payments",
        || async {
            let (status, r) =
                super::refunds::operator_refund(api, &operator, &order, 10_000, key).await;
            (status != 404).then_some((status, r))
        },
    )
    .await;
    assert_eq!(status, 201, "{refund}");
    (order, c["grand_total"].as_i64().unwrap(), refund, buyer)
}

/// What the payment side counts as refunded of its payments.
async fn refunded_vnd(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(sum(refunded_vnd), 0)::bigint FROM payments")
        .fetch_one(&app.db.pool("payment").await)
        .await
        .unwrap()
}

/// Stripe may answer a refund `pending` (it is still being processed). It was booked as
/// succeeded at once, and then never looked at again. Now it stays pending, is asked how it
/// stands (not made again: Stripe keeps an idempotency key for 24 hours only), and ends when
/// Stripe says. localstripe answers every refund `succeeded`, so a fail point reads its first
/// answer as `pending`.
#[tokio::test]
async fn a_refund_stripe_answers_pending_stays_pending_until_stripe_says_it_succeeded() {
    let stripe = LocalStripe::start().await;
    let app = app_with(&stripe, |_| {}).await;
    nongsan_shared::failpoint::set(
        "refund.stripe_pending",
        nongsan_shared::failpoint::Action::Error { times: 1 },
    );
    let (order, _, refund, _) = paid_and_refunded(&stripe, &app, "pending-1").await;
    assert_eq!(refund["status"], "pending", "{refund}");
    assert_eq!(refunded_vnd(&app).await, 10_000, "a pending refund counts");
    let operator = User::minted(Role::Operator);
    let ended = eventually(
        Duration::from_secs(15),
        "the refund to be asked again and end",
        || async {
            let (_, r) =
                super::refunds::operator_refund(&app.api, &operator, &order, 10_000, "pending-1")
                    .await;
            (r["status"] != "pending").then_some(r)
        },
    )
    .await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    assert_eq!(ended["id"], refund["id"]);
    let made = stripe.refunds().await;
    assert_eq!(
        made.len(),
        1,
        "asked how it stands, not made again: {made:?}"
    );
    assert_eq!(ended["provider_ref"], made[0]["id"]);
    app.stop().await;
}

/// The refund worker sweeps every pending refund, so it may ask Stripe for an operator's
/// refund before the operator's request does. The request then answers what Stripe told the
/// worker, and does not ask again before the refund's next attempt is due. It asked again at
/// once, which overrode the backoff the worker had just set (and, for a provider whose "ask"
/// is the refund request itself, sent it twice within milliseconds).
#[tokio::test]
async fn a_refund_the_worker_asked_first_is_answered_as_it_stands_and_not_asked_again_at_once() {
    let stripe = LocalStripe::start().await;
    let app = app_with(&stripe, |_| {}).await;
    nongsan_shared::failpoint::set(
        "refund.stripe_pending",
        nongsan_shared::failpoint::Action::Error { times: 1 },
    );
    // The worker sweeps every 100 ms: it asks first, and its answer (pending) sets the next
    // attempt a second later.
    nongsan_shared::failpoint::set(
        "refund.operator.before_ask",
        nongsan_shared::failpoint::Action::Delay(600),
    );
    let (_, _, refund, _) = paid_and_refunded(&stripe, &app, "worker-first").await;
    assert_eq!(refund["status"], "pending", "{refund}");
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM refunds WHERE id = $1::uuid")
        .bind(refund["id"].as_str().unwrap())
        .fetch_one(&app.db.pool("payment").await)
        .await
        .unwrap();
    assert_eq!(attempts, 1, "asked once");
    nongsan_shared::failpoint::clear("refund.operator.before_ask");
    app.stop().await;
}

/// A refund that Stripe answered `succeeded` can fail days later (the buyer's bank cannot
/// take the money back): Stripe sends `refund.failed`. That event was ignored, so the order
/// showed the money given back and its amount stayed taken from the payment. Now the refund
/// is failed, its order shows it, its amount can be refunded again, and the order's ledger
/// gives back what the refund took, once however often the event comes.
#[tokio::test]
async fn a_stripe_refund_that_fails_after_it_succeeded_is_failed_and_its_amount_freed() {
    let stripe = LocalStripe::start().await;
    let app = app_with(&stripe, |_| {}).await;
    let api = &app.api;
    let (order, paid, refund, buyer) = paid_and_refunded(&stripe, &app, "late-fail").await;
    assert_eq!(refund["status"], "succeeded", "{refund}");
    assert_eq!(refunded_vnd(&app).await, 10_000);
    let made = stripe.refunds().await;
    assert_eq!(made.len(), 1, "{made:?}");
    let ours = uuid::Uuid::parse_str(refund["id"].as_str().unwrap()).unwrap();
    assert_eq!(
        made[0]["metadata"]["nongsan_refund"],
        ours.simple().to_string(),
        "the refund carries its id at Stripe"
    );
    let stripe_ref = made[0]["id"].as_str().unwrap();
    let event = |id: &str, kind: &str, metadata: Value| {
        json!({
            "id": id, "object": "event", "type": kind, "created": 1,
            "data": { "object": { "id": stripe_ref, "object": "refund", "amount": 10_000, "status": "failed", "metadata": metadata } }
        })
        .to_string()
    };
    let now = chrono::Utc::now().timestamp();
    let failed = event(
        "evt_refund_failed",
        "refund.failed",
        json!({ "nongsan_refund": ours.simple().to_string() }),
    );
    // The same event three times, and Stripe's older event for the same change.
    let updated = event(
        "evt_refund_updated",
        "charge.refund.updated",
        json!({ "nongsan_refund": ours.simple().to_string() }),
    );
    for body in [&failed, &failed, &failed, &updated] {
        let signature = sign_header(body.as_bytes(), WEBHOOK_SECRET, now);
        assert_eq!(webhook(api, body, &signature).await, 200);
    }

    let operator = User::minted(Role::Operator);
    let (_, again) =
        super::refunds::operator_refund(api, &operator, &order, 10_000, "late-fail").await;
    assert_eq!(again["status"], "failed", "{again}");
    assert_eq!(
        again["provider_ref"], stripe_ref,
        "the reference it had is kept"
    );
    assert_eq!(refunded_vnd(&app).await, 0, "its amount is freed");
    let payments = app.db.pool("payment").await;
    let reversed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledger_transactions WHERE order_id = $1::uuid AND memo = 'refund failed at the provider after it succeeded'",
    )
    .bind(&order)
    .fetch_one(&payments)
    .await
    .unwrap();
    assert_eq!(
        reversed, 1,
        "the ledger gives back what the refund took, once"
    );
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE event_type = 'payment.refunded' AND aggregate_id = $1",
    )
    .bind(ours.to_string())
    .fetch_one(&payments)
    .await
    .unwrap();
    assert_eq!(ended, 2, "succeeded, then failed");
    let shown = eventually(
        Duration::from_secs(15),
        "the order to show the refund failed",
        || async {
            let (_, o) = api.read_order(&buyer, &order).await;
            (o["refunds"][0]["status"] == "failed").then_some(o)
        },
    )
    .await;
    assert_eq!(
        shown["refunds"].as_array().map(Vec::len),
        Some(1),
        "{shown}"
    );
    // The success delivered to the order service after the failure (out of order) does not
    // show the refund succeeded again.
    let (id, version, data): (uuid::Uuid, i64, Value) = sqlx::query_as(
        "SELECT id, version, payload FROM outbox WHERE event_type = 'payment.refunded' AND aggregate_id = $1 AND version = 1",
    )
    .bind(ours.to_string())
    .fetch_one(&payments)
    .await
    .unwrap();
    assert_eq!(data["status"], "succeeded", "{data}");
    let succeeded = nongsan_shared::events::Envelope {
        id: id.into(),
        event_type: "payment.refunded".into(),
        source: "payment".into(),
        aggregate_id: ours.to_string(),
        version,
        occurred_at: chrono::Utc::now(),
        data,
    };
    let mut orders = app.db.pool("order").await.acquire().await.unwrap();
    nongsan_shared::events::Handler::handle(
        &nongsan_order::orders::RecordRefund,
        &mut orders,
        &succeeded,
    )
    .await
    .unwrap();
    let (_, still) = api.read_order(&buyer, &order).await;
    assert_eq!(still["refunds"][0]["status"], "failed", "{still}");
    // What is owed can be refunded again, up to the whole payment.
    let (status, whole) =
        super::refunds::operator_refund(api, &operator, &order, paid, "late-fail-2").await;
    assert_eq!(
        (status, whole["status"].as_str()),
        (201, Some("succeeded")),
        "{whole}"
    );
    app.stop().await;
}

/// A refund first asked before refunds carried our id in Stripe's metadata, and recovered
/// since without it, is still ours when Stripe says it failed: it is known by its Stripe id.
/// Before, a refund webhook without our id was taken for a refund made elsewhere and ignored,
/// so the refund stayed succeeded. One made elsewhere (Stripe's dashboard) changes nothing.
#[tokio::test]
async fn a_stripe_refund_without_our_id_is_known_by_its_stripe_id() {
    let stripe = LocalStripe::start().await;
    let app = app_with(&stripe, |_| {}).await;
    let api = &app.api;
    let (order, _, refund, _) = paid_and_refunded(&stripe, &app, "untagged").await;
    assert_eq!(refund["status"], "succeeded", "{refund}");
    let stripe_ref = refund["provider_ref"]
        .as_str()
        .expect("Stripe's id")
        .to_owned();
    let failed = |event: &str, refund: &str| {
        json!({
            "id": event, "object": "event", "type": "refund.failed", "created": 1,
            "data": { "object": { "id": refund, "object": "refund", "amount": 10_000, "status": "failed", "metadata": {} } }
        })
        .to_string()
    };
    let now = chrono::Utc::now().timestamp();
    let elsewhere = failed("evt_elsewhere", "re_made_in_the_dashboard");
    let signature = sign_header(elsewhere.as_bytes(), WEBHOOK_SECRET, now);
    assert_eq!(webhook(api, &elsewhere, &signature).await, 200);
    assert_eq!(
        refunded_vnd(&app).await,
        10_000,
        "not ours: nothing changed"
    );

    let untagged = failed("evt_untagged", &stripe_ref);
    let signature = sign_header(untagged.as_bytes(), WEBHOOK_SECRET, now);
    assert_eq!(webhook(api, &untagged, &signature).await, 200);
    let operator = User::minted(Role::Operator);
    let (_, again) =
        super::refunds::operator_refund(api, &operator, &order, 10_000, "untagged").await;
    assert_eq!(again["status"], "failed", "{again}");
    assert_eq!(refunded_vnd(&app).await, 0, "its amount is freed");
    app.stop().await;
}

/// A signed `payment_intent.succeeded` for a PaymentIntent nongsan did not open (another
/// integration on the same Stripe account; `stripe trigger`) is acknowledged and changes
/// nothing. Before, it was answered 503 at every delivery, so Stripe kept sending it for
/// days. One of nongsan's own (its `checkout_id` in the metadata) that overtook its payment's
/// row is still 503, for Stripe to send again.
#[tokio::test]
async fn an_event_for_a_payment_intent_nongsan_did_not_open_is_acknowledged() {
    let stripe = LocalStripe::start().await;
    let app = app_with(&stripe, |_| {}).await;
    let api = &app.api;
    let now = chrono::Utc::now().timestamp();
    let event = |id: &str, intent: &str, metadata: Value| {
        json!({
            "id": id, "object": "event", "type": "payment_intent.succeeded", "created": now,
            "data": { "object": { "id": intent, "object": "payment_intent", "amount": 50000, "amount_received": 50000,
                "status": "succeeded", "metadata": metadata } }
        })
        .to_string()
    };
    let foreign = event(
        "evt_not_ours",
        "pi_not_ours",
        json!({ "checkout_id": "shop-42" }),
    );
    assert_eq!(
        webhook(
            api,
            &foreign,
            &sign_header(foreign.as_bytes(), WEBHOOK_SECRET, now)
        )
        .await,
        200
    );
    let ours = event(
        "evt_ours_early",
        "pi_ours_early",
        json!({ "checkout_id": uuid::Uuid::now_v7().to_string() }),
    );
    assert_eq!(
        webhook(
            api,
            &ours,
            &sign_header(ours.as_bytes(), WEBHOOK_SECRET, now)
        )
        .await,
        503
    );
    let payments = app.db.pool("payment").await;
    let recorded: Vec<String> = sqlx::query_scalar("SELECT id FROM stripe_events ORDER BY id")
        .fetch_all(&payments)
        .await
        .unwrap();
    assert_eq!(recorded, ["evt_not_ours"], "one not acted on is sent again");
    app.stop().await;
}
