//! A stand-in for MoMo's AIO v2 API (create, query, refund): it checks each request's
//! signature as MoMo does (HMAC-SHA256 with the test secret key), records the requests, and
//! answers from what the test told it was paid. [`FakeMomo::ipn`] makes the signed result
//! MoMo would post.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{Router, extract::State, http::StatusCode, routing::post};
use nongsan_payment::momo::{self, Ipn};
use serde_json::{Value, json};

/// The test apps' MoMo keys (MoMo's public sandbox ones).
pub const PARTNER: &str = "MOMO";
/// Access key.
pub const ACCESS_KEY: &str = "F8BBA842ECF85";
/// Secret key.
pub const SECRET_KEY: &str = "K951B6PE1waDMi640xX08PD3vg6EkVlz";

/// What the fake holds.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Every request (path, JSON body), in order.
    pub calls: Vec<(String, Value)>,
    /// Payments MoMo took, by orderId: (amount, transId).
    pub paid: HashMap<String, (i64, i64)>,
    /// Refunds MoMo took, by their orderId: (the payment's transId, amount, the refund's
    /// transId).
    pub refunds: HashMap<String, (i64, i64, i64)>,
    /// Refunds to take and then answer HTTP 502, as if the answer were lost on its way.
    pub lose_refund_answers: u32,
}

/// A running fake.
#[derive(Debug, Clone)]
pub struct FakeMomo {
    /// Its base URL (for `NONGSAN_MOMO_ENDPOINT`).
    pub url: String,
    /// What it saw.
    pub state: Arc<Mutex<FakeState>>,
}

fn field(body: &Value, name: &str) -> String {
    match &body[name] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn signed(body: &Value, names: &[&str]) -> bool {
    let raw = names
        .iter()
        .map(|n| {
            let v = if *n == "accessKey" {
                ACCESS_KEY.to_owned()
            } else {
                field(body, n)
            };
            format!("{n}={v}")
        })
        .collect::<Vec<_>>()
        .join("&");
    momo::sign(SECRET_KEY, &raw) == field(body, "signature")
}

async fn answer(
    State(state): State<Arc<Mutex<FakeState>>>,
    uri: axum::http::Uri,
    axum::Json(body): axum::Json<Value>,
) -> (StatusCode, axum::Json<Value>) {
    let (status, body) = answer_of(&state, &uri, body);
    (status, axum::Json(body))
}

fn answer_of(state: &Mutex<FakeState>, uri: &axum::http::Uri, body: Value) -> (StatusCode, Value) {
    let ok = |v: Value| (StatusCode::OK, v);
    let path = uri.path().to_owned();
    let mut s = state.lock().unwrap();
    s.calls.push((path.clone(), body.clone()));
    let order = field(&body, "orderId");
    let bad = json!({ "resultCode": 11, "message": "Invalid signature", "orderId": order });
    match path.as_str() {
        "/v2/gateway/api/create" => {
            let names = [
                "accessKey",
                "amount",
                "extraData",
                "ipnUrl",
                "orderId",
                "orderInfo",
                "partnerCode",
                "redirectUrl",
                "requestId",
                "requestType",
            ];
            if !signed(&body, &names) {
                return ok(bad);
            }
            ok(
                json!({ "partnerCode": PARTNER, "orderId": order, "requestId": field(&body, "requestId"), "amount": body["amount"],
                "resultCode": 0, "message": "Thành công.", "payUrl": format!("https://test-payment.momo.vn/pay/{order}") }),
            )
        }
        "/v2/gateway/api/query" => {
            if !signed(&body, &["accessKey", "orderId", "partnerCode", "requestId"]) {
                return ok(bad);
            }
            match s.paid.get(&order) {
                Some((amount, trans)) => {
                    let refund_trans: Vec<Value> = s
                        .refunds
                        .iter()
                        .filter(|(_, (paid_with, _, _))| paid_with == trans)
                        .map(|(id, (_, amount, refund))| json!({ "orderId": id, "amount": amount, "resultCode": 0, "transId": refund, "createdTime": 1_721_014_700_000_i64 }))
                        .collect();
                    ok(
                        json!({ "orderId": order, "resultCode": 0, "message": "Thành công.", "amount": amount, "transId": trans, "refundTrans": refund_trans }),
                    )
                }
                None => ok(
                    json!({ "orderId": order, "resultCode": 1000, "message": "Giao dịch đã được khởi tạo, chờ người dùng xác nhận thanh toán." }),
                ),
            }
        }
        _ => {
            let names = [
                "accessKey",
                "amount",
                "description",
                "orderId",
                "partnerCode",
                "requestId",
                "transId",
            ];
            if !signed(&body, &names) {
                return ok(bad);
            }
            if s.refunds.contains_key(&order) {
                return ok(
                    json!({ "orderId": order, "resultCode": 41, "message": "Trùng orderId. Duplicated orderId." }),
                );
            }
            let refund = 5_000_000 + i64::try_from(s.calls.len()).unwrap();
            let paid_with = body["transId"].as_i64().unwrap_or_default();
            let amount = body["amount"].as_i64().unwrap_or_default();
            s.refunds.insert(order.clone(), (paid_with, amount, refund));
            if s.lose_refund_answers > 0 {
                s.lose_refund_answers -= 1;
                return (StatusCode::BAD_GATEWAY, json!({}));
            }
            ok(
                json!({ "orderId": order, "resultCode": 0, "message": "Thành công.", "amount": amount, "transId": refund }),
            )
        }
    }
}

impl FakeMomo {
    /// Starts the fake on a free port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(FakeState::default()));
        let router = Router::new()
            .route("/v2/gateway/api/create", post(answer))
            .route("/v2/gateway/api/query", post(answer))
            .route("/v2/gateway/api/refund", post(answer))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, state }
    }

    /// The bodies sent to `path` (`create`, `query`, `refund`).
    pub fn calls(&self, path: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(p, _)| p.ends_with(path))
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// The result MoMo posts for `order_id` paid (`result_code` 0) or not, signed.
    pub fn ipn(order_id: &str, amount: i64, result_code: i64) -> Ipn {
        let mut ipn = Ipn {
            partner_code: PARTNER.to_owned(),
            order_id: order_id.to_owned(),
            request_id: order_id.to_owned(),
            amount,
            order_info: format!("Thanh toan don hang {order_id}"),
            order_type: "momo_wallet".to_owned(),
            trans_id: 4_084_757_146,
            result_code,
            message: if result_code == 0 {
                "Thành công."
            } else {
                "Giao dịch bị từ chối bởi người dùng."
            }
            .to_owned(),
            pay_type: "qr".to_owned(),
            response_time: 1_721_014_660_600,
            extra_data: String::new(),
            signature: String::new(),
        };
        ipn.signature = momo::sign(SECRET_KEY, &ipn.signing_string(ACCESS_KEY));
        ipn
    }

    /// The next `n` refunds are taken and answered HTTP 502.
    pub fn lose_refund_answers(&self, n: u32) {
        self.state.lock().unwrap().lose_refund_answers = n;
    }

    /// MoMo took `amount` for `order_id` (its query says so from now on).
    pub fn pay(&self, order_id: &str, amount: i64) {
        self.state
            .lock()
            .unwrap()
            .paid
            .insert(order_id.to_owned(), (amount, 4_084_757_146));
    }
}
