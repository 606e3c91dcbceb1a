//! How a domain type says why a value is not acceptable, in both languages, and how that
//! reason reaches the 422 answer when the value came inside a JSON body.
//!
//! serde only carries a message string through its errors, so a domain type that rejects a
//! value while being deserialized leaves the full reason here (per thread: deserialization
//! never crosses threads) and the JSON extractor picks it up together with the field path.

use std::{borrow::Cow, cell::RefCell};

use crate::error::{FieldError, Text};

/// Why a value is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Stable reason code, e.g. `too_many_decimals`.
    pub code: Cow<'static, str>,
    /// The reason in both languages.
    pub text: Text,
}

impl Invalid {
    /// A reason with its code and texts.
    pub fn new(
        code: impl Into<Cow<'static, str>>,
        en: impl Into<String>,
        vi: impl Into<String>,
    ) -> Self {
        Self {
            code: code.into(),
            text: Text::new(en, vi),
        }
    }

    /// The same reason attached to a field.
    pub fn at(self, field: impl Into<String>) -> FieldError {
        FieldError::new(field, self.code, self.text)
    }

    /// A serde error carrying this reason; the JSON extractor recovers it with [`take_last`].
    pub fn into_serde<E: serde::de::Error>(self) -> E {
        let msg = self.text.en.clone();
        LAST.with(|l| *l.borrow_mut() = Some(self));
        E::custom(msg)
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text.en)
    }
}

impl std::error::Error for Invalid {}

thread_local! {
    static LAST: RefCell<Option<Invalid>> = const { RefCell::new(None) };
}

/// Forgets any reason left by an earlier deserialization on this thread.
pub fn clear() {
    LAST.with(|l| l.borrow_mut().take());
}

/// Takes the reason the last failed domain-type deserialization on this thread left.
pub fn take_last() -> Option<Invalid> {
    LAST.with(|l| l.borrow_mut().take())
}
