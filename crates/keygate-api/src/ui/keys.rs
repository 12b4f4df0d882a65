//! The Keys page: provider keys (list, search, add with hub-specific fields, edit, rename,
//! rotate, delete), through the service functions of `crate::provider_keys`. The views below
//! feed the templates `keys/*.html`.
//!
//! What must stay true: no secret (API key or secret hub setting) is put in a view: a secret
//! field's value is always empty, and a form shown again after an error keeps only public
//! values.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use keygate_store::{Page, ProviderKeyRow, StoreError};
use keygate_types::ModelHub;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::html::{self, Flash, Frame, Nav, Opt, Pager, Time};
use super::{matches, page_of, Back, Form, Params, PostForm, Ui};
use crate::error::{ApiError, ApiResult};
use crate::provider_keys::{self as pk, CreateProviderKey, SecretInput, UpdateProviderKey};
use crate::state::AppState;

const PER_PAGE: u32 = 25;

/// The way back from a page that failed.
const BACK: Back = Some(("/ui/keys", "Back to keys"));

/// A hub-specific setting as the form shows it.
struct HubField {
    name: &'static str,
    label: &'static str,
    secret: bool,
    textarea: bool,
    help: &'static str,
}

const fn f(name: &'static str, label: &'static str, help: &'static str) -> HubField {
    HubField {
        name,
        label,
        secret: false,
        textarea: false,
        help,
    }
}

const fn s(name: &'static str, label: &'static str, help: &'static str) -> HubField {
    HubField {
        name,
        label,
        secret: true,
        textarea: false,
        help,
    }
}

const VERTEX: &[HubField] = &[
    f("project_id", "Project id", "Google Cloud project"),
    f("region", "Region", "e.g. us-central1"),
    f("client_id", "OAuth client id", "with client secret and refresh token…"),
    s("client_secret", "OAuth client secret", ""),
    s("refresh_token", "OAuth refresh token", ""),
    HubField {
        name: "service_account_json",
        label: "…or service-account JSON",
        secret: true,
        textarea: true,
        help: "instead of the OAuth fields",
    },
    f("token_url", "Token URL", "optional override of Google's OAuth endpoint"),
];
const AZURE: &[HubField] = &[
    f(
        "resource_name",
        "Resource name",
        "https://{resource}.openai.azure.com (or give a base URL)",
    ),
    f("api_version", "API version", "default 2024-10-21"),
    HubField {
        name: "deployments",
        label: "Deployments",
        secret: false,
        textarea: true,
        help: "one alias=deployment per line",
    },
    f(
        "default_deployment",
        "Default deployment",
        "alias used when a request names none",
    ),
];
const DIGITALOCEAN: &[HubField] = &[
    f(
        "agent_id",
        "Agent id",
        "for an agent; leave blank for serverless inference",
    ),
    s("agent_key", "Agent key", ""),
];
const BEDROCK: &[HubField] = &[
    f("region", "Region", "e.g. us-east-1"),
    s("access_key", "Access key id", ""),
    s("secret_access_key", "Secret access key", ""),
];
const BEDROCK_AGENTS: &[HubField] = &[
    f("region", "Region", "e.g. us-east-1"),
    s("access_key", "Access key id", ""),
    s("secret_access_key", "Secret access key", ""),
    f("agent_id", "Agent id", ""),
    f("agent_alias_id", "Agent alias id", ""),
];
const CUSTOM: &[HubField] = &[
    f("auth_header", "Auth header", "default Authorization"),
    f("auth_scheme", "Auth scheme", "default Bearer"),
];
const ANTHROPIC: &[HubField] = &[f("anthropic_version", "anthropic-version", "optional")];

fn hub_fields(hub: &str) -> &'static [HubField] {
    match hub {
        "vertex" => VERTEX,
        "azure" => AZURE,
        "digitalocean" => DIGITALOCEAN,
        "bedrock" => BEDROCK,
        "bedrockAgents" => BEDROCK_AGENTS,
        "custom" => CUSTOM,
        "anthropic" => ANTHROPIC,
        _ => &[],
    }
}

