//! Extractors shared by handlers: the caller's context (principal, workspace, request id)
//! and JSON bodies whose errors are clear and never echo a submitted value.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use keygate_store::{new_id, AuditEvent};
use keygate_types::timefmt::now_ms;
use serde::de::DeserializeOwned;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller, the workspace it acts on and the request id.
pub struct Ctx {
    pub principal: Arc<Principal>,
    pub workspace: String,
    pub request_id: Option<String>,
    /// Set while one request performs several changes that it audits as one event.
    pub quiet: bool,
}

impl Ctx {
    /// The audit event to write with a change, unless this context is quiet.
    pub fn keep<'a>(&self, event: &'a AuditEvent) -> Option<&'a AuditEvent> {
        (!self.quiet).then_some(event)
    }

    /// A copy that is quiet when `quiet` is true.
    pub fn quiet_if(&self, quiet: bool) -> Ctx {
        Ctx { quiet, ..self.quiet() }
    }

    /// A quiet copy: the changes made with it write no audit event of their own.
    pub fn quiet(&self) -> Ctx {
        Ctx {
            principal: self.principal.clone(),
            workspace: self.workspace.clone(),
            request_id: self.request_id.clone(),
            quiet: true,
        }
    }

    /// An audit event for a change made by this caller.
    pub fn audit(
        &self,
        action: &str,
        target_type: &str,
        target_id: Option<&str>,
        details: serde_json::Value,
    ) -> AuditEvent {
        AuditEvent {
            id: new_id(),
            workspace: self.workspace.clone(),
            at: now_ms(),
            actor_key_id: Some(self.principal.id.clone()),
            actor: "api-key".into(),
            action: action.into(),
            target_type: target_type.into(),
            target_id: target_id.map(str::to_string),
            request_id: self.request_id.clone(),
            details: details.to_string(),
        }
    }
}

/// The workspace header an organisation admin uses to act on another workspace.
pub const WORKSPACE_HEADER: &str = "x-keygate-workspace";

impl FromRequestParts<AppState> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = parts
            .extensions
            .get::<Arc<Principal>>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("missing API key"))?;
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let wanted = parts
            .headers
            .get(WORKSPACE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let workspace = match wanted {
            None => principal.workspace.clone(),
            Some(w) if w == principal.workspace => w.to_string(),
            Some(w) if principal.org_admin => {
                state
                    .store
                    .get_workspace(w)
                    .await
                    .map_err(|_| ApiError::not_found(format!("workspace {w} not found")))?;
                w.to_string()
            }
            // Another workspace is invisible to a workspace key: same answer as a missing one.
            Some(w) => return Err(ApiError::not_found(format!("workspace {w} not found"))),
        };
        Ok(Ctx {
            principal,
            workspace,
            request_id,
            quiet: false,
        })
    }
}

/// A JSON request body. Unlike `axum::Json`, its errors are OpenAI-shaped, name the field
/// at fault and never repeat the value that was sent (it may be a secret).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let ct_ok = match req.headers().get(http::header::CONTENT_TYPE) {
            None => true,
            Some(v) => v
                .to_str()
                .map(|s| {
                    let s = s.to_ascii_lowercase();
                    s.starts_with("application/json") || s.contains("+json")
                })
                .unwrap_or(false),
        };
        if !ct_ok {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(format!(
                    "the request body is larger than the limit of {} bytes",
                    state.settings.max_body_bytes
                ))
            } else {
                ApiError::bad_request("cannot read the request body")
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses JSON with an error that names the field but not the value.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ApiError::bad_request(describe_json_error(&path, &inner))
    })
}

fn describe_json_error(path: &str, e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = if path.is_empty() || path == "." {
        String::new()
    } else {
        format!(" at `{path}`")
    };
    match e.classify() {
        Category::Syntax | Category::Eof => {
            format!("the body is not valid JSON (line {}, column {})", e.line(), e.column())
        }
        Category::Io => "cannot read the request body".into(),
        Category::Data => {
            let msg = e.to_string();
            // serde's messages may quote the value ("invalid type: string \"…\", expected u32");
            // keep only what was expected, or the name of an unknown or missing field.
            let msg = msg.split(" at line ").next().unwrap_or("").to_string();
            if let Some(field) = msg.strip_prefix("unknown field ") {
                let name = field.split(',').next().unwrap_or("").trim();
                return format!("unknown field {name}{at}");
            }
            if msg.starts_with("missing field ") {
                return format!("{msg}{at}");
            }
            match msg.rsplit_once(", expected ") {
                Some((_, expected)) => format!("invalid value{at}: expected {expected}"),
                None if msg.starts_with("unknown variant") => {
                    let expected = msg.split_once("expected ").map(|x| x.1).unwrap_or("a known value");
                    format!("invalid value{at}: expected {expected}")
                }
                None => format!("invalid value{at}"),
            }
        }
    }
}

/// The client's address (the socket peer). Requests built in process carry none: they count
/// as `0.0.0.0` for throttling, and a key with an IP allow-list refuses them.
pub struct ClientIp(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        Ok(ClientIp(ip))
    }
}

/// Query parameters. Unlike `axum::extract::Query`, which refuses in plain text, a query string
/// that does not parse answers the JSON error of every other failure (400 `invalid_request`).
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| QueryParams(q))
            .map_err(|e| ApiError::bad_request(query_error(&e.body_text())))
    }
}

/// The reason a query string was refused, without the value sent (serde's messages may quote it).
pub(crate) fn query_error(text: &str) -> String {
    let reason = text.rsplit_once("query string: ").map_or(text, |(_, r)| r);
    if reason.contains('"') || reason.is_empty() {
        "invalid query string".into()
    } else {
        format!("invalid query string: {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Body {
        name: String,
        rate_limit_interval: Option<u32>,
        model_hub: Option<Hub>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "lowercase")]
    enum Hub {
        Openai,
    }

    #[test]
    fn errors_never_echo_values() {
        let e = parse_json::<Body>(br#"{"name":"x","rateLimitInterval":"sk-canary-1234"}"#).unwrap_err();
        assert!(!e.message.contains("sk-canary"), "{}", e.message);
        assert!(e.message.contains("rateLimitInterval"), "{}", e.message);
        let e = parse_json::<Body>(br#"{"name":"x","modelHub":"sk-canary-1234"}"#).unwrap_err();
        assert!(!e.message.contains("sk-canary"), "{}", e.message);
        let e = parse_json::<Body>(br#"{"name":"x","bogus":1}"#).unwrap_err();
        assert!(e.message.contains("bogus"), "{}", e.message);
        let e = parse_json::<Body>(br#"{}"#).unwrap_err();
        assert!(e.message.contains("missing field `name`"), "{}", e.message);
        let e = parse_json::<Body>(br#"{"name":"sk-canary-1234""#).unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }
}
