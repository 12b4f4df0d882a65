//! The format of platform API keys: `kg_adm_…` (ADMIN) and `kg_inf_…` (INFERENCE).
//!
//! A key is its prefix, 32 random base62 characters and 6 base62 characters of CRC32 over
//! everything before them. The checksum lets keygate refuse a mistyped key before any lookup
//! and lets secret scanners recognise keygate keys. What must stay true: parsing never
//! allocates a copy of the secret outside a zeroizing buffer, and `Debug` never shows it.

use rand::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Random base62 characters in a key body.
pub const RANDOM_LEN: usize = 32;
/// Base62 characters of the CRC32 checksum.
pub const CHECKSUM_LEN: usize = 6;
/// Length of the `kg_adm_` / `kg_inf_` prefix.
pub const PREFIX_LEN: usize = 7;
/// Total length of a platform key.
pub const KEY_LEN: usize = PREFIX_LEN + RANDOM_LEN + CHECKSUM_LEN;

/// The two kinds of platform key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PlatformKeyType {
    /// Everything: management API and gateway.
    Admin,
    /// Only the gateway.
    Inference,
}

impl PlatformKeyType {
    pub fn prefix(self) -> &'static str {
        match self {
            PlatformKeyType::Admin => "kg_adm_",
            PlatformKeyType::Inference => "kg_inf_",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PlatformKeyType::Admin => "ADMIN",
            PlatformKeyType::Inference => "INFERENCE",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ADMIN" => Some(PlatformKeyType::Admin),
            "INFERENCE" => Some(PlatformKeyType::Inference),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("not a keygate key (expected kg_adm_… or kg_inf_…)")]
    Prefix,
    #[error("a keygate key is {KEY_LEN} characters long")]
    Length,
    #[error("a keygate key contains only letters and digits after its prefix")]
    Charset,
    #[error("the key's checksum does not match: it was probably mistyped")]
    Checksum,
}

/// A platform key secret in memory. Zeroized on drop; `Debug` shows only the type and the
/// last characters.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PlatformSecret {
    text: String,
}

impl std::fmt::Debug for PlatformSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlatformSecret(…{})", self.last6())
    }
}

impl PlatformSecret {
    /// Generates a fresh key of the given type.
    pub fn generate<R: Rng + CryptoRng>(kind: PlatformKeyType, rng: &mut R) -> Self {
        let mut text = String::with_capacity(KEY_LEN);
        text.push_str(kind.prefix());
        for _ in 0..RANDOM_LEN {
            let i = rng.gen_range(0..ALPHABET.len());
            text.push(ALPHABET[i] as char);
        }
        let crc = crc32fast::hash(text.as_bytes());
        push_base62_fixed(&mut text, crc);
        PlatformSecret { text }
    }

    /// Parses and checks a presented key: prefix, length, alphabet and checksum.
    pub fn parse(presented: &str) -> Result<(PlatformKeyType, PlatformSecret), KeyFormatError> {
        let kind = check(presented)?;
        Ok((
            kind,
            PlatformSecret {
                text: presented.to_string(),
            },
        ))
    }

    /// The key text. Call only to hash it or to show it once at creation.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The last six characters, shown in lists as `last6Chars`.
    pub fn last6(&self) -> &str {
        let n = self.text.len();
        self.text.get(n.saturating_sub(6)..).unwrap_or("")
    }

    pub fn kind(&self) -> Option<PlatformKeyType> {
        check(&self.text).ok()
    }
}

/// Checks a presented key without copying it; returns its type.
pub fn check(presented: &str) -> Result<PlatformKeyType, KeyFormatError> {
    let kind = if presented.starts_with("kg_adm_") {
        PlatformKeyType::Admin
    } else if presented.starts_with("kg_inf_") {
        PlatformKeyType::Inference
    } else {
        return Err(KeyFormatError::Prefix);
    };
    if presented.len() != KEY_LEN {
        return Err(KeyFormatError::Length);
    }
    let body = &presented.as_bytes()[PREFIX_LEN..];
    if !body.iter().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyFormatError::Charset);
    }
    let (head, sum) = presented.split_at(KEY_LEN - CHECKSUM_LEN);
    let crc = crc32fast::hash(head.as_bytes());
    let mut expected = String::with_capacity(CHECKSUM_LEN);
    push_base62_fixed(&mut expected, crc);
    if expected != sum {
        return Err(KeyFormatError::Checksum);
    }
    Ok(kind)
}

fn push_base62_fixed(out: &mut String, mut v: u32) {
    let mut buf = [b'0'; CHECKSUM_LEN];
    for slot in buf.iter_mut().rev() {
        *slot = ALPHABET[(v % 62) as usize];
        v /= 62;
    }
    for b in buf {
        out.push(b as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::OsRng;

    #[test]
    fn generated_keys_parse() {
        for kind in [PlatformKeyType::Admin, PlatformKeyType::Inference] {
            let key = PlatformSecret::generate(kind, &mut OsRng);
            assert_eq!(key.expose().len(), KEY_LEN);
            assert!(key.expose().starts_with(kind.prefix()));
            let (parsed_kind, parsed) = PlatformSecret::parse(key.expose()).unwrap();
            assert_eq!(parsed_kind, kind);
            assert_eq!(parsed.expose(), key.expose());
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let key = PlatformSecret::generate(PlatformKeyType::Admin, &mut OsRng);
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.expose()[..20]));
        assert!(shown.contains(key.last6()));
    }

    #[test]
    fn errors_are_specific() {
        assert_eq!(check("sk-abc").unwrap_err(), KeyFormatError::Prefix);
        assert_eq!(check("kg_adm_abc").unwrap_err(), KeyFormatError::Length);
        let key = PlatformSecret::generate(PlatformKeyType::Admin, &mut OsRng);
        let mut bad = key.expose().to_string();
        bad.replace_range(10..11, "-");
        assert_eq!(check(&bad).unwrap_err(), KeyFormatError::Charset);
    }

    proptest! {
        #[test]
        fn any_single_character_change_is_caught(pos in PREFIX_LEN..KEY_LEN, c in 0usize..62) {
            let key = PlatformSecret::generate(PlatformKeyType::Inference, &mut OsRng);
            let mut bytes = key.expose().as_bytes().to_vec();
            let replacement = ALPHABET[c];
            prop_assume!(bytes[pos] != replacement);
            bytes[pos] = replacement;
            let changed = String::from_utf8(bytes).unwrap();
            // A CRC32 catches every single-symbol change.
            prop_assert!(check(&changed).is_err());
        }

        #[test]
        fn parser_never_panics(s in ".{0,80}") {
            let _ = check(&s);
        }

        #[test]
        fn switching_prefix_breaks_the_checksum(_x in 0u8..4) {
            let key = PlatformSecret::generate(PlatformKeyType::Inference, &mut OsRng);
            let forged = key.expose().replacen("kg_inf_", "kg_adm_", 1);
            prop_assert_eq!(check(&forged), Err(KeyFormatError::Checksum));
        }
    }
}
