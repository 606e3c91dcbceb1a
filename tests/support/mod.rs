//! The test harness: real PostgreSQL and real Redis, a fresh database per test, and the app
//! in both shapes (all-in-one in-process on port 0, and three `nongsan serve` processes).
//!
//! With `DATABASE_URL` (a role that may create databases) and `REDIS_URL` set, those servers
//! are used. Otherwise the harness starts a private PostgreSQL cluster and a `redis-server`
//! under the temp folder, shared by all test processes (a file lock makes the first one
//! start them), and leaves them running for the next run.
//!
//! Tests call the API of either shape through one [`client::Client`] (`TestApp::api`,
//! `SplitApp::api`), as a [`user::User`], with the typed helpers of [`calls`] for the common
//! calls and [`client::Request`] for anything else.

#![allow(
    dead_code,
    reason = "each test module uses a different part of the harness"
)]

pub mod calls;
pub mod client;
pub mod fake_meili;
pub mod fake_momo;
pub mod fake_vnpay;
pub mod localstripe;
pub mod process;
pub mod user;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use nongsan::{Running, ServiceName};
use nongsan_shared::{
    auth::TokenKeys,
    config::Settings,
    embedded_pg::{EmbeddedPostgres, Options},
};
use secrecy::SecretString;
use sqlx::{Connection, PgConnection};
use tokio::sync::OnceCell;

/// VNPay terminal code of the test apps.
pub const VNPAY_TMN: &str = "TESTTMN1";
/// VNPay hash secret of the test apps.
pub const VNPAY_SECRET: &str = "SECRETKEYFORTESTINGONLY0123456789";

/// The token key every test app and process shares.
pub const AUTH_SECRET: &str = "test-auth-secret-0123456789abcdef";

/// Where the test servers are.
#[derive(Debug, Clone)]
pub struct Servers {
    /// A URL to the `postgres` database with a role that can create databases.
    pub pg_admin: String,
    /// Redis.
    pub redis: String,
}

static SERVERS: OnceCell<Servers> = OnceCell::const_new();

/// The shared servers, started on first use.
pub async fn servers() -> &'static Servers {
    SERVERS.get_or_init(start_servers).await
}

fn state_dir() -> PathBuf {
    // Under the temp folder, not target/: as root the cluster runs as `nobody`, who must be
    // able to reach it.
    let uid = rustix::process::geteuid().as_raw();
    std::env::temp_dir().join(format!("nongsan-test-services-{uid}"))
}

async fn start_servers() -> Servers {
    let dir = state_dir();
    std::fs::create_dir_all(&dir).expect("create the test services folder");
    let lock = std::fs::File::create(dir.join("lock")).expect("create the lock file");
    lock.lock().expect("lock the test services folder");
    let pg_admin = match std::env::var("DATABASE_URL") {
        Ok(url) => url,
        Err(_) => {
            let pg = EmbeddedPostgres::start(
                &dir,
                Options {
                    max_connections: 800,
                    durable: false,
                    bindir: None,
                },
            )
            .await
            .unwrap_or_else(|e| panic!("test PostgreSQL: {e:#}"));
            // Through the cluster's Unix socket where it has one, as `nongsan up` connects.
            secrecy::ExposeSecret::expose_secret(&pg.url_of("postgres")).to_owned()
        }
    };
    drop_old_test_databases(&pg_admin).await;
    let redis = match std::env::var("REDIS_URL") {
        Ok(url) => url,
        Err(_) => shared_redis(&dir).await,
    };
    drop(lock);
    Servers { pg_admin, redis }
}

/// How long a test's database is kept: no test runs this long, so an older one belongs to a
/// test that ended (the test does not drop its own: a failing test's database is kept for a
/// while to be looked at).
pub const TEST_DATABASE_KEPT: Duration = Duration::from_secs(3600);

/// Drops the databases of tests that ended: those whose name (`test_` and a UUIDv7) says they
/// were made more than [`TEST_DATABASE_KEPT`] ago. Without it the cluster kept every test's
/// database, run after run: 4,976 of them and 49 GB on one machine, and an autovacuum
/// launcher walking them all on a seventh of a core. Answers how many were dropped.
pub async fn drop_old_test_databases(admin_url: &str) -> usize {
    drop_test_databases_older_than(admin_url, TEST_DATABASE_KEPT).await
}

