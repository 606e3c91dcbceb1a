//! The sweeper that releases expired reservations.

use std::time::Duration;

use nongsan_shared::{ListingId, ReservationId, telemetry::worth_logging};
use sqlx::PgPool;

use crate::{
    error::Result,
    stock::reservations::store::{lines_of, release},
};

/// Releases expired reservations, one transaction each; returns how many.
pub async fn sweep_once(pool: &PgPool) -> Result<usize> {
    let due = sqlx::query_scalar!(
        r#"SELECT id AS "id: ReservationId" FROM reservations WHERE status = 'active' AND expires_at <= now() ORDER BY expires_at LIMIT 100"#
    )
    .fetch_all(pool)
    .await?;
    let mut n = 0;
    for id in due {
        let mut tx = pool.begin().await?;
        // Another sweeper (or a commit) may have got there first.
        let still_due = sqlx::query_scalar!(
            r#"SELECT status = 'active' AND expires_at <= now() AS "due!" FROM reservations WHERE id = $1 FOR UPDATE SKIP LOCKED"#,
            id as _,
        )
        .fetch_optional(&mut *tx)
        .await?
        .unwrap_or(false);
        if still_due {
            let reserved: Vec<ListingId> = lines_of(&mut tx, id, "reserved", None)
                .await?
                .into_iter()
                .map(|l| l.1)
                .collect();
            release(&mut tx, id, "expired", Some(&reserved), None).await?;
            n += 1;
        }
        tx.commit().await?;
    }
    Ok(n)
}

/// Runs the sweeper every `every` until aborted.
pub async fn run_sweeper(pool: PgPool, every: Duration) {
    let mut failures = 0u32;
    loop {
        match sweep_once(&pool).await {
            Ok(n) => {
                failures = 0;
                if n > 0 {
                    tracing::info!(expired = n, "released expired reservations");
                }
            }
            Err(e) => {
                failures += 1;
                if worth_logging(failures) {
                    tracing::warn!(error = %e, "reservation sweeper failed; retrying");
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}
