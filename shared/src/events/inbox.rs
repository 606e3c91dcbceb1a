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
}

/// A consuming service's inbox and its handlers.
pub struct Inbox {
    service: String,
    pool: PgPool,
    handlers: HashMap<String, Arc<dyn Handler>>,
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

    /// The consuming service's name (the Redis consumer group).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Stores an event if this service handles its type and has not seen its id; `true` when
    /// it was new.
    pub async fn ingest(&self, event: &Envelope) -> anyhow::Result<bool> {
        if !self.handlers.contains_key(&event.event_type) {
            return Ok(false);
        }
        let inserted = sqlx::query!(
            "INSERT INTO inbox (event_id, event_type, source, event) VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING",
            event.id.0,
            &event.event_type,
            &event.source,
            serde_json::to_value(event)?,
        )
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            self.wake.notify_one();
        } else {
            metrics::counter!("events_duplicates_total", "consumer" => self.service.clone())
                .increment(1);
        }
        Ok(inserted)
    }

    /// Handles one due event, if there is one; `true` when it did.
    pub async fn work_once(&self) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query!(
            r#"SELECT event_id AS "event_id: EventId", event, attempts FROM inbox WHERE status = 'pending' AND next_attempt_at <= now()
             ORDER BY event_id LIMIT 1 FOR UPDATE SKIP LOCKED"#,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let (id, raw, attempts) = (row.event_id, row.event, row.attempts);
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
            Ok(()) => {
                sqlx::query!(
                    "UPDATE inbox SET status = 'done', attempts = attempts + 1, handled_at = now(), last_error = NULL WHERE event_id = $1",
                    id.0,
                )
                .execute(&mut *tx)
                .await?;
                metrics::counter!("events_handled_total", "consumer" => self.service.clone())
                    .increment(1);
            }
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
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Handles events until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let mut failures = 0u32;
        loop {
            match self.work_once().await {
                Ok(true) => {
                    failures = 0;
                    continue;
                }
                Ok(false) => failures = 0,
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
