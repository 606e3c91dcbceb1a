//! One checkout across sellers, in both shapes; idempotency; bad input.

use std::{sync::Arc, time::Duration};

use nongsan_shared::auth::Role;
use serde_json::{Value, json};

use crate::support::{
    TestApp,
    calls::{basket, cut_off_checkout},
    client::Client,
    eventually,
    process::SplitApp,
};

/// A two-seller cash-on-delivery basket, from checkout to delivery.
async fn two_seller_basket_end_to_end(api: &Client) {
    let (a, b) = (
        api.register(Role::Household).await,
        api.register(Role::Household).await,
    );
    let buyer = api.register(Role::Buyer).await;
    let la = api.listing_in_two_lots(&a, 65_000, 10).await;
    let lb = api.listing_in_two_lots(&b, 45_500, 20).await;

    let (status, c) = api
        .checkout(
            &buyer,
            "basket-1",
            &basket(&[(&la, "3"), (&lb, "1.5")], "cod"),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    // The answer is built from what was written, not read back: it must be what a read of
    // the checkout shows (a read adds the lots that filled each line once sold; none yet).
    let without_lots = |mut v: Value| {
        for order in v["orders"].as_array_mut().unwrap() {
            for line in order["lines"].as_array_mut().unwrap() {
                line.as_object_mut().unwrap().remove("lots");
            }
        }
        v
    };
    let (status, read) = api
        .get(
            &format!("/v1/checkouts/{}", c["id"].as_str().unwrap()),
            Some(&buyer),
        )
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(without_lots(read), without_lots(c.clone()));
    let orders = c["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 2, "one order per seller");
    let order_of = |seller: &str| {
        orders
            .iter()
            .find(|o| o["seller"]["id"] == seller)
            .cloned()
            .unwrap()
    };
    let (oa, ob) = (order_of(&a.id), order_of(&b.id));
    assert_eq!(
        (
            oa["items_total"].as_i64(),
            oa["delivery_fee"].as_i64(),
            oa["total"].as_i64()
        ),
        (Some(195_000), Some(30_000), Some(225_000))
    );
    // 45,500 × 1.5 = 68,250
    assert_eq!(
        (ob["items_total"].as_i64(), ob["total"].as_i64()),
        (Some(68_250), Some(98_250))
    );
    assert_eq!(c["items_total"], 263_250);
    assert_eq!(c["delivery_total"], 60_000);
    assert_eq!(c["grand_total"], 323_250);
    assert_eq!(oa["status"], "placed");
    assert_eq!(api.stock(&a, &la).await.levels.reserved, "3");
    assert_eq!(api.stock(&b, &lb).await.levels.reserved, "1.5");

    // Each seller sees its own order and confirms it: the stock is sold.
    for (seller, order, listing, left) in [(&a, &oa, &la, "7"), (&b, &ob, &lb, "18.5")] {
        let (status, list) = api.seller_orders(seller, &seller.id).await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        assert!(list["next_cursor"].is_null());
        let id = order["id"].as_str().unwrap();
        let (status, confirmed) = api.order_action(seller, id, "confirm", None).await;
        assert_eq!(
            (status, confirmed["status"].as_str()),
            (200, Some("confirmed")),
            "{confirmed}"
        );
        eventually(
            Duration::from_secs(10),
            "the confirmed order's stock to be sold",
            || async {
                let s = api.stock(seller, listing).await.levels;
                (s.on_hand == left && s.reserved == "0").then_some(())
            },
        )
        .await;
    }
    // The lines show the lots that filled them, oldest harvest first.
    let id = oa["id"].as_str().unwrap();
    let (_, read) = api.read_order(&buyer, id).await;
    let lots = read["lines"][0]["lots"]
        .as_array()
        .unwrap_or_else(|| panic!("no lots: {read}"));
    let got: Vec<(&str, &str)> = lots
        .iter()
        .map(|l| {
            (
                l["lot_code"].as_str().unwrap(),
                l["quantity"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, vec![("OLD-1", "2"), ("NEW-1", "1")]);

    for step in ["ship", "deliver"] {
        let (status, o) = api.order_action(&a, id, step, None).await;
        assert_eq!(status, 200, "{step}: {o}");
    }
    let (_, o) = api.read_order(&buyer, id).await;
    assert_eq!(
        (o["status"].as_str(), o["cash_collected"].as_bool()),
        (Some("delivered"), Some(true))
    );
}

#[tokio::test]
async fn a_two_seller_basket_becomes_one_checkout_with_two_orders_in_one_process() {
    let app = TestApp::spawn().await;
    two_seller_basket_end_to_end(&app.api).await;
    app.stop().await;
}

#[tokio::test]
async fn a_two_seller_basket_becomes_one_checkout_with_two_orders_across_three_processes() {
    let app = SplitApp::spawn().await;
    two_seller_basket_end_to_end(&app.api).await;
}

/// Fifty identical requests with one key, then the key with another body.
async fn one_key_one_checkout(api: Client, db: &crate::support::TestDb) {
    let api = Arc::new(api);
    let seller = api.register(Role::Household).await;
    let buyer = Arc::new(api.register(Role::Buyer).await);
    let listing = api.listing_in_two_lots(&seller, 65_000, 100).await;
    let body = Arc::new(basket(&[(&listing, "2")], "cod"));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (api, buyer, body) = (api.clone(), buyer.clone(), body.clone());
            tokio::spawn(async move { api.checkout(&buyer, "same-key", &body).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let (status, c) = t.await.unwrap();
        assert!(status == 201 || status == 200, "{status}: {c}");
        ids.insert(c["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "one checkout");
    assert_eq!(
        api.stock(&seller, &listing).await.levels.reserved,
        "2",
        "reserved once"
    );
    let pool = db.pool("order").await;
    let n = stored_checkouts(&pool).await;
    assert_eq!(n, 1);

    let (status, r) = api
        .checkout(&buyer, "same-key", &basket(&[(&listing, "3")], "cod"))
        .await;
    assert_eq!(status, 422, "{r}");
    assert_eq!(r["code"], "idempotency_key_reused");
}

#[tokio::test]
async fn fifty_identical_requests_with_one_key_make_one_checkout_in_one_process() {
    let app = TestApp::spawn().await;
    one_key_one_checkout(app.api.clone(), &app.db).await;
    app.stop().await;
}

#[tokio::test]
async fn fifty_identical_requests_with_one_key_make_one_checkout_across_three_processes() {
    let app = SplitApp::spawn().await;
    one_key_one_checkout(app.api.clone(), &app.db).await;
}

/// A request whose key another request inserts at the same moment: its claim waits for the
/// other's insert, finds the key taken, and must then read what took it. Here the other
/// claim (with another body) is held open in a transaction until the request waits on it.
#[tokio::test]
async fn a_key_claimed_by_a_racing_request_is_read_once_that_claim_commits() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let (_, buyer, listing) = api.shop().await;
    let pool = app.db.pool("order").await;
    let mut racing = pool.begin().await.unwrap();
    let racer: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *racing)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO idempotency_keys (buyer_id, key, request_hash, checkout_id, state)
         VALUES ($1::uuid, 'raced', '\\x00', gen_random_uuid(), 'started')",
    )
    .bind(&buyer.id)
    .execute(&mut *racing)
    .await
    .unwrap();
    let request = {
        let (api, buyer) = (api.clone(), buyer.clone());
        let body = basket(&[(&listing, "1")], "cod");
        tokio::spawn(async move { api.checkout(&buyer, "raced", &body).await })
    };
    // The request's claim waits on the racing insert (only it can: nothing else of this
    // test's database touches the key).
    eventually(
        Duration::from_secs(10),
        "the claim waiting on the racing insert",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
            )
            .bind(racer)
            .fetch_one(&pool)
            .await
            .unwrap();
            (waiting > 0).then_some(())
        },
    )
    .await;
    racing.commit().await.unwrap();
    let (status, answer) = request.await.unwrap();
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["code"], "idempotency_key_reused");
    app.stop().await;
}

#[tokio::test]
async fn bad_checkout_input_is_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let mut outside = basket(&[(&listing, "1")], "cod");
    outside["delivery"]["province_code"] = json!("01");
    let unknown = uuid::Uuid::now_v7().to_string();
    // Text that would reach a seller's screen or a shipping label garbled: line breaks and a
    // terminal escape in the street, a right-to-left override in the name.
    let mut garbled_street = basket(&[(&listing, "1")], "cod");
    garbled_street["delivery"]["street"] = json!("12 Lê Lợi\r\n\u{1b}[2J");
    let mut reversed_name = basket(&[(&listing, "1")], "cod");
    reversed_name["delivery"]["recipient_name"] = json!("Nguyễn Thị \u{202e}aoH");
    let cases: Vec<(Value, &str, &str)> = vec![
        (garbled_street, "delivery.street", "control_character"),
        (
            reversed_name,
            "delivery.recipient_name",
            "control_character",
        ),
        (basket(&[], "cod"), "lines", "empty"),
        (
            basket(&[(&listing, "0.5")], "cod"),
            "lines[0].quantity",
            "below_minimum",
        ),
        (
            basket(&[(&listing, "1.2")], "cod"),
            "lines[0].quantity",
            "off_step",
        ),
        (
            basket(&[(&unknown, "1")], "cod"),
            "lines[0].listing_id",
            "unknown_listing",
        ),
        (outside, "delivery.commune_code", "commune_not_in_province"),
        (
            basket(&[(&listing, "1")], "bitcoin"),
            "payment_method",
            "invalid",
        ),
    ];
    for (i, (body, field, code)) in cases.into_iter().enumerate() {
        let (status, r) = api.checkout(&buyer, &format!("k{i}"), &body).await;
        assert_eq!(status, 422, "{field}: {r}");
        assert_eq!(r["errors"][0]["field"], field, "{r}");
        assert_eq!(r["errors"][0]["code"], code, "{r}");
    }
    // A basket far over the limit is refused for its size alone, in one error, whatever its
    // lines hold (2,000 copies of one line at 0 would otherwise be 3,999 more).
    let oversized = basket(&vec![(listing.as_str(), "0"); 2_000], "cod");
    let (status, r) = api.checkout(&buyer, "oversized", &oversized).await;
    assert_eq!(status, 422, "{r}");
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(
        (
            r["errors"][0]["field"].as_str(),
            r["errors"][0]["code"].as_str()
        ),
        (Some("lines"), Some("too_many"))
    );
    let (status, r) = api
        .post(
            "/v1/checkouts",
            Some(&buyer),
            &basket(&[(&listing, "1")], "cod"),
        )
        .await;
    assert_eq!(
        (status, r["errors"][0]["field"].as_str()),
        (422, Some("Idempotency-Key"))
    );
    assert_eq!(
        api.stock(&seller, &listing).await.levels.reserved,
        "0",
        "nothing stays reserved"
    );
    let pool = app.db.pool("order").await;
    let n = stored_checkouts(&pool).await;
    assert_eq!(n, 0, "nothing was stored");
    app.stop().await;
}

#[tokio::test]
async fn one_buyer_holds_a_bounded_share_and_count_of_unconfirmed_cash_orders() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let seller = api.register(Role::Household).await;
    let buyer = api.register(Role::Buyer).await;
    let small = api.listing_with_stock(&seller, "10").await;
    // Half of the stock may wait for the seller's confirmation in one buyer's hands...
    let (status, c) = api
        .checkout(&buyer, "hold-1", &basket(&[(&small, "5")], "cod"))
        .await;
    assert_eq!(status, 201, "{c}");
    // ...not more.
    let (status, r) = api
        .checkout(&buyer, "hold-2", &basket(&[(&small, "1")], "cod"))
        .await;
    assert_eq!(status, 422, "{r}");
    assert_eq!(r["errors"][0]["field"], "lines[0].quantity", "{r}");
    assert_eq!(r["errors"][0]["code"], "hold_limit", "{r}");
    let stock = api.stock(&seller, &small).await;
    assert_eq!(
        stock.levels.reserved, "5",
        "the refused checkout holds nothing"
    );
    // Another buyer still can.
    let other = api.register(Role::Buyer).await;
    let (status, c) = api
        .checkout(&other, "hold-3", &basket(&[(&small, "1")], "cod"))
        .await;
    assert_eq!(status, 201, "{c}");

    // At most five cash-on-delivery checkouts wait for their sellers at once.
    let big = api.listing_with_stock(&seller, "1000").await;
    for n in 0..4 {
        let (status, c) = api
            .checkout(&buyer, &format!("many-{n}"), &basket(&[(&big, "1")], "cod"))
            .await;
        assert_eq!(status, 201, "{c}");
    }
    let (status, r) = api
        .checkout(&buyer, "many-5", &basket(&[(&big, "1")], "cod"))
        .await;
    assert_eq!(status, 422, "{r}");
    assert_eq!(r["errors"][0]["field"], "payment_method", "{r}");
    assert_eq!(r["errors"][0]["code"], "too_many_open_orders", "{r}");
    app.stop().await;
}

/// A reservation and a checkout send no `NOTIFY` from their transactions (it would make each
/// commit wait its turn on PostgreSQL's notification lock; `events::committed`). Their events
/// still leave at once, each process's relay woken after the commit, and every listing
/// process is still told of the new stock levels, in a notification of its own.
#[tokio::test]
async fn a_checkout_s_events_leave_at_once_and_its_stock_is_announced_after_its_commit() {
    use sqlx::postgres::PgListener;

    let db = crate::support::TestDb::new().await;
    // The relays poll once a minute: only a wake-up sends the events sooner.
    let settings = nongsan_shared::config::Settings {
        events_poll_ms: 60_000,
        ..crate::support::test_settings(&db).await
    };
    let app = TestApp::spawn_with(settings, db).await;
    let (_seller, buyer, listing) = app.api.shop().await;
    let (listing_db, order_db) = (app.db.pool("listing").await, app.db.pool("order").await);
    let unpublished = || async {
        let mut left = 0i64;
        for (pool, event) in [(&listing_db, "stock.changed"), (&order_db, "order.placed")] {
            left += sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM outbox WHERE event_type = $1 AND published_at IS NULL",
            )
            .bind(event)
            .fetch_one(pool)
            .await
            .unwrap();
        }
        left
    };
    eventually(
        Duration::from_secs(10),
        "the shop's events published",
        || async { (unpublished().await == 0).then_some(()) },
    )
    .await;
    let mut heard = PgListener::connect_with(&listing_db).await.unwrap();
    heard
        .listen_all([
            "listing_view",
            "nongsan_outbox_listing",
            "nongsan_outbox_order",
        ])
        .await
        .unwrap();

    app.api.cod_order(&buyer, &listing, "2").await;

    // Every listing process hears that the listing's page changed.
    let told = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = heard.recv().await.unwrap();
            assert_eq!(
                n.channel(),
                "listing_view",
                "a notification from a hot transaction"
            );
            if n.payload() == listing {
                return;
            }
        }
    })
    .await;
    assert!(
        told.is_ok(),
        "no listing process was told of the new stock levels"
    );
    // The reservation's `stock.changed` and the checkout's `order.placed` left well before
    // the relays' next poll.
    eventually(
        Duration::from_secs(10),
        "the checkout's events published",
        || async { (unpublished().await == 0).then_some(()) },
    )
    .await;
    // Nothing notified the relays meanwhile.
    let more = tokio::time::timeout(Duration::from_millis(300), heard.recv()).await;
    if let Ok(n) = more {
        let n = n.unwrap();
        assert_eq!(
            n.channel(),
            "listing_view",
            "{}: {}",
            n.channel(),
            n.payload()
        );
    }
    app.stop().await;
}

