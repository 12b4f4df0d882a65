//! The state every handler shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use keygate_store::Store;

use crate::auth::AuthCache;
use crate::gateway::{GatewayState, Upstream};
use crate::meter::Meter;
use crate::runtime::Runtime;
use crate::vault::VaultService;

/// Settings of the HTTP surface, validated once at start.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// Whether provider keys may point at loopback and private addresses.
    pub allow_private_upstreams: bool,
    /// Request body cap in bytes (413 above it, before parsing).
    pub max_body_bytes: usize,
    /// Platform keys a workspace may create per minute.
    pub api_key_creations_per_minute: u32,
    /// Active platform keys a workspace may hold.
    pub max_api_keys_per_workspace: u32,
    /// Wallet sign-in requests per client IP and minute.
    pub wallet_requests_per_minute: u32,
    /// Nano-USD per DIEM of a consumption limit (default 1 USD).
    pub diem_usd_nano: i64,
    /// Nano-USD per VCU of a consumption limit (default 0.1 USD).
    pub vcu_usd_nano: i64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            allow_private_upstreams: false,
            max_body_bytes: 32 * 1024 * 1024,
            api_key_creations_per_minute: 20,
            max_api_keys_per_workspace: 500,
            wallet_requests_per_minute: 30,
            diem_usd_nano: 1_000_000_000,
            vcu_usd_nano: 100_000_000,
        }
    }
}

pub struct StateInner {
    pub store: Arc<dyn Store>,
    pub vault: Arc<VaultService>,
    pub auth: Arc<AuthCache>,
    pub runtime: Arc<Runtime>,
    pub meter: Meter,
    pub upstream: Arc<Upstream>,
    pub limits: Arc<crate::limits::LimitEngine>,
    pub settings: ApiSettings,
    /// The gateway's share of this state (the same caches, limits, meter and client).
    pub gateway: Arc<GatewayState>,
    /// The web UI's own state (signed-out sessions).
    pub ui: crate::ui::session::UiState,
    ready: AtomicBool,
}

/// Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

/// The gateway's handlers take their share of the state.
impl axum::extract::FromRef<AppState> for Arc<GatewayState> {
    fn from_ref(state: &AppState) -> Self {
        state.gateway.clone()
    }
}

impl std::ops::Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.0
    }
}

impl AppState {
    /// The state; the caller spawns the meter's writer (see [`Meter::new`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        vault: Arc<VaultService>,
        auth: Arc<AuthCache>,
        runtime: Arc<Runtime>,
        meter: Meter,
        upstream: Arc<Upstream>,
        limits: Arc<crate::limits::LimitEngine>,
        settings: ApiSettings,
    ) -> Self {
        let gateway = Arc::new(GatewayState {
            runtime: runtime.clone(),
            limits: limits.clone(),
            meter: meter.clone(),
            upstream: upstream.clone(),
            max_body_bytes: settings.max_body_bytes,
        });
        AppState(Arc::new(StateInner {
            store,
            vault,
            auth,
            runtime,
            meter,
            upstream,
            limits,
            settings,
            gateway,
            ui: Default::default(),
            ready: AtomicBool::new(true),
        }))
    }

    /// Builds the whole state over a store and a vault with in-process counters, loads every
    /// key, and spawns the usage writer on the current runtime.
    pub async fn build(
        store: Arc<dyn Store>,
        vault: Arc<VaultService>,
        settings: ApiSettings,
        gateway: crate::gateway::GatewaySettings,
        prices: Arc<keygate_types::pricing::PriceTable>,
    ) -> Result<(AppState, tokio::task::JoinHandle<()>), String> {
        let engine = crate::limits::LimitEngine::new(
            Arc::new(keygate_limits::memory::MemoryCounters::new()),
            Arc::new(keygate_limits::SystemClock),
            crate::limits::FailMode::Closed,
            crate::limits::BudgetMode::Strict,
        );
        Self::build_with(store, vault, settings, gateway, prices, Arc::new(engine)).await
    }

    /// [`AppState::build`] with a given limit engine (Redis counters, a manual clock…).
    pub async fn build_with(
        store: Arc<dyn Store>,
        vault: Arc<VaultService>,
        settings: ApiSettings,
        gateway: crate::gateway::GatewaySettings,
        prices: Arc<keygate_types::pricing::PriceTable>,
        limits: Arc<crate::limits::LimitEngine>,
    ) -> Result<(AppState, tokio::task::JoinHandle<()>), String> {
        let auth = Arc::new(AuthCache::new());
        let runtime = Arc::new(Runtime::new());
        let (meter, writer) = Meter::new(store.clone());
        let writer = tokio::spawn(writer);
        let upstream = Upstream::new(gateway, prices, settings.allow_private_upstreams)
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let state = AppState::new(store, vault, auth, runtime, meter, Arc::new(upstream), limits, settings);
        state
            .auth
            .refresh(state.store.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        state
            .runtime
            .refresh(state.store.as_ref(), &state.vault)
            .await
            .map_err(|e| e.to_string())?;
        Ok((state, writer))
    }

    /// Reloads keys changed by this process at once, so the next request sees them.
    pub async fn refresh_caches(&self) {
        if let Err(e) = self.auth.refresh(self.store.as_ref()).await {
            tracing::warn!(error = %e, "cannot refresh the platform-key cache");
        }
        self.runtime.refresh_now(self.store.as_ref(), &self.vault).await;
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Readiness turns false at shutdown so load balancers stop sending traffic.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}
