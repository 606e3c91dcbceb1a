//! Keeping the index up to date from the listing events.
//!
//! The listing service consumes its own `listing.changed` events; the handler only marks the
//! listing dirty (in the inbox's transaction, so it never fails for
//! the engine's sake). The indexer then loads each dirty listing as it is now and writes it to
//! the engine, retrying with backoff while the engine is away: nothing is lost, and the index
//! always ends with the latest state, whatever order the events came in.

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use futures_util::stream::{FuturesUnordered, StreamExt};
use nongsan_shared::{
    ListingId,
    db::Notifications,
    events::{Envelope, Handler},
    telemetry::worth_logging,
};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::time::Instant;

use super::{
    Indexing, SearchEngine,
    dirty::{CHANNEL, mark_dirty},
};
use crate::catalog::store::{listings_after, load_listings};

/// Marks the listing of a `listing.changed` or `stock.changed` event dirty.
#[derive(Debug, Clone, Copy)]
pub struct MarkDirty;

#[async_trait::async_trait]
impl Handler for MarkDirty {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> anyhow::Result<()> {
        let id: ListingId = event.aggregate_id.parse()?;
        mark_dirty(tx, &[id]).await
    }
}

/// Dirty listings written to the engine at once.
const BATCH: usize = 1_000;

/// Writes sent to the engine and not yet searchable, at most. Meilisearch takes every write
/// queued behind the batch it is indexing into its next batch: at a write every
/// [`COMMIT_GAP`], sixteen cover a batch of over a second and a half.
const IN_FLIGHT: usize = 16;

/// The advisory lock between the indexer and a reindex. Each send of the indexer holds it
/// shared (for its transaction); a reindex holds it alone from before it reads the first page
/// until the new index serves. So a change the reindex may have read too early stays marked,
/// and the indexer writes it to the new index once the reindex lets go, never to the old one
/// that the swap then drops. (A write sent before the reindex began may still be queued in
/// the engine: the reindex waits for it first, see `SearchEngine::rebuild_begin`.)
pub const REINDEX_LOCK: i64 = 0x6e6f_6e67_7361_6e01;

/// A write sent to the engine: the marks it answers for, each a listing and when it was
/// marked.
#[derive(Debug)]
struct Sent {
    ids: Vec<uuid::Uuid>,
    marked: Vec<DateTime<Utc>>,
}

impl Sent {
    fn marks(&self) -> impl Iterator<Item = (uuid::Uuid, DateTime<Utc>)> + '_ {
        self.ids.iter().copied().zip(self.marked.iter().copied())
    }
}

/// Sends up to [`BATCH`] dirty listings to the engine, as they are now (loaded in two
/// queries), leaving out the marks of writes still on their way (`flying`). Answers the write
/// and what resolves when it is searchable; `None` when nothing is left to send, or while a
/// reindex runs. The marks stay until the write is searchable ([`clear_marks`]).
async fn send_once(
    pool: &PgPool,
    engine: &dyn SearchEngine,
    flying: &HashSet<(uuid::Uuid, DateTime<Utc>)>,
) -> anyhow::Result<Option<(Sent, Indexing)>> {
    let mut tx = pool.begin().await?;
    let free = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock_shared($1) AS "free!""#,
        REINDEX_LOCK
    )
    .fetch_one(&mut *tx)
    .await?;
    if !free {
        return Ok(None);
    }
    let limit = i64::try_from(BATCH + flying.len()).unwrap_or(i64::MAX);
    let (ids, marked): (Vec<uuid::Uuid>, Vec<DateTime<Utc>>) = sqlx::query!(
        "SELECT listing_id, marked_at FROM search_dirty ORDER BY marked_at LIMIT $1",
        limit,
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|d| (d.listing_id, d.marked_at))
    .filter(|mark| !flying.contains(mark))
    .take(BATCH)
    .unzip();
    if ids.is_empty() {
        return Ok(None);
    }
    let listings: Vec<ListingId> = ids.iter().copied().map(ListingId).collect();
    let docs: Vec<_> = load_listings(&mut tx, &listings)
        .await
        .map_err(|e| anyhow::anyhow!("loading dirty listings: {e}"))?
        .iter()
        .map(super::document)
        .collect();
    let indexing = engine.upsert_sent(&docs).await?;
    // Nothing was written: the transaction only held the reindex back while sending.
    tx.commit().await?;
    Ok(Some((Sent { ids, marked }, indexing)))
}

