//! Model hubs: the providers whose keys keygate keeps, their default base URLs and the
//! default rate limit used when a provider key names none.

use serde::{Deserialize, Serialize};

/// A model hub. The serialized names are exactly those the Vijil client accepts, plus
/// `anthropic`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ModelHub {
    #[serde(rename = "openai")]
    OpenAi,
    #[serde(rename = "together")]
    Together,
    #[serde(rename = "mistral")]
    Mistral,
    #[serde(rename = "fireworks")]
    Fireworks,
    #[serde(rename = "nvidia")]
    Nvidia,
    #[serde(rename = "vertex")]
    Vertex,
    #[serde(rename = "bedrock")]
    Bedrock,
    #[serde(rename = "bedrockAgents")]
    BedrockAgents,
    #[serde(rename = "azure")]
    Azure,
    #[serde(rename = "custom")]
    Custom,
    #[serde(rename = "digitalocean")]
    DigitalOcean,
    #[serde(rename = "openrouter")]
    OpenRouter,
    #[serde(rename = "anthropic")]
    Anthropic,
}

/// The default rate limit of a hub: its lowest published tier, as requests per interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultRateLimit {
    pub per_interval: u32,
    pub interval_secs: u32,
    /// Where the figure comes from, shown in the docs.
    pub source: &'static str,
}

impl ModelHub {
    pub const ALL: [ModelHub; 13] = [
        ModelHub::OpenAi,
        ModelHub::Together,
        ModelHub::Mistral,
        ModelHub::Fireworks,
        ModelHub::Nvidia,
        ModelHub::Vertex,
        ModelHub::Bedrock,
        ModelHub::BedrockAgents,
        ModelHub::Azure,
        ModelHub::Custom,
        ModelHub::DigitalOcean,
        ModelHub::OpenRouter,
        ModelHub::Anthropic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelHub::OpenAi => "openai",
            ModelHub::Together => "together",
            ModelHub::Mistral => "mistral",
            ModelHub::Fireworks => "fireworks",
            ModelHub::Nvidia => "nvidia",
            ModelHub::Vertex => "vertex",
            ModelHub::Bedrock => "bedrock",
            ModelHub::BedrockAgents => "bedrockAgents",
            ModelHub::Azure => "azure",
            ModelHub::Custom => "custom",
            ModelHub::DigitalOcean => "digitalocean",
            ModelHub::OpenRouter => "openrouter",
            ModelHub::Anthropic => "anthropic",
        }
    }

    pub fn parse(s: &str) -> Option<ModelHub> {
        ModelHub::ALL.into_iter().find(|h| h.as_str() == s)
    }

    /// The base URL used when a provider key sets none. `None` where the URL is built from
    /// the hub config (Azure, Vertex, Bedrock) or must be given (custom).
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ModelHub::OpenAi => Some("https://api.openai.com/v1"),
            ModelHub::Together => Some("https://api.together.xyz/v1"),
            ModelHub::Mistral => Some("https://api.mistral.ai/v1"),
            ModelHub::Fireworks => Some("https://api.fireworks.ai/inference/v1"),
            ModelHub::Nvidia => Some("https://integrate.api.nvidia.com/v1"),
            ModelHub::OpenRouter => Some("https://openrouter.ai/api/v1"),
            ModelHub::DigitalOcean => Some("https://inference.do-ai.run/v1"),
            ModelHub::Anthropic => Some("https://api.anthropic.com/v1"),
            ModelHub::Vertex | ModelHub::Bedrock | ModelHub::BedrockAgents | ModelHub::Azure | ModelHub::Custom => None,
        }
    }

    /// Whether the hub speaks OpenAI's wire format with a bearer key.
    pub fn is_openai_compatible(self) -> bool {
        matches!(
            self,
            ModelHub::OpenAi
                | ModelHub::Together
                | ModelHub::Mistral
                | ModelHub::Fireworks
                | ModelHub::Nvidia
                | ModelHub::OpenRouter
                | ModelHub::DigitalOcean
                | ModelHub::Custom
        )
    }

    /// The hub's lowest published rate-limit tier, applied when a provider key names none.
    /// Conservative on purpose: a key on a higher tier should state its own limit.
    pub fn default_rate_limit(self) -> DefaultRateLimit {
        let (per_interval, interval_secs, source) = match self {
            ModelHub::OpenAi => (500, 60, "OpenAI usage tier 1: 500 requests per minute"),
            ModelHub::Together => (60, 60, "Together AI free tier: 60 requests per minute"),
            ModelHub::Mistral => (1, 1, "Mistral free tier: 1 request per second"),
            ModelHub::Fireworks => (10, 60, "Fireworks without a payment method: 10 requests per minute"),
            ModelHub::Nvidia => (40, 60, "NVIDIA API catalog: 40 requests per minute"),
            ModelHub::Vertex => (
                60,
                60,
                "Vertex AI Gemini default per-project quota: 60 requests per minute",
            ),
            ModelHub::Bedrock => (50, 60, "Amazon Bedrock on-demand default quota, lowest model"),
            ModelHub::BedrockAgents => (50, 60, "Amazon Bedrock Agents InvokeAgent default quota"),
            ModelHub::Azure => (
                6,
                60,
                "Azure OpenAI: 6 requests per minute per 1,000 tokens-per-minute of the smallest deployment",
            ),
            ModelHub::Custom => (60, 60, "keygate's default for custom hubs: 60 requests per minute"),
            ModelHub::DigitalOcean => (
                60,
                60,
                "DigitalOcean serverless inference lowest tier: 60 requests per minute",
            ),
            ModelHub::OpenRouter => (20, 60, "OpenRouter free models: 20 requests per minute"),
            ModelHub::Anthropic => (50, 60, "Anthropic usage tier 1: 50 requests per minute"),
        };
        DefaultRateLimit {
            per_interval,
            interval_secs,
            source,
        }
    }
}

impl std::fmt::Display for ModelHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_parse() {
        for hub in ModelHub::ALL {
            let json = serde_json::to_string(&hub).unwrap();
            assert_eq!(json, format!("\"{}\"", hub.as_str()));
            assert_eq!(ModelHub::parse(hub.as_str()), Some(hub));
            let rl = hub.default_rate_limit();
            assert!(rl.per_interval > 0 && rl.interval_secs > 0);
        }
        assert_eq!(ModelHub::parse("bedrockagents"), None);
        assert_eq!(ModelHub::parse("OpenAI"), None);
    }
}
