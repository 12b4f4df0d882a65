//! Micro-benchmarks of the pieces of one gateway request (docs/benchmarks.md), on the body the
//! macro benchmark sends (`{"model":"gpt-4o-mini","messages":[...],"max_tokens":16}`) and the
//! answers `keygate-mock` gives.
//!
//! Where a piece is private to `keygate-api` (which depends on this crate), the benchmark does
//! the same operations as the function it names, with the same crates; the public pieces
//! (`keyfmt::check`, `KeyHasher::hash`, `envelope::open_string`, `hubs::plan`, `SseParser`,
//! `Usage::from_openai_raw`, `raw::fields`, `request::Head`, `PriceTable::lookup`,
//! `netpolicy::check_upstream_url`) are the real ones.
//!
//! Groups:
//! - `auth`: key parse (prefix, alphabet, CRC32 checksum), HMAC-SHA256, the in-memory lookup
//!   among 100,000 keys, and all of `keygate-api/src/auth.rs::{presented_key, authenticate,
//!   note_use}` together; `hmac_prekeyed` shows what a key schedule computed once would cost.
//! - `vault`: opening a sealed provider secret (two XChaCha20-Poly1305 decryptions). The hot path
//!   does not do this per request (`runtime.rs` keeps secrets opened); it is what a refresh does
//!   per changed key.
//! - `request`: `pipeline.rs::handle_json`'s reading of the body (`request::Head::read`, the
//!   fields borrowed from the bytes; `Head::of_tree`, the tree it replaced and still the path of
//!   a declined body; `parse_body_value` and `estimate_prompt_tokens`, the tree and the fields
//!   read from it before `Head`), `credential` + `hubs::plan` (URL, `Bearer` header),
//!   `netpolicy::check_upstream_url` (once per provider key since `ProviderRuntime::url_allowed`;
//!   shown for its cost), `upstream_body` (the client's bytes when nothing changes; a tree,
//!   model set, re-serialised when something does), and the whole request side as a request
//!   does it (`whole_request_head`: head, plan, the bytes forwarded).
//! - `response`: `pipeline.rs::json_response` (`raw::fields` + `Usage::from_openai_raw`: `usage`
//!   and `model` borrowed from the answer, the rest only checked; before it, `AnswerHead` with
//!   `usage` and `model` as trees, and the whole-tree parse before that), and the price lookup
//!   and cost of `MeterGuard::finish`.
//! - `sse`: `pipeline.rs::StreamState::feed` per upstream chunk: `SseParser::feed` into a
//!   `Vec<SseEvent>`, then `on_openai_event` (substring tests; the usage chunk is parsed).
//!
//! Run: `cargo bench -p keygate-gateway --bench hot_path` (add `-- --quick` for a short run).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use keygate_gateway::hubs::{self, Endpoint, Provider};
use keygate_gateway::request::Head;
use keygate_gateway::sse::{SseEvent, SseParser};
use keygate_gateway::Usage;
use keygate_types::hubconfig::HubSettings;
use keygate_types::keyfmt::{self, PlatformKeyType, PlatformSecret};
use keygate_types::pricing::{cost, PriceTable};
use keygate_types::{netpolicy, ModelHub};
use keygate_vault::envelope::{open_string, seal};
use keygate_vault::{KeyHash, KeyHasher, Keyring, MasterKey, SecretPlace};
use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};
use sha2::Sha256;
use zeroize::Zeroizing;

const BODY: &[u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}],"max_tokens":16}"#;
const STREAM_BODY: &[u8] =
    br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}],"max_tokens":16,"stream":true}"#;
const ANSWER: &[u8] = br#"{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","system_fingerprint":"fp_mock","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the mock upstream.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#;
const CONTENT_CHUNK: &[u8] = b"data: {\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_mock\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello \"},\"logprobs\":null,\"finish_reason\":null}]}\n\n";
const USAGE_CHUNK: &[u8] = b"data: {\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_mock\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}\n\n";
const DONE_CHUNK: &[u8] = b"data: [DONE]\n\n";
const BASE_URL: &str = "http://127.0.0.1:9099/v1";

// ---- auth (keygate-api/src/auth.rs) -------------------------------------------------------

struct Principal {
    id: String,
    expires_at: Option<i64>,
}

struct Entry {
    hash: KeyHash,
    principal: Arc<Principal>,
    valid_until: Option<i64>,
}

struct AuthCache {
    by_hash: RwLock<HashMap<KeyHash, Entry>>,
    last_used: Mutex<HashMap<String, i64>>,
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-portkey-api-key").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if !v.is_empty() {
            return Some(v);
        }
    }
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = auth.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let rest = rest.trim();
    (!rest.is_empty()).then_some(rest)
}

