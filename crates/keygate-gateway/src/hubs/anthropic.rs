//! Anthropic Messages API adapter: pure translations between OpenAI chat completions and
//! Anthropic's `POST /v1/messages` (headers `x-api-key` and `anthropic-version`), with no I/O.
//!
//! * [`chat_to_messages`]: an OpenAI chat request body -> an Anthropic Messages request body.
//! * [`messages_to_chat`]: an Anthropic Messages response -> an OpenAI `chat.completion` and
//!   the usage figures to meter.
//! * [`error_to_openai`]: an Anthropic error body -> an OpenAI-shaped error body.
//! * [`StreamTranslator`]: Anthropic SSE events -> OpenAI `chat.completion.chunk` SSE frames.
//!
//! Errors ([`TranslateError`]) name the field that is wrong (`messages[3].content[1]`) but
//! never carry message text, tool arguments, URLs or other content from the request.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::sse::SseEvent;
use crate::Usage;

/// A request or response that cannot be translated. The message names the offending field,
/// never its content.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("{0}")]
    Invalid(String),
}

/// The `anthropic-version` header value the translations are written against.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Token figures above this are bogus (as in [`Usage::from_openai`]) and ignored.
const MAX_TOKEN_FIGURE: u64 = 100_000_000;
/// Longest upstream error message passed on to the client, in bytes.
const MAX_ERROR_MESSAGE: usize = 2048;

fn invalid(msg: impl Into<String>) -> TranslateError {
    TranslateError::Invalid(msg.into())
}

// ---------------------------------------------------------------------------------------------
// Request: OpenAI chat completion -> Anthropic Messages
// ---------------------------------------------------------------------------------------------

/// OpenAI chat request JSON -> Anthropic Messages request JSON. `model` is the upstream model id
/// to put in the body. `default_max_tokens` is used when the request has neither `max_tokens`
/// nor `max_completion_tokens` (Anthropic requires `max_tokens`).
///
/// Field by field:
/// * `messages`: `system` and `developer` messages become the top-level `system` (a string,
///   several joined with `"\n\n"`; an array of text blocks instead when a part carries
///   `cache_control`, so prompt caching survives). `user`/`assistant` contents (strings or
///   parts: `text`, `image_url`, `file` with a PDF data URL) become content blocks; assistant
///   `tool_calls` become `tool_use` blocks; `tool` messages become user `tool_result` blocks.
///   Consecutive messages of one role are merged (Anthropic requires alternation), and in a
///   user turn the `tool_result` blocks are put first (Anthropic requires that). Empty text
///   parts are dropped (Anthropic refuses empty text blocks); a message left with no content
///   is dropped. The per-message `name` field is dropped (Anthropic has none).
/// * `max_completion_tokens`, else `max_tokens`, else `default_max_tokens` -> `max_tokens`.
/// * `temperature` (clamped to Anthropic's 0..=1), `top_p`, `stream` -> same names;
///   `stop` (string or array) -> `stop_sequences`; `user` -> `metadata.user_id`.
/// * `tools` (function tools) -> `{name, description, input_schema}`; `tool_choice` `auto` /
///   `none` / `required` / `{function:{name}}` -> `auto` / `none` / `any` / `tool`;
///   `parallel_tool_calls: false` -> `disable_parallel_tool_use: true`.
/// * `top_k` and `thinking` (Anthropic's own, sent through the SDK's `extra_body`) pass through.
/// * `n` other than 1 and `response_format` `json_schema` are refused: Anthropic cannot honour them.
/// * Dropped, as Anthropic has no equivalent (an unknown field would make it answer 400):
///   `stream_options` (Anthropic always reports usage in streams), `logprobs`, `top_logprobs`,
///   `frequency_penalty`, `presence_penalty`, `logit_bias`, `seed`, `response_format` `text` and
///   `json_object` (the prompt still asks for JSON), `metadata` (OpenAI's is for stored
///   completions), `store`, `service_tier`, `prediction`, `modalities`, `audio`,
///   `reasoning_effort`, `web_search_options`, and every other field not named above.
pub fn chat_to_messages(req: &Value, model: &str, default_max_tokens: u32) -> Result<Value, TranslateError> {
    let obj = req
        .as_object()
        .ok_or_else(|| invalid("the request body must be a JSON object"))?;
    let present = |k: &str| obj.get(k).filter(|v| !v.is_null());

    if let Some(n) = present("n") {
        match n.as_u64() {
            Some(1) => {}
            Some(0) | None => return Err(invalid("n must be a positive integer")),
            Some(_) => return Err(invalid("n > 1 is not supported by Anthropic models")),
        }
    }
    if present("functions").is_some() || present("function_call").is_some() {
        return Err(invalid(
            "the deprecated functions/function_call parameters are not supported for Anthropic models; use tools",
        ));
    }
    if let Some(rf) = present("response_format") {
        match rf.get("type").and_then(Value::as_str) {
            Some("text") | Some("json_object") => {}
            Some("json_schema") => {
                return Err(invalid(
                    "response_format json_schema is not supported for Anthropic models",
                ))
            }
            _ => return Err(invalid("response_format has an unsupported type")),
        }
    }

    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages must be an array"))?;
    let (system, turns) = convert_messages(messages)?;

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));
    out.insert("messages".into(), Value::Array(turns));
    if let Some(system) = system {
        out.insert("system".into(), system);
    }

    let max_tokens = match present("max_completion_tokens").or_else(|| present("max_tokens")) {
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n,
            _ => return Err(invalid("max_tokens/max_completion_tokens must be a positive integer")),
        },
        None => u64::from(default_max_tokens),
    };
    out.insert("max_tokens".into(), Value::from(max_tokens));

    if let Some(t) = present("temperature") {
        let x = t.as_f64().ok_or_else(|| invalid("temperature must be a number"))?;
        if x < 0.0 {
            return Err(invalid("temperature must not be negative"));
        }
        // OpenAI accepts 0..=2, Anthropic 0..=1: clamp rather than have the upstream refuse.
        let t = if x > 1.0 { Value::from(1.0) } else { t.clone() };
        out.insert("temperature".into(), t);
    }
    if let Some(p) = present("top_p") {
        if !p.is_number() {
            return Err(invalid("top_p must be a number"));
        }
        out.insert("top_p".into(), p.clone());
    }
    if let Some(stop) = present("stop") {
        let seqs: Vec<Value> = match stop {
            Value::String(s) => vec![Value::String(s.clone())],
            Value::Array(a) => {
                if a.iter().any(|s| !s.is_string()) {
                    return Err(invalid("stop must be a string or an array of strings"));
                }
                a.clone()
            }
            _ => return Err(invalid("stop must be a string or an array of strings")),
        };
        if !seqs.is_empty() {
            out.insert("stop_sequences".into(), Value::Array(seqs));
        }
    }
    if let Some(s) = present("stream") {
        let s = s.as_bool().ok_or_else(|| invalid("stream must be a boolean"))?;
        out.insert("stream".into(), Value::Bool(s));
    }

    let tools = match present("tools") {
        Some(t) => convert_tools(t)?,
        None => Vec::new(),
    };
    if !tools.is_empty() {
        let mut choice = match present("tool_choice") {
            Some(tc) => Some(convert_tool_choice(tc)?),
            None => None,
        };
        if present("parallel_tool_calls").and_then(Value::as_bool) == Some(false) {
            let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if c.get("type").and_then(Value::as_str) != Some("none") {
                c["disable_parallel_tool_use"] = Value::Bool(true);
            }
        }
        out.insert("tools".into(), Value::Array(tools));
        if let Some(c) = choice {
            out.insert("tool_choice".into(), c);
        }
    }
    // A tool_choice without tools is dropped: Anthropic refuses it and it means nothing.

    if let Some(user) = present("user") {
        let user = user.as_str().ok_or_else(|| invalid("user must be a string"))?;
        if !user.is_empty() {
            out.insert("metadata".into(), json!({ "user_id": user }));
        }
    }
    for passthrough in ["top_k", "thinking"] {
        if let Some(v) = present(passthrough) {
            out.insert(passthrough.into(), v.clone());
        }
    }
    Ok(Value::Object(out))
}

/// One Anthropic turn being assembled.
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

fn push_turn(turns: &mut Vec<Turn>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => last.blocks.extend(blocks),
        _ => turns.push(Turn { role, blocks }),
    }
}

fn is_block_type(block: &Value, ty: &str) -> bool {
    block.get("type").and_then(Value::as_str) == Some(ty)
}

