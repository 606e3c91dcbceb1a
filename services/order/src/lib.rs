//! The order service: checkout, per-seller orders, the order state machine and the reservation saga.
//!
//! It owns the PostgreSQL schema `order` and its migrations in `migrations/order`; it never reads
//! another service's tables.

use nongsan_shared::runtime::{Platform, Service};
use sqlx::migrate::Migrator;

/// The service's name, which is also its schema and its event stream.
pub const NAME: &str = "order";

/// The service's own migrations; version 1 (the event tables) comes from the shared crate.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/order");

/// The service's part of the OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(tags((name = "order", description = "checkout, per-seller orders, the order state machine and the reservation saga")))]
pub struct ApiDoc;

/// Opens the schema, runs migrations, and returns the service ready to be served.
pub async fn start(platform: &Platform) -> anyhow::Result<Service> {
    let pool = platform.open_schema(NAME, &MIGRATOR).await?;
    let router = axum::Router::new();
    Ok(Service::new(platform, NAME, pool, router, None).await)
}
