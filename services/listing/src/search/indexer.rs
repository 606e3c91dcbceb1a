//! Keeping the index up to date from the listing events.
//!
//! The listing service consumes its own `listing.changed` and `stock.changed` events; the
//! handler only marks the listing dirty (in the inbox's transaction, so it never fails for
//! the engine's sake). The indexer then loads each dirty listing as it is now and writes it to
//! the engine, retrying with backoff while the engine is away: nothing is lost, and the index
//! always ends with the latest state, whatever order the events came in.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use nongsan_shared::{
    ListingId,
    events::{Envelope, Handler},
    telemetry::worth_logging,
};
use sqlx::{PgConnection, PgPool, postgres::PgListener};

use super::SearchEngine;
use crate::catalog::store::load_listing;

const CHANNEL: &str = "nongsan_search_dirty";

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

/// Marks listings dirty; the indexer is woken when the transaction commits.
pub async fn mark_dirty(conn: &mut PgConnection, ids: &[ListingId]) -> anyhow::Result<()> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|i| i.0).collect();
    sqlx::query!(
        "INSERT INTO search_dirty (listing_id) SELECT unnest($1::uuid[])
         ON CONFLICT (listing_id) DO UPDATE SET marked_at = clock_timestamp()",
        &ids,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!("SELECT pg_notify($1, '')", CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Writes up to 200 dirty listings to the engine; returns how many.
pub async fn index_once(pool: &PgPool, engine: &dyn SearchEngine) -> anyhow::Result<usize> {
    let dirty: Vec<(ListingId, DateTime<Utc>)> = sqlx::query!(
        r#"SELECT listing_id AS "listing_id: ListingId", marked_at FROM search_dirty ORDER BY marked_at LIMIT 200"#
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|d| (d.listing_id, d.marked_at))
    .collect();
    if dirty.is_empty() {
        return Ok(0);
    }
    let mut conn = pool.acquire().await?;
    let mut docs = Vec::with_capacity(dirty.len());
    for (id, _) in &dirty {
        match load_listing(&mut conn, *id).await {
            Ok(view) => docs.push(super::document(&view)),
            Err(crate::error::ListingError::NotFound(_)) => {}
            Err(e) => return Err(anyhow::anyhow!("loading listing {id}: {e}")),
        }
    }
    engine.upsert(&docs).await?;
    for (id, marked_at) in &dirty {
        // Only if it was not marked again while we were writing.
        sqlx::query!(
            "DELETE FROM search_dirty WHERE listing_id = $1 AND marked_at = $2",
            id as _,
            marked_at,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(dirty.len())
}

/// Indexes until aborted: woken by each commit that marked something dirty, and every
/// second in case a wake-up was missed; backs off while the engine is away.
pub async fn run(pool: PgPool, engine: Arc<dyn SearchEngine>) {
    let mut listener: Option<PgListener> = None;
    let mut failures = 0u32;
    loop {
        if listener.is_none() {
            listener = match PgListener::connect_with(&pool).await {
                Ok(mut l) => l.listen(CHANNEL).await.ok().map(|()| l),
                Err(_) => None,
            };
        }
        match index_once(&pool, engine.as_ref()).await {
            Ok(n) => {
                if failures > 0 {
                    tracing::info!("search indexer caught up");
                }
                failures = 0;
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
                tokio::time::sleep(
                    Duration::from_millis(100u64 << failures.min(6)).min(Duration::from_secs(5)),
                )
                .await;
                continue;
            }
        }
        match listener.as_mut() {
            Some(l) => match tokio::time::timeout(Duration::from_secs(1), l.recv()).await {
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(_)) => listener = None,
            },
            None => tokio::time::sleep(Duration::from_secs(1)).await,
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
pub async fn reindex(
    pool: &PgPool,
    engine: &dyn SearchEngine,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> anyhow::Result<usize> {
    let ids = sqlx::query_scalar!(r#"SELECT id AS "id: ListingId" FROM listings ORDER BY id"#)
        .fetch_all(pool)
        .await?;
    engine.clear().await?;
    progress(ids.len(), 0);
    let mut conn = pool.acquire().await?;
    let mut done = 0;
    for chunk in ids.chunks(200) {
        let mut docs = Vec::with_capacity(chunk.len());
        for id in chunk {
            let view = load_listing(&mut conn, *id)
                .await
                .map_err(|e| anyhow::anyhow!("loading listing {id}: {e}"))?;
            docs.push(super::document(&view));
        }
        engine.upsert(&docs).await?;
        done += chunk.len();
        progress(ids.len(), done);
    }
    Ok(done)
}
