//! The dead-letter list, for operators: read it, and put an event back to be tried again.

use axum::{
    extract::{FromRef, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::{Actor, Role, TokenKeys},
    error::ApiError,
    http::Path,
    ids::EventId,
};

/// An event that kept failing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The event id.
    #[schema(value_type = String, format = Uuid)]
    pub event_id: EventId,
    /// Its type.
    pub event_type: String,
    /// The service that emitted it.
    pub source: String,
    /// How often it was tried.
    pub attempts: i32,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// The whole event.
    pub event: serde_json::Value,
}

/// What the dead-letter routes need: the service's pool (its `inbox` table) and token keys.
#[derive(Clone)]
pub struct OpsState {
    /// The service's pool.
    pub pool: PgPool,
    /// Token keys, to know the operator.
    pub keys: TokenKeys,
}

impl std::fmt::Debug for OpsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpsState")
    }
}

impl FromRef<OpsState> for TokenKeys {
    fn from_ref(s: &OpsState) -> Self {
        s.keys.clone()
    }
}

/// Lists the events this service gave up on, oldest first (operators only).
// Declared relative to `/v1/ops/{service}`: `ops_routes` nests it there and puts the service's
// name in place of `{service}` in its operation id and summary.
#[utoipa::path(get, path = "/dead-letters", tag = "ops",
    operation_id = "list_{service}_dead_letters",
    summary = "Events the {service} service gave up on (operators)",
    responses(
        (status = 200, description = "Oldest first, at most 500", body = [DeadLetter]),
        (status = 401, description = "Not signed in", content_type = "application/problem+json", body = crate::error::ProblemSchema),
        (status = 403, description = "Not an operator", content_type = "application/problem+json", body = crate::error::ProblemSchema),
    ),
    security(("bearer" = [])))]
async fn list_dead_letters(
    State(s): State<OpsState>,
    actor: Actor,
) -> Result<axum::Json<Vec<DeadLetter>>, ApiError> {
    actor.require(&[Role::Operator])?;
    let rows = sqlx::query_as!(
        DeadLetter,
        r#"SELECT event_id AS "event_id: EventId", event_type, source, attempts, last_error, received_at, event FROM inbox
         WHERE status = 'dead' ORDER BY received_at LIMIT 500"#,
    )
    .fetch_all(&s.pool)
    .await?;
    Ok(axum::Json(rows))
}

/// Puts a dead event back in the queue with a fresh count of attempts (operators only).
// Declared relative to `/v1/ops/{service}`, as `list_dead_letters`.
#[utoipa::path(post, path = "/dead-letters/{id}/retry", tag = "ops",
    operation_id = "retry_{service}_dead_letter",
    summary = "Puts a dead event of the {service} service back in its queue (operators)",
    params(("id" = uuid::Uuid, Path, description = "The event id")),
    responses(
        (status = 202, description = "Queued again"),
        (status = 404, description = "No dead event with this id", content_type = "application/problem+json", body = crate::error::ProblemSchema),
    ),
    security(("bearer" = [])))]
async fn retry_dead_letter(
    State(s): State<OpsState>,
    actor: Actor,
    Path(id): Path<EventId>,
) -> Result<StatusCode, ApiError> {
    actor.require(&[Role::Operator])?;
    let n = sqlx::query!(
        "UPDATE inbox SET status = 'pending', attempts = 0, next_attempt_at = now() WHERE event_id = $1 AND status = 'dead'",
        id.0,
    )
    .execute(&s.pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(ApiError::not_found("dead letter"));
    }
    Ok(StatusCode::ACCEPTED)
}

/// A service's dead-letter routes with their OpenAPI entries:
/// `GET /v1/ops/<service>/dead-letters` and `POST /v1/ops/<service>/dead-letters/{id}/retry`.
/// Their paths carry the service's name, so the handlers are declared relative to
/// `/v1/ops/{service}` and nested here, and `{service}` in their operation ids and summaries
/// becomes the name (operation ids must be unique across the composed document).
pub fn ops_routes(service: &str) -> OpenApiRouter<OpsState> {
    let mut routes = OpenApiRouter::default().nest(
        &format!("/v1/ops/{service}"),
        OpenApiRouter::default()
            .routes(routes!(list_dead_letters))
            .routes(routes!(retry_dead_letter)),
    );
    let named = |s: &mut String| *s = s.replace("{service}", service);
    for item in routes.get_openapi_mut().paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.post].into_iter().flatten() {
            op.operation_id
                .iter_mut()
                .chain(&mut op.summary)
                .for_each(named);
        }
    }
    routes
}

/// A service's dead-letter routes ([`ops_routes`]) served on its `pool`.
pub fn ops_router(service: &str, pool: PgPool, keys: TokenKeys) -> axum::Router {
    ops_routes(service)
        .with_state(OpsState { pool, keys })
        .into()
}
