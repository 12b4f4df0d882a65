//! The policies keygate stores beside its keys, as types: a platform key's settings
//! ([`KeySettings`]: limits, period, model privacy, allow-lists) and a virtual key's configuration
//! ([`VkConfig`]: targets, strategy, models, budgets, rate limits).
//!
//! What must stay true: stored JSON is read into these types with an error, never a default
//! ([`KeySettings::from_stored`], [`VkConfig::from_stored`]); an unknown field is an error too,
//! so a misspelt `budget` cannot load as "no budget". The caller makes a key whose record cannot
//! be read refuse its requests: nothing is served without its limits. The wire names (camelCase
//! fields, `EPOCH`/`DAY`/…, `ALL`/`PRIVATE_TEXT`/`PRIVATE_ONLY`) are those of the API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A stored record that cannot be read into its type. The message names the field at fault
/// (serde's words), never a secret: policies hold none.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} cannot be read: {reason}")]
pub struct Unreadable {
    /// What was being read (`"settings"`, `"configuration"`, `"hub settings"`…).
    pub what: &'static str,
    pub reason: String,
}

impl Unreadable {
    fn of(what: &'static str, e: serde_json::Error) -> Self {
        Unreadable {
            what,
            reason: e.to_string(),
        }
    }
}

/// Reads a stored JSON object into `T`: an empty text, or anything but an object (serde would
/// read a struct from an array too), is an error like any other unreadable text.
pub fn read_stored<T: serde::de::DeserializeOwned>(what: &'static str, text: &str) -> Result<T, Unreadable> {
    if !text.trim_start().starts_with('{') {
        return Err(Unreadable {
            what,
            reason: "not a JSON object".into(),
        });
    }
    serde_json::from_str(text).map_err(|e| Unreadable::of(what, e))
}

// ---------------------------------------------------------------------------------------------
// Platform keys

// `EPOCH` and `DAY` are the same day; each is kept as given, since the API shows it back. (The
// doc comment is the OpenAPI document's description.)
/// When consumption limits start again (UTC); `EPOCH` is the day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LimitPeriod {
    Epoch,
    Day,
    Week,
    Month,
    #[default]
    Lifetime,
}

impl LimitPeriod {
    pub const ALL: [LimitPeriod; 5] = [
        LimitPeriod::Epoch,
        LimitPeriod::Day,
        LimitPeriod::Week,
        LimitPeriod::Month,
        LimitPeriod::Lifetime,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LimitPeriod::Epoch => "EPOCH",
            LimitPeriod::Day => "DAY",
            LimitPeriod::Week => "WEEK",
            LimitPeriod::Month => "MONTH",
            LimitPeriod::Lifetime => "LIFETIME",
        }
    }

    /// Exactly one of the wire names; `None` for anything else.
    pub fn parse(s: &str) -> Option<LimitPeriod> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The budget period it means (`DAY` is the UTC day, as `EPOCH`).
    pub fn period(self) -> Period {
        match self {
            LimitPeriod::Epoch | LimitPeriod::Day => Period::Epoch,
            LimitPeriod::Week => Period::Week,
            LimitPeriod::Month => Period::Month,
            LimitPeriod::Lifetime => Period::Lifetime,
        }
    }
}

// Private ones for text: chat, completions and embeddings. (The doc comment is the OpenAPI
// document's description.)
/// Which models the key may use: any, private ones for text, or private ones only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ModelPrivacy {
    #[default]
    All,
    PrivateText,
    PrivateOnly,
}

impl ModelPrivacy {
    pub const ALL: [ModelPrivacy; 3] = [ModelPrivacy::All, ModelPrivacy::PrivateText, ModelPrivacy::PrivateOnly];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelPrivacy::All => "ALL",
            ModelPrivacy::PrivateText => "PRIVATE_TEXT",
            ModelPrivacy::PrivateOnly => "PRIVATE_ONLY",
        }
    }

    /// Exactly one of the wire names; `None` for anything else.
    pub fn parse(s: &str) -> Option<ModelPrivacy> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// How strict it is (a key may only hand out keys at least as strict as its own).
    pub fn rank(self) -> u8 {
        match self {
            ModelPrivacy::All => 0,
            ModelPrivacy::PrivateText => 1,
            ModelPrivacy::PrivateOnly => 2,
        }
    }
}

/// A platform key's rate-limit window names.
pub const RATE_WINDOWS: [&str; 6] = ["rpm", "rph", "rpd", "tpm", "tph", "tpd"];

