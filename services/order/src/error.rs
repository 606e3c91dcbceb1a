//! The order service's errors, and how each becomes a problem+json answer.

use nongsan_shared::{ApiError, FieldError, Problems, Text, client::CallError};

/// What can go wrong in the order service.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The request names fields that are wrong.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// Not there, or not the caller's to see.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The caller may not do this.
    #[error("forbidden")]
    Forbidden,
    /// The action is not allowed from the order's status.
    #[error("invalid transition from {0}")]
    InvalidTransition(String),
    /// The same idempotency key was used for another request.
    #[error("idempotency key reused")]
    KeyReused,
    /// Another request with this key is still being served.
    #[error("idempotency key in use")]
    KeyInUse,
    /// A conflict with its own code.
    #[error("{0}")]
    Conflict(&'static str, Text),
    /// The payment could not be opened.
    #[error("payment unavailable")]
    PaymentUnavailable(String),
    /// Another service answered or failed.
    #[error(transparent)]
    Peer(#[from] CallError),
    /// The listing service's answer to the reservation was lost (no answer in time, a 5xx,
    /// a connection cut): the stock may be held under the checkout's id. The key is left to
    /// the next request with it, which reserves under the same id.
    #[error("the reservation's outcome is not known: {0}")]
    ReservationUnknown(CallError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl OrderError {
    /// This request's checkout stalled past the minute and its key was taken over, and given
    /// back or claimed for another checkout meanwhile: it is kept under no key, so it is not
    /// ordered.
    pub fn taken_over() -> Self {
        Self::Conflict(
            "idempotency_key_in_use",
            Text::new(
                "This checkout took too long: another request with its Idempotency-Key took it over; nothing was ordered by this one.",
                "Lượt thanh toán này quá lâu: một yêu cầu khác với cùng Idempotency-Key đã tiếp quản; yêu cầu này không tạo đơn nào.",
            ),
        )
    }
}

impl From<Problems> for OrderError {
    fn from(p: Problems) -> Self {
        Self::Invalid(p.into_errors())
    }
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::Invalid(errors) => ApiError::validation(errors),
            OrderError::NotFound(what) => ApiError::not_found(what),
            OrderError::Forbidden => ApiError::forbidden(),
            OrderError::InvalidTransition(from) => ApiError::conflict(
                "invalid_transition",
                Text::new(
                    format!("This cannot be done to an order that is {from}."),
                    format!("Không thể thực hiện với đơn hàng đang ở trạng thái {from}."),
                ),
            ),
            OrderError::KeyReused => ApiError::field(
                "Idempotency-Key",
                "idempotency_key_reused",
                Text::new(
                    "was used for a different checkout request",
                    "đã được dùng cho một yêu cầu thanh toán khác",
                ),
            )
            .into_coded("idempotency_key_reused"),
            OrderError::KeyInUse => ApiError::conflict(
                "idempotency_key_in_use",
                Text::new(
                    "A request with this Idempotency-Key is still being served; retry shortly.",
                    "Yêu cầu với Idempotency-Key này đang được xử lý; vui lòng thử lại sau.",
                ),
            ),
            OrderError::Conflict(code, text) => ApiError::conflict(code, text),
            OrderError::PaymentUnavailable(why) => ApiError::unavailable(
                "payment_unavailable",
                Text::new(
                    "The payment could not be opened; nothing was ordered. Try again shortly.",
                    "Không mở được thanh toán; chưa có đơn nào được tạo. Vui lòng thử lại sau.",
                ),
            )
            .with_cause(anyhow::anyhow!(why)),
            OrderError::Peer(e) => e.into(),
            OrderError::ReservationUnknown(e) => ApiError::unavailable(
                "dependency_unavailable",
                Text::new(
                    "The listing service did not answer; nothing was ordered yet. Send the checkout again with the same Idempotency-Key.",
                    "Dịch vụ tin đăng không phản hồi; chưa có đơn nào được tạo. Hãy gửi lại lượt thanh toán với cùng Idempotency-Key.",
                ),
            )
            .with_cause(e.into()),
            OrderError::Db(e) => e.into(),
            OrderError::Other(e) => ApiError::from(e),
        }
    }
}

impl axum::response::IntoResponse for OrderError {
    fn into_response(self) -> axum::response::Response {
        ApiError::from(self).into_response()
    }
}

/// The result of an order-service operation.
pub type Result<T, E = OrderError> = std::result::Result<T, E>;
