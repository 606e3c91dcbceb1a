//! `GET /v1/internal/seller-access` (listing): may this actor act for this seller? The order
//! service asks before a seller reads or changes its orders.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::sellers::SellerKind;
use crate::{AccountId, auth::Role};

/// Who asks whether it may act for a seller (query parameters).
#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SellerAccessQuery {
    /// The actor's account.
    pub actor_id: AccountId,
    /// The actor's role.
    pub role: Role,
    /// The household it says it acts for.
    pub on_behalf_of: Option<AccountId>,
    /// `household` or `cooperative`.
    pub seller_kind: SellerKind,
    /// The seller's id.
    pub seller_id: uuid::Uuid,
}

/// Whether it may.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct SellerAccess {
    /// True when the actor may act for the seller.
    pub allowed: bool,
}
