//! The HTTP edge every service shares: the JSON extractor that answers 400/422 as
//! problem+json, the middleware stack, the 404 fallback, and the health, readiness and
//! metrics endpoints.

use std::{any::Any, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, FromRequest, Request, State},
    http::{HeaderName, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Serialize, de::DeserializeOwned};
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiError, FieldError, Text, problem_layer},
    invalid,
    telemetry::{MakeRequestUuidV7, REQUEST_ID_HEADER, metrics_handle, observe},
};

/// Largest JSON body accepted: 1 MiB. [`with_common_layers`] makes it every route's limit;
/// a route that takes larger files (the stock import) sets its own `DefaultBodyLimit`.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// 413 `payload_too_large`: the body is larger than the route accepts.
pub fn payload_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        Text::new(
            "The request body is larger than this route accepts (1 MiB for JSON).",
            "Nội dung yêu cầu lớn hơn mức cho phép (1 MiB với JSON).",
        ),
    )
}

/// Adds the 413 `payload_too_large` answer to every operation of `doc` that takes a body:
/// [`with_common_layers`] gives each the same limit.
pub fn document_body_limit(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for op in ops.into_iter().flatten() {
            if op.request_body.is_none() || op.responses.responses.contains_key("413") {
                continue;
            }
            let res = ResponseBuilder::new()
                .description(
                    "payload_too_large: the body is larger than the route accepts (1 MiB for JSON)",
                )
                .content(
                    crate::error::PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build();
            op.responses
                .responses
                .insert("413".to_owned(), RefOr::T(res));
        }
    }
}

/// Documents the answers the HTTP edge gives any operation, as the extractors give them, so
/// the document says what a client can meet: every error is `application/problem+json`;
/// an operation with a body may answer 400 `malformed_json` and 415
/// `unsupported_media_type`; one with a body or parameters 422 `validation_failed`; one with
/// a path parameter 404 (a malformed id included); one that needs a token 401 and 403; the
/// sign-in, registration and activation 429 `too_many_attempts` and 503 `busy`.
pub fn document_common_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let problem = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    crate::error::PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build(),
        )
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            ("get", &mut item.get),
            ("post", &mut item.post),
            ("put", &mut item.put),
            ("patch", &mut item.patch),
            ("delete", &mut item.delete),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            // Errors are problem documents, whatever a handler's annotation said.
            for (code, res) in op.responses.responses.iter_mut() {
                if code.as_str() < "400" {
                    continue;
                }
                if let RefOr::T(res) = res
                    && let Some(content) = res.content.shift_remove("application/json")
                {
                    res.content
                        .entry(crate::error::PROBLEM_JSON.to_owned())
                        .or_insert(content);
                }
            }
            let has_body = op.request_body.is_some();
            let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
            let mut add = |code: &str, description: &str| {
                op.responses
                    .responses
                    .entry(code.to_owned())
                    .or_insert_with(|| problem(description));
            };
            if has_body {
                add("400", "malformed_json: the body is not JSON");
                add(
                    "415",
                    "unsupported_media_type: the body is not of a type the operation takes",
                );
            }
            if has_body || has_params {
                add(
                    "422",
                    "validation_failed: a field or parameter does not fit (each is named in `errors`)",
                );
            }
            if path.contains('{') {
                add(
                    "404",
                    "not_found: nothing has this id (a malformed id included)",
                );
            }
            if secured {
                add("401", "unauthorized: no valid bearer token");
                add("403", "forbidden: the caller may not do this");
            }
            if method == "post"
                && ["/v1/sessions", "/v1/accounts", "/v1/accounts/activate"]
                    .contains(&path.as_str())
            {
                add(
                    "429",
                    "too_many_attempts: too many tries from this address or for this phone; see Retry-After",
                );
                add(
                    "503",
                    "busy: too many passwords are being checked; try again",
                );
            }
        }
    }
}

