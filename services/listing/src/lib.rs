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
pub mod trace;

pub use catalog::reference;

use std::{sync::Arc, time::Duration};

use nongsan_shared::{
    contracts::events::EventType,
    events::Inbox,
    http::{Mode, Readiness},
    runtime::{Platform, Service},
};
use sqlx::migrate::Migrator;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::{App, AppState};

/// The service's name, which is also its schema and its event stream.
pub const NAME: &str = "listing";

/// The service's own migrations; versions 1 and 2 (the event tables) come from the shared crate.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/listing");

/// How often expired reservations are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The service's tags and the schemas no operation names; the operations come from
/// [`routes`].
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
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
        (name = "traceability", description = "Lots' public pages (GS1 Digital Link), QR codes, labels and certifications"),
    )
)]
struct ApiDoc;

/// The service's routes, each handler named once: its path and method come from its
/// `#[utoipa::path]`, which is also its entry in the OpenAPI document
/// (`routes().into_openapi()`). A `routes!` holds the handlers of one path only: utoipa-axum
/// serves each handler of a `routes!` on every path named in it.
pub fn routes() -> OpenApiRouter<AppState> {
    use catalog::{listings, reference};
    use identity::{accounts, activation, roles, sessions};
    use sellers::{cooperatives, households};
    use stock::{imports, lots, pooling, reservations::handlers as reservations};
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        // identity
        .routes(routes!(accounts::register_account))
        .routes(routes!(activation::activate_account))
        .routes(routes!(roles::grant_role))
        .routes(routes!(sessions::create_session))
        .routes(routes!(sessions::refresh_session))
        .routes(routes!(sessions::delete_session))
        .routes(routes!(accounts::get_me))
        // sellers
        .routes(routes!(accounts::register_household))
        .routes(routes!(
            households::get_household,
            households::update_household
        ))
        .routes(routes!(audit::list_household_audit))
        .routes(routes!(cooperatives::create_cooperative))
        .routes(routes!(cooperatives::get_cooperative))
        .routes(routes!(cooperatives::add_member))
        .routes(routes!(cooperatives::remove_member))
        .routes(routes!(cooperatives::accept_membership))
        .routes(routes!(cooperatives::decline_membership))
        .routes(routes!(cooperatives::approve_membership))
        .routes(routes!(pooling::get_cooperative_stock))
        .routes(routes!(pooling::pool_lot))
        // Files up to their own limit, not the 1 MiB of JSON bodies.
        .merge(
            OpenApiRouter::new()
                .routes(routes!(imports::import_stock))
                .layer(axum::extract::DefaultBodyLimit::max(
                    imports::MAX_IMPORT_BYTES,
                )),
        )
        // reference data
        .routes(routes!(reference::list_provinces))
        .routes(routes!(reference::list_province_communes))
        .routes(routes!(reference::search_communes))
        .routes(routes!(reference::get_commune))
        .routes(routes!(reference::convert_legacy_commune))
        .routes(routes!(reference::list_categories))
        .routes(routes!(reference::list_units))
        .routes(routes!(reference::list_certifications))
        // catalog and stock
        .routes(routes!(listings::create_listing, listings::list_listings))
        .routes(routes!(listings::get_listing, listings::update_listing))
        .routes(routes!(listings::change_listing_status))
        .routes(routes!(lots::create_lot))
        .routes(routes!(lots::adjust_stock))
        .routes(routes!(lots::get_stock))
        .routes(routes!(lots::list_movements))
        .routes(routes!(search::search_listings))
        // traceability: public lot pages and QR codes, labels, certification checks
        .routes(routes!(trace::lot_by_digital_link))
        .routes(routes!(trace::lot_by_short_link))
        .routes(routes!(trace::lot_qr_png))
        .routes(routes!(trace::lot_qr_svg))
        .routes(routes!(trace::listing_labels))
        .routes(routes!(trace::verify_certification))
        // internal, for the order service
        .routes(routes!(access::check_seller_access))
        .routes(routes!(reservations::create_reservation))
        .routes(routes!(reservations::get_reservation))
        .routes(routes!(reservations::commit_reservation))
        .routes(routes!(reservations::release_reservation))
}

/// Opens the schema, runs migrations, starts the reservation sweeper, and returns the
/// service ready to be served.
pub async fn start(platform: &Platform) -> anyhow::Result<Service> {
    let pool = platform.open_schema(NAME, &MIGRATOR).await?;
    // Parse the embedded reference data now, not on the first request.
    reference::reference();
    let search = search::engine_for(&platform.settings).await?;
    let views = Arc::new(catalog::cache::ViewCache::new(
        usize::try_from(platform.settings.listing_cache_mb).unwrap_or(usize::MAX) << 20,
        Duration::from_secs(platform.settings.listing_cache_secs),
    ));
    let state = AppState::new(App {
        pool: pool.clone(),
        hot: nongsan_shared::db::HotPool::beside(&pool, platform.settings.database_max_connections),
        keys: platform.keys.clone(),
        limiter: platform.limiter.clone(),
        search: search.clone(),
        max_hold_share_percent: platform.settings.max_hold_share_percent.clamp(1, 100),
        trace_base: platform.settings.trace_base_url.clone(),
        views: views.clone(),
    });
    // The order events that move stock. The search index follows marks written with each
    // change (`search::dirty`), not the service's own `listing.changed`.
    let inbox = Inbox::new(NAME, pool.clone(), platform.events)
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
        )
        .prelocking(stock::reservations::consumers::LockOrderRows);
    let mut service = Service::new(
        platform,
        NAME,
        pool.clone(),
        axum::Router::from(routes().with_state(state.clone())).layer(
            axum::middleware::from_fn_with_state(state, identity::sessions::require_live_session),
        ),
        Some((inbox, &["order"])),
    )
    .await;
    service
        .readiness
        .push(Arc::new(SearchReadiness(search.clone())));
    // An index short of the catalog is filled beside the serving, not before it: the indexer
    // fills it first.
    service
        .workers
        .push(tokio::spawn(search::indexer::run(pool.clone(), search)));
    service.workers.push(tokio::spawn(catalog::cache::follow(
        views.clone(),
        pool.clone(),
    )));
    service
        .workers
        .push(tokio::spawn(catalog::cache::announce_changes(
            views.clone(),
            pool.clone(),
        )));
    service
        .on_stop
        .push(Box::pin(catalog::cache::flush_announcements(
            views.clone(),
            pool.clone(),
        )));
    service
        .workers
        .push(tokio::spawn(catalog::warm::warm(views, pool.clone())));
    service
        .workers
        .push(tokio::spawn(trace::run_certification_sweep(
            pool.clone(),
            std::time::Duration::from_secs(platform.settings.certification_sweep_secs.max(1)),
        )));
    service
        .workers
        .push(tokio::spawn(stock::reservations::sweeper::run_sweeper(
            pool,
            SWEEP_EVERY,
            platform.peers.order.clone(),
            Duration::from_secs(platform.settings.reservation_orphan_secs.max(1)),
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