fn hub_label(hub: &str) -> &str {
    match hub {
        "openai" => "OpenAI",
        "together" => "Together",
        "mistral" => "Mistral",
        "fireworks" => "Fireworks",
        "nvidia" => "NVIDIA",
        "vertex" => "Vertex AI",
        "bedrock" => "Bedrock",
        "bedrockAgents" => "Bedrock Agents",
        "azure" => "Azure OpenAI",
        "custom" => "Custom",
        "digitalocean" => "DigitalOcean",
        "openrouter" => "OpenRouter",
        "anthropic" => "Anthropic",
        other => other,
    }
}

/// Every provider key of the workspace (a workspace holds few; the UI filters in memory).
pub(super) async fn all_provider_keys(state: &AppState, workspace: &str) -> ApiResult<Vec<ProviderKeyRow>> {
    let mut out = Vec::new();
    for page in 1..=20 {
        let (rows, total) = state
            .store
            .list_provider_keys(workspace, Page { page, limit: 500 })
            .await?;
        let done = rows.is_empty() || i64::from(page) * 500 >= total;
        out.extend(rows);
        if done {
            break;
        }
    }
    Ok(out)
}

/// `N per minute` and the like.
pub(super) fn rate_text(per: i64, interval: i64) -> String {
    let unit = match interval {
        1 => "second".to_string(),
        60 => "minute".to_string(),
        3600 => "hour".to_string(),
        86_400 => "day".to_string(),
        s => format!("{s} s"),
    };
    format!("{} per {unit}", html::int(per))
}

async fn find(state: &AppState, ui: &Ui, id: &str) -> ApiResult<ProviderKeyRow> {
    state
        .store
        .get_provider_key(&ui.ctx.workspace, id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("There is no such provider key in this workspace"),
            other => other.into(),
        })
}

fn not_found(ui: &Ui, e: &ApiError) -> Response {
    ui.error_page(Nav::Keys, "Keys", e, BACK)
}

/// One provider key of the list.
struct KeyItem<'a> {
    row: &'a ProviderKeyRow,
    /// The id, percent-encoded for the links.
    id: String,
    hub: &'a str,
    rate: String,
    /// Whether the rate limit is the key's own (not the hub's default).
    explicit: bool,
    used: Option<Time>,
}

/// `keys/list.html`.
#[derive(Template)]
#[template(path = "keys/list.html")]
struct ListPage<'a> {
    frame: Frame<'a>,
    search: &'a str,
    hubs: Vec<Opt>,
    total: usize,
    rows: Vec<KeyItem<'a>>,
    pager: Pager,
}

