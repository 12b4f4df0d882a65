//! One suite for every backend. Each case below is a function of a [`Db`]; [`cases!`] makes
//! it two named tests, `<case>::sqlite` and `<case>::postgres`, so a failure on one backend is
//! its own red line.
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

/// For each case `f(&Db)`, a module `f` with the tests `sqlite` and `postgres`.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test]
            async fn sqlite() {
                let db = super::Db::sqlite().await;
                super::$case(&db).await;
                db.close().await;
            }

            #[tokio::test]
            async fn postgres() {
                let Some(db) = super::Db::postgres(concat!(stringify!($case), "::postgres")).await else {
                    return;
                };
                super::$case(&db).await;
                db.close().await;
            }
        }
    )*};
}

cases! {
    changes_are_read_in_pages_without_loss_or_repeat,
    default_workspace_exists_and_migrations_are_idempotent,
    provider_key_lifecycle,
    paging_is_exact,
    workspaces_isolate_records,
    platform_keys_and_cache_feed,
    master_keys_and_rewrap_feed,
    audit_log_filters_and_pages,
    concurrent_creates_of_one_name_admit_exactly_one,
    audit_events_commit_with_their_change,
    virtual_keys_by_id_or_slug,
    usage_is_added_up_and_never_double_counted,
    wallets_tokens_and_refusal_events,
    pending_records_are_replaced_once_and_reconciled,
    flags_read_back_as_written,
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

/// Runs one statement on the database directly.
async fn exec_raw(url: &str, sql: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// Gives the rows `ids` of `table` one revision (the newest of them), as a bulk insert or an
/// import leaves many rows: the case where a page boundary falls inside one revision.
async fn share_revision(db: &Db, table: &str, ids: &[&str]) {
    let list = ids.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(", ");
    exec_raw(
        &db.url,
        &format!("UPDATE {table} SET rev = (SELECT MAX(rev) FROM {table} WHERE id IN ({list})) WHERE id IN ({list})"),
    )
    .await;
}

/// The middle five of seven ids.
fn shared(ids: &[String]) -> Vec<&str> {
    ids[1..6].iter().map(String::as_str).collect()
}

/// The ids read, checked to be in revision order, each once. (The order of ids within a
/// revision is the database's collation, which need not be Rust's.)
fn ids_in_order<'a>(rows: impl Iterator<Item = (i64, &'a str)>) -> Vec<String> {
    let rows: Vec<(i64, &str)> = rows.collect();
    assert!(
        rows.windows(2).all(|w| w[0].0 <= w[1].0),
        "revisions ascending: {rows:?}"
    );
    let ids: Vec<String> = rows.iter().map(|(_, id)| id.to_string()).collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "each row once: {rows:?}");
    ids
}

