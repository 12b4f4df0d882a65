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

/// Virtual-key fields shared by create and update.
#[derive(clap::Args, Debug, Default)]
pub struct VkFields {
    /// A target provider key (name or id), optionally with a weight: `name` or `name:3`. Repeat for several.
    #[arg(long = "provider-key")]
    pub provider_keys: Vec<String>,
    /// single, loadbalance or fallback.
    #[arg(long)]
    pub strategy: Option<String>,
    /// An allowed model; repeat for several.
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// An alias, `alias=upstream-model`; repeat for several.
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    #[arg(long)]
    pub default_model: Option<String>,
    #[arg(long)]
    pub budget_usd: Option<f64>,
    #[arg(long)]
    pub budget_tokens: Option<u64>,
    #[arg(long)]
    pub budget_requests: Option<u64>,
    /// EPOCH (or DAY), WEEK, MONTH, LIFETIME.
    #[arg(long)]
    pub budget_period: Option<String>,
    #[arg(long)]
    pub rpm: Option<u64>,
    #[arg(long)]
    pub rph: Option<u64>,
    #[arg(long)]
    pub rpd: Option<u64>,
    #[arg(long)]
    pub tpm: Option<u64>,
    /// RFC 3339 time or YYYY-MM-DD.
    #[arg(long)]
    pub expires_at: Option<String>,
    #[arg(long)]
    pub note: Option<String>,
}

impl VkFields {
    fn apply(&self, body: &mut Value) -> anyhow::Result<()> {
        if !self.provider_keys.is_empty() {
            let mut targets = Vec::new();
            for t in &self.provider_keys {
                let (name, weight) = match t.rsplit_once(':') {
                    Some((n, w)) if w.parse::<u32>().is_ok() => (n.to_string(), w.parse::<u32>().unwrap_or(1)),
                    _ => (t.clone(), 1),
                };
                targets.push(json!({"providerKey": name, "weight": weight}));
            }
            body["targets"] = Value::Array(targets);
        }
        if let Some(s) = &self.strategy {
            body["strategy"] = json!(s);
        }
        if !self.models.is_empty() {
            body["models"] = json!(self.models);
        }
        if !self.aliases.is_empty() {
            let mut map = serde_json::Map::new();
            for a in &self.aliases {
                let (k, v) = a
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--alias takes alias=model, got {a}"))?;
                map.insert(k.to_string(), json!(v));
            }
            body["aliases"] = Value::Object(map);
        }
        if let Some(d) = &self.default_model {
            body["defaultModel"] = json!(d);
        }
        if self.budget_usd.is_some() || self.budget_tokens.is_some() || self.budget_requests.is_some() {
            let mut b = serde_json::Map::new();
            if let Some(v) = self.budget_usd {
                b.insert("usd".into(), json!(v));
            }
            if let Some(v) = self.budget_tokens {
                b.insert("tokens".into(), json!(v));
            }
            if let Some(v) = self.budget_requests {
                b.insert("requests".into(), json!(v));
            }
            body["budget"] = Value::Object(b);
        }
        if let Some(p) = &self.budget_period {
            body["budgetPeriod"] = json!(p.to_ascii_uppercase());
        }
        if self.rpm.is_some() || self.rph.is_some() || self.rpd.is_some() || self.tpm.is_some() {
            let mut r = serde_json::Map::new();
            for (k, v) in [
                ("rpm", self.rpm),
                ("rph", self.rph),
                ("rpd", self.rpd),
                ("tpm", self.tpm),
            ] {
                if let Some(v) = v {
                    r.insert(k.into(), json!(v));
                }
            }
            body["rateLimits"] = Value::Object(r);
        }
        if let Some(e) = &self.expires_at {
            body["expiresAt"] = json!(e);
        }
        if let Some(n) = &self.note {
            body["note"] = json!(n);
        }
        Ok(())
    }
}

