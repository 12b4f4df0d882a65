//! The limits decision of the gateway: which counters a request meets, the one
//! atomic decision over all of them, the reservation that is settled to the real tokens and
//! cost afterwards (or released on every exit path), refusal events, and the OpenAI-style
//! `x-ratelimit-*` headers.
//!
//! Limits a request meets: its platform key's rate limits and consumption limits, its virtual
//! key's rate limits and budget, the virtual key's per-model overrides, and the rate limit of
//! the provider key it is sent to. Budgets in `strict` mode reserve the most the request can
//! cost before it is forwarded; in `soft` mode they are charged after the fact.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use keygate_limits::memory::MemoryCounters;
use keygate_limits::{Acquired, Adjustment, Check, Clock, Counters, Kind, LimitError, WindowState};
use keygate_store::RateLimitEventRow;
use serde_json::{json, Value};

use keygate_types::policy::{Budget, Period, RateLimits};

use crate::auth::Principal;
use crate::error::CoreError;
use crate::runtime::{ProviderRuntime, VkRuntime};

/// What to do when the shared counters cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailMode {
    /// Refuse with 503 and call no upstream.
    Closed,
    /// Decide on this process's counters alone; each such decision is counted and logged.
    Open,
}

/// How budgets are charged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetMode {
    /// Reserve the most a request can cost before forwarding it.
    Strict,
    /// Charge after the fact; a request is admitted while the budget is not used up.
    Soft,
}

/// The decision engine.
pub struct LimitEngine {
    pub counters: Arc<dyn Counters>,
    pub clock: Arc<dyn Clock>,
    local: MemoryCounters,
    pub fail_mode: FailMode,
    pub budget_mode: BudgetMode,
    /// Output tokens assumed for a model of unknown output cap when a request sets no maximum.
    pub default_max_output_tokens: u64,
    /// Decisions taken on local counters because the shared ones were unreachable.
    pub fail_open_decisions: AtomicU64,
    /// Nano-USD per DIEM and per VCU.
    pub diem_nano: i64,
    pub vcu_nano: i64,
}

/// What a counter measures, for headers and events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    Requests,
    Tokens,
    Usd,
}

/// A check with what it means.
#[derive(Clone, Debug)]
pub struct Labeled {
    pub check: Check,
    pub measure: Measure,
    /// `api_key`, `virtual_key`, `model`, `provider_key`.
    pub scope: &'static str,
    /// `RPM`, `TPD`, `BUDGET`…
    pub limit_type: Cow<'static, str>,
    pub is_budget: bool,
}

/// The bounds a request is reserved with.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bounds {
    pub tokens: u64,
    pub cost_nano: i64,
}

impl LimitEngine {
    pub fn new(
        counters: Arc<dyn Counters>,
        clock: Arc<dyn Clock>,
        fail_mode: FailMode,
        budget_mode: BudgetMode,
    ) -> Self {
        LimitEngine {
            counters,
            clock,
            local: MemoryCounters::new(),
            fail_mode,
            budget_mode,
            default_max_output_tokens: 32_768,
            fail_open_decisions: AtomicU64::new(0),
            diem_nano: 1_000_000_000,
            vcu_nano: 100_000_000,
        }
    }

