//! What the order service answers: checkouts and orders as buyers and sellers see them.

use chrono::{DateTime, Utc};
use nongsan_shared::{AccountId, CheckoutId, ListingId, OrderId, Quantity, Vnd};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use nongsan_shared::contracts::{
    orders::OrderStatus,
    payments::PaymentMethod,
    reservations::Allocation,
    sellers::{Seller, SellerKind},
};

use crate::error::{OrderError, Result};

/// One line of an order.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct OrderLine {
    /// The listing.
    pub listing_id: ListingId,
    /// Its title when ordered.
    pub title: String,
    /// Its unit.
    pub unit: String,
    /// Quantity.
    pub quantity: Quantity,
    /// Price per unit when ordered.
    pub unit_price: Vnd,
    /// Price × quantity, rounded to whole đồng.
    pub line_total: Vnd,
    /// The lots that filled it, once the stock is sold (only when reading one order).
    #[sqlx(skip)]
    pub lots: Option<Vec<Allocation>>,
}

/// One seller's order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderView {
    /// Id.
    pub id: OrderId,
    /// Its checkout.
    pub checkout_id: CheckoutId,
    /// The buyer.
    pub buyer_id: AccountId,
    /// The seller.
    pub seller: Seller,
    /// Status.
    pub status: OrderStatus,
    /// How it is paid.
    pub payment_method: PaymentMethod,
    /// Sum of the lines.
    pub items_total: Vnd,
    /// The seller's delivery fee.
    pub delivery_fee: Vnd,
    /// What the buyer pays for this order.
    pub total: Vnd,
    /// For cash on delivery: the cash was collected.
    pub cash_collected: bool,
    /// Why it was declined or cancelled.
    pub reason: Option<String>,
    /// Lines.
    pub lines: Vec<OrderLine>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Where the goods go.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// Province code (2025).
    pub province_code: String,
    /// Commune code (2025), in that province.
    pub commune_code: String,
    /// Street, house number.
    pub street: String,
    /// Who receives it.
    pub recipient_name: String,
    /// Their phone number.
    #[schema(value_type = String)]
    pub recipient_phone: nongsan_shared::PhoneNumber,
}

/// One basket, one payment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckoutView {
    /// Id.
    pub id: CheckoutId,
    /// pending_payment, placed, paid, expired or failed.
    pub status: String,
    /// cod, vnpay or stripe.
    pub payment_method: String,
    /// When an unpaid checkout (or an unconfirmed cash order) expires.
    pub expires_at: DateTime<Utc>,
    /// Delivery address.
    pub delivery: Delivery,
    /// Sum of the orders' lines.
    pub items_total: Vnd,
    /// Sum of the delivery fees.
    pub delivery_total: Vnd,
    /// What the buyer pays.
    pub grand_total: Vnd,
    /// One order per seller.
    pub orders: Vec<OrderView>,
    /// Where to pay, for online payment.
    pub payment_url: Option<String>,
}

type OrderRow = (
    OrderId,
    CheckoutId,
    AccountId,
    SellerKind,
    uuid::Uuid,
    String,
    OrderStatus,
    PaymentMethod,
    Vnd,
    Vnd,
    Vnd,
    bool,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
);

const ORDER_SELECT: &str = "SELECT o.id, o.checkout_id, o.buyer_id, o.seller_kind, o.seller_id, o.seller_name, o.status, c.payment_method,
    o.items_total, o.delivery_fee, o.total, o.cash_collected, o.reason, o.created_at, o.updated_at
    FROM orders o JOIN checkouts c ON c.id = o.checkout_id";

