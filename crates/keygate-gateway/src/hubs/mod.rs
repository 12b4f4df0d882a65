//! One module per hub: how a request is built for it and how its answer is read.
//!
//! [`plan`] turns (hub, provider settings, secret, endpoint, model) into the upstream URL,
//! the authentication header and the wire format. The secret enters only the header value,
//! which is marked sensitive so no HTTP layer logs it.

pub mod anthropic;
pub mod azure;
pub mod custom;
pub mod digitalocean;
pub mod openai;
pub mod vertex;
pub mod vertex_auth;

use http::{HeaderName, HeaderValue};
use keygate_types::hubconfig::HubSettings;
use keygate_types::ModelHub;

/// What the client called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Models,
    /// Any other `/v1/*` path of an OpenAI-compatible hub.
    Passthrough,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Models => "models",
            Endpoint::Passthrough => "passthrough",
        }
    }

    /// The path below `/v1` for the OpenAI-shaped endpoints.
    pub fn openai_path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Models => "/models",
            Endpoint::Passthrough => "",
        }
    }
}

/// The wire format of the upstream answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    /// Anthropic's Messages API: the request and answer are translated.
    Anthropic,
}

/// The provider key as an adapter needs it.
#[derive(Clone, Copy, Debug)]
pub struct Provider<'a> {
    pub hub: ModelHub,
    /// The key's base URL (configured or the hub's), no trailing slash.
    pub base_url: &'a str,
    pub settings: &'a HubSettings,
}

/// How to call the upstream for one request.
pub struct Plan {
    pub url: String,
    /// The authentication header; its value is marked sensitive.
    pub auth: (HeaderName, HeaderValue),
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
    pub wire: Wire,
    /// The model to write into the upstream body (`None`: leave the body's model alone).
    pub body_model: Option<String>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("url", &self.url)
            .field("auth_header", &self.auth.0)
            .field("wire", &self.wire)
            .field("body_model", &self.body_model)
            .finish_non_exhaustive()
    }
}

/// Why a request cannot be sent to a hub. Messages never contain a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    #[error("hub {hub} does not serve {what} through keygate")]
    Unsupported { hub: &'static str, what: &'static str },
    #[error("{0}")]
    Config(String),
    #[error("the provider secret cannot be sent in an HTTP header")]
    BadSecret,
}

/// A header value carrying a secret, marked sensitive.
pub fn secret_header(value: &str) -> Result<HeaderValue, AdapterError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| AdapterError::BadSecret)?;
    v.set_sensitive(true);
    Ok(v)
}

pub fn bearer(secret: &str) -> Result<(HeaderName, HeaderValue), AdapterError> {
    Ok((http::header::AUTHORIZATION, secret_header(&format!("Bearer {secret}"))?))
}

/// Plans the upstream call. `suffix` is the path below `/v1` for pass-through (e.g.
/// `/audio/speech`), `query` the client's query string for pass-through, `model` the
/// upstream model after alias resolution (may be empty), `secret` the key, agent key or
/// access token to present.
pub fn plan(
    provider: Provider<'_>,
    endpoint: Endpoint,
    suffix: &str,
    query: Option<&str>,
    model: &str,
    secret: &str,
) -> Result<Plan, AdapterError> {
    match provider.hub {
        ModelHub::OpenAi
        | ModelHub::Together
        | ModelHub::Mistral
        | ModelHub::Fireworks
        | ModelHub::Nvidia
        | ModelHub::OpenRouter => openai::plan(provider, endpoint, suffix, query, model, secret),
        ModelHub::DigitalOcean => digitalocean::plan(provider, endpoint, suffix, query, model, secret),
        ModelHub::Custom => custom::plan(provider, endpoint, suffix, query, model, secret),
        ModelHub::Azure => azure::plan(provider, endpoint, model, secret),
        ModelHub::Vertex => vertex::plan(provider, endpoint, model, secret),
        ModelHub::Anthropic => anthropic_plan(provider, endpoint, model, secret),
        ModelHub::Bedrock => Err(AdapterError::Unsupported {
            hub: "bedrock",
            what: "requests",
        }),
        ModelHub::BedrockAgents => Err(AdapterError::Unsupported {
            hub: "bedrockAgents",
            what: "requests",
        }),
    }
}

