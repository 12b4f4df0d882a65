//! Hub configuration of a provider key: validated per hub, split into the public settings
//! (stored as JSON) and the secret fields (encrypted by the vault like the key itself).
//!
//! Field names are accepted in snake_case (Vijil's shape) or camelCase (the native API) and
//! kept in snake_case. A field that does not belong to the hub is refused by name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::ModelHub;

/// The public part of a hub config. Every field is optional; which ones a hub needs is
/// checked by [`validate`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HubSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// OAuth token endpoint override (Vertex); defaults to Google's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Azure: alias -> deployment name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deployments: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_deployment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_alias_id: Option<String>,
    /// Custom hubs: the header that carries the key (default `Authorization`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_header: Option<String>,
    /// Custom hubs: the scheme before the key (default `Bearer`; empty for the bare key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_scheme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anthropic_version: Option<String>,
    /// Names of the secret fields stored sealed for this key (set by keygate, never by input).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_fields: Vec<String>,
}

impl HubSettings {
    /// Reads stored settings: an error for anything that is not exactly this type (unknown
    /// fields included), never a default.
    pub fn from_stored(text: &str) -> Result<HubSettings, crate::policy::Unreadable> {
        crate::policy::read_stored("hub settings", text)
    }

    /// The settings as the snake_case map a hub config is given in (secret fields excluded).
    pub fn to_input_map(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                out.insert(k.to_string(), serde_json::Value::String(v.clone()));
            }
        };
        put("region", &self.region);
        put("project_id", &self.project_id);
        put("client_id", &self.client_id);
        put("token_url", &self.token_url);
        put("resource_name", &self.resource_name);
        put("api_version", &self.api_version);
        put("default_deployment", &self.default_deployment);
        put("agent_id", &self.agent_id);
        put("agent_alias_id", &self.agent_alias_id);
        put("auth_header", &self.auth_header);
        put("auth_scheme", &self.auth_scheme);
        put("anthropic_version", &self.anthropic_version);
        if !self.deployments.is_empty() {
            let map = self
                .deployments
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            out.insert("deployments".into(), serde_json::Value::Object(map));
        }
        out
    }
}

/// The base URL a provider key's requests go to: its own, else one built from the hub
/// config, else the hub's default. `None` when the key cannot name one (a custom hub
/// without a URL, which validation refuses).
pub fn effective_base_url(hub: ModelHub, base_url: Option<&str>, s: &HubSettings) -> Option<String> {
    if let Some(u) = base_url {
        return Some(u.trim_end_matches('/').to_string());
    }
    match hub {
        ModelHub::Azure => s
            .resource_name
            .as_ref()
            .map(|r| format!("https://{r}.openai.azure.com")),
        ModelHub::Vertex => match (&s.region, &s.project_id) {
            (Some(r), Some(p)) => Some(format!(
                "https://{r}-aiplatform.googleapis.com/v1/projects/{p}/locations/{r}/endpoints/openapi"
            )),
            _ => None,
        },
        ModelHub::Bedrock => s
            .region
            .as_ref()
            .map(|r| format!("https://bedrock-runtime.{r}.amazonaws.com")),
        ModelHub::BedrockAgents => s
            .region
            .as_ref()
            .map(|r| format!("https://bedrock-agent-runtime.{r}.amazonaws.com")),
        other => other.default_base_url().map(str::to_string),
    }
}

/// Secret hub-config fields, encrypted by the vault.
pub const SECRET_FIELDS: [&str; 6] = [
    "client_secret",
    "refresh_token",
    "service_account_json",
    "agent_key",
    "access_key",
    "secret_access_key",
];

const PUBLIC_FIELDS: [&str; 13] = [
    "region",
    "project_id",
    "client_id",
    "token_url",
    "resource_name",
    "api_version",
    "deployments",
    "default_deployment",
    "agent_id",
    "agent_alias_id",
    "auth_header",
    "auth_scheme",
    "anthropic_version",
];

/// Azure's API version when none is given.
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

/// A secret taken from the hub config, to be encrypted.
pub struct SecretField {
    pub field: &'static str,
    pub value: Zeroizing<String>,
}

impl std::fmt::Debug for SecretField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretField({}, <redacted>)", self.field)
    }
}

