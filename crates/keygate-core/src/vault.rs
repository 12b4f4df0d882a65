//! The vault service: the keyring of the running process bound to a store.
//!
//! At start the given master key is matched against the check values stored in the store:
//! a key the store does not know refuses to start, a retired version too. A new store
//! registers the key as version 1. The platform-key hashing secret lives sealed in the store,
//! so a master-key rotation changes no platform key.

use std::sync::Arc;

use keygate_store::{SecretRow, Store, StoreError};
use keygate_types::timefmt::{format_ms, now_ms};
use keygate_vault::envelope::{self, master_version};
use keygate_vault::{KeyHash, KeyHasher, Keyring, MasterKey, SecretPlace, VaultError};
use parking_lot::RwLock;
use zeroize::Zeroizing;

/// Where the hashing secret lives.
const SYSTEM_WORKSPACE: &str = "_system";
const HASH_OWNER: &str = "platform-key-hmac";
const HASH_FIELD: &str = "hmac_key";

#[derive(Debug, thiserror::Error)]
pub enum VaultBootError {
    #[error(
        "the master key does not match this store: it was created with another key. Start keygate with the \
         master key this store was created with (KEYGATE_MASTER_KEY or KEYGATE_MASTER_KEY_FILE)"
    )]
    WrongMasterKey,
    #[error(
        "this master key (version {version}) was retired by a rotation on {retired}; start keygate with the \
         current master key"
    )]
    Retired { version: i64, retired: String },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
}

/// Encrypts and decrypts the secrets of this process and hashes platform keys.
pub struct VaultService {
    keyring: RwLock<Keyring>,
    hasher: KeyHasher,
}

impl std::fmt::Debug for VaultService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultService")
            .field("master_version", &self.keyring.read().current_version())
            .finish_non_exhaustive()
    }
}

/// Matches `key` against the store's master keys; registers it as version 1 on a new store.
pub async fn match_master_key(store: &dyn Store, key: &MasterKey) -> Result<u32, VaultBootError> {
    for attempt in 0..2 {
        let rows = store.master_keys().await?;
        if rows.is_empty() {
            match store.insert_master_key(1, &key.check_value(), now_ms()).await {
                Ok(()) => return Ok(1),
                // Another process registered its key at the same moment: compare with that.
                Err(StoreError::Conflict(_)) if attempt == 0 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        for row in &rows {
            if key.matches_check_value(&row.check_value) {
                if let Some(at) = row.retired_at {
                    return Err(VaultBootError::Retired {
                        version: row.version,
                        retired: format_ms(at),
                    });
                }
                return u32::try_from(row.version).map_err(|_| VaultBootError::WrongMasterKey);
            }
        }
        return Err(VaultBootError::WrongMasterKey);
    }
    Err(VaultBootError::WrongMasterKey)
}

impl VaultService {
    /// Binds `key` to the store: checks it, and loads (or creates) the hashing secret.
    pub async fn bootstrap(store: &dyn Store, key: MasterKey) -> Result<Arc<VaultService>, VaultBootError> {
        let version = match_master_key(store, &key).await?;
        let keyring = Keyring::new(version, key);
        let place = hash_place();
        let fresh = KeyHasher::generate_secret();
        let sealed = envelope::seal(&keyring, &place, &fresh)?;
        let stored = store
            .ensure_secret(&SecretRow {
                workspace: SYSTEM_WORKSPACE.into(),
                owner_id: HASH_OWNER.into(),
                field: HASH_FIELD.into(),
                version: 1,
                master_version: i64::from(version),
                sealed,
                created_at: now_ms(),
                expires_at: None,
            })
            .await?;
        let secret = envelope::open(&keyring, &place, &stored.sealed)?;
        let hasher = KeyHasher::from_secret(&secret)?;
        Ok(Arc::new(VaultService {
            keyring: RwLock::new(keyring),
            hasher,
        }))
    }

    pub fn master_version(&self) -> u32 {
        self.keyring.read().current_version()
    }

    pub fn seal(&self, place: &SecretPlace<'_>, plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        envelope::seal(&self.keyring.read(), place, plaintext)
    }

    pub fn open(&self, place: &SecretPlace<'_>, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        envelope::open(&self.keyring.read(), place, sealed)
    }

    pub fn open_string(&self, place: &SecretPlace<'_>, sealed: &[u8]) -> Result<Zeroizing<String>, VaultError> {
        envelope::open_string(&self.keyring.read(), place, sealed)
    }

    /// Refuses to seal when this process's master key was retired by a rotation made
    /// elsewhere: what it sealed would not open after a restart with the new key. One store
    /// read, on the management path only.
    pub async fn ensure_current(&self, store: &dyn Store) -> Result<(), crate::error::CoreError> {
        let version = i64::from(self.master_version());
        let rows = store.master_keys().await?;
        match rows.iter().find(|r| r.version == version) {
            Some(r) if r.retired_at.is_none() => Ok(()),
            _ => Err(crate::error::CoreError::Unavailable(
                "the master key of this server was rotated; restart keygate with the new master key".into(),
            )),
        }
    }

    pub fn hash(&self, key_text: &str) -> KeyHash {
        self.hasher.hash(key_text)
    }

    /// Adds a master-key version this process can open (after a rotation elsewhere).
    pub fn add_master_key(&self, version: u32, key: MasterKey, make_current: bool) -> Result<(), VaultError> {
        let mut ring = self.keyring.write();
        *ring = ring.clone().with_version(version, key);
        if make_current {
            ring.set_current(version)?;
        }
        Ok(())
    }
}

fn hash_place() -> SecretPlace<'static> {
    SecretPlace {
        workspace: SYSTEM_WORKSPACE,
        record_id: HASH_OWNER,
        secret_version: 1,
        field: HASH_FIELD,
    }
}

async fn rewrap_pass(
    store: &dyn Store,
    ring: &Keyring,
    from: u32,
    to: u32,
    total: u64,
    done: &mut u64,
    progress: Progress<'_>,
) -> Result<(), VaultBootError> {
    loop {
        let batch = store.secrets_not_under(i64::from(to), 200).await?;
        if batch.is_empty() {
            return Ok(());
        }
        let mut progressed = false;
        for row in &batch {
            let place = SecretPlace {
                workspace: &row.workspace,
                record_id: &row.owner_id,
                secret_version: u32::try_from(row.version).unwrap_or(u32::MAX),
                field: &row.field,
            };
            let v = master_version(&row.sealed)?;
            if v != from && v != to {
                return Err(VaultBootError::Vault(VaultError::UnknownMasterKeyVersion(v)));
            }
            let rewrapped = envelope::rewrap(ring, &place, &row.sealed, to)?;
            if store
                .replace_sealed(row, &row.sealed, i64::from(to), &rewrapped)
                .await?
            {
                *done += 1;
                progressed = true;
                progress(*done, total.max(*done));
            }
        }
        if !progressed {
            // Every row of the batch changed under us; read again.
            tokio::task::yield_now().await;
        }
    }
}

/// Progress of a rotation: (done, total).
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Send + Sync);

