//! Platform API keys: creation (used by the first start, `keygate admin-key` and the API)
//! and the policy each key carries.

use keygate_store::{new_id, AuditEvent, PlatformKeyRow, Store};
use keygate_types::timefmt::now_ms;
use keygate_types::{PlatformKeyType, PlatformSecret};

use crate::error::CoreResult;
use crate::vault::VaultService;

pub use keygate_types::policy::{KeySettings, LimitPeriod, ModelPrivacy};

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
) -> CoreResult<(PlatformKeyRow, PlatformSecret)> {
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
