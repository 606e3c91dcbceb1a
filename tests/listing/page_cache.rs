//! Listing pages kept in memory (`catalog::cache`): served without PostgreSQL, and never
//! stale. The service's own writes show at the writer's next read; a change made by anyone
//! else (another process, an operator's SQL) shows as soon as PostgreSQL's notification
//! arrives; a lost listener connection makes the service forget everything it kept; a
//! process stopping tells the others of the changes it had not announced yet. The
//! cache fills itself with the active listings, so a page nobody opened yet is in memory too.

use std::time::Duration;

use nongsan_shared::{auth::Role, failpoint::Action};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::{
    FailPoint, TestApp, TestDb, client::Request, eventually, test_settings, user::User,
};

/// Runs `sql` with triggers off: a change nobody is told of, the only way to see whether a
/// page is served from memory.
async fn unannounced(db: &PgPool, sql: &str) {
    let mut conn = db.acquire().await.unwrap();
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut *conn).await.unwrap();
    sqlx::query("RESET session_replication_role")
        .execute(&mut *conn)
        .await
        .unwrap();
}

/// Runs `sql` on the listing (`$1`) as any other writer would: triggers on.
async fn announced(db: &PgPool, sql: &str, listing: &str) {
    sqlx::query(sql).bind(listing).execute(db).await.unwrap();
}

/// A fresh app with one household's listing of 5 kg, and a pool on the listing schema.
async fn one_listing() -> (TestApp, User, String, PgPool) {
    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    let listing = app.api.listing_with_stock(&seller, "5").await;
    let db = app.db.pool("listing").await;
    (app, seller, listing, db)
}

async fn page(app: &TestApp, listing: &str) -> (u16, Value) {
    app.api.get(&format!("/v1/listings/{listing}"), None).await
}

/// Waits until the listing's page is served from memory, as the database has it: its title is
/// changed unannounced between two reads, and put back; a second read that still shows the
/// database's title came from memory. A round in which the cache began serving between the
/// reads may have kept the probe's page: its title is then put back announced, so that the
/// stale page is forgotten, and the next round tries again.
async fn until_served_from_memory(app: &TestApp, db: &PgPool, listing: &str) {
    let mut round = 0;
    eventually(
        Duration::from_secs(20),
        "the listing page to be served from memory",
        || {
            round += 1;
            async move {
                let title: String =
                    sqlx::query_scalar("SELECT title FROM listings WHERE id = $1::uuid")
                        .bind(listing)
                        .fetch_one(db)
                        .await
                        .unwrap();
                let (_, before) = page(app, listing).await;
                unannounced(
                    db,
                    &format!("UPDATE listings SET title = 'probe {round}' WHERE id = '{listing}'"),
                )
                .await;
                let (_, after) = page(app, listing).await;
                let kept = before["title"] == title.as_str() && after["title"] == title.as_str();
                let put_back = format!(
                    "UPDATE listings SET title = '{}' WHERE id = '{listing}'",
                    title.replace('\'', "''")
                );
                if kept {
                    unannounced(db, &put_back).await;
                } else {
                    sqlx::query(&put_back).execute(db).await.unwrap();
                }
                kept.then_some(())
            }
        },
    )
    .await;
}

