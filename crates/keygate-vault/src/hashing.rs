//! Platform keys are stored only as HMAC-SHA256 of the key text under a hashing key. The
//! hashing key is 32 random bytes kept sealed in the vault (so a master-key rotation keeps
//! every platform key valid) and stretched with HKDF for this one purpose.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::VaultError;

/// The stored hash of a platform key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyHash({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

impl KeyHash {
    /// Constant-time comparison.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }

    pub fn from_slice(b: &[u8]) -> Option<KeyHash> {
        let arr: [u8; 32] = b.try_into().ok()?;
        Some(KeyHash(arr))
    }
}

/// Computes platform-key hashes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct KeyHasher {
    key: [u8; 32],
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(<redacted>)")
    }
}

impl KeyHasher {
    /// A new random hashing secret (32 bytes), to be sealed in the vault.
    pub fn generate_secret() -> Zeroizing<Vec<u8>> {
        let mut s = Zeroizing::new(vec![0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut s);
        s
    }

    /// Derives the HMAC key from the sealed hashing secret.
    pub fn from_secret(secret: &[u8]) -> Result<Self, VaultError> {
        if secret.len() < 32 {
            return Err(VaultError::Decrypt);
        }
        let hk = Hkdf::<Sha256>::new(Some(b"keygate/platform-key-hmac/v1"), secret);
        let mut key = [0u8; 32];
        hk.expand(b"platform-key", &mut key).map_err(|_| VaultError::Decrypt)?;
        Ok(KeyHasher { key })
    }

    pub fn hash(&self, key_text: &str) -> KeyHash {
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.key) else {
            return KeyHash([0u8; 32]);
        };
        mac.update(key_text.as_bytes());
        KeyHash(mac.finalize().into_bytes().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_keyed_and_stable() {
        let secret = KeyHasher::generate_secret();
        let h1 = KeyHasher::from_secret(&secret).unwrap();
        let h2 = KeyHasher::from_secret(&secret).unwrap();
        let other = KeyHasher::from_secret(&KeyHasher::generate_secret()).unwrap();
        assert!(h1.hash("kg_adm_x").ct_eq(&h2.hash("kg_adm_x")));
        assert!(!h1.hash("kg_adm_x").ct_eq(&h1.hash("kg_adm_y")));
        assert!(!h1.hash("kg_adm_x").ct_eq(&other.hash("kg_adm_x")));
        assert!(KeyHasher::from_secret(&[0u8; 8]).is_err());
        assert_eq!(format!("{h1:?}"), "KeyHasher(<redacted>)");
    }
}
