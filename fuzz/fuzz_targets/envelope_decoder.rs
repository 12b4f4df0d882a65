//! Opening arbitrary bytes as a sealed secret never panics and never succeeds by accident.
#![no_main]
use keygate_vault::envelope::{master_version, open};
use keygate_vault::{Keyring, MasterKey, SecretPlace};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ring = Keyring::new(1, MasterKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap());
    let place = SecretPlace { workspace: "w", record_id: "r", secret_version: 1, field: "api_key" };
    let _ = master_version(data);
    assert!(open(&ring, &place, data).is_err(), "random bytes opened as a secret");
});
