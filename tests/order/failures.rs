//! The saga when things fail: a service away, a process killed mid-checkout, an event
//! delivered twice.

use std::{sync::Arc, time::Duration};

use nongsan_shared::events::{Bus, Envelope, RedisBus};

use nongsan_shared::auth::Role;

use serde_json::json;

use crate::support::{
    ClosedPort, RedisServer, TestApp, TestDb,
    calls::{self, PASSWORD, basket},
    client::{Client, Request},
    eventually, free_port,
    process::{self, NongsanProcess, SplitApp},
    servers, test_settings,
};

#[tokio::test]
async fn with_the_listing_service_away_the_buyer_gets_503_and_nothing_is_stored() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db).await;
    let away = ClosedPort::new();
    settings.listing_url = Some(format!("http://127.0.0.1:{}", away.port()));
    let app = TestApp::spawn_with(settings, db).await;
    let api = &app.api;
    let (_seller, buyer, listing) = api.shop().await;
    let res = api
        .send(
            Request::post("/v1/checkouts")
                .by(&buyer)
                .header("idempotency-key", "k1")
                .json(&basket(&[(&listing, "1")], "cod")),
        )
        .await;
    let r = res.json();
    assert_eq!(res.status, 503, "{r}");
    assert_eq!(r["code"], "dependency_unavailable");
    assert_eq!(
        res.header("retry-after"),
        Some("5"),
        "a 503 says when to try again"
    );
    let pool = app.db.pool("order").await;
    assert_eq!(
        stored_and_keys(&pool).await,
        (0, vec!["retry".to_owned()]),
        "nothing is stored, and the key is left to the next request with it"
    );
    // Which takes it over at once (the reservation may have been made under its id).
    let started = std::time::Instant::now();
    let (status, r) = api
        .checkout(&buyer, "k1", &basket(&[(&listing, "1")], "cod"))
        .await;
    assert_eq!(
        (status, r["code"].as_str()),
        (503, Some("dependency_unavailable")),
        "{r}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "not held for the key"
    );
    app.stop().await;
}

#[tokio::test]
async fn with_the_payment_service_away_the_reservation_is_released_and_the_buyer_gets_503() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db).await;
    let away = ClosedPort::new();
    settings.payment_url = Some(format!("http://127.0.0.1:{}", away.port()));
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
    assert_eq!(stored_and_keys(&pool).await, (0, vec!["retry".to_owned()]));
    drop(order);
}

/// The checkouts stored, and the states of the idempotency keys.
async fn stored_and_keys(pool: &sqlx::PgPool) -> (i64, Vec<String>) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM checkouts), (SELECT coalesce(array_agg(state ORDER BY key), '{}') FROM idempotency_keys)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
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

