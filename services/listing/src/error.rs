//! The listing service's errors, and how each becomes a problem+json answer.

use axum::http::StatusCode;
use nongsan_shared::{ApiError, FieldError, ListingId, Quantity, Text};

/// What can go wrong in the listing service.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    /// The request names fields that are wrong.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// A thing does not exist (or the caller may not know it does).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The caller may not do this.
    #[error("forbidden")]
    Forbidden,
    /// Not enough available stock for a listing.
    #[error("insufficient stock for {listing}")]
    InsufficientStock {
        /// The listing.
        listing: ListingId,
        /// What is available now.
        available: Quantity,
    },
    /// A conflict with its own code.
    #[error("{code}")]
    Conflict {
        /// Stable code.
        code: &'static str,
        /// What happened.
        text: Text,
    },
    /// Too many attempts; try again after the given seconds.
    #[error("too many attempts")]
    TooManyAttempts(u64),
    /// Wrong phone or password.
    #[error("bad credentials")]
    BadCredentials,
    /// The access token's session has ended (signed out, refresh token reused, role changed).
    #[error("session ended")]
    SessionEnded,
    /// Five wrong activation codes: the code is spent.
    #[error("activation locked")]
    ActivationLocked,
    /// Too many password hashes are being computed; try again in a moment.
    #[error("busy")]
    Busy,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// Anything else unexpected.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl ListingError {
    /// A 409 with its own code.
    pub fn conflict(code: &'static str, en: impl Into<String>, vi: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            text: Text::new(en, vi),
        }
    }

    /// A 422 for one field.
    pub fn field(field: impl Into<String>, reason: nongsan_shared::invalid::Invalid) -> Self {
        Self::Invalid(vec![reason.at(field)])
    }
}

impl From<ListingError> for ApiError {
    fn from(e: ListingError) -> Self {
        match e {
            ListingError::Invalid(errors) => ApiError::validation(errors),
            ListingError::NotFound(what) => ApiError::not_found(what),
            ListingError::Forbidden => ApiError::forbidden(),
            ListingError::InsufficientStock { listing, available } => ApiError::conflict(
                "insufficient_stock",
                Text::new(
                    format!("Not enough stock for listing {listing}: {available} available."),
                    format!("Không đủ hàng cho tin {listing}: còn {available}."),
                ),
            ),
            ListingError::Conflict { code, text } => ApiError::conflict(code, text),
            ListingError::TooManyAttempts(secs) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                Text::new(
                    format!("Too many attempts; try again in {secs} seconds."),
                    format!("Thử quá nhiều lần; vui lòng thử lại sau {secs} giây."),
                ),
            ),
            ListingError::ActivationLocked => ApiError::new(
                StatusCode::FORBIDDEN,
                "activation_locked",
                Text::new(
                    "Too many wrong codes: this code no longer works; ask your helper for a new one.",
                    "Nhập sai mã quá nhiều lần: mã này không còn dùng được; hãy nhờ người hỗ trợ cấp mã mới.",
                ),
            ),
            ListingError::Busy => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                Text::new(
                    "The service is busy; try again in a moment.",
                    "Hệ thống đang bận; vui lòng thử lại sau giây lát.",
                ),
            ),
            ListingError::BadCredentials => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_credentials",
                Text::new(
                    "Wrong phone number or password.",
                    "Sai số điện thoại hoặc mật khẩu.",
                ),
            ),
            ListingError::SessionEnded => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "session_ended",
                Text::new(
                    "This session has ended; sign in again.",
                    "Phiên đăng nhập đã kết thúc; vui lòng đăng nhập lại.",
                ),
            ),
            ListingError::Db(e) => e.into(),
            ListingError::Other(e) => ApiError::from(e),
        }
    }
}

impl axum::response::IntoResponse for ListingError {
    fn into_response(self) -> axum::response::Response {
        let retry = match &self {
            ListingError::TooManyAttempts(secs) => Some(*secs),
            ListingError::Busy => Some(1),
            _ => None,
        };
        let mut res = ApiError::from(self).into_response();
        if let Some(secs) = retry
            && let Ok(v) = secs.to_string().parse()
        {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        res
    }
}

/// The result of a listing-service operation.
pub type Result<T, E = ListingError> = std::result::Result<T, E>;

/// The field-error collector, shared by every service; `p.finish()?` fails with a 422.
pub use nongsan_shared::Problems;

impl From<Problems> for ListingError {
    fn from(p: Problems) -> Self {
        Self::Invalid(p.into_errors())
    }
}
