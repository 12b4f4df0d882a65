//! Virtual keys: the model (targets, strategy, models, aliases, budget, limits, expiry), the
//! service and the native API `/api/v1/virtual_keys`. Portkey's mount (`portkey.rs`) calls
//! the same service.
//!
//! What must stay true: a virtual key's id cannot be derived from anything and reveals no
//! secret; targets name provider keys of the same workspace; limits are validated here and
//! enforced on the hot path.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use keygate_store::{ProviderKeyRow, StoreError, VirtualKeyRow};
use keygate_types::timefmt::{format_ms, now_ms, parse_ms};
use keygate_types::NanoUsd;
use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::extract::QueryParams;
use crate::extract::{Ctx, JsonBody};
use crate::openapi::doc::{Data, ErrorBody, LimitState, Paged, Saved, Success};
use crate::provider_keys::{list_body, PageQuery};
use crate::state::AppState;

pub use keygate_types::policy::{Budget, ModelLimit, Period, RateLimits, Strategy, Target, Unreadable, VkConfig};

/// A virtual key's stored configuration, read strictly (see [`VkConfig::from_stored`]): a 503
/// naming the key when it cannot be read. Such a key refuses gateway requests too; it can be
/// deleted (which reads nothing of it) and created again.
pub fn config_of(row: &VirtualKeyRow) -> ApiResult<VkConfig> {
    VkConfig::from_stored(&row.config).map_err(|e| unreadable_error("virtual key", &row.id, &e))
}

/// The error for a key whose stored record cannot be read (503, naming the key and the field).
pub fn unreadable_error(kind: &str, id: &str, e: &Unreadable) -> ApiError {
    ApiError::unavailable(format!(
        "{kind} {id} cannot be used: its stored {e}; delete it and create it again (or repair the record)"
    ))
}

/// Every limit given is at least 1 (a 400 naming the window under `at`).
fn validate_rate_limits(limits: &RateLimits, at: &str) -> ApiResult<()> {
    limits.check(at).map_err(ApiError::bad_request)
}

/// The status a client sees: stored `active`/`disabled`, or derived `expired`.
pub fn status_of(row: &VirtualKeyRow, now: i64) -> &'static str {
    if row.status == "disabled" {
        "disabled"
    } else if row.expires_at.is_some_and(|e| now >= e) {
        "expired"
    } else {
        "active"
    }
}

fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A budget as given in JSON: USD as a decimal number.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetInput {
    #[schema(minimum = 0)]
    pub usd: Option<f64>,
    pub tokens: Option<u64>,
    pub requests: Option<u64>,
}

impl BudgetInput {
    fn to_budget(&self, at: &str) -> ApiResult<Budget> {
        let usd_nano = match self.usd {
            None => None,
            Some(v) => Some(
                NanoUsd::from_usd_f64(v)
                    .ok_or_else(|| ApiError::bad_request(format!("{at}.usd must be a non-negative amount")))?
                    .0,
            ),
        };
        Ok(Budget {
            usd_nano,
            tokens: self.tokens,
            requests: self.requests,
        })
    }
}

pub fn budget_view(b: &Budget) -> Value {
    let mut v = serde_json::Map::new();
    if let Some(n) = b.usd_nano {
        v.insert("usd".into(), json!(NanoUsd(n).to_usd_f64()));
    }
    if let Some(t) = b.tokens {
        v.insert("tokens".into(), json!(t));
    }
    if let Some(r) = b.requests {
        v.insert("requests".into(), json!(r));
    }
    Value::Object(v)
}

/// Per-model overrides as given in JSON.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelLimitInput {
    pub budget: Option<BudgetInput>,
    pub rate_limits: Option<RateLimits>,
}

