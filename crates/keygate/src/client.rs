//! The management CLI: talks to a running server (`KEYGATE_URL`, `KEYGATE_API_KEY`), shows
//! tables for people and JSON with `--json`. Secrets are read from a prompt or from stdin,
//! never from the command line.

use std::io::{IsTerminal, Read};

use anyhow::Context;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde_json::{json, Value};
use zeroize::Zeroizing;

/// How to reach the server.
#[derive(clap::Args, Clone, Debug)]
pub struct Conn {
    /// Server URL.
    #[arg(
        long = "url",
        env = "KEYGATE_URL",
        default_value = "http://127.0.0.1:8400",
        global = true
    )]
    pub url: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(clap::Subcommand)]
pub enum ProviderKeysCommand {
    /// List provider keys.
    List {
        #[arg(long)]
        page: Option<u32>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Create a provider key; its secret is read from a prompt or stdin.
    Create {
        #[arg(long)]
        name: String,
        /// openai, together, mistral, fireworks, nvidia, vertex, bedrock, bedrockAgents, azure, custom,
        /// digitalocean, openrouter, anthropic.
        #[arg(long)]
        hub: String,
        #[arg(long)]
        base_url: Option<String>,
        /// Hub settings as JSON, e.g. '{"resource_name":"res","api_version":"2024-10-21"}'. Secret
        /// settings may be given here too, or better from a file with --hub-config-file.
        #[arg(long)]
        hub_config: Option<String>,
        /// Read the hub settings JSON from a file.
        #[arg(long, conflicts_with = "hub_config")]
        hub_config_file: Option<std::path::PathBuf>,
        #[arg(long)]
        rate_limit_per_interval: Option<u32>,
        /// Seconds.
        #[arg(long)]
        rate_limit_interval: Option<u32>,
        /// Mark the provider private (for modelPrivacy).
        #[arg(long)]
        private: bool,
        /// The hub needs no API key (e.g. Vertex with OAuth settings).
        #[arg(long)]
        no_secret: bool,
    },
    /// Show one provider key.
    Get { name: String },
    /// Change a provider key (anything but its name).
    Modify {
        name: String,
        #[arg(long)]
        hub: Option<String>,
        /// Rotate: read a new secret from a prompt or stdin.
        #[arg(long)]
        rotate: bool,
        /// With --rotate: seconds the previous secret stays usable.
        #[arg(long)]
        grace_period_seconds: Option<u32>,
        #[arg(long)]
        base_url: Option<String>,
        #[arg(long)]
        hub_config: Option<String>,
        #[arg(long)]
        rate_limit_per_interval: Option<u32>,
        #[arg(long)]
        rate_limit_interval: Option<u32>,
        #[arg(long)]
        private: Option<bool>,
    },
    /// Rename a provider key.
    Rename { name: String, new_name: String },
    /// Delete a provider key (its secrets are destroyed).
    Delete { name: String },
}

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// List audit events, newest first.
    List {
        #[arg(long)]
        page: Option<u32>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        action: Option<String>,
    },
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: Zeroizing<String>,
}

impl Client {
    fn new(conn: &Conn) -> anyhow::Result<Client> {
        let key = std::env::var("KEYGATE_API_KEY")
            .map(Zeroizing::new)
            .map_err(|_| anyhow::anyhow!("set KEYGATE_API_KEY to an ADMIN key (kg_adm_…)"))?;
        Ok(Client {
            http: reqwest::Client::builder().build()?,
            base: conn.url.trim_end_matches('/').to_string(),
            key,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.base, path);
        let mut auth =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.key.as_str()))
                .context("KEYGATE_API_KEY is not a valid header value")?;
        auth.set_sensitive(true);
        let mut req = self
            .http
            .request(method, &url)
            .header(reqwest::header::AUTHORIZATION, auth);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach keygate at {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let msg = value
                .pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            anyhow::bail!("{} {}", status.as_u16(), msg);
        }
        Ok(value)
    }
}

/// Reads a secret: hidden prompt on a terminal, else the first line of stdin.
fn read_secret(prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    let text = if std::io::stdin().is_terminal() {
        Zeroizing::new(rpassword::prompt_password(prompt).context("cannot read the secret")?)
    } else {
        let mut buf = Zeroizing::new(String::new());
        std::io::stdin()
            .read_to_string(&mut buf)
            .context("cannot read the secret from stdin")?;
        Zeroizing::new(buf.lines().next().unwrap_or("").to_string())
    };
    let trimmed = Zeroizing::new(text.trim().to_string());
    if trimmed.is_empty() {
        anyhow::bail!("no secret given (type it at the prompt or pipe it on stdin)");
    }
    Ok(trimmed)
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn cell(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn print_keys(items: &[Value]) {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "name",
        "hub",
        "secret",
        "version",
        "rate limit",
        "private",
        "last used",
    ]);
    for k in items {
        let hint = match k.get("secretHint").and_then(Value::as_str) {
            Some(h) => format!("…{h}"),
            None => "-".into(),
        };
        t.add_row([
            cell(k, "name"),
            cell(k, "modelHub"),
            hint,
            cell(k, "secretVersion"),
            format!(
                "{}/{}s",
                cell(k, "rateLimitPerInterval"),
                cell(k, "rateLimitInterval")
            ),
            cell(k, "private"),
            cell(k, "lastUsedAt"),
        ]);
    }
    println!("{t}");
}

fn show(conn: &Conn, value: &Value, items: &[Value]) {
    if conn.json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        print_keys(items);
    }
}

