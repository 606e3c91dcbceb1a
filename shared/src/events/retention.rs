//! Keeping a service's event tables and its stream to a size: the outbox rows published,
//! the inbox rows handled, and the stream entries every consumer group has acknowledged are
//! removed once older than the retention (`NONGSAN_EVENTS_KEEP_HOURS`).
//!
//! Without it they grow with every write for ever: after 1,000,000 listings were loaded the
//! listing outbox held 2,000,000 rows and its inbox 956,000 (BENCHMARKS.md, 2026-12-05),
//! and with Redis every event also stays in the stream's memory.
//!
//! Exactly-once handling rests on the inbox remembering an event id for as long as the event
//! can come again. It can come again from the stream only (the relay publishes again only
//! what it has not marked published): a redelivery of what a consumer did not acknowledge,
//! or a consumer group made again, which reads the stream from its start. So a stream entry
//! goes only when every group has acknowledged it and it is older than the retention, and a
//! handled inbox row is kept a day longer than that.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;

use super::Bus;

/// Rows deleted per statement: each is its own short transaction.
const BATCH: i64 = 5_000;
/// How much longer than the retention a handled inbox row is kept (module doc).
const INBOX_MARGIN: Duration = Duration::from_secs(24 * 3600);
/// The first pass comes this long after the start, the next ones [`Retention::every`] apart:
/// a consumer that was stopped first reads what was delivered to it and not acknowledged.
const FIRST_PASS_AFTER: Duration = Duration::from_secs(60);

/// What one pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Published outbox rows.
    pub outbox: u64,
    /// Handled inbox rows.
    pub inbox: u64,
    /// Entries of the service's stream (none without Redis).
    pub stream: u64,
}

/// Removes one service's old events, every [`Retention::every`].
#[derive(Clone)]
pub struct Retention {
    pool: PgPool,
    source: String,
    bus: std::sync::Arc<dyn Bus>,
    keep: Duration,
    every: Duration,
}

impl std::fmt::Debug for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retention")
            .field("source", &self.source)
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl Retention {
    /// Keeps `source`'s events in `pool`'s schema (and its stream on `bus`) for `keep`.
    pub fn new(pool: PgPool, source: &str, bus: std::sync::Arc<dyn Bus>, keep: Duration) -> Self {
        Self {
            pool,
            source: source.to_owned(),
            bus,
            keep,
            // A tenth of the retention, between a minute and an hour: a pass removes what
            // came in that long, in batches.
            every: (keep / 10).clamp(Duration::from_secs(60), Duration::from_secs(3600)),
        }
    }

    /// How long events are kept.
    pub fn keep(&self) -> Duration {
        self.keep
    }

    /// Removes what is older than the retention: the outbox rows published before it, the
    /// inbox rows handled before it and a day, the stream entries before it that every
    /// consumer group has acknowledged. An outbox row not yet published, an inbox row not
    /// handled or dead-lettered, and a stream entry some group has not acknowledged stay,
    /// however old.
    pub async fn prune_once(&self) -> anyhow::Result<Pruned> {
        let now = Utc::now();
        let cut = now - chrono::Duration::from_std(self.keep)?;
        let inbox_cut = cut - chrono::Duration::from_std(INBOX_MARGIN)?;
        let mut pruned = Pruned::default();
        // The ids are UUIDv7: every event made before `cut` has an id below `id_before(cut)`,
        // so each statement walks the primary key from its start instead of the whole table.
        // The time columns decide; the id bound only narrows the walk.
        loop {
            let n = sqlx::query!(
                "DELETE FROM outbox WHERE id IN (
                     SELECT id FROM outbox WHERE id < $1 AND published_at < $2 ORDER BY id LIMIT $3)",
                id_before(cut),
                cut,
                BATCH,
            )
            .execute(&self.pool)
            .await?
            .rows_affected();
            pruned.outbox += n;
            if n < BATCH as u64 {
                break;
            }
            tokio::task::yield_now().await;
        }
        loop {
            let n = sqlx::query!(
                "DELETE FROM inbox WHERE event_id IN (
                     SELECT event_id FROM inbox WHERE event_id < $1 AND status = 'done' AND handled_at < $2
                     ORDER BY event_id LIMIT $3)",
                id_before(inbox_cut),
                inbox_cut,
                BATCH,
            )
            .execute(&self.pool)
            .await?
            .rows_affected();
            pruned.inbox += n;
            if n < BATCH as u64 {
                break;
            }
            tokio::task::yield_now().await;
        }
        pruned.stream = self.bus.trim(&self.source, cut).await?;
        if pruned != Pruned::default() {
            tracing::info!(source = %self.source, outbox = pruned.outbox, inbox = pruned.inbox, stream = pruned.stream, keep_hours = self.keep.as_secs() / 3600, "removed old events");
        }
        Ok(pruned)
    }

    /// Prunes every [`Retention::every`] until the task is aborted.
    pub async fn run(self) {
        tokio::time::sleep(FIRST_PASS_AFTER).await;
        let mut failures = 0u32;
        loop {
            match self.prune_once().await {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if crate::telemetry::worth_logging(failures) {
                        tracing::warn!(source = %self.source, failures, error = format!("{e:#}"), "cannot remove old events; trying again later");
                    }
                }
            }
            tokio::time::sleep(self.every).await;
        }
    }
}

/// The least UUIDv7 of the millisecond `at`: every id made before it is smaller.
fn id_before(at: chrono::DateTime<Utc>) -> uuid::Uuid {
    let ms = u128::try_from(at.timestamp_millis().max(0)).unwrap_or(0);
    uuid::Uuid::from_u128(ms << 80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_made_before_a_moment_sort_below_its_bound_and_later_ones_above() {
        let at = Utc::now();
        let bound = id_before(at);
        let earlier = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            (at.timestamp_millis() as u64 - 1) / 1000,
            (((at.timestamp_millis() - 1) % 1000) * 1_000_000) as u32,
        ));
        let later = uuid::Uuid::now_v7();
        assert!(earlier < bound, "{earlier} !< {bound}");
        assert!(later >= bound, "{later} !>= {bound}");
    }
}
