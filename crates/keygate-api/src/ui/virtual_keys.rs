//! The Virtual keys page: list with targets, budget bars, rate limits and live status;
//! create, edit, disable/enable, delete, through `crate::virtual_keys`. The views below feed
//! the templates `virtual_keys/*.html`.
//!
//! What must stay true: budget bars show the live counters, read when the page is drawn; a key
//! name, slug or note is text wherever it appears (the templates escape it).

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use keygate_store::{Page, ProviderKeyRow, StoreError, VirtualKeyRow};
use keygate_types::NanoUsd;

use super::html::{self, Frame, Meter, Nav, Opt, Pager, Time};
use super::keys::{all_provider_keys, readable};
use super::{matches, page_of, Back, Form, Params, PostForm, Ui};
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

/// The way back from a page that failed.
const BACK: Back = Some(("/ui/virtual-keys", "Back to virtual keys"));

/// The rate limits as `30 rpm · 1,000 tpd`, None when there are none.
fn rate_limits_text(r: &RateLimits) -> Option<String> {
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
    (!parts.is_empty()).then(|| parts.join(" · "))
}

/// The badge class of a live status.
fn status_kind(status: &str) -> &'static str {
    match status {
        "active" => "ok",
        "disabled" => "muted",
        "exhausted" => "warn",
        _ => "error",
    }
}

/// A virtual key's budget as shown: a note (no budget, not loaded yet) or its bars.
struct Budget {
    note: Option<&'static str>,
    bars: Vec<Meter>,
}

impl Budget {
    fn note(note: &'static str) -> Budget {
        Budget {
            note: Some(note),
            bars: Vec::new(),
        }
    }
}

/// Budget bars (used vs limit, read live from the counters) of a virtual key.
async fn budget_bars(state: &AppState, row: &VirtualKeyRow) -> Budget {
    let Ok(cfg) = config_of(row) else {
        return Budget::note("unreadable");
    };
    if cfg.budget.is_empty() {
        return Budget::note("no budget");
    }
    let Some(rt) = state.runtime.virtual_key(&row.id) else {
        return Budget::note("loading…");
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
    let mut bars = Vec::new();
    for (l, s) in checks.iter().zip(&states) {
        let label = match l.measure {
            Measure::Usd => format!("{} of {}{period}", html::usd(s.used), html::usd(s.limit)),
            Measure::Tokens => format!("{} of {} tokens{period}", html::int(s.used), html::int(s.limit)),
            Measure::Requests => format!("{} of {} requests{period}", html::int(s.used), html::int(s.limit)),
        };
        bars.push(html::meter(s.used, s.limit, label));
    }
    Budget { note: None, bars }
}

/// One virtual key of the list.
struct VkItem<'a> {
    row: &'a VirtualKeyRow,
    /// The id, percent-encoded for the links.
    id: String,
    /// Target provider keys' names, with their weights when there are several.
    targets: Vec<(String, Option<u32>)>,
    strategy: Option<&'static str>,
    budget: Budget,
    rate_limits: Option<String>,
    status: &'a str,
    status_kind: &'static str,
    expires: Option<Time>,
    /// The status the toggle sets and its button's label.
    toggle: (&'static str, &'static str),
}

/// `virtual_keys/list.html`.
#[derive(Template)]
#[template(path = "virtual_keys/list.html")]
struct ListPage<'a> {
    frame: Frame<'a>,
    search: &'a str,
    statuses: Vec<Opt>,
    total: usize,
    rows: Vec<VkItem<'a>>,
    pager: Pager,
}

