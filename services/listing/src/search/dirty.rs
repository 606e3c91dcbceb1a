//! The dirty list: listings whose index document must be written again. Marking one is a
//! write in the caller's transaction (a listing's change, with its `listing.changed`: see
//! `catalog::store::emit_changed`; a stock change when a listing runs out or comes back; the
//! certification sweep), which wakes the indexer when it commits. A leaf module, so that stock
//! and catalog code can mark without depending on the indexer.

use nongsan_shared::{AccountId, ListingId};
use sqlx::PgConnection;

/// The notification channel the indexer listens on.
pub const CHANNEL: &str = "nongsan_search_dirty";

/// Marks listings dirty; the indexer is woken when the transaction commits.
pub async fn mark_dirty(conn: &mut PgConnection, ids: &[ListingId]) -> anyhow::Result<()> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|i| i.0).collect();
    // One statement: the marks and the indexer's wake-up (a data-modifying WITH always runs).
    sqlx::query!(
        "WITH marked AS (INSERT INTO search_dirty (listing_id) SELECT unnest($1::uuid[])
           ON CONFLICT (listing_id) DO UPDATE SET marked_at = clock_timestamp())
         SELECT pg_notify($2, '')",
        &ids,
        CHANNEL,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Marks every listing of a household (its name, in each of their documents, changed); the
/// indexer is woken when the transaction commits.
pub async fn mark_household(conn: &mut PgConnection, household: AccountId) -> anyhow::Result<()> {
    sqlx::query!(
        "WITH marked AS (INSERT INTO search_dirty (listing_id) SELECT id FROM listings WHERE household_id = $1
           ON CONFLICT (listing_id) DO UPDATE SET marked_at = clock_timestamp())
         SELECT pg_notify($2, '')",
        household as _,
        CHANNEL,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
