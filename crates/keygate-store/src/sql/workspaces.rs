//! Workspaces on SQL.
//!
//! What must stay true: a workspace holding live provider, platform or virtual keys is not
//! deleted (checked in the deleting transaction); every change bumps the revision and writes
//! its audit event in the same transaction.

use async_trait::async_trait;

use super::{conflict, db, SqlStore};
use crate::{AuditEvent, Page, Result, StoreError, WorkspaceRow, WorkspaceStore};

#[async_trait]
impl WorkspaceStore for SqlStore {
    async fn create_workspace(&self, row: &WorkspaceRow, audit_event: Option<&AuditEvent>) -> Result<()> {
        let mut tx = self.begin().await?;
        let rev = self.next_rev(&mut tx).await?;
        sqlx::query(&self.q(
            "INSERT INTO workspaces (id, workspace, name, created_at, updated_at, rev) VALUES ($1, $2, $3, $4, $5, $6)",
        ))
        .bind(&row.id)
        .bind(&row.id)
        .bind(&row.name)
        .bind(row.created_at)
        .bind(row.updated_at)
        .bind(rev)
        .execute(&mut *tx)
        .await
        .map_err(db)
        .map_err(conflict(format!("a workspace with id {} already exists", row.id)))?;
        self.audit_in(&mut tx, audit_event).await?;
        tx.commit().await.map_err(db)
    }

    async fn list_workspaces(&self, page: Page) -> Result<(Vec<WorkspaceRow>, i64)> {
        let rows =
            sqlx::query_as::<_, WorkspaceRow>(&self.q(
                "SELECT id, name, created_at, updated_at FROM workspaces ORDER BY created_at, id LIMIT $1 OFFSET $2",
            ))
            .bind(i64::from(page.limit))
            .bind(page.offset())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let total = sqlx::query_scalar::<_, i64>(&self.q("SELECT COUNT(*) FROM workspaces"))
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok((rows, total))
    }

    async fn get_workspace(&self, id: &str) -> Result<WorkspaceRow> {
        let row = sqlx::query_as::<_, WorkspaceRow>(
            &self.q("SELECT id, name, created_at, updated_at FROM workspaces WHERE id = $1"),
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
        Ok(row)
    }

    async fn rename_workspace(
        &self,
        id: &str,
        name: &str,
        now: i64,
        audit_event: Option<&AuditEvent>,
    ) -> Result<WorkspaceRow> {
        let mut tx = self.begin().await?;
        let rev = self.next_rev(&mut tx).await?;
        let row = sqlx::query_as::<_, WorkspaceRow>(&self.q(
            "UPDATE workspaces SET name = $1, updated_at = $2, rev = $3 WHERE id = $4 RETURNING id, name, created_at, updated_at",
        ))
        .bind(name)
        .bind(now)
        .bind(rev)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
        self.audit_in(&mut tx, audit_event).await?;
        tx.commit().await.map_err(db)?;
        Ok(row)
    }

    async fn delete_workspace(&self, id: &str, audit_event: Option<&AuditEvent>) -> Result<()> {
        let mut tx = self.begin().await?;
        self.next_rev(&mut tx).await?;
        for table in ["provider_keys", "platform_keys", "virtual_keys"] {
            let live = sqlx::query_scalar::<_, i64>(&self.q(&format!(
                "SELECT COUNT(*) FROM {table} WHERE workspace = $1 AND deleted_at IS NULL"
            )))
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            if live > 0 {
                return Err(StoreError::Conflict(format!(
                    "the workspace still holds {live} live {}",
                    table.replace('_', " ")
                )));
            }
        }
        let done = sqlx::query(&self.q("DELETE FROM workspaces WHERE id = $1"))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.audit_in(&mut tx, audit_event).await?;
        tx.commit().await.map_err(db)
    }
}
