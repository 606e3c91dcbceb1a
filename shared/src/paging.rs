//! One paging convention for every list the API answers: the caller sends `limit` (1–100,
//! default 20) and, for the next page, the `cursor` the previous page gave as `next_cursor`;
//! the answer holds `items` and `next_cursor` (`null` on the last page). A cursor is opaque to
//! callers, a position only the list that made it reads back; it is base64, not sealed, so
//! each list checks what it reads back as it checks any parameter.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::{Problems, invalid::Invalid};

/// The paging parameters of a list that has no filters of its own.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// Page size, 1–100 (default 20).
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// Page size when none is asked.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page.
pub const MAX_LIMIT: u32 = 100;

/// The page size asked, checked (1–100, default 20).
pub fn limit(p: &mut Problems, limit: Option<u32>) -> u32 {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    p.check(
        !(1..=MAX_LIMIT).contains(&limit),
        "limit",
        "out_of_range",
        "must be 1 to 100",
        "phải từ 1 đến 100",
    );
    limit.clamp(1, MAX_LIMIT)
}

/// A position as a cursor.
pub fn cursor(position: &str) -> String {
    URL_SAFE_NO_PAD.encode(position)
}

/// How many rows to fetch for a page of `limit`: one more, to know whether a next page exists.
pub fn rows_to_fetch(limit: u32) -> i64 {
    i64::from(limit) + 1
}

/// Keeps the first `limit` of `rows` (fetched with [`rows_to_fetch`]) and, when there were
/// more, gives the next page's cursor: the last kept row's `position`.
pub fn next_cursor<T>(
    rows: &mut Vec<T>,
    limit: u32,
    position: impl FnOnce(&T) -> String,
) -> Option<String> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() <= limit {
        return None;
    }
    rows.truncate(limit);
    rows.last().map(|r| cursor(&position(r)))
}

/// Reads a cursor back with `parse`; a cursor that is not one of ours is 422 at `cursor`.
pub fn position<T>(
    p: &mut Problems,
    cursor: Option<&str>,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Option<T> {
    let cursor = cursor?;
    let read = URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| parse(&s));
    if read.is_none() {
        p.push(
            "cursor",
            Invalid::new(
                "bad_cursor",
                "is not a cursor this list gave",
                "không phải con trỏ trang do danh sách này trả về",
            ),
        );
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_and_a_forged_one_is_named() {
        let mut p = Problems::default();
        let c = cursor("page:3");
        assert_eq!(
            position(&mut p, Some(&c), |s| s
                .strip_prefix("page:")?
                .parse::<u32>()
                .ok()),
            Some(3)
        );
        assert!(p.finish().is_ok());
        let mut p = Problems::default();
        assert_eq!(
            position(&mut p, Some("not base64!"), |s| s.parse::<u32>().ok()),
            None
        );
        let errors = p
            .finish()
            .expect_err("a forged cursor is refused")
            .into_errors();
        assert_eq!(errors[0].field, "cursor");
        let mut p = Problems::default();
        assert_eq!(limit(&mut p, None), 20);
        assert_eq!(limit(&mut p, Some(500)), 100);
        assert!(p.finish().is_err());
    }
}
