//! The Vijil mount `/v1/api-keys`, exactly as the Vijil client's wire format: bare arrays, snake_case,
//! `value` for the secret and `url` for the endpoint, `PUT /{id}` as a partial update that
//! renames when `name` differs. It calls the provider-key service, so validation, sealing,
//! rotation and audit are the same as the native API's.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use keygate_store::{Page, ProviderKeyRow, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, JsonBody};
use crate::provider_keys::{self, rate_limit_of, CreateProviderKey, SecretInput, UpdateProviderKey};
use crate::state::AppState;

/// A provider key in Vijil's shape. Never the secret.
pub fn vijil_view(row: &ProviderKeyRow) -> Value {
    let (per, interval, _) = rate_limit_of(row);
    json!({
        "id": row.id,
        "name": row.name,
        "hub": row.hub,
        "rate_limit_per_interval": per,
        "rate_limit_interval": interval,
        "url": row.base_url,
        "display_name": row.name,
        "created_at": row.created_at / 1000,
        "updated_at": row.updated_at / 1000,
        "created_by": row.created_by,
        "secret_hint": row.secret_hint,
        "secret_version": row.secret_version,
        "private": row.private,
    })
}

/// `POST /v1/api-keys` as the Vijil client sends it.
#[derive(Debug, Deserialize)]
pub struct VijilCreate {
    pub name: String,
    pub hub: String,
    pub rate_limit_per_interval: Option<u32>,
    pub rate_limit_interval: Option<u32>,
    pub value: Option<SecretInput>,
    pub url: Option<String>,
    pub hub_config: Option<Value>,
}

/// `PUT /v1/api-keys/{id}`: modify (current name + changes) or rename (new name only).
#[derive(Debug, Deserialize)]
pub struct VijilUpdate {
    pub name: Option<String>,
    pub hub: Option<String>,
    pub rate_limit_per_interval: Option<u32>,
    pub rate_limit_interval: Option<u32>,
    pub value: Option<SecretInput>,
}

pub async fn list(State(state): State<AppState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    // The client lists everything (and does so 3-4 times per change): one query per page.
    let mut out = Vec::new();
    let mut page = 1;
    loop {
        let (rows, total) = state
            .store
            .list_provider_keys(&ctx.workspace, Page { page, limit: 500 })
            .await?;
        out.extend(rows.iter().map(vijil_view));
        if out.len() as i64 >= total || rows.is_empty() {
            break;
        }
        page += 1;
    }
    Ok(Json(Value::Array(out)))
}

pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    JsonBody(body): JsonBody<VijilCreate>,
) -> ApiResult<impl IntoResponse> {
    let input = CreateProviderKey {
        name: body.name,
        model_hub: body.hub,
        api_key: body.value,
        base_url: body.url,
        hub_config: body.hub_config,
        rate_limit_per_interval: body.rate_limit_per_interval,
        rate_limit_interval: body.rate_limit_interval,
        private: None,
    };
    let row = provider_keys::create(&state, &ctx, input).await?;
    state.refresh_caches().await;
    Ok((StatusCode::CREATED, Json(vijil_view(&row))))
}

async fn by_id(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<ProviderKeyRow> {
    state
        .store
        .get_provider_key(&ctx.workspace, id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found(format!("no API key with id {id}")),
            other => other.into(),
        })
}

pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<VijilUpdate>,
) -> ApiResult<Json<Value>> {
    let mut row = by_id(&state, &ctx, &id).await?;
    let changes = body.hub.is_some()
        || body.value.is_some()
        || body.rate_limit_per_interval.is_some()
        || body.rate_limit_interval.is_some();
    let renaming = body.name.as_ref().is_some_and(|n| n != &row.name);
    // A modify and a rename in one request are audited as one event.
    let both = changes && renaming;
    let sub = if both { ctx.quiet() } else { ctx.quiet_if(false) };
    if changes {
        let patch = UpdateProviderKey {
            model_hub: body.hub,
            api_key: body.value,
            rate_limit_per_interval: body.rate_limit_per_interval.map(Some),
            rate_limit_interval: body.rate_limit_interval.map(Some),
            ..Default::default()
        };
        row = provider_keys::update(&state, &sub, row, patch).await?;
    }
    if let Some(name) = body.name {
        if name != row.name {
            row = provider_keys::rename(&state, &sub, row, &name).await?;
        }
    }
    if both {
        let event = ctx.audit(
            "provider_key.update",
            "provider_key",
            Some(&row.id),
            json!({"name": row.name, "changed": ["modify", "name"], "via": "vijil"}),
        );
        state.store.append_audit(&event).await?;
    }
    state.refresh_caches().await;
    Ok(Json(vijil_view(&row)))
}

pub async fn delete(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let row = by_id(&state, &ctx, &id).await?;
    provider_keys::delete(&state, &ctx, &row).await?;
    state.refresh_caches().await;
    Ok(Json(json!({"message": "deleted", "id": row.id})))
}
