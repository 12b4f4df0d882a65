//! Usage records: one metered gateway request each, and the sums read from them.
//!
//! What must stay true: money is integer nano-USD; settling a request twice never counts it
//! twice (a final record replaces only a pending one, status 0); pending records are left out
//! of every sum until settled or reconciled.

use async_trait::async_trait;

use crate::{Flag, Page, Result};

/// One gateway request, metered.
#[derive(Clone, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct UsageRow {
    pub id: String,
    pub workspace: String,
    pub at: i64,
    pub request_id: Option<String>,
    pub platform_key_id: Option<String>,
    pub virtual_key_id: Option<String>,
    pub provider_key_id: Option<String>,
    pub hub: Option<String>,
    pub model: Option<String>,
    /// `chat`, `completions`, `embeddings`, `models`, `passthrough`.
    pub endpoint: String,
    pub status_code: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cost_nano: i64,
    pub latency_ms: i64,
    /// Tokens counted locally because the upstream reported none.
    #[sqlx(try_from = "Flag")]
    pub estimated: bool,
    #[sqlx(try_from = "Flag")]
    pub stream: bool,
    pub error_kind: Option<String>,
}

/// Which usage records to add up.
#[derive(Clone, Debug, Default)]
pub struct UsageFilter {
    pub virtual_key_id: Option<String>,
    pub platform_key_id: Option<String>,
    pub provider_key_id: Option<String>,
    pub model: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// How to group usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageGroup {
    Day,
    Model,
    VirtualKey,
    PlatformKey,
    ProviderKey,
    Hub,
}

/// Sums over usage records.
#[derive(Clone, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct UsageTotals {
    /// The group's key (a day number since the epoch, a model, a key id…); empty for the total.
    /// Read from a `grp` column; the totals of a query without one have no group.
    #[sqlx(rename = "grp", default)]
    pub group: String,
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cost_nano: i64,
    pub estimated: i64,
}

/// Usage records and their sums.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Inserts a batch of usage records. A record with the id of a pending one (status 0)
    /// replaces it; any other id already present is left alone, so settling twice never
    /// double-counts.
    async fn insert_usage(&self, rows: &[UsageRow]) -> Result<()>;

    /// Marks records still pending (a request that reached an upstream when the process died)
    /// as interrupted, with their estimated tokens. Returns how many.
    async fn reconcile_pending_usage(&self, before: i64) -> Result<u64>;

    async fn usage_totals(&self, workspace: &str, filter: &UsageFilter) -> Result<UsageTotals>;

    async fn usage_grouped(
        &self,
        workspace: &str,
        filter: &UsageFilter,
        group: UsageGroup,
        limit: u32,
    ) -> Result<Vec<UsageTotals>>;

    async fn list_usage(&self, workspace: &str, filter: &UsageFilter, page: Page) -> Result<(Vec<UsageRow>, i64)>;
}
