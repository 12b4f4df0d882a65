//! The web UI at `/ui`: sign-in, Keys, Virtual keys, API keys, Usage, Rate-limit log and
//! Audit log, served by the same binary with its assets embedded.
//!
//! Pages are rendered on the server from askama templates (`crates/keygate-api/templates/`,
//! checked at compile time; no framework, no CDN): each page's view struct holds a
//! [`Frame`] and its template extends `layout.html`. Forms POST back to `/ui/...` and every
//! action calls the same service functions as the management API, under the same
//! authorization (an ADMIN key's session, scoped to its workspace).
//!
//! What must stay true: every value shown goes through the templates' auto-escaping (no markup
//! is built in Rust strings and no template marks a value `|safe`); every POST carries the
//! session's CSRF token and comes from this origin; every response carries the CSP and the
//! other security headers, and no page has inline script or style; no secret is shown except a
//! new platform key's, once.

mod api_keys;
mod chart;
pub mod html;
mod keys;
mod logs;
pub mod session;
mod usage;
mod virtual_keys;

use std::sync::Arc;

use askama::Template;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use keygate_types::timefmt::now_ms;
use zeroize::Zeroizing;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ClientIp, Ctx};
use crate::state::AppState;
use crate::{Role, RouteTable};
use html::{Flash, Frame, Nav};

/// The Content-Security-Policy of every UI response.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                       connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'";