#[derive(clap::Subcommand)]
pub enum VirtualKeysCommand {
    /// List virtual keys.
    List {
        #[arg(long)]
        page: Option<u32>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Create a virtual key over one or more provider keys.
    Create {
        #[arg(long)]
        name: String,
        /// Generated from the name when absent.
        #[arg(long)]
        slug: Option<String>,
        #[command(flatten)]
        fields: VkFields,
    },
    /// Show one virtual key (slug or vk_ id).
    Get { slug: String },
    /// Change a virtual key.
    Update {
        slug: String,
        #[arg(long)]
        name: Option<String>,
        /// active or disabled.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        fields: VkFields,
    },
    /// Delete a virtual key.
    Delete { slug: String },
}

#[derive(clap::Args)]
pub struct UsageArgs {
    /// Virtual key slug or id.
    #[arg(long)]
    pub virtual_key: Option<String>,
    /// Platform API key id.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Provider key name or id.
    #[arg(long)]
    pub provider_key: Option<String>,
    #[arg(long)]
    pub model: Option<String>,
    /// RFC 3339 time or YYYY-MM-DD (inclusive).
    #[arg(long)]
    pub from: Option<String>,
    /// RFC 3339 time or YYYY-MM-DD (exclusive).
    #[arg(long)]
    pub to: Option<String>,
    /// day, model, key, apiKey, providerKey or hub.
    #[arg(long)]
    pub group_by: Option<String>,
}

/// Platform-key fields shared by create and update.
#[derive(clap::Args, Debug, Default)]
pub struct ApiKeyFields {
    #[arg(long)]
    pub description: Option<String>,
    /// Consumption limits, e.g. `usd=50`, `diem=10`, `tokens=1000000`; repeat for several.
    #[arg(long = "limit")]
    pub limits: Vec<String>,
    /// EPOCH (or DAY), WEEK, MONTH, LIFETIME.
    #[arg(long)]
    pub limit_period: Option<String>,
    /// RFC 3339 time or YYYY-MM-DD.
    #[arg(long)]
    pub expires_at: Option<String>,
    /// ALL, PRIVATE_ONLY, PRIVATE_TEXT.
    #[arg(long)]
    pub model_privacy: Option<String>,
    /// An allowed IP or CIDR; repeat for several.
    #[arg(long = "allow-ip")]
    pub allow_ips: Vec<String>,
    /// Rate limits, e.g. `rpm=60`, `tpd=100000`; repeat for several.
    #[arg(long = "rate")]
    pub rates: Vec<String>,
    #[arg(long)]
    pub default_virtual_key: Option<String>,
    /// A virtual key this key may use; repeat for several.
    #[arg(long = "virtual-key")]
    pub virtual_keys: Vec<String>,
}

impl ApiKeyFields {
    fn apply(&self, body: &mut Value) -> anyhow::Result<()> {
        if let Some(d) = &self.description {
            body["description"] = json!(d);
        }
        if !self.limits.is_empty() {
            let mut m = serde_json::Map::new();
            for l in &self.limits {
                let (k, v) = l
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--limit takes currency=amount, got {l}"))?;
                let v: f64 = v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--limit {k}: {v} is not a number"))?;
                let value = if matches!(k, "tokens" | "requests") {
                    json!(v as u64)
                } else {
                    json!(v)
                };
                m.insert(k.to_string(), value);
            }
            body["consumptionLimit"] = Value::Object(m);
        }
        if let Some(p) = &self.limit_period {
            body["limitPeriod"] = json!(p.to_ascii_uppercase());
        }
        if let Some(e) = &self.expires_at {
            body["expiresAt"] = json!(e);
        }
        if let Some(m) = &self.model_privacy {
            body["modelPrivacy"] = json!(m.to_ascii_uppercase());
        }
        if !self.allow_ips.is_empty() {
            body["ipAllowlist"] = json!(self.allow_ips);
        }
        if !self.rates.is_empty() {
            let mut m = serde_json::Map::new();
            for r in &self.rates {
                let (k, v) = r
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--rate takes window=count, got {r}"))?;
                let v: u64 = v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--rate {k}: {v} is not a whole number"))?;
                m.insert(k.to_string(), json!(v));
            }
            body["rateLimits"] = Value::Object(m);
        }
        if let Some(d) = &self.default_virtual_key {
            body["defaultVirtualKey"] = json!(d);
        }
        if !self.virtual_keys.is_empty() {
            body["virtualKeys"] = json!(self.virtual_keys);
        }
        Ok(())
    }
}

#[derive(clap::Subcommand)]
pub enum ApiKeysCommand {
    /// List platform API keys.
    List {
        #[arg(long)]
        page: Option<u32>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Create a platform API key; its secret is printed once.
    Create {
        /// ADMIN or INFERENCE.
        #[arg(long = "type", default_value = "INFERENCE")]
        key_type: String,
        #[command(flatten)]
        fields: ApiKeyFields,
    },
    /// Show one key.
    Get { id: String },
    /// Change a key.
    Update {
        id: String,
        /// Remove the IP restriction.
        #[arg(long)]
        clear_ip_allowlist: bool,
        #[command(flatten)]
        fields: ApiKeyFields,
    },
    /// New secret, same id; the old secret stays valid for the grace period.
    Rotate {
        id: String,
        #[arg(long, default_value_t = 0)]
        grace_period_seconds: u64,
    },
    /// Delete a key.
    Delete { id: String },
    /// Limits, balances and windows of the calling key.
    RateLimits,
    /// The last 50 refusals (of the workspace, for an ADMIN key).
    Log,
}

#[derive(clap::Subcommand)]
pub enum WorkspacesCommand {
    /// List workspaces.
    List,
    /// Create a workspace (organisation admins).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        id: Option<String>,
    },
    /// Show one workspace.
    Get { id: String },
    /// Rename a workspace.
    Rename { id: String, name: String },
    /// Delete an empty workspace.
    Delete { id: String },
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

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.base, path);
        let mut auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.key.as_str()))
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
    t.set_header(["name", "hub", "secret", "version", "rate limit", "private", "last used"]);
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
            format!("{}/{}s", cell(k, "rateLimitPerInterval"), cell(k, "rateLimitInterval")),
            cell(k, "private"),
            cell(k, "lastUsedAt"),
        ]);
    }
    println!("{t}");
}

