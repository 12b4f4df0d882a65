//! `keygate-testkit`: the mock upstream every gateway test and the benchmark use.
//!
//! [`MockUpstream`] is a small HTTP/1.1 server on `127.0.0.1` that answers like the hubs keygate forwards
//! to (OpenAI-shaped chat / completions / embeddings / models on any path prefix, so Azure, Vertex and
//! DigitalOcean paths work too; Anthropic's Messages API; an OAuth token endpoint). It records every request,
//! counts them, and can be scripted with [`Fault`]s (error statuses, hangs, dropped connections, broken
//! streams, huge frames, invalid UTF-8, bogus usage).
//!
//! All answers are deterministic: ids are fixed (`chatcmpl-mock`, `cmpl-mock`, `msg_mock`), `created` is
//! `1700000000`, the text is [`mock_content`]`(stream_chunks)` and embeddings are [`mock_embedding`].
//!
//! The server lives as long as the [`MockUpstream`] value: dropping it closes the listener and every open
//! connection (so its URL then refuses connections).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

/// The words the mock "model" says, cycled: chunk `i` of a stream carries `WORDS[i % WORDS.len()]`.
pub const WORDS: &[&str] = &["Hel", "lo", "!", " How", " can", " I", " help", "?"];

/// Fixed `created` timestamp of every answer.
pub const CREATED: u64 = 1_700_000_000;

/// Default embedding length when the request has no `dimensions`.
pub const DEFAULT_EMBEDDING_DIMS: usize = 8;

/// The full text of an answer with `chunks` content chunks (`mock_content(3) == "Hello!"`).
/// Non-streaming answers carry `mock_content(config.stream_chunks)`, so both forms say the same thing.
pub fn mock_content(chunks: usize) -> String {
    (0..chunks).map(|i| WORDS[i % WORDS.len()]).collect()
}

/// The embedding the mock returns for input item `index` with `dims` dimensions. Every value is
/// `k/16 - 0.5` for a small integer `k`, so it is exact in `f32` and in decimal.
pub fn mock_embedding(index: usize, dims: usize) -> Vec<f32> {
    (0..dims)
        .map(|j| ((index * 7 + j * 3) % 17) as f32 / 16.0 - 0.5)
        .collect()
}

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// The path exactly as sent (still percent-encoded).
    pub path: String,
    pub query: Option<String>,
    /// Header names are lower-case; a header sent several times appears several times, in order.
    pub headers: Vec<(String, String)>,
    /// The exact body bytes.
    pub body: Bytes,
    /// When the mock finished reading the request (for measuring back-off between attempts).
    pub received_at: Instant,
}

impl Recorded {
    /// First value of a header, name matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The token of an `Authorization: Bearer <token>` header.
    pub fn bearer(&self) -> Option<&str> {
        let v = self.header("authorization")?;
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    }

    /// The body parsed as JSON. Panics (with the body in the message) when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "recorded {} {} body is not JSON ({e}): {}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as `application/x-www-form-urlencoded` pairs (e.g. a token request).
    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    /// One field of a form-encoded body.
    pub fn form_field(&self, name: &str) -> Option<String> {
        self.form().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// How the mock behaves when no fault is queued.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Fixed delay before answering any request (default 0).
    pub latency: Duration,
    /// Content chunks in an SSE answer (default 3: "Hel", "lo", "!").
    pub stream_chunks: usize,
    /// Delay between SSE frames (default 0).
    pub chunk_delay: Duration,
    /// Usage reported: prompt / input tokens (default 9).
    pub prompt_tokens: u64,
    /// Usage reported: completion / output tokens (default 3).
    pub completion_tokens: u64,
    /// Keep recorded requests (default true; the benchmark turns it off). Calls are counted either way.
    pub record: bool,
    /// `expires_in` of tokens from the `/token` endpoint (default 3600).
    pub token_expires_in: u64,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            stream_chunks: 3,
            chunk_delay: Duration::ZERO,
            prompt_tokens: 9,
            completion_tokens: 3,
            record: true,
            token_expires_in: 3600,
        }
    }
}