/// One target as given in JSON: a provider key by name or id.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetInput {
    /// A provider key of the workspace, by name or id.
    pub provider_key: String,
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// Body of `POST /api/v1/virtual_keys`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateVirtualKey {
    /// 1 to 128 printable characters.
    pub name: String,
    /// Unique; generated from the name when absent. Must not start with `vk_`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub slug: Option<String>,
    /// Shorthand for one target: a provider key name or id.
    pub provider_key: Option<String>,
    #[schema(min_items = 1, max_items = 16)]
    pub targets: Option<Vec<TargetInput>>,
    pub strategy: Option<Strategy>,
    pub models: Option<Vec<String>>,
    pub aliases: Option<BTreeMap<String, String>>,
    pub default_model: Option<String>,
    pub budget: Option<BudgetInput>,
    pub budget_period: Option<Period>,
    pub rate_limits: Option<RateLimits>,
    #[schema(value_type = Option<Object>)]
    pub model_limits: Option<BTreeMap<String, ModelLimitInput>>,
    /// RFC 3339 or `YYYY-MM-DD`.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    pub note: Option<String>,
}

/// Body of `PATCH /api/v1/virtual_keys/{slug}`: only the fields given change; `null`
/// clears an optional field.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateVirtualKey {
    pub name: Option<String>,
    /// Must not start with `vk_`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub slug: Option<String>,
    pub provider_key: Option<String>,
    #[schema(min_items = 1, max_items = 16)]
    pub targets: Option<Vec<TargetInput>>,
    pub strategy: Option<Strategy>,
    pub models: Option<Vec<String>>,
    pub aliases: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub default_model: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<BudgetInput>)]
    pub budget: Option<Option<BudgetInput>>,
    pub budget_period: Option<Period>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<RateLimits>)]
    pub rate_limits: Option<Option<RateLimits>>,
    #[schema(value_type = Option<Object>)]
    pub model_limits: Option<BTreeMap<String, ModelLimitInput>>,
    /// RFC 3339 or `YYYY-MM-DD`; `null` removes the expiry.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub note: Option<Option<String>>,
    /// `active` or `disabled`.
    #[schema(value_type = Option<StoredStatus>)]
    pub status: Option<String>,
}

/// Makes a slug from a name: lower case, `-` for anything else, plus 6 random hex digits.
pub fn slug_from(name: &str) -> String {
    let mut base: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while base.contains("--") {
        base = base.replace("--", "-");
    }
    let base = base.trim_matches('-');
    let base: String = base.chars().take(40).collect();
    let suffix: u32 = rand::thread_rng().gen_range(0..0x0100_0000);
    if base.is_empty() {
        format!("vk-{suffix:06x}")
    } else {
        format!("{base}-{suffix:06x}")
    }
}

/// A new virtual-key id: `vk_` and 24 random base62 characters.
pub fn new_vk_id() -> String {
    const A: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rngs::OsRng;
    let body: String = (0..24).map(|_| A[rng.gen_range(0..A.len())] as char).collect();
    format!("vk_{body}")
}

pub fn validate_slug(slug: &str) -> ApiResult<()> {
    let ok = !slug.is_empty()
        && slug.len() <= 64
        && slug
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !slug.starts_with("vk_");
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "slug must be 1 to 64 letters, digits, '-', '_' or '.', and must not start with vk_",
        ))
    }
}

fn validate_vk_name(name: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("name must be 1 to 128 printable characters"));
    }
    Ok(())
}

fn validate_model_name(what: &str, m: &str) -> ApiResult<()> {
    if m.is_empty() || m.len() > 256 || m.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{what} must be 1 to 256 printable characters"
        )));
    }
    Ok(())
}

/// Finds a provider key of the workspace by name or id.
pub async fn resolve_provider_key(state: &AppState, workspace: &str, name_or_id: &str) -> ApiResult<ProviderKeyRow> {
    match state.store.get_provider_key_by_name(workspace, name_or_id).await {
        Ok(row) => Ok(row),
        Err(StoreError::NotFound) => state
            .store
            .get_provider_key(workspace, name_or_id)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => {
                    ApiError::bad_request(format!("no provider key named {name_or_id} in this workspace"))
                }
                other => other.into(),
            }),
        Err(e) => Err(e.into()),
    }
}

