//! Who may call a route, and the middleware that decides it: a platform key presented as
//! `Authorization: Bearer` (or `x-portkey-api-key`) authenticated from the core's in-memory
//! cache ([`keygate_core::auth`]), or a signed-in UI session.
//!
//! What must stay true: no route is served without its declared [`Role`]; a request is
//! authenticated without a store round trip; a key's text is never logged or echoed.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// No key needed (health, OpenAPI document, wallet sign-in).
    Public,
    /// Any valid platform key (the gateway).
    Inference,
    /// An ADMIN platform key (the management API).
    Admin,
    /// A signed-in web UI session of an ADMIN key (pages of `/ui`).
    Session,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Public => "public",
            Role::Inference => "inference",
            Role::Admin => "admin",
            Role::Session => "session",
        }
    }
}

pub use keygate_core::auth::{AuthCache, AuthFailure, Principal};

/// The answer to a failed authentication: 401 with its own message, 503 for a key whose
/// stored record cannot be read.
pub fn auth_error(failure: &AuthFailure) -> ApiError {
    match failure {
            AuthFailure::Missing => ApiError::unauthorized(
                "missing API key: send `Authorization: Bearer <keygate key>` (or `x-portkey-api-key`)",
            ),
            AuthFailure::Malformed(e) => ApiError::unauthorized(format!("malformed API key: {e}")),
            AuthFailure::Unknown => ApiError::unauthorized("invalid API key"),
            AuthFailure::Expired => ApiError::unauthorized("the API key has expired"),
            AuthFailure::RotatedOut => ApiError::unauthorized("the API key was rotated and its grace period has ended"),
            AuthFailure::Unreadable { id, reason } => ApiError::unavailable(format!(
                "API key {id} cannot be used: its stored {reason}; it is refused until an administrator repairs or replaces it"
            )),
    }
}

/// Keeps the state's caches current until `shutdown` fires (see
/// [`keygate_core::auth::run_refresher`]).
pub async fn run_refresher(state: AppState, every: Duration, shutdown: tokio::sync::watch::Receiver<bool>) {
    keygate_core::auth::run_refresher(
        state.auth.clone(),
        state.runtime.clone(),
        state.store.clone(),
        state.vault.clone(),
        every,
        shutdown,
    )
    .await;
}

/// The platform key a request presents: `x-portkey-api-key` when non-empty (then
/// `Authorization` carries a provider placeholder and is ignored), else `Authorization: Bearer`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
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

/// Authenticates a request for `role`; puts the [`Principal`] into the request extensions.
pub async fn require(State((state, role)): State<(AppState, Role)>, mut req: Request, next: Next) -> Response {
    if role == Role::Public {
        return next.run(req).await;
    }
    if role == Role::Session {
        return match crate::ui::session::principal_of_session(&state, req.headers()) {
            Some(p) if p.is_admin() => {
                req.extensions_mut().insert(p);
                next.run(req).await
            }
            _ => crate::ui::session::sign_in_redirect(&req),
        };
    }
    let now = keygate_types::timefmt::now_ms();
    let result = match presented_key(req.headers()) {
        None => Err(AuthFailure::Missing),
        Some(key) => state.auth.authenticate(key, |k| state.vault.hash(k), now),
    };
    let principal = match result {
        Ok(p) => p,
        Err(f) => return auth_error(&f).into_response(),
    };
    if !principal.ip_nets.is_empty() {
        // Without a peer address (never the case on a socket) the restriction cannot hold: refuse.
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let allowed = peer.is_some_and(|ip| {
            let ip = match ip {
                std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
                v4 => v4,
            };
            principal.ip_nets.iter().any(|n| n.contains(&ip))
        });
        if !allowed {
            // Venice's client recognises this exact opening.
            return ApiError::forbidden(
                "This API key is restricted to configured IP addresses; this request came from elsewhere",
            )
            .into_response();
        }
    }
    if role == Role::Admin && !principal.is_admin() {
        return ApiError::forbidden("this route needs an ADMIN key; INFERENCE keys may only use the gateway")
            .into_response();
    }
    state.auth.note_use(&principal, now);
    req.extensions_mut().insert(principal);
    next.run(req).await
}
