//! The API keys page: platform keys (list, search, create with the secret shown once and a
//! copy button, rotate with a grace period, delete), through the handlers of
//! `crate::api_keys`, so the privilege rule, throttle and cap apply exactly as in the API. The
//! views below feed the templates `api_keys/*.html`.
//!
//! What must stay true: a secret appears in one page only, the answer to the POST that made
//! it (`no-store`); every other page shows a key by its last characters.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use keygate_store::{Page, PlatformKeyRow, StoreError};
use serde_json::Value;
use zeroize::Zeroizing;

use super::html::{self, Flash, Frame, Nav, Opt, Pager, Time};
use super::keys::readable;
use super::{matches, page_of, Back, Form, Params, PostForm, Ui};
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

/// A key's limits as lines of text, and its IP allow-list when it has one.
struct Limits {
    lines: Vec<String>,
    ips: Option<String>,
}

impl Limits {
    fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.ips.is_none()
    }
}

fn limits_text(s: &KeySettings) -> Limits {
    let mut parts = Vec::new();
    let period = period_text(s.period());
    for (k, v) in &s.consumption_limit {
        let text = match k.as_str() {
            "usd" => format!("{}{period}", html::usd(*v)),
            "diem" | "vcu" => format!("{} {}{period}", html::usd(*v).trim_start_matches('$'), k.to_uppercase()),
            other => format!("{} {other}{period}", html::int(*v)),
        };
        parts.push(text);
    }
    for (k, v) in &s.rate_limits {
        parts.push(format!("{} {k}", html::int(*v as i64)));
    }
    Limits {
        lines: parts,
        ips: (!s.ip_allowlist.is_empty()).then(|| s.ip_allowlist.join(", ")),
    }
}

/// One API key of the list.
struct ApiKeyItem<'a> {
    row: &'a PlatformKeyRow,
    /// The id, percent-encoded for the links.
    id: String,
    type_kind: &'static str,
    /// Whether it is the key of this session.
    you: bool,
    prefix: &'static str,
    limits: Limits,
    expires: Option<Time>,
    expired: bool,
    used: Option<Time>,
    created: Option<Time>,
}

/// `api_keys/list.html`.
#[derive(Template)]
#[template(path = "api_keys/list.html")]
struct ListPage<'a> {
    frame: Frame<'a>,
    search: &'a str,
    types: Vec<Opt>,
    total: usize,
    rows: Vec<ApiKeyItem<'a>>,
    pager: Pager,
}

/// `GET /ui/api-keys`.
pub async fn list(State(state): State<AppState>, ui: Ui, q: Params) -> Response {
    let rows = match all_keys(&state, &ui.ctx.workspace).await {
        Ok(r) => r,
        Err(e) => return ui.error_page(Nav::ApiKeys, "API keys", &e, None),
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

    let types = [("", "Any type"), ("ADMIN", "ADMIN"), ("INFERENCE", "INFERENCE")];
    let items = rows
        .iter()
        .map(|r| {
            Ok(ApiKeyItem {
                row: r,
                id: html::url_enc(&r.id),
                type_kind: if r.key_type == "ADMIN" { "admin" } else { "info" },
                you: r.id == ui.principal().id,
                prefix: if r.key_type == "ADMIN" { "kg_adm_" } else { "kg_inf_" },
                limits: limits_text(&settings_of(r)?),
                expires: html::when(r.expires_at),
                expired: r.expires_at.is_some_and(|e| e <= now),
                used: html::when(r.last_used_at),
                created: html::when(Some(r.created_at)),
            })
        })
        .collect::<ApiResult<Vec<_>>>();
    let items = match items {
        Ok(items) => items,
        Err(e) => return ui.error_page(Nav::ApiKeys, "API keys", &e, None),
    };
    ui.page(&ListPage {
        frame: ui.frame(Nav::ApiKeys, "API keys"),
        search,
        types: html::options(&types, want),
        total,
        rows: items,
        pager: html::pager(
            "/ui/api-keys",
            &[("q", search.to_string()), ("type", want.to_string())],
            page,
            PER_PAGE,
            total,
        ),
    })
}

/// `api_keys/new.html`: the create form with its values (never a secret: there is none in it).
#[derive(Template)]
#[template(path = "api_keys/new.html")]
struct NewPage<'a> {
    frame: Frame<'a>,
    values: &'a BTreeMap<String, String>,
    types: Vec<Opt>,
    privacy: Vec<Opt>,
    vks: Vec<Opt>,
    periods: Vec<Opt>,
    windows: [(&'static str, &'static str); 6],
}

