//! Platform API keys in Venice's wire format, mounted at
//! `/api/v1/api_keys`: list, create (the secret shown once), retrieve, update with the id in
//! the body, delete with `?id=`, rotation with a grace period, the calling key's rate limits
//! and refusal log, and wallet sign-in (`generate_web3_key`).
//!
//! What must stay true: the secret exists only in the creation answer; a key never creates or
//! edits a key with more rights or higher limits than its own; field casing follows Venice
//! exactly (`consumptionLimit` in requests, `consumptionLimits` in ApiKey objects).

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use ipnet::IpNet;
use keygate_store::{Page, PlatformKeyRow, StoreError, UsageFilter, Web3TokenState};
use keygate_types::timefmt::{format_ms, now_ms, parse_ms};
use keygate_types::{NanoUsd, PlatformKeyType, PlatformSecret};
use keygate_vault::wallet::{recover_personal_sign, Address};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest;
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryParams;
use crate::extract::{ClientIp, Ctx, JsonBody};
use crate::openapi::doc::{Data, ErrorBody, LimitState, List, Saved, Success};

use crate::platform_keys::{create_platform_key, KeySettings, LimitPeriod, ModelPrivacy, NewPlatformKey};
use crate::state::AppState;
use crate::virtual_keys::Period;

/// Money currencies of a consumption limit, with their USD rate (nano-USD per unit).
pub fn currency_rate(state: &AppState, currency: &str) -> Option<i64> {
    match currency {
        "usd" => Some(1_000_000_000),
        "diem" => Some(state.settings.diem_usd_nano),
        "vcu" => Some(state.settings.vcu_usd_nano),
        _ => None,
    }
}

/// A consumption limit as sent: money as decimal numbers, tokens and requests as integers.
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumptionInput {
    #[schema(minimum = 0)]
    pub usd: Option<f64>,
    #[schema(minimum = 0)]
    pub diem: Option<f64>,
    #[schema(minimum = 0)]
    pub vcu: Option<f64>,
    pub tokens: Option<u64>,
    pub requests: Option<u64>,
}

impl ConsumptionInput {
    fn to_map(&self) -> ApiResult<BTreeMap<String, i64>> {
        let mut out = BTreeMap::new();
        for (name, v) in [("usd", self.usd), ("diem", self.diem), ("vcu", self.vcu)] {
            if let Some(v) = v {
                let n = NanoUsd::from_usd_f64(v).ok_or_else(|| {
                    ApiError::bad_request(format!("consumptionLimit.{name} must be a non-negative amount"))
                })?;
                out.insert(name.to_string(), n.0);
            }
        }
        for (name, v) in [("tokens", self.tokens), ("requests", self.requests)] {
            if let Some(v) = v {
                let n = i64::try_from(v)
                    .map_err(|_| ApiError::bad_request(format!("consumptionLimit.{name} is too large")))?;
                out.insert(name.to_string(), n);
            }
        }
        Ok(out)
    }
}

/// Rate limits of a platform key: requests and tokens per minute, hour and day.
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRateLimits {
    #[schema(minimum = 1)]
    pub rpm: Option<u64>,
    #[schema(minimum = 1)]
    pub rph: Option<u64>,
    #[schema(minimum = 1)]
    pub rpd: Option<u64>,
    #[schema(minimum = 1)]
    pub tpm: Option<u64>,
    #[schema(minimum = 1)]
    pub tph: Option<u64>,
    #[schema(minimum = 1)]
    pub tpd: Option<u64>,
}

impl KeyRateLimits {
    fn to_map(&self) -> ApiResult<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        for (k, v) in [
            ("rpm", self.rpm),
            ("rph", self.rph),
            ("rpd", self.rpd),
            ("tpm", self.tpm),
            ("tph", self.tph),
            ("tpd", self.tpd),
        ] {
            if let Some(v) = v {
                if v == 0 {
                    return Err(ApiError::bad_request(format!("rateLimits.{k} must be at least 1")));
                }
                out.insert(k.to_string(), v);
            }
        }
        Ok(out)
    }
}

/// `POST /api/v1/api_keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateApiKey {
    #[schema(value_type = ApiKeyType)]
    pub api_key_type: String,
    /// At most 500 printable characters.
    pub description: String,
    pub consumption_limit: Option<ConsumptionInput>,
    #[schema(value_type = Option<LimitPeriod>)]
    pub limit_period: Option<String>,
    /// ISO-8601 date or date-time; `""` means none.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(value_type = Option<ModelPrivacy>)]
    pub model_privacy: Option<String>,
    /// IPv4/IPv6 addresses or CIDR blocks.
    #[schema(max_items = 100)]
    pub ip_allowlist: Option<Vec<String>>,
    pub rate_limits: Option<KeyRateLimits>,
    /// A virtual key (slug or id) of the workspace, used when a request names none.
    pub default_virtual_key: Option<String>,
    /// Virtual keys (slugs or ids) the key may use; empty: any.
    pub virtual_keys: Option<Vec<String>>,
    /// An organisation admin may create the key in another workspace.
    pub workspace: Option<String>,
}

/// `PATCH /api/v1/api_keys`: the id in the body, only the fields given change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateApiKey {
    pub id: String,
    pub description: Option<String>,
    /// `null` or `""` removes the expiry.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<String>>,
    pub consumption_limit: Option<ConsumptionInput>,
    #[schema(value_type = Option<LimitPeriod>)]
    pub limit_period: Option<String>,
    #[schema(value_type = Option<ModelPrivacy>)]
    pub model_privacy: Option<String>,
    /// `[]` removes the restriction.
    #[schema(max_items = 100)]
    pub ip_allowlist: Option<Vec<String>>,
    pub rate_limits: Option<KeyRateLimits>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub default_virtual_key: Option<Option<String>>,
    pub virtual_keys: Option<Vec<String>>,
    pub workspace: Option<String>,
}

