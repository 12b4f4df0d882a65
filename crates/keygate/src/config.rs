//! One typed configuration tree, read once at start: defaults, then the TOML file
//! (`--config` or `KEYGATE_CONFIG`), then `KEYGATE_*` environment variables, then flags.
//! Unknown fields are refused. Every option is documented in `docs/configuration.md`
//! (a test checks that each field appears there).

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
        }
    }
}

/// Environment variables read as configuration (`KEYGATE_` + the upper-case field name).
pub const ENV_KEYS: [&str; 7] = [
    "listen",
    "data_dir",
    "database_url",
    "allow_private_upstreams",
    "log_format",
    "max_body_bytes",
    "shutdown_grace_seconds",
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
        if let Some(url) = &self.database_url {
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                anyhow::bail!("database_url must start with sqlite:// or postgres://");
            }
        }
        Ok(())
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
        assert!(c
            .database_url()
            .starts_with("sqlite://./keygate-data/keygate.db"));
    }

    #[test]
    fn file_then_flags_and_unknown_fields_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\nallow_private_upstreams = true\n",
        )
        .unwrap();
        let c = Config::load(Some(path.clone()), &Overrides::default()).unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert!(c.allow_private_upstreams);
        let o = Overrides {
            listen: Some("127.0.0.1:1234".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(
            Config::load(Some(path.clone()), &o).unwrap().listen.port(),
            1234
        );
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let err = Config::load(Some(path), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn every_option_is_documented() {
        let doc = include_str!("../../../docs/configuration.md");
        let json = serde_json::to_value(Config::default()).unwrap();
        for key in json.as_object().unwrap().keys() {
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
