//! What a service needs from the process it runs in ([`Platform`]: database, token keys,
//! event bus, peers), what its handlers share ([`AppState`]), and what it gives back
//! ([`Service`]: router, readiness checks, relay, workers). The `nongsan` binary composes one
//! or three services from these.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use axum::Router;
use secrecy::SecretString;
use sqlx::{PgPool, migrate::Migrator, postgres::PgConnectOptions};

use crate::{
    auth::TokenKeys,
    client::{LocalRouter, ServiceClient},
    config::Settings,
    db,
    embedded_pg::{self, EmbeddedPostgres},
    events::{self, Bus, InProcessBus, Inbox, RedisBus, Relay},
    http::{Mode, Readiness},
};

/// The other services, as HTTP clients.
#[derive(Debug, Clone)]
pub struct Peers {
    /// The listing service.
    pub listing: ServiceClient,
    /// The order service.
    pub order: ServiceClient,
    /// The payment service.
    pub payment: ServiceClient,
}

impl Peers {
    /// Whether the actor may act for a seller, as the listing service (which knows
    /// households, cooperatives and helpers) decides: an operator always; a household, a
    /// helper or a cooperative manager when listing says so; anyone else never.
    pub async fn may_act_for_seller(
        &self,
        actor: &crate::auth::Actor,
        kind: crate::contracts::sellers::SellerKind,
        id: uuid::Uuid,
    ) -> Result<bool, crate::client::CallError> {
        use crate::{
            auth::Role,
            contracts::access::{SellerAccess, SellerAccessQuery},
        };
        if actor.role == Role::Operator {
            return Ok(true);
        }
        if !matches!(
            actor.role,
            Role::Household | Role::Helper | Role::CooperativeManager
        ) {
            return Ok(false);
        }
        let query = SellerAccessQuery {
            actor_id: actor.account_id,
            role: actor.role,
            on_behalf_of: actor.on_behalf_of,
            seller_kind: kind,
            seller_id: id,
        };
        let a: SellerAccess = self
            .listing
            .get_query("/v1/internal/seller-access", &query)
            .await?;
        Ok(a.allowed)
    }
}

/// Everything a process provides to the services it runs.
pub struct Platform {
    /// The settings it was started with.
    pub settings: Arc<Settings>,
    /// Where PostgreSQL is.
    pub db: PgConnectOptions,
    /// Whether PostgreSQL is the private cluster.
    pub db_mode: Mode,
    /// Signs and verifies access tokens.
    pub keys: TokenKeys,
    /// Carries events between services.
    pub bus: Arc<dyn Bus>,
    /// Retry policy of inboxes.
    pub events: events::Settings,
    /// Clients for the other services.
    pub peers: Peers,
    /// This process's router, through which peers it serves itself are called, once set.
    pub local: LocalRouter,
    /// Rate limits: in Redis when configured, else in this process.
    pub limiter: Arc<dyn crate::ratelimit::RateLimiter>,
    /// The private cluster, when nongsan started one.
    pub embedded: Option<EmbeddedPostgres>,
    admin: PgPool,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("db", &db::describe(&self.db))
            .field("db_mode", &self.db_mode)
            .finish_non_exhaustive()
    }
}

