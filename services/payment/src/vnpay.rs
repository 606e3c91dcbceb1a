//! VNPay 2.1.0, by its published protocol: the payment URL and the IPN signature
//! (HMAC-SHA512 over the sorted, PHP-style form-encoded `vnp_*` parameters), and the
//! merchant API (`querydr`, `refund`: JSON, signed over `|`-joined fields).

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha512;

/// Form-encodes as PHP's `urlencode`: `A-Z a-z 0-9 - _ .` kept, space → `+`, the rest `%XX`
/// of the UTF-8 bytes.
pub fn php_urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(char::from(b)),
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// The string VNPay signs: every non-empty `vnp_*` parameter but the hash itself, sorted by
/// key, `k=v` joined with `&`, keys and values form-encoded. It is also the query string.
pub fn signing_string(params: &BTreeMap<String, String>) -> String {
    params
        .iter()
        .filter(|(k, v)| {
            k.starts_with("vnp_")
                && *k != "vnp_SecureHash"
                && *k != "vnp_SecureHashType"
                && !v.is_empty()
        })
        .map(|(k, v)| format!("{}={}", php_urlencode(k), php_urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `hex(HMAC-SHA512(secret, data))`.
pub fn sign(secret: &str, data: &str) -> String {
    let mut mac =
        Hmac::<Sha512>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(data.as_bytes());
    crate::hex::encode(&mac.finalize().into_bytes())
}

/// Whether `vnp_SecureHash` matches the other parameters (compared in constant time).
pub fn verify(secret: &str, params: &BTreeMap<String, String>) -> bool {
    let Some(given) = params.get("vnp_SecureHash") else {
        return false;
    };
    let Some(given) = crate::hex::decode(given) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha512>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(signing_string(params).as_bytes());
    mac.verify_slice(&given).is_ok()
}

/// VNPay's time format, in Vietnam's time zone (GMT+7).
pub fn vn_time(t: DateTime<Utc>) -> String {
    let vn = FixedOffset::east_opt(7 * 3600).expect("GMT+7 is a valid offset");
    t.with_timezone(&vn).format("%Y%m%d%H%M%S").to_string()
}

/// What a payment URL needs.
#[derive(Debug, Clone)]
pub struct PayRequest<'a> {
    /// Terminal code.
    pub tmn_code: &'a str,
    /// Amount in đồng (VNPay wants đồng × 100).
    pub amount_vnd: i64,
    /// Our reference.
    pub txn_ref: &'a str,
    /// What is paid for.
    pub order_info: &'a str,
    /// Where the buyer comes back.
    pub return_url: &'a str,
    /// The buyer's IP address.
    pub ip: &'a str,
    /// Now.
    pub created: DateTime<Utc>,
    /// When the payment page stops taking payment.
    pub expires: DateTime<Utc>,
}

/// The signed payment URL.
pub fn payment_url(pay_url: &str, secret: &str, r: &PayRequest<'_>) -> String {
    let mut p = BTreeMap::new();
    for (k, v) in [
        ("vnp_Version", "2.1.0".to_owned()),
        ("vnp_Command", "pay".to_owned()),
        ("vnp_TmnCode", r.tmn_code.to_owned()),
        ("vnp_Amount", r.amount_vnd.saturating_mul(100).to_string()),
        ("vnp_CurrCode", "VND".to_owned()),
        ("vnp_TxnRef", r.txn_ref.to_owned()),
        ("vnp_OrderInfo", r.order_info.to_owned()),
        ("vnp_OrderType", "other".to_owned()),
        ("vnp_Locale", "vn".to_owned()),
        ("vnp_ReturnUrl", r.return_url.to_owned()),
        ("vnp_IpAddr", r.ip.to_owned()),
        ("vnp_CreateDate", vn_time(r.created)),
        ("vnp_ExpireDate", vn_time(r.expires)),
    ] {
        p.insert(k.to_owned(), v);
    }
    let query = signing_string(&p);
    let hash = sign(secret, &query);
    format!("{pay_url}?{query}&vnp_SecureHash={hash}")
}

/// The query of the IPN VNPay sends for a payment whose URL carried `sent` (its parsed
/// query): the result `response_code` (`00` paid, `24` given up by the buyer, ...) for the
/// amount sent or `amount` (đồng × 100), with VNPay's transaction number, signed as VNPay
/// signs with `secret`. Whoever plays VNPay (the tests' fake provider, the benchmark's
/// reliability load) builds its IPNs with it.
pub fn ipn_query(
    sent: &BTreeMap<String, String>,
    secret: &str,
    response_code: &str,
    amount: Option<i64>,
    transaction_no: &str,
) -> String {
    let field = |k: &str| sent.get(k).cloned().unwrap_or_default();
    let mut p: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in [
        (
            "vnp_Amount",
            amount.map_or_else(|| field("vnp_Amount"), |a| a.to_string()),
        ),
        ("vnp_BankCode", "NCB".to_owned()),
        ("vnp_OrderInfo", field("vnp_OrderInfo")),
        ("vnp_PayDate", field("vnp_CreateDate")),
        ("vnp_ResponseCode", response_code.to_owned()),
        ("vnp_TmnCode", field("vnp_TmnCode")),
        ("vnp_TransactionNo", transaction_no.to_owned()),
        ("vnp_TransactionStatus", response_code.to_owned()),
        ("vnp_TxnRef", field("vnp_TxnRef")),
    ] {
        p.insert(k.to_owned(), v);
    }
    let query = signing_string(&p);
    let hash = sign(secret, &query);
    format!("{query}&vnp_SecureHash={hash}")
}

/// A `querydr` (what happened to a payment) or `refund` request to the merchant API.
#[derive(Debug, Clone)]
pub enum ApiCall<'a> {
    /// Asks for a payment's state.
    Query {
        /// Our reference.
        txn_ref: &'a str,
        /// The create date sent with the payment.
        transaction_date: &'a str,
    },
    /// Gives back `amount_vnd` of a payment.
    Refund {
        /// Our reference.
        txn_ref: &'a str,
        /// The create date sent with the payment.
        transaction_date: &'a str,
        /// VNPay's transaction number.
        transaction_no: &'a str,
        /// Đồng to give back.
        amount_vnd: i64,
        /// The whole capture (`02`) or part of it (`03`).
        full: bool,
        /// Who asks (an operator's id, or "nongsan").
        by: &'a str,
    },
}

/// The signed JSON body of a merchant API call: `request_id` unique per call, `now` the
/// request's time, `ip` the merchant server's address.
pub fn api_request(
    tmn_code: &str,
    secret: &str,
    call: &ApiCall<'_>,
    request_id: &str,
    now: DateTime<Utc>,
    ip: &str,
) -> serde_json::Value {
    let create_date = vn_time(now);
    match call {
        ApiCall::Query {
            txn_ref,
            transaction_date,
        } => {
            let info = format!("Truy van GD {txn_ref}");
            let data = [
                request_id,
                "2.1.0",
                "querydr",
                tmn_code,
                txn_ref,
                transaction_date,
                &create_date,
                ip,
                &info,
            ]
            .join("|");
            serde_json::json!({
                "vnp_RequestId": request_id, "vnp_Version": "2.1.0", "vnp_Command": "querydr",
                "vnp_TmnCode": tmn_code, "vnp_TxnRef": txn_ref, "vnp_OrderInfo": info,
                "vnp_TransactionDate": transaction_date, "vnp_CreateDate": create_date,
                "vnp_IpAddr": ip, "vnp_SecureHash": sign(secret, &data),
            })
        }
        ApiCall::Refund {
            txn_ref,
            transaction_date,
            transaction_no,
            amount_vnd,
            full,
            by,
        } => {
            let info = format!("Hoan tien GD {txn_ref}");
            let kind = if *full { "02" } else { "03" };
            let amount = amount_vnd.saturating_mul(100).to_string();
            let data = [
                request_id,
                "2.1.0",
                "refund",
                tmn_code,
                kind,
                txn_ref,
                &amount,
                transaction_no,
                transaction_date,
                by,
                &create_date,
                ip,
                &info,
            ]
            .join("|");
            serde_json::json!({
                "vnp_RequestId": request_id, "vnp_Version": "2.1.0", "vnp_Command": "refund",
                "vnp_TmnCode": tmn_code, "vnp_TransactionType": kind, "vnp_TxnRef": txn_ref,
                "vnp_Amount": amount, "vnp_OrderInfo": info, "vnp_TransactionNo": transaction_no,
                "vnp_TransactionDate": transaction_date, "vnp_CreateBy": by,
                "vnp_CreateDate": create_date, "vnp_IpAddr": ip,
                "vnp_SecureHash": sign(secret, &data),
            })
        }
    }
}

/// What the merchant API answered, as far as nongsan acts on it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ApiAnswer {
    /// `00`: the call was taken (for `querydr`, the payment was found).
    #[serde(rename = "vnp_ResponseCode", default)]
    pub response_code: String,
    /// VNPay's message.
    #[serde(rename = "vnp_Message", default)]
    pub message: String,
    /// The payment's (or the refund's) state: `00` done, `01` not finished, others failed.
    #[serde(rename = "vnp_TransactionStatus", default)]
    pub transaction_status: String,
    /// VNPay's transaction number.
    #[serde(rename = "vnp_TransactionNo", default)]
    pub transaction_no: String,
    /// The amount (đồng × 100).
    #[serde(rename = "vnp_Amount", default)]
    pub amount: String,
}

