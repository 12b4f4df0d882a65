//! Vertex AI through Gemini's OpenAI-compatible endpoint:
//! `https://{region}-aiplatform.googleapis.com/v1/projects/{project}/locations/{region}/endpoints/openapi`
//! with an OAuth access token (see `vertex_auth`). Gemini models are named `google/<model>`
//! there; a bare model name gets that prefix.

use super::{bearer, AdapterError, Endpoint, Plan, Provider, Wire};

pub fn plan(provider: Provider<'_>, endpoint: Endpoint, model: &str, access_token: &str) -> Result<Plan, AdapterError> {
    let path = match endpoint {
        Endpoint::Chat => "/chat/completions",
        Endpoint::Embeddings => "/embeddings",
        other => {
            return Err(AdapterError::Unsupported {
                hub: "vertex",
                what: super::endpoint_name(other),
            })
        }
    };
    Ok(Plan {
        url: format!("{}{}", provider.base_url, path),
        auth: bearer(access_token)?,
        extra_headers: Vec::new(),
        wire: Wire::OpenAi,
        body_model: Some(upstream_model(model)),
    })
}

/// `gemini-2.0-flash` -> `google/gemini-2.0-flash`; names with a publisher stay as they are.
pub fn upstream_model(model: &str) -> String {
    if model.contains('/') || model.is_empty() {
        model.to_string()
    } else {
        format!("google/{model}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_types::hubconfig::HubSettings;
    use keygate_types::ModelHub;

    #[test]
    fn openapi_endpoint_and_model_names() {
        let s = HubSettings::default();
        let base =
            "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/endpoints/openapi";
        let p = plan(
            Provider {
                hub: ModelHub::Vertex,
                base_url: base,
                settings: &s,
            },
            Endpoint::Chat,
            "gemini-2.0-flash",
            "ya29.token",
        )
        .unwrap();
        assert_eq!(p.url, format!("{base}/chat/completions"));
        assert_eq!(p.auth.1, "Bearer ya29.token");
        assert_eq!(p.body_model.as_deref(), Some("google/gemini-2.0-flash"));
        assert_eq!(upstream_model("meta/llama-3"), "meta/llama-3");
        assert!(plan(
            Provider {
                hub: ModelHub::Vertex,
                base_url: base,
                settings: &s
            },
            Endpoint::Completions,
            "m",
            "t"
        )
        .is_err());
    }
}