/// Issue 15: `nongsan up` killed with SIGKILL in the middle of two-seller cash-on-delivery
/// checkouts, then started again on the same data. Every checkout answered 201 is there with
/// its stock held; each listing's stock equals the sum of its movements; reserved stock
/// equals what active reservations hold; no order event is lost, and the first seller's
/// confirmations (made during the load) are each consumed once; and the reservations
/// of checkouts that died between reserving and storing are given back within the
/// reconciliation window (3 s here, a minute by default), not after the 48 hours a
/// cash-on-delivery reservation lives.
#[tokio::test]
async fn a_server_killed_mid_checkouts_loses_nothing_and_gives_back_what_dead_checkouts_held() {
    let db = TestDb::new().await;
    let port = free_port();
    let mut env = process::up_env(&db, port);
    env.extend([
        ("NONGSAN_MAX_OPEN_COD_CHECKOUTS", "10000".to_owned()),
        ("NONGSAN_MAX_HOLD_SHARE_PERCENT", "100".to_owned()),
        ("NONGSAN_RESERVATION_ORPHAN_SECS", "3".to_owned()),
    ]);
    // Each checkout waits a little between reserving and storing, so the kill finds some
    // there (under load, as the operator's run found, the same happens without the wait).
    let mut slowed = env.clone();
    slowed.push((
        "NONGSAN_FAILPOINTS",
        "checkout.before_store=delay:150".to_owned(),
    ));
    let mut server = NongsanProcess::start_on(&["up"], port, &slowed).await;
    let api = Client::new(&server.url);
    let sellers = [
        api.register(Role::Household).await,
        api.register(Role::Household).await,
    ];
    let listings = [
        api.listing_with_stock(&sellers[0], "100000").await,
        api.listing_with_stock(&sellers[1], "100000").await,
    ];
    let mut buyers = Vec::new();
    for _ in 0..6 {
        buyers.push(api.register(Role::Buyer).await);
    }
    let answered = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    // The first seller's orders, confirmed as they come: their `order.confirmed` events go to
    // the listing service (which sells their stock), before and after the kill.
    let to_confirm = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for buyer in buyers {
        let (api, answered, to_confirm) = (api.clone(), answered.clone(), to_confirm.clone());
        let first_seller = sellers[0].id.clone();
        let body = basket(&[(&listings[0], "1"), (&listings[1], "1")], "cod");
        tasks.push(tokio::spawn(async move {
            loop {
                let req = Request::post("/v1/checkouts")
                    .by(&buyer)
                    .header("idempotency-key", &uuid::Uuid::now_v7().to_string())
                    .json(&body);
                match api.try_send(req).await {
                    Ok(res) if res.status == 201 => {
                        let made = res.json();
                        let id = made["id"].as_str().unwrap().to_owned();
                        answered.lock().unwrap().push(id);
                        let first = made["orders"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|o| o["seller"]["id"] == first_seller.as_str())
                            .map(|o| o["id"].as_str().unwrap().to_owned());
                        to_confirm.lock().unwrap().extend(first);
                    }
                    Ok(res) => panic!("checkout answered {}: {}", res.status, res.text()),
                    // The server is gone.
                    Err(_) => return,
                }
            }
        }));
    }
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (api, to_confirm, seller, killed) = (
            api.clone(),
            to_confirm.clone(),
            sellers[0].clone(),
            killed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let next = to_confirm.lock().unwrap().pop();
                let Some(order) = next else {
                    if killed.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let req = Request::post(format!("/v1/orders/{order}/confirm"))
                    .by(&seller)
                    .json(&json!({}));
                match api.try_send(req).await {
                    // Paced: a few confirmations a second are enough to cross the kill, and
                    // their sales do not crowd the checkouts out of the window the kill needs.
                    Ok(res) if res.status == 200 => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Ok(res) => panic!("confirmation answered {}: {}", res.status, res.text()),
                    Err(_) => return,
                }
            }
        }));
    }
    let listing = db.pool("listing").await;
    let order = db.pool("order").await;
    // Reservations still active with no checkout behind them: dead checkouts' stock, or, while
    // the server runs, checkouts between reserving and storing.
    let orphans = || async {
        let active: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM listing.reservations WHERE status = 'active'")
                .fetch_all(&listing)
                .await
                .unwrap();
        let stored: Vec<uuid::Uuid> = sqlx::query_scalar(
            r#"SELECT reservation_id FROM "order".checkouts WHERE reservation_id = ANY($1)"#,
        )
        .bind(&active)
        .fetch_all(&order)
        .await
        .unwrap();
        active.len() - stored.len()
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The kill lands once a checkout is seen between reserving and storing. At a moment of
    // the test's choosing, a busy machine twice left none there (CI, beside 100 other tests).
    let seen_by = tokio::time::Instant::now() + Duration::from_secs(20);
    while orphans().await == 0 {
        assert!(
            tokio::time::Instant::now() < seen_by,
            "no checkout was seen between reserving and storing in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    process::signal(server.child.id() as i32, rustix::process::Signal::KILL);
    server.child.wait().unwrap();
    killed.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(
        answered.len() >= 10,
        "only {} checkouts before the kill",
        answered.len()
    );
    drop(server);

    let payment = db.pool("payment").await;
    // Counted before the restart: the restarted server reconciles at once, and on a slow
    // machine its start alone can outlast the 3 s window.
    let at_kill = orphans().await;
    assert!(
        at_kill > 0,
        "the kill left no checkout between reserving and storing; the test proves nothing"
    );
    env.push(("NONGSAN_FAILPOINTS", String::new()));
    let server = NongsanProcess::start_on(&["up"], port, &env).await;
    eventually(
        Duration::from_secs(30),
        "the dead checkouts' reservations to be given back",
        || async { (orphans().await == 0).then_some(()) },
    )
    .await;

    // Every answered checkout is there, still holding its stock.
    let held: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "order".checkouts c WHERE c.id::text = ANY($1) AND c.status = 'placed'"#,
    )
    .bind(&answered)
    .fetch_one(&order)
    .await
    .unwrap();
    assert_eq!(
        held,
        answered.len() as i64,
        "an answered checkout is missing"
    );
    let active_for_answered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM listing.reservations WHERE id::text = ANY($1) AND status = 'active'",
    )
    .bind(&answered)
    .fetch_one(&listing)
    .await
    .unwrap();
    assert_eq!(
        active_for_answered,
        answered.len() as i64,
        "an answered checkout lost its reservation"
    );
    // Stock equals its movements; reserved equals what active reservations hold.
    let stock = nongsan_listing::stock::levels::consistency(&mut listing.acquire().await.unwrap())
        .await
        .unwrap();
    let (off_movements, off_reservations) = (stock.off_movements, stock.off_reservations);
    assert_eq!(
        off_movements, 0,
        "a listing's stock differs from its movements"
    );
    assert_eq!(
        off_reservations, 0,
        "reserved stock differs from active reservations"
    );
    // Every order event reaches its consumer once: the listing service's inbox holds each
    // `order.confirmed` of the order service's outbox, no more, no fewer, those written
    // before the kill included.
    let confirmed: i64 = eventually(
        Duration::from_secs(30),
        "every confirmation consumed by the listing service",
        || async {
            let outbox: i64 = sqlx::query_scalar(
                r#"SELECT count(*) FROM "order".outbox WHERE event_type = 'order.confirmed'"#,
            )
            .fetch_one(&order)
            .await
            .unwrap();
            let inbox: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM listing.inbox WHERE event_type = 'order.confirmed' AND status = 'done'",
            )
            .fetch_one(&listing)
            .await
            .unwrap();
            (outbox == inbox).then_some(outbox)
        },
    )
    .await;
    assert!(confirmed > 0, "no order was confirmed before the kill");
    // No order event is lost to the kill: each order of an answered checkout has its
    // `order.placed`, and the relay published every one (none is left in the outbox). No
    // service follows a cash-on-delivery order's placement, so none consumes them here.
    let published: i64 = eventually(
        Duration::from_secs(30),
        "every order event published",
        || async {
            let (placed, waiting): (i64, i64) = sqlx::query_as(
                r#"SELECT count(*), count(*) FILTER (WHERE published_at IS NULL) FROM "order".outbox WHERE event_type = 'order.placed'"#,
            )
            .fetch_one(&order)
            .await
            .unwrap();
            (waiting == 0).then_some(placed)
        },
    )
    .await;
    assert!(
        published >= 2 * answered.len() as i64,
        "an order of an answered checkout has no event"
    );
    let unbalanced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT transaction_id FROM payment.ledger_entries GROUP BY transaction_id HAVING sum(amount_vnd) <> 0) t",
    )
    .fetch_one(&payment)
    .await
    .unwrap();
    assert_eq!(unbalanced, 0, "a ledger transaction does not sum to zero");
    let log = server.log_text();
    assert!(
        log.contains("gave back reservations whose checkout never came"),
        "{log}"
    );
}