async fn targets_from(
    state: &AppState,
    workspace: &str,
    provider_key: Option<&String>,
    targets: Option<&Vec<TargetInput>>,
) -> ApiResult<Option<Vec<Target>>> {
    let inputs: Vec<TargetInput> = match (provider_key, targets) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give providerKey or targets, not both")),
        (Some(p), None) => vec![TargetInput {
            provider_key: p.clone(),
            weight: 1,
        }],
        (None, Some(t)) => t.clone(),
        (None, None) => return Ok(None),
    };
    if inputs.is_empty() {
        return Err(ApiError::bad_request("a virtual key needs at least one target"));
    }
    if inputs.len() > 16 {
        return Err(ApiError::bad_request("a virtual key has at most 16 targets"));
    }
    let mut out = Vec::with_capacity(inputs.len());
    for t in &inputs {
        if t.weight == 0 || t.weight > 1_000_000 {
            return Err(ApiError::bad_request("a target's weight must be 1 to 1000000"));
        }
        let row = resolve_provider_key(state, workspace, &t.provider_key).await?;
        if out.iter().any(|x: &Target| x.provider_key_id == row.id) {
            return Err(ApiError::bad_request(format!(
                "provider key {} is named twice",
                row.name
            )));
        }
        out.push(Target {
            provider_key_id: row.id,
            weight: t.weight,
        });
    }
    Ok(Some(out))
}

fn model_limits_from(input: &BTreeMap<String, ModelLimitInput>) -> ApiResult<BTreeMap<String, ModelLimit>> {
    let mut out = BTreeMap::new();
    for (model, l) in input {
        validate_model_name("a modelLimits key", model)?;
        let budget = match &l.budget {
            Some(b) => b.to_budget(&format!("modelLimits.{model}.budget"))?,
            None => Budget::default(),
        };
        let rate_limits = l.rate_limits.clone().unwrap_or_default();
        validate_rate_limits(&rate_limits, &format!("modelLimits.{model}.rateLimits"))?;
        out.insert(model.clone(), ModelLimit { budget, rate_limits });
    }
    Ok(out)
}

fn check_config(cfg: &VkConfig) -> ApiResult<()> {
    if cfg.targets.is_empty() {
        return Err(ApiError::bad_request("a virtual key needs a providerKey or targets"));
    }
    if cfg.strategy == Strategy::Single && cfg.targets.len() > 1 {
        return Err(ApiError::bad_request(
            "strategy single takes one target; use loadbalance or fallback for several",
        ));
    }
    for m in &cfg.models {
        validate_model_name("a model", m)?;
    }
    for (a, m) in &cfg.aliases {
        validate_model_name("an alias", a)?;
        validate_model_name("an alias target", m)?;
    }
    if let Some(d) = &cfg.default_model {
        validate_model_name("defaultModel", d)?;
    }
    validate_rate_limits(&cfg.rate_limits, "rateLimits")?;
    Ok(())
}

fn parse_expiry(s: &str) -> ApiResult<i64> {
    parse_ms(s).ok_or_else(|| ApiError::bad_request("expiresAt must be an RFC 3339 time or YYYY-MM-DD"))
}

