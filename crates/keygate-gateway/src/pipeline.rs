//! The OpenAI-compatible gateway: authenticate (done by the route's role), choose
//! the virtual key, check it, resolve the model, pick a target, build the upstream request
//! with the stored secret, forward, stream the answer back unbuffered, meter it.
//!
//! What must stay true: no store round trip on this path (keys and secrets come from
//! [`keygate_core::runtime::Runtime`]); the client's credentials never reach the upstream; no header
//! or body field changes the upstream URL; nothing retries after the first byte reached the
//! client; every request that reached an upstream leaves one usage record, also when the
//! client goes away mid-stream.
//!
//! Over 800 lines for now: the steps of `docs/architecture.md` ("A gateway request") are still
//! to be cut into modules of their own, with one type per wire format behind one trait.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hubs::anthropic::{self, StreamTranslator};
use crate::hubs::vertex_auth::{TokenCache, VertexCredentials};
use crate::hubs::{self, Endpoint, Plan, Provider, Wire};
use crate::raw;
use crate::request::Head;
use crate::sse::{SseEvent, SseParser};
use crate::Usage;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use keygate_store::UsageRow;
use keygate_types::netpolicy;
use keygate_types::pricing::{cost, max_cost, PriceTable};
use keygate_types::timefmt::now_ms;
use keygate_types::ModelHub;
use rand::Rng;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use keygate_core::auth::Principal;
use keygate_core::limits;
use keygate_core::meter::Meter;
use keygate_core::runtime::{ProviderRuntime, Runtime, VkRuntime};
use keygate_types::policy::{ModelPrivacy, Strategy};

use crate::error::ApiError;

/// What the gateway's handlers share: the core's key caches, limits and meter, the upstream
/// client, and the body cap. Built once by the API's state (`keygate_api::AppState`).
pub struct GatewayState {
    pub runtime: Arc<Runtime>,
    pub limits: Arc<limits::LimitEngine>,
    pub meter: Meter,
    pub upstream: Arc<Upstream>,
    /// Request body cap in bytes (413 above it, before parsing).
    pub max_body_bytes: usize,
}

/// The handlers' state (one `Arc`, cloned per request by the router).
type AppState = Arc<GatewayState>;

const USER_AGENT: &str = concat!("keygate/", env!("CARGO_PKG_VERSION"));

/// Timeouts and defaults of upstream calls.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    pub connect_timeout: Duration,
    /// From sending the request to the answer's status line.
    pub first_byte_timeout: Duration,
    /// Between two chunks of a streamed answer.
    pub idle_timeout: Duration,
    /// The whole request.
    pub total_timeout: Duration,
    /// `max_tokens` sent to Anthropic when the client gives none (Anthropic requires one).
    pub anthropic_default_max_tokens: u32,
    /// Largest non-streamed upstream answer keygate reads.
    pub max_response_bytes: usize,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(120),
            total_timeout: Duration::from_secs(900),
            anthropic_default_max_tokens: 4096,
            max_response_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The gateway's upstream HTTP client: hyper-util's pooled client over rustls, names resolved
/// by [`PolicyResolver`]. No redirect, retry or cookie layers: keygate follows no redirect.
pub type UpstreamClient = hyper_util::client::legacy::Client<UpstreamConnector, http_body_util::Full<Bytes>>;

/// An upstream answer: its head and its body as it arrives.
type UpstreamResponse = http::Response<hyper::body::Incoming>;

/// The TLS-capable connector every upstream client is built on (its rustls configuration is shared).
type UpstreamConnector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector<PolicyResolver>>;

/// The upstream side: an HTTP client (and connection pool) per thread that serves requests, the
/// Vertex token cache, the prices.
///
/// A pool per thread keeps a request and the task that drives its upstream connection on the
/// same thread: with one shared pool, a connection opened by one serving thread and checked out
/// by another costs two cross-thread wake-ups per request (docs/benchmarks.md).
pub struct Upstream {
    connector: UpstreamConnector,
    clients: thread_local::ThreadLocal<UpstreamClient>,
    pub vertex_tokens: TokenCache,
    pub settings: GatewaySettings,
    pub prices: Arc<PriceTable>,
    pub allow_private: bool,
}

/// Resolves names and refuses addresses the URL policy forbids, at connect time.
#[derive(Clone, Debug)]
pub struct PolicyResolver {
    allow_private: bool,
}

impl PolicyResolver {
    async fn lookup(host: String, allow_private: bool) -> std::io::Result<Vec<std::net::SocketAddr>> {
        let allowed: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
            .await?
            .filter(|a| netpolicy::address_allowed(a.ip(), allow_private).is_ok())
            .collect();
        if allowed.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{host} resolves only to addresses keygate may not connect to"),
            ));
        }
        Ok(allowed)
    }
}

impl tower::Service<hyper_util::client::legacy::connect::dns::Name> for PolicyResolver {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let (host, allow_private) = (name.as_str().to_string(), self.allow_private);
        Box::pin(async move { Ok(PolicyResolver::lookup(host, allow_private).await?.into_iter()) })
    }
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let allowed = PolicyResolver::lookup(host, allow_private).await?;
            let iter: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(iter)
        })
    }
}

impl Upstream {
    pub fn new(settings: GatewaySettings, prices: Arc<PriceTable>, allow_private: bool) -> Result<Upstream, String> {
        let mut http =
            hyper_util::client::legacy::connect::HttpConnector::new_with_resolver(PolicyResolver { allow_private });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| format!("cannot set up TLS for upstream calls: {e}"))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let token_client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.connect_timeout)
            .dns_resolver(Arc::new(PolicyResolver { allow_private }))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Upstream {
            connector: https,
            clients: thread_local::ThreadLocal::new(),
            vertex_tokens: TokenCache::new(token_client, Duration::from_secs(300)),
            settings,
            prices,
            allow_private,
        })
    }

    /// This thread's client, made on its first upstream call.
    pub fn client(&self) -> &UpstreamClient {
        self.clients.get_or(|| {
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(256)
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .build(self.connector.clone())
        })
    }
}

fn gw_error(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

/// One message for every reason a virtual key cannot be used, so none can be told apart.
fn vk_forbidden() -> ApiError {
    gw_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        "the virtual key is unknown, disabled, expired or not usable with this API key",
    )
}

const NO_VK: &str =
    "no virtual key: send the header x-keygate-virtual-key (or x-portkey-virtual-key), write the model as \
                     @slug/model, or give the API key a defaultVirtualKey";

/// Which virtual key a request names, and the model with any `@slug/` prefix removed.
fn choose_vk(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    model: &str,
) -> Result<(Arc<VkRuntime>, String), ApiError> {
    let header = ["x-keygate-virtual-key", "x-portkey-virtual-key"].iter().find_map(|h| {
        headers
            .get(*h)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    });
    let (name, model) = if let Some(h) = header {
        (h.to_string(), model.to_string())
    } else if let Some(rest) = model.strip_prefix('@') {
        match rest.split_once('/') {
            Some((slug, m)) => (slug.to_string(), m.to_string()),
            None => (rest.to_string(), String::new()),
        }
    } else if let Some(d) = &principal.settings.default_virtual_key {
        (d.clone(), model.to_string())
    } else {
        return Err(ApiError::bad_request(NO_VK));
    };
    let Some(vk) = state.runtime.virtual_key(&name) else {
        return Err(unreadable_vk(state, principal, &name).unwrap_or_else(vk_forbidden));
    };
    check_vk(principal, &vk, now_ms())?;
    Ok((vk, model))
}

