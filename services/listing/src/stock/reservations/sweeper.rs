//! The sweeper: it releases expired reservations, and gives back the stock of reservations
//! whose checkout never came into being (its process died between reserving and storing).

use std::time::{Duration, Instant};

use nongsan_shared::{
    ListingId, ReservationId,
    client::ServiceClient,
    contracts::reservations::{ReservationOutcomes, ReservationsAsked},
    telemetry::worth_logging,
};
use sqlx::{PgConnection, PgPool};

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
    give_back_each(pool, due, "expired", true).await
}

/// Releases each reservation still active (and, with `only_expired`, past its time), one
/// transaction each, skipping those another sweeper or a commit holds; returns how many.
async fn give_back_each(
    pool: &PgPool,
    ids: Vec<ReservationId>,
    closed_as: &'static str,
    only_expired: bool,
) -> Result<usize> {
    let mut n = 0;
    for id in ids {
        let mut tx = pool.begin().await?;
        // Another sweeper (or a commit) may have got there first.
        let still = sqlx::query_scalar!(
            r#"SELECT status = 'active' AND (NOT $2 OR expires_at <= now()) AS "due!" FROM reservations WHERE id = $1 FOR UPDATE SKIP LOCKED"#,
            id as _,
            only_expired,
        )
        .fetch_optional(&mut *tx)
        .await?
        .unwrap_or(false);
        if still {
            give_back(&mut tx, id, closed_as).await?;
            n += 1;
        }
        tx.commit().await?;
    }
    Ok(n)
}

/// Releases what a locked reservation still holds.
async fn give_back(
    tx: &mut PgConnection,
    id: ReservationId,
    closed_as: &'static str,
) -> Result<()> {
    let reserved: Vec<ListingId> = lines_of(tx, id, "reserved", None)
        .await?
        .into_iter()
        .map(|l| l.1)
        .collect();
    release(tx, id, closed_as, Some(&reserved), None).await
}

/// Reservations asked about at once (the order service's limit).
const ASK_AT_MOST: usize = 1_000;

/// Asks the order service about the active reservations older than `after` whose checkout
/// it has not confirmed, [`ASK_AT_MOST`] at a time until none is left: those it confirms are
/// marked (and never asked about again), those it gave up are released. Returns how many
/// were given back. The order service's answer is final (it takes the reservation's claim),
/// so no stored checkout loses its stock; when it cannot be reached nothing is released.
pub async fn reconcile_orphans(
    pool: &PgPool,
    order: &ServiceClient,
    after: Duration,
) -> anyhow::Result<usize> {
    let mut n = 0;
    loop {
        let (given_back, asked) = reconcile_some(pool, order, after).await?;
        n += given_back;
        if asked < ASK_AT_MOST {
            return Ok(n);
        }
    }
}

/// One batch of [`reconcile_orphans`]: (given back, asked about).
async fn reconcile_some(
    pool: &PgPool,
    order: &ServiceClient,
    after: Duration,
) -> anyhow::Result<(usize, usize)> {
    let asked: Vec<ReservationId> = sqlx::query_scalar!(
        r#"SELECT id AS "id: ReservationId" FROM reservations
           WHERE status = 'active' AND checkout_confirmed_at IS NULL AND created_at <= now() - make_interval(secs => $1)
           ORDER BY created_at LIMIT $2"#,
        after.as_secs_f64(),
        i64::try_from(ASK_AT_MOST).unwrap_or(i64::MAX),
    )
    .fetch_all(pool)
    .await?;
    let count = asked.len();
    if count == 0 {
        return Ok((0, 0));
    }
    let outcomes: ReservationOutcomes = order
        .post(
            "/v1/internal/checkouts/reservation-outcomes",
            &ReservationsAsked {
                reservation_ids: asked,
            },
        )
        .await?;
    let placed: Vec<uuid::Uuid> = outcomes.placed.iter().map(|r| r.0).collect();
    // Locked in id order, as a batch of order events locks them (`store::lock_batch`): an
    // update of many rows locks them in the order it finds them, which could deadlock.
    sqlx::query!(
        "UPDATE reservations r SET checkout_confirmed_at = now()
         FROM (SELECT id FROM reservations WHERE id = ANY($1) ORDER BY id FOR UPDATE) locked WHERE r.id = locked.id",
        &placed,
    )
    .execute(pool)
    .await?;
    let n = give_back_each(pool, outcomes.abandoned, "released", false).await?;
    Ok((n, count))
}

/// Runs the sweeper every `every`, and the orphan reconciliation every quarter of
/// `orphan_after` (at least every `every`), until aborted.
pub async fn run_sweeper(
    pool: PgPool,
    every: Duration,
    order: ServiceClient,
    orphan_after: Duration,
) {
    let mut failures = 0u32;
    let mut orphan_failures = 0u32;
    let reconcile_every = (orphan_after / 4).max(every);
    let mut last_reconciled: Option<Instant> = None;
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
        if last_reconciled.is_none_or(|t| t.elapsed() >= reconcile_every) {
            last_reconciled = Some(Instant::now());
            match reconcile_orphans(&pool, &order, orphan_after).await {
                Ok(n) => {
                    orphan_failures = 0;
                    if n > 0 {
                        tracing::info!(
                            released = n,
                            "gave back reservations whose checkout never came"
                        );
                    }
                }
                Err(e) => {
                    orphan_failures += 1;
                    if worth_logging(orphan_failures) {
                        tracing::warn!(error = %e, "could not ask the order service about reservations without a checkout; they stay held");
                    }
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}
