//! The Usage page: totals, charts of cost and tokens per day and by model or key over a chosen
//! range (server-side SVG), the breakdown table and the requests beneath.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::State;
use axum::response::Response;
use keygate_store::{Page, UsageFilter, UsageGroup, UsageTotals};
use keygate_types::timefmt::{now_ms, parse_ms};
use keygate_types::NanoUsd;

use super::chart::{self, Bar};
use super::html::{self, esc, Flash, Nav, E};
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
        Err(e) => return ui.error_page(Nav::Usage, "Usage", &e, ""),
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
    let mut body = format!(
        r#"<form class="filters range" method="get" action="/ui/usage"><label class="field" for="f-from"><span>From</span><input type="date" id="f-from" name="from" value="{from}"></label><label class="field" for="f-to"><span>To (inclusive)</span><input type="date" id="f-to" name="to" value="{to}"></label><label class="field" for="by"><span>Break down by</span>{by}</label><button class="btn" type="submit" id="apply-range">Apply</button></form>"#,
        from = E(&html::date_of(from)),
        to = E(&html::date_of(to_day)),
        by = html::select("by", "by", &bys, by),
    );
    // Totals.
    let _ = write!(
        body,
        r#"<div class="stats" id="usage-totals"><div class="stat"><span class="stat-label">Requests</span><span class="stat-value" id="total-requests">{req}</span></div><div class="stat"><span class="stat-label">Tokens</span><span class="stat-value" id="total-tokens">{tok}</span><span class="muted small">{pin} in · {pout} out</span></div><div class="stat"><span class="stat-label">Cost</span><span class="stat-value" id="total-cost">{cost}</span></div><div class="stat"><span class="stat-label">Errors</span><span class="stat-value">{err}</span></div></div>"#,
        req = html::int(totals.requests),
        tok = html::int(tokens_of(&totals)),
        pin = html::int(totals.prompt_tokens),
        pout = html::int(totals.completion_tokens),
        cost = html::usd(totals.cost_nano),
        err = html::int(totals.errors),
    );
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
    let _ = write!(
        body,
        r#"<div class="charts">{}{}</div>"#,
        chart::columns("chart-cost-day", "Cost per day", "cost", &cost_days, &usd_axis),
        chart::columns("chart-tokens-day", "Tokens per day", "tokens", &tok_days, &tokens_axis),
    );
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
    let _ = write!(
        body,
        r#"<div class="charts">{}{}</div>"#,
        chart::rows("chart-cost-by", &format!("Cost by {by_label}"), "cost", &cost_bars),
        chart::rows("chart-tokens-by", &format!("Tokens by {by_label}"), "tokens", &tok_bars),
    );
    // The breakdown table.
    let _ = write!(
        body,
        r#"<h2>By {}</h2><div class="table-wrap"><table class="list" id="usage-groups"><thead><tr><th>{}</th><th class="num">Requests</th><th class="num">Input tokens</th><th class="num">Output tokens</th><th class="num">Cost</th><th class="num">Errors</th></tr></thead><tbody>"#,
        E(by_label),
        E(&capitalize(by_label)),
    );
    if groups.is_empty() {
        body.push_str(r#"<tr><td colspan="6" class="muted">No requests in this range.</td></tr>"#);
    }
    for g in &groups {
        let _ = write!(
            body,
            r#"<tr><td data-label="{h}">{l}</td><td class="num" data-label="Requests">{r}</td><td class="num" data-label="Input">{i}</td><td class="num" data-label="Output">{o}</td><td class="num" data-label="Cost">{c}</td><td class="num" data-label="Errors">{e}</td></tr>"#,
            h = E(&capitalize(by_label)),
            l = esc(&label_of(&g.group)),
            r = html::int(g.requests),
            i = html::int(g.prompt_tokens),
            o = html::int(g.completion_tokens),
            c = html::usd(g.cost_nano),
            e = html::int(g.errors),
        );
    }
    body.push_str("</tbody></table></div>");
    // Requests.
    body.push_str(r#"<h2>Requests</h2><div class="table-wrap"><table class="list" id="usage-records"><thead><tr><th>Time</th><th>Model</th><th>Virtual key</th><th>API key</th><th>Provider key</th><th>Status</th><th class="num">Tokens in / out</th><th class="num">Cost</th><th class="num">Latency</th></tr></thead><tbody>"#);
    if records.is_empty() {
        body.push_str(r#"<tr><td colspan="9" class="muted">No requests in this range.</td></tr>"#);
    }
    for r in &records {
        let status = if (200..300).contains(&r.status_code) {
            html::badge(&r.status_code.to_string(), "ok")
        } else {
            html::badge(&r.status_code.to_string(), "error")
        };
        let _ = write!(
            body,
            r#"<tr><td data-label="Time">{t}</td><td data-label="Model">{m}{est}{stream}</td><td data-label="Virtual key">{vk}</td><td data-label="API key">{ak}</td><td data-label="Provider key">{pk}</td><td data-label="Status">{status}</td><td class="num" data-label="Tokens">{pi} / {po}</td><td class="num" data-label="Cost">{c}</td><td class="num" data-label="Latency">{l} ms</td></tr>"#,
            t = html::when(Some(r.at)),
            m = html::or_dash(r.model.as_deref()),
            est = if r.estimated {
                format!(" {}", html::badge("estimated", "muted"))
            } else {
                String::new()
            },
            stream = if r.stream {
                format!(" {}", html::badge("stream", "info"))
            } else {
                String::new()
            },
            vk = esc(&names.vk(&state, r.virtual_key_id.as_deref())),
            ak = esc(&names.api_key(r.platform_key_id.as_deref())),
            pk = esc(&names.provider(&state, r.provider_key_id.as_deref())),
            pi = html::int(r.prompt_tokens),
            po = html::int(r.completion_tokens),
            c = html::usd(r.cost_nano),
            l = html::int(r.latency_ms),
        );
    }
    body.push_str("</tbody></table></div>");
    body.push_str(&html::pager(
        "/ui/usage",
        &[
            ("from", html::date_of(from)),
            ("to", html::date_of(to_day)),
            ("by", by.to_string()),
        ],
        page,
        PER_PAGE,
        usize::try_from(total_records).unwrap_or(0),
    ));
    match error {
        Some(e) => ui.page_with(e.status, Nav::Usage, "Usage", Some(Flash::Error(&e.message)), &body),
        None => ui.page(Nav::Usage, "Usage", &body),
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
