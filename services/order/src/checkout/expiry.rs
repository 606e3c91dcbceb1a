//! The background worker that expires unpaid checkouts and unconfirmed cash orders.

use std::time::Duration;

use super::store;
use crate::{AppState, error::Result, lifecycle::Action, orders::transition};

/// Expires unpaid checkouts and unconfirmed cash orders; returns how many orders.
pub async fn expire_once(app: &AppState) -> Result<usize> {
    let due = store::due_to_expire(&app.pool).await?;
    let mut n = 0;
    for id in due {
        let mut tx = app.pool.begin().await?;
        if transition(
            &mut tx,
            id,
            Action::Expire,
            None,
            Some("not paid or confirmed in time"),
        )
        .await
        .is_ok()
        {
            n += 1;
        }
        store::mark_expired(&mut tx, id).await?;
        tx.commit().await?;
    }
    Ok(n)
}

/// Runs [`expire_once`] every second until aborted.
pub async fn run_expirer(app: AppState) {
    let mut failures = 0u32;
    loop {
        match expire_once(&app).await {
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                if nongsan_shared::telemetry::worth_logging(failures) {
                    tracing::warn!(error = %e, "order expirer failed; retrying");
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
