//! The dead-letter list, for operators: read it, and put an event back to be tried again.

use axum::{
    Router,
    extract::{FromRef, Path, State},
    http::StatusCode,
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::{
    auth::{Actor, Role, TokenKeys},
    error::ApiError,
    ids::EventId,
};

/// An event that kept failing.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
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

#[derive(Clone)]
struct OpsState {
    pool: PgPool,
    keys: TokenKeys,
}

impl FromRef<OpsState> for TokenKeys {
    fn from_ref(s: &OpsState) -> Self {
        s.keys.clone()
    }
}

/// Lists the events this service gave up on, oldest first (operators only).
async fn list_dead_letters(
    State(s): State<OpsState>,
    actor: Actor,
) -> Result<axum::Json<Vec<DeadLetter>>, ApiError> {
    actor.require(&[Role::Operator])?;
    let rows = sqlx::query_as::<_, DeadLetter>(
        "SELECT event_id, event_type, source, attempts, last_error, received_at, event FROM inbox
         WHERE status = 'dead' ORDER BY received_at LIMIT 500",
    )
    .fetch_all(&s.pool)
    .await?;
    Ok(axum::Json(rows))
}

/// Puts a dead event back in the queue with a fresh count of attempts (operators only).
async fn retry_dead_letter(
    State(s): State<OpsState>,
    actor: Actor,
    Path(id): Path<EventId>,
) -> Result<StatusCode, ApiError> {
    actor.require(&[Role::Operator])?;
    let n = sqlx::query(
        "UPDATE inbox SET status = 'pending', attempts = 0, next_attempt_at = now() WHERE event_id = $1 AND status = 'dead'",
    )
    .bind(id)
    .execute(&s.pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(ApiError::not_found("dead letter"));
    }
    Ok(StatusCode::ACCEPTED)
}

/// `GET /v1/ops/<service>/dead-letters` and `POST /v1/ops/<service>/dead-letters/{id}/retry`.
pub fn ops_router(service: &str, pool: PgPool, keys: TokenKeys) -> Router {
    Router::new()
        .route(
            &format!("/v1/ops/{service}/dead-letters"),
            get(list_dead_letters),
        )
        .route(
            &format!("/v1/ops/{service}/dead-letters/{{id}}/retry"),
            post(retry_dead_letter),
        )
        .with_state(OpsState { pool, keys })
}