fn nullable<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn check_period(p: &str) -> ApiResult<LimitPeriod> {
    LimitPeriod::parse(p)
        .ok_or_else(|| ApiError::bad_request("limitPeriod must be EPOCH, DAY, WEEK, MONTH or LIFETIME"))
}

fn check_privacy(p: &str) -> ApiResult<ModelPrivacy> {
    ModelPrivacy::parse(p)
        .ok_or_else(|| ApiError::bad_request("modelPrivacy must be ALL, PRIVATE_ONLY or PRIVATE_TEXT"))
}

/// Canonical CIDR form: `11.22.33.44` -> `11.22.33.44/32`, host bits cleared.
pub fn canonical_allowlist(entries: &[String]) -> ApiResult<Vec<String>> {
    if entries.len() > 100 {
        return Err(ApiError::bad_request("ipAllowlist holds at most 100 entries"));
    }
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let e = e.trim();
        if e.len() > 64 {
            return Err(ApiError::bad_request("an ipAllowlist entry is at most 64 characters"));
        }
        let net = match e.parse::<IpNet>() {
            Ok(n) => n.trunc(),
            Err(_) => match e.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    return Err(ApiError::bad_request(format!(
                        "ipAllowlist: {e} is not an IP address or CIDR"
                    )))
                }
            },
        };
        let s = net.to_string();
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// Privilege rule: `new` must not give more rights or higher limits than `creator` has.
pub fn check_not_above(
    creator: &Principal,
    key_type: PlatformKeyType,
    new: &KeySettings,
    expires_at: Option<i64>,
) -> ApiResult<()> {
    let refuse = |what: &str| {
        Err(ApiError::forbidden(format!(
            "a key cannot create or edit a key with more rights or higher limits than its own ({what})"
        )))
    };
    if creator.key_type == PlatformKeyType::Inference && key_type == PlatformKeyType::Admin {
        return refuse("type");
    }
    let mine = &creator.settings;
    for (currency, limit) in &mine.consumption_limit {
        match new.consumption_limit.get(currency) {
            Some(v) if v <= limit => {}
            _ => return refuse(&format!("consumptionLimit.{currency}")),
        }
    }
    if !mine.consumption_limit.is_empty() {
        let same_period = new.period() == mine.period();
        if !same_period {
            return refuse("limitPeriod");
        }
    }
    for (window, limit) in &mine.rate_limits {
        match new.rate_limits.get(window) {
            Some(v) if v <= limit => {}
            _ => return refuse(&format!("rateLimits.{window}")),
        }
    }
    if let Some(mine_exp) = creator.expires_at {
        match expires_at {
            Some(e) if e <= mine_exp => {}
            _ => return refuse("expiresAt"),
        }
    }
    if new.privacy().rank() < mine.privacy().rank() {
        return refuse("modelPrivacy");
    }
    if !mine.ip_allowlist.is_empty() {
        let nets: Vec<IpNet> = mine.ip_allowlist.iter().filter_map(|s| s.parse().ok()).collect();
        let inside = !new.ip_allowlist.is_empty()
            && new
                .ip_allowlist
                .iter()
                .filter_map(|s| s.parse::<IpNet>().ok())
                .all(|n| nets.iter().any(|m| m.contains(&n)));
        if !inside {
            return refuse("ipAllowlist");
        }
    }
    if !mine.virtual_keys.is_empty() {
        let inside = !new.virtual_keys.is_empty() && new.virtual_keys.iter().all(|v| mine.virtual_keys.contains(v));
        if !inside {
            return refuse("virtualKeys");
        }
    }
    Ok(())
}

/// The calling key as an editor of `target`: a workspace key never edits an organisation admin.
fn check_may_edit(editor: &Principal, target: &PlatformKeyRow) -> ApiResult<()> {
    if target.org_admin && !editor.org_admin {
        return Err(ApiError::forbidden(
            "a key cannot create or edit a key with more rights or higher limits than its own (organisation admin)",
        ));
    }
    Ok(())
}

async fn resolve_vks(state: &AppState, workspace: &str, names: &[String]) -> ApiResult<Vec<String>> {
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let row = state.store.get_virtual_key(workspace, n).await.map_err(|e| match e {
            StoreError::NotFound => ApiError::bad_request(format!("no virtual key {n} in this workspace")),
            other => other.into(),
        })?;
        if !out.contains(&row.slug) {
            out.push(row.slug);
        }
    }
    Ok(out)
}

/// Creates a key for `creator` in `workspace` after every check.
#[allow(clippy::too_many_arguments)]
async fn create_checked(
    state: &AppState,
    creator: Option<&Principal>,
    workspace: &str,
    key_type: PlatformKeyType,
    description: &str,
    settings: KeySettings,
    expires_at: Option<i64>,
    audit: keygate_store::AuditEvent,
) -> ApiResult<(PlatformKeyRow, PlatformSecret)> {
    if let Some(c) = creator {
        check_not_above(c, key_type, &settings, expires_at)?;
    }
    // A limit like any other: on Redis, shared by every replica.
    let per_minute = state.settings.api_key_creations_per_minute;
    if let Some(wait) = state
        .limits
        .throttle("api_key_create", workspace, per_minute, 60_000, state.limits.now())
        .await?
    {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            format!("at most {per_minute} API keys may be created per minute in a workspace"),
        );
        e.retry_after = Some(wait);
        return Err(e);
    }
    let live = state.store.count_live_platform_keys(workspace).await?;
    if live >= i64::from(state.settings.max_api_keys_per_workspace) {
        return Err(ApiError::forbidden(format!(
            "the workspace has reached its limit of {} active API keys",
            state.settings.max_api_keys_per_workspace
        )));
    }
    let created = create_platform_key(
        state.store.as_ref(),
        &state.vault,
        NewPlatformKey {
            workspace,
            key_type,
            org_admin: false,
            description,
            settings,
            expires_at,
            created_by: creator.map(|c| c.id.clone()),
        },
        Some(audit),
    )
    .await?;
    state.refresh_caches().await;
    Ok(created)
}