/// Clears the marks a searchable write answered for, but not those marked again since it was
/// loaded (their `marked_at` moved on): those are sent again.
async fn clear_marks(pool: &PgPool, sent: &Sent) -> anyhow::Result<()> {
    sqlx::query!(
        "DELETE FROM search_dirty d USING unnest($1::uuid[], $2::timestamptz[]) AS w(listing_id, marked_at)
         WHERE d.listing_id = w.listing_id AND d.marked_at = w.marked_at",
        &sent.ids,
        &sent.marked,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The pause after a write to the engine that did not fill a batch, before the next. Every
/// write is a commit (the embedded
/// index writes a segment, syncs it and reloads its reader; Meilisearch runs a task), so
/// while listings change many times a second the changes are gathered and written together:
/// at 100 renames a second on 100,000 listings, a commit per wake-up cost about 15 ms of CPU
/// per rename and left search over a second behind. A backlog (a full batch) is written
/// without pauses.
const COMMIT_GAP: Duration = Duration::from_millis(100);

/// How long the indexer waits after its `failures`-th failure in a row.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64 << failures.min(6)).min(Duration::from_secs(5))
}

/// Indexes until aborted: woken by each commit that marked something dirty (read as they
/// come, [`Notifications`]), by each write that becomes searchable, and every second in case
/// a wake-up was missed; backs off while the engine is away.
///
/// Up to [`IN_FLIGHT`] writes are on their way at once: where the engine queues its work
/// (Meilisearch), changes made while it indexes one batch are sent at once, and it takes
/// them together in its next batch, instead of after this one is known to be searchable.
/// The embedded engine's writes are searchable when sent.
pub async fn run(pool: PgPool, engine: Arc<dyn SearchEngine>) {
    let notifications = Notifications::listen(&pool, CHANNEL);
    let mut writes = FuturesUnordered::new();
    // The marks of the writes on their way: not sent again meanwhile.
    let mut flying: HashSet<(uuid::Uuid, DateTime<Utc>)> = HashSet::new();
    let mut failures = 0u32;
    // When the next write may be sent, and whether there may be something to send.
    let mut next = Instant::now();
    let mut wanted = true;
    let failed = |failures: &mut u32, e: &dyn std::fmt::Display| {
        *failures += 1;
        if worth_logging(*failures) {
            tracing::warn!(
                failures = *failures,
                error = %e,
                "search indexer cannot write; the listings stay marked and will be retried"
            );
        }
        Instant::now() + backoff(*failures)
    };
    loop {
        if wanted && writes.len() < IN_FLIGHT && Instant::now() >= next {
            match send_once(&pool, engine.as_ref(), &flying).await {
                Ok(Some((sent, indexing))) => {
                    let full = sent.ids.len() >= BATCH;
                    flying.extend(sent.marks());
                    writes.push(async move { (indexing.await, sent) });
                    next = Instant::now() + if full { Duration::ZERO } else { COMMIT_GAP };
                    continue;
                }
                Ok(None) => wanted = false,
                Err(e) => next = failed(&mut failures, &format_args!("{e:#}")),
            }
        }
        let may_send = wanted && writes.len() < IN_FLIGHT;
        tokio::select! {
            Some((searchable, sent)) = writes.next(), if !writes.is_empty() => {
                for mark in sent.marks() {
                    flying.remove(&mark);
                }
                match searchable {
                    Ok(()) => {
                        if failures > 0 {
                            tracing::info!("search indexer caught up");
                        }
                        failures = 0;
                        // Left marked, the listings are written again: harmless.
                        if let Err(e) = clear_marks(&pool, &sent).await {
                            tracing::warn!(error = format!("{e:#}"), "search indexer could not clear its marks");
                        }
                    }
                    Err(e) => next = failed(&mut failures, &e),
                }
                wanted = true;
            }
            () = notifications.next() => wanted = true,
            () = tokio::time::sleep_until(next), if may_send => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => wanted = true,
        }
    }
}

/// Marks every listing dirty when the engine is empty but the catalog is not (a new
/// embedded index, say), so the indexer fills it.
pub async fn backfill_if_empty(pool: &PgPool, engine: &dyn SearchEngine) -> anyhow::Result<()> {
    if engine.count().await? > 0 {
        return Ok(());
    }
    sqlx::query!(
        "INSERT INTO search_dirty (listing_id) SELECT id FROM listings ON CONFLICT DO NOTHING"
    )
    .execute(pool)
    .await?;
    Ok(())
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
    let total = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM listings"#)
        .fetch_one(&mut *conn)
        .await?;
    let total = usize::try_from(total).unwrap_or(0);
    engine.rebuild_begin().await?;
    progress(total, 0);
    let mut done = 0;
    let mut after = None;
    loop {
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
    engine.rebuild_finish().await?;
    Ok(done)
}
