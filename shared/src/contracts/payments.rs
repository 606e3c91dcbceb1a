//! `POST /v1/internal/payments` (payment): open a payment for a checkout; and how a buyer pays.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{AccountId, CheckoutId, PaymentId, Vnd};

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
}

impl PaymentMethod {
    /// As written on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Cod => "cod",
            PaymentMethod::Vnpay => "vnpay",
            PaymentMethod::Stripe => "stripe",
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
    /// An online method (`vnpay` or `stripe`).
    pub method: PaymentMethod,
    /// What the buyer pays.
    pub amount_vnd: Vnd,
    /// The buyer.
    pub buyer_id: AccountId,
}

/// An opened payment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OpenedPayment {
    /// Id.
    pub id: PaymentId,
    /// Where it stands.
    pub status: PaymentStatus,
    /// Where the buyer pays.
    pub payment_url: Option<String>,
}