/// The policy of a platform key, stored as JSON beside it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct KeySettings {
    /// Consumption limits by currency (`usd`, `diem`, `vcu`) in nano-units, and `tokens`, `requests`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub consumption_limit: BTreeMap<String, i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_period: Option<LimitPeriod>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_privacy: Option<ModelPrivacy>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_allowlist: Vec<String>,
    /// Rate limits by window name (`rpm`, `rph`, `rpd`, `tpm`, `tph`, `tpd`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rate_limits: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_virtual_key: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub virtual_keys: Vec<String>,
}

impl KeySettings {
    /// Reads stored settings: an error for anything that is not exactly this type (unknown
    /// fields, unknown currencies or windows, negative limits, an address list that does not
    /// parse), never a default.
    pub fn from_stored(text: &str) -> Result<KeySettings, Unreadable> {
        let settings: KeySettings = read_stored("settings", text)?;
        settings.check().map_err(|reason| Unreadable {
            what: "settings",
            reason,
        })?;
        Ok(settings)
    }

    /// What [`from_stored`](Self::from_stored) checks beyond the shape.
    pub fn check(&self) -> Result<(), String> {
        for (unit, v) in &self.consumption_limit {
            if !["usd", "diem", "vcu", "tokens", "requests"].contains(&unit.as_str()) {
                return Err(format!("unknown consumption limit `{unit}`"));
            }
            if *v < 0 {
                return Err(format!("consumption limit `{unit}` is negative"));
            }
        }
        for w in self.rate_limits.keys() {
            if !RATE_WINDOWS.contains(&w.as_str()) {
                return Err(format!("unknown rate-limit window `{w}`"));
            }
        }
        for (i, a) in self.ip_allowlist.iter().enumerate() {
            if !is_ip_or_cidr(a) {
                return Err(format!("ipAllowlist[{i}] is not an address or CIDR block"));
            }
        }
        Ok(())
    }

    /// The period, `LIFETIME` when none is set.
    pub fn period(&self) -> LimitPeriod {
        self.limit_period.unwrap_or_default()
    }

    /// The model privacy, `ALL` when none is set.
    pub fn privacy(&self) -> ModelPrivacy {
        self.model_privacy.unwrap_or_default()
    }
}

/// An IPv4/IPv6 address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`).
fn is_ip_or_cidr(s: &str) -> bool {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
        return false;
    };
    match bits {
        None => true,
        Some(b) => b.parse::<u8>().is_ok_and(|b| b <= if ip.is_ipv4() { 32 } else { 128 }),
    }
}

// ---------------------------------------------------------------------------------------------
// Virtual keys

/// How a virtual key spreads requests over its targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    #[default]
    Single,
    Loadbalance,
    Fallback,
}

/// When a budget starts again (UTC boundaries).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum Period {
    /// The UTC day (also `DAY`).
    #[serde(alias = "DAY")]
    Epoch,
    Week,
    Month,
    #[default]
    Lifetime,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Epoch => "EPOCH",
            Period::Week => "WEEK",
            Period::Month => "MONTH",
            Period::Lifetime => "LIFETIME",
        }
    }

    /// The period around `now` (Unix ms) in UTC: the start of the current one and of the next
    /// (`None` for `LIFETIME`, which starts at 0 and never ends). Weeks start on Monday.
    pub fn bounds(self, now: i64) -> (i64, Option<i64>) {
        use time::{Date, Duration, OffsetDateTime, Time};
        let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now) * 1_000_000) else {
            return (0, None);
        };
        let ms = |d: Date| (d.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let day = t.date();
        match self {
            Period::Epoch => (ms(day), Some(ms(day + Duration::days(1)))),
            Period::Week => {
                let monday = day - Duration::days(i64::from(day.weekday().number_days_from_monday()));
                (ms(monday), Some(ms(monday + Duration::days(7))))
            }
            Period::Month => {
                let first = day.replace_day(1).unwrap_or(day);
                let next = if first.month() == time::Month::December {
                    Date::from_calendar_date(first.year() + 1, time::Month::January, 1)
                } else {
                    Date::from_calendar_date(first.year(), first.month().next(), 1)
                };
                (ms(first), next.ok().map(ms))
            }
            Period::Lifetime => (0, None),
        }
    }
}

/// One provider key behind a virtual key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    pub provider_key_id: String,
    pub weight: u32,
}

/// A budget: any of USD (nano-USD inside), tokens, requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Budget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_nano: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
}

impl Budget {
    pub fn is_empty(&self) -> bool {
        self.usd_nano.is_none() && self.tokens.is_none() && self.requests.is_none()
    }
}