/// `GET /ui/keys`: the list, searchable by name, hub or URL and filterable by hub.
pub async fn list(State(state): State<AppState>, ui: Ui, q: Params) -> Response {
    let rows = match all_provider_keys(&state, &ui.ctx.workspace).await {
        Ok(r) => r,
        Err(e) => return ui.error_page(Nav::Keys, "Keys", &e, None),
    };
    let search = q.text("q");
    let hub = q.text("hub");
    let mut rows: Vec<ProviderKeyRow> = rows
        .into_iter()
        .filter(|r| {
            (hub.is_empty() || r.hub == hub) && matches(search, &[&r.name, &r.hub, r.base_url.as_deref().unwrap_or("")])
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    let total = rows.len();
    let page = q.page();
    let rows = page_of(rows, page, PER_PAGE);

    let mut hubs: Vec<(&str, &str)> = vec![("", "All hubs")];
    hubs.extend(ModelHub::ALL.iter().map(|h| (h.as_str(), hub_label(h.as_str()))));
    let items = rows
        .iter()
        .map(|r| {
            let (per, interval, explicit) = pk::rate_limit_of(r);
            KeyItem {
                row: r,
                id: html::url_enc(&r.id),
                hub: hub_label(&r.hub),
                rate: rate_text(per, interval),
                explicit,
                used: html::when(r.last_used_at),
            }
        })
        .collect();
    ui.page(&ListPage {
        frame: ui.frame(Nav::Keys, "Keys"),
        search,
        hubs: html::options(&hubs, hub),
        total,
        rows: items,
        pager: html::pager(
            "/ui/keys",
            &[("q", search.to_string()), ("hub", hub.to_string())],
            page,
            PER_PAGE,
            total,
        ),
    })
}

/// What the add form shows again after an error (never a secret).
#[derive(Default)]
struct Draft {
    name: String,
    hub: String,
    base_url: String,
    rl_per: String,
    rl_interval: String,
    private: bool,
    hub_values: BTreeMap<String, String>,
}

impl Draft {
    fn from_form(form: &Form) -> Draft {
        let hub = form.text("model_hub").to_string();
        let mut hub_values = BTreeMap::new();
        for fd in hub_fields(&hub).iter().filter(|fd| !fd.secret) {
            if let Some(v) = form.get(&format!("hc.{hub}.{}", fd.name)) {
                hub_values.insert(format!("{hub}.{}", fd.name), v.to_string());
            }
        }
        Draft {
            name: form.text("name").to_string(),
            hub,
            base_url: form.text("base_url").to_string(),
            rl_per: form.text("rate_limit_per_interval").to_string(),
            rl_interval: form.text("rate_limit_interval").to_string(),
            private: form.checked("private"),
            hub_values,
        }
    }
}

/// One hub's settings in a form (`keys/hub_fields.html`).
struct HubFieldset {
    hub: &'static str,
    label: &'static str,
    hidden: bool,
    fields: Vec<HubInput>,
}

/// One hub setting's input. A secret's `value` is always empty.
struct HubInput {
    name: String,
    id: String,
    label: &'static str,
    value: String,
    secret: bool,
    textarea: bool,
    help: &'static str,
}

/// The fieldsets of hub settings: one per hub (only `hub`'s visible), or only `only`'s.
fn hub_fieldsets(
    selected: &str,
    values: &BTreeMap<String, String>,
    only: Option<&str>,
    stored: &[String],
) -> Vec<HubFieldset> {
    let mut out = Vec::new();
    for hub in ModelHub::ALL {
        let h = hub.as_str();
        if only.is_some_and(|o| o != h) {
            continue;
        }
        let fields = hub_fields(h);
        if fields.is_empty() {
            continue;
        }
        let inputs = fields
            .iter()
            .map(|fd| {
                let value = if fd.secret {
                    String::new()
                } else {
                    values.get(&format!("{h}.{}", fd.name)).cloned().unwrap_or_default()
                };
                let help = if fd.secret && stored.iter().any(|s| s == fd.name) {
                    "stored sealed; leave blank to keep it, or enter a new value to rotate"
                } else {
                    fd.help
                };
                HubInput {
                    name: format!("hc.{h}.{}", fd.name),
                    id: format!("f-hc-{h}-{}", fd.name),
                    label: fd.label,
                    value,
                    secret: fd.secret,
                    textarea: fd.textarea,
                    help,
                }
            })
            .collect();
        out.push(HubFieldset {
            hub: h,
            label: hub_label(h),
            hidden: h != selected,
            fields: inputs,
        });
    }
    out
}

/// `keys/new.html`.
#[derive(Template)]
#[template(path = "keys/new.html")]
struct NewPage<'a> {
    frame: Frame<'a>,
    draft: &'a Draft,
    hubs: Vec<Opt>,
    hub_fieldsets: Vec<HubFieldset>,
}

fn new_view<'a>(frame: Frame<'a>, d: &'a Draft) -> NewPage<'a> {
    let hub = if d.hub.is_empty() { "openai" } else { d.hub.as_str() };
    let hubs: Vec<(&str, &str)> = ModelHub::ALL
        .iter()
        .map(|h| (h.as_str(), hub_label(h.as_str())))
        .collect();
    NewPage {
        frame,
        draft: d,
        hubs: html::options(&hubs, hub),
        hub_fieldsets: hub_fieldsets(hub, &d.hub_values, None, &[]),
    }
}

/// `GET /ui/keys/new`.
pub async fn new_form(ui: Ui, q: Params) -> Response {
    let d = Draft {
        hub: q.get("hub").unwrap_or("openai").to_string(),
        ..Default::default()
    };
    ui.page(&new_view(ui.frame(Nav::Keys, "Add new key"), &d))
}

fn opt_u32(form: &Form, name: &str, label: &str) -> ApiResult<Option<u32>> {
    form.get(name)
        .map(|v| {
            v.parse::<u32>()
                .map_err(|_| ApiError::bad_request(format!("{label} must be a whole number")))
        })
        .transpose()
}

/// The hub config the form gives for `hub` (snake_case names), None when empty.
fn hub_config_of(form: &Form, hub: &str, public_only: bool) -> ApiResult<Option<Map<String, Value>>> {
    let mut map = Map::new();
    for fd in hub_fields(hub) {
        if public_only && fd.secret {
            continue;
        }
        let Some(v) = form.get(&format!("hc.{hub}.{}", fd.name)) else {
            continue;
        };
        if fd.name == "deployments" {
            let mut deps = Map::new();
            for line in v.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let Some((alias, dep)) = line.split_once('=') else {
                    return Err(ApiError::bad_request(
                        "Deployments: write one alias=deployment per line",
                    ));
                };
                deps.insert(alias.trim().to_string(), Value::String(dep.trim().to_string()));
            }
            map.insert(fd.name.into(), Value::Object(deps));
        } else {
            map.insert(fd.name.into(), Value::String(v.to_string()));
        }
    }
    Ok((!map.is_empty()).then_some(map))
}