/// How long [`drop_test_databases_older_than`] lets one drop wait.
pub const DROP_WAITS_AT_MOST: Duration = Duration::from_secs(20);

/// What every session of the cluster is doing and waiting for, one line each: for a test's
/// message when PostgreSQL keeps it waiting.
pub async fn pg_sessions(admin_url: &str) -> String {
    let Ok(mut admin) = PgConnection::connect(admin_url).await else {
        return "(PostgreSQL cannot be reached)".to_owned();
    };
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' ', pid, backend_type, datname, state,
                          wait_event_type || ':' || wait_event, replace(left(query, 100), E'\\n', ' '))
         FROM pg_stat_activity ORDER BY pid",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap_or_default();
    rows.join("\n")
}

/// Drops the test databases made more than `kept` ago; answers how many it dropped.
pub async fn drop_test_databases_older_than(admin_url: &str, kept: Duration) -> usize {
    let mut admin = PgConnection::connect(admin_url)
        .await
        .expect("connect to the test PostgreSQL");
    // A drop waits until every session of the cluster has closed the database's files, and a
    // session blocked writing to a client that is not reading holds that up for as long as
    // the client sleeps (CI saw one test wait 300 s). A drop that takes longer is given up:
    // the database stays for the next test process to drop.
    sqlx::query(&format!(
        "SET statement_timeout = {}",
        DROP_WAITS_AT_MOST.as_millis()
    ))
    .execute(&mut admin)
    .await
    .expect("limit how long a drop waits");
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'test\\_%'")
            .fetch_all(&mut admin)
            .await
            .unwrap();
    let now = std::time::SystemTime::now();
    let mut dropped = 0;
    for name in names {
        let made = uuid::Uuid::parse_str(&name["test_".len()..])
            .ok()
            .and_then(|id| id.get_timestamp())
            .map(|t| {
                let (secs, nanos) = t.to_unix();
                std::time::UNIX_EPOCH + Duration::new(secs, nanos)
            });
        let ended = made.is_some_and(|made| now.duration_since(made).is_ok_and(|age| age > kept));
        if ended
            && sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .is_ok()
        {
            dropped += 1;
        }
    }
    admin.close().await.ok();
    dropped
}

/// The shared `redis-server`, started if it is not answering.
async fn shared_redis(dir: &Path) -> String {
    let port_file = dir.join("redis.port");
    if let Ok(port) = std::fs::read_to_string(&port_file) {
        let url = format!("redis://127.0.0.1:{}", port.trim());
        if redis_answers(&url).await {
            return url;
        }
    }
    let port = free_port();
    let redis = RedisServer::start_at(dir, port, false).await;
    std::mem::forget(redis); // left running for later test processes
    std::fs::write(&port_file, port.to_string()).expect("write redis.port");
    format!("redis://127.0.0.1:{port}")
}

async fn redis_answers(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(Ok(mut con)) = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    else {
        return false;
    };
    redis::cmd("PING")
        .query_async::<String>(&mut con)
        .await
        .is_ok()
}

/// A loopback port held bound but not listening: connecting to it is refused, and no other
/// process can take it while this is held (one that [`free_port`] found free can be taken
/// at any moment). [`ClosedPort::listen`] opens it later, on the same port.
#[derive(Debug)]
pub struct ClosedPort(tokio::net::TcpSocket);

impl ClosedPort {
    /// Holds a new one.
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .unwrap();
        Self(socket)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    /// Starts listening on it.
    pub fn listen(self) -> tokio::net::TcpListener {
        self.0.listen(1024).unwrap()
    }
}

/// A free TCP port on loopback (free now: see [`ClosedPort`] for one that stays so).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct TCP ports on loopback, free now, drawn outside the ephemeral range
/// ([`nongsan_shared::net::free_loopback_ports`]): the connections that the tests running
/// beside this one open take their local ports from that range, and one of them could take a
/// port let go here before the server this test starts has bound it.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let ports = nongsan_shared::net::free_loopback_ports(N).expect("free loopback ports");
    std::array::from_fn(|i| ports[i])
}

