//! `GET /api/v1/audit`: the audit log of the caller's workspace, newest first.

use axum::extract::State;
use axum::Json;
use keygate_store::{AuditEvent, AuditFilter, Page};
use keygate_types::timefmt::{format_ms, parse_ms};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::extract::Ctx;
use crate::extract::QueryParams;
use crate::openapi::doc::{ErrorBody, Paged};
use crate::provider_keys::list_body;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// 1-based; default 1.
    #[param(minimum = 1, nullable = false)]
    pub page: Option<u32>,
    /// Items per page; default 100.
    #[param(minimum = 1, maximum = 500, nullable = false)]
    pub limit: Option<u32>,
    /// e.g. `provider_key.create`.
    #[param(nullable = false)]
    pub action: Option<String>,
    #[param(nullable = false)]
    pub target_id: Option<String>,
    #[param(nullable = false)]
    pub actor_key_id: Option<String>,
    /// RFC 3339 or `YYYY-MM-DD`, inclusive.
    #[param(nullable = false)]
    pub from: Option<String>,
    /// RFC 3339 or `YYYY-MM-DD`, exclusive.
    #[param(nullable = false)]
    pub to: Option<String>,
}

/// An audit event as [`event_view`] shows it (for the document).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct AuditEventView {
    pub id: String,
    pub at: String,
    /// `api-key`, `wallet:0x…`, `cli`…
    pub actor: String,
    #[schema(required = true)]
    pub actor_key_id: Option<String>,
    /// e.g. `provider_key.create`.
    pub action: String,
    pub target_type: String,
    #[schema(required = true)]
    pub target_id: Option<String>,
    #[schema(required = true)]
    pub request_id: Option<String>,
    /// What changed; never a secret.
    pub details: Value,
}

pub fn event_view(e: &AuditEvent) -> Value {
    json!({
        "id": e.id,
        "at": format_ms(e.at),
        "actor": e.actor,
        "actorKeyId": e.actor_key_id,
        "action": e.action,
        "targetType": e.target_type,
        "targetId": e.target_id,
        "requestId": e.request_id,
        "details": serde_json::from_str::<Value>(&e.details).unwrap_or(Value::Null),
    })
}

fn time_param(name: &str, v: &Option<String>) -> ApiResult<Option<i64>> {
    match v {
        None => Ok(None),
        Some(s) => parse_ms(s)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("{name} must be an RFC 3339 time or YYYY-MM-DD"))),
    }
}

/// Read the audit log.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", operation_id = "listAuditEvents",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of audit events, newest first", body = Paged<AuditEventView>),
        (status = 400, description = "Invalid `page`, `limit`, `from`, `to` or query string", body = ErrorBody),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    QueryParams(q): QueryParams<AuditQuery>,
) -> ApiResult<Json<Value>> {
    let page = crate::provider_keys::PageQuery {
        page: q.page,
        limit: q.limit,
    }
    .page()?;
    let filter = AuditFilter {
        action: q.action.clone(),
        target_id: q.target_id.clone(),
        actor_key_id: q.actor_key_id.clone(),
        from: time_param("from", &q.from)?,
        to: time_param("to", &q.to)?,
    };
    let (events, total) = state.store.list_audit(&ctx.workspace, &filter, page).await?;
    let _: Page = page;
    Ok(Json(list_body(events.iter().map(event_view).collect(), page, total)))
}
