//! The one error type every handler returns, rendered as RFC 9457
//! `application/problem+json` with a stable `code`, in Vietnamese or English.
//!
//! A handler returns [`ApiError`]. Its `IntoResponse` puts the error into the response's
//! extensions; the [`problem_layer`] middleware then writes the body in the language the
//! request's `Accept-Language` prefers and logs the cause of a 5xx once. The cause of a 5xx is
//! never sent to the client.

use std::{borrow::Cow, sync::Arc};

use axum::{
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The most field errors one problem document names.
pub const MAX_FIELD_ERRORS: usize = 50;

/// A text in both languages the API speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    /// English.
    pub en: String,
    /// Vietnamese.
    pub vi: String,
}

impl Text {
    /// A text in English and Vietnamese.
    pub fn new(en: impl Into<String>, vi: impl Into<String>) -> Self {
        Self {
            en: en.into(),
            vi: vi.into(),
        }
    }

    fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::En => &self.en,
            Lang::Vi => &self.vi,
        }
    }
}

/// What is wrong with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field in the request, e.g. `lines[0].quantity`.
    pub field: String,
    /// Stable machine-readable reason, e.g. `too_many_decimals`.
    pub code: Cow<'static, str>,
    /// What is wrong, in both languages.
    pub text: Text,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, code: impl Into<Cow<'static, str>>, text: Text) -> Self {
        Self {
            field: field.into(),
            code: code.into(),
            text,
        }
    }
}

/// An error answered to an HTTP client.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    text: Text,
    errors: Vec<FieldError>,
    cause: Option<Arc<anyhow::Error>>,
}

impl ApiError {
    /// An error with a status, a stable code and a detail in both languages.
    pub fn new(status: StatusCode, code: impl Into<Cow<'static, str>>, text: Text) -> Self {
        Self {
            status,
            code: code.into(),
            text,
            errors: Vec::new(),
            cause: None,
        }
    }

    /// 400: the request could not be read at all.
    pub fn bad_request(code: &'static str, text: Text) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, text)
    }

    /// 422 `validation_failed`, naming every field that is wrong: each reason at a field once,
    /// and no more than [`MAX_FIELD_ERRORS`] of them, so that the answer to a request wrong in
    /// the same way many times over does not grow with it.
    pub fn validation(mut errors: Vec<FieldError>) -> Self {
        let mut named = std::collections::HashSet::new();
        errors.retain(|e| {
            named.len() < MAX_FIELD_ERRORS && named.insert((e.field.clone(), e.code.clone()))
        });
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        let list = fields.join(", ");
        let first_en = errors
            .first()
            .map(|e| format!(": {}", e.text.en))
            .unwrap_or_default();
        let first_vi = errors
            .first()
            .map(|e| format!(": {}", e.text.vi))
            .unwrap_or_default();
        Self {
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                Text::new(
                    format!("Invalid field(s) {list}{first_en}"),
                    format!("Trường không hợp lệ {list}{first_vi}"),
                ),
            )
        }
    }

    /// 422 for a single field.
    pub fn field(field: impl Into<String>, code: impl Into<Cow<'static, str>>, text: Text) -> Self {
        Self::validation(vec![FieldError::new(field, code, text)])
    }

    /// The same error with another top-level code (a 422 whose one field problem is the point).
    pub fn into_coded(mut self, code: impl Into<Cow<'static, str>>) -> Self {
        self.code = code.into();
        self
    }

    /// 401: no valid credentials.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            Text::new("Sign in to continue.", "Vui lòng đăng nhập để tiếp tục."),
        )
    }

    /// 403: signed in, but not allowed to do this.
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            Text::new(
                "You are not allowed to do this.",
                "Bạn không có quyền thực hiện thao tác này.",
            ),
        )
    }

    /// 404 for a named kind of thing (`"listing"`, `"order"`).
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            Text::new(
                format!("The {what} was not found."),
                format!("Không tìm thấy {what}."),
            ),
        )
    }

    /// 409 with its own code.
    pub fn conflict(code: &'static str, text: Text) -> Self {
        Self::new(StatusCode::CONFLICT, code, text)
    }

    /// 503 with its own code: a component this request needs is unavailable.
    pub fn unavailable(code: &'static str, text: Text) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, text)
    }

    /// 500: something unexpected. The cause is logged, never sent.
    pub fn internal(cause: anyhow::Error) -> Self {
        Self {
            cause: Some(Arc::new(cause)),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                Text::new(
                    "Something went wrong on our side.",
                    "Đã có lỗi xảy ra ở phía máy chủ.",
                ),
            )
        }
    }

    /// Attaches the cause, to be logged.
    pub fn with_cause(mut self, cause: anyhow::Error) -> Self {
        self.cause = Some(Arc::new(cause));
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The field errors of a 422.
    pub fn field_errors(&self) -> &[FieldError] {
        &self.errors
    }

    fn body<'a>(&'a self, lang: Lang, request_id: Option<&'a str>) -> ProblemBody<'a> {
        ProblemBody {
            kind: format!("/problems/{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: self.text.get(lang),
            code: &self.code,
            errors: self
                .errors
                .iter()
                .map(|e| ProblemField {
                    field: &e.field,
                    code: &e.code,
                    detail: e.text.get(lang),
                })
                .collect(),
            request_id,
        }
    }

    fn render(&self, lang: Lang, request_id: Option<&str>) -> Response {
        let body = serde_json::to_vec(&self.body(lang, request_id)).unwrap_or_default();
        let mut res = (self.status, body).into_response();
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // A dependency is away: the caller may try again, and when.
            res.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(UNAVAILABLE_RETRY_AFTER_SECS),
            );
        }
        res
    }
}

