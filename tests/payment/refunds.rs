//! Every money path ends in a known state: a payment for orders no longer alive is given
//! back, a paid order cancelled is refunded, an operator refunds part of an order, and no
//! refund ever exceeds the capture.

use std::time::Duration;

use nongsan_shared::auth::Role;
use serde_json::{Value, json};

use crate::support::{
    TestApp, TestDb,
    calls::{basket, order_of},
    client::{Client, Request},
    eventually,
    fake_vnpay::{FakeVnpay, ipn_query},
    test_settings,
    user::User,
};

/// The app, with VNPay's merchant API at `vnpay`, and `tune` applied to its settings.
pub async fn app_with(
    vnpay: &FakeVnpay,
    tune: impl FnOnce(&mut nongsan_shared::config::Settings),
) -> TestApp {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db).await;
    settings.vnpay_api_url = vnpay.url.clone();
    settings.payment_sweep_ms = 100;
    tune(&mut settings);
    TestApp::spawn_with(settings, db).await
}

/// `vnp_TxnRef` of a payment URL.
pub fn txn_ref(payment_url: &str) -> String {
    reqwest::Url::parse(payment_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "vnp_TxnRef")
        .map(|(_, v)| v.into_owned())
        .expect("a vnp_TxnRef")
}

/// Waits until the order, as `who` reads it, shows `n` refunds that ended; answers it.
async fn refunded(api: &Client, who: &User, order: &str, n: usize) -> Value {
    eventually(
        Duration::from_secs(20),
        "the refunds to show on the order",
        || async {
            let (_, o) = api.read_order(who, order).await;
            (o["refunds"].as_array().map(Vec::len) == Some(n)).then_some(o)
        },
    )
    .await
}

fn total(v: &Value) -> i64 {
    v["total"]
        .as_i64()
        .unwrap_or_else(|| panic!("no total: {v}"))
}

