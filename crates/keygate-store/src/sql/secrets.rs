//! Master keys and sealed secrets on SQL.
//!
//! What must stay true: a sealed value is replaced only if it is still the one read (compare
//! and swap in the `WHERE`), so concurrent re-wraps lose nothing; `ensure_secret` never
//! overwrites a stored secret; secret changes bump the revision.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

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

fn secret(row: &AnyRow) -> Result<SecretRow> {
    Ok(SecretRow {
        workspace: row.try_get("workspace").map_err(db)?,
        owner_id: row.try_get("owner_id").map_err(db)?,
        field: row.try_get("field").map_err(db)?,
        version: row.try_get("version").map_err(db)?,
        master_version: row.try_get("master_version").map_err(db)?,
        sealed: row.try_get("sealed").map_err(db)?,
        created_at: row.try_get("created_at").map_err(db)?,
        expires_at: row.try_get("expires_at").map_err(db)?,
    })
}

#[async_trait]
impl SecretStore for SqlStore {
    async fn master_keys(&self) -> Result<Vec<MasterKeyRow>> {
        let rows = sqlx::query(
            &self.q("SELECT version, check_value, created_at, retired_at FROM master_keys ORDER BY version"),
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(MasterKeyRow {
                    version: r.try_get("version").map_err(db)?,
                    check_value: r.try_get("check_value").map_err(db)?,
                    created_at: r.try_get("created_at").map_err(db)?,
                    retired_at: r.try_get("retired_at").map_err(db)?,
                })
            })
            .collect()
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
        let rows = sqlx::query(&self.q(
            "SELECT workspace, owner_id, field, version, master_version, sealed, created_at, expires_at
             FROM secrets WHERE master_version <> $1 ORDER BY workspace, owner_id, field, version LIMIT $2",
        ))
        .bind(version)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(secret).collect()
    }

    async fn count_secrets_not_under(&self, version: i64) -> Result<i64> {
        let row = sqlx::query(&self.q("SELECT COUNT(*) FROM secrets WHERE master_version <> $1"))
            .bind(version)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        row.try_get::<i64, _>(0).map_err(db)
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
        let rows = sqlx::query(&self.q(
            "SELECT workspace, owner_id, field, version, master_version, sealed, created_at, expires_at
             FROM secrets WHERE workspace = $1 AND owner_id = $2 ORDER BY field, version",
        ))
        .bind(workspace)
        .bind(owner_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(secret).collect()
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
        let stored = sqlx::query(&self.q(
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
        secret(&stored)
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
