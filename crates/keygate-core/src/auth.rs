//! Platform-key authentication, served from memory.
//!
//! The cache maps key hashes to principals. It is loaded at start and kept current by a
//! background task ([`run_refresher`]) that reads the store revision (one small query every
//! 250 ms, never per request) and loads only the keys changed since, so a key created, changed,
//! rotated or deleted by any process (another replica, `keygate admin-key`) takes effect within
//! a second. What must stay true: a request is authenticated without a store round trip; a
//! key's text is never logged; the stored hash is compared in constant time; a key whose
//! stored record cannot be read is refused, never served without its limits.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keygate_store::{ChangesPage, PlatformKeyRow, Store};
use keygate_types::keyfmt::{self, KeyFormatError};
use keygate_types::PlatformKeyType;
use keygate_vault::KeyHash;
use parking_lot::{Mutex, RwLock};

use crate::platform_keys::KeySettings;
use crate::vault::VaultService;

/// An authenticated platform key.
#[derive(Debug)]
pub struct Principal {
    pub id: String,
    pub workspace: String,
    pub key_type: PlatformKeyType,
    pub org_admin: bool,
    pub expires_at: Option<i64>,
    /// Shared by every key whose settings are empty (most keys).
    pub settings: Arc<KeySettings>,
    pub last6: String,
    /// The parsed `ipAllowlist` (empty: any address).
    pub ip_nets: Vec<ipnet::IpNet>,
    /// When this key's use was last noted for `last_used_at` (ms): uses less than a second
    /// after it are not noted again, so most requests take no lock for it.
    last_noted: std::sync::atomic::AtomicI64,
    /// Why the key's stored record cannot be read, if it cannot: then `settings` are not its
    /// own, and [`AuthCache::authenticate`] refuses the key (it never reaches a handler).
    unreadable: Option<String>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.key_type == PlatformKeyType::Admin
    }
}

/// What a hash authenticates (the hash itself is the map's key).
struct Entry {
    principal: Arc<Principal>,
    /// Set for the hash of a rotated-out secret: valid until then.
    valid_until: Option<i64>,
}

/// A live key, found by its id (the principal's own id, not a copy of it), with its one or
/// two hashes (current, and the rotated-out one during its grace period) kept inline.
struct Keyed {
    principal: Arc<Principal>,
    hashes: [Option<KeyHash>; 2],
}

keyed_by_str!(Keyed, principal.id);

#[derive(Default)]
struct Inner {
    by_hash: HashMap<KeyHash, Entry, foldhash::fast::RandomState>,
    by_id: HashSet<Keyed, foldhash::fast::RandomState>,
}

/// Why authentication failed. Each maps to 401 with its own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed(KeyFormatError),
    Unknown,
    Expired,
    RotatedOut,
    /// The key's stored settings cannot be read: refused until repaired (key id, why).
    Unreadable {
        id: String,
        reason: String,
    },
}

/// The in-memory platform-key cache.
#[derive(Default)]
pub struct AuthCache {
    inner: RwLock<Inner>,
    rev: AtomicI64,
    last_used: Mutex<HashMap<String, i64, foldhash::fast::RandomState>>,
}

/// The one `KeySettings` of every key without settings.
fn no_settings() -> Arc<KeySettings> {
    static NONE: std::sync::OnceLock<Arc<KeySettings>> = std::sync::OnceLock::new();
    NONE.get_or_init(|| Arc::new(KeySettings::default())).clone()
}

/// The key's settings with its parsed address allow-list, or why they cannot be read: an
/// allow-list entry that does not parse is an error too (skipping it would widen the list, and
/// an emptied list allows every address).
fn settings_of(row: &PlatformKeyRow) -> Result<(Arc<KeySettings>, Vec<ipnet::IpNet>), String> {
    if row.settings == "{}" {
        return Ok((no_settings(), Vec::new()));
    }
    let settings = KeySettings::from_stored(&row.settings).map_err(|e| e.to_string())?;
    let mut ip_nets = Vec::with_capacity(settings.ip_allowlist.len());
    for (i, entry) in settings.ip_allowlist.iter().enumerate() {
        let net = entry
            .parse::<ipnet::IpNet>()
            .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| format!("settings cannot be read: ipAllowlist[{i}] is not an address or CIDR block"))?;
        ip_nets.push(net);
    }
    let settings = if settings == KeySettings::default() {
        no_settings()
    } else {
        Arc::new(settings)
    };
    Ok((settings, ip_nets))
}