/// Creates a virtual key from a validated config.
pub async fn create_row(
    state: &AppState,
    ctx: &Ctx,
    name: &str,
    slug: Option<String>,
    note: Option<String>,
    cfg: VkConfig,
    expires_at: Option<i64>,
) -> ApiResult<VirtualKeyRow> {
    validate_vk_name(name)?;
    check_config(&cfg)?;
    let given = slug.is_some();
    let mut slug = slug.unwrap_or_else(|| slug_from(name));
    validate_slug(&slug)?;
    let now = now_ms();
    for attempt in 0..4 {
        let row = VirtualKeyRow {
            id: new_vk_id(),
            workspace: ctx.workspace.clone(),
            slug: slug.clone(),
            name: name.to_string(),
            note: note.clone(),
            config: serde_json::to_string(&cfg).unwrap_or_else(|_| "{}".into()),
            status: "active".into(),
            expires_at,
            created_at: now,
            updated_at: now,
            created_by: Some(ctx.principal.id.clone()),
            rev: 0,
            deleted_at: None,
        };
        let audit = ctx.audit(
            "virtual_key.create",
            "virtual_key",
            Some(&row.id),
            json!({"slug": row.slug, "name": row.name, "targets": cfg.targets.len()}),
        );
        match state.store.create_virtual_key(&row, ctx.keep(&audit)).await {
            Ok(stored) => return Ok(stored),
            // A generated slug collided: draw another suffix.
            Err(StoreError::Conflict(_)) if !given && attempt < 3 => slug = slug_from(name),
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict("could not find a free slug; give one"))
}

pub async fn create(state: &AppState, ctx: &Ctx, input: CreateVirtualKey) -> ApiResult<VirtualKeyRow> {
    let targets = targets_from(
        state,
        &ctx.workspace,
        input.provider_key.as_ref(),
        input.targets.as_ref(),
    )
    .await?
    .ok_or_else(|| ApiError::bad_request("a virtual key needs a providerKey or targets"))?;
    let strategy = input.strategy.unwrap_or(if targets.len() > 1 {
        Strategy::Loadbalance
    } else {
        Strategy::Single
    });
    let budget = match &input.budget {
        Some(b) => b.to_budget("budget")?,
        None => Budget::default(),
    };
    let cfg = VkConfig {
        targets,
        strategy,
        models: input.models.unwrap_or_default(),
        aliases: input.aliases.unwrap_or_default(),
        default_model: input.default_model,
        budget,
        budget_period: input.budget_period.unwrap_or_default(),
        rate_limits: input.rate_limits.unwrap_or_default(),
        model_limits: model_limits_from(&input.model_limits.unwrap_or_default())?,
        inline_provider_key: None,
        alert_threshold: None,
    };
    let expires_at = input.expires_at.as_deref().map(parse_expiry).transpose()?;
    create_row(state, ctx, &input.name, input.slug, input.note, cfg, expires_at).await
}

pub async fn update(
    state: &AppState,
    ctx: &Ctx,
    current: VirtualKeyRow,
    patch: UpdateVirtualKey,
) -> ApiResult<VirtualKeyRow> {
    let mut row = current.clone();
    let mut cfg = config_of(&current)?;
    let mut changed: Vec<&str> = Vec::new();
    if let Some(n) = &patch.name {
        validate_vk_name(n)?;
        row.name = n.clone();
        changed.push("name");
    }
    if let Some(s) = &patch.slug {
        validate_slug(s)?;
        row.slug = s.clone();
        changed.push("slug");
    }
    if let Some(t) = targets_from(
        state,
        &ctx.workspace,
        patch.provider_key.as_ref(),
        patch.targets.as_ref(),
    )
    .await?
    {
        cfg.targets = t;
        changed.push("targets");
        if patch.strategy.is_none() && cfg.targets.len() > 1 && cfg.strategy == Strategy::Single {
            cfg.strategy = Strategy::Loadbalance;
        }
    }
    if let Some(s) = patch.strategy {
        cfg.strategy = s;
        changed.push("strategy");
    }
    if let Some(m) = patch.models {
        cfg.models = m;
        changed.push("models");
    }
    if let Some(a) = patch.aliases {
        cfg.aliases = a;
        changed.push("aliases");
    }
    if let Some(d) = patch.default_model {
        cfg.default_model = d;
        changed.push("defaultModel");
    }
    if let Some(b) = &patch.budget {
        cfg.budget = match b {
            Some(b) => b.to_budget("budget")?,
            None => Budget::default(),
        };
        changed.push("budget");
    }
    if let Some(p) = patch.budget_period {
        cfg.budget_period = p;
        changed.push("budgetPeriod");
    }
    if let Some(r) = patch.rate_limits {
        cfg.rate_limits = r.unwrap_or_default();
        changed.push("rateLimits");
    }
    if let Some(m) = &patch.model_limits {
        cfg.model_limits = model_limits_from(m)?;
        changed.push("modelLimits");
    }
    if let Some(e) = &patch.expires_at {
        row.expires_at = e.as_deref().map(parse_expiry).transpose()?;
        changed.push("expiresAt");
    }
    if let Some(n) = patch.note {
        row.note = n;
        changed.push("note");
    }
    if let Some(s) = &patch.status {
        match s.as_str() {
            "active" | "disabled" => row.status = s.clone(),
            _ => return Err(ApiError::bad_request("status must be active or disabled")),
        }
        changed.push("status");
    }
    check_config(&cfg)?;
    row.config = serde_json::to_string(&cfg).unwrap_or_else(|_| "{}".into());
    row.updated_at = now_ms();
    let audit = ctx.audit(
        "virtual_key.update",
        "virtual_key",
        Some(&row.id),
        json!({"slug": row.slug, "changed": changed}),
    );
    Ok(state.store.update_virtual_key(&row, ctx.keep(&audit)).await?)
}

/// Deletes a virtual key, and the provider key created inline with it when nothing else uses it.
pub async fn delete(state: &AppState, ctx: &Ctx, current: &VirtualKeyRow) -> ApiResult<VirtualKeyRow> {
    let audit = ctx.audit(
        "virtual_key.delete",
        "virtual_key",
        Some(&current.id),
        json!({"slug": current.slug}),
    );
    let deleted = state
        .store
        .delete_virtual_key(&current.workspace, &current.id, now_ms(), ctx.keep(&audit))
        .await?;
    // An unreadable configuration names no inline provider key to clean up: the provider key
    // stays (deleting a key must work whatever its record holds).
    if let Some(pk) = config_of(current).ok().and_then(|c| c.inline_provider_key) {
        if !provider_key_in_use(state, &current.workspace, &pk).await? {
            if let Ok(row) = state.store.get_provider_key(&current.workspace, &pk).await {
                // Part of this deletion: audited by the virtual key's own event.
                crate::provider_keys::delete(state, &ctx.quiet(), &row).await?;
            }
        }
    }
    Ok(deleted)
}

async fn provider_key_in_use(state: &AppState, workspace: &str, provider_key_id: &str) -> ApiResult<bool> {
    let mut page = 1;
    loop {
        let (rows, total) = state
            .store
            .list_virtual_keys(workspace, keygate_store::Page { page, limit: 500 })
            .await?;
        // A configuration that cannot be read may use it: counted as in use.
        if rows
            .iter()
            .any(|r| config_of(r).map_or(true, |c| c.targets.iter().any(|t| t.provider_key_id == provider_key_id)))
        {
            return Ok(true);
        }
        if i64::from(page) * 500 >= total || rows.is_empty() {
            return Ok(false);
        }
        page += 1;
    }
}

pub async fn find(state: &AppState, ctx: &Ctx, id_or_slug: &str) -> ApiResult<VirtualKeyRow> {
    state
        .store
        .get_virtual_key(&ctx.workspace, id_or_slug)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found(format!("no virtual key {id_or_slug}")),
            other => other.into(),
        })
}

