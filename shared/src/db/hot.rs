//! Connections for the hottest statements, given back without a round trip.
//!
//! sqlx's pool tests every connection given back to it with a round trip to PostgreSQL (a
//! `Sync` and its answer), in a task of its own, whatever the connection did: that flushes a
//! rollback left queued by a transaction dropped half-way, and finds a connection that broke.
//! A checkout gives back three connections, so three of its nine round trips were these.
//!
//! [`HotPool`] opens connections with its sqlx pool's options (the same schema) and hands
//! them out the same way, bounded. A connection whose work ended and was answered is given
//! back with [`HotConn::release`], at once. Every other way a connection comes back (dropped:
//! an error returned early, a request cancelled mid-statement; or released with a transaction
//! still open or a rollback still queued) costs a round trip, as in sqlx's pool, which sends
//! what is queued and asks whether a transaction is still open: one is rolled back before
//! the connection is handed out again. (sqlx's own test cannot see a transaction whose
//! `BEGIN` was cancelled before its answer came: sqlx counts it only once answered.)

use std::{
    ops::{Deref, DerefMut},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::{
    Connection, Database, PgConnection, PgPool, Postgres, TransactionManager,
    postgres::PgConnectOptions,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a connection may sit unused before it is closed rather than handed out (as the
/// sqlx pools' idle timeout): one that sat long may have been cut by something on the way.
const IDLE_AT_MOST: Duration = Duration::from_secs(60);

/// How long a caller waits for a connection, a new one's connecting included, before
/// `PoolTimedOut` (as the sqlx pools).
const WAIT_AT_MOST: Duration = Duration::from_secs(30);

/// How long the round trip of a connection that comes back any other way than released may
/// take before the connection is dropped (a network gone silent holds no slot for long).
const CHECK_AT_MOST: Duration = Duration::from_secs(5);

/// How often idle connections past [`IDLE_AT_MOST`] are closed while nothing uses them.
const REAP_EVERY: Duration = Duration::from_secs(30);

/// Connections for the hottest statements of one schema; cloning shares them.
#[derive(Clone)]
pub struct HotPool(Arc<Inner>);

struct Inner {
    options: PgConnectOptions,
    /// Idle connections, the most recently used last (handed out first).
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    /// One permit per connection handed out, being opened, or being checked after it came
    /// back unreleased; idle ones hold none. A connection is opened only when none is idle,
    /// so no more than the permits are ever open.
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for HotPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotPool")
            .field("idle", &self.idle())
            .field("free", &self.0.slots.available_permits())
            .finish()
    }
}

impl HotPool {
    /// At most `max` connections, opened as `pool` opens its own (the same server, user and
    /// schema), when first needed.
    /// Idle ones are closed after a minute unused, as the sqlx pools' are (a task does it
    /// while the pool lives, when called within a Tokio runtime).
    pub fn beside(pool: &PgPool, max: u32) -> Self {
        let inner = Arc::new(Inner {
            options: (*pool.connect_options()).clone(),
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(usize::try_from(max.max(1)).unwrap_or(1))),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let pool = Arc::downgrade(&inner);
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(REAP_EVERY).await;
                    let Some(pool) = pool.upgrade() else { return };
                    pool.close_stale();
                }
            });
        }
        Self(inner)
    }

    /// A connection: an idle one, else a new one once fewer than `max` are open. Waits at most
    /// 30 s for one, connecting included (`PoolTimedOut`).
    pub async fn acquire(&self) -> Result<HotConn, sqlx::Error> {
        tokio::time::timeout(WAIT_AT_MOST, self.acquire_now())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    async fn acquire_now(&self) -> Result<HotConn, sqlx::Error> {
        let slot = self
            .0
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let conn = loop {
            let popped = self.0.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match popped {
                Some((conn, since)) if since.elapsed() <= IDLE_AT_MOST => break conn,
                Some((stale, _)) => close_later(stale),
                None => break PgConnection::connect_with(&self.0.options).await?,
            }
        };
        Ok(HotConn {
            conn: Some(conn),
            pool: self.0.clone(),
            slot: Some(slot),
        })
    }

    /// How many connections sit idle.
    pub fn idle(&self) -> usize {
        self.0.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A connection of a [`HotPool`]; use it as a `PgConnection`.
pub struct HotConn {
    conn: Option<PgConnection>,
    pool: Arc<Inner>,
    slot: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for HotConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HotConn")
    }
}

impl HotConn {
    /// Gives the connection back at once, for a caller whose statements were all answered and
    /// whose transaction ended (committed, or rolled back by a statement of its own). A
    /// transaction still open, or a rollback still queued (a transaction dropped without
    /// ending), sends it through the test as a drop does: its locks are let go now, not when
    /// the connection is next used.
    pub fn release(mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let open = <Postgres as Database>::TransactionManager::get_transaction_depth(&conn) > 0;
        if open || conn.should_flush() {
            self.conn = Some(conn);
            // Dropped: tested, as any connection not given back clean.
            return;
        }
        self.pool.give_back(conn);
    }
}

impl Inner {
    fn give_back(&self, conn: PgConnection) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((conn, Instant::now()));
    }

    /// Closes the idle connections unused for longer than [`IDLE_AT_MOST`] (the least
    /// recently used first in the list).
    fn close_stale(&self) {
        let stale: Vec<PgConnection> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let fresh_from = idle
                .iter()
                .position(|(_, since)| since.elapsed() <= IDLE_AT_MOST)
                .unwrap_or(idle.len());
            idle.drain(..fresh_from).map(|(conn, _)| conn).collect()
        };
        stale.into_iter().for_each(close_later);
    }
}

