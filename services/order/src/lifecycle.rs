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

use nongsan_shared::contracts::{
    events::EventType,
    orders::{OrderAction, OrderStatus},
};

/// The actions, as the order endpoints name them (`/v1/orders/{id}/{action}`).
pub use nongsan_shared::contracts::orders::OrderAction as Action;

/// Who may take an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The order's buyer.
    Buyer,
    /// The order's seller, or who acts for it.
    Seller,
    /// nongsan itself (a payment, an expiry).
    System,
}

/// The state machine, on the action contract.
pub trait Lifecycle {
    /// Who may take the action.
    fn party(self) -> Party;
    /// The status the action moves `status` to, if it may.
    fn next(self, status: OrderStatus) -> Option<OrderStatus>;
    /// The event the move emits.
    fn event(self) -> EventType;
}

impl Lifecycle for OrderAction {
    fn party(self) -> Party {
        match self {
            Action::Cancel => Party::Buyer,
            Action::MarkPaid | Action::Expire => Party::System,
            _ => Party::Seller,
        }
    }

    fn next(self, status: OrderStatus) -> Option<OrderStatus> {
        use OrderStatus as S;
        Some(match (self, status) {
            (Action::MarkPaid, S::PendingPayment) => S::Paid,
            (Action::Confirm, S::Paid | S::Placed) => S::Confirmed,
            (Action::Ship, S::Confirmed) => S::Shipped,
            (Action::Deliver, S::Shipped) => S::Delivered,
            (Action::FailDelivery, S::Shipped) => S::DeliveryFailed,
            (Action::Return, S::DeliveryFailed) => S::Returned,
            (Action::Cancel, S::PendingPayment | S::Placed | S::Paid | S::Confirmed) => {
                S::Cancelled
            }
            (Action::Decline, S::PendingPayment | S::Placed | S::Paid) => S::Declined,
            (Action::Expire, S::PendingPayment | S::Placed) => S::Expired,
            _ => return None,
        })
    }

    fn event(self) -> EventType {
        match self {
            Action::MarkPaid => EventType::OrderPaid,
            Action::Confirm => EventType::OrderConfirmed,
            Action::Deliver => EventType::OrderDelivered,
            Action::Return => EventType::OrderReturned,
            Action::Cancel | Action::Decline | Action::Expire => EventType::OrderCancelled,
            Action::Ship | Action::FailDelivery => EventType::OrderStatusChanged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus as S;

    #[test]
    fn cash_on_delivery_runs_placed_to_delivered() {
        let mut s = S::Placed;
        for a in [Action::Confirm, Action::Ship, Action::Deliver] {
            s = a.next(s).unwrap();
        }
        assert_eq!(s, S::Delivered);
    }

    #[test]
    fn nothing_is_cancelled_once_shipped() {
        for s in [
            S::Shipped,
            S::Delivered,
            S::DeliveryFailed,
            S::Returned,
            S::Cancelled,
            S::Declined,
            S::Expired,
        ] {
            assert_eq!(Action::Cancel.next(s), None, "{s:?}");
        }
        assert_eq!(Action::Decline.next(S::Confirmed), None);
        assert_eq!(
            Action::Confirm.next(S::PendingPayment),
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
