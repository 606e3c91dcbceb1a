//! The listing page cache fills itself: when its listener connects, and then every fifth of
//! a page's time to live, the active listings are walked in id order and the pages missing
//! or past half their time to live are read, [`WARM_BATCH`] per statement: new pages until
//! nine tenths of the budget is spent, renewals of pages kept whatever the budget. A catalog
//! that fits is served from memory whichever listing a buyer opens, not only the ones opened
//! before. The pages read carry the same tickets as a
//! buyer's read (taken before the statement), so a change during the walk is never
//! overwritten by what the walk read before it.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context as _;
use nongsan_shared::{ListingId, telemetry::worth_logging};
use sqlx::PgPool;

use crate::catalog::{
    cache::{Ticket, ViewCache},
    store::{Selection, load_listings, page_bytes, select_ids, today_in_vietnam},
};

/// Listings read per statement while the cache fills itself.
const WARM_BATCH: i64 = 500;

/// Fills the cache with the pages of active listings for as long as the service runs: at
/// once when the listener (re)connects or every page was forgotten, and every fifth of a
/// page's time to live (at least a second apart, at most a minute).
pub async fn warm(cache: Arc<ViewCache>, pool: PgPool) {
    if !cache.keeps_pages() {
        return;
    }
    let every = (cache.ttl() / 5).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut failures = 0u32;
    loop {
        tokio::select! {
            () = cache.refill_asked() => {}
            () = tokio::time::sleep(every) => {}
        }
        match warm_once(&cache, &pool).await {
            Ok(kept) => {
                failures = 0;
                if kept > 0 {
                    tracing::debug!(kept, "listing page cache filled");
                }
            }
            Err(e) => {
                failures += 1;
                if worth_logging(failures) {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "listing page cache cannot fill itself; pages are kept as they are read"
                    );
                }
            }
        }
    }
}

/// One walk of the active listings in id order, [`WARM_BATCH`] at a time: the pages
/// [`ViewCache::wants`] are read in one statement and kept; a page not kept yet only while
/// the cache has room. Stops when the cache stops serving. Returns how many pages it kept.
async fn warm_once(cache: &ViewCache, pool: &PgPool) -> anyhow::Result<usize> {
    let mut after = None;
    let mut kept = 0;
    while cache.serving() {
        let mut conn = pool.acquire().await.context("no connection")?;
        let selection = Selection {
            after,
            limit: WARM_BATCH,
            ..Selection::default()
        };
        let ids = select_ids(&mut conn, &selection).await?;
        let Some(last) = ids.last() else {
            break;
        };
        after = Some(*last);
        let today = today_in_vietnam();
        let room = cache.has_room();
        let mut tickets: HashMap<ListingId, Ticket> = ids
            .into_iter()
            .filter(|id| cache.walk_reads(*id, today, room))
            .map(|id| (id, cache.ticket(id, today)))
            .collect();
        if tickets.is_empty() {
            continue;
        }
        let wanted: Vec<ListingId> = tickets.keys().copied().collect();
        let views = load_listings(&mut conn, &wanted).await?;
        drop(conn);
        for view in views {
            if let (true, Some(ticket)) = (view.status == "active", tickets.remove(&view.id)) {
                cache.put(ticket, page_bytes(&view)?);
                kept += 1;
            }
        }
        // A walk of a large catalog gives way to the requests between its batches.
        tokio::task::yield_now().await;
    }
    Ok(kept)
}
