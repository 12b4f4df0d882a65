//! `GET /api/v1/usage`: requests, tokens and cost over a range, filtered by virtual key, API
//! key, provider key or model, optionally grouped by day, model or key. What was metered
//! before the call is flushed first, so the answer includes the latest requests.

use axum::extract::State;
use axum::Json;
use keygate_store::{StoreError, UsageFilter, UsageGroup, UsageRow, UsageTotals};
use keygate_types::timefmt::{format_ms, parse_ms};
use keygate_types::NanoUsd;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::extract::Ctx;
use crate::extract::QueryParams;
use crate::openapi::doc::{Data, ErrorBody, Paged};
use crate::provider_keys::{list_body, PageQuery};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Slug or `vk_…` id.
    #[param(nullable = false)]
    pub virtual_key: Option<String>,
    /// Platform API key id.
    #[param(nullable = false)]
    pub api_key: Option<String>,
    /// Provider key name or id.
    #[param(nullable = false)]
    pub provider_key: Option<String>,
    #[param(nullable = false)]
    pub model: Option<String>,
    /// RFC 3339 or `YYYY-MM-DD`, inclusive.
    #[param(nullable = false)]
    pub from: Option<String>,
    /// RFC 3339 or `YYYY-MM-DD`, exclusive.
    #[param(nullable = false)]
    pub to: Option<String>,
    /// `day`, `model`, `key` (virtual key), `virtualKey`, `apiKey`, `providerKey` or `hub`.
    #[param(value_type = Option<UsageGroupBy>, nullable = false)]
    pub group_by: Option<String>,
    /// Records only: 1-based; default 1.
    #[param(minimum = 1, nullable = false)]
    pub page: Option<u32>,
    /// Records only: items per page; default 100.
    #[param(minimum = 1, maximum = 500, nullable = false)]
    pub limit: Option<u32>,
}

/// How `GET /api/v1/usage` groups its rows; `key` is the virtual key.
#[derive(ToSchema)]
#[allow(non_camel_case_types)]
pub enum UsageGroupBy {
    day,
    model,
    key,
    virtualKey,
    apiKey,
    providerKey,
    hub,
}

/// Requests, tokens and cost (`totals_view`; for the document).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotalsView {
    pub requests: i64,
    /// Requests that ended in an error.
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cached_tokens: i64,
    pub cost_usd: f64,
    pub cost_nano_usd: i64,
    /// Requests whose tokens were counted locally because the upstream reported none.
    pub estimated_requests: i64,
}

/// The answer of `GET /api/v1/usage` (for the document).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageSummary {
    #[serde(flatten)]
    pub totals: UsageTotalsView,
    #[schema(required = true)]
    pub from: Option<String>,
    #[schema(required = true)]
    pub to: Option<String>,
    /// With `groupBy` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub group_by: Option<String>,
    /// With `groupBy` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub rows: Option<Vec<UsageGroupRow>>,
}

/// One group of `GET /api/v1/usage?groupBy=`: the totals and the group's key under the name
/// of the grouping (`day` as `YYYY-MM-DD`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageGroupRow {
    #[serde(flatten)]
    pub totals: UsageTotalsView,
    #[schema(nullable = false)]
    pub day: Option<String>,
    #[schema(nullable = false)]
    pub model: Option<String>,
    #[schema(nullable = false)]
    pub virtual_key: Option<String>,
    /// The virtual key's slug, when it still exists.
    #[schema(nullable = false)]
    pub virtual_key_slug: Option<String>,
    #[schema(nullable = false)]
    pub api_key: Option<String>,
    #[schema(nullable = false)]
    pub provider_key: Option<String>,
    /// The provider key's name, when it still exists.
    #[schema(nullable = false)]
    pub provider_key_name: Option<String>,
    #[schema(nullable = false)]
    pub hub: Option<String>,
}

/// One usage record (`record_view`; for the document).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct UsageRecordView {
    pub id: String,
    pub at: String,
    #[schema(required = true)]
    pub request_id: Option<String>,
    #[schema(required = true)]
    pub api_key_id: Option<String>,
    #[schema(required = true)]
    pub virtual_key_id: Option<String>,
    #[schema(required = true)]
    pub provider_key_id: Option<String>,
    #[schema(required = true)]
    pub hub: Option<String>,
    #[schema(required = true)]
    pub model: Option<String>,
    pub endpoint: String,
    /// The HTTP status answered.
    pub status: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cost_usd: f64,
    pub latency_ms: i64,
    pub estimated: bool,
    pub stream: bool,
    #[schema(required = true)]
    pub error_kind: Option<String>,
}

fn totals_view(t: &UsageTotals) -> Value {
    json!({
        "requests": t.requests,
        "errors": t.errors,
        "promptTokens": t.prompt_tokens,
        "completionTokens": t.completion_tokens,
        "totalTokens": t.prompt_tokens + t.completion_tokens,
        "cachedTokens": t.cached_tokens,
        "costUsd": NanoUsd(t.cost_nano).to_usd_f64(),
        "costNanoUsd": t.cost_nano,
        "estimatedRequests": t.estimated,
    })
}

