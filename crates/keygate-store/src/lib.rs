//! keygate's store: one trait per family of records ([`ProviderKeyStore`], [`UsageStore`]…),
//! gathered by [`Store`]; two backends (SQLite, the embedded default, in WAL mode; PostgreSQL
//! for scale-out), migrations for both, and one test suite that runs on both. Callers hold an
//! `Arc<dyn Store>`, on which every family's methods are callable as they are (a trait
//! object's methods include its supertraits'); code that calls them on a [`SqlStore`] itself
//! adds `use keygate_store::prelude::*;`.
//!
//! What must stay true: every tenant record carries its workspace and every query of one is
//! scoped by it; every change bumps the store revision in the same transaction, so caches in
//! this and other processes can load exactly what changed (`*_changed_since`); every change
//! made through the API writes its audit event in the same transaction; secrets are stored
//! only sealed by the vault.
#![forbid(unsafe_code)]

mod audit;
mod meta;
mod platform_keys;
mod provider_keys;
mod rate_limit_events;
mod secrets;
mod sql;
mod usage;
mod virtual_keys;
mod wallets;
mod workspaces;

pub use audit::{AuditEvent, AuditFilter, AuditStore};
pub use meta::{Backend, StoreMeta};
pub use platform_keys::{PlatformKeyRow, PlatformKeyStore};
pub use provider_keys::{ProviderKeyRow, ProviderKeyStore};
pub use rate_limit_events::{RateLimitEventRow, RateLimitEventStore};
pub use secrets::{MasterKeyRow, SecretRow, SecretStore};
pub use sql::SqlStore;
pub use usage::{UsageFilter, UsageGroup, UsageRow, UsageStore, UsageTotals};
pub use virtual_keys::{VirtualKeyRow, VirtualKeyStore};
pub use wallets::{WalletRow, WalletStore, Web3TokenState};
pub use workspaces::{WorkspaceRow, WorkspaceStore};

/// Every family trait and [`Store`]: `use keygate_store::prelude::*;` makes every store method
/// callable on a concrete store such as [`SqlStore`].
pub mod prelude {
    pub use crate::{
        AuditStore, PlatformKeyStore, ProviderKeyStore, RateLimitEventStore, SecretStore, Store, StoreMeta, UsageStore,
        VirtualKeyStore, WalletStore, WorkspaceStore,
    };
}

/// The whole store: every family of records. Implemented for every type that implements all
/// of them, so a backend implements the families and callers hold an `Arc<dyn Store>`.
/// Methods that change data take the audit event to write with the change, or `None` for
/// changes made by keygate itself (such as re-wrapping secrets).
pub trait Store:
    StoreMeta
    + SecretStore
    + WorkspaceStore
    + ProviderKeyStore
    + PlatformKeyStore
    + VirtualKeyStore
    + UsageStore
    + WalletStore
    + RateLimitEventStore
    + AuditStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: StoreMeta
        + SecretStore
        + WorkspaceStore
        + ProviderKeyStore
        + PlatformKeyStore
        + VirtualKeyStore
        + UsageStore
        + WalletStore
        + RateLimitEventStore
        + AuditStore
        + Send
        + Sync
        + 'static
{
}

/// Errors of the store. Messages never contain bound values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("the record changed concurrently; retry")]
    Concurrent,
    #[error("database error: {0}")]
    Db(String),
    #[error("cannot open the database: {0}")]
    Open(String),
    #[error("migration failed: {0}")]
    Migrate(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A 0/1 flag column (both backends store flags as integers), read into a `bool` field of a
/// row through `#[sqlx(try_from = "Flag")]`. Any value but 0 is true, as it always was.
#[derive(sqlx::Type)]
#[sqlx(transparent)]
struct Flag(i64);

impl From<Flag> for bool {
    fn from(flag: Flag) -> bool {
        flag.0 != 0
    }
}

/// A page request: 1-based page, items per page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub page: u32,
    pub limit: u32,
}

impl Page {
    pub fn offset(&self) -> i64 {
        i64::from(self.page.saturating_sub(1)) * i64::from(self.limit)
    }
}

/// One page of a read of the rows changed after a revision, in `(rev, id)` order (keyset
/// pagination: a page continues after the last row of the one before, so rows of one revision
/// split across pages are read once each, and no more than one page is held at a time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangesPage {
    /// Rows changed after this revision.
    pub since: i64,
    /// The `(rev, id)` of the last row of the previous page; `None` for the first page.
    pub after: Option<(i64, String)>,
    /// Rows per page (at least 1).
    pub limit: u32,
}

impl ChangesPage {
    /// Rows per page for cache loads: small enough that a page is a few MiB at most, large
    /// enough that the round trips do not show.
    pub const DEFAULT_LIMIT: u32 = 2_000;

    pub fn first(since: i64, limit: u32) -> Self {
        ChangesPage {
            since,
            after: None,
            limit: limit.max(1),
        }
    }

    /// The page after one that returned `len` rows, the last of them `(rev, id)`; `None` when
    /// that page was the last (it had fewer rows than the limit).
    pub fn next(&self, len: usize, last: Option<(i64, &str)>) -> Option<Self> {
        if len < self.limit as usize {
            return None;
        }
        let (rev, id) = last?;
        Some(ChangesPage {
            since: self.since,
            after: Some((rev, id.to_string())),
            limit: self.limit,
        })
    }
}

/// Opens the store named by `url` (`sqlite://PATH` or `postgres://…`) and migrates it.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    Ok(std::sync::Arc::new(SqlStore::open(url).await?))
}

/// A new record id (UUID v7: time-ordered).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
