//! keygate's core: the services the API, the web UI, the CLI and the gateway stand on. The
//! in-memory key caches (platform keys, provider and virtual keys with their secrets opened),
//! the vault service, the meter that writes usage records, and the limits decision.
//!
//! What must stay true: nothing here speaks HTTP (no axum; `http` only for the rate-limit
//! header names the gateway sends); every failure is a typed [`CoreError`] that the layers above
//! map to their own answers in one place; a request on the hot path is served from memory,
//! with no store round trip. See `docs/architecture.md` for the layers and their rules.
#![forbid(unsafe_code)]

/// Makes `$t` findable in a `HashSet` by a `&str` field of what it wraps (`keyed_by_str!(T,
/// 0.slug)`), so a cache keyed by an id or slug borrows the value's own string instead of holding
/// a copy. Hash and equality are those of that `str`, as `Borrow<str>` requires.
macro_rules! keyed_by_str {
    ($t:ident, $($field:tt).+) => {
        impl std::borrow::Borrow<str> for $t {
            fn borrow(&self) -> &str {
                &self.$($field).+
            }
        }
        impl std::hash::Hash for $t {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.$($field).+.as_str().hash(state);
            }
        }
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.$($field).+ == other.$($field).+
            }
        }
        impl Eq for $t {}
    };
}

pub mod auth;
pub mod error;
pub mod limits;
pub mod meter;
pub mod metrics;
pub mod platform_keys;
pub mod runtime;
pub mod vault;

pub use error::{CoreError, CoreResult};
