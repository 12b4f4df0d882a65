//! The state every handler shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use keygate_store::Store;

use crate::auth::AuthCache;
use crate::vault::VaultService;

/// Settings of the HTTP surface, validated once at start.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// Whether provider keys may point at loopback and private addresses.
    pub allow_private_upstreams: bool,
    /// Request body cap in bytes (413 above it, before parsing).
    pub max_body_bytes: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            allow_private_upstreams: false,
            max_body_bytes: 32 * 1024 * 1024,
        }
    }
}

pub struct StateInner {
    pub store: Arc<dyn Store>,
    pub vault: Arc<VaultService>,
    pub auth: Arc<AuthCache>,
    pub settings: ApiSettings,
    ready: AtomicBool,
}

/// Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

impl std::ops::Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        vault: Arc<VaultService>,
        auth: Arc<AuthCache>,
        settings: ApiSettings,
    ) -> Self {
        AppState(Arc::new(StateInner {
            store,
            vault,
            auth,
            settings,
            ready: AtomicBool::new(true),
        }))
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Readiness turns false at shutdown so load balancers stop sending traffic.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}
