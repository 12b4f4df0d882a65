//! The SQL backends. SQLite and PostgreSQL run the same statements through sqlx's `Any`
//! driver, written in the dialect both share (Unix-millisecond integers, 0/1 flags, JSON as
//! text, `$N` placeholders rewritten to SQLite's `?N`); each has its own migrations and
//! connection set-up (SQLite: WAL, busy timeout, one writer at a time).
//!
//! The one exception is the bulk read of changes that loads the caches (every key at start):
//! it runs through a small second pool of the backend's own driver, so its rows are decoded
//! directly instead of through `AnyRow` (which converts every row and its column metadata),
//! and SQLite's worker thread hands rows over a page at a time instead of 50 at a time.
//!
//! The other is the usage writer of a SQLite file ([`UsageWriter`]): a connection of its own
//! through rusqlite, so a batch of usage records is one hand-over to a blocking thread and one
//! transaction of a cached statement, instead of a round trip to sqlx's worker thread per record.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::prelude::*;
use crate::{
    AuditEvent, AuditFilter, Backend, ChangesPage, MasterKeyRow, Page, PlatformKeyRow, ProviderKeyRow,
    RateLimitEventRow, Result, SecretRow, StoreError, UsageFilter, UsageGroup, UsageRow, UsageTotals, VirtualKeyRow,
    WalletRow, Web3TokenState, WorkspaceRow,
};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The store on SQLite or PostgreSQL.
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    bulk: Bulk,
    usage_writer: Option<UsageWriter>,
}

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
struct UsageWriter {
    conn: std::sync::Arc<std::sync::Mutex<rusqlite::Connection>>,
    /// [`USAGE_UPSERT`] in SQLite's placeholders, the key of the connection's statement cache.
    sql: std::sync::Arc<str>,
}

impl UsageWriter {
    fn open(path: &str) -> std::result::Result<UsageWriter, rusqlite::Error> {
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

/// The typed pool for bulk reads of changes (see the module header).
enum Bulk {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
    /// An in-memory SQLite database is private to its connection: read it through `pool`.
    None,
}

fn db(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict("already exists".into()),
        other => StoreError::Db(other.to_string()),
    }
}

fn conflict(what: String) -> impl FnOnce(StoreError) -> StoreError {
    move |e| match e {
        StoreError::Conflict(_) => StoreError::Conflict(what),
        other => other,
    }
}

/// A `sqlite://` URL's file path and query string.
fn sqlite_parts(url: &str) -> Result<(&str, Option<&str>)> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::Open("not a sqlite URL".into()))?;
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(StoreError::Open("the sqlite URL names no file".into()));
    }
    Ok((path, query))
}

/// Turns a `sqlite://` URL into a path-based one that creates the file when missing.
fn sqlite_url(url: &str) -> Result<String> {
    let (path, query) = sqlite_parts(url)?;
    if path != ":memory:" {
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| StoreError::Open(format!("cannot create {}: {e}", parent.display())))?;
            }
        }
    }
    let query = match query {
        Some(q) if q.contains("mode=") => q.to_string(),
        Some(q) => format!("{q}&mode=rwc"),
        None => "mode=rwc".to_string(),
    };
    Ok(format!("sqlite://{path}?{query}"))
}