/// The validated hub config.
#[derive(Debug, Default)]
pub struct ParsedHubConfig {
    pub settings: HubSettings,
    pub secrets: Vec<SecretField>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HubConfigError(pub String);

fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn fields_for(hub: ModelHub) -> &'static [&'static str] {
    match hub {
        ModelHub::Vertex => &[
            "region",
            "project_id",
            "client_id",
            "client_secret",
            "refresh_token",
            "service_account_json",
            "token_url",
        ],
        ModelHub::Azure => &["resource_name", "api_version", "deployments", "default_deployment"],
        ModelHub::DigitalOcean => &["agent_id", "agent_key"],
        ModelHub::Bedrock => &["region", "access_key", "secret_access_key"],
        ModelHub::BedrockAgents => &[
            "region",
            "access_key",
            "secret_access_key",
            "agent_id",
            "agent_alias_id",
        ],
        ModelHub::Custom => &["auth_header", "auth_scheme"],
        ModelHub::Anthropic => &["anthropic_version"],
        ModelHub::OpenAi
        | ModelHub::Together
        | ModelHub::Mistral
        | ModelHub::Fireworks
        | ModelHub::Nvidia
        | ModelHub::OpenRouter => &[],
    }
}

fn string_value(field: &str, v: &serde_json::Value) -> Result<String, HubConfigError> {
    match v {
        serde_json::Value::String(s) => {
            let s = s.trim();
            if s.is_empty() && field != "auth_scheme" {
                return Err(HubConfigError(format!("hubConfig.{field} must not be empty")));
            }
            if s.len() > 16 * 1024 {
                return Err(HubConfigError(format!("hubConfig.{field} is too long")));
            }
            Ok(s.to_string())
        }
        // A service-account JSON may be given as an object.
        serde_json::Value::Object(_) if field == "service_account_json" => Ok(v.to_string()),
        _ => Err(HubConfigError(format!("hubConfig.{field} must be a string"))),
    }
}

