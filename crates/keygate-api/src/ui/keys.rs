//! The Keys page: provider keys (list, search, add with hub-specific fields, edit, rename,
//! rotate, delete), through the service functions of `crate::provider_keys`.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::{Path, State};
use axum::response::Response;
use keygate_store::{Page, ProviderKeyRow, StoreError};
use keygate_types::ModelHub;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::html::{self, esc, Flash, Nav, E};
use super::{matches, page_of, Form, Params, PostForm, Ui};
use crate::error::{ApiError, ApiResult};
use crate::provider_keys::{self as pk, CreateProviderKey, SecretInput, UpdateProviderKey};
use crate::state::AppState;

const PER_PAGE: u32 = 25;

/// A small lock: the value is stored sealed by the vault.
const LOCK: &str = r#" <svg class="lock" viewBox="0 0 16 16" role="img" aria-label="stored encrypted"><title>stored encrypted</title><rect x="3" y="7" width="10" height="7" rx="1.5"/><path d="M5.5 7V5a2.5 2.5 0 0 1 5 0v2"/></svg>"#;

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
    ui.error_page(
        Nav::Keys,
        "Keys",
        e,
        r#"<p><a class="btn" href="/ui/keys">Back to keys</a></p>"#,
    )
}

/// `GET /ui/keys`: the list, searchable by name, hub or URL and filterable by hub.
pub async fn list(State(state): State<AppState>, ui: Ui, q: Params) -> Response {
    let rows = match all_provider_keys(&state, &ui.ctx.workspace).await {
        Ok(r) => r,
        Err(e) => return ui.error_page(Nav::Keys, "Keys", &e, ""),
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
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<div class="toolbar">{}<a class="btn btn-primary" href="/ui/keys/new" id="add-key">Add new key</a></div>"#,
        html::filter_bar(
            "/ui/keys",
            search,
            "Search name, hub or URL",
            &html::select("hub", "filter-hub", &hubs, hub)
        )
    );
    if total == 0 {
        body.push_str(
            r#"<div class="empty"><p>No provider keys match.</p><p class="muted">A provider key is a model hub's secret (OpenAI, Azure, Vertex…), kept encrypted; virtual keys point at it.</p></div>"#,
        );
    } else {
        body.push_str(
            r#"<div class="table-wrap"><table class="list" id="keys-table"><thead><tr><th>Name</th><th>Hub</th><th>Secret</th><th>Version</th><th>Rate limit</th><th>Last used</th><th class="actions">Actions</th></tr></thead><tbody>"#,
        );
        for r in &rows {
            let (per, interval, explicit) = pk::rate_limit_of(r);
            let rl = format!(
                "{}{}",
                esc(&rate_text(per, interval)),
                if explicit {
                    ""
                } else {
                    r#" <span class="muted">(hub default)</span>"#
                }
            );
            let hint = match &r.secret_hint {
                Some(h) => format!("<code>…{}</code>", E(h)),
                None => r#"<span class="muted">hidden</span>"#.to_string(),
            };
            let id = html::url_enc(&r.id);
            let _ = write!(
                body,
                r#"<tr data-name="{name}"><td data-label="Name"><a class="strong" href="/ui/keys/{id}">{name}</a>{private}</td><td data-label="Hub">{hub}</td><td data-label="Secret">{hint}</td><td data-label="Version">v{ver}</td><td data-label="Rate limit">{rl}</td><td data-label="Last used">{used}</td><td class="actions"><a class="btn btn-small" href="/ui/keys/{id}">Edit</a> <a class="btn btn-small btn-danger-ghost" href="/ui/keys/{id}/delete">Delete</a></td></tr>"#,
                name = E(&r.name),
                private = if r.private {
                    format!(" {}", html::badge("private", "info"))
                } else {
                    String::new()
                },
                hub = E(hub_label(&r.hub)),
                ver = r.secret_version,
                used = html::when(r.last_used_at),
            );
        }
        body.push_str("</tbody></table></div>");
        body.push_str(&html::pager(
            "/ui/keys",
            &[("q", search.to_string()), ("hub", hub.to_string())],
            page,
            PER_PAGE,
            total,
        ));
    }
    ui.page(Nav::Keys, "Keys", &body)
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

/// The fieldsets of hub settings: one per hub (only `hub`'s visible), or only `only`'s.
fn hub_fieldsets(selected: &str, values: &BTreeMap<String, String>, only: Option<&str>, stored: &[String]) -> String {
    let mut out = String::new();
    for hub in ModelHub::ALL {
        let h = hub.as_str();
        if only.is_some_and(|o| o != h) {
            continue;
        }
        let fields = hub_fields(h);
        if fields.is_empty() {
            continue;
        }
        let hidden = if h == selected { "" } else { " hidden" };
        let _ = write!(
            out,
            r#"<fieldset class="hub-fields" data-hub="{h}"{hidden}><legend>{} settings</legend><div class="grid">"#,
            E(hub_label(h))
        );
        for fd in fields {
            let name = format!("hc.{h}.{}", fd.name);
            let id = format!("f-hc-{h}-{}", fd.name);
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
            let input = if fd.textarea {
                format!(
                    r#"<textarea id="{id}" name="{name}" rows="3" spellcheck="false"{ac}>{v}</textarea>"#,
                    id = E(&id),
                    name = E(&name),
                    v = E(&value),
                    ac = if fd.secret { r#" autocomplete="off""# } else { "" },
                )
            } else {
                format!(
                    r#"<input type="{t}" id="{id}" name="{name}" value="{v}" spellcheck="false"{ac}>"#,
                    t = if fd.secret { "password" } else { "text" },
                    id = E(&id),
                    name = E(&name),
                    v = E(&value),
                    ac = if fd.secret {
                        r#" autocomplete="new-password""#
                    } else {
                        ""
                    },
                )
            };
            let _ = write!(
                out,
                r#"<label class="field{wide}" for="{id}"><span>{label}{lock}</span>{input}{help}</label>"#,
                wide = if fd.textarea { " wide" } else { "" },
                id = E(&id),
                label = E(fd.label),
                lock = if fd.secret { LOCK } else { "" },
                help = if help.is_empty() {
                    String::new()
                } else {
                    format!(r#"<small class="help">{}</small>"#, E(help))
                },
            );
        }
        out.push_str("</div></fieldset>");
    }
    out
}

fn new_form_html(ui: &Ui, d: &Draft) -> String {
    let hub = if d.hub.is_empty() { "openai" } else { d.hub.as_str() };
    let hubs: Vec<(&str, &str)> = ModelHub::ALL
        .iter()
        .map(|h| (h.as_str(), hub_label(h.as_str())))
        .collect();
    format!(
        r#"<form method="post" action="/ui/keys/new" class="card form" id="new-key-form" autocomplete="off">
{csrf}
<div class="grid">
{name}
<label class="field" for="hub"><span>Model hub</span>{hub_select}<small class="help">Hub-specific settings appear below for the chosen hub.</small></label>
<label class="field wide" for="f-api_key"><span>API key {lock}</span><input type="password" id="f-api_key" name="api_key" autocomplete="new-password" spellcheck="false"><small class="help">Stored encrypted, never shown again (only its last 4 characters). Vertex, Bedrock and DigitalOcean agents use the settings below instead.</small></label>
{base_url}
{rl_per}
{rl_interval}
<label class="check"><input type="checkbox" name="private" value="1"{private}><span>Private provider (for <code>modelPrivacy</code> checks)</span></label>
</div>
{hub_fields}
<div class="form-actions"><button type="submit" class="btn btn-primary" id="save-key">Add key</button> <a class="btn btn-ghost" href="/ui/keys">Cancel</a></div>
</form>"#,
        csrf = html::csrf_field(&ui.csrf),
        lock = LOCK,
        name = html::field(
            "Name",
            "name",
            &d.name,
            "text",
            r#" required maxlength="64" pattern="[A-Za-z0-9._\-]{1,64}" spellcheck="false""#,
            "letters, digits, . _ - (unique in the workspace)"
        ),
        hub_select = html::select("model_hub", "hub", &hubs, hub),
        base_url = html::field(
            "Base URL",
            "base_url",
            &d.base_url,
            "url",
            r#" placeholder="the hub's default""#,
            "optional; required for custom hubs"
        ),
        rl_per = html::field(
            "Rate limit (requests)",
            "rate_limit_per_interval",
            &d.rl_per,
            "number",
            r#" min="1""#,
            "blank: the hub's lowest published tier"
        ),
        rl_interval = html::field(
            "per (seconds)",
            "rate_limit_interval",
            &d.rl_interval,
            "number",
            r#" min="1" placeholder="60""#,
            ""
        ),
        private = if d.private { " checked" } else { "" },
        hub_fields = hub_fieldsets(hub, &d.hub_values, None, &[]),
    )
}

/// `GET /ui/keys/new`.
pub async fn new_form(ui: Ui, q: Params) -> Response {
    let d = Draft {
        hub: q.get("hub").unwrap_or("openai").to_string(),
        ..Default::default()
    };
    ui.page(Nav::Keys, "Add new key", &new_form_html(&ui, &d))
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
        Err(e) => ui.error_page(
            Nav::Keys,
            "Add new key",
            &readable(e),
            &new_form_html(&ui, &Draft::from_form(&form)),
        ),
    }
}

/// A service error as a sentence for people.
pub(super) fn readable(mut e: ApiError) -> ApiError {
    e.message = super::sentence(&e.message);
    e
}

async fn edit_html(state: &AppState, ui: &Ui, row: &ProviderKeyRow) -> String {
    let (v, settings) = match pk::view(row).and_then(|v| Ok((v, pk::settings_of(row)?))) {
        Ok(x) => x,
        Err(e) => return format!(r#"<div class="flash flash-error">{}</div>"#, E(&readable(e).message)),
    };
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
    let id = html::url_enc(&row.id);
    let vks = used_by(state, &ui.ctx.workspace, row).await;
    let rl = format!(
        "{}{}",
        esc(&rate_text(per, interval)),
        if explicit {
            ""
        } else {
            r#" <span class="muted">(hub default)</span>"#
        }
    );
    format!(
        r#"<div class="cols">
<section class="card">
  <h2>{name} {private}</h2>
  <dl class="facts">
    <dt>Hub</dt><dd>{hub}</dd>
    <dt>Sends to</dt><dd><code>{url}</code></dd>
    <dt>Secret</dt><dd>{hint} · version <strong id="secret-version">{ver}</strong></dd>
    <dt>Rate limit</dt><dd>{rl}</dd>
    <dt>Used by</dt><dd>{vks}</dd>
    <dt>Created</dt><dd>{created}</dd>
    <dt>Updated</dt><dd>{updated}</dd>
    <dt>Last used</dt><dd>{used}</dd>
  </dl>
  <p><a class="btn btn-danger-ghost" href="/ui/keys/{id}/delete" id="delete-key">Delete…</a></p>
</section>
<section class="card">
  <h2>Rename</h2>
  <form method="post" action="/ui/keys/{id}/rename" class="inline-form" id="rename-form">{csrf}
    <label class="field" for="f-new_name"><span>New name</span><input type="text" id="f-new_name" name="new_name" value="{name}" required maxlength="64" spellcheck="false"></label>
    <button type="submit" class="btn" id="rename-key">Rename</button>
  </form>
  <h2>Rotate the secret</h2>
  <form method="post" action="/ui/keys/{id}/rotate" class="stack" id="rotate-form" autocomplete="off">{csrf}
    <label class="field" for="f-rotate-key"><span>New API key {lock}</span><input type="password" id="f-rotate-key" name="api_key" required autocomplete="new-password" spellcheck="false"></label>
    <label class="field" for="f-grace"><span>Keep the old secret valid for (seconds)</span><input type="number" id="f-grace" name="grace_period_seconds" min="0" value="0"><small class="help">so requests in flight finish; 0 ends it now</small></label>
    <button type="submit" class="btn" id="rotate-key">Rotate</button>
  </form>
</section>
</div>
<form method="post" action="/ui/keys/{id}" class="card form" id="edit-key-form" autocomplete="off">{csrf}
<h2>Settings</h2>
<div class="grid">
{base_url}
{rl_per}
{rl_interval}
<label class="check"><input type="checkbox" name="private" value="1"{private_checked}><span>Private provider</span></label>
</div>
{hub_fields}
<div class="form-actions"><button type="submit" class="btn btn-primary" id="save-settings">Save settings</button> <a class="btn btn-ghost" href="/ui/keys">Back to keys</a></div>
</form>"#,
        name = E(&row.name),
        private = if row.private {
            html::badge("private", "info")
        } else {
            String::new()
        },
        hub = E(hub_label(&row.hub)),
        url = E(v.effective_base_url.as_deref().unwrap_or("—")),
        hint = match &row.secret_hint {
            Some(h) => format!("<code>…{}</code>", E(h)),
            None => r#"<span class="muted">hidden</span>"#.into(),
        },
        ver = row.secret_version,
        rl = rl,
        created = html::when(Some(row.created_at)),
        updated = html::when(Some(row.updated_at)),
        used = html::when(row.last_used_at),
        csrf = html::csrf_field(&ui.csrf),
        lock = LOCK,
        base_url = html::field(
            "Base URL",
            "base_url",
            row.base_url.as_deref().unwrap_or(""),
            "url",
            r#" placeholder="the hub's default""#,
            "blank: the hub's default"
        ),
        rl_per = html::field(
            "Rate limit (requests)",
            "rate_limit_per_interval",
            &if explicit { per.to_string() } else { String::new() },
            "number",
            r#" min="1""#,
            "blank: the hub's default"
        ),
        rl_interval = html::field(
            "per (seconds)",
            "rate_limit_interval",
            &if explicit { interval.to_string() } else { String::new() },
            "number",
            r#" min="1" placeholder="60""#,
            ""
        ),
        private_checked = if row.private { " checked" } else { "" },
        hub_fields = hub_fieldsets(&row.hub, &values, Some(&row.hub), &settings.secret_fields),
    )
}

/// The virtual keys that point at a provider key, as links.
async fn used_by(state: &AppState, workspace: &str, row: &ProviderKeyRow) -> String {
    let names = super::virtual_keys::using_provider(state, workspace, &row.id).await;
    if names.is_empty() {
        return r#"<span class="muted">no virtual key</span>"#.into();
    }
    names
        .iter()
        .map(|(id, slug)| {
            format!(
                r#"<a href="/ui/virtual-keys/{}">{}</a>"#,
                E(&html::url_enc(id)),
                E(slug)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `GET /ui/keys/{id}`: details, settings, rename, rotate, delete.
pub async fn edit_form(State(state): State<AppState>, ui: Ui, Path(id): Path<String>) -> Response {
    match find(&state, &ui, &id).await {
        Ok(row) => ui.page(
            Nav::Keys,
            &format!("Key {}", row.name),
            &edit_html(&state, &ui, &row).await,
        ),
        Err(e) => not_found(&ui, &e),
    }
}

async fn after_error(state: &AppState, ui: &Ui, id: &str, e: ApiError) -> Response {
    match find(state, ui, id).await {
        Ok(row) => ui.error_page(
            Nav::Keys,
            &format!("Key {}", row.name),
            &readable(e),
            &edit_html(state, ui, &row).await,
        ),
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
    let warn = if vks.is_empty() {
        String::new()
    } else {
        format!(
            r#"<p class="flash flash-error">{} virtual key(s) point at it and will stop working: {}.</p>"#,
            vks.len(),
            vks.iter().map(|(_, s)| esc(s)).collect::<Vec<_>>().join(", ")
        )
    };
    let body = format!(
        r#"<div class="card narrow confirm"><h2>Delete provider key {name}?</h2>
<p>Its secret is destroyed; this cannot be undone.</p>{warn}
<form method="post" action="/ui/keys/{id}/delete">{csrf}<button type="submit" class="btn btn-danger" id="confirm-delete">Delete {name}</button> <a class="btn btn-ghost" href="/ui/keys">Cancel</a></form></div>"#,
        name = E(&row.name),
        id = html::url_enc(&row.id),
        csrf = html::csrf_field(&ui.csrf),
    );
    ui.page(Nav::Keys, "Delete key", &body)
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
        Err(e) => ui.page_with(
            e.status,
            Nav::Keys,
            "Keys",
            Some(Flash::Error(&readable(e.clone()).message)),
            r#"<p><a class="btn" href="/ui/keys">Back to keys</a></p>"#,
        ),
    }
}