/// Sets the security headers every UI response carries.
pub fn security_headers(h: &mut HeaderMap) {
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    if !h.contains_key(http::header::CACHE_CONTROL) {
        h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

async fn with_security_headers(mut req: Request, next: Next) -> Response {
    // A request that reached keygate's own TLS listener with its scheme (HTTP/2) is marked as
    // a forwarded HTTPS request, so its cookies are Secure like those behind a TLS proxy.
    if req.uri().scheme_str() == Some("https") && !req.headers().contains_key("x-forwarded-proto") {
        req.headers_mut()
            .insert("x-forwarded-proto", HeaderValue::from_static("https"));
    }
    let mut resp = next.run(req).await;
    security_headers(resp.headers_mut());
    resp
}

/// Adds one UI route: the handler wrapped so that every answer carries the security headers.
macro_rules! ui_route {
    ($table:expr, $method:expr, $path:expr, $role:expr, $handler:expr) => {
        $table.add(
            $method,
            $path,
            $role,
            $handler.layer(middleware::from_fn(with_security_headers)),
        )
    };
}

/// Adds the UI's routes to the table (each declares its role).
pub fn add_routes(table: RouteTable) -> RouteTable {
    use Method as M;
    use Role::{Public, Session};
    let t = table;
    let t = ui_route!(t, M::GET, "/ui", Session, home);
    let t = ui_route!(t, M::GET, "/ui/", Session, home);
    let t = ui_route!(t, M::GET, "/ui/login", Public, login_page);
    let t = ui_route!(t, M::POST, "/ui/login", Public, login_submit);
    let t = ui_route!(t, M::POST, "/ui/logout", Session, logout);
    let t = ui_route!(t, M::GET, "/ui/assets/{file}", Public, asset);
    // Provider keys.
    let t = ui_route!(t, M::GET, "/ui/keys", Session, keys::list);
    let t = ui_route!(t, M::GET, "/ui/keys/new", Session, keys::new_form);
    let t = ui_route!(t, M::POST, "/ui/keys/new", Session, keys::create);
    let t = ui_route!(t, M::GET, "/ui/keys/{id}", Session, keys::edit_form);
    let t = ui_route!(t, M::POST, "/ui/keys/{id}", Session, keys::update);
    let t = ui_route!(t, M::POST, "/ui/keys/{id}/rename", Session, keys::rename);
    let t = ui_route!(t, M::POST, "/ui/keys/{id}/rotate", Session, keys::rotate);
    let t = ui_route!(t, M::GET, "/ui/keys/{id}/delete", Session, keys::delete_form);
    let t = ui_route!(t, M::POST, "/ui/keys/{id}/delete", Session, keys::delete);
    // Virtual keys.
    let t = ui_route!(t, M::GET, "/ui/virtual-keys", Session, virtual_keys::list);
    let t = ui_route!(t, M::GET, "/ui/virtual-keys/new", Session, virtual_keys::new_form);
    let t = ui_route!(t, M::POST, "/ui/virtual-keys/new", Session, virtual_keys::create);
    let t = ui_route!(t, M::GET, "/ui/virtual-keys/{id}", Session, virtual_keys::edit_form);
    let t = ui_route!(t, M::POST, "/ui/virtual-keys/{id}", Session, virtual_keys::update);
    let t = ui_route!(
        t,
        M::POST,
        "/ui/virtual-keys/{id}/status",
        Session,
        virtual_keys::set_status
    );
    let t = ui_route!(
        t,
        M::GET,
        "/ui/virtual-keys/{id}/delete",
        Session,
        virtual_keys::delete_form
    );
    let t = ui_route!(
        t,
        M::POST,
        "/ui/virtual-keys/{id}/delete",
        Session,
        virtual_keys::delete
    );
    // Platform API keys.
    let t = ui_route!(t, M::GET, "/ui/api-keys", Session, api_keys::list);
    let t = ui_route!(t, M::GET, "/ui/api-keys/new", Session, api_keys::new_form);
    let t = ui_route!(t, M::POST, "/ui/api-keys/new", Session, api_keys::create);
    let t = ui_route!(t, M::GET, "/ui/api-keys/{id}/rotate", Session, api_keys::rotate_form);
    let t = ui_route!(t, M::POST, "/ui/api-keys/{id}/rotate", Session, api_keys::rotate);
    let t = ui_route!(t, M::GET, "/ui/api-keys/{id}/delete", Session, api_keys::delete_form);
    let t = ui_route!(t, M::POST, "/ui/api-keys/{id}/delete", Session, api_keys::delete);
    // Figures and logs.
    let t = ui_route!(t, M::GET, "/ui/usage", Session, usage::page);
    let t = ui_route!(t, M::GET, "/ui/rate-limits", Session, logs::rate_limits);
    ui_route!(t, M::GET, "/ui/audit", Session, logs::audit)
}

/// The signed-in caller of a UI page: the API's [`Ctx`] plus the session's CSRF token.
pub struct Ui {
    pub ctx: Ctx,
    pub csrf: String,
    pub secure: bool,
    flash: Option<String>,
}

/// Where a message-only page sends people back to: (address, label).
pub type Back = Option<(&'static str, &'static str)>;

impl Ui {
    pub fn principal(&self) -> &Arc<Principal> {
        &self.ctx.principal
    }

    /// The frame of a page (title, sidebar, who is signed in, CSRF token) with the one-time
    /// message of the flash cookie, if any.
    pub fn frame<'a>(&'a self, nav: Nav, title: &'a str) -> Frame<'a> {
        self.frame_with(nav, title, None)
    }

    /// The frame of a page with a given message (the flash cookie's message when `msg` is None).
    pub fn frame_with<'a>(&'a self, nav: Nav, title: &'a str, msg: Option<Flash<'a>>) -> Frame<'a> {
        Frame {
            title,
            nav,
            workspace: &self.ctx.workspace,
            last6: &self.ctx.principal.last6,
            csrf: &self.csrf,
            flash: msg.or_else(|| self.flash.as_deref().map(Flash::Ok)),
        }
    }

    /// The frame of a page that shows a service's error.
    pub fn error_frame<'a>(&'a self, nav: Nav, title: &'a str, e: &'a ApiError) -> Frame<'a> {
        self.frame_with(nav, title, Some(Flash::Error(&e.message)))
    }

    /// A whole page (status 200).
    pub fn page(&self, view: &impl Template) -> Response {
        self.render(StatusCode::OK, view)
    }

    /// A page with a given status. The flash cookie is cleared once its message is shown.
    pub fn render(&self, status: StatusCode, view: &impl Template) -> Response {
        let mut resp = render_html(status, view);
        if self.flash.is_some() {
            resp.headers_mut().append(
                http::header::SET_COOKIE,
                session::clear_cookie(session::FLASH_COOKIE, self.secure),
            );
        }
        resp
    }

    /// A page with only a message and, maybe, a way back.
    pub fn message_page(&self, status: StatusCode, nav: Nav, title: &str, msg: Flash<'_>, back: Back) -> Response {
        self.render(
            status,
            &MessagePage {
                frame: self.frame_with(nav, title, Some(msg)),
                back,
            },
        )
    }

    /// A page showing only an error from a service, with its status.
    pub fn error_page(&self, nav: Nav, title: &str, e: &ApiError, back: Back) -> Response {
        self.message_page(e.status, nav, title, Flash::Error(&e.message), back)
    }

    /// `303 See Other` to `to`, with a message for the next page.
    pub fn redirect_with(&self, to: &str, msg: &str) -> Response {
        let mut resp = redirect(to);
        let value: String = msg.chars().take(300).collect();
        resp.headers_mut().append(
            http::header::SET_COOKIE,
            session::set_cookie(
                session::FLASH_COOKIE,
                &URL_SAFE_NO_PAD.encode(value.as_bytes()),
                60,
                self.secure,
            ),
        );
        resp
    }
}