/// A scripted answer for one request. Queued faults are used in order, one per request, before the
/// default behaviour (and after `config.latency`). Stream faults answer in the format of the route:
/// Anthropic events on `.../messages`, `text_completion` chunks on legacy `.../completions`,
/// `chat.completion.chunk` everywhere else.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer `status` with `body` as JSON, plus `Retry-After: <secs>` when given.
    Status {
        status: u16,
        body: serde_json::Value,
        retry_after: Option<u64>,
    },
    /// Answer `status` (a 3xx) with `Location: location` and an empty JSON body.
    Redirect { status: u16, location: String },
    /// Read the request and never answer; the handler ends when the client closes the connection
    /// (or the mock is dropped).
    Hang,
    /// Close the TCP connection without sending a single byte of response.
    DropConnection,
    /// 200 SSE: the opening events, `chunks` content chunks, then the connection is cut
    /// (no finish chunk, no usage, no `[DONE]`, unterminated chunked body).
    StreamThenDie { chunks: usize },
    /// Wait this long (on top of `config.latency`), then answer normally.
    SlowFirstByte(Duration),
    /// 200 SSE whose first `data:` line is `bytes` long (not counting its `\n`; at least as long as the
    /// event skeleton), a valid event whose text is padded with `x`; the rest of the stream is normal.
    HugeFrame { bytes: usize },
    /// 200 `application/json` of `bytes` bytes (`{"pad":"xx…x"}`), sent in 64 KiB chunks with no
    /// `Content-Length`, so a reader learns its size only by reading it.
    HugeBody { bytes: usize },
    /// 200 SSE that never ends: the opening events, then a content chunk every 10 ms.
    EndlessStream,
    /// 200 SSE whose first content chunk carries the bytes `FF FE FD` inside its JSON string; the rest is normal.
    InvalidUtf8,
    /// A normal 200 answer whose usage numbers are negative, huge (> u64::MAX) and non-integer:
    /// OpenAI `{"prompt_tokens":-7,"completion_tokens":18446744073709551616000,"total_tokens":3.5}`,
    /// Anthropic `{"input_tokens":-7,"output_tokens":18446744073709551616000,"cache_read_input_tokens":3.5}`.
    /// JSON for non-streaming requests; for `stream: true` an SSE answer that always carries the bogus usage.
    BogusUsage,
}

/// The body type the mock answers with.
type Body = UnsyncBoxBody<Bytes, io::Error>;

struct Shared {
    config: MockConfig,
    calls: AtomicUsize,
    recorded: Mutex<Vec<Recorded>>,
    faults: Mutex<VecDeque<(Option<String>, Fault)>>,
    faults_pending: AtomicUsize,
    tokens: AtomicU64,
}

impl Shared {
    fn take_fault(&self, path: &str) -> Option<Fault> {
        if self.faults_pending.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut q = self.faults.lock();
        let pos = q.iter().position(|(suffix, _)| match suffix {
            None => true,
            Some(s) => path.ends_with(s.as_str()),
        })?;
        let (_, fault) = q.remove(pos)?;
        self.faults_pending.store(q.len(), Ordering::Release);
        Some(fault)
    }
}

/// The mock upstream server. Dropping it stops the server.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _shutdown: watch::Sender<()>,
}

impl std::fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .field("calls", &self.calls())
            .finish()
    }
}

impl MockUpstream {
    /// Start on `127.0.0.1:0` with the default config.
    pub async fn start() -> MockUpstream {
        Self::start_with(MockConfig::default()).await
    }

    /// Start on `127.0.0.1:0` with `config`.
    pub async fn start_with(config: MockConfig) -> MockUpstream {
        let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
        Self::bind(addr, config).await.expect("mock upstream: bind 127.0.0.1:0")
    }