/// The native view of a virtual key. Provider keys are named from memory.
pub fn view(state: &AppState, row: &VirtualKeyRow) -> ApiResult<Value> {
    let cfg = config_of(row)?;
    let targets: Vec<Value> = cfg
        .targets
        .iter()
        .map(|t| {
            let name = state.runtime.provider_name(&t.provider_key_id);
            json!({"providerKeyId": t.provider_key_id, "providerKey": name, "weight": t.weight})
        })
        .collect();
    let model_limits: serde_json::Map<String, Value> = cfg
        .model_limits
        .iter()
        .map(|(m, l)| {
            (
                m.clone(),
                json!({"budget": budget_view(&l.budget), "rateLimits": l.rate_limits}),
            )
        })
        .collect();
    Ok(json!({
        "id": row.id,
        "slug": row.slug,
        "name": row.name,
        "note": row.note,
        "status": status_of(row, now_ms()),
        "targets": targets,
        "strategy": cfg.strategy,
        "models": cfg.models,
        "aliases": cfg.aliases,
        "defaultModel": cfg.default_model,
        "budget": budget_view(&cfg.budget),
        "budgetPeriod": cfg.budget_period.as_str(),
        "rateLimits": cfg.rate_limits,
        "modelLimits": model_limits,
        "expiresAt": row.expires_at.map(format_ms),
        "workspace": row.workspace,
        "createdAt": format_ms(row.created_at),
        "updatedAt": format_ms(row.updated_at),
    }))
}