/// Sends what a connection has queued, reads what it left unread, and rolls back a
/// transaction still open; `None`: the connection cannot be used again. A rollback that sqlx
/// queued (a transaction dropped without ending) ends it: sqlx's ping sends it, with its own
/// `Sync`, in one round trip. Otherwise a statement asks whether a transaction is open (in one
/// begun before it, `now()` is the transaction's start, earlier than the statement's).
async fn settle(mut conn: PgConnection) -> Option<PgConnection> {
    let outermost = <Postgres as Database>::TransactionManager::get_transaction_depth(&conn) == 0;
    if conn.should_flush() && outermost {
        return conn.ping().await.is_ok().then_some(conn);
    }
    // Through `Executor`'s own (boxed) futures: the unnamed futures of sqlx's query builders,
    // held by a spawned task, trip a limit of the compiler's `Send` check.
    let open = sqlx::Executor::fetch_one(&mut conn, "SELECT now() <> statement_timestamp()")
        .await
        .and_then(|row| sqlx::Row::try_get::<bool, _>(&row, 0));
    match open {
        Ok(false) => Some(conn),
        // Open, or failed in it (`25P02`: an earlier statement failed and it waits for its
        // end).
        Ok(true) | Err(sqlx::Error::Database(_)) => {
            let ended = sqlx::Executor::execute(&mut conn, "ROLLBACK").await;
            ended.is_ok().then_some(conn)
        }
        Err(_) => None,
    }
}

impl Drop for HotConn {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        // The slot stays taken until the test ends, so that no more than `max` are open.
        let slot = self.slot.take();
        let pool = self.pool.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(Some(conn)) = tokio::time::timeout(CHECK_AT_MOST, settle(conn)).await {
                    pool.give_back(conn);
                }
                drop(slot);
            });
        }
    }
}

impl Deref for HotConn {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn
            .as_ref()
            .expect("a HotConn holds its connection until dropped")
    }
}

impl DerefMut for HotConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("a HotConn holds its connection until dropped")
    }
}

/// Closes a connection politely, in the background.
fn close_later(conn: PgConnection) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = conn.close().await;
        });
    }
}
