//! DigitalOcean: serverless inference (OpenAI-compatible at `https://inference.do-ai.run/v1`
//! with the model-access key) or an agent (its own endpoint, `POST /api/v1/chat/completions`
//! with the agent's key).

use super::{bearer, AdapterError, Endpoint, Plan, Provider, Wire};

pub fn plan(
    provider: Provider<'_>,
    endpoint: Endpoint,
    suffix: &str,
    query: Option<&str>,
    model: &str,
    secret: &str,
) -> Result<Plan, AdapterError> {
    if provider.settings.agent_id.is_some() {
        if endpoint != Endpoint::Chat {
            return Err(AdapterError::Unsupported {
                hub: "digitalocean",
                what: super::endpoint_name(endpoint),
            });
        }
        let base = provider.base_url.trim_end_matches("/api/v1");
        return Ok(Plan {
            url: format!("{base}/api/v1/chat/completions"),
            auth: bearer(secret)?,
            extra_headers: Vec::new(),
            wire: Wire::OpenAi,
            // An agent answers with its own model; the client's model is passed as given.
            body_model: None,
        });
    }
    super::openai::plan(provider, endpoint, suffix, query, model, secret)
}

/// The secret field an agent authenticates with.
pub fn secret_field(agent: bool) -> &'static str {
    if agent {
        "agent_key"
    } else {
        "api_key"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_types::hubconfig::HubSettings;
    use keygate_types::ModelHub;

    #[test]
    fn agent_and_serverless() {
        let s = HubSettings {
            agent_id: Some("a1".into()),
            ..Default::default()
        };
        let p = plan(
            Provider {
                hub: ModelHub::DigitalOcean,
                base_url: "https://abc.agents.do-ai.run",
                settings: &s,
            },
            Endpoint::Chat,
            "",
            None,
            "m",
            "ak",
        )
        .unwrap();
        assert_eq!(p.url, "https://abc.agents.do-ai.run/api/v1/chat/completions");
        assert_eq!(p.auth.1, "Bearer ak");
        assert!(plan(
            Provider {
                hub: ModelHub::DigitalOcean,
                base_url: "https://abc",
                settings: &s
            },
            Endpoint::Embeddings,
            "",
            None,
            "m",
            "ak"
        )
        .is_err());
        let s = HubSettings::default();
        let p = plan(
            Provider {
                hub: ModelHub::DigitalOcean,
                base_url: "https://inference.do-ai.run/v1",
                settings: &s,
            },
            Endpoint::Chat,
            "",
            None,
            "llama3-8b-instruct",
            "k",
        )
        .unwrap();
        assert_eq!(p.url, "https://inference.do-ai.run/v1/chat/completions");
        assert_eq!(secret_field(true), "agent_key");
    }
}
