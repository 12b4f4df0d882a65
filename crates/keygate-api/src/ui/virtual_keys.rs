//! The Virtual keys page: list with targets, budget bars, rate limits and live status;
//! create, edit, disable/enable, delete, through `crate::virtual_keys`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use axum::extract::{Path, State};
use axum::response::Response;
use keygate_store::{Page, ProviderKeyRow, StoreError, VirtualKeyRow};
use keygate_types::NanoUsd;

use super::html::{self, esc, Nav, E};
use super::keys::{all_provider_keys, readable};
use super::{matches, page_of, Form, Params, PostForm, Ui};
use crate::error::{ApiError, ApiResult};
use crate::limits::Measure;
use crate::state::AppState;
use crate::virtual_keys::{
    self as vk, config_of, BudgetInput, CreateVirtualKey, Period, RateLimits, Strategy, TargetInput, UpdateVirtualKey,
    VkConfig,
};

const PER_PAGE: u32 = 25;
const WINDOWS: [&str; 6] = ["rpm", "rph", "rpd", "tpm", "tph", "tpd"];

async fn all_virtual_keys(state: &AppState, workspace: &str) -> ApiResult<Vec<VirtualKeyRow>> {
    let mut out = Vec::new();
    for page in 1..=20 {
        let (rows, total) = state
            .store
            .list_virtual_keys(workspace, Page { page, limit: 500 })
            .await?;
        let done = rows.is_empty() || i64::from(page) * 500 >= total;
        out.extend(rows);
        if done {
            break;
        }
    }
    Ok(out)
}

/// The virtual keys (id, slug) that point at a provider key.
pub(super) async fn using_provider(state: &AppState, workspace: &str, provider_id: &str) -> Vec<(String, String)> {
    all_virtual_keys(state, workspace)
        .await
        .unwrap_or_default()
        .into_iter()
        // A configuration that cannot be read may point at it: counted.
        .filter(|r| config_of(r).map_or(true, |c| c.targets.iter().any(|t| t.provider_key_id == provider_id)))
        .map(|r| (r.id, r.slug))
        .collect()
}

fn rate_limits_text(r: &RateLimits) -> String {
    let parts: Vec<String> = [
        ("rpm", r.rpm),
        ("rph", r.rph),
        ("rpd", r.rpd),
        ("tpm", r.tpm),
        ("tph", r.tph),
        ("tpd", r.tpd),
    ]
    .iter()
    .filter_map(|(k, v)| v.map(|v| format!("{} {k}", html::int(v as i64))))
    .collect();
    if parts.is_empty() {
        r#"<span class="muted">none</span>"#.into()
    } else {
        esc(&parts.join(" · "))
    }
}

fn status_badge(status: &str) -> String {
    let kind = match status {
        "active" => "ok",
        "disabled" => "muted",
        "exhausted" => "warn",
        _ => "error",
    };
    html::badge(status, kind)
}

/// Budget bars (used vs limit, read live from the counters) of a virtual key.
async fn budget_bars(state: &AppState, row: &VirtualKeyRow) -> String {
    let Ok(cfg) = config_of(row) else {
        return r#"<span class="muted">unreadable</span>"#.into();
    };
    if cfg.budget.is_empty() {
        return r#"<span class="muted">no budget</span>"#.into();
    }
    let Some(rt) = state.runtime.virtual_key(&row.id) else {
        return r#"<span class="muted">loading…</span>"#.into();
    };
    let now = state.limits.now();
    let checks: Vec<_> = crate::limits::vk_checks(&state.limits, &rt, now)
        .into_iter()
        .filter(|l| l.is_budget && l.scope == "virtual_key")
        .collect();
    let states = state.limits.peek(&checks).await;
    let period = match cfg.budget_period {
        Period::Epoch => " today",
        Period::Week => " this week",
        Period::Month => " this month",
        Period::Lifetime => "",
    };
    let mut out = String::new();
    for (l, s) in checks.iter().zip(&states) {
        let label = match l.measure {
            Measure::Usd => format!("{} of {}{period}", html::usd(s.used), html::usd(s.limit)),
            Measure::Tokens => format!("{} of {} tokens{period}", html::int(s.used), html::int(s.limit)),
            Measure::Requests => format!("{} of {} requests{period}", html::int(s.used), html::int(s.limit)),
        };
        out.push_str(&html::meter(s.used, s.limit, &label));
    }
    out
}