    /// Nano-USD per unit of a money currency of a consumption limit.
    pub fn usd_rate(&self, currency: &str) -> Option<i64> {
        match currency {
            "usd" => Some(1_000_000_000),
            "diem" => Some(self.diem_nano),
            "vcu" => Some(self.vcu_nano),
            _ => None,
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn rate_checks(
        out: &mut Vec<Labeled>,
        prefix: &str,
        scope: &'static str,
        limits: &[(&str, Option<u64>)],
        tokens: u64,
    ) {
        for (name, limit) in limits {
            let Some(limit) = limit else { continue };
            let (window, measure, limit_type) = match *name {
                "rpm" => (60_000, Measure::Requests, "RPM"),
                "rph" => (3_600_000, Measure::Requests, "RPH"),
                "rpd" => (86_400_000, Measure::Requests, "RPD"),
                "tpm" => (60_000, Measure::Tokens, "TPM"),
                "tph" => (3_600_000, Measure::Tokens, "TPH"),
                "tpd" => (86_400_000, Measure::Tokens, "TPD"),
                _ => continue,
            };
            let amount = if measure == Measure::Requests { 1 } else { tokens as i64 };
            out.push(Labeled {
                check: Check {
                    key: format!("{prefix}:{name}"),
                    kind: Kind::Rate { window_ms: window },
                    limit: i64::try_from(*limit).unwrap_or(i64::MAX),
                    amount,
                },
                measure,
                scope,
                limit_type: Cow::Borrowed(limit_type),
                is_budget: false,
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn budget_checks(
        &self,
        out: &mut Vec<Labeled>,
        prefix: &str,
        scope: &'static str,
        budget: &Budget,
        period: Period,
        bounds: Bounds,
        now: i64,
    ) {
        let (start, next) = period.bounds(now);
        let expires = next.map(|n| n + 86_400_000);
        let strict = self.budget_mode == BudgetMode::Strict;
        let mut push = |what: &str, limit: i64, amount: i64, measure: Measure| {
            out.push(Labeled {
                check: Check {
                    key: format!("{prefix}:{what}:{start}"),
                    kind: Kind::Budget { expires_at_ms: expires },
                    limit,
                    // Soft mode: admitted while something is left; charged after.
                    amount: if strict { amount } else { 1 },
                },
                measure,
                scope,
                limit_type: Cow::Borrowed("BUDGET"),
                is_budget: true,
            });
        };
        if let Some(usd) = budget.usd_nano {
            push("usd", usd, bounds.cost_nano, Measure::Usd);
        }
        if let Some(t) = budget.tokens {
            push(
                "tokens",
                i64::try_from(t).unwrap_or(i64::MAX),
                bounds.tokens as i64,
                Measure::Tokens,
            );
        }
        if let Some(r) = budget.requests {
            push("requests", i64::try_from(r).unwrap_or(i64::MAX), 1, Measure::Requests);
        }
    }

    /// Every limit of the platform key, virtual key and model (not the provider key's).
    pub fn checks(&self, principal: &Principal, vk: &VkRuntime, model: &str, bounds: Bounds, now: i64) -> Vec<Labeled> {
        let mut out = Vec::new();
        let s = &principal.settings;
        // Counter keys are built only for a key that has limits (most have none).
        let pk_prefix = if s.rate_limits.is_empty() && s.consumption_limit.is_empty() {
            String::new()
        } else {
            format!("pk:{}", principal.id)
        };
        let rl = |n: &str| s.rate_limits.get(n).copied();
        Self::rate_checks(
            &mut out,
            &pk_prefix,
            "api_key",
            &[
                ("rpm", rl("rpm")),
                ("rph", rl("rph")),
                ("rpd", rl("rpd")),
                ("tpm", rl("tpm")),
                ("tph", rl("tph")),
                ("tpd", rl("tpd")),
            ],
            bounds.tokens,
        );
        if !s.consumption_limit.is_empty() {
            // Money limits in any currency are one USD cap: the smallest of them.
            let usd_cap = s
                .consumption_limit
                .iter()
                .filter_map(|(c, v)| {
                    self.usd_rate(c)
                        .map(|r| (i128::from(*v) * i128::from(r) / 1_000_000_000) as i64)
                })
                .min();
            let budget = Budget {
                usd_nano: usd_cap,
                tokens: s.consumption_limit.get("tokens").and_then(|v| u64::try_from(*v).ok()),
                requests: s.consumption_limit.get("requests").and_then(|v| u64::try_from(*v).ok()),
            };
            self.budget_checks(
                &mut out,
                &pk_prefix,
                "api_key",
                &budget,
                s.period().period(),
                bounds,
                now,
            );
        }
        let cfg = &vk.config;
        let vk_prefix = if cfg.rate_limits.is_empty() && cfg.budget.is_empty() {
            String::new()
        } else {
            format!("vk:{}", vk.id)
        };
        push_rate_limits(&mut out, &vk_prefix, "virtual_key", &cfg.rate_limits, bounds.tokens);
        if !cfg.budget.is_empty() {
            self.budget_checks(
                &mut out,
                &vk_prefix,
                "virtual_key",
                &cfg.budget,
                cfg.budget_period,
                bounds,
                now,
            );
        }
        if let Some(ml) = cfg.model_limits.get(model) {
            let prefix = format!("vk:{}:m:{}", vk.id, model);
            push_rate_limits(&mut out, &prefix, "model", &ml.rate_limits, bounds.tokens);
            if !ml.budget.is_empty() {
                self.budget_checks(&mut out, &prefix, "model", &ml.budget, cfg.budget_period, bounds, now);
            }
        }
        out
    }

    /// The provider key's own rate limit.
    pub fn provider_check(p: &ProviderRuntime) -> Labeled {
        let (per, interval) = p.rate_limit;
        Labeled {
            check: Check {
                key: format!("prov:{}:req", p.id),
                kind: Kind::Rate {
                    window_ms: interval.max(1) * 1000,
                },
                limit: per.max(0),
                amount: 1,
            },
            measure: Measure::Requests,
            scope: "provider_key",
            limit_type: if interval == 60 {
                Cow::Borrowed("RPM")
            } else {
                Cow::Owned(format!("R_PER_{interval}S"))
            },
            is_budget: false,
        }
    }

    /// A throttle of keygate's own: at most `limit` events of `name` for `subject` (a workspace,
    /// a client address) in any `window_ms`. It is a rate limit on the same counters as every
    /// other limit, so replicas that share Redis share it, and a backend failure is decided as
    /// for any limit (closed: 503; open: this process's counters). `Ok(None)` when admitted (the
    /// event is counted), `Ok(Some(seconds))` to wait when not (at most the window).
    pub async fn throttle(
        &self,
        name: &str,
        subject: &str,
        limit: u32,
        window_ms: i64,
        now: i64,
    ) -> Result<Option<u64>, CoreError> {
        let check = throttle_check(name, subject, limit, window_ms);
        let (acquired, _) = self.acquire(std::slice::from_ref(&check), now).await?;
        if acquired.admitted {
            return Ok(None);
        }
        Ok(Some(throttle_wait(acquired.retry_after_ms, window_ms)))
    }

    /// Whether the throttle `name` of `subject` is full now, without counting anything:
    /// `Some(seconds)` to wait when `limit` events are already counted in the window.
    pub async fn throttled(&self, name: &str, subject: &str, limit: u32, window_ms: i64) -> Option<u64> {
        let check = throttle_check(name, subject, limit, window_ms);
        let state = self.peek(std::slice::from_ref(&check)).await.into_iter().next()?;
        (state.used >= i64::from(limit)).then(|| throttle_wait(state.reset_ms, window_ms))
    }

    /// One decision over `checks`. On a backend failure, fail closed (503) or open (local counters).
    pub async fn acquire(&self, checks: &[Labeled], now: i64) -> Result<(Acquired, bool), CoreError> {
        let plain: Vec<Check> = checks.iter().map(|l| l.check.clone()).collect();
        match self.counters.acquire(&plain, now).await {
            Ok(a) => Ok((a, false)),
            Err(e) => self.fallback(&plain, now, e).await.map(|a| (a, true)),
        }
    }

    async fn fallback(&self, plain: &[Check], now: i64, e: LimitError) -> Result<Acquired, CoreError> {
        match self.fail_mode {
            FailMode::Closed => {
                tracing::warn!(error = %e, "limit counters unreachable: refusing (fail_mode = closed)");
                Err(CoreError::Unavailable(
                    "the limit counters are unreachable; try again shortly".into(),
                ))
            }
            FailMode::Open => {
                let n = self.fail_open_decisions.fetch_add(1, Ordering::Relaxed) + 1;
                crate::metrics::fail_open_decision();
                if n.is_power_of_two() {
                    tracing::warn!(error = %e, decisions = n, "limit counters unreachable: deciding on local counters (fail_mode = open)");
                }
                self.local
                    .acquire(plain, now)
                    .await
                    .map_err(|e| CoreError::Internal(e.to_string()))
            }
        }
    }

    /// Applies settlements; failures are logged (the counters then hold the reserved bound).
    pub async fn adjust(&self, items: Vec<Adjustment>, local: bool) {
        if items.is_empty() {
            return;
        }
        let now = self.now();
        let result = if local {
            self.local.adjust(&items, now).await
        } else {
            self.counters.adjust(&items, now).await
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot settle a reservation; the reserved bound stays counted");
        }
    }

    /// Reads counters for the limit reads of the API.
    pub async fn peek(&self, checks: &[Labeled]) -> Vec<WindowState> {
        let plain: Vec<Check> = checks.iter().map(|l| l.check.clone()).collect();
        let now = self.now();
        match self.counters.peek(&plain, now).await {
            Ok(s) => s,
            Err(_) => self.local.peek(&plain, now).await.unwrap_or_default(),
        }
    }
}

fn throttle_check(name: &str, subject: &str, limit: u32, window_ms: i64) -> Labeled {
    Labeled {
        check: Check {
            key: format!("throttle:{name}:{subject}"),
            kind: Kind::Rate { window_ms },
            limit: i64::from(limit),
            amount: 1,
        },
        measure: Measure::Requests,
        scope: "throttle",
        limit_type: Cow::Borrowed("THROTTLE"),
        is_budget: false,
    }
}

/// Seconds to wait, at most the window: the sliding window counts its oldest sub-bucket whole,
/// which can put the exact time a little past it; a throttle promises "within the window".
fn throttle_wait(wait_ms: i64, window_ms: i64) -> u64 {
    let secs = (wait_ms.max(1_000) + 999) / 1000;
    secs.min((window_ms / 1000).max(1)) as u64
}

fn push_rate_limits(out: &mut Vec<Labeled>, prefix: &str, scope: &'static str, r: &RateLimits, tokens: u64) {
    LimitEngine::rate_checks(
        out,
        prefix,
        scope,
        &[
            ("rpm", r.rpm),
            ("rph", r.rph),
            ("rpd", r.rpd),
            ("tpm", r.tpm),
            ("tph", r.tph),
            ("tpd", r.tpd),
        ],
        tokens,
    );
}

/// A reservation held while a request runs. Settled to the real figures when it ends;
/// released in full when it is dropped unsettled (error, timeout, cancel, panic).
pub struct Reservation {
    engine: Arc<LimitEngine>,
    items: Vec<(Labeled, i64)>,
    local: bool,
    done: bool,
}

impl Reservation {
    pub fn new(engine: Arc<LimitEngine>, checks: Vec<Labeled>, acquired: &Acquired, local: bool) -> Reservation {
        let items = checks.into_iter().zip(acquired.buckets.iter().copied()).collect();
        Reservation {
            engine,
            items,
            local,
            done: false,
        }
    }

    fn spawn(&self, adjustments: Vec<Adjustment>) {
        if adjustments.is_empty() {
            return;
        }
        let engine = self.engine.clone();
        let local = self.local;
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { engine.adjust(adjustments, local).await });
        }
    }

    /// Replaces the reserved amounts by what the request really used.
    pub fn settle(&mut self, tokens: u64, cost_nano: i64) {
        if self.done {
            return;
        }
        self.done = true;
        let adjustments = self
            .items
            .iter()
            .filter_map(|(l, bucket)| {
                let real = match l.measure {
                    Measure::Requests => return None,
                    Measure::Tokens => tokens as i64,
                    Measure::Usd => cost_nano,
                };
                let delta = real - l.check.amount;
                (delta != 0).then(|| Adjustment {
                    key: l.check.key.clone(),
                    kind: l.check.kind,
                    bucket: *bucket,
                    delta,
                })
            })
            .collect();
        self.spawn(adjustments);
    }

    /// Gives back everything reserved (the request never reached an upstream).
    pub fn release(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let adjustments = self
            .items
            .iter()
            .filter(|(l, _)| l.check.amount != 0)
            .map(|(l, bucket)| Adjustment {
                key: l.check.key.clone(),
                kind: l.check.kind,
                bucket: *bucket,
                delta: -l.check.amount,
            })
            .collect();
        self.spawn(adjustments);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

fn duration_text(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 60_000 {
        let s = format!("{:.3}", ms as f64 / 1000.0);
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// The OpenAI-style headers of the tightest request limit and the tightest token limit.
pub fn rate_headers(headers: &mut HeaderMap, checks: &[Labeled], states: &[WindowState]) {
    use http::HeaderName;
    const NAMES: [(Measure, [HeaderName; 3]); 2] = [
        (
            Measure::Requests,
            [
                HeaderName::from_static("x-ratelimit-limit-requests"),
                HeaderName::from_static("x-ratelimit-remaining-requests"),
                HeaderName::from_static("x-ratelimit-reset-requests"),
            ],
        ),
        (
            Measure::Tokens,
            [
                HeaderName::from_static("x-ratelimit-limit-tokens"),
                HeaderName::from_static("x-ratelimit-remaining-tokens"),
                HeaderName::from_static("x-ratelimit-reset-tokens"),
            ],
        ),
    ];
    for (measure, [limit, remaining, reset]) in NAMES {
        let tightest = checks
            .iter()
            .zip(states)
            .filter(|(l, _)| l.measure == measure && !l.is_budget)
            .min_by_key(|(_, s)| s.remaining);
        if let Some((_, s)) = tightest {
            headers.insert(limit, HeaderValue::from(s.limit));
            headers.insert(remaining, HeaderValue::from(s.remaining));
            if let Ok(v) = HeaderValue::from_str(&duration_text(s.reset_ms)) {
                headers.insert(reset, v);
            }
        }
    }
}

/// The answer to a refused request: a rate limit (429) or a budget (402), with when to retry.
pub fn refusal(checks: &[Labeled], acquired: &Acquired) -> CoreError {
    let Some(i) = acquired.refused else {
        return CoreError::Internal("refused without a reason".into());
    };
    let l = &checks[i];
    crate::metrics::refusal(if l.is_budget { "budget" } else { "rate" });
    let scope = match l.scope {
        "api_key" => "the API key's",
        "virtual_key" => "the virtual key's",
        "model" => "the virtual key's per-model",
        _ => "the provider key's",
    };
    if l.is_budget {
        let what = match l.measure {
            Measure::Usd => "USD",
            Measure::Tokens => "token",
            Measure::Requests => "request",
        };
        return CoreError::Limited {
            budget: true,
            message: format!("{scope} {what} budget would be exceeded by this request"),
            retry_after: (acquired.retry_after_ms > 0).then(|| ((acquired.retry_after_ms + 999) / 1000) as u64),
        };
    }
    if acquired.retry_after_ms == 0 {
        // More than the limit in one request: it will never fit.
        return CoreError::Limited {
            budget: false,
            message: format!(
                "{scope} rate limit {} of {} is smaller than this request",
                l.limit_type, l.check.limit
            ),
            retry_after: None,
        };
    }
    CoreError::Limited {
        budget: false,
        message: format!("{scope} rate limit {} of {} is reached", l.limit_type, l.check.limit),
        retry_after: Some(((acquired.retry_after_ms.max(1) + 999) / 1000) as u64),
    }
}

/// The event a refusal writes.
pub fn refusal_event(
    checks: &[Labeled],
    acquired: &Acquired,
    principal: &Principal,
    vk: &VkRuntime,
    provider: Option<&str>,
    model: &str,
    now: i64,
) -> Option<RateLimitEventRow> {
    let l = &checks[acquired.refused?];
    Some(RateLimitEventRow {
        id: keygate_store::new_id(),
        workspace: vk.workspace.clone(),
        at: now,
        platform_key_id: Some(principal.id.clone()),
        virtual_key_id: Some(vk.id.clone()),
        provider_key_id: provider.map(str::to_string),
        model: Some(model.to_string()),
        limit_type: l.limit_type.to_string(),
        limit_value: l.check.limit,
        scope: l.scope.to_string(),
    })
}

/// The live state of a list of checks, for the limit reads of the API.
pub fn states_view(checks: &[Labeled], states: &[WindowState], now: i64) -> Vec<Value> {
    checks
        .iter()
        .zip(states)
        .map(|(l, s)| {
            let money = l.measure == Measure::Usd;
            let num = |v: i64| if money { json!(keygate_types::NanoUsd(v).to_usd_f64()) } else { json!(v) };
            json!({
                "scope": l.scope,
                "type": l.limit_type,
                "measure": match l.measure { Measure::Requests => "requests", Measure::Tokens => "tokens", Measure::Usd => "usd" },
                "limit": num(s.limit),
                "used": num(s.used),
                "remaining": num(s.remaining),
                "reset": if s.reset_ms > 0 { Value::from(keygate_types::timefmt::format_ms(now + s.reset_ms)) } else { Value::Null },
            })
        })
        .collect()
}

/// The checks of a virtual key alone (its windows, budget and per-model overrides), for reads.
pub fn vk_checks(engine: &LimitEngine, vk: &VkRuntime, now: i64) -> Vec<Labeled> {
    let mut out = Vec::new();
    let prefix = format!("vk:{}", vk.id);
    let cfg = &vk.config;
    push_rate_limits(&mut out, &prefix, "virtual_key", &cfg.rate_limits, 0);
    if !cfg.budget.is_empty() {
        engine.budget_checks(
            &mut out,
            &prefix,
            "virtual_key",
            &cfg.budget,
            cfg.budget_period,
            Bounds::default(),
            now,
        );
    }
    for (model, ml) in &cfg.model_limits {
        let p = format!("vk:{}:m:{}", vk.id, model);
        push_rate_limits(&mut out, &p, "model", &ml.rate_limits, 0);
        if !ml.budget.is_empty() {
            engine.budget_checks(
                &mut out,
                &p,
                "model",
                &ml.budget,
                cfg.budget_period,
                Bounds::default(),
                now,
            );
        }
    }
    for l in &mut out {
        l.check.amount = 0;
    }
    out
}

/// The checks of a platform key alone, for reads.
pub fn key_checks(engine: &LimitEngine, principal: &Principal, now: i64) -> Vec<Labeled> {
    let vk = VkRuntime {
        id: String::new(),
        workspace: principal.workspace.clone(),
        slug: String::new(),
        name: String::new(),
        disabled: false,
        expires_at: None,
        config: Default::default(),
    };
    let mut out: Vec<Labeled> = engine
        .checks(principal, &vk, "", Bounds::default(), now)
        .into_iter()
        .filter(|l| l.scope == "api_key")
        .collect();
    for l in &mut out {
        l.check.amount = 0;
    }
    out
}

/// Rebuilds in-process budget counters from the usage records at start, so spend is not
/// forgotten by a restart. (Shared counters on Redis outlive restarts and need no seeding.)
pub async fn seed_budgets(
    engine: &LimitEngine,
    store: &dyn keygate_store::Store,
    auth: &crate::auth::AuthCache,
    runtime: &crate::runtime::Runtime,
) -> Result<usize, keygate_store::StoreError> {
    use keygate_store::UsageFilter;
    if engine.counters.backend() != "memory" {
        return Ok(0);
    }
    let now = engine.now();
    let mut seeded = 0;
    let mut jobs: Vec<(Labeled, UsageFilter, String)> = Vec::new();
    for vk in runtime.all_virtual_keys() {
        // Most keys have no budget: skip them before building their checks.
        let cfg = &vk.config;
        if cfg.budget.is_empty() && cfg.model_limits.values().all(|ml| ml.budget.is_empty()) {
            continue;
        }
        let (start, _) = vk.config.budget_period.bounds(now);
        for l in vk_checks(engine, &vk, now).into_iter().filter(|l| l.is_budget) {
            let model = l
                .check
                .key
                .split(":m:")
                .nth(1)
                .map(|rest| rest.rsplitn(3, ':').last().unwrap_or("").to_string());
            let filter = UsageFilter {
                virtual_key_id: Some(vk.id.clone()),
                model,
                from: Some(start),
                ..Default::default()
            };
            jobs.push((l, filter, vk.workspace.clone()));
        }
    }
    for p in auth.principals() {
        // A platform key's budget is its consumption limit (see `LimitEngine::checks`).
        if p.settings.consumption_limit.is_empty() {
            continue;
        }
        let (start, _) = p.settings.period().period().bounds(now);
        for l in key_checks(engine, &p, now).into_iter().filter(|l| l.is_budget) {
            let filter = UsageFilter {
                platform_key_id: Some(p.id.clone()),
                from: Some(start),
                ..Default::default()
            };
            jobs.push((l, filter, p.workspace.clone()));
        }
    }
    for (mut l, filter, workspace) in jobs {
        let t = store.usage_totals(&workspace, &filter).await?;
        let used = match l.measure {
            Measure::Usd => t.cost_nano,
            Measure::Tokens => t.prompt_tokens + t.completion_tokens,
            Measure::Requests => t.requests,
        };
        if used <= 0 {
            continue;
        }
        l.check.amount = used;
        l.check.limit = i64::MAX;
        if engine.counters.acquire(&[l.check], now).await.is_ok() {
            seeded += 1;
        }
    }
    Ok(seeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two replicas on one Redis share a throttle (`KEYGATE_TEST_REDIS_URL`; skipped without).
    #[tokio::test]
    async fn replicas_on_one_redis_share_a_throttle() {
        let Ok(url) = std::env::var("KEYGATE_TEST_REDIS_URL") else {
            eprintln!("KEYGATE_TEST_REDIS_URL is not set: skipped");
            return;
        };
        let prefix = format!("kg-test-{}:", uuid::Uuid::new_v4().simple());
        let replica = || async {
            let counters = keygate_limits::redis::RedisCounters::builder(&url, &prefix)
                .timeout(std::time::Duration::from_secs(5))
                .connect()
                .await
                .unwrap();
            LimitEngine::new(
                Arc::new(counters),
                Arc::new(keygate_limits::SystemClock),
                FailMode::Closed,
                BudgetMode::Strict,
            )
        };
        let (a, b) = (replica().await, replica().await);
        let now = a.now();
        assert_eq!(a.throttle("wallet", "192.0.2.7", 2, 60_000, now).await.unwrap(), None);
        assert_eq!(b.throttle("wallet", "192.0.2.7", 2, 60_000, now).await.unwrap(), None);
        assert!(a
            .throttle("wallet", "192.0.2.7", 2, 60_000, now)
            .await
            .unwrap()
            .is_some());
        assert!(b
            .throttle("wallet", "192.0.2.7", 2, 60_000, now)
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test]
    async fn a_throttle_admits_its_rate_per_subject_and_says_when_to_retry() {
        let clock = Arc::new(keygate_limits::ManualClock::new(1_000_000));
        let engine = LimitEngine::new(
            Arc::new(MemoryCounters::new()),
            clock.clone(),
            FailMode::Closed,
            BudgetMode::Strict,
        );
        let now = engine.now();
        for _ in 0..3 {
            assert_eq!(engine.throttle("create", "ws-a", 3, 60_000, now).await.unwrap(), None);
        }
        let wait = engine.throttle("create", "ws-a", 3, 60_000, now).await.unwrap();
        assert!(matches!(wait, Some(s) if (1..=60).contains(&s)), "{wait:?}");
        // Looking does not count: full for ws-a, empty for ws-b.
        let full = engine.throttled("create", "ws-a", 3, 60_000).await;
        assert!(matches!(full, Some(s) if (1..=60).contains(&s)), "{full:?}");
        assert_eq!(engine.throttled("create", "ws-b", 3, 60_000).await, None);
        assert_eq!(engine.throttled("create", "ws-b", 3, 60_000).await, None);
        // Another subject, another name: counted apart.
        assert_eq!(engine.throttle("create", "ws-b", 3, 60_000, now).await.unwrap(), None);
        assert_eq!(engine.throttle("wallet", "ws-a", 3, 60_000, now).await.unwrap(), None);
        // A minute (and the sliding window's last sub-bucket) later there is room again.
        assert_eq!(
            engine
                .throttle("create", "ws-a", 3, 60_000, now + 63_000)
                .await
                .unwrap(),
            None
        );
    }
}