impl AuthCache {
    fn authenticate(&self, presented: &str, hasher: &KeyHasher, now: i64) -> Option<Arc<Principal>> {
        keyfmt::check(presented).ok()?;
        let h = hasher.hash(presented);
        let inner = self.by_hash.read();
        let entry = inner.get(&h)?;
        if !entry.hash.ct_eq(&h) || entry.valid_until.is_some_and(|u| now >= u) {
            return None;
        }
        if entry.principal.expires_at.is_some_and(|e| now >= e) {
            return None;
        }
        Some(entry.principal.clone())
    }

    fn note_use(&self, id: &str, now: i64) {
        let mut map = self.last_used.lock();
        match map.get_mut(id) {
            Some(t) => *t = now,
            None => {
                map.insert(id.to_string(), now);
            }
        }
    }
}

fn auth(c: &mut Criterion) {
    let mut rng = rand::rngs::OsRng;
    let hasher = KeyHasher::from_secret(&[7u8; 32]).unwrap();
    let mut by_hash = HashMap::new();
    let mut keys = Vec::new();
    for i in 0..100_000u32 {
        let secret = PlatformSecret::generate(PlatformKeyType::Inference, &mut rng);
        let h = hasher.hash(secret.expose());
        by_hash.insert(
            h,
            Entry {
                hash: h,
                principal: Arc::new(Principal {
                    id: format!("pk_{i:026}"),
                    expires_at: None,
                }),
                valid_until: None,
            },
        );
        if i % 1000 == 0 {
            keys.push(secret.expose().to_string());
        }
    }
    let cache = AuthCache {
        by_hash: RwLock::new(by_hash),
        last_used: Mutex::new(HashMap::new()),
    };
    let key = keys[0].clone();
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
    );
    headers.insert("x-keygate-virtual-key", HeaderValue::from_static("bench"));
    headers.insert("content-type", HeaderValue::from_static("application/json"));

    let mut g = c.benchmark_group("auth");
    g.bench_function("key_parse", |b| b.iter(|| keyfmt::check(black_box(&key)).unwrap()));
    g.bench_function("hmac_sha256", |b| b.iter(|| hasher.hash(black_box(&key))));
    let prekeyed = <Hmac<Sha256> as Mac>::new_from_slice(&[9u8; 32]).unwrap();
    g.bench_function("hmac_prekeyed", |b| {
        b.iter(|| {
            let mut m = prekeyed.clone();
            m.update(black_box(key.as_bytes()));
            m.finalize().into_bytes()
        })
    });
    let h = hasher.hash(&key);
    g.bench_function("lookup_100k", |b| {
        b.iter(|| cache.by_hash.read().get(black_box(&h)).map(|e| e.principal.clone()))
    });
    let mut i = 0usize;
    g.bench_function("presented_parse_hash_lookup_note_use", |b| {
        b.iter(|| {
            i = (i + 1) % 4;
            let k = presented_key(black_box(&headers)).unwrap();
            let p = cache.authenticate(k, &hasher, 1_764_547_200_000).unwrap();
            cache.note_use(&p.id, 1_764_547_200_000 + i as i64);
            p
        })
    });
    g.finish();
}

// ---- vault (keygate-vault/src/envelope.rs) ------------------------------------------------

fn vault(c: &mut Criterion) {
    let keyring = Keyring::new(1, MasterKey::generate());
    let place = SecretPlace {
        workspace: "default",
        record_id: "pvk_0192f3a4b5c67d8e9f0a1b2c3d",
        secret_version: 1,
        field: "api_key",
    };
    let sealed = seal(
        &keyring,
        &place,
        b"sk-bench-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH",
    )
    .unwrap();
    let mut g = c.benchmark_group("vault");
    g.bench_function("open_provider_secret", |b| {
        b.iter(|| open_string(&keyring, black_box(&place), black_box(&sealed)).unwrap())
    });
    g.finish();
}

// ---- request (keygate-gateway/src/pipeline.rs) -------------------------------------------------

struct Call {
    body: Value,
    raw: bytes::Bytes,
    stream: bool,
    client_wants_usage: bool,
    model: String,
}

/// `handle_json`: the body into a `Value`, then the few fields read from it.
fn parse_call(bytes: &[u8]) -> Call {
    let body: Value = serde_json::from_slice(bytes).unwrap();
    let model = body.get("model").and_then(Value::as_str).unwrap_or("").to_string();
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let client_wants_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Call {
        body,
        raw: bytes::Bytes::copy_from_slice(bytes),
        stream,
        client_wants_usage,
        model,
    }
}