/// Sends `body` as `buyer` once per key, all at once, each held 300 ms between reserving and
/// storing (so all are on their way together); answers how many were taken (201), how many
/// refused for the bound on open cash-on-delivery checkouts, and every answer.
async fn cash_checkouts_at_once(
    api: &Client,
    buyer: &crate::support::user::User,
    keys: &[String],
    body: &Value,
) -> (usize, usize, Vec<(u16, Value)>) {
    nongsan_shared::failpoint::set(
        "checkout.before_store",
        nongsan_shared::failpoint::Action::Delay(300),
    );
    let mut sent = tokio::task::JoinSet::new();
    for key in keys {
        let (api, buyer, key, body) = (api.clone(), buyer.clone(), key.clone(), body.clone());
        sent.spawn(async move { api.checkout(&buyer, &key, &body).await });
    }
    let answers = sent.join_all().await;
    nongsan_shared::failpoint::clear("checkout.before_store");
    let taken = answers.iter().filter(|(s, _)| *s == 201).count();
    let refused = answers
        .iter()
        .filter(|(s, r)| *s == 422 && r["errors"][0]["code"] == "too_many_open_orders")
        .count();
    (taken, refused, answers)
}

/// The bound on a buyer's open cash-on-delivery checkouts holds for checkouts sent at once:
/// each counts the ones still on their way (claimed, not yet stored), one after another.
/// Here every checkout waits 300 ms between reserving and storing, so all eight are on their
/// way together; with a bound of two, two are taken and six refused, whatever the timing.
#[tokio::test]
async fn checkouts_sent_at_once_do_not_pass_the_bound_on_open_cash_orders() {
    let db = crate::support::TestDb::new().await;
    let mut settings = crate::support::test_settings(&db).await;
    settings.max_open_cod_checkouts = 2;
    let app = TestApp::spawn_with(settings, db).await;
    let api = &app.api;
    let (seller, buyer, _) = api.shop().await;
    let big = api.listing_with_stock(&seller, "1000").await;
    let body = basket(&[(&big, "1")], "cod");
    let keys: Vec<String> = (0..8).map(|n| format!("at-once-{n}")).collect();
    let (taken, refused, answers) = cash_checkouts_at_once(api, &buyer, &keys, &body).await;
    assert_eq!((taken, refused), (2, 6), "{answers:?}");
    let s = api.stock(&seller, &big).await.levels;
    assert_eq!(s.reserved, "2", "the refused checkouts hold nothing");
    app.stop().await;
}