/// Issue 15: while Redis is away, `/readyz` says which dependency is down (503, `events` not
/// ok, PostgreSQL ok); a request that needs Redis (signing in counts failures there) answers
/// 503 `dependency_unavailable` with Retry-After, not a hang or a 500; a checkout, which does
/// not need it, is stored and its events wait in the outbox. Once Redis is back, the same
/// requests succeed and the events flow, without a restart.
#[tokio::test]
async fn with_redis_away_readyz_names_it_and_its_requests_get_503_until_it_is_back() {
    let redis = RedisServer::start_private().await;
    let db = TestDb::new().await;
    let port = free_port();
    let mut env = process::up_env(&db, port);
    env.extend([
        ("REDIS_URL", redis.url()),
        ("NONGSAN_REDIS_PREFIX", db.name.clone()),
    ]);
    let server = NongsanProcess::start_on(&["up"], port, &env).await;
    let api = Client::new(&server.url);
    let (seller, buyer, listing) = api.shop().await;
    let sign_in = || {
        Request::post("/v1/sessions").json(&json!({ "phone": buyer.phone(), "password": PASSWORD }))
    };

    redis.kill().await;
    let ready = api.send(Request::get("/readyz")).await;
    let report = ready.json();
    assert_eq!(ready.status, 503, "{report}");
    let ok_of = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["ok"].clone())
    };
    assert_eq!(ok_of("events"), Some(json!(false)), "{report}");
    assert_eq!(ok_of("postgres"), Some(json!(true)), "{report}");
    let res = tokio::time::timeout(Duration::from_secs(30), api.try_send(sign_in()))
        .await
        .expect("an answer while Redis is away, not a hang")
        .unwrap();
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(res.json()["code"], "dependency_unavailable");
    assert_eq!(res.header("retry-after"), Some("5"));
    let (status, made) = api
        .checkout(&buyer, "k1", &basket(&[(&listing, "1")], "cod"))
        .await;
    assert_eq!(status, 201, "a checkout needs no Redis: {made}");

    redis.restart().await;
    eventually(
        Duration::from_secs(30),
        "signing in to work again",
        || async {
            let res = api.try_send(sign_in()).await.ok()?;
            (res.status == 200).then_some(())
        },
    )
    .await;
    eventually(Duration::from_secs(30), "/readyz to be ready", || async {
        let res = api.try_send(Request::get("/readyz")).await.ok()?;
        (res.status == 200).then_some(())
    })
    .await;
    // The checkout's `order.placed`, written while Redis was away, is published now.
    let order_db = db.pool("order").await;
    eventually(
        Duration::from_secs(30),
        "the checkout's order.placed to be published",
        || async {
            let (placed, waiting): (i64, i64) = sqlx::query_as(
                "SELECT count(*), count(*) FILTER (WHERE published_at IS NULL) FROM outbox WHERE event_type = 'order.placed'",
            )
            .fetch_one(&order_db)
            .await
            .unwrap();
            (placed == 1 && waiting == 0).then_some(())
        },
    )
    .await;
    // And events reach their consumers through Redis again: the seller's confirmation sells
    // the order's stock in the listing service.
    let (status, confirmed) = api
        .order_action(
            &seller,
            made["orders"][0]["id"].as_str().unwrap(),
            "confirm",
            None,
        )
        .await;
    assert_eq!(status, 200, "{confirmed}");
    let listing_db = db.pool("listing").await;
    eventually(
        Duration::from_secs(30),
        "the confirmation to reach the listing service",
        || async {
            let handled: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM inbox WHERE event_type = 'order.confirmed' AND status = 'done'",
            )
            .fetch_one(&listing_db)
            .await
            .unwrap();
            (handled == 1).then_some(())
        },
    )
    .await;
}