/// Splits OpenAI messages into the Anthropic `system` value and the alternating turns.
fn convert_messages(messages: &[Value]) -> Result<(Option<Value>, Vec<Value>), TranslateError> {
    // (text, cache_control) of every system part, in order, and where each message ends.
    let mut system_msgs: Vec<Vec<(String, Option<Value>)>> = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();

    for (i, m) in messages.iter().enumerate() {
        let m = m
            .as_object()
            .ok_or_else(|| invalid(format!("messages[{i}] must be an object")))?;
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("messages[{i}].role must be a string")))?;
        let content = m.get("content").filter(|c| !c.is_null());
        match role {
            "system" | "developer" => {
                let parts = system_parts(content, i)?;
                if !parts.is_empty() {
                    system_msgs.push(parts);
                }
            }
            "user" => {
                let blocks = content_blocks(content, &format!("messages[{i}].content"))?;
                push_turn(&mut turns, "user", blocks);
            }
            "assistant" => {
                let mut blocks = content_blocks(content, &format!("messages[{i}].content"))?;
                if let Some(calls) = m.get("tool_calls").filter(|c| !c.is_null()) {
                    let calls = calls
                        .as_array()
                        .ok_or_else(|| invalid(format!("messages[{i}].tool_calls must be an array")))?;
                    for (j, call) in calls.iter().enumerate() {
                        blocks.push(tool_use_block(call, i, j)?);
                    }
                }
                push_turn(&mut turns, "assistant", blocks);
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| invalid(format!("messages[{i}].tool_call_id must be a string")))?;
                let mut block = json!({"type": "tool_result", "tool_use_id": id});
                match content {
                    None => {}
                    Some(Value::String(s)) if s.is_empty() => {}
                    Some(Value::String(s)) => block["content"] = Value::String(s.clone()),
                    Some(c) => {
                        let inner = content_blocks(Some(c), &format!("messages[{i}].content"))?;
                        if !inner.is_empty() {
                            block["content"] = Value::Array(inner);
                        }
                    }
                }
                push_turn(&mut turns, "user", vec![block]);
            }
            _ => {
                return Err(invalid(format!(
                    "messages[{i}].role must be system, developer, user, assistant or tool"
                )))
            }
        }
    }

    if turns.is_empty() {
        return Err(invalid(
            "messages must contain at least one user or assistant message with content",
        ));
    }

    let system = if system_msgs.is_empty() {
        None
    } else if system_msgs.iter().flatten().any(|(_, cc)| cc.is_some()) {
        // Keep the blocks (and their cache breakpoints); a blank line between messages.
        let mut blocks = Vec::new();
        let count = system_msgs.len();
        for (k, parts) in system_msgs.into_iter().enumerate() {
            let last_part = parts.len().saturating_sub(1);
            for (p, (mut text, cc)) in parts.into_iter().enumerate() {
                if k + 1 < count && p == last_part {
                    text.push_str("\n\n");
                }
                let mut b = json!({"type": "text", "text": text});
                if let Some(cc) = cc {
                    b["cache_control"] = cc;
                }
                blocks.push(b);
            }
        }
        Some(Value::Array(blocks))
    } else {
        let joined: Vec<String> = system_msgs
            .into_iter()
            .map(|parts| parts.into_iter().map(|(t, _)| t).collect::<Vec<_>>().join("\n"))
            .collect();
        Some(Value::String(joined.join("\n\n")))
    };

    let turns = turns
        .into_iter()
        .map(|mut t| {
            if t.role == "user" {
                // Stable: tool results first, everything else after, each in its order.
                t.blocks.sort_by_key(|b| !is_block_type(b, "tool_result"));
            }
            let content = match t.blocks.as_slice() {
                [only] if is_block_type(only, "text") && only.as_object().map(Map::len) == Some(2) => {
                    only.get("text").cloned().unwrap_or(Value::Null)
                }
                _ => Value::Array(t.blocks),
            };
            json!({"role": t.role, "content": content})
        })
        .collect();
    Ok((system, turns))
}

/// The text parts of a system/developer message, each with its `cache_control` if any.
fn system_parts(content: Option<&Value>, i: usize) -> Result<Vec<(String, Option<Value>)>, TranslateError> {
    match content {
        None => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![(s.clone(), None)]),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                let text = match part {
                    Value::String(s) => s.as_str(),
                    _ if is_block_type(part, "text") => part
                        .get("text")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(format!("messages[{i}].content[{j}].text must be a string")))?,
                    _ => {
                        return Err(invalid(format!(
                            "messages[{i}].content[{j}]: a system message may only hold text"
                        )))
                    }
                };
                if !text.is_empty() {
                    let cc = part.get("cache_control").filter(|c| !c.is_null()).cloned();
                    out.push((text.to_owned(), cc));
                }
            }
            Ok(out)
        }
        Some(_) => Err(invalid(format!("messages[{i}].content must be a string or an array"))),
    }
}

/// OpenAI message content (string or parts) -> Anthropic content blocks. `at` names the
/// field in error messages.
fn content_blocks(content: Option<&Value>, at: &str) -> Result<Vec<Value>, TranslateError> {
    match content {
        None => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                if let Some(b) = content_part(part, &format!("{at}[{j}]"))? {
                    out.push(b);
                }
            }
            Ok(out)
        }
        Some(_) => Err(invalid(format!("{at} must be a string or an array"))),
    }
}

/// One OpenAI content part -> one Anthropic block (`None` for an empty text part).
fn content_part(part: &Value, at: &str) -> Result<Option<Value>, TranslateError> {
    let ty = part
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{at}.type must be a string")))?;
    let mut block = match ty {
        "text" | "refusal" => {
            let text = part
                .get(ty)
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{at}.{ty} must be a string")))?;
            if text.is_empty() {
                return Ok(None);
            }
            json!({"type": "text", "text": text})
        }
        "image_url" => {
            let url = match part.get("image_url") {
                Some(Value::String(u)) => Some(u.as_str()),
                Some(o) => o.get("url").and_then(Value::as_str),
                None => None,
            }
            .ok_or_else(|| invalid(format!("{at}.image_url.url must be a string")))?;
            json!({"type": "image", "source": media_source(url, at, "image_url.url")?})
        }
        "file" => {
            let file = part.get("file");
            if file.and_then(|f| f.get("file_id")).is_some() {
                return Err(invalid(format!(
                    "{at}: file ids are not supported for Anthropic models; send file_data"
                )));
            }
            let data = file
                .and_then(|f| f.get("file_data"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{at}.file.file_data must be a string")))?;
            let source = media_source(data, at, "file.file_data")?;
            if source.get("type").and_then(Value::as_str) != Some("base64")
                || source.get("media_type").and_then(Value::as_str) != Some("application/pdf")
            {
                return Err(invalid(format!(
                    "{at}.file.file_data must be a base64 data URL of a PDF"
                )));
            }
            json!({"type": "document", "source": source})
        }
        "input_audio" => {
            return Err(invalid(format!(
                "{at}: audio input is not supported by Anthropic models"
            )))
        }
        _ => return Err(invalid(format!("{at} has an unsupported content part type"))),
    };
    if let Some(cc) = part.get("cache_control").filter(|c| !c.is_null()) {
        block["cache_control"] = cc.clone();
    }
    Ok(Some(block))
}

/// A URL (http(s) or `data:<media type>;base64,<data>`) -> an Anthropic `source` object.
fn media_source(url: &str, at: &str, field: &str) -> Result<Value, TranslateError> {
    let lower_prefix: String = url.chars().take(8).flat_map(char::to_lowercase).collect();
    if lower_prefix.starts_with("data:") {
        let rest = url.get(5..).unwrap_or("");
        let (header, data) = rest
            .split_once(',')
            .ok_or_else(|| invalid(format!("{at}.{field} is a malformed data URL")))?;
        let mut params = header.split(';');
        let media_type = params.next().unwrap_or("").trim();
        let base64 = params.any(|p| p.trim().eq_ignore_ascii_case("base64"));
        if media_type.is_empty() || !base64 {
            return Err(invalid(format!(
                "{at}.{field} must be a base64 data URL with a media type"
            )));
        }
        Ok(json!({
            "type": "base64",
            "media_type": media_type.to_ascii_lowercase(),
            "data": data,
        }))
    } else if lower_prefix.starts_with("https://") || lower_prefix.starts_with("http://") {
        Ok(json!({"type": "url", "url": url}))
    } else {
        Err(invalid(format!(
            "{at}.{field} must be an http(s) URL or a base64 data URL"
        )))
    }
}

/// An assistant `tool_calls[j]` entry -> an Anthropic `tool_use` block.
fn tool_use_block(call: &Value, i: usize, j: usize) -> Result<Value, TranslateError> {
    let at = format!("messages[{i}].tool_calls[{j}]");
    if let Some(ty) = call.get("type").filter(|t| !t.is_null()) {
        if ty.as_str() != Some("function") {
            return Err(invalid(format!("{at}.type must be function")));
        }
    }
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(format!("{at}.id must be a string")))?;
    let function = call.get("function");
    let name = function
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(format!("{at}.function.name must be a string")))?;
    let input = match function.and_then(|f| f.get("arguments")) {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s)
            .map_err(|_| invalid(format!("{at}.function.arguments is not valid JSON")))?,
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => return Err(invalid(format!("{at}.function.arguments must be a JSON string"))),
    };
    if !input.is_object() {
        return Err(invalid(format!("{at}.function.arguments must encode a JSON object")));
    }
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