/// A checkout whose request died after claiming its key (its process was killed, say)
/// leaves the claim; the same key a minute later takes it over. Taken-over
/// cash-on-delivery claims count against the bound as new ones do: a buyer who left four
/// checkouts half-way and sends all four again at once, with one open checkout and a bound of
/// three, gets two.
#[tokio::test]
async fn checkouts_taken_over_from_dead_requests_do_not_pass_the_bound_on_open_cash_orders() {
    let db = crate::support::TestDb::new().await;
    let mut settings = crate::support::test_settings(&db).await;
    settings.max_open_cod_checkouts = 3;
    let app = TestApp::spawn_with(settings, db.clone()).await;
    let api = &app.api;
    let (seller, buyer, _) = api.shop().await;
    let big = api.listing_with_stock(&seller, "1000").await;
    let body = basket(&[(&big, "1")], "cod");
    let (status, open) = api.checkout(&buyer, "open-one", &body).await;
    assert_eq!(status, 201, "{open}");
    // Four claims of requests that died over a minute ago, as the claims of the same request
    // body are stored (the hash is of the body alone).
    let order = db.pool("order").await;
    for n in 0..4 {
        sqlx::query(
            "INSERT INTO idempotency_keys (buyer_id, key, request_hash, checkout_id, state, cod, created_at)
             SELECT buyer_id, $2, request_hash, $3, 'started', true, now() - interval '2 minutes'
             FROM idempotency_keys WHERE buyer_id = $1::uuid AND key = 'open-one'",
        )
        .bind(&buyer.id)
        .bind(format!("dead-{n}"))
        .bind(uuid::Uuid::now_v7())
        .execute(&order)
        .await
        .unwrap();
    }
    let keys: Vec<String> = (0..4).map(|n| format!("dead-{n}")).collect();
    let (taken, refused, answers) = cash_checkouts_at_once(api, &buyer, &keys, &body).await;
    assert_eq!((taken, refused), (2, 2), "{answers:?}");
    let s = api.stock(&seller, &big).await.levels;
    assert_eq!(s.reserved, "3", "the refused checkouts hold nothing");
    app.stop().await;
}

