//! Telemetry: `tracing` set up once per process, a request id on every request that is
//! carried to other services, and Prometheus metrics.

use std::{sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request},
    http::HeaderValue,
    middleware::Next,
    response::Response,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower_http::request_id::{MakeRequestId, RequestId};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Header that carries the request id, in and out, and across service calls.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Starts logging to stderr. `RUST_LOG` filters (default `info`). Safe to call twice: the
/// second call does nothing.
pub fn init_tracing(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    // Colours for a person at a terminal, not escape codes in a log file.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Only one recorder can be global; a second app in the same process (tests) shares it.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Makes request ids that are UUIDv7, so they sort by time in logs.
#[derive(Debug, Clone, Copy, Default)]
pub struct MakeRequestUuidV7;

impl MakeRequestId for MakeRequestUuidV7 {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
            .ok()
            .map(RequestId::new)
    }
}

tokio::task_local! {
    static CURRENT_REQUEST_ID: String;
    static CURRENT_LANGUAGE: Option<String>;
}

/// The `Accept-Language` of the request being served by this task, if any: calls to other
/// services carry it, so their answers come back in the caller's language.
pub fn current_language() -> Option<String> {
    CURRENT_LANGUAGE.try_with(Clone::clone).ok().flatten()
}

/// The id of the request being served by this task, if any.
pub fn current_request_id() -> Option<String> {
    CURRENT_REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `fut` as if serving the request `id`: calls it makes to other services carry the id.
pub async fn with_request_id<F: Future>(id: String, fut: F) -> F::Output {
    CURRENT_REQUEST_ID.scope(id, fut).await
}

/// Runs `fut` on a task of its own, with this request's id, language and tracing span, and
/// waits for it. When the request is dropped (its connection closed: a phone that lost its
/// signal), `fut` still runs to its end, where the handler itself would stop at its next
/// await. For handlers whose steps must not stop half-way, such as a checkout's saga.
pub async fn run_to_completion<F>(fut: F) -> anyhow::Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let id = current_request_id().unwrap_or_default();
    let lang = current_language();
    let running = Running::enter();
    let in_context = CURRENT_REQUEST_ID.scope(id, CURRENT_LANGUAGE.scope(lang, fut));
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let out = in_context.await;
            drop(running);
            out
        },
        tracing::Span::current(),
    ))
    .await
    .map_err(|e| anyhow::anyhow!("the request's task ended early: {e}"))
}

/// The work [`run_to_completion`] runs in this process, counted: stopping waits for it
/// ([`runs_completed`]), as it waits for the requests still connected.
static RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static RUNS_ENDED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// One run counted in [`RUNNING`] until dropped (also when its task panics or is aborted).
struct Running;

impl Running {
    fn enter() -> Self {
        RUNNING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if RUNNING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            RUNS_ENDED.notify_waiters();
        }
    }
}

/// Waits, at most `within`, until no work of [`run_to_completion`] runs in this process;
/// answers whether none does. A stopping server calls it once it takes no more requests.
pub async fn runs_completed(within: std::time::Duration) -> bool {
    let wait = async {
        loop {
            // Registered before the count is read: an end between the two still wakes it.
            let mut ended = std::pin::pin!(RUNS_ENDED.notified());
            ended.as_mut().enable();
            if RUNNING.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            ended.await;
        }
    };
    tokio::time::timeout(within, wait).await.is_ok()
}

/// Middleware: makes the request id current for the handler's task and records the
/// request's count and duration by route and status.
pub async fn observe(req: Request, next: Next) -> Response {
    let start = Instant::now();
    // Only the methods HTTP defines are labels: any other token a client sends would make
    // a new time series.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" | "CONNECT"
        | "TRACE") => m.to_owned(),
        _ => "other".to_owned(),
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let lang = req
        .headers()
        .get(axum::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let res = CURRENT_REQUEST_ID
        .scope(id, CURRENT_LANGUAGE.scope(lang, next.run(req)))
        .await;
    let status = res.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    res
}

/// Whether the `failures`-th failure in a row of a retrying loop should be logged: the first
/// and then every tenth, so a long outage does not flood the log.
pub fn worth_logging(failures: u32) -> bool {
    failures == 1 || failures.is_multiple_of(10)
}
