//! Event transports: Redis Streams with consumer groups, or in-process delivery.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use redis::{
    AsyncCommands,
    aio::{ConnectionManager, ConnectionManagerConfig},
    streams::{
        StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamInfoGroupsReply,
        StreamPendingReply, StreamReadOptions, StreamReadReply, StreamTrimOptions,
        StreamTrimmingMode,
    },
};
use tokio::sync::RwLock;

use super::{Envelope, Inbox, relay::backoff, stream_name};
use crate::http::Mode;

/// Carries events from a relay to the inboxes of the services that subscribe to them.
#[async_trait::async_trait]
pub trait Bus: Send + Sync {
    /// Publishes events of `source`, at least once, in order. `Ok` means they are durable in
    /// the transport (or already in every subscriber's inbox).
    async fn publish(&self, source: &str, events: &[Envelope]) -> anyhow::Result<()>;
    /// Subscribes an inbox to the events of `source`; returns the task that feeds it, if any.
    async fn subscribe(
        &self,
        source: &str,
        inbox: Arc<Inbox>,
    ) -> Option<tokio::task::JoinHandle<()>>;
    /// How it runs.
    fn mode(&self) -> Mode;
    /// Whether the transport answers now.
    async fn ping(&self) -> anyhow::Result<()>;
    /// Removes what the transport still holds of `source`'s events made before `before` and
    /// acknowledged by every consumer group; answers how many went. Without a stream, none.
    async fn trim(&self, _source: &str, _before: DateTime<Utc>) -> anyhow::Result<u64> {
        Ok(0)
    }
    /// When the oldest event the transport still holds of `source` was put in it: none
    /// older can be delivered again. `None`: it holds none.
    async fn oldest_kept(&self, _source: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        Ok(None)
    }
    /// Removes `group`'s place in `source`'s events, for a service that no longer reads them:
    /// a consumer group nobody reads would keep its stream from being trimmed for ever.
    /// Answers whether there was one. Without a stream, there is none.
    async fn leave(&self, _source: &str, _group: &str) -> anyhow::Result<bool> {
        Ok(false)
    }
}

/// Delivery inside one process (`nongsan up` without Redis): publishing writes straight into
/// every subscribed inbox, so an event is durable in the consumer's table before the relay
/// marks it published.
#[derive(Default)]
pub struct InProcessBus {
    subscribers: RwLock<HashMap<String, Vec<Arc<Inbox>>>>,
}

impl std::fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InProcessBus")
    }
}

#[async_trait::async_trait]
impl Bus for InProcessBus {
    async fn publish(&self, source: &str, events: &[Envelope]) -> anyhow::Result<()> {
        let subs = self
            .subscribers
            .read()
            .await
            .get(source)
            .cloned()
            .unwrap_or_default();
        for inbox in subs {
            inbox.ingest_many(events).await?;
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        source: &str,
        inbox: Arc<Inbox>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.subscribers
            .write()
            .await
            .entry(source.to_owned())
            .or_default()
            .push(inbox);
        None
    }

    fn mode(&self) -> Mode {
        Mode::InProcess
    }

    async fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Redis Streams: one stream per producing service, one consumer group per consuming
/// service. A message is acknowledged only after it is committed to the inbox.
#[derive(Clone)]
pub struct RedisBus {
    client: redis::Client,
    publisher: ConnectionManager,
    consumer_name: String,
    prefix: String,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("consumer", &self.consumer_name)
            .finish_non_exhaustive()
    }
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(3))
        .set_response_timeout(Duration::from_secs(10))
        .set_number_of_retries(2)
        .set_max_delay(1_000)
}

/// How long a blocking read waits for new messages.
const BLOCK_MS: usize = 2_000;
/// A message pending this long with a consumer that is gone is claimed by another.
const CLAIM_IDLE_MS: usize = 30_000;