/// A buyer whose connection drops while the checkout is being made (a phone losing signal)
/// sends it again with the same key: the answer is the checkout the first request made.
#[tokio::test]
async fn a_checkout_whose_connection_dropped_is_answered_to_the_same_key_afterwards() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let (seller, buyer, _) = api.shop().await;
    let listing = api.listing_with_stock(&seller, "10").await;
    let body = basket(&[(&listing, "2")], "cod");
    nongsan_shared::failpoint::set(
        "checkout.before_store",
        nongsan_shared::failpoint::Action::Delay(1_000),
    );
    cut_off_checkout(api, &buyer, "flaky", &body, &app.db.pool("order").await).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    nongsan_shared::failpoint::clear("checkout.before_store");
    let started = std::time::Instant::now();
    let (status, again) = api.checkout(&buyer, "flaky", &body).await;
    assert_eq!(
        status, 200,
        "the checkout made by the first request: {again}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered from the stored checkout, not after waiting for the key"
    );
    let s = api.stock(&seller, &listing).await.levels;
    assert_eq!(s.reserved, "2", "one checkout's stock");
    app.stop().await;
}

/// A request that stalled past the minute after which its key is taken over, and then
/// failed, gives back nothing of the key: the request that took it over serves it now. When
/// the stalled one deleted the claim, the other's answer was stored nowhere, and a third
/// request with the key placed a second checkout.
#[tokio::test]
async fn a_request_taken_over_does_not_give_back_the_key_its_successor_holds() {
    use axum::http::{HeaderMap, HeaderValue};
    use nongsan_order::idempotency::{Claim, Claimed, Hold, IdempotencyKey, claim, unclaim};
    let db = crate::support::TestDb::new().await;
    let app = TestApp::spawn_with(crate::support::test_settings(&db).await, db.clone()).await;
    let order = db.pool("order").await;
    let hot = nongsan_shared::db::HotPool::beside(&order, 2);
    let mut headers = HeaderMap::new();
    headers.insert("idempotency-key", HeaderValue::from_static("stalled"));
    let key = IdempotencyKey::try_from(&headers).unwrap();
    let buyer = nongsan_shared::AccountId(uuid::Uuid::now_v7());
    let c = Claim::new(buyer, key, &json!({ "basket": 1 })).unwrap();
    let Claimed::Mine(first_id, _, _) = claim(&hot, &c, false).await.unwrap() else {
        panic!("a new key is the first request's");
    };
    // The first request stalls past the minute (its claim made two minutes ago)...
    let claimed: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "UPDATE idempotency_keys SET created_at = now() - interval '2 minutes' WHERE key = 'stalled' RETURNING created_at",
    )
    .fetch_one(&order)
    .await
    .unwrap();
    let first = Hold::since(claimed);
    // ...so the retry takes the key over, for the same checkout...
    let Claimed::Mine(second_id, _, second) = claim(&hot, &c, false).await.unwrap() else {
        panic!("an abandoned claim is taken over");
    };
    assert_eq!(first_id, second_id);
    assert_ne!(first, second);
    // ...and the first then fails and gives its claim back.
    unclaim(&order, &c, first).await;
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE key = 'stalled'")
            .fetch_one(&order)
            .await
            .unwrap();
    assert_eq!(kept, 1, "the retry's claim stays");
    // The retry's own failure gives it back.
    unclaim(&order, &c, second).await;
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE key = 'stalled'")
            .fetch_one(&order)
            .await
            .unwrap();
    assert_eq!(kept, 0, "given back by the request holding it");
    app.stop().await;
}

