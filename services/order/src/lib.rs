//! The order service: checkout across sellers, per-seller orders, the order state machine and
//! the reservation saga.
//!
//! It owns the PostgreSQL schema `order` and its migrations in `migrations/order`; it never
//! reads another service's tables. It asks the listing service to reserve stock and the
//! payment service to open payments, and follows `payment.succeeded`.

pub mod checkout;
pub mod error;
pub mod idempotency;
pub mod lifecycle;
pub mod orders;
pub mod recall;
pub mod views;

use std::sync::Arc;

use nongsan_shared::{
    auth::TokenKeys,
    config::Settings,
    contracts::events::EventType,
    events::Inbox,
    runtime::{Peers, Platform, Service},
};
use sqlx::{PgPool, migrate::Migrator};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

/// The service's name, which is also its schema and its event stream.
pub const NAME: &str = "order";

/// The service's own migrations; versions 1 and 2 (the event tables) come from the shared crate.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/order");

/// The service's dependencies.
#[derive(Debug)]
pub struct App {
    /// The `order` schema.
    pub pool: PgPool,
    /// Connections for a checkout's claim and its store, the hottest statements: given back
    /// without a round trip.
    pub hot: nongsan_shared::db::HotPool,
    /// Token keys.
    pub keys: TokenKeys,
    /// The other services.
    pub peers: Peers,
    /// Delivery fee and time limits.
    pub settings: Arc<Settings>,
}

impl AsRef<TokenKeys> for App {
    fn as_ref(&self) -> &TokenKeys {
        &self.keys
    }
}

/// What every handler shares.
pub type AppState = nongsan_shared::runtime::AppState<App>;

/// The service's tag and the schemas no operation names; the operations come from [`routes`].
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    components(schemas(
        nongsan_shared::contracts::orders::OrderAction,
        nongsan_shared::contracts::orders::OrderStatus,
        nongsan_shared::contracts::payments::PaymentMethod
    )),
    tags((name = "order", description = "checkout, per-seller orders, the order state machine and the reservation saga"))
)]
struct ApiDoc;

/// The service's routes, each handler named once: its path and method come from its
/// `#[utoipa::path]`, which is also its entry in the OpenAPI document
/// (`routes().into_openapi()`). A `routes!` holds the handlers of one path only: utoipa-axum
/// serves each handler of a `routes!` on every path named in it.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(checkout::create_checkout, checkout::list_checkouts))
        .routes(routes!(checkout::get_checkout))
        .routes(routes!(orders::list_orders))
        .routes(routes!(orders::get_order))
        .routes(routes!(orders::act_on_order))
        .routes(routes!(recall::orders_of_lot))
        .routes(routes!(checkout::orphans::reservation_outcomes))
}

/// Opens the schema, runs migrations, starts the expirer and the inbox, and returns the
/// service ready to be served.
pub async fn start(platform: &Platform) -> anyhow::Result<Service> {
    let pool = platform.open_schema(NAME, &MIGRATOR).await?;
    let state = AppState::new(App {
        pool: pool.clone(),
        hot: nongsan_shared::db::HotPool::beside(&pool, platform.settings.database_max_connections),
        keys: platform.keys.clone(),
        peers: platform.peers.clone(),
        settings: platform.settings.clone(),
    });
    let inbox = Inbox::new(NAME, pool.clone(), platform.events)
        .on(EventType::PaymentSucceeded, orders::MarkPaid)
        .on(EventType::PaymentRefunded, orders::RecordRefund)
        .on(EventType::StockSold, recall::RecordLots);
    let mut service = Service::new(
        platform,
        NAME,
        pool,
        routes().with_state(state.clone()).into(),
        Some((inbox, &["payment", "listing"])),
    )
    .await;
    service
        .workers
        .push(tokio::spawn(checkout::run_expirer(state)));
    Ok(service)
}
