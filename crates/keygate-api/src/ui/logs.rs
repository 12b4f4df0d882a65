//! The Rate-limit log (refused requests) and the Audit log (changes), with filters and paging.
//! The views below feed the templates `rate_limits.html` and `audit.html`.
//!
//! What must stay true: a key is named by its label (description, slug or name) with its id
//! beside it, never by anything secret; audit details are shown as text.

use std::collections::HashMap;

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use keygate_store::{AuditFilter, Page};
use keygate_types::timefmt::parse_ms;

use super::html::{self, Frame, Nav, Opt, Pager, Time};
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

/// A key named in a log: its id and, while it exists, its label.
struct KeyLabel {
    id: String,
    label: Option<String>,
}

fn label(labels: &HashMap<String, String>, id: Option<&str>) -> Option<KeyLabel> {
    match id {
        None | Some("") => None,
        Some(id) => Some(KeyLabel {
            id: id.to_string(),
            label: labels.get(id).cloned(),
        }),
    }
}

/// One refusal of the rate-limit log.
struct RefusalLine<'a> {
    at: Option<Time>,
    limit_type: &'a str,
    scope: String,
    value: String,
    api_key: Option<KeyLabel>,
    virtual_key: Option<KeyLabel>,
    provider_key: Option<KeyLabel>,
    model: Option<&'a str>,
}

/// `rate_limits.html`.
#[derive(Template)]
#[template(path = "rate_limits.html")]
struct RateLimitsPage<'a> {
    frame: Frame<'a>,
    scopes: Vec<Opt>,
    types: Vec<Opt>,
    total: usize,
    events: Vec<RefusalLine<'a>>,
    pager: Pager,
}

/// `GET /ui/rate-limits?scope=&type=&page=`: the newest refusals of the workspace.
pub async fn rate_limits(State(state): State<AppState>, ui: Ui, q: Params) -> Response {
    state.meter.flush().await;
    let events = match state.store.list_rate_limit_events(&ui.ctx.workspace, None, 1000).await {
        Ok(e) => e,
        Err(e) => return ui.error_page(Nav::RateLimits, "Rate-limit log", &e.into(), None),
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
    let lines = events
        .iter()
        .map(|e| RefusalLine {
            at: html::when(Some(e.at)),
            limit_type: &e.limit_type,
            scope: e.scope.replace('_', " "),
            value: limit_value(&state, e),
            api_key: label(&labels, e.platform_key_id.as_deref()),
            virtual_key: label(&labels, e.virtual_key_id.as_deref()),
            provider_key: label(&labels, e.provider_key_id.as_deref()),
            model: e.model.as_deref().filter(|m| !m.is_empty()),
        })
        .collect();
    ui.page(&RateLimitsPage {
        frame: ui.frame(Nav::RateLimits, "Rate-limit log"),
        scopes: html::options(&scopes, scope),
        types: html::options(&type_opts, kind),
        total,
        events: lines,
        pager: html::pager(
            "/ui/rate-limits",
            &[("scope", scope.to_string()), ("type", kind.to_string())],
            page,
            PER_PAGE,
            total,
        ),
    })
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

/// One change of the audit log.
struct ChangeLine<'a> {
    at: Option<Time>,
    action: &'a str,
    /// Who made it: a key of the workspace (`actor_key`) or, without one, `actor`'s text.
    actor: Option<&'a str>,
    actor_key: Option<KeyLabel>,
    target_type: String,
    target: Option<KeyLabel>,
    details: Option<&'a str>,
    request_id: Option<&'a str>,
}

/// `audit.html`.
#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage<'a> {
    frame: Frame<'a>,
    actions: Vec<Opt>,
    from: &'a str,
    to: &'a str,
    total: i64,
    events: Vec<ChangeLine<'a>>,
    pager: Pager,
}

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
        Err(e) => return ui.error_page(Nav::Audit, "Audit log", &e.into(), None),
    };
    let labels = key_labels(&state, &ui.ctx.workspace).await;
    let mut opts: Vec<(&str, &str)> = vec![("", "Any action")];
    opts.extend(ACTIONS.iter().map(|a| (*a, *a)));
    let lines = events
        .iter()
        .map(|e| ChangeLine {
            at: html::when(Some(e.at)),
            action: &e.action,
            actor: e.actor_key_id.is_none().then_some(e.actor.as_str()),
            actor_key: e.actor_key_id.as_deref().and_then(|id| label(&labels, Some(id))),
            target_type: e.target_type.replace('_', " "),
            target: label(&labels, e.target_id.as_deref()),
            details: (e.details != "{}" && !e.details.is_empty()).then_some(e.details.as_str()),
            request_id: e.request_id.as_deref(),
        })
        .collect();
    ui.page(&AuditPage {
        frame: ui.frame(Nav::Audit, "Audit log"),
        actions: html::options(&opts, action),
        from: q.text("from"),
        to: q.text("to"),
        total,
        events: lines,
        pager: html::pager(
            "/ui/audit",
            &[
                ("action", action.to_string()),
                ("from", q.text("from").to_string()),
                ("to", q.text("to").to_string()),
            ],
            page,
            PER_PAGE,
            usize::try_from(total).unwrap_or(0),
        ),
    })
}