/// Seconds a 503 asks the caller to wait before trying again (`Retry-After`).
pub const UNAVAILABLE_RETRY_AFTER_SECS: &str = "5";

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.text.en
        )?;
        if let Some(cause) = &self.cause {
            write!(f, " ({cause:#})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// Marks an error as a dependency that cannot be reached now (Redis, for instance): a
/// request that needs it answers 503 `dependency_unavailable` with `Retry-After`, not 500.
/// Attach it with `anyhow::Context::context`.
#[derive(Debug, Clone, Copy)]
pub struct Unavailable(pub &'static str);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is unavailable", self.0)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        if let Some(Unavailable(what)) = e.downcast_ref::<Unavailable>().copied() {
            return Self::unavailable(
                "dependency_unavailable",
                Text::new(
                    format!("{what} is unavailable; try again shortly."),
                    format!("{what} tạm thời không khả dụng; vui lòng thử lại sau."),
                ),
            )
            .with_cause(e);
        }
        Self::internal(e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => Self::unavailable(
                "database_unavailable",
                Text::new(
                    "The database is unavailable; try again shortly.",
                    "Cơ sở dữ liệu tạm thời không khả dụng; vui lòng thử lại sau.",
                ),
            )
            .with_cause(e.into()),
            other => Self::internal(anyhow::Error::new(other).context("database query")),
        }
    }
}

/// The problem document (RFC 9457) plus nongsan's members.
#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<ProblemField<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

#[derive(Serialize)]
struct ProblemField<'a> {
    field: &'a str,
    code: &'a str,
    detail: &'a str,
}

/// The problem document as described in the OpenAPI document.
#[derive(Debug, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemSchema {
    /// A URI reference naming the kind of problem: `/problems/<code>`.
    #[schema(rename = "type")]
    pub kind: String,
    /// The HTTP reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, in the language `Accept-Language` asked for (vi or en).
    pub detail: String,
    /// Stable machine-readable code, e.g. `validation_failed`, `insufficient_stock`.
    pub code: String,
    /// For 422: one entry per invalid field.
    pub errors: Option<Vec<ProblemFieldSchema>>,
    /// The request id, also in the `x-request-id` header.
    pub request_id: Option<String>,
}

/// One invalid field in a problem document.
#[derive(Debug, utoipa::ToSchema)]
#[schema(as = ProblemField)]
pub struct ProblemFieldSchema {
    /// Path of the field, e.g. `lines[0].quantity`.
    pub field: String,
    /// Stable reason code.
    pub code: String,
    /// What is wrong with it.
    pub detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Rendered in the default language here; `problem_layer` re-renders it in the
        // language of the request and logs the cause.
        let mut res = self.render(Lang::Vi, None);
        res.extensions_mut().insert(self);
        res
    }
}

/// The languages the API answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Tiếng Việt: the default.
    Vi,
    /// English.
    En,
}

