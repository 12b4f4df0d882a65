//! Portkey's mount `/v1/virtual-keys`, exactly as the Portkey client's wire format: `x-portkey-api-key`
//! authentication (handled by the route's role), an inline provider `key` stored as a
//! provider key and linked, Azure's `resourceName`/`deploymentName`/`apiVersion`, `custom_host`
//! as the base URL, `usage_limits` and `rate_limits` mapped onto the virtual key, top-level
//! `slug`, and a JSON object on every answer (DELETE included).

use axum::extract::{Path, State};
use axum::Json;
use keygate_store::VirtualKeyRow;
use keygate_types::timefmt::{format_ms, now_ms};
use keygate_types::{ModelHub, NanoUsd};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, JsonBody};
use crate::provider_keys::{self, CreateProviderKey, SecretInput, UpdateProviderKey};
use crate::state::AppState;
use crate::virtual_keys::{
    self, config_of, slug_from, status_of, Budget, Period, RateLimits, Strategy, Target, VkConfig,
};

/// Portkey's provider ids and the hubs they map to.
pub fn hub_of(provider: &str) -> Option<ModelHub> {
    Some(match provider.to_ascii_lowercase().as_str() {
        "openai" => ModelHub::OpenAi,
        "anthropic" => ModelHub::Anthropic,
        "azure-openai" | "azure" => ModelHub::Azure,
        "together-ai" | "together" => ModelHub::Together,
        "mistral-ai" | "mistral" => ModelHub::Mistral,
        "fireworks-ai" | "fireworks" => ModelHub::Fireworks,
        "nvidia" | "nvidia-nim" => ModelHub::Nvidia,
        "openrouter" => ModelHub::OpenRouter,
        "vertex-ai" | "vertex" => ModelHub::Vertex,
        "bedrock" => ModelHub::Bedrock,
        "digitalocean" => ModelHub::DigitalOcean,
        "custom" => ModelHub::Custom,
        _ => return None,
    })
}

/// Portkey's name for a hub.
fn provider_of(hub: ModelHub) -> &'static str {
    match hub {
        ModelHub::Azure => "azure-openai",
        ModelHub::Together => "together-ai",
        ModelHub::Mistral => "mistral-ai",
        ModelHub::Fireworks => "fireworks-ai",
        ModelHub::Vertex => "vertex-ai",
        other => other.as_str(),
    }
}

#[derive(Debug, Deserialize)]
pub struct PortkeyCreate {
    pub name: String,
    pub provider: String,
    pub key: Option<SecretInput>,
    pub note: Option<String>,
    #[serde(rename = "apiVersion")]
    pub api_version: Option<String>,
    #[serde(rename = "resourceName")]
    pub resource_name: Option<String>,
    #[serde(rename = "deploymentName")]
    pub deployment_name: Option<String>,
    pub workspace_id: Option<String>,
    pub usage_limits: Option<Value>,
    pub rate_limits: Option<Value>,
    pub custom_host: Option<String>,
    pub slug: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct PortkeyUpdate {
    pub name: Option<String>,
    pub key: Option<SecretInput>,
    pub note: Option<String>,
    pub usage_limits: Option<Value>,
    pub rate_limits: Option<Value>,
}

/// `usage_limits` -> budget, period and alert threshold.
fn usage_limits(v: &Value) -> ApiResult<(Budget, Period, Option<u32>)> {
    if v.is_null() {
        return Ok((Budget::default(), Period::Lifetime, None));
    }
    let o = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("usage_limits must be an object"))?;
    let usd = match o.get("credit_limit") {
        None | Some(Value::Null) => None,
        Some(n) => Some(
            n.as_f64()
                .and_then(NanoUsd::from_usd_f64)
                .ok_or_else(|| ApiError::bad_request("usage_limits.credit_limit must be a non-negative number"))?
                .0,
        ),
    };
    let period = match o.get("periodic_reset").and_then(Value::as_str) {
        None => Period::Lifetime,
        Some("monthly") => Period::Month,
        Some("weekly") => Period::Week,
        Some("daily") => Period::Epoch,
        Some(_) => {
            return Err(ApiError::bad_request(
                "usage_limits.periodic_reset must be monthly, weekly or daily",
            ))
        }
    };
    let alert = match o.get("alert_threshold") {
        None | Some(Value::Null) => None,
        Some(n) => Some(
            n.as_f64()
                .filter(|x| (0.0..=100.0).contains(x))
                .map(|x| x.round() as u32)
                .ok_or_else(|| ApiError::bad_request("usage_limits.alert_threshold must be 0 to 100"))?,
        ),
    };
    Ok((
        Budget {
            usd_nano: usd,
            tokens: None,
            requests: None,
        },
        period,
        alert,
    ))
}