async fn changes_are_read_in_pages_without_loss_or_repeat(db: &Db) {
    let s = &db.store;
    let rev0 = s.revision().await.unwrap();
    let mut plks = Vec::new();
    let mut vks = Vec::new();
    let mut pks = Vec::new();
    for i in 0..7u8 {
        plks.push(s.create_platform_key(&plk("default", 40 + i), None).await.unwrap().id);
        vks.push(
            s.create_virtual_key(&vk("default", &format!("paged-{i}")), None)
                .await
                .unwrap()
                .id,
        );
        pks.push(
            s.create_provider_key(&pk("default", &format!("paged-{i}")), &[], None)
                .await
                .unwrap()
                .id,
        );
    }
    // Five of the seven of each kind share one revision: pages of 1, 2 and 3 rows end
    // inside it, a page of 7 ends exactly at the end (and the next page is empty).
    share_revision(db, "platform_keys", &shared(&plks)).await;
    share_revision(db, "virtual_keys", &shared(&vks)).await;
    share_revision(db, "provider_keys", &shared(&pks)).await;
    let sorted = |ids: &[String]| {
        let mut v = ids.to_vec();
        v.sort();
        v
    };
    for limit in [1u32, 2, 3, 7, 1_000] {
        let rows = all_changes!(s, platform_keys_changed_since, rev0, limit);
        let got = ids_in_order(rows.iter().map(|r| (r.rev, r.id.as_str())));
        assert_eq!(
            sorted(&got),
            sorted(&plks),
            "{} platform keys, pages of {limit}",
            db.name
        );
        let rows = all_changes!(s, virtual_keys_changed_since, rev0, limit);
        let got = ids_in_order(rows.iter().map(|r| (r.rev, r.id.as_str())));
        assert_eq!(sorted(&got), sorted(&vks), "{} virtual keys, pages of {limit}", db.name);
        let rows = all_changes!(s, provider_keys_changed_since, rev0, limit);
        let got = ids_in_order(rows.iter().map(|r| (r.rev, r.id.as_str())));
        assert_eq!(
            sorted(&got),
            sorted(&pks),
            "{} provider keys, pages of {limit}",
            db.name
        );
    }
    // Only what changed after `since`: after the shared revision, the last key alone.
    let shared_rev = s.get_platform_key("default", &plks[1]).await.unwrap().rev;
    let after_shared = all_changes!(s, platform_keys_changed_since, shared_rev, 2);
    let got: Vec<&str> = after_shared.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(got, [plks[6].as_str()], "{}", db.name);

    // A change between pages: a row already read moves to a new revision and is read
    // again; a row not yet read is deleted and read once, deleted. Applying the pages in
    // order leaves every key as it now is.
    let first = ChangesPage::first(rev0, 3);
    let page1 = s.platform_keys_changed_since(&first).await.unwrap();
    assert_eq!(page1.len(), 3);
    let read_already = page1[0].clone();
    let mut updated = read_already.clone();
    updated.description = "changed between pages".into();
    s.update_platform_key(&updated, None).await.unwrap();
    let not_yet: Vec<String> = plks
        .iter()
        .filter(|id| !page1.iter().any(|r| &r.id == *id))
        .cloned()
        .collect();
    s.delete_platform_key("default", &not_yet[0], 77, None).await.unwrap();
    let mut applied: std::collections::HashMap<String, PlatformKeyRow> = std::collections::HashMap::new();
    for r in page1.iter().cloned() {
        applied.insert(r.id.clone(), r);
    }
    let mut page = first.next(page1.len(), page1.last().map(|r| (r.rev, r.id.as_str())));
    let mut later = Vec::new();
    while let Some(p) = page {
        let rows = s.platform_keys_changed_since(&p).await.unwrap();
        page = p.next(rows.len(), rows.last().map(|r| (r.rev, r.id.as_str())));
        later.extend(rows);
    }
    assert_eq!(later.iter().filter(|r| r.id == not_yet[0]).count(), 1, "{}", db.name);
    assert_eq!(
        later.iter().filter(|r| r.id == read_already.id).count(),
        1,
        "{}",
        db.name
    );
    for r in later {
        applied.insert(r.id.clone(), r);
    }
    assert_eq!(applied.len(), 7, "{}", db.name);
    assert_eq!(applied[&read_already.id].description, "changed between pages");
    assert_eq!(applied[&not_yet[0]].deleted_at, Some(77));
    for id in &plks {
        let now = s.get_platform_key_any("default", id).await.unwrap();
        assert_eq!(applied[id], now, "{} {id}", db.name);
    }
}

async fn default_workspace_exists_and_migrations_are_idempotent(db: &Db) {
    let ws = db.store.get_workspace("default").await.unwrap();
    assert_eq!(ws.id, "default", "{}", db.name);
    // Opening the same database again runs no migration twice.
    let again = SqlStore::open(&db.url).await.unwrap();
    assert_eq!(
        again.get_workspace("default").await.unwrap().id,
        "default",
        "{}",
        db.name
    );
    again.close().await;
}