#[tokio::test]
async fn a_payment_for_an_expired_checkout_is_refunded_in_full_and_vnpay_asked_once() {
    let vnpay = FakeVnpay::start().await;
    let app = app_with(&vnpay, |s| s.checkout_ttl_secs = 1).await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let (status, c) = api
        .checkout(&buyer, "late", &basket(&[(&listing, "2")], "vnpay"))
        .await;
    assert_eq!(status, 201, "{c}");
    let id = c["id"].as_str().unwrap();
    let order = c["orders"][0]["id"].as_str().unwrap().to_owned();
    eventually(
        Duration::from_secs(15),
        "the checkout to expire",
        || async {
            let (_, c) = api.read_checkout(&buyer, id).await;
            (c["orders"][0]["status"] == "expired").then_some(())
        },
    )
    .await;

    // The buyer paid anyway, after the page had closed for us.
    let url = c["payment_url"].as_str().unwrap();
    assert_eq!(
        api.vnpay_ipn(&ipn_query(url, "00", None)).await["RspCode"],
        "00"
    );

    let o = refunded(api, &buyer, &order, 1).await;
    assert_eq!(
        o["status"], "expired",
        "a refunded order stays expired: {o}"
    );
    let refund = &o["refunds"][0];
    assert_eq!(refund["status"], "succeeded", "{o}");
    assert_eq!(refund["reason"], "not_payable");
    assert_eq!(
        refund["amount_vnd"].as_i64(),
        Some(total(&o)),
        "the whole order, delivery fee included"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = vnpay.refunds();
    assert_eq!(calls.len(), 1, "VNPay is asked once: {calls:?}");
    assert_eq!(calls[0]["vnp_Amount"], (total(&o) * 100).to_string());
    assert_eq!(calls[0]["vnp_TransactionType"], "02", "the whole capture");
    assert_eq!(calls[0]["vnp_TxnRef"], txn_ref(url));
    assert_eq!(
        calls[0]["vnp_TransactionNo"], "14422574",
        "VNPay's number for the payment"
    );
    let s = api.stock(&seller, &listing).await.levels;
    assert_eq!(
        (s.on_hand.as_str(), s.reserved.as_str()),
        ("10", "0"),
        "nothing was sold"
    );
    app.stop().await;
}

#[tokio::test]
async fn when_one_seller_declines_before_payment_the_buyer_keeps_only_the_other_orders_total() {
    let vnpay = FakeVnpay::start().await;
    let app = app_with(&vnpay, |_| {}).await;
    let api = &app.api;
    let (first, buyer, mangoes) = api.shop().await;
    let second = api.register(Role::Household).await;
    let avocados = api.listing_in_two_lots(&second, 40_000, 10).await;
    let (status, c) = api
        .checkout(
            &buyer,
            "two",
            &basket(&[(&mangoes, "1"), (&avocados, "1")], "vnpay"),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    let (kept, declined) = (order_of(&c, &first), order_of(&c, &second));
    let declined_id = declined["id"].as_str().unwrap();
    let (status, body) = api
        .order_action(&second, declined_id, "decline", Some("Hết bơ"))
        .await;
    assert_eq!(status, 200, "{body}");

    // VNPay's page still asks the whole checkout: the buyer pays it.
    let url = c["payment_url"].as_str().unwrap();
    let grand = c["grand_total"].as_i64().unwrap();
    assert_eq!(grand, total(&kept) + total(&declined));
    assert_eq!(
        api.vnpay_ipn(&ipn_query(url, "00", None)).await["RspCode"],
        "00"
    );

    let o = refunded(api, &buyer, declined_id, 1).await;
    assert_eq!(o["status"], "declined");
    assert_eq!(
        o["refunds"][0]["amount_vnd"].as_i64(),
        Some(total(&declined))
    );
    assert_eq!(o["refunds"][0]["reason"], "not_payable");
    let (_, k) = api.read_order(&buyer, kept["id"].as_str().unwrap()).await;
    assert_eq!(k["status"], "paid", "{k}");
    assert_eq!(k["refunds"], json!([]));
    let calls = vnpay.refunds();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["vnp_TransactionType"], "03", "part of the capture");
    let given_back: i64 = calls[0]["vnp_Amount"]
        .as_str()
        .unwrap()
        .parse::<i64>()
        .unwrap()
        / 100;
    assert_eq!(
        grand - given_back,
        total(&kept),
        "the buyer keeps paying only the other seller's order"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_paid_order_cancelled_by_its_buyer_is_refunded_in_full() {
    let vnpay = FakeVnpay::start().await;
    let app = app_with(&vnpay, |_| {}).await;
    let api = &app.api;
    let (_, buyer, listing) = api.shop().await;
    let c = api.paid_by_vnpay(&buyer, &listing, "1", "cancel").await;
    let order = c["orders"][0]["id"].as_str().unwrap();
    let (status, body) = api.order_action(&buyer, order, "cancel", None).await;
    assert_eq!(status, 200, "{body}");
    let o = refunded(api, &buyer, order, 1).await;
    assert_eq!(o["refunds"][0]["reason"], "cancelled");
    assert_eq!(o["refunds"][0]["amount_vnd"].as_i64(), Some(total(&o)));
    assert_eq!(vnpay.refunds().len(), 1);
    app.stop().await;
}

/// An operator's refund of `amount` of `order` with idempotency key `key`.
pub(crate) async fn operator_refund(
    api: &Client,
    who: &User,
    order: &str,
    amount: i64,
    key: &str,
) -> (u16, Value) {
    api.send(
        Request::post("/v1/payments/refunds")
            .by(who)
            .header("idempotency-key", key)
            .json(
                &json!({ "order_id": order, "amount_vnd": amount, "note": "Xoài bị dập khi giao" }),
            ),
    )
    .await
    .parts()
}

#[tokio::test]
async fn partial_refunds_never_exceed_the_capture_and_the_provider_is_not_asked_for_more() {
    let vnpay = FakeVnpay::start().await;
    let app = app_with(&vnpay, |_| {}).await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let (_, c) = api
        .checkout(&buyer, "damaged", &basket(&[(&listing, "1")], "vnpay"))
        .await;
    let order = c["orders"][0]["id"].as_str().unwrap();
    let paid = c["grand_total"].as_i64().unwrap();
    let url = c["payment_url"].as_str().unwrap();
    assert_eq!(
        api.vnpay_ipn(&ipn_query(url, "00", None)).await["RspCode"],
        "00"
    );
    let operator = User::minted(Role::Operator);
    // The order side has told the payment side about the order once this answers.
    let first = eventually(
        Duration::from_secs(15),
        "the order to be known to payments",
        || async {
            let (status, r) = operator_refund(api, &operator, order, 10_000, "k1").await;
            (status != 404).then_some((status, r))
        },
    )
    .await;
    assert_eq!(first.0, 201, "{}", first.1);
    assert_eq!(first.1["status"], "succeeded", "{}", first.1);
    assert_eq!(first.1["reason"], "operator");

    let again = operator_refund(api, &operator, order, 10_000, "k1").await;
    assert_eq!(
        again.0, 200,
        "the same key answers the same refund: {}",
        again.1
    );
    assert_eq!(again.1["id"], first.1["id"]);
    let (status, body) = operator_refund(api, &operator, order, 12_000, "k1").await;
    assert_eq!(
        (status, body["errors"][0]["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{body}"
    );

    let (status, second) = operator_refund(api, &operator, order, 20_000, "k2").await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(vnpay.refunds().len(), 2);

    let (status, body) = operator_refund(api, &operator, order, paid - 30_000 + 1, "k3").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["errors"][0]["code"], "refund_exceeds_captured",
        "{body}"
    );
    assert_eq!(
        vnpay.refunds().len(),
        2,
        "VNPay is not asked for what cannot be refunded"
    );

    // Only operators refund.
    for who in [&buyer, &seller] {
        let (status, _) = operator_refund(api, who, order, 1_000, "k4").await;
        assert_eq!(status, 403);
    }

    // The bound is the database's, not only the handler's.
    let payments = app.db.pool("payment").await;
    let over = sqlx::query(
        "INSERT INTO refunds (id, payment_id, order_id, amount_vnd, reason, idempotency_key)
         SELECT $1, id, $2::uuid, $3, 'operator', 'straight-to-sql' FROM payments",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(order)
    .bind(paid - 30_000 + 1)
    .execute(&payments)
    .await;
    let err = over.expect_err("the database refuses a refund beyond the capture");
    assert_eq!(
        err.as_database_error().and_then(|e| e.constraint()),
        Some("refund_exceeds_captured"),
        "{err}"
    );
    let deleted = sqlx::query("DELETE FROM refunds").execute(&payments).await;
    assert!(deleted.is_err(), "refunds are never deleted");

    let o = refunded(api, &buyer, order, 2).await;
    let amounts: Vec<i64> = o["refunds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["amount_vnd"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, [10_000, 20_000], "{o}");
    let (_, seen_by_seller) = api.read_order(&seller, order).await;
    assert_eq!(
        seen_by_seller["refunds"], o["refunds"],
        "the seller sees them too"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_refund_vnpay_refuses_is_recorded_as_failed_and_frees_its_amount() {
    let vnpay = FakeVnpay::start().await;
    let app = app_with(&vnpay, |_| {}).await;
    let api = &app.api;
    let (_, buyer, listing) = api.shop().await;
    let (_, c) = api
        .checkout(&buyer, "refused", &basket(&[(&listing, "1")], "vnpay"))
        .await;
    let order = c["orders"][0]["id"].as_str().unwrap();
    let url = c["payment_url"].as_str().unwrap();
    assert_eq!(
        api.vnpay_ipn(&ipn_query(url, "00", None)).await["RspCode"],
        "00"
    );
    let operator = User::minted(Role::Operator);
    vnpay.state.lock().unwrap().refund_code = Some("95".to_owned());
    let (status, r) = eventually(
        Duration::from_secs(15),
        "the order to be known to payments",
        || async {
            let (status, r) = operator_refund(api, &operator, order, 5_000, "r1").await;
            (status != 404).then_some((status, r))
        },
    )
    .await;
    assert_eq!(status, 201, "{r}");
    assert_eq!(r["status"], "failed", "{r}");
    vnpay.state.lock().unwrap().refund_code = None;
    let whole = c["grand_total"].as_i64().unwrap();
    let (status, r) = operator_refund(api, &operator, order, whole, "r2").await;
    assert_eq!(
        (status, r["status"].as_str()),
        (201, Some("succeeded")),
        "the failed refund's amount is free again: {r}"
    );
    let o = refunded(api, &buyer, order, 2).await;
    assert_eq!(o["refunds"][0]["status"], "failed", "{o}");
    app.stop().await;
}

#[tokio::test]
async fn a_paid_order_refused_at_the_door_is_refunded_and_a_cash_one_owes_nothing() {
    let vnpay = FakeVnpay::start().await;
    let app = app_with(&vnpay, |_| {}).await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let c = api.paid_by_vnpay(&buyer, &listing, "1", "returned").await;
    let order = c["orders"][0]["id"].as_str().unwrap();
    let cash = api.cod_order(&buyer, &listing, "1").await;
    for id in [order, cash.as_str()] {
        for action in ["confirm", "ship", "fail_delivery", "return"] {
            let (status, body) = api.order_action(&seller, id, action, None).await;
            assert_eq!(status, 200, "{action}: {body}");
        }
    }
    let o = refunded(api, &buyer, order, 1).await;
    assert_eq!(o["status"], "returned");
    assert_eq!(o["refunds"][0]["reason"], "returned");
    assert_eq!(o["refunds"][0]["amount_vnd"].as_i64(), Some(total(&o)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, cash_order) = api.read_order(&buyer, &cash).await;
    assert_eq!(cash_order["status"], "returned");
    assert_eq!(
        cash_order["refunds"],
        json!([]),
        "no money was taken for a cash order"
    );
    assert_eq!(vnpay.refunds().len(), 1);
    let orders = app.db.pool("order").await;
    let owed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'order.refund_due'")
            .fetch_one(&orders)
            .await
            .unwrap();
    assert_eq!(owed, 1, "only the paid order owes a refund");
    app.stop().await;
}