/// A line whose price times its quantity passes what đồng can count, or what the platform
/// takes in one amount (100,000,000,000 đ), is refused naming the line, and holds nothing;
/// as is a basket whose lines pass it together. Before, the line's total was cut to the
/// largest number and the checkout's sum overflowed: a 500.
#[tokio::test]
async fn a_basket_costing_more_than_the_platform_takes_is_refused_naming_the_line() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let seller = api.register(Role::Household).await;
    let buyer = api.register(Role::Buyer).await;
    let dear = api
        .listing_in_two_lots(&seller, 100_000_000_000, 1_000_000_000)
        .await;
    let (status, r) = api
        .checkout(&buyer, "overflow", &basket(&[(&dear, "100000000")], "cod"))
        .await;
    assert_eq!(status, 422, "{r}");
    assert_eq!(
        (
            r["errors"][0]["field"].as_str(),
            r["errors"][0]["code"].as_str()
        ),
        (Some("lines[0].quantity"), Some("total_too_large")),
        "{r}"
    );
    let (status, r) = api
        .checkout(&buyer, "over-the-cap", &basket(&[(&dear, "2")], "cod"))
        .await;
    assert_eq!(status, 422, "{r}");
    assert_eq!(r["errors"][0]["code"], "total_too_large", "{r}");
    let cheaper = api.listing_in_two_lots(&seller, 60_000_000_000, 100).await;
    let (status, r) = api
        .checkout(
            &buyer,
            "together",
            &basket(&[(&dear, "1"), (&cheaper, "1")], "cod"),
        )
        .await;
    assert_eq!(status, 422, "{r}");
    assert_eq!(
        (
            r["errors"][0]["field"].as_str(),
            r["errors"][0]["code"].as_str()
        ),
        (Some("lines"), Some("total_too_large")),
        "{r}"
    );
    let (status, _) = api
        .checkout(&buyer, "one-dear", &basket(&[(&dear, "1")], "cod"))
        .await;
    assert_eq!(status, 201, "one line at the cap itself is taken");
    assert_eq!(
        api.stock(&seller, &cheaper).await.levels.reserved,
        "0",
        "the refused checkouts hold nothing"
    );
    app.stop().await;
}

