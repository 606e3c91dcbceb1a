//! The catalog: validation, statuses, reference data, and the demo seed.

use nongsan_shared::auth::Role;
use serde_json::{Value, json};

use crate::support::{TestApp, calls::listing_body, process::nongsan, user::User};

fn with_cert(field: &str, value: Value) -> Value {
    let mut body = listing_body();
    body["certifications"][0][field] = value;
    body
}

fn with(field: &str, value: Value) -> Value {
    let mut body = listing_body();
    body[field] = value;
    body
}

#[tokio::test]
async fn bad_listing_input_is_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    let mut bad_cert = listing_body();
    bad_cert["certifications"][0]["valid_until"] = json!("2024-12-31");
    let cases = [
        (
            with("origin_commune", json!("99999")),
            "origin_commune",
            "unknown_commune",
        ),
        (with("price_vnd", json!(0)), "price_vnd", "not_positive"),
        (with("price_vnd", json!(-5000)), "price_vnd", "negative"),
        (
            with("min_order", json!("1.2345")),
            "min_order",
            "too_many_decimals",
        ),
        (with("unit", json!("bushel")), "unit", "unknown_unit"),
        (
            with("category", json!("spaceships")),
            "category",
            "unknown_category",
        ),
        (
            bad_cert,
            "certifications[0].valid_until",
            "ends_before_start",
        ),
        (with("ocop_stars", json!(2)), "ocop_stars", "out_of_range"),
        // Printed on lot labels and copied into orders: one line, read in its own direction.
        (
            with("title", json!("Xoài \u{202e}tác")),
            "title",
            "control_character",
        ),
        (
            with("title", json!("Xoài cát\nHòa Lộc")),
            "title",
            "control_character",
        ),
        (
            with_cert("number", json!("VG-".repeat(40))),
            "certifications[0].number",
            "too_long",
        ),
        (
            with_cert("issuer", json!("Cục\u{2028}Trồng trọt")),
            "certifications[0].issuer",
            "control_character",
        ),
        // PostgreSQL keeps no date before 4713 BC: a 500 before.
        (
            with_cert("valid_from", json!("-5000-01-01")),
            "certifications[0].valid_from",
            "out_of_range",
        ),
    ];
    for (body, field, code) in cases {
        let (status, res) = app.api.post("/v1/listings", Some(&seller), &body).await;
        assert_eq!(status, 422, "{field}: {res}");
        assert_eq!(res["errors"][0]["field"], field, "{res}");
        assert_eq!(res["errors"][0]["code"], code, "{res}");
    }
    let listing = app.api.listing_with_stock(&seller, "0").await;
    let lots = [
        (
            json!({ "lot_code": "LÔ-01", "harvest_date": "2026-11-20", "quantity": "5" }),
            "lot_code",
            "invalid_lot_code",
        ),
        (
            json!({ "lot_code": "A".repeat(21), "harvest_date": "2026-11-20", "quantity": "5" }),
            "lot_code",
            "invalid_lot_code",
        ),
        (
            json!({ "lot_code": "OK-1", "harvest_date": "2026-11-20", "quantity": "1.0005" }),
            "quantity",
            "too_many_decimals",
        ),
        // A 500 before (PostgreSQL keeps no such date); and a lot's link carries the harvest
        // date with two digits of its year, so 0025 would read as 2025.
        (
            json!({ "lot_code": "OK-1", "harvest_date": "-5000-01-01", "quantity": "5" }),
            "harvest_date",
            "out_of_range",
        ),
        (
            json!({ "lot_code": "OK-1", "harvest_date": "0025-06-15", "quantity": "5" }),
            "harvest_date",
            "out_of_range",
        ),
    ];
    for (body, field, code) in lots {
        let (status, res) = app
            .api
            .post(
                &format!("/v1/listings/{listing}/lots"),
                Some(&seller),
                &body,
            )
            .await;
        assert_eq!(status, 422, "{res}");
        assert_eq!(
            (
                res["errors"][0]["field"].as_str(),
                res["errors"][0]["code"].as_str()
            ),
            (Some(field), Some(code)),
            "{res}"
        );
    }
    // A seller's name is printed on its lots' labels too.
    let (status, res) = app
        .api
        .patch(
            &format!("/v1/households/{}", seller.id),
            &seller,
            &json!({ "name": "Hộ \u{202e}nễyugN" }),
        )
        .await;
    assert_eq!(
        (
            status,
            res["errors"][0]["field"].as_str(),
            res["errors"][0]["code"].as_str()
        ),
        (422, Some("name"), Some("control_character")),
        "{res}"
    );
    // Nothing half-written: no listing was made by the refused requests.
    let pool = app.db.pool("listing").await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM listings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    app.stop().await;
}