    /// Start on a chosen address (port 0 picks a free port). Must be called inside a Tokio runtime;
    /// the server runs on that runtime's tasks.
    pub async fn bind(addr: SocketAddr, config: MockConfig) -> io::Result<MockUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            calls: AtomicUsize::new(0),
            recorded: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            faults_pending: AtomicUsize::new(0),
            tokens: AtomicU64::new(0),
        });
        let (tx, rx) = watch::channel(());
        tokio::spawn(accept_loop(listener, shared.clone(), rx));
        Ok(MockUpstream {
            addr,
            shared,
            _shutdown: tx,
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash, no `/v1`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn config(&self) -> &MockConfig {
        &self.shared.config
    }

    /// Recorded requests in the order their bodies were read (empty when `record` is off).
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().clone()
    }

    /// Recorded requests whose path ends with `suffix` (e.g. `"/chat/completions"`, `"/token"`).
    pub fn requests_to(&self, suffix: &str) -> Vec<Recorded> {
        self.shared
            .recorded
            .lock()
            .iter()
            .filter(|r| r.path.ends_with(suffix))
            .cloned()
            .collect()
    }

    /// The most recent recorded request.
    pub fn last_request(&self) -> Option<Recorded> {
        self.shared.recorded.lock().last().cloned()
    }

    /// Requests received since start (or the last [`clear`](Self::clear)), counted as soon as their
    /// head arrives, whether recorded or not, faulted or not.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// Forget recorded requests and reset [`calls`](Self::calls) to 0. Queued faults and the token
    /// counter are kept (see [`clear_faults`](Self::clear_faults)).
    pub fn clear(&self) {
        let mut rec = self.shared.recorded.lock();
        rec.clear();
        self.shared.calls.store(0, Ordering::SeqCst);
    }

    /// Queue a scripted answer for the next request (any path). Several queued faults are used in order.
    pub fn push_fault(&self, fault: Fault) {
        let mut q = self.shared.faults.lock();
        q.push_back((None, fault));
        self.shared.faults_pending.store(q.len(), Ordering::Release);
    }

    /// Queue a scripted answer for the next request whose path ends with `path_suffix`
    /// (e.g. `"/chat/completions"`, so a Vertex token fetch does not consume it).
    pub fn push_fault_for(&self, path_suffix: &str, fault: Fault) {
        let mut q = self.shared.faults.lock();
        q.push_back((Some(path_suffix.to_owned()), fault));
        self.shared.faults_pending.store(q.len(), Ordering::Release);
    }

    /// Faults still queued.
    pub fn pending_faults(&self) -> usize {
        self.shared.faults.lock().len()
    }

    /// Drop every queued fault.
    pub fn clear_faults(&self) {
        let mut q = self.shared.faults.lock();
        q.clear();
        self.shared.faults_pending.store(0, Ordering::Release);
    }

    /// Access tokens issued by the `/token` endpoint so far (the last one is `mock-access-<n>`).
    pub fn tokens_issued(&self) -> u64 {
        self.shared.tokens.load(Ordering::SeqCst)
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<()>) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let builder = builder.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let kill = Arc::new(Notify::new());
            let kill_svc = kill.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                let kill = kill_svc.clone();
                async move { Ok::<_, Infallible>(handle(&shared, &kill, req).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = kill.notified() => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------------
// Routing and answers
// ---------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
    Messages,
}

enum Route {
    Generate(Kind),
    Embeddings,
    Models,
    Model(String),
    Token,
    NotFound,
}

fn route(method: &Method, path: &str) -> Route {
    let p = path.trim_end_matches('/');
    if method == Method::POST {
        if p.ends_with("/chat/completions") {
            return Route::Generate(Kind::Chat);
        }
        if p.ends_with("/completions") {
            return Route::Generate(Kind::Text);
        }
        if p.ends_with("/messages") {
            return Route::Generate(Kind::Messages);
        }
        if p.ends_with("/embeddings") {
            return Route::Embeddings;
        }
        if p == "/token" || p.ends_with("/token") {
            return Route::Token;
        }
    } else if method == Method::GET {
        if p.ends_with("/models") {
            return Route::Models;
        }
        if let Some(i) = p.find("/models/") {
            let raw = &p[i + "/models/".len()..];
            let id = url::form_urlencoded::parse(format!("id={}", raw.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            return Route::Model(id);
        }
    }
    Route::NotFound
}

async fn handle(shared: &Shared, kill: &Notify, req: Request<Incoming>) -> Response<Body> {
    shared.calls.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                error_json("could not read the body", "bad_body"),
            )
        }
    };
    let path = parts.uri.path();
    let config = &shared.config;
    if config.record {
        let rec = Recorded {
            method: parts.method.as_str().to_owned(),
            path: path.to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.clone(),
            received_at: Instant::now(),
        };
        shared.recorded.lock().push(rec);
    }
    let fault = shared.take_fault(path);
    if !config.latency.is_zero() {
        tokio::time::sleep(config.latency).await;
    }
    let route = route(&parts.method, path);
    match fault {
        None => answer(shared, route, path, &body, Special::None),
        Some(Fault::SlowFirstByte(d)) => {
            tokio::time::sleep(d).await;
            answer(shared, route, path, &body, Special::None)
        }
        Some(Fault::Status {
            status,
            body,
            retry_after,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = json_response(status, serde_json::to_vec(&body).unwrap_or_default());
            if let Some(secs) = retry_after {
                resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
            }
            resp
        }
        Some(Fault::Redirect { status, location }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::TEMPORARY_REDIRECT);
            let mut resp = json_response(status, b"{}".to_vec());
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(LOCATION, v);
            }
            resp
        }
        Some(Fault::Hang) => std::future::pending().await,
        Some(Fault::DropConnection) => {
            kill.notify_one();
            std::future::pending().await
        }
        Some(Fault::StreamThenDie { chunks }) => answer(shared, route, path, &body, Special::Die(chunks)),
        Some(Fault::HugeFrame { bytes }) => answer(shared, route, path, &body, Special::Huge(bytes)),
        Some(Fault::HugeBody { bytes }) => huge_body(bytes),
        Some(Fault::EndlessStream) => answer(shared, route, path, &body, Special::Endless),
        Some(Fault::InvalidUtf8) => answer(shared, route, path, &body, Special::InvalidUtf8),
        Some(Fault::BogusUsage) => answer(shared, route, path, &body, Special::Bogus),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Special {
    None,
    Die(usize),
    Huge(usize),
    Endless,
    InvalidUtf8,
    Bogus,
}

#[derive(Deserialize, Default)]
struct GenRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

fn answer(shared: &Shared, route: Route, path: &str, body: &Bytes, special: Special) -> Response<Body> {
    let config = &shared.config;
    // Stream faults answer in the route's format even on routes that do not stream.
    let kind = match &route {
        Route::Generate(k) => *k,
        _ => Kind::Chat,
    };
    let forced_stream = matches!(
        special,
        Special::Die(_) | Special::Huge(_) | Special::Endless | Special::InvalidUtf8
    );
    match route {
        Route::Generate(_) => {}
        _ if forced_stream => {}
        Route::Embeddings => return embeddings(config, body, special),
        Route::Models => return json_response(StatusCode::OK, MODELS_JSON.as_bytes().to_vec()),
        Route::Model(id) => return json_response(StatusCode::OK, model_json(&id).into_bytes()),
        Route::Token => return token(shared, body),
        Route::NotFound => {
            return json_response(
                StatusCode::NOT_FOUND,
                error_json(&format!("mock upstream: no route for {path}"), "not_found"),
            )
        }
    }
    let req: GenRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) if !forced_stream => {
            return json_response(
                StatusCode::BAD_REQUEST,
                error_json(&format!("mock upstream: invalid JSON body: {e}"), "invalid_json"),
            )
        }
        Err(_) => GenRequest::default(),
    };
    let model = req
        .model
        .clone()
        .or_else(|| azure_deployment(path))
        .unwrap_or_else(|| "mock-model".to_owned());
    let gen = Gen {
        kind,
        model_json: serde_json::to_string(&model).unwrap_or_else(|_| "\"mock-model\"".to_owned()),
        prompt: config.prompt_tokens,
        completion: config.completion_tokens,
        bogus: special == Special::Bogus,
        include_usage: req
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
            || special == Special::Bogus,
    };
    let stream = req.stream.unwrap_or(false) || forced_stream;
    if !stream {
        return json_response(StatusCode::OK, gen.full_body(config.stream_chunks));
    }
    let chunks = config.stream_chunks;
    let (queue, tail, delay) = match special {
        Special::Die(n) => {
            let mut q = gen.prologue(None);
            q.extend((0..n).map(|i| gen.content_event(i, false)));
            (q, Tail::Die, config.chunk_delay)
        }
        Special::Endless => (gen.prologue(None), Tail::Endless(0), Duration::from_millis(10)),
        Special::Huge(bytes) => {
            let mut q = if kind == Kind::Text {
                let mut q = gen.prologue(None);
                q.push_back(gen.text_padded_event(bytes));
                q
            } else {
                gen.prologue(Some(bytes))
            };
            q.extend((0..chunks).map(|i| gen.content_event(i, false)));
            q.extend(gen.epilogue());
            (q, Tail::Done, config.chunk_delay)
        }
        Special::InvalidUtf8 => {
            let mut q = gen.prologue(None);
            q.extend((0..chunks.max(1)).map(|i| gen.content_event(i, i == 0)));
            q.extend(gen.epilogue());
            (q, Tail::Done, config.chunk_delay)
        }
        Special::None | Special::Bogus => {
            let mut q = gen.prologue(None);
            q.extend((0..chunks).map(|i| gen.content_event(i, false)));
            q.extend(gen.epilogue());
            (q, Tail::Done, config.chunk_delay)
        }
    };
    sse_response(StreamState {
        queue,
        tail,
        delay,
        first: true,
        gen,
    })
}