/// The listing service made the reservation but its answer was lost (here, an error after
/// its commit; a timeout or a cut connection does the same). The buyer is told to send the
/// checkout again with the same key, and that retry takes the reservation already made
/// instead of holding the stock a second time: before, the key was given back, the retry
/// reserved under a new id, and the first hold stayed until the orphan sweep.
#[tokio::test]
async fn a_reservation_whose_answer_was_lost_is_taken_by_the_retry_not_made_twice() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let body = basket(&[(&listing, "2")], "cod");
    nongsan_shared::failpoint::set(
        "reservation.after_commit",
        nongsan_shared::failpoint::Action::Error { times: 1 },
    );
    let (status, r) = api.checkout(&buyer, "answer-lost", &body).await;
    nongsan_shared::failpoint::clear("reservation.after_commit");
    assert_eq!(status, 503, "{r}");
    assert_eq!(
        api.stock(&seller, &listing).await.levels.reserved,
        "2",
        "the reservation was made"
    );
    let (status, r) = api.checkout(&buyer, "answer-lost", &body).await;
    assert_eq!(status, 201, "{r}");
    assert_eq!(
        api.stock(&seller, &listing).await.levels.reserved,
        "2",
        "held once, by the checkout"
    );
    let order = app.db.pool("order").await;
    let checkouts = stored_checkouts(&order).await;
    assert_eq!(checkouts, 1);
    let (status, again) = api.checkout(&buyer, "answer-lost", &body).await;
    assert_eq!(
        (status, &again["id"]),
        (200, &r["id"]),
        "the key replays it"
    );
    app.stop().await;
}

