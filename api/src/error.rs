//! The api's one error type. Every error response is `{"error": {"code", "message"}}` with a
//! stable code; the user's fault is a 4xx with a message they can act on, ours is a 500 whose
//! details went to the log when the error was created (never in `IntoResponse`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gallery_schema::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Seconds for `Retry-After` (429); a 503 always says 1.
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// `Retry-After` of a 503 (NATS or storage briefly unavailable), in seconds.
pub const RETRY_AFTER_SECS: &str = "1";

/// The HTTP status for each code.
pub fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidRequest | ErrorCode::InvalidProjectId => StatusCode::BAD_REQUEST,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::LinkExpired | ErrorCode::UploadExpired => StatusCode::GONE,
        ErrorCode::BadSignature => StatusCode::FORBIDDEN,
        ErrorCode::UploadTooLarge | ErrorCode::ImageTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::UnsupportedFormat => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::CorruptImage
        | ErrorCode::ProcessingCrashed
        | ErrorCode::ProcessingTimeout
        // (Codes of imports that ended in `error`, not of HTTP answers.)
        | ErrorCode::FetchRefused
        | ErrorCode::FetchFailed => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::RetriesExhausted | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: status_for(code),
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// With `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// Our fault: logs the cause here and tells the client only that it happened.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(%err, "{context}");
        Self::new(ErrorCode::Internal, "internal error; it has been logged")
    }

    /// NATS or storage is unreachable: 503, so clients and load balancers retry elsewhere.
    pub fn unavailable(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::warn!(%err, "{context}");
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: ErrorCode::Internal,
            message: format!("{context}: temporarily unavailable, retry later"),
            retry_after: None,
        }
    }
}

impl From<gallery_schema::IdError> for ApiError {
    fn from(err: gallery_schema::IdError) -> Self {
        match err {
            gallery_schema::IdError::InvalidProjectId => {
                Self::new(ErrorCode::InvalidProjectId, err.to_string())
            }
            gallery_schema::IdError::InvalidImageId => Self::invalid(err.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = crate::view::ErrorBody {
            error: crate::view::ErrorDetail {
                code: self.code.as_str(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"gallery\""),
            );
        }
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        } else if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // A NATS leader election or a storage blip: worth retrying in a moment.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_faults_are_4xx_and_ours_5xx() {
        for code in ErrorCode::ALL {
            let status = status_for(code);
            let ours = matches!(code, ErrorCode::Internal | ErrorCode::RetriesExhausted);
            assert_eq!(status.is_server_error(), ours, "{code}");
            assert!(status.is_client_error() || status.is_server_error());
        }
    }

    #[test]
    fn unavailable_says_when_to_retry() {
        let response = ApiError::unavailable("recording", "no responders").into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], RETRY_AFTER_SECS);
    }
}