/// Validates a hub config for `hub`. `has_api_key` and `has_base_url` say whether the
/// provider key carries those, since some hubs need one or the other.
pub fn validate(
    hub: ModelHub,
    raw: Option<&serde_json::Value>,
    has_api_key: bool,
    has_base_url: bool,
) -> Result<ParsedHubConfig, HubConfigError> {
    let mut parsed = ParsedHubConfig::default();
    let mut present: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    match raw {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(map)) => {
            for (k, v) in map {
                if v.is_null() {
                    continue;
                }
                let name = snake(k);
                if !SECRET_FIELDS.contains(&name.as_str()) && !PUBLIC_FIELDS.contains(&name.as_str()) {
                    return Err(HubConfigError(format!("hubConfig.{k} is not a known field")));
                }
                if !fields_for(hub).contains(&name.as_str()) {
                    return Err(HubConfigError(format!("hubConfig.{k} does not apply to hub {hub}")));
                }
                if present.insert(name, v.clone()).is_some() {
                    return Err(HubConfigError(format!("hubConfig.{k} is given twice")));
                }
            }
        }
        Some(_) => return Err(HubConfigError("hubConfig must be an object".into())),
    }

    for (name, value) in &present {
        if let Some(field) = SECRET_FIELDS.iter().find(|f| **f == name.as_str()) {
            parsed.secrets.push(SecretField {
                field,
                value: Zeroizing::new(string_value(name, value)?),
            });
            continue;
        }
        let s = &mut parsed.settings;
        match name.as_str() {
            "deployments" => {
                let serde_json::Value::Object(map) = value else {
                    return Err(HubConfigError(
                        "hubConfig.deployments must map aliases to deployment names".into(),
                    ));
                };
                for (alias, dep) in map {
                    let dep = string_value("deployments", dep)?;
                    check_path_segment("deployment name", &dep)?;
                    if alias.is_empty() || alias.len() > 256 {
                        return Err(HubConfigError("a deployment alias must be 1 to 256 characters".into()));
                    }
                    s.deployments.insert(alias.clone(), dep);
                }
            }
            other => {
                let v = string_value(other, value)?;
                let slot = match other {
                    "region" => &mut s.region,
                    "project_id" => &mut s.project_id,
                    "client_id" => &mut s.client_id,
                    "token_url" => &mut s.token_url,
                    "resource_name" => &mut s.resource_name,
                    "api_version" => &mut s.api_version,
                    "default_deployment" => &mut s.default_deployment,
                    "agent_id" => &mut s.agent_id,
                    "agent_alias_id" => &mut s.agent_alias_id,
                    "auth_header" => &mut s.auth_header,
                    "auth_scheme" => &mut s.auth_scheme,
                    "anthropic_version" => &mut s.anthropic_version,
                    _ => return Err(HubConfigError(format!("hubConfig.{other} is not a known field"))),
                };
                *slot = Some(v);
            }
        }
    }

    let has_secret = |f: &str| parsed.secrets.iter().any(|s| s.field == f);
    let s = &mut parsed.settings;
    let need = |ok: bool, what: &str| -> Result<(), HubConfigError> {
        if ok {
            Ok(())
        } else {
            Err(HubConfigError(format!("hub {hub} needs {what}")))
        }
    };
    match hub {
        ModelHub::Vertex => {
            need(s.region.is_some(), "hubConfig.region")?;
            need(s.project_id.is_some(), "hubConfig.project_id")?;
            if let Some(r) = &s.region {
                check_dns_label("region", r)?;
            }
            if let Some(p) = &s.project_id {
                check_path_segment("project_id", p)?;
            }
            let oauth = s.client_id.is_some() && has_secret("client_secret") && has_secret("refresh_token");
            need(
                oauth || has_secret("service_account_json"),
                "either hubConfig.client_id, client_secret and refresh_token, or hubConfig.service_account_json",
            )?;
        }
        ModelHub::Azure => {
            need(has_api_key, "an apiKey")?;
            need(
                s.resource_name.is_some() || has_base_url,
                "hubConfig.resource_name or a baseUrl (the resource endpoint)",
            )?;
            if let Some(r) = &s.resource_name {
                check_dns_label("resource_name", r)?;
            }
            if s.api_version.is_none() {
                s.api_version = Some(AZURE_DEFAULT_API_VERSION.to_string());
            }
            if let Some(d) = &s.default_deployment {
                check_path_segment("default_deployment", d)?;
            }
        }
        ModelHub::DigitalOcean => {
            let agent = s.agent_id.is_some() || has_secret("agent_key");
            if agent {
                need(
                    s.agent_id.is_some() && has_secret("agent_key"),
                    "both hubConfig.agent_id and hubConfig.agent_key for an agent",
                )?;
            } else {
                need(
                    has_api_key,
                    "an apiKey (serverless inference) or hubConfig.agent_id and agent_key",
                )?;
            }
        }
        ModelHub::Bedrock | ModelHub::BedrockAgents => {
            need(s.region.is_some(), "hubConfig.region")?;
            need(has_secret("access_key"), "hubConfig.access_key")?;
            need(has_secret("secret_access_key"), "hubConfig.secret_access_key")?;
            if let Some(r) = &s.region {
                check_dns_label("region", r)?;
            }
            if hub == ModelHub::BedrockAgents {
                need(s.agent_id.is_some(), "hubConfig.agent_id")?;
                need(s.agent_alias_id.is_some(), "hubConfig.agent_alias_id")?;
            }
        }
        ModelHub::Custom => {
            need(has_base_url, "a baseUrl")?;
            need(has_api_key, "an apiKey")?;
            if let Some(h) = &s.auth_header {
                if http_header_name_ok(h).is_none() {
                    return Err(HubConfigError(
                        "hubConfig.auth_header is not a valid header name".into(),
                    ));
                }
            }
        }
        ModelHub::Anthropic
        | ModelHub::OpenAi
        | ModelHub::Together
        | ModelHub::Mistral
        | ModelHub::Fireworks
        | ModelHub::Nvidia
        | ModelHub::OpenRouter => need(has_api_key, "an apiKey")?,
    }
    Ok(parsed)
}

fn http_header_name_ok(h: &str) -> Option<()> {
    let ok = !h.is_empty()
        && h.len() <= 128
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    ok.then_some(())
}

fn check_dns_label(what: &str, v: &str) -> Result<(), HubConfigError> {
    let ok = !v.is_empty() && v.len() <= 63 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(HubConfigError(format!(
            "hubConfig.{what} may only contain letters, digits and '-'"
        )))
    }
}

