//! The master key and the keyring of master-key versions.
//!
//! A master key is 32 random bytes, given as base64 in `KEYGATE_MASTER_KEY`, in the file
//! named by `KEYGATE_MASTER_KEY_FILE`, or generated into the data directory (mode 0600) on
//! the first start of the embedded default. A check value (an HMAC of a fixed label under
//! the key) is stored beside the data, so a wrong key is recognised before anything is read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::VaultError;

const CHECK_LABEL: &[u8] = b"keygate/master-key-check/v1";

/// A 32-byte master key. Zeroized on drop; `Debug` shows nothing of it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        MasterKey(k)
    }

    /// Parses the base64 of 32 bytes (standard or URL-safe alphabet, padding optional).
    pub fn from_base64(text: &str) -> Result<Self, VaultError> {
        let text = Zeroizing::new(text.trim().to_string());
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        for engine in engines {
            if let Ok(bytes) = engine.decode(text.as_bytes()) {
                let bytes = Zeroizing::new(bytes);
                if bytes.len() != 32 {
                    return Err(VaultError::InvalidMasterKey(format!(
                        "it must be the base64 of 32 bytes, not of {} bytes",
                        bytes.len()
                    )));
                }
                let mut k = [0u8; 32];
                k.copy_from_slice(&bytes);
                return Ok(MasterKey(k));
            }
        }
        Err(VaultError::InvalidMasterKey("it is not valid base64".into()))
    }

    /// The base64 text of the key, for writing it to a key file once.
    pub fn expose_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.0))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The check value stored beside the data to recognise this key.
    pub fn check_value(&self) -> [u8; 32] {
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.0) else {
            return [0u8; 32];
        };
        mac.update(CHECK_LABEL);
        mac.finalize().into_bytes().into()
    }

    /// Whether `stored` is this key's check value (constant time).
    pub fn matches_check_value(&self, stored: &[u8]) -> bool {
        let ours = self.check_value();
        stored.len() == ours.len() && bool::from(ours.ct_eq(stored))
    }
}

/// Where the master key came from; decides what `master-key rotate` may rewrite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterKeySource {
    /// `KEYGATE_MASTER_KEY`.
    Env,
    /// `KEYGATE_MASTER_KEY_FILE`.
    File(PathBuf),
    /// Generated into the data directory by keygate.
    DataDir(PathBuf),
}

/// The file name of a generated master key inside the data directory.
pub const DATA_DIR_KEY_FILE: &str = "master.key";

impl MasterKeySource {
    pub fn describe(&self) -> String {
        match self {
            MasterKeySource::Env => "KEYGATE_MASTER_KEY".into(),
            MasterKeySource::File(p) => format!("KEYGATE_MASTER_KEY_FILE ({})", p.display()),
            MasterKeySource::DataDir(p) => format!("the generated key file {}", p.display()),
        }
    }
}

