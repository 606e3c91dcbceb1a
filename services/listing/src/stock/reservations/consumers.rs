//! Order events the listing service follows: stock is sold when an order is paid or confirmed,
//! and given back when it is cancelled or returned.

use sqlx::PgConnection;

use crate::stock::reservations::store::{commit, give_back};
use nongsan_shared::contracts::events::OrderEvent;

/// `order.paid` and a cash-on-delivery `order.confirmed`: the order's lines are sold.
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
        commit(tx, o.reservation_id, Some(&o.listing_ids), None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
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
