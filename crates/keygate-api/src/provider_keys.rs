//! Provider keys: the service (validation, sealing, rotation, audit) and the native API
//! `/api/v1/provider_keys`. The Vijil mount (`vijil.rs`) calls the same service.
//!
//! What must stay true: a secret is sealed before it reaches the store and never appears in
//! a response (only `secretHint` and `secretVersion`); a new `apiKey` is a rotation that
//! re-seals every secret field of the key at the new version; upstream URLs pass the URL
//! policy when saved.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use keygate_store::{new_id, Page, ProviderKeyRow, SecretRow, StoreError};
use keygate_types::hubconfig::{self, HubSettings};
use keygate_types::netpolicy;
use keygate_types::timefmt::{format_ms, now_ms};
use keygate_types::{validate_name, ModelHub};
use keygate_vault::SecretPlace;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, JsonBody, QueryParams};
use crate::openapi::doc::{Data, ErrorBody, Paged, Saved, Success};
use crate::state::AppState;

/// The field name of a provider key's main secret.
pub const API_KEY_FIELD: &str = "api_key";
/// Longest secret accepted.
const MAX_SECRET_LEN: usize = 16 * 1024;

/// A secret as it arrives in a request: zeroized on drop, never shown by `Debug`.
#[derive(Clone)]
pub struct SecretInput(pub Zeroizing<String>);

impl std::fmt::Debug for SecretInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretInput(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for SecretInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(SecretInput(Zeroizing::new(s)))
    }
}

