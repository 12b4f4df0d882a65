//! One typed configuration tree, read once at start: defaults, then the TOML file
//! (`--config` or `KEYGATE_CONFIG`), then `KEYGATE_*` environment variables, then flags.
//! Unknown fields are refused. Every option is documented in `docs/configuration.md`
//! (a test checks that each field appears there).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The server's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory of the embedded store and the generated master key.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: SQLite in the data directory.
    pub database_url: Option<String>,
    /// Allow provider keys whose URLs are loopback or private addresses.
    pub allow_private_upstreams: bool,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Request body cap in bytes.
    pub max_body_bytes: usize,
    /// Seconds in-flight requests may take to finish at shutdown.
    pub shutdown_grace_seconds: u64,
    /// Seconds to connect to an upstream.
    pub upstream_connect_timeout_seconds: u64,
    /// Seconds from sending a request upstream to its status line.
    pub upstream_first_byte_timeout_seconds: u64,
    /// Seconds a streamed answer may pause between two chunks.
    pub upstream_idle_timeout_seconds: u64,
    /// Seconds one gateway request may take in all.
    pub upstream_total_timeout_seconds: u64,
    /// `max_tokens` sent to Anthropic when a request gives none.
    pub anthropic_default_max_tokens: u32,
    /// Platform keys a workspace may create per minute.
    pub api_key_creations_per_minute: u32,
    /// Active platform keys a workspace may hold.
    pub max_api_keys_per_workspace: u32,
    /// Wallet sign-in requests per client IP and minute.
    pub wallet_requests_per_minute: u32,
    /// USD per DIEM in consumption limits.
    pub diem_usd: f64,
    /// USD per VCU in consumption limits.
    pub vcu_usd: f64,
    /// PEM certificate chain to serve HTTPS with (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Shared counters for limits and budgets (scale-out); in process when absent.
    pub redis_url: Option<String>,
    /// `closed` (503, no upstream call) or `open` (local counters) when Redis is unreachable.
    pub fail_mode: String,
    /// `strict` (reserve the most a request can cost) or `soft` (charge after the fact).
    pub budget_mode: String,
    /// Output tokens assumed for a model of unknown output cap when a request sets no maximum.
    pub default_max_output_tokens: u64,
    /// Threads that accept and serve connections, each keeping its connections (and their
    /// upstream calls) on itself; default: the CPUs this process may run on.
    pub serving_threads: Option<usize>,
    /// Price overrides, keyed `hub/model`.
    pub prices: BTreeMap<String, PriceOverride>,
}

/// A price override: USD per million tokens, as decimal strings or numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceOverride {
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cached_input: Option<f64>,
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8400)),
            data_dir: PathBuf::from("./keygate-data"),
            database_url: None,
            allow_private_upstreams: false,
            log_format: LogFormat::Text,
            max_body_bytes: 32 * 1024 * 1024,
            shutdown_grace_seconds: 30,
            upstream_connect_timeout_seconds: 10,
            upstream_first_byte_timeout_seconds: 120,
            upstream_idle_timeout_seconds: 120,
            upstream_total_timeout_seconds: 900,
            anthropic_default_max_tokens: 4096,
            api_key_creations_per_minute: 20,
            max_api_keys_per_workspace: 500,
            wallet_requests_per_minute: 30,
            diem_usd: 1.0,
            vcu_usd: 0.1,
            tls_cert: None,
            tls_key: None,
            redis_url: None,
            fail_mode: "closed".into(),
            budget_mode: "strict".into(),
            default_max_output_tokens: 32_768,
            serving_threads: None,
            prices: BTreeMap::new(),
        }
    }
}

/// The most serving threads a configuration may ask for.
pub const MAX_SERVING_THREADS: usize = 256;