/// A `redis-server` this test owns (to stop and restart it), or the shared one.
#[derive(Debug)]
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    appendonly: bool,
}

impl RedisServer {
    /// Starts a private `redis-server` with append-only persistence in a temp folder.
    pub async fn start_private() -> Self {
        let dir =
            std::env::temp_dir().join(format!("nongsan-redis-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        for _ in 0..5 {
            let server = Self {
                port: free_port(),
                dir: dir.clone(),
                appendonly: true,
            };
            if server.try_launch().await {
                return server;
            }
        }
        panic!("5 free ports in a row were taken before redis-server could listen on them");
    }

    async fn start_at(dir: &Path, port: u16, appendonly: bool) -> Self {
        let server = Self {
            port,
            dir: dir.to_owned(),
            appendonly,
        };
        server.launch().await;
        server
    }

    async fn launch(&self) {
        assert!(
            self.try_launch().await,
            "port {} was taken before redis-server could listen on it",
            self.port
        );
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join(format!("redis-{}.pid", self.port))
    }

    /// Starts it; `false` when the server answering on its port is another one, which took
    /// the port between [`free_port`] and the bind (this one then could not listen).
    async fn try_launch(&self) -> bool {
        let mut cmd = std::process::Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "yes",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(&self.dir)
        .arg("--pidfile")
        .arg(self.pid_file())
        .arg("--logfile")
        .arg(self.dir.join(format!("redis-{}.log", self.port)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if self.appendonly {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e}): install it (apt-get install redis-server) or set REDIS_URL"));
        assert!(status.success(), "redis-server did not start");
        for _ in 0..100 {
            if redis_answers(&self.url()).await {
                if self.answers_as_itself().await {
                    return true;
                }
                // Never signal what this pid file may name: not this server's process.
                let _ = std::fs::remove_file(self.pid_file());
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not answer", self.port);
    }

    /// Whether the server on its port is this one: its pid file is this one's.
    async fn answers_as_itself(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut con) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        let said: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("pidfile")
            .query_async(&mut con)
            .await
            .unwrap_or_default();
        said.get(1).map(PathBuf::from) == Some(self.pid_file())
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL): whatever it had not written to disk is lost.
    pub async fn kill(&self) {
        let pid: i32 = std::fs::read_to_string(self.pid_file())
            .expect("redis pid file")
            .trim()
            .parse()
            .unwrap();
        process::signal(pid, rustix::process::Signal::KILL);
        for _ in 0..100 {
            if !redis_answers(&self.url()).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not die");
    }

    /// Starts it again on the same port and folder.
    pub async fn restart(&self) {
        self.launch().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.pid_file())
            && let Ok(pid) = pid.trim().parse()
        {
            process::signal(pid, rustix::process::Signal::KILL);
        }
    }
}

/// A database of its own for one test.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// Its URL.
    pub url: String,
    /// Its name.
    pub name: String,
}

impl TestDb {
    /// Creates a fresh, empty database.
    pub async fn new() -> Self {
        let servers = servers().await;
        let name = format!("test_{}", uuid::Uuid::now_v7().simple());
        let mut admin = PgConnection::connect(&servers.pg_admin)
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.ok();
        // The same URL naming the new database (its options, a socket's folder, kept).
        let (address, options) = servers
            .pg_admin
            .split_once('?')
            .map_or((servers.pg_admin.as_str(), None), |(a, o)| (a, Some(o)));
        let base = address
            .rsplit_once('/')
            .expect("a database URL has a path")
            .0;
        Self {
            url: format!(
                "{base}/{name}{}",
                options.map(|o| format!("?{o}")).unwrap_or_default()
            ),
            name,
        }
    }

    /// A connection pool on one service's schema.
    pub async fn pool(&self, schema: &str) -> sqlx::PgPool {
        let opts: sqlx::postgres::PgConnectOptions = self.url.parse().unwrap();
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(5)
            .connect_with(opts.options([("search_path", schema)]))
            .await
            .expect("connect to the test database")
    }

    /// The id of the first reservation the listing service makes, once it is made (within
    /// 10 s): a checkout held between reserving and storing is found by it.
    pub async fn first_reservation(&self) -> uuid::Uuid {
        let listing = self.pool("listing").await;
        eventually(Duration::from_secs(10), "the reservation", || async {
            sqlx::query_scalar("SELECT id FROM reservations")
                .fetch_optional(&listing)
                .await
                .unwrap()
        })
        .await
    }
}

/// Settings of a test app on `db`: port 0, real Redis with a key prefix of its own, fast
/// event polling.
pub async fn test_settings(db: &TestDb) -> Settings {
    let servers = servers().await;
    let data_dir =
        std::env::temp_dir().join(format!("nongsan-app-{}", uuid::Uuid::now_v7().simple()));
    Settings {
        port: 0,
        data_dir,
        database_url: Some(SecretString::from(db.url.clone())),
        database_max_connections: 10,
        redis_url: Some(servers.redis.clone()),
        redis_prefix: db.name.clone(),
        auth_secret: Some(SecretString::from(AUTH_SECRET)),
        events_poll_ms: 50,
        events_retry_base_ms: 20,
        vnpay_tmn_code: Some(VNPAY_TMN.to_owned()),
        vnpay_hash_secret: Some(SecretString::from(VNPAY_SECRET)),
        ..Settings::default()
    }
}

/// The keys test apps sign with.
pub fn keys() -> TokenKeys {
    TokenKeys::new(SecretString::from(AUTH_SECRET), 3600)
}

/// The whole app in this process, on a port of its own.
pub struct TestApp {
    /// Its API.
    pub api: client::Client,
    /// Its database.
    pub db: TestDb,
    /// Its data folder (the embedded search index).
    pub data_dir: std::path::PathBuf,
    running: Option<Running>,
}

impl TestApp {
    /// Starts all three services in-process on a fresh database with Redis.
    pub async fn spawn() -> Self {
        let db = TestDb::new().await;
        Self::spawn_with(test_settings(&db).await, db).await
    }

    /// Starts all three services with the given settings.
    pub async fn spawn_with(settings: Settings, db: TestDb) -> Self {
        init_test_tracing();
        let data_dir = settings.data_dir.clone();
        let running = nongsan::build(settings, &ServiceName::ALL)
            .await
            .expect("the app starts");
        Self {
            api: client::Client::new(&running.url()),
            db,
            data_dir,
            running: Some(running),
        }
    }

    /// Stops it.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

fn init_test_tracing() {
    nongsan_shared::telemetry::init_tracing(nongsan_shared::config::LogFormat::Text);
}

/// A fail point set in this test's process until dropped: cleared however the test ends.
#[must_use = "the fail point is cleared when this is dropped"]
pub struct FailPoint(&'static str);

impl FailPoint {
    /// Sets `name` to `action`.
    pub fn set(name: &'static str, action: nongsan_shared::failpoint::Action) -> Self {
        nongsan_shared::failpoint::set(name, action);
        Self(name)
    }
}

impl Drop for FailPoint {
    fn drop(&mut self) {
        nongsan_shared::failpoint::clear(self.0);
    }
}

/// Whether a row is locked by another transaction now: asked with `FOR UPDATE NOWAIT` from a
/// transaction of its own, rolled back at once.
pub async fn row_locked(pool: &sqlx::PgPool, table: &str, column: &str, id: &str) -> bool {
    let mut tx = pool.begin().await.unwrap();
    // dynamic: the table and column are the test's own constants.
    let asked = sqlx::query(&format!(
        "SELECT 1 FROM {table} WHERE {column} = $1::text::uuid FOR UPDATE NOWAIT"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await;
    match asked {
        Ok(row) => {
            assert!(row.is_some(), "no {table} row {id}");
            false
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => true,
        Err(e) => panic!("asking whether {table} {id} is locked: {e}"),
    }
}

/// How many statements of this database wait for a lock now, of those whose text is `LIKE`
/// `query`.
pub async fn lock_waiters(pool: &sqlx::PgPool, query: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database() AND query LIKE $1",
    )
    .bind(query)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
