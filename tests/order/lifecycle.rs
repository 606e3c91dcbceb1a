//! An order's life: who may do what, from which status; cancelling gives the stock back;
//! nobody reads another's orders.

use std::time::Duration;

use nongsan_shared::auth::Role;

use crate::support::{TestApp, calls::basket, client::Client, eventually, process::SplitApp};

#[tokio::test]
async fn transitions_follow_the_state_machine_and_the_roles() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let id = api.cod_order(&buyer, &listing, "2").await;

    let (status, r) = api.order_action(&seller, &id, "ship", None).await;
    assert_eq!(
        (status, r["code"].as_str()),
        (409, Some("invalid_transition")),
        "shipping before confirming"
    );
    let (status, _) = api.order_action(&buyer, &id, "confirm", None).await;
    assert_eq!(status, 403, "a buyer does not confirm");
    let (status, _) = api.order_action(&seller, &id, "cancel", None).await;
    assert_eq!(status, 403, "a seller declines, it does not cancel");
    let (status, r) = api.order_action(&seller, &id, "decline", None).await;
    assert_eq!(
        (status, r["errors"][0]["field"].as_str()),
        (422, Some("reason"))
    );

    // The buyer cancels before shipping: the stock comes back.
    assert_eq!(api.stock(&seller, &listing).await.levels.reserved, "2");
    let (status, r) = api
        .order_action(&buyer, &id, "cancel", Some("đặt nhầm"))
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
            let s = api.stock(&seller, &listing).await.levels;
            (s.reserved == "0" && s.available == "10").then_some(())
        },
    )
    .await;
    let (status, _) = api.order_action(&buyer, &id, "cancel", None).await;
    assert_eq!(status, 409, "cancelled is final");
    app.stop().await;
}

#[tokio::test]
async fn a_confirmed_then_failed_delivery_returns_the_stock_to_its_lots() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let id = api.cod_order(&buyer, &listing, "4").await;
    for step in ["confirm", "ship", "fail_delivery", "return"] {
        let (status, r) = api.order_action(&seller, &id, step, None).await;
        assert_eq!(status, 200, "{step}: {r}");
    }
    eventually(
        Duration::from_secs(10),
        "the returned goods to be back in stock",
        || async {
            let s = api.stock(&seller, &listing).await.levels;
            (s.on_hand == "10" && s.reserved == "0").then_some(())
        },
    )
    .await;
    let (_, movements) = api
        .get(&format!("/v1/listings/{listing}/movements"), Some(&seller))
        .await;
    let kinds: Vec<&str> = movements["items"]
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
async fn nobody_reads_anothers(api: &Client) {
    let (seller_a, seller_b) = (
        api.register(Role::Household).await,
        api.register(Role::Household).await,
    );
    let (buyer_a, buyer_b) = (
        api.register(Role::Buyer).await,
        api.register(Role::Buyer).await,
    );
    let listing = api.listing_in_two_lots(&seller_a, 65_000, 10).await;
    let (_, c) = api
        .checkout(&buyer_a, "k1", &basket(&[(&listing, "1")], "cod"))
        .await;
    let checkout = c["id"].as_str().unwrap();
    let order = c["orders"][0]["id"].as_str().unwrap();

    assert_eq!(api.read_checkout(&buyer_a, checkout).await.0, 200);
    assert_eq!(api.read_checkout(&buyer_b, checkout).await.0, 404);
    assert_eq!(api.read_order(&buyer_b, order).await.0, 404);
    assert_eq!(api.read_order(&seller_b, order).await.0, 404);
    assert_eq!(api.read_order(&seller_a, order).await.0, 200);
    let (status, _) = api.seller_orders(&seller_b, &seller_a.id).await;
    assert_eq!(status, 403, "a seller lists only its own orders");
    let (_, mine) = api.get("/v1/orders", Some(&buyer_b)).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 0);
    let (_, theirs) = api.seller_orders(&seller_b, &seller_b.id).await;
    assert_eq!(theirs["items"].as_array().unwrap().len(), 0);
    let (status, _) = api.order_action(&seller_b, order, "confirm", None).await;
    assert_eq!(status, 404, "another seller cannot even see it");
}

#[tokio::test]
async fn nobody_reads_anothers_checkouts_or_orders_in_one_process() {
    let app = TestApp::spawn().await;
    nobody_reads_anothers(&app.api).await;
    app.stop().await;
}

#[tokio::test]
async fn nobody_reads_anothers_checkouts_or_orders_across_three_processes() {
    let app = SplitApp::spawn().await;
    nobody_reads_anothers(&app.api).await;
}