/// A JSON request body parsed into `T`, or a problem+json answer: 415 without a JSON content
/// type, 400 `malformed_json` when it is not JSON, 422 naming the field when it does not fit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                Text::new(
                    "Send the body as JSON with Content-Type: application/json.",
                    "Hãy gửi nội dung dạng JSON với Content-Type: application/json.",
                ),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                payload_too_large()
            } else {
                ApiError::bad_request(
                    "body_unreadable",
                    Text::new(
                        "The request body was cut off.",
                        "Nội dung yêu cầu bị cắt ngang.",
                    ),
                )
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// Parses a JSON body the way [`Json`] does.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if let Some(field) = field_with_nul(bytes) {
        return Err(ApiError::validation(vec![FieldError::new(
            field,
            "nul_character",
            Text::new(
                "must not contain the NUL character (\\u0000)",
                "không được chứa ký tự NUL (\\u0000)",
            ),
        )]));
    }
    invalid::clear();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = serde_path_to_error::deserialize(&mut de)
        .map_err(|err| (err.path().to_string(), err.into_inner()))
        .and_then(|v| de.end().map(|()| v).map_err(|e| (String::new(), e)));
    match result {
        Ok(v) => Ok(v),
        Err((path, inner)) => match inner.classify() {
            serde_json::error::Category::Data => {
                let field = if path == "." { String::new() } else { path };
                let fe = match invalid::take_last() {
                    Some(reason) => reason.at(field),
                    None => describe_data_error(field, &inner),
                };
                Err(ApiError::validation(vec![fe]))
            }
            _ => Err(ApiError::bad_request(
                "malformed_json",
                Text::new(
                    format!("The body is not valid JSON: {inner}"),
                    format!("Nội dung không phải JSON hợp lệ: {inner}"),
                ),
            )),
        },
    }
}

/// The first field (as `a.b[2].c`, the way field errors name them) whose text, or name,
/// holds the NUL character, which PostgreSQL cannot store in text: `None` for almost every
/// body at the cost of one search for the escape, as JSON can carry it no other way.
fn field_with_nul(bytes: &[u8]) -> Option<String> {
    fn find(v: &serde_json::Value, path: &str) -> Option<String> {
        let join = |key: &str| {
            if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            }
        };
        match v {
            serde_json::Value::String(s) => s.contains('\0').then(|| path.to_owned()),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| find(item, &format!("{path}[{i}]"))),
            serde_json::Value::Object(map) => map.iter().find_map(|(k, item)| {
                if k.contains('\0') {
                    Some(join(k))
                } else {
                    find(item, &join(k))
                }
            }),
            _ => None,
        }
    }
    if !bytes.windows(6).any(|w| w == b"\\u0000") {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    find(&value, "")
}

/// A field error from serde's own message (missing field, wrong type, unknown variant).
fn describe_data_error(field: String, err: &serde_json::Error) -> FieldError {
    let msg = err.to_string();
    describe_message(field, msg.split(" at line ").next().unwrap_or(&msg))
}

fn describe_message(field: String, msg: &str) -> FieldError {
    let (field, msg) = match (field.is_empty(), field_of(msg)) {
        (true, Some(f))
            if !msg.starts_with("missing field") && !msg.starts_with("unknown field") =>
        {
            let rest = msg[f.len() + 2..].to_owned();
            (f, rest)
        }
        _ => (field, msg.to_owned()),
    };
    if let Some(name) = msg
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        let full = if field.is_empty() {
            name.to_owned()
        } else {
            format!("{field}.{name}")
        };
        return FieldError::new(full, "required", Text::new("is required", "là bắt buộc"));
    }
    if let Some(name) = msg
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        // The path of an unknown field already ends with the field itself.
        let full = if field.is_empty() {
            name.to_owned()
        } else if field == name || field.ends_with(&format!(".{name}")) {
            field
        } else {
            format!("{field}.{name}")
        };
        return FieldError::new(
            full,
            "unknown_field",
            Text::new("is not a known field", "không phải trường hợp lệ"),
        );
    }
    FieldError::new(
        field,
        "invalid",
        Text::new(msg.clone(), format!("giá trị không hợp lệ ({msg})")),
    )
}

