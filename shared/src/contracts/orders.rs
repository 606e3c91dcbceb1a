//! Orders as other services see them: their statuses and the actions that move them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where an order stands.
///
/// ```text
/// online:  pending_payment → paid → confirmed → shipped → delivered
/// cash:    placed → confirmed → shipped → delivered (cash collected)
///          shipped → delivery_failed → returned (stock back)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum OrderStatus {
    /// Online payment not received yet.
    PendingPayment,
    /// Cash on delivery, waiting for the seller to confirm.
    Placed,
    /// Paid online.
    Paid,
    /// The seller will send it.
    Confirmed,
    /// On its way.
    Shipped,
    /// Received by the buyer.
    Delivered,
    /// The delivery did not succeed.
    DeliveryFailed,
    /// Came back to the seller.
    Returned,
    /// Cancelled by the buyer.
    Cancelled,
    /// Declined by the seller.
    Declined,
    /// Never paid or never confirmed in time.
    Expired,
}

impl OrderStatus {
    /// As written on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::Placed => "placed",
            OrderStatus::Paid => "paid",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::DeliveryFailed => "delivery_failed",
            OrderStatus::Returned => "returned",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Declined => "declined",
            OrderStatus::Expired => "expired",
        }
    }
}

/// What can be done to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderAction {
    /// The seller will send it.
    Confirm,
    /// The seller sent it.
    Ship,
    /// The buyer received it (cash collected on a cash order).
    Deliver,
    /// The delivery did not succeed.
    FailDelivery,
    /// It came back to the seller.
    Return,
    /// The buyer cancels before shipping.
    Cancel,
    /// The seller declines, with a reason.
    Decline,
    /// The payment service reported the payment (system).
    MarkPaid,
    /// Its time ran out (system).
    Expire,
}
