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

use crate::support::{
    TestApp,
    client::{Client, Request},
    user::User,
};

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
            .route("/fine", get(|| async { "fine" }))
            .route(
                "/context",
                get(|| async {
                    use nongsan_shared::telemetry::{
                        current_language, current_request_id, run_to_completion,
                    };
                    let seen =
                        run_to_completion(async { (current_request_id(), current_language()) })
                            .await
                            .unwrap();
                    axum::Json(json!({ "request_id": seen.0, "language": seen.1 }))
                }),
            ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// POSTs `body` as it is, declared JSON, to the probe's `/orders` in `lang`; answers
/// (status, content type, JSON).
async fn post_raw(probe: &Client, body: &str, lang: &str) -> (u16, String, Value) {
    let res = probe
        .send(
            Request::post("/orders")
                .body("application/json", body)
                .header("accept-language", lang),
        )
        .await;
    let ct = res.header("content-type").unwrap().to_owned();
    (res.status, ct, res.json())
}

#[tokio::test]
async fn malformed_json_is_400_problem_json() {
    let probe = Client::new(&probe_server().await);
    let (status, ct, body) = post_raw(&probe, "{\"name\": \"Lan\",", "en").await;
    assert_eq!(status, 400);
    assert_eq!(ct, PROBLEM_JSON);
    assert_eq!(body["code"], "malformed_json");
    assert_eq!(body["status"], 400);
    assert_eq!(body["type"], "/problems/malformed_json");
}

#[tokio::test]
async fn a_body_that_fails_validation_is_422_naming_the_field() {
    let probe = Client::new(&probe_server().await);
    let (status, ct, body) = post_raw(
        &probe,
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
        &probe,
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
        &probe,
        &json!({"name": "Lan", "phone": "0912345678"}).to_string(),
        "en",
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "quantity");
    assert_eq!(body["errors"][0]["code"], "required");

    let (status, _, body) = post_raw(
        &probe,
        &json!({"name": 7, "quantity": 1, "phone": "0912345678"}).to_string(),
        "en",
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "name");
}

#[tokio::test]
async fn a_panicking_handler_is_500_without_its_cause_and_serving_goes_on() {
    let probe = Client::new(&probe_server().await);
    let res = probe.send(Request::get("/boom")).await;
    assert_eq!(res.status, 500);
    assert_eq!(res.header("content-type"), Some(PROBLEM_JSON));
    let text = res.text();
    assert!(
        !text.contains("secret cause") && !text.contains("4242"),
        "the cause leaked: {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["code"], "internal");
    for _ in 0..3 {
        let res = probe.send(Request::get("/fine")).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.text(), "fine");
    }
}

#[tokio::test]
async fn an_unknown_route_is_404_problem_json_in_the_callers_language() {
    let app = TestApp::spawn().await;
    let res = app
        .api
        .send(Request::get("/v1/nothing-here").header("accept-language", "en-US,en;q=0.9"))
        .await;
    assert_eq!(res.status, 404);
    assert_eq!(res.header("content-type"), Some(PROBLEM_JSON));
    let body = res.json();
    assert_eq!(body["code"], "route_not_found");
    assert_eq!(body["detail"], "There is no such route.");
    let res = app
        .api
        .send(Request::get("/v1/nothing-here").header("accept-language", "vi-VN"))
        .await;
    let body = res.json();
    assert_eq!(body["detail"], "Không có đường dẫn này.");
    app.stop().await;
}

#[tokio::test]
async fn the_request_id_is_kept_or_made_and_answered() {
    let app = TestApp::spawn().await;
    let res = app
        .api
        .send(Request::get("/healthz").header("x-request-id", "req-from-the-caller-1"))
        .await;
    assert_eq!(res.header("x-request-id"), Some("req-from-the-caller-1"));
    let res = app.api.send(Request::get("/healthz")).await;
    let made = res.header("x-request-id").unwrap();
    assert_eq!(made.parse::<uuid::Uuid>().unwrap().get_version_num(), 7);
    let res = app
        .api
        .send(Request::get("/v1/missing").header("x-request-id", "req-404"))
        .await;
    let body = res.json();
    assert_eq!(body["request_id"], "req-404");
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        app.api.send(Request::get("/healthz")).await;
    }
    let text = app.api.send(Request::get("/metrics")).await.text();
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
    let path = "/v1/ops/order/dead-letters";
    let (status, _) = app.api.get(path, None).await;
    assert_eq!(status, 401);
    let res = app
        .api
        .send(Request::get(path).header("authorization", "Bearer not.a.token"))
        .await;
    assert_eq!(res.status, 401);
    assert_eq!(res.json()["code"], "invalid_token");
    let buyer = User::minted(Role::Buyer);
    assert_eq!(app.api.get(path, Some(&buyer)).await.0, 403);
    let operator = User::minted(Role::Operator);
    let (status, body) = app.api.get(path, Some(&operator)).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!([]));
    app.stop().await;
}

/// PostgreSQL stores no NUL character in text: a string holding one (`\u0000` in JSON) is
/// refused at the edge, naming its field, before anything is reserved or written, instead of
/// failing at the database with a 500.
#[tokio::test]
async fn a_nul_character_in_any_text_is_422_naming_the_field_and_holds_nothing() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let mut body = crate::support::calls::basket(&[(&listing, "1")], "cod");
    body["delivery"]["street"] = json!("12 Lê Lợi\u{0}");
    let res = api
        .send(
            Request::post("/v1/checkouts")
                .by(&buyer)
                .header("idempotency-key", "nul-1")
                .json(&body),
        )
        .await;
    let r = res.json();
    assert_eq!(res.status, 422, "{r}");
    assert_eq!(r["errors"][0]["field"], "delivery.street", "{r}");
    assert_eq!(r["errors"][0]["code"], "nul_character", "{r}");
    let s = api.stock(&seller, &listing).await.levels;
    assert_eq!(s.reserved, "0", "nothing was reserved");

    let order = api.cod_order(&buyer, &listing, "1").await;
    let (status, r) = api
        .order_action(&buyer, &order, "cancel", Some("không cần\u{0}nữa"))
        .await;
    assert_eq!(status, 422, "{r}");
    assert_eq!(r["errors"][0]["field"], "reason", "{r}");
    let mut listing_body = crate::support::calls::listing_body();
    listing_body["title"] = json!("Xoài\u{0}");
    let res = api
        .send(
            Request::post("/v1/listings")
                .by(&seller)
                .json(&listing_body),
        )
        .await;
    assert_eq!(res.status, 422, "{}", res.text());
    assert_eq!(res.json()["errors"][0]["field"], "title", "{}", res.text());
    app.stop().await;
}

/// Work a handler runs to completion on a task of its own (a checkout's saga) still serves the
/// request: calls it makes carry the request's id and language.
#[tokio::test]
async fn work_run_to_completion_keeps_the_requests_id_and_language() {
    let probe = Client::new(&probe_server().await);
    let res = probe
        .send(
            Request::get("/context")
                .header("x-request-id", "ctx-4242")
                .header("accept-language", "vi-VN"),
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.json(),
        json!({ "request_id": "ctx-4242", "language": "vi-VN" })
    );
}
