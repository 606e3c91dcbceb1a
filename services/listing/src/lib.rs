//! The listing service: identity, households and cooperatives, the catalog, inventory and
//! reservations (later also search and traceability).
//!
//! It owns the PostgreSQL schema `listing` and its migrations in `migrations/listing`; it
//! never reads another service's tables.

pub mod access;
pub mod app;
pub mod audit;
pub mod catalog;
pub mod error;
pub mod identity;
pub mod search;
pub mod seed;
pub mod sellers;
pub mod stock;

pub use catalog::reference;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    routing::{delete, get, post, put},
};
use nongsan_shared::{
    contracts::events::EventType,
    events::Inbox,
    http::{Mode, Readiness},
    runtime::{Platform, Service},
};
use sqlx::migrate::Migrator;

use crate::app::{App, AppState};

/// The service's name, which is also its schema and its event stream.
pub const NAME: &str = "listing";

/// The service's own migrations; version 1 (the event tables) comes from the shared crate.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/listing");

/// How often expired reservations are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The service's part of the OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(
        identity::accounts::register_account, identity::sessions::create_session, identity::sessions::refresh_session, identity::sessions::delete_session,
        identity::activation::activate_account, identity::accounts::get_me, identity::roles::grant_role,
        identity::accounts::register_household, sellers::households::get_household, sellers::households::update_household, audit::list_household_audit,
        sellers::cooperatives::create_cooperative, sellers::cooperatives::get_cooperative, sellers::cooperatives::add_member, sellers::cooperatives::remove_member,
        catalog::reference::list_provinces, catalog::reference::list_province_communes, catalog::reference::search_communes, catalog::reference::get_commune,
        catalog::reference::convert_legacy_commune, catalog::reference::list_categories, catalog::reference::list_units, catalog::reference::list_certifications,
        catalog::listings::create_listing, catalog::listings::get_listing, catalog::listings::list_listings, catalog::listings::update_listing, catalog::listings::change_listing_status,
        stock::lots::create_lot, stock::lots::adjust_stock, stock::lots::get_stock, stock::lots::list_movements,
        stock::reservations::handlers::create_reservation, stock::reservations::handlers::get_reservation, stock::reservations::handlers::commit_reservation, stock::reservations::handlers::release_reservation,
        stock::pooling::get_cooperative_stock, stock::pooling::pool_lot, stock::imports::import_stock,
        search::search_listings, access::check_seller_access,
    ),
    components(schemas(search::Sort)),
    tags(
        (name = "identity", description = "Accounts, sessions, roles"),
        (name = "sellers", description = "Households, cooperatives, helpers, the audit trail"),
        (name = "regions", description = "Vietnam's 2025 administrative units"),
        (name = "catalog", description = "Listings and their reference lists"),
        (name = "inventory", description = "Lots and stock movements"),
        (name = "reservations", description = "Internal: stock held for checkouts"),
        (name = "cooperatives", description = "Cooperative stock, pooling and imports"),
        (name = "search", description = "Search the catalog in Vietnamese, with or without diacritics"),
    )
)]
pub struct ApiDoc;

