//! People using the app in tests: they register and sign in through the real API.

use nongsan_shared::auth::Role;
use serde_json::{Value, json};

use super::{TestApp, token};

/// A signed-in account.
#[derive(Debug, Clone)]
pub struct User {
    /// Account id.
    pub id: String,
    /// Phone number as registered.
    pub phone: String,
    /// Bearer token.
    pub token: String,
}

static NEXT_PHONE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A fresh valid Vietnamese mobile number.
pub fn phone() -> String {
    let n = NEXT_PHONE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("0912{n:06}")
}

/// A household profile in Đơn Dương, Lâm Đồng.
pub fn household_profile(name: &str) -> Value {
    json!({ "name": name, "address": { "province_code": "68", "commune_code": "24931", "street": "Thôn Lạc Lâm" } })
}

impl TestApp {
    /// Sends a request in English with an optional token and headers; returns (status, body).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, Value) {
        crate::support::shop::send(&self.http, method, self.at(path), token, headers, body).await
    }

    /// POSTs JSON with an optional token; returns (status, body).
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, token, &[], Some(body))
            .await
    }

    /// Like [`TestApp::post`] with extra headers.
    pub async fn post_with(
        &self,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> (u16, Value) {
        self.send(
            reqwest::Method::POST,
            path,
            Some(token),
            headers,
            Some(body),
        )
        .await
    }

    /// PATCHes JSON; returns (status, body).
    pub async fn patch(
        &self,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> (u16, Value) {
        self.send(
            reqwest::Method::PATCH,
            path,
            Some(token),
            headers,
            Some(body),
        )
        .await
    }

    /// GETs with an optional token; returns (status, body).
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, token, &[], None)
            .await
    }

    /// Registers and signs in a buyer or household (with a profile).
    pub async fn register(&self, role: &str) -> User {
        let phone = phone();
        let mut body = json!({ "phone": phone, "password": "mật khẩu an toàn", "display_name": format!("Test {role}"), "role": role });
        if role == "household" {
            body["household"] = household_profile("Hộ thử nghiệm");
        }
        let (status, res) = self.post("/v1/accounts", None, &body).await;
        assert_eq!(status, 201, "{res}");
        self.login(&phone).await
    }

    /// Signs in.
    pub async fn login(&self, phone: &str) -> User {
        let (status, s) = self
            .post(
                "/v1/sessions",
                None,
                &json!({ "phone": phone, "password": "mật khẩu an toàn" }),
            )
            .await;
        assert_eq!(status, 200, "{s}");
        User {
            id: s["account"]["id"].as_str().unwrap().to_owned(),
            phone: phone.to_owned(),
            token: s["access_token"].as_str().unwrap().to_owned(),
        }
    }

    /// A buyer whom an operator made a helper or a cooperative manager, signed in again.
    pub async fn staff(&self, role: &str) -> User {
        let buyer = self.register("buyer").await;
        let (_, operator) = token(Role::Operator);
        let res = self
            .http
            .put(self.at(&format!("/v1/accounts/{}/role", buyer.id)))
            .bearer_auth(&operator)
            .json(&json!({ "role": role }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        self.login(&buyer.phone).await
    }

    /// A listing of `seller` (acting with `headers`), in kg, active, with `stock` kg in one lot.
    pub async fn listing_with_stock(&self, seller: &User, stock: &str) -> String {
        let (status, l) = self
            .post("/v1/listings", Some(&seller.token), &listing_body())
            .await;
        assert_eq!(status, 201, "{l}");
        let id = l["id"].as_str().unwrap().to_owned();
        if stock != "0" {
            let (status, lot) = self.post(&format!("/v1/listings/{id}/lots"), Some(&seller.token), &json!({ "lot_code": "LOT-A", "harvest_date": "2026-11-20", "quantity": stock })).await;
            assert_eq!(status, 201, "{lot}");
        }
        id
    }
}

/// A valid listing: Xoài cát Hòa Lộc, 65,000 đ/kg, from Đơn Dương.
pub fn listing_body() -> Value {
    json!({
        "title": "Xoài cát Hòa Lộc",
        "description": "Xoài chín cây",
        "category": "trai-cay-dac-san",
        "unit": "kg",
        "price_vnd": 65000,
        "min_order": "1",
        "step": "0.5",
        "origin_commune": "24931",
        "certifications": [{ "kind": "vietgap", "number": "VG-123", "issuer": "Trung tâm chứng nhận", "valid_from": "2025-01-01", "valid_until": "2027-01-01" }],
        "ocop_stars": 4,
        "status": "active"
    })
}
