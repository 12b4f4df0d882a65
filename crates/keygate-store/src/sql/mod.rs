//! The SQL backends: [`SqlStore`] implements every family trait, one module per family
//! (`provider_keys`, `usage`…); this module holds what they share: opening and migrating the
//! database, the pools, `$N` placeholder rewriting, the revision counter, error mapping.
//!
//! SQLite and PostgreSQL run the same statements through sqlx's `Any` driver, written in the
//! dialect both share (Unix-millisecond integers, 0/1 flags, JSON as text, `$N` placeholders
//! rewritten to SQLite's `?N`); each has its own migrations and connection set-up (SQLite:
//! WAL, busy timeout, one writer at a time).
//!
//! The one exception is the bulk read of changes that loads the caches (every key at start):
//! it runs through a small second pool of the backend's own driver, so its rows are decoded
//! directly instead of through `AnyRow` (which converts every row and its column metadata),
//! and SQLite's worker thread hands rows over a page at a time instead of 50 at a time. The
//! other is the usage writer of a SQLite file (see `usage`).
//!
//! What must stay true: every change takes its revision from [`SqlStore::next_rev`] inside its
//! own transaction; no bound value and no database password reaches an error message.

mod audit;
mod platform_keys;
mod provider_keys;
mod rate_limit_events;
mod secrets;
mod usage;
mod virtual_keys;
mod wallets;
mod workspaces;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{AnyPool, FromRow};

use crate::StoreMeta;
use crate::{Backend, ChangesPage, Result, StoreError};
use usage::UsageWriter;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The store on SQLite or PostgreSQL.
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    bulk: Bulk,
    usage_writer: Option<UsageWriter>,
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
        sqlx::query_scalar(&self.q("UPDATE kg_meta SET ivalue = ivalue + 1 WHERE key = 'rev' RETURNING ivalue"))
            .fetch_one(&mut **tx)
            .await
            .map_err(db)
    }

    /// One page of `select` (a `SELECT … FROM table` of a table with `rev` and `id`) in
    /// `(rev, id)` order: the rows after `page.since`, after `page.after`, at most `page.limit`,
    /// read through the typed pool and decoded by `T`'s `FromRow` for its driver.
    /// Both forms are one range read of the table's `(rev, id)` index (a row after `after` has
    /// a revision above `since` already); an `OR` of the two conditions would not be.
    async fn changes_page<T>(&self, select: &str, page: &ChangesPage) -> Result<Vec<T>>
    where
        T: Send + Unpin,
        T: for<'r> FromRow<'r, AnyRow> + for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow>,
    {
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
                let q = sqlx::query_as(&sql);
                let q = match after {
                    None => q.bind(page.since),
                    Some((rev, id)) => q.bind(rev).bind(id),
                };
                q.bind(limit).fetch_all($pool).await.map_err(db)
            }};
        }
        match &self.bulk {
            Bulk::Sqlite(pool) => fetch!(pool),
            Bulk::Postgres(pool) => fetch!(pool),
            Bulk::None => fetch!(&self.pool),
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

fn bool_i(b: bool) -> i64 {
    i64::from(b)
}

#[async_trait]
impl StoreMeta for SqlStore {
    fn backend(&self) -> Backend {
        self.backend
    }

    async fn revision(&self) -> Result<i64> {
        sqlx::query_scalar(&self.q("SELECT ivalue FROM kg_meta WHERE key = 'rev'"))
            .fetch_one(&self.pool)
            .await
            .map_err(db)
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
