//! MoMo (AIO v2, captureWallet) against a fake MoMo: a signed create, a verified IPN answered
//! 204 (forged ones change nothing, repeats credit once), refunds, MoMo's amount bounds, and a
//! lost IPN settled by asking MoMo.

use std::time::Duration;

use serde_json::Value;

use crate::support::{
    TestApp, TestDb,
    calls::basket,
    client::{Client, Request},
    eventually,
    fake_momo::{ACCESS_KEY, FakeMomo, PARTNER, SECRET_KEY},
    test_settings,
};

async fn app_with(
    momo: &FakeMomo,
    tune: impl FnOnce(&mut nongsan_shared::config::Settings),
) -> TestApp {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db).await;
    settings.momo_partner_code = Some(PARTNER.to_owned());
    settings.momo_access_key = Some(ACCESS_KEY.to_owned());
    settings.momo_secret_key = Some(SECRET_KEY.into());
    settings.momo_endpoint = momo.url.clone();
    settings.payment_sweep_ms = 100;
    tune(&mut settings);
    TestApp::spawn_with(settings, db).await
}

async fn ipn(api: &Client, body: &impl serde::Serialize) -> u16 {
    api.send(Request::post("/v1/payments/momo/ipn").json(&serde_json::to_value(body).unwrap()))
        .await
        .status
}

