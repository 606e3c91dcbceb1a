//! Calls from one service to another over HTTP. Every call carries the request id of the
//! request being served, and a service token so the callee knows it is nongsan calling.
//!
//! A peer served by this same process (`nongsan up`) is called through this process's own
//! router, in memory ([`LocalRouter`]): the same request, with the same headers, through the
//! same layers and handlers, without the loopback connection, its system calls and the two
//! HTTP codecs.

use std::{
    sync::{Arc, OnceLock, Weak},
    time::Duration,
};

use axum::http::StatusCode;
use serde::{Serialize, de::DeserializeOwned};
use tower::ServiceExt;

use crate::{
    auth::TokenKeys,
    error::{ApiError, Text},
    telemetry::{REQUEST_ID_HEADER, current_request_id},
};

/// A client for one peer service.
#[derive(Debug, Clone)]
pub struct ServiceClient {
    name: &'static str,
    base: String,
    http: reqwest::Client,
    keys: TokenKeys,
    /// This process's router, when the peer is served by this process.
    local: Option<LocalRouter>,
}

/// How long a call may take, over the network or in memory.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from a peer called in memory.
const MAX_ANSWER: usize = 64 << 20;

/// This process's router, set once it is built (after the services, whose clients hold
/// this): until then, after the server has let it go, and in a process that never sets it,
/// calls go over HTTP. It is held weakly: the router holds the services' state, which holds
/// their clients, which hold this.
#[derive(Clone, Default)]
pub struct LocalRouter(Arc<OnceLock<Weak<axum::Router>>>);

impl LocalRouter {
    /// Makes calls to peers of this process go through `router`, for as long as it lives.
    pub fn set(&self, router: &Arc<axum::Router>) {
        let _ = self.0.set(Arc::downgrade(router));
    }

    fn get(&self) -> Option<Arc<axum::Router>> {
        self.0.get().and_then(Weak::upgrade)
    }
}

impl std::fmt::Debug for LocalRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LocalRouter")
            .field(&self.get().is_some())
            .finish()
    }
}

/// Why a call to another service failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The peer could not be reached or did not answer in time.
    #[error("{service} is unavailable: {reason}")]
    Unavailable {
        /// Which peer.
        service: &'static str,
        /// What happened.
        reason: String,
    },
    /// The peer answered with an error status.
    #[error("{service} answered {status}: {code}")]
    Status {
        /// Which peer.
        service: &'static str,
        /// The status it answered.
        status: StatusCode,
        /// The `code` of its problem document, or empty.
        code: String,
        /// Its whole problem document.
        body: serde_json::Value,
    },
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        match &e {
            CallError::Unavailable { service, .. } => ApiError::unavailable(
                "dependency_unavailable",
                Text::new(
                    format!("The {service} service is unavailable; try again shortly."),
                    format!("Dịch vụ {service} tạm thời không khả dụng; vui lòng thử lại sau."),
                ),
            )
            .with_cause(e.into()),
            CallError::Status {
                status, code, body, ..
            } if status.is_client_error() && !code.is_empty() => {
                // The peer's answer about the caller's input is the caller's answer.
                let detail = body
                    .get("detail")
                    .and_then(|d| d.as_str())
                    .unwrap_or_default();
                let errors = body
                    .get("errors")
                    .and_then(|e| e.as_array())
                    .map(|list| {
                        list.iter()
                            .map(|f| {
                                let text =
                                    f.get("detail").and_then(|d| d.as_str()).unwrap_or_default();
                                crate::error::FieldError::new(
                                    f.get("field")
                                        .and_then(|v| v.as_str())
                                        .unwrap_or_default()
                                        .to_owned(),
                                    f.get("code")
                                        .and_then(|v| v.as_str())
                                        .unwrap_or_default()
                                        .to_owned(),
                                    Text::new(text, text),
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                let mut err = ApiError::new(*status, code.clone(), Text::new(detail, detail));
                if !errors.is_empty() {
                    err = ApiError::validation(errors);
                }
                err
            }
            CallError::Status { .. } => ApiError::internal(e.into()),
        }
    }
}

impl ServiceClient {
    /// A client for the service `name` at `base` (no trailing slash).
    pub fn new(name: &'static str, base: &str, keys: TokenKeys) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(CALL_TIMEOUT)
            .build()
            .expect("the HTTP client builds with these options");
        Self {
            name,
            base: base.trim_end_matches('/').to_owned(),
            http,
            keys,
            local: None,
        }
    }

    /// The same client, calling through `router` (once set) instead of over HTTP: for a peer
    /// this process serves itself.
    #[must_use]
    pub fn in_process(mut self, router: LocalRouter) -> Self {
        self.local = Some(router);
        self
    }

    /// The peer's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let token = self.keys.issue_service();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(id) = current_request_id().filter(|id| !id.is_empty()) {
            req = req.header(REQUEST_ID_HEADER, id);
        }
        if let Some(lang) = crate::telemetry::current_language() {
            req = req.header(reqwest::header::ACCEPT_LANGUAGE, lang);
        }
        req
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, CallError> {
        let unavailable = |reason: String| CallError::Unavailable {
            service: self.name,
            reason,
        };
        let req = req.build().map_err(|e| unavailable(e.to_string()))?;
        let (status, body) = match self.local.as_ref().and_then(LocalRouter::get) {
            Some(router) => call_in_memory(&router, req).await.map_err(unavailable)?,
            None => {
                let res = self
                    .http
                    .execute(req)
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
                let status = res.status();
                let body = res.bytes().await.map_err(|e| unavailable(e.to_string()))?;
                (status, body)
            }
        };
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| unavailable(e.to_string()));
        }
        let body: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::BAD_GATEWAY {
            return Err(CallError::Unavailable {
                service: self.name,
                reason: format!("answered {status}"),
            });
        }
        let code = body
            .get("code")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_owned();
        Err(CallError::Status {
            service: self.name,
            status,
            code,
            body,
        })
    }

    /// `GET path`, answered as JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// `GET path` with query parameters, answered as JSON.
    pub async fn get_query<Q: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<T, CallError> {
        self.send(self.request(reqwest::Method::GET, path).query(query))
            .await
    }

    /// `POST path` with a JSON body, answered as JSON.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CallError> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }
}