/// Calls the merchant API at `url`. An error is a call that got no usable answer (network,
/// HTTP status, not JSON): the caller tries again later.
pub async fn call_api(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> anyhow::Result<ApiAnswer> {
    let res = http
        .post(url)
        .json(body)
        .timeout(std::time::Duration::from_secs(15))
        .send()
        .await?;
    let status = res.status();
    anyhow::ensure!(
        status.is_success(),
        "VNPay's merchant API answered HTTP {status}"
    );
    Ok(res.json().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    // The published vectors (shared/data/payments/README.md).
    #[test]
    fn ipn_vectors_sign_as_vnpay_does() {
        let mut p = params(&[
            ("vnp_Amount", "1000000"),
            ("vnp_BankCode", "NCB"),
            ("vnp_BankTranNo", "VNP14422574"),
            ("vnp_CardType", "ATM"),
            (
                "vnp_OrderInfo",
                "Thanh toan don hang 2024-05-21T02:17:31.249Z",
            ),
            ("vnp_PayDate", "20240521091806"),
            ("vnp_ResponseCode", "00"),
            ("vnp_TmnCode", "TEST_TMN_CODE"),
            ("vnp_TransactionNo", "14422574"),
            ("vnp_TransactionStatus", "00"),
            ("vnp_TxnRef", "1716257871703"),
        ]);
        assert_eq!(
            sign("test_secret", &signing_string(&p)),
            "649982421beb422556a1374713c74e58e716ecbd05007c0c0e1f7effdfaf361dbf146889ca446139afe11b9954c4d5c486e99e3b86fcfab6957f29eb0be72895"
        );
        p.insert("vnp_ResponseCode".into(), "99".into());
        assert_eq!(
            sign("test_secret", &signing_string(&p)),
            "503194f6d93b57b357b2d1d09742565e67e86d771352c5dca4fc8d39df3d392c6b3809add9405f97cfb9631f445e36c80656cfbf47eac67d97fa165865c13e1b"
        );
        p.insert(
            "vnp_SecureHash".into(),
            sign("test_secret", &signing_string(&p)),
        );
        assert!(verify("test_secret", &p));
        p.insert("vnp_Amount".into(), "1000001".into());
        assert!(
            !verify("test_secret", &p),
            "a changed amount breaks the signature"
        );
    }

    #[test]
    fn the_payment_url_vector_signs_as_vnpay_does() {
        let p = params(&[
            ("vnp_Amount", "15000000"),
            ("vnp_Command", "pay"),
            ("vnp_CreateDate", "20261127223000"),
            ("vnp_CurrCode", "VND"),
            ("vnp_ExpireDate", "20261127224500"),
            ("vnp_IpAddr", "127.0.0.1"),
            ("vnp_Locale", "vn"),
            ("vnp_OrderInfo", "Thanh toán đơn hàng ORDER-2026-0001"),
            ("vnp_OrderType", "other"),
            (
                "vnp_ReturnUrl",
                "https://shop.example.vn/payments/vnpay/return",
            ),
            ("vnp_TmnCode", "TESTTMN1"),
            ("vnp_TxnRef", "ORDER-2026-0001"),
            ("vnp_Version", "2.1.0"),
        ]);
        assert_eq!(
            sign("SECRETKEYFORTESTINGONLY0123456789", &signing_string(&p)),
            "267bb218511392bbbd7de9749ef9182586f8750b1d0ff83bb27ad4ef9cbd2ca55f93b0eb5062c5c77364a1f8cd92fa5f7f3c7f9c16389f6de546980c103d6df3"
        );
    }

    #[test]
    fn a_hash_with_non_ascii_characters_is_refused_not_a_panic() {
        let mut p = params(&[("vnp_Amount", "1000000"), ("vnp_TxnRef", "abc")]);
        for forged in ["0é0", "é", "ạ1", "0\u{1F600}0", "+f", "-1"] {
            p.insert("vnp_SecureHash".into(), forged.into());
            assert!(!verify("SECRETKEYFORTESTINGONLY0123456789", &p), "{forged}");
        }
    }

    #[test]
    fn the_querydr_vector_signs_as_vnpay_does() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T16:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let body = api_request(
            "TESTTMN1",
            "SECRETKEYFORTESTINGONLY0123456789",
            &ApiCall::Query {
                txn_ref: "ORDER-2026-0001",
                transaction_date: "20261127223000",
            },
            "REQ20261127230000",
            now,
            "127.0.0.1",
        );
        assert_eq!(body["vnp_CreateDate"], "20261127230000");
        assert_eq!(body["vnp_OrderInfo"], "Truy van GD ORDER-2026-0001");
        assert_eq!(
            body["vnp_SecureHash"],
            "31e5e033e6dc85b0f5144f050a23a12793033ab9fba80e3be3ca584d717f2e01cb9e0d8ee394070826c09882c77777c306e8f825fd8819eb97e32d48d18e0b6e"
        );
    }

    #[test]
    fn a_refund_signs_its_fields_in_vnpays_order() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T16:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let body = api_request(
            "TESTTMN1",
            "s",
            &ApiCall::Refund {
                txn_ref: "R1",
                transaction_date: "20261127223000",
                transaction_no: "14422574",
                amount_vnd: 65_000,
                full: false,
                by: "nongsan",
            },
            "REQ1",
            now,
            "10.0.0.1",
        );
        assert_eq!(body["vnp_Amount"], "6500000", "đồng × 100");
        assert_eq!(body["vnp_TransactionType"], "03");
        let data = "REQ1|2.1.0|refund|TESTTMN1|03|R1|6500000|14422574|20261127223000|nongsan|20261127230000|10.0.0.1|Hoan tien GD R1";
        assert_eq!(body["vnp_SecureHash"], sign("s", data));
    }

    #[test]
    fn times_are_in_vietnam_time() {
        let t = DateTime::parse_from_rfc3339("2026-11-27T15:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(vn_time(t), "20261127223000");
    }
}