/// `GET /ui/virtual-keys`.
pub async fn list(State(state): State<AppState>, ui: Ui, q: Params) -> Response {
    let (rows, pks) = match tokio::try_join!(
        all_virtual_keys(&state, &ui.ctx.workspace),
        all_provider_keys(&state, &ui.ctx.workspace)
    ) {
        Ok(x) => x,
        Err(e) => return ui.error_page(Nav::VirtualKeys, "Virtual keys", &e, ""),
    };
    let names: HashMap<&str, &str> = pks.iter().map(|p| (p.id.as_str(), p.name.as_str())).collect();
    let search = q.text("q");
    let want_status = q.text("status");
    let mut shown = Vec::new();
    for r in rows {
        let cfg = match config_of(&r) {
            Ok(c) => c,
            Err(e) => return ui.error_page(Nav::VirtualKeys, "Virtual keys", &e, ""),
        };
        let target_names: Vec<&str> = cfg
            .targets
            .iter()
            .map(|t| names.get(t.provider_key_id.as_str()).copied().unwrap_or(""))
            .collect();
        let mut hay = vec![r.name.as_str(), r.slug.as_str(), r.id.as_str()];
        hay.extend(target_names);
        if !matches(search, &hay) {
            continue;
        }
        if !want_status.is_empty() && vk::live_status(&state, &r).await != want_status {
            continue;
        }
        shown.push(r);
    }
    shown.sort_by(|a, b| a.name.cmp(&b.name).then(a.slug.cmp(&b.slug)));
    let total = shown.len();
    let page = q.page();
    let shown = page_of(shown, page, PER_PAGE);

    let mut body = String::new();
    let statuses = [
        ("", "Any status"),
        ("active", "active"),
        ("disabled", "disabled"),
        ("expired", "expired"),
        ("exhausted", "exhausted"),
    ];
    let _ = write!(
        body,
        r#"<div class="toolbar">{}<a class="btn btn-primary" href="/ui/virtual-keys/new" id="add-vk">Create virtual key</a></div>"#,
        html::filter_bar(
            "/ui/virtual-keys",
            search,
            "Search name, slug or provider key",
            &html::select("status", "filter-status", &statuses, want_status)
        )
    );
    if total == 0 {
        body.push_str(r#"<div class="empty"><p>No virtual keys match.</p><p class="muted">A virtual key points at provider keys and carries its own budget, rate limits and expiry. Clients name it with the <code>x-keygate-virtual-key</code> header or as <code>@slug/model</code>.</p></div>"#);
    } else {
        body.push_str(r#"<div class="table-wrap"><table class="list" id="vk-table"><thead><tr><th>Name</th><th>Targets</th><th>Budget</th><th>Rate limits</th><th>Status</th><th>Expires</th><th class="actions">Actions</th></tr></thead><tbody>"#);
        for r in &shown {
            let cfg = match config_of(r) {
                Ok(c) => c,
                Err(e) => return ui.error_page(Nav::VirtualKeys, "Virtual keys", &e, ""),
            };
            let status = vk::live_status(&state, r).await;
            let targets: Vec<String> = cfg
                .targets
                .iter()
                .map(|t| {
                    let n = names.get(t.provider_key_id.as_str()).copied().unwrap_or("(deleted)");
                    if cfg.targets.len() > 1 {
                        format!("{} <span class=\"muted\">×{}</span>", E(n), t.weight)
                    } else {
                        esc(n)
                    }
                })
                .collect();
            let strategy = if cfg.targets.len() > 1 {
                format!(r#"<div class="muted small">{}</div>"#, E(strategy_str(cfg.strategy)))
            } else {
                String::new()
            };
            let id = html::url_enc(&r.id);
            let toggle = if r.status == "disabled" {
                ("active", "Enable")
            } else {
                ("disabled", "Disable")
            };
            let _ = write!(
                body,
                r#"<tr data-slug="{slug}"><td data-label="Name"><a class="strong" href="/ui/virtual-keys/{id}">{name}</a><div><code class="small">{slug}</code></div></td><td data-label="Targets">{targets}{strategy}</td><td data-label="Budget" class="budget">{budget}</td><td data-label="Rate limits">{rl}</td><td data-label="Status">{status}</td><td data-label="Expires">{expires}</td><td class="actions"><a class="btn btn-small" href="/ui/virtual-keys/{id}">Edit</a> <form method="post" action="/ui/virtual-keys/{id}/status" class="inline">{csrf}<input type="hidden" name="status" value="{tv}"><button class="btn btn-small" type="submit">{tl}</button></form> <a class="btn btn-small btn-danger-ghost" href="/ui/virtual-keys/{id}/delete">Delete</a></td></tr>"#,
                slug = E(&r.slug),
                name = E(&r.name),
                targets = targets.join(", "),
                budget = budget_bars(&state, r).await,
                rl = rate_limits_text(&cfg.rate_limits),
                status = status_badge(status),
                expires = html::when(r.expires_at),
                csrf = html::csrf_field(&ui.csrf),
                tv = toggle.0,
                tl = toggle.1,
            );
        }
        body.push_str("</tbody></table></div>");
        body.push_str(&html::pager(
            "/ui/virtual-keys",
            &[("q", search.to_string()), ("status", want_status.to_string())],
            page,
            PER_PAGE,
            total,
        ));
    }
    ui.page(Nav::VirtualKeys, "Virtual keys", &body)
}

fn strategy_str(s: Strategy) -> &'static str {
    match s {
        Strategy::Single => "single",
        Strategy::Loadbalance => "loadbalance",
        Strategy::Fallback => "fallback",
    }
}

/// The form's values as text.
#[derive(Default)]
struct Draft {
    name: String,
    slug: String,
    note: String,
    /// provider key id -> weight
    targets: BTreeMap<String, String>,
    strategy: String,
    models: String,
    default_model: String,
    aliases: String,
    usd: String,
    tokens: String,
    requests: String,
    period: String,
    windows: BTreeMap<&'static str, String>,
    expires: String,
}

fn usd_text(nano: i64) -> String {
    let s = NanoUsd(nano).to_decimal_string();
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

impl Draft {
    fn from_row(row: &VirtualKeyRow) -> ApiResult<Draft> {
        let cfg = config_of(row)?;
        let rl = &cfg.rate_limits;
        let mut windows = BTreeMap::new();
        for (k, v) in [
            ("rpm", rl.rpm),
            ("rph", rl.rph),
            ("rpd", rl.rpd),
            ("tpm", rl.tpm),
            ("tph", rl.tph),
            ("tpd", rl.tpd),
        ] {
            if let Some(v) = v {
                windows.insert(k, v.to_string());
            }
        }
        Ok(Draft {
            name: row.name.clone(),
            slug: row.slug.clone(),
            note: row.note.clone().unwrap_or_default(),
            targets: cfg
                .targets
                .iter()
                .map(|t| (t.provider_key_id.clone(), t.weight.to_string()))
                .collect(),
            strategy: strategy_str(cfg.strategy).into(),
            models: cfg.models.join(", "),
            default_model: cfg.default_model.clone().unwrap_or_default(),
            aliases: cfg
                .aliases
                .iter()
                .map(|(a, m)| format!("{a}={m}"))
                .collect::<Vec<_>>()
                .join("\n"),
            usd: cfg.budget.usd_nano.map(usd_text).unwrap_or_default(),
            tokens: cfg.budget.tokens.map(|v| v.to_string()).unwrap_or_default(),
            requests: cfg.budget.requests.map(|v| v.to_string()).unwrap_or_default(),
            period: cfg.budget_period.as_str().into(),
            windows,
            expires: row.expires_at.map(html::date_of).unwrap_or_default(),
        })
    }

    fn from_form(form: &Form) -> Draft {
        let mut targets = BTreeMap::new();
        for id in form.all("target") {
            let w = form.get(&format!("weight.{id}")).unwrap_or("1");
            targets.insert(id.to_string(), w.to_string());
        }
        let mut windows = BTreeMap::new();
        for w in WINDOWS {
            if let Some(v) = form.get(w) {
                windows.insert(w, v.to_string());
            }
        }
        Draft {
            name: form.text("name").into(),
            slug: form.text("slug").into(),
            note: form.text("note").into(),
            targets,
            strategy: form.text("strategy").into(),
            models: form.text("models").into(),
            default_model: form.text("default_model").into(),
            aliases: form.text("aliases").into(),
            usd: form.text("budget_usd").into(),
            tokens: form.text("budget_tokens").into(),
            requests: form.text("budget_requests").into(),
            period: form.text("budget_period").into(),
            windows,
            expires: form.text("expires_at").into(),
        }
    }
}

/// What a draft means, checked.
struct Parsed {
    targets: Vec<TargetInput>,
    strategy: Option<Strategy>,
    models: Vec<String>,
    default_model: Option<String>,
    aliases: BTreeMap<String, String>,
    budget: Option<BudgetInput>,
    period: Period,
    rate_limits: RateLimits,
    expires: Option<String>,
    note: Option<String>,
}

fn parse_u64(v: &str, label: &str) -> ApiResult<Option<u64>> {
    if v.is_empty() {
        return Ok(None);
    }
    v.replace([',', '_'], "")
        .parse::<u64>()
        .map(Some)
        .map_err(|_| ApiError::bad_request(format!("{label} must be a whole number")))
}

impl Draft {
    fn parse(&self) -> ApiResult<Parsed> {
        let mut targets = Vec::new();
        for (id, w) in &self.targets {
            let weight = w
                .parse::<u32>()
                .map_err(|_| ApiError::bad_request("A target's weight must be a whole number"))?;
            targets.push(TargetInput {
                provider_key: id.clone(),
                weight,
            });
        }
        if targets.is_empty() {
            return Err(ApiError::bad_request("Choose at least one provider key as a target"));
        }
        let strategy = match self.strategy.as_str() {
            "" | "auto" => None,
            "single" => Some(Strategy::Single),
            "loadbalance" => Some(Strategy::Loadbalance),
            "fallback" => Some(Strategy::Fallback),
            _ => return Err(ApiError::bad_request("Unknown strategy")),
        };
        let models: Vec<String> = self
            .models
            .split([',', '\n'])
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect();
        let mut aliases = BTreeMap::new();
        for line in self.aliases.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let Some((a, m)) = line.split_once('=') else {
                return Err(ApiError::bad_request("Aliases: write one alias=model per line"));
            };
            aliases.insert(a.trim().to_string(), m.trim().to_string());
        }
        let usd = if self.usd.is_empty() {
            None
        } else {
            let v: f64 = self
                .usd
                .trim_start_matches('$')
                .parse()
                .map_err(|_| ApiError::bad_request("The USD budget must be a number such as 25 or 2.50"))?;
            Some(v)
        };
        let tokens = parse_u64(&self.tokens, "The token budget")?;
        let requests = parse_u64(&self.requests, "The request budget")?;
        let budget =
            (usd.is_some() || tokens.is_some() || requests.is_some()).then_some(BudgetInput { usd, tokens, requests });
        let period = match self.period.as_str() {
            "EPOCH" | "DAY" => Period::Epoch,
            "WEEK" => Period::Week,
            "MONTH" => Period::Month,
            _ => Period::Lifetime,
        };
        let w = |k: &str| -> ApiResult<Option<u64>> {
            parse_u64(self.windows.get(k).map(String::as_str).unwrap_or(""), &k.to_uppercase())
        };
        let rate_limits = RateLimits {
            rpm: w("rpm")?,
            rph: w("rph")?,
            rpd: w("rpd")?,
            tpm: w("tpm")?,
            tph: w("tph")?,
            tpd: w("tpd")?,
        };
        Ok(Parsed {
            targets,
            strategy,
            models,
            default_model: (!self.default_model.is_empty()).then(|| self.default_model.clone()),
            aliases,
            budget,
            period,
            rate_limits,
            expires: (!self.expires.is_empty()).then(|| self.expires.clone()),
            note: (!self.note.is_empty()).then(|| self.note.clone()),
        })
    }
}

fn form_html(ui: &Ui, d: &Draft, pks: &[ProviderKeyRow], action: &str, editing: bool) -> String {
    let mut targets = String::new();
    if pks.is_empty() {
        targets.push_str(
            r#"<p class="muted">There are no provider keys yet. <a href="/ui/keys/new">Add one</a> first.</p>"#,
        );
    } else {
        targets.push_str(r#"<div class="table-wrap"><table class="list compact" id="targets"><thead><tr><th>Use</th><th>Provider key</th><th>Hub</th><th>Weight</th></tr></thead><tbody>"#);
        for p in pks {
            let checked = d.targets.contains_key(&p.id);
            let weight = d.targets.get(&p.id).map(String::as_str).unwrap_or("1");
            let _ = write!(
                targets,
                r#"<tr><td><input type="checkbox" name="target" value="{id}" id="t-{id}" aria-label="use {name}"{c}></td><td><label for="t-{id}">{name}</label></td><td>{hub}</td><td><input class="narrow-input" type="number" min="1" name="weight.{id}" value="{w}" aria-label="weight of {name}"></td></tr>"#,
                id = E(&p.id),
                name = E(&p.name),
                hub = E(&p.hub),
                c = if checked { " checked" } else { "" },
                w = E(weight),
            );
        }
        targets.push_str("</tbody></table></div>");
    }
    let mut windows = String::new();
    for (k, label) in [
        ("rpm", "Requests / minute"),
        ("rph", "Requests / hour"),
        ("rpd", "Requests / day"),
        ("tpm", "Tokens / minute"),
        ("tph", "Tokens / hour"),
        ("tpd", "Tokens / day"),
    ] {
        windows.push_str(&html::field(
            label,
            k,
            d.windows.get(k).map(String::as_str).unwrap_or(""),
            "number",
            r#" min="1""#,
            "",
        ));
    }
    let strategies = [
        ("", "automatic (single, or loadbalance for several)"),
        ("single", "single"),
        ("loadbalance", "loadbalance (by weight)"),
        ("fallback", "fallback (in order)"),
    ];
    let periods = [
        ("LIFETIME", "lifetime (never resets)"),
        ("EPOCH", "per UTC day"),
        ("WEEK", "per week (from Monday)"),
        ("MONTH", "per month (from the 1st)"),
    ];
    format!(
        r#"<form method="post" action="{action}" class="card form" id="vk-form">{csrf}
<div class="grid">
{name}
{slug}
{note}
</div>
<fieldset><legend>Targets</legend>{targets}
<div class="grid"><label class="field" for="strategy"><span>Strategy</span>{strategy}</label></div></fieldset>
<fieldset><legend>Models</legend><div class="grid">
{models}
{default_model}
<label class="field wide" for="f-aliases"><span>Aliases</span><textarea id="f-aliases" name="aliases" rows="3" spellcheck="false" placeholder="fast=gpt-4o-mini">{aliases}</textarea><small class="help">one alias=model per line</small></label>
</div></fieldset>
<fieldset><legend>Budget</legend><div class="grid">
{usd}
{tokens}
{requests}
<label class="field" for="budget_period"><span>Period</span>{period}</label>
</div></fieldset>
<fieldset><legend>Rate limits</legend><div class="grid">{windows}</div></fieldset>
<div class="grid">{expires}</div>
<div class="form-actions"><button type="submit" class="btn btn-primary" id="save-vk">{submit}</button> <a class="btn btn-ghost" href="/ui/virtual-keys">Cancel</a></div>
</form>"#,
        action = E(action),
        csrf = html::csrf_field(&ui.csrf),
        name = html::field("Name", "name", &d.name, "text", r#" required maxlength="128""#, ""),
        slug = html::field(
            "Slug",
            "slug",
            &d.slug,
            "text",
            r#" maxlength="64" pattern="[A-Za-z0-9._\-]{1,64}" spellcheck="false""#,
            if editing {
                "clients send it; changing it breaks them"
            } else {
                "blank: made from the name"
            }
        ),
        note = html::field("Note", "note", &d.note, "text", r#" maxlength="500""#, ""),
        strategy = html::select("strategy", "strategy", &strategies, &d.strategy),
        models = html::field(
            "Allowed models",
            "models",
            &d.models,
            "text",
            r#" spellcheck="false""#,
            "comma-separated; blank allows every model"
        ),
        default_model = html::field(
            "Default model",
            "default_model",
            &d.default_model,
            "text",
            r#" spellcheck="false""#,
            "used when a request names none"
        ),
        aliases = E(&d.aliases),
        usd = html::field(
            "USD",
            "budget_usd",
            &d.usd,
            "text",
            r#" inputmode="decimal" placeholder="no limit""#,
            ""
        ),
        tokens = html::field(
            "Tokens",
            "budget_tokens",
            &d.tokens,
            "number",
            r#" min="0" placeholder="no limit""#,
            ""
        ),
        requests = html::field(
            "Requests",
            "budget_requests",
            &d.requests,
            "number",
            r#" min="0" placeholder="no limit""#,
            ""
        ),
        period = html::select(
            "budget_period",
            "budget_period",
            &periods,
            if d.period.is_empty() { "LIFETIME" } else { &d.period }
        ),
        expires = html::field(
            "Expires on",
            "expires_at",
            &d.expires,
            "date",
            "",
            "blank: never (UTC midnight)"
        ),
        submit = if editing { "Save changes" } else { "Create virtual key" },
    )
}

/// `GET /ui/virtual-keys/new`.
pub async fn new_form(State(state): State<AppState>, ui: Ui) -> Response {
    let pks = match all_provider_keys(&state, &ui.ctx.workspace).await {
        Ok(p) => p,
        Err(e) => return ui.error_page(Nav::VirtualKeys, "Create virtual key", &e, ""),
    };
    let mut d = Draft::default();
    if pks.len() == 1 {
        d.targets.insert(pks[0].id.clone(), "1".into());
    }
    ui.page(
        Nav::VirtualKeys,
        "Create virtual key",
        &form_html(&ui, &d, &pks, "/ui/virtual-keys/new", false),
    )
}

/// `POST /ui/virtual-keys/new`.
pub async fn create(State(state): State<AppState>, ui: Ui, PostForm(form): PostForm) -> Response {
    let d = Draft::from_form(&form);
    let result = async {
        let p = d.parse()?;
        let input = CreateVirtualKey {
            name: d.name.clone(),
            slug: (!d.slug.is_empty()).then(|| d.slug.clone()),
            targets: Some(p.targets),
            strategy: p.strategy,
            models: Some(p.models),
            aliases: Some(p.aliases),
            default_model: p.default_model,
            budget: p.budget,
            budget_period: Some(p.period),
            rate_limits: Some(p.rate_limits),
            expires_at: p.expires,
            note: p.note,
            ..Default::default()
        };
        vk::create(&state, &ui.ctx, input).await
    }
    .await;
    match result {
        Ok(row) => {
            state.refresh_caches().await;
            ui.redirect_with(
                "/ui/virtual-keys",
                &format!("Created virtual key {} (slug {}).", row.name, row.slug),
            )
        }
        Err(e) => {
            let pks = all_provider_keys(&state, &ui.ctx.workspace).await.unwrap_or_default();
            ui.error_page(
                Nav::VirtualKeys,
                "Create virtual key",
                &readable(e),
                &form_html(&ui, &d, &pks, "/ui/virtual-keys/new", false),
            )
        }
    }
}

async fn find(state: &AppState, ui: &Ui, id: &str) -> ApiResult<VirtualKeyRow> {
    state
        .store
        .get_virtual_key(&ui.ctx.workspace, id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("There is no such virtual key in this workspace"),
            other => other.into(),
        })
}

fn not_found(ui: &Ui, e: &ApiError) -> Response {
    ui.error_page(
        Nav::VirtualKeys,
        "Virtual keys",
        e,
        r#"<p><a class="btn" href="/ui/virtual-keys">Back to virtual keys</a></p>"#,
    )
}

async fn edit_page(state: &AppState, ui: &Ui, row: &VirtualKeyRow, d: &Draft, error: Option<ApiError>) -> Response {
    let pks = all_provider_keys(state, &ui.ctx.workspace).await.unwrap_or_default();
    let status = vk::live_status(state, row).await;
    let action = format!("/ui/virtual-keys/{}", html::url_enc(&row.id));
    let head = format!(
        r#"<section class="card"><dl class="facts"><dt>Id</dt><dd><code>{id}</code></dd><dt>Slug</dt><dd><code>{slug}</code></dd><dt>Status</dt><dd>{status}</dd><dt>Budget</dt><dd class="budget">{budget}</dd><dt>Created</dt><dd>{created}</dd></dl>
<p class="muted small">Use it with the header <code>x-keygate-virtual-key: {slug}</code> or the model <code>@{slug}/…</code>.</p>
<p><a class="btn btn-danger-ghost" href="{action}/delete">Delete…</a></p></section>"#,
        id = E(&row.id),
        slug = E(&row.slug),
        status = status_badge(status),
        budget = budget_bars(state, row).await,
        created = html::when(Some(row.created_at)),
        action = E(&action),
    );
    let body = format!("{head}{}", form_html(ui, d, &pks, &action, true));
    let title = format!("Virtual key {}", row.name);
    match error {
        Some(e) => ui.error_page(Nav::VirtualKeys, &title, &readable(e), &body),
        None => ui.page(Nav::VirtualKeys, &title, &body),
    }
}

/// `GET /ui/virtual-keys/{id}`.
pub async fn edit_form(State(state): State<AppState>, ui: Ui, Path(id): Path<String>) -> Response {
    match find(&state, &ui, &id).await {
        Ok(row) => match Draft::from_row(&row) {
            Ok(draft) => edit_page(&state, &ui, &row, &draft, None).await,
            Err(e) => not_found(&ui, &e),
        },
        Err(e) => not_found(&ui, &e),
    }
}

fn budget_of(b: &Option<BudgetInput>) -> Option<(Option<i64>, Option<u64>, Option<u64>)> {
    b.as_ref()
        .map(|b| (b.usd.and_then(NanoUsd::from_usd_f64).map(|n| n.0), b.tokens, b.requests))
}

/// The patch of what the form changed.
fn patch_of(row: &VirtualKeyRow, cfg: &VkConfig, d: &Draft, p: Parsed) -> UpdateVirtualKey {
    let mut patch = UpdateVirtualKey::default();
    if d.name != row.name {
        patch.name = Some(d.name.clone());
    }
    if !d.slug.is_empty() && d.slug != row.slug {
        patch.slug = Some(d.slug.clone());
    }
    let now_targets: Vec<(String, u32)> = cfg
        .targets
        .iter()
        .map(|t| (t.provider_key_id.clone(), t.weight))
        .collect();
    let new_targets: Vec<(String, u32)> = p.targets.iter().map(|t| (t.provider_key.clone(), t.weight)).collect();
    let mut a = now_targets.clone();
    let mut b = new_targets.clone();
    a.sort();
    b.sort();
    if a != b {
        patch.targets = Some(p.targets);
    }
    if let Some(s) = p.strategy {
        if s != cfg.strategy {
            patch.strategy = Some(s);
        }
    }
    if p.models != cfg.models {
        patch.models = Some(p.models);
    }
    if p.aliases != cfg.aliases {
        patch.aliases = Some(p.aliases);
    }
    if p.default_model != cfg.default_model {
        patch.default_model = Some(p.default_model);
    }
    let now_budget = (!cfg.budget.is_empty()).then_some((cfg.budget.usd_nano, cfg.budget.tokens, cfg.budget.requests));
    if budget_of(&p.budget) != now_budget {
        patch.budget = Some(p.budget);
    }
    if p.period != cfg.budget_period {
        patch.budget_period = Some(p.period);
    }
    if p.rate_limits != cfg.rate_limits {
        patch.rate_limits = Some((!p.rate_limits.is_empty()).then_some(p.rate_limits));
    }
    let now_expires = row.expires_at.map(html::date_of);
    if p.expires != now_expires {
        patch.expires_at = Some(p.expires);
    }
    if p.note != row.note {
        patch.note = Some(p.note);
    }
    patch
}

/// `POST /ui/virtual-keys/{id}`.
pub async fn update(
    State(state): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    PostForm(form): PostForm,
) -> Response {
    let row = match find(&state, &ui, &id).await {
        Ok(r) => r,
        Err(e) => return not_found(&ui, &e),
    };
    let d = Draft::from_form(&form);
    let result = async {
        let p = d.parse()?;
        let patch = patch_of(&row, &config_of(&row)?, &d, p);
        vk::update(&state, &ui.ctx, row.clone(), patch).await
    }
    .await;
    match result {
        Ok(row) => {
            state.refresh_caches().await;
            ui.redirect_with("/ui/virtual-keys", &format!("Saved virtual key {}.", row.name))
        }
        Err(e) => edit_page(&state, &ui, &row, &d, Some(e)).await,
    }
}

/// `POST /ui/virtual-keys/{id}/status`: disable or enable.
pub async fn set_status(
    State(state): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    PostForm(form): PostForm,
) -> Response {
    let row = match find(&state, &ui, &id).await {
        Ok(r) => r,
        Err(e) => return not_found(&ui, &e),
    };
    let status = form.text("status").to_string();
    let patch = UpdateVirtualKey {
        status: Some(status.clone()),
        ..Default::default()
    };
    match vk::update(&state, &ui.ctx, row, patch).await {
        Ok(row) => {
            state.refresh_caches().await;
            let what = if status == "disabled" { "Disabled" } else { "Enabled" };
            ui.redirect_with("/ui/virtual-keys", &format!("{what} virtual key {}.", row.name))
        }
        Err(e) => not_found(&ui, &readable(e)),
    }
}

/// `GET /ui/virtual-keys/{id}/delete`: asks first.
pub async fn delete_form(State(state): State<AppState>, ui: Ui, Path(id): Path<String>) -> Response {
    let row = match find(&state, &ui, &id).await {
        Ok(r) => r,
        Err(e) => return not_found(&ui, &e),
    };
    let body = format!(
        r#"<div class="card narrow confirm"><h2>Delete virtual key {name}?</h2>
<p>Clients that send <code>{slug}</code> will be refused. Its usage stays readable.</p>
<form method="post" action="/ui/virtual-keys/{id}/delete">{csrf}<button type="submit" class="btn btn-danger" id="confirm-delete">Delete {name}</button> <a class="btn btn-ghost" href="/ui/virtual-keys">Cancel</a></form></div>"#,
        name = E(&row.name),
        slug = E(&row.slug),
        id = html::url_enc(&row.id),
        csrf = html::csrf_field(&ui.csrf),
    );
    ui.page(Nav::VirtualKeys, "Delete virtual key", &body)
}

/// `POST /ui/virtual-keys/{id}/delete`.
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
    match vk::delete(&state, &ui.ctx, &row).await {
        Ok(_) => {
            state.refresh_caches().await;
            ui.redirect_with("/ui/virtual-keys", &format!("Deleted virtual key {}.", row.name))
        }
        Err(e) => not_found(&ui, &readable(e)),
    }
}
