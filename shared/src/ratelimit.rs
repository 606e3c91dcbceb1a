//! Fixed-window rate limits: in Redis when configured (shared by every process), in process
//! memory otherwise.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use redis::aio::ConnectionManager;

use crate::error::Unavailable;

/// Counts hits per key in a window.
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync {
    /// Records a hit on `key` and returns how many hits the current window of `window` holds,
    /// and how long until it ends.
    async fn hit(&self, key: &str, window: Duration) -> anyhow::Result<(u64, Duration)>;
    /// Forgets `key` (after a successful login, say).
    async fn reset(&self, key: &str) -> anyhow::Result<()>;
    /// How many hits the current window of `key` holds, without adding one, and how long
    /// until it ends.
    async fn count(&self, key: &str, window: Duration) -> anyhow::Result<(u64, Duration)>;
}

/// In-process limits, for one process without Redis.
#[derive(Debug, Default)]
pub struct MemoryLimiter {
    windows: Mutex<HashMap<String, (Instant, u64)>>,
}

#[async_trait::async_trait]
impl RateLimiter for MemoryLimiter {
    async fn hit(&self, key: &str, window: Duration) -> anyhow::Result<(u64, Duration)> {
        let now = Instant::now();
        let mut map = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = map.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        Ok((entry.1, window.saturating_sub(now.duration_since(entry.0))))
    }

    async fn reset(&self, key: &str) -> anyhow::Result<()> {
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        Ok(())
    }

    async fn count(&self, key: &str, window: Duration) -> anyhow::Result<(u64, Duration)> {
        let now = Instant::now();
        let map = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        Ok(match map.get(key) {
            Some((start, n)) if now.duration_since(*start) < window => {
                (*n, window.saturating_sub(now.duration_since(*start)))
            }
            _ => (0, Duration::ZERO),
        })
    }
}

/// Limits in Redis: `INCR` and `PEXPIRE` on `<prefix>:rl:<key>`.
#[derive(Clone)]
pub struct RedisLimiter {
    con: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Limits stored under `<prefix>:rl:`.
    pub fn new(con: ConnectionManager, prefix: &str) -> Self {
        Self {
            con,
            prefix: prefix.to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl RateLimiter for RedisLimiter {
    async fn hit(&self, key: &str, window: Duration) -> anyhow::Result<(u64, Duration)> {
        let key = format!("{}:rl:{key}", self.prefix);
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let mut con = self.con.clone();
        let (count, ttl): (u64, i64) = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ms)
            .arg("NX")
            .ignore()
            .pttl(&key)
            .query_async(&mut con)
            .await
            .context(Unavailable("redis"))?;
        Ok((
            count,
            Duration::from_millis(u64::try_from(ttl).unwrap_or(0)),
        ))
    }

    async fn reset(&self, key: &str) -> anyhow::Result<()> {
        let mut con = self.con.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(format!("{}:rl:{key}", self.prefix))
            .query_async(&mut con)
            .await
            .context(Unavailable("redis"))?;
        Ok(())
    }

    async fn count(&self, key: &str, _window: Duration) -> anyhow::Result<(u64, Duration)> {
        let key = format!("{}:rl:{key}", self.prefix);
        let mut con = self.con.clone();
        let (count, ttl): (Option<u64>, i64) = redis::pipe()
            .get(&key)
            .pttl(&key)
            .query_async(&mut con)
            .await
            .context(Unavailable("redis"))?;
        Ok((
            count.unwrap_or(0),
            Duration::from_millis(u64::try_from(ttl).unwrap_or(0)),
        ))
    }
}
