//! What the order service answers: checkouts and orders as buyers and sellers see them.

use chrono::{DateTime, Utc};
use nongsan_shared::{
    AccountId, CheckoutId, ListingId, OrderId, PhoneNumber, Quantity, RefundId, Vnd,
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use nongsan_shared::contracts::{
    orders::OrderStatus,
    payments::{PaymentMethod, RefundReason, RefundStatus},
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
    /// Where the goods go and who receives them (its checkout's): the seller delivers.
    pub delivery: Delivery,
    /// Lines.
    pub lines: Vec<OrderLine>,
    /// Money given back for this order, oldest first (each as the provider answered it).
    pub refunds: Vec<OrderRefund>,
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
    pub recipient_phone: PhoneNumber,
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
    /// Where to pay, for VNPay (answered when the checkout is made).
    pub payment_url: Option<String>,
    /// For a card payment through Stripe: the PaymentIntent's client secret the buyer's app
    /// confirms with Stripe.js (answered when the checkout is made).
    pub payment_client_secret: Option<String>,
}

/// An order as stored, with its checkout's payment method.
struct OrderRow {
    id: OrderId,
    checkout_id: CheckoutId,
    buyer_id: AccountId,
    seller_kind: SellerKind,
    seller_id: uuid::Uuid,
    seller_name: String,
    status: OrderStatus,
    payment_method: PaymentMethod,
    items_total: Vnd,
    delivery_fee: Vnd,
    total: Vnd,
    cash_collected: bool,
    reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    province_code: String,
    commune_code: String,
    street: String,
    recipient_name: String,
    recipient_phone: PhoneNumber,
}

/// A refund of (part of) an order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct OrderRefund {
    /// The payment service's refund id.
    pub id: RefundId,
    /// How much.
    pub amount_vnd: Vnd,
    /// Why.
    pub reason: RefundReason,
    /// `succeeded`, or `failed` (the provider refused; an operator looks into it).
    pub status: RefundStatus,
    /// When the provider answered.
    pub at: DateTime<Utc>,
}