fn parse_type(s: &str) -> ApiResult<PlatformKeyType> {
    PlatformKeyType::parse(s).ok_or_else(|| ApiError::bad_request("apiKeyType must be ADMIN or INFERENCE"))
}

fn check_description(d: &str) -> ApiResult<()> {
    if d.len() > 500 || d.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "description must be at most 500 printable characters",
        ));
    }
    Ok(())
}

fn parse_expiry(s: &str) -> ApiResult<i64> {
    parse_ms(s).ok_or_else(|| ApiError::bad_request("expiresAt must be an ISO-8601 date or date-time"))
}

/// A platform key's stored settings, read strictly: a 503 naming the key when they cannot be
/// read (the key is refused by authentication too; it can be revoked, which reads nothing).
fn settings_of(row: &PlatformKeyRow) -> ApiResult<KeySettings> {
    KeySettings::from_stored(&row.settings).map_err(|e| crate::virtual_keys::unreadable_error("API key", &row.id, &e))
}

fn money_view(state: &AppState, map: &BTreeMap<String, i64>) -> Value {
    let mut out = serde_json::Map::new();
    for (k, v) in map {
        if currency_rate(state, k).is_some() {
            out.insert(k.clone(), json!(NanoUsd(*v).to_usd_f64()));
        } else {
            out.insert(k.clone(), json!(v));
        }
    }
    Value::Object(out)
}

/// Spend converted into each money currency, as decimal strings (Venice's `trailingSevenDays`).
fn spend_strings(state: &AppState, cost_nano: i64) -> Value {
    let mut out = serde_json::Map::new();
    for c in ["usd", "diem", "vcu"] {
        if let Some(rate) = currency_rate(state, c) {
            let units = (i128::from(cost_nano) * 1_000_000_000 / i128::from(rate.max(1))) as i64;
            out.insert(c.into(), Value::String(NanoUsd(units).to_decimal_string()));
        }
    }
    Value::Object(out)
}

fn spend_numbers(state: &AppState, cost_nano: i64) -> Value {
    let mut out = serde_json::Map::new();
    for c in ["usd", "diem", "vcu"] {
        if let Some(rate) = currency_rate(state, c) {
            let units = (i128::from(cost_nano) * 1_000_000_000 / i128::from(rate.max(1))) as i64;
            out.insert(c.into(), json!(NanoUsd(units).to_usd_f64()));
        }
    }
    Value::Object(out)
}

/// An ApiKey object. Spend comes from the usage records.
async fn view(state: &AppState, row: &PlatformKeyRow) -> ApiResult<Value> {
    let s = settings_of(row)?;
    let now = now_ms();
    let week = state
        .store
        .usage_totals(
            &row.workspace,
            &UsageFilter {
                platform_key_id: Some(row.id.clone()),
                from: Some(now - 7 * 86_400_000),
                ..Default::default()
            },
        )
        .await?;
    let (start, _) = s.period().period().bounds(now);
    let current = state
        .store
        .usage_totals(
            &row.workspace,
            &UsageFilter {
                platform_key_id: Some(row.id.clone()),
                from: Some(start),
                ..Default::default()
            },
        )
        .await?;
    let mut current_view = spend_numbers(state, current.cost_nano);
    current_view["tokens"] = json!(current.prompt_tokens + current.completion_tokens);
    current_view["requests"] = json!(current.requests);
    Ok(json!({
        "id": row.id,
        "apiKeyType": row.key_type,
        "description": row.description,
        "last6Chars": row.last6,
        "createdAt": format_ms(row.created_at),
        "expiresAt": row.expires_at.map(format_ms),
        "lastUsedAt": row.last_used_at.map(format_ms),
        "consumptionLimits": money_view(state, &s.consumption_limit),
        "modelPrivacy": s.privacy(),
        "limitPeriod": s.period(),
        "ipAllowlist": s.ip_allowlist,
        "usage": {"trailingSevenDays": spend_strings(state, week.cost_nano)},
        "currentPeriodUsage": current_view,
        "rateLimits": s.rate_limits,
        "defaultVirtualKey": s.default_virtual_key,
        "virtualKeys": s.virtual_keys,
        "workspace": row.workspace,
        "organisationAdmin": row.org_admin,
        "rotatedKeyValidUntil": row.prev_valid_until.filter(|u| *u > now).map(format_ms),
    }))
}

fn created_view(state: &AppState, row: &PlatformKeyRow, secret: &PlatformSecret) -> ApiResult<Value> {
    let s = settings_of(row)?;
    Ok(json!({
        "id": row.id,
        "apiKey": secret.expose(),
        "apiKeyType": row.key_type,
        "description": row.description,
        "expiresAt": row.expires_at.map(format_ms),
        "consumptionLimit": money_view(state, &s.consumption_limit),
        "limitPeriod": s.period(),
        "ipAllowlist": s.ip_allowlist,
        "modelPrivacy": s.privacy(),
        "rateLimits": s.rate_limits,
        "defaultVirtualKey": s.default_virtual_key,
        "virtualKeys": s.virtual_keys,
        "last6Chars": row.last6,
        "workspace": row.workspace,
    }))
}

