//! Reservations: all or nothing under contention, idempotent, expiring, committed to lots.

use std::{sync::Arc, time::Duration};

use nongsan_shared::auth::Role;
use serde_json::{Value, json};
use sqlx::Row;

use crate::support::{TestApp, eventually, lock_waiters, row_locked, user::User};

async fn reserve(app: &TestApp, service: &User, id: &str, lines: Value, ttl: u32) -> (u16, Value) {
    app.api
        .post(
            "/v1/internal/reservations",
            Some(service),
            &json!({ "id": id, "ttl_secs": ttl, "lines": lines }),
        )
        .await
}

/// A reservation of `lines` held by `holder` (a cash-on-delivery buyer), under a new id.
fn held_by(holder: &User, lines: Value) -> Value {
    json!({ "id": uuid::Uuid::now_v7(), "ttl_secs": 600, "holder": holder.id, "lines": lines })
}

/// Checks that the cached stock row equals the sums of the movements, and the lots.
async fn assert_stock_agrees(app: &TestApp, listing: &str) -> (String, String) {
    let pool = app.db.pool("listing").await;
    let row = sqlx::query(
        "SELECT s.on_hand::text, s.reserved::text,
                (SELECT COALESCE(sum(on_hand_delta), 0)::text FROM stock_movements WHERE listing_id = s.listing_id),
                (SELECT COALESCE(sum(reserved_delta), 0)::text FROM stock_movements WHERE listing_id = s.listing_id),
                (SELECT COALESCE(sum(on_hand), 0)::text FROM lots WHERE listing_id = s.listing_id)
         FROM stock s WHERE s.listing_id = $1::uuid",
    )
    .bind(listing)
    .fetch_one(&pool)
    .await
    .unwrap();
    let (on_hand, reserved, moved_on_hand, moved_reserved, lots): (
        String,
        String,
        String,
        String,
        String,
    ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let n = |s: &str| s.parse::<f64>().unwrap();
    assert_eq!(
        n(&on_hand),
        n(&moved_on_hand),
        "on-hand must be the sum of movements"
    );
    assert_eq!(
        n(&reserved),
        n(&moved_reserved),
        "reserved must be the sum of movements"
    );
    assert_eq!(n(&on_hand), n(&lots), "on-hand must be the sum of lots");
    (on_hand, reserved)
}

#[tokio::test]
async fn a_thousand_buyers_race_for_a_hundred_kilograms_and_exactly_a_hundred_win() {
    let app = Arc::new(TestApp::spawn().await);
    let seller = app.api.register(Role::Household).await;
    let listing = app.api.listing_with_stock(&seller, "100").await;
    let service = User::minted(Role::Service);
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (app, service, listing) = (app.clone(), service.clone(), listing.clone());
            tokio::spawn(async move {
                let id = uuid::Uuid::now_v7().to_string();
                reserve(
                    &app,
                    &service,
                    &id,
                    json!([{ "listing_id": listing, "quantity": "1" }]),
                    600,
                )
                .await
            })
        })
        .collect();
    let mut won = 0;
    let mut lost = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            201 => won += 1,
            409 => {
                assert_eq!(body["code"], "insufficient_stock", "{body}");
                lost += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((won, lost), (100, 900));
    let (on_hand, reserved) = assert_stock_agrees(&app, &listing).await;
    assert_eq!(
        (
            on_hand.parse::<f64>().unwrap(),
            reserved.parse::<f64>().unwrap()
        ),
        (100.0, 100.0)
    );
    let stock = app.api.stock(&seller, &listing).await;
    assert_eq!(stock.levels.available, "0");
}

