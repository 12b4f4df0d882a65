//! keygate's store: one [`Store`] trait, two backends (SQLite, the embedded default, in WAL
//! mode; PostgreSQL for scale-out), migrations for both, and one test suite that runs on both.
//!
//! What must stay true: every tenant record carries its workspace and every query of one is
//! scoped by it; every change bumps the store revision in the same transaction, so caches in
//! this and other processes can load exactly what changed (`*_changed_since`); every change
//! made through the API writes its audit event in the same transaction; secrets are stored
//! only sealed by the vault.
#![forbid(unsafe_code)]

mod sql;

pub use sql::SqlStore;

use async_trait::async_trait;

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

/// What using a wallet sign-in token found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Web3TokenState {
    Valid,
    Unknown,
    Expired,
    AlreadyUsed,
}

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
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

/// A registered master-key version.
#[derive(Clone, Debug)]
pub struct MasterKeyRow {
    pub version: i64,
    pub check_value: Vec<u8>,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

/// A sealed secret: one field of one record at one secret version.
#[derive(Clone)]
pub struct SecretRow {
    pub workspace: String,
    pub owner_id: String,
    pub field: String,
    pub version: i64,
    pub master_version: i64,
    pub sealed: Vec<u8>,
    pub created_at: i64,
    /// Set on a superseded version kept for a grace period; never on the current one.
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for SecretRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRow")
            .field("workspace", &self.workspace)
            .field("owner_id", &self.owner_id)
            .field("field", &self.field)
            .field("version", &self.version)
            .field("master_version", &self.master_version)
            .field("sealed_len", &self.sealed.len())
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspaceRow {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderKeyRow {
    pub id: String,
    pub workspace: String,
    pub name: String,
    pub hub: String,
    pub base_url: Option<String>,
    /// Public hub settings as JSON.
    pub hub_settings: String,
    pub rate_limit_per_interval: Option<i64>,
    pub rate_limit_interval: Option<i64>,
    pub private: bool,
    pub secret_version: i64,
    pub secret_hint: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    pub created_by: Option<String>,
    pub rev: i64,
    pub deleted_at: Option<i64>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct PlatformKeyRow {
    pub id: String,
    pub workspace: String,
    pub key_type: String,
    /// May act on every workspace.
    pub org_admin: bool,
    pub description: String,
    pub key_hash: Vec<u8>,
    pub last6: String,
    /// The hash of the secret before the last rotation, valid until `prev_valid_until`.
    pub prev_key_hash: Option<Vec<u8>>,
    pub prev_valid_until: Option<i64>,
    /// Limits and policy as JSON (owned by the API layer).
    pub settings: String,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    pub created_by: Option<String>,
    pub rev: i64,
    pub deleted_at: Option<i64>,
}

impl std::fmt::Debug for PlatformKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformKeyRow")
            .field("id", &self.id)
            .field("workspace", &self.workspace)
            .field("key_type", &self.key_type)
            .field("org_admin", &self.org_admin)
            .field("last6", &self.last6)
            .field("rev", &self.rev)
            .field("deleted_at", &self.deleted_at)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualKeyRow {
    /// `vk_…`.
    pub id: String,
    pub workspace: String,
    /// Unique among live virtual keys.
    pub slug: String,
    pub name: String,
    pub note: Option<String>,
    /// Targets, strategy, models, aliases, budget, limits… as JSON (owned by the API layer).
    pub config: String,
    /// `active` or `disabled` (expiry and exhaustion are derived).
    pub status: String,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub created_by: Option<String>,
    pub rev: i64,
    pub deleted_at: Option<i64>,
}

/// One gateway request, metered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageRow {
    pub id: String,
    pub workspace: String,
    pub at: i64,
    pub request_id: Option<String>,
    pub platform_key_id: Option<String>,
    pub virtual_key_id: Option<String>,
    pub provider_key_id: Option<String>,
    pub hub: Option<String>,
    pub model: Option<String>,
    /// `chat`, `completions`, `embeddings`, `models`, `passthrough`.
    pub endpoint: String,
    pub status_code: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cost_nano: i64,
    pub latency_ms: i64,
    /// Tokens counted locally because the upstream reported none.
    pub estimated: bool,
    pub stream: bool,
    pub error_kind: Option<String>,
}

/// Which usage records to add up.
#[derive(Clone, Debug, Default)]
pub struct UsageFilter {
    pub virtual_key_id: Option<String>,
    pub platform_key_id: Option<String>,
    pub provider_key_id: Option<String>,
    pub model: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// How to group usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageGroup {
    Day,
    Model,
    VirtualKey,
    PlatformKey,
    ProviderKey,
    Hub,
}

/// Sums over usage records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageTotals {
    /// The group's key (a day number since the epoch, a model, a key id…); empty for the total.
    pub group: String,
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cost_nano: i64,
    pub estimated: i64,
}

/// An Ethereum address registered for wallet sign-in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletRow {
    /// Lower-case `0x…`.
    pub address: String,
    pub workspace: String,
    /// Whether the wallet may mint ADMIN keys (INFERENCE only otherwise).
    pub allow_admin: bool,
    pub created_at: i64,
    pub created_by: Option<String>,
}

/// One refused request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimitEventRow {
    pub id: String,
    pub workspace: String,
    pub at: i64,
    pub platform_key_id: Option<String>,
    pub virtual_key_id: Option<String>,
    pub provider_key_id: Option<String>,
    pub model: Option<String>,
    /// `RPM`, `RPH`, `RPD`, `TPM`, `TPH`, `TPD`, `BUDGET`…
    pub limit_type: String,
    pub limit_value: i64,
    /// Whose limit: `api_key`, `virtual_key`, `model`, `provider_key`.
    pub scope: String,
}