/// A virtual key as [`view`] shows it (for the document).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct VirtualKeyView {
    /// `vk_` and 24 base62 characters.
    pub id: String,
    pub slug: String,
    pub name: String,
    #[schema(required = true)]
    pub note: Option<String>,
    pub status: VkStatus,
    pub targets: Vec<TargetView>,
    pub strategy: Strategy,
    /// Allowed models; empty allows every model.
    pub models: Vec<String>,
    /// Alias -> upstream model.
    pub aliases: BTreeMap<String, String>,
    #[schema(required = true)]
    pub default_model: Option<String>,
    pub budget: BudgetInput,
    pub budget_period: Period,
    pub rate_limits: RateLimits,
    pub model_limits: BTreeMap<String, ModelLimitView>,
    #[schema(required = true)]
    pub expires_at: Option<String>,
    pub workspace: String,
    pub created_at: String,
    pub updated_at: String,
}

/// A virtual key's status: stored (`active`, `disabled`) or derived (`expired`, `exhausted`).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum VkStatus {
    Active,
    Disabled,
    Expired,
    /// A budget of the key has nothing left (lists, get and limits only).
    Exhausted,
}

/// The status a client may set.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum StoredStatus {
    Active,
    Disabled,
}

/// One target as [`view`] shows it.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct TargetView {
    pub provider_key_id: String,
    /// The provider key's name; `null` if it is gone.
    #[schema(required = true)]
    pub provider_key: Option<String>,
    pub weight: u32,
}

/// Per-model overrides as [`view`] shows them.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ModelLimitView {
    pub budget: BudgetInput,
    pub rate_limits: RateLimits,
}

/// The answer of `GET /api/v1/virtual_keys/{slug}/limits` (for the document).
#[derive(ToSchema)]
pub struct VirtualKeyLimits {
    pub id: String,
    pub slug: String,
    pub status: VkStatus,
    pub limits: Vec<LimitState>,
}

/// List virtual keys.
#[utoipa::path(get, path = "/api/v1/virtual_keys", tag = "virtual keys", operation_id = "listVirtualKeys",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of virtual keys", body = Paged<VirtualKeyView>),
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
    let (rows, total) = state.store.list_virtual_keys(&ctx.workspace, page).await?;
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut v = view(&state, r)?;
        v["status"] = Value::from(live_status(&state, r).await);
        items.push(v);
    }
    Ok(Json(list_body(items, page, total)))
}

