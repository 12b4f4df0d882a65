//! The core's one error type. Services say what went wrong in the domain's words; the API maps
//! each kind to an HTTP status and body in one place (`keygate_api::error`), the gateway to the
//! OpenAI error shape. No secret and no stored value ever enters a message.

use keygate_store::StoreError;

/// Why a service refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// The input is not acceptable (400).
    #[error("{0}")]
    Invalid(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Nothing of that name or id in the caller's workspace (404).
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with what is stored (409).
    #[error("{0}")]
    Conflict(String),
    /// A limit refused the request: a rate limit (429) or a budget (402), with the seconds after
    /// which it may fit.
    #[error("{message}")]
    Limited {
        budget: bool,
        message: String,
        retry_after: Option<u64>,
    },
    /// A dependency (store, shared counters) cannot answer now, or a key's stored record cannot
    /// be read (503).
    #[error("{0}")]
    Unavailable(String),
    /// A bug: something that cannot happen did (500).
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => CoreError::NotFound("not found".into()),
            StoreError::Conflict(m) => CoreError::Conflict(m),
            StoreError::Concurrent => CoreError::Conflict("the record changed concurrently; retry".into()),
            other => {
                tracing::error!(error = %other, "store error");
                CoreError::Unavailable("the store is unavailable; try again".into())
            }
        }
    }
}

pub type CoreResult<T> = Result<T, CoreError>;