async fn to_views(conn: &mut PgConnection, rows: Vec<OrderRow>) -> Result<Vec<OrderView>> {
    let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.0.0).collect();
    let lines: Vec<(OrderId, ListingId, String, String, Quantity, Vnd, Vnd)> = sqlx::query_as(
        "SELECT order_id, listing_id, title, unit, quantity, unit_price, line_total FROM order_lines WHERE order_id = ANY($1) ORDER BY order_id, line_no",
    )
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| OrderView {
            id: r.0,
            checkout_id: r.1,
            buyer_id: r.2,
            seller: Seller {
                kind: r.3,
                id: r.4,
                name: r.5,
            },
            status: r.6,
            payment_method: r.7,
            items_total: r.8,
            delivery_fee: r.9,
            total: r.10,
            cash_collected: r.11,
            reason: r.12,
            lines: lines
                .iter()
                .filter(|l| l.0 == r.0)
                .map(|l| OrderLine {
                    listing_id: l.1,
                    title: l.2.clone(),
                    unit: l.3.clone(),
                    quantity: l.4,
                    unit_price: l.5,
                    line_total: l.6,
                    lots: None,
                })
                .collect(),
            created_at: r.13,
            updated_at: r.14,
        })
        .collect())
}

/// Loads one order.
pub async fn load_order(conn: &mut PgConnection, id: OrderId) -> Result<OrderView> {
    let row: OrderRow = sqlx::query_as(&format!("{ORDER_SELECT} WHERE o.id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(OrderError::NotFound("order"))?;
    Ok(to_views(conn, vec![row]).await?.remove(0))
}

/// Which orders to load.
#[derive(Debug, Default, Clone)]
pub struct OrderFilter {
    /// Of this checkout.
    pub checkout: Option<CheckoutId>,
    /// Of this buyer.
    pub buyer: Option<AccountId>,
    /// Of this seller (kind, id).
    pub seller: Option<(SellerKind, uuid::Uuid)>,
    /// In this status.
    pub status: Option<OrderStatus>,
}

/// Loads orders, newest first, at most 200.
pub async fn load_orders(conn: &mut PgConnection, f: &OrderFilter) -> Result<Vec<OrderView>> {
    let rows: Vec<OrderRow> = sqlx::query_as(&format!(
        "{ORDER_SELECT} WHERE ($1::uuid IS NULL OR o.checkout_id = $1) AND ($2::uuid IS NULL OR o.buyer_id = $2)
           AND ($3::text IS NULL OR (o.seller_kind = $3 AND o.seller_id = $4)) AND ($5::text IS NULL OR o.status = $5)
         ORDER BY o.created_at DESC, o.id LIMIT 200"
    ))
    .bind(f.checkout)
    .bind(f.buyer)
    .bind(f.seller.map(|s| s.0))
    .bind(f.seller.map(|s| s.1))
    .bind(f.status)
    .fetch_all(&mut *conn)
    .await?;
    to_views(conn, rows).await
}

/// Loads a checkout with its orders.
pub async fn load_checkout(conn: &mut PgConnection, id: CheckoutId) -> Result<CheckoutView> {
    type Row = (
        CheckoutId,
        String,
        String,
        DateTime<Utc>,
        String,
        String,
        String,
        String,
        String,
        Vnd,
        Vnd,
        Vnd,
    );
    let r: Row = sqlx::query_as(
        "SELECT id, status, payment_method, expires_at, province_code, commune_code, street, recipient_name, recipient_phone,
                items_total, delivery_total, grand_total FROM checkouts WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(OrderError::NotFound("checkout"))?;
    let mut orders = load_orders(
        conn,
        &OrderFilter {
            checkout: Some(id),
            ..Default::default()
        },
    )
    .await?;
    orders.sort_by(|a, b| a.seller.name.cmp(&b.seller.name).then(a.id.cmp(&b.id)));
    Ok(CheckoutView {
        id: r.0,
        status: r.1,
        payment_method: r.2,
        expires_at: r.3,
        delivery: Delivery {
            province_code: r.4,
            commune_code: r.5,
            street: r.6,
            recipient_name: r.7,
            recipient_phone: nongsan_shared::PhoneNumber::parse(&r.8)
                .map_err(|e| OrderError::Other(anyhow::anyhow!("stored phone: {e}")))?,
        },
        items_total: r.9,
        delivery_total: r.10,
        grand_total: r.11,
        orders,
        payment_url: None,
    })
}
