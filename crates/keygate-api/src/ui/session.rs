//! UI sessions: a signed, expiring cookie naming the ADMIN key that signed in.
//!
//! The cookie is stateless: `kg_session=<payload>.<mac>` where the payload is base64url of
//! `principal id | expiry (Unix ms) | nonce` and the MAC is keygate's keyed hash (HMAC-SHA256
//! under a key held by the vault) of `ui-session:<payload>`, compared in constant time. The
//! nonce doubles as the session's CSRF token. A session is valid while it has not expired,
//! was not signed out (an in-memory revoked set) and its key is still a live ADMIN key.
//!
//! What must stay true: a cookie cannot be forged or extended without the vault's key; a
//! deleted, expired or demoted key ends its sessions at once; the cookie is HttpOnly,
//! SameSite=Strict, scoped to `/ui` and Secure behind TLS.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use keygate_types::timefmt::now_ms;
use keygate_vault::KeyHash;
use parking_lot::Mutex;
use rand::RngCore;

use crate::auth::Principal;
use crate::state::AppState;

/// The session cookie.
pub const COOKIE: &str = "kg_session";
/// The sign-in form's CSRF cookie (double submit: cookie and hidden field must match).
pub const LOGIN_COOKIE: &str = "kg_login";
/// A one-time message shown on the next page.
pub const FLASH_COOKIE: &str = "kg_flash";
/// How long a session lasts.
pub const SESSION_TTL_MS: i64 = 8 * 3600 * 1000;
/// Failed sign-ins allowed per client address in [`FAIL_WINDOW_MS`].
pub const MAX_LOGIN_FAILURES: u32 = 10;
pub const FAIL_WINDOW_MS: i64 = 15 * 60 * 1000;

/// A verified session cookie.
#[derive(Debug, Clone)]
pub struct Session {
    pub principal_id: String,
    pub expires_at: i64,
    /// The CSRF token of every form of this session.
    pub csrf: String,
    mac: [u8; 32],
}

/// The UI's own state, held by the app's state (no process-wide statics): the sessions signed
/// out (by MAC) until they would have expired anyway.
#[derive(Default)]
pub struct UiState {
    revoked: Mutex<HashMap<[u8; 32], i64>>,
}

/// `KEYGATE_UI_SECURE_COOKIES=1` marks cookies Secure even without `X-Forwarded-Proto: https`.
static FORCE_SECURE: LazyLock<bool> = LazyLock::new(|| {
    std::env::var("KEYGATE_UI_SECURE_COOKIES")
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
});

fn mac_of(state: &AppState, payload: &str) -> KeyHash {
    state.vault.hash(&format!("ui-session:{payload}"))
}

/// A random token (URL-safe, 24 characters).
pub fn random_token() -> String {
    let mut raw = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    URL_SAFE_NO_PAD.encode(raw)
}

/// A new session cookie value for `principal_id`, issued at `now` (Unix ms).
pub fn issue(state: &AppState, principal_id: &str, now: i64) -> String {
    let payload = format!("{principal_id}|{}|{}", now + SESSION_TTL_MS, random_token());
    let p64 = URL_SAFE_NO_PAD.encode(payload.as_bytes());
    let mac = mac_of(state, &p64);
    format!("{p64}.{}", URL_SAFE_NO_PAD.encode(mac.0))
}

/// Every value of cookie `name` in the request.
pub fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim())
        })
}

fn verify(state: &AppState, value: &str, now: i64) -> Option<Session> {
    let (p64, m64) = value.split_once('.')?;
    if p64.len() > 400 || m64.len() > 64 {
        return None;
    }
    let mac = KeyHash::from_slice(&URL_SAFE_NO_PAD.decode(m64).ok()?)?;
    if !mac_of(state, p64).ct_eq(&mac) {
        return None;
    }
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(p64).ok()?).ok()?;
    let mut parts = payload.splitn(3, '|');
    let principal_id = parts.next()?.to_string();
    let expires_at: i64 = parts.next()?.parse().ok()?;
    let csrf = parts.next()?.to_string();
    if now >= expires_at || csrf.is_empty() || state.ui.revoked.lock().contains_key(&mac.0) {
        return None;
    }
    Some(Session {
        principal_id,
        expires_at,
        csrf,
        mac: mac.0,
    })
}

