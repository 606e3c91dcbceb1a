//! The search contract at a few thousand generated listings (`generate::listings`, seeded):
//! a word typed exactly puts the listings that have it first, a typo'd word still finds its
//! listings, and facet counts are the numbers of matching listings. Run on the engine, the
//! way `/v1/search` runs it; and the generated listings go in through the API too.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use nongsan_listing::search::{
    EngineError, SearchDoc, SearchEngine, SearchQuery, embedded::EmbeddedEngine, fold, generate,
    meili::MeiliEngine,
};
use nongsan_shared::auth::Role;

use crate::support::{TestApp, eventually};

const N: usize = 5_000;

/// The generated listings, as the index holds them.
fn generated_docs() -> Vec<SearchDoc> {
    generate::listings(11, N, 200)
        .iter()
        .map(|g| g.search_doc(&format!("gen-{:05}", g.n), &format!("Hộ {}", g.household)))
        .collect()
}

/// An embedded index of the generated listings.
async fn embedded_with(docs: &[SearchDoc]) -> Box<dyn SearchEngine> {
    let dir = std::env::temp_dir().join(format!("nongsan-scale-{}", uuid::Uuid::now_v7().simple()));
    let engine = EmbeddedEngine::open(&dir).expect("open the index");
    for batch in docs.chunks(1_000) {
        engine.upsert(batch).await.expect("index a batch");
    }
    Box::new(engine)
}

/// A Meilisearch index of the generated listings, when a server is configured.
async fn meili_with(docs: &[SearchDoc]) -> Option<Box<dyn SearchEngine>> {
    let (url, key) = super::contract::meili_server()?;
    let index = format!("scale_{}", uuid::Uuid::now_v7().simple());
    let engine = MeiliEngine::new(&url, key, &index).expect("a Meilisearch client");
    engine
        .upsert(docs)
        .await
        .expect("index the generated listings");
    Some(Box::new(engine))
}

/// The folded words of a listing's searchable text.
fn words(d: &SearchDoc) -> Vec<String> {
    fold(&format!(
        "{} {} {} {} {}",
        d.title, d.description, d.seller_name, d.commune_name, d.province_name
    ))
    .split(|c: char| !c.is_alphanumeric())
    .filter(|w| !w.is_empty())
    .map(str::to_owned)
    .collect()
}

fn query(q: &str) -> SearchQuery {
    SearchQuery {
        q: q.to_owned(),
        ..SearchQuery::default()
    }
}

async fn exact_words_first(engine: &dyn SearchEngine, docs: &[SearchDoc]) {
    // "xoai" is one typo from "loai" (in every "loại 1" title) and from "khoai".
    for typed in [
        "xoai ",
        "buoi ",
        "ca phe ",
        "sau rieng ",
        "mit ",
        "rau muong ",
        "gao ",
    ] {
        let wanted: Vec<String> = fold(typed).split_whitespace().map(str::to_owned).collect();
        let having = docs
            .iter()
            .filter(|d| d.in_stock && wanted.iter().all(|w| words(d).contains(w)))
            .count();
        let r = engine.search(&query(typed)).await.unwrap();
        if having < r.per_page {
            continue;
        }
        assert_eq!(r.hits.len(), r.per_page, "{typed}");
        for hit in &r.hits {
            let has = words(&hit.doc);
            assert!(
                wanted.iter().all(|w| has.contains(w)),
                "`{typed}`: {:?} is on the first page though {having} listings have the words",
                hit.doc.title
            );
        }
    }
}