/// `rate_limits` `[{type, unit, value}]` -> rate limits.
fn rate_limits(v: &Value) -> ApiResult<RateLimits> {
    let mut out = RateLimits::default();
    if v.is_null() {
        return Ok(out);
    }
    let arr = v
        .as_array()
        .ok_or_else(|| ApiError::bad_request("rate_limits must be a list of {type, unit, value}"))?;
    for item in arr {
        let t = item.get("type").and_then(Value::as_str).unwrap_or("requests");
        let unit = item.get("unit").and_then(Value::as_str).unwrap_or("");
        let value = item
            .get("value")
            .and_then(Value::as_u64)
            .filter(|v| *v > 0)
            .ok_or_else(|| ApiError::bad_request("rate_limits[].value must be a positive integer"))?;
        let slot = match (t, unit) {
            ("requests", "rpm") => &mut out.rpm,
            ("requests", "rph") => &mut out.rph,
            ("requests", "rpd") => &mut out.rpd,
            ("tokens", "rpm") | ("tokens", "tpm") => &mut out.tpm,
            ("tokens", "rph") | ("tokens", "tph") => &mut out.tph,
            ("tokens", "rpd") | ("tokens", "tpd") => &mut out.tpd,
            _ => {
                return Err(ApiError::bad_request(
                    "rate_limits[]: type is requests or tokens, unit is rpm, rph or rpd",
                ))
            }
        };
        *slot = Some(value);
    }
    Ok(out)
}

fn rate_limits_view(r: &RateLimits) -> Value {
    let mut out = Vec::new();
    for (t, unit, v) in [
        ("requests", "rpm", r.rpm),
        ("requests", "rph", r.rph),
        ("requests", "rpd", r.rpd),
        ("tokens", "rpm", r.tpm),
        ("tokens", "rph", r.tph),
        ("tokens", "rpd", r.tpd),
    ] {
        if let Some(v) = v {
            out.push(json!({"type": t, "unit": unit, "value": v}));
        }
    }
    if out.is_empty() {
        Value::Null
    } else {
        Value::Array(out)
    }
}

fn usage_limits_view(cfg: &VkConfig) -> Value {
    let Some(usd) = cfg.budget.usd_nano else {
        return Value::Null;
    };
    let reset = match cfg.budget_period {
        Period::Month => Value::from("monthly"),
        Period::Week => Value::from("weekly"),
        Period::Epoch => Value::from("daily"),
        Period::Lifetime => Value::Null,
    };
    json!({"credit_limit": NanoUsd(usd).to_usd_f64(), "periodic_reset": reset, "alert_threshold": cfg.alert_threshold})
}

/// A virtual key in Portkey's shape. Never the key.
pub fn view(state: &AppState, row: &VirtualKeyRow) -> ApiResult<Value> {
    let cfg = config_of(row)?;
    let provider = cfg
        .targets
        .first()
        .and_then(|t| state.runtime.provider(&t.provider_key_id))
        .map(|p| provider_of(p.hub))
        .unwrap_or("openai");
    Ok(json!({
        "id": row.id,
        "slug": row.slug,
        "name": row.name,
        "note": row.note,
        "status": status_of(row, now_ms()),
        "provider": provider,
        "usage_limits": usage_limits_view(&cfg),
        "rate_limits": rate_limits_view(&cfg.rate_limits),
        "reset_usage": 0,
        "created_at": format_ms(row.created_at),
        "model_config": {},
        "object": "virtual-key",
    }))
}

async fn scoped(state: &AppState, ctx: Ctx, workspace_id: Option<&str>) -> ApiResult<Ctx> {
    match workspace_id {
        None => Ok(ctx),
        Some(w) if w == ctx.workspace => Ok(ctx),
        Some(w) if ctx.principal.org_admin => {
            state
                .store
                .get_workspace(w)
                .await
                .map_err(|_| ApiError::not_found(format!("workspace {w} not found")))?;
            Ok(Ctx {
                workspace: w.to_string(),
                ..ctx
            })
        }
        Some(w) => Err(ApiError::not_found(format!("workspace {w} not found"))),
    }
}

