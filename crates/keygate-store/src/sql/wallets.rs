//! Wallets and one-time sign-in tokens on SQL.
//!
//! What must stay true: a token is consumed by one conditional `UPDATE` (unused and
//! unexpired), so two concurrent sign-ins cannot both use it.

use async_trait::async_trait;

use super::{bool_i, conflict, db, SqlStore};
use crate::{AuditEvent, Result, StoreError, WalletRow, WalletStore, Web3TokenState};

#[async_trait]
impl WalletStore for SqlStore {
    async fn create_wallet(&self, row: &WalletRow, audit_event: Option<&AuditEvent>) -> Result<WalletRow> {
        let mut tx = self.begin().await?;
        self.next_rev(&mut tx).await?;
        sqlx::query(&self.q(
            "INSERT INTO wallets (address, workspace, allow_admin, created_at, created_by) VALUES ($1, $2, $3, $4, $5)",
        ))
        .bind(&row.address)
        .bind(&row.workspace)
        .bind(bool_i(row.allow_admin))
        .bind(row.created_at)
        .bind(&row.created_by)
        .execute(&mut *tx)
        .await
        .map_err(db)
        .map_err(conflict(format!("the wallet {} is already registered", row.address)))?;
        self.audit_in(&mut tx, audit_event).await?;
        tx.commit().await.map_err(db)?;
        Ok(row.clone())
    }

    async fn list_wallets(&self, workspace: &str) -> Result<Vec<WalletRow>> {
        let rows = sqlx::query_as::<_, WalletRow>(&self.q(
            "SELECT address, workspace, allow_admin, created_at, created_by FROM wallets WHERE workspace = $1 ORDER BY created_at, address",
        ))
        .bind(workspace)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows)
    }

    async fn find_wallet(&self, address: &str) -> Result<WalletRow> {
        let row = sqlx::query_as::<_, WalletRow>(
            &self.q("SELECT address, workspace, allow_admin, created_at, created_by FROM wallets WHERE address = $1"),
        )
        .bind(address)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
        Ok(row)
    }

    async fn delete_wallet(&self, workspace: &str, address: &str, audit_event: Option<&AuditEvent>) -> Result<()> {
        let mut tx = self.begin().await?;
        self.next_rev(&mut tx).await?;
        let done = sqlx::query(&self.q("DELETE FROM wallets WHERE workspace = $1 AND address = $2"))
            .bind(workspace)
            .bind(address)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.audit_in(&mut tx, audit_event).await?;
        tx.commit().await.map_err(db)
    }

    async fn insert_web3_token(&self, token_hash: &[u8], expires_at: i64) -> Result<()> {
        sqlx::query(&self.q("DELETE FROM web3_tokens WHERE expires_at < $1"))
            .bind(expires_at - 24 * 3_600_000)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        sqlx::query(&self.q("INSERT INTO web3_tokens (token_hash, expires_at) VALUES ($1, $2)"))
            .bind(token_hash)
            .bind(expires_at)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn consume_web3_token(&self, token_hash: &[u8], now: i64) -> Result<Web3TokenState> {
        let used = sqlx::query(
            &self
                .q("UPDATE web3_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $3"),
        )
        .bind(now)
        .bind(token_hash)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        if used.rows_affected() == 1 {
            return Ok(Web3TokenState::Valid);
        }
        let used_at =
            sqlx::query_scalar::<_, Option<i64>>(&self.q("SELECT used_at FROM web3_tokens WHERE token_hash = $1"))
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(match used_at {
            None => Web3TokenState::Unknown,
            Some(Some(_)) => Web3TokenState::AlreadyUsed,
            Some(None) => Web3TokenState::Expired,
        })
    }
}