fn secret_of(form: &Form, name: &str) -> Option<SecretInput> {
    form.get(name).map(|v| SecretInput(Zeroizing::new(v.to_string())))
}

/// `POST /ui/keys/new`.
pub async fn create(State(state): State<AppState>, ui: Ui, PostForm(form): PostForm) -> Response {
    let result = async {
        let hub = form.text("model_hub").to_string();
        let input = CreateProviderKey {
            name: form.text("name").to_string(),
            model_hub: hub.clone(),
            api_key: secret_of(&form, "api_key"),
            base_url: form.get("base_url").map(str::to_string),
            hub_config: hub_config_of(&form, &hub, false)?.map(Value::Object),
            rate_limit_per_interval: opt_u32(&form, "rate_limit_per_interval", "Rate limit")?,
            rate_limit_interval: opt_u32(&form, "rate_limit_interval", "The rate-limit interval")?,
            private: Some(form.checked("private")),
        };
        pk::create(&state, &ui.ctx, input).await
    }
    .await;
    match result {
        Ok(row) => {
            state.refresh_caches().await;
            ui.redirect_with("/ui/keys", &format!("Added provider key {}.", row.name))
        }
        Err(e) => {
            let e = readable(e);
            let d = Draft::from_form(&form);
            ui.render(e.status, &new_view(ui.error_frame(Nav::Keys, "Add new key", &e), &d))
        }
    }
}

/// A service error as a sentence for people.
pub(super) fn readable(mut e: ApiError) -> ApiError {
    e.message = super::sentence(&e.message);
    e
}

/// `keys/edit.html`.
#[derive(Template)]
#[template(path = "keys/edit.html")]
struct EditPage<'a> {
    frame: Frame<'a>,
    row: &'a ProviderKeyRow,
    /// The id, percent-encoded for the forms' addresses.
    id: String,
    hub: &'a str,
    url: String,
    rate: String,
    explicit: bool,
    /// The virtual keys that point at it: (percent-encoded id, slug).
    used_by: Vec<(String, String)>,
    created: Option<Time>,
    updated: Option<Time>,
    used: Option<Time>,
    base_url: &'a str,
    rl_per: String,
    rl_interval: String,
    hub_fieldsets: Vec<HubFieldset>,
}