/// A listing's OCOP stars, farm point and low-stock threshold can be taken off with `null`
/// (an OCOP rating that lapsed must leave the listing's page); a field not sent stays.
/// Before, `null` kept the old value: nothing could clear them.
#[tokio::test]
async fn a_patch_clears_an_optional_field_sent_as_null_and_keeps_one_not_sent() {
    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    let mut body = listing_body();
    body["origin_point"] = json!({ "lat": 11.83, "lon": 108.55 });
    body["low_stock_threshold"] = json!("2");
    let listing = crate::support::calls::id_of(&app.api.create_listing(&seller, &body).await);
    let path = format!("/v1/listings/{listing}");
    let (status, v) = app
        .api
        .patch(&path, &seller, &json!({ "title": "Xoài cát loại 1" }))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            v["ocop_stars"].as_i64(),
            v["origin"]["point"]["lat"].as_f64()
        ),
        (Some(4), Some(11.83)),
        "{v}"
    );
    let (status, v) = app
        .api
        .patch(
            &path,
            &seller,
            &json!({ "ocop_stars": null, "origin_point": null, "low_stock_threshold": null }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["ocop_stars"], &v["origin"]["point"], v["title"].as_str()),
        (&Value::Null, &Value::Null, Some("Xoài cát loại 1")),
        "{v}"
    );
    let pool = app.db.pool("listing").await;
    let threshold: Option<String> =
        sqlx::query_scalar("SELECT low_stock_threshold::text FROM listings WHERE id = $1::uuid")
            .bind(&listing)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(threshold, None);
    app.stop().await;
}

