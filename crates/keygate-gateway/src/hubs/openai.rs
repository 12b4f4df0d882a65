//! OpenAI and the OpenAI-compatible hubs (Together, Mistral, Fireworks, NVIDIA, OpenRouter):
//! the same paths below their base URL and a bearer key.

use super::{bearer, check_suffix, join, AdapterError, Endpoint, Plan, Provider, Wire};

pub fn plan(
    provider: Provider<'_>,
    endpoint: Endpoint,
    suffix: &str,
    query: Option<&str>,
    model: &str,
    secret: &str,
) -> Result<Plan, AdapterError> {
    Ok(Plan {
        url: url(provider.base_url, endpoint, suffix, query)?,
        auth: bearer(secret)?,
        extra_headers: Vec::new(),
        wire: Wire::OpenAi,
        body_model: (!model.is_empty()).then(|| model.to_string()),
    })
}

/// The URL of an OpenAI-shaped endpoint below `base`.
pub fn url(base: &str, endpoint: Endpoint, suffix: &str, query: Option<&str>) -> Result<String, AdapterError> {
    match endpoint {
        Endpoint::Passthrough => {
            check_suffix(suffix)?;
            Ok(join(base, suffix, query))
        }
        Endpoint::Models if !suffix.is_empty() => {
            check_suffix(suffix)?;
            Ok(join(base, suffix, None))
        }
        other => Ok(join(base, other.openai_path(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_types::hubconfig::HubSettings;
    use keygate_types::ModelHub;

    #[test]
    fn paths_and_bearer() {
        let s = HubSettings::default();
        let p = Provider {
            hub: ModelHub::Together,
            base_url: "https://api.together.xyz/v1",
            settings: &s,
        };
        let plan = plan(p, Endpoint::Chat, "", None, "meta-llama/Llama-3-8b", "tk").unwrap();
        assert_eq!(plan.url, "https://api.together.xyz/v1/chat/completions");
        assert_eq!(plan.auth.1, "Bearer tk");
        assert_eq!(plan.body_model.as_deref(), Some("meta-llama/Llama-3-8b"));
        assert_eq!(
            url("https://x/v1", Endpoint::Embeddings, "", None).unwrap(),
            "https://x/v1/embeddings"
        );
        assert_eq!(
            url("https://x/v1", Endpoint::Models, "/models/org%2Fm", None).unwrap(),
            "https://x/v1/models/org%2Fm"
        );
        assert_eq!(
            url("https://x/v1", Endpoint::Passthrough, "/audio/speech", Some("a=1")).unwrap(),
            "https://x/v1/audio/speech?a=1"
        );
        assert!(url("https://x/v1", Endpoint::Passthrough, "/../x", None).is_err());
    }
}