/// `message.html`: a signed-in page with only its message.
#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    frame: Frame<'a>,
    back: Back,
}

fn sign_in_again() -> Response {
    redirect("/ui/login")
}

impl FromRequestParts<AppState> for Ui {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let principal = parts
            .extensions
            .get::<Arc<Principal>>()
            .cloned()
            .ok_or_else(sign_in_again)?;
        let now = now_ms();
        let session = session::session_at(state, &parts.headers, now).ok_or_else(sign_in_again)?;
        if session.principal_id != principal.id {
            return Err(sign_in_again());
        }
        if !principal.ip_nets.is_empty() {
            let ClientIp(ip) = match ClientIp::from_request_parts(parts, state).await {
                Ok(ip) => ip,
                Err(never) => match never {},
            };
            if !ip_allowed(&principal, ip) {
                return Err(plain_error(
                    StatusCode::FORBIDDEN,
                    "This API key is restricted to configured IP addresses; this request came from elsewhere.",
                ));
            }
        }
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let flash = session::cookie_values(&parts.headers, session::FLASH_COOKIE)
            .next()
            .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|s| !s.is_empty())
            .map(|s| s.chars().take(300).collect());
        Ok(Ui {
            ctx: Ctx {
                workspace: principal.workspace.clone(),
                principal,
                request_id,
                quiet: false,
            },
            csrf: session.csrf,
            secure: session::is_secure(&parts.headers),
            flash,
        })
    }
}

fn ip_allowed(p: &Principal, ip: std::net::IpAddr) -> bool {
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    p.ip_nets.is_empty() || p.ip_nets.iter().any(|n| n.contains(&ip))
}

/// A template rendered as the HTML response; a template that fails to render (a bug: every
/// value it is given can be written) answers 500 without a partial page.
pub fn render_html(status: StatusCode, view: &impl Template) -> Response {
    match view.render() {
        Ok(body) => html_response(status, body),
        Err(e) => {
            tracing::error!(error = %e, "a UI template failed to render");
            let mut resp = (StatusCode::INTERNAL_SERVER_ERROR, "The page could not be drawn.").into_response();
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            resp
        }
    }
}

/// An HTML response.
pub fn html_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// `303 See Other`.
pub fn redirect(to: &str) -> Response {
    let loc = HeaderValue::from_str(to).unwrap_or_else(|_| HeaderValue::from_static("/ui/keys"));
    (StatusCode::SEE_OTHER, [(http::header::LOCATION, loc)]).into_response()
}

/// A page with only a message (refusals before a page can be drawn).
pub fn plain_error(status: StatusCode, message: &str) -> Response {
    render_html(
        status,
        &Refusal {
            title: "Error",
            reason: status.canonical_reason().unwrap_or("Error"),
            message,
        },
    )
}

/// `refusal.html`: a message without the sidebar.
#[derive(Template)]
#[template(path = "refusal.html")]
struct Refusal<'a> {
    title: &'a str,
    reason: &'a str,
    message: &'a str,
}

