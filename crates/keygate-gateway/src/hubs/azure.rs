//! Azure OpenAI: `{endpoint}/openai/deployments/{deployment}/{path}?api-version=…` with an
//! `api-key` header. The model a client sends (after the virtual key's aliases) picks the
//! deployment through the key's `deployments` map; an unknown or empty model picks the
//! default deployment.

use http::HeaderName;

use super::{secret_header, AdapterError, Endpoint, Plan, Provider, Wire};

/// The deployment a model maps to.
pub fn deployment<'a>(provider: &'a Provider<'_>, model: &'a str) -> Result<&'a str, AdapterError> {
    let s = provider.settings;
    if let Some(dep) = s.deployments.get(model) {
        return Ok(dep);
    }
    if !model.is_empty() && s.deployments.values().any(|d| d == model) {
        return Ok(model);
    }
    if let Some(d) = s.default_deployment.as_deref() {
        return Ok(d);
    }
    if s.deployments.len() == 1 {
        if let Some(d) = s.deployments.values().next() {
            return Ok(d);
        }
    }
    Err(AdapterError::Config(
        "no Azure deployment matches the model and the provider key has no default_deployment".into(),
    ))
}

pub fn plan(provider: Provider<'_>, endpoint: Endpoint, model: &str, secret: &str) -> Result<Plan, AdapterError> {
    let path = match endpoint {
        Endpoint::Chat => "/chat/completions",
        Endpoint::Completions => "/completions",
        Endpoint::Embeddings => "/embeddings",
        other => {
            return Err(AdapterError::Unsupported {
                hub: "azure",
                what: super::endpoint_name(other),
            })
        }
    };
    let dep = deployment(&provider, model)?;
    let version = provider
        .settings
        .api_version
        .as_deref()
        .unwrap_or(keygate_types::hubconfig::AZURE_DEFAULT_API_VERSION);
    Ok(Plan {
        url: format!(
            "{}/openai/deployments/{}{}?api-version={}",
            provider.base_url,
            dep,
            path,
            url_encode(version)
        ),
        auth: (HeaderName::from_static("api-key"), secret_header(secret)?),
        extra_headers: Vec::new(),
        wire: Wire::OpenAi,
        body_model: None,
    })
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_types::hubconfig::HubSettings;
    use keygate_types::ModelHub;

    fn s() -> HubSettings {
        let mut s = HubSettings {
            api_version: Some("2024-10-21".into()),
            default_deployment: Some("dep-mini".into()),
            ..Default::default()
        };
        s.deployments.insert("gpt-4o".into(), "dep-4o".into());
        s.deployments.insert("gpt-4o-mini".into(), "dep-mini".into());
        s
    }

    #[test]
    fn alias_picks_the_deployment_and_unknown_picks_the_default() {
        let s = s();
        let p = Provider {
            hub: ModelHub::Azure,
            base_url: "https://res.openai.azure.com",
            settings: &s,
        };
        let plan = plan(p, Endpoint::Chat, "gpt-4o", "az-key").unwrap();
        assert_eq!(
            plan.url,
            "https://res.openai.azure.com/openai/deployments/dep-4o/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(plan.auth.0.as_str(), "api-key");
        assert_eq!(plan.auth.1, "az-key");
        assert!(plan.auth.1.is_sensitive());
        assert!(super::plan(p, Endpoint::Chat, "unknown", "k")
            .unwrap()
            .url
            .contains("/dep-mini/"));
        assert!(super::plan(p, Endpoint::Chat, "", "k")
            .unwrap()
            .url
            .contains("/dep-mini/"));
        assert!(super::plan(p, Endpoint::Chat, "dep-4o", "k")
            .unwrap()
            .url
            .contains("/dep-4o/"));
        assert!(super::plan(p, Endpoint::Embeddings, "gpt-4o", "k")
            .unwrap()
            .url
            .contains("/dep-4o/embeddings?"));
        assert!(super::plan(p, Endpoint::Models, "", "k").is_err());
        let none = HubSettings::default();
        let p = Provider {
            hub: ModelHub::Azure,
            base_url: "https://r",
            settings: &none,
        };
        assert!(super::plan(p, Endpoint::Chat, "x", "k").is_err());
    }
}
