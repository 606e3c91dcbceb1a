//! No secret (API keys, webhook secrets, hash secrets, the token key) reaches a log line or
//! an answer, on the money paths where providers are called and callbacks refused.

use std::time::Duration;

use nongsan_payment::stripe::sign_header;
use serde_json::json;

use crate::support::{
    AUTH_SECRET, VNPAY_SECRET,
    calls::basket,
    client::Request,
    eventually,
    fake_vnpay::{FakeVnpay, ipn_query},
    localstripe::{LocalStripe, SECRET_KEY, intent_of},
    process::SplitApp,
};

const WEBHOOK_SECRET: &str = "whsec_never_logged_0123456789";

#[tokio::test]
async fn no_secret_reaches_the_logs_or_an_answer_of_any_process() {
    let stripe = LocalStripe::start().await;
    let vnpay = FakeVnpay::start().await;
    let every = [
        (
            "RUST_LOG",
            "debug,hyper=info,h2=info,rustls=info".to_owned(),
        ),
        ("NONGSAN_STRIPE_SECRET_KEY", SECRET_KEY.to_owned()),
        ("NONGSAN_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ("NONGSAN_STRIPE_API_URL", stripe.url.clone()),
        ("NONGSAN_VNPAY_API_URL", vnpay.url.clone()),
        ("NONGSAN_PAYMENT_SWEEP_MS", "100".to_owned()),
    ];
    let app = SplitApp::spawn_configured(&every, &[]).await;
    let api = &app.api;
    stripe
        .webhook_to(
            &format!("{}/v1/payments/stripe/webhook", app.payment.url),
            WEBHOOK_SECRET,
        )
        .await;
    let (_, buyer, listing) = api.shop().await;
    let mut answers = Vec::new();

    // A card payment, confirmed; then refunded by the buyer's cancellation.
    let (status, c) = api
        .checkout(&buyer, "card", &basket(&[(&listing, "1")], "stripe"))
        .await;
    assert_eq!(status, 201, "{c}");
    answers.push(c.to_string());
    let intent = intent_of(c["payment_client_secret"].as_str().unwrap()).to_owned();
    assert_eq!(stripe.pay(&intent, "pm_card_visa").await.0, 200);
    let order = c["orders"][0]["id"].as_str().unwrap().to_owned();
    eventually(
        Duration::from_secs(20),
        "the card order to be paid",
        || async {
            let (_, o) = api.read_order(&buyer, &order).await;
            (o["status"] == "paid").then_some(())
        },
    )
    .await;
    let (status, o) = api.order_action(&buyer, &order, "cancel", None).await;
    assert_eq!(status, 200, "{o}");
    eventually(Duration::from_secs(20), "the card refund", || async {
        let (_, o) = api.read_order(&buyer, &order).await;
        (o["refunds"].as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;

    // A VNPay payment: a forged IPN, then VNPay's own; and refused webhooks.
    let (_, v) = api
        .checkout(&buyer, "vnpay", &basket(&[(&listing, "1")], "vnpay"))
        .await;
    answers.push(v.to_string());
    let url = v["payment_url"].as_str().unwrap();
    let forged = ipn_query(url, "00", None).replace("vnp_SecureHash=", "vnp_SecureHash=ab");
    answers.push(api.vnpay_ipn(&forged).await.to_string());
    answers.push(api.vnpay_ipn(&ipn_query(url, "00", None)).await.to_string());
    let event = json!({ "id": "evt_x", "type": "payment_intent.succeeded", "data": { "object": { "id": "pi_x" } } }).to_string();
    for signature in [
        sign_header(
            event.as_bytes(),
            "whsec_wrong",
            chrono::Utc::now().timestamp(),
        ),
        sign_header(event.as_bytes(), WEBHOOK_SECRET, 1),
        "garbage".to_owned(),
    ] {
        let res = api
            .send(
                Request::post("/v1/payments/stripe/webhook")
                    .header("stripe-signature", &signature)
                    .body("application/json", event.clone().into_bytes()),
            )
            .await;
        assert_eq!(res.status, 400);
        answers.push(res.text());
    }
    let (_, problem) = api.get("/v1/payments/methods", None).await;
    answers.push(problem.to_string());

    let logs = [&app.listing, &app.order, &app.payment].map(|p| p.log_text());
    assert!(
        logs[2].contains("\"level\":\"DEBUG\""),
        "the payment process logged at debug level"
    );
    for secret in [SECRET_KEY, WEBHOOK_SECRET, VNPAY_SECRET, AUTH_SECRET] {
        for (log, name) in logs.iter().zip(["listing", "order", "payment"]) {
            assert!(!log.contains(secret), "the {name} process logged a secret");
        }
        for answer in &answers {
            assert!(
                !answer.contains(secret),
                "an answer holds a secret: {answer}"
            );
        }
    }
}
