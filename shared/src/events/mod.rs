//! Events between services: a transactional outbox per service schema, a relay that
//! publishes it to a bus (Redis Streams, or in-process without Redis), and an inbox per
//! consuming service that handles each event id once, retries with backoff, and keeps the
//! events that keep failing on a dead-letter list an operator can read.
//!
//! Delivery is at least once from outbox to inbox (the relay may publish again after a
//! crash, Redis may redeliver); the inbox's primary key on the event id makes the effect
//! exactly once.

mod bus;
mod inbox;
mod ops;
mod relay;
mod retention;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

pub use bus::{Bus, InProcessBus, RedisBus};
pub use inbox::{Handler, Inbox, Prelock};
pub use ops::{DeadLetter, OpsState, ops_router, ops_routes};
pub(crate) use relay::backoff;
pub use relay::{Relay, committed};
pub use retention::{Pruned, Retention};

use crate::{
    contracts::events::{EventBody, EventType},
    ids::EventId,
};

/// An event as it travels: the envelope around the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Envelope {
    /// UUIDv7 of the event.
    #[schema(value_type = String, format = Uuid)]
    pub id: EventId,
    /// What happened, e.g. `order.paid`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The service that emitted it.
    pub source: String,
    /// Id of the aggregate it is about (a listing, an order...).
    pub aggregate_id: String,
    /// Version of the aggregate after the change.
    pub version: i64,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The event's own fields.
    pub data: serde_json::Value,
}

impl Envelope {
    /// The body, read as the contract type of its event.
    pub fn body<B: EventBody>(&self) -> anyhow::Result<B> {
        serde_json::from_value(self.data.clone()).map_err(|e| {
            anyhow::anyhow!(
                "{} {} has an unreadable body: {e}",
                self.event_type,
                self.id
            )
        })
    }
}

/// How consumers retry.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Attempts before an event goes to the dead-letter list.
    pub max_attempts: u32,
    /// First retry delay; doubles on each attempt, capped at five minutes.
    pub retry_base: std::time::Duration,
    /// How often idle workers look for work without being woken.
    pub poll: std::time::Duration,
    /// The least time between two passes of the relay that found events.
    pub pace: std::time::Duration,
    /// How long published and handled events are kept ([`Retention`]); `None`: for ever.
    pub keep: Option<std::time::Duration>,
}

impl Settings {
    /// From the process settings.
    pub fn from_config(c: &crate::config::Settings) -> Self {
        Self {
            max_attempts: c.events_max_attempts.max(1),
            retry_base: std::time::Duration::from_millis(c.events_retry_base_ms),
            poll: std::time::Duration::from_millis(c.events_poll_ms.max(10)),
            pace: std::time::Duration::from_millis(c.events_pace_ms),
            keep: (c.events_keep_hours > 0)
                .then(|| std::time::Duration::from_secs(c.events_keep_hours.saturating_mul(3600))),
        }
    }
}

/// Writes an event to the outbox of the schema `conn` is on. Call it inside the transaction
/// that makes the change, so the event exists exactly when the change does; the relay is
/// woken when that transaction commits.
pub async fn emit<B: EventBody>(
    conn: &mut PgConnection,
    event_type: EventType,
    aggregate_id: &str,
    version: i64,
    body: &B,
) -> anyhow::Result<EventId> {
    emit_named(conn, event_type.as_str(), aggregate_id, version, body).await
}

/// [`emit`] for an event type that is not one of the contracts' (the event machinery's own
/// tests use one).
pub async fn emit_named(
    conn: &mut PgConnection,
    event_type: &str,
    aggregate_id: &str,
    version: i64,
    data: &impl Serialize,
) -> anyhow::Result<EventId> {
    let id = EventId::new();
    // One statement, one round trip: the row, and the relay's wake-up (delivered to
    // listeners only when the transaction commits; a data-modifying WITH always runs).
    sqlx::query!(
        "WITH stored AS (INSERT INTO outbox (id, event_type, aggregate_id, version, payload) VALUES ($1, $2, $3, $4, $5))
         SELECT pg_notify('nongsan_outbox_' || current_schema(), '') AS notified",
        id.0,
        event_type,
        aggregate_id,
        version,
        serde_json::to_value(data)?,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

/// Outbox rows as the columns of one `INSERT INTO outbox (id, event_type, aggregate_id,
/// version, payload) SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int8[],
/// $5::jsonb[])`: what [`emit_all`] sends, and what a service's own statement sends when it
/// writes its change and its events in one round trip.
#[derive(Debug, Default)]
pub struct OutboxRows {
    /// Event ids.
    pub ids: Vec<uuid::Uuid>,
    /// Event types.
    pub types: Vec<String>,
    /// Aggregate ids.
    pub aggregates: Vec<String>,
    /// Versions of their aggregates.
    pub versions: Vec<i64>,
    /// Bodies.
    pub payloads: Vec<serde_json::Value>,
}

impl OutboxRows {
    /// The rows of `events`, in the order given. Each is `(type, aggregate, version, body)`.
    pub fn of<B: EventBody>(events: &[(EventType, String, i64, B)]) -> anyhow::Result<Self> {
        let mut rows = Self::default();
        for (event_type, aggregate, version, body) in events {
            rows.ids.push(EventId::new().0);
            rows.types.push(event_type.as_str().to_owned());
            rows.aggregates.push(aggregate.clone());
            rows.versions.push(*version);
            rows.payloads.push(serde_json::to_value(body)?);
        }
        Ok(rows)
    }
}

/// Several events of one kind of body in one statement, in the order given, with one wake-up
/// of the relay: what [`emit`] does for each, in one round trip. Each is `(type, aggregate,
/// version, body)`.
pub async fn emit_all<B: EventBody>(
    conn: &mut PgConnection,
    events: &[(EventType, String, i64, B)],
) -> anyhow::Result<Vec<EventId>> {
    let rows = OutboxRows::of(events)?;
    sqlx::query!(
        "WITH stored AS (INSERT INTO outbox (id, event_type, aggregate_id, version, payload)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::jsonb[]))
         SELECT pg_notify('nongsan_outbox_' || current_schema(), '') AS notified",
        &rows.ids,
        &rows.types,
        &rows.aggregates,
        &rows.versions,
        &rows.payloads,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(rows.ids.into_iter().map(EventId).collect())
}

/// Every service that emits events: the streams there are.
pub const SOURCES: [&str; 3] = ["listing", "order", "payment"];

/// Name of the Redis stream a service publishes to.
pub fn stream_name(prefix: &str, source: &str) -> String {
    format!("{prefix}:events:{source}")
}