/// OpenAI `tools` -> Anthropic `tools`.
fn convert_tools(tools: &Value) -> Result<Vec<Value>, TranslateError> {
    let tools = tools.as_array().ok_or_else(|| invalid("tools must be an array"))?;
    let mut out = Vec::with_capacity(tools.len());
    for (j, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(invalid(format!(
                "tools[{j}]: only function tools are supported for Anthropic models"
            )));
        }
        let f = tool
            .get("function")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid(format!("tools[{j}].function must be an object")))?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid(format!("tools[{j}].function.name must be a string")))?;
        let mut schema = match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => return Err(invalid(format!("tools[{j}].function.parameters must be an object"))),
        };
        if let Some(s) = schema.as_object_mut() {
            s.entry("type").or_insert_with(|| Value::from("object"));
        }
        let mut t = json!({"name": name, "input_schema": schema});
        match f.get("description") {
            None | Some(Value::Null) => {}
            Some(Value::String(d)) => t["description"] = Value::String(d.clone()),
            Some(_) => return Err(invalid(format!("tools[{j}].function.description must be a string"))),
        }
        if let Some(cc) = tool.get("cache_control").filter(|c| !c.is_null()) {
            t["cache_control"] = cc.clone();
        }
        out.push(t);
    }
    Ok(out)
}

/// OpenAI `tool_choice` -> Anthropic `tool_choice`.
fn convert_tool_choice(tc: &Value) -> Result<Value, TranslateError> {
    match tc {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "none" => Ok(json!({"type": "none"})),
            "required" => Ok(json!({"type": "any"})),
            _ => Err(invalid("tool_choice must be auto, none, required or a function")),
        },
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| invalid("tool_choice.function.name must be a string"))?;
            Ok(json!({"type": "tool", "name": name}))
        }
        _ => Err(invalid("tool_choice must be auto, none, required or a function")),
    }
}

// ---------------------------------------------------------------------------------------------
// Response: Anthropic Messages -> OpenAI chat completion
// ---------------------------------------------------------------------------------------------

/// Anthropic's usage fields, each as reported (bogus values ignored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct AnthropicUsage {
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_write: Option<u64>,
}

impl AnthropicUsage {
    /// Overwrites the figures present in an Anthropic `usage` object (later reports are
    /// cumulative, so the newest wins).
    fn update(&mut self, usage: Option<&Value>) {
        let Some(u) = usage.and_then(Value::as_object) else {
            return;
        };
        let num = |k: &str| u.get(k).and_then(Value::as_u64).filter(|n| *n <= MAX_TOKEN_FIGURE);
        if let Some(n) = num("input_tokens") {
            self.input = Some(n);
        }
        if let Some(n) = num("output_tokens") {
            self.output = Some(n);
        }
        if let Some(n) = num("cache_read_input_tokens") {
            self.cache_read = Some(n);
        }
        if let Some(n) = num("cache_creation_input_tokens") {
            self.cache_write = Some(n);
        }
    }

    fn seen(&self) -> bool {
        self.input.is_some() || self.output.is_some() || self.cache_read.is_some() || self.cache_write.is_some()
    }

    /// OpenAI counts every prompt token, cached or not; Anthropic's `input_tokens` excludes
    /// the cache reads and writes.
    fn to_usage(self) -> Usage {
        let read = self.cache_read.unwrap_or(0);
        let write = self.cache_write.unwrap_or(0);
        Usage {
            prompt_tokens: self.input.unwrap_or(0).saturating_add(read).saturating_add(write),
            completion_tokens: self.output.unwrap_or(0),
            cached_prompt_tokens: read,
            cache_write_tokens: write,
        }
    }
}

/// Anthropic `stop_reason` -> OpenAI `finish_reason`.
fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything new.
        _ => "stop",
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(0)
}

/// Anthropic Messages response JSON -> (OpenAI chat.completion JSON, Usage). `model` is echoed
/// as the response model (the name the client asked for).
///
/// Text blocks are joined into `message.content` (`null` when the answer is only tool calls);
/// `tool_use` blocks become `message.tool_calls`; other blocks (`thinking`,
/// `redacted_thinking`, server-tool blocks) have no chat-completions equivalent and are left
/// out. `created` is the current time.
pub fn messages_to_chat(resp: &Value, model: &str) -> Result<(Value, Usage), TranslateError> {
    let obj = resp
        .as_object()
        .ok_or_else(|| invalid("the upstream response is not a JSON object"))?;
    if obj.get("type").and_then(Value::as_str) == Some("error") {
        return Err(invalid("the upstream response is an error object"));
    }
    let content = obj
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("the upstream response has no content array"))?;

    let mut text = String::new();
    let mut has_text = false;
    let mut tool_calls = Vec::new();
    for (k, block) in content.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(t) = block.get("text").and_then(Value::as_str) {
                    text.push_str(t);
                    has_text = true;
                }
            }
            Some("tool_use") => {
                let id = block
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("upstream content[{k}].id is not a string")))?;
                let name = block
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("upstream content[{k}].name is not a string")))?;
                let arguments = match block.get("input") {
                    None | Some(Value::Null) => "{}".to_owned(),
                    Some(input) => serde_json::to_string(input)
                        .map_err(|_| invalid(format!("upstream content[{k}].input cannot be encoded")))?,
                };
                tool_calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }));
            }
            _ => {}
        }
    }

    let mut au = AnthropicUsage::default();
    au.update(obj.get("usage"));
    let usage = au.to_usage();

    let finish = obj
        .get("stop_reason")
        .and_then(Value::as_str)
        .map_or("stop", finish_reason);
    let mut message = json!({
        "role": "assistant",
        "content": if has_text || tool_calls.is_empty() { Value::String(text) } else { Value::Null },
        "refusal": null,
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let id = obj.get("id").and_then(Value::as_str).unwrap_or("anthropic");
    let chat = json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": now_unix(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": usage.to_openai(),
    });
    Ok((chat, usage))
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Anthropic error JSON (`{"type":"error","error":{"type","message"}}`) -> OpenAI error JSON
/// `{"error":{"message","type","param","code"}}`.
///
/// `type` is the OpenAI family (`invalid_request_error`, `authentication_error`,
/// `permission_error`, `not_found_error`, `rate_limit_error`, `server_error`, else
/// `upstream_error`); `code` is Anthropic's own error type (e.g. `overloaded_error`), or
/// `upstream_error` when the body has none. The message is passed on (capped at 2 KiB); a body
/// of another shape gets a generic message.
pub fn error_to_openai(body: &Value) -> Value {
    let err = body.get("error");
    let upstream_type = err
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .filter(|t| is_identifier(t));
    let message = match err {
        Some(Value::String(s)) => Some(s.as_str()),
        Some(e) => e.get("message").and_then(Value::as_str),
        None => None,
    }
    .filter(|m| !m.is_empty())
    .map_or("the upstream model hub returned an error", |m| {
        truncate_utf8(m, MAX_ERROR_MESSAGE)
    });
    let openai_type = match upstream_type {
        Some("invalid_request_error") | Some("request_too_large") => "invalid_request_error",
        Some("authentication_error") => "authentication_error",
        Some("permission_error") | Some("billing_error") => "permission_error",
        Some("not_found_error") => "not_found_error",
        Some("rate_limit_error") => "rate_limit_error",
        Some("api_error") | Some("overloaded_error") | Some("timeout_error") => "server_error",
        _ => "upstream_error",
    };
    json!({"error": {
        "message": message,
        "type": openai_type,
        "param": null,
        "code": upstream_type.unwrap_or("upstream_error"),
    }})
}