/// The answer to a route that does not exist.
pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        Text::new("There is no such route.", "Không có đường dẫn này."),
    )
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    ApiError::internal(anyhow::anyhow!("handler panicked: {what}")).into_response()
}

/// An answer slower than this is logged at info, like one that refused or failed.
pub const SLOW_ANSWER: Duration = Duration::from_secs(1);

/// Wraps a finished router with the shared middleware: request id (kept from the caller or
/// made), tracing span, metrics, problem+json rendering, panic catching, the 1 MiB body
/// limit ([`MAX_JSON_BODY`]; 413 `payload_too_large`), and the 404 fallback.
pub fn with_common_layers(router: Router) -> Router {
    // The recorder must exist before the first request is counted.
    let _ = metrics_handle();
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(problem_layer))
        .layer(middleware::from_fn(observe))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
                })
                .on_request(())
                .on_response(
                    |res: &Response, latency: Duration, _: &tracing::Span| {
                        // A line for each answer that needs a look: refused, failed or slow.
                        // The others are counted by `observe` (`/metrics`) and logged at debug:
                        // a JSON line for each of hundreds of searches a second cost the
                        // process a twentieth of its CPU (BENCHMARKS.md, 2026-12-06).
                        let (status, latency_ms) = (res.status().as_u16(), latency.as_millis() as u64);
                        if status >= 400 || latency >= SLOW_ANSWER {
                            tracing::info!(status, latency_ms, "served");
                        } else {
                            tracing::debug!(status, latency_ms, "served");
                        }
                    },
                ),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuidV7))
}

/// Whether a dependency is part of this process or a separate server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Started by nongsan itself (private PostgreSQL cluster, embedded index).
    Embedded,
    /// Runs inside this process (event bus, cache).
    InProcess,
    /// A server configured by URL.
    External,
}

/// A dependency `/readyz` checks.
#[async_trait::async_trait]
pub trait Readiness: Send + Sync {
    /// Short name, e.g. `postgres`.
    fn name(&self) -> &str;
    /// How it runs.
    fn mode(&self) -> Mode;
    /// `Ok` when reachable now.
    async fn check(&self) -> anyhow::Result<()>;
}

/// The dependencies one process checks for `/readyz`.
pub type ReadinessChecks = Arc<Vec<Arc<dyn Readiness>>>;

/// One line of the `/readyz` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckResult {
    /// Dependency name.
    pub name: String,
    /// How it runs.
    pub mode: Mode,
    /// Whether it answered.
    pub ok: bool,
}

/// The `/readyz` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReadyReport {
    /// `ready` or `not-ready`.
    pub status: &'static str,
    /// Each dependency.
    pub checks: Vec<CheckResult>,
}

/// Alive: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "The process is alive")))]
pub async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// Ready: every dependency is reachable. Anyone may ask, so the answer says only which
/// dependency is reachable; why one is not (an error text may name hosts, users or
/// configuration) goes to the log.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "Every dependency answered", body = ReadyReport),
    (status = 503, description = "A dependency did not answer", body = ReadyReport),
))]
pub async fn readyz(State(checks): State<ReadinessChecks>) -> impl IntoResponse {
    let runs = checks.iter().map(|c| async move {
        let res = tokio::time::timeout(Duration::from_secs(3), c.check()).await;
        let error = match res {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(_) => Some("timed out after 3 s".to_owned()),
        };
        if let Some(error) = &error {
            tracing::warn!(dependency = c.name(), %error, "not ready");
        }
        CheckResult {
            name: c.name().to_owned(),
            mode: c.mode(),
            ok: error.is_none(),
        }
    });
    let results: Vec<CheckResult> = futures_util::future::join_all(runs).await;
    let ok = results.iter().all(|r| r.ok);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(ReadyReport {
            status: if ok { "ready" } else { "not-ready" },
            checks: results,
        }),
    )
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
}