/// The principal of a stored key. A key whose type or settings cannot be read becomes a
/// principal that [`AuthCache::authenticate`] refuses (logged here, once per change of the
/// record: the cache loads only what changed).
fn principal_of(row: &PlatformKeyRow) -> Principal {
    let key_type = PlatformKeyType::parse(&row.key_type);
    let read = match key_type {
        Some(_) => settings_of(row),
        None => Err(format!("key type `{}` is unknown", row.key_type)),
    };
    let (settings, ip_nets, unreadable) = match read {
        Ok((settings, nets)) => (settings, nets, None),
        Err(reason) => {
            tracing::error!(key_id = %row.id, error = %reason,
                "a platform key's stored record cannot be read; the key is refused until it is repaired");
            (no_settings(), Vec::new(), Some(reason))
        }
    };
    Principal {
        ip_nets,
        id: row.id.clone(),
        workspace: row.workspace.clone(),
        key_type: key_type.unwrap_or(PlatformKeyType::Inference),
        org_admin: row.org_admin,
        expires_at: row.expires_at,
        settings,
        last6: row.last6.clone(),
        last_noted: std::sync::atomic::AtomicI64::new(i64::MIN),
        unreadable,
    }
}

impl AuthCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies changed rows (deleted ones remove the key).
    pub fn apply(&self, rows: &[PlatformKeyRow]) {
        let mut inner = self.inner.write();
        for row in rows {
            if let Some(old) = inner.by_id.take(row.id.as_str()) {
                for h in old.hashes.iter().flatten() {
                    inner.by_hash.remove(h);
                }
            }
            if row.deleted_at.is_some() {
                continue;
            }
            let principal = Arc::new(principal_of(row));
            let mut hashes = [None, None];
            if let Some(h) = KeyHash::from_slice(&row.key_hash) {
                inner.by_hash.insert(
                    h,
                    Entry {
                        principal: principal.clone(),
                        valid_until: None,
                    },
                );
                hashes[0] = Some(h);
            }
            if let (Some(prev), Some(until)) = (row.prev_key_hash.as_deref(), row.prev_valid_until) {
                if let Some(h) = KeyHash::from_slice(prev) {
                    inner.by_hash.insert(
                        h,
                        Entry {
                            principal: principal.clone(),
                            valid_until: Some(until),
                        },
                    );
                    hashes[1] = Some(h);
                }
            }
            inner.by_id.insert(Keyed { principal, hashes });
        }
    }

    pub fn len(&self) -> usize {
        self.inner.read().by_id.len()
    }

    /// The live principal with this id (none for a key whose record cannot be read).
    pub fn principal(&self, id: &str) -> Option<Arc<Principal>> {
        self.inner
            .read()
            .by_id
            .get(id)
            .filter(|k| k.principal.unreadable.is_none())
            .map(|k| k.principal.clone())
    }

    /// Every live principal (for start-up work such as seeding budget counters), without the
    /// keys whose record cannot be read.
    pub fn principals(&self) -> Vec<Arc<Principal>> {
        self.inner
            .read()
            .by_id
            .iter()
            .filter(|k| k.principal.unreadable.is_none())
            .map(|k| k.principal.clone())
            .collect()
    }

    /// The keys refused because their stored record cannot be read: (id, why).
    pub fn unreadable(&self) -> Vec<(String, String)> {
        self.inner
            .read()
            .by_id
            .iter()
            .filter_map(|k| Some((k.principal.id.clone(), k.principal.unreadable.clone()?)))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads everything changed since the last refresh, one page at a time (applying each
    /// before reading the next, so a load of many keys never holds more than a page of rows).
    pub async fn refresh(&self, store: &dyn Store) -> Result<bool, keygate_store::StoreError> {
        let known = self.rev.load(Ordering::Acquire);
        let current = store.revision().await?;
        if current == known {
            return Ok(false);
        }
        let mut changed = false;
        let mut page = Some(ChangesPage::first(known, ChangesPage::DEFAULT_LIMIT));
        while let Some(p) = page {
            let rows = store.platform_keys_changed_since(&p).await?;
            self.apply(&rows);
            changed |= !rows.is_empty();
            page = p.next(rows.len(), rows.last().map(|r| (r.rev, r.id.as_str())));
        }
        self.rev.store(current, Ordering::Release);
        Ok(changed)
    }

    /// Authenticates a presented key at time `now` (Unix ms).
    pub fn authenticate(
        &self,
        presented: &str,
        hash: impl FnOnce(&str) -> KeyHash,
        now: i64,
    ) -> Result<Arc<Principal>, AuthFailure> {
        keyfmt::check(presented).map_err(AuthFailure::Malformed)?;
        let h = hash(presented);
        let inner = self.inner.read();
        let (stored, entry) = inner.by_hash.get_key_value(&h).ok_or(AuthFailure::Unknown)?;
        if !stored.ct_eq(&h) {
            return Err(AuthFailure::Unknown);
        }
        if let Some(until) = entry.valid_until {
            if now >= until {
                return Err(AuthFailure::RotatedOut);
            }
        }
        if let Some(exp) = entry.principal.expires_at {
            if now >= exp {
                return Err(AuthFailure::Expired);
            }
        }
        if let Some(reason) = &entry.principal.unreadable {
            return Err(AuthFailure::Unreadable {
                id: entry.principal.id.clone(),
                reason: reason.clone(),
            });
        }
        Ok(entry.principal.clone())
    }

    /// Notes that `principal` was used at `now` (ms), written to the store in batches; at most
    /// once a second per key, so the stored `last_used_at` is at most a second behind.
    pub fn note_use(&self, principal: &Principal, now: i64) {
        use std::sync::atomic::Ordering;
        let noted = principal.last_noted.load(Ordering::Relaxed);
        if (0..1_000).contains(&now.saturating_sub(noted)) {
            return;
        }
        principal.last_noted.store(now, Ordering::Relaxed);
        let mut map = self.last_used.lock();
        match map.get_mut(principal.id.as_str()) {
            Some(t) => *t = (*t).max(now),
            None => {
                map.insert(principal.id.clone(), now);
            }
        }
    }

    pub fn take_uses(&self) -> Vec<(String, i64)> {
        std::mem::take(&mut *self.last_used.lock()).into_iter().collect()
    }
}

/// Keeps the caches current until `shutdown` fires, flushing last-use times as it goes.
pub async fn run_refresher(
    cache: Arc<AuthCache>,
    runtime: Arc<crate::runtime::Runtime>,
    store: Arc<dyn Store>,
    vault: Arc<VaultService>,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flush_at = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        if let Err(e) = cache.refresh(store.as_ref()).await {
            tracing::warn!(error = %e, "platform-key cache refresh failed; serving the keys already loaded");
        }
        if let Err(e) = runtime.refresh(store.as_ref(), &vault).await {
            tracing::warn!(error = %e, "key cache refresh failed; serving the keys already loaded");
        }
        if tokio::time::Instant::now() >= flush_at {
            flush_at = tokio::time::Instant::now() + Duration::from_secs(5);
            let uses = cache.take_uses();
            if let Err(e) = store.touch_platform_keys(&uses).await {
                tracing::warn!(error = %e, "cannot record key use");
            }
        }
    }
    let uses = cache.take_uses();
    let _ = store.touch_platform_keys(&uses).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(id: &str) -> Principal {
        Principal {
            id: id.into(),
            workspace: "default".into(),
            key_type: PlatformKeyType::Inference,
            org_admin: false,
            expires_at: None,
            settings: no_settings(),
            last6: "abcdef".into(),
            ip_nets: Vec::new(),
            last_noted: std::sync::atomic::AtomicI64::new(i64::MIN),
            unreadable: None,
        }
    }

    #[test]
    fn a_key_use_is_noted_at_most_once_a_second() {
        let cache = AuthCache::new();
        let (a, b) = (principal("pk_a"), principal("pk_b"));
        cache.note_use(&a, 10_000);
        cache.note_use(&a, 10_400);
        cache.note_use(&b, 10_500);
        let mut uses = cache.take_uses();
        uses.sort();
        assert_eq!(uses, [("pk_a".to_string(), 10_000), ("pk_b".to_string(), 10_500)]);
        // Within the second: nothing new; a second later: noted again.
        cache.note_use(&a, 10_999);
        assert!(cache.take_uses().is_empty());
        cache.note_use(&a, 11_000);
        assert_eq!(cache.take_uses(), [("pk_a".to_string(), 11_000)]);
        // A clock that went back is noted, not ignored for a second.
        cache.note_use(&a, 5_000);
        assert_eq!(cache.take_uses(), [("pk_a".to_string(), 5_000)]);
    }
}