/// A cash-on-delivery checkout stored just before its process died, whose answer never
/// reached the buyer: its key's answer was stored with it, so the buyer's retry with the same
/// key replays that checkout at once (no minute's wait for the key), and its stock stays held.
#[tokio::test]
async fn a_retry_of_a_cash_on_delivery_checkout_stored_before_a_crash_replays_it() {
    stored_before_a_crash("cod").await;
}

/// The same with an online payment, whose answer waits for the payment to open: the retry,
/// once the key is taken over, answers that checkout and its stock stays held (the retry's
/// store fails on the existing checkout; what holds the reservation decides, and a stored
/// checkout holds it).
#[tokio::test]
async fn a_retry_of_an_online_checkout_stored_before_a_crash_keeps_its_stock() {
    stored_before_a_crash("vnpay").await;
}

async fn stored_before_a_crash(method: &str) {
    let db = TestDb::new().await;
    let port = free_port();
    let mut env = process::up_env(&db, port);
    env.push((
        "NONGSAN_VNPAY_TMN_CODE",
        crate::support::VNPAY_TMN.to_owned(),
    ));
    env.push((
        "NONGSAN_VNPAY_HASH_SECRET",
        crate::support::VNPAY_SECRET.to_owned(),
    ));
    let mut dying = env.clone();
    dying.push((
        "NONGSAN_FAILPOINTS",
        "checkout.after_store=abort".to_owned(),
    ));
    let server = NongsanProcess::start_on(&["up"], port, &dying).await;
    let api = Client::new(&server.url);
    let (seller, buyer, listing) = api.shop().await;
    let body = basket(&[(&listing, "3")], method);
    let first = api
        .try_send(
            Request::post("/v1/checkouts")
                .by(&buyer)
                .header("idempotency-key", "k1")
                .json(&body),
        )
        .await;
    assert!(first.is_err(), "the process died after storing");
    drop(server);
    env.push(("NONGSAN_FAILPOINTS", String::new()));
    let server = NongsanProcess::start_on(&["up"], port, &env).await;
    let api = Client::new(&server.url);
    let order = db.pool("order").await;
    let expected = if method == "cod" {
        // The key was answered in the checkout's transaction.
        200
    } else {
        // The key's first holder died: a minute later a retry takes it over.
        sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '2 minutes'")
            .execute(&order)
            .await
            .unwrap();
        201
    };
    let (status, retried) = api.checkout(&buyer, "k1", &body).await;
    assert_eq!(status, expected, "{method}: {retried}");
    let stored: Vec<String> = sqlx::query_scalar("SELECT id::text FROM checkouts")
        .fetch_all(&order)
        .await
        .unwrap();
    assert_eq!(stored, vec![retried["id"].as_str().unwrap().to_owned()]);
    let s = api.stock(&seller, &listing).await.levels;
    assert_eq!(
        (s.reserved.as_str(), s.available.as_str()),
        ("3", "7"),
        "{method}: the stored checkout's stock is still held"
    );
}

