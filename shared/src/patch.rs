//! Partial updates (`PATCH`): a field not sent stays as it is; an optional field sent as
//! `null` is cleared. A plain `Option` cannot tell the two apart, so such a field is an
//! `Option<Option<T>>` read with [`clearable`]:
//!
//! ```ignore
//! #[serde(default, deserialize_with = "nongsan_shared::patch::clearable")]
//! #[schema(value_type = Option<i16>)]
//! pub ocop_stars: Option<Option<i16>>,
//! ```

use serde::{Deserialize, Deserializer};

/// Reads a field that was sent: `Some(None)` for `null`, `Some(Some(value))` for a value.
/// With `#[serde(default)]`, a field not sent is `None`.
pub fn clearable<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The value after the patch: `current` when the field was not sent, else what was sent
/// (`None` for `null`).
pub fn apply<T>(sent: Option<Option<T>>, current: Option<T>) -> Option<T> {
    sent.unwrap_or(current)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Patch {
        #[serde(default, deserialize_with = "super::clearable")]
        stars: Option<Option<i16>>,
    }

    #[test]
    fn a_field_not_sent_null_and_a_value_are_three_things() {
        let read = |s: &str| serde_json::from_str::<Patch>(s).unwrap().stars;
        assert_eq!(read("{}"), None);
        assert_eq!(read(r#"{"stars":null}"#), Some(None));
        assert_eq!(read(r#"{"stars":4}"#), Some(Some(4)));
        assert_eq!(super::apply(read("{}"), Some(5)), Some(5));
        assert_eq!(super::apply(read(r#"{"stars":null}"#), Some(5)), None);
        assert_eq!(super::apply(read(r#"{"stars":3}"#), Some(5)), Some(3));
    }
}
