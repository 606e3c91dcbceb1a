//! The Meilisearch adapter, checked request by request against a recorded stand-in, and its
//! behaviour when Meilisearch is away.

use std::time::Duration;

use nongsan_listing::search::{
    EngineError, Geo, SearchDoc, SearchEngine, SearchQuery, Sort, fold, generate,
    meili::MeiliEngine,
};
use nongsan_shared::auth::Role;
use serde_json::{Value, json};

use crate::support::{
    ClosedPort, TestApp, TestDb, eventually, fake_meili::FakeMeili, test_settings,
};

#[tokio::test]
async fn the_adapter_applies_the_vietnamese_settings_before_anything_else() {
    let fake = FakeMeili::start().await;
    let engine = MeiliEngine::new(&fake.url, Some("master-key".into()), "test_listings").unwrap();
    engine.search(&SearchQuery::default()).await.unwrap();
    let exchanges = fake.state.lock().unwrap().exchanges.clone();
    // Every request carries the key, and says who sends it; a body says it is JSON.
    for e in &exchanges {
        let header = |name: &str| e.headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(
            header("authorization"),
            Some("Bearer master-key"),
            "{}",
            e.path
        );
        assert!(
            header("user-agent").is_some_and(|a| a.starts_with("nongsan/")),
            "{}: {:?}",
            e.path,
            header("user-agent")
        );
        if !e.body.is_null() {
            assert_eq!(
                header("content-type"),
                Some("application/json"),
                "{}",
                e.path
            );
        }
    }
    // The settings are read first; the fake has none, so they are sent.
    assert_eq!(exchanges[0].method, "GET");
    assert_eq!(exchanges[0].path, "/indexes/test_listings/settings");
    assert_eq!(exchanges[1].method, "PATCH");
    assert_eq!(exchanges[1].path, "/indexes/test_listings/settings");
    let s = &exchanges[1].body;
    assert_eq!(
        s["typoTolerance"]["minWordSizeForTypos"],
        json!({ "oneTypo": 4, "twoTypos": 8 })
    );
    assert_eq!(s["typoTolerance"]["enabled"], true);
    let list = |k: &str| -> Vec<String> {
        s[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    for f in [
        "visible",
        "in_stock",
        "category",
        "category_parent",
        "province_code",
        "commune_code",
        "certifications",
        "ocop_stars",
        "price_vnd",
        "_geo",
    ] {
        assert!(
            list("filterableAttributes").contains(&f.to_owned()),
            "{f} must be filterable: {s}"
        );
    }
    for f in ["price_vnd", "created_at", "_geo"] {
        assert!(
            list("sortableAttributes").contains(&f.to_owned()),
            "{f} must be sortable"
        );
    }
    assert_eq!(
        list("searchableAttributes")[0],
        "title",
        "the title ranks first"
    );
    assert_eq!(
        list("rankingRules"),
        [
            "words",
            "typo",
            "proximity",
            "attribute",
            "sort",
            "exactness"
        ]
    );
    let pork: Vec<&str> = s["synonyms"]["thịt lợn"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(pork.contains(&"thịt heo"), "{pork:?}");
    assert!(
        s["synonyms"]["khóm"]
            .as_array()
            .unwrap()
            .contains(&Value::from("dứa"))
    );
    // The settings task was awaited before the search went out.
    let paths: Vec<String> = exchanges
        .iter()
        .map(|e| format!("{} {}", e.method, e.path))
        .collect();
    let task_poll = paths
        .iter()
        .position(|p| p == "GET /tasks/1")
        .expect("the settings task is awaited");
    let search = paths
        .iter()
        .position(|p| p.ends_with("/search"))
        .expect("the search is sent");
    assert!(task_poll < search, "{paths:?}");
    // Settings are sent once per process.
    engine.search(&SearchQuery::default()).await.unwrap();
    assert_eq!(fake.requests("PATCH", "/settings").len(), 1);
}

#[tokio::test]
async fn the_adapter_sends_exactly_the_recorded_search_request() {
    let fake = FakeMeili::start().await;
    let engine = MeiliEngine::new(&fake.url, None::<String>, "test_listings").unwrap();
    let query = SearchQuery {
        q: "xoài".into(),
        category: Some("trai-cay".into()),
        province: Some("68".into()),
        certification: Some("vietgap".into()),
        min_ocop: Some(4),
        price_min: Some(10_000),
        price_max: Some(100_000),
        near: Some((
            Geo {
                lat: 11.9404,
                lng: 108.4583,
            },
            Some(50.0),
        )),
        sort: Sort::PriceAsc,
        page: 2,
        per_page: 10,
        facets: ["category", "province_code", "certifications", "ocop_stars"]
            .iter()
            .map(|f| (*f).to_owned())
            .collect(),
        ..Default::default()
    };
    engine.search(&query).await.unwrap();
    let sent = fake.requests("POST", "/search").pop().unwrap().body;
    let recorded: Value =
        serde_json::from_str(include_str!("../fixtures/meili/search_request.json")).unwrap();
    assert_eq!(sent, recorded, "the request differs from the recorded one");

    let by_distance = SearchQuery {
        near: Some((
            Geo {
                lat: 11.9404,
                lng: 108.4583,
            },
            None,
        )),
        sort: Sort::Distance,
        in_stock_only: false,
        ..Default::default()
    };
    engine.search(&by_distance).await.unwrap();
    let sent = fake.requests("POST", "/search").pop().unwrap().body;
    assert_eq!(sent["filter"], "visible = true");
    assert!(
        sent.get("facets").is_none(),
        "no facets asked, none requested: {sent}"
    );
    assert_eq!(sent["sort"], json!(["_geoPoint(11.9404, 108.4583):asc"]));

    // The search endpoint asks for the fields it copies through, and the benchmark sends
    // Meilisearch what it sends; near a point it asks for everything (hits sorted by distance
    // carry `_geoDistance`, which is not copied into answers).
    let plain = SearchQuery {
        q: "xoài".into(),
        ..Default::default()
    };
    engine.search_page(&plain).await.unwrap();
    let sent = fake.requests("POST", "/search").pop().unwrap().body;
    assert_eq!(
        sent["attributesToRetrieve"],
        json!(nongsan_listing::search::RAW_FIELDS),
        "{sent}"
    );
    assert_eq!(
        sent,
        nongsan_listing::search::meili::request_body(&plain).unwrap()
    );
    engine.search_page(&by_distance).await.unwrap();
    let sent = fake.requests("POST", "/search").pop().unwrap().body;
    assert!(sent.get("attributesToRetrieve").is_none(), "{sent}");
    assert_eq!(
        sent,
        nongsan_listing::search::meili::request_body(&by_distance).unwrap()
    );
}

#[tokio::test]
async fn without_meilisearch_search_is_503_writes_succeed_and_the_index_catches_up() {
    let port = ClosedPort::new();
    let db = TestDb::new().await;
    let mut settings = test_settings(&db).await;
    settings.meili_url = Some(format!("http://127.0.0.1:{}", port.port()));
    let app = TestApp::spawn_with(settings, db).await;
    let (status, r) = app.api.search("q=xoai").await;
    assert_eq!(status, 503, "{r}");
    assert_eq!(r["code"], "search_unavailable");

    let seller = app.api.register(Role::Household).await;
    let listing = app.api.listing_with_stock(&seller, "10").await;

    // Meilisearch comes back: the listing reaches it without anyone asking, and the index
    // ends with its latest state (its stock, not the first event's).
    let fake = FakeMeili::start_on(port).await;
    let doc = eventually(
        Duration::from_secs(30),
        "the listing with its stock to reach Meilisearch",
        || async {
            fake.state
                .lock()
                .unwrap()
                .documents
                .iter()
                .rev()
                .find(|d| d["id"] == listing.as_str())
                .filter(|d| d["available"] == "10")
                .cloned()
        },
    )
    .await;
    assert_eq!(doc["title"], "Xoài cát Hòa Lộc");
    let (status, r) = app.api.search("q=xoai").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["engine"], "external");
    // Meilisearch is not asked to highlight (the fake never does): nongsan marks the word.
    assert_eq!(
        r["items"][0]["title_highlighted"], "<em>Xoài</em> cát Hòa Lộc",
        "{r}"
    );
    app.stop().await;
}

/// The ids of what a search for everything (hidden and sold-out listings included) finds, up
/// to 1,000.
async fn every_id(engine: &dyn SearchEngine) -> Vec<String> {
    let r = engine
        .search(&SearchQuery {
            per_page: 1_000,
            include_hidden: true,
            in_stock_only: false,
            ..SearchQuery::default()
        })
        .await
        .expect("search");
    let mut ids: Vec<String> = r.hits.into_iter().map(|h| h.doc.id).collect();
    ids.sort();
    ids
}

/// A Meilisearch that takes connections and never answers (hung, or behind a proxy that
/// is): a search is answered 503 after a few seconds, not held for the HTTP client's minute
/// or two (60 s, 120 s while the index's settings are read first).
#[tokio::test]
async fn a_meilisearch_that_never_answers_gives_503_in_seconds() {
    let port = ClosedPort::new();
    let url = format!("http://127.0.0.1:{}", port.port());
    // Listening, and never accepting: connections are made, and nothing is ever read.
    let _silent = port.listen();
    let db = TestDb::new().await;
    let mut settings = test_settings(&db).await;
    settings.meili_url = Some(url);
    let app = TestApp::spawn_with(settings, db).await;
    for _ in 0..2 {
        let (status, r) = tokio::time::timeout(Duration::from_secs(30), app.api.search("q=xoai"))
            .await
            .expect("an answer within 30 s");
        assert_eq!(status, 503, "{r}");
        assert_eq!(r["code"], "search_unavailable", "{r}");
    }
    app.stop().await;
}

/// Something in front of Meilisearch that redirects (an http URL moved to https): the
/// redirect is not followed (a POST sent on after a 301 or 302 becomes a GET), and the error
/// says where it pointed, as Meilisearch being away, so a search is answered 503.
#[tokio::test]
async fn a_redirect_in_front_of_meilisearch_is_named_and_not_followed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::PERMANENT_REDIRECT,
            [(axum::http::header::LOCATION, "https://search.example.vn/")],
        )
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    let engine = MeiliEngine::new(&url, None, "redirected").unwrap();
    // A redirect followed would end at a name that does not resolve here, with another error.
    match engine.search(&SearchQuery::default()).await {
        Err(EngineError::Unavailable(why)) => assert!(
            why.contains("308") && why.contains("redirect to https://search.example.vn/"),
            "{why}"
        ),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// A MEILI_URL with a path (Meilisearch behind a proxy at `/meili`, with a trailing slash):
/// every request goes under that path.
#[tokio::test]
async fn a_meilisearch_url_with_a_path_keeps_it_for_every_request() {
    let fake = FakeMeili::start().await;
    let engine = MeiliEngine::new(&format!("{}/meili/", fake.url), None, "prefixed").unwrap();
    // The fake answers by the end of the path; whatever it answers, the paths are what counts.
    let _ = engine.search(&SearchQuery::default()).await;
    let exchanges = fake.state.lock().unwrap().exchanges.clone();
    assert!(!exchanges.is_empty());
    for e in &exchanges {
        // The index's routes, and the tasks its writes are waited on at.
        assert!(
            e.path.starts_with("/meili/indexes/prefixed/") || e.path.starts_with("/meili/tasks/"),
            "{}",
            e.path
        );
        assert!(
            e.headers.get("authorization").is_none(),
            "no key, no header"
        );
    }
    assert!(
        exchanges
            .iter()
            .any(|e| e.method == "POST" && e.path == "/meili/indexes/prefixed/search"),
        "{:?}",
        exchanges.iter().map(|e| &e.path).collect::<Vec<_>>()
    );
}

/// An `https` MEILI_URL whose server takes the connection and never answers the TLS
/// handshake: the connection's making is bounded (5 s) with the handshake in it, and the
/// write fails as Meilisearch being away (so the indexer tries again) instead of waiting for
/// the request's 60 s.
#[tokio::test]
async fn an_https_meilisearch_that_never_shakes_hands_fails_within_the_connect_timeout() {
    let port = ClosedPort::new();
    let url = format!("https://127.0.0.1:{}", port.port());
    // Listening, and never accepting: TCP is made, and the TLS greeting is never answered.
    let _silent = port.listen();
    let engine = MeiliEngine::new(&url, Some("master-key".into()), "silent").unwrap();
    let doc = generate::listings(1, 1, 1)[0].search_doc("tls-1", "Hộ Test");
    let answered = tokio::time::timeout(Duration::from_secs(30), engine.upsert(&[doc]))
        .await
        .expect("an answer within 30 s, not the request's 60 s");
    match answered {
        Err(EngineError::Unavailable(why)) => {
            assert!(why.contains("no connection within 5 s"), "{why}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// A reindex fills a new Meilisearch index while the old one answers, and swaps it in: search
/// never finds nothing meanwhile, and what a stopped reindex left behind is not served.
#[tokio::test]
async fn a_meilisearch_rebuild_serves_the_old_index_until_the_new_one_takes_its_place() {
    let Some((url, key)) = super::contract::meili_server() else {
        return;
    };
    let uid = format!("rebuild_{}", uuid::Uuid::now_v7().simple());
    let docs = |from: usize, prefix: &str| -> Vec<SearchDoc> {
        generate::listings(5, 40, 4)
            .iter()
            .skip(from)
            .take(20)
            .map(|g| g.search_doc(&format!("{prefix}-{:03}", g.n), "Hộ Test"))
            .collect()
    };
    let (old, new, left) = (docs(0, "old"), docs(20, "new"), docs(0, "left"));
    let ids = |d: &[SearchDoc]| {
        let mut ids: Vec<String> = d.iter().map(|d| d.id.clone()).collect();
        ids.sort();
        ids
    };
    let engine = MeiliEngine::new(&url, key.clone(), &uid).unwrap();
    engine.upsert(&old).await.unwrap();
    // A reindex stopped half-way left documents in the rebuild's index.
    let leftover = MeiliEngine::new(&url, key.clone(), &format!("{uid}_rebuild")).unwrap();
    leftover.upsert(&left).await.unwrap();

    engine.rebuild_begin().await.unwrap();
    engine.upsert_queued(&new).await.unwrap();
    engine.settle().await.unwrap();
    // Indexed, and not yet served: the old index answers.
    assert_eq!(every_id(&engine).await, ids(&old));
    assert_eq!(engine.count().await.unwrap(), 20);

    engine.rebuild_finish().await.unwrap();
    assert_eq!(
        every_id(&engine).await,
        ids(&new),
        "the new index serves, and only it"
    );
    // The old index is gone, not left to take space.
    let mut gone = reqwest::Client::new().get(format!("{url}/indexes/{uid}_rebuild"));
    if let Some(key) = &key {
        gone = gone.bearer_auth(key);
    }
    assert_eq!(gone.send().await.unwrap().status(), 404);
    // The new index has the settings: a filter on a filterable attribute (an error on an
    // index without them) and a word folded as the adapter folds it.
    let r = engine
        .search(&SearchQuery {
            q: fold(&new[0].title),
            province: Some(new[0].province_code.clone()),
            include_hidden: true,
            in_stock_only: false,
            ..SearchQuery::default()
        })
        .await
        .expect("a filtered search on the swapped-in index");
    assert!(r.total > 0, "{:?}", new[0].title);
    let mut drop = reqwest::Client::new().delete(format!("{url}/indexes/{uid}"));
    if let Some(key) = &key {
        drop = drop.bearer_auth(key);
    }
    drop.send().await.unwrap();
}

/// `GET {url}{path}` on the Meilisearch server, as JSON.
async fn meili_get(url: &str, key: Option<&str>, path: &str) -> Value {
    let mut get = reqwest::Client::new().get(format!("{url}{path}"));
    if let Some(key) = key {
        get = get.bearer_auth(key);
    }
    get.send().await.unwrap().json().await.unwrap()
}

/// The settings updates Meilisearch was given for the index `uid`.
async fn settings_updates(url: &str, key: Option<&str>, uid: &str) -> usize {
    let tasks = meili_get(
        url,
        key,
        &format!("/tasks?indexUids={uid}&types=settingsUpdate&limit=100"),
    )
    .await;
    tasks["results"].as_array().unwrap().len()
}

#[tokio::test]
async fn settings_an_index_already_has_are_not_sent_again_and_changed_ones_are_put_back() {
    let Some((url, key)) = super::contract::meili_server() else {
        return;
    };
    let uid = format!("settings_{}", uuid::Uuid::now_v7().simple());
    let first = MeiliEngine::new(&url, key.clone(), &uid).unwrap();
    first.count().await.unwrap();
    assert_eq!(settings_updates(&url, key.as_deref(), &uid).await, 1);
    // The service started again: the index has the settings, and Meilisearch is not made to
    // work through its documents for nothing.
    let again = MeiliEngine::new(&url, key.clone(), &uid).unwrap();
    again.count().await.unwrap();
    assert_eq!(settings_updates(&url, key.as_deref(), &uid).await, 1);

    // Someone changes a setting by hand: the next start puts it back. The ranking rules, then
    // the words typed exactly (reset by the `null` the settings carry for them).
    for (change, updates) in [
        (json!({ "rankingRules": ["words", "sort"] }), 3),
        (
            json!({ "typoTolerance": { "disableOnWords": ["xoài"] } }),
            5,
        ),
    ] {
        let mut patch = reqwest::Client::new()
            .patch(format!("{url}/indexes/{uid}/settings"))
            .json(&change);
        if let Some(key) = &key {
            patch = patch.bearer_auth(key);
        }
        let task: Value = patch.send().await.unwrap().json().await.unwrap();
        let task_path = format!("/tasks/{}", task["taskUid"]);
        eventually(Duration::from_secs(30), "the hand-made change", || async {
            (meili_get(&url, key.as_deref(), &task_path).await["status"] == "succeeded")
                .then_some(())
        })
        .await;
        let started_again = MeiliEngine::new(&url, key.clone(), &uid).unwrap();
        started_again.count().await.unwrap();
        assert_eq!(
            settings_updates(&url, key.as_deref(), &uid).await,
            updates,
            "{change}"
        );
        let settings = meili_get(&url, key.as_deref(), &format!("/indexes/{uid}/settings")).await;
        assert_eq!(
            settings["rankingRules"],
            json!(nongsan_listing::search::meili::index_settings().ranking_rules)
        );
        assert_eq!(settings["typoTolerance"]["disableOnWords"], json!([]));
    }

    let mut drop = reqwest::Client::new().delete(format!("{url}/indexes/{uid}"));
    if let Some(key) = &key {
        drop = drop.bearer_auth(key);
    }
    drop.send().await.unwrap();
}