#[tokio::test]
async fn a_reopened_sqlite_file_runs_no_migration_twice() {
    // Opening the same SQLite file again runs no migration twice.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("x.db").display());
    let a = SqlStore::open(&url).await.unwrap();
    a.close().await;
    let b = SqlStore::open(&url).await.unwrap();
    assert_eq!(b.get_workspace("default").await.unwrap().id, "default");
}

async fn provider_key_lifecycle(db: &Db) {
    let s = &db.store;
    let rev0 = s.revision().await.unwrap();
    let row = pk("default", "openai-prod");
    let created = s
        .create_provider_key(
            &row,
            &[secret("default", &row.id, 1, b"sealed-1")],
            Some(&event("default", "provider_key.create", &row.id, 10)),
        )
        .await
        .unwrap();
    assert!(created.rev > rev0, "{}", db.name);
    assert_eq!(
        s.get_provider_key_by_name("default", "openai-prod").await.unwrap().id,
        row.id
    );
    // Names are unique per workspace among live keys.
    let dup = s.create_provider_key(&pk("default", "openai-prod"), &[], None).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{}: {dup:?}", db.name);
    // Rotation: new version, old kept for a grace period.
    let mut next = created.clone();
    next.secret_version = 2;
    next.updated_at = 20;
    let updated = s
        .update_provider_key(
            &next,
            &[secret("default", &row.id, 2, b"sealed-2")],
            &[1],
            Some(1_000),
            None,
        )
        .await
        .unwrap();
    assert_eq!(updated.secret_version, 2);
    let secrets = s.secrets_of("default", &row.id).await.unwrap();
    assert_eq!(secrets.len(), 2);
    assert_eq!(secrets.iter().find(|x| x.version == 1).unwrap().expires_at, Some(1_000));
    assert_eq!(s.purge_expired_secrets(999).await.unwrap(), 0);
    assert_eq!(s.purge_expired_secrets(1_001).await.unwrap(), 1);
    assert_eq!(s.secrets_of("default", &row.id).await.unwrap().len(), 1);
    // Rename onto a taken name conflicts.
    let other = s.create_provider_key(&pk("default", "other"), &[], None).await.unwrap();
    let mut clash = other.clone();
    clash.name = "openai-prod".into();
    assert!(matches!(
        s.update_provider_key(&clash, &[], &[], None, None).await,
        Err(StoreError::Conflict(_))
    ));
    // Changes are visible to caches.
    let changed = all_changes!(s, provider_keys_changed_since, rev0, 1_000);
    assert!(changed.iter().any(|k| k.id == row.id) && changed.iter().any(|k| k.id == other.id));
    // Delete: gone, secrets shredded, name free again, change visible.
    let rev_before_delete = s.revision().await.unwrap();
    s.delete_provider_key("default", &row.id, 30, None).await.unwrap();
    assert!(matches!(
        s.get_provider_key("default", &row.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(s.secrets_of("default", &row.id).await.unwrap().is_empty());
    assert!(matches!(
        s.delete_provider_key("default", &row.id, 31, None).await,
        Err(StoreError::NotFound)
    ));
    let changed = all_changes!(s, provider_keys_changed_since, rev_before_delete, 1_000);
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].deleted_at, Some(30));
    s.create_provider_key(&pk("default", "openai-prod"), &[], None)
        .await
        .unwrap();
    let (list, total) = s.list_provider_keys("default", P).await.unwrap();
    assert_eq!((list.len(), total), (2, 2), "{}", db.name);
}

async fn paging_is_exact(db: &Db) {
    for i in 0..7 {
        db.store
            .create_provider_key(&pk("default", &format!("k{i}")), &[], None)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    for page in 1..=4 {
        let (items, total) = db
            .store
            .list_provider_keys("default", Page { page, limit: 3 })
            .await
            .unwrap();
        assert_eq!(total, 7);
        assert!(items.len() <= 3);
        seen.extend(items.into_iter().map(|k| k.name));
    }
    assert_eq!(seen, (0..7).map(|i| format!("k{i}")).collect::<Vec<_>>(), "{}", db.name);
}

async fn workspaces_isolate_records(db: &Db) {
    let s = &db.store;
    s.create_workspace(
        &WorkspaceRow {
            id: "team-a".into(),
            name: "A".into(),
            created_at: 1,
            updated_at: 1,
        },
        None,
    )
    .await
    .unwrap();
    let dup = s
        .create_workspace(
            &WorkspaceRow {
                id: "team-a".into(),
                name: "A".into(),
                created_at: 1,
                updated_at: 1,
            },
            None,
        )
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))));
    let a = s
        .create_provider_key(&pk("team-a", "shared-name"), &[], None)
        .await
        .unwrap();
    // The same name in another workspace is another key.
    let d = s
        .create_provider_key(&pk("default", "shared-name"), &[], None)
        .await
        .unwrap();
    assert!(matches!(
        s.get_provider_key("default", &a.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.delete_provider_key("team-a", &d.id, 5, None).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.list_provider_keys("team-a", P).await.unwrap().1, 1);
    // A workspace that holds keys cannot be deleted; an empty one can.
    assert!(matches!(
        s.delete_workspace("team-a", None).await,
        Err(StoreError::Conflict(_))
    ));
    s.delete_provider_key("team-a", &a.id, 6, None).await.unwrap();
    let renamed = s.rename_workspace("team-a", "Team A", 7, None).await.unwrap();
    assert_eq!(renamed.name, "Team A");
    s.delete_workspace("team-a", None).await.unwrap();
    assert!(matches!(s.get_workspace("team-a").await, Err(StoreError::NotFound)));
    let (list, total) = s.list_workspaces(P).await.unwrap();
    assert_eq!((list.len(), total), (1, 1), "{}", db.name);
}

async fn platform_keys_and_cache_feed(db: &Db) {
    let s = &db.store;
    let rev0 = s.revision().await.unwrap();
    let a = s.create_platform_key(&plk("default", 1), None).await.unwrap();
    let b = s.create_platform_key(&plk("default", 2), None).await.unwrap();
    // A hash is unique.
    assert!(s.create_platform_key(&plk("default", 1), None).await.is_err());
    assert_eq!(s.count_platform_keys().await.unwrap(), 2);
    let mut rotated = a.clone();
    rotated.prev_key_hash = Some(a.key_hash.clone());
    rotated.prev_valid_until = Some(500);
    rotated.key_hash = vec![3; 32];
    let rotated = s.update_platform_key(&rotated, None).await.unwrap();
    assert_eq!(rotated.prev_key_hash.as_deref(), Some(&[1u8; 32][..]));
    let rev1 = s.revision().await.unwrap();
    s.delete_platform_key("default", &b.id, 9, None).await.unwrap();
    let changed = all_changes!(s, platform_keys_changed_since, rev1, 1_000);
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].deleted_at, Some(9));
    assert_eq!(all_changes!(s, platform_keys_changed_since, rev0, 1_000).len(), 2);
    // Touching last use is not a change.
    let rev2 = s.revision().await.unwrap();
    s.touch_platform_keys(&[(a.id.clone(), 77)]).await.unwrap();
    assert_eq!(s.revision().await.unwrap(), rev2);
    assert_eq!(
        s.get_platform_key("default", &a.id).await.unwrap().last_used_at,
        Some(77)
    );
    assert!(matches!(
        s.get_platform_key("other", &a.id).await,
        Err(StoreError::NotFound)
    ));
    let (list, total) = s.list_platform_keys("default", P).await.unwrap();
    assert_eq!((list.len(), total), (1, 1), "{}", db.name);
}