/// Distinguishes an absent field from an explicit `null`.
fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `POST /api/v1/provider_keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateProviderKey {
    /// Unique per workspace, `[A-Za-z0-9._-]{1,64}`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// One of the hubs of docs/provider-keys.md.
    #[schema(schema_with = model_hub_schema)]
    pub model_hub: String,
    /// The provider secret. Stored sealed; never returned.
    #[schema(value_type = Option<String>, format = Password, min_length = 1)]
    pub api_key: Option<SecretInput>,
    /// Overrides the hub's default base URL.
    pub base_url: Option<String>,
    /// Hub-specific settings (snake_case or camelCase field names).
    #[schema(value_type = Option<Object>)]
    pub hub_config: Option<Value>,
    /// Requests per interval; default: the hub's tier.
    #[schema(minimum = 1)]
    pub rate_limit_per_interval: Option<u32>,
    /// Seconds (default 60); needs `rateLimitPerInterval`.
    #[schema(minimum = 1, maximum = 2_678_400)]
    pub rate_limit_interval: Option<u32>,
    /// Marks the provider as private for `modelPrivacy` checks.
    pub private: Option<bool>,
}

/// The `modelHub` values: every hub keygate speaks to.
fn model_hub_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(ModelHub::ALL.iter().map(|h| h.as_str())))
        .description(Some("The provider's hub"))
        .build()
}

/// Body of `PATCH /api/v1/provider_keys/{name}`: only the fields given change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateProviderKey {
    /// May repeat the current name; renaming is `POST /{name}/rename`.
    pub name: Option<String>,
    #[schema(schema_with = model_hub_schema)]
    pub model_hub: Option<String>,
    /// A new secret: a rotation (`secretVersion` goes up).
    #[schema(value_type = Option<String>, format = Password, min_length = 1)]
    pub api_key: Option<SecretInput>,
    /// `null` returns to the hub's default.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub base_url: Option<Option<String>>,
    /// Merged into the current config; a field set to `null` is removed.
    #[schema(value_type = Option<Object>)]
    pub hub_config: Option<Value>,
    /// `null` returns to the hub's default rate limit.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub rate_limit_per_interval: Option<Option<u32>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 2_678_400)]
    pub rate_limit_interval: Option<Option<u32>>,
    pub private: Option<bool>,
    /// On rotation: how long the previous secret stays usable (default 0).
    pub grace_period_seconds: Option<u32>,
}

/// Body of `POST /api/v1/provider_keys/{name}/rename`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenameProviderKey {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub new_name: String,
}

/// A provider key as the native API shows it. Never the secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderKeyView {
    pub id: String,
    pub name: String,
    pub model_hub: String,
    /// The configured base URL, if any.
    pub base_url: Option<String>,
    /// Where requests go: the configured URL or the hub's.
    pub effective_base_url: Option<String>,
    #[schema(value_type = Object)]
    pub hub_config: Value,
    pub rate_limit_per_interval: i64,
    pub rate_limit_interval: i64,
    /// `explicit` or `hubDefault`.
    pub rate_limit_source: &'static str,
    pub private: bool,
    /// The last 4 characters of the secret (absent for short secrets).
    pub secret_hint: Option<String>,
    pub secret_version: i64,
    pub workspace: String,
    pub created_at: String,
    pub updated_at: String,
    pub last_used_at: Option<String>,
}

/// A provider key's stored hub settings, read strictly: a 503 naming the key when they cannot
/// be read (the gateway refuses the key too; it can be deleted, which reads nothing of them).
pub fn settings_of(row: &ProviderKeyRow) -> ApiResult<HubSettings> {
    HubSettings::from_stored(&row.hub_settings)
        .map_err(|e| crate::virtual_keys::unreadable_error("provider key", &row.id, &e))
}

/// A provider key's hub, read strictly like its settings.
fn hub_of(row: &ProviderKeyRow) -> ApiResult<ModelHub> {
    ModelHub::parse(&row.hub).ok_or_else(|| {
        ApiError::unavailable(format!(
            "provider key {} cannot be used: its stored hub `{}` is unknown; delete it and create it again (or repair the record)",
            row.id, row.hub
        ))
    })
}

pub use keygate_core::runtime::rate_limit_of;

pub fn view(row: &ProviderKeyRow) -> ApiResult<ProviderKeyView> {
    let settings = settings_of(row)?;
    let hub = hub_of(row)?;
    let (per, interval, explicit) = rate_limit_of(row);
    Ok(ProviderKeyView {
        id: row.id.clone(),
        name: row.name.clone(),
        model_hub: row.hub.clone(),
        base_url: row.base_url.clone(),
        effective_base_url: hubconfig::effective_base_url(hub, row.base_url.as_deref(), &settings),
        hub_config: serde_json::to_value(&settings).unwrap_or_else(|_| json!({})),
        rate_limit_per_interval: per,
        rate_limit_interval: interval,
        rate_limit_source: if explicit { "explicit" } else { "hubDefault" },
        private: row.private,
        secret_hint: row.secret_hint.clone(),
        secret_version: row.secret_version,
        workspace: row.workspace.clone(),
        created_at: format_ms(row.created_at),
        updated_at: format_ms(row.updated_at),
        last_used_at: row.last_used_at.map(format_ms),
    })
}

/// The last 4 characters of a secret, shown only when the secret is long enough that they
/// reveal little of it.
pub fn secret_hint(secret: &str) -> Option<String> {
    let chars: Vec<char> = secret.chars().collect();
    (chars.len() >= 12).then(|| chars[chars.len() - 4..].iter().collect())
}

fn parse_hub(s: &str) -> ApiResult<ModelHub> {
    ModelHub::parse(s).ok_or_else(|| {
        let all: Vec<&str> = ModelHub::ALL.iter().map(|h| h.as_str()).collect();
        // The value is not repeated: a secret pasted into the wrong field must not come back.
        ApiError::bad_request(format!("unknown modelHub; expected one of {}", all.join(", ")))
    })
}

fn check_secret(what: &str, s: &SecretInput) -> ApiResult<()> {
    let v = s.0.trim();
    if v.is_empty() {
        return Err(ApiError::bad_request(format!("{what} must not be empty")));
    }
    if v.len() > MAX_SECRET_LEN {
        return Err(ApiError::bad_request(format!(
            "{what} is longer than {MAX_SECRET_LEN} bytes"
        )));
    }
    if v.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad_request(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

fn check_rate_limit(per: Option<u32>, interval: Option<u32>) -> ApiResult<(Option<i64>, Option<i64>)> {
    match (per, interval) {
        (None, None) => Ok((None, None)),
        (None, Some(_)) => Err(ApiError::bad_request(
            "rateLimitInterval needs rateLimitPerInterval too",
        )),
        (Some(n), i) => {
            let i = i.unwrap_or(60);
            if n == 0 {
                return Err(ApiError::bad_request("rateLimitPerInterval must be at least 1"));
            }
            if !(1..=86_400 * 31).contains(&i) {
                return Err(ApiError::bad_request("rateLimitInterval must be 1 to 2678400 seconds"));
            }
            Ok((Some(i64::from(n)), Some(i64::from(i))))
        }
    }
}

/// Checks an upstream URL when saved: the URL policy, then (for names) what DNS says now.
/// A name that does not resolve yet is accepted; it is checked again at connect time.
pub async fn check_base_url(raw: &str, allow_private: bool) -> ApiResult<String> {
    let url = netpolicy::check_upstream_url(raw, allow_private)
        .map_err(|e| ApiError::bad_request(format!("baseUrl: {e}")))?;
    if let Some(url::Host::Domain(host)) = url.host() {
        let port = url.port_or_known_default().unwrap_or(443);
        let lookup =
            tokio::time::timeout(std::time::Duration::from_secs(1), tokio::net::lookup_host((host, port))).await;
        if let Ok(Ok(addrs)) = lookup {
            for addr in addrs {
                netpolicy::address_allowed(addr.ip(), allow_private).map_err(|e| {
                    ApiError::bad_request(format!("baseUrl: {host} resolves to a refused address: {e}"))
                })?;
            }
        }
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Checks what a hub config points at or carries beyond its shape: the Vertex token
/// endpoint passes the URL policy like a base URL, and a service-account JSON must hold an
/// RSA key (its own `token_uri` is checked too, since the signed assertion goes there).
async fn check_hub_secrets(state: &AppState, parsed: &hubconfig::ParsedHubConfig) -> ApiResult<()> {
    use keygate_gateway::hubs::vertex_auth::{check_service_account, service_account_token_uri};
    let allow = state.settings.allow_private_upstreams;
    if let Some(u) = &parsed.settings.token_url {
        check_base_url(u, allow)
            .await
            .map_err(|e| ApiError::bad_request(e.message.replace("baseUrl", "hubConfig.token_url")))?;
    }
    for s in &parsed.secrets {
        if s.field == "service_account_json" && s.value.as_str() != "stored" {
            check_service_account(&s.value)
                .map_err(|e| ApiError::bad_request(format!("hubConfig.service_account_json: {e}")))?;
            if let Ok(Some(uri)) = service_account_token_uri(&s.value) {
                check_base_url(&uri, allow).await.map_err(|e| {
                    ApiError::bad_request(e.message.replace("baseUrl", "service_account_json.token_uri"))
                })?;
            }
        }
    }
    Ok(())
}

fn place<'a>(row: &'a ProviderKeyRow, version: i64, field: &'a str) -> SecretPlace<'a> {
    SecretPlace {
        workspace: &row.workspace,
        record_id: &row.id,
        secret_version: u32::try_from(version).unwrap_or(u32::MAX),
        field,
    }
}

fn seal_row(state: &AppState, row: &ProviderKeyRow, version: i64, field: &str, value: &[u8]) -> ApiResult<SecretRow> {
    let sealed = state
        .vault
        .seal(&place(row, version, field), value)
        .map_err(|e| ApiError::internal(format!("cannot seal the secret: {e}")))?;
    Ok(SecretRow {
        workspace: row.workspace.clone(),
        owner_id: row.id.clone(),
        field: field.to_string(),
        version,
        master_version: i64::from(state.vault.master_version()),
        sealed,
        created_at: now_ms(),
        expires_at: None,
    })
}

/// Creates a provider key.
pub async fn create(state: &AppState, ctx: &Ctx, input: CreateProviderKey) -> ApiResult<ProviderKeyRow> {
    validate_name(&input.name).map_err(|e| ApiError::bad_request(format!("name {e}")))?;
    let hub = parse_hub(&input.model_hub)?;
    if let Some(k) = &input.api_key {
        check_secret("apiKey", k)?;
    }
    let base_url = match &input.base_url {
        Some(u) if !u.trim().is_empty() => Some(check_base_url(u, state.settings.allow_private_upstreams).await?),
        _ => None,
    };
    let parsed = hubconfig::validate(
        hub,
        input.hub_config.as_ref(),
        input.api_key.is_some(),
        base_url.is_some(),
    )
    .map_err(|e| ApiError::bad_request(e.0))?;
    let (per, interval) = check_rate_limit(input.rate_limit_per_interval, input.rate_limit_interval)?;
    check_hub_secrets(state, &parsed).await?;
    state.vault.ensure_current(state.store.as_ref()).await?;

    let mut settings = parsed.settings;
    settings.secret_fields = parsed.secrets.iter().map(|s| s.field.to_string()).collect();
    let hint_source = input
        .api_key
        .as_ref()
        .map(|k| k.0.trim().to_string())
        .or_else(|| parsed.secrets.last().map(|s| s.value.to_string()));
    let now = now_ms();
    let row = ProviderKeyRow {
        id: new_id(),
        workspace: ctx.workspace.clone(),
        name: input.name.clone(),
        hub: hub.as_str().to_string(),
        base_url,
        hub_settings: serde_json::to_string(&settings).unwrap_or_else(|_| "{}".into()),
        rate_limit_per_interval: per,
        rate_limit_interval: interval,
        private: input.private.unwrap_or(false),
        secret_version: 1,
        secret_hint: hint_source.as_deref().and_then(secret_hint),
        created_at: now,
        updated_at: now,
        last_used_at: None,
        created_by: Some(ctx.principal.id.clone()),
        rev: 0,
        deleted_at: None,
    };
    drop(hint_source.map(Zeroizing::new));
    let mut secrets = Vec::new();
    if let Some(k) = &input.api_key {
        secrets.push(seal_row(state, &row, 1, API_KEY_FIELD, k.0.trim().as_bytes())?);
    }
    for s in &parsed.secrets {
        secrets.push(seal_row(state, &row, 1, s.field, s.value.as_bytes())?);
    }
    let audit = ctx.audit(
        "provider_key.create",
        "provider_key",
        Some(&row.id),
        json!({"name": row.name, "modelHub": row.hub}),
    );
    let stored = state
        .store
        .create_provider_key(&row, &secrets, ctx.keep(&audit))
        .await?;
    Ok(stored)
}

/// Applies a partial update. A new `apiKey` rotates: every secret field is re-sealed at the
/// next secret version and the previous version expires after the grace period.
pub async fn update(
    state: &AppState,
    ctx: &Ctx,
    current: ProviderKeyRow,
    patch: UpdateProviderKey,
) -> ApiResult<ProviderKeyRow> {
    if let Some(n) = &patch.name {
        if n != &current.name {
            return Err(ApiError::bad_request(
                "PATCH does not rename a key; use POST /api/v1/provider_keys/{name}/rename",
            ));
        }
    }
    let hub = match &patch.model_hub {
        Some(h) => parse_hub(h)?,
        None => parse_hub(&current.hub)?,
    };
    if let Some(k) = &patch.api_key {
        check_secret("apiKey", k)?;
    }
    let base_url = match &patch.base_url {
        None => current.base_url.clone(),
        Some(None) => None,
        Some(Some(u)) if u.trim().is_empty() => None,
        Some(Some(u)) => Some(check_base_url(u, state.settings.allow_private_upstreams).await?),
    };
    let old_settings = settings_of(&current)?;
    let stored_secrets = state.store.secrets_of(&current.workspace, &current.id).await?;
    let live: Vec<&SecretRow> = stored_secrets
        .iter()
        .filter(|s| s.version == current.secret_version && s.expires_at.is_none())
        .collect();
    let has_api_key = patch.api_key.is_some() || live.iter().any(|s| s.field == API_KEY_FIELD);

    // The config to validate: the current public settings, the names of the secret fields
    // already stored (their values are not needed to validate), and the patch on top.
    let mut merged = old_settings.to_input_map();
    for s in &live {
        if s.field != API_KEY_FIELD {
            merged.insert(s.field.clone(), Value::String("stored".into()));
        }
    }
    let mut patched_secret_fields = BTreeSet::new();
    if let Some(p) = &patch.hub_config {
        let Value::Object(p) = p else {
            return Err(ApiError::bad_request("hubConfig must be an object"));
        };
        for (k, v) in p {
            let key = snake(k);
            if v.is_null() {
                merged.remove(&key);
            } else {
                merged.insert(key.clone(), v.clone());
            }
            patched_secret_fields.insert(key);
        }
    }
    // A hub change drops settings the new hub does not take only when the patch says so;
    // otherwise validation names the field that no longer applies.
    let parsed = hubconfig::validate(hub, Some(&Value::Object(merged)), has_api_key, base_url.is_some())
        .map_err(|e| ApiError::bad_request(e.0))?;
    let (per, interval) = match (&patch.rate_limit_per_interval, &patch.rate_limit_interval) {
        (None, None) => (current.rate_limit_per_interval, current.rate_limit_interval),
        (Some(None), _) => (None, None),
        (p, i) => {
            let per = match p {
                Some(v) => *v,
                None => current.rate_limit_per_interval.and_then(|v| u32::try_from(v).ok()),
            };
            let int = match i {
                Some(v) => *v,
                None => current.rate_limit_interval.and_then(|v| u32::try_from(v).ok()),
            };
            check_rate_limit(per, int)?
        }
    };
    check_hub_secrets(state, &parsed).await?;
    state.vault.ensure_current(state.store.as_ref()).await?;

    let mut settings = parsed.settings;
    settings.secret_fields = parsed.secrets.iter().map(|s| s.field.to_string()).collect();
    // Any change of secret material is a rotation: every secret of the key is sealed again at
    // the next version (the version is bound into each ciphertext) and the previous version
    // expires, after the grace period when one is given.
    let kept: BTreeSet<&str> = parsed.secrets.iter().map(|s| s.field).collect();
    let dropped = live
        .iter()
        .any(|s| s.field != API_KEY_FIELD && !kept.contains(s.field.as_str()));
    let secrets_patched = parsed.secrets.iter().any(|s| patched_secret_fields.contains(s.field));
    let rotating = patch.api_key.is_some() || secrets_patched || dropped;
    let version = if rotating {
        current.secret_version + 1
    } else {
        current.secret_version
    };
    let now = now_ms();
    let mut row = current.clone();
    row.hub = hub.as_str().to_string();
    row.base_url = base_url;
    row.hub_settings = serde_json::to_string(&settings).unwrap_or_else(|_| "{}".into());
    row.rate_limit_per_interval = per;
    row.rate_limit_interval = interval;
    if let Some(p) = patch.private {
        row.private = p;
    }
    row.secret_version = version;
    row.updated_at = now;

    let mut new_secrets = Vec::new();
    if rotating {
        let open_old = |field: &str| -> ApiResult<Option<Zeroizing<Vec<u8>>>> {
            let Some(old) = live.iter().find(|x| x.field == field) else {
                return Ok(None);
            };
            state
                .vault
                .open(&place(&current, current.secret_version, field), &old.sealed)
                .map(Some)
                .map_err(|e| ApiError::internal(format!("cannot open a stored secret: {e}")))
        };
        match &patch.api_key {
            Some(k) => {
                new_secrets.push(seal_row(state, &row, version, API_KEY_FIELD, k.0.trim().as_bytes())?);
                row.secret_hint = secret_hint(k.0.trim());
            }
            None => {
                if let Some(value) = open_old(API_KEY_FIELD)? {
                    new_secrets.push(seal_row(state, &row, version, API_KEY_FIELD, &value)?);
                }
            }
        }
        for s in &parsed.secrets {
            if patched_secret_fields.contains(s.field) {
                new_secrets.push(seal_row(state, &row, version, s.field, s.value.as_bytes())?);
            } else if let Some(value) = open_old(s.field)? {
                new_secrets.push(seal_row(state, &row, version, s.field, &value)?);
            }
        }
    }
    let expire = if rotating {
        vec![current.secret_version]
    } else {
        Vec::new()
    };
    let grace_until = match patch.grace_period_seconds {
        Some(g) if g > 0 && rotating => Some(now + i64::from(g) * 1000),
        _ => None,
    };
    let mut changed: Vec<&str> = Vec::new();
    if row.hub != current.hub {
        changed.push("modelHub");
    }
    if patch.base_url.is_some() {
        changed.push("baseUrl");
    }
    if patch.hub_config.is_some() {
        changed.push("hubConfig");
    }
    if row.rate_limit_per_interval != current.rate_limit_per_interval
        || row.rate_limit_interval != current.rate_limit_interval
    {
        changed.push("rateLimit");
    }
    if patch.private.is_some() {
        changed.push("private");
    }
    let action = if rotating {
        "provider_key.rotate"
    } else {
        "provider_key.update"
    };
    let audit = ctx.audit(
        action,
        "provider_key",
        Some(&row.id),
        json!({"name": row.name, "changed": changed, "secretVersion": version, "gracePeriodSeconds": patch.grace_period_seconds}),
    );
    let stored = state
        .store
        .update_provider_key(&row, &new_secrets, &expire, grace_until, ctx.keep(&audit))
        .await?;
    Ok(stored)
}

fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

pub async fn rename(state: &AppState, ctx: &Ctx, current: ProviderKeyRow, new_name: &str) -> ApiResult<ProviderKeyRow> {
    validate_name(new_name).map_err(|e| ApiError::bad_request(format!("newName {e}")))?;
    if new_name == current.name {
        return Ok(current);
    }
    let mut row = current.clone();
    row.name = new_name.to_string();
    row.updated_at = now_ms();
    let audit = ctx.audit(
        "provider_key.rename",
        "provider_key",
        Some(&row.id),
        json!({"from": current.name, "to": new_name}),
    );
    Ok(state
        .store
        .update_provider_key(&row, &[], &[], None, ctx.keep(&audit))
        .await?)
}

pub async fn delete(state: &AppState, ctx: &Ctx, current: &ProviderKeyRow) -> ApiResult<ProviderKeyRow> {
    let audit = ctx.audit(
        "provider_key.delete",
        "provider_key",
        Some(&current.id),
        json!({"name": current.name}),
    );
    Ok(state
        .store
        .delete_provider_key(&current.workspace, &current.id, now_ms(), ctx.keep(&audit))
        .await?)
}

pub async fn by_name(state: &AppState, ctx: &Ctx, name: &str) -> ApiResult<ProviderKeyRow> {
    state
        .store
        .get_provider_key_by_name(&ctx.workspace, name)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found(format!("no provider key named {name}")),
            other => other.into(),
        })
}

/// `page` (1-based) and `limit` query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-based; default 1.
    #[param(minimum = 1, nullable = false)]
    pub page: Option<u32>,
    /// Items per page; default 100.
    #[param(minimum = 1, maximum = 500, nullable = false)]
    pub limit: Option<u32>,
}

impl PageQuery {
    pub fn page(&self) -> ApiResult<Page> {
        let page = self.page.unwrap_or(1);
        let limit = self.limit.unwrap_or(100);
        if page == 0 {
            return Err(ApiError::bad_request("page starts at 1"));
        }
        if !(1..=500).contains(&limit) {
            return Err(ApiError::bad_request("limit must be 1 to 500"));
        }
        Ok(Page { page, limit })
    }
}

pub fn list_body<T: Serialize>(items: Vec<T>, page: Page, total: i64) -> Value {
    json!({"object": "list", "data": items, "page": page.page, "limit": page.limit, "total": total})
}

/// List provider keys.
#[utoipa::path(get, path = "/api/v1/provider_keys", tag = "provider keys", operation_id = "listProviderKeys",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of provider keys", body = Paged<ProviderKeyView>),
        (status = 400, description = "Invalid `page`, `limit` or query string", body = ErrorBody),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list_handler(
    State(state): State<AppState>,
    ctx: Ctx,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Json<Value>> {
    let page = q.page()?;
    let (rows, total) = state.store.list_provider_keys(&ctx.workspace, page).await?;
    let views = rows.iter().map(view).collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(list_body(views, page, total)))
}

/// Create a provider key.
#[utoipa::path(post, path = "/api/v1/provider_keys", tag = "provider keys", operation_id = "createProviderKey",
    request_body = CreateProviderKey,
    responses(
        (status = 201, description = "Created", body = Saved<ProviderKeyView>, links(
            ("GetProviderKey" = (operation_id = "getProviderKey", parameters(("name" = "$response.body#/data/name")))),
            ("UpdateProviderKey" = (operation_id = "updateProviderKey", parameters(("name" = "$response.body#/data/name")))),
            ("RenameProviderKey" = (operation_id = "renameProviderKey", parameters(("name" = "$response.body#/data/name")))),
            ("DeleteProviderKey" = (operation_id = "deleteProviderKey", parameters(("name" = "$response.body#/data/name")))),
            ("CreateVirtualKey" = (operation_id = "createVirtualKey",
                request_body = json!({"name": "schemathesis", "providerKey": "$response.body#/data/name"}))),
        )),
        (status = 400, description = "Invalid body or field", body = ErrorBody),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create_handler(
    State(state): State<AppState>,
    ctx: Ctx,
    JsonBody(input): JsonBody<CreateProviderKey>,
) -> ApiResult<impl IntoResponse> {
    let row = create(&state, &ctx, input).await?;
    state.refresh_caches().await;
    Ok((StatusCode::CREATED, Json(json!({"success": true, "data": view(&row)?}))))
}

/// Get a provider key by name.
#[utoipa::path(get, path = "/api/v1/provider_keys/{name}", tag = "provider keys", operation_id = "getProviderKey",
    params(("name" = String, Path, description = "The provider key's name")),
    responses(
        (status = 200, description = "The provider key", body = Data<ProviderKeyView>),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
        (status = 404, description = "No such provider key in this workspace", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn get_handler(State(state): State<AppState>, ctx: Ctx, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let row = by_name(&state, &ctx, &name).await?;
    Ok(Json(json!({"data": view(&row)?})))
}

/// Change a provider key (anything but its name). A new `apiKey` is a rotation.
#[utoipa::path(patch, path = "/api/v1/provider_keys/{name}", tag = "provider keys", operation_id = "updateProviderKey",
    params(("name" = String, Path, description = "The provider key's name")),
    request_body = UpdateProviderKey,
    responses(
        (status = 200, description = "Changed", body = Saved<ProviderKeyView>),
        (status = 400, description = "Invalid body or field", body = ErrorBody),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
        (status = 404, description = "No such provider key in this workspace", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn update_handler(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(name): Path<String>,
    JsonBody(patch): JsonBody<UpdateProviderKey>,
) -> ApiResult<Json<Value>> {
    let current = by_name(&state, &ctx, &name).await?;
    let row = update(&state, &ctx, current, patch).await?;
    state.refresh_caches().await;
    Ok(Json(json!({"success": true, "data": view(&row)?})))
}

/// Rename a provider key.
#[utoipa::path(post, path = "/api/v1/provider_keys/{name}/rename", tag = "provider keys", operation_id = "renameProviderKey",
    params(("name" = String, Path, description = "The provider key's name")),
    request_body = RenameProviderKey,
    responses(
        (status = 200, description = "Renamed", body = Saved<ProviderKeyView>),
        (status = 400, description = "Invalid body or name", body = ErrorBody),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
        (status = 404, description = "No such provider key in this workspace", body = ErrorBody),
        (status = 409, description = "The new name is taken", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn rename_handler(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<RenameProviderKey>,
) -> ApiResult<Json<Value>> {
    let current = by_name(&state, &ctx, &name).await?;
    let row = rename(&state, &ctx, current, &body.new_name).await?;
    state.refresh_caches().await;
    Ok(Json(json!({"success": true, "data": view(&row)?})))
}

/// Delete a provider key (its secrets are destroyed).
#[utoipa::path(delete, path = "/api/v1/provider_keys/{name}", tag = "provider keys", operation_id = "deleteProviderKey",
    params(("name" = String, Path, description = "The provider key's name")),
    responses(
        (status = 200, description = "Deleted", body = Success),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
        (status = 404, description = "No such provider key in this workspace", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn delete_handler(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let current = by_name(&state, &ctx, &name).await?;
    delete(&state, &ctx, &current).await?;
    state.refresh_caches().await;
    Ok(Json(json!({"success": true})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::FromRequestParts;

    async fn parse(uri: &str) -> Result<PageQuery, ApiError> {
        let (mut parts, ()) = axum::http::Request::get(uri).body(()).unwrap().into_parts();
        QueryParams::<PageQuery>::from_request_parts(&mut parts, &())
            .await
            .map(|q| q.0)
    }

    /// Found by Schemathesis: axum's own `Query` refused these in text/plain.
    #[tokio::test]
    async fn a_query_string_that_does_not_parse_is_a_json_400_that_names_no_value() {
        let q = parse("/x?page=2&limit=5").await.unwrap();
        assert_eq!((q.page, q.limit), (Some(2), Some(5)));
        for (uri, says) in [
            ("/x?page=sk-canary-1234", "page"),
            ("/x?limit=99999999999", "limit"),
            ("/x?bogus=sk-canary-1234", "unknown field `bogus`"),
            ("/x?page=1&page=2", "duplicate field `page`"),
        ] {
            let e = parse(uri).await.unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{uri}");
            assert_eq!(e.code, "invalid_request", "{uri}");
            assert!(e.message.contains(says), "{uri}: {}", e.message);
            assert!(!e.message.contains("sk-canary"), "{uri}: {}", e.message);
        }
        assert_eq!(
            crate::extract::query_error("Failed to deserialize query string: \"x\" is bad"),
            "invalid query string"
        );
    }
}