/// MoMo's orderId of a checkout (the last part of the payUrl the fake answers).
fn order_id(c: &Value) -> String {
    c["payment_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_momo_payment_is_created_signed_paid_by_a_verified_ipn_once_and_refunded_on_cancel() {
    let momo = FakeMomo::start().await;
    let app = app_with(&momo, |_| {}).await;
    let api = &app.api;
    let (_, methods) = api.get("/v1/payments/methods", None).await;
    assert_eq!(
        methods["items"],
        serde_json::json!(["cod", "vnpay", "momo"])
    );
    let (seller, buyer, listing) = api.shop().await;
    let (status, c) = api
        .checkout(&buyer, "momo", &basket(&[(&listing, "2")], "momo"))
        .await;
    assert_eq!(status, 201, "{c}");
    let created = momo.calls("create");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["requestType"], "captureWallet");
    let amount = c["grand_total"].as_i64().unwrap();
    assert_eq!(
        created[0]["amount"].as_i64(),
        Some(amount),
        "MoMo's amount is in đồng"
    );
    let order = order_id(&c);

    // Forged: another secret, or another amount than was signed.
    let mut forged = FakeMomo::ipn(&order, amount, 0);
    forged.signature =
        nongsan_payment::momo::sign("not MoMo's secret", &forged.signing_string(ACCESS_KEY));
    assert_eq!(ipn(api, &forged).await, 400);
    let mut changed = FakeMomo::ipn(&order, amount, 0);
    changed.amount = 1_000;
    assert_eq!(ipn(api, &changed).await, 400);
    let id = c["id"].as_str().unwrap();
    let (_, read) = api.read_checkout(&buyer, id).await;
    assert_eq!(
        read["status"], "pending_payment",
        "forged results change nothing"
    );

    let paid = FakeMomo::ipn(&order, amount, 0);
    for _ in 0..3 {
        assert_eq!(ipn(api, &paid).await, 204);
    }
    eventually(
        Duration::from_secs(20),
        "the orders to be paid and the stock sold",
        || async {
            let (_, c) = api.read_checkout(&buyer, id).await;
            let s = api.stock(&seller, &listing).await.levels;
            (c["status"] == "paid" && s.on_hand == "8" && s.reserved == "0").then_some(())
        },
    )
    .await;
    let payments = app.db.pool("payment").await;
    let credited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'payment.succeeded'")
            .fetch_one(&payments)
            .await
            .unwrap();
    assert_eq!(credited, 1, "three deliveries credit once");

    let order_id = c["orders"][0]["id"].as_str().unwrap();
    let (status, body) = api.order_action(&buyer, order_id, "cancel", None).await;
    assert_eq!(status, 200, "{body}");
    let o = eventually(Duration::from_secs(20), "the refund", || async {
        let (_, o) = api.read_order(&buyer, order_id).await;
        (o["refunds"].as_array().map(Vec::len) == Some(1)).then_some(o)
    })
    .await;
    assert_eq!(o["refunds"][0]["status"], "succeeded", "{o}");
    let refunds = momo.calls("refund");
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["amount"].as_i64(), Some(amount));
    assert_eq!(
        refunds[0]["transId"].as_i64(),
        Some(4_084_757_146),
        "MoMo's transaction of the payment"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_amount_momo_does_not_take_is_422_and_holds_no_stock() {
    let momo = FakeMomo::start().await;
    let app = app_with(&momo, |_| {}).await;
    let api = &app.api;
    let (seller, buyer, _) = api.shop().await;
    // 1,000 kg at 65,000 đ: 65 million đồng, above MoMo's 50 million.
    let big = api.listing_with_stock(&seller, "1000").await;
    let (status, body) = api
        .checkout(&buyer, "big", &basket(&[(&big, "1000")], "momo"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["code"], "amount_out_of_range", "{body}");
    assert_eq!(
        api.stock(&seller, &big).await.levels.reserved,
        "0",
        "the stock went back"
    );
    assert!(momo.calls("create").is_empty(), "MoMo was not asked");
    // The order was stored before the payment refused it: it is cancelled by the state
    // machine, recorded and announced like any other, not changed behind it.
    let orders = app.db.pool("order").await;
    let (status, transitions, cancelled): (String, i64, i64) = sqlx::query_as(
        "SELECT o.status,
                (SELECT count(*) FROM order_transitions t WHERE t.order_id = o.id AND t.to_status = 'cancelled'),
                (SELECT count(*) FROM outbox e WHERE e.event_type = 'order.cancelled' AND e.aggregate_id = o.id::text)
         FROM orders o",
    )
    .fetch_one(&orders)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), transitions, cancelled),
        ("cancelled", 1, 1)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_momo_payment_whose_ipn_was_lost_is_settled_by_asking_momo() {
    let momo = FakeMomo::start().await;
    let app = app_with(&momo, |s| s.payment_reconcile_after_secs = 1).await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let (status, c) = api
        .checkout(&buyer, "lost", &basket(&[(&listing, "1")], "momo"))
        .await;
    assert_eq!(status, 201, "{c}");
    momo.pay(&order_id(&c), c["grand_total"].as_i64().unwrap());
    let id = c["id"].as_str().unwrap();
    eventually(
        Duration::from_secs(30),
        "the reconciler to settle the payment",
        || async {
            let (_, c) = api.read_checkout(&buyer, id).await;
            let s = api.stock(&seller, &listing).await.levels;
            (c["status"] == "paid" && s.on_hand == "9").then_some(())
        },
    )
    .await;
    assert!(!momo.calls("query").is_empty());
    app.stop().await;
}

/// MoMo's codes for a payment not finished (1000 waiting for the buyer, 7000 and 7002 being
/// processed, 9000 authorized) are not failures: the payment stays pending, and MoMo's
/// final result then decides.
#[tokio::test]
async fn a_momo_result_still_in_progress_leaves_the_payment_pending_until_the_final_one() {
    let momo = FakeMomo::start().await;
    let app = app_with(&momo, |_| {}).await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let (status, c) = api
        .checkout(&buyer, "momo", &basket(&[(&listing, "2")], "momo"))
        .await;
    assert_eq!(status, 201, "{c}");
    let (order, amount) = (order_id(&c), c["grand_total"].as_i64().unwrap());
    let id = c["id"].as_str().unwrap();
    for code in [1000, 7000, 7002, 9000] {
        assert_eq!(ipn(api, &FakeMomo::ipn(&order, amount, code)).await, 204);
        let (_, read) = api.read_checkout(&buyer, id).await;
        assert_eq!(read["status"], "pending_payment", "after {code}: {read}");
    }
    let payments = app.db.pool("payment").await;
    let status: String = sqlx::query_scalar("SELECT status FROM payments")
        .fetch_one(&payments)
        .await
        .unwrap();
    assert_eq!(status, "pending");
    assert_eq!(ipn(api, &FakeMomo::ipn(&order, amount, 0)).await, 204);
    api.paid_and_sold(&buyer, id, &seller, &listing, "8").await;
    app.stop().await;
}

/// A MoMo refund whose answer was lost (MoMo took it, nongsan saw HTTP 502) is asked again,
/// and MoMo answers that its orderId is used (41). That answer was recorded as a refusal: the
/// refund showed failed while MoMo had paid it, and its amount was free to be refunded a
/// second time. Now the payment's refunds are asked, and the refund is the one MoMo made.
#[tokio::test]
async fn a_momo_refund_whose_answer_was_lost_is_found_made_not_refused() {
    let momo = FakeMomo::start().await;
    let app = app_with(&momo, |_| {}).await;
    let api = &app.api;
    let (_, buyer, listing) = api.shop().await;
    let (status, c) = api
        .checkout(&buyer, "momo-lost", &basket(&[(&listing, "2")], "momo"))
        .await;
    assert_eq!(status, 201, "{c}");
    let amount = c["grand_total"].as_i64().unwrap();
    let order = order_id(&c);
    momo.pay(&order, amount);
    assert_eq!(ipn(api, &FakeMomo::ipn(&order, amount, 0)).await, 204);
    let id = c["id"].as_str().unwrap();
    eventually(
        Duration::from_secs(20),
        "the checkout to be paid",
        || async {
            let (_, c) = api.read_checkout(&buyer, id).await;
            (c["status"] == "paid").then_some(())
        },
    )
    .await;

    momo.lose_refund_answers(1);
    let order_id = c["orders"][0]["id"].as_str().unwrap();
    let (status, body) = api.order_action(&buyer, order_id, "cancel", None).await;
    assert_eq!(status, 200, "{body}");
    let o = eventually(Duration::from_secs(20), "the refund to end", || async {
        let (_, o) = api.read_order(&buyer, order_id).await;
        (o["refunds"].as_array().map(Vec::len) == Some(1)).then_some(o)
    })
    .await;
    assert_eq!(o["refunds"][0]["status"], "succeeded", "{o}");
    assert_eq!(
        momo.calls("refund").len(),
        2,
        "asked again after the lost answer"
    );
    let taken: Vec<i64> = momo
        .state
        .lock()
        .unwrap()
        .refunds
        .values()
        .map(|(_, _, refund)| *refund)
        .collect();
    assert_eq!(taken.len(), 1, "MoMo took one refund");
    let recorded: Option<String> = sqlx::query_scalar("SELECT provider_ref FROM refunds")
        .fetch_one(&app.db.pool("payment").await)
        .await
        .unwrap();
    assert_eq!(
        recorded,
        Some(taken[0].to_string()),
        "the refund is MoMo's refund transaction"
    );
    app.stop().await;
}
