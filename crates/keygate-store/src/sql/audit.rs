//! The audit log on SQL, and the insert every audited change runs in its own transaction.
//!
//! What must stay true: [`SqlStore::audit_in`] runs inside the change's transaction, so a
//! change and its event commit or fail together.

use async_trait::async_trait;

use super::{db, SqlStore};
use crate::{AuditEvent, AuditFilter, AuditStore, Backend, Page, Result};

impl SqlStore {
    /// Writes `event`, if any, in the change's own transaction `tx`.
    pub(super) async fn audit_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        event: Option<&AuditEvent>,
    ) -> Result<()> {
        let Some(e) = event else { return Ok(()) };
        sqlx::query(&self.q(
            "INSERT INTO audit_events (id, workspace, at, actor_key_id, actor, action, target_type, target_id, request_id, details)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        ))
        .bind(&e.id)
        .bind(&e.workspace)
        .bind(e.at)
        .bind(&e.actor_key_id)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.target_type)
        .bind(&e.target_id)
        .bind(&e.request_id)
        .bind(&e.details)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        Ok(())
    }
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn append_audit(&self, event: &AuditEvent) -> Result<()> {
        let mut tx = self.begin().await?;
        self.audit_in(&mut tx, Some(event)).await?;
        tx.commit().await.map_err(db)
    }

    async fn list_audit(&self, workspace: &str, filter: &AuditFilter, page: Page) -> Result<(Vec<AuditEvent>, i64)> {
        let cond = "workspace = $1 AND ($2 IS NULL OR action = $2) AND ($3 IS NULL OR target_id = $3)
             AND ($4 IS NULL OR actor_key_id = $4) AND ($5 IS NULL OR at >= $5) AND ($6 IS NULL OR at < $6)";
        let cond = match self.backend {
            // PostgreSQL needs the type of a parameter compared with NULL.
            Backend::Postgres => cond
                .replace("($2 IS NULL", "($2::text IS NULL")
                .replace("($3 IS NULL", "($3::text IS NULL")
                .replace("($4 IS NULL", "($4::text IS NULL")
                .replace("($5 IS NULL", "($5::bigint IS NULL")
                .replace("($6 IS NULL", "($6::bigint IS NULL"),
            Backend::Sqlite => cond.to_string(),
        };
        let list_sql = format!(
            "SELECT id, workspace, at, actor_key_id, actor, action, target_type, target_id, request_id, details
             FROM audit_events WHERE {cond} ORDER BY at DESC, id DESC LIMIT $7 OFFSET $8"
        );
        let rows = sqlx::query_as::<_, AuditEvent>(&self.q(&list_sql))
            .bind(workspace)
            .bind(&filter.action)
            .bind(&filter.target_id)
            .bind(&filter.actor_key_id)
            .bind(filter.from)
            .bind(filter.to)
            .bind(i64::from(page.limit))
            .bind(page.offset())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let count_sql = format!("SELECT COUNT(*) FROM audit_events WHERE {cond}");
        let total = sqlx::query_scalar::<_, i64>(&self.q(&count_sql))
            .bind(workspace)
            .bind(&filter.action)
            .bind(&filter.target_id)
            .bind(&filter.actor_key_id)
            .bind(filter.from)
            .bind(filter.to)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok((rows, total))
    }
}