/// A 503 naming the virtual key when its stored configuration cannot be read and the caller
/// could use it otherwise (same workspace, listed); `None` when it is simply not usable.
fn unreadable_vk(state: &AppState, principal: &Principal, name: &str) -> Option<ApiError> {
    let u = state.runtime.unreadable_virtual_key(name)?;
    may_use(principal, &u.workspace, &u.slug, &u.id).then(|| {
        gw_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "virtual key {} cannot be used: its stored {}; it is refused until an administrator repairs or replaces it",
                u.id, u.reason
            ),
        )
    })
}

/// Whether the platform key may name the virtual key (`workspace`, `slug`, `id`): the same
/// workspace (or an organisation admin), and listed when the key lists virtual keys.
fn may_use(principal: &Principal, workspace: &str, slug: &str, id: &str) -> bool {
    let same_workspace = workspace == principal.workspace || principal.org_admin;
    let listed = principal.settings.virtual_keys.is_empty()
        || principal.settings.virtual_keys.iter().any(|v| v == slug || v == id);
    same_workspace && listed
}

fn check_vk(principal: &Principal, vk: &VkRuntime, now: i64) -> Result<(), ApiError> {
    let expired = vk.expires_at.is_some_and(|e| now >= e);
    if !may_use(principal, &vk.workspace, &vk.slug, &vk.id) || vk.disabled || expired {
        return Err(vk_forbidden());
    }
    Ok(())
}

/// The upstream model: the virtual key's alias for it, its default when the model is empty
/// (or Portkey's placeholder), checked against the allow-list.
fn resolve_model(vk: &VkRuntime, requested: &str) -> Result<String, ApiError> {
    let cfg = &vk.config;
    let requested = if requested.is_empty() || requested == "portkey-default" {
        match &cfg.default_model {
            Some(d) => d.as_str(),
            None => requested,
        }
    } else {
        requested
    };
    let resolved = cfg.aliases.get(requested).map(String::as_str).unwrap_or(requested);
    if !cfg.models.is_empty() && !cfg.models.iter().any(|m| m == requested || m == resolved) {
        return Err(gw_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this model is not allowed for the virtual key",
        ));
    }
    Ok(resolved.to_string())
}

/// The order in which targets are tried.
fn target_order(vk: &VkRuntime) -> Vec<String> {
    let targets = &vk.config.targets;
    match vk.config.strategy {
        Strategy::Single | Strategy::Fallback => targets.iter().map(|t| t.provider_key_id.clone()).collect(),
        Strategy::Loadbalance => {
            // Weighted draw without replacement: the first pick follows the weights, the rest are fallbacks.
            let mut pool: Vec<(String, u64)> = targets
                .iter()
                .map(|t| (t.provider_key_id.clone(), u64::from(t.weight)))
                .collect();
            let mut out = Vec::with_capacity(pool.len());
            let mut rng = rand::thread_rng();
            while !pool.is_empty() {
                let total: u64 = pool.iter().map(|p| p.1).sum();
                let mut pick = rng.gen_range(0..total.max(1));
                let mut idx = 0;
                for (i, p) in pool.iter().enumerate() {
                    if pick < p.1 {
                        idx = i;
                        break;
                    }
                    pick -= p.1;
                }
                out.push(pool.remove(idx).0);
            }
            out
        }
    }
}

/// The credential to present upstream: the key, an agent key, or a Vertex access token.
async fn credential(state: &AppState, p: &ProviderRuntime) -> Result<Zeroizing<String>, ApiError> {
    let missing = || {
        gw_error(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "the provider key has no usable secret",
        )
    };
    match p.hub {
        ModelHub::Vertex => {
            let creds = if let Some(sa) = p.expose_secret("service_account_json") {
                VertexCredentials::ServiceAccount {
                    json: Zeroizing::new(sa.to_string()),
                }
            } else {
                VertexCredentials::OAuth {
                    client_id: p.settings.client_id.clone().unwrap_or_default(),
                    client_secret: Zeroizing::new(p.expose_secret("client_secret").ok_or_else(missing)?.to_string()),
                    refresh_token: Zeroizing::new(p.expose_secret("refresh_token").ok_or_else(missing)?.to_string()),
                }
            };
            let key = format!("{}:{}", p.id, p.secret_version);
            let token = state
                .upstream
                .vertex_tokens
                .token(&key, &creds, p.settings.token_url.as_deref())
                .await
                .map_err(|e| {
                    tracing::warn!(provider_key = %p.id, error = %e, "cannot get a Vertex access token");
                    gw_error(
                        StatusCode::BAD_GATEWAY,
                        "upstream_error",
                        "cannot get an access token for the Vertex provider key",
                    )
                })?;
            Ok(Zeroizing::new(token.as_str().to_string()))
        }
        ModelHub::DigitalOcean if p.settings.agent_id.is_some() => Ok(Zeroizing::new(
            p.expose_secret("agent_key").ok_or_else(missing)?.to_string(),
        )),
        _ => Ok(Zeroizing::new(
            p.expose_secret("api_key").ok_or_else(missing)?.to_string(),
        )),
    }
}

/// Records a request's usage exactly once: when it ends, or when it is dropped (the client
/// went away) with what the upstream produced until then.
struct MeterGuard {
    meter: Meter,
    prices: Arc<PriceTable>,
    row: Option<UsageRow>,
    started: Instant,
    usage: Option<Usage>,
    estimated_prompt: u64,
    completion_events: u64,
    /// The limits reserved for this request, settled when it ends.
    reservation: Option<limits::Reservation>,
}

impl MeterGuard {
    fn finish(&mut self, status: u16, error_kind: Option<&str>) {
        let Some(mut row) = self.row.take() else {
            return;
        };
        let (usage, estimated) = match self.usage {
            Some(u) => (u, false),
            None if status < 400 || self.completion_events > 0 => (
                Usage {
                    prompt_tokens: self.estimated_prompt,
                    completion_tokens: self.completion_events,
                    ..Usage::default()
                },
                true,
            ),
            None => (Usage::default(), false),
        };
        let hub = row.hub.clone().unwrap_or_default();
        let model = row.model.clone().unwrap_or_default();
        let price = self.prices.lookup(&hub, &model);
        let nano = price
            .map(|p| {
                cost(
                    p,
                    usage.prompt_tokens,
                    usage.cached_prompt_tokens,
                    usage.completion_tokens,
                )
                .0
            })
            .unwrap_or(0);
        row.status_code = i64::from(status);
        row.prompt_tokens = usage.prompt_tokens as i64;
        row.completion_tokens = usage.completion_tokens as i64;
        row.cached_tokens = usage.cached_prompt_tokens as i64;
        row.cost_nano = nano;
        row.estimated = estimated;
        row.latency_ms = self.started.elapsed().as_millis() as i64;
        row.error_kind = error_kind.map(str::to_string);
        if let Some(mut r) = self.reservation.take() {
            r.settle(usage.prompt_tokens.saturating_add(usage.completion_tokens), nano);
        }
        self.meter.record(row);
    }
}

