//! `GET /api/v1/audit`: the audit log of the caller's workspace, newest first.

use axum::extract::{Query, State};
use axum::Json;
use keygate_store::{AuditEvent, AuditFilter, Page};
use keygate_types::timefmt::{format_ms, parse_ms};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::Ctx;
use crate::provider_keys::list_body;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditQuery {
    pub page: Option<u32>,
    pub limit: Option<u32>,
    /// e.g. `provider_key.create`.
    pub action: Option<String>,
    pub target_id: Option<String>,
    pub actor_key_id: Option<String>,
    /// RFC 3339 or `YYYY-MM-DD`, inclusive.
    pub from: Option<String>,
    /// RFC 3339 or `YYYY-MM-DD`, exclusive.
    pub to: Option<String>,
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
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "`{object, data: [AuditEvent], page, limit, total}`")), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, ctx: Ctx, Query(q): Query<AuditQuery>) -> ApiResult<Json<Value>> {
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
