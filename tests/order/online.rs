//! Paying online: VNPay's payment URL and IPN, `payment.succeeded` marking the orders paid,
//! and the stock sold on `order.paid`, whatever order the events come in.

use nongsan_shared::contracts::{
    events::{EventType, PaymentEvent},
    payments::PaymentMethod,
};
use std::time::Duration;

use crate::support::{
    TestApp, TestDb, calls::basket, client::Client, eventually, fake_vnpay::ipn_query,
    process::SplitApp, test_settings,
};

async fn paid_by_vnpay(api: &Client) {
    let (seller, buyer, listing) = api.shop().await;
    let (status, c) = api
        .checkout(&buyer, "vnpay-1", &basket(&[(&listing, "2")], "vnpay"))
        .await;
    assert_eq!(status, 201, "{c}");
    assert_eq!(c["status"], "pending_payment");
    let url = c["payment_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no payment URL: {c}"));
    assert!(
        url.contains("vnp_Amount=16000000"),
        "đồng × 100 for 160,000 đ: {url}"
    );

    let forged = ipn_query(url, "00", None).replace("vnp_SecureHash=", "vnp_SecureHash=00");
    assert_eq!(api.vnpay_ipn(&forged).await["RspCode"], "97");
    // A hash with characters outside ASCII ("0é0") is a bad signature, not a 500.
    let unsigned = ipn_query(url, "00", None);
    let unsigned = unsigned
        .split("&vnp_SecureHash=")
        .next()
        .unwrap_or_default();
    let non_ascii = format!("{unsigned}&vnp_SecureHash=0%C3%A90");
    assert_eq!(api.vnpay_ipn(&non_ascii).await["RspCode"], "97");
    assert_eq!(
        api.vnpay_ipn(&ipn_query(url, "00", Some(1))).await["RspCode"],
        "04"
    );
    assert_eq!(
        api.vnpay_ipn(&ipn_query(url, "00", None)).await["RspCode"],
        "00"
    );
    assert_eq!(
        api.vnpay_ipn(&ipn_query(url, "00", None)).await["RspCode"],
        "02",
        "recorded once"
    );

    let id = c["id"].as_str().unwrap();
    api.paid_and_sold(&buyer, id, &seller, &listing, "8").await;
    let order = c["orders"][0]["id"].as_str().unwrap();
    let (_, o) = api.read_order(&buyer, order).await;
    assert_eq!(o["lines"][0]["lots"][0]["lot_code"], "OLD-1", "{o}");
}

#[tokio::test]
async fn a_vnpay_checkout_is_paid_by_ipn_and_its_stock_sold_in_one_process() {
    let app = TestApp::spawn().await;
    paid_by_vnpay(&app.api).await;
    app.stop().await;
}

#[tokio::test]
async fn a_vnpay_checkout_is_paid_by_ipn_and_its_stock_sold_across_three_processes() {
    let app = SplitApp::spawn().await;
    paid_by_vnpay(&app.api).await;
}

