//! Claims on idempotency keys in PostgreSQL (`idempotency_keys`): taking one, replaying a
//! stored answer, completing one, giving one back, and leaving one to a retry.

use std::time::Duration;

use chrono::{DateTime, Utc};

use nongsan_shared::db::HotPool;
use nongsan_shared::{AccountId, CheckoutId};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::IdempotencyKey;
use crate::error::{OrderError, Result};

/// A request's claim on its key: who sent it, the key, and a hash of the request as sent.
#[derive(Debug, Clone)]
pub struct Claim {
    account: AccountId,
    key: IdempotencyKey,
    hash: Vec<u8>,
}

impl Claim {
    /// The claim of `account`'s request with `key`; `request` is hashed as JSON.
    pub fn new(account: AccountId, key: IdempotencyKey, request: &impl Serialize) -> Result<Self> {
        let body = serde_json::to_vec(request).map_err(anyhow::Error::from)?;
        Ok(Self {
            account,
            key,
            hash: Sha256::digest(body).to_vec(),
        })
    }

    /// Whose key it is, and the key: the row a statement of its own completes.
    pub fn key(&self) -> (AccountId, &str) {
        (self.account, self.key.as_str())
    }
}

/// What claiming a key gave.
#[derive(Debug)]
pub enum Claimed {
    /// This request serves the key, for this checkout id; with the buyer's open
    /// cash-on-delivery checkouts counted in the claim's statement when they were asked for
    /// (`None` when not), and which hold on the key it is.
    Mine(CheckoutId, Option<i64>, Hold),
    /// It was served before: the answer.
    Done(serde_json::Value),
}

/// One request's hold on a key: when it claimed or took it over. A request that held the key
/// and was taken over (it stalled past [`ABANDONED_AFTER`]) can no longer give it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold(DateTime<Utc>);

impl Hold {
    /// The hold of the claim made or taken over at `at` (the key's `created_at`).
    pub fn since(at: DateTime<Utc>) -> Self {
        Self(at)
    }
}

/// How long a claim may stay `started` before another request with the key takes it over
/// (its first holder died between claiming and finishing).
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// How long a request waits for another one holding its key before giving up.
const WAIT_AT_MOST: Duration = Duration::from_secs(30);

