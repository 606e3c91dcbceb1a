//! Calls from one service to another over HTTP. Every call carries the request id of the
//! request being served, and a service token so the callee knows it is nongsan calling.

use std::time::Duration;

use axum::http::StatusCode;
use serde::{Serialize, de::DeserializeOwned};

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
            .timeout(Duration::from_secs(10))
            .build()
            .expect("the HTTP client builds with these options");
        Self {
            name,
            base: base.trim_end_matches('/').to_owned(),
            http,
            keys,
        }
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
        let unavailable = |e: reqwest::Error| CallError::Unavailable {
            service: self.name,
            reason: e.to_string(),
        };
        let res = req.send().await.map_err(unavailable)?;
        let status = res.status();
        if status.is_success() {
            return res.json().await.map_err(unavailable);
        }
        let body: serde_json::Value = res.json().await.unwrap_or(serde_json::Value::Null);
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
