//! The buyer chooses among what is set up: cash on delivery always, VNPay when its keys are
//! set; VNPay gets the buyer's own address.

use serde_json::json;

use crate::support::{TestApp, TestDb, calls::basket, test_settings};

#[tokio::test]
async fn the_methods_on_offer_follow_the_keys_and_any_other_is_refused_before_stock_is_held() {
    let app = TestApp::spawn().await;
    let (status, body) = app.api.get("/v1/payments/methods", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["items"], json!(["cod", "vnpay"]));
    let (seller, buyer, listing) = app.api.shop().await;
    let (status, body) = app
        .api
        .checkout(&buyer, "card", &basket(&[(&listing, "1")], "stripe"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["code"], "payment_method_unavailable");
    assert_eq!(app.api.stock(&seller, &listing).await.levels.reserved, "0");
    app.stop().await;

    let db = TestDb::new().await;
    let mut settings = test_settings(&db).await;
    settings.vnpay_tmn_code = None;
    settings.vnpay_hash_secret = None;
    let app = TestApp::spawn_with(settings, db).await;
    let (_, body) = app.api.get("/v1/payments/methods", None).await;
    assert_eq!(body["items"], json!(["cod"]));
    let (seller, buyer, listing) = app.api.shop().await;
    let (status, body) = app
        .api
        .checkout(&buyer, "vnpay", &basket(&[(&listing, "1")], "vnpay"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "payment_method");
    assert_eq!(
        app.api.stock(&seller, &listing).await.levels.reserved,
        "0",
        "nothing held"
    );
    app.stop().await;
}

#[tokio::test]
async fn vnpay_is_told_the_buyers_own_address() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db).await;
    settings.client_ip_header = Some("x-forwarded-for".to_owned());
    let app = TestApp::spawn_with(settings, db).await;
    let (_, buyer, listing) = app.api.shop().await;
    let res = app
        .api
        .send(
            crate::support::client::Request::post("/v1/checkouts")
                .by(&buyer)
                .header("idempotency-key", "ip")
                .header("x-forwarded-for", "203.0.113.9")
                .json(&basket(&[(&listing, "1")], "vnpay")),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let url = res.json()["payment_url"].as_str().unwrap().to_owned();
    assert!(url.contains("vnp_IpAddr=203.0.113.9"), "{url}");
    app.stop().await;
}
