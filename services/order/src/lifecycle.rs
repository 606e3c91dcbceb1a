//! The order state machine: which action moves an order from which status, and who may
//! take it.
//!
//! ```text
//! online:  pending_payment → paid → confirmed → shipped → delivered
//! cash:    placed → confirmed → shipped → delivered (cash collected)
//!          shipped → delivery_failed → returned (stock back)
//! buyer:   cancel before shipping (stock back, refund asked of payment)
//! seller:  decline with a reason before confirming
//! system:  an unpaid or unconfirmed order expires
//! ```

use serde::{Deserialize, Serialize};

/// Something that happens to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The seller accepts the order.
    Confirm,
    /// The seller hands it to the carrier.
    Ship,
    /// It reached the buyer (for cash on delivery, the cash was collected).
    Deliver,
    /// The carrier could not deliver it.
    FailDelivery,
    /// It came back to the seller.
    Return,
    /// The buyer cancels.
    Cancel,
    /// The seller declines, with a reason.
    Decline,
    /// The payment succeeded (the system).
    MarkPaid,
    /// Nobody paid or confirmed in time (the system).
    Expire,
}

/// Who takes an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The buyer.
    Buyer,
    /// The seller, or one acting for it.
    Seller,
    /// nongsan itself.
    System,
}

impl Action {
    /// Who may take it.
    pub fn party(self) -> Party {
        match self {
            Action::Cancel => Party::Buyer,
            Action::MarkPaid | Action::Expire => Party::System,
            _ => Party::Seller,
        }
    }

    /// The status it leads to from `status`, or `None` when it is not allowed from there.
    pub fn next(self, status: &str) -> Option<&'static str> {
        Some(match (self, status) {
            (Action::MarkPaid, "pending_payment") => "paid",
            (Action::Confirm, "paid" | "placed") => "confirmed",
            (Action::Ship, "confirmed") => "shipped",
            (Action::Deliver, "shipped") => "delivered",
            (Action::FailDelivery, "shipped") => "delivery_failed",
            (Action::Return, "delivery_failed") => "returned",
            (Action::Cancel, "pending_payment" | "placed" | "paid" | "confirmed") => "cancelled",
            (Action::Decline, "pending_payment" | "placed" | "paid") => "declined",
            (Action::Expire, "pending_payment" | "placed") => "expired",
            _ => return None,
        })
    }

    /// The event the new status is told with, if any.
    pub fn event(self) -> Option<&'static str> {
        match self {
            Action::MarkPaid => Some("order.paid"),
            Action::Confirm => Some("order.confirmed"),
            Action::Deliver => Some("order.delivered"),
            Action::Return => Some("order.returned"),
            Action::Cancel | Action::Decline | Action::Expire => Some("order.cancelled"),
            Action::Ship | Action::FailDelivery => Some("order.status_changed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cash_on_delivery_runs_placed_to_delivered() {
        let mut s = "placed";
        for a in [Action::Confirm, Action::Ship, Action::Deliver] {
            s = a.next(s).unwrap();
        }
        assert_eq!(s, "delivered");
    }

    #[test]
    fn nothing_is_cancelled_once_shipped() {
        for s in [
            "shipped",
            "delivered",
            "delivery_failed",
            "returned",
            "cancelled",
            "declined",
            "expired",
        ] {
            assert_eq!(Action::Cancel.next(s), None, "{s}");
        }
        assert_eq!(Action::Decline.next("confirmed"), None);
        assert_eq!(
            Action::Confirm.next("pending_payment"),
            None,
            "an unpaid online order cannot be confirmed"
        );
    }

    #[test]
    fn only_the_buyer_cancels_and_only_the_system_marks_paid() {
        assert_eq!(Action::Cancel.party(), Party::Buyer);
        assert_eq!(Action::Confirm.party(), Party::Seller);
        assert_eq!(Action::MarkPaid.party(), Party::System);
    }
}