/// Outcome of a master-key rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    pub from_version: u32,
    pub to_version: u32,
    pub rewrapped: u64,
}

/// Rotates the master key of `store` from `old` (the current key) to `new`: registers the new
/// version, re-wraps every data key under it (the data stays readable throughout: each row is
/// replaced atomically, and rows changed meanwhile are picked up again), then retires the old
/// version. Running servers keep serving from memory; restart them with the new key.
pub async fn rotate_master_key(
    store: &dyn Store,
    old: MasterKey,
    new: MasterKey,
    progress: Progress<'_>,
) -> Result<RotationReport, VaultBootError> {
    let from = match_master_key(store, &old).await?;
    if new.matches_check_value(&old.check_value()) {
        return Err(VaultBootError::Vault(VaultError::InvalidMasterKey(
            "the new master key is the same as the current one".into(),
        )));
    }
    let rows = store.master_keys().await?;
    let to = rows.iter().map(|r| r.version).max().unwrap_or(0) + 1;
    let to = u32::try_from(to).map_err(|_| VaultBootError::WrongMasterKey)?;
    // Resume a rotation that stopped half-way: the new key may already be registered.
    let existing = rows.iter().find(|r| new.matches_check_value(&r.check_value));
    let to = match existing {
        Some(r) if r.retired_at.is_some() => {
            return Err(VaultBootError::Retired {
                version: r.version,
                retired: format_ms(r.retired_at.unwrap_or_default()),
            })
        }
        Some(r) => u32::try_from(r.version).map_err(|_| VaultBootError::WrongMasterKey)?,
        None => {
            store
                .insert_master_key(i64::from(to), &new.check_value(), now_ms())
                .await?;
            to
        }
    };
    let mut ring = Keyring::new(from, old).with_version(to, new);
    // Older, not yet retired versions cannot be opened with this keyring; they are reported.
    let total = store.count_secrets_not_under(i64::from(to)).await?;
    let total = u64::try_from(total).unwrap_or(0);
    let mut done: u64 = 0;
    progress(0, total);
    rewrap_pass(store, &ring, from, to, total, &mut done, progress).await?;
    // Retire the old version, then sweep once more: a server still holding the old key
    // checks for retirement before it seals, so what it sealed just before is caught here.
    store.retire_master_key(i64::from(from), now_ms()).await?;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    rewrap_pass(store, &ring, from, to, total, &mut done, progress).await?;
    ring.set_current(to)?;
    Ok(RotationReport {
        from_version: from,
        to_version: to,
        rewrapped: done,
    })
}
