//! What a client's JSON body tells the gateway, read once per request: the model, whether it
//! streams and asks for a usage chunk, whether embeddings come back as base64, and the token
//! figures that limits reserve ([`Figures::bounds`]) and the meter falls back on
//! ([`Figures::estimated_prompt`]).
//!
//! Two readers give the same answer. [`Head::of_tree`] reads a parsed `serde_json::Value`; it is
//! the reference. [`Head::read`] reads the client's bytes without building that tree: each field
//! the gateway looks at is borrowed as raw JSON text and read in place when it is a string, a
//! number, a boolean or null, and only a field of another shape (multimodal content, tool
//! calls, tool definitions, `stream_options`) is parsed into a small tree of its own for the
//! reference functions. Fields are read as the tree reads them: a field given twice counts
//! once, with its last value; a field of an unexpected type counts as absent. A body that is not
//! a JSON object, or not valid JSON, is declined (`None`), and the caller parses the tree, whose
//! errors carry the line and column. The tests hold the two readers to the same answers over a
//! corpus of ordinary and odd bodies.

use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::hubs::Endpoint;
use crate::raw;

/// What the gateway reads from a request body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Head {
    /// `model`, when it is a string.
    pub model: Option<String>,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage: true`.
    pub include_usage: bool,
    /// `encoding_format: "base64"` (embeddings).
    pub base64: bool,
    pub figures: Figures,
}

/// The token figures of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Figures {
    /// A tight upper bound on the prompt's tokens: the UTF-8 bytes of its text (a
    /// byte-level BPE token covers at least one byte) plus 4 per message and 3 for the reply's
    /// priming; an image counts 1,600 tokens; tool definitions their JSON's bytes.
    pub prompt_bound: u64,
    /// The output tokens per choice the request allows at most, when it says (`Some(0)` for
    /// embeddings, 16 for a completion that names no `max_tokens`).
    pub max_output: Option<u64>,
    /// Choices asked for (`n`, 1 to 128).
    pub n: u64,
    /// A rough prompt token count (text bytes over four plus framing), recorded as estimated
    /// when the upstream reports no usage.
    pub estimated_prompt: u64,
}

impl Figures {
    /// Prompt and output token bounds: output is the request's maximum, else the model's
    /// output cap, else `default_output`, times `n`.
    pub fn bounds(&self, model_cap: Option<u32>, default_output: u64) -> (u64, u64) {
        let out = self.max_output.or(model_cap.map(u64::from)).unwrap_or(default_output);
        (self.prompt_bound, out.saturating_mul(self.n))
    }
}

impl Head {
    /// The reference reader, over a parsed body.
    pub fn of_tree(body: &Value, endpoint: Endpoint) -> Head {
        let n = body.get("n").and_then(Value::as_u64).unwrap_or(1).clamp(1, 128);
        let messages = body.get("messages").and_then(Value::as_array);
        let (text, count) = match messages {
            Some(msgs) => (msgs.iter().map(message_estimate).sum(), msgs.len() as u64),
            None => (
                body.get("input")
                    .or_else(|| body.get("prompt"))
                    .map(estimate_text)
                    .unwrap_or(0),
                0,
            ),
        };
        let (prompt_bound, max_output) = match endpoint {
            Endpoint::Embeddings => (input_bound(body.get("input")) + 1, Some(0)),
            Endpoint::Completions => (
                body.get("prompt").map(bound_text).unwrap_or(0) + 3,
                Some(body.get("max_tokens").and_then(Value::as_u64).unwrap_or(16)),
            ),
            _ => (
                3 + messages.map(|m| m.iter().map(message_bound).sum()).unwrap_or(0)
                    + body.get("tools").map(json_len).unwrap_or(0),
                body.get("max_completion_tokens")
                    .or_else(|| body.get("max_tokens"))
                    .and_then(Value::as_u64),
            ),
        };
        Head {
            model: body.get("model").and_then(Value::as_str).map(str::to_string),
            stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
            include_usage: body
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            base64: body.get("encoding_format").and_then(Value::as_str) == Some("base64"),
            figures: Figures {
                prompt_bound,
                max_output,
                n,
                estimated_prompt: estimate(text, count),
            },
        }
    }

    /// The same answer as [`Head::of_tree`] without building the body's tree; `None` when the
    /// bytes are not a JSON object (or not JSON).
    pub fn read(bytes: &[u8], endpoint: Endpoint) -> Option<Head> {
        let Fields {
            model,
            stream,
            stream_options,
            n,
            max_tokens,
            max_completion_tokens,
            messages,
            tools,
            input,
            prompt,
            encoding_format,
        } = serde_json::from_slice::<Fields>(bytes).ok()?;
        let n = n.and_then(raw::u64).unwrap_or(1).clamp(1, 128);
        let messages = messages.and_then(|m| m.0);
        let (text, count) = match &messages {
            Some(msgs) => {
                let mut text = 0;
                for m in msgs {
                    text += match m.content {
                        Some(c) => Text::of(c)?.estimate,
                        None => 0,
                    };
                }
                (text, msgs.len() as u64)
            }
            None => match input.or(prompt) {
                Some(v) => (Text::of(v)?.estimate, 0),
                None => (0, 0),
            },
        };
        let (prompt_bound, max_output) = match endpoint {
            Endpoint::Embeddings => {
                let bound = match input {
                    Some(v) if v.get().starts_with('[') => input_bound(Some(&tree(v)?)),
                    Some(v) => raw::str(v).map(|s| s.len() as u64).unwrap_or(0),
                    None => 0,
                };
                (bound + 1, Some(0))
            }
            Endpoint::Completions => {
                let bound = match prompt {
                    Some(p) => Text::of(p)?.bound,
                    None => 0,
                };
                (bound + 3, Some(max_tokens.and_then(raw::u64).unwrap_or(16)))
            }
            _ => {
                let mut bound = 3;
                for m in messages.iter().flatten() {
                    bound += 4;
                    if let Some(c) = m.content {
                        bound += Text::of(c)?.bound;
                    }
                    if let Some(name) = m.name.and_then(raw::str) {
                        bound += name.len() as u64;
                    }
                    if let Some(calls) = m.tool_calls.filter(|c| c.get().starts_with('[')) {
                        bound += tool_calls_bound(&tree(calls)?);
                    }
                }
                if let Some(t) = tools {
                    bound += json_len(&tree(t)?);
                }
                (bound, max_completion_tokens.or(max_tokens).and_then(raw::u64))
            }
        };
        let include_usage = match stream_options {
            Some(o) if o.get().starts_with('{') => tree(o)?.get("include_usage").and_then(Value::as_bool) == Some(true),
            _ => false,
        };
        Some(Head {
            model: model.and_then(raw::str).map(std::borrow::Cow::into_owned),
            stream: stream.and_then(raw::bool).unwrap_or(false),
            include_usage,
            base64: encoding_format.and_then(raw::str).as_deref() == Some("base64"),
            figures: Figures {
                prompt_bound,
                max_output,
                n,
                estimated_prompt: estimate(text, count),
            },
        })
    }
}

fn estimate(text_bytes: u64, messages: u64) -> u64 {
    text_bytes.div_ceil(4) + 4 * messages + 3
}

/// Bytes of text for the bound: a string as it is, parts by type, null nothing, anything else
/// its JSON.
fn bound_text(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.len() as u64,
        Value::Array(parts) => parts.iter().map(bound_part).sum(),
        Value::Null => 0,
        other => json_len(other),
    }
}

fn bound_part(p: &Value) -> u64 {
    match p.get("type").and_then(Value::as_str) {
        Some("text") => p.get("text").map(bound_text).unwrap_or(0),
        Some("image_url") | Some("image") => 1_600,
        Some("input_audio") => p
            .pointer("/input_audio/data")
            .and_then(Value::as_str)
            .map(|d| d.len() as u64)
            .unwrap_or(0),
        _ => match p {
            Value::String(s) => s.len() as u64,
            other => json_len(other),
        },
    }
}

/// Bytes of text for the estimate: strings, the strings of arrays, an object's `text` or
/// `content`.
fn estimate_text(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.len() as u64,
        Value::Array(a) => a.iter().map(estimate_text).sum(),
        Value::Object(o) => o
            .get("text")
            .or_else(|| o.get("content"))
            .map(estimate_text)
            .unwrap_or(0),
        _ => 0,
    }
}

fn message_estimate(m: &Value) -> u64 {
    m.get("content").map(estimate_text).unwrap_or(0)
}

fn message_bound(m: &Value) -> u64 {
    let mut bound = 4 + m.get("content").map(bound_text).unwrap_or(0);
    if let Some(name) = m.get("name").and_then(Value::as_str) {
        bound += name.len() as u64;
    }
    if let Some(calls) = m.get("tool_calls") {
        bound += tool_calls_bound(calls);
    }
    bound
}

fn tool_calls_bound(calls: &Value) -> u64 {
    calls
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .map(|c| {
                    c.pointer("/function/name").map(bound_text).unwrap_or(0)
                        + c.pointer("/function/arguments").map(bound_text).unwrap_or(0)
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Embeddings input: a string's bytes, or per item a string's bytes, a token array's length,
/// one for a token.
fn input_bound(input: Option<&Value>) -> u64 {
    match input {
        Some(Value::String(s)) => s.len() as u64,
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.len() as u64,
                Value::Array(ids) => ids.len() as u64,
                Value::Number(_) => 1,
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

fn json_len(v: &Value) -> u64 {
    v.to_string().len() as u64
}

/// A field's raw text as a tree (for the shapes read by the reference functions).
fn tree(raw: &RawValue) -> Option<Value> {
    serde_json::from_str(raw.get()).ok()
}

/// A content value's bytes for the bound and for the estimate.
struct Text {
    bound: u64,
    estimate: u64,
}

impl Text {
    /// `None` only when the raw text does not parse as a tree (it was validated already).
    fn of(raw: &RawValue) -> Option<Text> {
        if let Some(s) = raw::str(raw) {
            let len = s.len() as u64;
            return Some(Text {
                bound: len,
                estimate: len,
            });
        }
        if raw.get() == "null" {
            return Some(Text { bound: 0, estimate: 0 });
        }
        let v = tree(raw)?;
        Some(Text {
            bound: bound_text(&v),
            estimate: estimate_text(&v),
        })
    }
}

/// The top-level fields the gateway reads; the last of a repeated field wins, as in a tree.
#[derive(Default)]
struct Fields<'a> {
    model: Option<&'a RawValue>,
    stream: Option<&'a RawValue>,
    stream_options: Option<&'a RawValue>,
    n: Option<&'a RawValue>,
    max_tokens: Option<&'a RawValue>,
    max_completion_tokens: Option<&'a RawValue>,
    messages: Option<Messages<'a>>,
    tools: Option<&'a RawValue>,
    input: Option<&'a RawValue>,
    prompt: Option<&'a RawValue>,
    encoding_format: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'a>, A::Error> {
                let mut f = Fields::default();
                while let Some(key) = map.next_key::<Key>()? {
                    let slot = match key {
                        Key::Model => &mut f.model,
                        Key::Stream => &mut f.stream,
                        Key::StreamOptions => &mut f.stream_options,
                        Key::N => &mut f.n,
                        Key::MaxTokens => &mut f.max_tokens,
                        Key::MaxCompletionTokens => &mut f.max_completion_tokens,
                        Key::Tools => &mut f.tools,
                        Key::Input => &mut f.input,
                        Key::Prompt => &mut f.prompt,
                        Key::EncodingFormat => &mut f.encoding_format,
                        Key::Messages => {
                            f.messages = Some(map.next_value()?);
                            continue;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(f)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// An object key the readers know (escapes decoded), or `Other`.
enum Key {
    Model,
    Stream,
    StreamOptions,
    N,
    MaxTokens,
    MaxCompletionTokens,
    Messages,
    Tools,
    Input,
    Prompt,
    EncodingFormat,
    Content,
    Name,
    ToolCalls,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(match s {
                    "model" => Key::Model,
                    "stream" => Key::Stream,
                    "stream_options" => Key::StreamOptions,
                    "n" => Key::N,
                    "max_tokens" => Key::MaxTokens,
                    "max_completion_tokens" => Key::MaxCompletionTokens,
                    "messages" => Key::Messages,
                    "tools" => Key::Tools,
                    "input" => Key::Input,
                    "prompt" => Key::Prompt,
                    "encoding_format" => Key::EncodingFormat,
                    "content" => Key::Content,
                    "name" => Key::Name,
                    "tool_calls" => Key::ToolCalls,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// `messages`: `Some` when it is an array (the tree's `as_array`), `None` for any other value.
#[derive(Default)]
struct Messages<'a>(Option<Vec<Message<'a>>>);

/// A message's fields; all `None` for an element that is not an object.
#[derive(Default)]
struct Message<'a> {
    content: Option<&'a RawValue>,
    name: Option<&'a RawValue>,
    tool_calls: Option<&'a RawValue>,
}

/// A visitor's methods for the scalar JSON values (what `deserialize_any` can meet besides an
/// array or an object): each gives `<$ty>::default()`, as the tree's accessors read nothing there.
macro_rules! scalars_give_default {
    ($ty:ty) => {
        fn visit_bool<E>(self, _: bool) -> Result<$ty, E> {
            Ok(<$ty>::default())
        }
        fn visit_i64<E>(self, _: i64) -> Result<$ty, E> {
            Ok(<$ty>::default())
        }
        fn visit_u64<E>(self, _: u64) -> Result<$ty, E> {
            Ok(<$ty>::default())
        }
        fn visit_f64<E>(self, _: f64) -> Result<$ty, E> {
            Ok(<$ty>::default())
        }
        fn visit_str<E>(self, _: &str) -> Result<$ty, E> {
            Ok(<$ty>::default())
        }
        fn visit_unit<E>(self) -> Result<$ty, E> {
            Ok(<$ty>::default())
        }
    };
}

impl<'de: 'a, 'a> Deserialize<'de> for Messages<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Messages<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Messages<'a>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(4));
                while let Some(m) = seq.next_element()? {
                    out.push(m);
                }
                Ok(Messages(Some(out)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Messages<'a>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Messages(None))
            }
            scalars_give_default!(Messages<'a>);
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Message<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Message<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message<'a>, A::Error> {
                let mut m = Message::default();
                while let Some(key) = map.next_key::<Key>()? {
                    let slot = match key {
                        Key::Content => &mut m.content,
                        Key::Name => &mut m.name,
                        Key::ToolCalls => &mut m.tool_calls,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(m)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Message<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Message::default())
            }
            scalars_give_default!(Message<'a>);
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ENDPOINTS: [Endpoint; 4] = [
        Endpoint::Chat,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Passthrough,
    ];

    /// Both readers over one body, for every endpoint; the borrowed one must not decline.
    fn same(body: &str) -> Head {
        let tree: Value = serde_json::from_str(body).expect("the corpus is valid JSON");
        for endpoint in ENDPOINTS {
            let read = Head::read(body.as_bytes(), endpoint);
            assert_eq!(
                read.as_ref(),
                Some(&Head::of_tree(&tree, endpoint)),
                "{endpoint:?}: {body}"
            );
        }
        Head::of_tree(&tree, Endpoint::Chat)
    }

    #[test]
    fn the_bench_body_reads_the_same_both_ways() {
        let head = same(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}],"max_tokens":16}"#);
        assert_eq!(head.model.as_deref(), Some("gpt-4o-mini"));
        assert!(!head.stream && !head.include_usage && !head.base64);
        assert_eq!(
            head.figures,
            Figures {
                prompt_bound: 3 + 4 + 6,
                max_output: Some(16),
                n: 1,
                estimated_prompt: 2 + 4 + 3,
            }
        );
        assert_eq!(head.figures.bounds(Some(4096), 1000), (13, 16));
    }

    #[test]
    fn ordinary_bodies_read_the_same_both_ways() {
        for body in [
            r#"{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi","name":"ann"}],"stream":true,"stream_options":{"include_usage":true},"n":3,"max_completion_tokens":100,"max_tokens":5}"#,
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"https://x/y.png"}},{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]}"#,
            r#"{"model":"gpt-4o","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]},{"role":"tool","tool_call_id":"c1","content":"12C"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]}"#,
            r#"{"model":"text-embedding-3-small","input":"The food was delicious","encoding_format":"base64"}"#,
            r#"{"model":"text-embedding-3-small","input":["one","two",[1,2,3],7,null,{"x":1}],"encoding_format":"float"}"#,
            r#"{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","max_tokens":7,"n":2}"#,
            r#"{"model":"gpt-3.5-turbo-instruct","prompt":["a","bb",{"type":"text","text":"ccc"}]}"#,
            r#"{"model":"m","prompt":"p","input":"i"}"#,
            r#"{"model":"m"}"#,
            "{}",
            " {\n  \"model\" : \"gpt-4o\" ,\n  \"messages\" : [ { \"role\" : \"user\" , \"content\" : \"spaced\" } ] ,\n  \"max_tokens\" : 16 \n} \n",
        ] {
            same(body);
        }
    }

    #[test]
    fn odd_bodies_read_the_same_both_ways() {
        for body in [
            // Escapes, in values and in keys; text bytes count after decoding.
            r#"{"model":"gpt\u002d4o","messages":[{"role":"user","content":"line\nbreak \"quoted\" \u00e9 \ud83d\ude00"}],"max_t\u006fkens":3}"#,
            r#"{"model":"gpt-4o","messages":[{"content":"héllo wörld ✓"}]}"#,
            // Repeated fields: the last one counts.
            r#"{"model":"a","model":"b","messages":[{"content":"x"}],"messages":[{"content":"yyyy","content":"zz"}],"stream":true,"stream":false}"#,
            // Types the readers do not expect count as absent (or, for text, as their JSON).
            r#"{"model":7,"stream":"true","n":2.0,"max_tokens":"16","messages":[{"content":42},{"content":true},{"content":{"text":"obj"}},"just a string",[1,2],null,7]}"#,
            r#"{"model":null,"stream":null,"n":null,"max_completion_tokens":null,"max_tokens":9,"stream_options":null,"tools":null,"encoding_format":null}"#,
            r#"{"n":-1,"max_tokens":-5,"max_completion_tokens":1e3}"#,
            r#"{"n":0,"max_tokens":0}"#,
            r#"{"n":1000,"max_tokens":18446744073709551615}"#,
            r#"{"n":-0,"max_tokens":18446744073709551616}"#,
            r#"{"messages":{"role":"user","content":"an object, not a list"},"input":"fallback text"}"#,
            r#"{"messages":"a string","prompt":"the prompt"}"#,
            r#"{"messages":null,"input":null,"prompt":"unused: input is present"}"#,
            r#"{"messages":[],"tools":[]}"#,
            r#"{"stream":true,"stream_options":{"include_usage":"yes"}}"#,
            r#"{"stream":true,"stream_options":{"include_usage":false,"include_usage":true}}"#,
            r#"{"stream":true,"stream_options":[true]}"#,
            r#"{"messages":[{"role":"assistant","tool_calls":{"not":"a list"}},{"tool_calls":[{"function":{"name":5,"arguments":{"a":1}}},"odd"]}]}"#,
            r#"{"messages":[{"content":[{"type":"text","text":["nested","text"]},{"type":"image"},{"type":"other","x":1},"bare",3]}]}"#,
            r#"{"input":[],"prompt":[]}"#,
            r#"{"input":{"text":"object input"}}"#,
            r#"{"input":12,"prompt":false}"#,
            r#"{"encoding_format":"base64","encoding_format":"float"}"#,
            r#"{"unknown":{"deep":[1,[2,[3,{"model":"not this one"}]]]},"model":"this one"}"#,
        ] {
            same(body);
        }
    }

    /// Any JSON value, its object keys mostly the ones the readers know.
    fn any_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("model"),
            Just("stream"),
            Just("stream_options"),
            Just("include_usage"),
            Just("n"),
            Just("max_tokens"),
            Just("max_completion_tokens"),
            Just("messages"),
            Just("content"),
            Just("name"),
            Just("tool_calls"),
            Just("function"),
            Just("arguments"),
            Just("tools"),
            Just("input"),
            Just("prompt"),
            Just("encoding_format"),
            Just("type"),
            Just("text"),
            Just("input_audio"),
            Just("data"),
            Just("other"),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (0u64..300).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            prop_oneof![
                Just("base64"),
                Just("text"),
                Just("image_url"),
                Just("input_audio"),
                Just("gpt-4o-mini"),
            ]
            .prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(key.clone().prop_map(String::from), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_object_reads_the_same_both_ways(
            fields in proptest::collection::btree_map("[a-z_]{1,22}|model|messages|stream|stream_options|n|max_tokens|max_completion_tokens|tools|input|prompt|encoding_format", any_value(), 0..8),
            pretty in any::<bool>(),
        ) {
            let body = Value::Object(fields.into_iter().collect());
            let text = if pretty { serde_json::to_string_pretty(&body) } else { serde_json::to_string(&body) }.unwrap();
            // The tree the gateway would build is the text's (a float need not survive the trip).
            let tree: Value = serde_json::from_str(&text).unwrap();
            for endpoint in ENDPOINTS {
                prop_assert_eq!(Head::read(text.as_bytes(), endpoint), Some(Head::of_tree(&tree, endpoint)), "{}", text);
            }
        }
    }

    #[test]
    fn values_it_does_not_read_are_checked_for_syntax_only() {
        // A strict parser refuses these for what is inside a value the gateway does not read;
        // the borrowed read checks their syntax and leaves the rest to the hub (docs/gateway.md).
        let deep = format!(r#"{{"model":"m","x":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        for body in [
            deep.as_str(),
            r#"{"model":"m","x":"\ud800"}"#,
            r#"{"model":"m","x":1e400}"#,
        ] {
            assert!(serde_json::from_str::<Value>(body).is_err(), "{body}");
            let head = Head::read(body.as_bytes(), Endpoint::Chat).expect(body);
            assert_eq!(head.model.as_deref(), Some("m"));
        }
        // Where a reader needs such a value decoded (message text, tool definitions), the body
        // goes through the tree and its error instead.
        for body in [r#"{"messages":[{"content":"\udc00"}]}"#, r#"{"tools":[1e400]}"#] {
            assert!(serde_json::from_str::<Value>(body).is_err(), "{body}");
            assert_eq!(Head::read(body.as_bytes(), Endpoint::Chat), None, "{body}");
        }
    }

    #[test]
    fn what_is_not_a_json_object_is_declined() {
        for body in [
            "[1,2]",
            "\"text\"",
            "42",
            "null",
            "",
            "{",
            "{\"model\":}",
            "{} x",
            "{\"a\":1,}",
            "not json",
        ] {
            for endpoint in ENDPOINTS {
                assert_eq!(Head::read(body.as_bytes(), endpoint), None, "{body}");
            }
        }
    }

    #[test]
    fn bounds_take_the_request_maximum_then_the_model_cap_then_the_default() {
        let f = |body: &str| Head::read(body.as_bytes(), Endpoint::Chat).unwrap().figures;
        assert_eq!(f(r#"{"max_tokens":50,"n":2}"#).bounds(Some(4096), 1000), (3, 100));
        assert_eq!(f(r#"{"n":2}"#).bounds(Some(4096), 1000), (3, 8192));
        assert_eq!(f("{}").bounds(None, 1000), (3, 1000));
        assert_eq!(
            f(r#"{"max_tokens":18446744073709551615,"n":3}"#).bounds(None, 1).1,
            u64::MAX
        );
        let e = Head::read(br#"{"input":"abc"}"#, Endpoint::Embeddings).unwrap().figures;
        assert_eq!(e.bounds(Some(4096), 1000), (4, 0));
    }
}
