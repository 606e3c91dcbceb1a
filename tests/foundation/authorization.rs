//! The authorization matrix: every operation of the OpenAPI document, called as every role
//! on one household's resources, held against a table of what each role gets.
//!
//! The world: household H sells listing L (with stock) and is a member of cooperative C;
//! helper A registered H and is assigned to it; manager M runs C (and C3, a cooperative H
//! is invited into or leaves as a row needs); buyer B has a checkout and an order from H.
//! The others are strangers to all of it: buyer B2, household H2, helper U, manager M2 (of
//! C2), and the service identity. Whoever may act for someone (helpers, managers, the
//! operator) sends `X-On-Behalf-Of: H`, so the unassigned helper and the other manager
//! claim H as much as the assigned helper and H's manager do.
//!
//! A row is one call; each cell is what one role gets: `OK` (2xx), `NO` (403), `HID` (404,
//! so the resource's existence is not given away) or `ANON` (401). A route of the document
//! without a row fails the test, so no route ships without its row; any 5xx fails it too.
//! Calls that change things prepare their own target first (a fresh order to confirm, an
//! invitation to answer), so every role meets the same state.

use std::collections::BTreeSet;

use nongsan_shared::auth::Role;
use serde_json::json;
use sqlx::PgPool;

use crate::support::{
    TestApp, TestDb,
    calls::{PASSWORD, basket, household_profile, id_of, listing_body, phone},
    client::{Client, Request},
    process::SplitApp,
    test_settings,
    user::User,
};

/// What a role gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// 2xx.
    Allowed,
    /// 401: no identity.
    Unauthenticated,
    /// 403: known, not allowed.
    Forbidden,
    /// 404: not allowed to know it exists.
    Hidden,
}

// Short names, so a row of the table fits on a line.
const OK: Expect = Expect::Allowed;
const ANON: Expect = Expect::Unauthenticated;
const NO: Expect = Expect::Forbidden;
const HID: Expect = Expect::Hidden;

/// The roles, in the order of a row's cells.
const ROLES: [&str; 11] = [
    "anonymous",
    "buyer",
    "other buyer",
    "household",
    "other household",
    "assigned helper",
    "unassigned helper",
    "manager",
    "other manager",
    "operator",
    "service",
];

/// One call of one operation (`case` tells calls of the same operation apart).
struct Row {
    op: &'static str,
    case: &'static str,
    expect: [Expect; 11],
}

const fn row(op: &'static str, case: &'static str, expect: [Expect; 11]) -> Row {
    Row { op, case, expect }
}

