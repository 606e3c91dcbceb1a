//! Every event the services emit: its name and its body.
//!
//! | event | emitted by | body | followed by |
//! | --- | --- | --- | --- |
//! | `listing.changed` | listing | the listing's id and version | no service of nongsan (the search index follows the mark written with the change, `search_dirty`): published for consumers outside |
//! | `stock.changed` | listing | [`StockChanged`] | no service of nongsan (the search index follows marks of its own, `search_dirty`): published for consumers outside |
//! | `stock.sold` | listing | [`StockSold`]: an order's lines as sold, with the lots that filled them | payment (ledger, member settlement) |
//! | `order.placed` | order | [`OrderEvent`] | payment (an order paid online: what a refund may reach and the ledger books; not a cash-on-delivery order, which its delivery makes known) |
//! | `order.paid`, `order.confirmed`, `order.delivered`, `order.returned`, `order.cancelled`, `order.status_changed` | order | [`OrderEvent`] | listing (stock: paid, confirmed, returned, cancelled); payment (delivered) |
//! | `order.refund_due` | order | [`RefundDue`] | payment |
//! | `payment.succeeded`, `payment.failed` | payment | [`PaymentEvent`] | order |
//! | `payment.refunded` | payment | [`RefundEvent`] | order |

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    orders::{OrderAction, OrderStatus},
    payments::{PaymentMethod, RefundReason, RefundStatus},
    sellers::Seller,
};
use crate::{
    AccountId, CheckoutId, ListingId, OrderId, PaymentId, Quantity, RefundId, ReservationId, Vnd,
};

/// The name of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum EventType {
    /// A listing was created or changed (any field, its status, its stock).
    #[serde(rename = "listing.changed")]
    ListingChanged,
    /// A listing's stock levels changed.
    #[serde(rename = "stock.changed")]
    StockChanged,
    /// An order's lines were sold from their lots.
    #[serde(rename = "stock.sold")]
    StockSold,
    /// An order was made by a checkout.
    #[serde(rename = "order.placed")]
    OrderPlaced,
    /// An online order was paid.
    #[serde(rename = "order.paid")]
    OrderPaid,
    /// The seller confirmed an order.
    #[serde(rename = "order.confirmed")]
    OrderConfirmed,
    /// An order was delivered.
    #[serde(rename = "order.delivered")]
    OrderDelivered,
    /// An order came back to its seller.
    #[serde(rename = "order.returned")]
    OrderReturned,
    /// An order was cancelled, declined or expired.
    #[serde(rename = "order.cancelled")]
    OrderCancelled,
    /// Any other move of an order (shipped, delivery failed).
    #[serde(rename = "order.status_changed")]
    OrderStatusChanged,
    /// A payment succeeded.
    #[serde(rename = "payment.succeeded")]
    PaymentSucceeded,
    /// A payment failed.
    #[serde(rename = "payment.failed")]
    PaymentFailed,
    /// Money taken for an order is owed back to the buyer.
    #[serde(rename = "order.refund_due")]
    RefundDue,
    /// A refund reached an end (succeeded or failed at the provider).
    #[serde(rename = "payment.refunded")]
    PaymentRefunded,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 14] = [
        EventType::ListingChanged,
        EventType::StockChanged,
        EventType::StockSold,
        EventType::OrderPlaced,
        EventType::OrderPaid,
        EventType::OrderConfirmed,
        EventType::OrderDelivered,
        EventType::OrderReturned,
        EventType::OrderCancelled,
        EventType::OrderStatusChanged,
        EventType::PaymentSucceeded,
        EventType::PaymentFailed,
        EventType::RefundDue,
        EventType::PaymentRefunded,
    ];

    /// The name on the wire, e.g. `order.paid`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ListingChanged => "listing.changed",
            EventType::StockChanged => "stock.changed",
            EventType::StockSold => "stock.sold",
            EventType::OrderPlaced => "order.placed",
            EventType::OrderPaid => "order.paid",
            EventType::OrderConfirmed => "order.confirmed",
            EventType::OrderDelivered => "order.delivered",
            EventType::OrderReturned => "order.returned",
            EventType::OrderCancelled => "order.cancelled",
            EventType::OrderStatusChanged => "order.status_changed",
            EventType::PaymentSucceeded => "payment.succeeded",
            EventType::PaymentFailed => "payment.failed",
            EventType::RefundDue => "order.refund_due",
            EventType::PaymentRefunded => "payment.refunded",
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown event type `{s}`"))
    }
}

/// An event body: the type it is written with and read as.
pub trait EventBody: Serialize + serde::de::DeserializeOwned {}

/// `listing.changed`: which listing, at which version. Followers read the listing as it is
/// now (the search indexer does), so a late event never brings back an old state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ListingChanged {
    /// The listing.
    pub listing_id: ListingId,
    /// Its version after the change.
    pub version: i64,
}
impl EventBody for ListingChanged {}

/// A listing's stock levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StockLevels {
    /// In the seller's hands.
    pub on_hand: Quantity,
    /// Held for buyers' checkouts.
    pub reserved: Quantity,
    /// What can still be ordered.
    pub available: Quantity,
    /// Available is at or below the seller's low-stock threshold.
    pub low_stock: bool,
}