async fn filter_of(state: &AppState, ctx: &Ctx, q: &UsageQuery) -> ApiResult<UsageFilter> {
    let time = |name: &str, v: &Option<String>| -> ApiResult<Option<i64>> {
        v.as_deref()
            .map(|s| {
                parse_ms(s)
                    .ok_or_else(|| ApiError::bad_request(format!("{name} must be an RFC 3339 time or YYYY-MM-DD")))
            })
            .transpose()
    };
    let virtual_key_id = match &q.virtual_key {
        None => None,
        Some(v) => match state.store.get_virtual_key(&ctx.workspace, v).await {
            Ok(row) => Some(row.id),
            // A deleted key's usage stays readable by its id.
            Err(StoreError::NotFound) if v.starts_with("vk_") => Some(v.clone()),
            Err(StoreError::NotFound) => return Err(ApiError::not_found(format!("no virtual key {v}"))),
            Err(e) => return Err(e.into()),
        },
    };
    let provider_key_id = match &q.provider_key {
        None => None,
        Some(p) => match state.store.get_provider_key_by_name(&ctx.workspace, p).await {
            Ok(row) => Some(row.id),
            Err(StoreError::NotFound) => Some(p.clone()),
            Err(e) => return Err(e.into()),
        },
    };
    Ok(UsageFilter {
        virtual_key_id,
        platform_key_id: q.api_key.clone(),
        provider_key_id,
        model: q.model.clone(),
        from: time("from", &q.from)?,
        to: time("to", &q.to)?,
    })
}

/// Usage totals, and rows with `groupBy`.
#[utoipa::path(get, path = "/api/v1/usage", tag = "usage", operation_id = "getUsage",
    params(UsageQuery),
    responses(
        (status = 200, description = "Totals over the range, and rows with `groupBy`", body = Data<UsageSummary>),
        (status = 400, description = "Invalid `from`, `to`, `groupBy` or query string", body = ErrorBody),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
        (status = 404, description = "No such virtual key in this workspace", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn summary(
    State(state): State<AppState>,
    ctx: Ctx,
    QueryParams(q): QueryParams<UsageQuery>,
) -> ApiResult<Json<Value>> {
    state.meter.flush().await;
    let filter = filter_of(&state, &ctx, &q).await?;
    let totals = state.store.usage_totals(&ctx.workspace, &filter).await?;
    let mut data = totals_view(&totals);
    data["from"] = filter.from.map(format_ms).map(Value::from).unwrap_or(Value::Null);
    data["to"] = filter.to.map(format_ms).map(Value::from).unwrap_or(Value::Null);
    if let Some(g) = &q.group_by {
        let group = match g.as_str() {
            "day" => UsageGroup::Day,
            "model" => UsageGroup::Model,
            "key" | "virtualKey" => UsageGroup::VirtualKey,
            "apiKey" => UsageGroup::PlatformKey,
            "providerKey" => UsageGroup::ProviderKey,
            "hub" => UsageGroup::Hub,
            _ => {
                return Err(ApiError::bad_request(
                    "groupBy must be day, model, key, virtualKey, apiKey, providerKey or hub",
                ))
            }
        };
        let rows = state
            .store
            .usage_grouped(&ctx.workspace, &filter, group, 10_000)
            .await?;
        let rows: Vec<Value> = rows
            .iter()
            .map(|r| {
                let mut v = totals_view(r);
                let key = match group {
                    UsageGroup::Day => r
                        .group
                        .parse::<i64>()
                        .map(|d| format_ms(d * 86_400_000)[..10].to_string())
                        .unwrap_or_default(),
                    _ => r.group.clone(),
                };
                let name = match group {
                    UsageGroup::Day => "day",
                    UsageGroup::Model => "model",
                    UsageGroup::VirtualKey => "virtualKey",
                    UsageGroup::PlatformKey => "apiKey",
                    UsageGroup::ProviderKey => "providerKey",
                    UsageGroup::Hub => "hub",
                };
                v[name] = Value::String(key);
                if group == UsageGroup::VirtualKey {
                    if let Some(vk) = state.runtime.virtual_key(&r.group) {
                        v["virtualKeySlug"] = Value::String(vk.slug.clone());
                    }
                }
                if group == UsageGroup::ProviderKey {
                    if let Some(name) = state.runtime.provider_name(&r.group) {
                        v["providerKeyName"] = Value::String(name);
                    }
                }
                v
            })
            .collect();
        data["groupBy"] = Value::String(g.clone());
        data["rows"] = Value::Array(rows);
    }
    Ok(Json(json!({"data": data})))
}

fn record_view(r: &UsageRow) -> Value {
    json!({
        "id": r.id,
        "at": format_ms(r.at),
        "requestId": r.request_id,
        "apiKeyId": r.platform_key_id,
        "virtualKeyId": r.virtual_key_id,
        "providerKeyId": r.provider_key_id,
        "hub": r.hub,
        "model": r.model,
        "endpoint": r.endpoint,
        "status": r.status_code,
        "promptTokens": r.prompt_tokens,
        "completionTokens": r.completion_tokens,
        "cachedTokens": r.cached_tokens,
        "costUsd": NanoUsd(r.cost_nano).to_usd_f64(),
        "latencyMs": r.latency_ms,
        "estimated": r.estimated,
        "stream": r.stream,
        "errorKind": r.error_kind,
    })
}

/// Usage records, newest first.
#[utoipa::path(get, path = "/api/v1/usage/records", tag = "usage", operation_id = "listUsageRecords",
    params(UsageQuery),
    responses(
        (status = 200, description = "A page of usage records", body = Paged<UsageRecordView>),
        (status = 400, description = "Invalid `from`, `to`, `page`, `limit` or query string", body = ErrorBody),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
        (status = 404, description = "No such virtual key in this workspace", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn records(
    State(state): State<AppState>,
    ctx: Ctx,
    QueryParams(q): QueryParams<UsageQuery>,
) -> ApiResult<Json<Value>> {
    state.meter.flush().await;
    let page = PageQuery {
        page: q.page,
        limit: q.limit,
    }
    .page()?;
    let filter = filter_of(&state, &ctx, &q).await?;
    let (rows, total) = state.store.list_usage(&ctx.workspace, &filter, page).await?;
    Ok(Json(list_body(rows.iter().map(record_view).collect(), page, total)))
}
