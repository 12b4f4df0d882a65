//! Platform-key parsing never panics, and what it accepts round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok((kind, key)) = keygate_types::PlatformSecret::parse(s) {
            assert_eq!(key.expose(), s);
            assert!(s.starts_with(kind.prefix()));
        }
        let _ = keygate_types::netpolicy::check_upstream_url(s, false);
        let _ = keygate_types::NanoUsd::parse_usd(s);
    }
});