#[tokio::test]
async fn payment_succeeded_arriving_before_the_checkout_is_stored_ends_the_same() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db).await;
    settings.events_max_attempts = 30;
    let app = TestApp::spawn_with(settings, db).await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;

    // The order service stops for a while between reserving and storing: long enough, on a
    // loaded machine, for the payment's event to be tried before the checkout exists.
    let _delayed = crate::support::FailPoint::set(
        "checkout.before_store",
        nongsan_shared::failpoint::Action::Delay(5000),
    );
    let checkout = {
        let (api, buyer, body) = (
            api.clone(),
            buyer.clone(),
            basket(&[(&listing, "3")], "vnpay"),
        );
        tokio::spawn(async move { api.checkout(&buyer, "early", &body).await })
    };
    let checkout_id = app.db.first_reservation().await;
    // Meanwhile the payment succeeds and is told before the checkout exists.
    let payment_pool = app.db.pool("payment").await;
    let mut tx = payment_pool.begin().await.unwrap();
    nongsan_shared::events::emit(
        &mut tx,
        EventType::PaymentSucceeded,
        &checkout_id.to_string(),
        1,
        &PaymentEvent {
            payment_id: nongsan_shared::PaymentId::new(),
            checkout_id: nongsan_shared::CheckoutId(checkout_id),
            amount_vnd: nongsan_shared::Vnd::ZERO,
            method: PaymentMethod::Vnpay,
            provider_ref: "14422574".into(),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let (status, c) = checkout.await.unwrap();
    assert_eq!(status, 201, "{c}");
    assert_eq!(c["id"], checkout_id.to_string());
    eventually(
        Duration::from_secs(20),
        "the early payment to take effect",
        || async {
            let (_, c) = api.read_checkout(&buyer, &checkout_id.to_string()).await;
            let s = api.stock(&seller, &listing).await.levels;
            (c["status"] == "paid"
                && c["orders"][0]["status"] == "paid"
                && s.on_hand == "7"
                && s.reserved == "0")
                .then_some(())
        },
    )
    .await;
    let order_pool = app.db.pool("order").await;
    let (attempts, status): (i32, String) =
        sqlx::query_as("SELECT attempts, status FROM inbox WHERE event_type = 'payment.succeeded'")
            .fetch_one(&order_pool)
            .await
            .unwrap();
    assert_eq!(status, "done");
    assert!(
        attempts > 1,
        "it was retried until the checkout existed ({attempts} attempts)"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unpaid_checkout_expires_with_its_reservation() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db).await;
    // Long enough for the reservation to be read before it expires.
    settings.checkout_ttl_secs = 3;
    let app = TestApp::spawn_with(settings, db).await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let (status, c) = api
        .checkout(&buyer, "never-paid", &basket(&[(&listing, "4")], "vnpay"))
        .await;
    assert_eq!(status, 201, "{c}");
    assert_eq!(api.stock(&seller, &listing).await.levels.reserved, "4");
    let id = c["id"].as_str().unwrap();
    eventually(
        Duration::from_secs(15),
        "the unpaid checkout to expire and give its stock back",
        || async {
            let (_, c) = api.read_checkout(&buyer, id).await;
            let s = api.stock(&seller, &listing).await.levels;
            (c["status"] == "expired"
                && c["orders"][0]["status"] == "expired"
                && s.reserved == "0"
                && s.available == "10")
                .then_some(())
        },
    )
    .await;
    // A payment that comes too late finds nothing to pay: the orders stay expired.
    let url = c["payment_url"].as_str().unwrap();
    assert_eq!(
        api.vnpay_ipn(&ipn_query(url, "00", None)).await["RspCode"],
        "00",
        "VNPay's notice is still acknowledged"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, c) = api.read_checkout(&buyer, id).await;
    assert_eq!(c["orders"][0]["status"], "expired");
    app.stop().await;
}

#[tokio::test]
async fn a_signed_ipn_for_an_unknown_payment_is_01_and_an_unexpected_error_99() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let (_, buyer, listing) = api.shop().await;
    let (status, c) = api
        .checkout(&buyer, "codes", &basket(&[(&listing, "1")], "vnpay"))
        .await;
    assert_eq!(status, 201, "{c}");
    let url = c["payment_url"].as_str().unwrap();
    // VNPay's own signature over a reference nongsan never gave out.
    let unknown = url.replace(
        &format!("vnp_TxnRef={}", txn_ref_of(url)),
        "vnp_TxnRef=00000000000000000000000000000000",
    );
    let unknown_ipn = ipn_query(&resign(&unknown), "00", None);
    assert_eq!(api.vnpay_ipn(&unknown_ipn).await["RspCode"], "01");

    nongsan_shared::failpoint::set(
        "vnpay.ipn.record",
        nongsan_shared::failpoint::Action::Error { times: 1 },
    );
    let answer = api.vnpay_ipn(&ipn_query(url, "00", None)).await;
    assert_eq!(answer["RspCode"], "99", "{answer}");
    assert_eq!(
        api.vnpay_ipn(&ipn_query(url, "00", None)).await["RspCode"],
        "00",
        "VNPay's next try is recorded"
    );
    app.stop().await;
}

fn txn_ref_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "vnp_TxnRef")
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

/// The payment URL with its hash made again over its (changed) parameters.
fn resign(url: &str) -> String {
    let parsed = reqwest::Url::parse(url).unwrap();
    let params: std::collections::BTreeMap<String, String> = parsed
        .query_pairs()
        .filter(|(k, _)| k != "vnp_SecureHash")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let query = nongsan_payment::vnpay::signing_string(&params);
    let hash = nongsan_payment::vnpay::sign(crate::support::VNPAY_SECRET, &query);
    format!(
        "{}?{query}&vnp_SecureHash={hash}",
        url.split('?').next().unwrap()
    )
}
