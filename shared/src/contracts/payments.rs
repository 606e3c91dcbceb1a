//! `POST /v1/internal/payments` (payment): open a payment for a checkout; how a buyer pays;
//! and refunds.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{AccountId, CheckoutId, PaymentId, Vnd};

/// Why money goes back to a buyer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RefundReason {
    /// The payment arrived for an order no longer alive (its checkout expired, the buyer
    /// cancelled or the seller declined before paying).
    NotPayable,
    /// The buyer cancelled a paid order.
    Cancelled,
    /// The seller declined a paid order.
    Declined,
    /// The delivery was refused and the order came back.
    Returned,
    /// An operator refunded part or all of an order (damaged goods...), with a note.
    Operator,
}

impl RefundReason {
    /// As written on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RefundReason::NotPayable => "not_payable",
            RefundReason::Cancelled => "cancelled",
            RefundReason::Declined => "declined",
            RefundReason::Returned => "returned",
            RefundReason::Operator => "operator",
        }
    }
}

/// Where a refund stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RefundStatus {
    /// Asked of the provider, not answered yet (retried until it is).
    Pending,
    /// The provider returned the money.
    Succeeded,
    /// The provider refused it; the amount is free to refund again.
    Failed,
}

/// How the buyer pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum PaymentMethod {
    /// Cash on delivery.
    Cod,
    /// VNPay.
    Vnpay,
    /// Card, through Stripe.
    Stripe,
    /// The MoMo e-wallet.
    Momo,
}

impl PaymentMethod {
    /// As written on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Cod => "cod",
            PaymentMethod::Vnpay => "vnpay",
            PaymentMethod::Stripe => "stripe",
            PaymentMethod::Momo => "momo",
        }
    }
}

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Opened; the provider has not answered yet.
    Pending,
    /// The provider took the money.
    Succeeded,
    /// The provider refused it.
    Failed,
}

/// A payment to open for a checkout.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OpenPayment {
    /// The checkout.
    pub checkout_id: CheckoutId,
    /// An online method (`vnpay`, `stripe` or `momo`).
    pub method: PaymentMethod,
    /// What the buyer pays.
    pub amount_vnd: Vnd,
    /// The buyer.
    pub buyer_id: AccountId,
    /// The buyer's address, as the provider wants it (VNPay's `vnp_IpAddr`).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub client_ip: Option<std::net::IpAddr>,
}

/// An opened payment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OpenedPayment {
    /// Id.
    pub id: PaymentId,
    /// Where it stands.
    pub status: PaymentStatus,
    /// Where the buyer pays (VNPay).
    pub payment_url: Option<String>,
    /// What the buyer's app confirms the card payment with (Stripe's PaymentIntent client
    /// secret, for Stripe.js).
    #[serde(default)]
    pub client_secret: Option<String>,
}
