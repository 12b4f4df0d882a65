//! The audit log: one event per change made through the API, CLI or UI.
//!
//! What must stay true: an event never carries a secret; a change made through the API writes
//! its event in the change's own transaction (a failed change leaves no event).

use async_trait::async_trait;

use crate::{Page, Result};

/// One change made through the API, CLI or UI. Never carries a secret.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEvent {
    pub id: String,
    pub workspace: String,
    pub at: i64,
    /// The platform key that acted, when one did.
    pub actor_key_id: Option<String>,
    /// `api-key`, `cli`, `admin-key-command`, `system`…
    pub actor: String,
    /// e.g. `provider_key.create`.
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub request_id: Option<String>,
    /// Extra non-secret facts as JSON.
    pub details: String,
}

/// Filters for reading the audit log.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub target_id: Option<String>,
    pub actor_key_id: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// The audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append_audit(&self, event: &AuditEvent) -> Result<()>;

    async fn list_audit(&self, workspace: &str, filter: &AuditFilter, page: Page) -> Result<(Vec<AuditEvent>, i64)>;
}
