//! The one place errors become HTTP responses: status, an OpenAI-shaped JSON body
//! `{"error": {"message", "type", "code"}}` and a small fixed kind for metrics. No secret
//! and no raw upstream body ever enters a message.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keygate_core::CoreError;
use keygate_store::StoreError;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Machine-readable code, e.g. `invalid_api_key`.
    pub code: &'static str,
    pub message: String,
    /// Seconds, sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_api_key", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// The OpenAI error `type` for this status.
    pub fn error_type(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 404 | 409 | 413 | 415 | 422 => "invalid_request_error",
            401 => "authentication_error",
            402 => "insufficient_quota",
            403 => "permission_error",
            429 => "rate_limit_error",
            _ => "server_error",
        }
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.error_type(),
                "param": null,
                "code": self.code,
            }
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
        }
        if self.status.is_server_error() {
            // Clients that retry 5xx (openai, portkey) must not replay a request keygate refused.
            resp.headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
            // The Portkey SDK retries a 5xx unless one of its own headers is present.
            resp.headers_mut()
                .insert("x-portkey-request-id", HeaderValue::from_static("keygate"));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("not found"),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Concurrent => ApiError::conflict("the record changed concurrently; retry"),
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::unavailable("the store is unavailable; try again")
            }
        }
    }
}

/// The one mapping of the core's errors to HTTP.
impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Invalid(m) => ApiError::bad_request(m),
            CoreError::Forbidden(m) => ApiError::forbidden(m),
            CoreError::NotFound(m) => ApiError::not_found(m),
            CoreError::Conflict(m) => ApiError::conflict(m),
            CoreError::Limited {
                budget,
                message,
                retry_after,
            } => {
                let mut e = if budget {
                    ApiError::new(StatusCode::PAYMENT_REQUIRED, "budget_exceeded", message)
                } else {
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded", message)
                };
                e.retry_after = retry_after;
                e
            }
            CoreError::Unavailable(m) => ApiError::unavailable(m),
            CoreError::Internal(m) => ApiError::internal(m),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