/// `estimate_prompt_tokens`.
fn estimate_prompt_tokens(body: &Value) -> u64 {
    fn text_len(v: &Value) -> u64 {
        match v {
            Value::String(s) => s.len() as u64,
            Value::Array(a) => a.iter().map(text_len).sum(),
            Value::Object(o) => o.get("text").or_else(|| o.get("content")).map(text_len).unwrap_or(0),
            _ => 0,
        }
    }
    let (bytes, messages) = match body.get("messages").and_then(Value::as_array) {
        Some(msgs) => (
            msgs.iter().map(|m| m.get("content").map(text_len).unwrap_or(0)).sum(),
            msgs.len() as u64,
        ),
        None => (0, 0),
    };
    bytes.div_ceil(4) + 4 * messages + 3
}

/// `credential` (the secret copied into a zeroizing string) + `hubs::plan`.
fn plan(settings: &HubSettings, secret: &Zeroizing<String>, model: &str) -> hubs::Plan {
    let secret = Zeroizing::new(secret.as_str().to_string());
    let provider = Provider {
        hub: ModelHub::OpenAi,
        base_url: BASE_URL,
        settings,
    };
    hubs::plan(provider, Endpoint::Chat, "", None, model, &secret).unwrap()
}

/// `upstream_body` for the OpenAI wire: the client's bytes when the model stays and no usage
/// is asked for; else a deep copy of the body, the model set, usage asked for on a stream the
/// client did not ask it for, serialised again.
fn upstream_body(call: &Call, plan: &hubs::Plan) -> bytes::Bytes {
    let inject = call.stream && !call.client_wants_usage;
    let model_kept = match &plan.body_model {
        None => true,
        Some(m) => call.body.get("model").and_then(Value::as_str) == Some(m.as_str()),
    };
    if model_kept && !inject {
        return call.raw.clone();
    }
    let mut body = call.body.clone();
    if let (Some(m), Some(obj)) = (&plan.body_model, body.as_object_mut()) {
        obj.insert("model".into(), Value::String(m.clone()));
    }
    if inject {
        if let Some(obj) = body.as_object_mut() {
            let opts = obj.entry("stream_options").or_insert_with(|| json!({}));
            if let Some(o) = opts.as_object_mut() {
                o.insert("include_usage".into(), Value::Bool(true));
            }
        }
    }
    bytes::Bytes::from(serde_json::to_vec(&body).unwrap())
}

fn request(c: &mut Criterion) {
    let settings = HubSettings::default();
    let secret = Zeroizing::new("sk-bench".to_string());
    let call = parse_call(BODY);
    let stream_call = parse_call(STREAM_BODY);
    let p = plan(&settings, &secret, &call.model);
    let mut g = c.benchmark_group("request");
    g.bench_function("head_read", |b| {
        b.iter(|| Head::read(black_box(BODY), Endpoint::Chat).unwrap())
    });
    g.bench_function("head_of_tree", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_slice(black_box(BODY)).unwrap();
            Head::of_tree(&v, Endpoint::Chat)
        })
    });
    g.bench_function("parse_body_value", |b| b.iter(|| parse_call(black_box(BODY))));
    g.bench_function("estimate_prompt_tokens", |b| {
        b.iter(|| estimate_prompt_tokens(black_box(&call.body)))
    });
    g.bench_function("credential_and_plan", |b| {
        b.iter(|| plan(&settings, black_box(&secret), black_box("gpt-4o-mini")))
    });
    g.bench_function("check_upstream_url", |b| {
        b.iter(|| netpolicy::check_upstream_url(black_box(BASE_URL), true).unwrap())
    });
    g.bench_function("upstream_body_forwarded", |b| {
        b.iter(|| upstream_body(black_box(&call), &p))
    });
    g.bench_function("upstream_body_stream_usage_injected", |b| {
        b.iter(|| upstream_body(black_box(&stream_call), &p))
    });
    g.bench_function("serialise_only", |b| {
        b.iter(|| serde_json::to_vec(black_box(&call.body)).unwrap())
    });
    g.bench_function("whole_rewrite", |b| {
        b.iter(|| {
            let call = parse_call(black_box(BODY));
            let est = estimate_prompt_tokens(&call.body);
            let p = plan(&settings, &secret, &call.model);
            (upstream_body(&call, &p), est)
        })
    });
    let raw = bytes::Bytes::from_static(BODY);
    g.bench_function("whole_request_head", |b| {
        b.iter(|| {
            let head = Head::read(black_box(&raw), Endpoint::Chat).unwrap();
            let p = plan(&settings, &secret, head.model.as_deref().unwrap_or(""));
            let forwarded = match &p.body_model {
                Some(m) if head.model.as_deref() != Some(m.as_str()) => unreachable!("the bench body keeps its model"),
                _ => raw.clone(),
            };
            (forwarded, head.figures.estimated_prompt)
        })
    });
    g.finish();
}

