//! Stock writes a seller may send again (a lot taken in, an adjustment): with an
//! `Idempotency-Key`, the same request again is answered as the first was and changes
//! nothing. Without one, each request adds to the stock, as before.
//!
//! The key is written first in the write's own transaction, so two requests with one key at
//! once are one after the other: the second waits on the first's row, then finds its answer
//! (or, when the first failed, serves the key itself). It waits [`KEY_WAIT`] at most, then is
//! 409 `idempotency_key_in_use`, as a checkout is: a phone retrying every few seconds behind a
//! stalled first request does not pile up connections.

use nongsan_shared::{AccountId, ListingId, idempotency_key::IdempotencyKey};
use serde_json::Value;
use sqlx::PgConnection;

use crate::error::{ListingError, Result};

/// How long a key is kept: each keyed request forgets its sender's keys older than this.
const KEPT_DAYS: i32 = 7;

/// How long a request waits for another serving the same key.
pub const KEY_WAIT: &str = "10s";

/// What [`claim`] found.
#[derive(Debug)]
pub enum Claimed {
    /// The key is new: this request serves it, and [`complete`]s it before committing.
    Mine,
    /// The key was served: its answer.
    Done(u16, Value),
}

/// Claims `key` of `account` for `request` on `listing`. The same key with another request
/// is 422 `idempotency_key_reused`.
pub async fn claim(
    conn: &mut PgConnection,
    account: AccountId,
    key: &IdempotencyKey,
    listing: ListingId,
    request: &Value,
) -> Result<Claimed> {
    sqlx::query!(
        "DELETE FROM stock_requests WHERE account_id = $1 AND created_at < now() - make_interval(days => $2)",
        account.0,
        KEPT_DAYS,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar!("SELECT set_config('lock_timeout', $1, true)", KEY_WAIT)
        .fetch_one(&mut *conn)
        .await?;
    let mine = sqlx::query_scalar!(
        "INSERT INTO stock_requests (account_id, key, listing_id, request) VALUES ($1, $2, $3, $4)
         ON CONFLICT (account_id, key) DO NOTHING RETURNING true",
        account.0,
        key.as_str(),
        listing as _,
        request,
    )
    .fetch_optional(&mut *conn)
    .await;
    let mine = match mine {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
            return Err(ListingError::conflict(
                "idempotency_key_in_use",
                "A request with this Idempotency-Key is still being served; retry shortly.",
                "Yêu cầu với Idempotency-Key này đang được xử lý; vui lòng thử lại sau.",
            ));
        }
        other => other?,
    };
    sqlx::query_scalar!("SELECT set_config('lock_timeout', '0', true)")
        .fetch_one(&mut *conn)
        .await?;
    nongsan_shared::failpoint::hit_async("stock.request.after_claim").await?;
    if mine.is_some() {
        return Ok(Claimed::Mine);
    }
    let served = sqlx::query!(
        r#"SELECT listing_id AS "listing_id: ListingId", request, status, response FROM stock_requests WHERE account_id = $1 AND key = $2"#,
        account.0,
        key.as_str(),
    )
    .fetch_one(&mut *conn)
    .await?;
    match (served.status, served.response) {
        (Some(status), Some(response))
            if served.listing_id == listing && served.request == *request =>
        {
            Ok(Claimed::Done(
                u16::try_from(status).unwrap_or(200),
                response,
            ))
        }
        _ => Err(ListingError::field(
            "Idempotency-Key",
            nongsan_shared::invalid::Invalid::new(
                "idempotency_key_reused",
                "was used for another request",
                "đã được dùng cho một yêu cầu khác",
            ),
        )),
    }
}

/// Stores the answer of a key this request [`claim`]ed, in its transaction.
pub async fn complete(
    conn: &mut PgConnection,
    account: AccountId,
    key: &IdempotencyKey,
    status: u16,
    response: &Value,
) -> Result<()> {
    sqlx::query!(
        "UPDATE stock_requests SET status = $3, response = $4 WHERE account_id = $1 AND key = $2",
        account.0,
        key.as_str(),
        i16::try_from(status).unwrap_or(200),
        response,
    )
    .execute(conn)
    .await?;
    Ok(())
}
