//! Usage records on SQL: the batched upsert of metered requests and the sums read back.
//!
//! The usage writer of a SQLite file ([`UsageWriter`]) is a connection of its own through
//! rusqlite, so a batch of usage records is one hand-over to a blocking thread and one
//! transaction of a cached statement, instead of a round trip to sqlx's worker thread per
//! record. PostgreSQL and in-memory SQLite write through the pool.
//!
//! What must stay true: both writers run the one upsert ([`USAGE_UPSERT`]), under which a final
//! record replaces only a pending one (status 0), so settling twice never counts twice; sums
//! leave pending records out; money stays integer nano-USD (`cost_nano`).

use std::time::Duration;

use async_trait::async_trait;

use super::{bool_i, db, SqlStore};
use crate::{Backend, Page, Result, StoreError, UsageFilter, UsageGroup, UsageRow, UsageStore, UsageTotals};

/// The usage upsert (`$N` placeholders): a request's final record supersedes its pending one
/// (status 0), never the other way round.
static USAGE_UPSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO usage_records ({USAGE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
         ON CONFLICT (id) DO UPDATE SET at = excluded.at, status_code = excluded.status_code,
            prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
            cached_tokens = excluded.cached_tokens, cost_nano = excluded.cost_nano, latency_ms = excluded.latency_ms,
            estimated = excluded.estimated, model = excluded.model, error_kind = excluded.error_kind
         WHERE usage_records.status_code = 0"
    )
});

/// Writes usage records to a SQLite file through a connection of its own (see the module
/// header). Opened after the migrations; an in-memory database has none (it is private to the
/// pool's connection) and writes through the pool.
#[derive(Clone)]
pub(super) struct UsageWriter {
    conn: std::sync::Arc<std::sync::Mutex<rusqlite::Connection>>,
    /// [`USAGE_UPSERT`] in SQLite's placeholders, the key of the connection's statement cache.
    sql: std::sync::Arc<str>,
}

impl UsageWriter {
    pub(super) fn open(path: &str) -> std::result::Result<UsageWriter, rusqlite::Error> {
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Appends touch the right edge of the table and its indexes: a small page cache holds it.
        conn.pragma_update(None, "cache_size", -256)?;
        Ok(UsageWriter {
            conn: std::sync::Arc::new(std::sync::Mutex::new(conn)),
            sql: USAGE_UPSERT.replace('$', "?").into(),
        })
    }

    /// Upserts `rows` in one transaction, on a blocking thread.
    async fn insert(&self, rows: &[UsageRow]) -> Result<()> {
        let rows = rows.to_vec();
        let (conn, sql) = (self.conn.clone(), self.sql.clone());
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            Self::insert_blocking(&mut conn, &sql, &rows).map_err(|e| StoreError::Db(e.to_string()))
        })
        .await
        .map_err(|e| StoreError::Db(format!("the usage writer stopped: {e}")))?
    }

    fn insert_blocking(conn: &mut rusqlite::Connection, sql: &str, rows: &[UsageRow]) -> rusqlite::Result<()> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(sql)?;
            for r in rows {
                stmt.execute(rusqlite::params![
                    r.id,
                    r.workspace,
                    r.at,
                    r.request_id,
                    r.platform_key_id,
                    r.virtual_key_id,
                    r.provider_key_id,
                    r.hub,
                    r.model,
                    r.endpoint,
                    r.status_code,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.cached_tokens,
                    r.cost_nano,
                    r.latency_ms,
                    bool_i(r.estimated),
                    bool_i(r.stream),
                    r.error_kind,
                ])?;
            }
        }
        tx.commit()
    }
}

const USAGE_COLS: &str = "id, workspace, at, request_id, platform_key_id, virtual_key_id, provider_key_id, hub, model, endpoint, status_code, prompt_tokens, completion_tokens, cached_tokens, cost_nano, latency_ms, estimated, stream, error_kind";

/// The WHERE clause of a usage filter; binds `$1` (workspace) to `$7`.
fn usage_where(backend: Backend) -> String {
    let cond = "workspace = $1 AND status_code <> 0 AND ($2 IS NULL OR virtual_key_id = $2) AND ($3 IS NULL OR platform_key_id = $3)
         AND ($4 IS NULL OR provider_key_id = $4) AND ($5 IS NULL OR model = $5) AND ($6 IS NULL OR at >= $6)
         AND ($7 IS NULL OR at < $7)";
    match backend {
        Backend::Postgres => cond
            .replace("($2 IS NULL", "($2::text IS NULL")
            .replace("($3 IS NULL", "($3::text IS NULL")
            .replace("($4 IS NULL", "($4::text IS NULL")
            .replace("($5 IS NULL", "($5::text IS NULL")
            .replace("($6 IS NULL", "($6::bigint IS NULL")
            .replace("($7 IS NULL", "($7::bigint IS NULL"),
        Backend::Sqlite => cond.to_string(),
    }
}