/// `ADMIN` or `INFERENCE`.
#[derive(ToSchema)]
#[schema(rename_all = "UPPERCASE")]
pub enum ApiKeyType {
    Admin,
    Inference,
}

/// An ApiKey object as [`view`] builds it (for the document).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ApiKeyView {
    pub id: String,
    pub api_key_type: ApiKeyType,
    pub description: String,
    #[schema(rename = "last6Chars")]
    pub last6_chars: String,
    pub created_at: String,
    #[schema(required = true)]
    pub expires_at: Option<String>,
    #[schema(required = true)]
    pub last_used_at: Option<String>,
    /// Money currencies (`usd`, `diem`, `vcu`) as decimal amounts, `tokens` and `requests` as counts.
    pub consumption_limits: BTreeMap<String, f64>,
    pub model_privacy: ModelPrivacy,
    pub limit_period: LimitPeriod,
    /// Canonical CIDR blocks.
    pub ip_allowlist: Vec<String>,
    pub usage: ApiKeyUsage,
    pub current_period_usage: PeriodUsage,
    /// By window: `rpm`, `rph`, `rpd`, `tpm`, `tph`, `tpd`.
    pub rate_limits: BTreeMap<String, u64>,
    #[schema(required = true)]
    pub default_virtual_key: Option<String>,
    pub virtual_keys: Vec<String>,
    pub workspace: String,
    pub organisation_admin: bool,
    /// Until when the secret replaced by the last rotation still works.
    #[schema(required = true)]
    pub rotated_key_valid_until: Option<String>,
}

/// Venice's `usage`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ApiKeyUsage {
    pub trailing_seven_days: SpendStrings,
}

/// Spend in each money currency as decimal strings.
#[derive(ToSchema)]
pub struct SpendStrings {
    pub usd: String,
    pub diem: String,
    pub vcu: String,
}

/// Spend in the current limit period.
#[derive(ToSchema)]
pub struct PeriodUsage {
    pub usd: f64,
    pub diem: f64,
    pub vcu: f64,
    pub tokens: i64,
    pub requests: i64,
}

/// A CreatedApiKey object: the secret, shown in this answer only (for the document).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct CreatedApiKeyView {
    pub id: String,
    /// The whole key; never shown again.
    pub api_key: String,
    pub api_key_type: ApiKeyType,
    pub description: String,
    #[schema(required = true)]
    pub expires_at: Option<String>,
    /// Singular, as in Venice's create answer.
    pub consumption_limit: BTreeMap<String, f64>,
    pub limit_period: LimitPeriod,
    pub ip_allowlist: Vec<String>,
    pub model_privacy: ModelPrivacy,
    pub rate_limits: BTreeMap<String, u64>,
    #[schema(required = true)]
    pub default_virtual_key: Option<String>,
    pub virtual_keys: Vec<String>,
    #[schema(rename = "last6Chars")]
    pub last6_chars: String,
    pub workspace: String,
}

async fn workspace_for(state: &AppState, ctx: &Ctx, field: Option<&str>) -> ApiResult<String> {
    match field {
        None => Ok(ctx.workspace.clone()),
        Some(w) if w == ctx.workspace => Ok(w.to_string()),
        Some(w) if ctx.principal.org_admin => {
            state
                .store
                .get_workspace(w)
                .await
                .map_err(|_| ApiError::not_found(format!("workspace {w} not found")))?;
            Ok(w.to_string())
        }
        Some(w) => Err(ApiError::not_found(format!("workspace {w} not found"))),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1-based; default 1.
    #[param(minimum = 1, nullable = false)]
    pub page: Option<u32>,
    /// Items per page; default 500.
    #[param(minimum = 1, maximum = 500, nullable = false)]
    pub limit: Option<u32>,
}

/// `GET /api/v1/api_keys?page&limit`: never more than `limit` items.
#[utoipa::path(get, path = "/api/v1/api_keys", tag = "api keys", operation_id = "listApiKeys",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of the workspace's platform keys (no total)", body = List<ApiKeyView>),
        (status = 400, description = "Invalid `page`, `limit` or query string", body = ErrorBody),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Value>> {
    let page = q.page.unwrap_or(1);
    let limit = q.limit.unwrap_or(500);
    if page == 0 {
        return Err(ApiError::bad_request("page starts at 1"));
    }
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 500"));
    }
    state.meter.flush().await;
    let (rows, _) = state
        .store
        .list_platform_keys(&ctx.workspace, Page { page, limit })
        .await?;
    let mut data = Vec::with_capacity(rows.len());
    for r in &rows {
        data.push(view(&state, r).await?);
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `POST /api/v1/api_keys`: the secret is in this answer only.
#[utoipa::path(post, path = "/api/v1/api_keys", tag = "api keys", operation_id = "createApiKey",
    request_body = CreateApiKey,
    responses(
        (status = 201, description = "Created; `apiKey` is shown this once", body = Saved<CreatedApiKeyView>, links(
            ("RetrieveApiKey" = (operation_id = "retrieveApiKey", parameters(("id" = "$response.body#/data/id")))),
            ("RotateApiKey" = (operation_id = "rotateApiKey", parameters(("id" = "$response.body#/data/id")))),
            ("DeleteApiKey" = (operation_id = "deleteApiKey", parameters(("id" = "$response.body#/data/id")))),
        )),
        (status = 400, description = "Invalid body or field, or an unknown virtual key", body = ErrorBody),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, a refused client address, a key above the caller's own, or the workspace's key limit", body = ErrorBody),
        (status = 404, description = "The `workspace` named is unknown or not the caller's", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many keys created in the workspace this minute (`Retry-After`)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    JsonBody(body): JsonBody<CreateApiKey>,
) -> ApiResult<impl IntoResponse> {
    let workspace = workspace_for(&state, &ctx, body.workspace.as_deref()).await?;
    let key_type = parse_type(&body.api_key_type)?;
    check_description(&body.description)?;
    let settings = KeySettings {
        consumption_limit: body
            .consumption_limit
            .as_ref()
            .map(ConsumptionInput::to_map)
            .transpose()?
            .unwrap_or_default(),
        limit_period: body.limit_period.as_deref().map(check_period).transpose()?,
        model_privacy: body.model_privacy.as_deref().map(check_privacy).transpose()?,
        ip_allowlist: canonical_allowlist(body.ip_allowlist.as_deref().unwrap_or(&[]))?,
        rate_limits: body
            .rate_limits
            .as_ref()
            .map(KeyRateLimits::to_map)
            .transpose()?
            .unwrap_or_default(),
        default_virtual_key: match &body.default_virtual_key {
            Some(v) => resolve_vks(&state, &workspace, std::slice::from_ref(v)).await?.pop(),
            None => None,
        },
        virtual_keys: resolve_vks(&state, &workspace, body.virtual_keys.as_deref().unwrap_or(&[])).await?,
    };
    // venice-py sends "" for "no expiry".
    let expires_at = body
        .expires_at
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(parse_expiry)
        .transpose()?;
    let audit = Ctx {
        workspace: workspace.clone(),
        principal: ctx.principal.clone(),
        request_id: ctx.request_id.clone(),
        quiet: false,
    }
    .audit(
        "api_key.create",
        "api_key",
        None,
        json!({"apiKeyType": key_type.as_str(), "description": body.description}),
    );
    let (row, secret) = create_checked(
        &state,
        Some(&ctx.principal),
        &workspace,
        key_type,
        &body.description,
        settings,
        expires_at,
        audit,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"success": true, "data": created_view(&state, &row, &secret)?})),
    ))
}