impl Lang {
    /// Picks the language an `Accept-Language` header prefers among vi and en (RFC 9110
    /// quality values); Vietnamese when neither is asked for.
    pub fn from_accept_language(header: Option<&str>) -> Self {
        let Some(header) = header else {
            return Lang::Vi;
        };
        let mut best: Option<(u16, Lang)> = None;
        for part in header.split(',') {
            let mut it = part.split(';');
            let tag = it.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = it
                .find_map(|p| p.trim().strip_prefix("q="))
                .map(parse_quality)
                .unwrap_or(1000);
            let primary = tag.split('-').next().unwrap_or("");
            let lang = match primary {
                "vi" => Lang::Vi,
                "en" => Lang::En,
                _ => continue,
            };
            if q > 0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
        best.map_or(Lang::Vi, |(_, l)| l)
    }
}

/// Parses an HTTP quality value ("0.8") into thousandths without floating point.
fn parse_quality(q: &str) -> u16 {
    let q = q.trim();
    let (int, frac) = q.split_once('.').unwrap_or((q, ""));
    let int: u16 = int.parse().unwrap_or(0);
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(3).collect();
    (int * 1000 + frac.parse::<u16>().unwrap_or(0)).min(1000)
}

/// Middleware: renders any [`ApiError`] in the request's language with its request id, and
/// logs a 5xx cause once.
pub async fn problem_layer(req: Request, next: Next) -> Response {
    let lang = Lang::from_accept_language(
        req.headers()
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    );
    let request_id = req
        .headers()
        .get(crate::telemetry::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut res = next.run(req).await;
    if let Some(err) = res.extensions_mut().remove::<ApiError>() {
        if err.status.is_server_error() {
            match &err.cause {
                Some(cause) => {
                    tracing::error!(%method, %path, code = %err.code, cause = format!("{cause:#}"), "request failed")
                }
                None => tracing::warn!(%method, %path, code = %err.code, "request failed"),
            }
        }
        let headers = std::mem::take(res.headers_mut());
        let mut rendered = err.render(lang, request_id.as_deref());
        for (name, value) in headers.iter() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                rendered.headers_mut().insert(name.clone(), value.clone());
            }
        }
        return rendered;
    }
    // An extractor's own refusal of a body over the limit (axum's `Bytes`) is plain text.
    if res.status() == StatusCode::PAYLOAD_TOO_LARGE
        && res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            != Some(PROBLEM_JSON)
    {
        return crate::http::payload_too_large().render(lang, request_id.as_deref());
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reason repeated at a field is named once; and no more than the cap are named.
    #[test]
    fn a_problem_names_each_reason_once_and_no_more_than_the_cap() {
        let error =
            |field: &str, code: &'static str| FieldError::new(field, code, Text::new("x", "x"));
        let repeated = ApiError::validation(vec![error("facets", "unknown_facet"); 5_000]);
        assert_eq!(repeated.errors.len(), 1);
        let mixed = ApiError::validation(vec![
            error("lines", "too_many"),
            error("lines", "empty"),
            error("lines", "too_many"),
            error("delivery.street", "too_many"),
        ]);
        let named: Vec<(&str, &str)> = mixed
            .errors
            .iter()
            .map(|e| (e.field.as_str(), &*e.code))
            .collect();
        assert_eq!(
            named,
            [
                ("lines", "too_many"),
                ("lines", "empty"),
                ("delivery.street", "too_many")
            ]
        );
        let many: Vec<FieldError> = (0..500)
            .map(|i| error(&format!("lines[{i}].quantity"), "not_positive"))
            .collect();
        let capped = ApiError::validation(many);
        assert_eq!(capped.errors.len(), MAX_FIELD_ERRORS);
        assert_eq!(capped.errors[0].field, "lines[0].quantity");
        assert!(capped.text.en.len() < 2_000, "{}", capped.text.en);
    }

    #[test]
    fn accept_language_picks_the_preferred_supported_language() {
        assert_eq!(Lang::from_accept_language(None), Lang::Vi);
        assert_eq!(Lang::from_accept_language(Some("en-US,en;q=0.9")), Lang::En);
        assert_eq!(
            Lang::from_accept_language(Some("fr, en;q=0.5, vi;q=0.8")),
            Lang::Vi
        );
        assert_eq!(
            Lang::from_accept_language(Some("vi;q=0.2, en-GB;q=0.7")),
            Lang::En
        );
        assert_eq!(Lang::from_accept_language(Some("de")), Lang::Vi);
        assert_eq!(Lang::from_accept_language(Some("en;q=0")), Lang::Vi);
    }

    #[test]
    fn a_validation_error_names_every_field() {
        let err = ApiError::validation(vec![
            FieldError::new(
                "price",
                "not_positive",
                Text::new("must be above 0", "phải lớn hơn 0"),
            ),
            FieldError::new(
                "unit",
                "unknown",
                Text::new("unknown unit", "đơn vị không tồn tại"),
            ),
        ]);
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = serde_json::to_value(err.body(Lang::En, Some("r1"))).unwrap();
        assert_eq!(body["code"], "validation_failed");
        assert_eq!(body["errors"][0]["field"], "price");
        assert_eq!(body["errors"][1]["field"], "unit");
        assert!(body["detail"].as_str().unwrap().contains("price, unit"));
        assert_eq!(body["request_id"], "r1");
        let vi = serde_json::to_value(err.body(Lang::Vi, None)).unwrap();
        assert_eq!(vi["errors"][0]["detail"], "phải lớn hơn 0");
    }

    #[test]
    fn an_internal_error_never_shows_its_cause() {
        let err = ApiError::internal(anyhow::anyhow!("password=hunter2 leaked"));
        let body = serde_json::to_string(&err.body(Lang::En, None)).unwrap();
        assert!(!body.contains("hunter2"));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
