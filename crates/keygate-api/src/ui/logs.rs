//! The Rate-limit log (refused requests) and the Audit log (changes), with filters and paging.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::State;
use axum::response::Response;
use keygate_store::{AuditFilter, Page};
use keygate_types::timefmt::parse_ms;

use super::html::{self, esc, Nav, E};
use super::{page_of, Params, Ui};
use crate::state::AppState;

const PER_PAGE: u32 = 50;

async fn key_labels(state: &AppState, workspace: &str) -> HashMap<String, String> {
    let page = Page { page: 1, limit: 500 };
    let mut out = HashMap::new();
    if let Ok((rows, _)) = state.store.list_platform_keys(workspace, page).await {
        for r in rows {
            let label = if r.description.is_empty() {
                format!("…{}", r.last6)
            } else {
                format!("{} …{}", r.description, r.last6)
            };
            out.insert(r.id, label);
        }
    }
    if let Ok((rows, _)) = state.store.list_virtual_keys(workspace, page).await {
        for r in rows {
            out.insert(r.id, r.slug);
        }
    }
    if let Ok((rows, _)) = state.store.list_provider_keys(workspace, page).await {
        for r in rows {
            out.insert(r.id, r.name);
        }
    }
    out
}

fn label(labels: &HashMap<String, String>, id: Option<&str>) -> String {
    match id {
        None | Some("") => r#"<span class="muted">—</span>"#.into(),
        Some(id) => match labels.get(id) {
            Some(l) => format!(r#"<span title="{}">{}</span>"#, E(id), E(l)),
            None => format!("<code class=\"small\">{}</code>", E(id)),
        },
    }
}

/// `GET /ui/rate-limits?scope=&type=&page=`: the newest refusals of the workspace.
pub async fn rate_limits(State(state): State<AppState>, ui: Ui, q: Params) -> Response {
    state.meter.flush().await;
    let events = match state.store.list_rate_limit_events(&ui.ctx.workspace, None, 1000).await {
        Ok(e) => e,
        Err(e) => return ui.error_page(Nav::RateLimits, "Rate-limit log", &e.into(), ""),
    };
    let scope = q.text("scope");
    let kind = q.text("type");
    let mut types: Vec<String> = events.iter().map(|e| e.limit_type.clone()).collect();
    types.sort();
    types.dedup();
    let events: Vec<_> = events
        .into_iter()
        .filter(|e| (scope.is_empty() || e.scope == scope) && (kind.is_empty() || e.limit_type == kind))
        .collect();
    let total = events.len();
    let page = q.page();
    let events = page_of(events, page, PER_PAGE);
    let labels = key_labels(&state, &ui.ctx.workspace).await;

    let scopes = [
        ("", "Any limit owner"),
        ("api_key", "API key"),
        ("virtual_key", "virtual key"),
        ("model", "model override"),
        ("provider_key", "provider key"),
    ];
    let mut type_opts: Vec<(&str, &str)> = vec![("", "Any limit")];
    type_opts.extend(types.iter().map(|t| (t.as_str(), t.as_str())));
    let mut body = format!(
        r#"<div class="toolbar"><form class="filters" method="get" action="/ui/rate-limits">{}{}<button class="btn" type="submit">Filter</button></form></div><p class="muted">Every request refused by a rate limit or budget, newest first (the last 1,000).</p>"#,
        html::select("scope", "filter-scope", &scopes, scope),
        html::select("type", "filter-type", &type_opts, kind),
    );
    if total == 0 {
        body.push_str(r#"<div class="empty"><p>No refused requests.</p></div>"#);
    } else {
        body.push_str(r#"<div class="table-wrap"><table class="list" id="rate-limit-log"><thead><tr><th>Time</th><th>Limit</th><th>Owner</th><th class="num">Value</th><th>API key</th><th>Virtual key</th><th>Provider key</th><th>Model</th></tr></thead><tbody>"#);
        for e in &events {
            let value = limit_value(&state, e);
            let _ = write!(
                body,
                r#"<tr><td data-label="Time">{t}</td><td data-label="Limit">{ty}</td><td data-label="Owner">{sc}</td><td class="num" data-label="Value">{v}</td><td data-label="API key">{ak}</td><td data-label="Virtual key">{vk}</td><td data-label="Provider key">{pk}</td><td data-label="Model">{m}</td></tr>"#,
                t = html::when(Some(e.at)),
                ty = html::badge(&e.limit_type, "warn"),
                sc = esc(&e.scope.replace('_', " ")),
                v = value,
                ak = label(&labels, e.platform_key_id.as_deref()),
                vk = label(&labels, e.virtual_key_id.as_deref()),
                pk = label(&labels, e.provider_key_id.as_deref()),
                m = html::or_dash(e.model.as_deref()),
            );
        }
        body.push_str("</tbody></table></div>");
        body.push_str(&html::pager(
            "/ui/rate-limits",
            &[("scope", scope.to_string()), ("type", kind.to_string())],
            page,
            PER_PAGE,
            total,
        ));
    }
    ui.page(Nav::RateLimits, "Rate-limit log", &body)
}

/// A refusal's limit as people read it: a budget in its own measure (found on the key that
/// owns it), a rate limit as a count.
fn limit_value(state: &AppState, e: &keygate_store::RateLimitEventRow) -> String {
    let v = e.limit_value;
    if e.limit_type != "BUDGET" {
        return html::int(v);
    }
    let budget = match e.scope.as_str() {
        "virtual_key" | "model" => e
            .virtual_key_id
            .as_deref()
            .and_then(|id| state.runtime.virtual_key(id))
            .map(|vk| {
                let cfg = &vk.config;
                let mut b = vec![cfg.budget.clone()];
                b.extend(cfg.model_limits.values().map(|m| m.budget.clone()));
                b
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let as_u = |x: Option<u64>| x.and_then(|x| i64::try_from(x).ok());
    if budget.iter().any(|b| b.usd_nano == Some(v)) {
        html::usd(v)
    } else if budget.iter().any(|b| as_u(b.tokens) == Some(v)) {
        format!("{} tokens", html::int(v))
    } else if budget.iter().any(|b| as_u(b.requests) == Some(v)) {
        format!("{} requests", html::int(v))
    } else if e.scope == "api_key" {
        let settings = e.platform_key_id.as_deref().and_then(|id| {
            state
                .auth
                .principals()
                .into_iter()
                .find(|p| p.id == id)
                .map(|p| p.settings.consumption_limit.clone())
        });
        match settings.and_then(|m| m.into_iter().find(|(_, lim)| *lim == v)) {
            Some((c, _)) if c == "usd" => html::usd(v),
            Some((c, _)) if c == "diem" || c == "vcu" => {
                format!("{} {}", html::usd(v).trim_start_matches('$'), c.to_uppercase())
            }
            Some((c, _)) => format!("{} {c}", html::int(v)),
            None => html::int(v),
        }
    } else {
        html::int(v)
    }
}

const ACTIONS: [&str; 15] = [
    "provider_key.create",
    "provider_key.update",
    "provider_key.rotate",
    "provider_key.rename",
    "provider_key.delete",
    "virtual_key.create",
    "virtual_key.update",
    "virtual_key.delete",
    "api_key.create",
    "api_key.update",
    "api_key.rotate",
    "api_key.delete",
    "workspace.create",
    "wallet.create",
    "master_key.rotate",
];

/// `GET /ui/audit?action=&from=&to=&page=`: changes, newest first.
pub async fn audit(State(state): State<AppState>, ui: Ui, q: Params) -> Response {
    let action = q.text("action");
    let day = |s: Option<&str>| s.and_then(parse_ms);
    let filter = AuditFilter {
        action: (!action.is_empty()).then(|| action.to_string()),
        from: day(q.get("from")),
        to: day(q.get("to")).map(|t| t + 86_400_000),
        ..Default::default()
    };
    let page = q.page();
    let (events, total) = match state
        .store
        .list_audit(&ui.ctx.workspace, &filter, Page { page, limit: PER_PAGE })
        .await
    {
        Ok(x) => x,
        Err(e) => return ui.error_page(Nav::Audit, "Audit log", &e.into(), ""),
    };
    let labels = key_labels(&state, &ui.ctx.workspace).await;
    let mut opts: Vec<(&str, &str)> = vec![("", "Any action")];
    opts.extend(ACTIONS.iter().map(|a| (*a, *a)));
    let mut body = format!(
        r#"<div class="toolbar"><form class="filters" method="get" action="/ui/audit">{sel}<input type="date" name="from" value="{from}" aria-label="From"><input type="date" name="to" value="{to}" aria-label="To"><button class="btn" type="submit">Filter</button></form></div>"#,
        sel = html::select("action", "filter-action", &opts, action),
        from = E(q.text("from")),
        to = E(q.text("to")),
    );
    if total == 0 {
        body.push_str(r#"<div class="empty"><p>No changes recorded yet.</p></div>"#);
    } else {
        body.push_str(r#"<div class="table-wrap"><table class="list" id="audit-log"><thead><tr><th>Time</th><th>Action</th><th>Actor</th><th>Target</th><th>Details</th><th>Request id</th></tr></thead><tbody>"#);
        for e in &events {
            let actor = match &e.actor_key_id {
                Some(id) => label(&labels, Some(id)),
                None => esc(&e.actor),
            };
            let target = format!(
                "{} {}",
                esc(&e.target_type.replace('_', " ")),
                label(&labels, e.target_id.as_deref())
            );
            let details = if e.details == "{}" || e.details.is_empty() {
                r#"<span class="muted">—</span>"#.to_string()
            } else {
                format!(r#"<code class="details">{}</code>"#, E(&e.details))
            };
            let _ = write!(
                body,
                r#"<tr><td data-label="Time">{t}</td><td data-label="Action">{a}</td><td data-label="Actor">{actor}</td><td data-label="Target">{target}</td><td data-label="Details">{details}</td><td data-label="Request id">{rid}</td></tr>"#,
                t = html::when(Some(e.at)),
                a = html::badge(&e.action, "info"),
                rid = match &e.request_id {
                    Some(r) => format!(r#"<code class="small">{}</code>"#, E(r)),
                    None => r#"<span class="muted">—</span>"#.into(),
                },
            );
        }
        body.push_str("</tbody></table></div>");
        body.push_str(&html::pager(
            "/ui/audit",
            &[
                ("action", action.to_string()),
                ("from", q.text("from").to_string()),
                ("to", q.text("to").to_string()),
            ],
            page,
            PER_PAGE,
            usize::try_from(total).unwrap_or(0),
        ));
    }
    ui.page(Nav::Audit, "Audit log", &body)
}
