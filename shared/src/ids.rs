//! Typed ids: UUIDv7 newtypes, so a listing id can never be passed where an order id is
//! expected. UUIDv7 sorts by creation time, which keeps B-tree inserts local.

/// Declares a UUIDv7 id newtype with serde, sqlx and OpenAPI support.
#[macro_export]
macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
            ::serde::Serialize, ::serde::Deserialize, ::sqlx::Type, ::utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub ::uuid::Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn new() -> Self {
                Self(::uuid::Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(&self.0, f)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = ::uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }

        impl From<::uuid::Uuid> for $name {
            fn from(u: ::uuid::Uuid) -> Self {
                Self(u)
            }
        }
    };
}

id_type!(
    /// An account: a household, buyer, manager, helper or operator.
    AccountId
);
id_type!(
    /// An event in an outbox.
    EventId
);
id_type!(
    /// A listing.
    ListingId
);
id_type!(
    /// A cooperative.
    CooperativeId
);
id_type!(
    /// A checkout: one basket, one payment.
    CheckoutId
);
id_type!(
    /// One seller's order within a checkout.
    OrderId
);
id_type!(
    /// A stock reservation.
    ReservationId
);
id_type!(
    /// A payment.
    PaymentId
);
id_type!(
    /// A refund of (part of) a payment.
    RefundId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_7_and_ordered() {
        let a = ListingId::new();
        let b = ListingId::new();
        assert_eq!(a.0.get_version_num(), 7);
        assert!(a <= b);
        assert_eq!(a.to_string().parse::<ListingId>().unwrap(), a);
    }
}
