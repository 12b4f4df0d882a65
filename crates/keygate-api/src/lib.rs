//! keygate's HTTP surface: the route table (every route declares who may call it),
//! authentication, the native management API, the compat mounts and the OpenAPI document.
//!
//! What must stay true: no route is served without a declared [`Role`]; handlers are thin
//! (parse, call the service, map the error); every error leaves through [`error::ApiError`].
#![forbid(unsafe_code)]

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod extract;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod portkey;
pub mod provider_keys;
pub mod state;
pub mod ui;
pub mod usage;
pub mod vijil;
pub mod virtual_keys;
pub mod wallets;
pub mod workspaces;

// The core services and the gateway, under the names the handlers have always used.
pub use keygate_core::{limits, meter, platform_keys, runtime, vault};
pub use keygate_gateway::error;
pub use keygate_gateway::pipeline as gateway;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{Method, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use std::convert::Infallible;
use tracing::Instrument as _;

pub use auth::Role;
pub use error::ApiError;
pub use state::{ApiSettings, AppState};

/// One declared route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub role: Role,
}

/// Builds the router while recording every route's role.
pub struct RouteTable {
    state: AppState,
    router: Router<AppState>,
    specs: Vec<RouteSpec>,
}

fn filter(m: &Method) -> MethodFilter {
    match *m {
        Method::GET => MethodFilter::GET,
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::PATCH => MethodFilter::PATCH,
        Method::DELETE => MethodFilter::DELETE,
        Method::HEAD => MethodFilter::HEAD,
        _ => MethodFilter::OPTIONS,
    }
}

impl RouteTable {
    pub fn new(state: AppState) -> Self {
        RouteTable {
            state,
            router: Router::new(),
            specs: Vec::new(),
        }
    }

