//! Collecting what is wrong with a request, field by field, so that a 422 names every bad
//! field at once instead of the first one found.
//!
//! A check records its problems in a [`Problems`] and goes on; at the end,
//! [`Problems::finish`] (or [`Problems::finish_with`], which also hands back the checked
//! value) fails with all of them. Each service's error type converts from [`Problems`], and
//! so does [`ApiError`] (a 422 `validation_failed`).

use crate::{
    error::{ApiError, FieldError, Text},
    invalid::Invalid,
};

/// The longest free-text reason (hiding a listing, declining or cancelling an order,
/// adjusting stock), in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// Collects field errors and fails with all of them at once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<FieldError>);

impl Problems {
    /// Nothing recorded yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `too_long` at `field` when the free-text `reason` has more than
    /// [`MAX_REASON_CHARS`] characters.
    pub fn check_reason(&mut self, field: &str, reason: Option<&str>) {
        self.check(
            reason.is_some_and(|r| r.chars().count() > MAX_REASON_CHARS),
            field,
            "too_long",
            "must be at most 500 characters",
            "tối đa 500 ký tự",
        );
    }

    /// Records `control_character` at `field` when the one-line text `value` holds a control
    /// character (a line break, a tab, a terminal escape, Unicode's line and paragraph
    /// separators) or one that reorders text on screen (the bidirectional marks, embeddings,
    /// overrides and isolates): such text reaches sellers' screens and shipping labels
    /// otherwise than it was shown to whoever wrote it.
    pub fn check_one_line(&mut self, field: &str, value: &str) {
        self.check(
            value.chars().any(|c| {
                c.is_control()
                    || matches!(
                        c,
                        '\u{061c}'
                            | '\u{200e}'
                            | '\u{200f}'
                            | '\u{2028}'..='\u{202e}'
                            | '\u{2066}'..='\u{2069}'
                    )
            }),
            field,
            "control_character",
            "must be one line of text, without control characters or direction overrides",
            "phải là một dòng chữ, không có ký tự điều khiển hay ký tự đổi chiều văn bản",
        );
    }

    /// Records the reason `code` (`en`, `vi`) at `field` when `bad`.
    pub fn check(&mut self, bad: bool, field: &str, code: &'static str, en: &str, vi: &str) {
        if bad {
            self.0.push(FieldError::new(field, code, Text::new(en, vi)));
        }
    }

    /// Records the reason at `field` when `checked` failed; the checked value when not.
    pub fn verify<T>(
        &mut self,
        field: impl Into<String>,
        checked: Result<T, Invalid>,
    ) -> Option<T> {
        match checked {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(field, e);
                None
            }
        }
    }

    /// Records a domain parse failure at `field`.
    pub fn push(&mut self, field: impl Into<String>, reason: Invalid) {
        self.0.push(reason.at(field));
    }

    /// Records a field error as it is.
    pub fn add(&mut self, error: FieldError) {
        self.0.push(error);
    }

    /// Takes over the problems of a part checked on its own; the part when it had none.
    pub fn gather<T>(&mut self, part: Result<T, Problems>) -> Option<T> {
        match part {
            Ok(v) => Some(v),
            Err(p) => {
                self.0.extend(p.0);
                None
            }
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The field errors recorded, in order.
    pub fn into_errors(self) -> Vec<FieldError> {
        self.0
    }

    /// `Ok` when nothing was recorded, else all that was.
    pub fn finish(self) -> Result<(), Problems> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }

    /// The checked `value` when nothing was recorded, else all that was. A check that gives
    /// no value (`None`) must have recorded why.
    pub fn finish_with<T>(self, value: Option<T>) -> Result<T, Problems> {
        match value {
            Some(v) if self.is_empty() => Ok(v),
            _ => {
                debug_assert!(!self.is_empty(), "a check gave no value and no reason");
                Err(self)
            }
        }
    }
}

impl Extend<FieldError> for Problems {
    fn extend<I: IntoIterator<Item = FieldError>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl From<FieldError> for Problems {
    fn from(e: FieldError) -> Self {
        Self(vec![e])
    }
}

impl From<Problems> for ApiError {
    fn from(p: Problems) -> Self {
        ApiError::validation(p.0)
    }
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields: Vec<&str> = self.0.iter().map(|e| e.field.as_str()).collect();
        write!(f, "invalid field(s) {}", fields.join(", "))
    }
}

impl std::error::Error for Problems {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_text_has_no_control_or_direction_characters() {
        let refused = [
            "12 Lê Lợi\n",
            "a\tb",
            "\u{1b}[2J",
            "\u{85}",
            "line\u{2028}break",
            "para\u{2029}",
            "\u{202e}aoH",
            "\u{2067}x",
            "\u{200f}",
            "\u{061c}",
        ];
        for text in refused {
            let mut p = Problems::new();
            p.check_one_line("street", text);
            assert_eq!(p.0.len(), 1, "{text:?}");
            assert_eq!(p.0[0].code, "control_character");
        }
        let mut p = Problems::new();
        p.check_one_line(
            "street",
            "Số 12, ngõ 34/5 Lê Lợi (cạnh chợ) – Phường Bến Thành",
        );
        assert!(p.is_empty());
    }

    #[test]
    fn it_keeps_every_problem_in_order() {
        let mut p = Problems::new();
        p.check(false, "a", "bad", "bad", "sai");
        p.check(true, "b", "bad", "bad", "sai");
        let v = p.verify("c", Err::<(), _>(Invalid::new("unknown", "unknown", "lạ")));
        assert!(v.is_none());
        let part: Result<u8, Problems> = Err(FieldError::new("d", "x", Text::new("x", "x")).into());
        assert_eq!(p.gather(part), None);
        assert_eq!(p.gather(Ok::<_, Problems>(7)), Some(7));
        let fields: Vec<String> = p
            .finish()
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["b", "c", "d"]);
    }

    #[test]
    fn finish_with_gives_the_value_only_without_problems() {
        assert_eq!(Problems::new().finish_with(Some(1)), Ok(1));
        let mut p = Problems::new();
        p.check(true, "a", "bad", "bad", "sai");
        assert!(p.finish_with(Some(1)).is_err());
    }
}