/// A cash-on-delivery checkout that stalled between reserving and storing while its key was
/// taken over, and given back by the request that took it (refused, say), stores nothing and
/// gives its stock back. Stored, its answer was kept nowhere, and the next request with the
/// key placed a second checkout.
#[tokio::test]
async fn a_stalled_checkout_whose_key_was_given_back_meanwhile_stores_nothing() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let body = basket(&[(&listing, "2")], "cod");
    let order = app.db.pool("order").await;
    nongsan_shared::failpoint::set(
        "checkout.before_store",
        nongsan_shared::failpoint::Action::Delay(1_500),
    );
    let stalled = {
        let (api, buyer, body) = (api.clone(), buyer.clone(), body.clone());
        tokio::spawn(async move { api.checkout(&buyer, "stalled-store", &body).await })
    };
    // While it waits to store, its key is given back (as by the request that took it over).
    crate::support::eventually(
        Duration::from_secs(5),
        "the stalled checkout's key",
        || async {
            let gone = sqlx::query("DELETE FROM idempotency_keys WHERE key = 'stalled-store'")
                .execute(&order)
                .await
                .unwrap()
                .rows_affected();
            (gone == 1).then_some(())
        },
    )
    .await;
    let (status, r) = stalled.await.unwrap();
    nongsan_shared::failpoint::clear("checkout.before_store");
    assert_eq!(
        (status, r["code"].as_str()),
        (409, Some("idempotency_key_in_use")),
        "{r}"
    );
    assert_eq!(api.stock(&seller, &listing).await.levels.reserved, "0");
    let (status, r) = api.checkout(&buyer, "stalled-store", &body).await;
    assert_eq!(status, 201, "{r}");
    let checkouts = stored_checkouts(&order).await;
    assert_eq!(checkouts, 1, "one checkout for the key");
    assert_eq!(api.stock(&seller, &listing).await.levels.reserved, "2");
    app.stop().await;
}

/// A checkout stalls between reserving and storing; meanwhile its key is given back (as by
/// a request that took it over and was refused) and another request with the key claims it
/// and places its own checkout. Returns the stalled request's answer, the other's, and the
/// order schema's pool.
async fn stalled_while_another_takes_the_key(
    app: &TestApp,
    buyer: &crate::support::user::User,
    key: &'static str,
    body: &Value,
) -> ((u16, Value), (u16, Value), sqlx::PgPool) {
    let order = app.db.pool("order").await;
    nongsan_shared::failpoint::set(
        "checkout.before_store",
        nongsan_shared::failpoint::Action::Delay(2_500),
    );
    let stalled = {
        let (api, buyer, body) = (app.api.clone(), buyer.clone(), body.clone());
        tokio::spawn(async move { api.checkout(&buyer, key, &body).await })
    };
    eventually(
        Duration::from_secs(5),
        "the stalled checkout's key",
        || async {
            let gone =
                sqlx::query("DELETE FROM idempotency_keys WHERE key = $1 AND state = 'started'")
                    .bind(key)
                    .execute(&order)
                    .await
                    .unwrap()
                    .rows_affected();
            (gone == 1).then_some(())
        },
    )
    .await;
    // The next request with the key is not held up: it claims the key afresh and checks out.
    nongsan_shared::failpoint::clear("checkout.before_store");
    let other = app.api.checkout(buyer, key, body).await;
    let stalled = stalled.await.unwrap();
    (stalled, other, order)
}

/// The case `a_stalled_checkout_whose_key_was_given_back_meanwhile_stores_nothing` left:
/// the key was claimed again, by a request that placed its own checkout, before the stalled
/// one stored. The stalled one stores nothing. Before, its statement found the key's row
/// (the other's) and wrote its own answer in it: two checkouts for one key, and the key
/// replaying the first.
#[tokio::test]
async fn a_stalled_checkout_whose_key_another_checkout_took_meanwhile_stores_nothing() {
    let app = TestApp::spawn().await;
    let (seller, buyer, listing) = app.api.shop().await;
    let body = basket(&[(&listing, "2")], "cod");
    let ((status, r), (other_status, other), order) =
        stalled_while_another_takes_the_key(&app, &buyer, "stalled-reclaimed", &body).await;
    assert_eq!(other_status, 201, "{other}");
    assert_eq!(
        (status, r["code"].as_str()),
        (409, Some("idempotency_key_in_use")),
        "{r}"
    );
    assert_eq!(
        stored_checkouts(&order).await,
        1,
        "one checkout for the key"
    );
    assert_eq!(app.api.stock(&seller, &listing).await.levels.reserved, "2");
    let (status, again) = app.api.checkout(&buyer, "stalled-reclaimed", &body).await;
    assert_eq!((status, &again["id"]), (200, &other["id"]), "{again}");
    app.stop().await;
}