async fn typos_and_facets(engine: &dyn SearchEngine, docs: &[SearchDoc]) {
    // A swap ("xaoi") and a missing letter ("sau rien") are one typo each.
    for (typo, word) in [
        ("xaoi ", "xoai"),
        ("sau rien ", "rieng"),
        ("buoii ", "buoi"),
    ] {
        let r = engine.search(&query(typo)).await.unwrap();
        assert!(r.total > 0, "`{typo}` finds nothing");
        assert!(
            r.hits
                .iter()
                .any(|h| words(&h.doc).iter().any(|w| w == word)),
            "`{typo}` does not find {word}"
        );
    }

    // One word, and two words (whose buckets of fewer words reuse the first word's matches);
    // "17" (a seller's name) matches few, whose category and province the embedded engine
    // reads from columns, where it counts the many matches of the others by values.
    for q in ["", "rau ", "xoai ", "mat ong ", "thanh long", "17 "] {
        let mut asked = query(q);
        asked.facets = nongsan_listing::search::FACETS
            .iter()
            .map(|f| (*f).to_owned())
            .collect();
        asked.per_page = 100;
        let first = engine.search(&asked).await.unwrap();
        let mut all = first.hits.clone();
        let mut page = 1;
        while (all.len() as u64) < first.total {
            page += 1;
            let mut next = asked.clone();
            next.page = page;
            all.extend(engine.search(&next).await.unwrap().hits);
        }
        assert_eq!(all.len() as u64, first.total, "`{q}`");
        let mut by_category: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_province: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_stars: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_certification: BTreeMap<String, u64> = BTreeMap::new();
        for h in &all {
            *by_category.entry(h.doc.category.clone()).or_default() += 1;
            *by_province.entry(h.doc.province_code.clone()).or_default() += 1;
            if let Some(s) = h.doc.ocop_stars {
                *by_stars.entry(s.to_string()).or_default() += 1;
            }
            for c in h.doc.certifications.iter().collect::<BTreeSet<_>>() {
                *by_certification.entry(c.clone()).or_default() += 1;
            }
        }
        if q.is_empty() {
            assert!(
                !by_stars.is_empty() && !by_certification.is_empty(),
                "the generated listings have stars and certifications"
            );
        }
        assert!(first.total > 0, "`{q}` finds nothing");
        // A facet asked twice is counted once.
        let mut twice = asked.clone();
        twice.facets.extend(asked.facets.clone());
        let again = engine.search(&twice).await.unwrap();
        assert_eq!(
            again.facets, first.facets,
            "`{q}` with each facet asked twice"
        );
        assert_eq!(first.facets["category"], by_category, "`{q}`");
        assert_eq!(first.facets["province_code"], by_province, "`{q}`");
        assert_eq!(first.facets["ocop_stars"], by_stars, "`{q}`");
        assert_eq!(first.facets["certifications"], by_certification, "`{q}`");

        // At least four stars: exactly the matches with four or five.
        let mut starred = asked.clone();
        starred.min_ocop = Some(4);
        let r = engine.search(&starred).await.unwrap();
        let four_up: u64 = by_stars
            .iter()
            .filter(|(s, _)| s.parse::<i16>().unwrap() >= 4)
            .map(|(_, n)| n)
            .sum();
        if q.is_empty() {
            assert!(four_up > 0, "some listings have four stars or five");
        }
        assert_eq!(r.total, four_up, "`{q}` with at least four stars");
        assert!(
            r.hits.iter().all(|h| h.doc.ocop_stars >= Some(4)),
            "`{q}` with at least four stars"
        );
        if q.is_empty() {
            let in_stock = docs.iter().filter(|d| d.in_stock).count() as u64;
            assert_eq!(
                first.total, in_stock,
                "an empty query matches every listing in stock"
            );
        }
    }
}

#[tokio::test]
async fn on_the_embedded_engine_exact_words_rank_first_typos_find_and_facets_count() {
    let docs = generated_docs();
    let engine = embedded_with(&docs).await;
    exact_words_first(engine.as_ref(), &docs).await;
    typos_and_facets(engine.as_ref(), &docs).await;
}

#[tokio::test]
async fn on_meilisearch_exact_words_rank_first_typos_find_and_facets_count() {
    let docs = generated_docs();
    let Some(engine) = meili_with(&docs).await else {
        return;
    };
    exact_words_first(engine.as_ref(), &docs).await;
    typos_and_facets(engine.as_ref(), &docs).await;
}

#[tokio::test]
async fn generated_listings_load_through_the_api_and_become_searchable() {
    let app = TestApp::spawn().await;
    let api = &app.api;
    let sellers = [
        api.register(Role::Household).await,
        api.register(Role::Household).await,
    ];
    let generated = generate::listings(3, 60, sellers.len());
    for g in &generated {
        let listing = api
            .create_listing(&sellers[g.household], &g.listing_body())
            .await;
        if g.stock > 0 {
            let id = listing["id"].as_str().unwrap();
            api.add_lot(
                &sellers[g.household],
                id,
                &format!("G-{}", g.n),
                "2026-11-20",
                &g.stock.to_string(),
            )
            .await;
        }
    }
    let in_stock = generated.iter().filter(|g| g.stock > 0).count();
    eventually(
        Duration::from_secs(30),
        "every generated listing in stock to be searchable",
        || async {
            let (_, r) = api.search("q=&limit=1").await;
            (r["total"].as_u64() == Some(in_stock as u64)).then_some(())
        },
    )
    .await;
    app.stop().await;
}

/// A listing titled `title`, described by `description`.
fn doc(id: &str, title: &str, description: &str) -> SearchDoc {
    let mut d = generate::listings(1, 1, 1)[0].search_doc(id, "Hộ Ba");
    d.title = title.to_owned();
    d.description = description.to_owned();
    d.commune_name = "Xã A".to_owned();
    d.province_name = "Tỉnh B".to_owned();
    d
}