impl NewPage<'_> {
    /// The value of field `k` (blank when none).
    fn v(&self, k: &str) -> &str {
        self.values.get(k).map(String::as_str).unwrap_or("")
    }
}

fn new_view<'a>(frame: Frame<'a>, f: &'a BTreeMap<String, String>, vks: &[(String, String)]) -> NewPage<'a> {
    let v = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
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
    let kt = v("api_key_type");
    let lp = v("limit_period");
    let mp = v("model_privacy");
    NewPage {
        frame,
        values: f,
        types: html::options(&types, if kt.is_empty() { "INFERENCE" } else { kt }),
        privacy: html::options(&privacy, if mp.is_empty() { "ALL" } else { mp }),
        vks: html::options(&vk_opts, v("default_virtual_key")),
        periods: html::options(&periods, if lp.is_empty() { "LIFETIME" } else { lp }),
        windows: [
            ("rpm", "Requests / minute"),
            ("rph", "Requests / hour"),
            ("rpd", "Requests / day"),
            ("tpm", "Tokens / minute"),
            ("tph", "Tokens / hour"),
            ("tpd", "Tokens / day"),
        ],
    }
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
    let values = BTreeMap::new();
    ui.page(&new_view(ui.frame(Nav::ApiKeys, "Create API key"), &values, &vks))
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

/// `api_keys/secret.html`: a new secret, once.
#[derive(Template)]
#[template(path = "api_keys/secret.html")]
struct SecretPage<'a> {
    frame: Frame<'a>,
    secret: &'a str,
    note: Option<String>,
    key_type: &'a str,
    description: &'a str,
    last6: &'a str,
    expires: &'a str,
}

/// The page that shows a new secret, once. It is the answer to the POST itself: nothing
/// keeps the secret, so no later page can show it again.
fn secret_page(ui: &Ui, title: &str, data: &Value, secret: &str, note: Option<String>) -> Response {
    let mut resp = ui.page(&SecretPage {
        frame: ui.frame(Nav::ApiKeys, title),
        secret,
        note,
        key_type: data["apiKeyType"].as_str().unwrap_or(""),
        description: data["description"].as_str().unwrap_or(""),
        last6: data["last6Chars"].as_str().unwrap_or(""),
        expires: data["expiresAt"].as_str().unwrap_or("never"),
    });
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
            secret_page(&ui, "Your new API key", &data, &secret, None)
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
            let e = readable(e);
            ui.render(
                e.status,
                &new_view(ui.error_frame(Nav::ApiKeys, "Create API key", &e), &values, &vks),
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

/// The way back from a page that failed.
const BACK: Back = Some(("/ui/api-keys", "Back to API keys"));

fn back(ui: &Ui, e: ApiError) -> Response {
    ui.message_page(
        e.status,
        Nav::ApiKeys,
        "API keys",
        Flash::Error(&readable(e.clone()).message),
        BACK,
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
    ui.page(&RotatePage {
        frame: ui.frame(Nav::ApiKeys, "Rotate API key"),
        name: key_name(&row),
        id: html::url_enc(&row.id),
        graces: html::options(&graces, "0"),
    })
}

/// `api_keys/rotate.html`.
#[derive(Template)]
#[template(path = "api_keys/rotate.html")]
struct RotatePage<'a> {
    frame: Frame<'a>,
    name: String,
    id: String,
    graces: Vec<Opt>,
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
                    "The old secret stays valid for {} more seconds.",
                    html::int(grace as i64)
                )
            } else {
                "The old secret no longer works.".to_string()
            };
            secret_page(&ui, "The rotated API key", &data, &secret, Some(note))
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
    ui.page(&DeletePage {
        frame: ui.frame(Nav::ApiKeys, "Delete API key"),
        name: key_name(&row),
        id: html::url_enc(&row.id),
        own: row.id == ui.principal().id,
    })
}

/// `api_keys/delete.html`.
#[derive(Template)]
#[template(path = "api_keys/delete.html")]
struct DeletePage<'a> {
    frame: Frame<'a>,
    name: String,
    id: String,
    /// Whether it is the key of this session (deleting it signs out).
    own: bool,
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
