//! Ethereum wallet sign-in: EIP-55 addresses and EIP-191 `personal_sign`
//! signature recovery.
//!
//! A wallet signs `keccak256("\x19Ethereum Signed Message:\n" + len(message) + message)` with
//! secp256k1 and returns `r || s || v` as `0x` + 130 hex digits. We recover the public key
//! from the signature, derive the address (the last 20 bytes of the keccak256 of the
//! uncompressed public key without its `0x04` tag) and compare it with the claimed one.
//!
//! What must stay true: only the canonical form of a signature is accepted. `s` must be in
//! the lower half of the curve order (EIP-2), `r` and `s` must be in `1..n`, and `v` must be
//! 27/28 (or 0/1, as some hardware wallets send it); anything else is refused before any
//! curve arithmetic, so one signed token cannot be presented under a second encoding.
//! Nothing here panics on untrusted input.

use std::fmt;
use std::str::FromStr;

use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use k256::elliptic_curve::scalar::IsHigh;
use sha3::{Digest, Keccak256};

/// Errors of wallet address parsing and signature recovery. None carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    /// Not `0x` followed by 40 hex digits.
    #[error("not an Ethereum address: expected 0x followed by 40 hex digits")]
    BadAddress,
    /// Mixed-case address whose capitalisation is not its EIP-55 checksum.
    #[error("the address has mixed case but is not a valid EIP-55 checksum")]
    BadChecksum,
    /// Wrong length, not hex, `v` not in {27, 28, 0, 1}, `r`/`s` out of range or `s` not low.
    #[error("malformed signature: expected 0x followed by 130 hex digits (r, s, v) in canonical low-s form")]
    BadSignature,
    /// Well-formed, but no public key can be recovered from it for this message.
    #[error("no signer can be recovered from this signature")]
    Unrecoverable,
}

/// A 20-byte Ethereum address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Address(pub [u8; 20]);

impl Address {
    /// Parses `0x` + 40 hex digits (any case). If the input is mixed-case, it must be a valid
    /// EIP-55 checksum, else [`WalletError::BadChecksum`]. All-lower and all-upper digits are
    /// accepted without a checksum, as EIP-55 specifies.
    pub fn parse(s: &str) -> Result<Address, WalletError> {
        let body = s.strip_prefix("0x").ok_or(WalletError::BadAddress)?;
        let body = body.as_bytes();
        if body.len() != 40 {
            return Err(WalletError::BadAddress);
        }
        let mut out = [0u8; 20];
        decode_hex(body, &mut out).ok_or(WalletError::BadAddress)?;
        let address = Address(out);

        let has_lower = body.iter().any(u8::is_ascii_lowercase);
        let has_upper = body.iter().any(u8::is_ascii_uppercase);
        if has_lower && has_upper {
            let checksummed = address.to_checksum();
            if checksummed.as_bytes()[2..] != *body {
                return Err(WalletError::BadChecksum);
            }
        }
        Ok(address)
    }

    /// Lower-case `0x…` form (used as the stored key).
    pub fn to_lower_hex(&self) -> String {
        let mut s = String::with_capacity(42);
        s.push_str("0x");
        for b in self.0 {
            s.push(char::from(HEX_LOWER[usize::from(b >> 4)]));
            s.push(char::from(HEX_LOWER[usize::from(b & 0x0f)]));
        }
        s
    }

    /// EIP-55 checksummed form: a hex letter is upper-case when the matching nibble of
    /// `keccak256(lower-case hex without 0x)` is 8 or more.
    pub fn to_checksum(&self) -> String {
        let lower = self.to_lower_hex();
        let hash = keccak256(&[&lower.as_bytes()[2..]]);
        let mut s = String::with_capacity(42);
        s.push_str("0x");
        for (i, c) in lower[2..].chars().enumerate() {
            let byte = hash[i / 2];
            let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
            if nibble >= 8 {
                s.push(c.to_ascii_uppercase());
            } else {
                s.push(c);
            }
        }
        s
    }

    /// The address of a secp256k1 public key.
    pub(crate) fn from_verifying_key(key: &VerifyingKey) -> Address {
        let point = key.to_sec1_point(false);
        let bytes = point.as_bytes();
        // An uncompressed SEC1 point is 0x04 || x (32) || y (32).
        let hash = keccak256(&[bytes.get(1..).unwrap_or_default()]);
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash[12..]);
        Address(out)
    }

    /// The address of a raw 32-byte secp256k1 private key; `None` if the key is zero or not
    /// below the curve order. For tests and tooling: keygate never holds wallet keys.
    pub fn from_private_key(private_key: &[u8; 32]) -> Option<Address> {
        let key = SigningKey::from_slice(private_key).ok()?;
        Some(Address::from_verifying_key(key.verifying_key()))
    }
}

