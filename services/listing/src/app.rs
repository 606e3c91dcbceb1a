//! The service state every handler shares: the `listing` pool, token keys, rate limits and the
//! search engine.

use std::{ops::Deref, sync::Arc};

use axum::extract::FromRef;
use nongsan_shared::{auth::TokenKeys, ratelimit::RateLimiter};
use sqlx::PgPool;

/// What every handler of the service shares.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

/// The service's dependencies.
#[expect(
    missing_debug_implementations,
    reason = "holds a trait object; AppState prints as a name"
)]
pub struct App {
    /// The `listing` schema.
    pub pool: PgPool,
    /// Token keys.
    pub keys: TokenKeys,
    /// Login rate limits.
    pub limiter: Arc<dyn RateLimiter>,
    /// The search engine.
    pub search: Arc<dyn nongsan_search::SearchEngine>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppState")
    }
}

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

impl FromRef<AppState> for TokenKeys {
    fn from_ref(s: &AppState) -> Self {
        s.keys.clone()
    }
}
