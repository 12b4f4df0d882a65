//! Provider keys on SQL, with the secrets they own.
//!
//! What must stay true: a key and its secrets change in one transaction (a delete shreds them,
//! a rotation keeps the old version until its grace period ends); queries are scoped by
//! workspace; deletes are soft, so the change feed shows them.

use async_trait::async_trait;

use super::{bool_i, conflict, db, SqlStore};
use crate::{AuditEvent, ChangesPage, Page, ProviderKeyRow, ProviderKeyStore, Result, SecretRow, StoreError};

const PK_COLS: &str = "id, workspace, name, hub, base_url, hub_settings, rate_limit_per_interval, rate_limit_interval, private, secret_version, secret_hint, created_at, updated_at, last_used_at, created_by, rev, deleted_at";

#[async_trait]
impl ProviderKeyStore for SqlStore {
    async fn create_provider_key(
        &self,
        row: &ProviderKeyRow,
        secrets: &[SecretRow],
        audit_event: Option<&AuditEvent>,
    ) -> Result<ProviderKeyRow> {
        let mut tx = self.begin().await?;
        let rev = self.next_rev(&mut tx).await?;
        let stored = sqlx::query_as::<_, ProviderKeyRow>(&self.q(&format!(
            "INSERT INTO provider_keys ({PK_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, NULL) RETURNING {PK_COLS}"
        )))
        .bind(&row.id)
        .bind(&row.workspace)
        .bind(&row.name)
        .bind(&row.hub)
        .bind(&row.base_url)
        .bind(&row.hub_settings)
        .bind(row.rate_limit_per_interval)
        .bind(row.rate_limit_interval)
        .bind(bool_i(row.private))
        .bind(row.secret_version)
        .bind(&row.secret_hint)
        .bind(row.created_at)
        .bind(row.updated_at)
        .bind(row.last_used_at)
        .bind(&row.created_by)
        .bind(rev)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)
        .map_err(conflict(format!("a provider key named {} already exists", row.name)))?;
        for s in secrets {
            self.insert_secret(&mut tx, s).await?;
        }
        self.audit_in(&mut tx, audit_event).await?;
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    async fn update_provider_key(
        &self,
        row: &ProviderKeyRow,
        new_secrets: &[SecretRow],
        expire_versions: &[i64],
        grace_until: Option<i64>,
        audit_event: Option<&AuditEvent>,
    ) -> Result<ProviderKeyRow> {
        let mut tx = self.begin().await?;
        let rev = self.next_rev(&mut tx).await?;
        let stored = sqlx::query_as::<_, ProviderKeyRow>(&self.q(&format!(
            "UPDATE provider_keys SET name = $1, hub = $2, base_url = $3, hub_settings = $4, rate_limit_per_interval = $5,
                rate_limit_interval = $6, private = $7, secret_version = $8, secret_hint = $9, updated_at = $10, rev = $11
             WHERE workspace = $12 AND id = $13 AND deleted_at IS NULL RETURNING {PK_COLS}"
        )))
        .bind(&row.name)
        .bind(&row.hub)
        .bind(&row.base_url)
        .bind(&row.hub_settings)
        .bind(row.rate_limit_per_interval)
        .bind(row.rate_limit_interval)
        .bind(bool_i(row.private))
        .bind(row.secret_version)
        .bind(&row.secret_hint)
        .bind(row.updated_at)
        .bind(rev)
        .bind(&row.workspace)
        .bind(&row.id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)
        .map_err(conflict(format!("a provider key named {} already exists", row.name)))?
        .ok_or(StoreError::NotFound)?;
        for v in expire_versions {
            match grace_until {
                Some(until) => {
                    sqlx::query(&self.q(
                        "UPDATE secrets SET expires_at = $1 WHERE workspace = $2 AND owner_id = $3 AND version = $4",
                    ))
                    .bind(until)
                    .bind(&row.workspace)
                    .bind(&row.id)
                    .bind(*v)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                }
                None => {
                    sqlx::query(&self.q("DELETE FROM secrets WHERE workspace = $1 AND owner_id = $2 AND version = $3"))
                        .bind(&row.workspace)
                        .bind(&row.id)
                        .bind(*v)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                }
            }
        }
        for s in new_secrets {
            // A hub-config secret re-sent at the same version replaces the old value.
            sqlx::query(
                &self.q("DELETE FROM secrets WHERE workspace = $1 AND owner_id = $2 AND field = $3 AND version = $4"),
            )
            .bind(&s.workspace)
            .bind(&s.owner_id)
            .bind(&s.field)
            .bind(s.version)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            self.insert_secret(&mut tx, s).await?;
        }
        self.audit_in(&mut tx, audit_event).await?;
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    async fn get_provider_key(&self, workspace: &str, id: &str) -> Result<ProviderKeyRow> {
        let row = sqlx::query_as::<_, ProviderKeyRow>(&self.q(&format!(
            "SELECT {PK_COLS} FROM provider_keys WHERE workspace = $1 AND id = $2 AND deleted_at IS NULL"
        )))
        .bind(workspace)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
        Ok(row)
    }

    async fn get_provider_key_by_name(&self, workspace: &str, name: &str) -> Result<ProviderKeyRow> {
        let row = sqlx::query_as::<_, ProviderKeyRow>(&self.q(&format!(
            "SELECT {PK_COLS} FROM provider_keys WHERE workspace = $1 AND name = $2 AND deleted_at IS NULL"
        )))
        .bind(workspace)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
        Ok(row)
    }

    async fn list_provider_keys(&self, workspace: &str, page: Page) -> Result<(Vec<ProviderKeyRow>, i64)> {
        let rows = sqlx::query_as::<_, ProviderKeyRow>(&self.q(&format!(
            "SELECT {PK_COLS} FROM provider_keys WHERE workspace = $1 AND deleted_at IS NULL
             ORDER BY created_at, id LIMIT $2 OFFSET $3"
        )))
        .bind(workspace)
        .bind(i64::from(page.limit))
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let total = sqlx::query_scalar::<_, i64>(
            &self.q("SELECT COUNT(*) FROM provider_keys WHERE workspace = $1 AND deleted_at IS NULL"),
        )
        .bind(workspace)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok((rows, total))
    }

    async fn delete_provider_key(
        &self,
        workspace: &str,
        id: &str,
        now: i64,
        audit_event: Option<&AuditEvent>,
    ) -> Result<ProviderKeyRow> {
        let mut tx = self.begin().await?;
        let rev = self.next_rev(&mut tx).await?;
        let row = sqlx::query_as::<_, ProviderKeyRow>(&self.q(&format!(
            "UPDATE provider_keys SET deleted_at = $1, updated_at = $2, rev = $3
             WHERE workspace = $4 AND id = $5 AND deleted_at IS NULL RETURNING {PK_COLS}"
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
        sqlx::query(&self.q("DELETE FROM secrets WHERE workspace = $1 AND owner_id = $2"))
            .bind(workspace)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        self.audit_in(&mut tx, audit_event).await?;
        tx.commit().await.map_err(db)?;
        Ok(row)
    }

    async fn provider_keys_changed_since(&self, page: &ChangesPage) -> Result<Vec<ProviderKeyRow>> {
        self.changes_page(&format!("SELECT {PK_COLS} FROM provider_keys"), page)
            .await
    }
}
