//! Platform keys: the keys clients present to keygate (ADMIN or INFERENCE), stored as hashes.
//!
//! What must stay true: only hashes are stored, and `Debug` shows no hash; a hash is unique;
//! a delete is soft so caches see it; recording last use is not a change (no revision bump,
//! so it never reloads caches).

use async_trait::async_trait;

use crate::{AuditEvent, ChangesPage, Flag, Page, Result};

#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PlatformKeyRow {
    pub id: String,
    pub workspace: String,
    pub key_type: String,
    /// May act on every workspace.
    #[sqlx(try_from = "Flag")]
    pub org_admin: bool,
    pub description: String,
    pub key_hash: Vec<u8>,
    pub last6: String,
    /// The hash of the secret before the last rotation, valid until `prev_valid_until`.
    pub prev_key_hash: Option<Vec<u8>>,
    pub prev_valid_until: Option<i64>,
    /// Limits and policy as JSON (owned by the API layer).
    pub settings: String,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    pub created_by: Option<String>,
    pub rev: i64,
    pub deleted_at: Option<i64>,
}

impl std::fmt::Debug for PlatformKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformKeyRow")
            .field("id", &self.id)
            .field("workspace", &self.workspace)
            .field("key_type", &self.key_type)
            .field("org_admin", &self.org_admin)
            .field("last6", &self.last6)
            .field("rev", &self.rev)
            .field("deleted_at", &self.deleted_at)
            .finish_non_exhaustive()
    }
}

/// Platform keys. Changes take the audit event to write with them (`None` for keygate's own).
#[async_trait]
pub trait PlatformKeyStore: Send + Sync {
    async fn create_platform_key(&self, row: &PlatformKeyRow, audit: Option<&AuditEvent>) -> Result<PlatformKeyRow>;

    async fn update_platform_key(&self, row: &PlatformKeyRow, audit: Option<&AuditEvent>) -> Result<PlatformKeyRow>;

    async fn get_platform_key(&self, workspace: &str, id: &str) -> Result<PlatformKeyRow>;

    /// A platform key by id, deleted or not (for idempotent deletes).
    async fn get_platform_key_any(&self, workspace: &str, id: &str) -> Result<PlatformKeyRow>;

    async fn list_platform_keys(&self, workspace: &str, page: Page) -> Result<(Vec<PlatformKeyRow>, i64)>;

    async fn count_platform_keys(&self) -> Result<i64>;

    /// Live platform keys of a workspace.
    async fn count_live_platform_keys(&self, workspace: &str) -> Result<i64>;

    async fn delete_platform_key(
        &self,
        workspace: &str,
        id: &str,
        now: i64,
        audit: Option<&AuditEvent>,
    ) -> Result<PlatformKeyRow>;

    /// One page of the platform keys (deleted ones included) changed after `page.since`.
    async fn platform_keys_changed_since(&self, page: &ChangesPage) -> Result<Vec<PlatformKeyRow>>;

    /// Records last use of keys in one batch (off the hot path).
    async fn touch_platform_keys(&self, used: &[(String, i64)]) -> Result<()>;
}
