//! The listing service: identity, households and cooperatives, the catalog, inventory and
//! reservations (later also search and traceability).
//!
//! It owns the PostgreSQL schema `listing` and its migrations in `migrations/listing`; it
//! never reads another service's tables.

pub mod access;
pub mod coop;
pub mod error;
pub mod identity;
pub mod inventory;
pub mod listings;
pub mod reference;
pub mod regions;
pub mod reservations;
pub mod search;
pub mod seed;
pub mod sellers;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    routing::{delete, get, post, put},
};
use nongsan_shared::{
    events::Inbox,
    http::{Mode, Readiness},
    runtime::{Platform, Service},
};
use sqlx::migrate::Migrator;

use crate::access::{App, AppState};

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
        identity::register_account, identity::create_session, identity::refresh_session, identity::delete_session,
        identity::activate_account, identity::get_me, identity::grant_role,
        sellers::register_household, sellers::get_household, sellers::update_household, sellers::list_household_audit,
        sellers::create_cooperative, sellers::get_cooperative, sellers::add_member, sellers::remove_member,
        regions::list_provinces, regions::list_province_communes, regions::search_communes, regions::get_commune,
        regions::convert_legacy_commune, regions::list_categories, regions::list_units, regions::list_certifications,
        listings::create_listing, listings::get_listing, listings::list_listings, listings::update_listing, listings::change_listing_status,
        inventory::create_lot, inventory::adjust_stock, inventory::get_stock, inventory::list_movements,
        reservations::create_reservation, reservations::get_reservation, reservations::commit_reservation, reservations::release_reservation,
        coop::get_cooperative_stock, coop::pool_lot, coop::import_stock,
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
        .route("/v1/accounts", post(identity::register_account))
        .route("/v1/accounts/activate", post(identity::activate_account))
        .route("/v1/accounts/{id}/role", put(identity::grant_role))
        .route("/v1/sessions", post(identity::create_session))
        .route("/v1/sessions/refresh", post(identity::refresh_session))
        .route("/v1/sessions/logout", post(identity::delete_session))
        .route("/v1/me", get(identity::get_me))
        .route("/v1/households", post(sellers::register_household))
        .route(
            "/v1/households/{id}",
            get(sellers::get_household).patch(sellers::update_household),
        )
        .route(
            "/v1/households/{id}/audit",
            get(sellers::list_household_audit),
        )
        .route("/v1/cooperatives", post(sellers::create_cooperative))
        .route("/v1/cooperatives/{id}", get(sellers::get_cooperative))
        .route("/v1/cooperatives/{id}/members", post(sellers::add_member))
        .route(
            "/v1/cooperatives/{id}/members/{household_id}",
            delete(sellers::remove_member),
        )
        .route(
            "/v1/cooperatives/{id}/stock",
            get(coop::get_cooperative_stock),
        )
        .route("/v1/cooperatives/{id}/pooling", post(coop::pool_lot))
        .route("/v1/cooperatives/{id}/imports", post(coop::import_stock))
        .route("/v1/regions/provinces", get(regions::list_provinces))
        .route(
            "/v1/regions/provinces/{code}/communes",
            get(regions::list_province_communes),
        )
        .route("/v1/regions/communes", get(regions::search_communes))
        .route("/v1/regions/communes/{code}", get(regions::get_commune))
        .route(
            "/v1/regions/legacy-communes/{code}",
            get(regions::convert_legacy_commune),
        )
        .route("/v1/categories", get(regions::list_categories))
        .route("/v1/units", get(regions::list_units))
        .route("/v1/certifications", get(regions::list_certifications))
        .route(
            "/v1/listings",
            post(listings::create_listing).get(listings::list_listings),
        )
        .route(
            "/v1/listings/{id}",
            get(listings::get_listing).patch(listings::update_listing),
        )
        .route(
            "/v1/listings/{id}/status",
            post(listings::change_listing_status),
        )
        .route("/v1/listings/{id}/lots", post(inventory::create_lot))
        .route(
            "/v1/listings/{id}/adjustments",
            post(inventory::adjust_stock),
        )
        .route("/v1/listings/{id}/stock", get(inventory::get_stock))
        .route(
            "/v1/listings/{id}/movements",
            get(inventory::list_movements),
        )
        .route("/v1/search", get(search::search_listings))
        .route(
            "/v1/internal/seller-access",
            get(access::check_seller_access),
        )
        .route(
            "/v1/internal/reservations",
            post(reservations::create_reservation),
        )
        .route(
            "/v1/internal/reservations/{id}",
            get(reservations::get_reservation),
        )
        .route(
            "/v1/internal/reservations/{id}/commit",
            post(reservations::commit_reservation),
        )
        .route(
            "/v1/internal/reservations/{id}/release",
            post(reservations::release_reservation),
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
        .on("listing.changed", search::indexer::MarkDirty)
        .on("stock.changed", search::indexer::MarkDirty)
        .on("order.paid", reservations::CommitOrderLines)
        .on("order.confirmed", reservations::CommitOrderLines)
        .on("order.cancelled", reservations::GiveBackOrderLines)
        .on("order.returned", reservations::GiveBackOrderLines);
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
        .push(tokio::spawn(reservations::run_sweeper(pool, SWEEP_EVERY)));
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