/// Azure: `/openai/deployments/{dep}/...` -> `dep` (used as the answer's model when the body has none).
fn azure_deployment(path: &str) -> Option<String> {
    let rest = path.split("/deployments/").nth(1)?;
    let dep = rest.split('/').next()?;
    (!dep.is_empty()).then(|| dep.to_owned())
}

struct Gen {
    kind: Kind,
    model_json: String,
    prompt: u64,
    completion: u64,
    bogus: bool,
    include_usage: bool,
}

const BOGUS_OPENAI_USAGE: &str =
    r#"{"prompt_tokens":-7,"completion_tokens":18446744073709551616000,"total_tokens":3.5}"#;
const BOGUS_ANTHROPIC_USAGE: &str =
    r#"{"input_tokens":-7,"output_tokens":18446744073709551616000,"cache_read_input_tokens":3.5}"#;
const BOGUS_ANTHROPIC_START_USAGE: &str = r#"{"input_tokens":-7,"output_tokens":1,"cache_read_input_tokens":3.5}"#;
const BOGUS_ANTHROPIC_DELTA_USAGE: &str = r#"{"output_tokens":18446744073709551616000}"#;

impl Gen {
    fn openai_usage(&self) -> String {
        if self.bogus {
            return BOGUS_OPENAI_USAGE.to_owned();
        }
        format!(
            r#"{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}}}"#,
            self.prompt,
            self.completion,
            self.prompt.saturating_add(self.completion)
        )
    }

