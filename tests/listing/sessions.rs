//! Sessions: refresh-token families, logout and role changes ending the access token, and
//! service tokens that no user token can pass for.

use nongsan_shared::{
    AccountId,
    auth::{Claims, Role},
};
use serde_json::{Value, json};

use crate::support::{
    TestApp,
    calls::{PASSWORD, household_profile},
    client::Request,
    keys,
    user::User,
};

/// Signs in `user` again and answers the whole session (with its refresh token).
async fn session_of(app: &TestApp, user: &User) -> Value {
    let (status, s) = app
        .api
        .post(
            "/v1/sessions",
            None,
            &json!({ "phone": user.phone(), "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 200, "{s}");
    s
}

async fn refresh(app: &TestApp, token: &Value) -> (u16, Value) {
    app.api
        .post(
            "/v1/sessions/refresh",
            None,
            &json!({ "refresh_token": token }),
        )
        .await
}

/// A write of the listing service as `who`: renames its household.
async fn rename(app: &TestApp, who: &User, household: &str) -> u16 {
    app.api
        .patch(
            &format!("/v1/households/{household}"),
            who,
            &json!({ "name": "Hộ đổi tên" }),
        )
        .await
        .0
}

#[tokio::test]
async fn a_reused_refresh_token_ends_the_family() {
    let app = TestApp::spawn().await;
    let household = app.api.register(Role::Household).await;
    let first = session_of(&app, &household).await;
    let (status, second) = refresh(&app, &first["refresh_token"]).await;
    assert_eq!(status, 200, "{second}");
    let second_user = User::from_session(&second, household.phone());
    assert_eq!(rename(&app, &second_user, &household.id).await, 200);

    // The first refresh token again: someone kept a copy. Both holders lose the session.
    let (status, body) = refresh(&app, &first["refresh_token"]).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = refresh(&app, &second["refresh_token"]).await;
    assert_eq!(
        status, 401,
        "the token the first use gave is dead too: {body}"
    );
    assert_eq!(
        rename(&app, &second_user, &household.id).await,
        401,
        "the family's access token no longer writes"
    );
    // Another session of the same account is untouched.
    assert_eq!(rename(&app, &household, &household.id).await, 200);
    app.stop().await;
}

#[tokio::test]
async fn after_logout_the_access_token_of_that_session_no_longer_writes() {
    let app = TestApp::spawn().await;
    let household = app.api.register(Role::Household).await;
    let s = session_of(&app, &household).await;
    let user = User::from_session(&s, household.phone());
    assert_eq!(rename(&app, &user, &household.id).await, 200);
    let (status, _) = app
        .api
        .post(
            "/v1/sessions/logout",
            None,
            &json!({ "refresh_token": s["refresh_token"] }),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(rename(&app, &user, &household.id).await, 401);
    let (status, body) = app
        .api
        .post(
            "/v1/listings",
            Some(&user),
            &crate::support::calls::listing_body(),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn after_a_role_change_the_old_token_no_longer_acts_with_the_old_role() {
    let app = TestApp::spawn().await;
    let helper = app.api.staff(Role::Helper).await;
    // As a helper it registers a household.
    let register = |who: &User, phone: String| {
        let body = json!({ "phone": phone, "display_name": "Hộ mới", "household": household_profile("Hộ mới") });
        let req = Request::post("/v1/households").by(who).json(&body);
        let api = app.api.clone();
        async move { api.send(req).await }
    };
    let res = register(&helper, crate::support::calls::phone()).await;
    assert_eq!(res.status, 201, "{}", res.text());

    let operator = User::minted(Role::Operator);
    let res = app
        .api
        .send(
            Request::put(format!("/v1/accounts/{}/role", helper.id))
                .by(&operator)
                .json(&json!({ "role": "cooperative_manager" })),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());

    let res = register(&helper, crate::support::calls::phone()).await;
    assert_eq!(
        res.status,
        401,
        "the helper's token outlived its role: {}",
        res.text()
    );
    let (status, _) = app.api.get("/v1/me", Some(&helper)).await;
    assert_eq!(status, 401);
    let manager = app.api.sign_in(helper.phone()).await;
    let (status, me) = app.api.get("/v1/me", Some(&manager)).await;
    assert_eq!(
        (status, me["role"].as_str()),
        (200, Some("cooperative_manager"))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_user_token_claiming_the_service_role_is_refused_by_internal_endpoints() {
    let app = TestApp::spawn().await;
    let now = chrono::Utc::now().timestamp();
    let forged = User {
        token: keys().issue_claims(&Claims {
            sub: AccountId::new(),
            role: Role::Service,
            iat: now,
            exp: now + 600,
            aud: None,
            sid: None,
        }),
        ..User::minted(Role::Service)
    };
    let (status, body) = app
        .api
        .post(
            "/v1/internal/reservations",
            Some(&forged),
            &json!({ "id": uuid::Uuid::now_v7(), "ttl_secs": 60, "lines": [] }),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = app
        .api
        .get(
            &format!(
                "/v1/internal/seller-access?seller_kind=household&seller_id={}&actor_id={}&role=household",
                AccountId::new(),
                AccountId::new()
            ),
            Some(&forged),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    // A real service token still passes.
    let (status, body) = app
        .api
        .get(
            &format!(
                "/v1/internal/seller-access?seller_kind=household&seller_id={}&actor_id={}&role=household",
                AccountId::new(),
                AccountId::new()
            ),
            Some(&User::minted(Role::Service)),
        )
        .await;
    assert_eq!((status, body["allowed"].as_bool()), (200, Some(false)));
    app.stop().await;
}
