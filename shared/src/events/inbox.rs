//! The inbox of a consuming service: each event id is stored once and handled once, in the
//! same transaction as the handler's own writes.

use std::{collections::HashMap, sync::Arc, time::Duration};

use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;

use super::{Envelope, Settings};
use crate::ids::EventId;

/// Handles one type of event. It runs inside the transaction that marks the event handled:
/// if it fails, its writes are undone and the event is retried later.
#[async_trait::async_trait]
pub trait Handler: Send + Sync {
    /// Applies the event.
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> anyhow::Result<()>;

    /// Whether this service has anything to do with the event (by default, every event of
    /// the handler's type). One it does not want is neither stored nor handled, as an event
    /// of a type without a handler; one stored before it was refused is still handled.
    fn wants(&self, _event: &Envelope) -> bool {
        true
    }

    /// Applies several events of its type, in the order given: by default one by one. A
    /// handler that writes many events' rows in one statement overrides it. A failure undoes
    /// the whole batch, which is then handled again one event at a time with [`handle`].
    ///
    /// [`handle`]: Handler::handle
    async fn handle_many(&self, tx: &mut PgConnection, events: &[Envelope]) -> anyhow::Result<()> {
        for event in events {
            self.handle(tx, event).await?;
        }
        Ok(())
    }
}

/// Takes, first in each transaction that handles a batch of events, the row locks the
/// batch's handlers will take, in one order. Handlers taking them event after event could
/// hold a later row while another writer, taking the same rows in order, holds an earlier
/// one and waits for it: a deadlock, which PostgreSQL ends by failing one of the two.
#[async_trait::async_trait]
pub trait Prelock: Send + Sync {
    /// Locks what `events` will touch. An event it cannot read is left to its handler.
    async fn lock(&self, tx: &mut PgConnection, events: &[Envelope]) -> anyhow::Result<()>;
}

/// A consuming service's inbox and its handlers.
pub struct Inbox {
    service: String,
    pool: PgPool,
    handlers: HashMap<String, Arc<dyn Handler>>,
    prelock: Option<Box<dyn Prelock>>,
    settings: Settings,
    wake: Notify,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("service", &self.service)
            .field("handles", &self.handlers.keys())
            .finish()
    }
}

impl Inbox {
    /// An inbox in `pool`'s schema for `service`.
    pub fn new(service: &str, pool: PgPool, settings: Settings) -> Self {
        Self {
            service: service.to_owned(),
            pool,
            handlers: HashMap::new(),
            prelock: None,
            settings,
            wake: Notify::new(),
        }
    }

    /// Handles events of `event_type` with `handler`.
    pub fn on(
        self,
        event_type: crate::contracts::events::EventType,
        handler: impl Handler + 'static,
    ) -> Self {
        self.on_named(event_type.as_str(), handler)
    }

    /// [`Inbox::on`] for an event type that is not one of the contracts' (the event
    /// machinery's own tests use one).
    pub fn on_named(mut self, event_type: &str, handler: impl Handler + 'static) -> Self {
        self.handlers
            .insert(event_type.to_owned(), Arc::new(handler));
        self
    }

    /// Takes `prelock`'s locks first in each transaction that handles a batch.
    pub fn prelocking(mut self, prelock: impl Prelock + 'static) -> Self {
        self.prelock = Some(Box::new(prelock));
        self
    }