fn hub_config_arg(
    inline: Option<String>,
    file: Option<std::path::PathBuf>,
) -> anyhow::Result<Option<Value>> {
    let text = match (inline, file) {
        (Some(s), _) => Zeroizing::new(s),
        (None, Some(p)) => Zeroizing::new(
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?,
        ),
        (None, None) => return Ok(None),
    };
    let v: Value = serde_json::from_str(&text).context("--hub-config is not valid JSON")?;
    Ok(Some(v))
}

pub async fn provider_keys(conn: Conn, cmd: ProviderKeysCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let c = Client::new(&conn)?;
    match cmd {
        ProviderKeysCommand::List { page, limit } => {
            let mut q = Vec::new();
            if let Some(p) = page {
                q.push(format!("page={p}"));
            }
            if let Some(l) = limit {
                q.push(format!("limit={l}"));
            }
            let path = if q.is_empty() {
                "/api/v1/provider_keys".to_string()
            } else {
                format!("/api/v1/provider_keys?{}", q.join("&"))
            };
            let v = c.call(Method::GET, &path, None).await?;
            let items = v
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            show(&conn, &v, &items);
        }
        ProviderKeysCommand::Create {
            name,
            hub,
            base_url,
            hub_config,
            hub_config_file,
            rate_limit_per_interval,
            rate_limit_interval,
            private,
            no_secret,
        } => {
            let mut body = json!({"name": name, "modelHub": hub, "private": private});
            if !no_secret {
                let secret = read_secret(&format!("API key for {hub} (input hidden): "))?;
                body["apiKey"] = Value::String(secret.to_string());
            }
            if let Some(u) = base_url {
                body["baseUrl"] = Value::String(u);
            }
            if let Some(h) = hub_config_arg(hub_config, hub_config_file)? {
                body["hubConfig"] = h;
            }
            if let Some(n) = rate_limit_per_interval {
                body["rateLimitPerInterval"] = json!(n);
            }
            if let Some(n) = rate_limit_interval {
                body["rateLimitInterval"] = json!(n);
            }
            let v = c
                .call(Method::POST, "/api/v1/provider_keys", Some(body))
                .await;
            let v = v?;
            let item = v.get("data").cloned().unwrap_or(Value::Null);
            show(&conn, &v, &[item]);
        }
        ProviderKeysCommand::Get { name } => {
            let v = c
                .call(
                    Method::GET,
                    &format!("/api/v1/provider_keys/{}", enc(&name)),
                    None,
                )
                .await?;
            let item = v.get("data").cloned().unwrap_or(Value::Null);
            show(&conn, &v, &[item]);
        }
        ProviderKeysCommand::Modify {
            name,
            hub,
            rotate,
            grace_period_seconds,
            base_url,
            hub_config,
            rate_limit_per_interval,
            rate_limit_interval,
            private,
        } => {
            let mut body = json!({});
            if let Some(h) = hub {
                body["modelHub"] = Value::String(h);
            }
            if rotate {
                let secret = read_secret(&format!("new API key for {name} (input hidden): "))?;
                body["apiKey"] = Value::String(secret.to_string());
                if let Some(g) = grace_period_seconds {
                    body["gracePeriodSeconds"] = json!(g);
                }
            }
            if let Some(u) = base_url {
                body["baseUrl"] = Value::String(u);
            }
            if let Some(h) = hub_config_arg(hub_config, None)? {
                body["hubConfig"] = h;
            }
            if let Some(n) = rate_limit_per_interval {
                body["rateLimitPerInterval"] = json!(n);
            }
            if let Some(n) = rate_limit_interval {
                body["rateLimitInterval"] = json!(n);
            }
            if let Some(p) = private {
                body["private"] = json!(p);
            }
            let v = c
                .call(
                    Method::PATCH,
                    &format!("/api/v1/provider_keys/{}", enc(&name)),
                    Some(body),
                )
                .await?;
            let item = v.get("data").cloned().unwrap_or(Value::Null);
            show(&conn, &v, &[item]);
        }
        ProviderKeysCommand::Rename { name, new_name } => {
            let v = c
                .call(
                    Method::POST,
                    &format!("/api/v1/provider_keys/{}/rename", enc(&name)),
                    Some(json!({"newName": new_name})),
                )
                .await?;
            let item = v.get("data").cloned().unwrap_or(Value::Null);
            show(&conn, &v, &[item]);
        }
        ProviderKeysCommand::Delete { name } => {
            let v = c
                .call(
                    Method::DELETE,
                    &format!("/api/v1/provider_keys/{}", enc(&name)),
                    None,
                )
                .await?;
            if conn.json {
                println!("{v}");
            } else {
                println!("deleted provider key {name}");
            }
        }
    }
    Ok(())
}

pub async fn audit(conn: Conn, cmd: AuditCommand) -> anyhow::Result<()> {
    let c = Client::new(&conn)?;
    match cmd {
        AuditCommand::List {
            page,
            limit,
            action,
        } => {
            let mut q = vec![
                format!("page={}", page.unwrap_or(1)),
                format!("limit={}", limit.unwrap_or(50)),
            ];
            if let Some(a) = action {
                q.push(format!("action={}", enc(&a)));
            }
            let v = c
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/audit?{}", q.join("&")),
                    None,
                )
                .await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(());
            }
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED);
            t.set_header(["at", "action", "target", "actor", "request"]);
            for e in v
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                t.add_row([
                    cell(&e, "at"),
                    cell(&e, "action"),
                    format!("{} {}", cell(&e, "targetType"), cell(&e, "targetId")),
                    format!("{} {}", cell(&e, "actor"), cell(&e, "actorKeyId")),
                    cell(&e, "requestId"),
                ]);
            }
            println!("{t}");
        }
    }
    Ok(())
}