/// One change made through the API, CLI or UI. Never carries a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: String,
    pub workspace: String,
    pub at: i64,
    /// The platform key that acted, when one did.
    pub actor_key_id: Option<String>,
    /// `api-key`, `cli`, `admin-key-command`, `system`…
    pub actor: String,
    /// e.g. `provider_key.create`.
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub request_id: Option<String>,
    /// Extra non-secret facts as JSON.
    pub details: String,
}

/// Filters for reading the audit log.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub target_id: Option<String>,
    pub actor_key_id: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// The store. All methods that change data take the audit event to write with the change,
/// or `None` for changes made by keygate itself (such as re-wrapping secrets).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// The store revision: bumped by every change.
    async fn revision(&self) -> Result<i64>;

    // Master keys and secrets.
    async fn master_keys(&self) -> Result<Vec<MasterKeyRow>>;
    async fn insert_master_key(&self, version: i64, check_value: &[u8], now: i64) -> Result<()>;
    async fn retire_master_key(&self, version: i64, now: i64) -> Result<()>;
    /// Sealed secrets whose master version is not `version`, at most `limit`.
    async fn secrets_not_under(&self, version: i64, limit: u32) -> Result<Vec<SecretRow>>;
    async fn count_secrets_not_under(&self, version: i64) -> Result<i64>;
    /// Replaces a sealed value if it is still `old_sealed` (false when it changed meanwhile).
    async fn replace_sealed(
        &self,
        row: &SecretRow,
        old_sealed: &[u8],
        new_master_version: i64,
        new_sealed: &[u8],
    ) -> Result<bool>;
    /// Current and grace-period secrets of a record.
    async fn secrets_of(&self, workspace: &str, owner_id: &str) -> Result<Vec<SecretRow>>;
    /// Inserts a system secret if none exists at that place; returns the stored one.
    async fn ensure_secret(&self, row: &SecretRow) -> Result<SecretRow>;
    /// Deletes grace-period secrets that expired before `now`.
    async fn purge_expired_secrets(&self, now: i64) -> Result<u64>;

    // Workspaces.
    async fn create_workspace(&self, row: &WorkspaceRow, audit: Option<&AuditEvent>) -> Result<()>;
    async fn list_workspaces(&self, page: Page) -> Result<(Vec<WorkspaceRow>, i64)>;
    async fn get_workspace(&self, id: &str) -> Result<WorkspaceRow>;
    async fn rename_workspace(
        &self,
        id: &str,
        name: &str,
        now: i64,
        audit: Option<&AuditEvent>,
    ) -> Result<WorkspaceRow>;
    /// Deletes a workspace that holds no live records.
    async fn delete_workspace(&self, id: &str, audit: Option<&AuditEvent>) -> Result<()>;

    // Provider keys.
    async fn create_provider_key(
        &self,
        row: &ProviderKeyRow,
        secrets: &[SecretRow],
        audit: Option<&AuditEvent>,
    ) -> Result<ProviderKeyRow>;
    /// Updates every column but the id and workspace. New secret rows are inserted; the
    /// secrets of versions in `expire_versions` get `expires_at = grace_until` (or are deleted
    /// when `grace_until` is `None`).
    async fn update_provider_key(
        &self,
        row: &ProviderKeyRow,
        new_secrets: &[SecretRow],
        expire_versions: &[i64],
        grace_until: Option<i64>,
        audit: Option<&AuditEvent>,
    ) -> Result<ProviderKeyRow>;
    async fn get_provider_key(&self, workspace: &str, id: &str) -> Result<ProviderKeyRow>;
    async fn get_provider_key_by_name(&self, workspace: &str, name: &str) -> Result<ProviderKeyRow>;
    async fn list_provider_keys(&self, workspace: &str, page: Page) -> Result<(Vec<ProviderKeyRow>, i64)>;
    /// Soft-deletes the key and deletes its secrets.
    async fn delete_provider_key(
        &self,
        workspace: &str,
        id: &str,
        now: i64,
        audit: Option<&AuditEvent>,
    ) -> Result<ProviderKeyRow>;
    /// One page of the provider keys (deleted ones included) changed after `page.since`.
    async fn provider_keys_changed_since(&self, page: &ChangesPage) -> Result<Vec<ProviderKeyRow>>;

    // Platform keys.
    async fn create_platform_key(&self, row: &PlatformKeyRow, audit: Option<&AuditEvent>) -> Result<PlatformKeyRow>;
    async fn update_platform_key(&self, row: &PlatformKeyRow, audit: Option<&AuditEvent>) -> Result<PlatformKeyRow>;
    async fn get_platform_key(&self, workspace: &str, id: &str) -> Result<PlatformKeyRow>;
    async fn list_platform_keys(&self, workspace: &str, page: Page) -> Result<(Vec<PlatformKeyRow>, i64)>;
    async fn count_platform_keys(&self) -> Result<i64>;
    async fn delete_platform_key(
        &self,
        workspace: &str,
        id: &str,
        now: i64,
        audit: Option<&AuditEvent>,
    ) -> Result<PlatformKeyRow>;
    /// One page of the platform keys (deleted ones included) changed after `page.since`.
    async fn platform_keys_changed_since(&self, page: &ChangesPage) -> Result<Vec<PlatformKeyRow>>;
    /// Records last use of keys in one batch (off the hot path).
    async fn touch_platform_keys(&self, used: &[(String, i64)]) -> Result<()>;

    // Virtual keys.
    async fn create_virtual_key(&self, row: &VirtualKeyRow, audit: Option<&AuditEvent>) -> Result<VirtualKeyRow>;
    async fn update_virtual_key(&self, row: &VirtualKeyRow, audit: Option<&AuditEvent>) -> Result<VirtualKeyRow>;
    /// By id (`vk_…`) or slug.
    async fn get_virtual_key(&self, workspace: &str, id_or_slug: &str) -> Result<VirtualKeyRow>;
    async fn list_virtual_keys(&self, workspace: &str, page: Page) -> Result<(Vec<VirtualKeyRow>, i64)>;
    async fn delete_virtual_key(
        &self,
        workspace: &str,
        id: &str,
        now: i64,
        audit: Option<&AuditEvent>,
    ) -> Result<VirtualKeyRow>;
    /// One page of the virtual keys (deleted ones included) changed after `page.since`.
    async fn virtual_keys_changed_since(&self, page: &ChangesPage) -> Result<Vec<VirtualKeyRow>>;

    // Usage.
    /// Inserts a batch of usage records. A record with the id of a pending one (status 0)
    /// replaces it; any other id already present is left alone, so settling twice never
    /// double-counts.
    async fn insert_usage(&self, rows: &[UsageRow]) -> Result<()>;
    /// Marks records still pending (a request that reached an upstream when the process died)
    /// as interrupted, with their estimated tokens. Returns how many.
    async fn reconcile_pending_usage(&self, before: i64) -> Result<u64>;
    async fn usage_totals(&self, workspace: &str, filter: &UsageFilter) -> Result<UsageTotals>;
    async fn usage_grouped(
        &self,
        workspace: &str,
        filter: &UsageFilter,
        group: UsageGroup,
        limit: u32,
    ) -> Result<Vec<UsageTotals>>;
    async fn list_usage(&self, workspace: &str, filter: &UsageFilter, page: Page) -> Result<(Vec<UsageRow>, i64)>;

    // Wallets and sign-in tokens.
    async fn create_wallet(&self, row: &WalletRow, audit: Option<&AuditEvent>) -> Result<WalletRow>;
    async fn list_wallets(&self, workspace: &str) -> Result<Vec<WalletRow>>;
    /// A registered wallet, whatever its workspace (sign-in finds the workspace through it).
    async fn find_wallet(&self, address: &str) -> Result<WalletRow>;
    async fn delete_wallet(&self, workspace: &str, address: &str, audit: Option<&AuditEvent>) -> Result<()>;
    async fn insert_web3_token(&self, token_hash: &[u8], expires_at: i64) -> Result<()>;
    /// Uses a sign-in token once: Ok(true) when it existed, was unused and unexpired.
    async fn consume_web3_token(&self, token_hash: &[u8], now: i64) -> Result<Web3TokenState>;

    // Rate-limit events.
    async fn insert_rate_limit_events(&self, rows: &[RateLimitEventRow]) -> Result<()>;
    /// The newest events, of one platform key or of the whole workspace.
    async fn list_rate_limit_events(
        &self,
        workspace: &str,
        platform_key_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RateLimitEventRow>>;

    /// Live platform keys of a workspace.
    async fn count_live_platform_keys(&self, workspace: &str) -> Result<i64>;
    /// A platform key by id, deleted or not (for idempotent deletes).
    async fn get_platform_key_any(&self, workspace: &str, id: &str) -> Result<PlatformKeyRow>;

    // Audit.
    async fn append_audit(&self, event: &AuditEvent) -> Result<()>;
    async fn list_audit(&self, workspace: &str, filter: &AuditFilter, page: Page) -> Result<(Vec<AuditEvent>, i64)>;

    async fn close(&self);
}

/// Opens the store named by `url` (`sqlite://PATH` or `postgres://…`) and migrates it.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    Ok(std::sync::Arc::new(SqlStore::open(url).await?))
}

/// A new record id (UUID v7: time-ordered).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
