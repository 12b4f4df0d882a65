//! Workspaces: the tenant boundary. Organisation admins (the first ADMIN key, and keys made by
//! `keygate admin-key` without `--workspace`) create, rename and delete them (audited in their own
//! workspace, so the events outlive the workspace they name) and may act in any
//! (`x-keygate-workspace` header or `workspace` field); a workspace's own ADMIN keys see only it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use keygate_store::{StoreError, WorkspaceRow};
use keygate_types::timefmt::{format_ms, now_ms};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::extract::QueryParams;
use crate::extract::{Ctx, JsonBody};
use crate::openapi::doc::{Data, ErrorBody, Paged, Saved, Success};
use crate::provider_keys::{list_body, PageQuery};
use crate::state::AppState;

/// Body of `POST /api/v1/workspaces`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateWorkspace {
    /// `[a-z0-9-]{1,64}`, not starting with `-`; generated from the name when absent.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,63}$")]
    pub id: Option<String>,
    /// 1 to 128 printable characters.
    pub name: String,
}

/// Body of `PATCH /api/v1/workspaces/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenameWorkspace {
    /// 1 to 128 printable characters.
    pub name: String,
}

/// A workspace as [`view`] shows it (for the document).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct WorkspaceView {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
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

/// Create a workspace (organisation admins only).
#[utoipa::path(post, path = "/api/v1/workspaces", tag = "workspaces", operation_id = "createWorkspace",
    request_body = CreateWorkspace,
    responses(
        (status = 201, description = "Created", body = Saved<WorkspaceView>, links(
            ("GetWorkspace" = (operation_id = "getWorkspace", parameters(("id" = "$response.body#/data/id")))),
            ("RenameWorkspace" = (operation_id = "renameWorkspace", parameters(("id" = "$response.body#/data/id")))),
            ("DeleteWorkspace" = (operation_id = "deleteWorkspace", parameters(("id" = "$response.body#/data/id")))),
        )),
        (status = 400, description = "Invalid body, id or name", body = ErrorBody),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an organisation admin's ADMIN key, or a refused client address", body = ErrorBody),
        (status = 409, description = "The id is taken", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    ),
    security(("bearer" = [])))]
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

/// List workspaces: all of them for an organisation admin, else the caller's own.
#[utoipa::path(get, path = "/api/v1/workspaces", tag = "workspaces", operation_id = "listWorkspaces",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of workspaces", body = Paged<WorkspaceView>),
        (status = 400, description = "Invalid `page`, `limit` or query string", body = ErrorBody),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Json<Value>> {
    let page = q.page()?;
    if !ctx.principal.org_admin {
        let own = visible(&state, &ctx, &ctx.principal.workspace.clone()).await?;
        return Ok(Json(list_body(vec![view(&own)], page, 1)));
    }
    let (rows, total) = state.store.list_workspaces(page).await?;
    Ok(Json(list_body(rows.iter().map(view).collect(), page, total)))
}

/// Get a workspace.
#[utoipa::path(get, path = "/api/v1/workspaces/{id}", tag = "workspaces", operation_id = "getWorkspace",
    params(("id" = String, Path, description = "The workspace's id")),
    responses(
        (status = 200, description = "The workspace", body = Data<WorkspaceView>),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
        (status = 404, description = "No such workspace visible to the caller", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn get(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let row = visible(&state, &ctx, &id).await?;
    Ok(Json(json!({"data": view(&row)})))
}

/// Rename a workspace (organisation admins only).
#[utoipa::path(patch, path = "/api/v1/workspaces/{id}", tag = "workspaces", operation_id = "renameWorkspace",
    params(("id" = String, Path, description = "The workspace's id")),
    request_body = RenameWorkspace,
    responses(
        (status = 200, description = "Renamed", body = Saved<WorkspaceView>),
        (status = 400, description = "Invalid body or name", body = ErrorBody),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an organisation admin's ADMIN key, or a refused client address", body = ErrorBody),
        (status = 404, description = "No such workspace visible to the caller", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    ),
    security(("bearer" = [])))]
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

/// Delete an empty workspace (organisation admins only).
#[utoipa::path(delete, path = "/api/v1/workspaces/{id}", tag = "workspaces", operation_id = "deleteWorkspace",
    params(("id" = String, Path, description = "The workspace's id")),
    responses(
        (status = 200, description = "Deleted", body = Success),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an organisation admin's ADMIN key, or a refused client address", body = ErrorBody),
        (status = 404, description = "No such workspace visible to the caller", body = ErrorBody),
        (status = 409, description = "The default workspace, or one that still holds live keys", body = ErrorBody),
    ),
    security(("bearer" = [])))]
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
