//! A checkout request as the buyer sends it, and its checked form: a [`CheckoutRequest`]
//! becomes a [`NewCheckout`] only through [`TryFrom`], which names every bad field at once.

use nongsan_shared::{ListingId, PhoneNumber, Problems, Quantity, reference::reference};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use nongsan_shared::contracts::payments::PaymentMethod;

use crate::views::Delivery;

/// Most lines a basket may have.
const MAX_LINES: usize = 50;

/// One line of the basket.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineInput {
    /// The listing.
    pub listing_id: ListingId,
    /// How much, in its unit.
    pub quantity: Quantity,
}

/// A checkout request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// The basket: at most 50 lines, one per listing.
    pub lines: Vec<LineInput>,
    /// Where it goes.
    pub delivery: Delivery,
    /// How it is paid.
    pub payment_method: PaymentMethod,
}

/// A checkout request that passed every check.
#[derive(Debug, Clone)]
pub struct NewCheckout {
    /// The basket.
    pub basket: Basket,
    /// Where it goes.
    pub delivery: DeliveryAddress,
    /// How it is paid.
    pub payment_method: PaymentMethod,
}

impl TryFrom<CheckoutRequest> for NewCheckout {
    type Error = Problems;

    /// Checks the basket and the address; the error names each bad field.
    fn try_from(r: CheckoutRequest) -> Result<Self, Problems> {
        let mut p = Problems::new();
        let basket = p.gather(Basket::try_from(r.lines));
        let delivery = p.gather(DeliveryAddress::try_from(r.delivery));
        let (basket, delivery) = p.finish_with(basket.zip(delivery))?;
        Ok(Self {
            basket,
            delivery,
            payment_method: r.payment_method,
        })
    }
}

/// A basket: 1 to 50 lines, each of a quantity above 0, no listing twice. Only [`TryFrom`]
/// makes one.
#[derive(Debug, Clone)]
pub struct Basket(Vec<LineInput>);

impl Basket {
    /// The lines, in the order sent.
    pub fn lines(&self) -> &[LineInput] {
        &self.0
    }
}

impl TryFrom<Vec<LineInput>> for Basket {
    type Error = Problems;

    /// Checks the lines; errors are at `lines` and `lines[i].…`.
    fn try_from(lines: Vec<LineInput>) -> Result<Self, Problems> {
        let mut p = Problems::new();
        p.check(
            lines.is_empty(),
            "lines",
            "empty",
            "the basket is empty",
            "giỏ hàng trống",
        );
        if lines.len() > MAX_LINES {
            // Refused for its size alone: its lines are not read (the check for a listing on
            // two lines compares each line with those before it).
            p.check(
                true,
                "lines",
                "too_many",
                "must have at most 50 lines",
                "tối đa 50 dòng",
            );
            return Err(p);
        }
        for (i, l) in lines.iter().enumerate() {
            p.check(
                !l.quantity.is_positive(),
                &format!("lines[{i}].quantity"),
                "not_positive",
                "must be more than 0",
                "phải lớn hơn 0",
            );
            p.check(
                lines[..i].iter().any(|o| o.listing_id == l.listing_id),
                &format!("lines[{i}].listing_id"),
                "duplicate",
                "appears on an earlier line",
                "đã có ở dòng trước",
            );
        }
        p.finish()?;
        Ok(Self(lines))
    }
}

/// A delivery address that passed its checks: a commune (2025) in its province, a street
/// and a recipient name of the right length, trimmed. Only [`TryFrom`] makes one.
#[derive(Debug, Clone)]
pub struct DeliveryAddress {
    province_code: String,
    commune_code: String,
    street: String,
    recipient_name: String,
    recipient_phone: PhoneNumber,
}

impl DeliveryAddress {
    /// Province code (2025).
    pub fn province_code(&self) -> &str {
        &self.province_code
    }

    /// Commune code (2025), in that province.
    pub fn commune_code(&self) -> &str {
        &self.commune_code
    }

    /// Street and house number, trimmed.
    pub fn street(&self) -> &str {
        &self.street
    }

    /// Who receives it, trimmed.
    pub fn recipient_name(&self) -> &str {
        &self.recipient_name
    }

    /// Their phone number.
    pub fn recipient_phone(&self) -> &PhoneNumber {
        &self.recipient_phone
    }
}

impl TryFrom<Delivery> for DeliveryAddress {
    type Error = Problems;

    /// Checks the address; errors are at `delivery.…`.
    fn try_from(d: Delivery) -> Result<Self, Problems> {
        let mut p = Problems::new();
        let street = d.street.trim();
        p.check(
            street.is_empty() || d.street.chars().count() > 300,
            "delivery.street",
            "invalid_length",
            "must have 1 to 300 characters",
            "phải có từ 1 đến 300 ký tự",
        );
        let recipient_name = d.recipient_name.trim();
        p.check(
            recipient_name.is_empty() || d.recipient_name.chars().count() > 200,
            "delivery.recipient_name",
            "invalid_length",
            "must have 1 to 200 characters",
            "phải có từ 1 đến 200 ký tự",
        );
        p.check_one_line("delivery.street", street);
        p.check_one_line("delivery.recipient_name", recipient_name);
        for (part, reason) in reference().check_address(&d.province_code, &d.commune_code) {
            p.push(format!("delivery.{part}"), reason);
        }
        p.finish()?;
        Ok(Self {
            street: street.to_owned(),
            recipient_name: recipient_name.to_owned(),
            province_code: d.province_code,
            commune_code: d.commune_code,
            recipient_phone: d.recipient_phone,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(lines: Vec<LineInput>, street: &str) -> CheckoutRequest {
        CheckoutRequest {
            lines,
            delivery: Delivery {
                province_code: "01".into(),
                commune_code: "nowhere".into(),
                street: street.into(),
                recipient_name: " Chị Lan ".into(),
                recipient_phone: PhoneNumber::parse("0912345678").unwrap(),
            },
            payment_method: PaymentMethod::Cod,
        }
    }

    #[test]
    fn every_bad_field_is_named_in_order() {
        let id = ListingId::new();
        let line = |q: &str| LineInput {
            listing_id: id,
            quantity: q.parse().unwrap(),
        };
        let p = NewCheckout::try_from(request(vec![line("0"), line("1")], " ")).unwrap_err();
        let fields: Vec<(String, String)> = p
            .into_errors()
            .into_iter()
            .map(|e| (e.field, e.code.into_owned()))
            .collect();
        assert_eq!(
            fields,
            [
                ("lines[0].quantity".into(), "not_positive".into()),
                ("lines[1].listing_id".into(), "duplicate".into()),
                ("delivery.street".into(), "invalid_length".into()),
                ("delivery.commune_code".into(), "unknown_commune".into()),
            ]
        );
    }

    #[test]
    fn an_empty_basket_is_named() {
        let p = NewCheckout::try_from(request(Vec::new(), "1 Lê Lợi")).unwrap_err();
        assert_eq!(p.0[0].field, "lines");
        assert_eq!(p.0[0].code, "empty");
    }
}
