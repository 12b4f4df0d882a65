//! The API keys page: platform keys (list, search, create with the secret shown once and a
//! copy button, rotate with a grace period, delete), through the handlers of
//! `crate::api_keys`, so the privilege rule, throttle and cap apply exactly as in the API.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use keygate_store::{Page, PlatformKeyRow, StoreError};
use serde_json::Value;
use zeroize::Zeroizing;

use super::html::{self, esc, Flash, Nav, E};
use super::keys::readable;
use super::{matches, page_of, Form, Params, PostForm, Ui};
use crate::api_keys::{self as ak, ConsumptionInput, CreateApiKey, DeleteQuery, KeyRateLimits};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, JsonBody};
use crate::platform_keys::{KeySettings, LimitPeriod};
use crate::state::AppState;

const PER_PAGE: u32 = 25;

fn ctx_of(ui: &Ui) -> Ctx {
    Ctx {
        principal: ui.ctx.principal.clone(),
        workspace: ui.ctx.workspace.clone(),
        request_id: ui.ctx.request_id.clone(),
        quiet: false,
    }
}

async fn all_keys(state: &AppState, workspace: &str) -> ApiResult<Vec<PlatformKeyRow>> {
    let mut out = Vec::new();
    for page in 1..=20 {
        let (rows, total) = state
            .store
            .list_platform_keys(workspace, Page { page, limit: 500 })
            .await?;
        let done = rows.is_empty() || i64::from(page) * 500 >= total;
        out.extend(rows);
        if done {
            break;
        }
    }
    Ok(out)
}

/// A key's stored settings, read strictly (an error page names the key when they cannot be).
fn settings_of(row: &PlatformKeyRow) -> ApiResult<KeySettings> {
    KeySettings::from_stored(&row.settings).map_err(|e| crate::virtual_keys::unreadable_error("API key", &row.id, &e))
}

fn period_text(p: LimitPeriod) -> &'static str {
    match p {
        LimitPeriod::Epoch | LimitPeriod::Day => " per day",
        LimitPeriod::Week => " per week",
        LimitPeriod::Month => " per month",
        LimitPeriod::Lifetime => "",
    }
}

fn limits_text(s: &KeySettings) -> String {
    let mut parts = Vec::new();
    let period = period_text(s.period());
    for (k, v) in &s.consumption_limit {
        let text = match k.as_str() {
            "usd" => format!("{}{period}", html::usd(*v)),
            "diem" | "vcu" => format!("{} {}{period}", html::usd(*v).trim_start_matches('$'), k.to_uppercase()),
            other => format!("{} {other}{period}", html::int(*v)),
        };
        parts.push(esc(&text));
    }
    for (k, v) in &s.rate_limits {
        parts.push(esc(&format!("{} {k}", html::int(*v as i64))));
    }
    if !s.ip_allowlist.is_empty() {
        parts.push(format!(
            r#"<span title="{}">IP-restricted</span>"#,
            E(&s.ip_allowlist.join(", "))
        ));
    }
    if parts.is_empty() {
        r#"<span class="muted">none</span>"#.into()
    } else {
        parts.join("<br>")
    }
}

