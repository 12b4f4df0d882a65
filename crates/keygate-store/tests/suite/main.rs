//! One suite for every backend. Each case (in `changes`, `keys` and `records`) is a function
//! of a [`Db`]; [`cases!`] makes it two named tests, `<case>::sqlite` and `<case>::postgres`,
//! so a failure on one backend is its own red line. This file holds the harness and the
//! fixtures the cases share.
//!
//! What must stay true: the SQLite tests always run; the PostgreSQL tests run when
//! `KEYGATE_TEST_DATABASE_URL` names a server (e.g. `postgres://root@127.0.0.1:5432/test`) and
//! otherwise print a SKIPPED line and pass; each PostgreSQL test runs in a database of its own,
//! created on that server and dropped when the test ends, whether it passed or failed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use keygate_store::prelude::*;
use keygate_store::{
    new_id, AuditEvent, AuditFilter, ChangesPage, Page, PlatformKeyRow, ProviderKeyRow, SecretRow, SqlStore,
    StoreError, WorkspaceRow,
};

/// The environment variable naming the PostgreSQL server to test on.
const PG_ENV: &str = "KEYGATE_TEST_DATABASE_URL";

/// One backend under test.
struct Db {
    /// `sqlite` or `postgres`, for assertion messages.
    name: &'static str,
    store: Arc<dyn Store>,
    /// For changes no API makes (rows sharing a revision, as a bulk import leaves them).
    url: String,
    /// Where the data lives (a temporary directory or a PostgreSQL database), removed when the
    /// test ends. Declared after `store`, so the store is dropped first.
    _sqlite_dir: Option<tempfile::TempDir>,
    _pg_database: Option<PgDatabase>,
}

impl Db {
    /// A store on a new SQLite file.
    async fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("keygate.db").display());
        Db {
            name: "sqlite",
            store: Arc::new(SqlStore::open(&url).await.unwrap()),
            url,
            _sqlite_dir: Some(dir),
            _pg_database: None,
        }
    }

    /// A store on a new database of the PostgreSQL server named by [`PG_ENV`]; `None` (after a
    /// SKIPPED line naming `test`) when the variable is not set.
    async fn postgres(test: &str) -> Option<Db> {
        let base = match std::env::var(PG_ENV) {
            Ok(base) if !base.is_empty() => base,
            _ => {
                eprintln!("SKIPPED {test}: {PG_ENV} is not set");
                return None;
            }
        };
        // The guard exists before the store opens, so a failed open drops the database too.
        let database = PgDatabase::create(&base).await;
        let url = database.url.clone();
        Some(Db {
            name: "postgres",
            store: Arc::new(SqlStore::open(&url).await.unwrap()),
            url,
            _sqlite_dir: None,
            _pg_database: Some(database),
        })
    }

    /// Closes the store's connections (a failing test skips this; dropping still cleans up).
    async fn close(self) {
        self.store.close().await;
    }
}

/// A database created for one test on the server of [`PG_ENV`], dropped with this guard.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create(base: &str) -> PgDatabase {
        use sqlx::Connection;
        let name = format!("kg_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(base).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let mut url = url::Url::parse(base).unwrap();
        url.set_path(&format!("/{name}"));
        PgDatabase {
            admin_url: base.to_string(),
            name,
            url: url.to_string(),
        }
    }
}

impl Drop for PgDatabase {
    /// Drops the database, also while a failed test unwinds. The test's runtime cannot be
    /// blocked on from inside it, so the drop runs on a thread of its own with its own runtime;
    /// `WITH (FORCE)` ends connections the store still holds.
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.close().await.map_err(|e| e.to_string())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cannot drop the test database {}: {e}", self.name),
            Err(_) => eprintln!(
                "cannot drop the test database {}: the dropping thread panicked",
                self.name
            ),
        }
    }
}

/// For each case `group::f(&Db)`, a module `f` with the tests `sqlite` and `postgres`.
macro_rules! cases {
    ($($group:ident :: $case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test]
            async fn sqlite() {
                let db = super::Db::sqlite().await;
                super::$group::$case(&db).await;
                db.close().await;
            }

            #[tokio::test]
            async fn postgres() {
                let Some(db) = super::Db::postgres(concat!(stringify!($case), "::postgres")).await else {
                    return;
                };
                super::$group::$case(&db).await;
                db.close().await;
            }
        }
    )*};
}

