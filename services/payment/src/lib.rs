//! The payment service: payment providers, webhooks, refunds, the double-entry ledger,
//! commission and payouts. VNPay and MoMo payments opened for checkouts and confirmed by IPN
//! (or, when the IPN is lost, by asking the provider), Stripe card payments confirmed by
//! webhook (or by asking Stripe), refunds owed by the order side through its events or
//! asked by an operator; every movement of money booked in the ledger ([`ledger`]), with
//! commission per sold line and cooperative member shares ([`sales`]), seller balances and
//! statements ([`balances`]) and payout batches ([`payouts`]).
//!
//! It owns the PostgreSQL schema `payment` and its migrations in `migrations/payment`; it
//! never reads another service's tables.

pub mod balances;
pub mod hex;
pub mod ledger;
pub mod momo;
pub mod payments;
pub mod payouts;
pub mod reconcile;
pub mod refunds;
pub mod sales;
pub mod stripe;
pub mod vnpay;

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
pub const NAME: &str = "payment";

/// The service's own migrations; versions 1 and 2 (the event tables) come from the shared crate.
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
    /// Calls to providers.
    pub http: reqwest::Client,
    /// Stripe, when its keys are set.
    pub stripe: Option<stripe::Stripe>,
    /// The other services (listing decides who may act for a seller).
    pub peers: Peers,
}

impl AsRef<TokenKeys> for App {
    fn as_ref(&self) -> &TokenKeys {
        &self.keys
    }
}

/// Refuses (403) anyone but an operator.
pub(crate) fn operator_only(
    actor: &nongsan_shared::auth::Actor,
) -> Result<(), nongsan_shared::ApiError> {
    if actor.role == nongsan_shared::auth::Role::Operator {
        Ok(())
    } else {
        Err(nongsan_shared::ApiError::forbidden())
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
        .routes(routes!(payments::handle_momo_ipn))
        .routes(routes!(payments::list_methods))
        .routes(routes!(refunds::refund_order))
        .routes(routes!(stripe::handle_webhook))
        .routes(routes!(sales::list_rates))
        .routes(routes!(sales::set_category_rate))
        .routes(routes!(sales::set_seller_rate))
        .routes(routes!(sales::set_cooperative_fee))
        .routes(routes!(balances::get_balance))
        .routes(routes!(balances::get_statement))
        .routes(routes!(balances::set_payout_account))
        .routes(routes!(payouts::create_batch))
        .routes(routes!(payouts::get_batch))
        .routes(routes!(payouts::transfer_file))
        .routes(routes!(payouts::settle_line))
}

/// Opens the schema, runs migrations, starts the inbox (following the order side), the
/// refund worker and the reconciler, and returns the service ready to be served.
pub async fn start(platform: &Platform) -> anyhow::Result<Service> {
    let pool = platform.open_schema(NAME, &MIGRATOR).await?;
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()?;
    let state = AppState::new(App {
        pool: pool.clone(),
        keys: platform.keys.clone(),
        settings: platform.settings.clone(),
        http,
        stripe: stripe::Stripe::from_settings(&platform.settings)?,
        peers: platform.peers.clone(),
    });
    let wake = Arc::new(tokio::sync::Notify::new());
    let inbox = Inbox::new(NAME, pool.clone(), platform.events)
        .on(EventType::OrderPlaced, refunds::TrackOrder)
        .on(
            EventType::RefundDue,
            refunds::AskRefund { wake: wake.clone() },
        )
        .on(
            EventType::OrderDelivered,
            sales::RecordDelivery {
                hold_secs: platform.settings.payout_hold_secs,
            },
        )
        .on(
            EventType::StockSold,
            sales::RecordSale {
                default_bps: platform.settings.commission_default_bps,
            },
        );
    let router = routes().with_state(state.clone()).into();
    let mut service = Service::new(
        platform,
        NAME,
        pool,
        router,
        Some((inbox, &["order", "listing"])),
    )
    .await;
    service
        .workers
        .push(tokio::spawn(refunds::run_worker(state.clone(), wake)));
    service.workers.push(tokio::spawn(reconcile::run(state)));
    Ok(service)
}
