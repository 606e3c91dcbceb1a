//! Activation: a household registered by a helper sets its own password with the code it was
//! given.

use axum::{Json as AxumJson, extract::State};
use nongsan_shared::{
    AccountId, PhoneNumber,
    auth::TokenKeys,
    auth::{Actor, Role},
    http::ClientAddr,
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
        passwords::{check_password, hash_password},
        sessions::{Session, issue_session},
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

/// Wrong codes an activation code survives; the next attempt is refused even with the right
/// code, and the household asks its helper for a new one.
pub const ACTIVATION_FAILURES: i32 = 5;
/// Activation attempts allowed from one client address in a minute.
const ATTEMPTS_PER_ADDRESS_PER_MINUTE: u64 = 30;

/// Makes a one-time activation code for an account registered by a helper. The code is
/// stored as a digest keyed with the server secret, never as itself.
pub async fn new_activation_code(
    conn: &mut PgConnection,
    keys: &TokenKeys,
    account: AccountId,
) -> Result<String> {
    let mut n = [0u8; 4];
    rand::rng().fill_bytes(&mut n);
    let code = format!("{:08}", u32::from_le_bytes(n) % 100_000_000);
    sqlx::query!(
        "INSERT INTO activation_codes (account_id, code_hash, expires_at) VALUES ($1, $2, now() + make_interval(days => $3))
         ON CONFLICT (account_id) DO UPDATE SET code_hash = EXCLUDED.code_hash, expires_at = EXCLUDED.expires_at, attempts = 0",
        account as _,
        keys.keyed_digest("activation", &code),
        i32::try_from(ACTIVATION_TTL_DAYS).unwrap_or(14),
    )
    .execute(conn)
    .await?;
    Ok(code)
}

/// Equal, in time that does not depend on where they differ.
fn same_digest(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A household registered by a helper sets its own password with its one-time code. The code
/// is checked before the password is hashed; five wrong codes and the code is spent.
#[utoipa::path(post, path = "/v1/accounts/activate", tag = "identity", request_body = Activation,
    responses((status = 200, body = Session), (status = 401, body = nongsan_shared::error::ProblemSchema),
        (status = 403, description = "activation_locked: five wrong codes; ask for a new one", body = nongsan_shared::error::ProblemSchema),
        (status = 429, description = "Too many attempts from this address", body = nongsan_shared::error::ProblemSchema)))]
pub async fn activate_account(
    State(app): State<AppState>,
    client: ClientAddr,
    Json(a): Json<Activation>,
) -> Result<AxumJson<Session>> {
    let mut p = Problems::default();
    check_password(&mut p, "password", &a.password);
    p.finish()?;
    let (hits, left) = app
        .limiter
        .hit(
            &format!("activate:from:{}", client.key()),
            std::time::Duration::from_secs(60),
        )
        .await?;
    if hits > ATTEMPTS_PER_ADDRESS_PER_MINUTE {
        return Err(ListingError::TooManyAttempts(left.as_secs().max(1)));
    }
    let mut tx = app.pool.begin().await?;
    let code = sqlx::query!(
        r#"SELECT a.id AS "id: AccountId", c.code_hash, c.attempts, c.expires_at > now() AS "live!"
           FROM accounts a JOIN activation_codes c ON c.account_id = a.id
           WHERE a.phone = $1 AND a.status = 'pending_activation' FOR UPDATE OF c"#,
        a.phone.as_str(),
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ListingError::BadCredentials)?;
    if code.attempts >= ACTIVATION_FAILURES {
        return Err(ListingError::ActivationLocked);
    }
    let given = app.keys.keyed_digest("activation", a.code.trim());
    if !code.live || !same_digest(&given, &code.code_hash) {
        sqlx::query!(
            "UPDATE activation_codes SET attempts = attempts + 1 WHERE account_id = $1",
            code.id as _
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Err(ListingError::BadCredentials);
    }
    let hash = hash_password(a.password).await?;
    let account = sqlx::query_as!(
        AccountView,
        r#"UPDATE accounts SET password_hash = $2, status = 'active' WHERE id = $1
         RETURNING id AS "id: AccountId", phone, role AS "role: Role", display_name, status, created_at"#,
        code.id as _,
        &hash,
    )
    .fetch_one(&mut *tx)
    .await?;
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
    let session = issue_session(&mut tx, &app, account, None).await?;
    tx.commit().await?;
    Ok(AxumJson(session))
}