async fn rules_in_order(engine: &dyn SearchEngine) {
    let docs = [
        doc("typo-in-title", "Xaoi tứ quý", "Rau thơm các loại"),
        doc(
            "exact-in-body",
            "Trái cây miền Tây",
            "Có xoài, mít và chôm chôm",
        ),
        doc("exact-in-title", "Xoài cát chín cây", "Trái cây miền Tây"),
        doc("apart", "Mật mía, đường và ong non", "Đặc sản"),
        doc("together", "Mật ong rừng U Minh", "Đặc sản"),
    ];
    engine.upsert(&docs).await.unwrap();
    let ids = |r: &nongsan_listing::search::SearchResults| -> Vec<String> {
        r.hits.iter().map(|h| h.doc.id.clone()).collect()
    };
    // Fewer typos first (a typo in the title loses to the exact word in the description),
    // then the title before the rest. A typo on the first letter ("loai") is two typos, too
    // many for a word of four letters: neither engine finds "loại" for "xoai".
    let r = engine.search(&query("xoai ")).await.unwrap();
    assert_eq!(
        ids(&r),
        ["exact-in-title", "exact-in-body", "typo-in-title"],
        "xoai"
    );
    // The words close together first.
    let r = engine.search(&query("mat ong ")).await.unwrap();
    assert_eq!(ids(&r)[..2], ["together", "apart"], "mat ong");
    // More words matched first: the listing with "xoai cat" before those with "xoai" only;
    // words no listing has drop out from the last.
    let r = engine.search(&query("xoai cat zzzz qqqq")).await.unwrap();
    assert_eq!(
        ids(&r),
        ["exact-in-title", "exact-in-body", "typo-in-title"],
        "xoai cat zzzz qqqq"
    );
    assert_eq!(r.total, 3);
}

#[tokio::test]
async fn the_ranking_rules_apply_in_order_on_the_embedded_engine() {
    rules_in_order(embedded_with(&[]).await.as_ref()).await;
}

/// The embedded engine keeps what each word reaches per segment between searches: a change
/// is found at once, and what it replaced is not.
#[tokio::test]
async fn a_word_searched_before_a_change_finds_what_the_change_made() {
    let docs = [
        doc("mango", "Xoài cát Hòa Lộc", "Trái cây miền Tây"),
        doc("other-mango", "Xoài keo", "Trái cây miền Tây"),
        doc("pomelo", "Bưởi da xanh", "Trái cây miền Tây"),
    ];
    let engine = embedded_with(&docs).await;
    let ids = |r: &nongsan_listing::search::SearchResults| -> Vec<String> {
        let mut ids: Vec<String> = r.hits.iter().map(|h| h.doc.id.clone()).collect();
        ids.sort();
        ids
    };
    for _ in 0..2 {
        let r = engine.search(&query("xoai ")).await.unwrap();
        assert_eq!(ids(&r), ["mango", "other-mango"]);
        let r = engine.search(&query("buoi ")).await.unwrap();
        assert_eq!(ids(&r), ["pomelo"]);
    }
    // The first mango becomes a pomelo.
    engine
        .upsert(&[doc("mango", "Bưởi năm roi", "Trái cây miền Tây")])
        .await
        .unwrap();
    let r = engine.search(&query("xoai ")).await.unwrap();
    assert_eq!(ids(&r), ["other-mango"], "xoai after the change");
    assert_eq!(r.total, 1);
    let r = engine.search(&query("buoi ")).await.unwrap();
    assert_eq!(ids(&r), ["mango", "pomelo"], "buoi after the change");
    assert_eq!(r.total, 2);
}

/// Words are near when each follows the one before with at most two words between, in the
/// order typed (the embedded engine's reading of "words closer together").
#[tokio::test]
async fn the_embedded_engine_counts_words_near_when_each_follows_within_two_words() {
    // Newest first where the words rank alike: without the proximity rule, the order
    // these are listed in.
    let docs: Vec<SearchDoc> = [
        ("reversed", "Rừng ong mật U Minh"),
        ("three-between", "Mật mía đường non ong rừng"),
        ("two-between", "Mật mía đường ong rừng"),
        ("together", "Mật ong rừng U Minh"),
    ]
    .into_iter()
    .zip((1..=4).rev())
    .map(|((id, title), created)| SearchDoc {
        created_at: created,
        ..doc(id, title, "Đặc sản")
    })
    .collect();
    let engine = embedded_with(&docs).await;
    let r = engine.search(&query("mat ong rung ")).await.unwrap();
    let ids: Vec<&str> = r.hits.iter().map(|h| h.doc.id.as_str()).collect();
    // The near ones first, then newest first within each.
    assert_eq!(
        ids,
        ["two-between", "together", "reversed", "three-between"],
        "mat ong rung"
    );
}

#[tokio::test]
async fn the_ranking_rules_apply_in_order_on_meilisearch() {
    let Some(engine) = meili_with(&[]).await else {
        return;
    };
    rules_in_order(engine.as_ref()).await;
}

/// Creates `n` generated listings (no stock) through the API, 16 at a time.
async fn listed(app: &TestApp, n: usize) {
    listed_through(&app.api, n).await;
}

/// [`listed`] through any API.
async fn listed_through(api: &crate::support::client::Client, n: usize) {
    let sellers = [
        api.register(Role::Household).await,
        api.register(Role::Household).await,
    ];
    let generated = generate::listings(5, n, sellers.len());
    for chunk in generated.chunks(16) {
        let mut sent = tokio::task::JoinSet::new();
        for g in chunk {
            let (api, seller, body) = (api.clone(), sellers[g.household].clone(), g.listing_body());
            sent.spawn(async move { api.create_listing(&seller, &body).await });
        }
        sent.join_all().await;
    }
}