async fn to_views(conn: &mut PgConnection, rows: Vec<OrderRow>) -> Result<Vec<OrderView>> {
    let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.id.0).collect();
    let refunds = sqlx::query!(
        r#"SELECT id AS "id: RefundId", order_id AS "order_id: OrderId", amount_vnd AS "amount_vnd: Vnd",
                reason AS "reason: RefundReason", status AS "status: RefundStatus", at
           FROM order_refunds WHERE order_id = ANY($1) ORDER BY at, id"#,
        &ids[..],
    )
    .fetch_all(&mut *conn)
    .await?;
    let lines = sqlx::query!(
        r#"SELECT order_id AS "order_id: OrderId", listing_id AS "listing_id: ListingId", title, unit,
                quantity AS "quantity: Quantity", unit_price AS "unit_price: Vnd", line_total AS "line_total: Vnd"
           FROM order_lines WHERE order_id = ANY($1) ORDER BY order_id, line_no"#,
        &ids[..],
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| OrderView {
            delivery: Delivery {
                province_code: r.province_code,
                commune_code: r.commune_code,
                street: r.street,
                recipient_name: r.recipient_name,
                recipient_phone: r.recipient_phone,
            },
            id: r.id,
            checkout_id: r.checkout_id,
            buyer_id: r.buyer_id,
            seller: Seller {
                kind: r.seller_kind,
                id: r.seller_id,
                name: r.seller_name,
            },
            status: r.status,
            payment_method: r.payment_method,
            items_total: r.items_total,
            delivery_fee: r.delivery_fee,
            total: r.total,
            cash_collected: r.cash_collected,
            reason: r.reason,
            lines: lines
                .iter()
                .filter(|l| l.order_id == r.id)
                .map(|l| OrderLine {
                    listing_id: l.listing_id,
                    title: l.title.clone(),
                    unit: l.unit.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                    line_total: l.line_total,
                    lots: None,
                })
                .collect(),
            refunds: refunds
                .iter()
                .filter(|f| f.order_id == r.id)
                .map(|f| OrderRefund {
                    id: f.id,
                    amount_vnd: f.amount_vnd,
                    reason: f.reason,
                    status: f.status,
                    at: f.at,
                })
                .collect(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
        .collect())
}

/// Loads one order.
pub async fn load_order(conn: &mut PgConnection, id: OrderId) -> Result<OrderView> {
    let row = sqlx::query_as!(
        OrderRow,
        r#"SELECT o.id AS "id: OrderId", o.checkout_id AS "checkout_id: CheckoutId", o.buyer_id AS "buyer_id: AccountId",
                o.seller_kind AS "seller_kind: SellerKind", o.seller_id, o.seller_name, o.status AS "status: OrderStatus",
                c.payment_method AS "payment_method: PaymentMethod", o.items_total AS "items_total: Vnd",
                o.delivery_fee AS "delivery_fee: Vnd", o.total AS "total: Vnd", o.cash_collected, o.reason, o.created_at, o.updated_at,
                c.province_code, c.commune_code, c.street, c.recipient_name, c.recipient_phone AS "recipient_phone: PhoneNumber"
           FROM orders o JOIN checkouts c ON c.id = o.checkout_id
           WHERE o.id = $1"#,
        id.0,
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(OrderError::NotFound("order"))?;
    Ok(to_views(conn, vec![row]).await?.remove(0))
}

/// Which orders to load.
#[derive(Debug, Default, Clone)]
pub struct OrderFilter {
    /// Of this buyer.
    pub buyer: Option<AccountId>,
    /// Of this seller (kind, id).
    pub seller: Option<(SellerKind, uuid::Uuid)>,
    /// In this status.
    pub status: Option<OrderStatus>,
    /// Only orders older than this one (made at, id): keyset paging.
    pub before: Option<(DateTime<Utc>, OrderId)>,
    /// At most this many (all when `None`).
    pub limit: Option<i64>,
}

/// Loads orders, newest first, at most 200.
pub async fn load_orders(conn: &mut PgConnection, f: &OrderFilter) -> Result<Vec<OrderView>> {
    let rows = sqlx::query_as!(
        OrderRow,
        r#"SELECT o.id AS "id: OrderId", o.checkout_id AS "checkout_id: CheckoutId", o.buyer_id AS "buyer_id: AccountId",
                o.seller_kind AS "seller_kind: SellerKind", o.seller_id, o.seller_name, o.status AS "status: OrderStatus",
                c.payment_method AS "payment_method: PaymentMethod", o.items_total AS "items_total: Vnd",
                o.delivery_fee AS "delivery_fee: Vnd", o.total AS "total: Vnd", o.cash_collected, o.reason, o.created_at, o.updated_at,
                c.province_code, c.commune_code, c.street, c.recipient_name, c.recipient_phone AS "recipient_phone: PhoneNumber"
           FROM orders o JOIN checkouts c ON c.id = o.checkout_id
           WHERE ($1::uuid IS NULL OR o.buyer_id = $1)
             AND ($2::text IS NULL OR (o.seller_kind = $2 AND o.seller_id = $3)) AND ($4::text IS NULL OR o.status = $4)
             AND ($5::timestamptz IS NULL OR (o.created_at, o.id) < ($5, $6))
           ORDER BY o.created_at DESC, o.id DESC LIMIT $7"#,
        f.buyer as _,
        f.seller.map(|s| s.0) as _,
        f.seller.map(|s| s.1),
        f.status as _,
        f.before.map(|b| b.0),
        f.before.map(|b| b.1.0),
        f.limit,
    )
    .fetch_all(&mut *conn)
    .await?;
    to_views(conn, rows).await
}

/// A checkout's own columns.
struct CheckoutRow {
    id: CheckoutId,
    status: String,
    payment_method: String,
    expires_at: DateTime<Utc>,
    province_code: String,
    commune_code: String,
    street: String,
    recipient_name: String,
    recipient_phone: PhoneNumber,
    items_total: Vnd,
    delivery_total: Vnd,
    grand_total: Vnd,
}

/// Loads a checkout with its orders.
///
/// The checkout and its orders by statements of their own for one id, the checkout path's
/// case: PostgreSQL planned their `= ANY($1)` forms again at every call (a plan for ten ids
/// costs more than one for the one given, so the cached plan never won), 0.35 ms of planning
/// a checkout. The lines and refunds (`to_views`) are still read by `= ANY($1)`.
pub async fn load_checkout(conn: &mut PgConnection, id: CheckoutId) -> Result<CheckoutView> {
    let rows = sqlx::query_as!(
        CheckoutRow,
        r#"SELECT id AS "id: CheckoutId", status, payment_method, expires_at, province_code, commune_code, street, recipient_name,
                recipient_phone AS "recipient_phone: PhoneNumber", items_total AS "items_total: Vnd", delivery_total AS "delivery_total: Vnd",
                grand_total AS "grand_total: Vnd"
           FROM checkouts WHERE id = $1"#,
        id.0,
    )
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Err(OrderError::NotFound("checkout"));
    }
    let order_rows = sqlx::query_as!(
        OrderRow,
        r#"SELECT o.id AS "id: OrderId", o.checkout_id AS "checkout_id: CheckoutId", o.buyer_id AS "buyer_id: AccountId",
                o.seller_kind AS "seller_kind: SellerKind", o.seller_id, o.seller_name, o.status AS "status: OrderStatus",
                c.payment_method AS "payment_method: PaymentMethod", o.items_total AS "items_total: Vnd",
                o.delivery_fee AS "delivery_fee: Vnd", o.total AS "total: Vnd", o.cash_collected, o.reason, o.created_at, o.updated_at,
                c.province_code, c.commune_code, c.street, c.recipient_name, c.recipient_phone AS "recipient_phone: PhoneNumber"
           FROM orders o JOIN checkouts c ON c.id = o.checkout_id
           WHERE o.checkout_id = $1"#,
        id.0,
    )
    .fetch_all(&mut *conn)
    .await?;
    assemble(conn, &[id], &rows, order_rows)
        .await?
        .pop()
        .ok_or(OrderError::NotFound("checkout"))
}

/// Loads checkouts with their orders, in the order of `ids` (those that do not exist are
/// left out): the same statements for any number.
pub async fn load_checkouts(
    conn: &mut PgConnection,
    ids: &[CheckoutId],
) -> Result<Vec<CheckoutView>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<uuid::Uuid> = ids.iter().map(|i| i.0).collect();
    let rows = sqlx::query_as!(
        CheckoutRow,
        r#"SELECT id AS "id: CheckoutId", status, payment_method, expires_at, province_code, commune_code, street, recipient_name,
                recipient_phone AS "recipient_phone: PhoneNumber", items_total AS "items_total: Vnd", delivery_total AS "delivery_total: Vnd",
                grand_total AS "grand_total: Vnd"
           FROM checkouts WHERE id = ANY($1)"#,
        &raw,
    )
    .fetch_all(&mut *conn)
    .await?;
    // A statement of its own, not `load_orders`'s catch-all, and a lookup per checkout that
    // the planner cannot turn into a scan: the cached generic plans of `checkout_id = ANY($1)`
    // (joined, then with the payment method in a subquery) read every order to find a
    // checkout's, 1.4 ms a checkout at 14,000 orders and 6.7 ms at 25,000 (measured with
    // pg_stat_statements under the checkout benchmark). `OFFSET 0` keeps the subquery whole,
    // so each id is one probe of `orders_checkout`.
    let order_rows = sqlx::query_as!(
        OrderRow,
        r#"SELECT o.id AS "id!: OrderId", o.checkout_id AS "checkout_id!: CheckoutId", o.buyer_id AS "buyer_id!: AccountId",
                o.seller_kind AS "seller_kind!: SellerKind", o.seller_id AS "seller_id!", o.seller_name AS "seller_name!",
                o.status AS "status!: OrderStatus", c.payment_method AS "payment_method!: PaymentMethod",
                o.items_total AS "items_total!: Vnd", o.delivery_fee AS "delivery_fee!: Vnd", o.total AS "total!: Vnd",
                o.cash_collected AS "cash_collected!", o.reason, o.created_at AS "created_at!", o.updated_at AS "updated_at!",
                c.province_code, c.commune_code, c.street, c.recipient_name, c.recipient_phone AS "recipient_phone: PhoneNumber"
           FROM checkouts c
           CROSS JOIN LATERAL (SELECT * FROM orders WHERE orders.checkout_id = c.id OFFSET 0) o
           WHERE c.id = ANY($1)"#,
        &raw,
    )
    .fetch_all(&mut *conn)
    .await?;
    assemble(conn, ids, &rows, order_rows).await
}

