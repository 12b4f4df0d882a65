//! Rate-limit events: the requests keygate refused, kept for the logs.
//!
//! What must stay true: writing one event twice (a retried batch) stores it once.

use async_trait::async_trait;

use crate::Result;

/// One refused request.
#[derive(Clone, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct RateLimitEventRow {
    pub id: String,
    pub workspace: String,
    pub at: i64,
    pub platform_key_id: Option<String>,
    pub virtual_key_id: Option<String>,
    pub provider_key_id: Option<String>,
    pub model: Option<String>,
    /// `RPM`, `RPH`, `RPD`, `TPM`, `TPH`, `TPD`, `BUDGET`…
    pub limit_type: String,
    pub limit_value: i64,
    /// Whose limit: `api_key`, `virtual_key`, `model`, `provider_key`.
    pub scope: String,
}

/// Refused requests.
#[async_trait]
pub trait RateLimitEventStore: Send + Sync {
    async fn insert_rate_limit_events(&self, rows: &[RateLimitEventRow]) -> Result<()>;

    /// The newest events, of one platform key or of the whole workspace.
    async fn list_rate_limit_events(
        &self,
        workspace: &str,
        platform_key_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RateLimitEventRow>>;
}
