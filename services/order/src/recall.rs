//! Recalls: which orders received a lot, with whom to call. The lots of each order come
//! from `stock.sold` (the listing service tells which lots filled an order's lines when it
//! sells them); the order service never reads the listing service's tables.

use axum::{Json as AxumJson, extract::State};
use chrono::{DateTime, Utc};
use nongsan_shared::{
    AccountId, ApiError, OrderId, PhoneNumber, Quantity,
    auth::{Actor, Role},
    contracts::{events::StockSold, orders::OrderStatus},
    events::{Envelope, Handler},
    http::{Path, Query},
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;

/// `stock.sold`: remembers which lots filled the order.
#[derive(Debug, Clone, Copy)]
pub struct RecordLots;

#[async_trait::async_trait]
impl Handler for RecordLots {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> anyhow::Result<()> {
        let sold: StockSold = event.body()?;
        for line in &sold.lines {
            for lot in &line.lots {
                let Some(lot_id) = lot.lot_id else { continue };
                sqlx::query!(
                    "INSERT INTO order_lots (order_id, listing_id, lot_id, lot_code, household_id, quantity)
                     SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM orders WHERE id = $1)
                     ON CONFLICT (order_id, lot_id) DO NOTHING",
                    sold.order_id.0,
                    line.listing_id.0,
                    lot_id,
                    lot.lot_code,
                    lot.household_id.map(|h| h.0),
                    lot.quantity as _,
                )
                .execute(&mut *tx)
                .await?;
            }
        }
        Ok(())
    }
}

/// One order that received the lot.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecalledOrder {
    /// The order.
    pub order_id: OrderId,
    /// Where it stands.
    pub status: OrderStatus,
    /// The buyer's account.
    pub buyer_id: AccountId,
    /// Who received it.
    pub recipient_name: String,
    /// Their phone.
    #[schema(value_type = String)]
    pub recipient_phone: PhoneNumber,
    /// Province and commune codes of the delivery.
    pub province_code: String,
    /// Commune code.
    pub commune_code: String,
    /// How much of the lot it received.
    #[schema(value_type = String)]
    pub quantity: Quantity,
    /// When it was ordered.
    pub ordered_at: DateTime<Utc>,
}

/// A page of a recall.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecallPage {
    /// The orders, oldest first.
    pub items: Vec<RecalledOrder>,
    /// Pass as `after` for the next page; none at the end.
    pub next_after: Option<OrderId>,
}

/// Paging.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RecallQuery {
    /// Orders after this one.
    pub after: Option<OrderId>,
    /// At most this many, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// Every order that received a lot, with the buyer to contact (operators, for a recall).
#[utoipa::path(get, path = "/v1/ops/order/lots/{lot_id}/orders", tag = "order",
    params(("lot_id" = uuid::Uuid, Path, description = "The lot (its id, as on the order's lines)"), RecallQuery),
    responses((status = 200, body = RecallPage), (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 422, body = nongsan_shared::error::ProblemSchema)),
    security(("bearer" = [])))]
pub async fn orders_of_lot(
    State(app): State<AppState>,
    actor: Actor,
    Path(lot): Path<uuid::Uuid>,
    Query(q): Query<RecallQuery>,
) -> Result<AxumJson<RecallPage>, ApiError> {
    if actor.role != Role::Operator {
        return Err(ApiError::forbidden());
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            "out_of_range",
            nongsan_shared::Text::new("must be 1 to 500", "phải từ 1 đến 500"),
        ));
    }
    let mut conn = app.pool.acquire().await?;
    let rows = sqlx::query!(
        r#"SELECT o.id AS "id: OrderId", o.status AS "status: OrderStatus", o.buyer_id AS "buyer_id: AccountId",
              c.recipient_name, c.recipient_phone, c.province_code, c.commune_code, sum(ol.quantity) AS "quantity!: Quantity", o.created_at
           FROM order_lots ol JOIN orders o ON o.id = ol.order_id JOIN checkouts c ON c.id = o.checkout_id
           WHERE ol.lot_id = $1 AND ($2::uuid IS NULL OR o.id > $2)
           GROUP BY o.id, c.id ORDER BY o.id LIMIT $3"#,
        lot,
        q.after.map(|a| a.0),
        limit + 1,
    )
    .fetch_all(&mut *conn)
    .await?;
    let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
    let mut items: Vec<RecalledOrder> = Vec::with_capacity(rows.len());
    for r in rows.into_iter().take(usize::try_from(limit).unwrap_or(100)) {
        items.push(RecalledOrder {
            order_id: r.id,
            status: r.status,
            buyer_id: r.buyer_id,
            recipient_name: r.recipient_name,
            recipient_phone: PhoneNumber::parse(&r.recipient_phone).map_err(|e| {
                ApiError::internal(anyhow::anyhow!(
                    "a stored phone number does not read back: {e}"
                ))
            })?,
            province_code: r.province_code,
            commune_code: r.commune_code,
            quantity: r.quantity,
            ordered_at: r.created_at,
        });
    }
    tracing::info!(lot = %lot, orders = items.len(), operator = %actor.account_id, "recall read");
    let next_after = if more {
        items.last().map(|i| i.order_id)
    } else {
        None
    };
    Ok(AxumJson(RecallPage { items, next_after }))
}