#[tokio::test]
async fn orders_page_newest_first_with_the_cursor_of_the_previous_page() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let mut made = Vec::new();
    for _ in 0..3 {
        made.push(api.cod_order(&buyer, &listing, "1").await);
    }
    made.reverse();
    let (status, first) = api.get("/v1/orders?limit=2", Some(&buyer)).await;
    assert_eq!(status, 200, "{first}");
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (status, second) = api
        .get(&format!("/v1/orders?limit=2&cursor={cursor}"), Some(&buyer))
        .await;
    assert_eq!(status, 200, "{second}");
    assert!(second["next_cursor"].is_null(), "{second}");
    let seen: Vec<String> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, made, "every order once, newest first");
    // The buyer's checkouts page the same way.
    let (status, page) = api.get("/v1/checkouts?limit=2", Some(&buyer)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, rest) = api
        .get(
            &format!("/v1/checkouts?limit=2&cursor={cursor}"),
            Some(&buyer),
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1, "{rest}");
    assert!(rest["next_cursor"].is_null());
    // Each listed checkout carries its own orders, as reading it alone does.
    let listed: Vec<serde_json::Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["items"].as_array().unwrap())
        .cloned()
        .collect();
    let checkout_orders: Vec<String> = listed
        .iter()
        .flat_map(|c| c["orders"].as_array().unwrap().clone())
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        checkout_orders, made,
        "every order under its checkout, newest first"
    );
    for c in &listed {
        let (_, alone) = api.read_checkout(&buyer, c["id"].as_str().unwrap()).await;
        assert_eq!(alone["orders"], c["orders"], "{c}");
    }
    let (status, r) = api
        .get(
            &format!(
                "/v1/orders?seller_kind=household&seller_id={}&limit=101",
                seller.id
            ),
            Some(&seller),
        )
        .await;
    assert_eq!(status, 422, "{r}");
    assert_eq!(r["errors"][0]["field"], "limit");
    app.stop().await;
}

/// The expiry sweep runs every second: what it reads must not grow with the orders of the
/// past. Here 4,000 closed orders whose checkouts expired long ago and 1,000 open ones not due
/// yet; nothing is due, and one sweep reads (almost) nothing of either table.
#[tokio::test]
async fn the_expiry_sweep_reads_what_is_due_not_the_history() {
    let app = TestApp::spawn().await;
    let pool = app.db.pool("order").await;
    sqlx::query(
        "WITH made AS (
           INSERT INTO checkouts (id, buyer_id, reservation_id, payment_method, status, province_code, commune_code, street,
              recipient_name, recipient_phone, items_total, delivery_total, grand_total, expires_at)
           SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'cod', 'placed', '68', '24931', 'Thôn 1', 'Hoa',
              '+84987654321', 1000, 0, 1000,
              CASE WHEN n <= 4000 THEN now() - interval '30 days' ELSE now() + interval '2 days' END
           FROM generate_series(1, 5000) n
           RETURNING id, buyer_id, expires_at)
         INSERT INTO orders (id, checkout_id, buyer_id, seller_kind, seller_id, seller_name, status, items_total, delivery_fee, total, expires_at)
         SELECT gen_random_uuid(), id, buyer_id, 'household', gen_random_uuid(), 'Hộ 1',
            CASE WHEN expires_at < now() THEN 'delivered' ELSE 'placed' END, 1000, 0, 1000, expires_at
         FROM made",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE checkouts, orders")
        .execute(&pool)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    let due = nongsan_order::checkout::store::due_to_expire(&mut *tx)
        .await
        .unwrap();
    assert!(due.is_empty(), "{due:?}");
    // This transaction's own reads, counted by PostgreSQL: rows of sequential scans, and rows
    // fetched through indexes.
    let read: i64 = sqlx::query_scalar(
        "SELECT sum(pg_stat_get_xact_tuples_returned(t) + pg_stat_get_xact_tuples_fetched(t))::int8
         FROM unnest(ARRAY['orders'::regclass, 'checkouts'::regclass]) t",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert!(
        read < 50,
        "one sweep read {read} rows of orders and checkouts"
    );
    tx.rollback().await.unwrap();
    app.stop().await;
}

/// The seller delivers: its order shows where to and to whom (its checkout's address and
/// recipient), in the order and in the seller's list; another seller does not see the order.
#[tokio::test]
async fn a_seller_sees_where_to_deliver_and_whom_to_call() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let (seller, buyer, listing) = api.shop().await;
    let id = api.cod_order(&buyer, &listing, "1").await;
    let (status, o) = api.read_order(&seller, &id).await;
    assert_eq!(status, 200, "{o}");
    let d = &o["delivery"];
    assert_eq!(d["province_code"], "68", "{o}");
    assert_eq!(d["commune_code"], "24931", "{o}");
    assert_eq!(d["street"], "12 Lê Lợi", "{o}");
    assert_eq!(d["recipient_name"], "Nguyễn Thị Hoa", "{o}");
    assert_eq!(d["recipient_phone"], "+84987654321", "{o}");
    let (status, list) = api.seller_orders(&seller, &seller.id).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["items"][0]["delivery"], *d, "{list}");
    let other = api.register(Role::Household).await;
    let (status, _) = api.read_order(&other, &id).await;
    assert_eq!(status, 404);
    app.stop().await;
}