async fn master_keys_and_rewrap_feed(db: &Db) {
    let s = &db.store;
    s.insert_master_key(1, &[9; 32], 1).await.unwrap();
    assert!(matches!(
        s.insert_master_key(1, &[9; 32], 1).await,
        Err(StoreError::Conflict(_))
    ));
    let row = pk("default", "k");
    s.create_provider_key(&row, &[secret("default", &row.id, 1, b"v1")], None)
        .await
        .unwrap();
    let hash = s
        .ensure_secret(&SecretRow {
            owner_id: "_hash".into(),
            field: "hmac".into(),
            ..secret("default", "_hash", 1, b"first")
        })
        .await
        .unwrap();
    // ensure_secret keeps the first value.
    let again = s
        .ensure_secret(&SecretRow {
            owner_id: "_hash".into(),
            field: "hmac".into(),
            ..secret("default", "_hash", 1, b"second")
        })
        .await
        .unwrap();
    assert_eq!(again.sealed, hash.sealed);
    assert_eq!(s.count_secrets_not_under(2).await.unwrap(), 2);
    let todo = s.secrets_not_under(2, 10).await.unwrap();
    assert_eq!(todo.len(), 2);
    for row in &todo {
        assert!(s.replace_sealed(row, &row.sealed, 2, b"rewrapped").await.unwrap());
        // A second replace with the stale value does nothing.
        assert!(!s.replace_sealed(row, &row.sealed, 2, b"again").await.unwrap());
    }
    assert_eq!(s.count_secrets_not_under(2).await.unwrap(), 0);
    s.insert_master_key(2, &[8; 32], 2).await.unwrap();
    s.retire_master_key(1, 3).await.unwrap();
    let keys = s.master_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].retired_at, Some(3));
    assert_eq!(keys[1].retired_at, None, "{}", db.name);
}

