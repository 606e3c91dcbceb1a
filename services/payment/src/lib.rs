//! The payment service: payment providers, webhooks, refunds, the double-entry ledger,
//! commission and payouts. So far: VNPay payments opened for checkouts and confirmed by IPN.
//!
//! It owns the PostgreSQL schema `payment` and its migrations in `migrations/payment`; it
//! never reads another service's tables.

pub mod payments;
pub mod vnpay;

use std::{ops::Deref, sync::Arc};

use axum::{
    Router,
    extract::FromRef,
    routing::{get, post},
};
use nongsan_shared::{
    auth::TokenKeys,
    config::Settings,
    runtime::{Platform, Service},
};
use sqlx::{PgPool, migrate::Migrator};

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

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<App>);

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

/// The service's part of the OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(payments::open_payment, payments::handle_vnpay_ipn),
    tags((name = "payment", description = "payment providers, webhooks, refunds, the double-entry ledger, commission and payouts"))
)]
pub struct ApiDoc;

/// Opens the schema, runs migrations, and returns the service ready to be served.
pub async fn start(platform: &Platform) -> anyhow::Result<Service> {
    let pool = platform.open_schema(NAME, &MIGRATOR).await?;
    let state = AppState(Arc::new(App {
        pool: pool.clone(),
        keys: platform.keys.clone(),
        settings: platform.settings.clone(),
    }));
    let router = Router::new()
        .route("/v1/internal/payments", post(payments::open_payment))
        .route("/v1/payments/vnpay/ipn", get(payments::handle_vnpay_ipn))
        .with_state(state);
    Ok(Service::new(platform, NAME, pool, router, None).await)
}