/// Waits until search counts `n` listings, in stock or not.
async fn searchable(app: &TestApp, n: usize) {
    searchable_through(&app.api, n).await;
}

/// [`searchable`] through any API.
async fn searchable_through(api: &crate::support::client::Client, n: usize) {
    eventually(
        Duration::from_secs(120),
        "every listing to be searchable",
        || async {
            let (_, r) = api.search("in_stock=false&limit=1").await;
            (r["total"].as_u64() == Some(n as u64)).then_some(())
        },
    )
    .await;
}

/// A catalog whose embedded index is lost (deleted, a new data folder) is searchable again
/// after a restart, with nothing done by hand.
#[tokio::test]
async fn a_lost_embedded_index_is_filled_again_from_the_catalog() {
    let (db, settings) = catalog_without_its_index(40).await;
    let app = TestApp::spawn_with(settings, db).await;
    searchable(&app, 40).await;
    app.stop().await;
}

/// A catalog of `n` listings, searchable once, whose embedded index is then lost (the
/// service stopped, its index folder deleted): its database and settings.
async fn catalog_without_its_index(
    n: usize,
) -> (crate::support::TestDb, nongsan_shared::config::Settings) {
    let db = crate::support::TestDb::new().await;
    let settings = crate::support::test_settings(&db).await;
    let app = TestApp::spawn_with(settings.clone(), db.clone()).await;
    listed(&app, n).await;
    searchable(&app, n).await;
    app.stop().await;
    lose_the_index(&settings.data_dir.join("search")).await;
    (db, settings)
}

/// Deletes an embedded index's folder. A merge the stopped service's index writer started
/// may still write a file into it for a moment (the writer does not wait for its merges when
/// dropped), so a removal that meets a folder not empty is tried again.
async fn lose_the_index(folder: &std::path::Path) {
    eventually(
        Duration::from_secs(10),
        "the index folder to be deleted",
        || async {
            match std::fs::remove_dir_all(folder) {
                Ok(()) => Some(()),
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => None,
                Err(e) => panic!("deleting the index folder: {e}"),
            }
        },
    )
    .await;
}

/// A fill that fails (the engine refused a page, a task took too long) is not tried again
/// and again with the indexer waiting behind it: the indexer writes the listings the fill
/// marked. Before, the failed fill was tried again for ever and nothing was indexed.
#[tokio::test]
async fn a_fill_that_fails_leaves_the_listings_to_the_indexer() {
    let (db, settings) = catalog_without_its_index(40).await;
    let every_time = nongsan_shared::failpoint::Action::Error { times: u32::MAX };
    let _failing = crate::support::FailPoint::set("search.fill", every_time);
    let app = TestApp::spawn_with(settings, db).await;
    searchable(&app, 40).await;
    app.stop().await;
    assert_eq!(
        nongsan_shared::failpoint::state("search.fill"),
        Some(nongsan_shared::failpoint::Action::Error {
            times: u32::MAX - 1
        }),
        "the fill was tried once, and failed"
    );
}

/// Listings marked for the indexer and missing from the engine at a start (the service
/// stopped before the indexer wrote them, or the engine refuses one) are left to the
/// indexer: the start does not write the whole catalog again. A listing missing and not
/// marked still makes the start fill the engine, also when as many listings it holds are
/// marked. Before, any marked listing missing made every start fill it whole.
#[tokio::test]
async fn a_start_leaves_marked_listings_to_the_indexer_and_fills_only_for_lost_ones() {
    use nongsan_shared::failpoint::{Action, state};
    let db = crate::support::TestDb::new().await;
    let settings = crate::support::test_settings(&db).await;
    let app = TestApp::spawn_with(settings.clone(), db.clone()).await;
    let listing = app.db.pool("listing").await;
    listed(&app, 40).await;
    searchable(&app, 40).await;
    let never = || Action::Error { times: u32::MAX };
    let _down = unwritten(&app, 3).await;
    app.stop().await;
    drop(_down);
    let _fill = crate::support::FailPoint::set("search.fill", never());
    let fills = |n: u32| {
        Some(Action::Error {
            times: u32::MAX - n,
        })
    };

    let app = TestApp::spawn_with(settings.clone(), db.clone()).await;
    searchable(&app, 43).await;
    assert_eq!(
        state("search.fill"),
        fills(0),
        "the start did not fill the index: the indexer wrote the three"
    );

    // One listing lost (neither in the index nor marked), and one the index holds marked
    // again: the count of those marked and missing does not hide the lost one.
    let _down = unwritten(&app, 1).await;
    sqlx::query(
        "WITH lost AS (DELETE FROM search_dirty RETURNING listing_id)
         INSERT INTO search_dirty (listing_id)
         SELECT id FROM listings WHERE id NOT IN (SELECT listing_id FROM lost) ORDER BY id LIMIT 1",
    )
    .execute(&listing)
    .await
    .unwrap();
    app.stop().await;
    drop(_down);
    let app = TestApp::spawn_with(settings.clone(), db.clone()).await;
    // The fill fails here, and leaves the listings to the indexer.
    eventually(
        Duration::from_secs(30),
        "the start to fill the index for the lost listing",
        || async { (state("search.fill") == fills(1)).then_some(()) },
    )
    .await;
    searchable(&app, 44).await;

    // Three marked, and the index lost with the 44 others, which nothing marks.
    let _down = unwritten(&app, 3).await;
    app.stop().await;
    drop(_down);
    lose_the_index(&settings.data_dir.join("search")).await;
    let app = TestApp::spawn_with(settings.clone(), db.clone()).await;
    searchable(&app, 47).await;
    assert_eq!(state("search.fill"), fills(2), "the start filled the index");

    // A listing the engine refuses for good is set aside, and the starts after that leave
    // it to the indexer too.
    let (refused, _refusing) = {
        let _down = unwritten(&app, 1).await;
        let refused: String = sqlx::query_scalar("SELECT listing_id::text FROM search_dirty")
            .fetch_one(&listing)
            .await
            .unwrap();
        // Refused before the engine takes writes again.
        let point: &'static str = Box::leak(format!("search.refuse.{refused}").into_boxed_str());
        (refused, crate::support::FailPoint::set(point, never()))
    };
    eventually(
        Duration::from_secs(30),
        "the refused listing set aside",
        || async { (set_aside(&app).await == std::slice::from_ref(&refused)).then_some(()) },
    )
    .await;
    app.stop().await;
    let app = TestApp::spawn_with(settings, db).await;
    // One listing more, written by the indexer, which runs after the start-up check.
    listed(&app, 1).await;
    searchable(&app, 48).await;
    assert_eq!(
        state("search.fill"),
        fills(2),
        "the start did not fill the index for the refused listing"
    );
    app.stop().await;
}