impl Platform {
    /// Connects to (or starts) PostgreSQL, connects to Redis when configured, and loads the
    /// token key. `self_url` is this process's own address, used for peers that are not
    /// configured (all three services in one process).
    pub async fn start(settings: Settings, self_url: &str) -> anyhow::Result<Self> {
        let (db, db_mode, embedded) = match &settings.database_url {
            Some(url) => (db::parse_url(url)?, Mode::External, None),
            None => {
                let pg = EmbeddedPostgres::start(
                    &settings.data_dir,
                    embedded_pg::Options {
                        bindir: settings.postgres_bin.clone(),
                        ..Default::default()
                    },
                )
                .await?;
                tracing::info!(
                    cluster = %pg.cluster_dir().display(),
                    port = pg.info.port,
                    socket = pg.socket_dir().map(|d| d.display().to_string()),
                    "{} the private PostgreSQL cluster",
                    if pg.created { "created and started" } else { "reusing" }
                );
                (db::parse_url(&pg.url())?, Mode::Embedded, Some(pg))
            }
        };
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(db.clone())
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach PostgreSQL at {}: {}",
                    db::describe(&db),
                    short(&e)
                )
            })?;
        let (bus, limiter): (Arc<dyn Bus>, Arc<dyn crate::ratelimit::RateLimiter>) = match &settings
            .redis_url
        {
            Some(url) => {
                let bus = RedisBus::connect(url, &settings.redis_prefix).await?;
                let limiter =
                    crate::ratelimit::RedisLimiter::new(bus.connection(), &settings.redis_prefix);
                (Arc::new(bus), Arc::new(limiter))
            }
            None => (
                Arc::new(InProcessBus::default()),
                Arc::new(crate::ratelimit::MemoryLimiter::default()),
            ),
        };
        let secret = match &settings.auth_secret {
            Some(s) => s.clone(),
            None => load_or_make_secret(&settings.data_dir)?,
        };
        let keys = TokenKeys::new(secret, settings.access_token_ttl_secs);
        // A peer without an address of its own is served by this process, and called through
        // its router once the router is built.
        let local = LocalRouter::default();
        let peer = |name: &'static str, url: &Option<String>| match url {
            Some(url) => ServiceClient::new(name, url, keys.clone()),
            None => ServiceClient::new(name, self_url, keys.clone()).in_process(local.clone()),
        };
        let peers = Peers {
            listing: peer("listing", &settings.listing_url),
            order: peer("order", &settings.order_url),
            payment: peer("payment", &settings.payment_url),
        };
        Ok(Self {
            events: events::Settings::from_config(&settings),
            settings: Arc::new(settings),
            db,
            db_mode,
            keys,
            bus,
            peers,
            local,
            limiter,
            embedded,
            admin,
        })
    }

    /// Opens a service's pool on its own schema and brings the schema up to date.
    pub async fn open_schema(&self, schema: &str, migrator: &Migrator) -> anyhow::Result<PgPool> {
        let pool = db::connect(&self.db, schema, self.settings.database_max_connections).await?;
        db::migrate(&pool, migrator, schema).await?;
        Ok(pool)
    }

    /// The checks `/readyz` makes for what the platform provides.
    pub fn readiness(&self) -> Vec<Arc<dyn Readiness>> {
        vec![
            Arc::new(db::PgReadiness {
                pool: self.admin.clone(),
                mode: self.db_mode,
            }),
            Arc::new(BusReadiness(self.bus.clone())),
        ]
    }

    /// Closes pools and stops the private cluster cleanly.
    pub async fn shutdown(self) {
        self.admin.close().await;
        if let Some(pg) = &self.embedded {
            match pg.stop().await {
                Ok(()) => tracing::info!("stopped the private PostgreSQL cluster"),
                Err(e) => tracing::error!(
                    error = format!("{e:#}"),
                    "could not stop the private PostgreSQL cluster"
                ),
            }
        }
    }
}

fn short(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Database(d) => d.message().to_owned(),
        sqlx::Error::PoolTimedOut => "timed out".to_owned(),
        other => other.to_string(),
    }
}

/// The token key in `<data>/auth.secret`, made on first use.
fn load_or_make_secret(data_dir: &Path) -> anyhow::Result<SecretString> {
    use rand::Rng;
    let path = data_dir.join("auth.secret");
    if let Ok(s) = std::fs::read_to_string(&path)
        && !s.trim().is_empty()
    {
        anyhow::ensure!(
            s.trim().len() >= crate::auth::MIN_SECRET_BYTES,
            "the token signing key in {} is shorter than {} bytes; remove it to have a new one made, or set NONGSAN_AUTH_SECRET",
            path.display(),
            crate::auth::MIN_SECRET_BYTES
        );
        return Ok(SecretString::from(s.trim().to_owned()));
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data folder {}", data_dir.display()))?;
    let secret: String = rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(48)
        .map(char::from)
        .collect();
    {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(secret.as_bytes())?;
    }
    tracing::info!(path = %path.display(), "generated a token signing key (set NONGSAN_AUTH_SECRET to share one between processes)");
    Ok(SecretString::from(secret))
}

struct BusReadiness(Arc<dyn Bus>);

#[async_trait::async_trait]
impl Readiness for BusReadiness {
    fn name(&self) -> &str {
        "events"
    }

    fn mode(&self) -> Mode {
        self.0.mode()
    }

    async fn check(&self) -> anyhow::Result<()> {
        self.0.ping().await
    }
}

/// What every handler of a service shares: its dependencies `A` (the service's `App`) behind
/// an `Arc`, cheap to clone into each request. Handlers read the dependencies through `Deref`
/// (`app.pool`), and the [`Actor`](crate::auth::Actor) extractor finds the token keys through
/// `A: AsRef<TokenKeys>`. Each service names its own: `pub type AppState =
/// nongsan_shared::runtime::AppState<App>;`.
pub struct AppState<A>(Arc<A>);

impl<A> AppState<A> {
    /// The state of a service with these dependencies.
    pub fn new(app: A) -> Self {
        Self(Arc::new(app))
    }
}

impl<A> Clone for AppState<A> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<A> std::fmt::Debug for AppState<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppState")
    }
}

