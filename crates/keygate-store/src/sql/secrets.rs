//! Master keys and sealed secrets on SQL.
//!
//! What must stay true: a sealed value is replaced only if it is still the one read (compare
//! and swap in the `WHERE`), so concurrent re-wraps lose nothing; `ensure_secret` never
//! overwrites a stored secret; secret changes bump the revision.

use async_trait::async_trait;

use super::{conflict, db, SqlStore};
use crate::{MasterKeyRow, Result, SecretRow, SecretStore};

impl SqlStore {
    /// Inserts a sealed secret in the transaction `tx` of the record that owns it.
    pub(super) async fn insert_secret(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>, s: &SecretRow) -> Result<()> {
        sqlx::query(&self.q(
            "INSERT INTO secrets (workspace, owner_id, field, version, master_version, sealed, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        ))
        .bind(&s.workspace)
        .bind(&s.owner_id)
        .bind(&s.field)
        .bind(s.version)
        .bind(s.master_version)
        .bind(&s.sealed)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        Ok(())
    }
}

#[async_trait]
impl SecretStore for SqlStore {
    async fn master_keys(&self) -> Result<Vec<MasterKeyRow>> {
        sqlx::query_as::<_, MasterKeyRow>(
            &self.q("SELECT version, check_value, created_at, retired_at FROM master_keys ORDER BY version"),
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    async fn insert_master_key(&self, version: i64, check_value: &[u8], now: i64) -> Result<()> {
        sqlx::query(&self.q("INSERT INTO master_keys (version, check_value, created_at) VALUES ($1, $2, $3)"))
            .bind(version)
            .bind(check_value)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db)
            .map_err(conflict(format!("master key version {version} already exists")))?;
        Ok(())
    }

    async fn retire_master_key(&self, version: i64, now: i64) -> Result<()> {
        sqlx::query(&self.q("UPDATE master_keys SET retired_at = $1 WHERE version = $2 AND retired_at IS NULL"))
            .bind(now)
            .bind(version)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn secrets_not_under(&self, version: i64, limit: u32) -> Result<Vec<SecretRow>> {
        let rows = sqlx::query_as::<_, SecretRow>(&self.q(
            "SELECT workspace, owner_id, field, version, master_version, sealed, created_at, expires_at
             FROM secrets WHERE master_version <> $1 ORDER BY workspace, owner_id, field, version LIMIT $2",
        ))
        .bind(version)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows)
    }

    async fn count_secrets_not_under(&self, version: i64) -> Result<i64> {
        sqlx::query_scalar::<_, i64>(&self.q("SELECT COUNT(*) FROM secrets WHERE master_version <> $1"))
            .bind(version)
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    async fn replace_sealed(
        &self,
        row: &SecretRow,
        old_sealed: &[u8],
        new_master_version: i64,
        new_sealed: &[u8],
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        self.next_rev(&mut tx).await?;
        let done = sqlx::query(&self.q("UPDATE secrets SET master_version = $1, sealed = $2
             WHERE workspace = $3 AND owner_id = $4 AND field = $5 AND version = $6 AND sealed = $7"))
        .bind(new_master_version)
        .bind(new_sealed)
        .bind(&row.workspace)
        .bind(&row.owner_id)
        .bind(&row.field)
        .bind(row.version)
        .bind(old_sealed)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn secrets_of(&self, workspace: &str, owner_id: &str) -> Result<Vec<SecretRow>> {
        let rows = sqlx::query_as::<_, SecretRow>(&self.q(
            "SELECT workspace, owner_id, field, version, master_version, sealed, created_at, expires_at
             FROM secrets WHERE workspace = $1 AND owner_id = $2 ORDER BY field, version",
        ))
        .bind(workspace)
        .bind(owner_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows)
    }

    async fn ensure_secret(&self, row: &SecretRow) -> Result<SecretRow> {
        let mut tx = self.begin().await?;
        self.next_rev(&mut tx).await?;
        sqlx::query(&self.q(
            "INSERT INTO secrets (workspace, owner_id, field, version, master_version, sealed, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (workspace, owner_id, field, version) DO NOTHING",
        ))
        .bind(&row.workspace)
        .bind(&row.owner_id)
        .bind(&row.field)
        .bind(row.version)
        .bind(row.master_version)
        .bind(&row.sealed)
        .bind(row.created_at)
        .bind(row.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let stored = sqlx::query_as::<_, SecretRow>(&self.q(
            "SELECT workspace, owner_id, field, version, master_version, sealed, created_at, expires_at
             FROM secrets WHERE workspace = $1 AND owner_id = $2 AND field = $3 AND version = $4",
        ))
        .bind(&row.workspace)
        .bind(&row.owner_id)
        .bind(&row.field)
        .bind(row.version)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    async fn purge_expired_secrets(&self, now: i64) -> Result<u64> {
        let done = sqlx::query(&self.q("DELETE FROM secrets WHERE expires_at IS NOT NULL AND expires_at < $1"))
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }
}