/// Rate limits per window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(minimum = 1))]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(minimum = 1))]
    pub rph: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(minimum = 1))]
    pub rpd: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(minimum = 1))]
    pub tpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(minimum = 1))]
    pub tph: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(minimum = 1))]
    pub tpd: Option<u64>,
}

impl RateLimits {
    pub fn is_empty(&self) -> bool {
        self == &RateLimits::default()
    }

    /// The windows with a limit, by name.
    pub fn windows(&self) -> [(&'static str, Option<u64>); 6] {
        [
            ("rpm", self.rpm),
            ("rph", self.rph),
            ("rpd", self.rpd),
            ("tpm", self.tpm),
            ("tph", self.tph),
            ("tpd", self.tpd),
        ]
    }

    /// Every limit given is at least 1; the error names the window under `at`.
    pub fn check(&self, at: &str) -> Result<(), String> {
        for (name, v) in self.windows() {
            if v == Some(0) {
                return Err(format!("{at}.{name} must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Overrides for one model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelLimit {
    #[serde(default, skip_serializing_if = "Budget::is_empty")]
    pub budget: Budget,
    #[serde(default, skip_serializing_if = "RateLimits::is_empty")]
    pub rate_limits: RateLimits,
}

/// What a virtual key is, stored as JSON beside it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct VkConfig {
    pub targets: Vec<Target>,
    pub strategy: Strategy,
    /// Allowed models (after alias resolution); empty allows every model.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Alias -> upstream model (or Azure deployment alias).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_model: Option<String>,
    #[serde(skip_serializing_if = "Budget::is_empty")]
    pub budget: Budget,
    pub budget_period: Period,
    #[serde(skip_serializing_if = "RateLimits::is_empty")]
    pub rate_limits: RateLimits,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub model_limits: BTreeMap<String, ModelLimit>,
    /// The provider key was created with this virtual key (Portkey's inline `key`); it is
    /// deleted with it when nothing else uses it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inline_provider_key: Option<String>,
    /// Portkey's alert threshold (percent), kept to show it back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_threshold: Option<u32>,
}

impl VkConfig {
    /// Reads a stored configuration: an error for anything that is not exactly this type
    /// (unknown fields, a zero rate limit, a negative budget, no target), never a default. Its
    /// lists are trimmed to their length: a parsed list keeps the spare room of its growth, and
    /// the gateway holds one configuration per distinct virtual key for as long as it runs.
    pub fn from_stored(text: &str) -> Result<VkConfig, Unreadable> {
        let mut config: VkConfig = read_stored("configuration", text)?;
        config.check().map_err(|reason| Unreadable {
            what: "configuration",
            reason,
        })?;
        config.targets.shrink_to_fit();
        config.models.shrink_to_fit();
        Ok(config)
    }

    /// What [`from_stored`](Self::from_stored) checks beyond the shape.
    pub fn check(&self) -> Result<(), String> {
        if self.targets.is_empty() {
            return Err("no target".into());
        }
        let budget_ok = |b: &Budget, at: &str| match b.usd_nano {
            Some(n) if n < 0 => Err(format!("{at}.usdNano is negative")),
            _ => Ok(()),
        };
        budget_ok(&self.budget, "budget")?;
        self.rate_limits.check("rateLimits")?;
        for (model, l) in &self.model_limits {
            budget_ok(&l.budget, &format!("modelLimits.{model}.budget"))?;
            l.rate_limits.check(&format!("modelLimits.{model}.rateLimits"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_settings_round_trip_and_read_strictly() {
        let text = r#"{"consumptionLimit":{"usd":5000000000},"limitPeriod":"DAY","modelPrivacy":"PRIVATE_TEXT","ipAllowlist":["10.0.0.0/8","2001:db8::1/128"],"rateLimits":{"rpm":2},"virtualKeys":["a"]}"#;
        let s = KeySettings::from_stored(text).unwrap();
        assert_eq!(s.limit_period, Some(LimitPeriod::Day));
        assert_eq!(s.period().period(), Period::Epoch);
        assert_eq!(s.privacy(), ModelPrivacy::PrivateText);
        assert_eq!(serde_json::to_string(&s).unwrap(), text);
        assert_eq!(KeySettings::from_stored("{}").unwrap(), KeySettings::default());
        for bad in [
            "",
            "not json",
            "[]",
            r#"{"rateLimit":{"rpm":2}}"#,
            r#"{"limitPeriod":"FORTNIGHT"}"#,
            r#"{"limitPeriod":"day"}"#,
            r#"{"modelPrivacy":"SOME"}"#,
            r#"{"rateLimits":{"rpm":-1}}"#,
            r#"{"rateLimits":{"rpx":1}}"#,
            r#"{"consumptionLimit":{"usd":-1}}"#,
            r#"{"consumptionLimit":{"eur":1}}"#,
            r#"{"ipAllowlist":["10.0.0.0/33"]}"#,
            r#"{"ipAllowlist":["example.com"]}"#,
        ] {
            let e = KeySettings::from_stored(bad).unwrap_err();
            assert_eq!(e.what, "settings", "{bad}");
        }
    }

    #[test]
    fn virtual_key_configurations_read_strictly() {
        let text = r#"{"targets":[{"providerKeyId":"p","weight":1}],"strategy":"single","budget":{"usdNano":5},"budgetPeriod":"MONTH","rateLimits":{"rpm":3}}"#;
        let c = VkConfig::from_stored(text).unwrap();
        assert_eq!(c.budget.usd_nano, Some(5));
        assert_eq!(c.budget_period, Period::Month);
        assert_eq!(serde_json::to_string(&c).unwrap(), text);
        // `DAY` is read as the day.
        let day = text.replace("MONTH", "DAY");
        assert_eq!(VkConfig::from_stored(&day).unwrap().budget_period, Period::Epoch);
        for bad in [
            "",
            "{}",
            r#"{"targets":[]}"#,
            // A misspelt field is not "no budget".
            r#"{"targets":[{"providerKeyId":"p","weight":1}],"budjet":{"usdNano":5}}"#,
            r#"{"targets":[{"providerKeyId":"p","weight":1}],"budget":{"usd":5}}"#,
            r#"{"targets":[{"providerKeyId":"p","weight":1,"x":1}]}"#,
            r#"{"targets":[{"providerKeyId":"p","weight":1}],"budget":{"usdNano":-5}}"#,
            r#"{"targets":[{"providerKeyId":"p","weight":1}],"rateLimits":{"rpm":0}}"#,
            r#"{"targets":[{"providerKeyId":"p","weight":1}],"budgetPeriod":"YEAR"}"#,
            r#"{"targets":[{"providerKeyId":"p","weight":1}],"modelLimits":{"m":{"rateLimits":{"tpm":0}}}}"#,
            r#"{"targets":[{"providerKeyId":"p","weight":1}],"strategy":"random"}"#,
        ] {
            let e = VkConfig::from_stored(bad).unwrap_err();
            assert_eq!(e.what, "configuration", "{bad}");
        }
    }

    #[test]
    fn a_parsed_configuration_holds_no_spare_room() {
        let text = r#"{"targets":[{"providerKeyId":"pk_1","weight":1}],"strategy":"single","models":["a","b","c"],"defaultModel":"a"}"#;
        let config = VkConfig::from_stored(text).unwrap();
        assert_eq!(config.targets.len(), 1);
        assert_eq!(config.targets.capacity(), 1);
        assert_eq!(config.models.capacity(), 3);
        assert_eq!(config.default_model.as_deref(), Some("a"));
        // Unreadable text is an error, not the default configuration (which has no limits).
        assert!(VkConfig::from_stored("not json").is_err());
    }

    #[test]
    fn period_bounds_are_utc_days_weeks_from_monday_and_months() {
        // Monday 2026-12-07 12:00 UTC.
        let now = 1_796_644_800_000;
        let day = 86_400_000;
        let midnight = now - day / 2;
        assert_eq!(Period::Epoch.bounds(now), (midnight, Some(midnight + day)));
        assert_eq!(Period::Week.bounds(now), (midnight, Some(midnight + 7 * day)));
        // December 2026 starts on a Tuesday, six days before; January 2027 follows.
        let dec1 = midnight - 6 * day;
        assert_eq!(Period::Month.bounds(now), (dec1, Some(dec1 + 31 * day)));
        assert_eq!(Period::Lifetime.bounds(now), (0, None));
        // Sunday belongs to the week that started on the Monday before.
        assert_eq!(Period::Week.bounds(now - day).0, midnight - 7 * day);
    }

    #[test]
    fn wire_names_parse_exactly() {
        for p in LimitPeriod::ALL {
            assert_eq!(LimitPeriod::parse(p.as_str()), Some(p));
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        for p in ModelPrivacy::ALL {
            assert_eq!(ModelPrivacy::parse(p.as_str()), Some(p));
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert_eq!(LimitPeriod::parse("day"), None);
        assert_eq!(ModelPrivacy::parse("all"), None);
        assert!(ModelPrivacy::PrivateOnly.rank() > ModelPrivacy::PrivateText.rank());
        assert!(ModelPrivacy::PrivateText.rank() > ModelPrivacy::All.rank());
    }
}