/// The service's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/accounts", post(identity::accounts::register_account))
        .route(
            "/v1/accounts/activate",
            post(identity::activation::activate_account),
        )
        .route("/v1/accounts/{id}/role", put(identity::roles::grant_role))
        .route("/v1/sessions", post(identity::sessions::create_session))
        .route(
            "/v1/sessions/refresh",
            post(identity::sessions::refresh_session),
        )
        .route(
            "/v1/sessions/logout",
            post(identity::sessions::delete_session),
        )
        .route("/v1/me", get(identity::accounts::get_me))
        .route(
            "/v1/households",
            post(identity::accounts::register_household),
        )
        .route(
            "/v1/households/{id}",
            get(sellers::households::get_household).patch(sellers::households::update_household),
        )
        .route(
            "/v1/households/{id}/audit",
            get(audit::list_household_audit),
        )
        .route(
            "/v1/cooperatives",
            post(sellers::cooperatives::create_cooperative),
        )
        .route(
            "/v1/cooperatives/{id}",
            get(sellers::cooperatives::get_cooperative),
        )
        .route(
            "/v1/cooperatives/{id}/members",
            post(sellers::cooperatives::add_member),
        )
        .route(
            "/v1/cooperatives/{id}/members/{household_id}",
            delete(sellers::cooperatives::remove_member),
        )
        .route(
            "/v1/cooperatives/{id}/stock",
            get(stock::pooling::get_cooperative_stock),
        )
        .route(
            "/v1/cooperatives/{id}/pooling",
            post(stock::pooling::pool_lot),
        )
        .route(
            "/v1/cooperatives/{id}/imports",
            post(stock::imports::import_stock),
        )
        .route(
            "/v1/regions/provinces",
            get(catalog::reference::list_provinces),
        )
        .route(
            "/v1/regions/provinces/{code}/communes",
            get(catalog::reference::list_province_communes),
        )
        .route(
            "/v1/regions/communes",
            get(catalog::reference::search_communes),
        )
        .route(
            "/v1/regions/communes/{code}",
            get(catalog::reference::get_commune),
        )
        .route(
            "/v1/regions/legacy-communes/{code}",
            get(catalog::reference::convert_legacy_commune),
        )
        .route("/v1/categories", get(catalog::reference::list_categories))
        .route("/v1/units", get(catalog::reference::list_units))
        .route(
            "/v1/certifications",
            get(catalog::reference::list_certifications),
        )
        .route(
            "/v1/listings",
            post(catalog::listings::create_listing).get(catalog::listings::list_listings),
        )
        .route(
            "/v1/listings/{id}",
            get(catalog::listings::get_listing).patch(catalog::listings::update_listing),
        )
        .route(
            "/v1/listings/{id}/status",
            post(catalog::listings::change_listing_status),
        )
        .route("/v1/listings/{id}/lots", post(stock::lots::create_lot))
        .route(
            "/v1/listings/{id}/adjustments",
            post(stock::lots::adjust_stock),
        )
        .route("/v1/listings/{id}/stock", get(stock::lots::get_stock))
        .route(
            "/v1/listings/{id}/movements",
            get(stock::lots::list_movements),
        )
        .route("/v1/search", get(search::search_listings))
        .route(
            "/v1/internal/seller-access",
            get(access::check_seller_access),
        )
        .route(
            "/v1/internal/reservations",
            post(stock::reservations::handlers::create_reservation),
        )
        .route(
            "/v1/internal/reservations/{id}",
            get(stock::reservations::handlers::get_reservation),
        )
        .route(
            "/v1/internal/reservations/{id}/commit",
            post(stock::reservations::handlers::commit_reservation),
        )
        .route(
            "/v1/internal/reservations/{id}/release",
            post(stock::reservations::handlers::release_reservation),
        )
        .with_state(state)
}

/// Opens the schema, runs migrations, starts the reservation sweeper, and returns the
/// service ready to be served.
pub async fn start(platform: &Platform) -> anyhow::Result<Service> {
    let pool = platform.open_schema(NAME, &MIGRATOR).await?;
    // Parse the embedded reference data now, not on the first request.
    reference::reference();
    let search = search::engine_for(&platform.settings).await?;
    if let Err(e) = search::indexer::backfill_if_empty(&pool, search.as_ref()).await {
        tracing::warn!(
            error = format!("{e:#}"),
            "cannot tell whether the search index is empty; not backfilling now"
        );
    }
    let state = AppState(Arc::new(App {
        pool: pool.clone(),
        keys: platform.keys.clone(),
        limiter: platform.limiter.clone(),
        search: search.clone(),
    }));
    // The service follows its own events to keep the search index current.
    let inbox = Inbox::new(NAME, pool.clone(), platform.events)
        .on(EventType::ListingChanged, search::indexer::MarkDirty)
        .on(EventType::StockChanged, search::indexer::MarkDirty)
        .on(
            EventType::OrderPaid,
            stock::reservations::consumers::CommitOrderLines,
        )
        .on(
            EventType::OrderConfirmed,
            stock::reservations::consumers::CommitOrderLines,
        )
        .on(
            EventType::OrderCancelled,
            stock::reservations::consumers::GiveBackOrderLines,
        )
        .on(
            EventType::OrderReturned,
            stock::reservations::consumers::GiveBackOrderLines,
        );
    let mut service = Service::new(
        platform,
        NAME,
        pool.clone(),
        router(state),
        Some((inbox, &[NAME, "order"])),
    )
    .await;
    service
        .readiness
        .push(Arc::new(SearchReadiness(search.clone())));
    service
        .workers
        .push(tokio::spawn(search::indexer::run(pool.clone(), search)));
    service
        .workers
        .push(tokio::spawn(stock::reservations::sweeper::run_sweeper(
            pool,
            SWEEP_EVERY,
        )));
    Ok(service)
}

/// Readiness of the search engine.
struct SearchReadiness(Arc<dyn search::SearchEngine>);

#[async_trait::async_trait]
impl Readiness for SearchReadiness {
    fn name(&self) -> &str {
        "search"
    }

    fn mode(&self) -> Mode {
        search::readiness_mode(self.0.as_ref())
    }

    async fn check(&self) -> anyhow::Result<()> {
        self.0.count().await?;
        Ok(())
    }
}