    fn anthropic_usage(&self) -> String {
        if self.bogus {
            return BOGUS_ANTHROPIC_USAGE.to_owned();
        }
        format!(
            r#"{{"input_tokens":{},"output_tokens":{}}}"#,
            self.prompt, self.completion
        )
    }

    fn full_body(&self, chunks: usize) -> Vec<u8> {
        let content = serde_json::to_string(&mock_content(chunks)).unwrap_or_default();
        let m = &self.model_json;
        match self.kind {
            Kind::Chat => format!(
                r#"{{"id":"chatcmpl-mock","object":"chat.completion","created":{CREATED},"model":{m},"system_fingerprint":"fp_mock","choices":[{{"index":0,"message":{{"role":"assistant","content":{content},"refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"usage":{}}}"#,
                self.openai_usage()
            ),
            Kind::Text => format!(
                r#"{{"id":"cmpl-mock","object":"text_completion","created":{CREATED},"model":{m},"choices":[{{"text":{content},"index":0,"logprobs":null,"finish_reason":"stop"}}],"usage":{}}}"#,
                self.openai_usage()
            ),
            Kind::Messages => format!(
                r#"{{"id":"msg_mock","type":"message","role":"assistant","model":{m},"content":[{{"type":"text","text":{content}}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{}}}"#,
                self.anthropic_usage()
            ),
        }
        .into_bytes()
    }