async fn audit_log_filters_and_pages(db: &Db) {
    let s = &db.store;
    for i in 0..5 {
        s.append_audit(&event(
            "default",
            if i % 2 == 0 { "a.create" } else { "a.delete" },
            &format!("t{i}"),
            100 + i,
        ))
        .await
        .unwrap();
    }
    s.append_audit(&event("other", "a.create", "x", 1)).await.unwrap();
    let (all, total) = s.list_audit("default", &AuditFilter::default(), P).await.unwrap();
    assert_eq!((all.len(), total), (5, 5));
    assert_eq!(all[0].at, 104, "newest first");
    let f = AuditFilter {
        action: Some("a.create".into()),
        ..Default::default()
    };
    assert_eq!(s.list_audit("default", &f, P).await.unwrap().1, 3);
    let f = AuditFilter {
        from: Some(101),
        to: Some(103),
        ..Default::default()
    };
    assert_eq!(s.list_audit("default", &f, P).await.unwrap().1, 2);
    let f = AuditFilter {
        target_id: Some("t4".into()),
        ..Default::default()
    };
    assert_eq!(s.list_audit("default", &f, P).await.unwrap().0[0].action, "a.create");
    let (page2, _) = s
        .list_audit("default", &AuditFilter::default(), Page { page: 2, limit: 2 })
        .await
        .unwrap();
    assert_eq!(
        page2.iter().map(|e| e.at).collect::<Vec<_>>(),
        vec![102, 101],
        "{}",
        db.name
    );
}

async fn concurrent_creates_of_one_name_admit_exactly_one(db: &Db) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = db.store.clone();
        tasks.push(tokio::spawn(async move {
            s.create_provider_key(&pk("default", "race"), &[], None).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("{}: unexpected {e}", db.name),
        }
    }
    assert_eq!(ok, 1, "{}", db.name);
}

