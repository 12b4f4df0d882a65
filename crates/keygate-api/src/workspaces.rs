//! Workspaces: the tenant boundary. Organisation admins (the first ADMIN key, and keys made by
//! `keygate admin-key` without `--workspace`) create, rename and delete them (audited in their own
//! workspace, so the events outlive the workspace they name) and may act in any
//! (`x-keygate-workspace` header or `workspace` field); a workspace's own ADMIN keys see only it.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use keygate_store::{StoreError, WorkspaceRow};
use keygate_types::timefmt::{format_ms, now_ms};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, JsonBody};
use crate::provider_keys::{list_body, PageQuery};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateWorkspace {
    /// `[a-z0-9-]{1,64}`; generated from the name when absent.
    pub id: Option<String>,
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenameWorkspace {
    pub name: String,
}

fn view(w: &WorkspaceRow) -> Value {
    json!({"id": w.id, "name": w.name, "createdAt": format_ms(w.created_at), "updatedAt": format_ms(w.updated_at)})
}

fn org_only(ctx: &Ctx) -> ApiResult<()> {
    if ctx.principal.org_admin {
        Ok(())
    } else {
        Err(ApiError::forbidden("only an organisation admin key manages workspaces"))
    }
}

fn check_id(id: &str) -> ApiResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "a workspace id is 1 to 64 lower-case letters, digits and '-'",
        ))
    }
}

fn check_name(n: &str) -> ApiResult<()> {
    if n.trim().is_empty() || n.len() > 128 || n.chars().any(char::is_control) {
        return Err(ApiError::bad_request("name must be 1 to 128 printable characters"));
    }
    Ok(())
}

/// A workspace the caller may see: its own, or any for an organisation admin; else 404.
async fn visible(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<WorkspaceRow> {
    if !ctx.principal.org_admin && id != ctx.principal.workspace {
        return Err(ApiError::not_found(format!("workspace {id} not found")));
    }
    state.store.get_workspace(id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found(format!("workspace {id} not found")),
        other => other.into(),
    })
}

pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    JsonBody(body): JsonBody<CreateWorkspace>,
) -> ApiResult<impl IntoResponse> {
    org_only(&ctx)?;
    check_name(&body.name)?;
    let id = match body.id {
        Some(id) => id,
        None => crate::virtual_keys::slug_from(&body.name)
            .to_ascii_lowercase()
            .replace(['_', '.'], "-"),
    };
    check_id(&id)?;
    let now = now_ms();
    let row = WorkspaceRow {
        id: id.clone(),
        name: body.name.clone(),
        created_at: now,
        updated_at: now,
    };
    let audit = Ctx {
        workspace: ctx.principal.workspace.clone(),
        ..ctx
    }
    .audit("workspace.create", "workspace", Some(&id), json!({"name": body.name}));
    state.store.create_workspace(&row, Some(&audit)).await?;
    Ok((StatusCode::CREATED, Json(json!({"success": true, "data": view(&row)}))))
}

pub async fn list(State(state): State<AppState>, ctx: Ctx, q: Query<PageQuery>) -> ApiResult<Json<Value>> {
    let page = q.page()?;
    if !ctx.principal.org_admin {
        let own = visible(&state, &ctx, &ctx.principal.workspace.clone()).await?;
        return Ok(Json(list_body(vec![view(&own)], page, 1)));
    }
    let (rows, total) = state.store.list_workspaces(page).await?;
    Ok(Json(list_body(rows.iter().map(view).collect(), page, total)))
}

pub async fn get(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let row = visible(&state, &ctx, &id).await?;
    Ok(Json(json!({"data": view(&row)})))
}

pub async fn rename(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RenameWorkspace>,
) -> ApiResult<Json<Value>> {
    visible(&state, &ctx, &id).await?;
    org_only(&ctx)?;
    check_name(&body.name)?;
    let audit = Ctx {
        workspace: ctx.principal.workspace.clone(),
        ..ctx
    }
    .audit("workspace.rename", "workspace", Some(&id), json!({"name": body.name}));
    let row = state
        .store
        .rename_workspace(&id, &body.name, now_ms(), Some(&audit))
        .await?;
    Ok(Json(json!({"success": true, "data": view(&row)})))
}

pub async fn delete(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    visible(&state, &ctx, &id).await?;
    org_only(&ctx)?;
    if id == keygate_types::DEFAULT_WORKSPACE {
        return Err(ApiError::conflict("the default workspace cannot be deleted"));
    }
    let audit = Ctx {
        workspace: ctx.principal.workspace.clone(),
        ..ctx
    }
    .audit("workspace.delete", "workspace", Some(&id), json!({}));
    state.store.delete_workspace(&id, Some(&audit)).await?;
    Ok(Json(json!({"success": true})))
}
