//! Platform API keys: creation (used by the first start, `keygate admin-key` and the API)
//! and the policy each key carries.

use std::collections::BTreeMap;

use keygate_store::{new_id, AuditEvent, PlatformKeyRow, Store};
use keygate_types::timefmt::now_ms;
use keygate_types::{PlatformKeyType, PlatformSecret};
use serde::{Deserialize, Serialize};

use crate::error::ApiResult;
use crate::vault::VaultService;

/// The policy of a platform key, stored as JSON beside it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KeySettings {
    /// Consumption limits by currency (`usd`, `diem`, `vcu`) in nano-units, and `tokens`, `requests`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub consumption_limit: BTreeMap<String, i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_privacy: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_allowlist: Vec<String>,
    /// Rate limits by window name (`rpm`, `rph`, `rpd`, `tpm`, `tph`, `tpd`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rate_limits: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_virtual_key: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub virtual_keys: Vec<String>,
}

/// What a new platform key is.
pub struct NewPlatformKey<'a> {
    pub workspace: &'a str,
    pub key_type: PlatformKeyType,
    pub org_admin: bool,
    pub description: &'a str,
    pub settings: KeySettings,
    pub expires_at: Option<i64>,
    pub created_by: Option<String>,
}

/// Creates a platform key; the returned secret is the only copy of the key text.
pub async fn create_platform_key(
    store: &dyn Store,
    vault: &VaultService,
    new: NewPlatformKey<'_>,
    audit: Option<AuditEvent>,
) -> ApiResult<(PlatformKeyRow, PlatformSecret)> {
    let secret = PlatformSecret::generate(new.key_type, &mut rand::rngs::OsRng);
    let now = now_ms();
    let id = uuid::Uuid::new_v4().to_string();
    let row = PlatformKeyRow {
        id: id.clone(),
        workspace: new.workspace.to_string(),
        key_type: new.key_type.as_str().to_string(),
        org_admin: new.org_admin,
        description: new.description.to_string(),
        key_hash: vault.hash(secret.expose()).0.to_vec(),
        last6: secret.last6().to_string(),
        prev_key_hash: None,
        prev_valid_until: None,
        settings: serde_json::to_string(&new.settings).unwrap_or_else(|_| "{}".into()),
        expires_at: new.expires_at,
        created_at: now,
        updated_at: now,
        last_used_at: None,
        created_by: new.created_by,
        rev: 0,
        deleted_at: None,
    };
    let audit = audit.map(|mut a| {
        a.target_id = Some(id.clone());
        a
    });
    let stored = store.create_platform_key(&row, audit.as_ref()).await?;
    Ok((stored, secret))
}

/// An audit event of keygate's own tools (first start, `keygate admin-key`).
pub fn system_audit(workspace: &str, actor: &str, action: &str, target_type: &str) -> AuditEvent {
    AuditEvent {
        id: new_id(),
        workspace: workspace.to_string(),
        at: now_ms(),
        actor_key_id: None,
        actor: actor.to_string(),
        action: action.to_string(),
        target_type: target_type.to_string(),
        target_id: None,
        request_id: None,
        details: "{}".to_string(),
    }
}
