//! The outbox relay: publishes unpublished outbox rows in id order, then marks them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use sqlx::PgPool;
use tokio::sync::Notify;

use super::{Bus, Envelope};
use crate::{db::Notifications, failpoint, ids::EventId};

/// Events published at once.
const BATCH: i64 = 100;
/// [`BATCH`] as a count.
const BATCH_LEN: usize = 100;

/// This process's wake-up of its relay for `source`, made on first use.
fn wake_of(source: &str) -> Arc<Notify> {
    static WAKES: OnceLock<Mutex<HashMap<String, Arc<Notify>>>> = OnceLock::new();
    let mut wakes = WAKES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    wakes.entry(source.to_owned()).or_default().clone()
}

/// Wakes this process's relay of `source`'s outbox: for a writer whose transaction wrote
/// outbox rows without `NOTIFY`, to be called right after it commits.
///
/// A `NOTIFY` costs every transaction that sends one a turn on a lock that PostgreSQL holds
/// from before the commit until the commit is flushed, so the notifying commits of the whole
/// cluster go one at a time. The hottest writers (a reservation, a checkout) leave it out
/// and wake their own process's relay instead; the relay of another process of the same
/// service finds their events at its next poll.
pub fn committed(source: &str) {
    wake_of(source).notify_one();
}

/// Publishes one service's outbox.
#[derive(Clone)]
pub struct Relay {
    pool: PgPool,
    source: String,
    bus: Arc<dyn Bus>,
    poll: Duration,
    pace: Duration,
    /// `relay.before_publish.<source>`: a test keeps a source's events from its consumers
    /// (a stand-in for a relay that is down or far behind).
    held_back: String,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay for the outbox in `pool`'s schema, published as `source`.
    pub fn new(pool: PgPool, source: &str, bus: Arc<dyn Bus>, poll: Duration) -> Self {
        Self {
            pool,
            source: source.to_owned(),
            bus,
            poll,
            pace: Duration::ZERO,
            held_back: format!("relay.before_publish.{source}"),
        }
    }

    /// Passes that found events at least `pace` apart while events keep coming (none by
    /// default): each pass then takes what many commits wrote, at the cost of up to `pace`
    /// more delay for an event written during the pause.
    #[must_use]
    pub fn with_pace(mut self, pace: Duration) -> Self {
        self.pace = pace;
        self
    }

    /// Publishes up to 100 unpublished events and marks them published. If it stops between
    /// the two (crash, error), the events are published again later: consumers de-duplicate.
    pub async fn relay_once(&self) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query!(
            r#"SELECT id AS "id: EventId", event_type, aggregate_id, version, payload, occurred_at FROM outbox
             WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"#,
            BATCH,
        )
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let events: Vec<Envelope> = rows
            .into_iter()
            .map(|r| Envelope {
                id: r.id,
                event_type: r.event_type,
                source: self.source.clone(),
                aggregate_id: r.aggregate_id,
                version: r.version,
                occurred_at: r.occurred_at,
                data: r.payload,
            })
            .collect();
        failpoint::hit(&self.held_back)?;
        self.bus.publish(&self.source, &events).await?;
        failpoint::hit("relay.after_publish")?;
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id.0).collect();
        // Planned at each call (an unnamed statement), not once per connection: a relay's
        // connection lives long, and a plan kept from when the outbox was nearly empty is a
        // sequential scan. Under checkout load that kept plan read the whole growing outbox
        // for every batch (auto_explain: 697 of the 700 markings slower than 2 ms were
        // sequential scans; BENCHMARKS.md, 2026-12-05).
        sqlx::query!(
            "UPDATE outbox SET published_at = now() WHERE id = ANY($1)",
            &ids[..],
        )
        .persistent(false)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        metrics::counter!("events_published_total", "source" => self.source.clone())
            .increment(events.len() as u64);
        Ok(events.len())
    }

    /// Runs until the task is aborted: woken by each commit that wrote to the outbox
    /// (LISTEN/NOTIFY, read as they come by [`Notifications`], or [`committed`] in this
    /// process), and every poll interval in case a notification was missed.
    pub async fn run(self) {
        let notifications =
            Notifications::listen(&self.pool, &format!("nongsan_outbox_{}", self.source));
        let wake = wake_of(&self.source);
        let mut failures = 0u32;
        loop {
            match self.relay_once().await {
                Ok(n) => {
                    if failures > 0 {
                        tracing::info!(source = %self.source, "event relay recovered");
                    }
                    failures = 0;
                    // A full batch may have left more behind; a partial one took all there
                    // was, and anything committed since has notified.
                    if n >= BATCH_LEN {
                        continue;
                    }
                    // The wake-ups of the pause are kept: the next pass starts after it.
                    if n > 0 && !self.pace.is_zero() {
                        tokio::time::sleep(self.pace).await;
                    }
                }
                Err(e) => {
                    failures += 1;
                    if crate::telemetry::worth_logging(failures) {
                        tracing::warn!(source = %self.source, failures, error = format!("{e:#}"), "event relay cannot publish; retrying");
                    }
                    tokio::time::sleep(backoff(failures)).await;
                    continue;
                }
            }
            // A notification (commits notify one by one and come in bursts: those heard
            // meanwhile wake one pass), a commit of this process, or the poll interval.
            tokio::select! {
                () = notifications.next() => {}
                () = wake.notified() => {}
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }
}

/// 100 ms doubling to at most 5 s.
pub(crate) fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(6)).min(5_000))
}
