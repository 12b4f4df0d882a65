//! What the hot path reads: virtual keys and provider keys with their secrets opened, in
//! memory. Loaded at start and kept current like the platform-key cache (the store revision,
//! then only what changed), so a gateway request makes no store round trip.
//!
//! What must stay true: opened secrets live only in zeroizing buffers inside
//! [`ProviderRuntime`], whose `Debug` shows none of them; a deleted or rotated key is replaced
//! at the next refresh (within 250 ms here, within a second on other replicas).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use keygate_store::{ChangesPage, ProviderKeyRow, Store, StoreError, VirtualKeyRow};
use keygate_types::hubconfig::{effective_base_url, HubSettings};
use keygate_types::ModelHub;
use keygate_vault::SecretPlace;
use parking_lot::RwLock;
use zeroize::Zeroizing;

use keygate_types::policy::VkConfig;

use crate::vault::VaultService;

/// A provider key ready for use: its hub, where to send, and its opened secrets.
pub struct ProviderRuntime {
    pub id: String,
    pub workspace: String,
    pub name: String,
    pub hub: ModelHub,
    /// The configured base URL or the hub's (no trailing slash).
    pub base_url: Option<String>,
    pub settings: HubSettings,
    pub private: bool,
    pub secret_version: i64,
    /// Requests per interval (seconds): the key's own or its hub's default.
    pub rate_limit: (i64, i64),
    secrets: HashMap<String, Zeroizing<String>>,
    /// The URL policy's verdict on `base_url`, decided once per process (the policy's
    /// `allow_private` does not change while it runs) instead of once per request.
    url_verdict: std::sync::OnceLock<Result<(), String>>,
}