/// Two changes of one listing at once, a price and a title, both stand. Before, each request read the listing, merged its change over what it read
/// and wrote every column back: the later write put back what the earlier one changed, and
/// both answered 200.
#[tokio::test]
async fn two_changes_of_a_listing_at_once_both_stand() {
    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    let listing = app.api.listing_with_stock(&seller, "5").await;
    let path = format!("/v1/listings/{listing}");
    // The first change waits between reading the listing and writing it.
    nongsan_shared::failpoint::set(
        "listing.before_update",
        nongsan_shared::failpoint::Action::Delay(1_500),
    );
    let price = {
        let (api, seller, path) = (app.api.clone(), seller.clone(), path.clone());
        tokio::spawn(async move {
            api.patch(&path, &seller, &json!({ "price_vnd": 50000 }))
                .await
        })
    };
    // Until the first change waits there: its transaction idle for a while (the relays' and
    // the indexer's never are for long).
    let pool = app.db.pool("listing").await;
    crate::support::eventually(
        std::time::Duration::from_secs(10),
        "the first change to wait between its read and its write",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                   AND state = 'idle in transaction' AND state_change < now() - interval '200 milliseconds'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            (waiting > 0).then_some(())
        },
    )
    .await;
    nongsan_shared::failpoint::clear("listing.before_update");
    let (status, body) = app
        .api
        .patch(
            &path,
            &seller,
            &json!({ "title": "Xoài cát Hòa Lộc loại 1" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = price.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (_, now) = app.api.get(&path, Some(&seller)).await;
    assert_eq!(
        (now["title"].as_str(), now["price_vnd"].as_i64()),
        (Some("Xoài cát Hòa Lộc loại 1"), Some(50000)),
        "{now}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_hidden_listing_leaves_the_catalog_and_only_an_operator_brings_it_back() {
    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    let listing = app.api.listing_with_stock(&seller, "5").await;
    let (_, page) = app.api.get("/v1/listings", None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let operator = User::minted(Role::Operator);
    let (status, _) = app
        .api
        .post(
            &format!("/v1/listings/{listing}/status"),
            Some(&operator),
            &json!({ "status": "hidden" }),
        )
        .await;
    assert_eq!(status, 422, "hiding needs a reason");
    let (status, hidden) = app
        .api
        .post(
            &format!("/v1/listings/{listing}/status"),
            Some(&operator),
            &json!({ "status": "hidden", "reason": "ảnh không đúng sản phẩm" }),
        )
        .await;
    assert_eq!((status, hidden["status"].as_str()), (200, Some("hidden")));
    let (_, page) = app.api.get("/v1/listings", None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0);
    assert_eq!(
        app.api
            .get(&format!("/v1/listings/{listing}"), None)
            .await
            .0,
        404
    );
    assert_eq!(
        app.api
            .get(&format!("/v1/listings/{listing}"), Some(&seller))
            .await
            .0,
        200,
        "the seller still sees it"
    );
    let (status, _) = app
        .api
        .post(
            &format!("/v1/listings/{listing}/status"),
            Some(&seller),
            &json!({ "status": "active" }),
        )
        .await;
    assert_eq!(status, 403);
    app.stop().await;
}

#[tokio::test]
async fn regions_are_found_with_or_without_diacritics_and_old_codes_convert() {
    let app = TestApp::spawn().await;
    let (_, provinces) = app.api.get("/v1/regions/provinces", None).await;
    assert_eq!(provinces.as_array().unwrap().len(), 34);
    let (_, communes) = app.api.get("/v1/regions/provinces/68/communes", None).await;
    assert!(
        communes
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["province_code"] == "68")
    );
    for q in ["don duong", "Đơn Dương"] {
        let (status, found) = app
            .api
            .get(&format!("/v1/regions/communes?q={q}&province=68"), None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(found[0]["code"], "24931", "{q}: {found}");
    }
    let (status, body) = app
        .api
        .get("/v1/regions/communes?q=don&province=99", None)
        .await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (422, Some("province"))
    );
    let (status, conv) = app.api.get("/v1/regions/legacy-communes/00016", None).await;
    assert_eq!(status, 200);
    assert!(conv["candidates"].as_array().unwrap().len() >= 2, "{conv}");
    assert_eq!(
        app.api.get("/v1/regions/legacy-communes/xyz", None).await.0,
        404
    );
    app.stop().await;
}

#[tokio::test]
async fn seeding_the_demo_on_a_fresh_database_lists_the_fifty_products() {
    let app = TestApp::spawn().await;
    let out = tokio::process::Command::from({
        let mut c = nongsan();
        c.args(["seed", "--demo"]).env("DATABASE_URL", &app.db.url);
        c
    })
    .output()
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created 50 demo listings"));
    let (status, page) = app.api.get("/v1/listings?limit=100", None).await;
    assert_eq!(status, 200);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 50);
    let titles: Vec<&str> = items.iter().map(|l| l["title"].as_str().unwrap()).collect();
    for t in ["Rau muống", "Xoài cát Hòa Lộc"] {
        assert!(titles.contains(&t), "{t} missing");
    }
    assert!(
        items.iter().all(|l| l["stock"]["available"] != "0"),
        "every demo product has stock"
    );
    // A second run changes nothing.
    let out = nongsan()
        .args(["seed", "--demo"])
        .env("DATABASE_URL", &app.db.url)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("already there"));
    app.stop().await;
}

#[tokio::test]
async fn lists_page_with_limit_and_the_cursor_the_previous_page_gave() {
    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    let mut made = Vec::new();
    for _ in 0..3 {
        made.push(app.api.create_listing(&seller, &listing_body()).await["id"].clone());
    }
    // The seller's listings (a filter), and the whole catalog (this seller's alone here).
    let mine = format!("/v1/listings?household_id={}&limit=2", seller.id);
    for mine in [mine.as_str(), "/v1/listings?limit=2"] {
        let (status, first) = app.api.get(mine, None).await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(first["items"].as_array().unwrap().len(), 2);
        let cursor = first["next_cursor"]
            .as_str()
            .expect("a next page")
            .to_owned();
        let (status, second) = app.api.get(&format!("{mine}&cursor={cursor}"), None).await;
        assert_eq!(status, 200, "{second}");
        assert_eq!(second["items"].as_array().unwrap().len(), 1);
        assert!(second["next_cursor"].is_null(), "{second}");
        let seen: Vec<Value> = first["items"]
            .as_array()
            .unwrap()
            .iter()
            .chain(second["items"].as_array().unwrap())
            .map(|l| l["id"].clone())
            .collect();
        assert_eq!(seen, made, "{mine}: every listing once, oldest first");
    }
    for (query, field) in [
        ("limit=0", "limit"),
        ("cursor=not-ours", "cursor"),
        ("after=x", "after"),
    ] {
        let (status, r) = app.api.get(&format!("/v1/listings?{query}"), None).await;
        assert_eq!(status, 422, "{query}: {r}");
        assert_eq!(r["errors"][0]["field"], field, "{query}: {r}");
    }
    app.stop().await;
}

/// A category with few listings is read through an index, not by walking the whole catalog
/// for them: here 3 listings of mushrooms among 3,000 of fruit, and one page of mushrooms
/// reads (almost) only those, as counted by PostgreSQL.
#[tokio::test]
async fn a_page_of_a_small_category_reads_its_listings_not_the_catalog() {
    // Without the listing page cache, which walks the active listings now and then.
    let db = crate::support::TestDb::new().await;
    let mut settings = crate::support::test_settings(&db).await;
    settings.listing_cache_mb = 0;
    let app = TestApp::spawn_with(settings, db).await;
    let seller = app.api.register(Role::Household).await;
    for _ in 0..3 {
        app.api
            .create_listing(&seller, &with("category", json!("nam")))
            .await;
    }
    let fruit = app.api.create_listing(&seller, &listing_body()).await;
    let pool = app.db.pool("listing").await;
    // On a connection of its own, closed after: a backend reports its counts when it ends.
    let mut setup = pool.acquire().await.unwrap().detach();
    sqlx::query(
        "INSERT INTO listings
         SELECT (jsonb_populate_record(NULL::listings, to_jsonb(l) || jsonb_build_object('id', gen_random_uuid()))).*
         FROM listings l, generate_series(1, 3000) WHERE l.id = $1",
    )
    .bind(uuid::Uuid::parse_str(fruit["id"].as_str().unwrap()).unwrap())
    .execute(&mut setup)
    .await
    .unwrap();
    sqlx::query("ANALYZE listings")
        .execute(&mut setup)
        .await
        .unwrap();
    sqlx::Connection::close(setup).await.unwrap();
    let read = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT seq_tup_read + COALESCE(idx_tup_fetch, 0) FROM pg_stat_user_tables WHERE relid = 'listings'::regclass",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let before = read().await;
    let (status, page) = app
        .api
        .get("/v1/listings?category=nam&limit=20", None)
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(3), "{page}");
    // The serving connection reports its counts once idle (within PostgreSQL's 10 s): at
    // least the 3 listings it answered with.
    let after = crate::support::eventually(
        std::time::Duration::from_secs(20),
        "the page's reads to be counted",
        || async {
            let now = read().await;
            (now >= before + 3).then_some(now)
        },
    )
    .await;
    assert!(
        after - before < 200,
        "one page of 3 listings read {} rows of listings",
        after - before
    );
    app.stop().await;
}

