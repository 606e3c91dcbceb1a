//! The audit log: every write, with the actor and the household it was done for, and the
//! household's view of what was done in its name.

use axum::{
    Json as AxumJson,
    extract::{Path, State},
};
use chrono::{DateTime, Utc};
use nongsan_shared::{
    AccountId,
    auth::{Actor, Role},
};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::{
    app::AppState,
    error::{ListingError, Result},
};

/// Records a write: `actor` did `action` to `subject`, for `household` when that is not the
/// actor itself.
pub async fn audit(
    conn: &mut PgConnection,
    actor: &Actor,
    household: Option<AccountId>,
    action: &str,
    subject: (&str, String),
    details: &impl Serialize,
) -> Result<()> {
    let on_behalf_of = household
        .filter(|h| *h != actor.account_id)
        .or(actor.on_behalf_of);
    sqlx::query!(
        "INSERT INTO audit_log (id, actor_id, actor_role, on_behalf_of, action, subject_type, subject_id, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        uuid::Uuid::now_v7(),
        actor.account_id as _,
        actor.role.as_str(),
        on_behalf_of as _,
        action,
        subject.0,
        subject.1,
        serde_json::to_value(details).map_err(anyhow::Error::from)?,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// One recorded write.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct AuditEntry {
    /// Who did it.
    pub actor_id: AccountId,
    /// In which role.
    pub actor_role: String,
    /// For whom, when not for itself.
    pub on_behalf_of: Option<AccountId>,
    /// What, e.g. `listing.created`.
    pub action: String,
    /// Kind of thing changed.
    pub subject_type: String,
    /// Its id.
    pub subject_id: String,
    /// Details.
    pub details: serde_json::Value,
    /// When.
    pub at: DateTime<Utc>,
}

/// What was done by or in the name of a household, newest first (the household itself, or an
/// operator).
#[utoipa::path(get, path = "/v1/households/{id}/audit", tag = "sellers", params(("id" = String, Path)),
    responses((status = 200, body = [AuditEntry]), (status = 403, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn list_household_audit(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<AccountId>,
) -> Result<AxumJson<Vec<AuditEntry>>> {
    let own =
        actor.role == Role::Household && actor.account_id == id && actor.on_behalf_of.is_none();
    if !own && actor.role != Role::Operator {
        return Err(ListingError::Forbidden);
    }
    let rows = sqlx::query_as!(
        AuditEntry,
        r#"SELECT actor_id AS "actor_id: AccountId", actor_role, on_behalf_of AS "on_behalf_of: AccountId", action, subject_type, subject_id, details, at
           FROM audit_log WHERE on_behalf_of = $1 OR actor_id = $1 ORDER BY at DESC, id DESC LIMIT 500"#,
        id as _,
    )
    .fetch_all(&app.pool)
    .await?;
    Ok(AxumJson(rows))
}
