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
pub mod views;

use std::{ops::Deref, sync::Arc};

use axum::{
    Router,
    extract::FromRef,
    routing::{get, post},
};
use nongsan_shared::{
    auth::TokenKeys,
    config::Settings,
    events::Inbox,
    runtime::{Peers, Platform, Service},
};
use sqlx::{PgPool, migrate::Migrator};

/// The service's name, which is also its schema and its event stream.
pub const NAME: &str = "order";

/// The service's own migrations; version 1 (the event tables) comes from the shared crate.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/order");

/// The service's dependencies.
#[derive(Debug)]
pub struct App {
    /// The `order` schema.
    pub pool: PgPool,
    /// Token keys.
    pub keys: TokenKeys,
    /// The other services.
    pub peers: Peers,
    /// Delivery fee and time limits.
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
    paths(checkout::create_checkout, checkout::get_checkout, checkout::list_checkouts, orders::get_order, orders::list_orders, orders::act_on_order),
    components(schemas(
        nongsan_shared::contracts::orders::OrderAction,
        nongsan_shared::contracts::orders::OrderStatus,
        nongsan_shared::contracts::payments::PaymentMethod
    )),
    tags((name = "order", description = "checkout, per-seller orders, the order state machine and the reservation saga"))
)]
pub struct ApiDoc;

/// The service's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/checkouts",
            post(checkout::create_checkout).get(checkout::list_checkouts),
        )
        .route("/v1/checkouts/{id}", get(checkout::get_checkout))
        .route("/v1/orders", get(orders::list_orders))
        .route("/v1/orders/{id}", get(orders::get_order))
        .route("/v1/orders/{id}/{action}", post(orders::act_on_order))
        .with_state(state)
}

/// Opens the schema, runs migrations, starts the expirer and the inbox, and returns the
/// service ready to be served.
pub async fn start(platform: &Platform) -> anyhow::Result<Service> {
    let pool = platform.open_schema(NAME, &MIGRATOR).await?;
    let state = AppState(Arc::new(App {
        pool: pool.clone(),
        keys: platform.keys.clone(),
        peers: platform.peers.clone(),
        settings: platform.settings.clone(),
    }));
    let inbox = Inbox::new(NAME, pool.clone(), platform.events).on(
        nongsan_shared::contracts::events::EventType::PaymentSucceeded,
        orders::MarkPaid,
    );
    let mut service = Service::new(
        platform,
        NAME,
        pool,
        router(state.clone()),
        Some((inbox, &["payment"])),
    )
    .await;
    service
        .workers
        .push(tokio::spawn(checkout::run_expirer(state)));
    Ok(service)
}