fn show(conn: &Conn, value: &Value, items: &[Value]) {
    if conn.json {
        println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
    } else {
        print_keys(items);
    }
}

fn hub_config_arg(inline: Option<String>, file: Option<std::path::PathBuf>) -> anyhow::Result<Option<Value>> {
    let text = match (inline, file) {
        (Some(s), _) => Zeroizing::new(s),
        (None, Some(p)) => {
            Zeroizing::new(std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?)
        }
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
            let items = v.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
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
            let v = c.call(Method::POST, "/api/v1/provider_keys", Some(body)).await;
            let v = v?;
            let item = v.get("data").cloned().unwrap_or(Value::Null);
            show(&conn, &v, &[item]);
        }
        ProviderKeysCommand::Get { name } => {
            let v = c
                .call(Method::GET, &format!("/api/v1/provider_keys/{}", enc(&name)), None)
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
                .call(Method::DELETE, &format!("/api/v1/provider_keys/{}", enc(&name)), None)
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

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn print_vks(items: &[Value]) {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "slug",
        "name",
        "status",
        "targets",
        "strategy",
        "budget",
        "rate limits",
        "expires",
    ]);
    for k in items {
        let targets: Vec<String> = k["targets"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| format!("{}×{}", cell(x, "providerKey"), cell(x, "weight")))
                    .collect()
            })
            .unwrap_or_default();
        t.add_row([
            cell(k, "slug"),
            cell(k, "name"),
            cell(k, "status"),
            targets.join(", "),
            cell(k, "strategy"),
            format!("{} {}", k["budget"], cell(k, "budgetPeriod")),
            k["rateLimits"].to_string(),
            cell(k, "expiresAt"),
        ]);
    }
    println!("{t}");
}

