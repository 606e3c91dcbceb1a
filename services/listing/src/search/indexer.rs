//! Keeping the index up to date from the marks of changed listings.
//!
//! Every change that the index shows marks its listing dirty in the change's own transaction
//! (`search::dirty`: a listing's write with its `listing.changed`, a stock change that makes a
//! listing run out or come back, a certification's end). The indexer then loads each dirty
//! listing as it is now and writes it to the engine, retrying with backoff while the engine
//! is away: nothing is lost, and the index always ends with the latest state, whatever order
//! the changes came in.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use nongsan_shared::{ListingId, db::Notifications, failpoint, telemetry::worth_logging};
use sqlx::{Connection, PgConnection, PgPool};

use super::{EngineError, SearchEngine, dirty::CHANNEL};
use crate::catalog::store::{listings_after, load_listings};

/// Dirty listings written to the engine at once.
const BATCH: i64 = 1_000;

/// The advisory lock between the indexer and a reindex. Each write of the indexer holds it
/// shared (for its transaction); a reindex holds it alone from before it reads the first page
/// until the new index serves. So a change the reindex may have read too early stays marked,
/// and the indexer writes it to the new index once the reindex lets go, never to the old one
/// that the swap then drops.
pub const REINDEX_LOCK: i64 = 0x6e6f_6e67_7361_6e01;

/// How long a listing the engine refuses is set aside before it is tried again. A change of
/// the listing brings it back at once: marking it again sets its mark to the time of the
/// change.
const SET_ASIDE_MINUTES: i32 = 10;

