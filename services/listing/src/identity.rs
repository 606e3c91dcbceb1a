//! Accounts keyed by phone number, argon2id passwords, short-lived access tokens with
//! rotating refresh tokens, rate-limited login, one-time activation codes, and roles granted
//! by operators.

use std::time::Duration;

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier, password_hash::SaltString};
use axum::{
    Json as AxumJson,
    extract::{Path, State},
    http::StatusCode,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use nongsan_shared::{
    AccountId, PhoneNumber,
    auth::{Actor, Role},
    http::Json,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::{
    access::{AppState, audit},
    error::{ListingError, Problems, Result},
    sellers::{self, AddressInput, HouseholdView},
};

/// Login attempts allowed per phone number in [`LOGIN_WINDOW`].
pub const LOGIN_ATTEMPTS: u64 = 10;
/// The window of [`LOGIN_ATTEMPTS`].
pub const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Lifetime of a refresh token.
const REFRESH_TTL_DAYS: i64 = 30;
/// Lifetime of an activation code.
const ACTIVATION_TTL_DAYS: i64 = 14;

/// An account as shown to its owner.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct AccountView {
    /// Account id.
    pub id: AccountId,
    /// Phone number, E.164.
    pub phone: String,
    /// Role.
    pub role: Role,
    /// Name shown to others.
    pub display_name: String,
    /// active, pending_activation or disabled.
    pub status: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// A self-registration.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Vietnamese (0912 345 678) or E.164 phone number.
    #[schema(value_type = String, example = "0912345678")]
    pub phone: PhoneNumber,
    /// At least 8 characters.
    pub password: String,
    /// Name shown to others.
    pub display_name: String,
    /// `buyer` or `household`.
    pub role: Role,
    /// Required for a household: its farm.
    pub household: Option<HouseholdInput>,
}

/// A household's profile.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HouseholdInput {
    /// The household's name, e.g. "Hộ ông Nguyễn Văn A".
    pub name: String,
    /// Where it is.
    pub address: AddressInput,
    /// Where the farm is, if known.
    pub farm_location: Option<sellers::Point>,
}

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

/// An activation: the code a helper handed over, and the household's own password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Activation {
    /// Phone number.
    #[schema(value_type = String)]
    pub phone: PhoneNumber,
    /// The one-time code.
    pub code: String,
    /// The new password, at least 8 characters.
    pub password: String,
}

/// A role an operator grants.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleGrant {
    /// `helper` or `cooperative_manager`.
    pub role: Role,
}

/// The answer to a registration.
#[derive(Debug, Serialize, ToSchema)]
pub struct Registered {
    /// The account.
    pub account: AccountView,
    /// The household profile, for a household.
    pub household: Option<HouseholdView>,
}

fn check_password(p: &mut Problems, field: &str, password: &str) {
    let n = password.chars().count();
    p.check(
        n < 8,
        field,
        "too_short",
        "must be at least 8 characters",
        "phải có ít nhất 8 ký tự",
    );
    p.check(
        n > 256,
        field,
        "too_long",
        "must be at most 256 characters",
        "tối đa 256 ký tự",
    );
}

/// Hashes a password with argon2id (off the async threads: it is slow on purpose).
pub async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing: {e}"))
    })
    .await
    .map_err(anyhow::Error::from)?
    .map_err(ListingError::Other)
}

async fn verify_password(password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        // An unknown account still costs one verification, so timing does not tell.
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_owned());
        PasswordHash::new(&hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0UhvVKJ9mIJyRrSnbwnOIHe5Qdg4DA+TGx8HkpcYIPw";

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sha256(s: &str) -> Vec<u8> {
    Sha256::digest(s.as_bytes()).to_vec()
}

/// Inserts an account; a phone number already in use is 409 `phone_taken`.
pub async fn insert_account(
    conn: &mut PgConnection,
    phone: &PhoneNumber,
    password_hash: Option<&str>,
    role: Role,
    display_name: &str,
    created_by: Option<AccountId>,
) -> Result<AccountView> {
    let status = if password_hash.is_some() {
        "active"
    } else {
        "pending_activation"
    };
    let res = sqlx::query_as::<_, AccountView>(
        "INSERT INTO accounts (id, phone, password_hash, role, display_name, status, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING id, phone, role, display_name, status, created_at",
    )
    .bind(AccountId::new())
    .bind(phone.as_str())
    .bind(password_hash)
    .bind(role)
    .bind(display_name.trim())
    .bind(status)
    .bind(created_by)
    .fetch_one(conn)
    .await;
    match res {
        Err(sqlx::Error::Database(d)) if d.constraint() == Some("accounts_phone_key") => {
            Err(ListingError::conflict(
                "phone_taken",
                "An account with this phone number already exists.",
                "Số điện thoại này đã được đăng ký.",
            ))
        }
        other => Ok(other?),
    }
}

async fn issue_session(
    conn: &mut PgConnection,
    app: &AppState,
    account: AccountView,
) -> Result<Session> {
    let refresh = random_token();
    sqlx::query("INSERT INTO refresh_tokens (id, account_id, token_hash, expires_at) VALUES ($1, $2, $3, now() + make_interval(days => $4))")
        .bind(uuid::Uuid::now_v7())
        .bind(account.id)
        .bind(sha256(&refresh))
        .bind(i32::try_from(REFRESH_TTL_DAYS).unwrap_or(30))
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

/// Register a buyer or a household.
#[utoipa::path(post, path = "/v1/accounts", tag = "identity", request_body = Registration,
    responses((status = 201, body = Registered), (status = 409, description = "Phone number taken", body = nongsan_shared::error::ProblemSchema), (status = 422, body = nongsan_shared::error::ProblemSchema)))]