/// Environment variables read as configuration (`KEYGATE_` + the upper-case field name).
pub const ENV_KEYS: [&str; 24] = [
    "serving_threads",
    "tls_cert",
    "tls_key",
    "redis_url",
    "fail_mode",
    "budget_mode",
    "default_max_output_tokens",
    "api_key_creations_per_minute",
    "max_api_keys_per_workspace",
    "wallet_requests_per_minute",
    "diem_usd",
    "vcu_usd",
    "listen",
    "data_dir",
    "database_url",
    "allow_private_upstreams",
    "log_format",
    "max_body_bytes",
    "shutdown_grace_seconds",
    "upstream_connect_timeout_seconds",
    "upstream_first_byte_timeout_seconds",
    "upstream_idle_timeout_seconds",
    "upstream_total_timeout_seconds",
    "anthropic_default_max_tokens",
];

/// Flags that override the file and the environment; `None` leaves them alone.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_private_upstreams: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

impl Config {
    /// Reads the configuration. `file` is `--config`; `KEYGATE_CONFIG` names one otherwise.
    pub fn load(file: Option<PathBuf>, overrides: &Overrides) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        let file = file.or_else(|| std::env::var_os("KEYGATE_CONFIG").map(PathBuf::from));
        if let Some(path) = file {
            if !path.exists() {
                anyhow::bail!("the configuration file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig
            .merge(Env::prefixed("KEYGATE_").only(&ENV_KEYS))
            .merge(Serialized::defaults(overrides));
        let config: Config = fig
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.max_body_bytes < 1024 {
            anyhow::bail!("max_body_bytes must be at least 1024");
        }
        if let Some(n) = self.serving_threads {
            if !(1..=MAX_SERVING_THREADS).contains(&n) {
                anyhow::bail!("serving_threads must be between 1 and {MAX_SERVING_THREADS}");
            }
        }
        for (key, p) in &self.prices {
            if !key.contains('/') {
                anyhow::bail!("prices.{key}: price keys are hub/model, e.g. \"openai/gpt-4o-mini\"");
            }
            for v in [p.input, p.output, p.cached_input.unwrap_or(0.0)] {
                if !v.is_finite() || v < 0.0 {
                    anyhow::bail!("prices.{key}: prices must be non-negative numbers");
                }
            }
        }
        for (name, v) in [
            (
                "upstream_connect_timeout_seconds",
                self.upstream_connect_timeout_seconds,
            ),
            (
                "upstream_first_byte_timeout_seconds",
                self.upstream_first_byte_timeout_seconds,
            ),
            ("upstream_idle_timeout_seconds", self.upstream_idle_timeout_seconds),
            ("upstream_total_timeout_seconds", self.upstream_total_timeout_seconds),
        ] {
            if v == 0 {
                anyhow::bail!("{name} must be at least 1");
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => {
                for p in [c, k] {
                    if !p.exists() {
                        anyhow::bail!("the TLS file {} does not exist", p.display());
                    }
                }
            }
            (None, None) => {}
            _ => anyhow::bail!("tls_cert and tls_key go together"),
        }
        if !matches!(self.fail_mode.as_str(), "closed" | "open") {
            anyhow::bail!("fail_mode must be closed or open");
        }
        if !matches!(self.budget_mode.as_str(), "strict" | "soft") {
            anyhow::bail!("budget_mode must be strict or soft");
        }
        if let Some(u) = &self.redis_url {
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                anyhow::bail!("redis_url must start with redis:// or rediss://");
            }
        }
        for (name, v) in [("diem_usd", self.diem_usd), ("vcu_usd", self.vcu_usd)] {
            if !v.is_finite() || v <= 0.0 {
                anyhow::bail!("{name} must be a positive number");
            }
        }
        if self.api_key_creations_per_minute == 0
            || self.max_api_keys_per_workspace == 0
            || self.wallet_requests_per_minute == 0
        {
            anyhow::bail!("api_key_creations_per_minute, max_api_keys_per_workspace and wallet_requests_per_minute must be at least 1");
        }
        if let Some(url) = &self.database_url {
            if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                anyhow::bail!("database_url must start with sqlite:// or postgres://");
            }
        }
        Ok(())
    }

    /// The price table: the shipped one with this deployment's overrides.
    pub fn price_table(&self) -> keygate_types::pricing::PriceTable {
        use keygate_types::pricing::{ModelPrice, PriceMode, PriceTable};
        use keygate_types::NanoUsd;
        let overrides = self.prices.iter().map(|(k, p)| {
            let nano = |usd: f64| NanoUsd::from_usd_f64(usd).unwrap_or(NanoUsd::ZERO);
            (
                k.clone(),
                ModelPrice {
                    input_per_mtok: nano(p.input),
                    output_per_mtok: nano(p.output),
                    cached_input_per_mtok: p.cached_input.map(nano),
                    max_output_tokens: p.max_output_tokens,
                    max_input_tokens: None,
                    mode: PriceMode::Chat,
                },
            )
        });
        PriceTable::builtin().with_overrides(overrides)
    }

    pub fn gateway_settings(&self) -> keygate_api::gateway::GatewaySettings {
        use std::time::Duration;
        keygate_api::gateway::GatewaySettings {
            connect_timeout: Duration::from_secs(self.upstream_connect_timeout_seconds),
            first_byte_timeout: Duration::from_secs(self.upstream_first_byte_timeout_seconds),
            idle_timeout: Duration::from_secs(self.upstream_idle_timeout_seconds),
            total_timeout: Duration::from_secs(self.upstream_total_timeout_seconds),
            anthropic_default_max_tokens: self.anthropic_default_max_tokens,
            ..Default::default()
        }
    }

    /// The database URL: the configured one, else SQLite in the data directory.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("keygate.db").display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8400");
        assert_eq!(c.data_dir, PathBuf::from("./keygate-data"));
        assert!(c.database_url().starts_with("sqlite://./keygate-data/keygate.db"));
    }