/// Who gets what. Columns: anonymous, buyer B, other buyer, household H, other household,
/// assigned helper A, unassigned helper, manager M, other manager, operator, service.
#[rustfmt::skip]
const TABLE: &[Row] = &[
    // Health, reference data and the catalog: public.
    row("GET /healthz", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("GET /readyz", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("GET /metrics", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("GET /v1/categories", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("GET /v1/units", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("GET /v1/certifications", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("GET /v1/regions/provinces", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("GET /v1/regions/provinces/{code}/communes", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("GET /v1/regions/communes", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("GET /v1/regions/communes/{code}", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("GET /v1/regions/legacy-communes/{code}", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("GET /v1/search", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("GET /v1/listings", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("GET /v1/listings/{id}", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("GET /v1/households/{id}", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("GET /v1/cooperatives/{id}", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    // A lot's page and QR code are for anyone with a phone.
    row("GET /01/{gtin}/10/{lot}", "H's lot LOT-A", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("GET /t/{id}", "H's lot LOT-A", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("GET /v1/lots/{id}/qr.png", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("GET /v1/lots/{id}/qr.svg", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    // VNPay calls it unsigned as far as we know; the answer is in the body (97 here).
    row("GET /v1/payments/vnpay/ipn", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("GET /v1/payments/methods", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    // Stripe's signature is the credential, whoever else the caller is.
    row("POST /v1/payments/stripe/webhook", "signed by Stripe", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    // MoMo is not set up in the matrix's app: its IPN is not there for anyone.
    row("POST /v1/payments/momo/ipn", "MoMo not set up", [HID, HID, HID, HID, HID, HID, HID, HID, HID, HID, HID]),

    // Identity. Whoever holds a refresh token or an activation code holds the session.
    row("POST /v1/accounts", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("POST /v1/accounts/activate", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("POST /v1/sessions", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("POST /v1/sessions/refresh", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    row("POST /v1/sessions/logout", "", [OK, OK, OK, OK, OK, OK, OK, OK, OK, OK, OK]),
    // The service identity is no account.
    row("GET /v1/me", "", [ANON, OK, OK, OK, OK, OK, OK, OK, OK, OK, HID]),
    row("PUT /v1/accounts/{id}/role", "", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, OK, NO]),

    // The household's own profile and audit trail.
    row("POST /v1/households", "", [ANON, NO, NO, NO, NO, OK, OK, NO, NO, OK, NO]),
    row("PATCH /v1/households/{id}", "", [ANON, NO, NO, OK, NO, OK, NO, OK, NO, OK, NO]),
    // The audit trail is the household's check on those who act for it: they do not read it.
    row("GET /v1/households/{id}/audit", "", [ANON, NO, NO, OK, NO, NO, NO, NO, NO, OK, NO]),

    // H's listing and its stock.
    row("POST /v1/listings", "", [ANON, NO, NO, OK, OK, OK, NO, OK, NO, OK, NO]),
    row("PATCH /v1/listings/{id}", "", [ANON, NO, NO, OK, NO, OK, NO, OK, NO, OK, NO]),
    row("POST /v1/listings/{id}/status", "", [ANON, NO, NO, OK, NO, OK, NO, OK, NO, OK, NO]),
    row("POST /v1/listings/{id}/lots", "", [ANON, NO, NO, OK, NO, OK, NO, OK, NO, OK, NO]),
    row("POST /v1/listings/{id}/adjustments", "", [ANON, NO, NO, OK, NO, OK, NO, OK, NO, OK, NO]),
    row("GET /v1/listings/{id}/stock", "", [ANON, NO, NO, OK, NO, OK, NO, OK, NO, OK, NO]),
    row("GET /v1/listings/{id}/movements", "", [ANON, NO, NO, OK, NO, OK, NO, OK, NO, OK, NO]),
    row("GET /v1/listings/{id}/labels", "", [ANON, NO, NO, OK, NO, OK, NO, OK, NO, OK, NO]),
    // Whether a certificate is genuine is an operator's finding.
    row("POST /v1/listings/{id}/certifications/{position}/verification", "", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, OK, NO]),

    // Cooperative C, run by M, with H as a member.
    // A cooperative belongs to the manager who creates it; an operator grants the role.
    row("POST /v1/cooperatives", "", [ANON, NO, NO, NO, NO, NO, NO, OK, OK, NO, NO]),
    row("POST /v1/cooperatives/{id}/members", "invite H2 into C", [ANON, NO, NO, NO, NO, NO, NO, OK, NO, OK, NO]),
    row("POST /v1/cooperatives/{id}/members/{household_id}/accept", "H invited into C3", [ANON, NO, NO, OK, NO, OK, NO, NO, NO, NO, NO]),
    row("POST /v1/cooperatives/{id}/members/{household_id}/decline", "H invited into C3", [ANON, NO, NO, OK, NO, OK, NO, NO, NO, NO, NO]),
    row("POST /v1/cooperatives/{id}/members/{household_id}/approve", "H invited into C3", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, OK, NO]),
    row("DELETE /v1/cooperatives/{id}/members/{household_id}", "H, a member of C3", [ANON, NO, NO, OK, NO, OK, NO, OK, NO, OK, NO]),
    row("POST /v1/cooperatives/{id}/pooling", "H's lot into C's listing", [ANON, NO, NO, NO, NO, NO, NO, OK, NO, OK, NO]),
    row("POST /v1/cooperatives/{id}/imports", "", [ANON, NO, NO, NO, NO, NO, NO, OK, NO, OK, NO]),
    row("GET /v1/cooperatives/{id}/stock", "", [ANON, NO, NO, NO, NO, NO, NO, OK, NO, OK, NO]),

    // B's checkout and order from H. Strangers get 404, not 403; an operator reads any.
    // Only buyers buy.
    row("POST /v1/checkouts", "", [ANON, OK, OK, NO, NO, NO, NO, NO, NO, NO, NO]),
    row("GET /v1/checkouts", "", [ANON, OK, OK, OK, OK, OK, OK, OK, OK, OK, NO]),
    row("GET /v1/checkouts/{id}", "", [ANON, OK, HID, HID, HID, HID, HID, HID, HID, OK, HID]),
    row("GET /v1/orders", "own purchases", [ANON, OK, OK, OK, OK, OK, OK, OK, OK, OK, NO]),
    row("GET /v1/orders", "H's sales", [ANON, NO, NO, OK, NO, OK, NO, OK, NO, OK, NO]),
    row("GET /v1/orders/{id}", "", [ANON, OK, HID, OK, HID, OK, HID, OK, HID, OK, HID]),
    row("POST /v1/orders/{id}/{action}", "confirm", [ANON, NO, HID, OK, HID, OK, HID, OK, HID, OK, HID]),
    row("POST /v1/orders/{id}/{action}", "cancel", [ANON, OK, HID, NO, HID, NO, HID, NO, HID, NO, HID]),

    // Refunds are an operator's (B's order is cash on delivery: no online payment to refund).
    row("POST /v1/payments/refunds", "B's cash order", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, HID, NO]),
    // Money. Rates and payouts are an operator's; C's fee is its manager's. A seller's
    // balance and statement are read by whoever may act for it; only H itself (or an
    // operator) says where its payouts go: no one acting for it may point them elsewhere.
    row("GET /v1/payments/commission", "", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, OK, NO]),
    row("PUT /v1/payments/commission/categories/{code}", "", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, OK, NO]),
    row("PUT /v1/payments/commission/sellers/{kind}/{id}", "H", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, OK, NO]),
    row("PUT /v1/payments/cooperatives/{id}/fee", "C", [ANON, NO, NO, NO, NO, NO, NO, OK, NO, OK, NO]),
    row("GET /v1/payments/sellers/{kind}/{id}/balance", "H", [ANON, NO, NO, OK, NO, OK, NO, OK, NO, OK, NO]),
    row("GET /v1/payments/sellers/{kind}/{id}/statement", "H", [ANON, NO, NO, OK, NO, OK, NO, OK, NO, OK, NO]),
    row("PUT /v1/payments/payout-accounts/{kind}/{id}", "H", [ANON, NO, NO, OK, NO, NO, NO, NO, NO, OK, NO]),
    row("POST /v1/payments/payouts", "", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, OK, NO]),
    row("GET /v1/payments/payouts/{id}", "unknown", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, HID, NO]),
    row("GET /v1/payments/payouts/{id}/transfers", "unknown", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, HID, NO]),
    row("POST /v1/payments/payouts/{id}/lines/{line_id}", "unknown", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, HID, NO]),

    // Between services only.
    row("POST /v1/internal/reservations", "", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, NO, OK]),
    // An operator may look into a reservation, never hold, commit or release one.
    row("GET /v1/internal/reservations/{id}", "", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, OK, OK]),
    row("POST /v1/internal/reservations/{id}/commit", "", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, NO, OK]),
    row("POST /v1/internal/reservations/{id}/release", "", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, NO, OK]),
    row("GET /v1/internal/seller-access", "", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, NO, OK]),
    row("POST /v1/internal/payments", "", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, NO, OK]),
    // The listing service's question about reservations without a checkout gives them up:
    // a service's only, never an operator's.
    row("POST /v1/internal/checkouts/reservation-outcomes", "", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, NO, OK]),

    // Operations: the operator only (an unknown dead letter is a 404 to the operator).
    row("GET /v1/ops/listing/dead-letters", "", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, OK, NO]),
    row("GET /v1/ops/order/dead-letters", "", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, OK, NO]),
    row("GET /v1/ops/payment/dead-letters", "", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, OK, NO]),
    // Who bought a lot (a recall) is an operator's to read.
    row("GET /v1/ops/order/lots/{lot_id}/orders", "H's lot LOT-A", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, OK, NO]),
    row("POST /v1/ops/listing/dead-letters/{id}/retry", "unknown", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, HID, NO]),
    row("POST /v1/ops/order/dead-letters/{id}/retry", "unknown", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, HID, NO]),
    row("POST /v1/ops/payment/dead-letters/{id}/retry", "unknown", [ANON, NO, NO, NO, NO, NO, NO, NO, NO, HID, NO]),
];

/// Everything the rows call on.
struct World {
    api: Client,
    listing_db: PgPool,
    /// By role, in [`ROLES`] order; `None` for anonymous.
    users: Vec<Option<User>>,
    household: String,
    other_household: String,
    helper: User,
    buyer: User,
    service: User,
    listing: String,
    /// H's lot LOT-A of `listing` (GTIN 08931234567897).
    lot: String,
    coop: String,
    coop_listing: String,
    spare_coop: String,
    checkout: String,
    order: String,
    reservation: String,
    role_target: String,
}

/// A fresh client address per request, so the sign-in limits per address stay out of a test
/// about who may do what.
fn from_anywhere(req: Request) -> Request {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    req.header(
        CLIENT_HEADER,
        &format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255),
    )
}

async fn build_world(api: &Client, listing_db: &PgPool) -> World {
    let api = api.clone();
    let listing_db = listing_db.clone();
    let operator = operator(&api, &listing_db).await;
    let helper = api.staff(Role::Helper).await;
    let other_helper = api.staff(Role::Helper).await;
    let manager = api.staff(Role::CooperativeManager).await;
    let other_manager = api.staff(Role::CooperativeManager).await;
    let buyer = api.register(Role::Buyer).await;
    let other_buyer = api.register(Role::Buyer).await;
    let other_household_user = api.register(Role::Household).await;
    let service = User::minted(Role::Service);

    // H, registered by A, activates its own account.
    let (household, household_user) = helper_registers(&api, &helper).await;

    let mut body = listing_body();
    body["min_order"] = json!("0.5");
    body["gtin"] = json!("8931234567897");
    let listing = id_of(&api.create_listing(&household_user, &body).await);
    api.add_lot(&household_user, &listing, "LOT-A", "2026-11-20", "1000")
        .await;
    let lot: uuid::Uuid = sqlx::query_scalar(
        "SELECT id FROM lots WHERE listing_id = $1::uuid AND lot_code = 'LOT-A'",
    )
    .bind(&listing)
    .fetch_one(&listing_db)
    .await
    .expect("H's lot");
    let lot = lot.to_string();

    let coop_body = json!({ "name": "HTX Đơn Dương", "address": { "province_code": "68", "commune_code": "24931" } });
    let coop = api.create_cooperative(&manager, &coop_body).await;
    assert_eq!(
        api.add_member(&manager, &coop, &household_user).await.0,
        200
    );
    let spare_coop = api
        .create_cooperative(&manager, &json!({ "name": "HTX Lạc Dương", "address": { "province_code": "68", "commune_code": "24931" } }))
        .await;
    api.create_cooperative(&other_manager, &json!({ "name": "HTX Đà Lạt", "address": { "province_code": "68", "commune_code": "24931" } }))
        .await;
    let mut pooled = listing_body();
    pooled["cooperative_id"] = json!(coop);
    let coop_listing = id_of(&api.create_listing(&manager, &pooled).await);

    let key = uuid::Uuid::now_v7().to_string();
    let (status, made) = api
        .checkout(&buyer, &key, &basket(&[(&listing, "1")], "cod"))
        .await;
    assert_eq!(status, 201, "{made}");
    let checkout = id_of(&made);
    let order = id_of(&made["orders"][0]);

    let reservation = new_reservation(&api, &service, &listing).await;
    let role_target = api.register(Role::Buyer).await.id;

    let acting = |u: &User| u.acting_for(&household);
    let other_household = other_household_user.id.clone();
    let users = vec![
        None,
        Some(buyer.clone()),
        Some(other_buyer),
        Some(household_user),
        Some(other_household_user),
        Some(acting(&helper)),
        Some(acting(&other_helper)),
        Some(acting(&manager)),
        Some(acting(&other_manager)),
        Some(acting(&operator)),
        Some(service.clone()),
    ];
    World {
        api,
        listing_db,
        users,
        other_household,
        household,
        helper,
        buyer,
        service,
        listing,
        lot,
        coop,
        coop_listing,
        spare_coop,
        checkout,
        order,
        reservation,
        role_target,
    }
}

/// An operator: a registered account made operator as `nongsan seed --operator` does (no
/// API grants it), signed in.
async fn operator(api: &Client, listing_db: &PgPool) -> User {
    let account = api.register(Role::Buyer).await;
    sqlx::query("UPDATE accounts SET role = 'operator' WHERE id = $1::uuid")
        .bind(&account.id)
        .execute(listing_db)
        .await
        .expect("make the account an operator");
    api.sign_in(account.phone()).await
}

/// `helper` registers a household, which activates its account: (its id, signed in).
async fn helper_registers(api: &Client, helper: &User) -> (String, User) {
    let (phone, code) = register_by_helper(api, helper).await;
    let (status, session) = api
        .post(
            "/v1/accounts/activate",
            None,
            &json!({ "phone": phone, "code": code, "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let user = User::from_session(&session, &phone);
    (user.id.clone(), user)
}

/// `helper` registers a household: (its phone, its activation code).
async fn register_by_helper(api: &Client, helper: &User) -> (String, String) {
    let phone = phone();
    let (status, made) = api
        .post(
            "/v1/households",
            Some(helper),
            &json!({ "phone": phone, "display_name": "Bà Hoa", "household": household_profile("Hộ bà Hoa") }),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let code = made["activation_code"].as_str().expect("a code").to_owned();
    (phone, code)
}

async fn new_reservation(api: &Client, service: &User, listing: &str) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    let (status, made) = api
        .post(
            "/v1/internal/reservations",
            Some(service),
            &json!({ "id": id, "ttl_secs": 600, "lines": [{ "listing_id": listing, "quantity": "1" }] }),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    id
}

/// A new cash-on-delivery order of B for 1 kg of L.
async fn new_order(w: &World) -> String {
    w.api.cod_order(&w.buyer, &w.listing, "1").await
}

/// A fresh refresh token of B.
async fn refresh_token(w: &World) -> String {
    let res = w
        .api
        .send(from_anywhere(Request::post("/v1/sessions").json(
            &json!({ "phone": w.buyer.phone(), "password": PASSWORD }),
        )))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()["refresh_token"].as_str().unwrap().to_owned()
}

/// H's membership of the spare cooperative C3, set to `status` (`invited`, `active`) by
/// the test: each call on it meets the same state.
async fn membership(w: &World, status: &str) {
    sqlx::query(
        "INSERT INTO cooperative_members (cooperative_id, household_id, status) VALUES ($1::uuid, $2::uuid, $3)
         ON CONFLICT (cooperative_id, household_id) DO UPDATE SET status = EXCLUDED.status, left_at = NULL",
    )
    .bind(&w.spare_coop)
    .bind(&w.household)
    .bind(status)
    .execute(&w.listing_db)
    .await
    .expect("set the membership");
}

/// The request of one row, after preparing what it changes.
async fn request(w: &World, row: &Row) -> Request {
    let l = &w.listing;
    let c = &w.coop;
    let c3 = &w.spare_coop;
    let h = &w.household;
    let unknown = uuid::Uuid::now_v7();
    match (row.op, row.case) {
        ("GET /healthz", _) => Request::get("/healthz"),
        ("GET /readyz", _) => Request::get("/readyz"),
        ("GET /metrics", _) => Request::get("/metrics"),
        ("GET /v1/categories", _) => Request::get("/v1/categories"),
        ("GET /v1/units", _) => Request::get("/v1/units"),
        ("GET /v1/certifications", _) => Request::get("/v1/certifications"),
        ("GET /v1/regions/provinces", _) => Request::get("/v1/regions/provinces"),
        ("GET /v1/regions/provinces/{code}/communes", _) => {
            Request::get("/v1/regions/provinces/68/communes")
        }
        ("GET /v1/regions/communes", _) => Request::get("/v1/regions/communes?q=don%20duong"),
        ("GET /v1/regions/communes/{code}", _) => Request::get("/v1/regions/communes/24931"),
        ("GET /v1/regions/legacy-communes/{code}", _) => {
            Request::get("/v1/regions/legacy-communes/24931")
        }
        ("GET /v1/search", _) => Request::get("/v1/search?q=xo%C3%A0i"),
        ("GET /v1/listings", _) => Request::get("/v1/listings"),
        ("GET /v1/listings/{id}", _) => Request::get(format!("/v1/listings/{l}")),
        ("GET /v1/households/{id}", _) => Request::get(format!("/v1/households/{h}")),
        ("GET /v1/cooperatives/{id}", _) => Request::get(format!("/v1/cooperatives/{c}")),
        ("GET /v1/payments/methods", _) => Request::get("/v1/payments/methods"),
        ("POST /v1/payments/momo/ipn", _) => Request::post("/v1/payments/momo/ipn").json(&json!({
            "partnerCode": "MOMO", "orderId": "o", "requestId": "o", "amount": 1000, "orderInfo": "", "orderType": "momo_wallet",
            "transId": 1, "resultCode": 0, "message": "", "payType": "qr", "responseTime": 1, "extraData": "", "signature": "00"
        })),
        ("POST /v1/payments/stripe/webhook", _) => {
            let event = json!({ "id": format!("evt_{unknown}"), "object": "event", "type": "charge.updated", "data": { "object": { "id": "ch_1" } } })
                .to_string();
            let signature = nongsan_payment::stripe::sign_header(
                event.as_bytes(),
                STRIPE_WEBHOOK_SECRET,
                chrono::Utc::now().timestamp(),
            );
            Request::post("/v1/payments/stripe/webhook")
                .header("stripe-signature", &signature)
                .body("application/json", event.into_bytes())
        }
        ("POST /v1/payments/refunds", _) => Request::post("/v1/payments/refunds")
            .header("idempotency-key", &unknown.to_string())
            .json(&json!({ "order_id": w.order, "amount_vnd": 1000, "note": "hàng dập" })),
        ("GET /01/{gtin}/10/{lot}", _) => Request::get("/01/08931234567897/10/LOT-A?7007=261120"),
        ("GET /t/{id}", _) => Request::get(format!("/t/{}", w.lot)),
        ("GET /v1/lots/{id}/qr.png", _) => Request::get(format!("/v1/lots/{}/qr.png", w.lot)),
        ("GET /v1/lots/{id}/qr.svg", _) => Request::get(format!("/v1/lots/{}/qr.svg", w.lot)),
        ("GET /v1/listings/{id}/labels", _) => Request::get(format!("/v1/listings/{}/labels", w.listing)),
        ("POST /v1/listings/{id}/certifications/{position}/verification", _) => {
            Request::post(format!("/v1/listings/{}/certifications/0/verification", w.listing))
                .json(&json!({ "status": "verified" }))
        }
        ("GET /v1/ops/order/lots/{lot_id}/orders", _) => {
            Request::get(format!("/v1/ops/order/lots/{}/orders", w.lot))
        }
        ("GET /v1/payments/commission", _) => Request::get("/v1/payments/commission"),
        ("PUT /v1/payments/commission/categories/{code}", _) => {
            Request::put("/v1/payments/commission/categories/rau-la").json(&json!({ "rate_bps": 500 }))
        }
        ("PUT /v1/payments/commission/sellers/{kind}/{id}", _) => {
            Request::put(format!("/v1/payments/commission/sellers/household/{h}")).json(&json!({ "rate_bps": 400 }))
        }
        ("PUT /v1/payments/cooperatives/{id}/fee", _) => {
            Request::put(format!("/v1/payments/cooperatives/{}/fee", w.coop)).json(&json!({ "rate_bps": 300 }))
        }
        ("GET /v1/payments/sellers/{kind}/{id}/balance", _) => {
            Request::get(format!("/v1/payments/sellers/household/{h}/balance"))
        }
        ("GET /v1/payments/sellers/{kind}/{id}/statement", _) => Request::get(format!(
            "/v1/payments/sellers/household/{h}/statement?from=2026-12-01&to=2026-12-31"
        )),
        ("PUT /v1/payments/payout-accounts/{kind}/{id}", _) => {
            Request::put(format!("/v1/payments/payout-accounts/household/{h}"))
                .json(&json!({ "bank": "Agribank", "account_number": "5100205123456", "account_name": "HO BA HOA" }))
        }
        ("POST /v1/payments/payouts", _) => Request::post("/v1/payments/payouts"),
        ("GET /v1/payments/payouts/{id}", _) => Request::get(format!("/v1/payments/payouts/{unknown}")),
        ("GET /v1/payments/payouts/{id}/transfers", _) => {
            Request::get(format!("/v1/payments/payouts/{unknown}/transfers"))
        }
        ("POST /v1/payments/payouts/{id}/lines/{line_id}", _) => {
            Request::post(format!("/v1/payments/payouts/{unknown}/lines/{unknown}"))
                .json(&json!({ "status": "paid" }))
        }
        ("GET /v1/payments/vnpay/ipn", _) => {
            Request::get("/v1/payments/vnpay/ipn?vnp_TxnRef=x&vnp_SecureHash=00")
        }

        ("POST /v1/accounts", _) => Request::post("/v1/accounts").json(&json!({
            "phone": phone(), "password": PASSWORD, "display_name": "Chị Lan", "role": "buyer"
        })),
        ("POST /v1/accounts/activate", _) => {
            let (phone, code) = register_by_helper(&w.api, &w.helper).await;
            Request::post("/v1/accounts/activate")
                .json(&json!({ "phone": phone, "code": code, "password": PASSWORD }))
        }
        ("POST /v1/sessions", _) => Request::post("/v1/sessions")
            .json(&json!({ "phone": w.buyer.phone(), "password": PASSWORD })),
        ("POST /v1/sessions/refresh", _) => Request::post("/v1/sessions/refresh")
            .json(&json!({ "refresh_token": refresh_token(w).await })),
        ("POST /v1/sessions/logout", _) => Request::post("/v1/sessions/logout")
            .json(&json!({ "refresh_token": refresh_token(w).await })),
        ("GET /v1/me", _) => Request::get("/v1/me"),
        ("PUT /v1/accounts/{id}/role", _) => {
            Request::put(format!("/v1/accounts/{}/role", w.role_target))
                .json(&json!({ "role": "helper" }))
        }

        ("POST /v1/households", _) => Request::post("/v1/households").json(&json!({
            "phone": phone(), "display_name": "Ông Tư", "household": household_profile("Hộ ông Tư")
        })),
        ("PATCH /v1/households/{id}", _) => Request::patch(format!("/v1/households/{h}"))
            .json(&json!({ "name": "Hộ bà Hoa" })),
        ("GET /v1/households/{id}/audit", _) => Request::get(format!("/v1/households/{h}/audit")),

        ("POST /v1/listings", _) => Request::post("/v1/listings").json(&listing_body()),
        ("PATCH /v1/listings/{id}", _) => {
            Request::patch(format!("/v1/listings/{l}")).json(&json!({ "price_vnd": 66000 }))
        }
        ("POST /v1/listings/{id}/status", _) => {
            Request::post(format!("/v1/listings/{l}/status")).json(&json!({ "status": "active" }))
        }
        ("POST /v1/listings/{id}/lots", _) => Request::post(format!("/v1/listings/{l}/lots"))
            .json(&json!({ "lot_code": lot_code(), "harvest_date": "2026-11-21", "quantity": "1" })),
        ("POST /v1/listings/{id}/adjustments", _) => {
            Request::post(format!("/v1/listings/{l}/adjustments"))
                .json(&json!({ "lot_code": "LOT-A", "quantity": "0.5", "reason": "cân lại" }))
        }
        ("GET /v1/listings/{id}/stock", _) => Request::get(format!("/v1/listings/{l}/stock")),
        ("GET /v1/listings/{id}/movements", _) => {
            Request::get(format!("/v1/listings/{l}/movements"))
        }

        ("POST /v1/cooperatives", _) => Request::post("/v1/cooperatives").json(
            &json!({ "name": "HTX Mới", "address": { "province_code": "68", "commune_code": "24931" } }),
        ),
        ("POST /v1/cooperatives/{id}/members", _) => {
            sqlx::query("DELETE FROM cooperative_members WHERE cooperative_id = $1::uuid AND household_id = $2::uuid")
                .bind(c)
                .bind(&w.other_household)
                .execute(&w.listing_db)
                .await
                .expect("forget the invitation");
            Request::post(format!("/v1/cooperatives/{c}/members"))
                .json(&json!({ "household_id": w.other_household }))
        }
        ("POST /v1/cooperatives/{id}/members/{household_id}/accept", _) => {
            membership(w, "invited").await;
            Request::post(format!("/v1/cooperatives/{c3}/members/{h}/accept"))
        }
        ("POST /v1/cooperatives/{id}/members/{household_id}/decline", _) => {
            membership(w, "invited").await;
            Request::post(format!("/v1/cooperatives/{c3}/members/{h}/decline"))
        }
        ("POST /v1/cooperatives/{id}/members/{household_id}/approve", _) => {
            membership(w, "invited").await;
            Request::post(format!("/v1/cooperatives/{c3}/members/{h}/approve"))
        }
        ("DELETE /v1/cooperatives/{id}/members/{household_id}", _) => {
            membership(w, "active").await;
            Request::delete(format!("/v1/cooperatives/{c3}/members/{h}"))
        }
        ("POST /v1/cooperatives/{id}/pooling", _) => {
            Request::post(format!("/v1/cooperatives/{c}/pooling")).json(&json!({
                "from_listing_id": l, "lot_code": "LOT-A", "quantity": "0.5", "to_listing_id": w.coop_listing
            }))
        }
        ("POST /v1/cooperatives/{id}/imports", _) => {
            Request::post(format!("/v1/cooperatives/{c}/imports")).body(
                "text/csv",
                format!(
                    "listing,lot_code,household,quantity,harvest_date\n{},{},{h},2,2026-11-20\n",
                    w.coop_listing,
                    lot_code()
                ),
            )
        }
        ("GET /v1/cooperatives/{id}/stock", _) => Request::get(format!("/v1/cooperatives/{c}/stock")),

        ("POST /v1/checkouts", _) => Request::post("/v1/checkouts")
            .header("idempotency-key", &unknown.to_string())
            .json(&basket(&[(l, "0.5")], "cod")),
        ("GET /v1/checkouts", _) => Request::get("/v1/checkouts"),
        ("GET /v1/checkouts/{id}", _) => Request::get(format!("/v1/checkouts/{}", w.checkout)),
        ("GET /v1/orders", "own purchases") => Request::get("/v1/orders"),
        ("GET /v1/orders", "H's sales") => {
            Request::get(format!("/v1/orders?seller_kind=household&seller_id={h}"))
        }
        ("GET /v1/orders/{id}", _) => Request::get(format!("/v1/orders/{}", w.order)),
        ("POST /v1/orders/{id}/{action}", action) => {
            Request::post(format!("/v1/orders/{}/{action}", new_order(w).await)).json(&json!({}))
        }

        ("POST /v1/internal/reservations", _) => {
            Request::post("/v1/internal/reservations").json(&json!({
                "id": unknown, "ttl_secs": 600, "lines": [{ "listing_id": l, "quantity": "0.5" }]
            }))
        }
        ("GET /v1/internal/reservations/{id}", _) => {
            Request::get(format!("/v1/internal/reservations/{}", w.reservation))
        }
        ("POST /v1/internal/reservations/{id}/commit", _) => {
            let id = new_reservation(&w.api, &w.service, l).await;
            Request::post(format!("/v1/internal/reservations/{id}/commit")).json(&json!({}))
        }
        ("POST /v1/internal/reservations/{id}/release", _) => {
            let id = new_reservation(&w.api, &w.service, l).await;
            Request::post(format!("/v1/internal/reservations/{id}/release")).json(&json!({}))
        }
        ("GET /v1/internal/seller-access", _) => Request::get(format!(
            "/v1/internal/seller-access?actor_id={}&role=helper&on_behalf_of={h}&seller_kind=household&seller_id={h}",
            w.helper.id
        )),
        ("POST /v1/internal/checkouts/reservation-outcomes", _) => {
            Request::post("/v1/internal/checkouts/reservation-outcomes")
                .json(&json!({ "reservation_ids": [unknown] }))
        }
        ("POST /v1/internal/payments", _) => Request::post("/v1/internal/payments").json(&json!({
            "checkout_id": unknown, "method": "vnpay", "amount_vnd": 65000, "buyer_id": w.buyer.id
        })),

        ("GET /v1/ops/listing/dead-letters", _) => Request::get("/v1/ops/listing/dead-letters"),
        ("GET /v1/ops/order/dead-letters", _) => Request::get("/v1/ops/order/dead-letters"),
        ("GET /v1/ops/payment/dead-letters", _) => Request::get("/v1/ops/payment/dead-letters"),
        ("POST /v1/ops/listing/dead-letters/{id}/retry", _) => {
            Request::post(format!("/v1/ops/listing/dead-letters/{unknown}/retry"))
        }
        ("POST /v1/ops/order/dead-letters/{id}/retry", _) => {
            Request::post(format!("/v1/ops/order/dead-letters/{unknown}/retry"))
        }
        ("POST /v1/ops/payment/dead-letters/{id}/retry", _) => {
            Request::post(format!("/v1/ops/payment/dead-letters/{unknown}/retry"))
        }
        (op, case) => panic!("the table has a row the test cannot call: {op} ({case})"),
    }
}

/// A lot code no call used before.
fn lot_code() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    format!(
        "M-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

fn outcome(status: u16) -> Option<Expect> {
    match status {
        200..=299 => Some(OK),
        401 => Some(ANON),
        403 => Some(NO),
        404 => Some(HID),
        _ => None,
    }
}

/// The operations of the OpenAPI documents the services at `bases` serve, as "METHOD /path".
async fn documented(bases: &[&str]) -> BTreeSet<String> {
    let mut ops = BTreeSet::new();
    for base in bases {
        let (status, doc) = Client::new(base).get("/openapi.json", None).await;
        assert_eq!(status, 200, "{base}/openapi.json");
        add_operations(&mut ops, &doc);
    }
    ops
}

fn add_operations(ops: &mut BTreeSet<String>, doc: &serde_json::Value) {
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            if ["get", "put", "post", "patch", "delete"].contains(&method.as_str()) {
                ops.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
}

#[tokio::test]
async fn every_route_answers_every_role_as_the_table_says_in_one_process() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db).await;
    settings.client_ip_header = Some(CLIENT_HEADER.to_owned());
    // B places an order for nearly every cell of the order rows; the bounds on what one
    // buyer holds are tested elsewhere.
    settings.max_open_cod_checkouts = 1_000;
    settings.max_hold_share_percent = 100;
    settings.stripe_secret_key = Some("sk_test_matrix".into());
    settings.stripe_webhook_secret = Some(STRIPE_WEBHOOK_SECRET.into());
    let app = TestApp::spawn_with(settings, db).await;
    let listing_db = app.db.pool("listing").await;
    let url = app.api.url("");
    hold_to_the_table(&app.api, &listing_db, &[&url]).await;
    app.stop().await;
}

/// The same table in three processes, where the order service asks the listing service
/// who may act for a seller over HTTP.
#[tokio::test]
async fn every_route_answers_every_role_as_the_table_says_in_three_processes() {
    let every = [
        ("NONGSAN_CLIENT_IP_HEADER", CLIENT_HEADER.to_owned()),
        ("NONGSAN_MAX_OPEN_COD_CHECKOUTS", "1000".to_owned()),
        ("NONGSAN_MAX_HOLD_SHARE_PERCENT", "100".to_owned()),
        ("NONGSAN_STRIPE_SECRET_KEY", "sk_test_matrix".to_owned()),
        (
            "NONGSAN_STRIPE_WEBHOOK_SECRET",
            STRIPE_WEBHOOK_SECRET.to_owned(),
        ),
    ];
    let app = SplitApp::spawn_configured(&every, &[]).await;
    let listing_db = app.db.pool("listing").await;
    let urls = [&app.listing.url, &app.order.url, &app.payment.url].map(String::as_str);
    hold_to_the_table(&app.api, &listing_db, &urls).await;
}

/// The Stripe webhook secret of the matrix's app.
const STRIPE_WEBHOOK_SECRET: &str = "whsec_matrix";

/// The header the matrix's app takes the client address from.
const CLIENT_HEADER: &str = "x-matrix-client";

async fn hold_to_the_table(api: &Client, listing_db: &PgPool, services: &[&str]) {
    let w = build_world(api, listing_db).await;

    let documented = documented(services).await;
    let tabled: BTreeSet<String> = TABLE.iter().map(|r| r.op.to_owned()).collect();
    let missing: Vec<_> = documented.difference(&tabled).collect();
    assert!(
        missing.is_empty(),
        "routes without a row in the table: {missing:?}"
    );
    let stale: Vec<_> = tabled.difference(&documented).collect();
    assert!(
        stale.is_empty(),
        "rows for routes the document does not have: {stale:?}"
    );

    let mut wrong = Vec::new();
    let mut server_errors = Vec::new();
    let mut calls = 0;
    for row in TABLE {
        for (role, user) in w.users.iter().enumerate() {
            let req = from_anywhere(request(&w, row).await.by_maybe(user.as_ref()));
            let res = w.api.send(req).await;
            calls += 1;
            let label = format!("{} [{}] as {}", row.op, row.case, ROLES[role]);
            if res.status >= 500 {
                server_errors.push(format!("{label}: {} {}", res.status, res.text()));
            }
            let got = outcome(res.status);
            if got != Some(row.expect[role]) {
                wrong.push(format!(
                    "{label}: expected {:?}, got {} {}",
                    row.expect[role],
                    res.status,
                    res.text().chars().take(300).collect::<String>()
                ));
            }
        }
    }
    assert!(
        server_errors.is_empty() && wrong.is_empty(),
        "5xx answers:\n{}\n\n{} of {calls} answers differ from the table:\n{}",
        server_errors.join("\n"),
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(calls, TABLE.len() * ROLES.len());
}

#[test]
fn every_row_is_called_at_most_once_per_case() {
    let mut seen = BTreeSet::new();
    for row in TABLE {
        assert!(
            seen.insert((row.op, row.case)),
            "two rows for {} ({})",
            row.op,
            row.case
        );
    }
}