/// The edit page of a provider key; an error naming the key when its record cannot be read.
async fn edit_view<'a>(
    state: &AppState,
    ui: &Ui,
    row: &'a ProviderKeyRow,
    frame: Frame<'a>,
) -> ApiResult<EditPage<'a>> {
    let v = pk::view(row)?;
    let settings = pk::settings_of(row)?;
    let mut values = BTreeMap::new();
    for (k, val) in settings.to_input_map() {
        let text = match val {
            Value::String(s) => s,
            Value::Object(m) => m
                .iter()
                .map(|(a, d)| format!("{a}={}", d.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("\n"),
            other => other.to_string(),
        };
        values.insert(format!("{}.{k}", row.hub), text);
    }
    let (per, interval, explicit) = pk::rate_limit_of(row);
    let vks = used_by(state, &ui.ctx.workspace, row).await;
    Ok(EditPage {
        frame,
        row,
        id: html::url_enc(&row.id),
        hub: hub_label(&row.hub),
        url: v.effective_base_url.unwrap_or_else(|| "—".to_string()),
        rate: rate_text(per, interval),
        explicit,
        used_by: vks,
        created: html::when(Some(row.created_at)),
        updated: html::when(Some(row.updated_at)),
        used: html::when(row.last_used_at),
        base_url: row.base_url.as_deref().unwrap_or(""),
        rl_per: if explicit { per.to_string() } else { String::new() },
        rl_interval: if explicit { interval.to_string() } else { String::new() },
        hub_fieldsets: hub_fieldsets(&row.hub, &values, Some(&row.hub), &settings.secret_fields),
    })
}

/// The virtual keys that point at a provider key: (percent-encoded id, slug).
async fn used_by(state: &AppState, workspace: &str, row: &ProviderKeyRow) -> Vec<(String, String)> {
    super::virtual_keys::using_provider(state, workspace, &row.id)
        .await
        .into_iter()
        .map(|(id, slug)| (html::url_enc(&id), slug))
        .collect()
}

/// `GET /ui/keys/{id}`: details, settings, rename, rotate, delete.
pub async fn edit_form(State(state): State<AppState>, ui: Ui, Path(id): Path<String>) -> Response {
    match find(&state, &ui, &id).await {
        Ok(row) => {
            let title = format!("Key {}", row.name);
            match edit_view(&state, &ui, &row, ui.frame(Nav::Keys, &title)).await {
                Ok(page) => ui.page(&page),
                Err(e) => not_found(&ui, &e),
            }
        }
        Err(e) => not_found(&ui, &e),
    }
}

async fn after_error(state: &AppState, ui: &Ui, id: &str, e: ApiError) -> Response {
    match find(state, ui, id).await {
        Ok(row) => {
            let title = format!("Key {}", row.name);
            let e = readable(e);
            match edit_view(state, ui, &row, ui.error_frame(Nav::Keys, &title, &e)).await {
                Ok(page) => ui.render(e.status, &page),
                Err(unreadable) => not_found(ui, &unreadable),
            }
        }
        Err(e2) => not_found(ui, &e2),
    }
}

/// `POST /ui/keys/{id}`: saves the settings that changed.
pub async fn update(
    State(state): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    PostForm(form): PostForm,
) -> Response {
    let current = match find(&state, &ui, &id).await {
        Ok(r) => r,
        Err(e) => return not_found(&ui, &e),
    };
    let result = async {
        let mut patch = UpdateProviderKey::default();
        let base_url = form.get("base_url").map(str::to_string);
        if base_url != current.base_url {
            patch.base_url = Some(base_url);
        }
        let per = opt_u32(&form, "rate_limit_per_interval", "Rate limit")?;
        let interval = opt_u32(&form, "rate_limit_interval", "The rate-limit interval")?;
        let now_per = current.rate_limit_per_interval.and_then(|v| u32::try_from(v).ok());
        let now_int = current.rate_limit_interval.and_then(|v| u32::try_from(v).ok());
        match per {
            None if now_per.is_some() => patch.rate_limit_per_interval = Some(None),
            None => {}
            Some(p) => {
                let i = interval.unwrap_or(60);
                if Some(p) != now_per || Some(i) != now_int {
                    patch.rate_limit_per_interval = Some(Some(p));
                    patch.rate_limit_interval = Some(Some(i));
                }
            }
        }
        if form.checked("private") != current.private {
            patch.private = Some(form.checked("private"));
        }
        // Hub settings: public fields that changed (blank removes), secret fields given.
        let settings = pk::settings_of(&current)?;
        let old = settings.to_input_map();
        let given = hub_config_of(&form, &current.hub, false)?.unwrap_or_default();
        let mut hc = Map::new();
        for fd in hub_fields(&current.hub) {
            let new = given.get(fd.name);
            if fd.secret {
                if let Some(v) = new {
                    hc.insert(fd.name.into(), v.clone());
                }
                continue;
            }
            let before = old.get(fd.name);
            match (before, new) {
                (Some(_), None) => {
                    hc.insert(fd.name.into(), Value::Null);
                }
                (b, Some(n)) if b != Some(n) => {
                    hc.insert(fd.name.into(), n.clone());
                }
                _ => {}
            }
        }
        if !hc.is_empty() {
            patch.hub_config = Some(Value::Object(hc));
        }
        pk::update(&state, &ui.ctx, current.clone(), patch).await
    }
    .await;
    match result {
        Ok(row) => {
            state.refresh_caches().await;
            ui.redirect_with("/ui/keys", &format!("Saved the settings of {}.", row.name))
        }
        Err(e) => after_error(&state, &ui, &id, e).await,
    }
}

/// `POST /ui/keys/{id}/rename`.
pub async fn rename(
    State(state): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    PostForm(form): PostForm,
) -> Response {
    let current = match find(&state, &ui, &id).await {
        Ok(r) => r,
        Err(e) => return not_found(&ui, &e),
    };
    let old = current.name.clone();
    match pk::rename(&state, &ui.ctx, current, form.text("new_name")).await {
        Ok(row) => {
            state.refresh_caches().await;
            ui.redirect_with("/ui/keys", &format!("Renamed {old} to {}.", row.name))
        }
        Err(e) => after_error(&state, &ui, &id, e).await,
    }
}

/// `POST /ui/keys/{id}/rotate`: a new secret; the version goes up.
pub async fn rotate(
    State(state): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    PostForm(form): PostForm,
) -> Response {
    let current = match find(&state, &ui, &id).await {
        Ok(r) => r,
        Err(e) => return not_found(&ui, &e),
    };
    let result = async {
        let Some(secret) = secret_of(&form, "api_key") else {
            return Err(ApiError::bad_request("Enter the new API key"));
        };
        let patch = UpdateProviderKey {
            api_key: Some(secret),
            grace_period_seconds: opt_u32(&form, "grace_period_seconds", "The grace period")?,
            ..Default::default()
        };
        pk::update(&state, &ui.ctx, current, patch).await
    }
    .await;
    match result {
        Ok(row) => {
            state.refresh_caches().await;
            ui.redirect_with(
                "/ui/keys",
                &format!("Rotated {}: secret version {}.", row.name, row.secret_version),
            )
        }
        Err(e) => after_error(&state, &ui, &id, e).await,
    }
}

/// `GET /ui/keys/{id}/delete`: asks first.
pub async fn delete_form(State(state): State<AppState>, ui: Ui, Path(id): Path<String>) -> Response {
    let row = match find(&state, &ui, &id).await {
        Ok(r) => r,
        Err(e) => return not_found(&ui, &e),
    };
    let vks = super::virtual_keys::using_provider(&state, &ui.ctx.workspace, &row.id).await;
    ui.page(&DeletePage {
        frame: ui.frame(Nav::Keys, "Delete key"),
        row: &row,
        id: html::url_enc(&row.id),
        used_by: vks,
    })
}

/// `keys/delete.html`.
#[derive(Template)]
#[template(path = "keys/delete.html")]
struct DeletePage<'a> {
    frame: Frame<'a>,
    row: &'a ProviderKeyRow,
    id: String,
    /// The virtual keys that would stop working: (id, slug).
    used_by: Vec<(String, String)>,
}

/// `POST /ui/keys/{id}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    PostForm(_form): PostForm,
) -> Response {
    let row = match find(&state, &ui, &id).await {
        Ok(r) => r,
        Err(e) => return not_found(&ui, &e),
    };
    match pk::delete(&state, &ui.ctx, &row).await {
        Ok(_) => {
            state.refresh_caches().await;
            ui.redirect_with("/ui/keys", &format!("Deleted provider key {}.", row.name))
        }
        Err(e) => ui.message_page(
            e.status,
            Nav::Keys,
            "Keys",
            Flash::Error(&readable(e.clone()).message),
            BACK,
        ),
    }
}
