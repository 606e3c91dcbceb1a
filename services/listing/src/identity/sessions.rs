//! Sessions: sign in (rate-limited per phone), refresh tokens that rotate, sign out.

use std::time::Duration;

use axum::{Json as AxumJson, extract::State, http::StatusCode};

use nongsan_shared::{AccountId, PhoneNumber, auth::Role, http::ClientAddr, http::Json};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

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

/// Why a session ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ended {
    /// Signed out.
    Logout,
    /// A refresh token of the session was used a second time: someone else holds a copy.
    RefreshReused,
    /// The account's role changed; its tokens name the old one.
    RoleChanged,
}

impl Ended {
    fn as_str(self) -> &'static str {
        match self {
            Ended::Logout => "logout",
            Ended::RefreshReused => "refresh_reused",
            Ended::RoleChanged => "role_changed",
        }
    }
}

/// Ends one session: its access tokens stop working here and its refresh tokens die.
pub(crate) async fn end_session(conn: &mut PgConnection, session: Uuid, why: Ended) -> Result<()> {
    sqlx::query!(
        "UPDATE sessions SET ended_at = now(), ended_why = $2 WHERE id = $1 AND ended_at IS NULL",
        session,
        why.as_str(),
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE session_id = $1 AND revoked_at IS NULL",
        session,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends every session of an account.
pub(crate) async fn end_sessions_of(
    conn: &mut PgConnection,
    account: AccountId,
    why: Ended,
) -> Result<()> {
    sqlx::query!(
        "UPDATE sessions SET ended_at = now(), ended_why = $2 WHERE account_id = $1 AND ended_at IS NULL",
        account as _,
        why.as_str(),
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE refresh_tokens SET revoked_at = now()
         WHERE session_id IN (SELECT id FROM sessions WHERE account_id = $1) AND revoked_at IS NULL",
        account as _,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Issues tokens for `account`: in `session` (a refresh), or in a new session (a sign-in).
pub(crate) async fn issue_session(
    conn: &mut PgConnection,
    app: &AppState,
    account: AccountView,
    session: Option<Uuid>,
) -> Result<Session> {
    let session = match session {
        Some(id) => id,
        None => {
            let id = Uuid::now_v7();
            sqlx::query!(
                "INSERT INTO sessions (id, account_id) VALUES ($1, $2)",
                id,
                account.id as _,
            )
            .execute(&mut *conn)
            .await?;
            id
        }
    };
    let refresh = random_token();
    sqlx::query!(
        "INSERT INTO refresh_tokens (id, account_id, session_id, token_hash, expires_at) VALUES ($1, $2, $3, $4, now() + make_interval(days => $5))",
        Uuid::now_v7(),
        account.id as _,
        session,
        sha256(&refresh),
        i32::try_from(REFRESH_TTL_DAYS).unwrap_or(30),
    )
    .execute(conn)
    .await?;
    Ok(Session {
        access_token: app.keys.issue_session(account.id, account.role, session),
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
    Ok(AxumJson(
        issue_session(&mut conn, &app, account, None).await?,
    ))
}

/// Exchange a refresh token for new tokens; the old refresh token stops working. A refresh
/// token used a second time ends its whole session (every token of the family), since one of
/// its two holders is not the owner.
#[utoipa::path(post, path = "/v1/sessions/refresh", tag = "identity", request_body = RefreshRequest,
    responses((status = 200, body = Session), (status = 401, body = nongsan_shared::error::ProblemSchema)))]
pub async fn refresh_session(
    State(app): State<AppState>,
    Json(r): Json<RefreshRequest>,
) -> Result<AxumJson<Session>> {
    let mut tx = app.pool.begin().await?;
    // Locks the token and its session: of two uses at once, the second sees the first's.
    let token = sqlx::query!(
        r#"SELECT t.id, t.session_id, t.account_id AS "account_id: AccountId",
                  t.revoked_at IS NOT NULL AS "used!", s.ended_at IS NOT NULL AS "ended!", t.expires_at <= now() AS "expired!"
           FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
           WHERE t.token_hash = $1 FOR UPDATE OF t, s"#,
        sha256(&r.refresh_token),
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ListingError::BadCredentials)?;
    if token.ended || token.expired {
        return Err(ListingError::BadCredentials);
    }
    if token.used {
        end_session(&mut tx, token.session_id, Ended::RefreshReused).await?;
        tx.commit().await?;
        tracing::warn!(account = %token.account_id, session = %token.session_id, "a refresh token was used twice; its session is ended");
        return Err(ListingError::BadCredentials);
    }
    let account = sqlx::query_as!(
        AccountView,
        r#"SELECT id AS "id: AccountId", phone, role AS "role: Role", display_name, status, created_at
           FROM accounts WHERE id = $1 AND status = 'active'"#,
        token.account_id as _,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ListingError::BadCredentials)?;
    sqlx::query!(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE id = $1",
        token.id
    )
    .execute(&mut *tx)
    .await?;
    let session = issue_session(&mut tx, &app, account, Some(token.session_id)).await?;
    tx.commit().await?;
    Ok(AxumJson(session))
}

/// Sign out: the session ends; its refresh tokens stop working, and so do its access tokens on
/// this service at once (and on the others when they expire, within
/// `NONGSAN_ACCESS_TOKEN_TTL_SECS`).
#[utoipa::path(post, path = "/v1/sessions/logout", tag = "identity", request_body = RefreshRequest,
    responses((status = 204, description = "Signed out")))]
pub async fn delete_session(
    State(app): State<AppState>,
    Json(r): Json<RefreshRequest>,
) -> Result<StatusCode> {
    let mut tx = app.pool.begin().await?;
    let session = sqlx::query_scalar!(
        "SELECT session_id FROM refresh_tokens WHERE token_hash = $1",
        sha256(&r.refresh_token),
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(session) = session {
        end_session(&mut tx, session, Ended::Logout).await?;
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Middleware of the listing service: a request whose access token names a session that has
/// ended is refused (401 `session_ended`) before any handler runs. One primary-key lookup.
pub async fn require_live_session(
    State(app): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let sid = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .and_then(|t| app.keys.verify(t.trim()).ok())
        .and_then(|c| c.sid);
    if let Some(sid) = sid {
        let live = sqlx::query_scalar!(
            r#"SELECT ended_at IS NULL AS "live!" FROM sessions WHERE id = $1"#,
            sid
        )
        .fetch_optional(&app.pool)
        .await;
        match live {
            Ok(Some(true)) => {}
            Ok(_) => return ListingError::SessionEnded.into_response(),
            Err(e) => return ListingError::from(e).into_response(),
        }
    }
    next.run(req).await
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
