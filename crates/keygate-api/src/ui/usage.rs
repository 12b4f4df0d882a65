//! The Usage page: totals, charts of cost and tokens per day and by model or key over a chosen
//! range (server-side SVG), the breakdown table and the requests beneath. The view below feeds
//! the template `usage.html`.
//!
//! What must stay true: the figures are read after the usage meter is flushed, so a request
//! just answered is counted; key names are text wherever they appear (the template escapes).

use std::collections::HashMap;

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use keygate_store::{Page, UsageFilter, UsageGroup, UsageTotals};
use keygate_types::timefmt::{now_ms, parse_ms};
use keygate_types::NanoUsd;

use super::chart::{self, Bar, Columns, Rows};
use super::html::{self, Flash, Frame, Nav, Opt, Pager, Time};
use super::{Params, Ui};
use crate::error::ApiError;
use crate::state::AppState;

const DAY_MS: i64 = 86_400_000;
const PER_PAGE: u32 = 25;

struct Names {
    vks: HashMap<String, String>,
    api_keys: HashMap<String, String>,
    providers: HashMap<String, String>,
}

impl Names {
    async fn load(state: &AppState, workspace: &str) -> Names {
        let page = Page { page: 1, limit: 500 };
        let vks = state
            .store
            .list_virtual_keys(workspace, page)
            .await
            .map(|(rows, _)| rows.into_iter().map(|r| (r.id, r.slug)).collect())
            .unwrap_or_default();
        let api_keys = state
            .store
            .list_platform_keys(workspace, page)
            .await
            .map(|(rows, _)| {
                rows.into_iter()
                    .map(|r| {
                        let label = if r.description.is_empty() {
                            format!("…{}", r.last6)
                        } else {
                            format!("{} …{}", r.description, r.last6)
                        };
                        (r.id, label)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let providers = state
            .store
            .list_provider_keys(workspace, page)
            .await
            .map(|(rows, _)| rows.into_iter().map(|r| (r.id, r.name)).collect())
            .unwrap_or_default();
        Names {
            vks,
            api_keys,
            providers,
        }
    }

    fn vk(&self, state: &AppState, id: Option<&str>) -> String {
        match id {
            None | Some("") => "—".into(),
            Some(id) => self
                .vks
                .get(id)
                .cloned()
                .or_else(|| state.runtime.virtual_key(id).map(|v| v.slug.clone()))
                .unwrap_or_else(|| format!("{id} (deleted)")),
        }
    }

    fn api_key(&self, id: Option<&str>) -> String {
        match id {
            None | Some("") => "—".into(),
            Some(id) => self
                .api_keys
                .get(id)
                .cloned()
                .unwrap_or_else(|| format!("{id} (deleted)")),
        }
    }

    fn provider(&self, state: &AppState, id: Option<&str>) -> String {
        match id {
            None | Some("") => "—".into(),
            Some(id) => self
                .providers
                .get(id)
                .cloned()
                .or_else(|| state.runtime.provider_name(id))
                .unwrap_or_else(|| format!("{id} (deleted)")),
        }
    }
}

fn tokens_of(t: &UsageTotals) -> i64 {
    t.prompt_tokens + t.completion_tokens
}

fn usd_axis(v: f64) -> String {
    if v <= 0.0 {
        return "$0".into();
    }
    // Two significant digits at least, two decimals at least.
    let decimals = ((-v.log10()).ceil() as i64 + 1).clamp(2, 9) as usize;
    let s = format!("{v:.decimals$}");
    let (whole, frac) = s.split_once('.').unwrap_or((&s, ""));
    let mut frac = frac.trim_end_matches('0').to_string();
    while frac.len() < 2 {
        frac.push('0');
    }
    format!("${whole}.{frac}")
}

fn tokens_axis(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// The totals of the range, written out.
struct Totals {
    requests: String,
    tokens: String,
    input: String,
    output: String,
    cost: String,
    errors: String,
}

/// One line of the breakdown table.
struct GroupLine {
    label: String,
    requests: String,
    input: String,
    output: String,
    cost: String,
    errors: String,
}

/// One request of the range.
struct RecordLine<'a> {
    at: Option<Time>,
    model: Option<&'a str>,
    estimated: bool,
    stream: bool,
    virtual_key: String,
    api_key: String,
    provider_key: String,
    status: String,
    status_kind: &'static str,
    input: String,
    output: String,
    cost: String,
    latency: String,
}

/// `usage.html`.
#[derive(Template)]
#[template(path = "usage.html")]
struct UsagePage<'a> {
    frame: Frame<'a>,
    from: String,
    to: String,
    bys: Vec<Opt>,
    totals: Totals,
    cost_per_day: Columns,
    tokens_per_day: Columns,
    cost_by: Rows,
    tokens_by: Rows,
    by_label: &'a str,
    by_heading: String,
    groups: Vec<GroupLine>,
    records: Vec<RecordLine<'a>>,
    pager: Pager,
}

/// `GET /ui/usage?from=YYYY-MM-DD&to=YYYY-MM-DD&by=model|key|apiKey|providerKey|hub&page=`.
pub async fn page(State(state): State<AppState>, ui: Ui, q: Params) -> Response {
    state.meter.flush().await;
    let now = now_ms();
    let today = now - now.rem_euclid(DAY_MS);
    let bad = |m: &str| ApiError::bad_request(m.to_string());
    let mut error = None;
    let mut from = match q.get("from").map(parse_ms) {
        None => today - 29 * DAY_MS,
        Some(Some(v)) => v - v.rem_euclid(DAY_MS),
        Some(None) => {
            error = Some(bad("The start date must be written YYYY-MM-DD."));
            today - 29 * DAY_MS
        }
    };
    let to_day = match q.get("to").map(parse_ms) {
        None => today,
        Some(Some(v)) => v - v.rem_euclid(DAY_MS),
        Some(None) => {
            error = Some(bad("The end date must be written YYYY-MM-DD."));
            today
        }
    };
    if to_day < from {
        error = Some(bad("The end date is before the start date; showing one day."));
        from = to_day;
    }
    if to_day - from > 400 * DAY_MS {
        from = to_day - 400 * DAY_MS;
    }
    let to = to_day + DAY_MS;
    let by = match q.text("by") {
        "key" | "virtualKey" => "key",
        "apiKey" => "apiKey",
        "providerKey" => "providerKey",
        "hub" => "hub",
        _ => "model",
    };
    let group = match by {
        "key" => UsageGroup::VirtualKey,
        "apiKey" => UsageGroup::PlatformKey,
        "providerKey" => UsageGroup::ProviderKey,
        "hub" => UsageGroup::Hub,
        _ => UsageGroup::Model,
    };
    let filter = UsageFilter {
        from: Some(from),
        to: Some(to),
        ..Default::default()
    };
    let ws = &ui.ctx.workspace;
    let page = q.page();
    let loaded = async {
        let totals = state.store.usage_totals(ws, &filter).await?;
        let days = state.store.usage_grouped(ws, &filter, UsageGroup::Day, 1000).await?;
        let groups = state.store.usage_grouped(ws, &filter, group, 1000).await?;
        let records = state
            .store
            .list_usage(ws, &filter, Page { page, limit: PER_PAGE })
            .await?;
        Ok::<_, ApiError>((totals, days, groups, records))
    }
    .await;
    let (totals, days, mut groups, (records, total_records)) = match loaded {
        Ok(x) => x,
        Err(e) => return ui.error_page(Nav::Usage, "Usage", &e, None),
    };
    let names = Names::load(&state, ws).await;
    let label_of = |g: &str| -> String {
        match group {
            UsageGroup::VirtualKey => names.vk(&state, Some(g)),
            UsageGroup::PlatformKey => names.api_key(Some(g)),
            UsageGroup::ProviderKey => names.provider(&state, Some(g)),
            _ if g.is_empty() => "(none)".into(),
            _ => g.to_string(),
        }
    };

    // Range form.
    let bys = [
        ("model", "model"),
        ("key", "virtual key"),
        ("apiKey", "API key"),
        ("providerKey", "provider key"),
        ("hub", "hub"),
    ];
    let totals_view = Totals {
        requests: html::int(totals.requests),
        tokens: html::int(tokens_of(&totals)),
        input: html::int(totals.prompt_tokens),
        output: html::int(totals.completion_tokens),
        cost: html::usd(totals.cost_nano),
        errors: html::int(totals.errors),
    };
    // Per day, every day of the range.
    let by_day: HashMap<i64, &UsageTotals> = days
        .iter()
        .filter_map(|d| d.group.parse::<i64>().ok().map(|n| (n, d)))
        .collect();
    let mut cost_days = Vec::new();
    let mut tok_days = Vec::new();
    let mut d = from;
    while d < to {
        let n = d / DAY_MS;
        let t = by_day.get(&n);
        let label = html::date_of(d);
        let cost = t.map(|t| t.cost_nano).unwrap_or(0);
        let tokens = t.map(|t| tokens_of(t)).unwrap_or(0);
        cost_days.push(Bar {
            label: label.clone(),
            value: NanoUsd(cost).to_usd_f64(),
            shown: html::usd(cost),
        });
        tok_days.push(Bar {
            label,
            value: tokens as f64,
            shown: format!("{} tokens", html::int(tokens)),
        });
        d += DAY_MS;
    }
    let cost_per_day = chart::columns("chart-cost-day", "Cost per day", "cost", &cost_days, &usd_axis);
    let tokens_per_day = chart::columns("chart-tokens-day", "Tokens per day", "tokens", &tok_days, &tokens_axis);
    // Breakdown.
    let by_label = bys.iter().find(|(k, _)| *k == by).map(|(_, l)| *l).unwrap_or("model");
    groups.sort_by(|a, b| b.cost_nano.cmp(&a.cost_nano).then(tokens_of(b).cmp(&tokens_of(a))));
    let top: Vec<&UsageTotals> = groups.iter().take(15).collect();
    let cost_bars: Vec<Bar> = top
        .iter()
        .map(|g| Bar {
            label: label_of(&g.group),
            value: NanoUsd(g.cost_nano).to_usd_f64(),
            shown: html::usd(g.cost_nano),
        })
        .collect();
    let mut by_tokens = top.clone();
    by_tokens.sort_by_key(|g| std::cmp::Reverse(tokens_of(g)));
    let tok_bars: Vec<Bar> = by_tokens
        .iter()
        .map(|g| Bar {
            label: label_of(&g.group),
            value: tokens_of(g) as f64,
            shown: html::int(tokens_of(g)),
        })
        .collect();
    let cost_by = chart::rows("chart-cost-by", &format!("Cost by {by_label}"), "cost", &cost_bars);
    let tokens_by = chart::rows("chart-tokens-by", &format!("Tokens by {by_label}"), "tokens", &tok_bars);
    // The breakdown table.
    let group_lines = groups
        .iter()
        .map(|g| GroupLine {
            label: label_of(&g.group),
            requests: html::int(g.requests),
            input: html::int(g.prompt_tokens),
            output: html::int(g.completion_tokens),
            cost: html::usd(g.cost_nano),
            errors: html::int(g.errors),
        })
        .collect();
    // Requests.
    let record_lines = records
        .iter()
        .map(|r| RecordLine {
            at: html::when(Some(r.at)),
            model: r.model.as_deref(),
            estimated: r.estimated,
            stream: r.stream,
            virtual_key: names.vk(&state, r.virtual_key_id.as_deref()),
            api_key: names.api_key(r.platform_key_id.as_deref()),
            provider_key: names.provider(&state, r.provider_key_id.as_deref()),
            status: r.status_code.to_string(),
            status_kind: if (200..300).contains(&r.status_code) {
                "ok"
            } else {
                "error"
            },
            input: html::int(r.prompt_tokens),
            output: html::int(r.completion_tokens),
            cost: html::usd(r.cost_nano),
            latency: html::int(r.latency_ms),
        })
        .collect();
    let pager = html::pager(
        "/ui/usage",
        &[
            ("from", html::date_of(from)),
            ("to", html::date_of(to_day)),
            ("by", by.to_string()),
        ],
        page,
        PER_PAGE,
        usize::try_from(total_records).unwrap_or(0),
    );
    let frame = match &error {
        Some(e) => ui.frame_with(Nav::Usage, "Usage", Some(Flash::Error(&e.message))),
        None => ui.frame(Nav::Usage, "Usage"),
    };
    let view = UsagePage {
        frame,
        from: html::date_of(from),
        to: html::date_of(to_day),
        bys: html::options(&bys, by),
        totals: totals_view,
        cost_per_day,
        tokens_per_day,
        cost_by,
        tokens_by,
        by_label,
        by_heading: capitalize(by_label),
        groups: group_lines,
        records: record_lines,
        pager,
    };
    match &error {
        Some(e) => ui.render(e.status, &view),
        None => ui.page(&view),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels() {
        assert_eq!(usd_axis(0.0), "$0");
        assert_eq!(usd_axis(0.0001), "$0.0001");
        assert_eq!(usd_axis(0.000025), "$0.000025");
        assert_eq!(usd_axis(2.5), "$2.50");
        assert_eq!(usd_axis(50.0), "$50.00");
        assert_eq!(tokens_axis(12_500.0), "12.5k");
    }
}