pub async fn list(State(state): State<AppState>, ctx: Ctx, q: axum::extract::RawQuery) -> ApiResult<Json<Value>> {
    let workspace_id =
        q.0.as_deref()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("workspace_id=")))
            .map(str::to_string);
    let ctx = scoped(&state, ctx, workspace_id.as_deref()).await?;
    let mut data = Vec::new();
    let mut page = 1;
    loop {
        let (rows, total) = state
            .store
            .list_virtual_keys(&ctx.workspace, keygate_store::Page { page, limit: 500 })
            .await?;
        for r in &rows {
            data.push(view(&state, r)?);
        }
        if data.len() as i64 >= total || rows.is_empty() {
            break;
        }
        page += 1;
    }
    Ok(Json(json!({"object": "list", "total": data.len(), "data": data})))
}

pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    JsonBody(body): JsonBody<PortkeyCreate>,
) -> ApiResult<Json<Value>> {
    let ctx = scoped(&state, ctx, body.workspace_id.as_deref()).await?;
    let hub = hub_of(&body.provider).ok_or_else(|| ApiError::bad_request("unknown provider"))?;
    if matches!(hub, ModelHub::Vertex | ModelHub::Bedrock | ModelHub::BedrockAgents) {
        return Err(ApiError::bad_request(
            "this provider needs more than a key: create a provider key with /api/v1/provider_keys and a virtual key with /api/v1/virtual_keys",
        ));
    }
    let key = body
        .key
        .clone()
        .ok_or_else(|| ApiError::bad_request("key is required"))?;
    let slug = match &body.slug {
        Some(s) => {
            virtual_keys::validate_slug(s)?;
            s.clone()
        }
        None => slug_from(&body.name),
    };
    let mut hub_config = serde_json::Map::new();
    if hub == ModelHub::Azure {
        if let Some(r) = &body.resource_name {
            hub_config.insert("resource_name".into(), Value::String(r.clone()));
        }
        if let Some(v) = &body.api_version {
            hub_config.insert("api_version".into(), Value::String(v.clone()));
        }
        if let Some(d) = &body.deployment_name {
            hub_config.insert("deployments".into(), json!({ d.clone(): d.clone() }));
            hub_config.insert("default_deployment".into(), Value::String(d.clone()));
        }
    }
    let (budget, period, alert) = usage_limits(body.usage_limits.as_ref().unwrap_or(&Value::Null))?;
    let limits = rate_limits(body.rate_limits.as_ref().unwrap_or(&Value::Null))?;
    let pk_name: String = format!("pk-{}", slug.chars().take(60).collect::<String>());
    // One request, one audit event: the inline provider key and the virtual key are made quietly.
    let quiet = ctx.quiet();
    let pk = provider_keys::create(
        &state,
        &quiet,
        CreateProviderKey {
            name: pk_name,
            model_hub: hub.as_str().to_string(),
            api_key: Some(key),
            base_url: body.custom_host.clone(),
            hub_config: (!hub_config.is_empty()).then_some(Value::Object(hub_config)),
            rate_limit_per_interval: None,
            rate_limit_interval: None,
            private: None,
        },
    )
    .await?;
    let cfg = VkConfig {
        targets: vec![Target {
            provider_key_id: pk.id.clone(),
            weight: 1,
        }],
        strategy: Strategy::Single,
        budget,
        budget_period: period,
        rate_limits: limits,
        inline_provider_key: Some(pk.id.clone()),
        alert_threshold: alert,
        ..VkConfig::default()
    };
    let vk = match virtual_keys::create_row(&state, &quiet, &body.name, Some(slug), body.note.clone(), cfg, None).await
    {
        Ok(vk) => vk,
        Err(e) => {
            // Nothing half-made stays behind.
            let _ = provider_keys::delete(&state, &quiet, &pk).await;
            return Err(e);
        }
    };
    state
        .store
        .append_audit(&ctx.audit(
            "virtual_key.create",
            "virtual_key",
            Some(&vk.id),
            json!({"slug": vk.slug, "name": vk.name, "via": "portkey", "inlineProviderKey": pk.id}),
        ))
        .await?;
    state.refresh_caches().await;
    Ok(Json(
        json!({"id": vk.id, "slug": vk.slug, "object": "virtual-key", "success": true}),
    ))
}