pub async fn virtual_keys(conn: Conn, cmd: VirtualKeysCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let c = Client::new(&conn)?;
    let (v, items) = match cmd {
        VirtualKeysCommand::List { page, limit } => {
            let q = query(&[
                ("page", page.map(|p| p.to_string())),
                ("limit", limit.map(|l| l.to_string())),
            ]);
            let v = c.call(Method::GET, &format!("/api/v1/virtual_keys{q}"), None).await?;
            let items = v["data"].as_array().cloned().unwrap_or_default();
            (v, items)
        }
        VirtualKeysCommand::Create { name, slug, fields } => {
            let mut body = json!({"name": name});
            if let Some(s) = slug {
                body["slug"] = json!(s);
            }
            fields.apply(&mut body)?;
            let v = c.call(Method::POST, "/api/v1/virtual_keys", Some(body)).await?;
            let item = v["data"].clone();
            (v, vec![item])
        }
        VirtualKeysCommand::Get { slug } => {
            let v = c
                .call(Method::GET, &format!("/api/v1/virtual_keys/{}", enc(&slug)), None)
                .await?;
            let item = v["data"].clone();
            (v, vec![item])
        }
        VirtualKeysCommand::Update {
            slug,
            name,
            status,
            fields,
        } => {
            let mut body = json!({});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(s) = status {
                body["status"] = json!(s);
            }
            fields.apply(&mut body)?;
            let v = c
                .call(
                    Method::PATCH,
                    &format!("/api/v1/virtual_keys/{}", enc(&slug)),
                    Some(body),
                )
                .await?;
            let item = v["data"].clone();
            (v, vec![item])
        }
        VirtualKeysCommand::Delete { slug } => {
            let v = c
                .call(Method::DELETE, &format!("/api/v1/virtual_keys/{}", enc(&slug)), None)
                .await?;
            if conn.json {
                println!("{v}");
            } else {
                println!("deleted virtual key {slug}");
            }
            return Ok(());
        }
    };
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print_vks(&items);
    }
    Ok(())
}

pub async fn usage(conn: Conn, args: UsageArgs) -> anyhow::Result<()> {
    let c = Client::new(&conn)?;
    let q = query(&[
        ("virtualKey", args.virtual_key),
        ("apiKey", args.api_key),
        ("providerKey", args.provider_key),
        ("model", args.model),
        ("from", args.from),
        ("to", args.to),
        ("groupBy", args.group_by.clone()),
    ]);
    let v = c.call(reqwest::Method::GET, &format!("/api/v1/usage{q}"), None).await?;
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let d = &v["data"];
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    let group = args.group_by.as_deref().map(|g| match g {
        "key" => "virtualKey",
        other => other,
    });
    let mut header = vec!["requests", "errors", "prompt tokens", "completion tokens", "cost (USD)"];
    if let Some(g) = group {
        header.insert(0, g);
    }
    t.set_header(header);
    let row = |r: &Value, label: Option<String>| {
        let mut cells = vec![
            cell(r, "requests"),
            cell(r, "errors"),
            cell(r, "promptTokens"),
            cell(r, "completionTokens"),
            format!("{:.6}", r["costUsd"].as_f64().unwrap_or(0.0)),
        ];
        if let Some(l) = label {
            cells.insert(0, l);
        }
        cells
    };
    if let (Some(g), Some(rows)) = (group, d["rows"].as_array()) {
        for r in rows {
            let label = r
                .get("virtualKeySlug")
                .or_else(|| r.get("providerKeyName"))
                .or_else(|| r.get(g));
            t.add_row(row(
                r,
                Some(label.map(|l| l.as_str().unwrap_or("").to_string()).unwrap_or_default()),
            ));
        }
        t.add_row(row(d, Some("total".into())));
    } else {
        t.add_row(row(d, None));
    }
    println!("{t}");
    Ok(())
}

