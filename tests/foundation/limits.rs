//! Bounds on what one request may carry and what the edge tells: the JSON body limit, lists
//! and free text inside bodies, the metrics labels, the readiness details, and who may hold
//! stock directly.

use std::sync::Arc;

use nongsan_shared::{
    auth::Role,
    error::PROBLEM_JSON,
    http::{Mode, Readiness, ops_routes, with_common_layers},
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    TestApp,
    calls::{id_of, listing_body},
    client::{Client, Request},
    user::User,
};

/// Asserts a 413 problem+json `payload_too_large`.
fn assert_too_large(res: &crate::support::client::Response) {
    assert_eq!(res.status, 413, "{}", res.text());
    assert_eq!(res.header("content-type"), Some(PROBLEM_JSON));
    assert_eq!(res.json()["code"], "payload_too_large", "{}", res.text());
}

#[tokio::test]
async fn a_json_body_over_one_mebibyte_is_413_problem_json() {
    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    let mut body = listing_body();
    body["description"] = json!("x".repeat(1_100_000));
    let res = app
        .api
        .send(Request::post("/v1/listings").by(&seller).json(&body))
        .await;
    assert_too_large(&res);
    // The order actions read their optional body themselves: the same limit.
    let buyer = app.api.register(Role::Buyer).await;
    let res = app
        .api
        .send(
            Request::post(format!("/v1/orders/{}/cancel", uuid::Uuid::now_v7()))
                .by(&buyer)
                .json(&json!({ "reason": "x".repeat(1_100_000) })),
        )
        .await;
    assert_too_large(&res);
    // The stock import keeps its own 2 MiB limit: a 1.5 MiB file is read (and refused for
    // what it holds, not for its size).
    let manager = app.api.staff(Role::CooperativeManager).await;
    let coop = app
        .api
        .create_cooperative(&manager, &json!({ "name": "HTX Rau sạch Đơn Dương", "tax_code": "5801234567", "address": { "province_code": "68", "commune_code": "24931" } }))
        .await;
    let csv = format!(
        "listing,lot_code,household,quantity,harvest_date\n{},{},{},1,2026-11-20\n",
        uuid::Uuid::now_v7(),
        "L".repeat(1_500_000),
        seller.id
    );
    let res = app
        .api
        .send(
            Request::post(format!("/v1/cooperatives/{coop}/imports"))
                .by(&manager)
                .body("text/csv", csv),
        )
        .await;
    assert_eq!(res.status, 422, "{}", res.text());
    app.stop().await;
}

/// The `field`s of a 422's errors.
fn fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors: {body}"))
        .iter()
        .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn lists_and_reasons_in_bodies_are_bounded_with_a_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let (seller, buyer, listing) = app.api.shop().await;
    let long = "lý do ".repeat(100); // 600 characters

    let mut body = listing_body();
    let cert = body["certifications"][0].clone();
    body["certifications"] = json!(vec![cert; 21]);
    let (status, res) = app.api.post("/v1/listings", Some(&seller), &body).await;
    assert_eq!(status, 422, "{res}");
    assert!(fields(&res).contains(&"certifications".to_owned()), "{res}");
    let mut body = listing_body();
    body["photos"] = json!(vec!["https://anh.vn/xoai.jpg"; 11]);
    let (status, res) = app.api.post("/v1/listings", Some(&seller), &body).await;
    assert_eq!(status, 422, "{res}");
    assert!(fields(&res).contains(&"photos".to_owned()), "{res}");

    let operator = User::minted(Role::Operator);
    let (status, res) = app
        .api
        .post(
            &format!("/v1/listings/{listing}/status"),
            Some(&operator),
            &json!({ "status": "hidden", "reason": long }),
        )
        .await;
    assert_eq!(status, 422, "{res}");
    assert_eq!(fields(&res), ["reason"], "{res}");

    let order = app.api.cod_order(&buyer, &listing, "1").await;
    let (status, res) = app
        .api
        .order_action(&seller, &order, "decline", Some(&long))
        .await;
    assert_eq!(status, 422, "{res}");
    assert_eq!(fields(&res), ["reason"], "{res}");
    let (status, res) = app
        .api
        .order_action(&buyer, &order, "cancel", Some(&long))
        .await;
    assert_eq!(status, 422, "{res}");
    assert_eq!(fields(&res), ["reason"], "{res}");
    // 500 characters are fine.
    let (status, res) = app
        .api
        .order_action(&buyer, &order, "cancel", Some(&"x".repeat(500)))
        .await;
    assert_eq!(status, 200, "{res}");
    app.stop().await;
}

#[tokio::test]
async fn unknown_methods_are_counted_as_other() {
    let app = TestApp::spawn().await;
    let brew = Method::from_bytes(b"BREW").unwrap();
    let res = app.api.send(Request::new(brew, "/healthz")).await;
    assert!(res.status >= 400, "{}", res.status);
    let text = app.api.send(Request::get("/metrics")).await.text();
    assert!(
        !text.contains("BREW"),
        "an unknown method is a label:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("http_requests_total{") && l.contains("method=\"other\"")),
        "no `other` method in:\n{text}"
    );
    app.stop().await;
}

struct Failing;

#[async_trait::async_trait]
impl Readiness for Failing {
    fn name(&self) -> &str {
        "postgres"
    }
    fn mode(&self) -> Mode {
        Mode::External
    }
    async fn check(&self) -> anyhow::Result<()> {
        anyhow::bail!("password authentication failed for user \"nongsan\" at db.internal:5432")
    }
}

#[tokio::test]
async fn readyz_tells_ok_or_not_without_error_texts() {
    let (router, _) = ops_routes().split_for_parts();
    let router = with_common_layers(
        router.with_state(Arc::new(vec![Arc::new(Failing) as Arc<dyn Readiness>])),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let probe = Client::new(&format!("http://{addr}"));
    let res = probe.send(Request::get("/readyz")).await;
    assert_eq!(res.status, 503);
    assert_eq!(
        res.json(),
        json!({ "status": "not-ready", "checks": [{ "name": "postgres", "mode": "external", "ok": false }] })
    );
    let operator = User::minted(Role::Operator);
    let res = probe.send(Request::get("/readyz").by(&operator)).await;
    assert!(!res.text().contains("db.internal"), "{}", res.text());
}

#[tokio::test]
async fn only_the_order_service_holds_commits_and_releases_stock() {
    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    let listing = app.api.listing_with_stock(&seller, "10").await;
    let service = User::minted(Role::Service);
    let operator = User::minted(Role::Operator);
    let reserve = |who: &User, id: String| {
        let req = Request::post("/v1/internal/reservations")
            .by(who)
            .json(&json!({
                "id": id, "ttl_secs": 600, "lines": [{ "listing_id": listing, "quantity": "1" }]
            }));
        app.api.send(req)
    };
    let res = reserve(&operator, uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(res.status, 403, "{}", res.text());
    let res = reserve(&service, uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let id = id_of(&res.json());
    for action in ["commit", "release"] {
        let (status, body) = app
            .api
            .post(
                &format!("/v1/internal/reservations/{id}/{action}"),
                Some(&operator),
                &json!({}),
            )
            .await;
        assert_eq!(status, 403, "{action}: {body}");
    }
    let (status, body) = app
        .api
        .post(
            &format!("/v1/internal/reservations/{id}/release"),
            Some(&service),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}
