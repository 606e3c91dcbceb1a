//! Sessions: sign in (rate-limited per phone), refresh tokens that rotate, sign out.

use std::time::Duration;

use axum::{Json as AxumJson, extract::State, http::StatusCode};

use nongsan_shared::{AccountId, PhoneNumber, auth::Role, http::Json};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::{
    app::AppState,
    error::{ListingError, Result},
    identity::{
        passwords::{random_token, sha256, verify_password},
        store::AccountView,
    },
};

/// Login attempts allowed per phone number in [`LOGIN_WINDOW`].
pub const LOGIN_ATTEMPTS: u64 = 10;
/// The window of [`LOGIN_ATTEMPTS`].
pub const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Lifetime of a refresh token.
const REFRESH_TTL_DAYS: i64 = 30;

/// Tokens given at login.
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    /// Bearer access token (JWT, HS256).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Exchange it at `/v1/sessions/refresh` for new tokens; it works once.
    pub refresh_token: String,
    /// The account.
    pub account: AccountView,
}

/// Phone and password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Phone number.
    #[schema(value_type = String)]
    pub phone: PhoneNumber,
    /// Password.
    pub password: String,
}

/// A refresh token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token.
    pub refresh_token: String,
}

pub(crate) async fn issue_session(
    conn: &mut PgConnection,
    app: &AppState,
    account: AccountView,
) -> Result<Session> {
    let refresh = random_token();
    sqlx::query!(
        "INSERT INTO refresh_tokens (id, account_id, token_hash, expires_at) VALUES ($1, $2, $3, now() + make_interval(days => $4))",
        uuid::Uuid::now_v7(),
        account.id as _,
        sha256(&refresh),
        i32::try_from(REFRESH_TTL_DAYS).unwrap_or(30),
    )
    .execute(conn)
    .await?;
    Ok(Session {
        access_token: app.keys.issue(account.id, account.role),
        token_type: "Bearer",
        expires_in: app.keys.ttl_secs(),
        refresh_token: refresh,
        account,
    })
}

/// Sign in with phone and password.
#[utoipa::path(post, path = "/v1/sessions", tag = "identity", request_body = Credentials,
    responses((status = 200, body = Session), (status = 401, body = nongsan_shared::error::ProblemSchema), (status = 429, description = "Too many attempts", body = nongsan_shared::error::ProblemSchema)))]
pub async fn create_session(
    State(app): State<AppState>,
    Json(c): Json<Credentials>,
) -> Result<AxumJson<Session>> {
    let key = format!("login:{}", c.phone.as_str());
    let (hits, left) = app.limiter.hit(&key, LOGIN_WINDOW).await?;
    if hits > LOGIN_ATTEMPTS {
        return Err(ListingError::TooManyAttempts(left.as_secs().max(1)));
    }
    let row = sqlx::query!(
        r#"SELECT id AS "id: AccountId", phone, role AS "role: Role", display_name, status, created_at, password_hash FROM accounts WHERE phone = $1"#,
        c.phone.as_str(),
    )
    .fetch_optional(&app.pool)
    .await?
    .map(|r| {
        let account = AccountView {
            id: r.id,
            phone: r.phone,
            role: r.role,
            display_name: r.display_name,
            status: r.status,
            created_at: r.created_at,
        };
        (account, r.password_hash)
    });
    let (account, hash) = match row {
        Some((a, h)) if a.status == "active" => (Some(a), h),
        _ => (None, None),
    };
    if !verify_password(c.password, hash).await {
        return Err(ListingError::BadCredentials);
    }
    let account = account.ok_or(ListingError::BadCredentials)?;
    app.limiter.reset(&key).await?;
    let mut conn = app.pool.acquire().await?;
    Ok(AxumJson(issue_session(&mut conn, &app, account).await?))
}

/// Exchange a refresh token for new tokens; the old refresh token stops working.
#[utoipa::path(post, path = "/v1/sessions/refresh", tag = "identity", request_body = RefreshRequest,
    responses((status = 200, body = Session), (status = 401, body = nongsan_shared::error::ProblemSchema)))]
pub async fn refresh_session(
    State(app): State<AppState>,
    Json(r): Json<RefreshRequest>,
) -> Result<AxumJson<Session>> {
    let mut tx = app.pool.begin().await?;
    let account = sqlx::query_as!(
        AccountView,
        r#"UPDATE refresh_tokens t SET revoked_at = now() FROM accounts a
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > now() AND a.id = t.account_id AND a.status = 'active'
         RETURNING a.id AS "id: AccountId", a.phone, a.role AS "role: Role", a.display_name, a.status, a.created_at"#,
        sha256(&r.refresh_token),
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ListingError::BadCredentials)?;
    let session = issue_session(&mut tx, &app, account).await?;
    tx.commit().await?;
    Ok(AxumJson(session))
}

/// Sign out: the refresh token stops working.
#[utoipa::path(post, path = "/v1/sessions/logout", tag = "identity", request_body = RefreshRequest,
    responses((status = 204, description = "Signed out")))]
pub async fn delete_session(
    State(app): State<AppState>,
    Json(r): Json<RefreshRequest>,
) -> Result<StatusCode> {
    sqlx::query!(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL",
        sha256(&r.refresh_token),
    )
    .execute(&app.pool)
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