fn print_api_keys(items: &[Value]) {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "id",
        "type",
        "description",
        "last 6",
        "limits",
        "period",
        "expires",
        "last used",
    ]);
    for k in items {
        t.add_row([
            cell(k, "id"),
            cell(k, "apiKeyType"),
            cell(k, "description"),
            cell(k, "last6Chars"),
            k.get("consumptionLimits")
                .or_else(|| k.get("consumptionLimit"))
                .map(|v| v.to_string())
                .unwrap_or_default(),
            cell(k, "limitPeriod"),
            cell(k, "expiresAt"),
            cell(k, "lastUsedAt"),
        ]);
    }
    println!("{t}");
}

pub async fn api_keys(conn: Conn, cmd: ApiKeysCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let c = Client::new(&conn)?;
    let pretty = |v: &Value| println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    match cmd {
        ApiKeysCommand::List { page, limit } => {
            let q = query(&[
                ("page", page.map(|p| p.to_string())),
                ("limit", limit.map(|l| l.to_string())),
            ]);
            let v = c.call(Method::GET, &format!("/api/v1/api_keys{q}"), None).await?;
            if conn.json {
                pretty(&v);
            } else {
                print_api_keys(v["data"].as_array().map(Vec::as_slice).unwrap_or(&[]));
            }
        }
        ApiKeysCommand::Create { key_type, fields } => {
            let mut body = json!({"apiKeyType": key_type.to_ascii_uppercase(), "description": ""});
            fields.apply(&mut body)?;
            let v = c.call(Method::POST, "/api/v1/api_keys", Some(body)).await?;
            if conn.json {
                pretty(&v);
            } else {
                print_api_keys(std::slice::from_ref(&v["data"]));
                println!(
                    "\nThe secret, shown only now:\n\n    {}\n",
                    v["data"]["apiKey"].as_str().unwrap_or("")
                );
            }
        }
        ApiKeysCommand::Get { id } => {
            let v = c
                .call(Method::GET, &format!("/api/v1/api_keys/{}", enc(&id)), None)
                .await?;
            if conn.json {
                pretty(&v);
            } else {
                print_api_keys(std::slice::from_ref(&v["data"]));
            }
        }
        ApiKeysCommand::Update {
            id,
            clear_ip_allowlist,
            fields,
        } => {
            let mut body = json!({"id": id});
            fields.apply(&mut body)?;
            if clear_ip_allowlist {
                body["ipAllowlist"] = json!([]);
            }
            let v = c.call(Method::PATCH, "/api/v1/api_keys", Some(body)).await?;
            if conn.json {
                pretty(&v);
            } else {
                print_api_keys(std::slice::from_ref(&v["data"]));
            }
        }
        ApiKeysCommand::Rotate {
            id,
            grace_period_seconds,
        } => {
            let v = c
                .call(
                    Method::POST,
                    &format!("/api/v1/api_keys/{}/rotate", enc(&id)),
                    Some(json!({"gracePeriodSeconds": grace_period_seconds})),
                )
                .await?;
            if conn.json {
                pretty(&v);
            } else {
                println!(
                    "The new secret, shown only now:\n\n    {}\n",
                    v["data"]["apiKey"].as_str().unwrap_or("")
                );
            }
        }
        ApiKeysCommand::Delete { id } => {
            let v = c
                .call(Method::DELETE, &format!("/api/v1/api_keys?id={}", enc(&id)), None)
                .await?;
            if conn.json {
                println!("{v}");
            } else {
                println!("deleted API key {id}");
            }
        }
        ApiKeysCommand::RateLimits => {
            let v = c.call(Method::GET, "/api/v1/api_keys/rate_limits", None).await?;
            if conn.json {
                pretty(&v);
            } else {
                let d = &v["data"];
                println!(
                    "access permitted: {}   next epoch: {}   expires: {}",
                    d["accessPermitted"],
                    cell(d, "nextEpochBegins"),
                    cell(d, "keyExpiration")
                );
                println!("balances: {}", d["balances"]);
                let mut t = Table::new();
                t.load_preset(UTF8_FULL_CONDENSED);
                t.set_header(["window", "limit", "used", "remaining", "reset"]);
                for w in d["windows"].as_array().cloned().unwrap_or_default() {
                    t.add_row([
                        cell(&w, "type"),
                        cell(&w, "limit"),
                        cell(&w, "used"),
                        cell(&w, "remaining"),
                        cell(&w, "reset"),
                    ]);
                }
                println!("{t}");
            }
        }
        ApiKeysCommand::Log => {
            let v = c.call(Method::GET, "/api/v1/api_keys/rate_limits/log", None).await?;
            if conn.json {
                pretty(&v);
            } else {
                let mut t = Table::new();
                t.load_preset(UTF8_FULL_CONDENSED);
                t.set_header(["time", "key", "model", "limit", "type"]);
                for e in v["data"].as_array().cloned().unwrap_or_default() {
                    t.add_row([
                        cell(&e, "timestamp"),
                        cell(&e, "apiKeyId"),
                        cell(&e, "modelId"),
                        cell(&e, "rateLimitTier"),
                        cell(&e, "rateLimitType"),
                    ]);
                }
                println!("{t}");
            }
        }
    }
    Ok(())
}