impl std::fmt::Debug for ProviderRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderRuntime")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("hub", &self.hub)
            .field("secret_version", &self.secret_version)
            .field("secret_fields", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ProviderRuntime {
    /// An opened secret field (`api_key`, `client_secret`…). Use only to inject it upstream.
    pub fn expose_secret(&self, field: &str) -> Option<&str> {
        self.secrets.get(field).map(|s| s.as_str())
    }

    /// Whether keygate may call `base_url` under the URL policy (literal addresses; names are
    /// checked again by the resolver at connect time).
    pub fn url_allowed(&self, allow_private: bool) -> Result<(), &str> {
        self.url_verdict
            .get_or_init(|| match self.base_url.as_deref() {
                Some(u) => netpolicy_check(u, allow_private),
                None => Ok(()),
            })
            .as_ref()
            .map(|_| ())
            .map_err(String::as_str)
    }

    /// A runtime for tests and benchmarks, built without a store.
    ///
    /// # Panics
    /// When the row's hub or hub settings cannot be read (a test's own mistake).
    #[allow(clippy::expect_used)]
    pub fn for_test(row: &ProviderKeyRow, secrets: &[(&str, &str)]) -> ProviderRuntime {
        let mut map = HashMap::new();
        for (k, v) in secrets {
            map.insert((*k).to_string(), Zeroizing::new((*v).to_string()));
        }
        build(row, map).expect("a readable provider key")
    }
}

/// A provider key ready for use, or why its stored record cannot be used: an unknown hub or
/// hub settings that do not read as [`HubSettings`] make the key refuse, never a default.
fn build(row: &ProviderKeyRow, secrets: HashMap<String, Zeroizing<String>>) -> Result<ProviderRuntime, String> {
    let settings = HubSettings::from_stored(&row.hub_settings).map_err(|e| e.to_string())?;
    let hub = ModelHub::parse(&row.hub).ok_or_else(|| format!("unknown hub `{}`", row.hub))?;
    let (per, interval, _) = rate_limit_of(row);
    Ok(ProviderRuntime {
        id: row.id.clone(),
        workspace: row.workspace.clone(),
        name: row.name.clone(),
        hub,
        base_url: effective_base_url(hub, row.base_url.as_deref(), &settings),
        settings,
        private: row.private,
        secret_version: row.secret_version,
        rate_limit: (per, interval),
        secrets,
        url_verdict: std::sync::OnceLock::new(),
    })
}

/// The rate limit that applies to a provider key: its own or its hub's default tier, as
/// (requests, interval in seconds, whether the key sets its own).
pub fn rate_limit_of(row: &ProviderKeyRow) -> (i64, i64, bool) {
    match (row.rate_limit_per_interval, row.rate_limit_interval) {
        (Some(n), Some(i)) => (n, i, true),
        _ => {
            let d = ModelHub::parse(&row.hub)
                .unwrap_or(ModelHub::Custom)
                .default_rate_limit();
            (i64::from(d.per_interval), i64::from(d.interval_secs), false)
        }
    }
}

fn netpolicy_check(url: &str, allow_private: bool) -> Result<(), String> {
    keygate_types::netpolicy::check_upstream_url(url, allow_private)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A virtual key ready for use.
#[derive(Debug)]
pub struct VkRuntime {
    pub id: String,
    pub workspace: String,
    pub slug: String,
    pub name: String,
    pub disabled: bool,
    pub expires_at: Option<i64>,
    /// Shared by the keys whose configuration is the same (see [`ConfigInterner`]).
    pub config: Arc<VkConfig>,
}

/// A virtual key found by its slug, or by its id: the maps borrow the key's own strings
/// instead of holding copies. Hash and equality are those of that `str`, as `Borrow` requires.
struct BySlug(Arc<VkRuntime>);
struct ById(Arc<VkRuntime>);

keyed_by_str!(BySlug, 0.slug);
keyed_by_str!(ById, 0.id);

#[derive(Default)]
struct Vks {
    by_slug: HashSet<BySlug, foldhash::fast::RandomState>,
    by_id: HashSet<ById, foldhash::fast::RandomState>,
    configs: ConfigInterner,
    /// Virtual keys whose stored configuration cannot be read, by id: refused, never served
    /// without their limits.
    unreadable: HashMap<String, Unreadable, foldhash::fast::RandomState>,
}

/// A key whose stored record cannot be read: it refuses every request (503 naming its id)
/// until the record is repaired or the key re-created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    pub id: String,
    pub workspace: String,
    /// The virtual key's slug (empty for a provider key).
    pub slug: String,
    /// What cannot be read, and why (no stored value, no secret).
    pub reason: String,
}

/// Shares one parsed [`VkConfig`] among virtual keys whose stored configuration is the same
/// text (keys made by one script or template: same targets, same limits), so each distinct
/// configuration is held once. Found by a hash of the text and confirmed by comparing the
/// parsed values, so a hash collision only costs the sharing. Entries of configurations no
/// key uses any more are dropped once they are as many as the live ones.
#[derive(Default)]
struct ConfigInterner {
    by_text: HashMap<u64, std::sync::Weak<VkConfig>>,
}

impl ConfigInterner {
    fn intern(&mut self, text: &str, live: usize) -> Result<Arc<VkConfig>, String> {
        let parsed = VkConfig::from_stored(text).map_err(|e| e.to_string())?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        let key = h.finish();
        if let Some(shared) = self.by_text.get(&key).and_then(std::sync::Weak::upgrade) {
            if *shared == parsed {
                return Ok(shared);
            }
        }
        if self.by_text.len() > 2 * live + 64 {
            self.by_text.retain(|_, w| w.strong_count() > 0);
        }
        let config = Arc::new(parsed);
        self.by_text.insert(key, Arc::downgrade(&config));
        Ok(config)
    }
}

/// How a provider key has been doing: failures in a row and a cool-down end.
#[derive(Clone, Copy, Debug, Default)]
struct Health {
    failures: u32,
    cool_until: i64,
}

/// Failures in a row after which a provider key is cooled down.
pub const COOLDOWN_AFTER_FAILURES: u32 = 3;
/// How long a failing provider key is cooled down.
pub const COOLDOWN_MS: i64 = 30_000;

/// The in-memory state of the hot path.
#[derive(Default)]
pub struct Runtime {
    health: parking_lot::Mutex<HashMap<String, Health, foldhash::fast::RandomState>>,
    /// Entries in `health` (written under its lock): while it is 0, as it is while every
    /// provider key answers, a request reads no lock for health.
    unhealthy: AtomicUsize,
    providers: RwLock<HashMap<String, Arc<ProviderRuntime>, foldhash::fast::RandomState>>,
    /// Provider keys whose stored record cannot be read or whose secret cannot be opened.
    unreadable_providers: RwLock<HashMap<String, Unreadable, foldhash::fast::RandomState>>,
    vks: RwLock<Vks>,
    rev: AtomicI64,
    refreshing: tokio::sync::Mutex<()>,
}

impl Runtime {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn provider(&self, id: &str) -> Option<Arc<ProviderRuntime>> {
        self.providers.read().get(id).cloned()
    }

    pub fn provider_name(&self, id: &str) -> Option<String> {
        self.providers.read().get(id).map(|p| p.name.clone())
    }

    /// A virtual key by slug or `vk_…` id.
    pub fn virtual_key(&self, slug_or_id: &str) -> Option<Arc<VkRuntime>> {
        let vks = self.vks.read();
        vks.by_slug
            .get(slug_or_id)
            .map(|k| &k.0)
            .or_else(|| vks.by_id.get(slug_or_id).map(|k| &k.0))
            .cloned()
    }

    /// The virtual key named by `slug_or_id` when its stored configuration cannot be read
    /// (looked up only after [`virtual_key`](Self::virtual_key) found nothing).
    pub fn unreadable_virtual_key(&self, slug_or_id: &str) -> Option<Unreadable> {
        let vks = self.vks.read();
        vks.unreadable
            .get(slug_or_id)
            .cloned()
            .or_else(|| vks.unreadable.values().find(|u| u.slug == slug_or_id).cloned())
    }

    /// The provider key `id` when its stored record cannot be used.
    pub fn unreadable_provider(&self, id: &str) -> Option<Unreadable> {
        self.unreadable_providers.read().get(id).cloned()
    }

    /// Every key that refuses because its stored record cannot be read: provider keys, then
    /// virtual keys.
    pub fn unreadable(&self) -> Vec<Unreadable> {
        let mut out: Vec<Unreadable> = self.unreadable_providers.read().values().cloned().collect();
        out.extend(self.vks.read().unreadable.values().cloned());
        out
    }

    /// Notes an upstream failure before the first byte. `retry_after_ms` (a 429's
    /// `Retry-After`) cools the key down for that long; three failures in a row for 30 s.
    pub fn note_failure(&self, provider_id: &str, retry_after_ms: Option<i64>, now: i64) {
        let mut h = self.health.lock();
        let e = h.entry(provider_id.to_string()).or_default();
        e.failures += 1;
        if let Some(ms) = retry_after_ms {
            e.cool_until = e.cool_until.max(now + ms);
        }
        if e.failures >= COOLDOWN_AFTER_FAILURES {
            e.cool_until = e.cool_until.max(now + COOLDOWN_MS);
        }
        self.unhealthy.store(h.len(), Ordering::Relaxed);
    }

    pub fn note_success(&self, provider_id: &str) {
        if self.unhealthy.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut h = self.health.lock();
        if h.get(provider_id).is_some_and(|e| e.failures > 0 || e.cool_until > 0) {
            h.remove(provider_id);
            self.unhealthy.store(h.len(), Ordering::Relaxed);
        }
    }

    /// Whether a provider key is cooling down at `now`.
    pub fn cooling(&self, provider_id: &str, now: i64) -> bool {
        if self.unhealthy.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.health.lock().get(provider_id).is_some_and(|e| e.cool_until > now)
    }

    /// The targets in the order to try: healthy ones first (in their strategy's order), keys
    /// cooling down last, so they are used only when nothing else is left.
    pub fn order_by_health(&self, order: Vec<String>, now: i64) -> Vec<String> {
        let (cool, healthy): (Vec<String>, Vec<String>) = order.into_iter().partition(|id| self.cooling(id, now));
        healthy.into_iter().chain(cool).collect()
    }

    /// Every virtual key.
    pub fn all_virtual_keys(&self) -> Vec<Arc<VkRuntime>> {
        self.vks.read().by_id.iter().map(|k| k.0.clone()).collect()
    }

    /// The virtual keys of a workspace.
    pub fn virtual_keys_of(&self, workspace: &str) -> Vec<Arc<VkRuntime>> {
        self.vks
            .read()
            .by_id
            .iter()
            .filter(|v| v.0.workspace == workspace)
            .map(|v| v.0.clone())
            .collect()
    }

    pub fn counts(&self) -> (usize, usize) {
        (self.providers.read().len(), self.vks.read().by_id.len())
    }

    /// Installs a provider key directly (tests and benchmarks).
    pub fn insert_provider(&self, p: ProviderRuntime) {
        self.providers.write().insert(p.id.clone(), Arc::new(p));
    }

    fn apply_vks(&self, rows: &[VirtualKeyRow]) {
        let mut vks = self.vks.write();
        for row in rows {
            if let Some(old) = vks.by_id.take(row.id.as_str()) {
                vks.by_slug.remove(old.0.slug.as_str());
            }
            vks.unreadable.remove(row.id.as_str());
            if row.deleted_at.is_some() {
                continue;
            }
            let live = vks.by_id.len();
            let config = match vks.configs.intern(&row.config, live) {
                Ok(c) => c,
                Err(reason) => {
                    // Once per change of the record: the refresh loads only what changed.
                    tracing::error!(virtual_key = %row.id, slug = %row.slug, error = %reason,
                        "a virtual key's stored configuration cannot be read; the key refuses every request until it is repaired");
                    vks.unreadable.insert(
                        row.id.clone(),
                        Unreadable {
                            id: row.id.clone(),
                            workspace: row.workspace.clone(),
                            slug: row.slug.clone(),
                            reason,
                        },
                    );
                    continue;
                }
            };
            let vk = Arc::new(VkRuntime {
                id: row.id.clone(),
                workspace: row.workspace.clone(),
                slug: row.slug.clone(),
                name: row.name.clone(),
                disabled: row.status == "disabled",
                expires_at: row.expires_at,
                config,
            });
            vks.by_slug.insert(BySlug(vk.clone()));
            vks.by_id.insert(ById(vk));
        }
    }

    async fn load_provider(
        &self,
        store: &dyn Store,
        vault: &VaultService,
        row: &ProviderKeyRow,
    ) -> Result<(), StoreError> {
        self.unreadable_providers.write().remove(&row.id);
        if row.deleted_at.is_some() {
            self.providers.write().remove(&row.id);
            return Ok(());
        }
        let stored = store.secrets_of(&row.workspace, &row.id).await?;
        let mut secrets = HashMap::new();
        let mut unopened = None;
        for s in stored.iter().filter(|s| s.version == row.secret_version) {
            let place = SecretPlace {
                workspace: &row.workspace,
                record_id: &row.id,
                secret_version: u32::try_from(s.version).unwrap_or(u32::MAX),
                field: &s.field,
            };
            match vault.open_string(&place, &s.sealed) {
                Ok(text) => {
                    secrets.insert(s.field.clone(), text);
                }
                Err(e) => {
                    unopened = Some(format!("its secret `{}` cannot be opened: {e}", s.field));
                }
            }
        }
        let built = match unopened {
            Some(reason) => Err(reason),
            None => build(row, secrets),
        };
        match built {
            Ok(p) => {
                self.providers.write().insert(row.id.clone(), Arc::new(p));
            }
            Err(reason) => {
                // Once per change of the record: the refresh loads only what changed.
                tracing::error!(provider_key = %row.id, error = %reason,
                    "a provider key's stored record cannot be used; the key refuses every request until it is repaired");
                self.providers.write().remove(&row.id);
                self.unreadable_providers.write().insert(
                    row.id.clone(),
                    Unreadable {
                        id: row.id.clone(),
                        workspace: row.workspace.clone(),
                        slug: String::new(),
                        reason,
                    },
                );
            }
        }
        Ok(())
    }

    /// Loads what changed since the last refresh.
    pub async fn refresh(&self, store: &dyn Store, vault: &VaultService) -> Result<(), StoreError> {
        let _guard = self.refreshing.lock().await;
        let known = self.rev.load(Ordering::Acquire);
        let current = store.revision().await?;
        if current == known {
            return Ok(());
        }
        // One page at a time, each applied before the next is read: a load of many keys holds
        // no more than a page of rows.
        let mut page = Some(ChangesPage::first(known, ChangesPage::DEFAULT_LIMIT));
        while let Some(p) = page {
            let rows = store.provider_keys_changed_since(&p).await?;
            for row in &rows {
                self.load_provider(store, vault, row).await?;
            }
            page = p.next(rows.len(), rows.last().map(|r| (r.rev, r.id.as_str())));
        }
        let mut page = Some(ChangesPage::first(known, ChangesPage::DEFAULT_LIMIT));
        while let Some(p) = page {
            let rows = store.virtual_keys_changed_since(&p).await?;
            self.apply_vks(&rows);
            page = p.next(rows.len(), rows.last().map(|r| (r.rev, r.id.as_str())));
        }
        self.rev.store(current, Ordering::Release);
        Ok(())
    }

    /// Refreshes now (after a change made by this process), logging a failure.
    pub async fn refresh_now(&self, store: &dyn Store, vault: &VaultService) {
        if let Err(e) = self.refresh(store, vault).await {
            tracing::warn!(error = %e, "cannot refresh the key cache");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_kept_per_provider_key_and_read_without_a_lock_while_all_are_well() {
        let rt = Runtime::new();
        assert!(!rt.cooling("pv_a", 0));
        rt.note_success("pv_a");
        // Two failures: still usable; the third cools the key down for 30 s.
        rt.note_failure("pv_a", None, 1_000);
        rt.note_failure("pv_a", None, 1_000);
        assert!(!rt.cooling("pv_a", 1_000));
        rt.note_failure("pv_a", None, 1_000);
        assert!(rt.cooling("pv_a", 1_000));
        assert!(!rt.cooling("pv_b", 1_000));
        assert_eq!(rt.unhealthy.load(Ordering::Relaxed), 1);
        assert_eq!(
            rt.order_by_health(vec!["pv_a".into(), "pv_b".into()], 2_000),
            ["pv_b", "pv_a"]
        );
        assert!(!rt.cooling("pv_a", 1_000 + COOLDOWN_MS));
        // A 429's Retry-After cools a key at once, for that long.
        rt.note_failure("pv_b", Some(5_000), 1_000);
        assert!(rt.cooling("pv_b", 5_999));
        assert_eq!(rt.unhealthy.load(Ordering::Relaxed), 2);
        // A success clears the key's record.
        rt.note_success("pv_a");
        rt.note_success("pv_b");
        assert!(!rt.cooling("pv_a", 1_000) && !rt.cooling("pv_b", 1_000));
        assert_eq!(rt.unhealthy.load(Ordering::Relaxed), 0);
    }
}
