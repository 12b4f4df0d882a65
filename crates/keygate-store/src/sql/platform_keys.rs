//! Platform keys on SQL.
//!
//! What must stay true: queries are scoped by workspace (except the count of all keys and the
//! batch of last-use times); deletes are soft, so the change feed shows them; last use is not
//! a change and bumps no revision.

use async_trait::async_trait;

use super::{bool_i, db, SqlStore};
use crate::{AuditEvent, ChangesPage, Page, PlatformKeyRow, PlatformKeyStore, Result, StoreError};

const PLK_COLS: &str = "id, workspace, key_type, org_admin, description, key_hash, last6, prev_key_hash, prev_valid_until, settings, expires_at, created_at, updated_at, last_used_at, created_by, rev, deleted_at";

#[async_trait]
impl PlatformKeyStore for SqlStore {
    async fn create_platform_key(
        &self,
        row: &PlatformKeyRow,
        audit_event: Option<&AuditEvent>,
    ) -> Result<PlatformKeyRow> {
        let mut tx = self.begin().await?;
        let rev = self.next_rev(&mut tx).await?;
        let stored = sqlx::query_as::<_, PlatformKeyRow>(&self.q(&format!(
            "INSERT INTO platform_keys ({PLK_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, NULL) RETURNING {PLK_COLS}"
        )))
        .bind(&row.id)
        .bind(&row.workspace)
        .bind(&row.key_type)
        .bind(bool_i(row.org_admin))
        .bind(&row.description)
        .bind(&row.key_hash)
        .bind(&row.last6)
        .bind(&row.prev_key_hash)
        .bind(row.prev_valid_until)
        .bind(&row.settings)
        .bind(row.expires_at)
        .bind(row.created_at)
        .bind(row.updated_at)
        .bind(row.last_used_at)
        .bind(&row.created_by)
        .bind(rev)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        self.audit_in(&mut tx, audit_event).await?;
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    async fn update_platform_key(
        &self,
        row: &PlatformKeyRow,
        audit_event: Option<&AuditEvent>,
    ) -> Result<PlatformKeyRow> {
        let mut tx = self.begin().await?;
        let rev = self.next_rev(&mut tx).await?;
        let stored = sqlx::query_as::<_, PlatformKeyRow>(&self.q(&format!(
            "UPDATE platform_keys SET key_type = $1, org_admin = $2, description = $3, key_hash = $4, last6 = $5,
                prev_key_hash = $6, prev_valid_until = $7, settings = $8, expires_at = $9, updated_at = $10, rev = $11
             WHERE workspace = $12 AND id = $13 AND deleted_at IS NULL RETURNING {PLK_COLS}"
        )))
        .bind(&row.key_type)
        .bind(bool_i(row.org_admin))
        .bind(&row.description)
        .bind(&row.key_hash)
        .bind(&row.last6)
        .bind(&row.prev_key_hash)
        .bind(row.prev_valid_until)
        .bind(&row.settings)
        .bind(row.expires_at)
        .bind(row.updated_at)
        .bind(rev)
        .bind(&row.workspace)
        .bind(&row.id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
        self.audit_in(&mut tx, audit_event).await?;
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    async fn get_platform_key(&self, workspace: &str, id: &str) -> Result<PlatformKeyRow> {
        let row = sqlx::query_as::<_, PlatformKeyRow>(&self.q(&format!(
            "SELECT {PLK_COLS} FROM platform_keys WHERE workspace = $1 AND id = $2 AND deleted_at IS NULL"
        )))
        .bind(workspace)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
        Ok(row)
    }

    async fn get_platform_key_any(&self, workspace: &str, id: &str) -> Result<PlatformKeyRow> {
        let row = sqlx::query_as::<_, PlatformKeyRow>(&self.q(&format!(
            "SELECT {PLK_COLS} FROM platform_keys WHERE workspace = $1 AND id = $2"
        )))
        .bind(workspace)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
        Ok(row)
    }

    async fn list_platform_keys(&self, workspace: &str, page: Page) -> Result<(Vec<PlatformKeyRow>, i64)> {
        let rows = sqlx::query_as::<_, PlatformKeyRow>(&self.q(&format!(
            "SELECT {PLK_COLS} FROM platform_keys WHERE workspace = $1 AND deleted_at IS NULL
             ORDER BY created_at, id LIMIT $2 OFFSET $3"
        )))
        .bind(workspace)
        .bind(i64::from(page.limit))
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let total = sqlx::query_scalar::<_, i64>(
            &self.q("SELECT COUNT(*) FROM platform_keys WHERE workspace = $1 AND deleted_at IS NULL"),
        )
        .bind(workspace)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok((rows, total))
    }

    async fn count_platform_keys(&self) -> Result<i64> {
        sqlx::query_scalar::<_, i64>(&self.q("SELECT COUNT(*) FROM platform_keys"))
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    async fn count_live_platform_keys(&self, workspace: &str) -> Result<i64> {
        sqlx::query_scalar::<_, i64>(
            &self.q("SELECT COUNT(*) FROM platform_keys WHERE workspace = $1 AND deleted_at IS NULL"),
        )
        .bind(workspace)
        .fetch_one(&self.pool)
        .await
        .map_err(db)
    }

    async fn delete_platform_key(
        &self,
        workspace: &str,
        id: &str,
        now: i64,
        audit_event: Option<&AuditEvent>,
    ) -> Result<PlatformKeyRow> {
        let mut tx = self.begin().await?;
        let rev = self.next_rev(&mut tx).await?;
        let row = sqlx::query_as::<_, PlatformKeyRow>(&self.q(&format!(
            "UPDATE platform_keys SET deleted_at = $1, updated_at = $2, rev = $3
             WHERE workspace = $4 AND id = $5 AND deleted_at IS NULL RETURNING {PLK_COLS}"
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

    async fn platform_keys_changed_since(&self, page: &ChangesPage) -> Result<Vec<PlatformKeyRow>> {
        self.changes_page(&format!("SELECT {PLK_COLS} FROM platform_keys"), page)
            .await
    }

    async fn touch_platform_keys(&self, used: &[(String, i64)]) -> Result<()> {
        if used.is_empty() {
            return Ok(());
        }
        // Last use is not a change of the key: no revision bump, so caches are not reloaded.
        let mut tx = self.begin().await?;
        for (id, at) in used {
            sqlx::query(&self.q(
                "UPDATE platform_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
            ))
            .bind(*at)
            .bind(id)
            .bind(*at)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }
}