async fn find(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<PlatformKeyRow> {
    state
        .store
        .get_platform_key(&ctx.workspace, id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found(format!("no API key {id}")),
            other => other.into(),
        })
}

/// `GET /api/v1/api_keys/{id}`.
#[utoipa::path(get, path = "/api/v1/api_keys/{id}", tag = "api keys", operation_id = "retrieveApiKey",
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 200, description = "The key", body = Data<ApiKeyView>),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
        (status = 404, description = "No such live key in this workspace", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn retrieve(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    state.meter.flush().await;
    let row = find(&state, &ctx, &id).await?;
    Ok(Json(json!({"data": view(&state, &row).await?})))
}

/// `PATCH /api/v1/api_keys` with the id in the body.
#[utoipa::path(patch, path = "/api/v1/api_keys", tag = "api keys", operation_id = "updateApiKey",
    request_body = UpdateApiKey,
    responses(
        (status = 200, description = "Changed", body = Saved<ApiKeyView>),
        (status = 400, description = "Invalid body or field, or an unknown virtual key", body = ErrorBody),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, a refused client address, or a key above the caller's own", body = ErrorBody),
        (status = 404, description = "No such live key, or an unknown `workspace`", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    JsonBody(body): JsonBody<UpdateApiKey>,
) -> ApiResult<Json<Value>> {
    let workspace = workspace_for(&state, &ctx, body.workspace.as_deref()).await?;
    let ctx = Ctx { workspace, ..ctx };
    let current = find(&state, &ctx, &body.id).await?;
    check_may_edit(&ctx.principal, &current)?;
    let mut row = current.clone();
    let mut s = settings_of(&current)?;
    let mut changed: Vec<&str> = Vec::new();
    if let Some(d) = &body.description {
        check_description(d)?;
        row.description = d.clone();
        changed.push("description");
    }
    if let Some(e) = &body.expires_at {
        // `null` or "" (what venice-py sends for "no expiry") removes the expiry.
        row.expires_at = e
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(parse_expiry)
            .transpose()?;
        changed.push("expiresAt");
    }
    if let Some(c) = &body.consumption_limit {
        s.consumption_limit = c.to_map()?;
        changed.push("consumptionLimit");
    }
    if let Some(p) = &body.limit_period {
        s.limit_period = Some(check_period(p)?);
        changed.push("limitPeriod");
    }
    if let Some(p) = &body.model_privacy {
        s.model_privacy = Some(check_privacy(p)?);
        changed.push("modelPrivacy");
    }
    if let Some(list) = &body.ip_allowlist {
        s.ip_allowlist = canonical_allowlist(list)?;
        changed.push("ipAllowlist");
    }
    if let Some(r) = &body.rate_limits {
        s.rate_limits = r.to_map()?;
        changed.push("rateLimits");
    }
    if let Some(d) = &body.default_virtual_key {
        s.default_virtual_key = match d {
            Some(v) => resolve_vks(&state, &ctx.workspace, std::slice::from_ref(v))
                .await?
                .pop(),
            None => None,
        };
        changed.push("defaultVirtualKey");
    }
    if let Some(v) = &body.virtual_keys {
        s.virtual_keys = resolve_vks(&state, &ctx.workspace, v).await?;
        changed.push("virtualKeys");
    }
    let key_type = parse_type(&row.key_type)?;
    check_not_above(&ctx.principal, key_type, &s, row.expires_at)?;
    row.settings = serde_json::to_string(&s).unwrap_or_else(|_| "{}".into());
    row.updated_at = now_ms();
    let audit = ctx.audit("api_key.update", "api_key", Some(&row.id), json!({"changed": changed}));
    let row = state.store.update_platform_key(&row, Some(&audit)).await?;
    state.refresh_caches().await;
    Ok(Json(json!({"data": view(&state, &row).await?, "success": true})))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// The key's id (400 when absent).
    #[param(required = true, nullable = false)]
    pub id: Option<String>,
}

/// `DELETE /api/v1/api_keys?id=`: idempotent for the workspace's own keys.
#[utoipa::path(delete, path = "/api/v1/api_keys", tag = "api keys", operation_id = "deleteApiKey",
    params(DeleteQuery),
    responses(
        (status = 200, description = "Deleted, or already deleted", body = Success),
        (status = 400, description = "No `id`, or an invalid query string", body = ErrorBody),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, a refused client address, or an organisation admin's key", body = ErrorBody),
        (status = 404, description = "No such key in this workspace", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    ctx: Ctx,
    QueryParams(q): QueryParams<DeleteQuery>,
) -> ApiResult<Json<Value>> {
    let id = q.id.ok_or_else(|| ApiError::bad_request("give the key as ?id="))?;
    let row = state
        .store
        .get_platform_key_any(&ctx.workspace, &id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found(format!("no API key {id}")),
            other => other.into(),
        })?;
    if row.deleted_at.is_some() {
        return Ok(Json(json!({"success": true})));
    }
    check_may_edit(&ctx.principal, &row)?;
    let audit = ctx.audit(
        "api_key.delete",
        "api_key",
        Some(&row.id),
        json!({"description": row.description}),
    );
    match state
        .store
        .delete_platform_key(&ctx.workspace, &id, now_ms(), Some(&audit))
        .await
    {
        Ok(_) | Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    state.refresh_caches().await;
    Ok(Json(json!({"success": true})))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateBody {
    /// How long the old secret keeps working (default 0, at most 2592000).
    #[schema(maximum = 2_592_000)]
    pub grace_period_seconds: Option<u64>,
}

/// `POST /api/v1/api_keys/{id}/rotate`: same id, new secret; the old one stays valid for the grace period.
#[utoipa::path(post, path = "/api/v1/api_keys/{id}/rotate", tag = "api keys", operation_id = "rotateApiKey",
    params(("id" = String, Path, description = "The key's id")),
    request_body(content = RotateBody, description = "Optional; an empty body means no grace period"),
    responses(
        (status = 200, description = "Rotated; the new `apiKey` is shown this once", body = Saved<CreatedApiKeyView>),
        (status = 400, description = "Invalid body or field", body = ErrorBody),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, a refused client address, or an organisation admin's key", body = ErrorBody),
        (status = 404, description = "No such live key in this workspace", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn rotate(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let body: RotateBody = if body.iter().all(u8::is_ascii_whitespace) {
        RotateBody::default()
    } else {
        crate::extract::parse_json(&body)?
    };
    let grace = body.grace_period_seconds.unwrap_or(0);
    if grace > 30 * 86_400 {
        return Err(ApiError::bad_request("gracePeriodSeconds is at most 2592000 (30 days)"));
    }
    let current = find(&state, &ctx, &id).await?;
    check_may_edit(&ctx.principal, &current)?;
    let key_type = parse_type(&current.key_type)?;
    // A key whose settings cannot be read is not rotated (its answer could not show them).
    settings_of(&current)?;
    let secret = PlatformSecret::generate(key_type, &mut rand::rngs::OsRng);
    let now = now_ms();
    let mut row = current.clone();
    if grace > 0 {
        row.prev_key_hash = Some(current.key_hash.clone());
        row.prev_valid_until = Some(now + (grace as i64) * 1000);
    } else {
        row.prev_key_hash = None;
        row.prev_valid_until = None;
    }
    row.key_hash = state.vault.hash(secret.expose()).0.to_vec();
    row.last6 = secret.last6().to_string();
    row.updated_at = now;
    let audit = ctx.audit(
        "api_key.rotate",
        "api_key",
        Some(&row.id),
        json!({"gracePeriodSeconds": grace}),
    );
    let row = state.store.update_platform_key(&row, Some(&audit)).await?;
    state.refresh_caches().await;
    Ok(Json(
        json!({"success": true, "data": created_view(&state, &row, &secret)?}),
    ))
}

/// The answer of `GET /api/v1/api_keys/rate_limits` (for the document).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct RateLimitsView {
    /// False when the key has expired or a budget has nothing left.
    pub access_permitted: bool,
    pub api_tier: ApiTier,
    /// `USD`, `DIEM`, `VCU` (what remains of the money cap, converted), `TOKENS`, `REQUESTS`.
    pub balances: BTreeMap<String, f64>,
    /// Whether the money balances are limited by a cap.
    pub balances_limited: bool,
    #[schema(required = true)]
    pub key_expiration: Option<String>,
    pub next_epoch_begins: String,
    pub limit_period: LimitPeriod,
    pub period_start: String,
    pub rate_limits: Vec<ModelRateLimits>,
    pub windows: Vec<RateWindow>,
    pub limits: Vec<LimitState>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ApiTier {
    pub id: String,
    pub is_charged: bool,
}

/// Venice's per-model rate limits; keygate's apply to every model (`apiModelId` null).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ModelRateLimits {
    #[schema(required = true)]
    pub api_model_id: Option<String>,
    pub rate_limits: Vec<RateLimitAmount>,
}

#[derive(ToSchema)]
pub struct RateLimitAmount {
    /// `RPM`, `RPH`, `RPD`, `TPM`, `TPH`, `TPD`.
    #[schema(rename = "type")]
    pub kind: String,
    pub amount: i64,
}

/// One rate window of the key, read live.
#[derive(ToSchema)]
pub struct RateWindow {
    #[schema(rename = "type")]
    pub kind: String,
    pub limit: i64,
    pub used: i64,
    pub remaining: i64,
    pub reset: String,
}

/// `GET /api/v1/api_keys/rate_limits`: the calling key's windows, balances and expiry, read
/// live from the limit counters.
#[utoipa::path(get, path = "/api/v1/api_keys/rate_limits", tag = "api keys", operation_id = "getRateLimits",
    responses(
        (status = 200, description = "The calling key's limits", body = Data<RateLimitsView>),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "A refused client address", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn rate_limits(State(state): State<AppState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    let p = &ctx.principal;
    let s = &p.settings;
    let now = state.limits.now();
    let (start, next) = s.period().period().bounds(now);
    let checks = crate::limits::key_checks(&state.limits, p, now);
    let states = state.limits.peek(&checks).await;
    let mut permitted = p.expires_at.is_none_or(|e| now < e);
    let mut balances = serde_json::Map::new();
    let mut money_cap = None;
    let mut windows = Vec::new();
    let mut limits = Vec::new();
    for (l, st) in checks.iter().zip(&states) {
        if l.is_budget {
            permitted &= st.remaining > 0;
            match l.measure {
                crate::limits::Measure::Usd => money_cap = Some(*st),
                crate::limits::Measure::Tokens => {
                    balances.insert("TOKENS".into(), json!(st.remaining));
                }
                crate::limits::Measure::Requests => {
                    balances.insert("REQUESTS".into(), json!(st.remaining));
                }
            }
        } else {
            windows.push(json!({
                "type": l.limit_type,
                "limit": st.limit,
                "used": st.used,
                "remaining": st.remaining,
                "reset": format_ms(now + if st.reset_ms > 0 { st.reset_ms } else { 0 }),
            }));
            limits.push(json!({"type": l.limit_type, "amount": st.limit}));
        }
    }
    // Balances in every money currency: what remains of the key's money cap, converted.
    for c in ["usd", "diem", "vcu"] {
        let Some(rate) = currency_rate(&state, c) else {
            continue;
        };
        let remaining_nano = money_cap.map(|m| m.remaining).unwrap_or(0);
        let units = (i128::from(remaining_nano) * 1_000_000_000 / i128::from(rate.max(1))) as i64;
        balances.insert(c.to_uppercase(), json!(NanoUsd(units).to_usd_f64()));
    }
    let next_epoch = next.or_else(|| Period::Epoch.bounds(now).1).unwrap_or(now);
    Ok(Json(json!({"data": {
        "accessPermitted": permitted,
        "apiTier": {"id": "keygate", "isCharged": money_cap.is_some()},
        "balances": balances,
        "balancesLimited": money_cap.is_some(),
        "keyExpiration": p.expires_at.map(format_ms),
        "nextEpochBegins": format_ms(next_epoch),
        "limitPeriod": s.period(),
        "periodStart": format_ms(start),
        "rateLimits": [{"apiModelId": null, "rateLimits": limits}],
        "windows": windows,
        "limits": crate::limits::states_view(&checks, &states, now),
    }})))
}

/// One refusal in the rate-limit log (for the document).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct RateLimitLogEntry {
    /// `""` when no platform key was involved.
    pub api_key_id: String,
    /// `""` when no model was named.
    pub model_id: String,
    /// The scope: `api_key`, `virtual_key`, `model`, `provider_key`.
    pub rate_limit_tier: String,
    pub rate_limit_type: String,
    pub timestamp: String,
    pub limit: i64,
    #[schema(required = true)]
    pub virtual_key_id: Option<String>,
}

/// `GET /api/v1/api_keys/rate_limits/log`: the last 50 refusals (of the workspace for an ADMIN key).
#[utoipa::path(get, path = "/api/v1/api_keys/rate_limits/log", tag = "api keys", operation_id = "getRateLimitLog",
    responses(
        (status = 200, description = "The last 50 refusals, newest first", body = List<RateLimitLogEntry>),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "A refused client address", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn rate_limit_log(State(state): State<AppState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    state.meter.flush().await;
    let scope = if ctx.principal.is_admin() {
        None
    } else {
        Some(ctx.principal.id.as_str())
    };
    let events = state.store.list_rate_limit_events(&ctx.workspace, scope, 50).await?;
    let data: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "apiKeyId": e.platform_key_id.clone().unwrap_or_default(),
                "modelId": e.model.clone().unwrap_or_default(),
                "rateLimitTier": e.scope,
                "rateLimitType": e.limit_type,
                "timestamp": format_ms(e.at),
                "limit": e.limit_value,
                "virtualKeyId": e.virtual_key_id,
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// The per-client-address throttle of the public wallet routes: a limit like any other (on
/// Redis, shared by every replica).
async fn wallet_throttled(state: &AppState, ip: IpAddr) -> ApiResult<Option<ApiError>> {
    let per_minute = state.settings.wallet_requests_per_minute;
    let wait = state
        .limits
        .throttle("wallet", &ip.to_string(), per_minute, 60_000, state.limits.now())
        .await?;
    Ok(wait.map(|secs| {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "too many sign-in requests from this address; wait a minute",
        );
        e.retry_after = Some(secs);
        e
    }))
}

fn token_hash(token: &str) -> Vec<u8> {
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

/// The token a wallet signs.
#[derive(ToSchema)]
pub struct Web3Token {
    pub token: String,
}

/// `GET /api/v1/api_keys/generate_web3_key`: a one-time token to sign, valid 5 minutes. Public.
#[utoipa::path(get, path = "/api/v1/api_keys/generate_web3_key", tag = "api keys", operation_id = "getWeb3Token",
    responses(
        (status = 200, description = "A one-time token, valid 5 minutes", body = Saved<Web3Token>),
        (status = 429, description = "Too many sign-in requests from this address (`Retry-After`)", body = ErrorBody),
    ))]
pub async fn web3_token(State(state): State<AppState>, ClientIp(ip): ClientIp) -> ApiResult<Json<Value>> {
    if let Some(e) = wallet_throttled(&state, ip).await? {
        return Err(e);
    }
    use base64::Engine;
    use rand::RngCore;
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    state
        .store
        .insert_web3_token(&token_hash(&token), now_ms() + 5 * 60_000)
        .await?;
    Ok(Json(json!({"success": true, "data": {"token": token}})))
}

/// `POST /api/v1/api_keys/generate_web3_key` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Web3Create {
    #[schema(value_type = ApiKeyType)]
    pub api_key_type: String,
    /// The registered wallet: `0x` and 40 hex digits.
    pub address: String,
    /// EIP-191 signature of `token`.
    pub signature: String,
    /// From `GET /api/v1/api_keys/generate_web3_key`.
    pub token: String,
    pub description: Option<String>,
    pub consumption_limit: Option<ConsumptionInput>,
    #[schema(value_type = Option<LimitPeriod>)]
    pub limit_period: Option<String>,
    pub expires_at: Option<String>,
    #[schema(value_type = Option<ModelPrivacy>)]
    pub model_privacy: Option<String>,
    #[schema(max_items = 100)]
    pub ip_allowlist: Option<Vec<String>>,
}

fn web3_refused(message: &str) -> ApiError {
    ApiError::unauthorized(message.to_string())
}

/// Creates a key for a registered wallet that signed a fresh token (EIP-191). Public: the
/// signature is the credential.
#[utoipa::path(post, path = "/api/v1/api_keys/generate_web3_key", tag = "api keys", operation_id = "createWeb3Key",
    request_body = Web3Create,
    responses(
        (status = 201, description = "Created in the wallet's workspace; `apiKey` is shown this once", body = Saved<CreatedApiKeyView>),
        (status = 400, description = "Invalid body or field", body = ErrorBody),
        (status = 401, description = "A bad signature, an unregistered wallet, or an unknown, expired or used token", body = ErrorBody),
        (status = 403, description = "The wallet may not mint ADMIN keys, or the workspace's key limit", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many sign-in requests or key creations (`Retry-After`)", body = ErrorBody),
    ))]
pub async fn web3_create(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<Web3Create>,
) -> ApiResult<impl IntoResponse> {
    if let Some(e) = wallet_throttled(&state, ip).await? {
        return Err(e);
    }
    let key_type = parse_type(&body.api_key_type)?;
    let address = Address::parse(body.address.trim())
        .map_err(|_| ApiError::bad_request("address is not an Ethereum address (0x + 40 hex digits)"))?;
    if body.token.len() > 200 {
        return Err(web3_refused("the sign-in token is unknown"));
    }
    let signer = recover_personal_sign(body.token.as_bytes(), body.signature.trim())
        .map_err(|_| web3_refused("the signature is not a valid signature of the token"))?;
    if signer != address {
        return Err(web3_refused("the signature was not made by this address"));
    }
    let wallet = state
        .store
        .find_wallet(&address.to_lower_hex())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => web3_refused("this wallet is not registered with any workspace"),
            other => other.into(),
        })?;
    if key_type == PlatformKeyType::Admin && !wallet.allow_admin {
        return Err(ApiError::forbidden("this wallet may only create INFERENCE keys"));
    }
    match state
        .store
        .consume_web3_token(&token_hash(&body.token), now_ms())
        .await?
    {
        Web3TokenState::Valid => {}
        Web3TokenState::Unknown => return Err(web3_refused("the sign-in token is unknown")),
        Web3TokenState::Expired => return Err(web3_refused("the sign-in token has expired; get a new one")),
        Web3TokenState::AlreadyUsed => return Err(web3_refused("the sign-in token was already used; get a new one")),
    }
    let description = body.description.clone().unwrap_or_else(|| "Web3 API Key".into());
    check_description(&description)?;
    let settings = KeySettings {
        consumption_limit: body
            .consumption_limit
            .as_ref()
            .map(ConsumptionInput::to_map)
            .transpose()?
            .unwrap_or_default(),
        limit_period: body.limit_period.as_deref().map(check_period).transpose()?,
        model_privacy: body.model_privacy.as_deref().map(check_privacy).transpose()?,
        ip_allowlist: canonical_allowlist(body.ip_allowlist.as_deref().unwrap_or(&[]))?,
        ..Default::default()
    };
    let expires_at = body.expires_at.as_deref().map(parse_expiry).transpose()?;
    let audit = keygate_store::AuditEvent {
        id: keygate_store::new_id(),
        workspace: wallet.workspace.clone(),
        at: now_ms(),
        actor_key_id: None,
        actor: format!("wallet:{}", wallet.address),
        action: "api_key.create".into(),
        target_type: "api_key".into(),
        target_id: None,
        request_id: None,
        details: json!({"apiKeyType": key_type.as_str(), "via": "web3"}).to_string(),
    };
    let (row, secret) = create_checked(
        &state,
        None,
        &wallet.workspace,
        key_type,
        &description,
        settings,
        expires_at,
        audit,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"success": true, "data": created_view(&state, &row, &secret)?})),
    ))
}
