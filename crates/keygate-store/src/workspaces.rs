//! Workspaces: the tenants every other record belongs to.
//!
//! What must stay true: a workspace that still holds live keys cannot be deleted; the
//! `default` workspace exists from the first migration on.

use async_trait::async_trait;

use crate::{AuditEvent, Page, Result};

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct WorkspaceRow {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Workspaces. Changes take the audit event to write with them (`None` for keygate's own).
#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    async fn create_workspace(&self, row: &WorkspaceRow, audit: Option<&AuditEvent>) -> Result<()>;

    async fn list_workspaces(&self, page: Page) -> Result<(Vec<WorkspaceRow>, i64)>;

    async fn get_workspace(&self, id: &str) -> Result<WorkspaceRow>;

    async fn rename_workspace(
        &self,
        id: &str,
        name: &str,
        now: i64,
        audit: Option<&AuditEvent>,
    ) -> Result<WorkspaceRow>;

    /// Deletes a workspace that holds no live records.
    async fn delete_workspace(&self, id: &str, audit: Option<&AuditEvent>) -> Result<()>;
}