pub async fn register_account(
    State(app): State<AppState>,
    Json(r): Json<Registration>,
) -> Result<(StatusCode, AxumJson<Registered>)> {
    let mut p = Problems::default();
    check_password(&mut p, "password", &r.password);
    sellers::check_name(&mut p, "display_name", &r.display_name);
    p.check(
        !matches!(r.role, Role::Buyer | Role::Household),
        "role",
        "not_self_service",
        "must be buyer or household; other roles are granted by an operator",
        "phải là buyer hoặc household; các vai trò khác do quản trị viên cấp",
    );
    match (&r.role, &r.household) {
        (Role::Household, None) => p.check(
            true,
            "household",
            "required",
            "is required for a household",
            "là bắt buộc với hộ sản xuất",
        ),
        (Role::Household, Some(h)) => sellers::check_household(&mut p, "household", h),
        (_, Some(_)) => p.check(
            true,
            "household",
            "not_allowed",
            "is only for a household",
            "chỉ dành cho hộ sản xuất",
        ),
        _ => {}
    }
    p.finish()?;
    let hash = hash_password(r.password).await?;
    let mut tx = app.pool.begin().await?;
    let account = insert_account(
        &mut tx,
        &r.phone,
        Some(&hash),
        r.role,
        &r.display_name,
        None,
    )
    .await?;
    let household = match &r.household {
        Some(h) => Some(sellers::insert_household(&mut tx, account.id, h).await?),
        None => None,
    };
    let actor = Actor {
        account_id: account.id,
        role: account.role,
        on_behalf_of: None,
    };
    audit(
        &mut tx,
        &actor,
        None,
        "account.registered",
        ("account", account.id.to_string()),
        &serde_json::json!({ "role": account.role }),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        AxumJson(Registered { account, household }),
    ))
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
    let row: Option<(AccountView, Option<String>)> = sqlx::query_as::<_, (AccountId, String, Role, String, String, DateTime<Utc>, Option<String>)>(
        "SELECT id, phone, role, display_name, status, created_at, password_hash FROM accounts WHERE phone = $1",
    )
    .bind(c.phone.as_str())
    .fetch_optional(&app.pool)
    .await?
    .map(|(id, phone, role, display_name, status, created_at, hash)| {
        (AccountView { id, phone, role, display_name, status, created_at }, hash)
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
    let account = sqlx::query_as::<_, AccountView>(
        "UPDATE refresh_tokens t SET revoked_at = now() FROM accounts a
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > now() AND a.id = t.account_id AND a.status = 'active'
         RETURNING a.id, a.phone, a.role, a.display_name, a.status, a.created_at",
    )
    .bind(sha256(&r.refresh_token))
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
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL",
    )
    .bind(sha256(&r.refresh_token))
    .execute(&app.pool)
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Makes a one-time activation code for an account registered by a helper.
pub async fn new_activation_code(conn: &mut PgConnection, account: AccountId) -> Result<String> {
    let mut n = [0u8; 4];
    rand::rng().fill_bytes(&mut n);
    let code = format!("{:08}", u32::from_le_bytes(n) % 100_000_000);
    sqlx::query(
        "INSERT INTO activation_codes (account_id, code_hash, expires_at) VALUES ($1, $2, now() + make_interval(days => $3))
         ON CONFLICT (account_id) DO UPDATE SET code_hash = EXCLUDED.code_hash, expires_at = EXCLUDED.expires_at, attempts = 0",
    )
    .bind(account)
    .bind(sha256(&code))
    .bind(i32::try_from(ACTIVATION_TTL_DAYS).unwrap_or(14))
    .execute(conn)
    .await?;
    Ok(code)
}

/// A household registered by a helper sets its own password with its one-time code.
#[utoipa::path(post, path = "/v1/accounts/activate", tag = "identity", request_body = Activation,
    responses((status = 200, body = Session), (status = 401, body = nongsan_shared::error::ProblemSchema)))]