    /// `data: {head` for OpenAI chunks; the caller appends the choices and `]}`.
    fn openai_head(&self) -> String {
        let m = &self.model_json;
        match self.kind {
            Kind::Text => {
                format!(
                    r#"data: {{"id":"cmpl-mock","object":"text_completion","created":{CREATED},"model":{m},"choices":["#
                )
            }
            _ => format!(
                r#"data: {{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":{CREATED},"model":{m},"system_fingerprint":"fp_mock","choices":["#
            ),
        }
    }

    /// Events before the content chunks. `huge`: make the first data line that long.
    fn prologue(&self, huge: Option<usize>) -> VecDeque<Bytes> {
        let mut q = VecDeque::new();
        match self.kind {
            Kind::Chat => {
                let head = self.openai_head();
                let before = format!(r#"{head}{{"index":0,"delta":{{"role":"assistant","content":""#);
                let after = r#""},"logprobs":null,"finish_reason":null}]}"#;
                q.push_back(padded_line(&before, after, huge, "\n\n"));
            }
            Kind::Text => {}
            Kind::Messages => {
                let usage = if self.bogus {
                    BOGUS_ANTHROPIC_START_USAGE.to_owned()
                } else {
                    format!(r#"{{"input_tokens":{},"output_tokens":1}}"#, self.prompt)
                };
                let before = r#"data: {"type":"message_start","message":{"id":"msg_mock"#;
                let after = format!(
                    r#"","type":"message","role":"assistant","model":{},"content":[],"stop_reason":null,"stop_sequence":null,"usage":{usage}}}}}"#,
                    self.model_json
                );
                let mut ev = b"event: message_start\n".to_vec();
                ev.extend_from_slice(&padded_line(before, &after, huge, "\n\n"));
                q.push_back(Bytes::from(ev));
                q.push_back(Bytes::from_static(
                    b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
                ));
                q.push_back(Bytes::from_static(b"event: ping\ndata: {\"type\":\"ping\"}\n\n"));
            }
        }
        q
    }

    /// Legacy completions with HugeFrame: a first content chunk whose text is padding.
    fn text_padded_event(&self, bytes: usize) -> Bytes {
        let before = format!(r#"{}{{"text":""#, self.openai_head());
        padded_line(
            &before,
            r#"","index":0,"logprobs":null,"finish_reason":null}]}"#,
            Some(bytes),
            "\n\n",
        )
    }

    fn content_event(&self, i: usize, invalid_utf8: bool) -> Bytes {
        let word = WORDS[i % WORDS.len()];
        let mut text: Vec<u8> = Vec::with_capacity(word.len() + 3);
        if invalid_utf8 {
            text.extend_from_slice(&[0xFF, 0xFE, 0xFD]);
        }
        text.extend_from_slice(word.as_bytes());
        let (before, after): (String, &str) = match self.kind {
            Kind::Chat => (
                format!(r#"{}{{"index":0,"delta":{{"content":""#, self.openai_head()),
                r#""},"logprobs":null,"finish_reason":null}]}"#,
            ),
            Kind::Text => (
                format!(r#"{}{{"text":""#, self.openai_head()),
                r#"","index":0,"logprobs":null,"finish_reason":null}]}"#,
            ),
            Kind::Messages => (
                r#"event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""#
                    .to_owned(),
                r#""}}"#,
            ),
        };
        let mut ev = Vec::with_capacity(before.len() + text.len() + after.len() + 2);
        ev.extend_from_slice(before.as_bytes());
        ev.extend_from_slice(&text);
        ev.extend_from_slice(after.as_bytes());
        ev.extend_from_slice(b"\n\n");
        Bytes::from(ev)
    }

    fn epilogue(&self) -> Vec<Bytes> {
        let mut v = Vec::with_capacity(3);
        match self.kind {
            Kind::Chat | Kind::Text => {
                let head = self.openai_head();
                let finish = if self.kind == Kind::Chat {
                    r#"{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}"#
                } else {
                    r#"{"text":"","index":0,"logprobs":null,"finish_reason":"stop"}"#
                };
                v.push(Bytes::from(format!("{head}{finish}]}}\n\n")));
                if self.include_usage {
                    v.push(Bytes::from(format!("{head}],\"usage\":{}}}\n\n", self.openai_usage())));
                }
                v.push(Bytes::from_static(b"data: [DONE]\n\n"));
            }
            Kind::Messages => {
                v.push(Bytes::from_static(
                    b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
                ));
                let usage = if self.bogus {
                    BOGUS_ANTHROPIC_DELTA_USAGE.to_owned()
                } else {
                    format!(r#"{{"output_tokens":{}}}"#, self.completion)
                };
                v.push(Bytes::from(format!(
                    "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{usage}}}\n\n"
                )));
                v.push(Bytes::from_static(
                    b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
                ));
            }
        }
        v
    }
}

/// `before + pad + after + end`, with `pad` made of `x` so that `before + pad + after` is `len` bytes long.
fn padded_line(before: &str, after: &str, len: Option<usize>, end: &str) -> Bytes {
    let pad = len.map(|l| l.saturating_sub(before.len() + after.len())).unwrap_or(0);
    let mut v = Vec::with_capacity(before.len() + pad + after.len() + end.len());
    v.extend_from_slice(before.as_bytes());
    v.resize(v.len() + pad, b'x');
    v.extend_from_slice(after.as_bytes());
    v.extend_from_slice(end.as_bytes());
    Bytes::from(v)
}

enum Tail {
    Done,
    Die,
    Endless(usize),
    Finished,
}

struct StreamState {
    queue: VecDeque<Bytes>,
    tail: Tail,
    delay: Duration,
    first: bool,
    gen: Gen,
}

fn sse_response(state: StreamState) -> Response<Body> {
    let stream = futures::stream::unfold(state, |mut st| async move {
        let item: Result<Bytes, io::Error> = if let Some(b) = st.queue.pop_front() {
            Ok(b)
        } else {
            match st.tail {
                Tail::Done | Tail::Finished => return None,
                Tail::Die => {
                    st.tail = Tail::Finished;
                    // Return Pending once so hyper flushes what it buffered; an error while the head and
                    // chunks are still in its write buffer would drop them unsent.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    return Some((
                        Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "mock upstream: stream died",
                        )),
                        st,
                    ));
                }
                Tail::Endless(i) => {
                    st.tail = Tail::Endless(i.wrapping_add(1));
                    Ok(st.gen.content_event(i, false))
                }
            }
        };
        if !st.first && !st.delay.is_zero() {
            tokio::time::sleep(st.delay).await;
        }
        st.first = false;
        Some((item.map(Frame::data), st))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn huge_body(bytes: usize) -> Response<Body> {
    const CHUNK: usize = 64 * 1024;
    let pad = bytes.saturating_sub(10).max(1);
    let head = Bytes::from_static(b"{\"pad\":\"");
    let tail = Bytes::from_static(b"\"}");
    let filler = Bytes::from(vec![b'x'; CHUNK]);
    let mut parts = vec![head];
    let mut left = pad;
    while left > 0 {
        let n = left.min(CHUNK);
        parts.push(filler.slice(..n));
        left -= n;
    }
    parts.push(tail);
    let stream = futures::stream::iter(parts.into_iter().map(|b| Ok::<_, io::Error>(Frame::data(b))));
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error_json(message: &str, code: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}
    }))
    .unwrap_or_default()
}

const MODELS_JSON: &str = r#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1686935002,"owned_by":"openai"},{"id":"text-embedding-3-small","object":"model","created":1705948997,"owned_by":"system"}]}"#;

/// Any id is answered (known ones with their fixed fields, others `owned_by: "mock"`).
fn model_json(id: &str) -> String {
    let (created, owner) = match id {
        "gpt-4o-mini" => (1_686_935_002, "openai"),
        "text-embedding-3-small" => (1_705_948_997, "system"),
        _ => (CREATED, "mock"),
    };
    serde_json::json!({"id": id, "object": "model", "created": created, "owned_by": owner}).to_string()
}

#[derive(Deserialize)]
struct EmbeddingsRequest {
    #[serde(default)]
    model: Option<String>,
    input: serde_json::Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
}

fn embeddings(config: &MockConfig, body: &Bytes, special: Special) -> Response<Body> {
    let req: EmbeddingsRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                error_json(&format!("mock upstream: invalid embeddings body: {e}"), "invalid_json"),
            )
        }
    };
    // A string or an array of token ids is one item; an array of strings / token arrays is one per element.
    let items = match &req.input {
        serde_json::Value::Array(a) if a.iter().all(|v| v.is_number()) && !a.is_empty() => 1,
        serde_json::Value::Array(a) => a.len(),
        _ => 1,
    };
    let dims = req.dimensions.unwrap_or(DEFAULT_EMBEDDING_DIMS).clamp(1, 4096);
    let base64 = req.encoding_format.as_deref() == Some("base64");
    let data: Vec<serde_json::Value> = (0..items)
        .map(|i| {
            let v = mock_embedding(i, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                serde_json::json!(v)
            };
            serde_json::json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let model = serde_json::to_string(&req.model.unwrap_or_else(|| "mock-model".to_owned())).unwrap_or_default();
    let data = serde_json::to_string(&data).unwrap_or_default();
    let usage = if special == Special::Bogus {
        r#"{"prompt_tokens":-7,"total_tokens":18446744073709551616000.5}"#.to_owned()
    } else {
        format!(r#"{{"prompt_tokens":{0},"total_tokens":{0}}}"#, config.prompt_tokens)
    };
    let out = format!(r#"{{"object":"list","data":{data},"model":{model},"usage":{usage}}}"#).into_bytes();
    json_response(StatusCode::OK, out)
}

fn token(shared: &Shared, body: &Bytes) -> Response<Body> {
    let grant = url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "grant_type")
        .map(|(_, v)| v.into_owned());
    match grant.as_deref() {
        Some("refresh_token") | Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
            let n = shared.tokens.fetch_add(1, Ordering::SeqCst) + 1;
            let body = format!(
                r#"{{"access_token":"mock-access-{n}","expires_in":{},"token_type":"Bearer"}}"#,
                shared.config.token_expires_in
            );
            json_response(StatusCode::OK, body.into_bytes())
        }
        _ => json_response(
            StatusCode::BAD_REQUEST,
            br#"{"error":"unsupported_grant_type","error_description":"mock upstream: grant_type must be refresh_token or urn:ietf:params:oauth:grant-type:jwt-bearer"}"#
                .to_vec(),
        ),
    }
}