/// `GET /ui/virtual-keys`.
pub async fn list(State(state): State<AppState>, ui: Ui, q: Params) -> Response {
    let (rows, pks) = match tokio::try_join!(
        all_virtual_keys(&state, &ui.ctx.workspace),
        all_provider_keys(&state, &ui.ctx.workspace)
    ) {
        Ok(x) => x,
        Err(e) => return ui.error_page(Nav::VirtualKeys, "Virtual keys", &e, None),
    };
    let names: HashMap<&str, &str> = pks.iter().map(|p| (p.id.as_str(), p.name.as_str())).collect();
    let search = q.text("q");
    let want_status = q.text("status");
    let mut shown = Vec::new();
    for r in rows {
        let cfg = match config_of(&r) {
            Ok(c) => c,
            Err(e) => return ui.error_page(Nav::VirtualKeys, "Virtual keys", &e, None),
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

    let statuses = [
        ("", "Any status"),
        ("active", "active"),
        ("disabled", "disabled"),
        ("expired", "expired"),
        ("exhausted", "exhausted"),
    ];
    let mut items = Vec::new();
    for r in &shown {
        let cfg = match config_of(r) {
            Ok(c) => c,
            Err(e) => return ui.error_page(Nav::VirtualKeys, "Virtual keys", &e, None),
        };
        let status = vk::live_status(&state, r).await;
        let targets = cfg
            .targets
            .iter()
            .map(|t| {
                let n = names.get(t.provider_key_id.as_str()).copied().unwrap_or("(deleted)");
                (n.to_string(), (cfg.targets.len() > 1).then_some(t.weight))
            })
            .collect();
        let toggle = if r.status == "disabled" {
            ("active", "Enable")
        } else {
            ("disabled", "Disable")
        };
        items.push(VkItem {
            row: r,
            id: html::url_enc(&r.id),
            targets,
            strategy: (cfg.targets.len() > 1).then(|| strategy_str(cfg.strategy)),
            budget: budget_bars(&state, r).await,
            rate_limits: rate_limits_text(&cfg.rate_limits),
            status,
            status_kind: status_kind(status),
            expires: html::when(r.expires_at),
            toggle,
        });
    }
    ui.page(&ListPage {
        frame: ui.frame(Nav::VirtualKeys, "Virtual keys"),
        search,
        statuses: html::options(&statuses, want_status),
        total,
        rows: items,
        pager: html::pager(
            "/ui/virtual-keys",
            &[("q", search.to_string()), ("status", want_status.to_string())],
            page,
            PER_PAGE,
            total,
        ),
    })
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

/// One provider key the form offers as a target.
struct TargetOpt {
    id: String,
    name: String,
    hub: String,
    checked: bool,
    weight: String,
}

/// The create and edit form (`virtual_keys/form.html`).
struct VkForm<'a> {
    action: String,
    editing: bool,
    d: &'a Draft,
    targets: Vec<TargetOpt>,
    strategies: Vec<Opt>,
    periods: Vec<Opt>,
    /// The rate-limit windows: (field name, label, value).
    windows: Vec<(&'static str, &'static str, String)>,
}

fn form_view<'a>(d: &'a Draft, pks: &[ProviderKeyRow], action: String, editing: bool) -> VkForm<'a> {
    let targets = pks
        .iter()
        .map(|p| TargetOpt {
            id: p.id.clone(),
            name: p.name.clone(),
            hub: p.hub.clone(),
            checked: d.targets.contains_key(&p.id),
            weight: d.targets.get(&p.id).map(String::as_str).unwrap_or("1").to_string(),
        })
        .collect();
    let windows = [
        ("rpm", "Requests / minute"),
        ("rph", "Requests / hour"),
        ("rpd", "Requests / day"),
        ("tpm", "Tokens / minute"),
        ("tph", "Tokens / hour"),
        ("tpd", "Tokens / day"),
    ]
    .into_iter()
    .map(|(k, label)| (k, label, d.windows.get(k).cloned().unwrap_or_default()))
    .collect();
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
    VkForm {
        action,
        editing,
        d,
        targets,
        strategies: html::options(&strategies, &d.strategy),
        periods: html::options(&periods, if d.period.is_empty() { "LIFETIME" } else { &d.period }),
        windows,
    }
}

/// `virtual_keys/new.html`.
#[derive(Template)]
#[template(path = "virtual_keys/new.html")]
struct NewPage<'a> {
    frame: Frame<'a>,
    form: VkForm<'a>,
}

/// `GET /ui/virtual-keys/new`.
pub async fn new_form(State(state): State<AppState>, ui: Ui) -> Response {
    let pks = match all_provider_keys(&state, &ui.ctx.workspace).await {
        Ok(p) => p,
        Err(e) => return ui.error_page(Nav::VirtualKeys, "Create virtual key", &e, None),
    };
    let mut d = Draft::default();
    if pks.len() == 1 {
        d.targets.insert(pks[0].id.clone(), "1".into());
    }
    ui.page(&NewPage {
        frame: ui.frame(Nav::VirtualKeys, "Create virtual key"),
        form: form_view(&d, &pks, "/ui/virtual-keys/new".into(), false),
    })
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
            let e = readable(e);
            ui.render(
                e.status,
                &NewPage {
                    frame: ui.error_frame(Nav::VirtualKeys, "Create virtual key", &e),
                    form: form_view(&d, &pks, "/ui/virtual-keys/new".into(), false),
                },
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
    ui.error_page(Nav::VirtualKeys, "Virtual keys", e, BACK)
}

/// `virtual_keys/edit.html`.
#[derive(Template)]
#[template(path = "virtual_keys/edit.html")]
struct EditPage<'a> {
    frame: Frame<'a>,
    row: &'a VirtualKeyRow,
    status: &'a str,
    status_kind: &'static str,
    budget: Budget,
    created: Option<Time>,
    form: VkForm<'a>,
}

async fn edit_page(state: &AppState, ui: &Ui, row: &VirtualKeyRow, d: &Draft, error: Option<ApiError>) -> Response {
    let pks = all_provider_keys(state, &ui.ctx.workspace).await.unwrap_or_default();
    let status = vk::live_status(state, row).await;
    let action = format!("/ui/virtual-keys/{}", html::url_enc(&row.id));
    let title = format!("Virtual key {}", row.name);
    let error = error.map(readable);
    let frame = match &error {
        Some(e) => ui.error_frame(Nav::VirtualKeys, &title, e),
        None => ui.frame(Nav::VirtualKeys, &title),
    };
    let view = EditPage {
        frame,
        row,
        status,
        status_kind: status_kind(status),
        budget: budget_bars(state, row).await,
        created: html::when(Some(row.created_at)),
        form: form_view(d, &pks, action, true),
    };
    match &error {
        Some(e) => ui.render(e.status, &view),
        None => ui.page(&view),
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
    ui.page(&DeletePage {
        frame: ui.frame(Nav::VirtualKeys, "Delete virtual key"),
        row: &row,
        id: html::url_enc(&row.id),
    })
}

/// `virtual_keys/delete.html`.
#[derive(Template)]
#[template(path = "virtual_keys/delete.html")]
struct DeletePage<'a> {
    frame: Frame<'a>,
    row: &'a VirtualKeyRow,
    id: String,
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