// ---------------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Value>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// Appends `data: <json>\n\n`; on the (impossible) failure to encode, appends nothing.
fn write_frame(out: &mut Vec<u8>, value: &impl Serialize) {
    let start = out.len();
    out.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.truncate(start);
        return;
    }
    out.extend_from_slice(b"\n\n");
}

/// Streaming translator: fed Anthropic SSE events, emits OpenAI `chat.completion.chunk` SSE
/// frames.
///
/// * `message_start` -> the first frame, `delta: {role: "assistant", content: ""}` (also sent
///   before any other frame if `message_start` never came).
/// * `text_delta` -> `delta.content`; a `tool_use` block start -> `delta.tool_calls[0]` with
///   the tool's position among the message's tool calls as `index`, its `id`, `type` and
///   `function.name` (arguments `""`); each `input_json_delta` -> an arguments fragment.
/// * `message_delta` with a `stop_reason` -> a frame with `delta: {}` and the
///   `finish_reason` (once).
/// * `error` -> `data: {"error":{...}}` (see [`error_to_openai`]); everything after it is
///   ignored and no usage frame follows it.
/// * `ping`, `content_block_stop`, `message_stop`, thinking/signature/citation deltas,
///   unknown events and undecodable data are ignored.
///
/// If the upstream ends without a `message_delta` stop reason, no `finish_reason` frame is
/// made up: the caller decides what a cut-off stream means.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    id: String,
    created: i64,
    include_usage: bool,
    started: bool,
    finish_sent: bool,
    errored: bool,
    done: bool,
    /// (Anthropic content block index, OpenAI tool call index) of each tool_use block.
    tools: Vec<(u64, u32)>,
    usage: AnthropicUsage,
}