/// Sends `req` through `router` in memory: its method, path, headers and body, from the
/// loopback address (as the same call over HTTP would come), within the same time bound.
async fn call_in_memory(
    router: &axum::Router,
    req: reqwest::Request,
) -> Result<(StatusCode, axum::body::Bytes), String> {
    let uri = match req.url().query() {
        Some(q) => format!("{}?{q}", req.url().path()),
        None => req.url().path().to_owned(),
    };
    let body = req
        .body()
        .and_then(reqwest::Body::as_bytes)
        .map(axum::body::Bytes::copy_from_slice)
        .unwrap_or_default();
    let mut builder = axum::http::Request::builder()
        .method(req.method().clone())
        .uri(uri);
    for (name, value) in req.headers() {
        builder = builder.header(name, value);
    }
    let mut request = builder
        .body(axum::body::Body::from(body))
        .map_err(|e| e.to_string())?;
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            0,
        ))));
    let answer = async {
        let res = router
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), MAX_ANSWER)
            .await
            .map_err(|e| e.to_string())?;
        Ok((status, bytes))
    };
    tokio::time::timeout(CALL_TIMEOUT, answer)
        .await
        .map_err(|_| format!("no answer in {CALL_TIMEOUT:?}"))?
}

/// Readiness of a peer service: its `/healthz` answers.
#[derive(Debug)]
pub struct PeerReadiness(pub ServiceClient);

#[async_trait::async_trait]
impl crate::http::Readiness for PeerReadiness {
    fn name(&self) -> &str {
        self.0.name
    }

    fn mode(&self) -> crate::http::Mode {
        crate::http::Mode::External
    }

    async fn check(&self) -> anyhow::Result<()> {
        let _: serde_json::Value = self.0.get("/healthz").await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use axum::{
        Json, Router,
        extract::ConnectInfo,
        http::HeaderMap,
        routing::{get, post},
    };
    use serde_json::{Value, json};

    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(
            secrecy::SecretString::from("0123456789abcdef0123456789abcdef"),
            60,
        )
    }

    /// Nothing listens on this address: a call that answers went through the router.
    const NOWHERE: &str = "http://127.0.0.1:9";

    #[tokio::test]
    async fn a_peer_of_this_process_is_called_through_its_router_with_the_same_request() {
        let router = Router::new()
            .route(
                "/echo",
                post(
                    |ConnectInfo(from): ConnectInfo<std::net::SocketAddr>,
                     headers: HeaderMap,
                     axum::extract::RawQuery(q): axum::extract::RawQuery,
                     Json(body): Json<Value>| async move {
                        Json(json!({
                            "from": from.ip().to_string(),
                            "bearer": headers.get("authorization").and_then(|v| v.to_str().ok())
                                .is_some_and(|v| v.starts_with("Bearer ")),
                            "query": q,
                            "body": body,
                        }))
                    },
                ),
            )
            .route(
                "/query",
                get(
                    |axum::extract::RawQuery(q): axum::extract::RawQuery| async move {
                        Json(json!({ "query": q }))
                    },
                ),
            )
            .route(
                "/refused",
                get(|| async {
                    (
                        StatusCode::CONFLICT,
                        Json(json!({ "code": "insufficient_stock", "detail": "none left" })),
                    )
                }),
            );
        let local = LocalRouter::default();
        let client = ServiceClient::new("listing", NOWHERE, keys()).in_process(local.clone());
        // Before the router is set, the call goes over HTTP, and nothing answers there.
        let early: Result<Value, _> = client.post("/echo", &json!({ "n": 1 })).await;
        assert!(
            matches!(early, Err(CallError::Unavailable { .. })),
            "{early:?}"
        );

        let router = Arc::new(router);
        local.set(&router);
        let answer: Value = client.post("/echo", &json!({ "n": 1 })).await.unwrap();
        assert_eq!(
            answer,
            json!({ "from": "127.0.0.1", "bearer": true, "query": null, "body": { "n": 1 } })
        );
        let answer: Value = client
            .get_query("/query", &[("q", "xoài cát")])
            .await
            .unwrap();
        assert_eq!(answer, json!({ "query": "q=xo%C3%A0i+c%C3%A1t" }));
        match client.get::<Value>("/refused").await {
            Err(CallError::Status { status, code, .. }) => {
                assert_eq!(
                    (status, code.as_str()),
                    (StatusCode::CONFLICT, "insufficient_stock")
                );
            }
            other => panic!("{other:?}"),
        }
        // Once the router is let go, calls go over HTTP again.
        drop(router);
        let late: Result<Value, _> = client.post("/echo", &json!({ "n": 1 })).await;
        assert!(
            matches!(late, Err(CallError::Unavailable { .. })),
            "{late:?}"
        );
        // A client for a peer elsewhere never uses the router.
        let remote = ServiceClient::new("listing", NOWHERE, keys());
        let far: Result<Value, _> = remote.post("/echo", &json!({ "n": 1 })).await;
        assert!(matches!(far, Err(CallError::Unavailable { .. })), "{far:?}");
    }
}
