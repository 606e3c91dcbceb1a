//! A stand-in for VNPay's merchant API (`querydr`, `refund`): it checks each call's
//! signature as VNPay does (HMAC-SHA512 over the `|`-joined fields, with the test apps'
//! secret), records the calls, and answers from what the test told it was paid.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use axum::{Router, extract::State, routing::post};
use nongsan_payment::vnpay;
use serde_json::{Value, json};

use super::VNPAY_SECRET;

/// A payment VNPay took, as the test says.
#[derive(Debug, Clone)]
pub struct Paid {
    /// đồng × 100.
    pub amount: i64,
    /// VNPay's transaction number.
    pub transaction_no: String,
}

/// What the fake holds.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Every call (its JSON body), in order.
    pub calls: Vec<Value>,
    /// Payments VNPay took, by `vnp_TxnRef`.
    pub paid: HashMap<String, Paid>,
    /// Answer every refund with this code instead of `00`.
    pub refund_code: Option<String>,
}

/// A running fake.
#[derive(Debug, Clone)]
pub struct FakeVnpay {
    /// The merchant API's URL (for `NONGSAN_VNPAY_API_URL`).
    pub url: String,
    /// What it saw.
    pub state: Arc<Mutex<FakeState>>,
}

/// The VNPay IPN for a payment URL: the result VNPay would send, signed as VNPay signs.
pub fn ipn_query(payment_url: &str, response_code: &str, amount_override: Option<i64>) -> String {
    let url = reqwest::Url::parse(payment_url).unwrap();
    let sent: BTreeMap<String, String> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert!(
        vnpay::verify(VNPAY_SECRET, &sent),
        "the payment URL is signed"
    );
    vnpay::ipn_query(
        &sent,
        VNPAY_SECRET,
        response_code,
        amount_override,
        "14422574",
    )
}

fn field<'a>(body: &'a Value, name: &str) -> &'a str {
    body[name].as_str().unwrap_or("")
}

/// The string VNPay signs for a call.
fn signed_fields(body: &Value) -> Option<String> {
    let names: &[&str] = match field(body, "vnp_Command") {
        "querydr" => &[
            "vnp_RequestId",
            "vnp_Version",
            "vnp_Command",
            "vnp_TmnCode",
            "vnp_TxnRef",
            "vnp_TransactionDate",
            "vnp_CreateDate",
            "vnp_IpAddr",
            "vnp_OrderInfo",
        ],
        "refund" => &[
            "vnp_RequestId",
            "vnp_Version",
            "vnp_Command",
            "vnp_TmnCode",
            "vnp_TransactionType",
            "vnp_TxnRef",
            "vnp_Amount",
            "vnp_TransactionNo",
            "vnp_TransactionDate",
            "vnp_CreateBy",
            "vnp_CreateDate",
            "vnp_IpAddr",
            "vnp_OrderInfo",
        ],
        _ => return None,
    };
    Some(
        names
            .iter()
            .map(|n| field(body, n))
            .collect::<Vec<_>>()
            .join("|"),
    )
}

async fn transaction(
    State(state): State<Arc<Mutex<FakeState>>>,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    let mut s = state.lock().unwrap();
    s.calls.push(body.clone());
    let answer = |code: &str, message: &str| {
        json!({ "vnp_ResponseId": "R", "vnp_Command": field(&body, "vnp_Command"), "vnp_ResponseCode": code, "vnp_Message": message,
                "vnp_TmnCode": field(&body, "vnp_TmnCode"), "vnp_TxnRef": field(&body, "vnp_TxnRef") })
    };
    let signed = signed_fields(&body)
        .is_some_and(|data| vnpay::sign(VNPAY_SECRET, &data) == field(&body, "vnp_SecureHash"));
    if !signed {
        return axum::Json(answer("97", "Invalid checksum"));
    }
    let txn = field(&body, "vnp_TxnRef");
    match field(&body, "vnp_Command") {
        "querydr" => match s.paid.get(txn) {
            Some(p) => {
                let mut a = answer("00", "Query success");
                a["vnp_TransactionStatus"] = json!("00");
                a["vnp_TransactionNo"] = json!(p.transaction_no);
                a["vnp_Amount"] = json!(p.amount.to_string());
                axum::Json(a)
            }
            None => axum::Json(answer("91", "Transaction not found")),
        },
        _ => {
            if let Some(code) = s.refund_code.clone() {
                return axum::Json(answer(&code, "Refund refused"));
            }
            let mut a = answer("00", "Refund success");
            a["vnp_TransactionNo"] = json!(format!("RF{}", s.calls.len()));
            a["vnp_Amount"] = body["vnp_Amount"].clone();
            a["vnp_TransactionType"] = body["vnp_TransactionType"].clone();
            axum::Json(a)
        }
    }
}

impl FakeVnpay {
    /// Starts the fake on a free port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/merchant_webapi/api/transaction",
            listener.local_addr().unwrap()
        );
        let state = Arc::new(Mutex::new(FakeState::default()));
        let router = Router::new()
            .route("/merchant_webapi/api/transaction", post(transaction))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, state }
    }

    /// VNPay took `amount_vnd` for `txn_ref` (its `querydr` says so from now on).
    pub fn pay(&self, txn_ref: &str, amount_vnd: i64) {
        self.state.lock().unwrap().paid.insert(
            txn_ref.to_owned(),
            Paid {
                amount: amount_vnd * 100,
                transaction_no: "14422574".to_owned(),
            },
        );
    }

    /// The signed refund calls so far.
    pub fn refunds(&self) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c["vnp_Command"] == "refund")
            .cloned()
            .collect()
    }

    /// Every call so far with a command (querydr, refund).
    pub fn calls(&self, command: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c["vnp_Command"] == command)
            .count()
    }
}