impl Drop for MeterGuard {
    fn drop(&mut self) {
        if self.row.is_some() {
            self.finish(499, Some("client_disconnected"));
        }
    }
}

/// What the client asked for, read once.
struct Call {
    endpoint: Endpoint,
    /// The client's JSON body as it came, forwarded as it is when nothing in it changes.
    raw: Option<Bytes>,
    /// The body as a tree, when one was built: the pass-through's (its model rewritten), or a
    /// body that [`Head::read`] declined. Otherwise a rewrite parses `raw` when it needs one.
    tree: Option<Value>,
    /// What the body says (model, stream, token figures).
    head: Head,
    stream: bool,
    client_wants_usage: bool,
    model: String,
}

impl Call {
    fn has_body(&self) -> bool {
        self.raw.is_some() || self.tree.is_some()
    }

    /// The body as a tree, for a rewrite.
    fn tree(&self) -> Result<Cow<'_, Value>, ApiError> {
        if let Some(t) = &self.tree {
            return Ok(Cow::Borrowed(t));
        }
        let raw = self.raw.as_deref().unwrap_or(b"{}");
        serde_json::from_slice(raw).map(Cow::Owned).map_err(|e| not_json(&e))
    }
}

fn not_json(e: &serde_json::Error) -> ApiError {
    ApiError::bad_request(format!(
        "the body is not valid JSON (line {}, column {})",
        e.line(),
        e.column()
    ))
}

fn error_response(e: ApiError) -> Response {
    e.into_response()
}

/// Gateway entry for the JSON endpoints: chat, completions, embeddings.
pub async fn handle_json(state: AppState, endpoint: Endpoint, req: Request) -> Response {
    let principal = match req.extensions().get::<Arc<Principal>>().cloned() {
        Some(p) => p,
        None => return error_response(ApiError::unauthorized("missing API key")),
    };
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(ApiError::too_large(format!(
                "the request body is larger than the limit of {} bytes",
                state.max_body_bytes
            )))
        }
    };
    // The fields the gateway reads, borrowed from the bytes; a body that is not a plain JSON
    // object goes through the tree, whose errors say where the JSON breaks.
    let (head, tree) = match Head::read(&bytes, endpoint) {
        Some(head) => (head, None),
        None => match serde_json::from_slice(&bytes) {
            Ok(v @ Value::Object(_)) => (Head::of_tree(&v, endpoint), Some(v)),
            Ok(_) => return error_response(ApiError::bad_request("the body must be a JSON object")),
            Err(e) => return error_response(not_json(&e)),
        },
    };
    let call = Call {
        endpoint,
        raw: Some(bytes),
        tree,
        model: head.model.clone().unwrap_or_default(),
        stream: head.stream && endpoint != Endpoint::Embeddings,
        client_wants_usage: head.include_usage,
        head,
    };
    dispatch(
        state,
        principal,
        &parts.headers,
        request_id,
        call,
        "",
        None,
        &parts.method,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    state: AppState,
    principal: Arc<Principal>,
    headers: &HeaderMap,
    request_id: Option<String>,
    mut call: Call,
    suffix: &str,
    query: Option<&str>,
    method: &Method,
) -> Response {
    let (vk, model) = match choose_vk(&state, &principal, headers, &call.model) {
        Ok(x) => x,
        Err(e) => return error_response(e),
    };
    let upstream_model = match resolve_model(&vk, &model) {
        Ok(m) => m,
        Err(e) => return error_response(e),
    };
    call.model = upstream_model;
    if matches!(
        call.endpoint,
        Endpoint::Chat | Endpoint::Completions | Endpoint::Embeddings
    ) && (call.model.is_empty() || call.model == "portkey-default")
    {
        // Only hubs that pick the model themselves (an Azure default deployment, a DigitalOcean
        // agent) can serve a request that names none.
        let model_free = vk.config.targets.iter().all(|t| {
            state.runtime.provider(&t.provider_key_id).is_some_and(|p| {
                p.hub == ModelHub::Azure || (p.hub == ModelHub::DigitalOcean && p.settings.agent_id.is_some())
            })
        });
        if !model_free {
            return error_response(ApiError::bad_request(
                "the request names no model and the virtual key has no defaultModel",
            ));
        }
        call.model = String::new();
    }
    let order = state.runtime.order_by_health(target_order(&vk), state.limits.now());

    // The request's own limits (platform key, virtual key, model), decided once for all
    // attempts; each attempt adds only its provider key's limit.
    let engine = &state.limits;
    let now = engine.now();
    let hub = order
        .iter()
        .find_map(|id| state.runtime.provider(id))
        .map(|p| p.hub.as_str())
        .unwrap_or("");
    let bounds = request_bounds(
        &state.upstream.prices,
        hub,
        &call.model,
        call.has_body().then_some(&call.head.figures),
        engine.default_max_output_tokens,
    );
    let checks = engine.checks(&principal, &vk, &call.model, bounds, now);
    let (acquired, local) = match engine.acquire(&checks, now).await {
        Ok(a) => a,
        Err(e) => return error_response(e.into()),
    };
    if !acquired.admitted {
        if let Some(ev) = limits::refusal_event(&checks, &acquired, &principal, &vk, None, &call.model, now) {
            state.meter.record_event(ev);
        }
        let mut resp = error_response(limits::refusal(&checks, &acquired).into());
        limits::rate_headers(resp.headers_mut(), &checks, &acquired.states);
        return resp;
    }
    let mut limit_headers = HeaderMap::new();
    limits::rate_headers(&mut limit_headers, &checks, &acquired.states);
    let mut reservation = Some(limits::Reservation::new(engine.clone(), checks, &acquired, local));
    let with_headers = |mut r: Response| {
        for (k, v) in limit_headers.iter() {
            r.headers_mut().entry(k.clone()).or_insert_with(|| v.clone());
        }
        r
    };

    let mut last_error: Option<ApiError> = None;
    let attempts = order.len();
    for (i, provider_id) in order.iter().enumerate() {
        let Some(provider) = state.runtime.provider(provider_id) else {
            last_error = Some(match state.runtime.unreadable_provider(provider_id) {
                Some(u) if u.workspace == vk.workspace => gw_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!(
                        "provider key {} cannot be used: {}; it is refused until an administrator repairs or replaces it",
                        u.id, u.reason
                    ),
                ),
                _ => gw_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "upstream_error",
                    "the virtual key's provider key no longer exists",
                ),
            });
            continue;
        };
        if provider.workspace != vk.workspace {
            continue;
        }
        if !privacy_allows(&principal, &provider, call.endpoint) {
            last_error = Some(gw_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the API key's modelPrivacy allows only private providers, and the virtual key has none for this request",
            ));
            continue;
        }
        let is_last = i + 1 == attempts;
        match attempt(
            &state,
            &principal,
            &vk,
            &provider,
            &call,
            request_id.clone(),
            suffix,
            query,
            method,
            is_last,
            &mut reservation,
        )
        .await
        {
            Attempt::Done(resp) => return with_headers(resp),
            Attempt::Retry(e) => {
                tracing::debug!(provider_key = %provider.id, error = %e, "upstream failed before the first byte; trying the next target");
                last_error = Some(e);
            }
        }
    }
    with_headers(error_response(last_error.unwrap_or_else(|| {
        gw_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_error",
            "the virtual key has no usable provider key",
        )
    })))
}

