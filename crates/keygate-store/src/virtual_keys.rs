//! Virtual keys: named routes (targets, budget, limits) that clients call by id or slug.
//!
//! What must stay true: slugs are unique across workspaces among live keys; a delete is soft
//! and frees the slug; every change bumps the key's `rev`.

use async_trait::async_trait;

use crate::{AuditEvent, ChangesPage, Page, Result};

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct VirtualKeyRow {
    /// `vk_…`.
    pub id: String,
    pub workspace: String,
    /// Unique among live virtual keys.
    pub slug: String,
    pub name: String,
    pub note: Option<String>,
    /// Targets, strategy, models, aliases, budget, limits… as JSON (owned by the API layer).
    pub config: String,
    /// `active` or `disabled` (expiry and exhaustion are derived).
    pub status: String,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub created_by: Option<String>,
    pub rev: i64,
    pub deleted_at: Option<i64>,
}

/// Virtual keys. Changes take the audit event to write with them (`None` for keygate's own).
#[async_trait]
pub trait VirtualKeyStore: Send + Sync {
    async fn create_virtual_key(&self, row: &VirtualKeyRow, audit: Option<&AuditEvent>) -> Result<VirtualKeyRow>;

    async fn update_virtual_key(&self, row: &VirtualKeyRow, audit: Option<&AuditEvent>) -> Result<VirtualKeyRow>;

    /// By id (`vk_…`) or slug.
    async fn get_virtual_key(&self, workspace: &str, id_or_slug: &str) -> Result<VirtualKeyRow>;

    async fn list_virtual_keys(&self, workspace: &str, page: Page) -> Result<(Vec<VirtualKeyRow>, i64)>;

    async fn delete_virtual_key(
        &self,
        workspace: &str,
        id: &str,
        now: i64,
        audit: Option<&AuditEvent>,
    ) -> Result<VirtualKeyRow>;

    /// One page of the virtual keys (deleted ones included) changed after `page.since`.
    async fn virtual_keys_changed_since(&self, page: &ChangesPage) -> Result<Vec<VirtualKeyRow>>;
}