/// Claims the key: the same key returns the same answer, also when two identical requests
/// race; another request with it is [`OrderError::KeyReused`]. With `count_open_cod` (a
/// cash-on-delivery checkout), the same statement counts the buyer's cash-on-delivery
/// checkouts still waiting for a seller, and the others on their way (claimed, not yet
/// stored), after every claim of the buyer before it (`open_cod_checkouts`): the checkout's
/// bound on them holds for checkouts sent at once.
pub async fn claim(hot: &HotPool, c: &Claim, count_open_cod: bool) -> Result<Claimed> {
    let started = tokio::time::Instant::now();
    loop {
        let fresh = CheckoutId::new();
        // A connection per statement, not held while waiting for another request's answer.
        let mut conn = hot.acquire().await?;
        let row = sqlx::query!(
            r#"WITH ins AS (
                INSERT INTO idempotency_keys (buyer_id, key, request_hash, checkout_id, state, cod) VALUES ($1, $2, $3, $4, 'started', $5)
                ON CONFLICT (buyer_id, key) DO NOTHING RETURNING request_hash, checkout_id, state, response, created_at, true AS mine)
             SELECT request_hash AS "request_hash!", checkout_id AS "checkout_id!: CheckoutId", state AS "state!",
                    response AS "response?", created_at AS "created_at!", mine AS "mine!",
                    CASE WHEN $5 THEN open_cod_checkouts($1, $2) END AS "open_cod?"
             FROM (SELECT * FROM ins
                   UNION ALL
                   SELECT request_hash, checkout_id, state, response, created_at, false FROM idempotency_keys WHERE buyer_id = $1 AND key = $2
                   LIMIT 1) AS claimed"#,
            c.account.0,
            c.key.as_str(),
            &c.hash,
            fresh.0,
            count_open_cod,
        )
        .fetch_optional(&mut *conn)
        .await?;
        conn.release();
        // No row: the insert waited for a racing request's insert of the key and found it
        // taken once that committed, but the statement's snapshot, taken before that
        // commit, cannot see the row. The next statement can.
        let Some(row) = row else {
            if started.elapsed() > WAIT_AT_MOST {
                return Err(OrderError::KeyInUse);
            }
            continue;
        };
        if row.mine {
            return Ok(Claimed::Mine(
                row.checkout_id,
                row.open_cod,
                Hold(row.created_at),
            ));
        }
        if row.request_hash != c.hash {
            return Err(OrderError::KeyReused);
        }
        if row.state == "done" {
            return Ok(Claimed::Done(row.response.unwrap_or_default()));
        }
        // Another request holds the key: wait for its answer, or take over if it died, or
        // at once if it left the key to a retry ([`leave_for_retry`]). A
        // taken-over cash-on-delivery claim is counted as a new one is, after the buyer's
        // claims before it: a buyer whose checkouts died half-way, many of them, and who sends
        // them all again a minute later gets no more than the bound.
        let mut conn = hot.acquire().await?;
        let taken = sqlx::query!(
            r#"UPDATE idempotency_keys SET state = 'started', created_at = now() WHERE buyer_id = $1 AND key = $2
               AND (state = 'retry' OR (state = 'started' AND created_at < now() - make_interval(secs => $3)))
               RETURNING checkout_id AS "checkout_id: CheckoutId", created_at, CASE WHEN $4 THEN open_cod_checkouts($1, $2) END AS "open_cod?""#,
            c.account.0,
            c.key.as_str(),
            ABANDONED_AFTER.as_secs_f64(),
            count_open_cod,
        )
        .fetch_optional(&mut *conn)
        .await?;
        conn.release();
        if let Some(taken) = taken {
            return Ok(Claimed::Mine(
                taken.checkout_id,
                taken.open_cod,
                Hold(taken.created_at),
            ));
        }
        if started.elapsed() > WAIT_AT_MOST {
            return Err(OrderError::KeyInUse);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stores the answer of a claim served: the same key replays it from now on. False when the
/// key no longer names `checkout`: this request stalled past [`ABANDONED_AFTER`], the request
/// that took the key over gave it back, and perhaps another claimed it for a checkout of
/// its own. The answer is then kept nowhere, and the checkout must not stand.
pub async fn complete(
    conn: impl sqlx::PgExecutor<'_>,
    c: &Claim,
    checkout: CheckoutId,
    answer: &serde_json::Value,
) -> Result<bool> {
    let stored = sqlx::query!(
        "UPDATE idempotency_keys SET state = 'done', response = $3 WHERE buyer_id = $1 AND key = $2 AND checkout_id = $4",
        c.account.0,
        c.key.as_str(),
        answer,
        checkout.0,
    )
    .execute(conn)
    .await?;
    Ok(stored.rows_affected() == 1)
}

/// Leaves the key to the next request with it, after a failure whose outcome is not known:
/// the listing service's answer to the reservation was lost, so the stock may be held under
/// this checkout's id. The next request takes the key over at once, with the same checkout
/// id, and its reservation is that one (the listing service answers an id it has with what
/// it made). Unless another request took the key over meanwhile, as for [`unclaim`].
pub async fn leave_for_retry(pool: &PgPool, c: &Claim, hold: Hold) {
    let _ = sqlx::query!(
        "UPDATE idempotency_keys SET state = 'retry' WHERE buyer_id = $1 AND key = $2 AND state = 'started' AND created_at = $3",
        c.account.0,
        c.key.as_str(),
        hold.0,
    )
    .execute(pool)
    .await;
}

/// Gives the key back after a failure, so that a retry with it starts afresh: unless another
/// request took it over meanwhile (this one stalled past [`ABANDONED_AFTER`]), which serves it
/// now and may already have placed the checkout.
pub async fn unclaim(pool: &PgPool, c: &Claim, hold: Hold) {
    let _ = sqlx::query!(
        "DELETE FROM idempotency_keys WHERE buyer_id = $1 AND key = $2 AND state = 'started' AND created_at = $3",
        c.account.0,
        c.key.as_str(),
        hold.0,
    )
    .execute(pool)
    .await;
}