/// A lot taken in and an adjustment each add to the stock: sent again with their
/// `Idempotency-Key` (a retry after a lost answer, or two taps at once), they are answered as
/// the first was and change nothing. The same key with another request is 422; a blank key
/// is named; without a key each request counts, as before.
#[tokio::test]
async fn a_lot_or_an_adjustment_sent_again_with_its_key_counts_once() {
    use crate::support::client::Request;
    let app = TestApp::spawn().await;
    let api = &app.api;
    let seller = api.register(Role::Household).await;
    let listing = crate::support::calls::id_of(&api.create_listing(&seller, &listing_body()).await);
    let lot = json!({ "lot_code": "XOAI-7", "harvest_date": "2026-11-20", "quantity": "10" });
    let send = |key: &str, path: &str, body: &Value| {
        Request::post(format!("/v1/listings/{listing}/{path}"))
            .by(&seller)
            .header("idempotency-key", key)
            .json(body)
    };
    // Two first requests with one key at once: one takes it in, the other waits for it and
    // answers as it did.
    let (first, twin) = tokio::join!(
        api.send(send("lot-1", "lots", &lot)),
        api.send(send("lot-1", "lots", &lot))
    );
    assert_eq!(first.status, 201, "{}", first.text());
    assert_eq!((twin.status, twin.json()), (201, first.json()));
    // Sent again, and twice more at once.
    let again = api.send(send("lot-1", "lots", &lot)).await;
    let (a, b) = tokio::join!(
        api.send(send("lot-1", "lots", &lot)),
        api.send(send("lot-1", "lots", &lot))
    );
    for res in [&again, &a, &b] {
        assert_eq!(
            (res.status, res.json()),
            (201, first.json()),
            "{}",
            res.text()
        );
    }
    assert_eq!(api.stock(&seller, &listing).await.levels.on_hand, "10");

    let mut other = lot.clone();
    other["quantity"] = json!("12");
    let res = api.send(send("lot-1", "lots", &other)).await;
    assert_eq!(
        (
            res.status,
            res.json()["errors"][0]["field"].as_str(),
            res.json()["errors"][0]["code"].as_str()
        ),
        (422, Some("Idempotency-Key"), Some("idempotency_key_reused")),
        "{}",
        res.text()
    );
    let res = api.send(send("   ", "lots", &lot)).await;
    assert_eq!(
        (res.status, res.json()["errors"][0]["field"].as_str()),
        (422, Some("Idempotency-Key")),
        "{}",
        res.text()
    );

    // A request refused after its key was taken leaves the key free: the same key, mended,
    // takes the lot in.
    let clash = json!({ "lot_code": "XOAI-7", "harvest_date": "2026-11-19", "quantity": "1" });
    let res = api.send(send("lot-2", "lots", &clash)).await;
    assert_eq!(
        (res.status, res.json()["errors"][0]["code"].as_str()),
        (422, Some("lot_exists")),
        "{}",
        res.text()
    );
    let mended = json!({ "lot_code": "XOAI-8", "harvest_date": "2026-11-19", "quantity": "1" });
    let res = api.send(send("lot-2", "lots", &mended)).await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(api.stock(&seller, &listing).await.levels.on_hand, "11");

    let spoiled =
        json!({ "lot_code": "XOAI-7", "quantity": "-2.5", "reason": "dập khi vận chuyển" });
    let first = api.send(send("adj-1", "adjustments", &spoiled)).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let again = api.send(send("adj-1", "adjustments", &spoiled)).await;
    assert_eq!((again.status, again.json()), (200, first.json()));
    assert_eq!(api.stock(&seller, &listing).await.levels.on_hand, "8.5");

    // Without a key, each request counts.
    for _ in 0..2 {
        let res = api
            .send(
                Request::post(format!("/v1/listings/{listing}/lots"))
                    .by(&seller)
                    .json(&lot),
            )
            .await;
        assert_eq!(res.status, 201, "{}", res.text());
    }
    assert_eq!(api.stock(&seller, &listing).await.levels.on_hand, "28.5");
}

