//! Sessions: sign in (rate-limited per phone), refresh tokens that rotate, sign out.

use std::time::Duration;

use axum::{Json as AxumJson, extract::State, http::StatusCode};

use nongsan_shared::{AccountId, PhoneNumber, auth::Role, http::ClientAddr, http::Json};
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

/// The window every sign-in limit counts in.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Wrong passwords allowed for one phone number from one client address in a window; then
/// that address waits for the window to end. The owner, from elsewhere, is not locked out.
pub const FAILURES_PER_PHONE_AND_ADDRESS: u64 = 5;
/// Wrong passwords allowed for one phone number from all addresses together in a window
/// (guessing spread over many addresses).
pub const FAILURES_PER_PHONE: u64 = 50;
/// Wrong passwords allowed from one client address over all phone numbers in a window (one
/// password tried on many phones).
pub const FAILURES_PER_ADDRESS: u64 = 20;
/// Sign-in attempts allowed from one client address in a minute, before any password is
/// checked: each costs a password hash.
pub const ATTEMPTS_PER_ADDRESS_PER_MINUTE: u64 = 30;
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
    client: ClientAddr,
    Json(c): Json<Credentials>,
) -> Result<AxumJson<Session>> {
    let phone = c.phone.as_str();
    let address = client.key();
    let keys = [
        (
            format!("login:fail:{phone}:{address}"),
            FAILURES_PER_PHONE_AND_ADDRESS,
        ),
        (format!("login:fail:{phone}"), FAILURES_PER_PHONE),
        (format!("login:fail-from:{address}"), FAILURES_PER_ADDRESS),
    ];
    // Cheap refusals first: every check below costs a password hash.
    for (key, limit) in &keys {
        let (failures, left) = app.limiter.count(key, LOGIN_WINDOW).await?;
        if failures >= *limit {
            return Err(ListingError::TooManyAttempts(left.as_secs().max(1)));
        }
    }
    let (attempts, left) = app
        .limiter
        .hit(&format!("login:from:{address}"), Duration::from_secs(60))
        .await?;
    if attempts > ATTEMPTS_PER_ADDRESS_PER_MINUTE {
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
    // An unknown or inactive phone costs the same work, so timing does not tell.
    let matches = verify_password(c.password, hash).await?;
    let account = match account {
        Some(a) if matches => a,
        _ => return Err(failed(&app, &keys).await),
    };
    app.limiter.reset(&keys[0].0).await?;
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

/// Counts a wrong password against every limit; answers 401.
async fn failed(app: &AppState, keys: &[(String, u64)]) -> ListingError {
    for (key, _) in keys {
        if let Err(e) = app.limiter.hit(key, LOGIN_WINDOW).await {
            return ListingError::Other(e);
        }
    }
    ListingError::BadCredentials
}
