//! Domain types of keygate that do no I/O: workspaces and names, money, model hubs,
//! platform-key formats, the stored policies of keys and timestamps. Every other crate builds
//! on these.
#![forbid(unsafe_code)]

pub mod hub;
pub mod hubconfig;
pub mod keyfmt;
pub mod money;
pub mod names;
pub mod netpolicy;
pub mod policy;
pub mod pricing;
pub mod timefmt;

pub use hub::ModelHub;
pub use keyfmt::{KeyFormatError, PlatformKeyType, PlatformSecret};
pub use money::NanoUsd;
pub use names::{validate_name, NameError, WorkspaceId, DEFAULT_WORKSPACE};