/// Create a virtual key.
#[utoipa::path(post, path = "/api/v1/virtual_keys", tag = "virtual keys", operation_id = "createVirtualKey",
    request_body = CreateVirtualKey,
    responses(
        (status = 201, description = "Created", body = Saved<VirtualKeyView>, links(
            ("GetVirtualKey" = (operation_id = "getVirtualKey", parameters(("slug" = "$response.body#/data/slug")))),
            ("UpdateVirtualKey" = (operation_id = "updateVirtualKey", parameters(("slug" = "$response.body#/data/slug")))),
            ("VirtualKeyLimits" = (operation_id = "getVirtualKeyLimits", parameters(("slug" = "$response.body#/data/id")))),
            ("DeleteVirtualKey" = (operation_id = "deleteVirtualKey", parameters(("slug" = "$response.body#/data/slug")))),
        )),
        (status = 400, description = "Invalid body or field, or an unknown provider key", body = ErrorBody),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
        (status = 409, description = "The slug is taken", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create_handler(
    State(state): State<AppState>,
    ctx: Ctx,
    JsonBody(input): JsonBody<CreateVirtualKey>,
) -> ApiResult<impl IntoResponse> {
    let row = create(&state, &ctx, input).await?;
    state.refresh_caches().await;
    Ok((
        StatusCode::CREATED,
        Json(json!({"success": true, "data": view(&state, &row)?})),
    ))
}

/// Get a virtual key by slug or id.
#[utoipa::path(get, path = "/api/v1/virtual_keys/{slug}", tag = "virtual keys", operation_id = "getVirtualKey",
    params(("slug" = String, Path, description = "The slug or the `vk_` id")),
    responses(
        (status = 200, description = "The virtual key", body = Data<VirtualKeyView>),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
        (status = 404, description = "No such virtual key in this workspace", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn get_handler(State(state): State<AppState>, ctx: Ctx, Path(slug): Path<String>) -> ApiResult<Json<Value>> {
    let row = find(&state, &ctx, &slug).await?;
    let mut v = view(&state, &row)?;
    v["status"] = Value::from(live_status(&state, &row).await);
    Ok(Json(json!({"data": v})))
}

/// Change a virtual key.
#[utoipa::path(patch, path = "/api/v1/virtual_keys/{slug}", tag = "virtual keys", operation_id = "updateVirtualKey",
    params(("slug" = String, Path, description = "The slug or the `vk_` id")),
    request_body = UpdateVirtualKey,
    responses(
        (status = 200, description = "Changed", body = Saved<VirtualKeyView>),
        (status = 400, description = "Invalid body or field, or an unknown provider key", body = ErrorBody),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
        (status = 404, description = "No such virtual key in this workspace", body = ErrorBody),
        (status = 409, description = "The new slug is taken", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn update_handler(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    JsonBody(patch): JsonBody<UpdateVirtualKey>,
) -> ApiResult<Json<Value>> {
    let current = find(&state, &ctx, &slug).await?;
    let row = update(&state, &ctx, current, patch).await?;
    state.refresh_caches().await;
    Ok(Json(json!({"success": true, "data": view(&state, &row)?})))
}

/// Delete a virtual key.
#[utoipa::path(delete, path = "/api/v1/virtual_keys/{slug}", tag = "virtual keys", operation_id = "deleteVirtualKey",
    params(("slug" = String, Path, description = "The slug or the `vk_` id")),
    responses(
        (status = 200, description = "Deleted", body = Success),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
        (status = 404, description = "No such virtual key in this workspace", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn delete_handler(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> ApiResult<Json<Value>> {
    let current = find(&state, &ctx, &slug).await?;
    delete(&state, &ctx, &current).await?;
    state.refresh_caches().await;
    Ok(Json(json!({"success": true})))
}

/// The live state of a virtual key's limits: every window and budget with its limit, what is
/// used, what remains and when it resets.
#[utoipa::path(get, path = "/api/v1/virtual_keys/{slug}/limits", tag = "virtual keys", operation_id = "getVirtualKeyLimits",
    params(("slug" = String, Path, description = "The slug or the `vk_` id")),
    responses(
        (status = 200, description = "The key's windows and budgets, read live", body = Data<VirtualKeyLimits>),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
        (status = 404, description = "No such virtual key in this workspace", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn limits_handler(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = find(&state, &ctx, &slug).await?;
    let Some(vk) = state.runtime.virtual_key(&row.id) else {
        return Err(ApiError::not_found(format!("no virtual key {slug}")));
    };
    let now = state.limits.now();
    let checks = crate::limits::vk_checks(&state.limits, &vk, now);
    let states = state.limits.peek(&checks).await;
    let status = live_status(&state, &row).await;
    Ok(Json(json!({"data": {
        "id": row.id,
        "slug": row.slug,
        "status": status,
        "limits": crate::limits::states_view(&checks, &states, now),
    }})))
}

/// The status with budgets read live: `exhausted` when a budget of the key has nothing left.
pub async fn live_status(state: &AppState, row: &VirtualKeyRow) -> &'static str {
    let base = status_of(row, now_ms());
    if base != "active" {
        return base;
    }
    let Some(vk) = state.runtime.virtual_key(&row.id) else {
        return base;
    };
    let now = state.limits.now();
    let checks: Vec<_> = crate::limits::vk_checks(&state.limits, &vk, now)
        .into_iter()
        .filter(|l| l.is_budget && l.scope == "virtual_key")
        .collect();
    if checks.is_empty() {
        return base;
    }
    let states = state.limits.peek(&checks).await;
    if states.iter().any(|s| s.remaining <= 0) {
        "exhausted"
    } else {
        base
    }
}