impl StockLevels {
    /// From on-hand and reserved.
    pub fn new(on_hand: Quantity, reserved: Quantity, threshold: Option<Quantity>) -> Self {
        let available = Self::available_of(on_hand, reserved);
        Self {
            on_hand,
            reserved,
            available,
            low_stock: threshold.is_some_and(|t| available <= t),
        }
    }

    /// What can still be ordered of `on_hand` with `reserved` held: never below zero.
    pub fn available_of(on_hand: Quantity, reserved: Quantity) -> Quantity {
        on_hand.checked_sub(reserved).unwrap_or(Quantity::ZERO)
    }
}

/// `stock.changed`: a listing's stock levels after a movement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StockChanged {
    /// The listing.
    pub listing_id: ListingId,
    /// Its levels now.
    pub stock: StockLevels,
}
impl EventBody for StockChanged {}

/// `stock.sold`: an order's lines, as the listing service sold them from its lots (on
/// `order.paid`, or `order.confirmed` for cash on delivery). The payment side books
/// commission per line and splits a cooperative's sale among the member households whose
/// lots filled it from this, never from the listing service's tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StockSold {
    /// The order.
    pub order_id: OrderId,
    /// The reservation its stock was held in.
    pub reservation_id: ReservationId,
    /// Who sold.
    pub seller: Seller,
    /// The order's lines.
    pub lines: Vec<SoldLine>,
}
impl EventBody for StockSold {}

/// One line of an order, as sold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SoldLine {
    /// The listing.
    pub listing_id: ListingId,
    /// Its title when sold.
    pub title: String,
    /// Its category code (commission is by category).
    pub category: String,
    /// Its unit.
    pub unit: String,
    /// How much.
    pub quantity: Quantity,
    /// Price × quantity, whole đồng.
    pub line_total: Vnd,
    /// The lots that filled it, oldest harvest first.
    pub lots: Vec<SoldLot>,
}

/// A lot's part of a sold line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SoldLot {
    /// The lot's id (what a recall names).
    #[serde(default)]
    pub lot_id: Option<uuid::Uuid>,
    /// The lot's code.
    pub lot_code: String,
    /// The household that grew it (a member household, for a cooperative's pooled lot).
    pub household_id: Option<AccountId>,
    /// How much of the line it filled.
    pub quantity: Quantity,
}

/// `order.*`: an order and the move that made it what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrderEvent {
    /// The order.
    pub order_id: OrderId,
    /// Its checkout.
    pub checkout_id: CheckoutId,
    /// The reservation holding its stock.
    pub reservation_id: ReservationId,
    /// Its lines' listings.
    pub listing_ids: Vec<ListingId>,
    /// The buyer.
    pub buyer_id: AccountId,
    /// The seller.
    pub seller: Seller,
    /// The status before the move (none for `order.placed`).
    #[serde(default)]
    pub from: Option<OrderStatus>,
    /// The status after it.
    pub status: OrderStatus,
    /// The move (none for `order.placed`).
    #[serde(default)]
    pub action: Option<OrderAction>,
    /// The reason given (a decline, a cancellation).
    #[serde(default)]
    pub reason: Option<String>,
    /// How the buyer pays.
    pub payment_method: PaymentMethod,
    /// Lines and delivery fee.
    pub total_vnd: Vnd,
    /// Whether the cash was collected (cash on delivery, once delivered).
    #[serde(default)]
    pub cash_collected: bool,
}
impl EventBody for OrderEvent {}

/// `payment.succeeded` and `payment.failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PaymentEvent {
    /// The payment.
    pub payment_id: PaymentId,
    /// The checkout it pays.
    pub checkout_id: CheckoutId,
    /// The amount.
    pub amount_vnd: Vnd,
    /// The provider.
    pub method: PaymentMethod,
    /// The provider's transaction reference.
    pub provider_ref: String,
}
impl EventBody for PaymentEvent {}

/// `order.refund_due`: the order side owes a buyer money it was paid: an order cancelled,
/// declined or returned after payment, or a payment that arrived for orders no longer
/// alive (the checkout expired, a seller declined first). One per order and reason, so the
/// payment service refunds it once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RefundDue {
    /// The checkout whose payment is refunded.
    pub checkout_id: CheckoutId,
    /// The order the money was for.
    pub order_id: OrderId,
    /// How much: the order's total (lines and delivery fee).
    pub amount_vnd: Vnd,
    /// Why.
    pub reason: RefundReason,
}
impl EventBody for RefundDue {}

/// `payment.refunded`: a refund reached an end at the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RefundEvent {
    /// The refund.
    pub refund_id: RefundId,
    /// The payment refunded.
    pub payment_id: PaymentId,
    /// Its checkout.
    pub checkout_id: CheckoutId,
    /// The order it is for, when it is for one.
    pub order_id: Option<OrderId>,
    /// How much.
    pub amount_vnd: Vnd,
    /// Why.
    pub reason: RefundReason,
    /// Succeeded or failed.
    pub status: RefundStatus,
}
impl EventBody for RefundEvent {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_reads_back_from_its_name() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
            assert_eq!(
                serde_json::to_value(t).ok(),
                Some(serde_json::Value::from(t.as_str()))
            );
        }
        assert!("order.unknown".parse::<EventType>().is_err());
    }
}
