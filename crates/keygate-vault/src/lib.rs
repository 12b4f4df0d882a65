//! keygate's vault. Provider secrets are sealed with envelope encryption: each secret has
//! its own random data key, the data is sealed with XChaCha20-Poly1305 under that key with
//! the secret's place (workspace, record id, secret version, field) as associated data, and
//! the data key is wrapped by a versioned master key. A ciphertext copied to another row,
//! another field or another version fails to open. Platform keys are stored only as
//! HMAC-SHA256 under a key kept in the vault.
//!
//! What must stay true: no secret leaves this crate except through `expose`-named calls or
//! the zeroizing buffers `open` returns, and no error carries secret material.
#![forbid(unsafe_code)]

pub mod envelope;
pub mod hashing;
pub mod master;
pub mod wallet;

pub use envelope::{SecretPlace, ENVELOPE_OVERHEAD};
pub use hashing::{KeyHash, KeyHasher};
pub use master::{Keyring, MasterKey, MasterKeySource};

/// Errors of the vault. None carries secret material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    #[error("the ciphertext is not a keygate envelope")]
    Malformed,
    #[error("the secret was sealed under master key version {0}, which this keyring does not hold")]
    UnknownMasterKeyVersion(u32),
    #[error("the secret failed to decrypt: wrong key, tampered data, or a ciphertext moved from another record")]
    Decrypt,
    #[error("invalid master key: {0}")]
    InvalidMasterKey(String),
}
