//! Roles: an operator grants helper, cooperative manager or operator; `nongsan seed --operator`
//! makes the first operator.

use axum::{Json as AxumJson, extract::State};
use nongsan_shared::{
    AccountId, PhoneNumber,
    auth::{Actor, Role},
    http::{Json, Path},
};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::{
    app::AppState,
    audit::audit,
    error::{ListingError, Problems, Result},
    identity::{
        passwords::hash_password,
        sessions::{Ended, end_sessions_of},
        store::AccountView,
    },
};

/// A role an operator grants.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleGrant {
    /// `helper` or `cooperative_manager`.
    pub role: Role,
}

/// An operator makes an account a helper or a cooperative manager. The account's sessions
/// end: it signs in again to act with the new role.
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
    let account = sqlx::query_as!(
        AccountView,
        r#"UPDATE accounts SET role = $2 WHERE id = $1 AND role IN ('buyer', 'helper', 'cooperative_manager')
         RETURNING id AS "id: AccountId", phone, role AS "role: Role", display_name, status, created_at"#,
        id as _,
        g.role as _,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ListingError::NotFound("account"))?;
    // Its tokens name the old role: end its sessions, so it signs in again with the new one.
    end_sessions_of(&mut tx, id, Ended::RoleChanged).await?;
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
    let id = sqlx::query_scalar!(
        r#"INSERT INTO accounts (id, phone, password_hash, role, display_name) VALUES ($1, $2, $3, 'operator', 'Operator')
         ON CONFLICT (phone) DO UPDATE SET password_hash = EXCLUDED.password_hash, role = 'operator', status = 'active'
         RETURNING id AS "id: AccountId""#,
        AccountId::new() as _,
        phone.as_str(),
        hash,
    )
    .fetch_one(pool)
    .await?;
    Ok(id)
}
