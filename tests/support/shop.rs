//! A shop to check out from, in either shape: two farm households with a listing each, and
//! a buyer, all made through the real API.

use serde_json::{Value, json};

use super::actors::{household_profile, listing_body, phone};

/// Where the services are: one address for all (in-process) or one each (split).
#[derive(Debug, Clone)]
pub struct Api {
    /// HTTP client.
    pub http: reqwest::Client,
    /// Listing service base URL.
    pub listing: String,
    /// Order service base URL.
    pub order: String,
}

/// A signed-in account.
#[derive(Debug, Clone)]
pub struct Who {
    /// Account id.
    pub id: String,
    /// Bearer token.
    pub token: String,
}

impl Api {
    /// The same address for every service.
    pub fn one(url: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            listing: url.to_owned(),
            order: url.to_owned(),
        }
    }

    /// Sends a request; returns (status, body).
    pub async fn send(
        &self,
        method: reqwest::Method,
        url: String,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, Value) {
        send(&self.http, method, url, token, headers, body).await
    }

    /// POST to the listing service.
    pub async fn listing_post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        self.send(
            reqwest::Method::POST,
            format!("{}{path}", self.listing),
            token,
            &[],
            Some(body),
        )
        .await
    }

    /// GET from the listing service.
    pub async fn listing_get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.send(
            reqwest::Method::GET,
            format!("{}{path}", self.listing),
            token,
            &[],
            None,
        )
        .await
    }

    /// POST to the order service.
    pub async fn order_post(
        &self,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> (u16, Value) {
        self.send(
            reqwest::Method::POST,
            format!("{}{path}", self.order),
            Some(token),
            headers,
            Some(body),
        )
        .await
    }

    /// GET from the order service.
    pub async fn order_get(&self, path: &str, token: &str) -> (u16, Value) {
        self.send(
            reqwest::Method::GET,
            format!("{}{path}", self.order),
            Some(token),
            &[],
            None,
        )
        .await
    }

    /// Registers and signs in.
    pub async fn register(&self, role: &str) -> Who {
        let phone = phone();
        let mut body = json!({ "phone": phone, "password": "mật khẩu an toàn", "display_name": format!("Test {role}"), "role": role });
        if role == "household" {
            body["household"] = household_profile(&format!("Hộ {}", &phone[6..]));
        }
        let (status, r) = self.listing_post("/v1/accounts", None, &body).await;
        assert_eq!(status, 201, "{r}");
        let (status, s) = self
            .listing_post(
                "/v1/sessions",
                None,
                &json!({ "phone": phone, "password": "mật khẩu an toàn" }),
            )
            .await;
        assert_eq!(status, 200, "{s}");
        Who {
            id: s["account"]["id"].as_str().unwrap().to_owned(),
            token: s["access_token"].as_str().unwrap().to_owned(),
        }
    }

    /// A listing with `stock` kg in two lots (an older one of 2 kg, the rest newer), at `price` per kg.
    pub async fn listing(&self, seller: &Who, price: i64, stock: i64) -> String {
        let mut body = listing_body();
        body["price_vnd"] = json!(price);
        let (status, l) = self
            .listing_post("/v1/listings", Some(&seller.token), &body)
            .await;
        assert_eq!(status, 201, "{l}");
        let id = l["id"].as_str().unwrap().to_owned();
        for (code, date, qty) in [
            ("OLD-1", "2026-11-15", 2),
            ("NEW-1", "2026-11-25", stock - 2),
        ] {
            let (status, r) = self
                .listing_post(
                    &format!("/v1/listings/{id}/lots"),
                    Some(&seller.token),
                    &json!({ "lot_code": code, "harvest_date": date, "quantity": qty.to_string() }),
                )
                .await;
            assert_eq!(status, 201, "{r}");
        }
        id
    }

    /// A household selling one listing of 10 kg at 65,000 đ/kg, and a buyer.
    pub async fn shop(&self) -> (Who, Who, String) {
        let seller = self.register("household").await;
        let buyer = self.register("buyer").await;
        let listing = self.listing(&seller, 65_000, 10).await;
        (seller, buyer, listing)
    }

    /// A listing's stock as its seller sees it.
    pub async fn stock(&self, seller: &Who, listing: &str) -> Value {
        let (status, s) = self
            .listing_get(
                &format!("/v1/listings/{listing}/stock"),
                Some(&seller.token),
            )
            .await;
        assert_eq!(status, 200, "{s}");
        s["stock"].clone()
    }

    /// Checks out with an idempotency key.
    pub async fn checkout(&self, buyer: &Who, key: &str, body: &Value) -> (u16, Value) {
        self.order_post(
            "/v1/checkouts",
            &buyer.token,
            &[("idempotency-key", key)],
            body,
        )
        .await
    }
}

/// Sends a request in English with an optional token and headers; returns (status, body).
pub async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = http.request(method, url).header("accept-language", "en");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A delivery address in Đơn Dương, Lâm Đồng.
pub fn delivery() -> Value {
    json!({ "province_code": "68", "commune_code": "24931", "street": "12 Lê Lợi", "recipient_name": "Nguyễn Thị Hoa", "recipient_phone": "0987654321" })
}

/// A basket body.
pub fn basket(lines: &[(&str, &str)], method: &str) -> Value {
    json!({
        "lines": lines.iter().map(|(l, q)| json!({ "listing_id": l, "quantity": q })).collect::<Vec<_>>(),
        "delivery": delivery(),
        "payment_method": method,
    })
}
