//! Typed helpers for the calls most tests make, on [`Client`], and the request bodies they
//! send. A helper that makes something the test needs asserts that it worked and answers
//! what was made; a helper for a call the tests also expect to be refused answers (status,
//! JSON body).

use nongsan_shared::auth::Role;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    client::{Client, Request},
    user::User,
};

/// The password every test account has.
pub const PASSWORD: &str = "mật khẩu an toàn";

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
        "certifications": [{ "kind": "vietgap", "number": "VG-123", "issuer": "Trung tâm chứng nhận", "valid_from": "2025-01-01", "valid_until": "2030-01-01" }],
        "ocop_stars": 4,
        "status": "active"
    })
}

/// A delivery address in Đơn Dương, Lâm Đồng.
pub fn delivery() -> Value {
    json!({ "province_code": "68", "commune_code": "24931", "street": "12 Lê Lợi", "recipient_name": "Nguyễn Thị Hoa", "recipient_phone": "0987654321" })
}

/// A basket: (listing, quantity) lines, delivered to [`delivery`], paid by `method`.
pub fn basket(lines: &[(&str, &str)], method: &str) -> Value {
    json!({
        "lines": lines.iter().map(|(l, q)| json!({ "listing_id": l, "quantity": q })).collect::<Vec<_>>(),
        "delivery": delivery(),
        "payment_method": method,
    })
}

/// A listing's stock as its seller sees it.
#[derive(Debug, Clone, Deserialize)]
pub struct Stock {
    /// The levels.
    #[serde(rename = "stock")]
    pub levels: Levels,
    /// Lots with stock, oldest harvest first.
    pub lots: Vec<Lot>,
}

/// Stock levels, as the API writes quantities ("18.5").
#[derive(Debug, Clone, Deserialize)]
pub struct Levels {
    /// In the seller's hands.
    pub on_hand: String,
    /// Held for checkouts.
    pub reserved: String,
    /// What can still be ordered.
    pub available: String,
}

/// A lot with stock.
#[derive(Debug, Clone, Deserialize)]
pub struct Lot {
    /// Its code.
    pub lot_code: String,
    /// The household that grew it.
    pub household_id: Option<String>,
    /// On hand, as the API writes quantities.
    pub on_hand: String,
}

impl Client {
    /// Registers an account of `role` (a buyer, or a household with a profile) and signs
    /// it in.
    pub async fn register(&self, role: Role) -> User {
        let phone = phone();
        let mut body = json!({ "phone": phone, "password": PASSWORD, "display_name": format!("Test {}", role.as_str()), "role": role });
        if role == Role::Household {
            body["household"] = household_profile(&format!("Hộ {}", &phone[6..]));
        }
        let (status, res) = self.post("/v1/accounts", None, &body).await;
        assert_eq!(status, 201, "{res}");
        self.sign_in(&phone).await
    }

    /// Signs in with [`PASSWORD`].
    pub async fn sign_in(&self, phone: &str) -> User {
        let (status, session) = self
            .post(
                "/v1/sessions",
                None,
                &json!({ "phone": phone, "password": PASSWORD }),
            )
            .await;
        assert_eq!(status, 200, "{session}");
        User::from_session(&session, phone)
    }

