//! The saga when things fail: a service away, a process killed mid-checkout, an event
//! delivered twice.

use std::{sync::Arc, time::Duration};

use nongsan_shared::events::{Bus, Envelope, RedisBus};

use crate::support::{
    TestApp, TestDb, calls::basket, client::Request, eventually, free_port, process::SplitApp,
    servers, test_settings,
};

#[tokio::test]
async fn with_the_listing_service_away_the_buyer_gets_503_and_nothing_is_stored() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db).await;
    settings.listing_url = Some(format!("http://127.0.0.1:{}", free_port()));
    let app = TestApp::spawn_with(settings, db).await;
    let api = &app.api;
    let (_seller, buyer, listing) = api.shop().await;
    let (status, r) = api
        .checkout(&buyer, "k1", &basket(&[(&listing, "1")], "cod"))
        .await;
    assert_eq!(status, 503, "{r}");
    assert_eq!(r["code"], "dependency_unavailable");
    let pool = app.db.pool("order").await;
    let (checkouts, keys): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM checkouts), (SELECT count(*) FROM idempotency_keys)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (checkouts, keys),
        (0, 0),
        "nothing is stored, and the key can be used again"
    );
    app.stop().await;
}

#[tokio::test]
async fn with_the_payment_service_away_the_reservation_is_released_and_the_buyer_gets_503() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db).await;
    settings.payment_url = Some(format!("http://127.0.0.1:{}", free_port()));
    let app = TestApp::spawn_with(settings, db).await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let (status, r) = api
        .checkout(&buyer, "k1", &basket(&[(&listing, "2")], "vnpay"))
        .await;
    assert_eq!(status, 503, "{r}");
    assert_eq!(r["code"], "payment_unavailable");
    let s = api.stock(&seller, &listing).await.levels;
    assert_eq!(
        (s.reserved.as_str(), s.available.as_str()),
        ("0", "10"),
        "the reservation was released"
    );
    let pool = app.db.pool("order").await;
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE status NOT IN ('cancelled')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(open, 0, "no order is left open");
    app.stop().await;
}

#[tokio::test]
async fn an_order_process_killed_between_reserving_and_storing_leaves_a_reservation_that_expires() {
    let app = SplitApp::spawn_with(&[
        (
            "NONGSAN_FAILPOINTS",
            "checkout.after_reserve=abort".to_owned(),
        ),
        ("NONGSAN_COD_CONFIRM_TTL_SECS", "1".to_owned()),
    ])
    .await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let res = api
        .try_send(
            Request::post("/v1/checkouts")
                .by(&buyer)
                .header("idempotency-key", "k1")
                .json(&basket(&[(&listing, "3")], "cod")),
        )
        .await;
    assert!(res.is_err(), "the order process died mid-request");
    // The reservation was made; then the process died.
    let listing_pool = app.db.pool("listing").await;
    let reservations: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations")
        .fetch_one(&listing_pool)
        .await
        .unwrap();
    assert_eq!(reservations, 1);
    eventually(
        Duration::from_secs(20),
        "the orphan reservation to expire",
        || async {
            let status: String = sqlx::query_scalar("SELECT status FROM reservations")
                .fetch_one(&listing_pool)
                .await
                .unwrap();
            (status == "expired").then_some(())
        },
    )
    .await;
    let s = api.stock(&seller, &listing).await.levels;
    assert_eq!(
        (s.reserved.as_str(), s.available.as_str()),
        ("0", "10"),
        "its stock came back"
    );
    let order_pool = app.db.pool("order").await;
    let checkouts: i64 = sqlx::query_scalar("SELECT count(*) FROM checkouts")
        .fetch_one(&order_pool)
        .await
        .unwrap();
    assert_eq!(checkouts, 0, "no checkout without a reservation");
}

