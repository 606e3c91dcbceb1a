//! Money: Vietnamese đồng as a whole number. VND has no minor unit, so an amount is never a
//! float and never has decimals.

use serde::{Deserialize, Serialize};

use crate::{invalid::Invalid, quantity::Quantity};

/// An amount of Vietnamese đồng.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[serde(transparent)]
#[sqlx(transparent)]
#[schema(value_type = i64, example = 45000)]
pub struct Vnd(pub i64);

/// Largest amount nongsan accepts in one price or total: one hundred billion đồng.
pub const MAX_VND: i64 = 100_000_000_000;

impl Vnd {
    /// Zero đồng.
    pub const ZERO: Vnd = Vnd(0);

    /// A price or fee: above zero and at most [`MAX_VND`].
    pub fn positive(v: i64) -> Result<Self, Invalid> {
        if v <= 0 {
            return Err(Invalid::new(
                "not_positive",
                "must be more than 0 đồng",
                "phải lớn hơn 0 đồng",
            ));
        }
        Self::non_negative(v)
    }

    /// An amount of zero or more, at most [`MAX_VND`].
    pub fn non_negative(v: i64) -> Result<Self, Invalid> {
        if v < 0 {
            return Err(Invalid::new(
                "negative",
                "must not be negative",
                "không được âm",
            ));
        }
        if v > MAX_VND {
            return Err(Invalid::new(
                "too_large",
                "is larger than 100,000,000,000 đồng",
                "vượt quá 100.000.000.000 đồng",
            ));
        }
        Ok(Vnd(v))
    }

    /// The amount as a number of đồng.
    pub fn get(self) -> i64 {
        self.0
    }

    /// Price × quantity, rounded half away from zero to whole đồng; `None` on overflow.
    pub fn times(self, qty: Quantity) -> Option<Vnd> {
        let total = rust_decimal::Decimal::from(self.0).checked_mul(qty.as_decimal())?;
        let rounded =
            total.round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
        i64::try_from(rounded).ok().map(Vnd)
    }

    /// Sum; `None` on overflow.
    pub fn checked_add(self, other: Vnd) -> Option<Vnd> {
        self.0.checked_add(other.0).map(Vnd)
    }
}

impl std::fmt::Display for Vnd {
    /// Vietnamese style: `45.000 ₫`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = self.0.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push('.');
            }
            out.push(c);
        }
        let sign = if self.0 < 0 { "-" } else { "" };
        write!(f, "{sign}{out} ₫")
    }
}

impl<'de> Deserialize<'de> for Vnd {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        match n.as_i64() {
            Some(v) => Vnd::non_negative(v).map_err(Invalid::into_serde),
            None => Err(Invalid::new(
                "not_whole_dong",
                "must be a whole number of đồng",
                "phải là số đồng nguyên",
            )
            .into_serde()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_total_rounds_half_away_from_zero() {
        let q: Quantity = "1.5".parse().unwrap();
        assert_eq!(Vnd(45_000).times(q), Some(Vnd(67_500)));
        let q: Quantity = "0.333".parse().unwrap();
        assert_eq!(Vnd(1_500).times(q), Some(Vnd(500))); // 499.5 → 500
        assert_eq!(Vnd(i64::MAX).times("2".parse().unwrap()), None);
    }

    #[test]
    fn amounts_must_be_whole_dong() {
        assert!(serde_json::from_str::<Vnd>("45000").is_ok());
        assert!(serde_json::from_str::<Vnd>("45000.5").is_err());
        assert!(serde_json::from_str::<Vnd>("-1").is_err());
        assert!(Vnd::positive(0).is_err());
    }

    #[test]
    fn displays_in_vietnamese_style() {
        assert_eq!(Vnd(1_250_000).to_string(), "1.250.000 ₫");
        assert_eq!(Vnd(500).to_string(), "500 ₫");
    }
}