async fn audit_events_commit_with_their_change(db: &Db) {
    let s = &db.store;
    let row = pk("default", "audited");
    s.create_provider_key(&row, &[], Some(&event("default", "provider_key.create", &row.id, 1)))
        .await
        .unwrap();
    // A failing change writes no audit event.
    let _ = s
        .create_provider_key(
            &pk("default", "audited"),
            &[],
            Some(&event("default", "provider_key.create", "dup", 2)),
        )
        .await;
    let (events, _) = s.list_audit("default", &AuditFilter::default(), P).await.unwrap();
    assert_eq!(events.len(), 1, "{}", db.name);
    assert_eq!(events[0].target_id.as_deref(), Some(row.id.as_str()));
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

async fn virtual_keys_by_id_or_slug(db: &Db) {
    let s = &db.store;
    let rev0 = s.revision().await.unwrap();
    let a = s
        .create_virtual_key(&vk("default", "openai-prod-1a2b"), None)
        .await
        .unwrap();
    // Slugs are unique across workspaces among live keys.
    assert!(matches!(
        s.create_virtual_key(&vk("other", "openai-prod-1a2b"), None).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.get_virtual_key("default", &a.id).await.unwrap().slug,
        "openai-prod-1a2b"
    );
    assert_eq!(s.get_virtual_key("default", "openai-prod-1a2b").await.unwrap().id, a.id);
    assert!(matches!(
        s.get_virtual_key("other", &a.id).await,
        Err(StoreError::NotFound)
    ));
    let mut b = a.clone();
    b.status = "disabled".into();
    b.note = Some("n".into());
    let b = s.update_virtual_key(&b, None).await.unwrap();
    assert_eq!(b.status, "disabled");
    assert!(b.rev > a.rev);
    assert_eq!(all_changes!(s, virtual_keys_changed_since, rev0, 1_000).len(), 1);
    s.delete_virtual_key("default", &a.id, 5, None).await.unwrap();
    assert!(matches!(
        s.get_virtual_key("default", &a.id).await,
        Err(StoreError::NotFound)
    ));
    // The slug is free again once deleted.
    s.create_virtual_key(&vk("default", "openai-prod-1a2b"), None)
        .await
        .unwrap();
    assert_eq!(s.list_virtual_keys("default", P).await.unwrap().1, 1, "{}", db.name);
}

async fn usage_is_added_up_and_never_double_counted(db: &Db) {
    use keygate_store::{UsageFilter, UsageGroup, UsageRow};
    let s = &db.store;
    let day = 86_400_000i64;
    let mk = |id: &str, at: i64, model: &str, vk: &str, cost: i64, status: i64| UsageRow {
        id: id.into(),
        workspace: "default".into(),
        at,
        virtual_key_id: Some(vk.into()),
        platform_key_id: Some("pk1".into()),
        provider_key_id: Some("prov1".into()),
        hub: Some("openai".into()),
        model: Some(model.into()),
        endpoint: "chat".into(),
        status_code: status,
        prompt_tokens: 10,
        completion_tokens: 5,
        cached_tokens: 2,
        cost_nano: cost,
        latency_ms: 3,
        ..Default::default()
    };
    let rows = vec![
        mk("u1", day, "gpt-4o-mini", "vk_a", 100, 200),
        mk("u2", day + 5, "gpt-4o", "vk_a", 1_000, 200),
        mk("u3", 2 * day, "gpt-4o-mini", "vk_b", 50, 502),
    ];
    s.insert_usage(&rows).await.unwrap();
    s.insert_usage(&rows[..1]).await.unwrap();
    let t = s.usage_totals("default", &UsageFilter::default()).await.unwrap();
    assert_eq!(
        (
            t.requests,
            t.errors,
            t.prompt_tokens,
            t.completion_tokens,
            t.cached_tokens,
            t.cost_nano
        ),
        (3, 1, 30, 15, 6, 1_150)
    );
    let f = UsageFilter {
        virtual_key_id: Some("vk_a".into()),
        ..Default::default()
    };
    assert_eq!(s.usage_totals("default", &f).await.unwrap().cost_nano, 1_100);
    let f = UsageFilter {
        from: Some(day + 1),
        to: Some(2 * day + 1),
        ..Default::default()
    };
    assert_eq!(s.usage_totals("default", &f).await.unwrap().requests, 2);
    assert_eq!(
        s.usage_totals("other", &UsageFilter::default()).await.unwrap().requests,
        0
    );
    let by_day = s
        .usage_grouped("default", &UsageFilter::default(), UsageGroup::Day, 100)
        .await
        .unwrap();
    assert_eq!(
        by_day
            .iter()
            .map(|g| (g.group.as_str(), g.requests))
            .collect::<Vec<_>>(),
        vec![("1", 2), ("2", 1)]
    );
    let by_model = s
        .usage_grouped("default", &UsageFilter::default(), UsageGroup::Model, 100)
        .await
        .unwrap();
    assert_eq!(
        by_model
            .iter()
            .map(|g| (g.group.as_str(), g.cost_nano))
            .collect::<Vec<_>>(),
        vec![("gpt-4o", 1_000), ("gpt-4o-mini", 150)]
    );
    let (list, total) = s.list_usage("default", &UsageFilter::default(), P).await.unwrap();
    assert_eq!((list.len(), total), (3, 3));
    assert_eq!(list[0].id, "u3", "{}", db.name);
}

async fn wallets_tokens_and_refusal_events(db: &Db) {
    use keygate_store::{RateLimitEventRow, WalletRow, Web3TokenState};
    let s = &db.store;
    let w = WalletRow {
        address: "0xabc".into(),
        workspace: "default".into(),
        allow_admin: false,
        created_at: 1,
        created_by: None,
    };
    s.create_wallet(&w, None).await.unwrap();
    assert!(matches!(s.create_wallet(&w, None).await, Err(StoreError::Conflict(_))));
    assert_eq!(s.find_wallet("0xabc").await.unwrap().workspace, "default");
    assert_eq!(s.list_wallets("default").await.unwrap().len(), 1);
    assert!(s.list_wallets("other").await.unwrap().is_empty());
    assert!(matches!(
        s.delete_wallet("other", "0xabc", None).await,
        Err(StoreError::NotFound)
    ));
    s.delete_wallet("default", "0xabc", None).await.unwrap();
    assert!(matches!(s.find_wallet("0xabc").await, Err(StoreError::NotFound)));
    // A token is good once, before it expires.
    s.insert_web3_token(&[1; 32], 1_000).await.unwrap();
    s.insert_web3_token(&[2; 32], 1_000).await.unwrap();
    assert_eq!(
        s.consume_web3_token(&[1; 32], 500).await.unwrap(),
        Web3TokenState::Valid
    );
    assert_eq!(
        s.consume_web3_token(&[1; 32], 501).await.unwrap(),
        Web3TokenState::AlreadyUsed
    );
    assert_eq!(
        s.consume_web3_token(&[2; 32], 1_000).await.unwrap(),
        Web3TokenState::Expired
    );
    assert_eq!(
        s.consume_web3_token(&[3; 32], 1).await.unwrap(),
        Web3TokenState::Unknown
    );
    let ev = |id: &str, key: &str, at: i64| RateLimitEventRow {
        id: id.into(),
        workspace: "default".into(),
        at,
        platform_key_id: Some(key.into()),
        limit_type: "RPM".into(),
        limit_value: 10,
        scope: "api_key".into(),
        ..Default::default()
    };
    s.insert_rate_limit_events(&[ev("e1", "k1", 1), ev("e2", "k2", 2), ev("e3", "k1", 3)])
        .await
        .unwrap();
    s.insert_rate_limit_events(&[ev("e1", "k1", 1)]).await.unwrap();
    let mine = s.list_rate_limit_events("default", Some("k1"), 50).await.unwrap();
    assert_eq!(mine.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["e3", "e1"]);
    assert_eq!(s.list_rate_limit_events("default", None, 2).await.unwrap().len(), 2);
    assert!(
        s.list_rate_limit_events("other", None, 50).await.unwrap().is_empty(),
        "{}",
        db.name
    );
}

async fn pending_records_are_replaced_once_and_reconciled(db: &Db) {
    use keygate_store::{UsageFilter, UsageRow};
    let s = &db.store;
    let row = |id: &str, status: i64, tokens: i64| UsageRow {
        id: id.into(),
        workspace: "default".into(),
        at: 10,
        endpoint: "chat".into(),
        status_code: status,
        prompt_tokens: tokens,
        ..Default::default()
    };
    s.insert_usage(&[row("a", 0, 100), row("b", 0, 50)]).await.unwrap();
    // Pending records are not counted yet.
    assert_eq!(
        s.usage_totals("default", &UsageFilter::default())
            .await
            .unwrap()
            .requests,
        0
    );
    s.insert_usage(&[row("a", 200, 9)]).await.unwrap();
    // Settling twice never double-counts or overwrites the final record.
    s.insert_usage(&[row("a", 200, 999)]).await.unwrap();
    let t = s.usage_totals("default", &UsageFilter::default()).await.unwrap();
    assert_eq!((t.requests, t.prompt_tokens), (1, 9), "{}", db.name);
    assert_eq!(s.reconcile_pending_usage(11).await.unwrap(), 1);
    assert_eq!(s.reconcile_pending_usage(11).await.unwrap(), 0);
    let t = s.usage_totals("default", &UsageFilter::default()).await.unwrap();
    assert_eq!(
        (t.requests, t.prompt_tokens, t.errors, t.estimated),
        (2, 59, 1, 1),
        "{}",
        db.name
    );
    // One batch holding a record's pending, final and a late pending copy, among 150 others
    // (several multi-row statements): the final record stands, every other row once.
    let mut batch = vec![row("c", 0, 1), row("c", 200, 5), row("c", 0, 7)];
    batch.extend((0..150).map(|i| row(&format!("m{i}"), 200, 1)));
    s.insert_usage(&batch).await.unwrap();
    let t = s.usage_totals("default", &UsageFilter::default()).await.unwrap();
    assert_eq!(
        (t.requests, t.prompt_tokens),
        (2 + 1 + 150, 59 + 5 + 150),
        "{}",
        db.name
    );
}

/// Flags are 0/1 integers in both databases: a true flag reads back true through every row
/// type that has one (a false one is read in every other case).
async fn flags_read_back_as_written(db: &Db) {
    use keygate_store::{UsageFilter, UsageRow, WalletRow};
    let s = &db.store;
    let private_key = ProviderKeyRow {
        private: true,
        ..pk("default", "private")
    };
    assert!(s.create_provider_key(&private_key, &[], None).await.unwrap().private);
    assert!(
        s.get_provider_key("default", &private_key.id).await.unwrap().private,
        "{}",
        db.name
    );
    let admin = PlatformKeyRow {
        org_admin: true,
        ..plk("default", 90)
    };
    assert!(s.create_platform_key(&admin, None).await.unwrap().org_admin);
    assert!(
        s.get_platform_key("default", &admin.id).await.unwrap().org_admin,
        "{}",
        db.name
    );
    let wallet = WalletRow {
        address: "0xadmin".into(),
        workspace: "default".into(),
        allow_admin: true,
        created_at: 1,
        created_by: None,
    };
    s.create_wallet(&wallet, None).await.unwrap();
    assert!(s.find_wallet("0xadmin").await.unwrap().allow_admin, "{}", db.name);
    let usage = UsageRow {
        id: "flagged".into(),
        workspace: "default".into(),
        at: 1,
        endpoint: "chat".into(),
        status_code: 200,
        estimated: true,
        stream: true,
        ..Default::default()
    };
    s.insert_usage(std::slice::from_ref(&usage)).await.unwrap();
    let (listed, _) = s.list_usage("default", &UsageFilter::default(), P).await.unwrap();
    assert_eq!(listed, vec![usage], "{}", db.name);
}