    /// Adds `method path` guarded by `role`.
    pub fn add<H, T>(mut self, method: Method, path: &'static str, role: Role, handler: H) -> Self
    where
        H: axum::handler::Handler<T, AppState>,
        T: 'static,
    {
        let guarded: MethodRouter<AppState> = on(filter(&method), handler).route_layer(middleware::from_fn_with_state(
            (self.state.clone(), role),
            auth::require,
        ));
        self.router = self.router.route(path, guarded);
        self.specs.push(RouteSpec { method, path, role });
        self
    }

    pub fn specs(&self) -> &[RouteSpec] {
        &self.specs
    }

    pub fn into_parts(self) -> (Router<AppState>, Vec<RouteSpec>, AppState) {
        (self.router, self.specs, self.state)
    }
}

/// Every route keygate serves, with its role.
pub fn routes(state: AppState) -> RouteTable {
    ui::add_routes(api_routes(state))
}

fn api_routes(state: AppState) -> RouteTable {
    use Method as M;
    use Role::{Admin, Inference, Public};
    RouteTable::new(state)
        .add(M::GET, "/healthz", Public, health::healthz)
        .add(M::GET, "/readyz", Public, health::readyz)
        .add(M::GET, "/metrics", Public, crate::metrics::render)
        .add(M::GET, "/api/v1/openapi.json", Public, openapi::document)
        // Native provider keys.
        .add(M::GET, "/api/v1/provider_keys", Admin, provider_keys::list_handler)
        .add(M::POST, "/api/v1/provider_keys", Admin, provider_keys::create_handler)
        .add(
            M::GET,
            "/api/v1/provider_keys/{name}",
            Admin,
            provider_keys::get_handler,
        )
        .add(
            M::PATCH,
            "/api/v1/provider_keys/{name}",
            Admin,
            provider_keys::update_handler,
        )
        .add(
            M::DELETE,
            "/api/v1/provider_keys/{name}",
            Admin,
            provider_keys::delete_handler,
        )
        .add(
            M::POST,
            "/api/v1/provider_keys/{name}/rename",
            Admin,
            provider_keys::rename_handler,
        )
        // Platform API keys (Venice's shape). Literal routes before the {id} capture.
        .add(M::GET, "/api/v1/api_keys", Admin, api_keys::list)
        .add(M::POST, "/api/v1/api_keys", Admin, api_keys::create)
        .add(M::PATCH, "/api/v1/api_keys", Admin, api_keys::update)
        .add(M::DELETE, "/api/v1/api_keys", Admin, api_keys::delete)
        .add(M::GET, "/api/v1/api_keys/rate_limits", Inference, api_keys::rate_limits)
        .add(
            M::GET,
            "/api/v1/api_keys/rate_limits/log",
            Inference,
            api_keys::rate_limit_log,
        )
        .add(
            M::GET,
            "/api/v1/api_keys/generate_web3_key",
            Public,
            api_keys::web3_token,
        )
        .add(
            M::POST,
            "/api/v1/api_keys/generate_web3_key",
            Public,
            api_keys::web3_create,
        )
        .add(M::GET, "/api/v1/api_keys/{id}", Admin, api_keys::retrieve)
        .add(M::POST, "/api/v1/api_keys/{id}/rotate", Admin, api_keys::rotate)
        // Wallets and workspaces.
        .add(M::GET, "/api/v1/wallets", Admin, wallets::list)
        .add(M::POST, "/api/v1/wallets", Admin, wallets::create)
        .add(M::DELETE, "/api/v1/wallets/{address}", Admin, wallets::delete)
        .add(M::GET, "/api/v1/workspaces", Admin, workspaces::list)
        .add(M::POST, "/api/v1/workspaces", Admin, workspaces::create)
        .add(M::GET, "/api/v1/workspaces/{id}", Admin, workspaces::get)
        .add(M::PATCH, "/api/v1/workspaces/{id}", Admin, workspaces::rename)
        .add(M::DELETE, "/api/v1/workspaces/{id}", Admin, workspaces::delete)
        // Native virtual keys.
        .add(M::GET, "/api/v1/virtual_keys", Admin, virtual_keys::list_handler)
        .add(M::POST, "/api/v1/virtual_keys", Admin, virtual_keys::create_handler)
        .add(M::GET, "/api/v1/virtual_keys/{slug}", Admin, virtual_keys::get_handler)
        .add(
            M::PATCH,
            "/api/v1/virtual_keys/{slug}",
            Admin,
            virtual_keys::update_handler,
        )
        .add(
            M::DELETE,
            "/api/v1/virtual_keys/{slug}",
            Admin,
            virtual_keys::delete_handler,
        )
        .add(
            M::GET,
            "/api/v1/virtual_keys/{slug}/limits",
            Admin,
            virtual_keys::limits_handler,
        )
        // Usage and audit.
        .add(M::GET, "/api/v1/usage", Admin, usage::summary)
        .add(M::GET, "/api/v1/usage/records", Admin, usage::records)
        .add(M::GET, "/api/v1/audit", Admin, audit::list)
        // Vijil's mount.
        .add(M::GET, "/v1/api-keys", Admin, vijil::list)
        .add(M::POST, "/v1/api-keys", Admin, vijil::create)
        .add(M::PUT, "/v1/api-keys/{id}", Admin, vijil::update)
        .add(M::DELETE, "/v1/api-keys/{id}", Admin, vijil::delete)
        // Portkey's mount.
        .add(M::GET, "/v1/virtual-keys", Admin, portkey::list)
        .add(M::POST, "/v1/virtual-keys", Admin, portkey::create)
        .add(M::GET, "/v1/virtual-keys/{slug}", Admin, portkey::retrieve)
        .add(M::PUT, "/v1/virtual-keys/{slug}", Admin, portkey::update)
        .add(M::DELETE, "/v1/virtual-keys/{slug}", Admin, portkey::delete)
        // The gateway.
        .add(M::POST, "/v1/chat/completions", Inference, gateway::chat)
        .add(M::POST, "/v1/completions", Inference, gateway::completions)
        .add(M::POST, "/v1/embeddings", Inference, gateway::embeddings)
        .add(M::GET, "/v1/models", Inference, gateway::list_models)
        .add(M::GET, "/v1/models/{*id}", Inference, gateway::get_model)
        .add(M::GET, "/v1/{*path}", Inference, gateway::passthrough)
        .add(M::POST, "/v1/{*path}", Inference, gateway::passthrough)
        .add(M::PUT, "/v1/{*path}", Inference, gateway::passthrough)
        .add(M::PATCH, "/v1/{*path}", Inference, gateway::passthrough)
        .add(M::DELETE, "/v1/{*path}", Inference, gateway::passthrough)
}

/// Collapses repeated slashes in the path (`/v1//api-keys`, from a base URL with a trailing
/// slash) before routing.
fn collapse_slashes(req: &mut Request) {
    let path = req.uri().path();
    if !path.contains("//") {
        return;
    }
    let mut collapsed = String::with_capacity(path.len());
    let mut prev_slash = false;
    for c in path.chars() {
        if c == '/' && prev_slash {
            continue;
        }
        prev_slash = c == '/';
        collapsed.push(c);
    }
    let pq = match req.uri().query() {
        Some(q) => format!("{collapsed}?{q}"),
        None => collapsed,
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(p) = pq.parse() {
        parts.path_and_query = Some(p);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// The body length a request declares, if any.
fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// What every request passes before routing, as one service: one future and one move of the
/// request instead of a middleware each (docs/benchmarks.md, "What would move it").
/// - repeated slashes in the path are collapsed;
/// - the request gets an `x-request-id` (the client's own, else a new UUID), which the answer
///   carries back;
/// - a declared body over the cap is refused with 413 before anything reads it;
/// - a `request` span (method, path and request id only: never headers or query strings, which
///   may carry keys) at debug level, and an error line for every 5xx answer.
#[derive(Clone)]
struct Edge {
    inner: Router,
    cap: usize,
}

static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

impl tower::Service<Request> for Edge {
    type Response = Response;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        collapse_slashes(&mut req);
        let id = match req.headers().get(&X_REQUEST_ID) {
            Some(v) => v.clone(),
            None => {
                let mut buf = uuid::Uuid::encode_buffer();
                let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
                // Always valid (hex digits and hyphens); the fallback only keeps the code panic-free.
                let v = http::HeaderValue::from_str(text).unwrap_or_else(|_| http::HeaderValue::from_static("unknown"));
                req.headers_mut().insert(X_REQUEST_ID.clone(), v.clone());
                v
            }
        };
        if declared_length(&req).is_some_and(|len| len > self.cap as u64) {
            let mut resp = ApiError::too_large(format!(
                "the request body is larger than the limit of {} bytes",
                self.cap
            ))
            .into_response();
            resp.headers_mut().insert(X_REQUEST_ID.clone(), id);
            return Box::pin(std::future::ready(Ok(resp)));
        }
        let method = req.method().clone();
        let uri = req.uri().clone();
        let span = tracing::debug_span!("request", method = %method, path = %uri.path(),
            request_id = %id.to_str().unwrap_or(""));
        let started = std::time::Instant::now();
        let fut = self.inner.call(req);
        Box::pin(
            async move {
                let Ok(mut resp) = fut.await;
                if resp.status().is_server_error() {
                    tracing::error!(method = %method, path = %uri.path(), request_id = %id.to_str().unwrap_or(""),
                        status = resp.status().as_u16(), latency_ms = started.elapsed().as_millis() as u64,
                        "request failed");
                } else {
                    tracing::debug!(
                        status = resp.status().as_u16(),
                        latency_ms = started.elapsed().as_millis() as u64,
                        "request finished"
                    );
                }
                if !resp.headers().contains_key(&X_REQUEST_ID) {
                    resp.headers_mut().insert(X_REQUEST_ID.clone(), id);
                }
                Ok(resp)
            }
            .instrument(span),
        )
    }
}

async fn not_found(uri: Uri) -> Response {
    ApiError::not_found(format!("no route for {}", uri.path())).into_response()
}

/// The whole application: routes plus the layers every request passes.
pub fn app(state: AppState) -> (Router, Vec<RouteSpec>) {
    let cap = state.settings.max_body_bytes;
    let (router, specs, state) = routes(state).into_parts();
    let inner = router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(cap))
        .with_state(state);
    let outer = Router::new().fallback_service(Edge { inner, cap });
    (outer, specs)
}