impl RedisBus {
    /// Connects to Redis; streams are named `<prefix>:events:<service>`. The error names the
    /// server, not its password.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("REDIS_URL is not a valid Redis URL")?;
        let addr = client.get_connection_info().addr.to_string();
        let publisher = client
            .get_connection_manager_with_config(manager_config())
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach Redis at {addr}: {e}"))?;
        let consumer_name = format!("{}-{}", hostname(), std::process::id());
        Ok(Self {
            client,
            publisher,
            consumer_name,
            prefix: prefix.to_owned(),
        })
    }

    /// The connection, for the cache and rate limits.
    pub fn connection(&self) -> ConnectionManager {
        self.publisher.clone()
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "nongsan".to_owned())
}

#[async_trait::async_trait]
impl Bus for RedisBus {
    async fn publish(&self, source: &str, events: &[Envelope]) -> anyhow::Result<()> {
        let stream = stream_name(&self.prefix, source);
        let mut pipe = redis::pipe();
        for e in events {
            pipe.xadd(&stream, "*", &[("event", serde_json::to_string(e)?)])
                .ignore();
        }
        let mut con = self.publisher.clone();
        let () = pipe
            .query_async(&mut con)
            .await
            .context("publishing to Redis")?;
        Ok(())
    }

    async fn subscribe(
        &self,
        source: &str,
        inbox: Arc<Inbox>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let consumer = StreamConsumer {
            client: self.client.clone(),
            stream: stream_name(&self.prefix, source),
            group: inbox.service().to_owned(),
            name: self.consumer_name.clone(),
            inbox,
        };
        Some(tokio::spawn(consumer.run()))
    }

    fn mode(&self) -> Mode {
        Mode::External
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let mut con = self.publisher.clone();
        let _: String = redis::cmd("PING").query_async(&mut con).await?;
        Ok(())
    }

    /// Trims the stream below the oldest entry that some group has not acknowledged (its
    /// oldest pending entry, or past its last delivered one), and below `before`. A group
    /// that does not exist yet (its service never ran) is not waited for: made later, it
    /// reads the stream from what is left.
    async fn trim(&self, source: &str, before: DateTime<Utc>) -> anyhow::Result<u64> {
        let stream = stream_name(&self.prefix, source);
        let mut con = self.publisher.clone();
        let exists: bool = con.exists(&stream).await?;
        if !exists {
            return Ok(0);
        }
        let mut floor = (u64::try_from(before.timestamp_millis()).unwrap_or(0), 0);
        let groups: StreamInfoGroupsReply = con
            .xinfo_groups(&stream)
            .await
            .context("reading the stream's consumer groups")?;
        for group in groups.groups {
            let mut kept_from = group.last_delivered_id;
            if group.pending > 0
                && let StreamPendingReply::Data(pending) =
                    con.xpending(&stream, &group.name).await?
            {
                kept_from = pending.start_id;
            }
            floor = floor.min(parse_stream_id(&kept_from)?);
        }
        let trimmed: usize = con
            .xtrim_options(
                &stream,
                &StreamTrimOptions::minid(
                    StreamTrimmingMode::Exact,
                    format!("{}-{}", floor.0, floor.1),
                ),
            )
            .await?;
        Ok(trimmed as u64)
    }

    async fn leave(&self, source: &str, group: &str) -> anyhow::Result<bool> {
        let stream = stream_name(&self.prefix, source);
        let mut con = self.publisher.clone();
        let exists: bool = con.exists(&stream).await?;
        if !exists {
            return Ok(false);
        }
        let removed: bool = con
            .xgroup_destroy(&stream, group)
            .await
            .context("removing a consumer group")?;
        Ok(removed)
    }

    async fn oldest_kept(&self, source: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        let stream = stream_name(&self.prefix, source);
        let mut con = self.publisher.clone();
        let first: redis::streams::StreamRangeReply =
            con.xrange_count(&stream, "-", "+", 1).await?;
        first
            .ids
            .first()
            .map(|entry| {
                let (ms, _) = parse_stream_id(&entry.id)?;
                DateTime::from_timestamp_millis(i64::try_from(ms)?)
                    .with_context(|| format!("stream id {}", entry.id))
            })
            .transpose()
    }
}