impl SqlStore {
    /// Opens and migrates the store at `url`.
    pub async fn open(url: &str) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::Open(
                "the database URL must start with sqlite:// or postgres://".into(),
            ));
        };
        let pool = match backend {
            Backend::Sqlite => {
                let url = sqlite_url(url)?;
                AnyPoolOptions::new()
                    .max_connections(8)
                    .min_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            use sqlx::Executor;
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            conn.execute("PRAGMA busy_timeout = 10000").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect(url)
                    .await
            }
        }
        .map_err(|e| StoreError::Open(redact_url_error(&e.to_string(), url)))?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
        let bulk = open_bulk(backend, url)
            .await
            .map_err(|e| StoreError::Open(redact_url_error(&e.to_string(), url)))?;
        let usage_writer = match bulk {
            Bulk::Sqlite(_) => {
                let (path, _) = sqlite_parts(url)?;
                Some(UsageWriter::open(path).map_err(|e| StoreError::Open(format!("cannot open {path}: {e}")))?)
            }
            _ => None,
        };
        Ok(SqlStore {
            pool,
            backend,
            bulk,
            usage_writer,
        })
    }

    /// Rewrites `$N` placeholders for SQLite (`?N`, bound by number).
    fn q<'a>(&self, sql: &'a str) -> Cow<'a, str> {
        match self.backend {
            Backend::Postgres => Cow::Borrowed(sql),
            Backend::Sqlite => Cow::Owned(sql.replace('$', "?")),
        }
    }

    async fn next_rev(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<i64> {
        let row = sqlx::query(&self.q("UPDATE kg_meta SET ivalue = ivalue + 1 WHERE key = 'rev' RETURNING ivalue"))
            .fetch_one(&mut **tx)
            .await
            .map_err(db)?;
        row.try_get::<i64, _>(0).map_err(db)
    }

    async fn audit_in(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>, event: Option<&AuditEvent>) -> Result<()> {
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

    async fn insert_secret(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>, s: &SecretRow) -> Result<()> {
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

    /// One page of `select` (a `SELECT … FROM table` of a table with `rev` and `id`) in
    /// `(rev, id)` order: the rows after `page.since`, after `page.after`, at most `page.limit`,
    /// read through the typed pool and decoded by the converter of its driver.
    /// Both forms are one range read of the table's `(rev, id)` index (a row after `after` has
    /// a revision above `since` already); an `OR` of the two conditions would not be.
    async fn changes_page<T>(&self, select: &str, page: &ChangesPage, conv: Converters<T>) -> Result<Vec<T>> {
        let limit = i64::from(page.limit.max(1));
        let (sql, after) = match &page.after {
            None => (format!("{select} WHERE rev > $1 ORDER BY rev, id LIMIT $2"), None),
            Some((rev, id)) => (
                format!("{select} WHERE (rev, id) > ($1, $2) ORDER BY rev, id LIMIT $3"),
                Some((*rev, id.as_str())),
            ),
        };
        let sql = self.q(&sql);
        // The same binds on whichever pool.
        macro_rules! fetch {
            ($pool:expr) => {{
                let q = sqlx::query(&sql);
                let q = match after {
                    None => q.bind(page.since),
                    Some((rev, id)) => q.bind(rev).bind(id),
                };
                q.bind(limit).fetch_all($pool).await.map_err(db)?
            }};
        }
        match &self.bulk {
            Bulk::Sqlite(pool) => fetch!(pool).iter().map(conv.sqlite).collect(),
            Bulk::Postgres(pool) => fetch!(pool).iter().map(conv.pg).collect(),
            Bulk::None => fetch!(&self.pool).iter().map(conv.any).collect(),
        }
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        self.pool.begin().await.map_err(db)
    }
}

fn redact_url_error(msg: &str, url: &str) -> String {
    // A database URL may carry a password; never echo it.
    match url::Url::parse(url) {
        Ok(u) if u.password().is_some() => msg.replace(u.password().unwrap_or_default(), "***"),
        _ => msg.to_string(),
    }
}

/// Opens the typed pool for bulk reads: at most two connections, none kept while idle.
async fn open_bulk(backend: Backend, url: &str) -> std::result::Result<Bulk, sqlx::Error> {
    use sqlx::pool::PoolOptions;
    let idle = Some(Duration::from_secs(60));
    match backend {
        Backend::Sqlite => {
            use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
            let url = sqlite_url(url).map_err(|e| sqlx::Error::Configuration(e.to_string().into()))?;
            if url.contains(":memory:") || url.contains("mode=memory") {
                return Ok(Bulk::None);
            }
            let options = SqliteConnectOptions::from_str(&url)?
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                .row_buffer_size(ChangesPage::DEFAULT_LIMIT as usize);
            let pool = PoolOptions::new()
                .max_connections(2)
                .min_connections(0)
                .idle_timeout(idle)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options)
                .await?;
            Ok(Bulk::Sqlite(pool))
        }
        Backend::Postgres => {
            let pool = PoolOptions::new()
                .max_connections(2)
                .min_connections(0)
                .idle_timeout(idle)
                .acquire_timeout(Duration::from_secs(30))
                .connect(url)
                .await?;
            Ok(Bulk::Postgres(pool))
        }
    }
}

fn flag(row: &AnyRow, col: &str) -> Result<bool> {
    Ok(row.try_get::<i64, _>(col).map_err(db)? != 0)
}

const PK_COLS: &str = "id, workspace, name, hub, base_url, hub_settings, rate_limit_per_interval, rate_limit_interval, private, secret_version, secret_hint, created_at, updated_at, last_used_at, created_by, rev, deleted_at";

const PLK_COLS: &str = "id, workspace, key_type, org_admin, description, key_hash, last6, prev_key_hash, prev_valid_until, settings, expires_at, created_at, updated_at, last_used_at, created_by, rev, deleted_at";

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

fn workspace(row: &AnyRow) -> Result<WorkspaceRow> {
    Ok(WorkspaceRow {
        id: row.try_get("id").map_err(db)?,
        name: row.try_get("name").map_err(db)?,
        created_at: row.try_get("created_at").map_err(db)?,
        updated_at: row.try_get("updated_at").map_err(db)?,
    })
}

fn audit(row: &AnyRow) -> Result<AuditEvent> {
    Ok(AuditEvent {
        id: row.try_get("id").map_err(db)?,
        workspace: row.try_get("workspace").map_err(db)?,
        at: row.try_get("at").map_err(db)?,
        actor_key_id: row.try_get("actor_key_id").map_err(db)?,
        actor: row.try_get("actor").map_err(db)?,
        action: row.try_get("action").map_err(db)?,
        target_type: row.try_get("target_type").map_err(db)?,
        target_id: row.try_get("target_id").map_err(db)?,
        request_id: row.try_get("request_id").map_err(db)?,
        details: row.try_get("details").map_err(db)?,
    })
}

const VK_COLS: &str =
    "id, workspace, slug, name, note, config, status, expires_at, created_at, updated_at, created_by, rev, deleted_at";

/// The key rows, read from a row of any of the three drivers (the same columns and types).
macro_rules! key_rows {
    ($row:ty) => {
        pub(super) fn provider_key(row: &$row) -> Result<ProviderKeyRow> {
            Ok(ProviderKeyRow {
                id: row.try_get("id").map_err(db)?,
                workspace: row.try_get("workspace").map_err(db)?,
                name: row.try_get("name").map_err(db)?,
                hub: row.try_get("hub").map_err(db)?,
                base_url: row.try_get("base_url").map_err(db)?,
                hub_settings: row.try_get("hub_settings").map_err(db)?,
                rate_limit_per_interval: row.try_get("rate_limit_per_interval").map_err(db)?,
                rate_limit_interval: row.try_get("rate_limit_interval").map_err(db)?,
                private: (row.try_get::<i64, _>("private").map_err(db)? != 0),
                secret_version: row.try_get("secret_version").map_err(db)?,
                secret_hint: row.try_get("secret_hint").map_err(db)?,
                created_at: row.try_get("created_at").map_err(db)?,
                updated_at: row.try_get("updated_at").map_err(db)?,
                last_used_at: row.try_get("last_used_at").map_err(db)?,
                created_by: row.try_get("created_by").map_err(db)?,
                rev: row.try_get("rev").map_err(db)?,
                deleted_at: row.try_get("deleted_at").map_err(db)?,
            })
        }

        pub(super) fn platform_key(row: &$row) -> Result<PlatformKeyRow> {
            Ok(PlatformKeyRow {
                id: row.try_get("id").map_err(db)?,
                workspace: row.try_get("workspace").map_err(db)?,
                key_type: row.try_get("key_type").map_err(db)?,
                org_admin: (row.try_get::<i64, _>("org_admin").map_err(db)? != 0),
                description: row.try_get("description").map_err(db)?,
                key_hash: row.try_get("key_hash").map_err(db)?,
                last6: row.try_get("last6").map_err(db)?,
                prev_key_hash: row.try_get("prev_key_hash").map_err(db)?,
                prev_valid_until: row.try_get("prev_valid_until").map_err(db)?,
                settings: row.try_get("settings").map_err(db)?,
                expires_at: row.try_get("expires_at").map_err(db)?,
                created_at: row.try_get("created_at").map_err(db)?,
                updated_at: row.try_get("updated_at").map_err(db)?,
                last_used_at: row.try_get("last_used_at").map_err(db)?,
                created_by: row.try_get("created_by").map_err(db)?,
                rev: row.try_get("rev").map_err(db)?,
                deleted_at: row.try_get("deleted_at").map_err(db)?,
            })
        }

        pub(super) fn virtual_key(row: &$row) -> Result<VirtualKeyRow> {
            Ok(VirtualKeyRow {
                id: row.try_get("id").map_err(db)?,
                workspace: row.try_get("workspace").map_err(db)?,
                slug: row.try_get("slug").map_err(db)?,
                name: row.try_get("name").map_err(db)?,
                note: row.try_get("note").map_err(db)?,
                config: row.try_get("config").map_err(db)?,
                status: row.try_get("status").map_err(db)?,
                expires_at: row.try_get("expires_at").map_err(db)?,
                created_at: row.try_get("created_at").map_err(db)?,
                updated_at: row.try_get("updated_at").map_err(db)?,
                created_by: row.try_get("created_by").map_err(db)?,
                rev: row.try_get("rev").map_err(db)?,
                deleted_at: row.try_get("deleted_at").map_err(db)?,
            })
        }
    };
}

mod any_rows {
    use super::*;
    key_rows!(AnyRow);
}
mod sqlite_rows {
    use super::*;
    key_rows!(sqlx::sqlite::SqliteRow);
}
mod pg_rows {
    use super::*;
    key_rows!(sqlx::postgres::PgRow);
}
use any_rows::{platform_key, provider_key, virtual_key};

/// The converters of one row type, one per driver.
struct Converters<T> {
    any: fn(&AnyRow) -> Result<T>,
    sqlite: fn(&sqlx::sqlite::SqliteRow) -> Result<T>,
    pg: fn(&sqlx::postgres::PgRow) -> Result<T>,
}

const USAGE_COLS: &str = "id, workspace, at, request_id, platform_key_id, virtual_key_id, provider_key_id, hub, model, endpoint, status_code, prompt_tokens, completion_tokens, cached_tokens, cost_nano, latency_ms, estimated, stream, error_kind";

fn usage_row(row: &AnyRow) -> Result<UsageRow> {
    Ok(UsageRow {
        id: row.try_get("id").map_err(db)?,
        workspace: row.try_get("workspace").map_err(db)?,
        at: row.try_get("at").map_err(db)?,
        request_id: row.try_get("request_id").map_err(db)?,
        platform_key_id: row.try_get("platform_key_id").map_err(db)?,
        virtual_key_id: row.try_get("virtual_key_id").map_err(db)?,
        provider_key_id: row.try_get("provider_key_id").map_err(db)?,
        hub: row.try_get("hub").map_err(db)?,
        model: row.try_get("model").map_err(db)?,
        endpoint: row.try_get("endpoint").map_err(db)?,
        status_code: row.try_get("status_code").map_err(db)?,
        prompt_tokens: row.try_get("prompt_tokens").map_err(db)?,
        completion_tokens: row.try_get("completion_tokens").map_err(db)?,
        cached_tokens: row.try_get("cached_tokens").map_err(db)?,
        cost_nano: row.try_get("cost_nano").map_err(db)?,
        latency_ms: row.try_get("latency_ms").map_err(db)?,
        estimated: flag(row, "estimated")?,
        stream: flag(row, "stream")?,
        error_kind: row.try_get("error_kind").map_err(db)?,
    })
}

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

fn totals(row: &AnyRow, group: String) -> Result<UsageTotals> {
    Ok(UsageTotals {
        group,
        requests: row.try_get("requests").map_err(db)?,
        errors: row.try_get("errors").map_err(db)?,
        prompt_tokens: row.try_get("prompt_tokens").map_err(db)?,
        completion_tokens: row.try_get("completion_tokens").map_err(db)?,
        cached_tokens: row.try_get("cached_tokens").map_err(db)?,
        cost_nano: row.try_get("cost_nano").map_err(db)?,
        estimated: row.try_get("estimated").map_err(db)?,
    })
}

fn wallet(row: &AnyRow) -> Result<WalletRow> {
    Ok(WalletRow {
        address: row.try_get("address").map_err(db)?,
        workspace: row.try_get("workspace").map_err(db)?,
        allow_admin: flag(row, "allow_admin")?,
        created_at: row.try_get("created_at").map_err(db)?,
        created_by: row.try_get("created_by").map_err(db)?,
    })
}

const RLE_COLS: &str =
    "id, workspace, at, platform_key_id, virtual_key_id, provider_key_id, model, limit_type, limit_value, scope";

fn rl_event(row: &AnyRow) -> Result<RateLimitEventRow> {
    Ok(RateLimitEventRow {
        id: row.try_get("id").map_err(db)?,
        workspace: row.try_get("workspace").map_err(db)?,
        at: row.try_get("at").map_err(db)?,
        platform_key_id: row.try_get("platform_key_id").map_err(db)?,
        virtual_key_id: row.try_get("virtual_key_id").map_err(db)?,
        provider_key_id: row.try_get("provider_key_id").map_err(db)?,
        model: row.try_get("model").map_err(db)?,
        limit_type: row.try_get("limit_type").map_err(db)?,
        limit_value: row.try_get("limit_value").map_err(db)?,
        scope: row.try_get("scope").map_err(db)?,
    })
}

fn bool_i(b: bool) -> i64 {
    i64::from(b)
}

#[async_trait]
impl StoreMeta for SqlStore {
    fn backend(&self) -> Backend {
        self.backend
    }

    async fn revision(&self) -> Result<i64> {
        let row = sqlx::query(&self.q("SELECT ivalue FROM kg_meta WHERE key = 'rev'"))
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        row.try_get::<i64, _>(0).map_err(db)
    }

    async fn close(&self) {
        match &self.bulk {
            Bulk::Sqlite(pool) => pool.close().await,
            Bulk::Postgres(pool) => pool.close().await,
            Bulk::None => {}
        }
        self.pool.close().await;
    }
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
            sqlx::query(&self.q(
                "SELECT id, name, created_at, updated_at FROM workspaces ORDER BY created_at, id LIMIT $1 OFFSET $2",
            ))
            .bind(i64::from(page.limit))
            .bind(page.offset())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let total = sqlx::query(&self.q("SELECT COUNT(*) FROM workspaces"))
            .fetch_one(&self.pool)
            .await
            .map_err(db)?
            .try_get::<i64, _>(0)
            .map_err(db)?;
        Ok((rows.iter().map(workspace).collect::<Result<_>>()?, total))
    }

    async fn get_workspace(&self, id: &str) -> Result<WorkspaceRow> {
        let row = sqlx::query(&self.q("SELECT id, name, created_at, updated_at FROM workspaces WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound)?;
        workspace(&row)
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
        let row = sqlx::query(&self.q(
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
        workspace(&row)
    }

    async fn delete_workspace(&self, id: &str, audit_event: Option<&AuditEvent>) -> Result<()> {
        let mut tx = self.begin().await?;
        self.next_rev(&mut tx).await?;
        for table in ["provider_keys", "platform_keys", "virtual_keys"] {
            let live = sqlx::query(&self.q(&format!(
                "SELECT COUNT(*) FROM {table} WHERE workspace = $1 AND deleted_at IS NULL"
            )))
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?
            .try_get::<i64, _>(0)
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
        let stored = sqlx::query(&self.q(&format!(
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
        provider_key(&stored)
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
        let stored = sqlx::query(&self.q(&format!(
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
        provider_key(&stored)
    }

    async fn get_provider_key(&self, workspace: &str, id: &str) -> Result<ProviderKeyRow> {
        let row = sqlx::query(&self.q(&format!(
            "SELECT {PK_COLS} FROM provider_keys WHERE workspace = $1 AND id = $2 AND deleted_at IS NULL"
        )))
        .bind(workspace)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
        provider_key(&row)
    }

    async fn get_provider_key_by_name(&self, workspace: &str, name: &str) -> Result<ProviderKeyRow> {
        let row = sqlx::query(&self.q(&format!(
            "SELECT {PK_COLS} FROM provider_keys WHERE workspace = $1 AND name = $2 AND deleted_at IS NULL"
        )))
        .bind(workspace)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
        provider_key(&row)
    }

    async fn list_provider_keys(&self, workspace: &str, page: Page) -> Result<(Vec<ProviderKeyRow>, i64)> {
        let rows = sqlx::query(&self.q(&format!(
            "SELECT {PK_COLS} FROM provider_keys WHERE workspace = $1 AND deleted_at IS NULL
             ORDER BY created_at, id LIMIT $2 OFFSET $3"
        )))
        .bind(workspace)
        .bind(i64::from(page.limit))
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let total =
            sqlx::query(&self.q("SELECT COUNT(*) FROM provider_keys WHERE workspace = $1 AND deleted_at IS NULL"))
                .bind(workspace)
                .fetch_one(&self.pool)
                .await
                .map_err(db)?
                .try_get::<i64, _>(0)
                .map_err(db)?;
        Ok((rows.iter().map(provider_key).collect::<Result<_>>()?, total))
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
        let row = sqlx::query(&self.q(&format!(
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
        provider_key(&row)
    }

    async fn provider_keys_changed_since(&self, page: &ChangesPage) -> Result<Vec<ProviderKeyRow>> {
        let conv = Converters {
            any: any_rows::provider_key,
            sqlite: sqlite_rows::provider_key,
            pg: pg_rows::provider_key,
        };
        self.changes_page(&format!("SELECT {PK_COLS} FROM provider_keys"), page, conv)
            .await
    }
}

#[async_trait]
impl PlatformKeyStore for SqlStore {
    async fn create_platform_key(
        &self,
        row: &PlatformKeyRow,
        audit_event: Option<&AuditEvent>,
    ) -> Result<PlatformKeyRow> {
        let mut tx = self.begin().await?;
        let rev = self.next_rev(&mut tx).await?;
        let stored = sqlx::query(&self.q(&format!(
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
        platform_key(&stored)
    }

    async fn update_platform_key(
        &self,
        row: &PlatformKeyRow,
        audit_event: Option<&AuditEvent>,
    ) -> Result<PlatformKeyRow> {
        let mut tx = self.begin().await?;
        let rev = self.next_rev(&mut tx).await?;
        let stored = sqlx::query(&self.q(&format!(
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
        platform_key(&stored)
    }

    async fn get_platform_key(&self, workspace: &str, id: &str) -> Result<PlatformKeyRow> {
        let row = sqlx::query(&self.q(&format!(
            "SELECT {PLK_COLS} FROM platform_keys WHERE workspace = $1 AND id = $2 AND deleted_at IS NULL"
        )))
        .bind(workspace)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
        platform_key(&row)
    }

    async fn get_platform_key_any(&self, workspace: &str, id: &str) -> Result<PlatformKeyRow> {
        let row = sqlx::query(&self.q(&format!(
            "SELECT {PLK_COLS} FROM platform_keys WHERE workspace = $1 AND id = $2"
        )))
        .bind(workspace)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
        platform_key(&row)
    }

    async fn list_platform_keys(&self, workspace: &str, page: Page) -> Result<(Vec<PlatformKeyRow>, i64)> {
        let rows = sqlx::query(&self.q(&format!(
            "SELECT {PLK_COLS} FROM platform_keys WHERE workspace = $1 AND deleted_at IS NULL
             ORDER BY created_at, id LIMIT $2 OFFSET $3"
        )))
        .bind(workspace)
        .bind(i64::from(page.limit))
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let total =
            sqlx::query(&self.q("SELECT COUNT(*) FROM platform_keys WHERE workspace = $1 AND deleted_at IS NULL"))
                .bind(workspace)
                .fetch_one(&self.pool)
                .await
                .map_err(db)?
                .try_get::<i64, _>(0)
                .map_err(db)?;
        Ok((rows.iter().map(platform_key).collect::<Result<_>>()?, total))
    }

    async fn count_platform_keys(&self) -> Result<i64> {
        sqlx::query(&self.q("SELECT COUNT(*) FROM platform_keys"))
            .fetch_one(&self.pool)
            .await
            .map_err(db)?
            .try_get::<i64, _>(0)
            .map_err(db)
    }

    async fn count_live_platform_keys(&self, workspace: &str) -> Result<i64> {
        sqlx::query(&self.q("SELECT COUNT(*) FROM platform_keys WHERE workspace = $1 AND deleted_at IS NULL"))
            .bind(workspace)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?
            .try_get::<i64, _>(0)
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
        let row = sqlx::query(&self.q(&format!(
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
        platform_key(&row)
    }

    async fn platform_keys_changed_since(&self, page: &ChangesPage) -> Result<Vec<PlatformKeyRow>> {
        let conv = Converters {
            any: any_rows::platform_key,
            sqlite: sqlite_rows::platform_key,
            pg: pg_rows::platform_key,
        };
        self.changes_page(&format!("SELECT {PLK_COLS} FROM platform_keys"), page, conv)
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

#[async_trait]
impl VirtualKeyStore for SqlStore {
    async fn create_virtual_key(&self, row: &VirtualKeyRow, audit_event: Option<&AuditEvent>) -> Result<VirtualKeyRow> {
        let mut tx = self.begin().await?;
        let rev = self.next_rev(&mut tx).await?;
        let stored = sqlx::query(&self.q(&format!(
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
        virtual_key(&stored)
    }

    async fn update_virtual_key(&self, row: &VirtualKeyRow, audit_event: Option<&AuditEvent>) -> Result<VirtualKeyRow> {
        let mut tx = self.begin().await?;
        let rev = self.next_rev(&mut tx).await?;
        let stored = sqlx::query(&self.q(&format!(
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
        virtual_key(&stored)
    }

    async fn get_virtual_key(&self, workspace: &str, id_or_slug: &str) -> Result<VirtualKeyRow> {
        let row = sqlx::query(&self.q(&format!(
            "SELECT {VK_COLS} FROM virtual_keys WHERE workspace = $1 AND (id = $2 OR slug = $2) AND deleted_at IS NULL"
        )))
        .bind(workspace)
        .bind(id_or_slug)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
        virtual_key(&row)
    }

    async fn list_virtual_keys(&self, workspace: &str, page: Page) -> Result<(Vec<VirtualKeyRow>, i64)> {
        let rows = sqlx::query(&self.q(&format!(
            "SELECT {VK_COLS} FROM virtual_keys WHERE workspace = $1 AND deleted_at IS NULL
             ORDER BY created_at, id LIMIT $2 OFFSET $3"
        )))
        .bind(workspace)
        .bind(i64::from(page.limit))
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let total =
            sqlx::query(&self.q("SELECT COUNT(*) FROM virtual_keys WHERE workspace = $1 AND deleted_at IS NULL"))
                .bind(workspace)
                .fetch_one(&self.pool)
                .await
                .map_err(db)?
                .try_get::<i64, _>(0)
                .map_err(db)?;
        Ok((rows.iter().map(virtual_key).collect::<Result<_>>()?, total))
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
        let row = sqlx::query(&self.q(&format!(
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
        virtual_key(&row)
    }

    async fn virtual_keys_changed_since(&self, page: &ChangesPage) -> Result<Vec<VirtualKeyRow>> {
        let conv = Converters {
            any: any_rows::virtual_key,
            sqlite: sqlite_rows::virtual_key,
            pg: pg_rows::virtual_key,
        };
        self.changes_page(&format!("SELECT {VK_COLS} FROM virtual_keys"), page, conv)
            .await
    }
}

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
        let row = sqlx::query(&self.q(&sql))
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
        totals(&row, String::new())
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
        let rows = sqlx::query(&self.q(&sql))
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
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let g: String = r.try_get("grp").map_err(db)?;
                totals(r, g)
            })
            .collect()
    }

    async fn list_usage(&self, workspace: &str, f: &UsageFilter, page: Page) -> Result<(Vec<UsageRow>, i64)> {
        let cond = usage_where(self.backend);
        let sql =
            format!("SELECT {USAGE_COLS} FROM usage_records WHERE {cond} ORDER BY at DESC, id DESC LIMIT $8 OFFSET $9");
        let rows = sqlx::query(&self.q(&sql))
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
        let count = sqlx::query(&self.q(&format!("SELECT COUNT(*) FROM usage_records WHERE {cond}")))
            .bind(workspace)
            .bind(&f.virtual_key_id)
            .bind(&f.platform_key_id)
            .bind(&f.provider_key_id)
            .bind(&f.model)
            .bind(f.from)
            .bind(f.to)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?
            .try_get::<i64, _>(0)
            .map_err(db)?;
        Ok((rows.iter().map(usage_row).collect::<Result<_>>()?, count))
    }
}

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
        let rows = sqlx::query(&self.q(
            "SELECT address, workspace, allow_admin, created_at, created_by FROM wallets WHERE workspace = $1 ORDER BY created_at, address",
        ))
        .bind(workspace)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(wallet).collect()
    }

    async fn find_wallet(&self, address: &str) -> Result<WalletRow> {
        let row = sqlx::query(
            &self.q("SELECT address, workspace, allow_admin, created_at, created_by FROM wallets WHERE address = $1"),
        )
        .bind(address)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or(StoreError::NotFound)?;
        wallet(&row)
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
        let row = sqlx::query(&self.q("SELECT expires_at, used_at FROM web3_tokens WHERE token_hash = $1"))
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(match row {
            None => Web3TokenState::Unknown,
            Some(r) => {
                let used: Option<i64> = r.try_get("used_at").map_err(db)?;
                if used.is_some() {
                    Web3TokenState::AlreadyUsed
                } else {
                    Web3TokenState::Expired
                }
            }
        })
    }
}

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
            Some(k) => sqlx::query(&self.q(&format!(
                "SELECT {RLE_COLS} FROM rate_limit_events WHERE workspace = $1 AND platform_key_id = $2 ORDER BY at DESC, id DESC LIMIT $3"
            )))
            .bind(workspace)
            .bind(k)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?,
            None => sqlx::query(&self.q(&format!(
                "SELECT {RLE_COLS} FROM rate_limit_events WHERE workspace = $1 ORDER BY at DESC, id DESC LIMIT $2"
            )))
            .bind(workspace)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?,
        };
        rows.iter().map(rl_event).collect()
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
        let rows = sqlx::query(&self.q(&list_sql))
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
        let total = sqlx::query(&self.q(&count_sql))
            .bind(workspace)
            .bind(&filter.action)
            .bind(&filter.target_id)
            .bind(&filter.actor_key_id)
            .bind(filter.from)
            .bind(filter.to)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?
            .try_get::<i64, _>(0)
            .map_err(db)?;
        Ok((rows.iter().map(audit).collect::<Result<_>>()?, total))
    }
}

impl FromStr for Backend {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        if s.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if s.starts_with("postgres") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::Open("unknown database scheme".into()))
        }
    }
}