#[tokio::test]
async fn baskets_of_three_listings_racing_in_every_line_order_reserve_all_or_nothing() {
    // 10, 20 and 30 units; every basket takes one of each, its lines in one of six orders.
    // Exactly 10 baskets can win, and a basket that loses under the locks must leave
    // nothing behind: any half-made basket would show as more than 10 reserved of the
    // larger listings. A lock order that followed the lines would deadlock here.
    let app = Arc::new(TestApp::spawn().await);
    let seller = app.api.register(Role::Household).await;
    let mut listings = Vec::new();
    for units in ["10", "20", "30"] {
        listings.push(app.api.listing_with_stock(&seller, units).await);
    }
    let service = User::minted(Role::Service);
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let tasks: Vec<_> = (0..120)
        .map(|n| {
            let (app, service) = (app.clone(), service.clone());
            let lines: Vec<String> = orders[n % orders.len()]
                .iter()
                .map(|&i| listings[i].clone())
                .collect();
            tokio::spawn(async move {
                let body = json!(
                    lines
                        .iter()
                        .map(|l| json!({ "listing_id": l, "quantity": "1" }))
                        .collect::<Vec<_>>()
                );
                let id = uuid::Uuid::now_v7().to_string();
                let (status, answer) = reserve(&app, &service, &id, body, 600).await;
                (lines, status, answer)
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        let (lines, status, answer) = t.await.unwrap();
        match status {
            201 => {
                won += 1;
                // The answer keeps the request's line order.
                let answered: Vec<&str> = answer["lines"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["listing_id"].as_str().unwrap())
                    .collect();
                assert_eq!(answered, lines, "{answer}");
            }
            409 => assert_eq!(answer["code"], "insufficient_stock", "{answer}"),
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert_eq!(won, 10);
    for listing in &listings {
        let (_, reserved) = assert_stock_agrees(&app, listing).await;
        assert_eq!(reserved.parse::<f64>().unwrap(), 10.0, "listing {listing}");
    }
    let pool = app.db.pool("listing").await;
    let lines: i64 = sqlx::query_scalar("SELECT count(*) FROM reservation_lines")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(lines, 30, "three lines for each of the 10 baskets that won");
}

#[tokio::test]
async fn a_holder_over_its_share_on_a_later_line_is_named_and_holds_nothing() {
    // One holder may keep at most half of a listing's stock (the default) in reservations
    // its sellers have not confirmed; the basket's lines are checked in one statement.
    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    let buyer = app.api.register(Role::Buyer).await;
    let (first, second) = (
        app.api.listing_with_stock(&seller, "10").await,
        app.api.listing_with_stock(&seller, "10").await,
    );
    let service = User::minted(Role::Service);
    let hold = |lines: Value| held_by(&buyer, lines);
    let (status, body) = app
        .api
        .post(
            "/v1/internal/reservations",
            Some(&service),
            &hold(json!([{ "listing_id": first, "quantity": "1" }, { "listing_id": second, "quantity": "6" }])),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        (
            body["errors"][0]["field"].as_str(),
            body["errors"][0]["code"].as_str()
        ),
        (Some("lines[1].quantity"), Some("hold_limit")),
        "{body}"
    );
    for listing in [&first, &second] {
        assert_eq!(app.api.stock(&seller, listing).await.levels.reserved, "0");
    }
    // Within the share on both lines it holds; the holder's next reservation counts it.
    let (status, body) = app
        .api
        .post(
            "/v1/internal/reservations",
            Some(&service),
            &hold(json!([{ "listing_id": first, "quantity": "1" }, { "listing_id": second, "quantity": "5" }])),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let held = body;
    let (status, body) = app
        .api
        .post(
            "/v1/internal/reservations",
            Some(&service),
            &hold(json!([{ "listing_id": second, "quantity": "1" }, { "listing_id": first, "quantity": "1" }])),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "lines[0].quantity", "{body}");
    // Released, its lines count no more: the share is read from the holder's open lines.
    let (status, body) = app
        .api
        .post(
            &format!(
                "/v1/internal/reservations/{}/release",
                held["id"].as_str().unwrap()
            ),
            Some(&service),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .api
        .post(
            "/v1/internal/reservations",
            Some(&service),
            &hold(json!([{ "listing_id": second, "quantity": "5" }])),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    app.stop().await;
}

/// Rows PostgreSQL has fetched from `reservation_lines` through its indexes, once above
/// `above` and every backend's counts have reached the statistics (a backend sends them at
/// most once a second, and an idle one that sent them less than a second before waits up
/// to ten): the same figure read twice, 1.5 s apart.
async fn line_fetches_settled(pool: &sqlx::PgPool, above: i64) -> i64 {
    let read = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COALESCE(idx_tup_fetch, 0) FROM pg_stat_user_tables WHERE schemaname = 'listing' AND relname = 'reservation_lines'",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    };
    let mut last = read().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while last <= above {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no fetch from reservation_lines counted in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = read().await;
    }
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = read().await;
        if now == last {
            return now;
        }
        last = now;
    }
}

#[tokio::test]
async fn a_holders_share_of_a_listing_many_hold_is_checked_from_its_own_lines() {
    // A listing a whole town orders from: every cash-on-delivery order stays open until its
    // seller confirms, so the listing has many open lines, of many buyers. The check of one
    // buyer's share must read that buyer's lines, not everyone's: it runs with the listing's
    // stock row locked, so every reservation of the listing waits for it.
    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    let buyer = app.api.register(Role::Buyer).await;
    let hot = app.api.listing_with_stock(&seller, "100000").await;
    let pool = app.db.pool("listing").await;
    // Ten other buyers with 80 open lines each: 200 on the hot listing, the others each on
    // a listing of its own (600 more listings). So the open lines of a listing are few on
    // average, and a holder's are many: PostgreSQL's estimates favour going by the listing.
    sqlx::query(
        "INSERT INTO listings SELECT (jsonb_populate_record(NULL::listings, to_jsonb(l) || jsonb_build_object('id', gen_random_uuid()))).*
         FROM listings l, generate_series(1, 600) WHERE l.id = $1::uuid",
    )
    .bind(&hot)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "WITH holders AS (SELECT array_agg(gen_random_uuid()) AS a FROM generate_series(1, 10)),
              others AS (SELECT array_agg(id) AS a FROM listings WHERE id <> $1::uuid),
              made AS (INSERT INTO reservations (id, status, request, expires_at, holder_id, checkout_confirmed_at)
                       SELECT gen_random_uuid(), 'active', '[]'::jsonb, now() + interval '1 day', holders.a[1 + i % 10], now()
                       FROM generate_series(0, 799) i, holders
                       RETURNING id, holder_id)
         INSERT INTO reservation_lines (reservation_id, line_no, listing_id, quantity, unit_price, holder_id)
         SELECT m.id, 0, CASE WHEN m.n <= 200 THEN $1::uuid ELSE others.a[m.n - 200] END, 1, 1000, m.holder_id
         FROM (SELECT id, holder_id, row_number() OVER () AS n FROM made) m, others",
    )
    .bind(&hot)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE reservations, reservation_lines")
        .execute(&pool)
        .await
        .unwrap();
    let service = User::minted(Role::Service);
    let hold =
        |quantity: &str| held_by(&buyer, json!([{ "listing_id": hot, "quantity": quantity }]));
    let (status, body) = app
        .api
        .post("/v1/internal/reservations", Some(&service), &hold("1"))
        .await;
    assert_eq!(status, 201, "{body}");
    let before = line_fetches_settled(&pool, -1).await;
    let (status, body) = app
        .api
        .post("/v1/internal/reservations", Some(&service), &hold("1"))
        .await;
    assert_eq!(status, 201, "{body}");
    let fetched = line_fetches_settled(&pool, before).await - before;
    // The buyer's own open line of the listing (and a few for anything else the service
    // did meanwhile); not the 200 of the others.
    assert!(
        (1..50).contains(&fetched),
        "the second reservation fetched {fetched} reservation lines"
    );
    // The share still counts what the buyer holds: half of the listing is 50,000.
    let (status, body) = app
        .api
        .post("/v1/internal/reservations", Some(&service), &hold("49999"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["code"], "hold_limit", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_line_held_before_the_upgrade_still_counts_toward_its_holders_share() {
    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    let buyer = app.api.register(Role::Buyer).await;
    let listing = app.api.listing_with_stock(&seller, "10").await;
    let service = User::minted(Role::Service);
    let hold = |quantity: &str| {
        held_by(
            &buyer,
            json!([{ "listing_id": listing, "quantity": quantity }]),
        )
    };
    let (status, body) = app
        .api
        .post("/v1/internal/reservations", Some(&service), &hold("4"))
        .await;
    assert_eq!(status, 201, "{body}");
    // The schema as it was before migration `hold_checks_by_holder`, with the line open.
    let pool = app.db.pool("listing").await;
    sqlx::raw_sql(
        "DROP INDEX reservation_lines_held;
         ALTER TABLE reservation_lines DROP COLUMN holder_id;
         CREATE INDEX reservation_lines_reserved ON reservation_lines (listing_id) WHERE state = 'reserved';
         CREATE INDEX reservations_active_by_holder ON reservations (holder_id) WHERE status = 'active' AND holder_id IS NOT NULL;",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::raw_sql(include_str!(
        "../../migrations/listing/20261223090000_hold_checks_by_holder.sql"
    ))
    .execute(&pool)
    .await
    .unwrap();
    // 4 held before and 2 now make 6 of 10, over the default half.
    let (status, body) = app
        .api
        .post("/v1/internal/reservations", Some(&service), &hold("2"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["code"], "hold_limit", "{body}");
    let (status, body) = app
        .api
        .post("/v1/internal/reservations", Some(&service), &hold("1"))
        .await;
    assert_eq!(status, 201, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn the_same_reservation_id_twice_reserves_once_and_answers_the_same() {
    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    let listing = app.api.listing_with_stock(&seller, "10").await;
    let service = User::minted(Role::Service);
    let id = uuid::Uuid::now_v7().to_string();
    let lines = json!([{ "listing_id": listing, "quantity": "2.5" }]);
    let (s1, first) = reserve(&app, &service, &id, lines.clone(), 600).await;
    let (s2, second) = reserve(&app, &service, &id, lines, 600).await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(first, second);
    assert_eq!(first["lines"][0]["unit_price"], 65000);
    assert_eq!(first["lines"][0]["line_total"], 162500);
    assert_eq!(first["lines"][0]["seller"]["id"], seller.id.as_str());
    let (_, reserved) = assert_stock_agrees(&app, &listing).await;
    assert_eq!(reserved.parse::<f64>().unwrap(), 2.5);
    // The same id with other lines is refused.
    let (status, body) = reserve(
        &app,
        &service,
        &id,
        json!([{ "listing_id": listing, "quantity": "3" }]),
        600,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["code"], "reservation_id_reused");
    app.stop().await;
}

/// Ten requests with one reservation id at once (an order service retrying while its first
/// request still runs): the stock is reserved once, one request makes the reservation and
/// the others answer it.
#[tokio::test]
async fn one_reservation_id_sent_ten_times_at_once_reserves_once() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let seller = app.api.register(Role::Household).await;
    let listing = app.api.listing_with_stock(&seller, "10").await;
    let service = User::minted(Role::Service);
    let id = uuid::Uuid::now_v7().to_string();
    let lines = json!([{ "listing_id": listing, "quantity": "2.5" }]);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (app, service, id, lines) =
                (app.clone(), service.clone(), id.clone(), lines.clone());
            tokio::spawn(async move { reserve(&app, &service, &id, lines, 600).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let made = answers.iter().filter(|(s, _)| *s == 201).count();
    let again = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((made, again), (1, 9), "{answers:?}");
    assert!(answers.iter().all(|(_, a)| a["id"] == answers[0].1["id"]));
    let (_, reserved) = assert_stock_agrees(&app, &listing).await;
    assert_eq!(reserved.parse::<f64>().unwrap(), 2.5);
    let Ok(app) = std::sync::Arc::try_unwrap(app) else {
        panic!("a request still holds the app")
    };
    app.stop().await;
}

#[tokio::test]
async fn an_expired_reservation_gives_its_stock_back() {
    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    let listing = app.api.listing_with_stock(&seller, "10").await;
    let service = User::minted(Role::Service);
    let id = uuid::Uuid::now_v7().to_string();
    let (status, _) = reserve(
        &app,
        &service,
        &id,
        json!([{ "listing_id": listing, "quantity": "4" }]),
        // Long enough to read the stock it holds on a loaded machine.
        3,
    )
    .await;
    assert_eq!(status, 201);
    let stock = app.api.stock(&seller, &listing).await;
    assert_eq!(stock.levels.available, "6");
    let r = crate::support::eventually(
        std::time::Duration::from_secs(10),
        "the reservation to expire",
        || async {
            let (_, r) = app
                .api
                .get(&format!("/v1/internal/reservations/{id}"), Some(&service))
                .await;
            (r["status"] == "expired").then_some(r)
        },
    )
    .await;
    assert_eq!(r["status"], "expired");
    let stock = app.api.stock(&seller, &listing).await;
    assert_eq!(stock.levels.available, "10");
    assert_eq!(stock.levels.reserved, "0");
    assert_stock_agrees(&app, &listing).await;
    // Too late to commit.
    let (status, body) = app
        .api
        .post(
            &format!("/v1/internal/reservations/{id}/commit"),
            Some(&service),
            &json!({}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_commit_fills_a_line_from_two_lots_oldest_harvest_first() {
    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    let listing = app.api.listing_with_stock(&seller, "0").await;
    for (code, date, qty) in [
        ("NEWER-B", "2026-11-25", "10"),
        ("OLDER-A", "2026-11-18", "3"),
    ] {
        app.api.add_lot(&seller, &listing, code, date, qty).await;
    }
    let service = User::minted(Role::Service);
    let id = uuid::Uuid::now_v7().to_string();
    let (status, _) = reserve(
        &app,
        &service,
        &id,
        json!([{ "listing_id": listing, "quantity": "5" }]),
        600,
    )
    .await;
    assert_eq!(status, 201);
    let (status, committed) = app
        .api
        .post(
            &format!("/v1/internal/reservations/{id}/commit"),
            Some(&service),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{committed}");
    assert_eq!(committed["status"], "committed");
    let allocations = committed["lines"][0]["allocations"].as_array().unwrap();
    let got: Vec<(&str, &str)> = allocations
        .iter()
        .map(|a| {
            (
                a["lot_code"].as_str().unwrap(),
                a["quantity"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, vec![("OLDER-A", "3"), ("NEWER-B", "2")]);
    // Committing again changes nothing.
    let (status, again) = app
        .api
        .post(
            &format!("/v1/internal/reservations/{id}/commit"),
            Some(&service),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again, committed);
    let (on_hand, reserved) = assert_stock_agrees(&app, &listing).await;
    assert_eq!(
        (
            on_hand.parse::<f64>().unwrap(),
            reserved.parse::<f64>().unwrap()
        ),
        (8.0, 0.0)
    );
    let (status, _) = app
        .api
        .post(
            &format!("/v1/internal/reservations/{id}/release"),
            Some(&service),
            &json!({}),
        )
        .await;
    assert_eq!(status, 409, "a sale cannot be released");
    app.stop().await;
}

/// The check without a lock (a sold-out listing answered at once, not queued for its stock
/// row) runs only for a listing this process keeps short of the line (or when it keeps no
/// levels): a refusal under the lock keeps the level it read. Any other reservation saves
/// that round trip and goes to the lock.
#[tokio::test]
async fn only_a_listing_known_short_is_checked_without_its_lock_and_a_refusal_makes_it_known() {
    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    let scarce = app.api.listing_with_stock(&seller, "5").await;
    let plenty = app.api.listing_with_stock(&seller, "50").await;
    let service = User::minted(Role::Service);
    let pool = app.db.pool("listing").await;
    let ask = |quantity: &str| json!([{ "listing_id": scarce, "quantity": quantity }]);
    let hold = || async {
        let mut holder = pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM stock WHERE listing_id = $1::text::uuid FOR UPDATE")
            .bind(&scarce)
            .execute(&mut *holder)
            .await
            .unwrap();
        holder
    };
    let waits_for_the_row = |limit: Duration| {
        let pool = pool.clone();
        async move {
            let start = tokio::time::Instant::now();
            while start.elapsed() < limit {
                if lock_waiters(&pool, "%WITH made AS%").await == 1 {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        }
    };
    let send = |id: String, lines: Value| {
        let (api, service) = (app.api.clone(), service.clone());
        tokio::spawn(async move {
            api.post(
                "/v1/internal/reservations",
                Some(&service),
                &json!({ "id": id, "ttl_secs": 600, "lines": lines }),
            )
            .await
        })
    };

    // Once the process keeps levels (its listener connected), a listing whose level it does
    // not keep (just changed) is not checked without the lock: a request for more than it
    // has waits for the held row, and is refused under the lock.
    eventually(
        Duration::from_secs(30),
        "a request for a listing of unknown level to wait for its row",
        || async {
            let lot = format!("L-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
            app.api
                .add_lot(&seller, &scarce, &lot, "2026-11-21", "1")
                .await;
            let holder = hold().await;
            let sent = send(uuid::Uuid::now_v7().to_string(), ask("1000"));
            let waited = waits_for_the_row(Duration::from_secs(2)).await;
            holder.rollback().await.unwrap();
            let (status, body) = sent.await.unwrap();
            assert_eq!(status, 409, "{body}");
            assert_eq!(body["code"], "insufficient_stock", "{body}");
            waited.then_some(())
        },
    )
    .await;

    // Refused under the lock, the level is kept: the same request is now refused while the
    // row is held, at once.
    let holder = hold().await;
    let answered = tokio::time::timeout(
        Duration::from_secs(5),
        reserve(
            &app,
            &service,
            &uuid::Uuid::now_v7().to_string(),
            ask("1000"),
            600,
        ),
    )
    .await;
    holder.rollback().await.unwrap();
    let (status, body) = answered.expect("a listing known short to be refused without its lock");
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "insufficient_stock", "{body}");

    // Known short of 1000, not of 3: nothing is checked without the lock. An id already used
    // for another listing, which that check would answer at once (reused), waits for the
    // row and is answered under the lock.
    let used = uuid::Uuid::now_v7().to_string();
    let (status, body) = reserve(
        &app,
        &service,
        &used,
        json!([{ "listing_id": plenty, "quantity": "1" }]),
        600,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let holder = hold().await;
    let sent = send(used, ask("3"));
    assert!(
        waits_for_the_row(Duration::from_secs(10)).await,
        "a request known not short goes to the lock"
    );
    holder.rollback().await.unwrap();
    let (status, body) = sent.await.unwrap();
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["code"], "reservation_id_reused", "{body}");
    // And a reservation of 3 is made.
    let (status, body) = reserve(
        &app,
        &service,
        &uuid::Uuid::now_v7().to_string(),
        ask("3"),
        600,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_stock_agrees(&app, &scarce).await;
    app.stop().await;
}

#[tokio::test]
async fn a_reservation_is_all_or_nothing_and_checks_minimum_and_step() {
    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    let plenty = app.api.listing_with_stock(&seller, "50").await;
    let scarce = app.api.listing_with_stock(&seller, "1").await;
    let service = User::minted(Role::Service);
    let id = uuid::Uuid::now_v7().to_string();
    let (status, body) = reserve(&app, &service, &id, json!([{ "listing_id": plenty, "quantity": "5" }, { "listing_id": scarce, "quantity": "2" }]), 600).await;
    assert_eq!(status, 409, "{body}");
    let stock = app.api.stock(&seller, &plenty).await;
    assert_eq!(
        stock.levels.reserved, "0",
        "nothing of a failed reservation stays reserved"
    );
    let (status, body) = reserve(
        &app,
        &service,
        &uuid::Uuid::now_v7().to_string(),
        json!([{ "listing_id": plenty, "quantity": "1.3" }]),
        600,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        (
            body["errors"][0]["field"].as_str(),
            body["errors"][0]["code"].as_str()
        ),
        (Some("lines[0].quantity"), Some("off_step"))
    );
    let (status, body) = reserve(
        &app,
        &service,
        &uuid::Uuid::now_v7().to_string(),
        json!([{ "listing_id": plenty, "quantity": "0.5" }]),
        600,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["code"], "below_minimum");
    // Only services reserve.
    let buyer = app.api.register(Role::Buyer).await;
    let (status, _) = reserve(
        &app,
        &buyer,
        &uuid::Uuid::now_v7().to_string(),
        json!([{ "listing_id": plenty, "quantity": "1" }]),
        600,
    )
    .await;
    assert_eq!(status, 403);
    app.stop().await;
}

#[tokio::test]
async fn movements_page_oldest_first_with_the_cursor_of_the_previous_page() {
    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    let listing = app.api.listing_in_two_lots(&seller, 65_000, 10).await;
    let path = format!("/v1/listings/{listing}/movements?limit=1");
    let (status, first) = app.api.get(&path, Some(&seller)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (status, second) = app
        .api
        .get(&format!("{path}&cursor={cursor}"), Some(&seller))
        .await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(first["items"][0], second["items"][0]);
    assert_eq!(second["items"][0]["kind"], "intake");
    let (status, r) = app
        .api
        .get(&format!("{path}&cursor=bm90IG91cnM"), Some(&seller))
        .await;
    assert_eq!(
        (status, r["errors"][0]["field"].as_str()),
        (422, Some("cursor")),
        "{r}"
    );
    app.stop().await;
}

/// The listing inbox's lock of a batch (`LockOrderRows`): a batch of order events takes its
/// reservations first, then its listings' stock rows in listing order (what a checkout's
/// reservation takes in the same order, so the two cannot deadlock), and takes nothing for an
/// event the listing service does not follow.
#[tokio::test]
async fn a_batch_of_order_events_locks_its_reservations_then_its_stock_rows_in_listing_order() {
    use nongsan_shared::events::{Envelope, Prelock};

    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    let buyer = app.api.register(Role::Buyer).await;
    let mut two = [
        app.api.listing_with_stock(&seller, "10").await,
        app.api.listing_with_stock(&seller, "10").await,
    ];
    two.sort_by_key(|l| uuid::Uuid::parse_str(l).unwrap());
    let [first, second] = two;
    let other = app.api.listing_with_stock(&seller, "10").await;
    let body = crate::support::calls::basket(&[(&first, "1"), (&second, "1")], "cod");
    let (status, made) = app
        .api
        .checkout(&buyer, &uuid::Uuid::now_v7().to_string(), &body)
        .await;
    assert_eq!(status, 201, "{made}");
    let body = crate::support::calls::basket(&[(&other, "1")], "cod");
    let (status, made) = app
        .api
        .checkout(&buyer, &uuid::Uuid::now_v7().to_string(), &body)
        .await;
    assert_eq!(status, 201, "{made}");

    // The orders' `order.placed` bodies as the order service wrote them: `order.paid`, which
    // the listing service follows, has the same body.
    let order_pool = app.db.pool("order").await;
    let placed: Vec<Value> = sqlx::query_scalar(
        "SELECT payload FROM outbox WHERE event_type = 'order.placed' ORDER BY id",
    )
    .fetch_all(&order_pool)
    .await
    .unwrap();
    let of = |listing: &str| {
        placed
            .iter()
            .find(|p| {
                p["listing_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|l| l == listing)
            })
            .unwrap()
            .clone()
    };
    let (paid, not_followed) = (of(&first), of(&other));
    let envelope = |event_type: &str, data: Value| Envelope {
        id: nongsan_shared::EventId::new(),
        event_type: event_type.to_owned(),
        source: "order".to_owned(),
        aggregate_id: data["order_id"].as_str().unwrap().to_owned(),
        version: 2,
        occurred_at: chrono::Utc::now(),
        data,
    };
    let reservation = paid["reservation_id"].as_str().unwrap().to_owned();
    let other_reservation = not_followed["reservation_id"].as_str().unwrap().to_owned();
    let batch = vec![
        envelope("order.paid", paid),
        envelope("order.placed", not_followed),
    ];

    let pool = app.db.pool("listing").await;
    // Someone holds the first listing's stock row.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM stock WHERE listing_id = $1::text::uuid FOR UPDATE")
        .bind(&first)
        .execute(&mut *holder)
        .await
        .unwrap();
    let locking = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            nongsan_listing::stock::reservations::consumers::LockOrderRows
                .lock(&mut tx, &batch)
                .await
                .unwrap();
            tx
        }
    });
    // The batch holds its reservation and waits for the first listing's row.
    crate::support::eventually(
        Duration::from_secs(10),
        "the batch to hold its reservation and wait for a stock row",
        || async {
            (lock_waiters(&pool, "%FROM stock%FOR UPDATE%").await == 1
                && row_locked(&pool, "reservations", "id", &reservation).await)
                .then_some(())
        },
    )
    .await;
    assert!(
        !row_locked(&pool, "stock", "listing_id", &second).await,
        "the second listing is taken only after the first"
    );
    holder.rollback().await.unwrap();
    let tx = tokio::time::timeout(Duration::from_secs(10), locking)
        .await
        .expect("the batch to take its rows once the first is free")
        .unwrap();
    assert!(row_locked(&pool, "reservations", "id", &reservation).await);
    assert!(row_locked(&pool, "stock", "listing_id", &first).await);
    assert!(row_locked(&pool, "stock", "listing_id", &second).await);
    // `order.placed` is not followed by the listing service: nothing of its order is locked.
    assert!(!row_locked(&pool, "reservations", "id", &other_reservation).await);
    assert!(!row_locked(&pool, "stock", "listing_id", &other).await);
    tx.rollback().await.unwrap();
    app.stop().await;
}

/// Stock has a ceiling (a billion of a unit): a lot that would take a listing above it is
/// 422 naming the quantity, and the stock stays as it was.
#[tokio::test]
async fn stock_beyond_its_ceiling_is_422_and_nothing_changes() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let seller = api.register(Role::Household).await;
    let listing = api.listing_with_stock(&seller, "999999999").await;
    let (status, r) = api
        .post(
            &format!("/v1/listings/{listing}/lots"),
            Some(&seller),
            &serde_json::json!({ "lot_code": "LOT-B", "harvest_date": "2026-11-20", "quantity": "2" }),
        )
        .await;
    assert_eq!(status, 422, "{r}");
    assert_eq!(r["errors"][0]["field"], "quantity", "{r}");
    assert_eq!(r["errors"][0]["code"], "too_large", "{r}");
    let s = api.stock(&seller, &listing).await.levels;
    assert_eq!(s.on_hand, "999999999");
    app.stop().await;
}