#[tokio::test]
async fn an_order_event_delivered_twice_changes_the_stock_once() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let id = api.cod_order(&buyer, &listing, "3").await;
    api.order_action(&seller, &id, "confirm", None).await;
    eventually(Duration::from_secs(10), "the sale", || async {
        (api.stock(&seller, &listing).await.levels.on_hand == "7").then_some(())
    })
    .await;

    // The same order.confirmed event arrives again.
    let order_pool = app.db.pool("order").await;
    let (event_id, aggregate, version, data): (uuid::Uuid, String, i64, serde_json::Value) =
        sqlx::query_as("SELECT id, aggregate_id, version, payload FROM outbox WHERE event_type = 'order.confirmed'").fetch_one(&order_pool).await.unwrap();
    let envelope = Envelope {
        id: event_id.into(),
        event_type: "order.confirmed".into(),
        source: "order".into(),
        aggregate_id: aggregate,
        version,
        occurred_at: chrono::Utc::now(),
        data,
    };
    let redis_url = servers().await.redis.clone();
    let bus: Arc<dyn Bus> = Arc::new(RedisBus::connect(&redis_url, &app.db.name).await.unwrap());
    bus.publish("order", &[envelope.clone(), envelope])
        .await
        .unwrap();
    // Wait until the listing service's consumer group has read and acknowledged both copies.
    let stream = nongsan_shared::events::stream_name(&app.db.name, "order");
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let last: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(&stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut con)
        .await
        .unwrap();
    let last_id = last.ids[0].id.clone();
    eventually(
        Duration::from_secs(10),
        "the copies to be read and acknowledged",
        || {
            let (mut con, stream, last_id) = (con.clone(), stream.clone(), last_id.clone());
            async move {
                let groups: Vec<std::collections::HashMap<String, redis::Value>> =
                    redis::cmd("XINFO")
                        .arg("GROUPS")
                        .arg(&stream)
                        .query_async(&mut con)
                        .await
                        .unwrap();
                let listing = groups.iter().find(|g| {
                    g.get("name").is_some_and(|n| {
                        redis::from_redis_value::<String>(n).ok().as_deref() == Some("listing")
                    })
                })?;
                let delivered: String =
                    redis::from_redis_value(listing.get("last-delivered-id")?).ok()?;
                let pending: i64 = redis::from_redis_value(listing.get("pending")?).ok()?;
                (delivered == last_id && pending == 0).then_some(())
            }
        },
    )
    .await;
    let listing_pool = app.db.pool("listing").await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(&listing_pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let sales: i64 = sqlx::query_scalar("SELECT count(*) FROM stock_movements WHERE kind = 'sale'")
        .fetch_one(&listing_pool)
        .await
        .unwrap();
    assert_eq!(
        sales, 2,
        "one sale per lot filled (2 kg from the old lot, 1 from the new), once"
    );
    let s = api.stock(&seller, &listing).await.levels;
    assert_eq!((s.on_hand.as_str(), s.reserved.as_str()), ("7", "0"));
    app.stop().await;
}

#[tokio::test]
async fn with_the_listing_process_stopped_the_buyer_gets_503_and_nothing_is_stored() {
    let app = SplitApp::spawn().await;
    let api = app.api.clone();
    let (_seller, buyer, listing) = api.shop().await;
    let SplitApp {
        listing: listing_process,
        order,
        payment: _payment,
        db,
        api: _,
        ..
    } = app;
    assert!(listing_process.terminate().await.success());
    let res = api
        .checkout(&buyer, "k1", &basket(&[(&listing, "1")], "cod"))
        .await;
    assert_eq!(
        (res.0, res.1["code"].as_str()),
        (503, Some("dependency_unavailable")),
        "{}",
        res.1
    );
    let pool = db.pool("order").await;
    let (checkouts, keys): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM checkouts), (SELECT count(*) FROM idempotency_keys)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((checkouts, keys), (0, 0));
    drop(order);
}

#[tokio::test]
async fn with_the_payment_process_stopped_the_reservation_is_released_across_processes() {
    let app = SplitApp::spawn().await;
    let api = app.api.clone();
    let (seller, buyer, listing) = api.shop().await;
    let SplitApp {
        listing: _listing,
        order: _order,
        payment,
        db: _db,
        api: _,
        ..
    } = app;
    assert!(payment.terminate().await.success());
    let (status, r) = api
        .checkout(&buyer, "k1", &basket(&[(&listing, "2")], "vnpay"))
        .await;
    assert_eq!(
        (status, r["code"].as_str()),
        (503, Some("payment_unavailable")),
        "{r}"
    );
    let s = api.stock(&seller, &listing).await.levels;
    assert_eq!(
        (s.reserved.as_str(), s.available.as_str()),
        ("0", "10"),
        "the reservation was released"
    );
}