/// Text written before the one-line check (a title with a line break, a certificate number
/// with a direction override, a household name with a tab) made every later change of its
/// listing or household refused for a field its sender had not sent. The upgrade turns each
/// such character into a space and marks the listings for the search indexer; a change then
/// goes through.
#[tokio::test]
async fn the_upgrade_cleans_text_written_before_the_one_line_check() {
    use crate::support::client::Request;
    let app = TestApp::spawn().await;
    let api = &app.api;
    let seller = api.register(Role::Household).await;
    let listing = api.listing_with_stock(&seller, "5").await;
    let found = |q: &'static str| {
        let listing = listing.clone();
        async move {
            let (_, r) = api.search(q).await;
            r["items"]
                .as_array()
                .is_some_and(|h| h.iter().any(|h| h["id"] == listing.as_str()))
                .then_some(())
        }
    };
    // Indexed by its first title before the rows are changed underneath.
    crate::support::eventually(
        std::time::Duration::from_secs(30),
        "the listing to be found",
        || found("q=xoai"),
    )
    .await;
    let db = app.db.pool("listing").await;
    // As rows written before the check could be.
    for (sql, id) in [
        (
            "UPDATE listings SET title = E'Măng cụt\\nLái Thiêu' WHERE id = $1::uuid",
            &listing,
        ),
        (
            "UPDATE listing_certifications SET number = E'VG-\\u202E321' WHERE listing_id = $1::uuid",
            &listing,
        ),
        (
            "UPDATE households SET name = E'Nguyễn\\tVăn An' WHERE account_id = $1::uuid",
            &seller.id,
        ),
    ] {
        let done = sqlx::query(sql).bind(id).execute(&db).await.unwrap();
        assert_eq!(done.rows_affected(), 1, "{sql}");
    }
    sqlx::query("DELETE FROM search_dirty")
        .execute(&db)
        .await
        .unwrap();
    let price = json!({ "price_vnd": 70_000 });
    let patch = || {
        Request::patch(format!("/v1/listings/{listing}"))
            .by(&seller)
            .json(&price)
    };
    let refused = api.send(patch()).await;
    assert_eq!(
        (
            refused.status,
            refused.json()["errors"][0]["field"].as_str()
        ),
        (422, Some("title")),
        "before the upgrade: {}",
        refused.text()
    );

    sqlx::raw_sql(include_str!(
        "../../migrations/listing/20261226090200_one_line_text_cleaned.sql"
    ))
    .execute(&db)
    .await
    .unwrap();
    // Marked for the indexer: found by the words of its title as cleaned.
    crate::support::eventually(
        std::time::Duration::from_secs(30),
        "the cleaned title to be found",
        || found("q=mang%20cut%20lai%20thieu"),
    )
    .await;
    let res = api.send(patch()).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["title"], "Măng cụt Lái Thiêu");
    assert_eq!(res.json()["certifications"][0]["number"], "VG- 321");
    let name: String =
        sqlx::query_scalar("SELECT name FROM households WHERE account_id = $1::uuid")
            .bind(&seller.id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(name, "Nguyễn Văn An");
}

