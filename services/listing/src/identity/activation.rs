//! Activation: a household registered by a helper sets its own password with the code it was
//! given.

use axum::{Json as AxumJson, extract::State};
use nongsan_shared::{
    AccountId, PhoneNumber,
    auth::{Actor, Role},
    http::Json,
};
use rand::RngCore;
use serde::Deserialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::{
    app::AppState,
    audit::audit,
    error::{ListingError, Problems, Result},
    identity::{
        passwords::{check_password, hash_password, sha256},
        sessions::{LOGIN_ATTEMPTS, LOGIN_WINDOW, Session, issue_session},
        store::AccountView,
    },
};

/// Lifetime of an activation code.
const ACTIVATION_TTL_DAYS: i64 = 14;

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

/// Makes a one-time activation code for an account registered by a helper.
pub async fn new_activation_code(conn: &mut PgConnection, account: AccountId) -> Result<String> {
    let mut n = [0u8; 4];
    rand::rng().fill_bytes(&mut n);
    let code = format!("{:08}", u32::from_le_bytes(n) % 100_000_000);
    sqlx::query!(
        "INSERT INTO activation_codes (account_id, code_hash, expires_at) VALUES ($1, $2, now() + make_interval(days => $3))
         ON CONFLICT (account_id) DO UPDATE SET code_hash = EXCLUDED.code_hash, expires_at = EXCLUDED.expires_at, attempts = 0",
        account as _,
        sha256(&code),
        i32::try_from(ACTIVATION_TTL_DAYS).unwrap_or(14),
    )
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
    let account = sqlx::query_as!(
        AccountView,
        r#"UPDATE accounts SET password_hash = $3, status = 'active'
         WHERE phone = $1 AND status = 'pending_activation'
           AND EXISTS (SELECT 1 FROM activation_codes c WHERE c.account_id = accounts.id AND c.code_hash = $2 AND c.expires_at > now())
         RETURNING id AS "id: AccountId", phone, role AS "role: Role", display_name, status, created_at"#,
        a.phone.as_str(),
        sha256(a.code.trim()),
        &hash,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ListingError::BadCredentials)?;
    sqlx::query!(
        "DELETE FROM activation_codes WHERE account_id = $1",
        account.id as _
    )
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
