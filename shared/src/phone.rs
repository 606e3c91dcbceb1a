//! Phone numbers, stored in E.164 (`+84...`). A Vietnamese number may be written the
//! national way (`0912 345 678`); any other country's number must start with `+`.

use serde::{Deserialize, Serialize};

use crate::invalid::Invalid;

/// A valid phone number in E.164 form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(transparent)]
#[sqlx(transparent)]
#[schema(value_type = String, example = "+84912345678")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses a Vietnamese national or any E.164 number, rejecting numbers that are not
    /// valid for their country (such as 11-digit Vietnamese mobiles from before 2018).
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let bad = || {
            Invalid::new(
                "invalid_phone",
                "is not a valid Vietnamese or international (E.164) phone number",
                "không phải số điện thoại Việt Nam hoặc quốc tế (E.164) hợp lệ",
            )
        };
        let trimmed = input.trim();
        if trimmed.is_empty() || trimmed.len() > 32 {
            return Err(bad());
        }
        let number =
            phonenumber::parse(Some(phonenumber::country::Id::VN), trimmed).map_err(|_| bad())?;
        if !phonenumber::is_valid(&number) {
            return Err(bad());
        }
        Ok(PhoneNumber(
            number.format().mode(phonenumber::Mode::E164).to_string(),
        ))
    }

    /// The E.164 text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For logs: the country code and the last three digits only.
    pub fn masked(&self) -> String {
        let tail = &self.0[self.0.len().saturating_sub(3)..];
        let head = &self.0[..self.0.len().min(3)];
        format!("{head}******{tail}")
    }
}

impl std::fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PhoneNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PhoneNumber::parse(&s).map_err(Invalid::into_serde)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vietnamese_numbers_become_e164() {
        assert_eq!(
            PhoneNumber::parse("0912 345 678").unwrap().as_str(),
            "+84912345678"
        );
        assert_eq!(
            PhoneNumber::parse("+84 912345678").unwrap().as_str(),
            "+84912345678"
        );
        assert_eq!(
            PhoneNumber::parse("0987654321").unwrap().as_str(),
            "+84987654321"
        );
    }

    #[test]
    fn international_numbers_are_accepted_in_e164() {
        assert_eq!(
            PhoneNumber::parse("+14155552671").unwrap().as_str(),
            "+14155552671"
        );
    }

    #[test]
    fn invalid_numbers_are_rejected() {
        for bad in ["", "12345", "hello", "01234567890", "0912", "+84 1234"] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn masked_hides_the_middle() {
        assert_eq!(
            PhoneNumber::parse("0912345678").unwrap().masked(),
            "+84******678"
        );
    }
}