impl fmt::Display for Address {
    /// Displays the EIP-55 checksummed form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_checksum())
    }
}

impl FromStr for Address {
    type Err = WalletError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const PERSONAL_PREFIX: &[u8] = b"\x19Ethereum Signed Message:\n";

fn keccak256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Keccak256::new();
    for p in parts {
        h.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&h.finalize());
    out
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes exactly `2 * out.len()` hex digits (either case) into `out`.
fn decode_hex(digits: &[u8], out: &mut [u8]) -> Option<()> {
    if digits.len() != out.len() * 2 {
        return None;
    }
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *o = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
    }
    Some(())
}

/// keccak256("\x19Ethereum Signed Message:\n" + decimal byte length of message + message)
pub fn personal_message_hash(message: &[u8]) -> [u8; 32] {
    let len = message.len().to_string();
    keccak256(&[PERSONAL_PREFIX, len.as_bytes(), message])
}

/// Parses `0x` + 130 hex digits into a canonical signature and recovery id.
fn parse_signature(signature: &str) -> Result<(Signature, RecoveryId), WalletError> {
    let body = signature
        .strip_prefix("0x")
        .ok_or(WalletError::BadSignature)?
        .as_bytes();
    let mut raw = [0u8; 65];
    decode_hex(body, &mut raw).ok_or(WalletError::BadSignature)?;

    let recid = match raw[64] {
        0 | 27 => 0,
        1 | 28 => 1,
        _ => return Err(WalletError::BadSignature),
    };
    let recid = RecoveryId::from_byte(recid).ok_or(WalletError::BadSignature)?;

    // Refuses r or s equal to zero or not below the curve order.
    let sig = Signature::from_slice(&raw[..64]).map_err(|_| WalletError::BadSignature)?;
    if bool::from(sig.s().is_high()) {
        return Err(WalletError::BadSignature);
    }
    Ok((sig, recid))
}

/// Recovers the signer of an EIP-191 personal_sign signature: `signature` is `0x` + 130 hex
/// (r || s || v), v in {27, 28} or {0, 1}. Rejects high-s signatures (EIP-2) and any other v.
pub fn recover_personal_sign(message: &[u8], signature: &str) -> Result<Address, WalletError> {
    let (sig, recid) = parse_signature(signature)?;
    let hash = personal_message_hash(message);
    let key = VerifyingKey::recover_from_prehash(&hash, &sig, recid).map_err(|_| WalletError::Unrecoverable)?;
    Ok(Address::from_verifying_key(&key))
}

/// Convenience: does `signature` over `message` come from `address`?
pub fn verify_personal_sign(message: &[u8], signature: &str, address: &Address) -> bool {
    matches!(recover_personal_sign(message, signature), Ok(signer) if signer == *address)
}

