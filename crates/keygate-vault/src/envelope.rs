//! Envelope encryption of one secret.
//!
//! Layout of a sealed secret (all integers big-endian):
//! `"KGE1"` | master-key version (u32) | wrap nonce (24) | wrapped data key (32 + 16 tag)
//! | data nonce (24) | ciphertext (plaintext length + 16 tag).
//!
//! The data key is wrapped under the master key with the secret's place and the master-key
//! version as associated data; the data is sealed under the data key with the place as
//! associated data. Re-wrapping for a master-key rotation replaces only the header.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::{Keyring, VaultError};

const MAGIC: &[u8; 4] = b"KGE1";
const NONCE: usize = 24;
const TAG: usize = 16;
const WRAPPED: usize = 32 + TAG;
const HEADER: usize = 4 + 4 + NONCE + WRAPPED + NONCE;
/// Bytes a sealed secret adds to its plaintext.
pub const ENVELOPE_OVERHEAD: usize = HEADER + TAG;

/// Where a secret lives. Bound into the ciphertext, so a sealed secret opens only here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretPlace<'a> {
    pub workspace: &'a str,
    pub record_id: &'a str,
    pub secret_version: u32,
    pub field: &'a str,
}

impl SecretPlace<'_> {
    fn aad(&self, purpose: &[u8], master_version: Option<u32>) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(purpose);
        for part in [
            self.workspace.as_bytes(),
            self.record_id.as_bytes(),
            self.field.as_bytes(),
        ] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
        out.extend_from_slice(&self.secret_version.to_be_bytes());
        if let Some(v) = master_version {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out
    }
}

fn random_nonce() -> [u8; NONCE] {
    let mut n = [0u8; NONCE];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

fn wrap_key(
    keyring: &Keyring,
    version: u32,
    place: &SecretPlace<'_>,
    data_key: &[u8; 32],
) -> Result<([u8; NONCE], Vec<u8>), VaultError> {
    let mk = keyring.key(version)?;
    let cipher = XChaCha20Poly1305::new(mk.bytes().into());
    let nonce = random_nonce();
    let aad = place.aad(b"keygate/dk/v1", Some(version));
    let wrapped = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: data_key,
                aad: &aad,
            },
        )
        .map_err(|_| VaultError::Decrypt)?;
    Ok((nonce, wrapped))
}

struct Parsed<'b> {
    version: u32,
    wrap_nonce: &'b [u8],
    wrapped: &'b [u8],
    data_nonce: &'b [u8],
    ciphertext: &'b [u8],
}

fn parse(sealed: &[u8]) -> Result<Parsed<'_>, VaultError> {
    if sealed.len() < HEADER + TAG || &sealed[..4] != MAGIC {
        return Err(VaultError::Malformed);
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&sealed[4..8]);
    let version = u32::from_be_bytes(v);
    let wrap_nonce = &sealed[8..8 + NONCE];
    let wrapped = &sealed[8 + NONCE..8 + NONCE + WRAPPED];
    let data_nonce = &sealed[8 + NONCE + WRAPPED..HEADER];
    Ok(Parsed {
        version,
        wrap_nonce,
        wrapped,
        data_nonce,
        ciphertext: &sealed[HEADER..],
    })
}

/// The master-key version a sealed secret is wrapped under.
pub fn master_version(sealed: &[u8]) -> Result<u32, VaultError> {
    parse(sealed).map(|p| p.version)
}

fn unwrap_key(keyring: &Keyring, place: &SecretPlace<'_>, p: &Parsed<'_>) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let mk = keyring.key(p.version)?;
    let cipher = XChaCha20Poly1305::new(mk.bytes().into());
    let aad = place.aad(b"keygate/dk/v1", Some(p.version));
    let dk = Zeroizing::new(
        cipher
            .decrypt(
                XNonce::from_slice(p.wrap_nonce),
                Payload {
                    msg: p.wrapped,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Decrypt)?,
    );
    if dk.len() != 32 {
        return Err(VaultError::Decrypt);
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&dk);
    Ok(out)
}