/// Writes up to `limit` dirty listings to the engine (loaded in two queries, written in one
/// commit); returns how many marks it took. Writes nothing (and returns 0) while a reindex
/// runs.
///
/// A write the engine refuses (not one it cannot take now) fails as
/// [`EngineError::Other`]; the caller tries smaller batches until the listing is alone.
/// Alone and refused, it is the listing or the engine: when the engine takes another
/// listing's document ([`engine_takes_writes`]), the refused listing's mark is set aside for
/// [`SET_ASIDE_MINUTES`] and the indexer goes on; when it does not, the error goes back to
/// the caller, which backs off as for an engine that is away. Before, the same oldest batch
/// was tried again for ever, and every change made after it waited behind it.
pub async fn index_once(
    pool: &PgPool,
    engine: &dyn SearchEngine,
    limit: i64,
) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let free = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock_shared($1) AS "free!""#,
        REINDEX_LOCK
    )
    .fetch_one(&mut *tx)
    .await?;
    if !free {
        return Ok(0);
    }
    let dirty: Vec<(ListingId, DateTime<Utc>)> = sqlx::query!(
        r#"SELECT listing_id AS "listing_id: ListingId", marked_at FROM search_dirty WHERE marked_at <= statement_timestamp() ORDER BY marked_at LIMIT $1"#,
        limit,
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|d| (d.listing_id, d.marked_at))
    .collect();
    if dirty.is_empty() {
        return Ok(0);
    }
    let ids: Vec<ListingId> = dirty.iter().map(|d| d.0).collect();
    let docs: Vec<_> = load_listings(&mut tx, &ids)
        .await
        .map_err(|e| anyhow::anyhow!("loading dirty listings: {e}"))?
        .iter()
        .map(super::document)
        .collect();
    match write(engine, &docs).await {
        Ok(()) => {}
        Err(EngineError::Other(e)) if dirty.len() == 1 => {
            let (id, at) = dirty[0];
            if !engine_takes_writes(&mut tx, engine, id).await? {
                return Err(EngineError::Other(e).into());
            }
            // For an alert: a listing out of search until it changes or the pause ends.
            metrics::counter!("search_listings_set_aside_total").increment(1);
            tracing::error!(
                listing = %id,
                error = format!("{e:#}"),
                minutes = SET_ASIDE_MINUTES,
                "the search engine refuses this listing: set aside, to be tried again later or when it changes"
            );
            sqlx::query!(
                "UPDATE search_dirty SET marked_at = now() + make_interval(mins => $3)
                 WHERE listing_id = $1 AND marked_at = $2",
                id.0,
                at,
                SET_ASIDE_MINUTES,
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    }
    // Only those not marked again while we were writing.
    let marked: Vec<DateTime<Utc>> = dirty.iter().map(|d| d.1).collect();
    sqlx::query!(
        "DELETE FROM search_dirty d USING unnest($1::uuid[], $2::timestamptz[]) AS w(listing_id, marked_at)
         WHERE d.listing_id = w.listing_id AND d.marked_at = w.marked_at",
        &ids.iter().map(|i| i.0).collect::<Vec<_>>(),
        &marked,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(dirty.len())
}

/// Writes documents to the engine. Fail points for tests: `search.write` refuses every
/// write, `search.refuse.<id>` any write holding that listing.
async fn write(engine: &dyn SearchEngine, docs: &[super::SearchDoc]) -> Result<(), EngineError> {
    failpoint::hit("search.write").map_err(EngineError::Other)?;
    for d in docs {
        failpoint::hit(&format!("search.refuse.{}", d.id)).map_err(EngineError::Other)?;
    }
    engine.upsert(docs).await
}

/// Whether the engine takes another listing's document than `refused`'s now: one it took
/// before (not marked, so its document is as the catalog has it) written again as it is, or
/// when every listing is marked, the next marked one. `false` when it refuses that too (the
/// engine refuses every write: a full disk, a Meilisearch that answers errors), or when
/// there is no other listing to tell by.
async fn engine_takes_writes(
    conn: &mut PgConnection,
    engine: &dyn SearchEngine,
    refused: ListingId,
) -> anyhow::Result<bool> {
    let other = sqlx::query_scalar!(
        r#"(SELECT l.id AS "id!: ListingId" FROM listings l
             WHERE NOT EXISTS (SELECT 1 FROM search_dirty d WHERE d.listing_id = l.id) LIMIT 1)
           UNION ALL
           (SELECT listing_id FROM search_dirty WHERE listing_id <> $1 AND marked_at <= statement_timestamp()
             ORDER BY marked_at LIMIT 1)
           LIMIT 1"#,
        refused.0,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(other) = other else {
        return Ok(false);
    };
    let docs: Vec<_> = load_listings(conn, &[other])
        .await
        .map_err(|e| anyhow::anyhow!("loading a listing: {e}"))?
        .iter()
        .map(super::document)
        .collect();
    Ok(write(engine, &docs).await.is_ok())
}

/// Whether the engine refused a write (as opposed to not being able to take it now).
fn refused(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<EngineError>(), Some(EngineError::Other(_)))
}

/// The pause after a write to the engine that did not fill a batch, before the next. Every
/// write is a commit (the embedded
/// index writes a segment, syncs it and reloads its reader; Meilisearch runs a task), so
/// while listings change many times a second the changes are gathered and written together:
/// at 100 renames a second on 100,000 listings, a commit per wake-up cost about 15 ms of CPU
/// per rename and left search over a second behind. A backlog (a full batch) is written
/// without pauses.
const COMMIT_GAP: Duration = Duration::from_millis(100);

/// The pause after the `failures`-th failure in a row while the engine is away: 200 ms
/// doubling to at most 5 s.
fn retry_pause(failures: u32) -> Duration {
    Duration::from_millis(100u64 << failures.min(6)).min(Duration::from_secs(5))
}

/// Indexes until aborted: first fills an index short of the catalog ([`backfill_if_short`]; 100,000
/// listings take tens of seconds, and searches meanwhile find what is indexed so far), then
/// writes what is marked, woken by each commit that marked something dirty (read as they
/// come, [`Notifications`]), and every second in case a wake-up was missed. Backs off while
/// the engine is away. The fill comes first, so that the indexer's writes wait for it.
pub async fn run(pool: PgPool, engine: Arc<dyn SearchEngine>) {
    let mut failures = 0u32;
    while let Err(e) = backfill_if_short(&pool, engine.as_ref()).await {
        failures += 1;
        if worth_logging(failures) {
            tracing::warn!(
                failures,
                error = format!("{e:#}"),
                "cannot tell whether the search index must be filled; trying again"
            );
        }
        tokio::time::sleep(retry_pause(failures)).await;
    }
    let notifications = Notifications::listen(&pool, CHANNEL);
    let mut failures = 0u32;
    let mut last_write: Option<tokio::time::Instant> = None;
    // Halved while the engine refuses a batch, to find the listing it refuses; doubled back
    // after each write.
    let mut batch = BATCH;
    loop {
        if let Some(at) = last_write {
            tokio::time::sleep_until(at + COMMIT_GAP).await;
        }
        match index_once(&pool, engine.as_ref(), batch).await {
            Err(e) if batch > 1 && refused(&e) => {
                batch = (batch / 2).max(1);
                continue;
            }
            Ok(n) => {
                if failures > 0 {
                    tracing::info!("search indexer caught up");
                }
                failures = 0;
                let full = i64::try_from(n).is_ok_and(|n| n >= batch);
                batch = (batch * 2).min(BATCH);
                last_write = (n > 0 && !full).then(tokio::time::Instant::now);
                if n > 0 {
                    continue;
                }
            }
            Err(e) => {
                failures += 1;
                if worth_logging(failures) {
                    tracing::warn!(
                        failures,
                        error = format!("{e:#}"),
                        "search indexer cannot write; the listings stay marked and will be retried"
                    );
                }
                tokio::time::sleep(retry_pause(failures)).await;
                continue;
            }
        }
        tokio::select! {
            () = notifications.next() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Fills the engine when it holds fewer listings than the catalog (a new embedded index, a
/// Meilisearch that lost its data or part of it, or was just configured) as [`reindex`] fills
/// a new one: in pages of 10,000 written as the engine's large batches, but into the serving
/// index (what it holds keeps being found meanwhile; a listing it holds is written again as
/// it is), with the indexer holding back. Answers how many listings it wrote; `None` when
/// there was nothing to do, another listing process filled the engine first, or the fill
/// failed and left its marked listings to the indexer.
///
/// Every listing is indexed, hidden or not, and none is ever deleted: an index that counts
/// fewer than the catalog has lost some. It used to be filled only when empty, so a
/// Meilisearch that lost part of its documents (restored from an older snapshot, documents
/// deleted by hand) kept missing them until someone ran `nongsan reindex`. A listing process
/// started while another one's writes are still queued in Meilisearch may count short and
/// fill for nothing: it costs the fill's time (about 22 s for 100,000 listings), and nothing
/// is lost.
///
/// It used to mark every listing dirty for the indexer, whose writes are a thousand
/// listings each, one after another: 69–78 s for 100,000 listings into a new Meilisearch
/// index with the machine otherwise idle, against about 22 s now (BENCHMARKS.md,
/// 2026-12-06).
pub async fn backfill_if_short(
    pool: &PgPool,
    engine: &dyn SearchEngine,
) -> anyhow::Result<Option<usize>> {
    if !short(pool.acquire().await?.as_mut(), engine).await? {
        return Ok(None);
    }
    // A connection of its own, never back in the pool, as the reindex's.
    let mut conn = pool.acquire().await?.detach();
    let filled = fill_if_still_short(&mut conn, engine).await;
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the search backfill's connection");
    }
    filled
}

/// Marked listings the start-up check leaves to the indexer at most; with more marked, the
/// engine is filled. The indexer writes 1,000 listings at a time, about 1,400 a second into
/// Meilisearch at 100,000 (69–78 s for all of them), and a fill writes the whole catalog in
/// pages of 10,000, about 20 s for 100,000 (BENCHMARKS.md, 2026-12-06): for 10,000 listings
/// or fewer, the indexer is done sooner, and the rest of the catalog is not written again.
const MARKS_LOOKED_UP: i64 = 10_000;

/// Whether the engine lacks a listing of the catalog that nothing will write; logged when it
/// does.
///
/// A listing marked for the indexer and not in the engine yet (written just before a stop,
/// or set aside because the engine refused it) is the indexer's to write: the engine counts
/// as short only by listings that are neither in it nor marked. Before, any marked listing
/// missing from the engine made every start fill it whole: after a process was stopped during
/// a bulk import, and at every start while one listing was refused for good.
///
/// Exact because the engine never drops a listing of its own accord (none is ever deleted):
/// what it holds is in the catalog, so `catalog - held` listings are missing, and those
/// marked are found by id. Read in this order, a listing indexed between two reads can make
/// the count short by one, and so a fill for nothing, never a lost one unseen.
async fn short(conn: &mut PgConnection, engine: &dyn SearchEngine) -> anyhow::Result<bool> {
    let indexed = engine.count().await?;
    // The catalog and its marks in one snapshot; the marks only when the engine is short (a
    // start after a bulk import has thousands).
    let catalog = sqlx::query!(
        r#"WITH catalog AS (SELECT count(*) AS n FROM listings)
           SELECT n AS "listings!",
                  array(SELECT listing_id::text FROM search_dirty WHERE n > $2 LIMIT $1) AS "marked!"
             FROM catalog"#,
        MARKS_LOOKED_UP + 1,
        i64::try_from(indexed).unwrap_or(i64::MAX),
    )
    .fetch_one(&mut *conn)
    .await?;
    let listings = u64::try_from(catalog.listings).unwrap_or(0);
    if indexed >= listings {
        return Ok(false);
    }
    let marked = catalog.marked;
    let looked_up = i64::try_from(marked.len()).is_ok_and(|n| n <= MARKS_LOOKED_UP);
    if looked_up && !marked.is_empty() {
        // A lookup the engine does not answer (a Meilisearch whose document fetch takes no
        // `ids`) costs the fill it would have spared, nothing more.
        match engine.holding(&marked).await {
            Ok(held) => {
                let to_write = (marked.len() as u64).saturating_sub(held);
                if indexed + to_write >= listings {
                    tracing::info!(
                        indexed,
                        listings,
                        marked = to_write,
                        "the search index lacks only listings marked for the indexer: it writes them"
                    );
                    return Ok(false);
                }
            }
            Err(e) => tracing::info!(
                error = format!("{e:#}"),
                "cannot look up the marked listings in the search index"
            ),
        }
    }
    tracing::info!(
        indexed,
        listings,
        "the search index holds fewer listings than the catalog: filling it"
    );
    Ok(true)
}

async fn fill_if_still_short(
    conn: &mut PgConnection,
    engine: &dyn SearchEngine,
) -> anyhow::Result<Option<usize>> {
    // Waits for the indexer's write in flight, or for another listing process that is
    // filling the engine (or a `nongsan reindex`): then the engine is no longer short.
    sqlx::query!("SELECT pg_advisory_lock($1)", REINDEX_LOCK)
        .execute(&mut *conn)
        .await?;
    if !short(conn, engine).await? {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    // Every listing is marked first, in one statement: a fill that stops half-way (the
    // process stopped, the engine refused a page) leaves the rest to the indexer, and the
    // next start fills again unless few are left (`MARKS_LOOKED_UP`).
    sqlx::query!(
        "INSERT INTO search_dirty (listing_id) SELECT id FROM listings ON CONFLICT DO NOTHING"
    )
    .execute(&mut *conn)
    .await?;
    // The marks committed before the catalog is read, as they are: each names a listing the
    // fill reads as it is now or later. A mark made or renewed since (a transaction that
    // commits meanwhile) stays, for the indexer once the lock is let go.
    let marks: Vec<(uuid::Uuid, DateTime<Utc>)> =
        sqlx::query!("SELECT listing_id, marked_at FROM search_dirty")
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|m| (m.listing_id, m.marked_at))
            .collect();
    // Straight into the serving index: what it holds is found meanwhile, and what it lacks
    // is found as each page is indexed. A fill that fails here (the engine refused a page,
    // a task took too long) is not tried again by this process: every listing is marked,
    // and the indexer writes them in its own batches of a thousand. Tried again at once,
    // the index would still look short while the engine works through the last attempt,
    // and a page the engine refuses would make the fill fail for ever, with the indexer
    // waiting behind it. (The indexer finds a document the engine refuses and sets it
    // aside: `index_once`.)
    let filled: anyhow::Result<usize> = async {
        failpoint::hit("search.fill")?;
        let n = write_all(&mut *conn, engine, &|_, _| {}).await?;
        engine.settle().await?;
        Ok(n)
    }
    .await;
    let n = match filled {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                "the search index could not be filled; the indexer writes the listings instead"
            );
            return Ok(None);
        }
    };
    for chunk in marks.chunks(10_000) {
        let (ids, at): (Vec<uuid::Uuid>, Vec<DateTime<Utc>>) = chunk.iter().copied().unzip();
        sqlx::query!(
            "DELETE FROM search_dirty d USING unnest($1::uuid[], $2::timestamptz[]) AS w(listing_id, marked_at)
             WHERE d.listing_id = w.listing_id AND d.marked_at = w.marked_at",
            &ids,
            &at,
        )
        .execute(&mut *conn)
        .await?;
    }
    tracing::info!(
        listings = n,
        secs = started.elapsed().as_secs_f64(),
        "the search index is filled"
    );
    Ok(Some(n))
}

/// Rebuilds the index from PostgreSQL; `progress(total, done)` after each batch.
///
/// Where the engine can (Meilisearch), the listings go to a new index while the current one
/// serves searches, and the new one takes its place in one step at the end; elsewhere the
/// index is cleared and filled again. The indexer holds back meanwhile ([`REINDEX_LOCK`]):
/// what changes during the rebuild is written to the new index after it.
pub async fn reindex(
    pool: &PgPool,
    engine: &dyn SearchEngine,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> anyhow::Result<usize> {
    // A connection of its own, never back in the pool: the lock ends with it, however the
    // rebuild ends (an error, or the future dropped half-way).
    let mut conn = pool.acquire().await?.detach();
    // Waits for the indexer's write in flight, if any.
    sqlx::query!("SELECT pg_advisory_lock($1)", REINDEX_LOCK)
        .execute(&mut conn)
        .await?;
    let rebuilt = rebuild(&mut conn, engine, progress).await;
    // Closing ends the session, and with it the lock.
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the reindex's connection");
    }
    rebuilt
}

async fn rebuild(
    conn: &mut PgConnection,
    engine: &dyn SearchEngine,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> anyhow::Result<usize> {
    engine.rebuild_begin().await?;
    let done = write_all(conn, engine, progress).await?;
    engine.rebuild_finish().await?;
    Ok(done)
}

/// Every listing, in pages of 10,000, each given to the engine as one bulk write
/// ([`SearchEngine::upsert_queued`]; the caller settles them); `progress(total, done)` after
/// each page.
async fn write_all(
    conn: &mut PgConnection,
    engine: &dyn SearchEngine,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> anyhow::Result<usize> {
    let total = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM listings"#)
        .fetch_one(&mut *conn)
        .await?;
    let total = usize::try_from(total).unwrap_or(0);
    progress(total, 0);
    let mut done = 0;
    let mut after = None;
    loop {
        if done > 0 {
            // For tests: a fill or a reindex cut between two pages.
            failpoint::hit("search.fill.page")?;
        }
        // Pages of 10,000, each given to the engine as one bulk write.
        let page = listings_after(&mut *conn, after, 10_000)
            .await
            .map_err(|e| anyhow::anyhow!("loading listings: {e}"))?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        let docs: Vec<_> = page.iter().map(super::document).collect();
        // Sent, not awaited: the next page is read while the engine indexes this one.
        engine.upsert_queued(&docs).await?;
        done += docs.len();
        progress(total.max(done), done);
    }
    Ok(done)
}