impl StreamTranslator {
    /// `model`: response model name; `id`: chatcmpl id to use; `created`: unix seconds;
    /// `include_usage`: whether the client asked for `stream_options.include_usage` (then a
    /// final chunk with `"choices":[]` and `"usage"` is emitted before `[DONE]`).
    pub fn new(model: &str, id: &str, created: i64, include_usage: bool) -> Self {
        StreamTranslator {
            model: model.to_owned(),
            id: id.to_owned(),
            created,
            include_usage,
            started: false,
            finish_sent: false,
            errored: false,
            done: false,
            tools: Vec::new(),
            usage: AnthropicUsage::default(),
        }
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: Delta<'_>, finish_reason: Option<&str>) {
        let choices = [ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason,
        }];
        write_frame(
            out,
            &Chunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                choices: &choices,
                usage: None,
            },
        );
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            let delta = Delta {
                role: Some("assistant"),
                content: Some(""),
                tool_calls: None,
            };
            self.chunk(out, delta, None);
        }
    }

    fn text(&mut self, out: &mut Vec<u8>, text: &str) {
        if text.is_empty() {
            return;
        }
        self.start(out);
        let delta = Delta {
            content: Some(text),
            ..Delta::default()
        };
        self.chunk(out, delta, None);
    }

    /// One upstream event -> zero or more complete SSE frames to send to the client, each
    /// exactly `data: <json>\n\n` as bytes appended to `out`.
    pub fn on_event(&mut self, ev: &SseEvent, out: &mut Vec<u8>) {
        if self.done || self.errored {
            return;
        }
        let data: Value = match serde_json::from_str(&ev.data) {
            Ok(v) => v,
            Err(_) => {
                if ev.event.as_deref() == Some("error") {
                    self.error(&Value::Null, out);
                }
                return;
            }
        };
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(ev.event.as_deref())
            .unwrap_or("");
        match kind {
            "message_start" => {
                self.usage.update(data.get("message").and_then(|m| m.get("usage")));
                self.start(out);
            }
            "content_block_start" => {
                let block = data.get("content_block");
                match block.and_then(|b| b.get("type")).and_then(Value::as_str) {
                    Some("text") => {
                        let text = block.and_then(|b| b.get("text")).and_then(Value::as_str).unwrap_or("");
                        self.text(out, text);
                    }
                    Some("tool_use") => {
                        let Some(index) = data.get("index").and_then(Value::as_u64) else {
                            return;
                        };
                        if self.tools.iter().any(|(b, _)| *b == index) {
                            return;
                        }
                        let Ok(tool_index) = u32::try_from(self.tools.len()) else {
                            return;
                        };
                        self.tools.push((index, tool_index));
                        self.start(out);
                        let field = |k: &str| block.and_then(|b| b.get(k)).and_then(Value::as_str).unwrap_or("");
                        let delta = Delta {
                            tool_calls: Some([ToolCallDelta {
                                index: tool_index,
                                id: Some(field("id")),
                                kind: Some("function"),
                                function: FunctionDelta {
                                    name: Some(field("name")),
                                    arguments: "",
                                },
                            }]),
                            ..Delta::default()
                        };
                        self.chunk(out, delta, None);
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = data.get("delta");
                let field = |k: &str| delta.and_then(|d| d.get(k)).and_then(Value::as_str).unwrap_or("");
                match delta.and_then(|d| d.get("type")).and_then(Value::as_str) {
                    Some("text_delta") => self.text(out, field("text")),
                    Some("input_json_delta") => {
                        let partial = field("partial_json");
                        let index = data.get("index").and_then(Value::as_u64);
                        let tool = self.tools.iter().find(|(b, _)| Some(*b) == index).map(|(_, t)| *t);
                        if let (Some(tool_index), false) = (tool, partial.is_empty()) {
                            let delta = Delta {
                                tool_calls: Some([ToolCallDelta {
                                    index: tool_index,
                                    id: None,
                                    kind: None,
                                    function: FunctionDelta {
                                        name: None,
                                        arguments: partial,
                                    },
                                }]),
                                ..Delta::default()
                            };
                            self.chunk(out, delta, None);
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                self.usage.update(data.get("usage"));
                let reason = data
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str);
                if let (Some(reason), false) = (reason, self.finish_sent) {
                    self.finish_sent = true;
                    self.start(out);
                    self.chunk(out, Delta::default(), Some(finish_reason(reason)));
                }
            }
            "error" => self.error(&data, out),
            _ => {}
        }
    }

    fn error(&mut self, data: &Value, out: &mut Vec<u8>) {
        self.errored = true;
        write_frame(out, &error_to_openai(data));
    }

    /// End of upstream stream: appends the usage chunk (if include_usage and no error frame was
    /// sent) and `data: [DONE]\n\n`, exactly once (idempotent).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.done = true;
        if self.include_usage && !self.errored {
            write_frame(
                out,
                &Chunk {
                    id: &self.id,
                    object: "chat.completion.chunk",
                    created: self.created,
                    model: &self.model,
                    choices: &[],
                    usage: Some(self.usage().to_openai()),
                },
            );
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    /// Usage seen so far (input tokens from message_start, output tokens from message_delta;
    /// cache read/creation counts).
    pub fn usage(&self) -> Usage {
        self.usage.to_usage()
    }

    /// Whether a usage figure was seen at all.
    pub fn saw_usage(&self) -> bool {
        self.usage.seen()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseParser;
    use proptest::prelude::*;
    use serde_json::json;

    const FIXTURE: &str = include_str!("../../tests/fixtures/anthropic/stream_text_and_tool.sse");

    fn translate(req: Value) -> Value {
        chat_to_messages(&req, "claude-up", 4096).unwrap()
    }

    fn refused(req: Value) -> String {
        match chat_to_messages(&req, "claude-up", 4096) {
            Err(TranslateError::Invalid(m)) => m,
            Ok(v) => panic!("expected a refusal, got {v}"),
        }
    }

    // ---- request ----------------------------------------------------------------------

    #[test]
    fn minimal_request_gets_model_and_default_max_tokens() {
        let out = translate(json!({"model": "claude", "messages": [{"role": "user", "content": "Hi"}]}));
        assert_eq!(
            out,
            json!({"model": "claude-up", "max_tokens": 4096, "messages": [{"role": "user", "content": "Hi"}]})
        );
    }

    #[test]
    fn max_tokens_sources_and_validation() {
        let m = |extra: Value| {
            let mut req = json!({"messages": [{"role": "user", "content": "Hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                req[k] = v.clone();
            }
            req
        };
        assert_eq!(translate(m(json!({"max_tokens": 32})))["max_tokens"], 32);
        assert_eq!(translate(m(json!({"max_completion_tokens": 64})))["max_tokens"], 64);
        assert_eq!(
            translate(m(json!({"max_tokens": 32, "max_completion_tokens": 64})))["max_tokens"],
            64,
            "max_completion_tokens wins"
        );
        assert_eq!(translate(m(json!({"max_tokens": null})))["max_tokens"], 4096);
        assert_eq!(chat_to_messages(&m(json!({})), "x", 123).unwrap()["max_tokens"], 123);
        for bad in [json!(0), json!(-1), json!(1.5), json!("10")] {
            assert!(refused(m(json!({"max_tokens": bad}))).contains("max_tokens"));
        }
    }

    #[test]
    fn sampling_parameters_stop_stream_and_user() {
        let out = translate(json!({
            "messages": [{"role": "user", "content": "Hi"}],
            "temperature": 0.2, "top_p": 0.9, "stop": "END", "stream": true, "user": "u-1",
        }));
        assert_eq!(out["temperature"], 0.2);
        assert_eq!(out["top_p"], 0.9);
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["stream"], true);
        assert_eq!(out["metadata"], json!({"user_id": "u-1"}));

        let out = translate(json!({
            "messages": [{"role": "user", "content": "Hi"}],
            "temperature": 1.7, "stop": ["a", "b"], "stream": false,
        }));
        assert_eq!(out["temperature"], 1.0, "clamped to Anthropic's range");
        assert_eq!(out["stop_sequences"], json!(["a", "b"]));
        assert_eq!(out["stream"], false);

        let out = translate(json!({"messages": [{"role": "user", "content": "Hi"}], "stop": [], "temperature": 1}));
        assert!(out.get("stop_sequences").is_none());
        assert_eq!(out["temperature"], 1);

        let base = || json!({"messages": [{"role": "user", "content": "Hi"}]});
        for (k, bad) in [
            ("stop", json!(5)),
            ("stop", json!(["a", 1])),
            ("temperature", json!(-0.1)),
            ("temperature", json!("hot")),
            ("top_p", json!("x")),
            ("stream", json!("yes")),
            ("user", json!(7)),
        ] {
            let mut req = base();
            req[k] = bad;
            assert!(refused(req).contains(k), "{k}");
        }
    }

    #[test]
    fn fields_anthropic_lacks_are_dropped_and_its_own_pass_through() {
        let out = translate(json!({
            "model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}],
            "stream": true, "stream_options": {"include_usage": true}, "n": 1,
            "logprobs": true, "top_logprobs": 3, "frequency_penalty": 0.5, "presence_penalty": 0.1,
            "logit_bias": {"1": 2}, "seed": 7, "response_format": {"type": "json_object"},
            "metadata": {"a": "b"}, "store": true, "service_tier": "auto", "parallel_tool_calls": true,
            "tool_choice": "auto", "reasoning_effort": "low", "some_future_field": 1,
            "top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 1024},
        }));
        let keys: Vec<&str> = out.as_object().unwrap().keys().map(String::as_str).collect();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, ["max_tokens", "messages", "model", "stream", "thinking", "top_k"]);
        assert_eq!(out["top_k"], 5);
        assert_eq!(out["model"], "claude-up");
        // response_format text is fine too.
        translate(json!({"messages": [{"role": "user", "content": "Hi"}], "response_format": {"type": "text"}}));
    }

    #[test]
    fn refuses_what_anthropic_cannot_honour() {
        let with = |k: &str, v: Value| {
            let mut req = json!({"messages": [{"role": "user", "content": "Hi"}]});
            req[k] = v;
            req
        };
        assert!(refused(with("n", json!(2))).contains("n > 1"));
        assert!(refused(with("n", json!(0))).contains("n must"));
        assert!(chat_to_messages(&with("n", json!(1)), "m", 1).is_ok());
        assert!(chat_to_messages(&with("n", Value::Null), "m", 1).is_ok());
        assert!(refused(with(
            "response_format",
            json!({"type": "json_schema", "json_schema": {}})
        ))
        .contains("json_schema"));
        assert!(refused(with("functions", json!([{"name": "f"}]))).contains("tools"));
        assert!(refused(json!([1, 2])).contains("JSON object"));
        assert!(refused(json!({"messages": "Hi"})).contains("messages"));
        assert!(refused(json!({})).contains("messages"));
        assert!(refused(json!({"messages": []})).contains("at least one"));
        assert!(
            refused(json!({"messages": [{"role": "system", "content": "only a system prompt"}]}))
                .contains("at least one")
        );
        assert!(refused(json!({"messages": [{"role": "function", "name": "f", "content": "x"}]})).contains("role"));
        assert!(refused(json!({"messages": [{"content": "x"}]})).contains("role"));
        assert!(refused(json!({"messages": ["x"]})).contains("messages[0]"));
    }

    #[test]
    fn system_and_developer_messages_join_into_top_level_system() {
        let out = translate(json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]},
            {"role": "user", "content": "Hi"},
            {"role": "system", "content": "late rule"},
            {"role": "system", "content": ""},
        ]}));
        assert_eq!(out["system"], "be brief\n\npart one\npart two\n\nlate rule");
        assert_eq!(out["messages"], json!([{"role": "user", "content": "Hi"}]));

        let out = translate(json!({"messages": [{"role": "user", "content": "Hi"}]}));
        assert!(out.get("system").is_none());

        assert!(refused(json!({"messages": [
            {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
            {"role": "user", "content": "Hi"}]}))
        .contains("messages[0].content[0]"));
    }

    #[test]
    fn system_cache_control_keeps_text_blocks() {
        let out = translate(json!({"messages": [
            {"role": "system", "content": [{"type": "text", "text": "long context", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": "tail"},
            {"role": "user", "content": "Hi"},
        ]}));
        assert_eq!(
            out["system"],
            json!([
                {"type": "text", "text": "long context\n\n", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "tail"},
            ])
        );
    }

    #[test]
    fn content_parts_text_and_images() {
        let out = translate(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            {"type": "image_url", "image_url": "HTTP://example.com/dog.webp"},
            {"type": "text", "text": ""},
            {"type": "text", "text": "cached", "cache_control": {"type": "ephemeral"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
        ]}]}));
        assert_eq!(
            out["messages"],
            json!([{"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {"type": "image", "source": {"type": "url", "url": "HTTP://example.com/dog.webp"}},
                {"type": "text", "text": "cached", "cache_control": {"type": "ephemeral"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
            ]}])
        );
    }

    #[test]
    fn bad_content_parts_are_refused_without_echoing_content() {
        let secret = "SECRET-PROMPT-TEXT";
        let cases = [
            json!({"type": "image_url", "image_url": {"url": format!("ftp://{secret}")}}),
            json!({"type": "image_url", "image_url": {"url": format!("data:image/png,{secret}")}}),
            json!({"type": "image_url", "image_url": {"url": format!("data:;base64,{secret}")}}),
            json!({"type": "image_url", "image_url": {"url": format!("data:{secret}")}}),
            json!({"type": "image_url", "image_url": {}}),
            json!({"type": "input_audio", "input_audio": {"data": secret, "format": "wav"}}),
            json!({"type": "file", "file": {"file_id": secret}}),
            json!({"type": "file", "file": {"file_data": format!("data:image/png;base64,{secret}")}}),
            json!({"type": secret}),
            json!({"type": "text", "text": 5}),
            json!({"text": secret}),
        ];
        for part in cases {
            let msg = refused(json!({"messages": [
                {"role": "user", "content": [{"type": "text", "text": secret}, part]}]}));
            assert!(msg.contains("messages[0].content[1]"), "{msg}");
            assert!(!msg.contains(secret), "{msg}");
        }
        let msg = refused(json!({"messages": [{"role": "user", "content": 42}]}));
        assert!(msg.contains("messages[0].content"));
    }

    #[test]
    fn consecutive_same_role_messages_merge() {
        let out = translate(json!({"messages": [
            {"role": "user", "content": "one", "name": "alice"},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {"role": "assistant", "content": "three"},
            {"role": "assistant", "content": "four"},
            {"role": "user", "content": ""},
            {"role": "assistant", "content": "five"},
            {"role": "user", "content": "six"},
        ]}));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "three"}, {"type": "text", "text": "four"}, {"type": "text", "text": "five"}]},
                {"role": "user", "content": "six"},
            ])
        );
    }

    fn weather_tool() -> Value {
        json!({"type": "function", "function": {
            "name": "get_weather", "description": "Weather for a place",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}})
    }

    #[test]
    fn tools_and_tool_choice() {
        let base = |choice: Option<Value>, parallel: Option<bool>| {
            let mut req = json!({
                "messages": [{"role": "user", "content": "Weather?"}],
                "tools": [weather_tool(), {"type": "function", "function": {"name": "now", "parameters": {}}},
                          {"type": "function", "function": {"name": "bare"}}],
            });
            if let Some(c) = choice {
                req["tool_choice"] = c;
            }
            if let Some(p) = parallel {
                req["parallel_tool_calls"] = json!(p);
            }
            translate(req)
        };
        let out = base(None, None);
        assert_eq!(
            out["tools"],
            json!([
                {"name": "get_weather", "description": "Weather for a place",
                 "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}},
                {"name": "now", "input_schema": {"type": "object"}},
                {"name": "bare", "input_schema": {"type": "object", "properties": {}}},
            ])
        );
        assert!(out.get("tool_choice").is_none());
        assert_eq!(base(Some(json!("auto")), None)["tool_choice"], json!({"type": "auto"}));
        assert_eq!(base(Some(json!("none")), None)["tool_choice"], json!({"type": "none"}));
        assert_eq!(
            base(Some(json!("required")), None)["tool_choice"],
            json!({"type": "any"})
        );
        assert_eq!(
            base(
                Some(json!({"type": "function", "function": {"name": "get_weather"}})),
                None
            )["tool_choice"],
            json!({"type": "tool", "name": "get_weather"})
        );
        assert_eq!(
            base(None, Some(false))["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            base(Some(json!("required")), Some(false))["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            base(Some(json!("none")), Some(false))["tool_choice"],
            json!({"type": "none"})
        );
        assert!(base(None, Some(true)).get("tool_choice").is_none());

        // tool_choice without tools is dropped; empty tools too.
        let out =
            translate(json!({"messages": [{"role": "user", "content": "Hi"}], "tools": [], "tool_choice": "required"}));
        assert!(out.get("tools").is_none() && out.get("tool_choice").is_none());

        let with_tools = |tools: Value, choice: Value| json!({"messages": [{"role": "user", "content": "Hi"}], "tools": tools, "tool_choice": choice});
        assert!(refused(with_tools(json!([{"type": "web_search"}]), json!("auto"))).contains("tools[0]"));
        assert!(refused(with_tools(json!([{"type": "function", "function": {}}]), json!("auto"))).contains("name"));
        assert!(refused(with_tools(
            json!([{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
            json!("auto")
        ))
        .contains("parameters"));
        assert!(refused(with_tools(json!({"a": 1}), json!("auto"))).contains("tools"));
        assert!(refused(with_tools(json!([weather_tool()]), json!("sometimes"))).contains("tool_choice"));
        assert!(refused(with_tools(
            json!([weather_tool()]),
            json!({"type": "function", "function": {}})
        ))
        .contains("tool_choice"));
    }

    #[test]
    fn assistant_tool_calls_become_tool_use_and_tool_messages_merge_into_results() {
        let out = translate(json!({"messages": [
            {"role": "user", "content": "Weather in SF and the time?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"SF\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C, fog"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "09:00"}]},
            {"role": "user", "content": "Thanks; summarise."},
        ]}));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": "Weather in SF and the time?"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "SF"}},
                    {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, fog"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "09:00"}]},
                    {"type": "text", "text": "Thanks; summarise."},
                ]},
            ])
        );

        // Assistant text alongside tool calls is kept before them; a tool result with no
        // content has none; tool results are put before user text in a merged turn.
        let out = translate(json!({"messages": [
            {"role": "user", "content": "Go"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "t1", "function": {"name": "f", "arguments": {"a": 1}}}]},
            {"role": "user", "content": "also this"},
            {"role": "tool", "tool_call_id": "t1", "content": null},
        ]}));
        assert_eq!(
            out["messages"][1]["content"],
            json!([{"type": "text", "text": "Checking."}, {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}])
        );
        assert_eq!(
            out["messages"][2]["content"],
            json!([{"type": "tool_result", "tool_use_id": "t1"}, {"type": "text", "text": "also this"}])
        );
    }

    #[test]
    fn bad_tool_calls_and_results_are_refused_without_echoing_content() {
        let secret = "SECRET-ARGUMENT";
        let call = |c: Value| json!({"messages": [{"role": "user", "content": "Go"}, {"role": "assistant", "tool_calls": [c]}]});
        for (c, needle) in [
            (
                json!({"id": "c", "type": "function", "function": {"name": "f", "arguments": format!("{{\"x\": \"{secret}")}}),
                "not valid JSON",
            ),
            (
                json!({"id": "c", "function": {"name": "f", "arguments": format!("[\"{secret}\"]")}}),
                "JSON object",
            ),
            (
                json!({"id": "c", "function": {"name": "f", "arguments": 5}}),
                "arguments",
            ),
            (json!({"function": {"name": "f", "arguments": "{}"}}), "id"),
            (json!({"id": "c", "function": {"arguments": "{}"}}), "name"),
            (json!({"id": "c", "type": "custom", "function": {"name": "f"}}), "type"),
        ] {
            let msg = refused(call(c));
            assert!(msg.contains("messages[1].tool_calls[0]"), "{msg}");
            assert!(msg.contains(needle), "{msg}");
            assert!(!msg.contains(secret), "{msg}");
        }
        assert!(refused(
            json!({"messages": [{"role": "user", "content": "Go"}, {"role": "assistant", "tool_calls": {}}]})
        )
        .contains("tool_calls"));
        assert!(refused(json!({"messages": [{"role": "tool", "content": secret}]})).contains("tool_call_id"));
    }

    // ---- response ---------------------------------------------------------------------

    fn response(content: Value, stop: Value, usage: Value) -> Value {
        json!({"id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
               "model": "claude-sonnet-4-5-20250929", "content": content, "stop_reason": stop,
               "stop_sequence": null, "usage": usage})
    }

    #[test]
    fn text_response() {
        let resp = response(
            json!([{"type": "text", "text": "Hello"}, {"type": "thinking", "thinking": "hmm", "signature": "s"}, {"type": "text", "text": " there!"}]),
            json!("end_turn"),
            json!({"input_tokens": 9, "output_tokens": 3}),
        );
        let (chat, usage) = messages_to_chat(&resp, "my-claude").unwrap();
        assert_eq!(chat["id"], "chatcmpl-msg_013Zva2CMHLNnXjNJJKqJ2EF");
        assert_eq!(chat["object"], "chat.completion");
        assert_eq!(chat["model"], "my-claude");
        assert!(chat["created"].as_i64().unwrap() > 1_700_000_000);
        assert_eq!(
            chat["choices"],
            json!([{"index": 0, "message": {"role": "assistant", "content": "Hello there!", "refusal": null},
                    "logprobs": null, "finish_reason": "stop"}])
        );
        assert_eq!(
            chat["usage"],
            json!({"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12})
        );
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 9,
                completion_tokens: 3,
                cached_prompt_tokens: 0,
                cache_write_tokens: 0
            }
        );
    }

    #[test]
    fn tool_call_response() {
        let resp = response(
            json!([{"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"location": "San Francisco, CA", "unit": "celsius"}},
                   {"type": "tool_use", "id": "toolu_01B", "name": "now", "input": {}}]),
            json!("tool_use"),
            json!({"input_tokens": 100, "output_tokens": 40}),
        );
        let (chat, _) = messages_to_chat(&resp, "m").unwrap();
        let choice = &chat["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["id"], "toolu_01A");
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        let args: Value = serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"location": "San Francisco, CA", "unit": "celsius"}));
        assert_eq!(calls[1]["function"]["arguments"], "{}");

        // Text with a tool call keeps the text.
        let resp = response(
            json!([{"type": "text", "text": "Let me look."}, {"type": "tool_use", "id": "t", "name": "f"}]),
            json!("tool_use"),
            json!({}),
        );
        let (chat, usage) = messages_to_chat(&resp, "m").unwrap();
        assert_eq!(chat["choices"][0]["message"]["content"], "Let me look.");
        assert_eq!(
            chat["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{}"
        );
        assert_eq!(usage, Usage::default());
    }

    #[test]
    fn every_stop_reason_maps() {
        for (stop, finish) in [
            (json!("end_turn"), "stop"),
            (json!("stop_sequence"), "stop"),
            (json!("max_tokens"), "length"),
            (json!("tool_use"), "tool_calls"),
            (json!("pause_turn"), "stop"),
            (json!("refusal"), "content_filter"),
            (json!("model_context_window_exceeded"), "length"),
            (json!("something_new"), "stop"),
            (Value::Null, "stop"),
        ] {
            let resp = response(
                json!([{"type": "text", "text": "x"}]),
                stop.clone(),
                json!({"input_tokens": 1, "output_tokens": 1}),
            );
            let (chat, _) = messages_to_chat(&resp, "m").unwrap();
            assert_eq!(chat["choices"][0]["finish_reason"], finish, "{stop}");
        }
    }

    #[test]
    fn cached_usage_counts_every_prompt_token() {
        let resp = response(
            json!([{"type": "text", "text": "ok"}]),
            json!("end_turn"),
            json!({"input_tokens": 50, "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 300,
                   "output_tokens": 7, "service_tier": "standard"}),
        );
        let (chat, usage) = messages_to_chat(&resp, "m").unwrap();
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 2350,
                completion_tokens: 7,
                cached_prompt_tokens: 2000,
                cache_write_tokens: 300
            }
        );
        assert_eq!(
            chat["usage"],
            json!({"prompt_tokens": 2350, "completion_tokens": 7, "total_tokens": 2357,
                   "prompt_tokens_details": {"cached_tokens": 2000}})
        );
        // Bogus figures are ignored, nulls are zero.
        let resp = response(
            json!([]),
            json!("end_turn"),
            json!({"input_tokens": -3, "cache_read_input_tokens": null, "cache_creation_input_tokens": 1e12, "output_tokens": 2}),
        );
        let (chat, usage) = messages_to_chat(&resp, "m").unwrap();
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 0,
                completion_tokens: 2,
                cached_prompt_tokens: 0,
                cache_write_tokens: 0
            }
        );
        assert_eq!(chat["choices"][0]["message"]["content"], "");
    }

    #[test]
    fn malformed_responses_are_refused() {
        assert!(messages_to_chat(&json!("x"), "m").is_err());
        assert!(messages_to_chat(
            &json!({"type": "error", "error": {"type": "api_error", "message": "x"}}),
            "m"
        )
        .is_err());
        assert!(messages_to_chat(&json!({"id": "msg", "content": "text"}), "m").is_err());
        assert!(messages_to_chat(&json!({"content": [{"type": "tool_use", "name": "f"}]}), "m").is_err());
        let (chat, _) = messages_to_chat(&json!({"content": []}), "m").unwrap();
        assert_eq!(chat["id"], "chatcmpl-anthropic");
    }

    #[test]
    fn errors_become_openai_shaped() {
        let e =
            error_to_openai(&json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
        assert_eq!(
            e,
            json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded_error"}})
        );
        for (ty, openai) in [
            ("invalid_request_error", "invalid_request_error"),
            ("request_too_large", "invalid_request_error"),
            ("authentication_error", "authentication_error"),
            ("permission_error", "permission_error"),
            ("billing_error", "permission_error"),
            ("not_found_error", "not_found_error"),
            ("rate_limit_error", "rate_limit_error"),
            ("api_error", "server_error"),
            ("timeout_error", "server_error"),
            ("brand_new_error", "upstream_error"),
        ] {
            let e = error_to_openai(&json!({"type": "error", "error": {"type": ty, "message": "m"}}));
            assert_eq!(e["error"]["type"], openai);
            assert_eq!(e["error"]["code"], ty);
        }
        let e = error_to_openai(&json!("<html>502</html>"));
        assert_eq!(e["error"]["message"], "the upstream model hub returned an error");
        assert_eq!(e["error"]["code"], "upstream_error");
        let e = error_to_openai(&json!({"error": {"type": "Weird Type <script>", "message": ""}}));
        assert_eq!(e["error"]["code"], "upstream_error");
        assert_eq!(e["error"]["type"], "upstream_error");
        let long = "é".repeat(5000);
        let e = error_to_openai(&json!({"error": {"type": "api_error", "message": long}}));
        assert!(e["error"]["message"].as_str().unwrap().len() <= MAX_ERROR_MESSAGE);
        let e = error_to_openai(&json!({"error": "plain"}));
        assert_eq!(e["error"]["message"], "plain");
    }

    // ---- streaming --------------------------------------------------------------------

    const HEAD: &str =
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"my-claude","#;

    fn frame(choice_delta: &str, finish: &str) -> String {
        format!(
            "data: {HEAD}\"choices\":[{{\"index\":0,\"delta\":{choice_delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n"
        )
    }

    /// The exact frames the fixture must produce (without the usage chunk and [DONE]).
    fn fixture_frames() -> String {
        [
            frame(r#"{"role":"assistant","content":""}"#, "null"),
            frame(r#"{"content":"Let me check"}"#, "null"),
            frame(r#"{"content":" the weather \"there\"."}"#, "null"),
            frame(
                r#"{"tool_calls":[{"index":0,"id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","type":"function","function":{"name":"get_weather","arguments":""}}]}"#,
                "null",
            ),
            frame(r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"location\": \"San Fra"}}]}"#, "null"),
            frame(r#"{"tool_calls":[{"index":0,"function":{"arguments":"ncisco, CA\"}"}}]}"#, "null"),
            frame(
                r#"{"tool_calls":[{"index":1,"id":"toolu_02","type":"function","function":{"name":"get_time","arguments":""}}]}"#,
                "null",
            ),
            frame(r#"{"tool_calls":[{"index":1,"function":{"arguments":"{}"}}]}"#, "null"),
            frame("{}", "\"tool_calls\""),
        ]
        .concat()
    }

    const USAGE_FRAME: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"my-claude\",\"choices\":[],\"usage\":{\"completion_tokens\":89,\"prompt_tokens\":2520,\"prompt_tokens_details\":{\"cached_tokens\":2048},\"total_tokens\":2609}}\n\n";

    fn run(pieces: &[&[u8]], include_usage: bool) -> (String, StreamTranslator) {
        let mut parser = SseParser::default();
        let mut t = StreamTranslator::new("my-claude", "chatcmpl-1", 1_700_000_000, include_usage);
        let mut out = Vec::new();
        for p in pieces {
            parser.feed(p, |ev| t.on_event(&ev, &mut out)).unwrap();
        }
        parser.finish(|ev| t.on_event(&ev, &mut out)).unwrap();
        t.finish(&mut out);
        (String::from_utf8(out).unwrap(), t)
    }

    /// The usage object's keys depend on serde_json's map order; compare that frame as JSON.
    fn split_usage_frame(s: &str) -> (&str, Value, &str) {
        let start = s.rfind("data: {").unwrap();
        let end = s[start..].find("\n\n").unwrap() + start;
        let v: Value = serde_json::from_str(&s[start + 6..end]).unwrap();
        (&s[..start], v, &s[end + 2..])
    }

    #[test]
    fn recorded_stream_translates_exactly_with_usage() {
        let (out, t) = run(&[FIXTURE.as_bytes()], true);
        let (frames, usage_chunk, tail) = split_usage_frame(&out);
        assert_eq!(frames, fixture_frames());
        let (_, expected_usage, _) = split_usage_frame(USAGE_FRAME);
        assert_eq!(usage_chunk, expected_usage);
        assert_eq!(tail, "data: [DONE]\n\n");
        assert!(t.saw_usage());
        assert_eq!(
            t.usage(),
            Usage {
                prompt_tokens: 2520,
                completion_tokens: 89,
                cached_prompt_tokens: 2048,
                cache_write_tokens: 0
            }
        );
        // Every frame is valid JSON the SDK can read.
        for f in out.split("\n\n").filter(|f| !f.is_empty()) {
            let body = f.strip_prefix("data: ").unwrap();
            if body != "[DONE]" {
                let v: Value = serde_json::from_str(body).unwrap();
                assert_eq!(v["object"], "chat.completion.chunk");
            }
        }
    }

    #[test]
    fn recorded_stream_without_include_usage() {
        let (out, t) = run(&[FIXTURE.as_bytes()], false);
        assert_eq!(out, format!("{}data: [DONE]\n\n", fixture_frames()));
        assert_eq!(t.usage().completion_tokens, 89, "usage is still metered");
    }

    #[test]
    fn text_stream_with_cache_write_and_max_tokens() {
        let sse = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":1500,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\n",
            "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: content_block_stop\n",
            "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":16}}\n\n",
            "event: message_stop\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        );
        let (out, t) = run(&[sse.as_bytes()], true);
        let (frames, usage, tail) = split_usage_frame(&out);
        assert_eq!(
            frames,
            [
                frame(r#"{"role":"assistant","content":""}"#, "null"),
                frame(r#"{"content":"Hi"}"#, "null"),
                frame("{}", "\"length\""),
            ]
            .concat()
        );
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(
            usage["usage"],
            json!({"prompt_tokens": 1510, "completion_tokens": 16, "total_tokens": 1526})
        );
        assert_eq!(tail, "data: [DONE]\n\n");
        assert_eq!(t.usage().cache_write_tokens, 1500);
    }

    #[test]
    fn error_event_mid_stream() {
        let sse = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Par\"}}\n\n",
            "event: error\n",
            "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"after\"}}\n\n",
        );
        for include_usage in [true, false] {
            let (out, t) = run(&[sse.as_bytes()], include_usage);
            let expected = [
                frame(r#"{"role":"assistant","content":""}"#, "null"),
                frame(r#"{"content":"Par"}"#, "null"),
            ]
            .concat();
            assert!(out.starts_with(&expected), "{out}");
            let rest = &out[expected.len()..];
            let (err_frame, done) = rest.split_once("\n\n").unwrap();
            let err: Value = serde_json::from_str(err_frame.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(err["error"]["message"], "Overloaded");
            assert_eq!(err["error"]["type"], "server_error");
            assert_eq!(done, "data: [DONE]\n\n", "nothing after the error but [DONE]");
            assert!(t.saw_usage());
            assert_eq!(t.usage().prompt_tokens, 12);
        }
        // An error event whose data is not JSON still becomes an error frame.
        let (out, _) = run(&[b"event: error\ndata: upstream exploded\n\n"], false);
        let (err_frame, done) = out.split_once("\n\n").unwrap();
        let err: Value = serde_json::from_str(err_frame.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(err["error"]["code"], "upstream_error");
        assert_eq!(done, "data: [DONE]\n\n");
    }

    #[test]
    fn finish_is_idempotent_and_events_after_it_are_ignored() {
        let mut t = StreamTranslator::new("m", "chatcmpl-x", 1, true);
        assert!(!t.saw_usage());
        assert_eq!(t.usage(), Usage::default());
        let mut out = Vec::new();
        t.finish(&mut out);
        let first = out.clone();
        t.finish(&mut out);
        t.on_event(
            &SseEvent {
                event: None,
                data: r#"{"type":"message_start","message":{"usage":{"input_tokens":3}}}"#.into(),
            },
            &mut out,
        );
        t.finish(&mut out);
        assert_eq!(out, first);
        let s = String::from_utf8(first).unwrap();
        assert_eq!(s.matches("[DONE]").count(), 1);
        assert!(s.contains(r#""choices":[],"usage":{"#), "{s}");
        assert!(!t.saw_usage());
    }

    #[test]
    fn stream_edge_cases() {
        let ev = |data: &str| SseEvent {
            event: None,
            data: data.into(),
        };
        let mut t = StreamTranslator::new("m", "c", 1, false);
        let mut out = Vec::new();
        // ping, unknown events, thinking and signature deltas, stray json deltas: nothing.
        for d in [
            r#"{"type":"ping"}"#,
            r#"{"type":"brand_new_event","x":1}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"abc"}}"#,
            r#"{"type":"content_block_delta","index":5,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}"#,
            "not json",
            "",
        ] {
            t.on_event(&ev(d), &mut out);
        }
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        // Text without message_start still gets the role frame first; the event name is used
        // when the data has no type; a repeated stop reason gives one finish frame.
        t.on_event(
            &SseEvent {
                event: Some("content_block_delta".into()),
                data: r#"{"index":0,"delta":{"type":"text_delta","text":"x"}}"#.into(),
            },
            &mut out,
        );
        t.on_event(
            &ev(r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":4}}"#),
            &mut out,
        );
        t.on_event(
            &ev(r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}"#),
            &mut out,
        );
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            [
                "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
                "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
                "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n",
            ]
            .concat()
        );
        assert_eq!(t.usage().completion_tokens, 5, "the latest cumulative count wins");
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("type"),
            Just("index"),
            Just("delta"),
            Just("text"),
            Just("partial_json"),
            Just("content_block"),
            Just("id"),
            Just("name"),
            Just("usage"),
            Just("message"),
            Just("input_tokens"),
            Just("output_tokens"),
            Just("cache_read_input_tokens"),
            Just("cache_creation_input_tokens"),
            Just("stop_reason"),
            Just("error"),
            Just("input"),
            Just("role"),
            Just("content"),
            Just("messages"),
            Just("tool_calls"),
            Just("tool_call_id"),
            Just("function"),
            Just("arguments"),
            Just("image_url"),
            Just("url"),
            Just("tools"),
            Just("tool_choice"),
            Just("stop"),
            Just("max_tokens"),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e20f64..1e20).prop_map(Value::from),
            prop_oneof![
                Just("message_start"),
                Just("content_block_start"),
                Just("content_block_delta"),
                Just("content_block_stop"),
                Just("message_delta"),
                Just("message_stop"),
                Just("ping"),
                Just("error"),
                Just("text"),
                Just("tool_use"),
                Just("text_delta"),
                Just("input_json_delta"),
                Just("end_turn"),
                Just("tool_use"),
                Just("max_tokens"),
                Just("user"),
                Just("assistant"),
                Just("system"),
                Just("tool"),
                Just("image_url"),
                Just("function"),
                Just("data:image/png;base64,AAAA"),
                Just("https://x/y.png"),
                Just("{\"a\":1}"),
            ]
            .prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(key.clone().prop_map(String::from), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_translation(cut in proptest::collection::vec(0usize..10_000, 0..12), include_usage in any::<bool>()) {
            let bytes = FIXTURE.as_bytes();
            let mut cuts: Vec<usize> = cut.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts {
                pieces.push(&bytes[last..c]);
                last = c;
            }
            pieces.push(&bytes[last..]);
            let (out, t) = run(&pieces, include_usage);
            let (whole, _) = run(&[bytes], include_usage);
            prop_assert_eq!(&out, &whole);
            if include_usage {
                let (frames, _, tail) = split_usage_frame(&out);
                prop_assert_eq!(frames, fixture_frames());
                prop_assert_eq!(tail, "data: [DONE]\n\n");
            } else {
                prop_assert_eq!(out, format!("{}data: [DONE]\n\n", fixture_frames()));
            }
            prop_assert_eq!(t.usage().prompt_tokens, 2520);
        }

        #[test]
        fn translator_never_panics_and_only_writes_whole_frames(
            events in proptest::collection::vec(
                (proptest::option::of(prop_oneof![Just("error".to_owned()), Just("message_start".to_owned()), "[a-z_]{0,10}"]),
                 prop_oneof![json_value().prop_map(|v| v.to_string()), ".{0,40}"]),
                0..24),
            include_usage in any::<bool>(),
        ) {
            let mut t = StreamTranslator::new("m", "c", 0, include_usage);
            let mut out = Vec::new();
            for (event, data) in events {
                t.on_event(&SseEvent { event, data }, &mut out);
            }
            t.finish(&mut out);
            t.finish(&mut out);
            let _ = (t.usage(), t.saw_usage());
            let s = String::from_utf8(out).unwrap();
            prop_assert!(s.ends_with("data: [DONE]\n\n"));
            prop_assert_eq!(s.matches("data: [DONE]\n\n").count(), 1);
            for f in s.split_terminator("\n\n") {
                let body = f.strip_prefix("data: ").unwrap();
                if body != "[DONE]" {
                    let v: Value = serde_json::from_str(body).unwrap();
                    prop_assert!(v.get("error").is_some() || v["object"] == "chat.completion.chunk");
                }
            }
        }

        #[test]
        fn request_translation_never_panics(req in json_value(), messages in proptest::collection::vec(json_value(), 0..4)) {
            let _ = chat_to_messages(&req, "m", 16);
            if let Ok(out) = chat_to_messages(&json!({"messages": messages}), "m", 16) {
                // Whatever goes out alternates roles, starts no turn empty, has no empty text.
                let turns = out["messages"].as_array().unwrap();
                prop_assert!(!turns.is_empty());
                for w in turns.windows(2) {
                    prop_assert_ne!(&w[0]["role"], &w[1]["role"]);
                }
                for t in turns {
                    match &t["content"] {
                        Value::String(s) => prop_assert!(!s.is_empty()),
                        Value::Array(blocks) => {
                            prop_assert!(!blocks.is_empty());
                            for b in blocks {
                                prop_assert!(b["type"] != "text" || b["text"] != "");
                            }
                        }
                        other => prop_assert!(false, "content {}", other),
                    }
                }
            }
            let _ = messages_to_chat(&req, "m");
            let _ = error_to_openai(&req);
        }
    }
}