/// Creates `n` listings that stay unwritten: the engine refuses every write until the fail
/// point returned goes. Waits until they are marked (by their own transactions);
/// none was marked before.
async fn unwritten(app: &TestApp, n: usize) -> crate::support::FailPoint {
    let every_time = nongsan_shared::failpoint::Action::Error { times: u32::MAX };
    let down = crate::support::FailPoint::set("search.write", every_time);
    listed(app, n).await;
    let listing = app.db.pool("listing").await;
    eventually(
        Duration::from_secs(30),
        "the new listings marked",
        || async {
            let marked: i64 = sqlx::query_scalar("SELECT count(*) FROM search_dirty")
                .fetch_one(&listing)
                .await
                .unwrap();
            (marked == i64::try_from(n).unwrap()).then_some(())
        },
    )
    .await;
    down
}

/// An engine that does not look listings up by id (as a Meilisearch whose document fetch
/// takes no `ids`); otherwise the embedded index.
struct NoLookup(EmbeddedEngine);

#[async_trait::async_trait]
impl SearchEngine for NoLookup {
    fn mode(&self) -> nongsan_listing::search::EngineMode {
        self.0.mode()
    }
    async fn upsert(&self, docs: &[SearchDoc]) -> Result<(), EngineError> {
        self.0.upsert(docs).await
    }
    async fn clear(&self) -> Result<(), EngineError> {
        self.0.clear().await
    }
    async fn count(&self) -> Result<u64, EngineError> {
        self.0.count().await
    }
    async fn holding(&self, _: &[String]) -> Result<u64, EngineError> {
        Err(EngineError::Other(anyhow::anyhow!("unknown field `ids`")))
    }
    async fn search(
        &self,
        q: &SearchQuery,
    ) -> Result<nongsan_listing::search::SearchResults, EngineError> {
        self.0.search(q).await
    }
}

/// When the engine does not answer the lookup of the marked listings, the start-up check
/// cannot tell a lost listing from a marked one, and fills the engine as it did before the
/// lookup existed.
#[tokio::test]
async fn a_start_whose_engine_cannot_look_listings_up_fills_it() {
    let app = TestApp::spawn().await;
    // Three listings, all marked and none written; both engines below are new and empty.
    let _down = unwritten(&app, 3).await;
    let pool = app.db.pool("listing").await;
    let new_engine = || {
        let dir =
            std::env::temp_dir().join(format!("nongsan-lookup-{}", uuid::Uuid::now_v7().simple()));
        EmbeddedEngine::open(&dir).unwrap()
    };
    let backfill = nongsan_listing::search::indexer::backfill_if_short;
    assert_eq!(
        backfill(&pool, &new_engine()).await.unwrap(),
        None,
        "all three are marked: left to the indexer"
    );
    assert_eq!(
        backfill(&pool, &NoLookup(new_engine())).await.unwrap(),
        Some(3),
        "without the lookup, filled"
    );
    app.stop().await;
}