pub async fn retrieve(State(state): State<AppState>, ctx: Ctx, Path(slug): Path<String>) -> ApiResult<Json<Value>> {
    let row = virtual_keys::find(&state, &ctx, &slug).await?;
    Ok(Json(view(&state, &row)?))
}

pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    JsonBody(body): JsonBody<PortkeyUpdate>,
) -> ApiResult<Json<Value>> {
    let row = virtual_keys::find(&state, &ctx, &slug).await?;
    let cfg = config_of(&row)?;
    let outer = ctx;
    let ctx = outer.quiet();
    let mut changed: Vec<&str> = Vec::new();
    if let Some(key) = body.key.clone() {
        changed.push("key");
        let pk_id = cfg
            .inline_provider_key
            .clone()
            .or_else(|| (cfg.targets.len() == 1).then(|| cfg.targets[0].provider_key_id.clone()))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "this virtual key has several provider keys: rotate them with /api/v1/provider_keys",
                )
            })?;
        let pk = state.store.get_provider_key(&ctx.workspace, &pk_id).await?;
        provider_keys::update(
            &state,
            &ctx,
            pk,
            UpdateProviderKey {
                api_key: Some(key),
                ..Default::default()
            },
        )
        .await?;
    }
    let mut patch = virtual_keys::UpdateVirtualKey {
        name: body.name.clone(),
        ..Default::default()
    };
    if let Some(n) = &body.note {
        patch.note = Some(Some(n.clone()));
    }
    let mut row = row;
    if patch.name.is_some() {
        changed.push("name");
    }
    if patch.note.is_some() {
        changed.push("note");
    }
    if body.usage_limits.is_some() || body.rate_limits.is_some() {
        changed.push("limits");
    }
    if body.usage_limits.is_some() || body.rate_limits.is_some() || patch.name.is_some() || patch.note.is_some() {
        row = virtual_keys::update(&state, &ctx, row, patch).await?;
        if body.usage_limits.is_some() || body.rate_limits.is_some() {
            let mut cfg = config_of(&row)?;
            if let Some(u) = &body.usage_limits {
                let (budget, period, alert) = usage_limits(u)?;
                // Portkey sends only what changes: a credit limit alone keeps the reset period.
                let keeps_period = u.get("periodic_reset").is_none();
                cfg.budget.usd_nano = budget.usd_nano;
                if !keeps_period {
                    cfg.budget_period = period;
                }
                if alert.is_some() {
                    cfg.alert_threshold = alert;
                }
            }
            if let Some(r) = &body.rate_limits {
                cfg.rate_limits = rate_limits(r)?;
            }
            row.config = serde_json::to_string(&cfg).unwrap_or_else(|_| "{}".into());
            row.updated_at = now_ms();
            let audit = ctx.audit(
                "virtual_key.update",
                "virtual_key",
                Some(&row.id),
                json!({"slug": row.slug, "changed": ["limits"]}),
            );
            row = state.store.update_virtual_key(&row, ctx.keep(&audit)).await?;
        }
    }
    if !changed.is_empty() {
        let event = outer.audit(
            "virtual_key.update",
            "virtual_key",
            Some(&row.id),
            json!({"slug": row.slug, "changed": changed, "via": "portkey"}),
        );
        state.store.append_audit(&event).await?;
    }
    state.refresh_caches().await;
    Ok(Json(
        json!({"id": row.id, "slug": row.slug, "object": "virtual-key", "success": true}),
    ))
}

pub async fn delete(State(state): State<AppState>, ctx: Ctx, Path(slug): Path<String>) -> ApiResult<Json<Value>> {
    let row = virtual_keys::find(&state, &ctx, &slug).await?;
    virtual_keys::delete(&state, &ctx.quiet(), &row).await?;
    let event = ctx.audit(
        "virtual_key.delete",
        "virtual_key",
        Some(&row.id),
        json!({"slug": row.slug, "via": "portkey"}),
    );
    state.store.append_audit(&event).await?;
    state.refresh_caches().await;
    Ok(Json(json!({"success": true})))
}
