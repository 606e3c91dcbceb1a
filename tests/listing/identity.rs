//! Accounts, sessions and roles.

use nongsan_shared::auth::Role;
use serde_json::{Value, json};

use crate::support::{
    TestApp, TestDb,
    calls::{PASSWORD, household_profile, phone},
    client::Request,
    test_settings,
    user::User,
};

#[tokio::test]
async fn a_buyer_registers_signs_in_refreshes_and_signs_out() {
    let app = TestApp::spawn().await;
    let number = phone();
    let national = number.clone();
    let (status, reg) = app.api.post("/v1/accounts", None, &json!({ "phone": national, "password": "mật khẩu an toàn", "display_name": "Chị Hoa", "role": "buyer" })).await;
    assert_eq!(status, 201, "{reg}");
    assert_eq!(
        reg["account"]["phone"],
        format!("+84{}", &number[1..]),
        "stored in E.164"
    );
    let (status, again) = app.api.post("/v1/accounts", None, &json!({ "phone": format!("+84{}", &number[1..]), "password": "mật khẩu an toàn", "display_name": "X", "role": "buyer" })).await;
    assert_eq!((status, again["code"].as_str()), (409, Some("phone_taken")));

    let (status, wrong) = app
        .api
        .post(
            "/v1/sessions",
            None,
            &json!({ "phone": number, "password": "sai mật khẩu" }),
        )
        .await;
    assert_eq!(
        (status, wrong["code"].as_str()),
        (401, Some("bad_credentials"))
    );
    let (status, s) = app
        .api
        .post(
            "/v1/sessions",
            None,
            &json!({ "phone": number, "password": "mật khẩu an toàn" }),
        )
        .await;
    assert_eq!(status, 200, "{s}");
    let me = User::from_session(&s, &number);
    let (status, me) = app.api.get("/v1/me", Some(&me)).await;
    assert_eq!((status, me["role"].as_str()), (200, Some("buyer")));

    let refresh = s["refresh_token"].as_str().unwrap();
    let (status, s2) = app
        .api
        .post(
            "/v1/sessions/refresh",
            None,
            &json!({ "refresh_token": refresh }),
        )
        .await;
    assert_eq!(status, 200, "{s2}");
    let (status, _) = app
        .api
        .post(
            "/v1/sessions/refresh",
            None,
            &json!({ "refresh_token": refresh }),
        )
        .await;
    assert_eq!(status, 401, "a refresh token works once");
    let (status, _) = app
        .api
        .post(
            "/v1/sessions/logout",
            None,
            &json!({ "refresh_token": s2["refresh_token"] }),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = app
        .api
        .post(
            "/v1/sessions/refresh",
            None,
            &json!({ "refresh_token": s2["refresh_token"] }),
        )
        .await;
    assert_eq!(status, 401, "a signed-out refresh token is dead");
    app.stop().await;
}

/// Signs in from a client address (the app trusts `X-Forwarded-For`).
async fn sign_in_from(app: &TestApp, from: &str, phone: &str, password: &str) -> (u16, Value) {
    app.api
        .send(
            Request::post("/v1/sessions")
                .header("x-forwarded-for", from)
                .json(&json!({ "phone": phone, "password": password })),
        )
        .await
        .parts()
}

async fn behind_a_proxy() -> TestApp {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db).await;
    settings.client_ip_header = Some("X-Forwarded-For".into());
    TestApp::spawn_with(settings, db).await
}