/// `/healthz`, `/readyz` and `/metrics`, with their OpenAPI entries; every process serves them
/// with its [`ReadinessChecks`].
pub fn ops_routes() -> OpenApiRouter<ReadinessChecks> {
    OpenApiRouter::default()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// `/openapi.json` for a document. The page that shows it, `/docs`, is Swagger UI served
/// by the `nongsan` binary from vendored files (see its `docs_page`).
pub fn docs_router(doc: utoipa::openapi::OpenApi) -> Router {
    let json = Arc::new(
        doc.to_pretty_json()
            .expect("the OpenAPI document serializes"),
    );
    Router::new().route(
        "/openapi.json",
        get(move || {
            let json = json.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    (*json).clone(),
                )
            }
        }),
    )
}

/// Query parameters parsed into `T`, or 422 naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        invalid::clear();
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(rejection) => {
                let text = rejection.body_text();
                let msg = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                let fe = match invalid::take_last() {
                    Some(reason) => reason.at(field_of(msg).unwrap_or_default()),
                    None => describe_message(String::new(), msg),
                };
                Err(ApiError::validation(vec![fe]))
            }
        }
    }
}

/// The parameter a serde message names ("q: invalid digit" or "missing field `q`").
fn field_of(msg: &str) -> Option<String> {
    msg.split_once(": ")
        .map(|(f, _)| f.to_owned())
        .filter(|f| !f.contains(' '))
}

/// Path parameters parsed into `T`; a malformed id is 404, since nothing can have it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(_) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                Text::new(
                    "Nothing exists at this address.",
                    "Không có gì ở địa chỉ này.",
                ),
            )),
        }
    }
}

/// The address of the client that sent a request: the peer's, or behind a reverse proxy the
/// last address in the configured header (the one the proxy appended, which a client cannot
/// forge). `None` when neither is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl ClientAddr {
    /// As a rate-limit key part.
    pub fn key(&self) -> String {
        self.0
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
    }
}

/// Records each request's [`ClientAddr`] in its extensions, from `header` when configured,
/// else from the connection.
pub async fn record_client_addr(
    axum::extract::State(header): axum::extract::State<Option<HeaderName>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let from_header = header.as_ref().and_then(|h| {
        req.headers()
            .get_all(h)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|a| a.trim().parse().ok())
    });
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let addr = ClientAddr(if header.is_some() { from_header } else { peer });
    req.extensions_mut().insert(addr);
    next.run(req).await
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientAddr>()
            .copied()
            .unwrap_or(ClientAddr(None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn query_problem<T: DeserializeOwned>(uri: &str) -> Vec<FieldError> {
        let (mut parts, ()) = axum::http::Request::builder()
            .uri(uri)
            .body(())
            .expect("a request")
            .into_parts();
        match <Query<T> as axum::extract::FromRequestParts<()>>::from_request_parts(&mut parts, &())
            .await
        {
            Ok(_) => Vec::new(),
            Err(e) => e.field_errors().to_vec(),
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only parsed")]
    struct Paging {
        limit: Option<u32>,
        q: Option<String>,
    }

    #[tokio::test]
    async fn a_query_problem_names_the_parameter_once() {
        let unknown = query_problem::<Paging>("/x?per_page=5").await;
        assert_eq!(unknown.len(), 1, "{unknown:?}");
        assert_eq!(unknown[0].field, "per_page");
        assert_eq!(unknown[0].code, "unknown_field");
        let bad = query_problem::<Paging>("/x?limit=many").await;
        assert_eq!(bad[0].field, "limit", "{bad:?}");
    }
}
