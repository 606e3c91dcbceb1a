//! The payment service: payment providers, webhooks, refunds, the double-entry ledger,
//! commission and payouts. So far: VNPay payments opened for checkouts and confirmed by IPN.
//!
//! It owns the PostgreSQL schema `payment` and its migrations in `migrations/payment`; it
//! never reads another service's tables.

pub mod payments;
pub mod vnpay;

use std::sync::Arc;

use nongsan_shared::{
    auth::TokenKeys,
    config::Settings,
    runtime::{Platform, Service},
};
use sqlx::{PgPool, migrate::Migrator};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

/// The service's name, which is also its schema and its event stream.
pub const NAME: &str = "payment";

/// The service's own migrations; version 1 (the event tables) comes from the shared crate.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/payment");

/// The service's dependencies.
#[derive(Debug)]
pub struct App {
    /// The `payment` schema.
    pub pool: PgPool,
    /// Token keys.
    pub keys: TokenKeys,
    /// Provider keys.
    pub settings: Arc<Settings>,
}

impl AsRef<TokenKeys> for App {
    fn as_ref(&self) -> &TokenKeys {
        &self.keys
    }
}

/// What every handler shares.
pub type AppState = nongsan_shared::runtime::AppState<App>;

/// The service's tag; the operations come from [`routes`].
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    tags((name = "payment", description = "payment providers, webhooks, refunds, the double-entry ledger, commission and payouts"))
)]
struct ApiDoc;

/// The service's routes, each handler named once: its path and method come from its
/// `#[utoipa::path]`, which is also its entry in the OpenAPI document
/// (`routes().into_openapi()`).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(payments::open_payment))
        .routes(routes!(payments::handle_vnpay_ipn))
}

/// Opens the schema, runs migrations, and returns the service ready to be served.
pub async fn start(platform: &Platform) -> anyhow::Result<Service> {
    let pool = platform.open_schema(NAME, &MIGRATOR).await?;
    let state = AppState::new(App {
        pool: pool.clone(),
        keys: platform.keys.clone(),
        settings: platform.settings.clone(),
    });
    let router = routes().with_state(state).into();
    Ok(Service::new(platform, NAME, pool, router, None).await)
}
