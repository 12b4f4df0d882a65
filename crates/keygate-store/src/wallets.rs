//! Wallet sign-in: registered Ethereum addresses and the one-time tokens a signature is made
//! over.
//!
//! What must stay true: a token is good once and only before it expires; only its hash is
//! stored.

use async_trait::async_trait;

use crate::{AuditEvent, Flag, Result};

/// What using a wallet sign-in token found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Web3TokenState {
    Valid,
    Unknown,
    Expired,
    AlreadyUsed,
}

/// An Ethereum address registered for wallet sign-in.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct WalletRow {
    /// Lower-case `0x…`.
    pub address: String,
    pub workspace: String,
    /// Whether the wallet may mint ADMIN keys (INFERENCE only otherwise).
    #[sqlx(try_from = "Flag")]
    pub allow_admin: bool,
    pub created_at: i64,
    pub created_by: Option<String>,
}

/// Wallets and sign-in tokens. Changes take the audit event to write with them.
#[async_trait]
pub trait WalletStore: Send + Sync {
    async fn create_wallet(&self, row: &WalletRow, audit: Option<&AuditEvent>) -> Result<WalletRow>;

    async fn list_wallets(&self, workspace: &str) -> Result<Vec<WalletRow>>;

    /// A registered wallet, whatever its workspace (sign-in finds the workspace through it).
    async fn find_wallet(&self, address: &str) -> Result<WalletRow>;

    async fn delete_wallet(&self, workspace: &str, address: &str, audit: Option<&AuditEvent>) -> Result<()>;

    async fn insert_web3_token(&self, token_hash: &[u8], expires_at: i64) -> Result<()>;

    /// Uses a sign-in token once: `Valid` when it existed, was unused and unexpired.
    async fn consume_web3_token(&self, token_hash: &[u8], now: i64) -> Result<Web3TokenState>;
}