fn check_path_segment(what: &str, v: &str) -> Result<(), HubConfigError> {
    let ok = v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        && !v.is_empty()
        && v.len() <= 256
        && v != "."
        && v != "..";
    if ok {
        Ok(())
    } else {
        Err(HubConfigError(format!(
            "{what} may only contain letters, digits, '-', '_', '.' and ':'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vertex_oauth_in_vijil_shape() {
        let cfg = json!({"region":"us-central1","project_id":"p-1","client_id":"cid","client_secret":"cs","refresh_token":"rt"});
        let p = validate(ModelHub::Vertex, Some(&cfg), false, false).unwrap();
        assert_eq!(p.settings.region.as_deref(), Some("us-central1"));
        assert_eq!(p.settings.client_id.as_deref(), Some("cid"));
        let fields: Vec<_> = p.secrets.iter().map(|s| s.field).collect();
        assert_eq!(fields, vec!["client_secret", "refresh_token"]);
        // The settings never carry a secret.
        let shown = serde_json::to_string(&p.settings).unwrap();
        assert!(!shown.contains("\"cs\"") && !shown.contains("\"rt\""));
    }

    #[test]
    fn vertex_camel_case_and_service_account_object() {
        let cfg = json!({"region":"europe-west4","projectId":"p","serviceAccountJson":{"type":"service_account"}});
        let p = validate(ModelHub::Vertex, Some(&cfg), false, false).unwrap();
        assert_eq!(p.settings.project_id.as_deref(), Some("p"));
        assert_eq!(p.secrets[0].field, "service_account_json");
        assert!(p.secrets[0].value.contains("service_account"));
    }

    #[test]
    fn vertex_missing_credentials_is_refused() {
        let cfg = json!({"region":"us-central1","project_id":"p","client_id":"c"});
        let e = validate(ModelHub::Vertex, Some(&cfg), false, false).unwrap_err();
        assert!(e.0.contains("refresh_token"), "{e}");
    }

    #[test]
    fn fields_of_other_hubs_are_refused() {
        let cfg = json!({"agent_id":"a"});
        let e = validate(ModelHub::OpenAi, Some(&cfg), true, false).unwrap_err();
        assert!(e.0.contains("does not apply"), "{e}");
        let e = validate(ModelHub::OpenAi, Some(&json!({"nonsense": 1})), true, false).unwrap_err();
        assert!(e.0.contains("not a known field"), "{e}");
    }

    #[test]
    fn azure_defaults_and_deployments() {
        let cfg = json!({"resourceName":"res","deployments":{"gpt-4o":"dep-4o"},"defaultDeployment":"dep-4o"});
        let p = validate(ModelHub::Azure, Some(&cfg), true, false).unwrap();
        assert_eq!(p.settings.api_version.as_deref(), Some(AZURE_DEFAULT_API_VERSION));
        assert_eq!(p.settings.deployments.get("gpt-4o").map(String::as_str), Some("dep-4o"));
        assert!(validate(ModelHub::Azure, Some(&json!({"resourceName":"a/b"})), true, false).is_err());
        assert!(validate(ModelHub::Azure, None, true, false).is_err());
        assert!(validate(ModelHub::Azure, None, true, true).is_ok());
    }

    #[test]
    fn digitalocean_agent_or_serverless() {
        assert!(validate(ModelHub::DigitalOcean, None, true, false).is_ok());
        assert!(validate(ModelHub::DigitalOcean, None, false, false).is_err());
        let agent = json!({"agent_id":"a1","agent_key":"k"});
        let p = validate(ModelHub::DigitalOcean, Some(&agent), false, true).unwrap();
        assert_eq!(p.secrets[0].field, "agent_key");
        assert!(validate(ModelHub::DigitalOcean, Some(&json!({"agent_id":"a1"})), false, true).is_err());
    }

    #[test]
    fn bedrock_needs_its_keys() {
        let cfg = json!({"region":"us-east-1","access_key":"AK","secret_access_key":"SK"});
        assert!(validate(ModelHub::Bedrock, Some(&cfg), false, false).is_ok());
        assert!(validate(ModelHub::BedrockAgents, Some(&cfg), false, false).is_err());
    }

    #[test]
    fn openai_family_needs_a_key() {
        for hub in [ModelHub::OpenAi, ModelHub::Together, ModelHub::Anthropic] {
            assert!(validate(hub, None, false, false).is_err());
            assert!(validate(hub, None, true, false).is_ok());
        }
        assert!(validate(ModelHub::Custom, None, true, false).is_err());
        let p = validate(
            ModelHub::Custom,
            Some(&json!({"auth_header":"x-api-key","auth_scheme":""})),
            true,
            true,
        )
        .unwrap();
        assert_eq!(p.settings.auth_scheme.as_deref(), Some(""));
        assert!(validate(ModelHub::Custom, Some(&json!({"auth_header":"bad header"})), true, true).is_err());
    }
}
