//! keygate's HTTP surface: the route table (every route declares who may call it),
//! authentication, the native management API, the compat mounts and the OpenAPI document.
//!
//! What must stay true: no route is served without a declared [`Role`]; handlers are thin
//! (parse, call the service, map the error); every error leaves through [`error::ApiError`].
#![forbid(unsafe_code)]

/// Makes `$t` findable in a `HashSet` by a `&str` field of what it wraps (`keyed_by_str!(T,
/// 0.slug)`), so a cache keyed by an id or slug borrows the value's own string instead of holding
/// a copy. Hash and equality are those of that `str`, as `Borrow<str>` requires.
macro_rules! keyed_by_str {
    ($t:ident, $($field:tt).+) => {
        impl std::borrow::Borrow<str> for $t {
            fn borrow(&self) -> &str {
                &self.$($field).+
            }
        }
        impl std::hash::Hash for $t {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.$($field).+.as_str().hash(state);
            }
        }
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.$($field).+ == other.$($field).+
            }
        }
        impl Eq for $t {}
    };
}

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod health;
pub mod limits;
pub mod meter;
pub mod metrics;
pub mod openapi;
pub mod platform_keys;
pub mod portkey;
pub mod provider_keys;
pub mod runtime;
pub mod state;
pub mod ui;
pub mod usage;
pub mod vault;
pub mod vijil;
pub mod virtual_keys;
pub mod wallets;
pub mod workspaces;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

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
async fn normalize_path(mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path.contains("//") {
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
    next.run(req).await
}

/// Refuses a declared body over the cap with 413 before anything reads it.
async fn cap_body(axum::extract::State(cap): axum::extract::State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared {
        if len > cap as u64 {
            return ApiError::too_large(format!("the request body is larger than the limit of {cap} bytes"))
                .into_response();
        }
    }
    next.run(req).await
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
    let trace = TraceLayer::new_for_http().make_span_with(|req: &Request| {
        // Method, path and request id only: never headers or query strings (they may carry keys).
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
    });
    let outer = Router::new()
        .fallback_service(inner)
        .layer(middleware::from_fn_with_state(cap, cap_body))
        .layer(trace)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(middleware::from_fn(normalize_path));
    (outer, specs)
}