/// The valid session cookie of a request at `now`, if any (signature, expiry, not signed out).
pub fn session_at(state: &AppState, headers: &HeaderMap, now: i64) -> Option<Session> {
    cookie_values(headers, COOKIE).find_map(|v| verify(state, v, now))
}

/// The live, unexpired ADMIN key with this id.
pub fn live_admin(state: &AppState, id: &str, now: i64) -> Option<Arc<Principal>> {
    state
        .auth
        .principal(id)
        .filter(|p| p.is_admin() && p.expires_at.is_none_or(|e| now < e))
}

/// The principal of a valid UI session cookie, if any.
pub fn principal_of_session(state: &AppState, headers: &HeaderMap) -> Option<Arc<Principal>> {
    let now = now_ms();
    let session = session_at(state, headers, now)?;
    live_admin(state, &session.principal_id, now)
}

/// Signs a session out: its cookie is refused from now on.
pub fn revoke(state: &AppState, session: &Session) {
    let now = now_ms();
    let mut set = state.ui.revoked.lock();
    set.retain(|_, exp| *exp > now);
    set.insert(session.mac, session.expires_at);
}

static SERVING_TLS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set by `keygate serve` when it terminates TLS itself: every UI cookie is then Secure.
pub fn set_serving_tls(on: bool) {
    SERVING_TLS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the request reached keygate over TLS (directly or through a proxy that says so).
pub fn is_secure(headers: &HeaderMap) -> bool {
    if *FORCE_SECURE || SERVING_TLS.load(std::sync::atomic::Ordering::Relaxed) {
        return true;
    }
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().eq_ignore_ascii_case("https"))
        .unwrap_or(false);
    let forwarded = headers
        .get("forwarded")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.to_ascii_lowercase().contains("proto=https"))
        .unwrap_or(false);
    proto || forwarded
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Path=/ui, Secure behind TLS.
pub fn set_cookie(name: &str, value: &str, max_age_secs: i64, secure: bool) -> HeaderValue {
    let s = format!(
        "{name}={value}; Path=/ui; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("kg_invalid=; Path=/ui; Max-Age=0"))
}

/// A `Set-Cookie` value that removes cookie `name`.
pub fn clear_cookie(name: &str, secure: bool) -> HeaderValue {
    set_cookie(name, "", 0, secure)
}

/// Seconds to wait when `ip` has failed to sign in too often ([`MAX_LOGIN_FAILURES`] in
/// [`FAIL_WINDOW_MS`]). The failures are a throttle of the limit engine: on Redis, counted by
/// every replica together.
pub async fn login_throttled(state: &AppState, ip: IpAddr) -> Option<u64> {
    state
        .limits
        .throttled("ui_login_failure", &ip.to_string(), MAX_LOGIN_FAILURES, FAIL_WINDOW_MS)
        .await
}

/// Counts a failed sign-in of `ip`. (A successful sign-in does not clear the count: the
/// window forgets failures by itself.)
pub async fn note_login_failure(state: &AppState, ip: IpAddr, now: i64) {
    let counted = state
        .limits
        .throttle(
            "ui_login_failure",
            &ip.to_string(),
            MAX_LOGIN_FAILURES,
            FAIL_WINDOW_MS,
            now,
        )
        .await;
    if let Err(e) = counted {
        tracing::warn!(error = %e, "cannot count a failed sign-in");
    }
}

/// Compares two strings in constant time (for their common length).
pub fn ct_eq_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where a request without a valid session goes: the sign-in page (back to the page asked
/// for, after signing in, for a plain `GET`).
pub fn sign_in_redirect(req: &axum::extract::Request) -> Response {
    let path = req.uri().path();
    let safe_next = req.method() == http::Method::GET
        && path.starts_with("/ui/")
        && path.len() < 200
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
        && !path.contains("//")
        && !path.starts_with("/ui/login");
    let to = if safe_next {
        format!("/ui/login?next={path}")
    } else {
        "/ui/login".to_string()
    };
    let mut resp = (StatusCode::SEE_OTHER, [(http::header::LOCATION, to)]).into_response();
    super::security_headers(resp.headers_mut());
    resp
}