/// The same for a checkout paid online, whose answer is stored after its payment is
/// opened: the stalled checkout, stored meanwhile, is failed and its stock given back, and
/// its buyer is told so. Before, its answer replaced the other's under the key: two
/// checkouts waiting to be paid for one key.
#[tokio::test]
async fn a_stalled_online_checkout_whose_key_another_took_meanwhile_is_failed() {
    let app = TestApp::spawn().await;
    let (seller, buyer, listing) = app.api.shop().await;
    let body = basket(&[(&listing, "2")], "vnpay");
    let ((status, r), (other_status, other), order) =
        stalled_while_another_takes_the_key(&app, &buyer, "stalled-online", &body).await;
    assert_eq!(other_status, 201, "{other}");
    assert_eq!(
        (status, r["code"].as_str()),
        (409, Some("idempotency_key_in_use")),
        "{r}"
    );
    let waiting: i64 =
        sqlx::query_scalar("SELECT count(*) FROM checkouts WHERE status = 'pending_payment'")
            .fetch_one(&order)
            .await
            .unwrap();
    assert_eq!(waiting, 1, "one checkout waits for payment under the key");
    assert_eq!(app.api.stock(&seller, &listing).await.levels.reserved, "2");
    let (status, again) = app.api.checkout(&buyer, "stalled-online", &body).await;
    assert_eq!((status, &again["id"]), (200, &other["id"]), "{again}");
    app.stop().await;
}

/// A listing that is not for sale (paused by its seller, hidden by an operator) answers
/// `listing_unavailable` whatever quantity is asked, and tells nothing of its stock. Before,
/// a quantity above its stock answered `insufficient_stock` with the quantity it held.
#[tokio::test]
async fn a_listing_not_for_sale_is_unavailable_whatever_is_asked() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let (status, body) = api
        .post(
            &format!("/v1/listings/{listing}/status"),
            Some(&seller),
            &json!({ "status": "paused" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for (key, quantity) in [("paused-many", "1000"), ("paused-one", "1")] {
        let (status, r) = api
            .checkout(&buyer, key, &basket(&[(&listing, quantity)], "cod"))
            .await;
        assert_eq!(
            (status, r["code"].as_str()),
            (409, Some("listing_unavailable")),
            "{quantity}: {r}"
        );
        assert!(!r.to_string().contains("available."), "{r}");
    }
    app.stop().await;
}

/// How many times the listing service answered a read of a reservation, by `/metrics`.
async fn reservation_reads(api: &Client) -> u64 {
    let text = api
        .send(crate::support::client::Request::get("/metrics"))
        .await
        .text();
    text.lines()
        .filter(|l| {
            l.starts_with("http_requests_total{")
                && l.contains("route=\"/v1/internal/reservations/{id}\"")
                && l.contains("method=\"GET\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// A checkout's lines show the lots that filled them, read from the listing service once for
/// the checkout: its orders share one reservation. Before, it was read once per order, one
/// after another (up to 50 sellers in a checkout, each read up to 10 s when the listing
/// service hangs).
#[tokio::test]
async fn a_checkout_reads_its_lots_once_whatever_its_sellers() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let buyer = api.register(Role::Buyer).await;
    let mut sellers = Vec::new();
    let mut lines = Vec::new();
    for _ in 0..3 {
        let seller = api.register(Role::Household).await;
        lines.push(api.listing_in_two_lots(&seller, 30_000, 10).await);
        sellers.push(seller);
    }
    let basket_lines: Vec<(&str, &str)> = lines.iter().map(|l| (l.as_str(), "1")).collect();
    let (status, c) = api
        .checkout(&buyer, "three-sellers", &basket(&basket_lines, "cod"))
        .await;
    assert_eq!(status, 201, "{c}");
    for order in c["orders"].as_array().unwrap() {
        let seller = sellers
            .iter()
            .find(|s| s.id == order["seller"]["id"].as_str().unwrap())
            .unwrap();
        let (status, body) = api
            .order_action(seller, order["id"].as_str().unwrap(), "confirm", None)
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // The stock is sold once each confirmation's event reaches the listing service.
    let path = format!("/v1/checkouts/{}", c["id"].as_str().unwrap());
    let all_lots = |read: &Value| {
        read["orders"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["lines"][0]["lots"].is_array())
    };
    eventually(Duration::from_secs(15), "every line's lots", || async {
        all_lots(&api.get(&path, Some(&buyer)).await.1).then_some(())
    })
    .await;
    let before = reservation_reads(api).await;
    let (status, read) = api.get(&path, Some(&buyer)).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(reservation_reads(api).await - before, 1);
    assert!(all_lots(&read), "{read}");
    app.stop().await;
}

/// How many checkouts the order schema holds.
async fn stored_checkouts(order: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM checkouts")
        .fetch_one(order)
        .await
        .unwrap()
}
