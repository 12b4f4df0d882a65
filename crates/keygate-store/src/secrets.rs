//! The vault's records: master-key versions (each with the check value by which the vault
//! recognises its key) and sealed secrets, with the feed that re-wraps them under a new master
//! key.
//!
//! What must stay true: a secret is stored only sealed, and never appears in `Debug` output or
//! an error; a re-wrap replaces a sealed value only if it is still the one read (compare and
//! swap), so concurrent re-wraps cannot lose a rotation.

use async_trait::async_trait;

use crate::Result;

/// A registered master-key version.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct MasterKeyRow {
    pub version: i64,
    pub check_value: Vec<u8>,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

/// A sealed secret: one field of one record at one secret version.
#[derive(Clone, sqlx::FromRow)]
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

/// Master keys and sealed secrets.
#[async_trait]
pub trait SecretStore: Send + Sync {
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
}