/// A posted form (`application/x-www-form-urlencoded`). Values are zeroized when dropped, since
/// some are secrets.
pub struct Form {
    fields: Vec<(String, Zeroizing<String>)>,
}

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        let fields = url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Zeroizing::new(v.into_owned())))
            .collect();
        Form { fields }
    }

    /// The first value of `name`, trimmed (None when absent or blank).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The first value of `name`, trimmed, or "".
    pub fn text(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }

    /// Every non-blank value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
            .collect()
    }

    pub fn checked(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Largest form body accepted (a service-account JSON fits).
const MAX_FORM_BYTES: usize = 256 * 1024;

/// The refusal of a state-changing request that a browser says came from elsewhere.
fn origin_refusal(headers: &HeaderMap) -> Option<Response> {
    let refuse = || {
        Some(plain_error(
            StatusCode::FORBIDDEN,
            "This form did not come from keygate's own pages, so it was not accepted.",
        ))
    };
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if let Some(site) = site {
        if !matches!(site, "same-origin" | "none") {
            return refuse();
        }
    }
    if let Some(origin) = headers.get(http::header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        // Under `Referrer-Policy: no-referrer` a browser sends `Origin: null` with its own
        // forms; then `Sec-Fetch-Site` (which pages cannot set) must say same-origin.
        if origin == "null" {
            return if site == Some("same-origin") { None } else { refuse() };
        }
        let host = headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("");
        if host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
            return refuse();
        }
    }
    None
}

async fn read_form(req: Request, state: &AppState) -> Result<(HeaderMap, Form), Response> {
    let headers = req.headers().clone();
    if let Some(refusal) = origin_refusal(&headers) {
        return Err(refusal);
    }
    let body = axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES)
        .await
        .map_err(|_| plain_error(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large."))?;
    let _ = state;
    Ok((headers, Form::parse(&body)))
}

fn csrf_refused() -> Response {
    plain_error(
        StatusCode::FORBIDDEN,
        "The form's security token is missing or out of date. Go back, reload the page and try again.",
    )
}

/// A form posted in a session: origin checked and its `_csrf` field equal to the session's token.
pub struct PostForm(pub Form);

impl FromRequest<AppState> for PostForm {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (headers, form) = read_form(req, state).await?;
        let session = session::session_at(state, &headers, now_ms()).ok_or_else(sign_in_again)?;
        match form.get("_csrf") {
            Some(t) if session::ct_eq_str(t, &session.csrf) => Ok(PostForm(form)),
            _ => Err(csrf_refused()),
        }
    }
}

/// The sign-in form: origin checked and its `_csrf` field equal to the `kg_login` cookie.
pub struct LoginForm(pub Form);

impl FromRequest<AppState> for LoginForm {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (headers, form) = read_form(req, state).await?;
        let cookie = session::cookie_values(&headers, session::LOGIN_COOKIE).next();
        match (form.get("_csrf"), cookie) {
            (Some(t), Some(c)) if !c.is_empty() && session::ct_eq_str(t, c) => Ok(LoginForm(form)),
            _ => Err(csrf_refused()),
        }
    }
}

/// Query parameters of a page, parsed leniently (unknown ones ignored).
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn text(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }

    /// `page` (1-based, at least 1).
    pub fn page(&self) -> u32 {
        self.get("page")
            .and_then(|p| p.parse::<u32>().ok())
            .filter(|p| *p >= 1)
            .unwrap_or(1)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        Ok(Params(
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .take(64)
                .collect(),
        ))
    }
}

/// A message as a sentence: a capital first letter and a full stop.
pub fn sentence(msg: &str) -> String {
    let mut chars = msg.trim().chars();
    let mut out: String = match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => return String::new(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// A slice of `items` for `page` (1-based) of `per_page`.
pub fn page_of<T>(items: Vec<T>, page: u32, per_page: u32) -> Vec<T> {
    let start = (page.saturating_sub(1) as usize).saturating_mul(per_page as usize);
    items.into_iter().skip(start).take(per_page as usize).collect()
}

/// Case-insensitive substring match of `q` in any of `hay`.
pub fn matches(q: &str, hay: &[&str]) -> bool {
    if q.is_empty() {
        return true;
    }
    let q = q.to_lowercase();
    hay.iter().any(|h| h.to_lowercase().contains(&q))
}

async fn home() -> Response {
    redirect("/ui/keys")
}

/// `login.html`: the sign-in form.
#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    title: &'a str,
    csrf: &'a str,
    next: &'a str,
    error: Option<&'a str>,
}

/// Only `/ui/...` paths of plain characters may be a destination after sign-in.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.contains("//")
                && n.len() < 200
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.')) =>
        {
            n.to_string()
        }
        _ => "/ui/keys".to_string(),
    }
}

