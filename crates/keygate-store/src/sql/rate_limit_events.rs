//! Rate-limit events on SQL.
//!
//! What must stay true: an event written twice (a retried batch) is stored once
//! (`ON CONFLICT (id) DO NOTHING`).

use async_trait::async_trait;

use super::{db, SqlStore};
use crate::{RateLimitEventRow, RateLimitEventStore, Result};

const RLE_COLS: &str =
    "id, workspace, at, platform_key_id, virtual_key_id, provider_key_id, model, limit_type, limit_value, scope";

#[async_trait]
impl RateLimitEventStore for SqlStore {
    async fn insert_rate_limit_events(&self, rows: &[RateLimitEventRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = self
            .q(&format!("INSERT INTO rate_limit_events ({RLE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING"))
            .into_owned();
        let mut tx = self.pool.begin().await.map_err(db)?;
        for r in rows {
            sqlx::query(&sql)
                .bind(&r.id)
                .bind(&r.workspace)
                .bind(r.at)
                .bind(&r.platform_key_id)
                .bind(&r.virtual_key_id)
                .bind(&r.provider_key_id)
                .bind(&r.model)
                .bind(&r.limit_type)
                .bind(r.limit_value)
                .bind(&r.scope)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn list_rate_limit_events(
        &self,
        workspace: &str,
        platform_key_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RateLimitEventRow>> {
        let rows = match platform_key_id {
            Some(k) => sqlx::query_as::<_, RateLimitEventRow>(&self.q(&format!(
                "SELECT {RLE_COLS} FROM rate_limit_events WHERE workspace = $1 AND platform_key_id = $2 ORDER BY at DESC, id DESC LIMIT $3"
            )))
            .bind(workspace)
            .bind(k)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?,
            None => sqlx::query_as::<_, RateLimitEventRow>(&self.q(&format!(
                "SELECT {RLE_COLS} FROM rate_limit_events WHERE workspace = $1 ORDER BY at DESC, id DESC LIMIT $2"
            )))
            .bind(workspace)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?,
        };
        Ok(rows)
    }
}
