//! Provider keys: the upstream credentials keygate injects, with their public settings. The
//! secret itself is a sealed [`SecretRow`](crate::SecretRow) owned by the key.
//!
//! What must stay true: names are unique per workspace among live keys; a delete is soft (the
//! row stays, with `deleted_at`, so caches see it go) and shreds the key's secrets in the same
//! transaction; every change bumps the key's `rev`.

use async_trait::async_trait;

use crate::{AuditEvent, ChangesPage, Flag, Page, Result, SecretRow};

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ProviderKeyRow {
    pub id: String,
    pub workspace: String,
    pub name: String,
    pub hub: String,
    pub base_url: Option<String>,
    /// Public hub settings as JSON.
    pub hub_settings: String,
    pub rate_limit_per_interval: Option<i64>,
    pub rate_limit_interval: Option<i64>,
    #[sqlx(try_from = "Flag")]
    pub private: bool,
    pub secret_version: i64,
    pub secret_hint: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    pub created_by: Option<String>,
    pub rev: i64,
    pub deleted_at: Option<i64>,
}

/// Provider keys. Changes take the audit event to write with them (`None` for keygate's own).
#[async_trait]
pub trait ProviderKeyStore: Send + Sync {
    async fn create_provider_key(
        &self,
        row: &ProviderKeyRow,
        secrets: &[SecretRow],
        audit: Option<&AuditEvent>,
    ) -> Result<ProviderKeyRow>;

    /// Updates every column but the id and workspace. New secret rows are inserted; the
    /// secrets of versions in `expire_versions` get `expires_at = grace_until` (or are deleted
    /// when `grace_until` is `None`).
    async fn update_provider_key(
        &self,
        row: &ProviderKeyRow,
        new_secrets: &[SecretRow],
        expire_versions: &[i64],
        grace_until: Option<i64>,
        audit: Option<&AuditEvent>,
    ) -> Result<ProviderKeyRow>;

    async fn get_provider_key(&self, workspace: &str, id: &str) -> Result<ProviderKeyRow>;

    async fn get_provider_key_by_name(&self, workspace: &str, name: &str) -> Result<ProviderKeyRow>;

    async fn list_provider_keys(&self, workspace: &str, page: Page) -> Result<(Vec<ProviderKeyRow>, i64)>;

    /// Soft-deletes the key and deletes its secrets.
    async fn delete_provider_key(
        &self,
        workspace: &str,
        id: &str,
        now: i64,
        audit: Option<&AuditEvent>,
    ) -> Result<ProviderKeyRow>;

    /// One page of the provider keys (deleted ones included) changed after `page.since`.
    async fn provider_keys_changed_since(&self, page: &ChangesPage) -> Result<Vec<ProviderKeyRow>>;
}