    /// A buyer whom an operator gave `role` (helper or cooperative manager), signed in
    /// again.
    pub async fn staff(&self, role: Role) -> User {
        let buyer = self.register(Role::Buyer).await;
        let operator = User::minted(Role::Operator);
        let res = self
            .send(
                Request::put(format!("/v1/accounts/{}/role", buyer.id))
                    .by(&operator)
                    .json(&json!({ "role": role })),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        self.sign_in(buyer.phone()).await
    }

    /// Creates a listing from `body` as `seller`; answers it.
    pub async fn create_listing(&self, seller: &User, body: &Value) -> Value {
        let (status, listing) = self.post("/v1/listings", Some(seller), body).await;
        assert_eq!(status, 201, "{listing}");
        listing
    }

    /// Takes `quantity` of lot `code`, harvested on `harvest_date`, into a listing's stock.
    pub async fn add_lot(
        &self,
        seller: &User,
        listing: &str,
        code: &str,
        harvest_date: &str,
        quantity: &str,
    ) {
        let (status, lot) = self
            .post(
                &format!("/v1/listings/{listing}/lots"),
                Some(seller),
                &json!({ "lot_code": code, "harvest_date": harvest_date, "quantity": quantity }),
            )
            .await;
        assert_eq!(status, 201, "{lot}");
    }

    /// A [`listing_body`] listing of `seller`, with `stock` kg in lot `LOT-A` (none when
    /// `stock` is "0"); answers its id.
    pub async fn listing_with_stock(&self, seller: &User, stock: &str) -> String {
        let id = id_of(&self.create_listing(seller, &listing_body()).await);
        if stock != "0" {
            self.add_lot(seller, &id, "LOT-A", "2026-11-20", stock)
                .await;
        }
        id
    }

    /// A [`listing_body`] listing of `seller` at `price` per kg, with `stock` kg in two
    /// lots: `OLD-1` of 2 kg harvested first, `NEW-1` of the rest; answers its id.
    pub async fn listing_in_two_lots(&self, seller: &User, price: i64, stock: i64) -> String {
        let mut body = listing_body();
        body["price_vnd"] = json!(price);
        let id = id_of(&self.create_listing(seller, &body).await);
        self.add_lot(seller, &id, "OLD-1", "2026-11-15", "2").await;
        self.add_lot(seller, &id, "NEW-1", "2026-11-25", &(stock - 2).to_string())
            .await;
        id
    }

    /// A household selling one listing of 10 kg at 65,000 đ/kg (in two lots, see
    /// [`Client::listing_in_two_lots`]), and a buyer: (seller, buyer, listing id).
    pub async fn shop(&self) -> (User, User, String) {
        let seller = self.register(Role::Household).await;
        let buyer = self.register(Role::Buyer).await;
        let listing = self.listing_in_two_lots(&seller, 65_000, 10).await;
        (seller, buyer, listing)
    }

    /// A listing's stock and lots, as `who` (its seller or their manager) sees them.
    pub async fn stock(&self, who: &User, listing: &str) -> Stock {
        let (status, stock) = self
            .get(&format!("/v1/listings/{listing}/stock"), Some(who))
            .await;
        assert_eq!(status, 200, "{stock}");
        serde_json::from_value(stock.clone()).unwrap_or_else(|e| panic!("{e}: {stock}"))
    }

    /// Creates a cooperative from `body` as `manager`; answers its id.
    pub async fn create_cooperative(&self, manager: &User, body: &Value) -> String {
        let (status, coop) = self.post("/v1/cooperatives", Some(manager), body).await;
        assert_eq!(status, 201, "{coop}");
        id_of(&coop)
    }

    /// Adds `household` to cooperative `coop`: `who` invites it, and (when that worked) the
    /// household accepts. Answers the first refusal, or the accepted membership.
    pub async fn add_member(&self, who: &User, coop: &str, household: &User) -> (u16, Value) {
        let (status, body) = self.invite_member(who, coop, &household.id).await;
        if status != 200 {
            return (status, body);
        }
        self.answer_invitation(household, coop, &household.id, "accept")
            .await
    }

    /// Answers (`accept`, `decline`, or an operator's `approve`) the invitation of
    /// `household` into cooperative `coop`, as `who`.
    pub async fn answer_invitation(
        &self,
        who: &User,
        coop: &str,
        household: &str,
        answer: &str,
    ) -> (u16, Value) {
        self.post(
            &format!("/v1/cooperatives/{coop}/members/{household}/{answer}"),
            Some(who),
            &json!({}),
        )
        .await
    }

    /// Invites `household` into cooperative `coop`, as `who`; nothing more (the household
    /// has not agreed).
    pub async fn invite_member(&self, who: &User, coop: &str, household: &str) -> (u16, Value) {
        self.post(
            &format!("/v1/cooperatives/{coop}/members"),
            Some(who),
            &json!({ "household_id": household }),
        )
        .await
    }

    /// Checks out `body` as `buyer` with idempotency key `key`.
    pub async fn checkout(&self, buyer: &User, key: &str, body: &Value) -> (u16, Value) {
        self.send(
            Request::post("/v1/checkouts")
                .by(buyer)
                .header("idempotency-key", key)
                .json(body),
        )
        .await
        .parts()
    }

    /// Checks out `quantity` of `listing` as `buyer`, cash on delivery; answers the id of
    /// the order placed.
    pub async fn cod_order(&self, buyer: &User, listing: &str, quantity: &str) -> String {
        let key = uuid::Uuid::now_v7().to_string();
        let (status, c) = self
            .checkout(buyer, &key, &basket(&[(listing, quantity)], "cod"))
            .await;
        assert_eq!(status, 201, "{c}");
        id_of(&c["orders"][0])
    }

    /// A checkout, as `who` reads it.
    pub async fn read_checkout(&self, who: &User, checkout: &str) -> (u16, Value) {
        self.get(&format!("/v1/checkouts/{checkout}"), Some(who))
            .await
    }

    /// An order, as `who` reads it.
    pub async fn read_order(&self, who: &User, order: &str) -> (u16, Value) {
        self.get(&format!("/v1/orders/{order}"), Some(who)).await
    }

    /// The orders of household `seller`, as `who` lists them.
    pub async fn seller_orders(&self, who: &User, seller: &str) -> (u16, Value) {
        self.get(
            &format!("/v1/orders?seller_kind=household&seller_id={seller}"),
            Some(who),
        )
        .await
    }

    /// Takes `action` (confirm, ship, cancel...) on an order as `who`, giving `reason` if
    /// any.
    pub async fn order_action(
        &self,
        who: &User,
        order: &str,
        action: &str,
        reason: Option<&str>,
    ) -> (u16, Value) {
        let body = reason.map_or_else(|| json!({}), |r| json!({ "reason": r }));
        self.post(&format!("/v1/orders/{order}/{action}"), Some(who), &body)
            .await
    }

    /// Waits (at most 30 s) until `buyer`'s checkout is paid, its first order too, and
    /// `seller`'s `listing` has sold down to `on_hand` with nothing reserved.
    pub async fn paid_and_sold(
        &self,
        buyer: &User,
        checkout: &str,
        seller: &User,
        listing: &str,
        on_hand: &str,
    ) {
        super::eventually(
            std::time::Duration::from_secs(30),
            "the checkout to be paid and its stock sold",
            || async {
                let (_, c) = self.read_checkout(buyer, checkout).await;
                let s = self.stock(seller, listing).await.levels;
                (c["status"] == "paid"
                    && c["orders"][0]["status"] == "paid"
                    && s.on_hand == on_hand
                    && s.reserved == "0")
                    .then_some(())
            },
        )
        .await;
    }

    /// A checkout of `quantity` of `listing` by `buyer`, paid by VNPay's IPN; answers the
    /// checkout once its (first) order is paid.
    pub async fn paid_by_vnpay(
        &self,
        buyer: &User,
        listing: &str,
        quantity: &str,
        key: &str,
    ) -> Value {
        let (status, c) = self
            .checkout(buyer, key, &basket(&[(listing, quantity)], "vnpay"))
            .await;
        assert_eq!(status, 201, "{c}");
        let order = c["orders"][0]["id"].as_str().unwrap();
        let url = c["payment_url"].as_str().unwrap();
        assert_eq!(
            self.vnpay_ipn(&super::fake_vnpay::ipn_query(url, "00", None))
                .await["RspCode"],
            "00"
        );
        super::eventually(
            std::time::Duration::from_secs(15),
            "the order to be paid",
            || async {
                let (_, o) = self.read_order(buyer, order).await;
                (o["status"] == "paid").then_some(())
            },
        )
        .await;
        c
    }

    /// `/v1/search?{query}`, anonymously.
    pub async fn search(&self, query: &str) -> (u16, Value) {
        self.get(&format!("/v1/search?{query}"), None).await
    }

    /// VNPay's IPN with `query`; answers what the payment service told VNPay.
    pub async fn vnpay_ipn(&self, query: &str) -> Value {
        self.get(&format!("/v1/payments/vnpay/ipn?{query}"), None)
            .await
            .1
    }
}

/// The order of `seller` in a checkout the API answered.
pub fn order_of(checkout: &Value, seller: &User) -> Value {
    checkout["orders"]
        .as_array()
        .unwrap_or_else(|| panic!("no orders: {checkout}"))
        .iter()
        .find(|o| o["seller"]["id"] == seller.id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no order of {}: {checkout}", seller.id))
}

/// The `id` of something the API made.
pub fn id_of(made: &Value) -> String {
    made["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {made}"))
        .to_owned()
}

/// Sends a checkout of `body` as `buyer` with `key` and hangs up once its key is claimed in
/// `order` (the order schema), as a phone that loses its signal does: the caller holds the
/// checkout longer (a fail point), so the request is cut off before its answer. A hang-up
/// after a fixed time (200 ms) came, on a loaded machine, before the request had reached
/// its handler at all, and the checkout was never made.
pub async fn cut_off_checkout(
    api: &Client,
    buyer: &User,
    key: &str,
    body: &Value,
    order: &sqlx::PgPool,
) {
    let request = tokio::spawn(
        reqwest::Client::new()
            .post(api.url("/v1/checkouts"))
            .bearer_auth(&buyer.token)
            .header("idempotency-key", key)
            .json(body)
            .send(),
    );
    super::eventually(
        std::time::Duration::from_secs(30),
        "the checkout's key claimed",
        || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM idempotency_keys WHERE buyer_id = $1::uuid AND key = $2)",
            )
            .bind(&buyer.id)
            .bind(key)
            .fetch_one(order)
            .await
            .unwrap()
            .then_some(())
        },
    )
    .await;
    assert!(
        !request.is_finished(),
        "the checkout answered before it was cut off"
    );
    request.abort();
    let _ = request.await;
}