/// `modelPrivacy`: `PRIVATE_ONLY` uses only provider keys marked private; `PRIVATE_TEXT` does
/// so for text (chat, completions, embeddings) and lets other paths through.
fn privacy_allows(principal: &Principal, provider: &ProviderRuntime, endpoint: Endpoint) -> bool {
    match principal.settings.privacy() {
        ModelPrivacy::PrivateOnly => provider.private,
        ModelPrivacy::PrivateText => provider.private || endpoint == Endpoint::Passthrough,
        ModelPrivacy::All => true,
    }
}

enum Attempt {
    Done(Response),
    /// Failed before anything reached the client: another target may be tried.
    Retry(ApiError),
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

#[allow(clippy::too_many_arguments)]
async fn attempt(
    state: &AppState,
    principal: &Principal,
    vk: &VkRuntime,
    provider: &ProviderRuntime,
    call: &Call,
    request_id: Option<String>,
    suffix: &str,
    query: Option<&str>,
    method: &Method,
    is_last: bool,
    reservation: &mut Option<limits::Reservation>,
) -> Attempt {
    let fail = |e: ApiError| {
        if is_last {
            Attempt::Done(error_response(e))
        } else {
            Attempt::Retry(e)
        }
    };
    let Some(base_url) = provider.base_url.as_deref() else {
        return fail(gw_error(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "the provider key has no base URL",
        ));
    };
    // Checked again at connect time: names by the resolver, literal addresses here.
    if let Err(e) = provider.url_allowed(state.upstream.allow_private) {
        tracing::warn!(provider_key = %provider.id, request_id = request_id.as_deref().unwrap_or(""), error = %e,
            "upstream URL refused at connect time");
        return fail(gw_error(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "the provider key's URL is not allowed",
        ));
    }
    let secret = match credential(state, provider).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let hub_provider = Provider {
        hub: provider.hub,
        base_url,
        settings: &provider.settings,
    };
    let plan = match hubs::plan(hub_provider, call.endpoint, suffix, query, &call.model, &secret) {
        Ok(p) => p,
        Err(e) => return Attempt::Done(error_response(ApiError::bad_request(e.to_string()))),
    };
    drop(secret);
    let (body_bytes, inject_usage) = match upstream_body(state, call, &plan) {
        Ok(b) => b,
        Err(e) => return Attempt::Done(error_response(e)),
    };
    let priced_model = if call.model.is_empty() {
        plan.body_model.clone().unwrap_or_default()
    } else {
        call.model.clone()
    };
    let mut guard = MeterGuard {
        meter: state.meter.clone(),
        prices: state.upstream.prices.clone(),
        row: Some(UsageRow {
            id: keygate_store::new_id(),
            workspace: vk.workspace.clone(),
            at: now_ms(),
            request_id,
            platform_key_id: Some(principal.id.clone()),
            virtual_key_id: Some(vk.id.clone()),
            provider_key_id: Some(provider.id.clone()),
            hub: Some(provider.hub.as_str().to_string()),
            model: Some(priced_model),
            endpoint: call.endpoint.as_str().to_string(),
            stream: call.stream,
            ..Default::default()
        }),
        started: Instant::now(),
        usage: None,
        estimated_prompt: if call.has_body() {
            call.head.figures.estimated_prompt
        } else {
            0
        },
        completion_events: 0,
        reservation: None,
    };

    // The provider key's own rate limit, for this attempt.
    let engine = &state.limits;
    let now = engine.now();
    let pcheck = vec![limits::LimitEngine::provider_check(provider)];
    let (acquired, _) = match engine.acquire(&pcheck, now).await {
        Ok(a) => a,
        Err(e) => {
            guard.row = None;
            return Attempt::Done(error_response(e.into()));
        }
    };
    if !acquired.admitted {
        guard.row = None;
        if let Some(ev) = limits::refusal_event(&pcheck, &acquired, principal, vk, Some(&provider.id), &call.model, now)
        {
            state.meter.record_event(ev);
        }
        let refusal = ApiError::from(limits::refusal(&pcheck, &acquired));
        if !is_last {
            return Attempt::Retry(refusal);
        }
        return Attempt::Done(error_response(refusal));
    }
    // The request's reservation goes with this attempt; an attempt that hands over to the
    // next target gives it back.
    guard.reservation = reservation.take();
    // A pending record before dispatch: a crash after this point leaves it to be reconciled
    // at the next start, and the final record replaces it.
    if let Some(row) = &guard.row {
        let mut pending = row.clone();
        pending.status_code = 0;
        pending.prompt_tokens = guard.estimated_prompt as i64;
        pending.estimated = true;
        state.meter.record(pending);
    }

    let settings = &state.upstream.settings;
    let mut builder = http::Request::builder()
        .method(method.clone())
        .uri(plan.url.as_str())
        .header(plan.auth.0.clone(), plan.auth.1.clone())
        .header(http::header::USER_AGENT, USER_AGENT);
    for (k, v) in &plan.extra_headers {
        builder = builder.header(k.clone(), v.clone());
    }
    let body = match body_bytes {
        Some(b) => {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
            b
        }
        None => Bytes::new(),
    };
    builder = builder.header(
        http::header::ACCEPT,
        if call.stream {
            "text/event-stream"
        } else {
            "application/json"
        },
    );
    let req = match builder.body(http_body_util::Full::new(body)) {
        Ok(r) => r,
        Err(_) => {
            guard.row = None;
            return Attempt::Done(error_response(ApiError::bad_request(
                "the upstream URL or a header of this request is not valid HTTP",
            )));
        }
    };
    let sent = tokio::time::timeout(
        settings.first_byte_timeout.min(settings.total_timeout),
        state.upstream.client().request(req),
    )
    .await;
    let resp = match sent {
        Err(_) => {
            guard.finish(504, Some("upstream_timeout"));
            *reservation = guard.reservation.take().filter(|_| !is_last);
            return fail(gw_error(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the upstream did not answer in time",
            ));
        }
        Ok(Err(e)) => {
            let kind = if e.is_connect() { "connect" } else { "request" };
            let request_id = guard.row.as_ref().and_then(|r| r.request_id.as_deref()).unwrap_or("");
            tracing::warn!(provider_key = %provider.id, request_id, kind, "upstream request failed");
            state.runtime.note_failure(&provider.id, None, state.limits.now());
            *reservation = guard.reservation.take().filter(|_| !is_last);
            // A request that never connected cost nothing upstream: its record says so.
            if e.is_connect() {
                guard.finish(502, Some("upstream_connect"));
            } else {
                guard.finish(502, Some("upstream_error"));
            }
            return fail(gw_error(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "the upstream could not be reached",
            ));
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    if status.is_redirection() {
        // Redirects are never followed (a hub could point keygate at an internal address), and
        // the client is not sent on with its own key either.
        guard.finish(502, Some("upstream_redirect"));
        return Attempt::Done(error_response(gw_error(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("the upstream answered a redirect ({status}), which keygate does not follow"),
        )));
    }
    if !status.is_success() {
        if retryable(status) {
            let retry_after_ms = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
                .map(|secs| secs.clamp(0, 3600) * 1000);
            state
                .runtime
                .note_failure(&provider.id, retry_after_ms, state.limits.now());
        }
        if retryable(status) && !is_last {
            *reservation = guard.reservation.take();
            guard.finish(status.as_u16(), Some("upstream_retry"));
            return Attempt::Retry(gw_error(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!("the upstream answered {status}"),
            ));
        }
        let retry_after = resp.headers().get(http::header::RETRY_AFTER).cloned();
        let body = read_limited(resp, 1024 * 1024).await.unwrap_or_default();
        guard.finish(status.as_u16(), Some("upstream_status"));
        return Attempt::Done(upstream_error_response(status, &body, plan.wire, provider, retry_after));
    }
    state.runtime.note_success(&provider.id);
    let is_sse = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if call.stream && !is_sse && matches!(call.endpoint, Endpoint::Chat | Endpoint::Completions) {
        // The upstream answered a stream request with one JSON answer: the client still gets
        // SSE (an SDK reading `application/json` as a stream would see nothing).
        let body = match read_limited(resp, settings.max_response_bytes).await {
            Ok(b) => b,
            Err(kind) => {
                guard.finish(502, Some(kind));
                return Attempt::Done(error_response(gw_error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    "the upstream answer could not be read",
                )));
            }
        };
        return Attempt::Done(json_as_stream(body, plan.wire, call, guard));
    }
    if call.stream && is_sse {
        return Attempt::Done(stream_response(state, resp, plan.wire, call, inject_usage, guard));
    }
    if call.endpoint == Endpoint::Passthrough {
        return Attempt::Done(passthrough_response(resp, guard));
    }
    let body = match read_limited(resp, settings.max_response_bytes).await {
        Ok(b) => b,
        Err(kind) => {
            guard.finish(502, Some(kind));
            return Attempt::Done(error_response(gw_error(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "the upstream answer could not be read",
            )));
        }
    };
    Attempt::Done(json_response(status, body, plan.wire, call, guard))
}

/// The body sent upstream, and whether keygate asked for a usage chunk the client did not.
fn upstream_body(state: &AppState, call: &Call, plan: &Plan) -> Result<(Option<Bytes>, bool), ApiError> {
    if !call.has_body() {
        return Ok((None, false));
    }
    match plan.wire {
        Wire::Anthropic => {
            let model = plan.body_model.as_deref().unwrap_or(&call.model);
            let body = call.tree()?;
            let translated =
                anthropic::chat_to_messages(&body, model, state.upstream.settings.anthropic_default_max_tokens)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let bytes = serde_json::to_vec(&translated).map_err(|_| ApiError::internal("cannot encode the request"))?;
            Ok((Some(Bytes::from(bytes)), false))
        }
        Wire::OpenAi => {
            let inject_wanted = call.stream
                && matches!(call.endpoint, Endpoint::Chat | Endpoint::Completions)
                && !call.client_wants_usage;
            let model_kept = match &plan.body_model {
                None => true,
                Some(m) => call.head.model.as_deref() == Some(m.as_str()),
            };
            if let (true, false, Some(raw)) = (model_kept, inject_wanted, &call.raw) {
                // Nothing to rewrite: the client's bytes go as they came (no clone, no re-encoding).
                return Ok((Some(raw.clone()), false));
            }
            let mut body = call.tree()?.into_owned();
            if let (Some(m), Some(obj)) = (&plan.body_model, body.as_object_mut()) {
                obj.insert("model".into(), Value::String(m.clone()));
            }
            let mut inject = false;
            if call.stream
                && matches!(call.endpoint, Endpoint::Chat | Endpoint::Completions)
                && !call.client_wants_usage
            {
                if let Some(obj) = body.as_object_mut() {
                    let opts = obj.entry("stream_options").or_insert_with(|| json!({}));
                    if let Some(o) = opts.as_object_mut() {
                        o.insert("include_usage".into(), Value::Bool(true));
                        inject = true;
                    }
                }
            }
            let bytes = serde_json::to_vec(&body).map_err(|_| ApiError::internal("cannot encode the request"))?;
            Ok((Some(Bytes::from(bytes)), inject))
        }
    }
}

/// The `Content-Length` an answer declares, if any.
fn content_length(resp: &UpstreamResponse) -> Option<u64> {
    resp.headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// An answer's body as a stream of its data chunks.
fn body_stream(resp: UpstreamResponse) -> impl futures::Stream<Item = Result<Bytes, hyper::Error>> + Send {
    http_body_util::BodyDataStream::new(resp.into_body())
}

async fn read_limited(resp: UpstreamResponse, cap: usize) -> Result<Bytes, &'static str> {
    // A declared length over the cap is refused before a byte is read.
    let declared = content_length(&resp).unwrap_or(0);
    if declared > cap as u64 {
        return Err("upstream_too_large");
    }
    // The chunks are kept as they come (no buffer doubling and copying while reading) and
    // joined once at the end: an answer over the cap never holds more than the cap.
    let mut parts: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    let mut stream = std::pin::pin!(body_stream(resp));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| "upstream_error")?;
        total += chunk.len();
        if total > cap {
            return Err("upstream_too_large");
        }
        if !chunk.is_empty() {
            parts.push(chunk);
        }
    }
    Ok(match parts.len() {
        0 => Bytes::new(),
        1 => parts.swap_remove(0),
        _ => {
            let mut out = Vec::with_capacity(total);
            for p in &parts {
                out.extend_from_slice(p);
            }
            Bytes::from(out)
        }
    })
}

