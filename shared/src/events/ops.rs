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

/// The OpenAPI description of a service's dead-letter routes (their paths carry the
/// service's name, so they are described here rather than by a `#[utoipa::path]`).
pub fn ops_openapi(service: &str) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{
        ArrayBuilder, Content, HttpMethod, OpenApiBuilder, PathItem, PathsBuilder, Ref,
        ResponseBuilder,
        path::{OperationBuilder, ParameterBuilder, ParameterIn},
        security::SecurityRequirement,
    };
    let problem = |d: &str| {
        ResponseBuilder::new()
            .description(d)
            .content(
                crate::error::PROBLEM_JSON,
                Content::new(Some(Ref::from_schema_name("Problem"))),
            )
            .build()
    };
    let list = OperationBuilder::new()
        .tag("ops")
        .operation_id(Some(format!("list_{service}_dead_letters")))
        .summary(Some(format!(
            "Events the {service} service gave up on (operators)"
        )))
        .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
        .response(
            "200",
            ResponseBuilder::new()
                .description("Oldest first, at most 500")
                .content(
                    "application/json",
                    Content::new(Some(
                        ArrayBuilder::new().items(Ref::from_schema_name("DeadLetter")),
                    )),
                )
                .build(),
        )
        .response("401", problem("Not signed in"))
        .response("403", problem("Not an operator"))
        .build();
    let retry = OperationBuilder::new()
        .tag("ops")
        .operation_id(Some(format!("retry_{service}_dead_letter")))
        .summary(Some(format!(
            "Puts a dead event of the {service} service back in its queue (operators)"
        )))
        .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
        .parameter(
            ParameterBuilder::new()
                .name("id")
                .parameter_in(ParameterIn::Path)
                .required(utoipa::openapi::Required::True)
                .description(Some("The event id"))
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String)
                        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::Uuid,
                        ))),
                )),
        )
        .response(
            "202",
            ResponseBuilder::new().description("Queued again").build(),
        )
        .response("404", problem("No dead event with this id"))
        .build();
    let paths = PathsBuilder::new()
        .path(
            format!("/v1/ops/{service}/dead-letters"),
            PathItem::new(HttpMethod::Get, list),
        )
        .path(
            format!("/v1/ops/{service}/dead-letters/{{id}}/retry"),
            PathItem::new(HttpMethod::Post, retry),
        )
        .build();
    OpenApiBuilder::new().paths(paths).build()
}