pub async fn activate_account(
    State(app): State<AppState>,
    Json(a): Json<Activation>,
) -> Result<AxumJson<Session>> {
    let mut p = Problems::default();
    check_password(&mut p, "password", &a.password);
    p.finish()?;
    let key = format!("activate:{}", a.phone.as_str());
    let (hits, left) = app.limiter.hit(&key, LOGIN_WINDOW).await?;
    if hits > LOGIN_ATTEMPTS {
        return Err(ListingError::TooManyAttempts(left.as_secs().max(1)));
    }
    let hash = hash_password(a.password).await?;
    let mut tx = app.pool.begin().await?;
    let account = sqlx::query_as::<_, AccountView>(
        "UPDATE accounts SET password_hash = $3, status = 'active'
         WHERE phone = $1 AND status = 'pending_activation'
           AND EXISTS (SELECT 1 FROM activation_codes c WHERE c.account_id = accounts.id AND c.code_hash = $2 AND c.expires_at > now())
         RETURNING id, phone, role, display_name, status, created_at",
    )
    .bind(a.phone.as_str())
    .bind(sha256(a.code.trim()))
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ListingError::BadCredentials)?;
    sqlx::query("DELETE FROM activation_codes WHERE account_id = $1")
        .bind(account.id)
        .execute(&mut *tx)
        .await?;
    let actor = Actor {
        account_id: account.id,
        role: account.role,
        on_behalf_of: None,
    };
    audit(
        &mut tx,
        &actor,
        None,
        "account.activated",
        ("account", account.id.to_string()),
        &(),
    )
    .await?;
    let session = issue_session(&mut tx, &app, account).await?;
    tx.commit().await?;
    app.limiter.reset(&key).await?;
    Ok(AxumJson(session))
}

/// The signed-in account.
#[utoipa::path(get, path = "/v1/me", tag = "identity", responses((status = 200, body = AccountView), (status = 401, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn get_me(State(app): State<AppState>, actor: Actor) -> Result<AxumJson<AccountView>> {
    let account = sqlx::query_as::<_, AccountView>(
        "SELECT id, phone, role, display_name, status, created_at FROM accounts WHERE id = $1",
    )
    .bind(actor.account_id)
    .fetch_optional(&app.pool)
    .await?
    .ok_or(ListingError::NotFound("account"))?;
    Ok(AxumJson(account))
}

/// An operator makes an account a helper or a cooperative manager.
#[utoipa::path(put, path = "/v1/accounts/{id}/role", tag = "identity", request_body = RoleGrant,
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = AccountView), (status = 403, body = nongsan_shared::error::ProblemSchema), (status = 404, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn grant_role(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<AccountId>,
    Json(g): Json<RoleGrant>,
) -> Result<AxumJson<AccountView>> {
    if actor.role != Role::Operator {
        return Err(ListingError::Forbidden);
    }
    let mut p = Problems::default();
    p.check(
        !matches!(g.role, Role::Helper | Role::CooperativeManager),
        "role",
        "not_grantable",
        "must be helper or cooperative_manager",
        "phải là helper hoặc cooperative_manager",
    );
    p.finish()?;
    let mut tx = app.pool.begin().await?;
    let account = sqlx::query_as::<_, AccountView>(
        "UPDATE accounts SET role = $2 WHERE id = $1 AND role IN ('buyer', 'helper', 'cooperative_manager')
         RETURNING id, phone, role, display_name, status, created_at",
    )
    .bind(id)
    .bind(g.role)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ListingError::NotFound("account"))?;
    audit(
        &mut tx,
        &actor,
        None,
        "account.role_granted",
        ("account", id.to_string()),
        &serde_json::json!({ "role": g.role }),
    )
    .await?;
    tx.commit().await?;
    Ok(AxumJson(account))
}

/// Creates (or resets the password of) an operator account; for `nongsan seed --operator`.
pub async fn upsert_operator(
    pool: &sqlx::PgPool,
    phone: &PhoneNumber,
    password: String,
) -> Result<AccountId> {
    let hash = hash_password(password).await?;
    let id: AccountId = sqlx::query_scalar(
        "INSERT INTO accounts (id, phone, password_hash, role, display_name) VALUES ($1, $2, $3, 'operator', 'Operator')
         ON CONFLICT (phone) DO UPDATE SET password_hash = EXCLUDED.password_hash, role = 'operator', status = 'active'
         RETURNING id",
    )
    .bind(AccountId::new())
    .bind(phone.as_str())
    .bind(hash)
    .fetch_one(pool)
    .await?;
    Ok(id)
}