/// The listing service's orphan sweep may give up a reservation whose checkout is slow to
/// be stored (it takes the reservation's claim as abandoned). The checkout then stores
/// nothing: no checkout, no order, no event; the buyer gets 409 `reservation_expired`, the
/// stock is given back, and the key is free for a retry.
#[tokio::test]
async fn a_checkout_whose_reservation_was_given_up_first_stores_nothing() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    // Long enough, on a loaded machine, for the claim below to be made while it waits.
    let delayed = crate::support::FailPoint::set(
        "checkout.before_store",
        nongsan_shared::failpoint::Action::Delay(5000),
    );
    let checkout = {
        let (api, buyer) = (api.clone(), buyer.clone());
        let body = basket(&[(&listing, "2")], "cod");
        tokio::spawn(async move { api.checkout(&buyer, "given-up", &body).await })
    };
    let order = app.db.pool("order").await;
    let reservation = app.db.first_reservation().await;
    // What the sweep does first when it gives a reservation up (`checkout::orphans`).
    sqlx::query(
        "INSERT INTO reservation_claims (reservation_id, outcome) VALUES ($1, 'abandoned')",
    )
    .bind(reservation)
    .execute(&order)
    .await
    .unwrap();

    let (status, answer) = checkout.await.unwrap();
    drop(delayed);
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["code"], "reservation_expired");
    for table in [
        "checkouts",
        "orders",
        "order_lines",
        "outbox",
        "idempotency_keys",
    ] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&order)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    assert_eq!(api.stock(&seller, &listing).await.levels.reserved, "0");
    let (status, again) = api
        .checkout(&buyer, "given-up", &basket(&[(&listing, "2")], "cod"))
        .await;
    assert_eq!(status, 201, "{again}");
    app.stop().await;
}

/// `nongsan up` told to stop (SIGTERM) while a checkout whose buyer left is still running
/// lets it finish first: started again, it answers the buyer's retry with that checkout.
#[tokio::test]
async fn a_server_stopping_lets_a_checkout_whose_buyer_left_finish() {
    let db = TestDb::new().await;
    let port = free_port();
    let mut env = process::up_env(&db, port);
    env.push((
        "NONGSAN_FAILPOINTS",
        "checkout.before_store=delay:1000".to_owned(),
    ));
    let server = NongsanProcess::start_on(&["up"], port, &env).await;
    let api = Client::new(&server.url);
    let (seller, buyer, _) = api.shop().await;
    let listing = api.listing_with_stock(&seller, "10").await;
    let body = basket(&[(&listing, "2")], "cod");
    calls::cut_off_checkout(&api, &buyer, "left", &body, &db.pool("order").await).await;
    let status = server.terminate().await;
    assert!(status.success(), "{status}");
    let server = NongsanProcess::start_on(&["up"], port, &env).await;
    let api = Client::new(&server.url);
    let started = std::time::Instant::now();
    let (status, again) = api.checkout(&buyer, "left", &body).await;
    assert_eq!(status, 200, "the checkout made before the stop: {again}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered from the stored checkout"
    );
    server.terminate().await;
}
