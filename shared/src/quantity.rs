//! Quantities: a decimal with at most three places, in the listing's unit.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::invalid::Invalid;

/// A quantity in a listing's unit (kg, bó, quả...), at most three decimal places, never a
/// float. In JSON it is written as a string (`"1.5"`) and read from a string or a number.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(transparent)]
#[schema(value_type = String, example = "1.5")]
pub struct Quantity(Decimal);

/// Largest magnitude of a quantity: one billion units.
const MAX: i64 = 1_000_000_000;

impl Quantity {
    /// Zero.
    pub const ZERO: Quantity = Quantity(Decimal::ZERO);

    /// One unit.
    pub const ONE: Quantity = Quantity(Decimal::ONE);

    /// Half a unit.
    pub const HALF: Quantity = Quantity(Decimal::from_parts(5, 0, 0, false, 1));

    /// Checks scale and magnitude.
    pub fn new(d: Decimal) -> Result<Self, Invalid> {
        let d = d.normalize();
        if d.scale() > 3 {
            return Err(Invalid::new(
                "too_many_decimals",
                "has more than 3 decimal places",
                "có nhiều hơn 3 chữ số thập phân",
            ));
        }
        if d.abs() > Decimal::from(MAX) {
            return Err(Invalid::new(
                "too_large",
                "is larger than 1,000,000,000",
                "vượt quá 1.000.000.000",
            ));
        }
        Ok(Quantity(d))
    }

    /// A quantity above zero.
    pub fn positive(d: Decimal) -> Result<Self, Invalid> {
        let q = Self::new(d)?;
        if q.0 <= Decimal::ZERO {
            return Err(Invalid::new(
                "not_positive",
                "must be more than 0",
                "phải lớn hơn 0",
            ));
        }
        Ok(q)
    }

    /// The decimal value.
    pub fn as_decimal(self) -> Decimal {
        self.0
    }

    /// Whether it is above zero.
    pub fn is_positive(self) -> bool {
        self.0 > Decimal::ZERO
    }

    /// Whether `self` is a whole multiple of `step` (a step of zero accepts everything).
    pub fn is_multiple_of(self, step: Quantity) -> bool {
        step.0.is_zero() || (self.0 % step.0).is_zero()
    }

    /// Sum; `None` when the result leaves the allowed range.
    pub fn checked_add(self, other: Quantity) -> Option<Quantity> {
        Quantity::new(self.0.checked_add(other.0)?).ok()
    }

    /// Difference; `None` when the result leaves the allowed range.
    pub fn checked_sub(self, other: Quantity) -> Option<Quantity> {
        Quantity::new(self.0.checked_sub(other.0)?).ok()
    }
}

impl std::ops::Neg for Quantity {
    type Output = Quantity;

    fn neg(self) -> Quantity {
        Quantity(-self.0)
    }
}

impl FromStr for Quantity {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Invalid> {
        let d = Decimal::from_str_exact(s.trim()).map_err(|_| {
            Invalid::new(
                "not_a_number",
                "is not a decimal number",
                "không phải là số thập phân",
            )
        })?;
        Quantity::new(d)
    }
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.normalize())
    }
}

impl Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(serde_json::Number),
            Text(String),
        }
        // A JSON number is read through its shortest decimal spelling, never through float
        // arithmetic: 0.3 stays 0.3.
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        text.parse().map_err(Invalid::into_serde)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_three_decimal_places() {
        assert_eq!("1.5".parse::<Quantity>().unwrap().to_string(), "1.5");
        assert_eq!("2.500".parse::<Quantity>().unwrap().to_string(), "2.5");
        assert_eq!("0.125".parse::<Quantity>().unwrap().to_string(), "0.125");
        assert_eq!(
            "1.2345".parse::<Quantity>().unwrap_err().code,
            "too_many_decimals"
        );
        assert!("abc".parse::<Quantity>().is_err());
    }

    #[test]
    fn json_numbers_and_strings_are_read_exactly() {
        let q: Quantity = serde_json::from_str("0.3").unwrap();
        assert_eq!(q.to_string(), "0.3");
        let q: Quantity = serde_json::from_str("\"12.75\"").unwrap();
        assert_eq!(q.to_string(), "12.75");
        assert!(serde_json::from_str::<Quantity>("1.0001").is_err());
        assert_eq!(serde_json::to_string(&q).unwrap(), "\"12.75\"");
    }

    #[test]
    fn steps_are_checked_exactly() {
        let step: Quantity = "0.5".parse().unwrap();
        assert_eq!(step, Quantity::HALF);
        assert_eq!("1".parse::<Quantity>().unwrap(), Quantity::ONE);
        assert!("2.5".parse::<Quantity>().unwrap().is_multiple_of(step));
        assert!(!"2.3".parse::<Quantity>().unwrap().is_multiple_of(step));
        assert!(Quantity::positive(Decimal::ZERO).is_err());
    }
}