/// An upstream error in OpenAI's shape. The message is the upstream's own when it is
/// OpenAI-shaped (secrets scrubbed), else a fixed one; never a raw body.
fn upstream_error_response(
    status: StatusCode,
    body: &[u8],
    wire: Wire,
    provider: &ProviderRuntime,
    retry_after: Option<HeaderValue>,
) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let mut out = match (wire, parsed) {
        (Wire::Anthropic, Some(v)) => anthropic::error_to_openai(&v),
        (Wire::OpenAi, Some(v)) if v.get("error").is_some_and(|e| e.is_object()) => {
            let e = &v["error"];
            json!({"error": {
                "message": e.get("message").and_then(Value::as_str).unwrap_or("upstream error"),
                "type": e.get("type").and_then(Value::as_str).unwrap_or("upstream_error"),
                "param": e.get("param").cloned().unwrap_or(Value::Null),
                "code": e.get("code").cloned().unwrap_or(Value::Null),
            }})
        }
        _ => {
            json!({"error": {"message": format!("the upstream answered {}", status.as_u16()), "type": "upstream_error", "param": null, "code": "upstream_error"}})
        }
    };
    scrub_secrets(&mut out, provider);
    let mut resp = (status, axum::Json(out)).into_response();
    if let Some(ra) = retry_after {
        resp.headers_mut().insert(http::header::RETRY_AFTER, ra);
    }
    if status.is_server_error() {
        resp.headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
        resp.headers_mut()
            .insert("x-portkey-request-id", HeaderValue::from_static("keygate"));
    }
    resp
}