const TOTALS: &str = "COUNT(*) AS requests,
    CAST(COALESCE(SUM(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END), 0) AS BIGINT) AS errors,
    CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens,
    CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens,
    CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT) AS cached_tokens,
    CAST(COALESCE(SUM(cost_nano), 0) AS BIGINT) AS cost_nano,
    CAST(COALESCE(SUM(estimated), 0) AS BIGINT) AS estimated";

#[async_trait]
impl UsageStore for SqlStore {
    async fn insert_usage(&self, rows: &[UsageRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        if let Some(writer) = &self.usage_writer {
            return writer.insert(rows).await;
        }
        let sql = self.q(&USAGE_UPSERT);
        let mut tx = self.pool.begin().await.map_err(db)?;
        for r in rows {
            sqlx::query(&sql)
                .bind(&r.id)
                .bind(&r.workspace)
                .bind(r.at)
                .bind(&r.request_id)
                .bind(&r.platform_key_id)
                .bind(&r.virtual_key_id)
                .bind(&r.provider_key_id)
                .bind(&r.hub)
                .bind(&r.model)
                .bind(&r.endpoint)
                .bind(r.status_code)
                .bind(r.prompt_tokens)
                .bind(r.completion_tokens)
                .bind(r.cached_tokens)
                .bind(r.cost_nano)
                .bind(r.latency_ms)
                .bind(bool_i(r.estimated))
                .bind(bool_i(r.stream))
                .bind(&r.error_kind)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn reconcile_pending_usage(&self, before: i64) -> Result<u64> {
        let done = sqlx::query(&self.q(
            "UPDATE usage_records SET status_code = 520, error_kind = 'interrupted', estimated = 1
             WHERE status_code = 0 AND at < $1",
        ))
        .bind(before)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn usage_totals(&self, workspace: &str, f: &UsageFilter) -> Result<UsageTotals> {
        let sql = format!("SELECT {TOTALS} FROM usage_records WHERE {}", usage_where(self.backend));
        // No `grp` column: the totals' group stays empty.
        sqlx::query_as::<_, UsageTotals>(&self.q(&sql))
            .bind(workspace)
            .bind(&f.virtual_key_id)
            .bind(&f.platform_key_id)
            .bind(&f.provider_key_id)
            .bind(&f.model)
            .bind(f.from)
            .bind(f.to)
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    async fn usage_grouped(
        &self,
        workspace: &str,
        f: &UsageFilter,
        group: UsageGroup,
        limit: u32,
    ) -> Result<Vec<UsageTotals>> {
        let key = match group {
            UsageGroup::Day => "CAST(at / 86400000 AS TEXT)",
            UsageGroup::Model => "COALESCE(model, '')",
            UsageGroup::VirtualKey => "COALESCE(virtual_key_id, '')",
            UsageGroup::PlatformKey => "COALESCE(platform_key_id, '')",
            UsageGroup::ProviderKey => "COALESCE(provider_key_id, '')",
            UsageGroup::Hub => "COALESCE(hub, '')",
        };
        let sql = format!(
            "SELECT {key} AS grp, {TOTALS} FROM usage_records WHERE {} GROUP BY {key} ORDER BY {key} LIMIT $8",
            usage_where(self.backend)
        );
        sqlx::query_as::<_, UsageTotals>(&self.q(&sql))
            .bind(workspace)
            .bind(&f.virtual_key_id)
            .bind(&f.platform_key_id)
            .bind(&f.provider_key_id)
            .bind(&f.model)
            .bind(f.from)
            .bind(f.to)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)
    }

    async fn list_usage(&self, workspace: &str, f: &UsageFilter, page: Page) -> Result<(Vec<UsageRow>, i64)> {
        let cond = usage_where(self.backend);
        let sql =
            format!("SELECT {USAGE_COLS} FROM usage_records WHERE {cond} ORDER BY at DESC, id DESC LIMIT $8 OFFSET $9");
        let rows = sqlx::query_as::<_, UsageRow>(&self.q(&sql))
            .bind(workspace)
            .bind(&f.virtual_key_id)
            .bind(&f.platform_key_id)
            .bind(&f.provider_key_id)
            .bind(&f.model)
            .bind(f.from)
            .bind(f.to)
            .bind(i64::from(page.limit))
            .bind(page.offset())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let count = sqlx::query_scalar::<_, i64>(&self.q(&format!("SELECT COUNT(*) FROM usage_records WHERE {cond}")))
            .bind(workspace)
            .bind(&f.virtual_key_id)
            .bind(&f.platform_key_id)
            .bind(&f.provider_key_id)
            .bind(&f.model)
            .bind(f.from)
            .bind(f.to)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok((rows, count))
    }
}
