//! Token usage of one request, as the upstream reported it (or as estimated).

use serde_json::value::RawValue;
use serde_json::Value;

use crate::raw;

/// Tokens of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens served from the provider's cache (a subset of `prompt_tokens`).
    pub cached_prompt_tokens: u64,
    /// Prompt tokens written to the provider's cache (Anthropic), billed above the input price.
    pub cache_write_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// Reads an OpenAI-shaped `usage` object (`prompt_tokens`, `completion_tokens`,
    /// `prompt_tokens_details.cached_tokens`). Bogus values (negative, fractional, huge) are
    /// refused rather than trusted.
    pub fn from_openai(usage: &Value) -> Option<Usage> {
        let obj = usage.as_object()?;
        let num = |v: Option<&Value>| sane(v.and_then(Value::as_u64));
        of_counts(
            num(obj.get("prompt_tokens")).or_else(|| num(obj.get("input_tokens"))),
            num(obj.get("completion_tokens")).or_else(|| num(obj.get("output_tokens"))),
            obj.get("prompt_tokens_details")
                .and_then(|d| num(d.get("cached_tokens"))),
        )
    }

    /// [`Usage::from_openai`] over the `usage` object's JSON text, without building its tree.
    pub fn from_openai_raw(usage: &RawValue) -> Option<Usage> {
        let num = |v: Option<&RawValue>| sane(v.and_then(raw::u64));
        let [prompt, input, completion, output, details] = raw::fields(
            usage.get().as_bytes(),
            [
                "prompt_tokens",
                "input_tokens",
                "completion_tokens",
                "output_tokens",
                "prompt_tokens_details",
            ],
        )?;
        of_counts(
            num(prompt).or_else(|| num(input)),
            num(completion).or_else(|| num(output)),
            details
                .and_then(|d| raw::fields(d.get().as_bytes(), ["cached_tokens"]))
                .and_then(|[c]| num(c)),
        )
    }

    /// The OpenAI-shaped `usage` object.
    pub fn to_openai(&self) -> Value {
        let mut v = serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total(),
        });
        if self.cached_prompt_tokens > 0 {
            v["prompt_tokens_details"] = serde_json::json!({"cached_tokens": self.cached_prompt_tokens});
        }
        v
    }
}

/// A reported count, refused when it is over 100 million (the type already refused negative and
/// fractional ones).
fn sane(n: Option<u64>) -> Option<u64> {
    n.filter(|n| *n <= 100_000_000)
}

/// The usage of a `usage` object's counts (each `None` when absent or bogus): `None` when it
/// gives neither prompt nor completion tokens; cached tokens never exceed the prompt.
fn of_counts(prompt: Option<u64>, completion: Option<u64>, cached: Option<u64>) -> Option<Usage> {
    if prompt.is_none() && completion.is_none() {
        return None;
    }
    let prompt = prompt.unwrap_or(0);
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion.unwrap_or(0),
        cached_prompt_tokens: cached.unwrap_or(0).min(prompt),
        cache_write_tokens: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_openai_usage_and_refuses_bogus_values() {
        let u = Usage::from_openai(&json!({"prompt_tokens":9,"completion_tokens":3,"total_tokens":12,"prompt_tokens_details":{"cached_tokens":4}})).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens),
            (9, 3, 4)
        );
        assert_eq!(Usage::from_openai(&json!({"prompt_tokens":-1})), None);
        assert_eq!(Usage::from_openai(&json!({"prompt_tokens":1.5})), None);
        assert_eq!(Usage::from_openai(&json!({"prompt_tokens":1e12})), None);
        assert_eq!(Usage::from_openai(&json!("x")), None);
        let u = Usage::from_openai(&json!({"prompt_tokens":2,"prompt_tokens_details":{"cached_tokens":99}})).unwrap();
        assert_eq!(u.cached_prompt_tokens, 2, "cached tokens never exceed the prompt");
        assert_eq!(Usage::from_openai(&u.to_openai()), Some(u));
    }

    #[test]
    fn reads_raw_usage_as_it_reads_the_tree() {
        for text in [
            r#"{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}"#,
            r#"{"prompt_tokens":9,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}"#,
            r#"{"input_tokens":5,"output_tokens":6}"#,
            r#"{"prompt_tokens":-1,"input_tokens":5,"completion_tokens":1.5,"output_tokens":2}"#,
            r#"{"prompt_tokens":1e12}"#,
            r#"{"prompt_tokens":100000001,"completion_tokens":100000000}"#,
            r#"{"prompt_tokens":2,"prompt_tokens_details":{"cached_tokens":99}}"#,
            r#"{"prompt_tokens":2,"prompt_tokens_details":[4]}"#,
            r#"{"prompt_tokens":"9","completion_tokens":null}"#,
            r#"{"prompt_tokens":1,"prompt_tokens":7,"prompt_tokens_details":{"cached_tokens":9,"cached_tokens":3}}"#,
            r#"{"total_tokens":12}"#,
            "{}",
            "\"x\"",
            "[1,2]",
            "null",
            "12",
        ] {
            let raw: &RawValue = serde_json::from_str(text).unwrap();
            let tree: Value = serde_json::from_str(text).unwrap();
            assert_eq!(Usage::from_openai_raw(raw), Usage::from_openai(&tree), "{text}");
        }
    }
}
