//! Accounts, sessions and roles.

use nongsan_shared::auth::Role;
use serde_json::json;

use crate::support::{
    TestApp,
    calls::{PASSWORD, phone},
    client::Request,
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

#[tokio::test]
async fn login_is_rate_limited_per_phone_number() {
    let app = TestApp::spawn().await;
    let user = app.api.register(Role::Buyer).await;
    for _ in 0..10 {
        let (status, _) = app
            .api
            .post(
                "/v1/sessions",
                None,
                &json!({ "phone": user.phone(), "password": "wrong password" }),
            )
            .await;
        assert_eq!(status, 401);
    }
    let res = app
        .api
        .send(
            Request::post("/v1/sessions")
                .json(&json!({ "phone": user.phone(), "password": PASSWORD })),
        )
        .await;
    assert_eq!(res.status, 429);
    assert!(res.header("retry-after").is_some());
    assert_eq!(res.json()["code"], "too_many_attempts");
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