impl<A> std::ops::Deref for AppState<A> {
    type Target = A;
    fn deref(&self) -> &A {
        &self.0
    }
}

impl<A: AsRef<TokenKeys>> axum::extract::FromRef<AppState<A>> for TokenKeys {
    fn from_ref(s: &AppState<A>) -> Self {
        (*s.0).as_ref().clone()
    }
}

/// A service's step on a graceful stop ([`Service::on_stop`]).
pub type StopStep = futures_util::future::BoxFuture<'static, ()>;

/// How long a graceful stop waits for each of a service's [`Service::on_stop`] steps.
pub const FINISH_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// One service, ready to be served.
pub struct Service {
    /// Its name, which is also its schema.
    pub name: &'static str,
    /// Its routes (`/v1/...`), without the shared layers.
    pub router: Router,
    /// Checks of its own dependencies, beyond the platform's.
    pub readiness: Vec<Arc<dyn Readiness>>,
    /// Its outbox relay, started once every service in the process has subscribed.
    pub relay: Relay,
    /// Its background workers (inbox worker, sweepers), already running.
    pub workers: Vec<tokio::task::JoinHandle<()>>,
    /// What it does on a graceful stop, once the server has answered its last request and
    /// the workers are stopped, before the router and the platform go: what the workers left
    /// undone in memory and no other process would do (the listing pages' announcements).
    /// Each runs as a task of its own, given [`FINISH_WITHIN`].
    pub on_stop: Vec<StopStep>,
    /// Its pool.
    pub pool: PgPool,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service with its relay, its dead-letter routes, and its inbox subscribed to `sources`.
    pub async fn new(
        platform: &Platform,
        name: &'static str,
        pool: PgPool,
        router: Router,
        inbox: Option<(Inbox, &[&str])>,
    ) -> Self {
        let mut workers = Vec::new();
        let reads = inbox.as_ref().map_or(&[][..], |(_, sources)| *sources);
        if let Some(keep) = platform.events.keep {
            let retention = events::Retention::new(pool.clone(), name, platform.bus.clone(), keep)
                .reading(reads);
            workers.push(tokio::spawn(retention.run()));
        }
        for source in events::SOURCES.iter().filter(|s| !reads.contains(s)) {
            // A stream this service read in an earlier version (the listing service read its
            // own until its changes marked themselves for search).
            match platform.bus.leave(source, name).await {
                Ok(true) => {
                    tracing::info!(
                        service = name,
                        stream = source,
                        "left a stream this service no longer reads"
                    );
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(
                        service = name,
                        stream = source,
                        error = format!("{e:#}"),
                        "cannot leave a stream this service no longer reads; trying again at the next start"
                    );
                }
            }
        }
        if let Some((inbox, sources)) = inbox {
            let inbox = Arc::new(inbox);
            for source in sources {
                workers.extend(platform.bus.subscribe(source, inbox.clone()).await);
            }
            workers.push(tokio::spawn(inbox.run()));
        }
        let router = router.merge(events::ops_router(
            name,
            pool.clone(),
            platform.keys.clone(),
        ));
        let relay = Relay::new(
            pool.clone(),
            name,
            platform.bus.clone(),
            platform.events.poll,
        )
        .with_pace(platform.events.pace);
        Self {
            name,
            router,
            readiness: Vec::new(),
            relay,
            workers,
            on_stop: Vec::new(),
            pool,
        }
    }
}