/// Seals `plaintext` for `place` under the keyring's current master key.
pub fn seal(keyring: &Keyring, place: &SecretPlace<'_>, plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
    let mut dk = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(dk.as_mut());
    let version = keyring.current_version();
    // Fail early with a clear error when the current key is missing.
    keyring.current_key()?;
    let (wrap_nonce, wrapped) = wrap_key(keyring, version, place, &dk)?;
    let data_nonce = random_nonce();
    let cipher = XChaCha20Poly1305::new(dk.as_ref().into());
    let aad = place.aad(b"keygate/data/v1", None);
    let ct = cipher
        .encrypt(
            XNonce::from_slice(&data_nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| VaultError::Decrypt)?;
    let mut out = Vec::with_capacity(HEADER + ct.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&wrap_nonce);
    out.extend_from_slice(&wrapped);
    out.extend_from_slice(&data_nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens a sealed secret that belongs at `place`.
pub fn open(keyring: &Keyring, place: &SecretPlace<'_>, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let p = parse(sealed)?;
    let dk = unwrap_key(keyring, place, &p)?;
    let cipher = XChaCha20Poly1305::new(dk.as_ref().into());
    let aad = place.aad(b"keygate/data/v1", None);
    cipher
        .decrypt(
            XNonce::from_slice(p.data_nonce),
            Payload {
                msg: p.ciphertext,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| VaultError::Decrypt)
}

/// Opens a sealed secret as UTF-8 text.
pub fn open_string(keyring: &Keyring, place: &SecretPlace<'_>, sealed: &[u8]) -> Result<Zeroizing<String>, VaultError> {
    let bytes = open(keyring, place, sealed)?;
    match std::str::from_utf8(&bytes) {
        Ok(s) => Ok(Zeroizing::new(s.to_string())),
        Err(_) => Err(VaultError::Decrypt),
    }
}

/// Re-wraps a sealed secret's data key under master-key version `to_version` of the keyring.
/// The data ciphertext is unchanged; the secret never exists in clear outside the data key.
pub fn rewrap(
    keyring: &Keyring,
    place: &SecretPlace<'_>,
    sealed: &[u8],
    to_version: u32,
) -> Result<Vec<u8>, VaultError> {
    let p = parse(sealed)?;
    let dk = unwrap_key(keyring, place, &p)?;
    let (wrap_nonce, wrapped) = wrap_key(keyring, to_version, place, &dk)?;
    let mut out = Vec::with_capacity(sealed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&to_version.to_be_bytes());
    out.extend_from_slice(&wrap_nonce);
    out.extend_from_slice(&wrapped);
    out.extend_from_slice(p.data_nonce);
    out.extend_from_slice(p.ciphertext);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MasterKey;
    use proptest::prelude::*;

    fn place(record: &str) -> SecretPlace<'_> {
        SecretPlace {
            workspace: "default",
            record_id: record,
            secret_version: 1,
            field: "api_key",
        }
    }

    #[test]
    fn moved_ciphertext_fails() {
        let ring = Keyring::new(1, MasterKey::generate());
        let sealed = seal(&ring, &place("pk-1"), b"sk-live-123").unwrap();
        assert_eq!(&*open(&ring, &place("pk-1"), &sealed).unwrap(), b"sk-live-123");
        assert_eq!(open(&ring, &place("pk-2"), &sealed), Err(VaultError::Decrypt));
        let other_ws = SecretPlace {
            workspace: "other",
            ..place("pk-1")
        };
        assert_eq!(open(&ring, &other_ws, &sealed), Err(VaultError::Decrypt));
        let other_version = SecretPlace {
            secret_version: 2,
            ..place("pk-1")
        };
        assert_eq!(open(&ring, &other_version, &sealed), Err(VaultError::Decrypt));
        let other_field = SecretPlace {
            field: "agent_key",
            ..place("pk-1")
        };
        assert_eq!(open(&ring, &other_field, &sealed), Err(VaultError::Decrypt));
    }

    #[test]
    fn wrong_master_key_fails() {
        let ring = Keyring::new(1, MasterKey::generate());
        let sealed = seal(&ring, &place("pk-1"), b"secret").unwrap();
        let wrong = Keyring::new(1, MasterKey::generate());
        assert_eq!(open(&wrong, &place("pk-1"), &sealed), Err(VaultError::Decrypt));
        let other_version = Keyring::new(2, MasterKey::generate());
        assert_eq!(
            open(&other_version, &place("pk-1"), &sealed),
            Err(VaultError::UnknownMasterKeyVersion(1))
        );
    }

    #[test]
    fn rewrap_moves_to_the_new_version_and_retires_the_old() {
        let old = MasterKey::generate();
        let new = MasterKey::generate();
        let mut ring = Keyring::new(1, old.clone());
        let sealed = seal(&ring, &place("pk-1"), b"secret").unwrap();
        ring = ring.with_version(2, new.clone());
        let moved = rewrap(&ring, &place("pk-1"), &sealed, 2).unwrap();
        assert_eq!(master_version(&moved).unwrap(), 2);
        assert_eq!(moved.len(), sealed.len());
        let only_new = Keyring::new(2, new);
        assert_eq!(&*open(&only_new, &place("pk-1"), &moved).unwrap(), b"secret");
        // The old envelope needs the retired key.
        assert_eq!(
            open(&only_new, &place("pk-1"), &sealed),
            Err(VaultError::UnknownMasterKeyVersion(1))
        );
        // A header swapped to claim version 2 with the old wrapping fails.
        let mut forged = sealed.clone();
        forged[4..8].copy_from_slice(&2u32.to_be_bytes());
        assert_eq!(open(&only_new, &place("pk-1"), &forged), Err(VaultError::Decrypt));
    }

    #[test]
    fn truncated_and_foreign_input_is_malformed() {
        let ring = Keyring::new(1, MasterKey::generate());
        assert_eq!(open(&ring, &place("x"), b""), Err(VaultError::Malformed));
        assert_eq!(open(&ring, &place("x"), b"sk-live-123"), Err(VaultError::Malformed));
        let sealed = seal(&ring, &place("x"), b"").unwrap();
        assert_eq!(sealed.len(), ENVELOPE_OVERHEAD);
        assert_eq!(
            open(&ring, &place("x"), &sealed[..sealed.len() - 1]),
            Err(VaultError::Malformed)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..512), record in "[a-z0-9-]{1,20}", version in 1u32..1000) {
            let ring = Keyring::new(version, MasterKey::generate());
            let p = SecretPlace { workspace: "ws", record_id: &record, secret_version: 3, field: "api_key" };
            let sealed = seal(&ring, &p, &data).unwrap();
            prop_assert_eq!(sealed.len(), data.len() + ENVELOPE_OVERHEAD);
            prop_assert_eq!(&*open(&ring, &p, &sealed).unwrap(), &data[..]);
        }

        #[test]
        fn any_bit_flip_fails(data in proptest::collection::vec(any::<u8>(), 1..128), bit in any::<usize>()) {
            let ring = Keyring::new(1, MasterKey::generate());
            let p = place("pk");
            let mut sealed = seal(&ring, &p, &data).unwrap();
            let bit = bit % (sealed.len() * 8);
            sealed[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(open(&ring, &p, &sealed).is_err());
        }

        #[test]
        fn moved_to_another_row_fails(a in "[a-z0-9]{1,12}", b in "[a-z0-9]{1,12}") {
            prop_assume!(a != b);
            let ring = Keyring::new(1, MasterKey::generate());
            let sealed = seal(&ring, &place(&a), b"secret").unwrap();
            prop_assert_eq!(open(&ring, &place(&b), &sealed), Err(VaultError::Decrypt));
        }

        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let ring = Keyring::new(1, MasterKey::generate());
            let _ = open(&ring, &place("x"), &data);
            let _ = master_version(&data);
        }
    }
}