// ---- response (keygate-gateway/src/pipeline.rs::json_response, MeterGuard::finish) -------------

/// `pipeline.rs::AnswerHead` as it was before `raw::fields`.
#[derive(serde::Deserialize)]
struct AnswerHead {
    #[serde(default)]
    model: Option<Value>,
    #[serde(default)]
    usage: Option<Value>,
}

fn response(c: &mut Criterion) {
    let prices = PriceTable::builtin();
    let mut g = c.benchmark_group("response");
    g.throughput(Throughput::Bytes(ANSWER.len() as u64));
    g.bench_function("answer_fields_read_usage", |b| {
        b.iter(|| {
            let [model, usage] = keygate_gateway::raw::fields(black_box(ANSWER), ["model", "usage"]).unwrap();
            let u = usage.and_then(Usage::from_openai_raw);
            (u, model.and_then(keygate_gateway::raw::str).map(|m| m.into_owned()))
        })
    });
    g.bench_function("answer_head_read_usage", |b| {
        b.iter(|| {
            let head: AnswerHead = serde_json::from_slice(black_box(ANSWER)).unwrap();
            let u = head.usage.as_ref().and_then(Usage::from_openai);
            (u, head.model)
        })
    });
    g.bench_function("parse_answer_tree_read_usage", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_slice(black_box(ANSWER)).unwrap();
            let u = v.get("usage").and_then(Usage::from_openai);
            let m = v.get("model").and_then(Value::as_str).map(str::to_string);
            (u, m)
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("price_lookup_and_cost", |b| {
        b.iter(|| {
            let p = prices.lookup(black_box("openai"), black_box("gpt-4o-mini")).unwrap();
            cost(p, 9, 0, 3)
        })
    });
    g.finish();
}

// ---- sse (keygate-gateway/src/pipeline.rs::StreamState) -----------------------------------------

#[derive(Default)]
struct Scan {
    usage: Option<Usage>,
    completion_events: u64,
    saw_done: bool,
}

/// `StreamState::feed` in `Mode::Raw` (the client asked for usage, or keygate did not inject
/// it): events collected into a Vec, then `on_openai_event` on each.
fn feed(parser: &mut SseParser, scan: &mut Scan, chunk: &[u8]) {
    let mut events: Vec<SseEvent> = Vec::new();
    parser.feed(chunk, |e| events.push(e)).unwrap();
    for ev in events {
        let data = ev.data.as_str();
        if data == "[DONE]" {
            scan.saw_done = true;
            continue;
        }
        if data.contains("\"usage\"") {
            if let Some([usage]) = keygate_gateway::raw::fields(data.as_bytes(), ["usage"]) {
                if let Some(u) = usage.and_then(Usage::from_openai_raw) {
                    scan.usage = Some(u);
                }
            }
        } else if data.contains("\"content\"") || data.contains("\"text\"") {
            scan.completion_events += 1;
        }
    }
}

fn sse(c: &mut Criterion) {
    let mut g = c.benchmark_group("sse");
    for (name, chunk) in [
        ("content_chunk", CONTENT_CHUNK),
        ("usage_chunk", USAGE_CHUNK),
        ("done_chunk", DONE_CHUNK),
    ] {
        g.throughput(Throughput::Bytes(chunk.len() as u64));
        let mut parser = SseParser::default();
        let mut scan = Scan::default();
        g.bench_function(name, |b| b.iter(|| feed(&mut parser, &mut scan, black_box(chunk))));
    }
    let mut split = CONTENT_CHUNK.to_vec();
    let tail = split.split_off(CONTENT_CHUNK.len() / 2);
    g.throughput(Throughput::Bytes(CONTENT_CHUNK.len() as u64));
    let mut parser = SseParser::default();
    let mut scan = Scan::default();
    g.bench_function("content_chunk_split_in_two", |b| {
        b.iter(|| {
            feed(&mut parser, &mut scan, black_box(&split));
            feed(&mut parser, &mut scan, black_box(&tail));
        })
    });
    // A whole answer as the mock sends it: 3 content chunks, the finish chunk, usage, [DONE].
    let mut whole: Vec<&[u8]> = vec![CONTENT_CHUNK; 4];
    whole.push(USAGE_CHUNK);
    whole.push(DONE_CHUNK);
    g.throughput(Throughput::Elements(1));
    g.bench_function("whole_stream_6_frames", |b| {
        b.iter(|| {
            let mut parser = SseParser::default();
            let mut scan = Scan::default();
            for c in &whole {
                feed(&mut parser, &mut scan, black_box(c));
            }
            scan.usage
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = auth, vault, request, response, sse
}
criterion_main!(benches);
