//! The `Idempotency-Key` header, parsed: a checkout requires one; the stock writes a
//! seller may send again (a lot taken in, an adjustment) take one when it is sent.

use crate::{FieldError, Problems, Text};
use axum::http::HeaderMap;

/// The header's name, as the client writes it (and as the field of its 422).
pub const HEADER: &str = "Idempotency-Key";

/// An idempotency key: the header's value, trimmed, 1 to 200 characters. Only
/// [`TryFrom`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key a request may carry: `None` without the header, and the 422 of [`TryFrom`]
    /// for one that is blank, too long or not visible ASCII.
    pub fn optional(headers: &HeaderMap) -> Result<Option<Self>, Problems> {
        if headers.get("idempotency-key").is_none() {
            return Ok(None);
        }
        Self::try_from(headers).map(Some)
    }
}

impl TryFrom<&HeaderMap> for IdempotencyKey {
    type Error = Problems;

    /// The key a request carries; 422 at `Idempotency-Key` when it has none, one too long, or
    /// one that is not visible ASCII (a key of other characters was told it was missing).
    fn try_from(headers: &HeaderMap) -> Result<Self, Problems> {
        let sent = headers.get("idempotency-key");
        let Some(key) = sent.map(|v| v.to_str().map(str::trim)).transpose().ok() else {
            return Err(FieldError::new(
                HEADER,
                "not_ascii",
                Text::new(
                    "must be visible ASCII characters (letters, digits, punctuation)",
                    "chỉ gồm ký tự ASCII nhìn thấy được (chữ, số, dấu)",
                ),
            )
            .into());
        };
        let key = key.unwrap_or("");
        if key.is_empty() || key.len() > 200 {
            return Err(FieldError::new(
                HEADER,
                "required",
                Text::new(
                    "header is required (1 to 200 characters)",
                    "là tiêu đề bắt buộc (1 đến 200 ký tự)",
                ),
            )
            .into());
        }
        Ok(Self(key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(value: Option<&str>) -> Result<IdempotencyKey, Problems> {
        let mut headers = HeaderMap::new();
        if let Some(v) = value {
            headers.insert("idempotency-key", v.parse().unwrap());
        }
        IdempotencyKey::try_from(&headers)
    }

    #[test]
    fn a_key_is_trimmed_and_1_to_200_characters() {
        assert_eq!(key(Some("  abc ")).unwrap().as_str(), "abc");
        assert_eq!(key(Some(&"k".repeat(200))).unwrap().as_str().len(), 200);
        for bad in [None, Some("   "), Some(&"k".repeat(201) as &str)] {
            let errors = key(bad).unwrap_err().into_errors();
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].field, "Idempotency-Key");
            assert_eq!(errors[0].code, "required");
        }
    }

    #[test]
    fn a_key_of_other_than_visible_ascii_is_named_as_such() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "idempotency-key",
            axum::http::HeaderValue::from_bytes("khóa-1".as_bytes()).unwrap(),
        );
        let errors = IdempotencyKey::try_from(&headers)
            .unwrap_err()
            .into_errors();
        assert_eq!(
            (errors[0].field.as_str(), &*errors[0].code),
            ("Idempotency-Key", "not_ascii")
        );
    }
}
