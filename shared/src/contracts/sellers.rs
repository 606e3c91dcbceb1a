//! Who sells: a farm household or a cooperative.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The kind of a seller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum SellerKind {
    /// A farm household, selling its own stock.
    Household,
    /// A cooperative, selling the pooled stock of its member households.
    Cooperative,
}

impl SellerKind {
    /// As written on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            SellerKind::Household => "household",
            SellerKind::Cooperative => "cooperative",
        }
    }
}

/// A seller, as the listing service names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Seller {
    /// `household` or `cooperative`.
    pub kind: SellerKind,
    /// The household's account id or the cooperative's id.
    pub id: uuid::Uuid,
    /// Its name.
    pub name: String,
}