fn login_response(status: StatusCode, headers: &HeaderMap, next: &str, error: Option<&str>) -> Response {
    let token = session::random_token();
    let page = LoginPage {
        title: "Sign in",
        csrf: &token,
        next,
        error,
    };
    let mut resp = render_html(status, &page);
    resp.headers_mut().append(
        http::header::SET_COOKIE,
        session::set_cookie(session::LOGIN_COOKIE, &token, 3600, session::is_secure(headers)),
    );
    resp
}

async fn login_page(State(state): State<AppState>, headers: HeaderMap, q: Params) -> Response {
    let next = safe_next(q.get("next"));
    if session::principal_of_session(&state, &headers).is_some() {
        return redirect(&next);
    }
    login_response(StatusCode::OK, &headers, &next, None)
}

async fn login_submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    LoginForm(form): LoginForm,
) -> Response {
    let now = now_ms();
    let next = safe_next(form.get("next"));
    if let Some(secs) = session::login_throttled(&state, ip).await {
        let mut resp = login_response(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            &next,
            Some(&format!(
                "Too many failed sign-ins from this address. Try again in {} minutes.",
                secs.div_ceil(60)
            )),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
        return resp;
    }
    let Some(key) = form.get("key") else {
        return login_response(
            StatusCode::BAD_REQUEST,
            &headers,
            &next,
            Some("Enter an ADMIN API key."),
        );
    };
    // Every refusal below is a failed sign-in, counted before it is answered.
    let refused = |status: StatusCode, msg: &str| login_response(status, &headers, &next, Some(msg));
    let principal = match state.auth.authenticate(key, |k| state.vault.hash(k), now) {
        Ok(p) => p,
        Err(f) => {
            let e = crate::auth::auth_error(&f);
            session::note_login_failure(&state, ip, now).await;
            return refused(e.status, &sentence(&e.message));
        }
    };
    if !principal.is_admin() {
        session::note_login_failure(&state, ip, now).await;
        return refused(
            StatusCode::FORBIDDEN,
            "This is an INFERENCE key: it may only call the gateway. Sign in with an ADMIN key.",
        );
    }
    if !ip_allowed(&principal, ip) {
        session::note_login_failure(&state, ip, now).await;
        return refused(
            StatusCode::FORBIDDEN,
            "This API key is restricted to configured IP addresses; this request came from elsewhere.",
        );
    }
    state.auth.note_use(&principal, now);
    let secure = session::is_secure(&headers);
    let cookie = session::issue(&state, &principal.id, now);
    let mut resp = redirect(&next);
    let h = resp.headers_mut();
    h.append(
        http::header::SET_COOKIE,
        session::set_cookie(session::COOKIE, &cookie, session::SESSION_TTL_MS / 1000, secure),
    );
    h.append(
        http::header::SET_COOKIE,
        session::clear_cookie(session::LOGIN_COOKIE, secure),
    );
    resp
}

async fn logout(State(state): State<AppState>, headers: HeaderMap, PostForm(_form): PostForm) -> Response {
    if let Some(s) = session::session_at(&state, &headers, now_ms()) {
        session::revoke(&state, &s);
    }
    let secure = session::is_secure(&headers);
    let mut resp = redirect("/ui/login");
    resp.headers_mut()
        .append(http::header::SET_COOKIE, session::clear_cookie(session::COOKIE, secure));
    resp
}

const APP_CSS: &str = include_str!("../../assets/ui/app.css");
const APP_JS: &str = include_str!("../../assets/ui/app.js");
const LOGO_SVG: &str = include_str!("../../assets/ui/logo.svg");

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, ctype) = match file.as_str() {
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "logo.svg" => (LOGO_SVG, "image/svg+xml"),
        _ => return plain_error(StatusCode::NOT_FOUND, "No such file."),
    };
    (
        StatusCode::OK,
        [
            (http::header::CONTENT_TYPE, HeaderValue::from_static(ctype)),
            (
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}