pub async fn workspaces(conn: Conn, cmd: WorkspacesCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let c = Client::new(&conn)?;
    let v = match cmd {
        WorkspacesCommand::List => c.call(Method::GET, "/api/v1/workspaces", None).await?,
        WorkspacesCommand::Create { name, id } => {
            let mut body = json!({"name": name});
            if let Some(i) = id {
                body["id"] = json!(i);
            }
            c.call(Method::POST, "/api/v1/workspaces", Some(body)).await?
        }
        WorkspacesCommand::Get { id } => {
            c.call(Method::GET, &format!("/api/v1/workspaces/{}", enc(&id)), None)
                .await?
        }
        WorkspacesCommand::Rename { id, name } => {
            c.call(
                Method::PATCH,
                &format!("/api/v1/workspaces/{}", enc(&id)),
                Some(json!({"name": name})),
            )
            .await?
        }
        WorkspacesCommand::Delete { id } => {
            c.call(Method::DELETE, &format!("/api/v1/workspaces/{}", enc(&id)), None)
                .await?
        }
    };
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let items: Vec<Value> = match &v["data"] {
        Value::Array(a) => a.clone(),
        Value::Null => {
            println!("done");
            return Ok(());
        }
        one => vec![one.clone()],
    };
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["id", "name", "created"]);
    for w in items {
        t.add_row([cell(&w, "id"), cell(&w, "name"), cell(&w, "createdAt")]);
    }
    println!("{t}");
    Ok(())
}

pub async fn audit(conn: Conn, cmd: AuditCommand) -> anyhow::Result<()> {
    let c = Client::new(&conn)?;
    match cmd {
        AuditCommand::List { page, limit, action } => {
            let mut q = vec![
                format!("page={}", page.unwrap_or(1)),
                format!("limit={}", limit.unwrap_or(50)),
            ];
            if let Some(a) = action {
                q.push(format!("action={}", enc(&a)));
            }
            let v = c
                .call(reqwest::Method::GET, &format!("/api/v1/audit?{}", q.join("&")), None)
                .await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(());
            }
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED);
            t.set_header(["at", "action", "target", "actor", "request"]);
            for e in v.get("data").and_then(Value::as_array).cloned().unwrap_or_default() {
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