/// Signs `message` as a wallet's `personal_sign` would (RFC 6979 deterministic nonce, low s,
/// v in {27, 28}), returning `0x` + 130 hex digits. `None` if the private key is zero or not
/// below the curve order. For tests and tooling (for example a client proving wallet
/// sign-in): keygate itself never holds wallet keys.
pub fn personal_sign(private_key: &[u8; 32], message: &[u8]) -> Option<String> {
    let key = SigningKey::from_slice(private_key).ok()?;
    let hash = personal_message_hash(message);
    let (sig, recid) = key.sign_prehash_recoverable(&hash);
    // recid 2 or 3 (x reduced mod n) has probability ~2^-127 and no personal_sign encoding.
    let v = match recid.to_byte() {
        0 => 27u8,
        1 => 28u8,
        _ => return None,
    };
    let mut raw = [0u8; 65];
    raw[..64].copy_from_slice(&sig.to_bytes());
    raw[64] = v;
    let mut s = String::with_capacity(132);
    s.push_str("0x");
    for b in raw {
        s.push(char::from(HEX_LOWER[usize::from(b >> 4)]));
        s.push(char::from(HEX_LOWER[usize::from(b & 0x0f)]));
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The well-known example key from the Ethereum docs.
    const KEY1: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
    const ADDR1: &str = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23";
    /// Hardhat/Anvil development account #0.
    const KEY2: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const ADDR2: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

    /// A 43-character base64url token, the shape of keygate's wallet sign-in tokens.
    const TOKEN: &str = "Rqfnj84gt_4QaA-WWolWvGjCrja4yiHWYdQTWycNzhk";

    /// (message, personal_message_hash, signature by KEY1, signature by KEY2), all computed
    /// with Python eth-account 0.13 (`Account.sign_message(encode_defunct(text=m), key)` and
    /// `_hash_eip191_message`), independently of this crate.
    const VECTORS: &[(&str, &str, &str, &str)] = &[
        (
            "hello",
            "50b2c43fd39106bafbba0da34fc430e1f91e3c96ea2acee2bc34119f92b37750",
            "0xa5d58782075bdf09490159d634d1aae66a8f6777c7247d2f233e9511cfd7c64c34f288cdbcea5370e4863fdbe9f4d86654c2ba1d86589e9ebb64494c649008591b",
            "0xf16ea9a3478698f695fd1401bfe27e9e4a7e8e3da94aa72b021125e31fa899cc573c48ea3fe1d4ab61a9db10c19032026e3ed2dbccba5a178235ac27f94504311c",
        ),
        (
            "",
            "5f35dce98ba4fba25530a026ed80b2cecdaa31091ba4958b99b52ea1d068adad",
            "0x8a68b4e66cd2b575338e16069d7b65f6f67c7ceae8945dccf8cb7bdb06278d933dd9c888f3444ca4698464079a067ad3cfffe96d493b8ecf56885169d0fdfe7d1b",
            "0xc1977b761f1dd36c29795783460d241885c8e7f9d962dbe7bba2753fd94e89b444a1cd9ed855dd09afa3b73f7c2bd097ec9abc2d2775d737505a02d3f0cafa591b",
        ),
        (
            "Sign in to keygate\nnonce: 42",
            "84cd7169f2e0df97c848d9fc2bf5cf1b5062c018913e5b29b97536e77c459b27",
            "0x31c873ab4892212cd4a37609068a3d9681e1800eaf3f273c90a908089382dfd34c14db2d5de5b6e45a8e4219351b27d18b95a29f4c0b7822ac9140b4a394c3f81c",
            "0x15ea3f6ce001ce8b0b3f6afa26b0c76b5024c2fbd95a3d5e7141c7bcbe43d2ce2d4b00869bfac7e78ccf5fc8e14a0d8bbf8508c37650f2fa3f8b95bc3df506011b",
        ),
        (
            "keygate \u{e9}\u{e8} \u{2603} \u{1F511}",
            "089e3b4ddbdc03703680f710016f52ec2569cca7a803d4138880eaf17bb5ad44",
            "0x69c56c7567057fa3908d100603f2493ff014cdcab85bb0b5ce6e4a0a3e6eb2e63819b5d89fb534a46159e2f84dc2988431e76946c9d6370f7447f4be2b14fdb11c",
            "0xa2642eb447d2656205de868011363bd155e86cbfb89aaf5a447849d30641663a227e0aa09d019c423921b17b757d2d96192a9c3b7a1b649d69560d9129f406271c",
        ),
        (
            // 150 bytes: a three-digit length in the prefix.
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "5087b415bd7ce9bda1fb29f3df8ac0a14d8d77bc3b0fcd83cca8466848fdb5af",
            "0xb4799be92b85df7712c75551bd96f2e4d59e2ddda9b94a8b8ae68c6fb6dcb49f30918a26b2c14a319d3de579ab2aaafb96d68a254a8b905c19133bc641d095181c",
            "0xbdab3dda060e63cbdcc82597ead5f8ff0ca0478a3ade3e5d481d91c38f1a4cf722df6d7d078aa20e2898b6dd70e939fa06b5da8c3b016403129a58f4373944401c",
        ),
        (
            TOKEN,
            "b04b439a6e746784437bb718a3b1c7106784fff376716bed0217054eb26dfe9d",
            "0x55ac7001e46b14d0ff511f2f7cc26ef250043d60234e199e9eb32004a7ad355348bac5bda9408c1cf90e9af8efe5d8cd4f1888bc2560ce7d44fce9a686a89b891b",
            "0x166c20fadb8b45534ea654645446436948b94a6e58120afbccadf63f5b4d3141408ffa571bee798b3ce8d4f12816cea96ea25ce8a31927ec3bb52969c17f82381b",
        ),
    ];

    /// KEY1's "hello" signature with s replaced by n - s and v flipped (computed in Python;
    /// eth-keys recovers ADDR1 from it, so only the low-s rule refuses it).
    const HELLO_HIGH_S: &str = "0xa5d58782075bdf09490159d634d1aae66a8f6777c7247d2f233e9511cfd7c64ccb0d77324315ac8f1b79c024160b279865ec22c928f0019d046e15406ba638e81c";

    fn key(hex: &str) -> [u8; 32] {
        let mut k = [0u8; 32];
        decode_hex(hex.as_bytes(), &mut k).unwrap();
        k
    }

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn hex32(h: &[u8; 32]) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Replaces the hex digits at `pos` (offset past `0x`) with `digits`.
    fn splice(sig: &str, pos: usize, digits: &str) -> String {
        let mut s = sig.to_string();
        s.replace_range(2 + pos..2 + pos + digits.len(), digits);
        s
    }

    #[test]
    fn known_private_keys_give_known_addresses() {
        assert_eq!(Address::from_private_key(&key(KEY1)), Some(addr(ADDR1)));
        assert_eq!(Address::from_private_key(&key(KEY2)), Some(addr(ADDR2)));
        assert_eq!(Address::from_private_key(&key(KEY1)).unwrap().to_checksum(), ADDR1);
        assert_eq!(Address::from_private_key(&[0u8; 32]), None);
        assert_eq!(Address::from_private_key(&[0xff; 32]), None);
    }

    #[test]
    fn eip55_vectors() {
        for s in [
            // From EIP-55.
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
            // All caps and all lower letters are valid checksums too.
            "0x52908400098527886E0F7030069857D2E4169EE7",
            "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
            "0xde709f2102306220921060314715629080e2fb77",
            "0x27b1fdb04752bbc536007a920d24acb045561c26",
            ADDR1,
            ADDR2,
        ] {
            let a = Address::parse(s).unwrap();
            assert_eq!(a.to_checksum(), s);
            assert_eq!(a.to_string(), s);
            assert_eq!(a.to_lower_hex(), s.to_ascii_lowercase());
            assert_eq!(s.parse::<Address>(), Ok(a));
            // The lower-case and upper-case forms parse without a checksum.
            assert_eq!(Address::parse(&s.to_ascii_lowercase()), Ok(a));
            let upper = format!("0x{}", s[2..].to_ascii_uppercase());
            assert_eq!(Address::parse(&upper), Ok(a));
        }
        assert_eq!(
            addr("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").0[..4],
            [0x5a, 0xae, 0xb6, 0x05]
        );
    }

    #[test]
    fn bad_addresses_are_refused() {
        // Mixed case with one letter's case flipped.
        for s in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
            "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfb6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        ] {
            assert_eq!(Address::parse(s), Err(WalletError::BadChecksum), "{s}");
        }
        for s in [
            "",
            "0x",
            "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0X5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed0",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeg",
            " 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed ",
            "0x+aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            // 40 bytes, but not 40 ASCII characters.
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1Bé",
        ] {
            assert_eq!(Address::parse(s), Err(WalletError::BadAddress), "{s:?}");
        }
    }

    #[test]
    fn message_hash_matches_eth_account() {
        assert_eq!(VECTORS[4].0.len(), 150);
        assert_eq!(VECTORS[3].0.len(), 21);
        for (msg, hash, _, _) in VECTORS {
            assert_eq!(hex32(&personal_message_hash(msg.as_bytes())), *hash, "{msg:?}");
        }
        assert_eq!(
            personal_message_hash(b"hello"),
            keccak256(&[b"\x19Ethereum Signed Message:\n5hello"])
        );
    }

    #[test]
    fn eth_account_signatures_recover_their_signers() {
        let (a1, a2) = (addr(ADDR1), addr(ADDR2));
        for (msg, _, sig1, sig2) in VECTORS {
            let m = msg.as_bytes();
            assert_eq!(recover_personal_sign(m, sig1), Ok(a1), "{msg:?}");
            assert_eq!(recover_personal_sign(m, sig2), Ok(a2), "{msg:?}");
            assert!(verify_personal_sign(m, sig1, &a1));
            assert!(verify_personal_sign(m, sig2, &a2));
            // Wrong signer.
            assert!(!verify_personal_sign(m, sig1, &a2));
            assert!(!verify_personal_sign(m, sig2, &a1));
            // Upper-case hex is the same signature.
            let upper = format!("0x{}", sig1[2..].to_ascii_uppercase());
            assert_eq!(recover_personal_sign(m, &upper), Ok(a1));
        }
    }

    #[test]
    fn eth_account_signature_over_a_token_verifies() {
        assert_eq!(TOKEN.len(), 43);
        assert!(TOKEN
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        let sig = "0x55ac7001e46b14d0ff511f2f7cc26ef250043d60234e199e9eb32004a7ad355348bac5bda9408c1cf90e9af8efe5d8cd4f1888bc2560ce7d44fce9a686a89b891b";
        let wallet = addr(ADDR1);
        assert!(verify_personal_sign(TOKEN.as_bytes(), sig, &wallet));
        // Another token, or the same token signed for another wallet, does not.
        assert!(!verify_personal_sign(
            b"Rqfnj84gt_4QaA-WWolWvGjCrja4yiHWYdQTWycNzhl",
            sig,
            &wallet
        ));
        assert!(!verify_personal_sign(TOKEN.as_bytes(), sig, &addr(ADDR2)));
    }

    #[test]
    fn k256_signing_matches_eth_account_and_recovers() {
        // RFC 6979 with SHA-256 nonces, as eth-keys uses: byte-identical signatures.
        for (msg, _, sig1, sig2) in VECTORS {
            assert_eq!(personal_sign(&key(KEY1), msg.as_bytes()).as_deref(), Some(*sig1));
            assert_eq!(personal_sign(&key(KEY2), msg.as_bytes()).as_deref(), Some(*sig2));
        }
        for i in 0u32..32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            k[31] = 0x5a;
            let message = format!("keygate wallet test message {i}");
            let sig = personal_sign(&k, message.as_bytes()).unwrap();
            let signer = Address::from_private_key(&k).unwrap();
            assert_eq!(recover_personal_sign(message.as_bytes(), &sig), Ok(signer));
            assert!(!verify_personal_sign(b"other", &sig, &signer));
        }
        assert_eq!(personal_sign(&[0u8; 32], b"x"), None);
    }

    #[test]
    fn v_zero_and_one_are_accepted() {
        let (msg, _, sig1, sig2) = VECTORS[0];
        // sig1 ends in v = 27 (0x1b), sig2 in v = 28 (0x1c).
        assert!(sig1.ends_with("1b") && sig2.ends_with("1c"));
        assert_eq!(
            recover_personal_sign(msg.as_bytes(), &splice(sig1, 128, "00")),
            Ok(addr(ADDR1))
        );
        assert_eq!(
            recover_personal_sign(msg.as_bytes(), &splice(sig2, 128, "01")),
            Ok(addr(ADDR2))
        );
    }

    #[test]
    fn bad_v_is_refused() {
        let (msg, _, sig1, _) = VECTORS[0];
        for v in ["1d", "1e", "02", "03", "1a", "25", "26", "ff"] {
            assert_eq!(
                recover_personal_sign(msg.as_bytes(), &splice(sig1, 128, v)),
                Err(WalletError::BadSignature),
                "v = {v}"
            );
        }
        // The other valid v recovers some other key, never the signer.
        let flipped = splice(sig1, 128, "1c");
        assert!(!verify_personal_sign(msg.as_bytes(), &flipped, &addr(ADDR1)));
    }

    #[test]
    fn high_s_is_refused() {
        let m = b"hello";
        assert_eq!(recover_personal_sign(m, HELLO_HIGH_S), Err(WalletError::BadSignature));
        assert!(!verify_personal_sign(m, HELLO_HIGH_S, &addr(ADDR1)));
        // The same malleation computed here, for every vector.
        for (msg, _, sig1, _) in VECTORS {
            let (sig, recid) = parse_signature(sig1).unwrap();
            let high = Signature::from_scalars(sig.r().to_bytes(), (-*sig.s()).to_bytes()).unwrap();
            let v = if recid.to_byte() == 0 { 28u8 } else { 27u8 };
            let mut raw = high.to_bytes().to_vec();
            raw.push(v);
            let text = format!("0x{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>());
            // Mathematically it still recovers the signer...
            let key = VerifyingKey::recover_from_prehash(
                &personal_message_hash(msg.as_bytes()),
                &high,
                RecoveryId::from_byte(v - 27).unwrap(),
            )
            .unwrap();
            assert_eq!(Address::from_verifying_key(&key), addr(ADDR1));
            // ...but it is not canonical, so it is refused.
            assert_eq!(
                recover_personal_sign(msg.as_bytes(), &text),
                Err(WalletError::BadSignature)
            );
        }
    }

    #[test]
    fn wrong_message_is_refused() {
        let a1 = addr(ADDR1);
        let (_, _, sig1, _) = VECTORS[0];
        for other in [
            &b"hello "[..],
            b"Hello",
            b"hell",
            b"",
            b"\x19Ethereum Signed Message:\n5hello",
        ] {
            assert!(!verify_personal_sign(other, sig1, &a1), "{other:?}");
        }
    }

    #[test]
    fn tampered_r_or_s_is_refused() {
        let a1 = addr(ADDR1);
        for (msg, _, sig1, _) in VECTORS {
            let m = msg.as_bytes();
            // Flip one digit in r and one in s.
            for pos in [0usize, 17, 63, 64, 90, 127] {
                let d = &sig1[2 + pos..3 + pos];
                let repl = if d == "0" { "1" } else { "0" };
                let t = splice(sig1, pos, repl);
                assert!(!verify_personal_sign(m, &t, &a1), "{msg:?} at {pos}");
                match recover_personal_sign(m, &t) {
                    Ok(other) => assert_ne!(other, a1),
                    Err(e) => assert!(
                        matches!(e, WalletError::BadSignature | WalletError::Unrecoverable),
                        "{e:?}"
                    ),
                }
            }
        }
        let (msg, _, sig1, _) = VECTORS[0];
        let zeros = "0".repeat(64);
        let order = "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141";
        for (pos, digits) in [(0, zeros.as_str()), (64, zeros.as_str()), (0, order), (64, order)] {
            assert_eq!(
                recover_personal_sign(msg.as_bytes(), &splice(sig1, pos, digits)),
                Err(WalletError::BadSignature),
                "r/s {pos} = {digits}"
            );
        }
        // An r that is no point's x coordinate recovers nothing. x = 5 is not on secp256k1
        // (125 + 7 = 132 is not a square mod p).
        let r5 = format!("{:0>64}", "5");
        assert_eq!(
            recover_personal_sign(msg.as_bytes(), &splice(sig1, 0, &r5)),
            Err(WalletError::Unrecoverable)
        );
    }

    #[test]
    fn malformed_signatures_are_refused() {
        let (msg, _, sig1, _) = VECTORS[0];
        let m = msg.as_bytes();
        let body = &sig1[2..];
        let cases = [
            String::new(),
            "0x".to_string(),
            body.to_string(),
            format!("0X{body}"),
            format!("0x{}", &body[..128]),
            format!("0x{}", &body[..129]),
            format!("{sig1}0"),
            format!("{sig1}00"),
            format!(" {sig1}"),
            format!("{sig1}\n"),
            splice(sig1, 5, "g"),
            splice(sig1, 129, "z"),
            splice(sig1, 0, "é"),
        ];
        for c in &cases {
            assert_eq!(recover_personal_sign(m, c), Err(WalletError::BadSignature), "{c:?}");
            assert!(!verify_personal_sign(m, c, &addr(ADDR1)));
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(WalletError::BadChecksum.to_string().contains("EIP-55"));
        assert!(WalletError::BadSignature.to_string().contains("130 hex"));
    }

    proptest! {
        #[test]
        fn recover_never_panics_on_arbitrary_strings(msg in any::<Vec<u8>>(), sig in any::<String>()) {
            let _ = recover_personal_sign(&msg, &sig);
        }

        #[test]
        fn recover_never_panics_on_well_shaped_garbage(msg in any::<Vec<u8>>(), sig in "0x[0-9a-fA-F]{130}") {
            match recover_personal_sign(&msg, &sig) {
                Ok(_) | Err(WalletError::BadSignature) | Err(WalletError::Unrecoverable) => {}
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }

        #[test]
        fn address_parse_never_panics(s in any::<String>()) {
            let _ = Address::parse(&s);
        }

        #[test]
        fn address_round_trips(bytes in any::<[u8; 20]>()) {
            let a = Address(bytes);
            prop_assert_eq!(Address::parse(&a.to_checksum()), Ok(a));
            prop_assert_eq!(Address::parse(&a.to_lower_hex()), Ok(a));
        }
    }
}