/// Loads the master key: `env_key` (the value of `KEYGATE_MASTER_KEY`), else `env_file`
/// (`KEYGATE_MASTER_KEY_FILE`), else `data_dir/master.key`, generating that file (0600) when
/// `generate` is true and it does not exist. Returns whether a key was generated.
pub fn load_master_key(
    env_key: Option<Zeroizing<String>>,
    env_file: Option<PathBuf>,
    data_dir: &Path,
    generate: bool,
) -> Result<(MasterKey, MasterKeySource, bool), VaultError> {
    if let Some(text) = env_key {
        if !text.trim().is_empty() {
            return Ok((MasterKey::from_base64(&text)?, MasterKeySource::Env, false));
        }
    }
    if let Some(path) = env_file {
        let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
            VaultError::InvalidMasterKey(format!("cannot read KEYGATE_MASTER_KEY_FILE {}: {e}", path.display()))
        })?);
        return Ok((MasterKey::from_base64(&text)?, MasterKeySource::File(path), false));
    }
    let path = data_dir.join(DATA_DIR_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            Ok((MasterKey::from_base64(&text)?, MasterKeySource::DataDir(path), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && generate => {
            let key = MasterKey::generate();
            write_key_file(&path, &key)?;
            Ok((key, MasterKeySource::DataDir(path), true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(VaultError::InvalidMasterKey(format!(
            "no master key: set KEYGATE_MASTER_KEY or KEYGATE_MASTER_KEY_FILE, or start `keygate serve` once to generate {}",
            path.display()
        ))),
        Err(e) => Err(VaultError::InvalidMasterKey(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Writes a key file readable by its owner only, replacing any old one atomically.
pub fn write_key_file(path: &Path, key: &MasterKey) -> Result<(), VaultError> {
    let io = |e: std::io::Error| VaultError::InvalidMasterKey(format!("cannot write {}: {e}", path.display()));
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("key.tmp");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        let text = key.expose_base64();
        f.write_all(text.as_bytes()).map_err(io)?;
        f.write_all(b"\n").map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// The master keys a process holds, by version. New secrets are sealed under the current one.
#[derive(Clone, Debug)]
pub struct Keyring {
    current: u32,
    keys: BTreeMap<u32, MasterKey>,
}

impl Keyring {
    pub fn new(version: u32, key: MasterKey) -> Self {
        let mut keys = BTreeMap::new();
        keys.insert(version, key);
        Keyring { current: version, keys }
    }

    /// Adds an older (or newer) version that secrets may still be sealed under.
    pub fn with_version(mut self, version: u32, key: MasterKey) -> Self {
        self.keys.insert(version, key);
        self
    }

    /// Makes `version` the one new secrets are sealed under.
    pub fn set_current(&mut self, version: u32) -> Result<(), VaultError> {
        if !self.keys.contains_key(&version) {
            return Err(VaultError::UnknownMasterKeyVersion(version));
        }
        self.current = version;
        Ok(())
    }

    pub fn current_version(&self) -> u32 {
        self.current
    }

    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }

    /// Removes a version: secrets sealed under it no longer open.
    pub fn retire(&mut self, version: u32) {
        if version != self.current {
            self.keys.remove(&version);
        }
    }

    pub(crate) fn key(&self, version: u32) -> Result<&MasterKey, VaultError> {
        self.keys
            .get(&version)
            .ok_or(VaultError::UnknownMasterKeyVersion(version))
    }

    pub(crate) fn current_key(&self) -> Result<&MasterKey, VaultError> {
        self.key(self.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_forms_and_lengths() {
        let key = MasterKey::generate();
        let b64 = key.expose_base64();
        let back = MasterKey::from_base64(&b64).unwrap();
        assert_eq!(back.bytes(), key.bytes());
        assert!(MasterKey::from_base64("not base64!").is_err());
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        let err = MasterKey::from_base64(&short).unwrap_err();
        assert!(err.to_string().contains("32 bytes"));
    }

    #[test]
    fn check_value_recognises_its_key() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        assert!(a.matches_check_value(&a.check_value()));
        assert!(!a.matches_check_value(&b.check_value()));
        assert!(!a.matches_check_value(&[]));
    }

    #[test]
    fn debug_is_redacted() {
        let a = MasterKey::generate();
        assert_eq!(format!("{a:?}"), "MasterKey(<redacted>)");
    }

    #[test]
    fn generated_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, src, generated) = load_master_key(None, None, dir.path(), true).unwrap();
        assert!(generated);
        assert!(matches!(src, MasterKeySource::DataDir(_)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(DATA_DIR_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (k2, _, generated) = load_master_key(None, None, dir.path(), true).unwrap();
        assert!(!generated);
        assert_eq!(k1.bytes(), k2.bytes());
        let other = tempfile::tempdir().unwrap();
        assert!(load_master_key(None, None, other.path(), false).is_err());
    }

    #[test]
    fn env_wins_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        let (k, src, _) = load_master_key(Some(key.expose_base64()), None, dir.path(), true).unwrap();
        assert_eq!(k.bytes(), key.bytes());
        assert_eq!(src, MasterKeySource::Env);
        assert!(!dir.path().join(DATA_DIR_KEY_FILE).exists());
    }
}
