//! An order's life: who may do what, from which status; cancelling gives the stock back;
//! nobody reads another's orders.

use std::time::Duration;

use serde_json::json;

use crate::support::{
    TestApp, eventually,
    shop::{Api, basket},
};

#[tokio::test]
async fn transitions_follow_the_state_machine_and_the_roles() {
    let app = TestApp::spawn().await;
    let api = Api::one(&app.url);
    let (seller, buyer, listing) = api.shop().await;
    let (_, c) = api
        .checkout(&buyer, "k1", &basket(&[(&listing, "2")], "cod"))
        .await;
    let id = c["orders"][0]["id"].as_str().unwrap().to_owned();

    let (status, r) = api
        .order_post(
            &format!("/v1/orders/{id}/ship"),
            &seller.token,
            &[],
            &json!({}),
        )
        .await;
    assert_eq!(
        (status, r["code"].as_str()),
        (409, Some("invalid_transition")),
        "shipping before confirming"
    );
    let (status, _) = api
        .order_post(
            &format!("/v1/orders/{id}/confirm"),
            &buyer.token,
            &[],
            &json!({}),
        )
        .await;
    assert_eq!(status, 403, "a buyer does not confirm");
    let (status, _) = api
        .order_post(
            &format!("/v1/orders/{id}/cancel"),
            &seller.token,
            &[],
            &json!({}),
        )
        .await;
    assert_eq!(status, 403, "a seller declines, it does not cancel");
    let (status, r) = api
        .order_post(
            &format!("/v1/orders/{id}/decline"),
            &seller.token,
            &[],
            &json!({}),
        )
        .await;
    assert_eq!(
        (status, r["errors"][0]["field"].as_str()),
        (422, Some("reason"))
    );

    // The buyer cancels before shipping: the stock comes back.
    assert_eq!(api.stock(&seller, &listing).await["reserved"], "2");
    let (status, r) = api
        .order_post(
            &format!("/v1/orders/{id}/cancel"),
            &buyer.token,
            &[],
            &json!({ "reason": "đặt nhầm" }),
        )
        .await;
    assert_eq!(
        (status, r["status"].as_str()),
        (200, Some("cancelled")),
        "{r}"
    );
    eventually(
        Duration::from_secs(10),
        "the cancelled order's stock to come back",
        || async {
            let s = api.stock(&seller, &listing).await;
            (s["reserved"] == "0" && s["available"] == "10").then_some(())
        },
    )
    .await;
    let (status, _) = api
        .order_post(
            &format!("/v1/orders/{id}/cancel"),
            &buyer.token,
            &[],
            &json!({}),
        )
        .await;
    assert_eq!(status, 409, "cancelled is final");
    app.stop().await;
}

#[tokio::test]
async fn a_confirmed_then_failed_delivery_returns_the_stock_to_its_lots() {
    let app = TestApp::spawn().await;
    let api = Api::one(&app.url);
    let (seller, buyer, listing) = api.shop().await;
    let (_, c) = api
        .checkout(&buyer, "k1", &basket(&[(&listing, "4")], "cod"))
        .await;
    let id = c["orders"][0]["id"].as_str().unwrap().to_owned();
    for step in ["confirm", "ship", "fail_delivery", "return"] {
        let (status, r) = api
            .order_post(
                &format!("/v1/orders/{id}/{step}"),
                &seller.token,
                &[],
                &json!({}),
            )
            .await;
        assert_eq!(status, 200, "{step}: {r}");
    }
    eventually(
        Duration::from_secs(10),
        "the returned goods to be back in stock",
        || async {
            let s = api.stock(&seller, &listing).await;
            (s["on_hand"] == "10" && s["reserved"] == "0").then_some(())
        },
    )
    .await;
    let (_, movements) = api
        .listing_get(
            &format!("/v1/listings/{listing}/movements"),
            Some(&seller.token),
        )
        .await;
    let kinds: Vec<&str> = movements
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"sale") && kinds.contains(&"return"),
        "{kinds:?}"
    );
    app.stop().await;
}

/// Buyer A cannot see B's, a seller sees only its own.
async fn nobody_reads_anothers(api: &Api) {
    let (seller_a, seller_b) = (
        api.register("household").await,
        api.register("household").await,
    );
    let (buyer_a, buyer_b) = (api.register("buyer").await, api.register("buyer").await);
    let listing = api.listing(&seller_a, 65_000, 10).await;
    let (_, c) = api
        .checkout(&buyer_a, "k1", &basket(&[(&listing, "1")], "cod"))
        .await;
    let checkout = c["id"].as_str().unwrap();
    let order = c["orders"][0]["id"].as_str().unwrap();

    assert_eq!(
        api.order_get(&format!("/v1/checkouts/{checkout}"), &buyer_a.token)
            .await
            .0,
        200
    );
    assert_eq!(
        api.order_get(&format!("/v1/checkouts/{checkout}"), &buyer_b.token)
            .await
            .0,
        404
    );
    assert_eq!(
        api.order_get(&format!("/v1/orders/{order}"), &buyer_b.token)
            .await
            .0,
        404
    );
    assert_eq!(
        api.order_get(&format!("/v1/orders/{order}"), &seller_b.token)
            .await
            .0,
        404
    );
    assert_eq!(
        api.order_get(&format!("/v1/orders/{order}"), &seller_a.token)
            .await
            .0,
        200
    );
    let (status, _) = api
        .order_get(
            &format!("/v1/orders?seller_kind=household&seller_id={}", seller_a.id),
            &seller_b.token,
        )
        .await;
    assert_eq!(status, 403, "a seller lists only its own orders");
    let (_, mine) = api.order_get("/v1/orders", &buyer_b.token).await;
    assert_eq!(mine.as_array().unwrap().len(), 0);
    let (_, theirs) = api
        .order_get(
            &format!("/v1/orders?seller_kind=household&seller_id={}", seller_b.id),
            &seller_b.token,
        )
        .await;
    assert_eq!(theirs.as_array().unwrap().len(), 0);
    let (status, _) = api
        .order_post(
            &format!("/v1/orders/{order}/confirm"),
            &seller_b.token,
            &[],
            &json!({}),
        )
        .await;
    assert_eq!(status, 404, "another seller cannot even see it");
}

#[tokio::test]
async fn nobody_reads_anothers_checkouts_or_orders_in_one_process() {
    let app = TestApp::spawn().await;
    nobody_reads_anothers(&Api::one(&app.url)).await;
    app.stop().await;
}

#[tokio::test]
async fn nobody_reads_anothers_checkouts_or_orders_across_three_processes() {
    let app = crate::support::process::SplitApp::spawn().await;
    let api = Api {
        http: reqwest::Client::new(),
        listing: app.listing.url.clone(),
        order: app.order.url.clone(),
    };
    nobody_reads_anothers(&api).await;
}
