//! GS1 identifiers: GTIN check digits, and GS1 Digital Link URIs for a lot
//! (`https://<host>/01/<GTIN-14>/10/<lot>?7007=<harvest YYMMDD>`, the grammar in
//! `data/vn/traceability/GS1_Digital_Link_Grammar_1_2.abnf`).

use chrono::NaiveDate;

/// Why a GTIN is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GtinError {
    /// Not 8, 12, 13 or 14 digits.
    Shape,
    /// The last digit is not the GS1 check digit of the others.
    CheckDigit,
}

/// The GS1 check digit of `body` (the digits before it): weights 3 and 1 alternate from the
/// right.
pub fn check_digit(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| u32::from(*d) * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    u8::try_from((10 - sum % 10) % 10).unwrap_or(0)
}

/// A GTIN-8, -12, -13 or -14 checked and written as 14 digits (left-padded with zeros).
pub fn gtin14(s: &str) -> Result<String, GtinError> {
    let s = s.trim();
    if !matches!(s.len(), 8 | 12 | 13 | 14) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(GtinError::Shape);
    }
    let digits: Vec<u8> = s.bytes().map(|b| b - b'0').collect();
    let (body, last) = digits.split_at(digits.len() - 1);
    if last.first() != Some(&check_digit(body)) {
        return Err(GtinError::CheckDigit);
    }
    Ok(format!("{s:0>14}"))
}

/// Characters a lot (AI 10) may hold in a Digital Link path as themselves.
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')
}

/// Characters of GS1's 82-character set that the path writes percent-encoded.
const ENCODED: &str = "!\"%&'()*+,/:;<=>?";

/// Whether a (decoded) lot code is one a Digital Link may carry: 1 to 20 characters of
/// GS1's 82-character set.
pub fn valid_lot(lot: &str) -> bool {
    !lot.is_empty()
        && lot.chars().count() <= 20
        && lot.chars().all(|c| plain(c) || ENCODED.contains(c))
}

/// A lot code as a Digital Link path segment, or `None` when it holds a character outside
/// GS1's 82-character set (`#`, `$`, `@`, `[`, `~`...), which no GS1 lot may carry.
pub fn encode_lot(lot: &str) -> Option<String> {
    if lot.is_empty() || lot.chars().count() > 20 {
        return None;
    }
    let mut out = String::with_capacity(lot.len());
    for c in lot.chars() {
        if plain(c) {
            out.push(c);
        } else if ENCODED.contains(c) {
            out.push_str(&format!("%{:02X}", u32::from(c)));
        } else {
            return None;
        }
    }
    Some(out)
}

/// A Digital Link path segment back to the lot code; `None` when it is not one (a bad
/// escape, a character outside the set, more than 20 characters).
pub fn decode_lot(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = match bytes[i] {
            b'%' => {
                let hex = segment.get(i + 1..i + 3)?;
                let code = u8::from_str_radix(hex, 16).ok()?;
                i += 3;
                char::from(code)
            }
            b => {
                i += 1;
                char::from(b)
            }
        };
        if !(plain(c) || ENCODED.contains(c)) {
            return None;
        }
        out.push(c);
    }
    (!out.is_empty() && out.chars().count() <= 20).then_some(out)
}

/// The link a lot's QR code holds: its GS1 Digital Link when the listing has a GTIN and the
/// lot code fits GS1's set, else the short link `<base>/t/<lot id>`.
pub fn lot_link(
    base: &str,
    gtin: Option<&str>,
    lot_code: &str,
    lot_id: uuid::Uuid,
    harvest: NaiveDate,
) -> String {
    let base = base.trim_end_matches('/');
    match (gtin, encode_lot(lot_code)) {
        (Some(gtin), Some(lot)) => {
            format!(
                "{base}/01/{gtin}/10/{lot}?7007={}",
                harvest.format("%y%m%d")
            )
        }
        _ => format!("{base}/t/{lot_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtins_are_checked_by_their_check_digit() {
        assert_eq!(gtin14("8931234567897"), Ok("08931234567897".to_owned()));
        assert_eq!(gtin14("09506000134352"), Ok("09506000134352".to_owned()));
        assert_eq!(gtin14("09506000134353"), Err(GtinError::CheckDigit));
        assert_eq!(gtin14("96385074"), Ok("00000096385074".to_owned()));
        assert_eq!(gtin14("12345"), Err(GtinError::Shape));
        assert_eq!(gtin14("0950600013435x"), Err(GtinError::Shape));
    }

    #[test]
    fn lot_codes_round_trip_through_the_path() {
        for lot in ["VT2506-LN01", "A/B+C", "lô", "x%y", "Q?&=1"] {
            match encode_lot(lot) {
                Some(e) => {
                    assert!(e.chars().all(|c| plain(c) || c == '%'), "{e}");
                    assert_eq!(decode_lot(&e).as_deref(), Some(lot));
                }
                None => assert_eq!(lot, "lô"),
            }
        }
        assert_eq!(encode_lot("LOT#1"), None);
        assert_eq!(decode_lot("%G1"), None);
        assert_eq!(decode_lot("A#B"), None);
        assert_eq!(decode_lot(&"A".repeat(21)), None);
    }

    #[test]
    fn a_lot_link_is_a_digital_link_or_a_short_link() {
        let id = uuid::Uuid::from_u128(1);
        let day = NaiveDate::from_ymd_opt(2025, 6, 15).unwrap();
        assert_eq!(
            lot_link(
                "https://id.example.vn/",
                Some("08931234567897"),
                "VT2506-LN01",
                id,
                day
            ),
            "https://id.example.vn/01/08931234567897/10/VT2506-LN01?7007=250615"
        );
        assert_eq!(
            lot_link("https://id.example.vn", None, "VT2506-LN01", id, day),
            format!("https://id.example.vn/t/{id}")
        );
        assert_eq!(
            lot_link(
                "https://id.example.vn",
                Some("08931234567897"),
                "LOT#1",
                id,
                day
            ),
            format!("https://id.example.vn/t/{id}")
        );
    }
}
