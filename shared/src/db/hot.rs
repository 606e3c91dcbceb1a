//! Connections for the hottest statements, given back without a round trip.
//!
//! sqlx's pool tests every connection given back to it with a round trip to PostgreSQL (a
//! `Sync` and its answer), in a task of its own, whatever the connection did: that flushes a
//! rollback left queued by a transaction dropped half-way, and finds a connection that broke.
//! A checkout gives back three connections, so three of its nine round trips were these.
//!
//! [`HotPool`] opens connections with its sqlx pool's options (the same schema) and hands
//! them out the same way, bounded. A connection whose work ended and was answered is given
//! back with [`HotConn::release`], at once. Every other way a connection comes back goes
//! through sqlx's test: dropped (an error returned early, a request cancelled mid-statement),
//! or released with a transaction still open or a rollback still queued.

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

/// How long a caller waits for a connection before `PoolTimedOut` (as the sqlx pools).
const WAIT_AT_MOST: Duration = Duration::from_secs(30);

/// Connections for the hottest statements of one schema; cloning shares them.
#[derive(Clone)]
pub struct HotPool(Arc<Inner>);

struct Inner {
    options: PgConnectOptions,
    /// Idle connections, the most recently used last (handed out first).
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    /// One permit per connection open or being opened.
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
    pub fn beside(pool: &PgPool, max: u32) -> Self {
        Self(Arc::new(Inner {
            options: (*pool.connect_options()).clone(),
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(usize::try_from(max.max(1)).unwrap_or(1))),
        }))
    }

    /// A connection: an idle one, else a new one once fewer than `max` are open. Waits at most
    /// 30 s for one (`PoolTimedOut`).
    pub async fn acquire(&self) -> Result<HotConn, sqlx::Error> {
        let slot = tokio::time::timeout(WAIT_AT_MOST, self.0.slots.clone().acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
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
}

impl Drop for HotConn {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        // The slot stays taken until the test ends, so that no more than `max` are open.
        let slot = self.slot.take();
        let pool = self.pool.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // What sqlx's pool does with every connection given back: sends what is queued
                // (a rollback), waits for PostgreSQL to be ready, and drops one that broke.
                if conn.ping().await.is_ok() {
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
