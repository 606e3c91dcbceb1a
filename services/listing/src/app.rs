//! The service state every handler shares: the `listing` pool, token keys, rate limits and the
//! search engine.

use std::sync::Arc;

use nongsan_shared::{auth::TokenKeys, ratelimit::RateLimiter};
use sqlx::PgPool;

/// What every handler of the service shares.
pub type AppState = nongsan_shared::runtime::AppState<App>;

/// The service's dependencies.
#[expect(
    missing_debug_implementations,
    reason = "holds a trait object; AppState prints as a name"
)]
pub struct App {
    /// The `listing` schema.
    pub pool: PgPool,
    /// Connections for reservations, the hottest write: given back without a round trip.
    pub hot: nongsan_shared::db::HotPool,
    /// Token keys.
    pub keys: TokenKeys,
    /// Login rate limits.
    pub limiter: Arc<dyn RateLimiter>,
    /// The search engine.
    pub search: Arc<dyn nongsan_search::SearchEngine>,
    /// Most of a listing's on-hand stock (percent) one holder may hold at once.
    pub max_hold_share_percent: u32,
    /// Where lots' QR codes point (scheme and host).
    pub trace_base: String,
    /// Listing pages kept in memory.
    pub views: Arc<crate::catalog::cache::ViewCache>,
}

impl AsRef<TokenKeys> for App {
    fn as_ref(&self) -> &TokenKeys {
        &self.keys
    }
}