    #[test]
    fn file_then_flags_and_unknown_fields_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9999\"\nallow_private_upstreams = true\n").unwrap();
        let c = Config::load(Some(path.clone()), &Overrides::default()).unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert!(c.allow_private_upstreams);
        let o = Overrides {
            listen: Some("127.0.0.1:1234".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(Config::load(Some(path.clone()), &o).unwrap().listen.port(), 1234);
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let err = Config::load(Some(path), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn price_overrides_replace_the_shipped_price() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "[prices.\"openai/gpt-4o-mini\"]\ninput = 1.0\noutput = 2.5\n").unwrap();
        let c = Config::load(Some(path.clone()), &Overrides::default()).unwrap();
        let t = c.price_table();
        let p = t.lookup("openai", "gpt-4o-mini").unwrap();
        assert_eq!(p.input_per_mtok.0, 1_000_000_000);
        assert_eq!(p.output_per_mtok.0, 2_500_000_000);
        std::fs::write(&path, "[prices.nohub]\ninput = 1.0\noutput = 1.0\n").unwrap();
        assert!(Config::load(Some(path), &Overrides::default()).is_err());
    }

    #[test]
    fn serving_threads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "serving_threads = 3\n").unwrap();
        assert_eq!(
            Config::load(Some(path.clone()), &Overrides::default())
                .unwrap()
                .serving_threads,
            Some(3)
        );
        for bad in ["0", "257"] {
            std::fs::write(&path, format!("serving_threads = {bad}\n")).unwrap();
            let err = Config::load(Some(path.clone()), &Overrides::default()).unwrap_err();
            assert!(
                err.to_string().contains("serving_threads must be between 1 and 256"),
                "{err}"
            );
        }
        std::fs::write(&path, "serving_threads = -1\n").unwrap();
        assert!(Config::load(Some(path), &Overrides::default()).is_err());
    }

    #[test]
    fn every_option_is_documented() {
        let doc = include_str!("../../../docs/configuration.md");
        let json = serde_json::to_value(Config::default()).unwrap();
        for key in json.as_object().unwrap().keys().filter(|k| *k != "prices") {
            assert!(
                doc.contains(&format!("`{key}`")),
                "docs/configuration.md does not document `{key}`"
            );
            assert!(
                doc.contains(&format!("KEYGATE_{}", key.to_uppercase())),
                "no env var documented for {key}"
            );
        }
    }
}