/// A request whose key another request is still serving waits for it 10 s at most, then is
/// 409 `idempotency_key_in_use`: it does not hold a connection for as long as the first
/// takes. The first, once done, is answered as usual, and the key then answers as it did.
#[tokio::test]
async fn a_key_still_being_served_after_ten_seconds_is_409() {
    use crate::support::client::Request;
    let app = TestApp::spawn().await;
    let api = &app.api;
    let seller = api.register(Role::Household).await;
    let listing = crate::support::calls::id_of(&api.create_listing(&seller, &listing_body()).await);
    let lot = json!({ "lot_code": "CHAM-1", "harvest_date": "2026-11-20", "quantity": "4" });
    let send = || {
        Request::post(format!("/v1/listings/{listing}/lots"))
            .by(&seller)
            .header("idempotency-key", "slow-1")
            .json(&lot)
    };
    nongsan_shared::failpoint::set(
        "stock.request.after_claim",
        nongsan_shared::failpoint::Action::Delay(13_000),
    );
    let first = api.send(send());
    // The first has taken its key well within 2 s; the second then waits on it.
    let second = async {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        api.send(send()).await
    };
    let (first, second) = tokio::join!(first, second);
    nongsan_shared::failpoint::clear("stock.request.after_claim");
    assert_eq!(first.status, 201, "{}", first.text());
    assert_eq!(
        (second.status, second.json()["code"].as_str()),
        (409, Some("idempotency_key_in_use")),
        "{}",
        second.text()
    );
    let again = api.send(send()).await;
    assert_eq!((again.status, again.json()), (201, first.json()));
    assert_eq!(api.stock(&seller, &listing).await.levels.on_hand, "4");
}
