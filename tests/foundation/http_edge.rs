//! The HTTP edge every service shares: problem+json for every failure, in the caller's
//! language, the request id, metrics, and surviving a panicking handler.

use axum::{Router, routing::get, routing::post};
use nongsan_shared::{
    auth::Role,
    error::PROBLEM_JSON,
    http::{Json, with_common_layers},
    phone::PhoneNumber,
    quantity::Quantity,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::support::{TestApp, token};

#[derive(Deserialize)]
#[allow(dead_code, reason = "the fields are only parsed")]
struct Order {
    name: String,
    quantity: Quantity,
    phone: PhoneNumber,
}

/// A router with the shared layers and two probe handlers, served on port 0.
async fn probe_server() -> String {
    let router = with_common_layers(
        Router::new()
            .route("/orders", post(|Json(_o): Json<Order>| async { "ok" }))
            .route(
                "/boom",
                get(|| async { panic!("secret cause: card 4242") as &'static str }),
            )
            .route("/fine", get(|| async { "fine" })),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

async fn post_raw(url: &str, body: &str, lang: &str) -> (u16, String, Value) {
    let res = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept-language", lang)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    (status, ct, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn malformed_json_is_400_problem_json() {
    let base = probe_server().await;
    let (status, ct, body) = post_raw(&format!("{base}/orders"), "{\"name\": \"Lan\",", "en").await;
    assert_eq!(status, 400);
    assert_eq!(ct, PROBLEM_JSON);
    assert_eq!(body["code"], "malformed_json");
    assert_eq!(body["status"], 400);
    assert_eq!(body["type"], "/problems/malformed_json");
}

#[tokio::test]
async fn a_body_that_fails_validation_is_422_naming_the_field() {
    let base = probe_server().await;
    let url = format!("{base}/orders");
    let (status, ct, body) = post_raw(
        &url,
        &json!({"name": "Lan", "quantity": 1.2345, "phone": "0912345678"}).to_string(),
        "en",
    )
    .await;
    assert_eq!((status, ct.as_str()), (422, PROBLEM_JSON));
    assert_eq!(body["code"], "validation_failed");
    assert_eq!(body["errors"][0]["field"], "quantity");
    assert_eq!(body["errors"][0]["code"], "too_many_decimals");
    assert!(
        body["detail"].as_str().unwrap().contains("quantity"),
        "{body}"
    );

    let (status, _, body) = post_raw(
        &url,
        &json!({"name": "Lan", "quantity": "2", "phone": "12345"}).to_string(),
        "vi",
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "phone");
    assert_eq!(
        body["errors"][0]["detail"],
        "không phải số điện thoại Việt Nam hoặc quốc tế (E.164) hợp lệ"
    );

    let (status, _, body) = post_raw(
        &url,
        &json!({"name": "Lan", "phone": "0912345678"}).to_string(),
        "en",
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "quantity");
    assert_eq!(body["errors"][0]["code"], "required");

    let (status, _, body) = post_raw(
        &url,
        &json!({"name": 7, "quantity": 1, "phone": "0912345678"}).to_string(),
        "en",
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "name");
}

#[tokio::test]
async fn a_panicking_handler_is_500_without_its_cause_and_serving_goes_on() {
    let base = probe_server().await;
    let http = reqwest::Client::new();
    let res = http
        .get(format!("{base}/boom"))
        .header("accept-language", "en")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(res.headers()["content-type"], PROBLEM_JSON);
    let text = res.text().await.unwrap();
    assert!(
        !text.contains("secret cause") && !text.contains("4242"),
        "the cause leaked: {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["code"], "internal");
    for _ in 0..3 {
        let res = http.get(format!("{base}/fine")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), "fine");
    }
}

#[tokio::test]
async fn an_unknown_route_is_404_problem_json_in_the_callers_language() {
    let app = TestApp::spawn().await;
    let res = app
        .http
        .get(app.at("/v1/nothing-here"))
        .header("accept-language", "en-US,en;q=0.9")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], PROBLEM_JSON);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "route_not_found");
    assert_eq!(body["detail"], "There is no such route.");
    let res = app
        .http
        .get(app.at("/v1/nothing-here"))
        .header("accept-language", "vi-VN")
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["detail"], "Không có đường dẫn này.");
    app.stop().await;
}

#[tokio::test]
async fn the_request_id_is_kept_or_made_and_answered() {
    let app = TestApp::spawn().await;
    let res = app
        .http
        .get(app.at("/healthz"))
        .header("x-request-id", "req-from-the-caller-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "req-from-the-caller-1");
    let res = app.http.get(app.at("/healthz")).send().await.unwrap();
    let made = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made.parse::<uuid::Uuid>().unwrap().get_version_num(), 7);
    let res = app
        .http
        .get(app.at("/v1/missing"))
        .header("x-request-id", "req-404")
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["request_id"], "req-404");
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        app.http.get(app.at("/healthz")).send().await.unwrap();
    }
    let text = app
        .http
        .get(app.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("http_requests_total{")
                && l.contains("route=\"/healthz\"")
                && l.contains("status=\"200\"")
        })
        .unwrap_or_else(|| panic!("no healthz counter in:\n{text}"));
    let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3, "{line}");
    app.stop().await;
}

#[tokio::test]
async fn the_dead_letter_list_is_for_operators_only() {
    let app = TestApp::spawn().await;
    let url = app.at("/v1/ops/order/dead-letters");
    let res = app.http.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = app
        .http
        .get(&url)
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "invalid_token");
    let (_, buyer) = token(Role::Buyer);
    assert_eq!(
        app.http
            .get(&url)
            .bearer_auth(&buyer)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let (_, operator) = token(Role::Operator);
    let res = app
        .http
        .get(&url)
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!([]));
    app.stop().await;
}