/// Each engine counts which listings it holds by their ids: a listing written twice once,
/// one it never had not at all.
#[tokio::test]
async fn each_engine_counts_the_listings_it_holds_by_id() {
    let docs: Vec<SearchDoc> = generate::listings(5, 3, 2)
        .iter()
        .map(|g| g.search_doc(&uuid::Uuid::now_v7().to_string(), "Hộ Test"))
        .collect();
    let ids: Vec<String> = docs.iter().map(|d| d.id.clone()).collect();
    let never_written = uuid::Uuid::now_v7().to_string();
    let mut engines = vec![("embedded", embedded_with(&docs).await)];
    if let Some(meili) = meili_with(&docs).await {
        engines.push(("meilisearch", meili));
    }
    for (name, engine) in engines {
        // The first written again: replaced, not held twice.
        engine.upsert(&docs[..1]).await.unwrap();
        let held = |ids: Vec<String>| {
            let engine = &engine;
            async move { engine.holding(&ids).await.unwrap() }
        };
        assert_eq!(held(ids.clone()).await, 3, "{name}: all three");
        assert_eq!(
            held(vec![ids[0].clone(), never_written.clone(), ids[2].clone()]).await,
            2,
            "{name}: two of the three asked"
        );
        assert_eq!(held(vec![never_written.clone()]).await, 0, "{name}: none");
        assert_eq!(held(Vec::new()).await, 0, "{name}: none asked");
    }
}

/// A fill cut between two of its pages of 10,000 (the engine refused a page; a process
/// stopped there leaves the same) keeps what it wrote, and leaves every listing marked: the
/// indexer writes the rest, and search ends with the whole catalog.
#[tokio::test]
async fn a_fill_cut_between_its_pages_is_finished_by_the_indexer() {
    let (db, settings) = catalog_without_its_index(3).await;
    copied_in_sql(&db).await;
    let once = nongsan_shared::failpoint::Action::Error { times: 1 };
    let _cut = crate::support::FailPoint::set("search.fill.page", once);
    let app = TestApp::spawn_with(settings, db).await;
    searchable(&app, 10_053).await;
    assert_eq!(
        nongsan_shared::failpoint::state("search.fill.page"),
        None,
        "the fill was cut after its first page"
    );
    app.stop().await;
}

/// 10,050 listings more, copied from the three in SQL (through the API it would take
/// minutes), each with its stock row and unmarked: a fill writes them in two pages.
async fn copied_in_sql(db: &crate::support::TestDb) {
    let copied = sqlx::query(
        "WITH copied AS (
           INSERT INTO listings
           SELECT (jsonb_populate_record(NULL::listings,
                     to_jsonb(l) || jsonb_build_object('id', gen_random_uuid()))).*
             FROM listings l, generate_series(1, 3350)
           RETURNING id)
         INSERT INTO stock (listing_id) SELECT id FROM copied",
    )
    .execute(&db.pool("listing").await)
    .await
    .unwrap();
    assert_eq!(copied.rows_affected(), 10_050);
}

