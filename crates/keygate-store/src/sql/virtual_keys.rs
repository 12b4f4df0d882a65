//! Virtual keys on SQL.
//!
//! What must stay true: found by id or slug within one workspace; deletes are soft, so the
//! change feed shows them; every change bumps the key's `rev` and the store revision.

use async_trait::async_trait;

use super::{conflict, db, SqlStore};
use crate::{AuditEvent, ChangesPage, Page, Result, StoreError, VirtualKeyRow, VirtualKeyStore};

const VK_COLS: &str =
    "id, workspace, slug, name, note, config, status, expires_at, created_at, updated_at, created_by, rev, deleted_at";

#[async_trait]
impl VirtualKeyStore for SqlStore {
    async fn create_virtual_key(&self, row: &VirtualKeyRow, audit_event: Option<&AuditEvent>) -> Result<VirtualKeyRow> {
        let mut tx = self.begin().await?;
        let rev = self.next_rev(&mut tx).await?;
        let stored = sqlx::query_as::<_, VirtualKeyRow>(&self.q(&format!(
            "INSERT INTO virtual_keys ({VK_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL) RETURNING {VK_COLS}"
        )))
        .bind(&row.id)
        .bind(&row.workspace)
        .bind(&row.slug)
        .bind(&row.name)
        .bind(&row.note)
        .bind(&row.config)
        .bind(&row.status)
        .bind(row.expires_at)
        .bind(row.created_at)
        .bind(row.updated_at)
        .bind(&row.created_by)
        .bind(rev)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)
        .map_err(conflict(format!("a virtual key with slug {} already exists", row.slug)))?;
        self.audit_in(&mut tx, audit_event).await?;
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    async fn update_virtual_key(&self, row: &VirtualKeyRow, audit_event: Option<&AuditEvent>) -> Result<VirtualKeyRow> {
        let mut tx = self.begin().await?;
        let rev = self.next_rev(&mut tx).await?;
        let stored = sqlx::query_as::<_, VirtualKeyRow>(&self.q(&format!(
            "UPDATE virtual_keys SET slug = $1, name = $2, note = $3, config = $4, status = $5, expires_at = $6,
                updated_at = $7, rev = $8
             WHERE workspace = $9 AND id = $10 AND deleted_at IS NULL RETURNING {VK_COLS}"
        )))
        .bind(&row.slug)
        .bind(&row.name)
        .bind(&row.note)
        .bind(&row.config)
        .bind(&row.status)
        .bind(row.expires_at)
        .bind(row.updated_at)
        .bind(rev)
        .bind(&row.workspace)
        .bind(&row.id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)
        .map_err(conflict(format!("a virtual key with slug {} already exists", row.slug)))?
        .ok_or(StoreError::NotFound)?;
        self.audit_in(&mut tx, audit_event).await?;
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    async fn get_virtual_key(&self, workspace: &str, id_or_slug: &str) -> Result<VirtualKeyRow> {
        let row = sqlx::query_as::<_, VirtualKeyRow>(&self.q(&format!(
            "SELECT {VK_COLS} FROM virtual_keys WHERE workspace = $1 AND (id = $2 OR slug = $2) AND deleted_at IS NULL"
        )))
        .bind(workspace)
        .bind(id_or_slug)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
        Ok(row)
    }

    async fn list_virtual_keys(&self, workspace: &str, page: Page) -> Result<(Vec<VirtualKeyRow>, i64)> {
        let rows = sqlx::query_as::<_, VirtualKeyRow>(&self.q(&format!(
            "SELECT {VK_COLS} FROM virtual_keys WHERE workspace = $1 AND deleted_at IS NULL
             ORDER BY created_at, id LIMIT $2 OFFSET $3"
        )))
        .bind(workspace)
        .bind(i64::from(page.limit))
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let total = sqlx::query_scalar::<_, i64>(
            &self.q("SELECT COUNT(*) FROM virtual_keys WHERE workspace = $1 AND deleted_at IS NULL"),
        )
        .bind(workspace)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok((rows, total))
    }

    async fn delete_virtual_key(
        &self,
        workspace: &str,
        id: &str,
        now: i64,
        audit_event: Option<&AuditEvent>,
    ) -> Result<VirtualKeyRow> {
        let mut tx = self.begin().await?;
        let rev = self.next_rev(&mut tx).await?;
        let row = sqlx::query_as::<_, VirtualKeyRow>(&self.q(&format!(
            "UPDATE virtual_keys SET deleted_at = $1, updated_at = $2, rev = $3
             WHERE workspace = $4 AND id = $5 AND deleted_at IS NULL RETURNING {VK_COLS}"
        )))
        .bind(now)
        .bind(now)
        .bind(rev)
        .bind(workspace)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
        self.audit_in(&mut tx, audit_event).await?;
        tx.commit().await.map_err(db)?;
        Ok(row)
    }

    async fn virtual_keys_changed_since(&self, page: &ChangesPage) -> Result<Vec<VirtualKeyRow>> {
        self.changes_page(&format!("SELECT {VK_COLS} FROM virtual_keys"), page)
            .await
    }
}
