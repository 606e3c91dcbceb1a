//! The listing service: identity, sellers, catalog, inventory and reservations, search, traceability.
//!
//! It owns the PostgreSQL schema `listing` and its migrations in `migrations/listing`; it never reads
//! another service's tables.

use nongsan_shared::runtime::{Platform, Service};
use sqlx::migrate::Migrator;

/// The service's name, which is also its schema and its event stream.
pub const NAME: &str = "listing";

/// The service's own migrations; version 1 (the event tables) comes from the shared crate.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/listing");

/// The service's part of the OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(tags((name = "listing", description = "identity, sellers, catalog, inventory and reservations, search, traceability")))]
pub struct ApiDoc;

/// Opens the schema, runs migrations, and returns the service ready to be served.
pub async fn start(platform: &Platform) -> anyhow::Result<Service> {
    let pool = platform.open_schema(NAME, &MIGRATOR).await?;
    let router = axum::Router::new();
    Ok(Service::new(platform, NAME, pool, router, None).await)
}