/// `nongsan up` killed in the middle of a fill (aborted on the spot after the fill's first
/// page of 10,000, as SIGKILL would) and started again: every listing becomes searchable,
/// with nothing done by hand. The embedded index opens after the kill, and the marks the
/// fill committed before its first page bring the rest in.
#[tokio::test]
async fn a_process_killed_during_a_fill_is_searchable_whole_after_its_restart() {
    use crate::support::process::{NongsanProcess, nongsan, up_env};
    let db = crate::support::TestDb::new().await;
    let port = crate::support::free_port();
    let env = up_env(&db, port);
    let first = NongsanProcess::start_on(&["up"], port, &env).await;
    let api = crate::support::client::Client::new(&first.url);
    listed_through(&api, 3).await;
    searchable_through(&api, 3).await;
    assert!(first.terminate().await.success());
    copied_in_sql(&db).await;

    // Started with the fail point: it fills the index for the 10,050 it lacks, and dies after
    // the first page. It may die before it serves, so it is only waited for.
    let log = std::env::temp_dir().join(format!("nongsan-killed-fill-{}.log", db.name));
    let mut killed = nongsan()
        .arg("up")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("NONGSAN_LOG_FORMAT", "json")
        .env("NONGSAN_FAILPOINTS", "search.fill.page=abort")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut waited = 0;
    let status = loop {
        if let Some(status) = killed.try_wait().unwrap() {
            break status;
        }
        waited += 1;
        assert!(
            waited < 1200,
            "the process did not die in its fill within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        status.code().is_none(),
        "killed by a signal, not exited: {status}\n{said}"
    );
    assert!(said.contains("search.fill.page"), "{said}");

    let again = NongsanProcess::start_on(&["up"], port, &env).await;
    searchable_through(&crate::support::client::Client::new(&again.url), 10_053).await;
    assert!(again.terminate().await.success());
}

/// Changes the title of `n` listings (the first by id), adding the word "kiwizeta", and
/// marks them for the indexer in one transaction; `first` (when given) is marked oldest.
async fn changed_and_marked(app: &TestApp, n: i64, first: Option<&str>) {
    let listing = app.db.pool("listing").await;
    let mut tx = listing.begin().await.unwrap();
    sqlx::query(
        "WITH changed AS (
           UPDATE listings SET title = title || ' kiwizeta'
            WHERE id IN (SELECT id FROM listings ORDER BY id LIMIT $1) RETURNING id)
         INSERT INTO search_dirty (listing_id) SELECT id FROM changed
         ON CONFLICT (listing_id) DO UPDATE SET marked_at = clock_timestamp()",
    )
    .bind(n)
    .execute(&mut *tx)
    .await
    .unwrap();
    if let Some(first) = first {
        sqlx::query("UPDATE search_dirty SET marked_at = marked_at - interval '1 hour' WHERE listing_id = $1::uuid")
            .bind(first)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    sqlx::query("SELECT pg_notify('nongsan_search_dirty', '')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Waits until search finds `n` listings with the word "kiwizeta".
async fn found_changed(app: &TestApp, n: u64, what: &str) {
    eventually(Duration::from_secs(30), what, || async {
        let (_, r) = app.api.search("q=kiwizeta&in_stock=false&limit=1").await;
        (r["total"].as_u64() == Some(n)).then_some(())
    })
    .await;
}

/// Listings whose marks are set aside (ahead of now).
async fn set_aside(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT listing_id::text FROM search_dirty WHERE marked_at > now() + interval '5 minutes'",
    )
    .fetch_all(&app.db.pool("listing").await)
    .await
    .unwrap()
}

/// A listing the engine refuses does not hold up the others: the indexer looks for it in
/// smaller batches, checks that the engine takes another listing (one it holds, written
/// again), sets the refused one's mark aside (ten minutes, or until it changes again) and
/// writes the rest. Before, the batch holding it was tried again for ever, and no change
/// made after it reached search.
#[tokio::test]
async fn a_listing_the_engine_refuses_does_not_hold_up_the_others() {
    let app = TestApp::spawn().await;
    listed(&app, 30).await;
    searchable(&app, 30).await;
    let listing = app.db.pool("listing").await;
    let refused: String = sqlx::query_scalar("SELECT id::text FROM listings ORDER BY id LIMIT 1")
        .fetch_one(&listing)
        .await
        .unwrap();
    let point: &'static str = Box::leak(format!("search.refuse.{refused}").into_boxed_str());
    let every_time = nongsan_shared::failpoint::Action::Error { times: u32::MAX };
    let _refusing = crate::support::FailPoint::set(point, every_time);
    // 29 listings change, the refused one first; the 30th is not marked.
    changed_and_marked(&app, 29, Some(&refused)).await;
    found_changed(&app, 28, "the 28 others to be found changed").await;
    assert_eq!(
        set_aside(&app).await,
        std::slice::from_ref(&refused),
        "the refused one is set aside"
    );
    let metrics = app
        .api
        .send(crate::support::client::Request::get("/metrics"))
        .await
        .text();
    assert!(
        metrics
            .lines()
            .any(|l| l == "search_listings_set_aside_total 1"),
        "counted for an alert: {metrics}"
    );
    // Taken again (the engine takes it now) as soon as it changes.
    nongsan_shared::failpoint::clear(point);
    sqlx::query(
        "UPDATE search_dirty SET marked_at = clock_timestamp() WHERE listing_id = $1::uuid",
    )
    .bind(&refused)
    .execute(&listing)
    .await
    .unwrap();
    found_changed(&app, 29, "the refused one to be found once it changes").await;
    app.stop().await;
}

/// An engine that refuses every write (a full disk, a Meilisearch answering errors) is not
/// taken for one that refuses listings: no mark is set aside (each would wait ten minutes
/// once the engine is back), and every change is found once it takes writes again.
#[tokio::test]
async fn an_engine_that_refuses_every_write_sets_no_listing_aside() {
    use nongsan_shared::failpoint::{Action, state};
    let app = TestApp::spawn().await;
    listed(&app, 30).await;
    searchable(&app, 30).await;
    let _refusing =
        crate::support::FailPoint::set("search.write", Action::Error { times: u32::MAX });
    changed_and_marked(&app, 30, None).await;
    // Tried in smaller batches down to one listing, and the check by another (11 writes),
    // then again after a pause.
    eventually(
        Duration::from_secs(30),
        "the indexer to try 15 writes",
        || async {
            matches!(state("search.write"), Some(Action::Error { times }) if times <= u32::MAX - 15)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        set_aside(&app).await,
        Vec::<String>::new(),
        "nothing set aside"
    );
    nongsan_shared::failpoint::clear("search.write");
    found_changed(&app, 30, "every change to be found").await;
    app.stop().await;
}

/// A new database and settings that put the index on the Meilisearch of the contract suite,
/// with its URL and key; `None` without one.
async fn on_meilisearch() -> Option<(
    crate::support::TestDb,
    nongsan_shared::config::Settings,
    String,
    Option<String>,
)> {
    let (url, key) = super::contract::meili_server()?;
    let db = crate::support::TestDb::new().await;
    let mut settings = crate::support::test_settings(&db).await;
    settings.meili_url = Some(url.clone());
    settings.meili_key = key.clone().map(secrecy::SecretString::from);
    Some((db, settings, url, key))
}

/// A Meilisearch that does not hold the catalog's index (a new server, or one that lost its
/// data) is filled in large batches: the catalog's 1,200 listings reach it as one addition,
/// not as the indexer's additions of a thousand each, one after another.
#[tokio::test]
async fn a_meilisearch_without_the_catalog_is_filled_in_large_batches() {
    let Some((db, mut settings, url, key)) = on_meilisearch().await else {
        return;
    };
    let app = TestApp::spawn_with(settings.clone(), db.clone()).await;
    listed(&app, 1_200).await;
    searchable(&app, 1_200).await;
    app.stop().await;
    // The same catalog on an index that does not exist yet (the index is named by the prefix).
    settings.redis_prefix = format!("{}_new", settings.redis_prefix);
    let index = format!("{}_listings", settings.redis_prefix);
    let app = TestApp::spawn_with(settings, db.clone()).await;
    searchable(&app, 1_200).await;
    // The fill marked every listing first (a fill cut short leaves the rest to the indexer)
    // and took back the marks it wrote.
    nothing_marked(&db.pool("listing").await).await;
    app.stop().await;
    let mut get = reqwest::Client::new().get(format!(
        "{url}/tasks?types=documentAdditionOrUpdate&indexUids={index},{index}_rebuild&limit=100"
    ));
    if let Some(key) = &key {
        get = get.bearer_auth(key);
    }
    let tasks: serde_json::Value = get.send().await.unwrap().json().await.unwrap();
    let received: Vec<u64> = tasks["results"]
        .as_array()
        .expect("Meilisearch's tasks")
        .iter()
        .map(|t| t["details"]["receivedDocuments"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(received, [1_200], "the additions to the new index: {tasks}");
}

/// A Meilisearch index that lost part of the catalog (restored from an older snapshot,
/// documents deleted by hand) is filled again when the listing service starts: it used to be
/// filled only when empty, and the lost listings stayed unfindable until a `nongsan reindex`.
/// Listings marked for the indexer do not hide the loss: a fill that took them off the
/// catalog's count saw nothing missing here, and the lost listings stayed lost.
#[tokio::test]
async fn a_meilisearch_index_missing_part_of_the_catalog_is_filled_again() {
    let Some((db, settings, url, key)) = on_meilisearch().await else {
        return;
    };
    let index = format!("{}_listings", settings.redis_prefix);
    let app = TestApp::spawn_with(settings.clone(), db.clone()).await;
    listed(&app, 60).await;
    searchable(&app, 60).await;
    app.stop().await;
    // 25 of the 60 deleted from Meilisearch behind the service's back.
    let listing = db.pool("listing").await;
    let lost: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM listings ORDER BY id LIMIT 25")
            .fetch_all(&listing)
            .await
            .unwrap();
    let meili = Meili { url, key, index };
    meili.delete(&lost).await;
    // And 30 others, still in the index, marked for the indexer (a change of stock not
    // written yet when the process stopped): more marked than lost, and none of the lost.
    sqlx::query(
        "INSERT INTO search_dirty (listing_id) SELECT id FROM listings ORDER BY id OFFSET 25 LIMIT 30
         ON CONFLICT DO NOTHING",
    )
    .execute(&listing)
    .await
    .unwrap();
    let app = TestApp::spawn_with(settings, db).await;
    searchable(&app, 60).await;
    let (_, found) = app.api.search("in_stock=false&limit=100").await;
    let ids: Vec<&str> = found["items"]
        .as_array()
        .expect("hits")
        .iter()
        .filter_map(|h| h["id"].as_str())
        .collect();
    assert!(
        lost.iter().all(|id| ids.contains(&id.as_str())),
        "every lost listing is found again: {ids:?}"
    );
    // Searchable as soon as Meilisearch took the fill's page; the fill is done once it took
    // back its marks.
    nothing_marked(&listing).await;
    app.stop().await;
}

/// Waits until no listing is left marked for the indexer to write.
async fn nothing_marked(listing: &sqlx::PgPool) {
    eventually(
        Duration::from_secs(30),
        "no listing left marked for the indexer to write",
        || async {
            let marked: i64 = sqlx::query_scalar("SELECT count(*) FROM search_dirty")
                .fetch_one(listing)
                .await
                .unwrap();
            (marked == 0).then_some(())
        },
    )
    .await;
}

/// A test's Meilisearch index, reached directly.
struct Meili {
    url: String,
    key: Option<String>,
    index: String,
}

impl Meili {
    fn authorized(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(key) => r.bearer_auth(key),
            None => r,
        }
    }

    /// Deletes `ids` behind the service's back, and waits until it is done.
    async fn delete(&self, ids: &[String]) {
        let http = reqwest::Client::new();
        let task: serde_json::Value = self
            .authorized(
                http.post(format!(
                    "{}/indexes/{}/documents/delete-batch",
                    self.url, self.index
                ))
                .json(ids),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let uid = task["taskUid"].as_u64().expect("a task");
        eventually(
            Duration::from_secs(30),
            "the deletion to be done",
            || async {
                let t: serde_json::Value = self
                    .authorized(http.get(format!("{}/tasks/{uid}", self.url)))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                (t["status"] == "succeeded").then_some(())
            },
        )
        .await;
    }
}