cases! {
    changes::changes_are_read_in_pages_without_loss_or_repeat,
    keys::provider_key_lifecycle,
    keys::paging_is_exact,
    keys::platform_keys_and_cache_feed,
    keys::concurrent_creates_of_one_name_admit_exactly_one,
    keys::virtual_keys_by_id_or_slug,
    records::default_workspace_exists_and_migrations_are_idempotent,
    records::workspaces_isolate_records,
    records::master_keys_and_rewrap_feed,
    records::audit_log_filters_and_pages,
    records::audit_events_commit_with_their_change,
    records::usage_is_added_up_and_never_double_counted,
    records::wallets_tokens_and_refusal_events,
    records::pending_records_are_replaced_once_and_reconciled,
    records::flags_read_back_as_written,
}

fn pk(ws: &str, name: &str) -> ProviderKeyRow {
    ProviderKeyRow {
        id: new_id(),
        workspace: ws.into(),
        name: name.into(),
        hub: "openai".into(),
        base_url: None,
        hub_settings: "{}".into(),
        rate_limit_per_interval: Some(60),
        rate_limit_interval: Some(60),
        private: false,
        secret_version: 1,
        secret_hint: Some("abcd".into()),
        created_at: 1,
        updated_at: 1,
        last_used_at: None,
        created_by: None,
        rev: 0,
        deleted_at: None,
    }
}

fn secret(ws: &str, owner: &str, version: i64, sealed: &[u8]) -> SecretRow {
    SecretRow {
        workspace: ws.into(),
        owner_id: owner.into(),
        field: "api_key".into(),
        version,
        master_version: 1,
        sealed: sealed.to_vec(),
        created_at: 1,
        expires_at: None,
    }
}

fn plk(ws: &str, hash: u8) -> PlatformKeyRow {
    PlatformKeyRow {
        id: new_id(),
        workspace: ws.into(),
        key_type: "ADMIN".into(),
        org_admin: false,
        description: "d".into(),
        key_hash: vec![hash; 32],
        last6: "abcdef".into(),
        prev_key_hash: None,
        prev_valid_until: None,
        settings: "{}".into(),
        expires_at: None,
        created_at: 1,
        updated_at: 1,
        last_used_at: None,
        created_by: None,
        rev: 0,
        deleted_at: None,
    }
}

fn event(ws: &str, action: &str, target: &str, at: i64) -> AuditEvent {
    AuditEvent {
        id: new_id(),
        workspace: ws.into(),
        at,
        actor_key_id: Some("actor".into()),
        actor: "api-key".into(),
        action: action.into(),
        target_type: "provider_key".into(),
        target_id: Some(target.into()),
        request_id: Some("req-1".into()),
        details: "{}".into(),
    }
}

fn vk(ws: &str, slug: &str) -> keygate_store::VirtualKeyRow {
    keygate_store::VirtualKeyRow {
        id: format!("vk_{}", uuid::Uuid::new_v4().simple()),
        workspace: ws.into(),
        slug: slug.into(),
        name: slug.into(),
        note: None,
        config: "{}".into(),
        status: "active".into(),
        expires_at: None,
        created_at: 1,
        updated_at: 1,
        created_by: None,
        rev: 0,
        deleted_at: None,
    }
}

const P: Page = Page { page: 1, limit: 100 };

/// Every page of a read of the changes after `since`, `limit` rows a page, as one list: what a
/// cache refresh applies, in order.
macro_rules! all_changes {
    ($s:expr, $method:ident, $since:expr, $limit:expr) => {{
        let mut out = Vec::new();
        let mut page = Some(ChangesPage::first($since, $limit));
        while let Some(p) = page {
            let rows = $s.$method(&p).await.unwrap();
            assert!(rows.len() <= $limit as usize, "a page holds at most its limit");
            page = p.next(rows.len(), rows.last().map(|r| (r.rev, r.id.as_str())));
            out.extend(rows);
        }
        out
    }};
}

mod changes;
mod keys;
mod records;
