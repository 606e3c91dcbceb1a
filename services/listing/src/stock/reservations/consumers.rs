//! Order events the listing service follows: stock is sold when an order is paid or confirmed
//! (and the sale told as `stock.sold`, with the lots that filled each line), and given back
//! when it is cancelled or returned.

use sqlx::PgConnection;

use crate::stock::reservations::store::{commit, give_back, load, lock_batch};
use nongsan_shared::{
    ListingId,
    contracts::events::{EventType, OrderEvent, SoldLine, SoldLot, StockSold},
    events,
};

/// `order.paid` and a cash-on-delivery `order.confirmed`: the order's lines are sold, and
/// `stock.sold` tells the payment side what each line was and which lots filled it.
#[derive(Debug, Clone, Copy)]
pub struct CommitOrderLines;

#[async_trait::async_trait]
impl nongsan_shared::events::Handler for CommitOrderLines {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &nongsan_shared::events::Envelope,
    ) -> anyhow::Result<()> {
        let o: OrderEvent = event.body()?;
        let sold_now = commit(tx, o.reservation_id, Some(&o.listing_ids), None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if sold_now == 0 {
            // Sold before (a paid order's confirmation): told then.
            return Ok(());
        }
        let reservation = load(tx, o.reservation_id)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let ids: Vec<uuid::Uuid> = o.listing_ids.iter().map(|l| l.0).collect();
        let categories: Vec<(ListingId, String)> = sqlx::query!(
            r#"SELECT id AS "id: ListingId", category_code FROM listings WHERE id = ANY($1)"#,
            &ids,
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.id, r.category_code))
        .collect();
        let lines = reservation
            .lines
            .into_iter()
            .filter(|l| o.listing_ids.contains(&l.listing_id))
            .map(|l| SoldLine {
                category: categories
                    .iter()
                    .find(|c| c.0 == l.listing_id)
                    .map(|c| c.1.clone())
                    .unwrap_or_default(),
                listing_id: l.listing_id,
                title: l.title,
                unit: l.unit,
                quantity: l.quantity,
                line_total: l.line_total,
                lots: l
                    .allocations
                    .into_iter()
                    .map(|a| SoldLot {
                        lot_id: a.lot_id,
                        lot_code: a.lot_code,
                        household_id: a.household_id,
                        quantity: a.quantity,
                    })
                    .collect(),
            })
            .collect();
        let sold = StockSold {
            order_id: o.order_id,
            reservation_id: o.reservation_id,
            seller: o.seller,
            lines,
        };
        events::emit(tx, EventType::StockSold, &o.order_id.to_string(), 1, &sold).await?;
        Ok(())
    }
}

/// `order.cancelled` (cancelled, declined, expired) and `order.returned`: the order's stock
/// comes back, released if it was only reserved, returned to its lots if it was sold.
#[derive(Debug, Clone, Copy)]
pub struct GiveBackOrderLines;

#[async_trait::async_trait]
impl nongsan_shared::events::Handler for GiveBackOrderLines {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &nongsan_shared::events::Envelope,
    ) -> anyhow::Result<()> {
        let o: OrderEvent = event.body()?;
        give_back(
            tx,
            o.reservation_id,
            &o.listing_ids,
            &event.event_type,
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// The order events the listing service follows, each handled by [`CommitOrderLines`] or
/// [`GiveBackOrderLines`].
pub const ORDER_EVENTS: [EventType; 4] = [
    EventType::OrderPaid,
    EventType::OrderConfirmed,
    EventType::OrderCancelled,
    EventType::OrderReturned,
];

/// The listing inbox's batch locks: the reservations and the stock rows that a batch's order
/// events will touch, in the order one event takes them ([`lock_batch`]), whichever of
/// [`CommitOrderLines`] and [`GiveBackOrderLines`] handles each.
#[derive(Debug, Clone, Copy)]
pub struct LockOrderRows;

#[async_trait::async_trait]
impl nongsan_shared::events::Prelock for LockOrderRows {
    async fn lock(
        &self,
        tx: &mut PgConnection,
        events: &[nongsan_shared::events::Envelope],
    ) -> anyhow::Result<()> {
        let orders: Vec<OrderEvent> = events
            .iter()
            .filter(|e| ORDER_EVENTS.iter().any(|t| t.as_str() == e.event_type))
            .filter_map(|e| e.body().ok())
            .collect();
        if orders.is_empty() {
            return Ok(());
        }
        let reservations: Vec<_> = orders.iter().map(|o| o.reservation_id).collect();
        let listings: Vec<ListingId> = orders
            .iter()
            .flat_map(|o| o.listing_ids.iter().copied())
            .collect();
        lock_batch(tx, &reservations, &listings)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}