/// `GET /ui/api-keys`.
pub async fn list(State(state): State<AppState>, ui: Ui, q: Params) -> Response {
    let rows = match all_keys(&state, &ui.ctx.workspace).await {
        Ok(r) => r,
        Err(e) => return ui.error_page(Nav::ApiKeys, "API keys", &e, ""),
    };
    let search = q.text("q");
    let want = q.text("type");
    let mut rows: Vec<PlatformKeyRow> = rows
        .into_iter()
        .filter(|r| (want.is_empty() || r.key_type == want) && matches(search, &[&r.description, &r.last6, &r.id]))
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    let total = rows.len();
    let page = q.page();
    let rows = page_of(rows, page, PER_PAGE);
    let now = keygate_types::timefmt::now_ms();

    let mut body = String::new();
    let types = [("", "Any type"), ("ADMIN", "ADMIN"), ("INFERENCE", "INFERENCE")];
    let _ = write!(
        body,
        r#"<div class="toolbar">{}<a class="btn btn-primary" href="/ui/api-keys/new" id="add-api-key">Create API key</a></div>"#,
        html::filter_bar(
            "/ui/api-keys",
            search,
            "Search description or last characters",
            &html::select("type", "filter-type", &types, want)
        )
    );
    if total == 0 {
        body.push_str(r#"<div class="empty"><p>No API keys match.</p></div>"#);
    } else {
        body.push_str(r#"<div class="table-wrap"><table class="list" id="api-keys-table"><thead><tr><th>Description</th><th>Type</th><th>Key</th><th>Limits</th><th>Expires</th><th>Last used</th><th>Created</th><th class="actions">Actions</th></tr></thead><tbody>"#);
        for r in &rows {
            let s = match settings_of(r) {
                Ok(s) => s,
                Err(e) => return ui.error_page(Nav::ApiKeys, "API keys", &e, ""),
            };
            let kind = if r.key_type == "ADMIN" { "admin" } else { "info" };
            let mut type_html = html::badge(&r.key_type, kind);
            if r.org_admin {
                type_html.push(' ');
                type_html.push_str(&html::badge("org admin", "muted"));
            }
            let you = if r.id == ui.principal().id {
                format!(" {}", html::badge("this session", "ok"))
            } else {
                String::new()
            };
            let expires = match r.expires_at {
                Some(e) if e <= now => format!("{} {}", html::when(Some(e)), html::badge("expired", "error")),
                other => html::when(other),
            };
            let prefix = if r.key_type == "ADMIN" { "kg_adm_" } else { "kg_inf_" };
            let id = html::url_enc(&r.id);
            let _ = write!(
                body,
                r#"<tr data-id="{rid}"><td data-label="Description"><span class="strong">{desc}</span>{you}</td><td data-label="Type">{type_html}</td><td data-label="Key"><code>{prefix}…{last6}</code></td><td data-label="Limits">{limits}</td><td data-label="Expires">{expires}</td><td data-label="Last used">{used}</td><td data-label="Created">{created}</td><td class="actions"><a class="btn btn-small" href="/ui/api-keys/{id}/rotate">Rotate</a> <a class="btn btn-small btn-danger-ghost" href="/ui/api-keys/{id}/delete">Delete</a></td></tr>"#,
                rid = E(&r.id),
                desc = if r.description.is_empty() {
                    r#"<span class="muted">(no description)</span>"#.to_string()
                } else {
                    esc(&r.description)
                },
                last6 = E(&r.last6),
                limits = limits_text(&s),
                used = html::when(r.last_used_at),
                created = html::when(Some(r.created_at)),
            );
        }
        body.push_str("</tbody></table></div>");
        body.push_str(&html::pager(
            "/ui/api-keys",
            &[("q", search.to_string()), ("type", want.to_string())],
            page,
            PER_PAGE,
            total,
        ));
    }
    ui.page(Nav::ApiKeys, "API keys", &body)
}

/// The create form's values (never a secret: there is none in it).
fn new_form_html(ui: &Ui, f: &BTreeMap<String, String>, vks: &[(String, String)]) -> String {
    let v = |k: &str| f.get(k).cloned().unwrap_or_default();
    let types = [
        ("INFERENCE", "INFERENCE: the gateway only"),
        ("ADMIN", "ADMIN: everything"),
    ];
    let periods = [
        ("LIFETIME", "lifetime (never resets)"),
        ("EPOCH", "per UTC day"),
        ("WEEK", "per week"),
        ("MONTH", "per month"),
    ];
    let privacy = [
        ("ALL", "all providers"),
        ("PRIVATE_ONLY", "private providers only"),
        ("PRIVATE_TEXT", "private providers for text"),
    ];
    let mut vk_opts: Vec<(&str, &str)> = vec![("", "none")];
    vk_opts.extend(vks.iter().map(|(slug, name)| (slug.as_str(), name.as_str())));
    let mut windows = String::new();
    for (k, label) in [
        ("rpm", "Requests / minute"),
        ("rph", "Requests / hour"),
        ("rpd", "Requests / day"),
        ("tpm", "Tokens / minute"),
        ("tph", "Tokens / hour"),
        ("tpd", "Tokens / day"),
    ] {
        windows.push_str(&html::field(label, k, &v(k), "number", r#" min="1""#, ""));
    }
    let kt = v("api_key_type");
    let lp = v("limit_period");
    let mp = v("model_privacy");
    format!(
        r#"<form method="post" action="/ui/api-keys/new" class="card form" id="api-key-form">{csrf}
<div class="grid">
<label class="field" for="api_key_type"><span>Type</span>{types}</label>
{desc}
{expires}
<label class="field" for="model_privacy"><span>Model privacy</span>{privacy}</label>
<label class="field" for="default_virtual_key"><span>Default virtual key</span>{vk}</label>
{ips}
</div>
<fieldset><legend>Consumption limit</legend><div class="grid">
{usd}
{tokens}
{requests}
<label class="field" for="limit_period"><span>Period</span>{period}</label>
</div></fieldset>
<fieldset><legend>Rate limits</legend><div class="grid">{windows}</div></fieldset>
<p class="help">A key can never get more rights or higher limits than the key you signed in with.</p>
<div class="form-actions"><button type="submit" class="btn btn-primary" id="create-api-key">Create API key</button> <a class="btn btn-ghost" href="/ui/api-keys">Cancel</a></div>
</form>"#,
        csrf = html::csrf_field(&ui.csrf),
        types = html::select(
            "api_key_type",
            "api_key_type",
            &types,
            if kt.is_empty() { "INFERENCE" } else { &kt }
        ),
        desc = html::field(
            "Description",
            "description",
            &v("description"),
            "text",
            r#" maxlength="500" required"#,
            ""
        ),
        expires = html::field("Expires on", "expires_at", &v("expires_at"), "date", "", "blank: never"),
        privacy = html::select(
            "model_privacy",
            "model_privacy",
            &privacy,
            if mp.is_empty() { "ALL" } else { &mp }
        ),
        vk = html::select(
            "default_virtual_key",
            "default_virtual_key",
            &vk_opts,
            &v("default_virtual_key")
        ),
        ips = html::field(
            "IP allow-list",
            "ip_allowlist",
            &v("ip_allowlist"),
            "text",
            r#" spellcheck="false" placeholder="10.0.0.0/8, 192.0.2.7""#,
            "comma-separated addresses or CIDRs; blank: anywhere"
        ),
        usd = html::field(
            "USD",
            "limit_usd",
            &v("limit_usd"),
            "text",
            r#" inputmode="decimal" placeholder="no limit""#,
            ""
        ),
        tokens = html::field(
            "Tokens",
            "limit_tokens",
            &v("limit_tokens"),
            "number",
            r#" min="0" placeholder="no limit""#,
            ""
        ),
        requests = html::field(
            "Requests",
            "limit_requests",
            &v("limit_requests"),
            "number",
            r#" min="0" placeholder="no limit""#,
            ""
        ),
        period = html::select(
            "limit_period",
            "limit_period",
            &periods,
            if lp.is_empty() { "LIFETIME" } else { &lp }
        ),
    )
}

async fn vk_options(state: &AppState, workspace: &str) -> Vec<(String, String)> {
    let (rows, _) = state
        .store
        .list_virtual_keys(workspace, Page { page: 1, limit: 500 })
        .await
        .unwrap_or_default();
    let mut out: Vec<(String, String)> = rows
        .into_iter()
        .map(|r| (r.slug.clone(), format!("{} ({})", r.name, r.slug)))
        .collect();
    out.sort();
    out
}

/// `GET /ui/api-keys/new`.
pub async fn new_form(State(state): State<AppState>, ui: Ui) -> Response {
    let vks = vk_options(&state, &ui.ctx.workspace).await;
    ui.page(
        Nav::ApiKeys,
        "Create API key",
        &new_form_html(&ui, &BTreeMap::new(), &vks),
    )
}

fn num<T: std::str::FromStr>(form: &Form, name: &str, label: &str) -> ApiResult<Option<T>> {
    form.get(name)
        .map(|v| {
            v.replace([',', '_'], "")
                .trim_start_matches('$')
                .parse::<T>()
                .map_err(|_| ApiError::bad_request(format!("{label} must be a number")))
        })
        .transpose()
}

fn body_of(form: &Form) -> ApiResult<CreateApiKey> {
    let consumption = ConsumptionInput {
        usd: num(form, "limit_usd", "The USD limit")?,
        tokens: num(form, "limit_tokens", "The token limit")?,
        requests: num(form, "limit_requests", "The request limit")?,
        ..Default::default()
    };
    let has_limit = consumption.usd.is_some() || consumption.tokens.is_some() || consumption.requests.is_some();
    let rl = KeyRateLimits {
        rpm: num(form, "rpm", "RPM")?,
        rph: num(form, "rph", "RPH")?,
        rpd: num(form, "rpd", "RPD")?,
        tpm: num(form, "tpm", "TPM")?,
        tph: num(form, "tph", "TPH")?,
        tpd: num(form, "tpd", "TPD")?,
    };
    let has_rl = [rl.rpm, rl.rph, rl.rpd, rl.tpm, rl.tph, rl.tpd]
        .iter()
        .any(Option::is_some);
    let ips: Vec<String> = form
        .text("ip_allowlist")
        .split([',', '\n', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    Ok(CreateApiKey {
        api_key_type: form.get("api_key_type").unwrap_or("INFERENCE").to_string(),
        description: form.text("description").to_string(),
        consumption_limit: has_limit.then_some(consumption),
        limit_period: if has_limit {
            form.get("limit_period").map(str::to_string)
        } else {
            None
        },
        expires_at: form.get("expires_at").map(str::to_string),
        model_privacy: form.get("model_privacy").filter(|p| *p != "ALL").map(str::to_string),
        ip_allowlist: (!ips.is_empty()).then_some(ips),
        rate_limits: has_rl.then_some(rl),
        default_virtual_key: form.get("default_virtual_key").map(str::to_string),
        virtual_keys: None,
        workspace: None,
    })
}

async fn json_of(resp: Response) -> Value {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// The page that shows a new secret, once. It is the answer to the POST itself: nothing
/// keeps the secret, so no later page can show it again.
fn secret_page(ui: &Ui, title: &str, data: &Value, secret: &str, note: &str) -> Response {
    let body = format!(
        r##"<section class="card secret-card" id="secret-card">
<h2>{title}</h2>
<p>Copy it now. keygate keeps only a keyed hash of it and <strong>will not show it again</strong>.</p>
<div class="secret-row"><code id="new-secret" class="secret">{secret}</code><button type="button" class="btn" data-copy="#new-secret" id="copy-secret">Copy</button></div>
{note}
<dl class="facts"><dt>Type</dt><dd>{kt}</dd><dt>Description</dt><dd>{desc}</dd><dt>Ends in</dt><dd><code>…{last6}</code></dd><dt>Expires</dt><dd>{exp}</dd></dl>
<p><a class="btn btn-primary" href="/ui/api-keys" id="secret-done">I have copied it</a></p>
</section>"##,
        title = E(title),
        secret = E(secret),
        note = note,
        kt = E(data["apiKeyType"].as_str().unwrap_or("")),
        desc = E(data["description"].as_str().unwrap_or("")),
        last6 = E(data["last6Chars"].as_str().unwrap_or("")),
        exp = E(data["expiresAt"].as_str().unwrap_or("never")),
    );
    let mut resp = ui.page(Nav::ApiKeys, title, &body);
    resp.headers_mut()
        .insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

/// `POST /ui/api-keys/new`: creates through the API's handler and shows the secret once.
pub async fn create(State(state): State<AppState>, ui: Ui, PostForm(form): PostForm) -> Response {
    let result = async {
        let body = body_of(&form)?;
        let resp = ak::create(State(state.clone()), ctx_of(&ui), JsonBody(body))
            .await?
            .into_response();
        Ok::<_, ApiError>(json_of(resp).await)
    }
    .await;
    match result {
        Ok(mut v) => {
            let data = v["data"].take();
            let secret = Zeroizing::new(data["apiKey"].as_str().unwrap_or("").to_string());
            secret_page(&ui, "Your new API key", &data, &secret, "")
        }
        Err(e) => {
            let mut values = BTreeMap::new();
            for k in [
                "api_key_type",
                "description",
                "expires_at",
                "model_privacy",
                "default_virtual_key",
                "ip_allowlist",
                "limit_usd",
                "limit_tokens",
                "limit_requests",
                "limit_period",
                "rpm",
                "rph",
                "rpd",
                "tpm",
                "tph",
                "tpd",
            ] {
                values.insert(k.to_string(), form.text(k).to_string());
            }
            let vks = vk_options(&state, &ui.ctx.workspace).await;
            ui.error_page(
                Nav::ApiKeys,
                "Create API key",
                &readable(e),
                &new_form_html(&ui, &values, &vks),
            )
        }
    }
}

async fn find(state: &AppState, ui: &Ui, id: &str) -> ApiResult<PlatformKeyRow> {
    state
        .store
        .get_platform_key(&ui.ctx.workspace, id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("There is no such API key in this workspace"),
            other => other.into(),
        })
}

fn back(ui: &Ui, e: ApiError) -> Response {
    ui.page_with(
        e.status,
        Nav::ApiKeys,
        "API keys",
        Some(Flash::Error(&readable(e.clone()).message)),
        r#"<p><a class="btn" href="/ui/api-keys">Back to API keys</a></p>"#,
    )
}

fn key_name(r: &PlatformKeyRow) -> String {
    let prefix = if r.key_type == "ADMIN" { "kg_adm_" } else { "kg_inf_" };
    if r.description.is_empty() {
        format!("{prefix}…{}", r.last6)
    } else {
        format!("{} ({prefix}…{})", r.description, r.last6)
    }
}

/// `GET /ui/api-keys/{id}/rotate`: asks first, with a grace period.
pub async fn rotate_form(State(state): State<AppState>, ui: Ui, Path(id): Path<String>) -> Response {
    let row = match find(&state, &ui, &id).await {
        Ok(r) => r,
        Err(e) => return back(&ui, e),
    };
    let graces = [
        ("0", "none: the old secret stops now"),
        ("300", "5 minutes"),
        ("3600", "1 hour"),
        ("86400", "1 day"),
        ("604800", "7 days"),
    ];
    let body = format!(
        r#"<div class="card narrow confirm"><h2>Rotate {name}?</h2>
<p>The key keeps its id, type and limits and gets a new secret, shown once.</p>
<form method="post" action="/ui/api-keys/{id}/rotate" class="stack">{csrf}
<label class="field" for="grace"><span>Keep the old secret valid for</span>{grace}</label>
<div><button type="submit" class="btn btn-primary" id="confirm-rotate">Rotate</button> <a class="btn btn-ghost" href="/ui/api-keys">Cancel</a></div></form></div>"#,
        name = E(&key_name(&row)),
        id = html::url_enc(&row.id),
        csrf = html::csrf_field(&ui.csrf),
        grace = html::select("grace_period_seconds", "grace", &graces, "0"),
    );
    ui.page(Nav::ApiKeys, "Rotate API key", &body)
}

/// `POST /ui/api-keys/{id}/rotate`: the new secret, once.
pub async fn rotate(
    State(state): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    PostForm(form): PostForm,
) -> Response {
    let row = match find(&state, &ui, &id).await {
        Ok(r) => r,
        Err(e) => return back(&ui, e),
    };
    let grace: u64 = form
        .get("grace_period_seconds")
        .and_then(|g| g.parse().ok())
        .unwrap_or(0);
    let body = serde_json::json!({"gracePeriodSeconds": grace}).to_string();
    match ak::rotate(
        State(state.clone()),
        ctx_of(&ui),
        Path(row.id.clone()),
        axum::body::Bytes::from(body),
    )
    .await
    {
        Ok(axum::Json(mut v)) => {
            let data = v["data"].take();
            let secret = Zeroizing::new(data["apiKey"].as_str().unwrap_or("").to_string());
            let note = if grace > 0 {
                format!(
                    r#"<p class="muted">The old secret stays valid for {} more seconds.</p>"#,
                    html::int(grace as i64)
                )
            } else {
                r#"<p class="muted">The old secret no longer works.</p>"#.to_string()
            };
            secret_page(&ui, "The rotated API key", &data, &secret, &note)
        }
        Err(e) => back(&ui, e),
    }
}

/// `GET /ui/api-keys/{id}/delete`: asks first.
pub async fn delete_form(State(state): State<AppState>, ui: Ui, Path(id): Path<String>) -> Response {
    let row = match find(&state, &ui, &id).await {
        Ok(r) => r,
        Err(e) => return back(&ui, e),
    };
    let own = if row.id == ui.principal().id {
        r#"<p class="flash flash-error">This is the key you are signed in with: deleting it signs you out.</p>"#
    } else {
        ""
    };
    let body = format!(
        r#"<div class="card narrow confirm"><h2>Delete {name}?</h2>
<p>Clients using it are refused from now on. This cannot be undone.</p>{own}
<form method="post" action="/ui/api-keys/{id}/delete">{csrf}<button type="submit" class="btn btn-danger" id="confirm-delete">Delete</button> <a class="btn btn-ghost" href="/ui/api-keys">Cancel</a></form></div>"#,
        name = E(&key_name(&row)),
        id = html::url_enc(&row.id),
        csrf = html::csrf_field(&ui.csrf),
    );
    ui.page(Nav::ApiKeys, "Delete API key", &body)
}

/// `POST /ui/api-keys/{id}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    PostForm(_form): PostForm,
) -> Response {
    let row = match find(&state, &ui, &id).await {
        Ok(r) => r,
        Err(e) => return back(&ui, e),
    };
    match ak::delete(
        State(state.clone()),
        ctx_of(&ui),
        crate::extract::QueryParams(DeleteQuery {
            id: Some(row.id.clone()),
        }),
    )
    .await
    {
        Ok(_) if row.id == ui.principal().id => super::redirect("/ui/login"),
        Ok(_) => ui.redirect_with("/ui/api-keys", &format!("Deleted API key {}.", key_name(&row))),
        Err(e) => back(&ui, e),
    }
}
