//! Keeping a service's event tables and its stream to a size: the outbox rows published,
//! the inbox rows handled, and the stream entries every consumer group has acknowledged are
//! removed once older than the retention (`NONGSAN_EVENTS_KEEP_HOURS`).
//!
//! Without it they grow with every write for ever: after 1,000,000 listings were loaded the
//! listing outbox held 2,000,000 rows and its inbox 956,000 (BENCHMARKS.md, 2026-12-05),
//! and with Redis every event also stays in the stream's memory.
//!
//! Exactly-once handling rests on the inbox remembering an event id for as long as the event
//! can come again. It can come again from the stream (a redelivery of what a consumer did not
//! acknowledge, or a consumer group made again, which reads the stream from its start), and
//! from a relay that published it and stopped before marking it published.
//! - A stream entry goes only when every group has acknowledged it and it is older than the
//!   retention.
//! - A handled inbox row goes only when it was handled a day longer ago than the retention,
//!   and a day before the oldest entry still in each stream its service reads: an event is
//!   put in the stream before it is handled, so its entry is gone (the day allows for the
//!   clocks of Redis and PostgreSQL to differ).
//! - Left: a relay that published an event, stopped before marking it, and stayed stopped for
//!   longer than that day publishes it again as a new entry; if the consumer's pass came in
//!   between, the event is handled again.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;

use super::Bus;

/// Rows deleted per statement: each is its own short transaction.
const BATCH: i64 = 5_000;
/// How much longer than the retention a handled inbox row is kept (module doc).
const INBOX_MARGIN: Duration = Duration::from_secs(24 * 3600);
/// The first pass comes this long after the start (not in the middle of it), the next ones
/// [`Retention::every`] apart.
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
    /// The producing services whose streams this service's inbox reads.
    reads: Vec<String>,
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
            reads: Vec::new(),
        }
    }

    /// This service's inbox reads the streams of `sources`: its handled events are kept as
    /// long as those streams may still hold them.
    #[must_use]
    pub fn reading(mut self, sources: &[&str]) -> Self {
        self.reads = sources.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Removes what is older than the retention: the outbox rows published before it, the
    /// inbox rows handled before it and a day (and a day before the oldest entry of each
    /// stream the inbox reads), the stream entries before it that every consumer group has
    /// acknowledged. An outbox row not yet published, an inbox row not
    /// handled or dead-lettered, and a stream entry some group has not acknowledged stay,
    /// however old.
    pub async fn prune_once(&self) -> anyhow::Result<Pruned> {
        let margin = chrono::Duration::from_std(INBOX_MARGIN)?;
        let Some(cut) = chrono::Duration::from_std(self.keep)
            .ok()
            .and_then(|keep| Utc::now().checked_sub_signed(keep))
        else {
            // A retention longer than the calendar: nothing is old enough.
            return Ok(Pruned::default());
        };
        let Some(mut inbox_cut) = cut.checked_sub_signed(margin) else {
            return Ok(Pruned::default());
        };
        let pool = &self.pool;
        let outbox = in_batches(|after| async move {
            let gone = sqlx::query!(
                r#"WITH gone AS (
                     DELETE FROM outbox WHERE id IN (
                         SELECT id FROM outbox WHERE id > $1 AND id < $2 AND published_at < $3
                         ORDER BY id LIMIT $4)
                     RETURNING id)
                 SELECT count(*) AS "n!", (array_agg(id ORDER BY id DESC))[1] AS last FROM gone"#,
                after,
                id_before(cut),
                cut,
                BATCH,
            )
            .fetch_one(pool)
            .await?;
            Ok((gone.n, gone.last))
        })
        .await?;
        // The outbox needs nothing of the bus: pruned first, whatever happens to what follows.
        for source in &self.reads {
            let Some(oldest) = self.bus.oldest_kept(source).await? else {
                continue;
            };
            if oldest < inbox_cut {
                // Kept by a consumer group that has not acknowledged it: one whose service
                // is stopped, or was removed and left its group behind.
                tracing::warn!(consumer = %self.source, stream = %source, oldest = %oldest, "a stream still holds an event older than the retention; the events handled since are kept until it goes");
            }
            inbox_cut = inbox_cut.min(oldest - margin);
        }
        let inbox = in_batches(|after| async move {
            let gone = sqlx::query!(
                r#"WITH gone AS (
                     DELETE FROM inbox WHERE event_id IN (
                         SELECT event_id FROM inbox
                         WHERE event_id > $1 AND event_id < $2 AND status = 'done' AND handled_at < $3
                         ORDER BY event_id LIMIT $4)
                     RETURNING event_id)
                 SELECT count(*) AS "n!", (array_agg(event_id ORDER BY event_id DESC))[1] AS last FROM gone"#,
                after,
                id_before(inbox_cut),
                inbox_cut,
                BATCH,
            )
            .fetch_one(pool)
            .await?;
            Ok((gone.n, gone.last))
        })
        .await?;
        let mut pruned = Pruned {
            outbox,
            inbox,
            stream: 0,
        };
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

/// Runs `delete` until it deletes fewer than [`BATCH`] rows; answers how many went. Each call
/// is given the greatest id the one before deleted (the nil id at first) and answers how many
/// it deleted and the greatest id among them.
///
/// The ids are UUIDv7: every event made before a moment has an id below `id_before(moment)`,
/// so each statement walks the primary key from where the one before stopped, not the whole
/// table, nor again the rows it just deleted (dead until a vacuum). The time columns decide
/// what goes; the ids only bound the walk.
async fn in_batches<F, Fut>(mut delete: F) -> anyhow::Result<u64>
where
    F: FnMut(uuid::Uuid) -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<(i64, Option<uuid::Uuid>)>>,
{
    let (mut deleted, mut after) = (0u64, uuid::Uuid::nil());
    loop {
        let (n, last) = delete(after).await?;
        deleted += u64::try_from(n).unwrap_or(0);
        match last {
            Some(last) if n >= BATCH => after = last,
            _ => return Ok(deleted),
        }
        tokio::task::yield_now().await;
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