    /// The consuming service's name (the Redis consumer group).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Takes in the events this service handles and has not seen; answers how many were new.
    ///
    /// When no event of this inbox is pending (whatever its source, due now or waiting for a
    /// retry), the new ones are handled on receipt: stored as done and handled in one
    /// transaction, which saves the worker's transaction, its row locks and the update that
    /// marks each event done. When one is pending, the same statement stores them as pending
    /// for the worker; when a handler fails, the transaction is undone whole and they are
    /// stored as pending then. The worker takes the due ones in event order, in savepoints,
    /// and records failures. So an event pending for a retry is never passed on receipt; the
    /// worker itself lets a due event pass one that waits for its retry.
    ///
    /// Handlers run where events arrive: in one process, inside the relay's publishing
    /// (which waits for every subscriber's handlers, holding its outbox rows meanwhile), and
    /// with Redis, in each stream's consumer; so handlers of events from different sources
    /// can run at the same time.
    pub async fn ingest_many(&self, events: &[Envelope]) -> anyhow::Result<u64> {
        let wanted: Vec<&Envelope> = events
            .iter()
            .filter(|e| self.handlers.get(&e.event_type).is_some_and(|h| h.wants(e)))
            .collect();
        if wanted.is_empty() {
            return Ok(0);
        }
        let rows = Rows::of(&wanted)?;
        let inserted = match self.handle_on_receipt(&wanted, &rows).await {
            Ok(inserted) => inserted,
            Err(e) => {
                tracing::debug!(consumer = %self.service, events = wanted.len(), error = format!("{e:#}"), "events not handled on receipt; storing them for the worker");
                let inserted = sqlx::query!(
                    "INSERT INTO inbox (event_id, event_type, source, event)
                     SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[]) ON CONFLICT (event_id) DO NOTHING",
                    &rows.ids,
                    &rows.types,
                    &rows.sources,
                    &rows.bodies,
                )
                .execute(&self.pool)
                .await?
                .rows_affected();
                if inserted > 0 {
                    self.wake.notify_one();
                }
                inserted
            }
        };
        let duplicates = (wanted.len() as u64).saturating_sub(inserted);
        if duplicates > 0 {
            metrics::counter!("events_duplicates_total", "consumer" => self.service.clone())
                .increment(duplicates);
        }
        Ok(inserted)
    }

    /// Stores `wanted` and answers how many were new: as done, handled in the same
    /// transaction, when no event of this inbox is pending; otherwise as pending, for the
    /// worker (woken). An error (a failing handler) leaves nothing written.
    async fn handle_on_receipt(&self, wanted: &[&Envelope], rows: &Rows) -> anyhow::Result<u64> {
        let mut tx = self.pool.begin().await?;
        // One statement: whether anything waits, and the rows stored accordingly. The
        // statement's snapshot sees a waiting event that the worker holds (its status is still
        // pending). The check asks for the first waiting event in the order of the partial
        // index of waiting events (`inbox_pending`, by event id): it reads one entry of that
        // index, where a plan reading the table would have to read all of it before its first
        // row; so no plan reads a large inbox whole, even when its statistics say that half
        // of it waits. (An `EXISTS` would not do: PostgreSQL drops the order from it, and with
        // such statistics it read 500,000 rows to find none waiting.)
        let stored = sqlx::query!(
            r#"WITH waiting AS (SELECT (SELECT event_id FROM inbox WHERE status = 'pending' ORDER BY event_id LIMIT 1) IS NOT NULL AS yes),
                    stored AS (
                        INSERT INTO inbox (event_id, event_type, source, event, status, attempts, handled_at)
                        SELECT e.*, CASE WHEN w.yes THEN 'pending' ELSE 'done' END, CASE WHEN w.yes THEN 0 ELSE 1 END,
                               CASE WHEN w.yes THEN NULL ELSE now() END
                        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[]) AS e, waiting w
                        ON CONFLICT (event_id) DO NOTHING
                        RETURNING event_id)
               SELECT (SELECT yes FROM waiting) AS "waiting!", array(SELECT event_id FROM stored) AS "stored!""#,
            &rows.ids,
            &rows.types,
            &rows.sources,
            &rows.bodies,
        )
        .fetch_one(&mut *tx)
        .await?;
        let mut new: std::collections::HashSet<uuid::Uuid> = stored.stored.into_iter().collect();
        let inserted = new.len() as u64;
        if stored.waiting {
            tx.commit().await?;
            if inserted > 0 {
                self.wake.notify_one();
            }
            return Ok(inserted);
        }
        // In the order received; an event given twice is handled once.
        let fresh: Vec<Envelope> = wanted
            .iter()
            .filter(|e| new.remove(&e.id.0))
            .map(|e| (*e).clone())
            .collect();
        self.handle_runs(&mut tx, &fresh).await?;
        tx.commit().await?;
        metrics::counter!("events_handled_total", "consumer" => self.service.clone())
            .increment(inserted);
        Ok(inserted)
    }

    /// Hands each run of events of one type to its handler together
    /// ([`Handler::handle_many`]), in the order given, after the batch's locks
    /// ([`Prelock`]).
    async fn handle_runs(
        &self,
        tx: &mut sqlx::PgConnection,
        events: &[Envelope],
    ) -> anyhow::Result<()> {
        self.lock_first(tx, events).await?;
        for run in events.chunk_by(|a, b| a.event_type == b.event_type) {
            let handler = self
                .handlers
                .get(&run[0].event_type)
                .ok_or_else(|| anyhow::anyhow!("no handler for {}", run[0].event_type))?;
            handler
                .handle_many(&mut *tx, run)
                .await
                .map_err(|e| e.context(format!("handling {} {}", run[0].event_type, run[0].id)))?;
        }
        Ok(())
    }

    /// The batch's locks ([`Prelock`]), when the inbox takes any.
    async fn lock_first(
        &self,
        tx: &mut sqlx::PgConnection,
        events: &[Envelope],
    ) -> anyhow::Result<()> {
        match &self.prelock {
            Some(prelock) if !events.is_empty() => prelock
                .lock(tx, events)
                .await
                .map_err(|e| e.context("taking the batch's locks")),
            _ => Ok(()),
        }
    }

    /// Handles the due events, up to `limit` of them, oldest first, in one transaction;
    /// answers how many it took.
    ///
    /// The batch is first handled whole, with no savepoint: when every handler succeeds (the
    /// common case) that costs two round trips fewer per event. When one fails, all of it is
    /// undone and the batch is handled again with a savepoint per event: a failing handler's
    /// writes are undone and its event tried again later, the others' are kept.
    pub async fn work_batch(&self, limit: i64) -> anyhow::Result<usize> {
        match self.work_whole(limit).await? {
            Some(taken) => Ok(taken),
            None => self.work_each(limit).await,
        }
    }

    /// Due events, up to `limit`, oldest first, locked for `tx`.
    async fn due(
        tx: &mut sqlx::PgConnection,
        limit: i64,
    ) -> sqlx::Result<Vec<(EventId, serde_json::Value, i32)>> {
        Ok(sqlx::query!(
            r#"SELECT event_id AS "event_id: EventId", event, attempts FROM inbox WHERE status = 'pending' AND next_attempt_at <= now()
             ORDER BY event_id LIMIT $1 FOR UPDATE SKIP LOCKED"#,
            limit,
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.event_id, r.event, r.attempts))
        .collect())
    }

    /// Marks `done` handled in `tx`.
    async fn mark_done(
        &self,
        tx: &mut sqlx::PgConnection,
        done: &[uuid::Uuid],
    ) -> sqlx::Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        // Planned at each call, as the relay's marking: a plan kept from when the inbox was
        // nearly empty would scan all of it.
        sqlx::query!(
            "UPDATE inbox SET status = 'done', attempts = attempts + 1, handled_at = now(), last_error = NULL WHERE event_id = ANY($1)",
            done,
        )
        .persistent(false)
        .execute(&mut *tx)
        .await?;
        metrics::counter!("events_handled_total", "consumer" => self.service.clone())
            .increment(done.len() as u64);
        Ok(())
    }

    /// The batch in one transaction with no savepoint; `None` (and nothing written) when an
    /// event cannot be read, has no handler, or its handler fails. Each run of events of one
    /// type goes to its handler together ([`Handler::handle_many`]), in the batch's order.
    async fn work_whole(&self, limit: i64) -> anyhow::Result<Option<usize>> {
        let mut tx = self.pool.begin().await?;
        let rows = Self::due(&mut tx, limit).await?;
        let taken = rows.len();
        let mut events: Vec<Envelope> = Vec::with_capacity(taken);
        let mut done: Vec<uuid::Uuid> = Vec::with_capacity(taken);
        for (id, raw, _) in rows {
            let failure = match serde_json::from_value::<Envelope>(raw) {
                Ok(event) if self.handlers.contains_key(&event.event_type) => {
                    events.push(event);
                    done.push(id.0);
                    continue;
                }
                Ok(event) => anyhow::anyhow!("no handler for {}", event.event_type),
                Err(e) => anyhow::Error::from(e).context("unreadable event"),
            };
            tracing::debug!(consumer = %self.service, event.id = %id, error = format!("{failure:#}"), "an event of a whole batch cannot be handled; handling the batch event by event");
            tx.rollback().await?;
            return Ok(None);
        }
        if let Err(e) = self.handle_runs(&mut tx, &events).await {
            // The transaction may be aborted by the failure: all of it is undone, and the
            // batch handled one savepoint per event, where a failure that happens again is
            // recorded with the event (its attempts, its error, its next try).
            tracing::debug!(consumer = %self.service, events = events.len(), error = format!("{e:#}"), "a handler failed in a whole batch; handling the batch event by event");
            tx.rollback().await?;
            return Ok(None);
        }
        self.mark_done(&mut tx, &done).await?;
        tx.commit().await?;
        Ok(Some(taken))
    }

    /// The batch in one transaction, each event in a savepoint of its own.
    async fn work_each(&self, limit: i64) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        let rows = Self::due(&mut tx, limit).await?;
        let taken = rows.len();
        if self.prelock.is_some() {
            let readable: Vec<Envelope> = rows
                .iter()
                .filter_map(|(_, raw, _)| serde_json::from_value(raw.clone()).ok())
                .collect();
            // In a savepoint: when the locks cannot be taken, the events are still handled
            // one by one, each failure recorded with its event, rather than the batch failing
            // again and again with none of them recorded.
            let mut sp = sqlx::Connection::begin(&mut *tx).await?;
            match self.lock_first(&mut sp, &readable).await {
                Ok(()) => sp.commit().await?,
                Err(e) => {
                    sp.rollback().await?;
                    tracing::warn!(consumer = %self.service, error = format!("{e:#}"), "the batch's locks could not be taken first; handling its events one by one without them");
                }
            }
        }
        let mut done: Vec<uuid::Uuid> = Vec::with_capacity(taken);
        for (id, raw, attempts) in rows {
            if self.work_on(&mut tx, id, raw, attempts).await? {
                done.push(id.0);
            }
        }
        self.mark_done(&mut tx, &done).await?;
        tx.commit().await?;
        Ok(taken)
    }

    /// Handles one event in `tx`; `true` when it succeeded (the caller marks it done), else
    /// the failure is recorded here.
    async fn work_on(
        &self,
        tx: &mut sqlx::PgConnection,
        id: EventId,
        raw: serde_json::Value,
        attempts: i32,
    ) -> anyhow::Result<bool> {
        let outcome = match serde_json::from_value::<Envelope>(raw) {
            Err(e) => Err(anyhow::Error::from(e).context("unreadable event")),
            Ok(event) => match self.handlers.get(&event.event_type) {
                None => Err(anyhow::anyhow!("no handler for {}", event.event_type)),
                Some(h) => {
                    // A savepoint: a failing handler's writes are undone, the attempt is kept.
                    let mut sp = sqlx::Connection::begin(&mut *tx).await?;
                    match h.handle(&mut sp, &event).await {
                        Ok(()) => sp.commit().await.map_err(anyhow::Error::from),
                        Err(e) => {
                            sp.rollback().await?;
                            Err(e)
                        }
                    }
                }
            },
        };
        match outcome {
            Ok(()) => Ok(true),
            Err(e) => {
                let attempts = u32::try_from(attempts).unwrap_or(0) + 1;
                let dead = attempts >= self.settings.max_attempts;
                let delay = retry_delay(self.settings.retry_base, attempts);
                sqlx::query!(
                    "UPDATE inbox SET attempts = $2, last_error = $3, status = CASE WHEN $4 THEN 'dead' ELSE 'pending' END,
                     next_attempt_at = now() + make_interval(secs => $5) WHERE event_id = $1",
                    id.0,
                    i32::try_from(attempts).unwrap_or(i32::MAX),
                    format!("{e:#}"),
                    dead,
                    delay.as_secs_f64(),
                )
                .execute(&mut *tx)
                .await?;
                if dead {
                    tracing::error!(consumer = %self.service, event.id = %id, attempts, error = format!("{e:#}"), "event moved to the dead-letter list");
                    metrics::counter!("events_dead_lettered_total", "consumer" => self.service.clone()).increment(1);
                } else {
                    tracing::warn!(consumer = %self.service, event.id = %id, attempts, retry_in_ms = delay.as_millis() as u64, error = format!("{e:#}"), "event handler failed; will retry");
                }
                Ok(false)
            }
        }
    }

    /// Handles events until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let mut failures = 0u32;
        loop {
            match self.work_batch(BATCH).await {
                Ok(n) if n > 0 => {
                    failures = 0;
                    continue;
                }
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if crate::telemetry::worth_logging(failures) {
                        tracing::warn!(consumer = %self.service, error = format!("{e:#}"), "inbox worker cannot reach the database; retrying");
                    }
                }
            }
            let _ = tokio::time::timeout(self.settings.poll, self.wake.notified()).await;
        }
    }
}

/// The columns of events to store, one array each.
struct Rows {
    ids: Vec<uuid::Uuid>,
    types: Vec<String>,
    sources: Vec<String>,
    bodies: Vec<serde_json::Value>,
}

impl Rows {
    fn of(events: &[&Envelope]) -> serde_json::Result<Self> {
        Ok(Self {
            ids: events.iter().map(|e| e.id.0).collect(),
            types: events.iter().map(|e| e.event_type.clone()).collect(),
            sources: events.iter().map(|e| e.source.clone()).collect(),
            bodies: events
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Events one transaction handles at most.
const BATCH: i64 = 100;

/// `base × 2^(attempts-1)`, at most five minutes.
fn retry_delay(base: Duration, attempts: u32) -> Duration {
    base.saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_and_are_capped() {
        let base = Duration::from_millis(500);
        assert_eq!(retry_delay(base, 1), Duration::from_millis(500));
        assert_eq!(retry_delay(base, 2), Duration::from_secs(1));
        assert_eq!(retry_delay(base, 4), Duration::from_secs(4));
        assert_eq!(retry_delay(base, 40), Duration::from_secs(300));
    }
}