/// A stream entry id, `<milliseconds>-<sequence>`, as a pair that sorts as Redis sorts ids.
fn parse_stream_id(id: &str) -> anyhow::Result<(u64, u64)> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    Ok((
        ms.parse().with_context(|| format!("stream id {id}"))?,
        seq.parse().with_context(|| format!("stream id {id}"))?,
    ))
}

/// Reads one stream in one consumer group into an inbox.
struct StreamConsumer {
    client: redis::Client,
    stream: String,
    group: String,
    name: String,
    inbox: Arc<Inbox>,
}

impl StreamConsumer {
    async fn run(self) {
        let mut failures = 0u32;
        loop {
            match self.consume().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if crate::telemetry::worth_logging(failures) {
                        tracing::warn!(stream = %self.stream, group = %self.group, failures, error = format!("{e:#}"), "event consumer cannot read; retrying");
                    }
                    tokio::time::sleep(backoff(failures)).await;
                }
            }
        }
    }

    /// Connects, makes sure the group exists, and reads until an error.
    async fn consume(&self) -> anyhow::Result<()> {
        let mut con = self
            .client
            .get_connection_manager_with_config(manager_config())
            .await?;
        // From id 0: a group made again after Redis lost it re-reads the whole stream; the
        // inbox drops what it already has.
        let created: redis::RedisResult<()> = con
            .xgroup_create_mkstream(&self.stream, &self.group, "0")
            .await;
        if let Err(e) = created
            && e.code() != Some("BUSYGROUP")
        {
            return Err(e.into());
        }
        // First what this consumer was given but did not acknowledge, then new messages.
        let mut cursor = "0".to_owned();
        let mut last_claim = tokio::time::Instant::now();
        loop {
            let opts = StreamReadOptions::default()
                .group(&self.group, &self.name)
                .count(100)
                .block(BLOCK_MS);
            let reply: StreamReadReply = con
                .xread_options(&[&self.stream], &[&cursor], &opts)
                .await?;
            let messages: Vec<StreamId> = reply.keys.into_iter().flat_map(|k| k.ids).collect();
            if cursor == "0" && messages.is_empty() {
                cursor = ">".to_owned();
            }
            self.ingest_all(&mut con, &messages).await?;
            if last_claim.elapsed() > Duration::from_millis(CLAIM_IDLE_MS as u64 / 3) {
                last_claim = tokio::time::Instant::now();
                let claimed: StreamAutoClaimReply = con
                    .xautoclaim_options(
                        &self.stream,
                        &self.group,
                        &self.name,
                        CLAIM_IDLE_MS,
                        "0-0",
                        StreamAutoClaimOptions::default().count(100),
                    )
                    .await?;
                self.ingest_all(&mut con, &claimed.claimed).await?;
            }
        }
    }

    async fn ingest_all(
        &self,
        con: &mut ConnectionManager,
        messages: &[StreamId],
    ) -> anyhow::Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut envelopes = Vec::with_capacity(messages.len());
        for m in messages {
            let parsed = m
                .get::<String>("event")
                .ok_or_else(|| anyhow::anyhow!("no `event` field"))
                .and_then(|raw| {
                    serde_json::from_str::<Envelope>(&raw).map_err(anyhow::Error::from)
                });
            match parsed {
                Ok(envelope) => envelopes.push(envelope),
                Err(e) => {
                    tracing::error!(stream = %self.stream, message = %m.id, error = %e, "dropping an unreadable stream message")
                }
            }
        }
        // Stored in one statement, then acknowledged together: a crash in between gets them
        // again, and the inbox drops what it already has.
        self.inbox.ingest_many(&envelopes).await?;
        let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        let _: i64 = con.xack(&self.stream, &self.group, &ids).await?;
        Ok(())
    }
}