#[tokio::test]
async fn wrong_passwords_hold_back_the_guesser_not_the_owner() {
    let app = behind_a_proxy().await;
    let user = app.api.register(Role::Buyer).await;
    let phone = user.phone();
    for _ in 0..5 {
        let (status, _) = sign_in_from(&app, "203.0.113.7", phone, "wrong password").await;
        assert_eq!(status, 401);
    }
    // The guesser's address waits, even with the right password...
    let res = app
        .api
        .send(
            Request::post("/v1/sessions")
                .header("x-forwarded-for", "203.0.113.7")
                .json(&json!({ "phone": phone, "password": PASSWORD })),
        )
        .await;
    assert_eq!(res.status, 429);
    assert!(res.header("retry-after").is_some());
    assert_eq!(res.json()["code"], "too_many_attempts");
    // ...while the owner, from its own address, signs in.
    let (status, body) = sign_in_from(&app, "198.51.100.20", phone, PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn one_password_sprayed_over_many_phones_is_stopped_per_address() {
    let app = behind_a_proxy().await;
    let mut refused = 0;
    for _ in 0..30 {
        let (status, _) = sign_in_from(&app, "203.0.113.9", &phone(), "12345678").await;
        assert!(status == 401 || status == 429, "{status}");
        refused += usize::from(status == 429);
    }
    assert!(
        refused >= 10,
        "only {refused} of 30 sprayed attempts were held back"
    );
    // Another address is not affected.
    let user = app.api.register(Role::Buyer).await;
    let (status, _) = sign_in_from(&app, "198.51.100.21", user.phone(), PASSWORD).await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test]
async fn a_burst_of_logins_is_bounded_and_healthz_keeps_answering() {
    let app = TestApp::spawn().await;
    let logins: Vec<_> = (0..120)
        .map(|_| {
            let api = app.api.clone();
            tokio::spawn(async move {
                api.post(
                    "/v1/sessions",
                    None,
                    &json!({ "phone": phone(), "password": "wrong password" }),
                )
                .await
                .0
            })
        })
        .collect();
    // While they run, the process still answers.
    let health = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        app.api.get("/healthz", None),
    )
    .await
    .expect("/healthz answers during the burst");
    assert_eq!(health.0, 200);
    let mut statuses = Vec::new();
    for l in logins {
        statuses.push(l.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| [401, 429, 503].contains(s)),
        "{statuses:?}"
    );
    let held = statuses.iter().filter(|s| **s != 401).count();
    assert!(
        held >= 60,
        "only {held} of 120 attempts from one address were held back"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_sixth_wrong_activation_code_spends_the_code_even_for_the_right_one() {
    let app = TestApp::spawn().await;
    let helper = app.api.staff(Role::Helper).await;
    let household_phone = phone();
    let (status, reg) = app
        .api
        .post(
            "/v1/households",
            Some(&helper),
            &json!({ "phone": household_phone, "display_name": "Bà Hoa", "household": household_profile("Hộ bà Hoa") }),
        )
        .await;
    assert_eq!(status, 201, "{reg}");
    let code = reg["activation_code"].as_str().unwrap().to_owned();
    let wrong = if code == "00000000" {
        "00000001"
    } else {
        "00000000"
    };
    for _ in 0..5 {
        let (status, _) = app
            .api
            .post(
                "/v1/accounts/activate",
                None,
                &json!({ "phone": household_phone, "code": wrong, "password": "mật khẩu của hoa" }),
            )
            .await;
        assert_eq!(status, 401);
    }
    let (status, body) = app
        .api
        .post(
            "/v1/accounts/activate",
            None,
            &json!({ "phone": household_phone, "code": code, "password": "mật khẩu của hoa" }),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "activation_locked");
    // The code is stored keyed with the server secret, not as its plain SHA-256.
    let pool = app.db.pool("listing").await;
    let household: uuid::Uuid = reg["household"]["id"].as_str().unwrap().parse().unwrap();
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT code_hash FROM activation_codes WHERE account_id = $1")
            .bind(household)
            .fetch_one(&pool)
            .await
            .unwrap();
    use sha2::Digest;
    assert_ne!(stored, sha2::Sha256::digest(code.as_bytes()).to_vec());
    app.stop().await;
}

#[tokio::test]
async fn only_buyers_and_households_register_themselves_and_only_operators_grant_roles() {
    let app = TestApp::spawn().await;
    let (status, body) = app.api.post("/v1/accounts", None, &json!({ "phone": phone(), "password": "mật khẩu an toàn", "display_name": "X", "role": "operator" })).await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "role");
    let buyer = app.api.register(Role::Buyer).await;
    let res = app
        .api
        .send(
            Request::put(format!("/v1/accounts/{}/role", buyer.id))
                .by(&buyer)
                .json(&json!({ "role": "helper" })),
        )
        .await;
    assert_eq!(res.status, 403);
    app.stop().await;
}

#[tokio::test]
async fn a_phone_number_that_is_not_vietnamese_or_e164_is_422() {
    let app = TestApp::spawn().await;
    for bad in ["12345", "01234567890", "+84 123", "hello"] {
        let (status, body) = app.api.post("/v1/accounts", None, &json!({ "phone": bad, "password": "mật khẩu an toàn", "display_name": "X", "role": "buyer" })).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["errors"][0]["field"], "phone");
    }
    app.stop().await;
}