/// Replaces any stored secret of the provider found in an upstream message.
fn scrub_secrets(v: &mut Value, provider: &ProviderRuntime) {
    match v {
        Value::String(s) => {
            for field in ["api_key", "agent_key", "client_secret", "refresh_token"] {
                if let Some(secret) = provider.expose_secret(field) {
                    if secret.len() >= 6 && s.contains(secret) {
                        *s = s.replace(secret, "[redacted]");
                    }
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| scrub_secrets(x, provider)),
        Value::Object(o) => o.values_mut().for_each(|x| scrub_secrets(x, provider)),
        _ => {}
    }
}

fn json_response(status: StatusCode, body: Bytes, wire: Wire, call: &Call, mut guard: MeterGuard) -> Response {
    let out_body = match wire {
        Wire::Anthropic => match serde_json::from_slice::<Value>(&body) {
            Ok(v) => match anthropic::messages_to_chat(&v, &call.model) {
                Ok((chat, usage)) => {
                    guard.usage = Some(usage);
                    Bytes::from(serde_json::to_vec(&chat).unwrap_or_default())
                }
                Err(_) => {
                    guard.finish(502, Some("upstream_invalid"));
                    return error_response(gw_error(
                        StatusCode::BAD_GATEWAY,
                        "upstream_error",
                        "the upstream answer could not be translated",
                    ));
                }
            },
            Err(_) => body,
        },
        Wire::OpenAi => {
            // What keygate reads of an answer it passes on unchanged, borrowed from its bytes:
            // the rest of the document is checked for syntax but never built into a tree.
            if let Some([model, usage]) = raw::fields(&body, ["model", "usage"]) {
                guard.usage = usage.and_then(Usage::from_openai_raw);
                if let (Some(m), Some(row)) = (model.and_then(raw::str), guard.row.as_mut()) {
                    if !m.is_empty() && m.len() < 256 {
                        row.model = Some(m.into_owned());
                    }
                }
            }
            // Only base64 embeddings change the answer; everything else goes as it came.
            if call.endpoint == Endpoint::Embeddings && wants_base64(call) {
                embeddings_as_base64(&body).unwrap_or(body)
            } else {
                body
            }
        }
    };
    guard.finish(status.as_u16(), None);
    let mut resp = Response::new(Body::from(out_body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// An embeddings answer with its float arrays as base64 strings; `None` when nothing changes.
fn embeddings_as_base64(body: &[u8]) -> Option<Bytes> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    convert_embeddings_to_base64(&mut v).then(|| Bytes::from(serde_json::to_vec(&v).unwrap_or_default()))
}

/// A whole chat (or text) completion as SSE chunks: the content, the finish reason, the usage
/// when the client asked for it, then `[DONE]`.
fn json_as_stream(body: Bytes, wire: Wire, call: &Call, mut guard: MeterGuard) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let v = match (wire, parsed) {
        (Wire::Anthropic, Some(v)) => match anthropic::messages_to_chat(&v, &call.model) {
            Ok((chat, usage)) => {
                guard.usage = Some(usage);
                chat
            }
            Err(_) => Value::Null,
        },
        (Wire::OpenAi, Some(v)) => {
            guard.usage = v.get("usage").and_then(Usage::from_openai);
            v
        }
        _ => Value::Null,
    };
    if !v.is_object() {
        guard.finish(502, Some("upstream_invalid"));
        return error_response(gw_error(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "the upstream answer could not be read",
        ));
    }
    let text = call.endpoint == Endpoint::Completions;
    let object = if text {
        "text_completion"
    } else {
        "chat.completion.chunk"
    };
    let head = |choices: Value| {
        json!({"id": v.get("id").cloned().unwrap_or(Value::Null), "object": object,
               "created": v.get("created").cloned().unwrap_or(Value::from(now_ms() / 1000)),
               "model": v.get("model").cloned().unwrap_or(Value::from(call.model.clone())), "choices": choices})
    };
    let mut out = Vec::new();
    let mut push = |chunk: Value| {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(chunk.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    };
    for (i, choice) in v
        .get("choices")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let finish = choice.get("finish_reason").cloned().unwrap_or(Value::Null);
        if text {
            let t = choice.get("text").cloned().unwrap_or(Value::from(""));
            push(head(
                json!([{"index": i, "text": t, "logprobs": null, "finish_reason": finish}]),
            ));
        } else {
            let msg = choice.get("message").cloned().unwrap_or(json!({}));
            let mut delta = json!({"role": "assistant", "content": msg.get("content").cloned().unwrap_or(Value::Null)});
            if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
                let indexed: Vec<Value> = calls
                    .iter()
                    .enumerate()
                    .map(|(j, c)| {
                        let mut c = c.clone();
                        c["index"] = Value::from(j);
                        c
                    })
                    .collect();
                delta["tool_calls"] = Value::Array(indexed);
            }
            push(head(
                json!([{"index": i, "delta": delta, "logprobs": null, "finish_reason": null}]),
            ));
            push(head(
                json!([{"index": i, "delta": {}, "logprobs": null, "finish_reason": finish}]),
            ));
        }
    }
    if call.client_wants_usage {
        if let Some(u) = guard.usage {
            let mut chunk = head(json!([]));
            chunk["usage"] = u.to_openai();
            push(chunk);
        }
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    guard.finish(200, None);
    let mut resp = Response::new(Body::from(out));
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn wants_base64(call: &Call) -> bool {
    call.has_body() && call.head.base64
}

/// Float arrays to base64 of little-endian f32, for a client that asked for base64 from a hub
/// that answered floats. Returns whether anything changed.
fn convert_embeddings_to_base64(v: &mut Value) -> bool {
    use base64::Engine;
    let mut changed = false;
    if let Some(items) = v.get_mut("data").and_then(Value::as_array_mut) {
        for item in items {
            if let Some(arr) = item.get("embedding").and_then(Value::as_array) {
                let mut bytes = Vec::with_capacity(arr.len() * 4);
                for x in arr {
                    bytes.extend_from_slice(&(x.as_f64().unwrap_or(0.0) as f32).to_le_bytes());
                }
                item["embedding"] = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
                changed = true;
            }
        }
    }
    changed
}

fn passthrough_response(resp: UpstreamResponse, mut guard: MeterGuard) -> Response {
    let status = resp.status();
    let content_type = resp.headers().get(http::header::CONTENT_TYPE).cloned();
    guard.finish(status.as_u16(), None);
    let stream = body_stream(resp).map(|r| r.map_err(std::io::Error::other));
    let mut out = Response::new(Body::from_stream(stream));
    *out.status_mut() = status;
    if let Some(ct) = content_type {
        out.headers_mut().insert(http::header::CONTENT_TYPE, ct);
    }
    out
}

enum Mode {
    /// Bytes pass through as they come; only scanned for usage.
    Raw,
    /// Events re-framed, dropping the usage chunk keygate asked for and the client did not.
    Strip,
    Anthropic(Box<StreamTranslator>),
}

struct StreamState {
    upstream: std::pin::Pin<Box<dyn futures::Stream<Item = Result<Bytes, hyper::Error>> + Send>>,
    parser: SseParser,
    mode: Mode,
    guard: MeterGuard,
    done: bool,
    /// The upstream sent `[DONE]` (or Anthropic's `message_stop`): the answer is complete.
    saw_done: bool,
    idle: Duration,
    deadline: tokio::time::Instant,
}

fn frame(ev: &SseEvent, out: &mut Vec<u8>) {
    if let Some(name) = &ev.event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in ev.data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

impl StreamState {
    /// Handles one OpenAI-shaped event: reads usage, counts content events, and (in Strip
    /// mode) writes it out unless it is the injected usage-only chunk.
    fn on_openai_event(&mut self, ev: &SseEvent, out: &mut Vec<u8>) {
        let data = ev.data.as_str();
        let mut drop_it = false;
        if data == "[DONE]" {
            self.saw_done = true;
        }
        if data != "[DONE]" {
            if data.contains("\"usage\"") {
                if let Some([usage, choices]) = raw::fields(data.as_bytes(), ["usage", "choices"]) {
                    if let Some(u) = usage.and_then(Usage::from_openai_raw) {
                        self.guard.usage = Some(u);
                        let no_choices = choices.is_some_and(raw::is_empty_array);
                        drop_it = no_choices && matches!(self.mode, Mode::Strip);
                    }
                }
            } else if data.contains("\"content\"") || data.contains("\"text\"") {
                self.guard.completion_events += 1;
            }
        }
        if matches!(self.mode, Mode::Strip) && !drop_it {
            frame(ev, out);
        }
    }

    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), ()> {
        let mut events = Vec::new();
        self.parser.feed(chunk, |e| events.push(e)).map_err(|_| ())?;
        self.handle(events, out);
        if self.saw_done {
            // Complete: a client that closes now (SDKs stop reading at [DONE]) is not a disconnect.
            self.guard.finish(200, None);
        }
        Ok(())
    }

    fn handle(&mut self, events: Vec<SseEvent>, out: &mut Vec<u8>) {
        for ev in events {
            if let Mode::Anthropic(t) = &mut self.mode {
                t.on_event(&ev, out);
                let u = t.usage();
                if t.saw_usage() {
                    self.guard.usage = Some(u);
                }
                if ev.event.as_deref() == Some("content_block_delta") {
                    self.guard.completion_events += 1;
                }
                if ev.event.as_deref() == Some("message_stop") {
                    self.saw_done = true;
                }
            } else {
                self.on_openai_event(&ev, out);
            }
        }
    }

    fn end(&mut self, out: &mut Vec<u8>, error: Option<(&'static str, &str)>) {
        let mut events = Vec::new();
        let _ = self.parser.finish(|e| events.push(e));
        self.handle(events, out);
        if let Some((kind, message)) = error {
            let payload = json!({"error": {"message": message, "type": kind, "code": kind}});
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(payload.to_string().as_bytes());
            out.extend_from_slice(b"\n\n");
            self.guard.finish(502, Some(kind));
        } else {
            self.guard.finish(200, None);
        }
        if let Mode::Anthropic(t) = &mut self.mode {
            t.finish(out);
        }
        self.done = true;
    }
}

fn stream_response(
    state: &AppState,
    resp: UpstreamResponse,
    wire: Wire,
    call: &Call,
    inject_usage: bool,
    guard: MeterGuard,
) -> Response {
    let settings = &state.upstream.settings;
    let mode = match wire {
        Wire::Anthropic => {
            let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
            Mode::Anthropic(Box::new(StreamTranslator::new(
                &call.model,
                &id,
                now_ms() / 1000,
                call.client_wants_usage,
            )))
        }
        Wire::OpenAi if inject_usage => Mode::Strip,
        Wire::OpenAi => Mode::Raw,
    };
    let st = StreamState {
        upstream: Box::pin(body_stream(resp)),
        parser: SseParser::default(),
        mode,
        guard,
        done: false,
        saw_done: false,
        idle: settings.idle_timeout,
        deadline: tokio::time::Instant::now() + settings.total_timeout,
    };
    let body = futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let wait = st
                .idle
                .min(st.deadline.saturating_duration_since(tokio::time::Instant::now()));
            let mut out = Vec::new();
            match tokio::time::timeout(wait, st.upstream.next()).await {
                Err(_) => {
                    st.end(&mut out, Some(("upstream_timeout", "the upstream stopped sending")));
                    return Some((Ok::<Bytes, std::io::Error>(Bytes::from(out)), st));
                }
                Ok(None) => {
                    st.end(&mut out, None);
                    if out.is_empty() {
                        return None;
                    }
                    return Some((Ok(Bytes::from(out)), st));
                }
                Ok(Some(Err(_))) => {
                    st.end(
                        &mut out,
                        Some(("upstream_error", "the upstream stream ended unexpectedly")),
                    );
                    return Some((Ok(Bytes::from(out)), st));
                }
                Ok(Some(Ok(chunk))) => {
                    if st.feed(&chunk, &mut out).is_err() {
                        st.end(
                            &mut out,
                            Some(("upstream_error", "the upstream sent an oversized event")),
                        );
                        return Some((Ok(Bytes::from(out)), st));
                    }
                    if matches!(st.mode, Mode::Raw) {
                        return Some((Ok(chunk), st));
                    }
                    if !out.is_empty() {
                        return Some((Ok(Bytes::from(out)), st));
                    }
                }
            }
        }
    });
    let mut out = Response::new(Body::from_stream(body));
    let h = out.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    out
}

/// `POST /v1/chat/completions`.
pub async fn chat(State(state): State<AppState>, req: Request) -> Response {
    counted(Endpoint::Chat, handle_json(state, Endpoint::Chat, req).await)
}

fn counted(endpoint: Endpoint, resp: Response) -> Response {
    keygate_core::metrics::gateway_request(endpoint.as_str(), resp.status().as_u16());
    resp
}

/// `POST /v1/completions`.
pub async fn completions(State(state): State<AppState>, req: Request) -> Response {
    counted(
        Endpoint::Completions,
        handle_json(state, Endpoint::Completions, req).await,
    )
}

/// `POST /v1/embeddings`.
pub async fn embeddings(State(state): State<AppState>, req: Request) -> Response {
    counted(
        Endpoint::Embeddings,
        handle_json(state, Endpoint::Embeddings, req).await,
    )
}

/// Any other `/v1/*` path, passed through to OpenAI-compatible hubs.
pub async fn passthrough(State(state): State<AppState>, req: Request) -> Response {
    let principal = match req.extensions().get::<Arc<Principal>>().cloned() {
        Some(p) => p,
        None => return error_response(ApiError::unauthorized("missing API key")),
    };
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let suffix = path.strip_prefix("/v1").unwrap_or(&path).to_string();
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => return error_response(ApiError::too_large("the request body is too large")),
    };
    // A JSON body may name the virtual key as `@slug/model`; anything else goes as it is.
    let json: Option<Value> = if bytes.is_empty() {
        None
    } else {
        serde_json::from_slice(&bytes).ok()
    };
    let model = json
        .as_ref()
        .and_then(|v| v.get("model"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let stream = json
        .as_ref()
        .and_then(|v| v.get("stream"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (vk, model) = match choose_vk(&state, &principal, &parts.headers, &model) {
        Ok(x) => x,
        Err(e) => return error_response(e),
    };
    let hub_ok = vk.config.targets.iter().all(|t| {
        state.runtime.provider(&t.provider_key_id).is_some_and(|p| {
            p.hub.is_openai_compatible() && !(p.hub == ModelHub::DigitalOcean && p.settings.agent_id.is_some())
        })
    });
    if !hub_ok {
        return error_response(ApiError::bad_request(
            "this path is passed through only to OpenAI-compatible hubs",
        ));
    }
    let body = match json {
        Some(mut v) => {
            if let Some(o) = v.as_object_mut() {
                if o.contains_key("model") {
                    o.insert("model".into(), Value::String(model.clone()));
                }
            }
            Some(v)
        }
        None => None,
    };
    let call = Call {
        endpoint: Endpoint::Passthrough,
        raw: None,
        head: body
            .as_ref()
            .map(|b| Head::of_tree(b, Endpoint::Passthrough))
            .unwrap_or_default(),
        tree: body,
        stream,
        client_wants_usage: true,
        model,
    };
    // Non-JSON bodies (audio uploads…) are not supported through the pass-through yet.
    if !call.has_body() && !bytes.is_empty() {
        return error_response(ApiError::bad_request("the pass-through forwards JSON bodies only"));
    }
    let _ = &vk;
    dispatch(
        state,
        principal,
        &parts.headers,
        request_id,
        call,
        &suffix,
        query.as_deref(),
        &parts.method,
    )
    .await
}

/// `GET /v1/models`: what this key may use.
pub async fn list_models(State(state): State<AppState>, req: Request) -> Response {
    let principal = match req.extensions().get::<Arc<Principal>>().cloned() {
        Some(p) => p,
        None => return error_response(ApiError::unauthorized("missing API key")),
    };
    let now = now_ms();
    let chosen = match choose_vk(&state, &principal, req.headers(), "") {
        Ok((vk, _)) => Some(vk),
        Err(e) if e.status == StatusCode::BAD_REQUEST => None,
        Err(e) => return error_response(e),
    };
    let mut data = Vec::new();
    match chosen {
        Some(vk) => {
            for id in model_names(&state, &vk) {
                data.push(model_object(&id, &owner(&state, &vk)));
            }
        }
        None => {
            // No virtual key named: every usable one, as `@slug/model`.
            for vk in state.runtime.virtual_keys_of(&principal.workspace) {
                if check_vk(&principal, &vk, now).is_err() {
                    continue;
                }
                let names = model_names(&state, &vk);
                for id in names {
                    data.push(model_object(&format!("@{}/{id}", vk.slug), &owner(&state, &vk)));
                }
            }
        }
    }
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}` (the id may contain `/`, e.g. `@slug/model` or `org/model`).
pub async fn get_model(State(state): State<AppState>, req: Request) -> Response {
    let principal = match req.extensions().get::<Arc<Principal>>().cloned() {
        Some(p) => p,
        None => return error_response(ApiError::unauthorized("missing API key")),
    };
    let raw = req.uri().path().strip_prefix("/v1/models/").unwrap_or("");
    let id = percent_decode(raw);
    let (vk, model) = match choose_vk(&state, &principal, req.headers(), &id) {
        Ok(x) => x,
        Err(e) => return error_response(e),
    };
    if resolve_model(&vk, &model).is_err() {
        return error_response(ApiError::not_found("no such model for this key"));
    }
    let names = model_names(&state, &vk);
    if !vk.config.models.is_empty() && !names.iter().any(|n| n == &model) {
        return error_response(ApiError::not_found("no such model for this key"));
    }
    axum::Json(model_object(&id, &owner(&state, &vk))).into_response()
}

fn owner(state: &AppState, vk: &VkRuntime) -> String {
    vk.config
        .targets
        .first()
        .and_then(|t| state.runtime.provider(&t.provider_key_id))
        .map(|p| p.hub.as_str().to_string())
        .unwrap_or_else(|| "keygate".into())
}

fn model_object(id: &str, owner: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": owner})
}

/// The names a virtual key answers to: its allow-list, aliases and default; without any,
/// the models of its hub in the price table (Azure: the deployment aliases).
fn model_names(state: &AppState, vk: &VkRuntime) -> Vec<String> {
    let cfg = &vk.config;
    let mut names: Vec<String> = cfg.models.clone();
    for a in cfg.aliases.keys() {
        if !names.contains(a) {
            names.push(a.clone());
        }
    }
    if let Some(d) = &cfg.default_model {
        if !names.contains(d) {
            names.push(d.clone());
        }
    }
    if names.is_empty() {
        if let Some(p) = cfg
            .targets
            .first()
            .and_then(|t| state.runtime.provider(&t.provider_key_id))
        {
            if p.hub == ModelHub::Azure {
                names.extend(p.settings.deployments.keys().cloned());
            } else {
                let hub = p.hub.as_str();
                let lookup_hub =
                    if p.hub.is_openai_compatible() && state.upstream.prices.iter().all(|(h, _, _)| h != hub) {
                        "openai"
                    } else {
                        hub
                    };
                names.extend(
                    state
                        .upstream
                        .prices
                        .iter()
                        .filter(|(h, m, _)| *h == lookup_hub && !m.contains('/'))
                        .map(|(_, m, _)| m.to_string()),
                );
            }
        }
    }
    names
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Token and cost bounds of a request.
fn request_bounds(
    prices: &PriceTable,
    hub: &str,
    model: &str,
    figures: Option<&crate::request::Figures>,
    default_output: u64,
) -> limits::Bounds {
    let Some(figures) = figures else {
        return limits::Bounds::default();
    };
    let price = prices.lookup(hub, model);
    let (prompt, output) = figures.bounds(price.and_then(|p| p.max_output_tokens), default_output);
    let cost = price.map(|p| max_cost(p, prompt, output).0).unwrap_or(0);
    limits::Bounds {
        tokens: prompt.saturating_add(output),
        cost_nano: cost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_keeps_slashes() {
        assert_eq!(percent_decode("org%2Fmodel%20name"), "org/model name");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%2"), "end%2");
    }

    #[test]
    fn prompt_estimate_is_bytes_over_four_plus_framing() {
        let estimate = |body: Value| Head::of_tree(&body, Endpoint::Chat).figures.estimated_prompt;
        let body = json!({"messages":[{"role":"user","content":"12345678"},{"role":"user","content":[{"type":"text","text":"abcd"}]}]});
        assert_eq!(estimate(body), 2 + 1 + 8 + 3);
        assert_eq!(estimate(json!({"input":["abcd","efgh"]})), 2 + 3);
    }

    #[test]
    fn base64_embeddings() {
        let mut v = json!({"data":[{"embedding":[0.1,-0.2,0.3]}]});
        assert!(convert_embeddings_to_base64(&mut v));
        assert_eq!(v["data"][0]["embedding"], "zczMPc3MTL6amZk+");
    }
}