fn anthropic_plan(provider: Provider<'_>, endpoint: Endpoint, model: &str, secret: &str) -> Result<Plan, AdapterError> {
    if endpoint != Endpoint::Chat {
        return Err(AdapterError::Unsupported {
            hub: "anthropic",
            what: endpoint_name(endpoint),
        });
    }
    let version = provider
        .settings
        .anthropic_version
        .clone()
        .unwrap_or_else(|| anthropic::ANTHROPIC_VERSION.to_string());
    let version = HeaderValue::from_str(&version)
        .map_err(|_| AdapterError::Config("anthropic_version is not a valid header value".into()))?;
    Ok(Plan {
        url: format!("{}/messages", provider.base_url),
        auth: (HeaderName::from_static("x-api-key"), secret_header(secret)?),
        extra_headers: vec![(HeaderName::from_static("anthropic-version"), version)],
        wire: Wire::Anthropic,
        body_model: Some(model.to_string()),
    })
}

pub(crate) fn endpoint_name(e: Endpoint) -> &'static str {
    match e {
        Endpoint::Chat => "chat completions",
        Endpoint::Completions => "completions",
        Endpoint::Embeddings => "embeddings",
        Endpoint::Models => "model lists",
        Endpoint::Passthrough => "other paths",
    }
}

/// Joins a base URL, a path and an optional query.
pub(crate) fn join(base: &str, path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => format!("{base}{path}?{q}"),
        _ => format!("{base}{path}"),
    }
}

/// Checks a pass-through suffix: a plain path below `/v1`, nothing that climbs out of it.
pub(crate) fn check_suffix(suffix: &str) -> Result<(), AdapterError> {
    let ok = suffix.starts_with('/')
        && !suffix.split('/').any(|seg| seg == ".." || seg == ".")
        && !suffix.contains("//")
        && !suffix.contains('\\')
        && !suffix.contains('#')
        && suffix.bytes().all(|b| b > 0x20 && b < 0x7f);
    if ok {
        Ok(())
    } else {
        Err(AdapterError::Config("the path cannot be passed through".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HubSettings {
        HubSettings::default()
    }

    #[test]
    fn anthropic_plan_uses_x_api_key_and_version() {
        let s = settings();
        let p = plan(
            Provider {
                hub: ModelHub::Anthropic,
                base_url: "https://api.anthropic.com/v1",
                settings: &s,
            },
            Endpoint::Chat,
            "",
            None,
            "claude-sonnet-4-5",
            "sk-ant-secret",
        )
        .unwrap();
        assert_eq!(p.url, "https://api.anthropic.com/v1/messages");
        assert_eq!(p.auth.0.as_str(), "x-api-key");
        assert!(p.auth.1.is_sensitive());
        assert_eq!(p.extra_headers[0].1, "2023-06-01");
        assert_eq!(p.wire, Wire::Anthropic);
        assert!(!format!("{p:?}").contains("sk-ant-secret"));
        let e = plan(
            Provider {
                hub: ModelHub::Anthropic,
                base_url: "https://x",
                settings: &s,
            },
            Endpoint::Embeddings,
            "",
            None,
            "m",
            "k",
        )
        .unwrap_err();
        assert!(e.to_string().contains("embeddings"));
    }

    #[test]
    fn suffixes_cannot_climb() {
        assert!(check_suffix("/audio/speech").is_ok());
        for bad in ["/../admin", "audio", "/a/./b", "/a//b", "/a b", "/a#b", "/a\\b"] {
            assert!(check_suffix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_secrets_are_refused_without_echo() {
        let e = secret_header("line\nbreak").unwrap_err();
        assert!(!e.to_string().contains("line"));
    }
}
