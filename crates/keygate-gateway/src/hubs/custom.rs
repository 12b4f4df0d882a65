//! Custom hubs: an OpenAI-compatible server at the key's base URL, with a configurable
//! authentication header (`auth_header`, default `Authorization`) and scheme (`auth_scheme`,
//! default `Bearer`; empty sends the bare key).

use http::HeaderName;

use super::{secret_header, AdapterError, Endpoint, Plan, Provider, Wire};

pub fn plan(
    provider: Provider<'_>,
    endpoint: Endpoint,
    suffix: &str,
    query: Option<&str>,
    model: &str,
    secret: &str,
) -> Result<Plan, AdapterError> {
    let name = provider.settings.auth_header.as_deref().unwrap_or("Authorization");
    let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| AdapterError::Config("auth_header is not a valid header name".into()))?;
    let scheme = provider.settings.auth_scheme.as_deref().unwrap_or("Bearer");
    let value = if scheme.is_empty() {
        secret.to_string()
    } else {
        format!("{scheme} {secret}")
    };
    Ok(Plan {
        url: super::openai::url(provider.base_url, endpoint, suffix, query)?,
        auth: (name, secret_header(&value)?),
        extra_headers: Vec::new(),
        wire: Wire::OpenAi,
        body_model: (!model.is_empty()).then(|| model.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_types::hubconfig::HubSettings;
    use keygate_types::ModelHub;

    #[test]
    fn configurable_header_and_scheme() {
        let s = HubSettings {
            auth_header: Some("X-Api-Key".into()),
            auth_scheme: Some(String::new()),
            ..Default::default()
        };
        let p = plan(
            Provider {
                hub: ModelHub::Custom,
                base_url: "http://10.0.0.1/v1",
                settings: &s,
            },
            Endpoint::Chat,
            "",
            None,
            "m",
            "raw",
        )
        .unwrap();
        assert_eq!(p.auth.0.as_str(), "x-api-key");
        assert_eq!(p.auth.1, "raw");
        let s = HubSettings {
            auth_scheme: Some("Token".into()),
            ..Default::default()
        };
        let p = plan(
            Provider {
                hub: ModelHub::Custom,
                base_url: "http://h/v1",
                settings: &s,
            },
            Endpoint::Embeddings,
            "",
            None,
            "m",
            "k",
        )
        .unwrap();
        assert_eq!(
            (p.auth.0.as_str(), p.url.as_str()),
            ("authorization", "http://h/v1/embeddings")
        );
        assert_eq!(p.auth.1, "Token k");
    }
}
