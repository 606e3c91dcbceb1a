//! The payment service: payment providers, webhooks, refunds, the double-entry ledger, commission and payouts.
//!
//! It owns the PostgreSQL schema `payment` and its migrations in `migrations/payment`; it never reads
//! another service's tables.

use nongsan_shared::runtime::{Platform, Service};
use sqlx::migrate::Migrator;

/// The service's name, which is also its schema and its event stream.
pub const NAME: &str = "payment";

/// The service's own migrations; version 1 (the event tables) comes from the shared crate.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/payment");

/// The service's part of the OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(tags((name = "payment", description = "payment providers, webhooks, refunds, the double-entry ledger, commission and payouts")))]
pub struct ApiDoc;

/// Opens the schema, runs migrations, and returns the service ready to be served.
pub async fn start(platform: &Platform) -> anyhow::Result<Service> {
    let pool = platform.open_schema(NAME, &MIGRATOR).await?;
    let router = axum::Router::new();
    Ok(Service::new(platform, NAME, pool, router, None).await)
}
