//! The audit log: every write, with the actor and the household it was done for, and the
//! household's view of what was done in its name.

use axum::{Json as AxumJson, extract::State};
use chrono::{DateTime, Utc};
use nongsan_shared::{
    AccountId,
    auth::{Actor, Role},
    http::{Path, Query},
    paging::{self, PageParams},
};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::{
    app::AppState,
    error::{ListingError, Problems, Result},
};

/// Records a write: `actor` did `action` to `subject`, for `household` when that is not the
/// actor itself. Only the household the caller checked the write for is recorded, never
/// `X-On-Behalf-Of` as sent: a manager may name a household on the cooperative's own
/// things, and nothing checks whom.
pub async fn audit(
    conn: &mut PgConnection,
    actor: &Actor,
    household: Option<AccountId>,
    action: &str,
    subject: (&str, String),
    details: &impl Serialize,
) -> Result<()> {
    let on_behalf_of = household.filter(|h| *h != actor.account_id);
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

/// One write for [`audit_many`]: the household it was done for, its subject, its details.
pub type Write<'a> = (Option<AccountId>, (&'a str, String), serde_json::Value);

/// Records many writes of one `action` by `actor` in one statement (an import's rows): each
/// as [`audit`] records one.
pub async fn audit_many(
    conn: &mut PgConnection,
    actor: &Actor,
    action: &str,
    entries: &[Write<'_>],
) -> Result<()> {
    let column = |f: fn(&Write<'_>) -> String| entries.iter().map(f).collect::<Vec<_>>();
    sqlx::query!(
        "INSERT INTO audit_log (id, actor_id, actor_role, on_behalf_of, action, subject_type, subject_id, details)
         SELECT v.id, $2, $3, v.on_behalf_of, $4, v.subject_type, v.subject_id, v.details
         FROM UNNEST($1::uuid[], $5::uuid[], $6::text[], $7::text[], $8::jsonb[]) AS v (id, on_behalf_of, subject_type, subject_id, details)",
        &entries.iter().map(|_| uuid::Uuid::now_v7()).collect::<Vec<_>>(),
        actor.account_id as _,
        actor.role.as_str(),
        action,
        &entries
            .iter()
            .map(|(h, _, _)| h.filter(|h| *h != actor.account_id).map(|h| h.0))
            .collect::<Vec<_>>() as &[Option<uuid::Uuid>],
        &column(|(_, (kind, _), _)| (*kind).to_owned()),
        &column(|(_, (_, id), _)| id.clone()),
        &entries.iter().map(|(_, _, d)| d.clone()).collect::<Vec<_>>(),
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
#[utoipa::path(get, path = "/v1/households/{id}/audit", tag = "sellers", params(("id" = String, Path), PageParams),
    responses((status = 200, body = AuditPage), (status = 403, body = nongsan_shared::error::ProblemSchema),
        (status = 422, body = nongsan_shared::error::ProblemSchema)), security(("bearer" = [])))]
pub async fn list_household_audit(
    State(app): State<AppState>,
    actor: Actor,
    Path(id): Path<AccountId>,
    Query(q): Query<PageParams>,
) -> Result<AxumJson<AuditPage>> {
    let mut p = Problems::default();
    let limit = paging::limit(&mut p, q.limit);
    let before = paging::position(&mut p, q.cursor.as_deref(), |s| {
        s.strip_prefix("before:")?.parse::<uuid::Uuid>().ok()
    });
    p.finish()?;
    let own =
        actor.role == Role::Household && actor.account_id == id && actor.on_behalf_of.is_none();
    if !own && actor.role != Role::Operator {
        return Err(ListingError::Forbidden);
    }
    // Audit ids are UUIDv7: newest first is highest id first.
    let mut rows = sqlx::query!(
        r#"SELECT id, actor_id AS "actor_id: AccountId", actor_role, on_behalf_of AS "on_behalf_of: AccountId", action, subject_type, subject_id, details, at
           FROM audit_log WHERE (on_behalf_of = $1 OR actor_id = $1) AND ($2::uuid IS NULL OR id < $2)
           ORDER BY id DESC LIMIT $3"#,
        id as _,
        before,
        paging::rows_to_fetch(limit),
    )
    .fetch_all(&app.pool)
    .await?;
    let next_cursor = paging::next_cursor(&mut rows, limit, |e| format!("before:{}", e.id));
    let items = rows
        .into_iter()
        .map(|e| AuditEntry {
            actor_id: e.actor_id,
            actor_role: e.actor_role,
            on_behalf_of: e.on_behalf_of,
            action: e.action,
            subject_type: e.subject_type,
            subject_id: e.subject_id,
            details: e.details,
            at: e.at,
        })
        .collect();
    Ok(AxumJson(AuditPage { items, next_cursor }))
}

/// A page of the audit trail, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// The entries.
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}