/// The views of checkouts `ids` from their rows and their orders' rows.
async fn assemble(
    conn: &mut PgConnection,
    ids: &[CheckoutId],
    rows: &[CheckoutRow],
    order_rows: Vec<OrderRow>,
) -> Result<Vec<CheckoutView>> {
    let mut orders = to_views(conn, order_rows).await?;
    orders.sort_by(|a, b| a.seller.name.cmp(&b.seller.name).then(a.id.cmp(&b.id)));
    let mut views = Vec::with_capacity(rows.len());
    for id in ids {
        let Some(r) = rows.iter().find(|r| r.id == *id) else {
            continue;
        };
        views.push(CheckoutView {
            id: r.id,
            status: r.status.clone(),
            payment_method: r.payment_method.clone(),
            expires_at: r.expires_at,
            delivery: Delivery {
                province_code: r.province_code.clone(),
                commune_code: r.commune_code.clone(),
                street: r.street.clone(),
                recipient_name: r.recipient_name.clone(),
                recipient_phone: r.recipient_phone.clone(),
            },
            items_total: r.items_total,
            delivery_total: r.delivery_total,
            grand_total: r.grand_total,
            orders: orders
                .iter()
                .filter(|o| o.checkout_id == *id)
                .cloned()
                .collect(),
            payment_url: None,
            payment_client_secret: None,
        });
    }
    Ok(views)
}