/// Reads the page until `check` holds of it, for at most 15 s (a notification's way, or a lost
/// listener noticed, on a machine busy with the whole suite).
async fn shows(app: &TestApp, listing: &str, what: &str, check: impl Fn(u16, &Value) -> bool) {
    eventually(Duration::from_secs(15), what, || async {
        let (status, body) = page(app, listing).await;
        check(status, &body).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_kept_listing_page_shows_every_change_whoever_makes_it() {
    let (app, seller, listing, db) = one_listing().await;
    until_served_from_memory(&app, &db, &listing).await;

    // The service's own writes: the writer's very next read shows them.
    let (status, _) = app
        .api
        .patch(
            &format!("/v1/listings/{listing}"),
            &seller,
            &json!({ "title": "Xoài cát chu" }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page(&app, &listing).await.1["title"], "Xoài cát chu");
    app.api
        .add_lot(&seller, &listing, "LOT-B", "2026-11-21", "3")
        .await;
    assert_eq!(page(&app, &listing).await.1["stock"]["on_hand"], "8");

    // Changes made outside this process, each read after the page was kept again.
    announced(
        &db,
        "UPDATE listings SET price_vnd = 70000 WHERE id = $1::uuid",
        &listing,
    )
    .await;
    shows(&app, &listing, "the new price", |_, p| {
        p["price_vnd"] == 70000
    })
    .await;
    announced(
        &db,
        "UPDATE stock SET reserved = 2 WHERE listing_id = $1::uuid",
        &listing,
    )
    .await;
    shows(&app, &listing, "the stock held", |_, p| {
        p["stock"]["reserved"] == "2"
    })
    .await;
    announced(&db, "INSERT INTO listing_certifications (listing_id, position, kind, number, issuer, valid_from, valid_until)
         VALUES ($1::uuid, 99, 'vietgap', 'VG-MỚI', 'Trung tâm', '2026-01-01', '2030-01-01')", &listing).await;
    shows(&app, &listing, "the certification", |_, p| {
        p["certifications"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["number"] == "VG-MỚI"))
    })
    .await;
    announced(
        &db,
        "UPDATE households SET name = 'Hộ Tư Lành' WHERE account_id = $1::uuid",
        &seller.id,
    )
    .await;
    shows(&app, &listing, "the seller's new name", |_, p| {
        p["seller"]["name"] == "Hộ Tư Lành"
    })
    .await;
    announced(
        &db,
        "UPDATE listings SET status = 'paused' WHERE id = $1::uuid",
        &listing,
    )
    .await;
    shows(
        &app,
        &listing,
        "a paused listing hidden from buyers",
        |s, _| s == 404,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_lost_listener_connection_forgets_every_kept_page_and_serving_resumes() {
    let (app, _, listing, db) = one_listing().await;
    until_served_from_memory(&app, &db, &listing).await;

    let listener = || async {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN %listing_view%'",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        pids
    };
    let before = listener().await;
    assert_eq!(before.len(), 1, "one listener connection");
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(before[0])
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(ended);
    // Changed while nobody listens, and unannounced, as a notification lost would be.
    unannounced(
        &db,
        &format!("UPDATE listings SET title = 'Đổi khi không ai nghe' WHERE id = '{listing}'"),
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the listener to connect again",
        || async {
            let now = listener().await;
            (now.len() == 1 && now != before).then_some(())
        },
    )
    .await;
    // What was kept before the connection was lost is gone (sqlx listens again before it
    // reports the loss, so the new connection can show a moment before the cache empties).
    shows(
        &app,
        &listing,
        "the change made while nobody listened",
        |_, p| p["title"] == "Đổi khi không ai nghe",
    )
    .await;
    // Pages are served from memory again, and show the change.
    until_served_from_memory(&app, &db, &listing).await;
    assert_eq!(
        page(&app, &listing).await.1["title"],
        "Đổi khi không ai nghe"
    );
    app.stop().await;
}

/// A reservation's listing is announced to the other listing processes by its writer after
/// the commit, not by PostgreSQL (`Announce::ByCaller`): a writer stopped with announcements
/// queued sends them as it goes, and the other processes' pages of those listings do not
/// outlive it.
#[tokio::test]
async fn a_process_stopping_tells_the_others_of_the_changes_it_had_not_announced_yet() {
    let (writer, _, listing, db) = one_listing().await;
    let reader = TestApp::spawn_with(test_settings(&writer.db).await, writer.db.clone()).await;
    until_served_from_memory(&reader, &db, &listing).await;
    // The announcements wait, longer than the test reads (the reader's would too, but it
    // has none to send). Cleared however the test ends.
    let _delayed = FailPoint::set("cache.before_announce", Action::Delay(15_000));
    let service = User::minted(Role::Service);
    let (status, _) = writer
        .api
        .post(
            "/v1/internal/reservations",
            Some(&service),
            &json!({ "id": uuid::Uuid::now_v7(), "ttl_secs": 600,
                     "lines": [{ "listing_id": listing, "quantity": "2" }] }),
        )
        .await;
    assert_eq!(status, 201);
    // The writer's own page shows the reservation at once; the reader's kept page does not.
    assert_eq!(page(&writer, &listing).await.1["stock"]["reserved"], "2");
    assert_eq!(page(&reader, &listing).await.1["stock"]["reserved"], "0");

    writer.stop().await;
    shows(
        &reader,
        &listing,
        "the reservation the writer announced as it stopped",
        |_, p| p["stock"]["reserved"] == "2",
    )
    .await;
    reader.stop().await;
}

#[tokio::test]
async fn the_catalog_pages_share_the_kept_pages_and_their_changes() {
    let app = TestApp::spawn().await;
    let seller = app.api.register(Role::Household).await;
    let first = app.api.listing_with_stock(&seller, "5").await;
    let second = app.api.listing_with_stock(&seller, "5").await;
    let db = app.db.pool("listing").await;
    let catalog = format!("/v1/listings?household_id={}&limit=1", seller.id);
    let item = |page: &Value| page["items"][0].clone();
    // The first page holds the first listing; its cursor leads to the second.
    let (status, page) = app.api.get(&catalog, None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(item(&page)["id"], first.as_str());
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, next) = app
        .api
        .get(&format!("{catalog}&cursor={cursor}"), None)
        .await;
    assert_eq!(item(&next)["id"], second.as_str());
    assert_eq!(next["next_cursor"], Value::Null);
    // Kept by the listing's own page, the catalog serves it from memory too: a title
    // changed unannounced does not show; the same item as the listing page shows.
    until_served_from_memory(&app, &db, &first).await;
    unannounced(
        &db,
        &format!("UPDATE listings SET title = 'không ai báo' WHERE id = '{first}'"),
    )
    .await;
    let (_, page) = app.api.get(&catalog, None).await;
    assert_eq!(item(&page), page_of(&app, &first).await);
    assert_ne!(item(&page)["title"], "không ai báo");
    // An announced change shows in the catalog as on the listing's page.
    announced(
        &db,
        "UPDATE listings SET price_vnd = 81000 WHERE id = $1::uuid",
        &first,
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the catalog to show the new price",
        || async {
            let (_, page) = app.api.get(&catalog, None).await;
            (item(&page)["price_vnd"] == 81000 && item(&page)["title"] == "không ai báo")
                .then_some(())
        },
    )
    .await;
    app.stop().await;
}

async fn page_of(app: &TestApp, listing: &str) -> Value {
    page(app, listing).await.1
}

/// The stock a search shows for `listing` (sold-out listings included).
async fn searched_stock(app: &TestApp, listing: &str) -> Value {
    let (status, r) = app.api.search("q=xoai&in_stock=false").await;
    assert_eq!(status, 200, "{r}");
    r["items"]
        .as_array()
        .and_then(|hits| hits.iter().find(|h| h["id"] == listing))
        .map_or(Value::Null, |h| h["available"].clone())
}

#[tokio::test]
async fn a_search_shows_stock_as_fresh_as_the_listing_page_without_reading_it_each_time() {
    let (app, _, listing, db) = one_listing().await;
    let listing = listing.as_str();
    eventually(
        Duration::from_secs(10),
        "the listing to be searchable",
        || async { (searched_stock(&app, listing).await == "5").then_some(()) },
    )
    .await;
    // Kept: a level changed unannounced between two searches is not seen by the second.
    let (db, a) = (&db, &app);
    eventually(
        Duration::from_secs(20),
        "the stock a search shows to be kept",
        || async move {
            let before = searched_stock(a, listing).await;
            let change = |by: &str| {
                format!("UPDATE stock SET on_hand = on_hand {by} WHERE listing_id = '{listing}'")
            };
            unannounced(db, &change("+ 100")).await;
            let after = searched_stock(a, listing).await;
            unannounced(db, &change("- 100")).await;
            (after == before).then_some(())
        },
    )
    .await;
    assert_eq!(searched_stock(a, listing).await, "5");

    // Another writer's change shows once its notification arrives.
    announced(
        db,
        "UPDATE stock SET on_hand = on_hand + 1 WHERE listing_id = $1::uuid",
        listing,
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the search to show the announced stock",
        || async { (searched_stock(a, listing).await == "6").then_some(()) },
    )
    .await;
    // The service's own reservation shows at the very next search.
    let buyer = a.api.register(Role::Buyer).await;
    a.api.cod_order(&buyer, listing, "2").await;
    assert_eq!(searched_stock(a, listing).await, "4");
    app.stop().await;
}

/// A seller's new name is forgotten on its own listings' pages only. Before, any household
/// renaming itself (which anyone who signs up can send in a loop) made every process forget
/// every page it kept and read the whole catalog again.
#[tokio::test]
async fn a_seller_renamed_forgets_its_own_pages_not_everyone_elses() {
    let db = TestDb::new().await;
    // Pages live 60 s, so that no renewal reads the first page again during the test.
    let settings = nongsan_shared::config::Settings {
        listing_cache_secs: 60,
        ..test_settings(&db).await
    };
    let app = TestApp::spawn_with(settings, db).await;
    let seller = app.api.register(Role::Household).await;
    let listing = app.api.listing_with_stock(&seller, "5").await;
    let other = app.api.register(Role::Household).await;
    let others = app.api.listing_with_stock(&other, "4").await;
    let db = app.db.pool("listing").await;
    until_served_from_memory(&app, &db, &listing).await;
    until_served_from_memory(&app, &db, &others).await;
    // A change nobody is told of: while the first page is kept, it shows the title as it was.
    let title = page(&app, &listing).await.1["title"].clone();
    unannounced(
        &db,
        &format!("UPDATE listings SET title = 'behind its back' WHERE id = '{listing}'"),
    )
    .await;

    // The other seller renames itself through the API (the writer's next read shows it),
    // then as another process would, by SQL.
    let (status, body) = app
        .api
        .patch(
            &format!("/v1/households/{}", other.id),
            &other,
            &json!({ "name": "Hộ Đổi Tên" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(page(&app, &others).await.1["seller"]["name"], "Hộ Đổi Tên");
    announced(
        &db,
        "UPDATE households SET name = 'Hộ Đổi Tên Lần Hai' WHERE account_id = $1::uuid",
        &other.id,
    )
    .await;
    shows(&app, &others, "the other seller's second name", |_, p| {
        p["seller"]["name"] == "Hộ Đổi Tên Lần Hai"
    })
    .await;
    // Notifications arrive in the order their transactions committed: the second rename's
    // shows, so the first's was handled too. The first seller's page is still the one kept.
    assert_eq!(page(&app, &listing).await.1["title"], title);
    app.stop().await;
}

/// The listing pages kept, as `/metrics` last reported them (every 5 s).
async fn pages_kept(app: &TestApp) -> f64 {
    let text = app.api.send(Request::get("/metrics")).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix("listing_page_cache_pages "))
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn the_cache_fills_itself_with_the_active_listings_nobody_has_opened() {
    let db = TestDb::new().await;
    // Pages live 60 s: the cache walks the catalog every 12 s and renews a page at 30 s, so
    // no walk reads a page again between the change behind its back and the read below.
    let settings = nongsan_shared::config::Settings {
        listing_cache_secs: 60,
        ..test_settings(&db).await
    };
    let app = TestApp::spawn_with(settings, db).await;
    let seller = app.api.register(Role::Household).await;
    let first = app.api.listing_with_stock(&seller, "5").await;
    let second = app.api.listing_with_stock(&seller, "3").await;
    let paused = app.api.listing_with_stock(&seller, "2").await;
    let db = app.db.pool("listing").await;
    announced(
        &db,
        "UPDATE listings SET status = 'paused' WHERE id = $1::uuid",
        &paused,
    )
    .await;

    // No page has been read, yet the two active listings' pages are kept; the paused one's
    // is not (only its managers may read it).
    eventually(
        Duration::from_secs(45),
        "the two active listings' pages kept",
        || async { (pages_kept(&app).await == 2.0).then_some(()) },
    )
    .await;
    // The first read of each is answered from memory: it shows the title as it was before
    // a change nobody was told of.
    for listing in [&first, &second] {
        let title: String = sqlx::query_scalar("SELECT title FROM listings WHERE id = $1::uuid")
            .bind(listing.as_str())
            .fetch_one(&db)
            .await
            .unwrap();
        unannounced(
            &db,
            &format!(
                "UPDATE listings SET title = 'changed behind its back' WHERE id = '{listing}'"
            ),
        )
        .await;
        let (status, body) = page(&app, listing).await;
        assert_eq!(status, 200);
        assert_eq!(body["title"], title.as_str(), "{listing}");
    }
    assert_eq!(page(&app, &paused).await.0, 404);
    app.stop().await;
}
