//! PostgreSQL: one pool per service, each pinned to its own schema through `search_path`,
//! and migrations that start with the shared event tables.

use std::{borrow::Cow, str::FromStr, time::Duration};

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sqlx::{
    PgPool,
    migrate::{Migration, MigrationType, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::http::{Mode, Readiness};

pub mod hot;
pub use hot::{HotConn, HotPool};

/// The event tables every service schema holds: outbox, inbox, and their indexes.
const EVENTS_SQL: &str = include_str!("../migrations/events.sql");
/// The inbox walked in event order (version 2).
const EVENTS_PENDING_SQL: &str = include_str!("../migrations/events_pending.sql");

/// Parses a database URL. The error never repeats the URL, which may hold a password.
pub fn parse_url(url: &SecretString) -> anyhow::Result<PgConnectOptions> {
    PgConnectOptions::from_str(url.expose_secret()).map_err(|e| {
        anyhow::anyhow!(
            "DATABASE_URL is not a valid PostgreSQL URL ({})",
            redact_error(&e)
        )
    })
}

fn redact_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Configuration(_) => "bad format".to_owned(),
        other => other.to_string(),
    }
}

/// "host:port" of a connection, or its Unix socket's path, for messages that must not show
/// credentials.
pub fn describe(opts: &PgConnectOptions) -> String {
    match opts.get_socket() {
        Some(dir) => format!("{}/.s.PGSQL.{}", dir.display(), opts.get_port()),
        None => format!("{}:{}", opts.get_host(), opts.get_port()),
    }
}

/// Opens a pool whose connections use `schema`, creating the schema when missing. A server
/// that cannot be reached gives one line naming host and port.
pub async fn connect(
    opts: &PgConnectOptions,
    schema: &str,
    max_connections: u32,
) -> anyhow::Result<PgPool> {
    assert!(
        schema.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
        "schema names are plain identifiers"
    );
    let where_ = describe(opts);
    // Create the schema first through a plain connection: search_path cannot name a schema
    // that does not exist yet for migrations to land in it.
    let setup = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts.clone())
        .await
        .map_err(|e| unreachable_error(&where_, &e))?;
    // dynamic: DDL naming the schema, which cannot be a bind parameter.
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .execute(&setup)
        .await
        .or_else(|e| match &e {
            // Two services creating their schemas at once may race on the catalog.
            sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => {
                Ok(Default::default())
            }
            _ => Err(e),
        })
        .with_context(|| format!("creating schema {schema}"))?;
    setup.close().await;
    let opts = opts.clone().options([("search_path", schema)]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        // A burst (a thousand buyers at the last kilograms) queues for connections rather
        // than failing at once; past this wait the request gets 503.
        .acquire_timeout(Duration::from_secs(30))
        // No ping before each use: it was a round trip to PostgreSQL per request on the hot
        // paths. A connection that broke meanwhile (PostgreSQL restarted) fails its next
        // statement once and is dropped; idle ones are closed before they go stale.
        .test_before_acquire(false)
        .idle_timeout(Duration::from_secs(60))
        .connect_with(opts)
        .await
        .map_err(|e| unreachable_error(&where_, &e))
}

fn unreachable_error(where_: &str, e: &sqlx::Error) -> anyhow::Error {
    let why = match e {
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::PoolTimedOut => "timed out".to_owned(),
        sqlx::Error::Database(d) => d.message().to_owned(),
        sqlx::Error::Tls(t) => t.to_string(),
        other => other.to_string(),
    };
    anyhow::anyhow!("cannot reach PostgreSQL at {where_}: {why}")
}

/// A service's migrator: the shared event tables first (versions 1 and 2), then the
/// service's own migrations, which must use later versions.
pub fn migrator(service: &Migrator) -> Migrator {
    let mut migrations = vec![Migration::new(
        1,
        Cow::Borrowed("events outbox and inbox"),
        MigrationType::Simple,
        Cow::Borrowed(EVENTS_SQL),
        false,
    )];
    migrations.push(Migration::new(
        2,
        Cow::Borrowed("events inbox in event order"),
        MigrationType::Simple,
        Cow::Borrowed(EVENTS_PENDING_SQL),
        false,
    ));
    migrations.extend(service.migrations.iter().cloned());
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

/// Runs a service's migrations into its schema (the pool's `search_path`).
pub async fn migrate(pool: &PgPool, service: &Migrator, schema: &str) -> anyhow::Result<()> {
    migrator(service)
        .run(pool)
        .await
        .with_context(|| format!("migrating schema {schema}"))
}

/// Readiness of a PostgreSQL pool.
#[derive(Debug)]
pub struct PgReadiness {
    /// The pool to ping.
    pub pool: PgPool,
    /// Whether nongsan started the server itself.
    pub mode: Mode,
}

#[async_trait::async_trait]
impl Readiness for PgReadiness {
    fn name(&self) -> &str {
        "postgres"
    }

    fn mode(&self) -> Mode {
        self.mode
    }

    async fn check(&self) -> anyhow::Result<()> {
        sqlx::query!("SELECT 1 AS one")
            .fetch_one(&self.pool)
            .await?;
        Ok(())
    }
}

/// The notifications of one channel, read as they come by a task of their own: a worker
/// waits for the next with [`Notifications::next`] whenever it is ready, however long it was
/// busy.
///
/// A `LISTEN` connection must be read promptly. PostgreSQL sends each notification from
/// inside a transaction of the listening backend; when the client does not read, the socket
/// fills, the backend waits to send (`ClientWrite`) with that transaction open, and its
/// snapshot holds back every vacuum of the cluster for as long as the client stays away. A
/// relay that read its connection only between backlogs did that for the whole of a
/// 50-minute catalog load: the outbox's dead rows piled up, each pass read 470,000 of them,
/// and events fell minutes behind (BENCHMARKS.md, 2026-12-05).
#[derive(Debug)]
pub struct Notifications {
    heard: std::sync::Arc<tokio::sync::Notify>,
    reader: tokio::task::JoinHandle<()>,
}

impl Notifications {
    /// Starts listening on `channel` with a connection of `pool`'s (connecting again, with
    /// backoff, whenever it is lost). A (re)connection counts as a notification: what was
    /// sent while away is unknown.
    pub fn listen(pool: &PgPool, channel: &str) -> Self {
        let heard = std::sync::Arc::new(tokio::sync::Notify::new());
        let reader = tokio::spawn(read(pool.clone(), channel.to_owned(), heard.clone()));
        Self { heard, reader }
    }

    /// Completes at the first notification since the last call (at once if one came
    /// meanwhile): any number of notifications wake one call.
    pub async fn next(&self) {
        self.heard.notified().await;
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read(pool: PgPool, channel: String, heard: std::sync::Arc<tokio::sync::Notify>) {
    let mut failures = 0u32;
    loop {
        let listening = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listening.await {
            Ok(mut listener) => {
                failures = 0;
                heard.notify_one();
                // Every message read as soon as it arrives; the worker is told once. A lost
                // connection (`None`, connected again by the next call) may have missed some.
                let lost = loop {
                    match listener.try_recv().await {
                        Ok(_notification_or_lost) => heard.notify_one(),
                        Err(e) => break e,
                    }
                };
                // The worker polls meanwhile, and is told when listening again.
                tracing::warn!(channel, error = %lost, "stopped hearing notifications; listening again");
            }
            Err(e) => {
                failures += 1;
                if crate::telemetry::worth_logging(failures) {
                    tracing::warn!(channel, error = %e, "cannot listen for notifications; polling meanwhile");
                }
            }
        }
        tokio::time::sleep(crate::events::backoff(failures)).await;
    }
}
