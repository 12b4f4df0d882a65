//! The web UI's security properties and flows, through the real router on a socket: session
//! cookie flags, CSP and the other headers on every page, CSRF and origin checks, sessions
//! ended by sign-out, expiry and key deletion, INFERENCE keys refused, throttled sign-in,
//! escaping, and the main flows of each page.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use common::{key, start, G};
use keygate_api::platform_keys::KeySettings;
use keygate_api::ui::session;
use keygate_api::Role;
use keygate_types::timefmt::now_ms;
use keygate_types::PlatformKeyType;
use reqwest::header::HeaderMap;
use serde_json::json;

/// A browser-like client: no automatic redirects, its own cookie jar.
struct Browser {
    url: String,
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

struct Page {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    fn csrf(&self) -> String {
        let at = self.body.find(r#"name="_csrf" value=""#).expect("a CSRF field");
        let rest = &self.body[at + r#"name="_csrf" value=""#.len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl Browser {
    fn new(g: &G) -> Browser {
        Browser {
            url: g.url.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = if self.cookies.is_empty() {
            req
        } else {
            req.header("cookie", self.cookie_header())
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        for c in headers.get_all("set-cookie") {
            let c = c.to_str().unwrap();
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        let body = resp.text().await.unwrap();
        Page { status, headers, body }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.url));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let req = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req).await
    }

    /// Signs in with `key`; returns the answer to the form.
    async fn sign_in(&mut self, key: &str) -> Page {
        let page = self.get("/ui/login").await;
        assert_eq!(page.status, 200);
        let csrf = page.csrf();
        self.post("/ui/login", &[("_csrf", &csrf), ("key", key), ("next", "/ui/keys")])
            .await
    }

    /// A form's CSRF token, read from a page of the session.
    async fn csrf(&mut self) -> String {
        let page = self.get("/ui/keys").await;
        assert_eq!(page.status, 200, "{}", page.body);
        page.csrf()
    }
}

async fn signed_in(g: &G) -> Browser {
    let mut b = Browser::new(g);
    let page = b.sign_in(&g.admin).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.location(), "/ui/keys");
    b
}

fn assert_security_headers(page: &Page, what: &str) {
    let h = &page.headers;
    assert_eq!(
        h.get("content-security-policy").map(|v| v.to_str().unwrap()),
        Some(keygate_api::ui::CSP),
        "{what}"
    );
    assert!(keygate_api::ui::CSP.contains("default-src 'self'"));
    assert!(keygate_api::ui::CSP.contains("script-src 'self'"));
    assert!(keygate_api::ui::CSP.contains("frame-ancestors 'none'"));
    assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff", "{what}");
    assert_eq!(h.get("referrer-policy").unwrap(), "no-referrer", "{what}");
    assert_eq!(h.get("x-frame-options").unwrap(), "DENY", "{what}");
}

/// Nothing in a page that the CSP would block: no inline script, handler or style.
fn assert_csp_clean(body: &str, what: &str) {
    let lower = body.to_ascii_lowercase();
    let mut rest = lower.as_str();
    while let Some(i) = rest.find("<script") {
        let tag_end = rest[i..].find('>').unwrap() + i;
        assert!(rest[i..tag_end].contains("src="), "{what}: inline script");
        rest = &rest[tag_end..];
    }
    assert!(!lower.contains(" style="), "{what}: inline style");
    assert!(!lower.contains("<style"), "{what}: style element");
    assert!(!lower.contains(" onclick="), "{what}: inline handler");
    assert!(!lower.contains("javascript:"), "{what}: javascript URL");
    assert!(
        !lower.contains("src=\"http") && !lower.contains("href=\"http"),
        "{what}: an external resource"
    );
}

#[tokio::test]
async fn every_ui_page_needs_a_session() {
    let g = start().await;
    let table = keygate_api::routes(g.state.clone());
    let mut b = Browser::new(&g);
    let mut checked = 0;
    for spec in table.specs() {
        if !spec.path.starts_with("/ui") {
            continue;
        }
        if spec.role != Role::Session {
            assert!(
                spec.path == "/ui/login" || spec.path.starts_with("/ui/assets/"),
                "{} {} is public",
                spec.method,
                spec.path
            );
            continue;
        }
        let path = spec.path.replace("{id}", "00000000-0000-0000-0000-000000000000");
        // Without a cookie, with a bearer ADMIN key (the UI takes sessions only), and with a
        // forged cookie.
        for (cookie, bearer) in [(None, false), (None, true), (Some("kg_session=abc.def"), false)] {
            let mut req = b.http.request(spec.method.clone(), format!("{}{path}", g.url));
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            if bearer {
                req = req.bearer_auth(&g.admin);
            }
            let page = b.send(req).await;
            assert_eq!(page.status, 303, "{} {path}", spec.method);
            assert!(page.location().starts_with("/ui/login"), "{} {path}", spec.method);
            assert_security_headers(&page, &path);
            checked += 1;
        }
    }
    assert!(checked >= 3 * 25, "{checked}");
    // A GET comes back to the page asked for after signing in.
    let page = b.get("/ui/usage").await;
    assert_eq!(page.location(), "/ui/login?next=/ui/usage");
    let page = b.get("/ui/login?next=/ui/usage").await;
    let csrf = page.csrf();
    assert!(page.body.contains(r#"name="next" value="/ui/usage""#));
    let page = b
        .post(
            "/ui/login",
            &[("_csrf", &csrf), ("key", &g.admin), ("next", "/ui/usage")],
        )
        .await;
    assert_eq!(page.location(), "/ui/usage");
    // Never anywhere else.
    let mut b = Browser::new(&g);
    let csrf = b.get("/ui/login").await.csrf();
    let page = b
        .post(
            "/ui/login",
            &[("_csrf", &csrf), ("key", &g.admin), ("next", "//evil.example/ui/")],
        )
        .await;
    assert_eq!(page.location(), "/ui/keys");
}

#[tokio::test]
async fn the_session_cookie_is_http_only_strict_and_expires() {
    let g = start().await;
    let mut b = Browser::new(&g);
    let login = b.get("/ui/login").await;
    assert_security_headers(&login, "login");
    assert_csp_clean(&login.body, "login");
    assert!(login.body.contains(r#"type="password""#));
    let page = b.sign_in(&g.admin).await;
    assert_eq!(page.status, 303);
    let cookie = page
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("kg_session="))
        .expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=28800"] {
        assert!(cookie.contains(attr), "{attr} missing in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "no TLS here: {cookie}");
    assert!(!cookie.contains(&g.admin), "the key itself is never in the cookie");
    // Behind a TLS proxy the cookie is Secure.
    let mut b = Browser::new(&g);
    let csrf = b.get("/ui/login").await.csrf();
    let body = format!("_csrf={csrf}&key={}", g.admin);
    let req = b
        .http
        .post(format!("{}/ui/login", g.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-proto", "https")
        .body(body);
    let page = b.send(req).await;
    assert_eq!(page.status, 303);
    let cookie = page
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("kg_session="))
        .unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[tokio::test]
async fn every_page_carries_the_csp_and_nothing_it_would_block() {
    let g = start().await;
    let slug = g.vk("csp", "openai", json!({}), json!({"budget": {"usd": 5}})).await;
    let (s, _, _) = g.chat(&slug, common::chat_body()).await;
    assert_eq!(s, 200);
    let mut b = signed_in(&g).await;
    let pk = g
        .state
        .store
        .get_provider_key_by_name("default", "csp-pk")
        .await
        .unwrap();
    let vk = g.state.store.get_virtual_key("default", &slug).await.unwrap();
    let ak = g.state.auth.principals().into_iter().next().unwrap();
    let pages = [
        "/ui/keys".to_string(),
        "/ui/keys?q=csp&hub=openai".into(),
        "/ui/keys/new".into(),
        "/ui/keys/new?hub=vertex".into(),
        format!("/ui/keys/{}", pk.id),
        format!("/ui/keys/{}/delete", pk.id),
        "/ui/virtual-keys".into(),
        "/ui/virtual-keys/new".into(),
        format!("/ui/virtual-keys/{}", vk.id),
        format!("/ui/virtual-keys/{}/delete", vk.id),
        "/ui/api-keys".into(),
        "/ui/api-keys/new".into(),
        format!("/ui/api-keys/{}/rotate", ak.id),
        format!("/ui/api-keys/{}/delete", ak.id),
        "/ui/usage".into(),
        "/ui/usage?by=key".into(),
        "/ui/usage?by=apiKey&from=2020-01-01".into(),
        "/ui/rate-limits".into(),
        "/ui/audit".into(),
        "/ui/audit?action=provider_key.create".into(),
    ];
    for path in &pages {
        let page = b.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert_security_headers(&page, path);
        assert_eq!(page.headers.get("cache-control").unwrap(), "no-store", "{path}");
        assert!(page
            .headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert_csp_clean(&page.body, path);
        assert!(
            page.body.contains(r#"action="/ui/logout""#),
            "{path}: a sign-out button"
        );
    }
    // The usage page shows the request.
    let page = b.get("/ui/usage").await;
    assert!(page.body.contains("gpt-4o-mini"), "{}", page.body);
    assert!(page
        .body
        .contains(r#"<span class="stat-value" id="total-requests">1</span>"#));
    // Assets are embedded, typed and carry the headers too.
    for (asset, ctype) in [
        ("app.css", "text/css"),
        ("app.js", "text/javascript"),
        ("logo.svg", "image/svg+xml"),
    ] {
        let page = b.get(&format!("/ui/assets/{asset}")).await;
        assert_eq!(page.status, 200);
        assert!(page
            .headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(ctype));
        assert_security_headers(&page, asset);
    }
    assert_eq!(b.get("/ui/assets/../Cargo.toml").await.status, 404);
    assert_eq!(b.get("/ui/assets/nope.js").await.status, 404);
}

#[tokio::test]
async fn forms_need_the_session_token_and_this_origin() {
    let g = start().await;
    let mut b = signed_in(&g).await;
    let csrf = b.csrf().await;
    let fields = |t: &'static str| {
        vec![
            ("_csrf", t),
            ("name", "csrf-key"),
            ("model_hub", "openai"),
            ("api_key", "sk-csrf-test-000000000"),
        ]
    };
    // Without the token, or with another one: refused, nothing created.
    let page = b.post("/ui/keys/new", &fields("")[1..]).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("security token"));
    assert_security_headers(&page, "403");
    let page = b.post("/ui/keys/new", &fields("wrong-token")).await;
    assert_eq!(page.status, 403);
    // Another session's token does not fit this session.
    let mut other = signed_in(&g).await;
    let other_csrf = other.csrf().await;
    assert_ne!(other_csrf, csrf);
    let mut f = fields("");
    f[0].1 = &other_csrf;
    assert_eq!(b.post("/ui/keys/new", &f).await.status, 403);
    // Sign-out needs it too.
    assert_eq!(b.post("/ui/logout", &[]).await.status, 403);
    assert_eq!(b.get("/ui/keys").await.status, 200);
    // From another site: refused even with the token.
    let mut f = fields("");
    f[0].1 = &csrf;
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&f)
        .finish();
    for (h, v) in [
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let req = b
            .http
            .post(format!("{}/ui/keys/new", g.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(h, v)
            .body(body.clone());
        let page = b.send(req).await;
        assert_eq!(page.status, 403, "{h}: {v}");
    }
    let (s, v) = g.admin("GET", "/api/v1/provider_keys", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["total"], 0, "nothing was created: {v}");
    // The right token from this origin works.
    let origin = g.url.clone();
    let req = b
        .http
        .post(format!("{}/ui/keys/new", g.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", origin)
        .header("sec-fetch-site", "same-origin")
        .body(body);
    let page = b.send(req).await;
    assert_eq!(page.status, 303, "{}", page.body);
    // Under `Referrer-Policy: no-referrer` a browser's own form says `Origin: null`, with
    // `Sec-Fetch-Site: same-origin` (which no page can forge): accepted.
    let mut f = fields("");
    f[0].1 = &csrf;
    f[1].1 = "csrf-key-2";
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&f)
        .finish();
    let req = b
        .http
        .post(format!("{}/ui/keys/new", g.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "null")
        .header("sec-fetch-site", "same-origin")
        .body(body);
    let page = b.send(req).await;
    assert_eq!(page.status, 303, "{}", page.body);
    // The sign-in form has its own token (double submit).
    let mut fresh = Browser::new(&g);
    let page = fresh.post("/ui/login", &[("key", &g.admin)]).await;
    assert_eq!(page.status, 403);
    let csrf = fresh.get("/ui/login").await.csrf();
    let page = fresh.post("/ui/login", &[("_csrf", "other"), ("key", &g.admin)]).await;
    assert_eq!(page.status, 403);
    let page = fresh.post("/ui/login", &[("_csrf", &csrf), ("key", &g.admin)]).await;
    assert_eq!(page.status, 303);
}

#[tokio::test]
async fn a_signed_out_session_is_refused() {
    let g = start().await;
    let mut b = signed_in(&g).await;
    let old = b.cookies.get("kg_session").cloned().unwrap();
    let csrf = b.csrf().await;
    let page = b.post("/ui/logout", &[("_csrf", &csrf)]).await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), "/ui/login");
    assert!(page
        .set_cookies()
        .iter()
        .any(|c| c.starts_with("kg_session=;") && c.contains("Max-Age=0")));
    assert!(!b.cookies.contains_key("kg_session"));
    assert_eq!(b.get("/ui/keys").await.status, 303);
    // The old cookie, replayed, is refused too.
    b.cookies.insert("kg_session".into(), old);
    let page = b.get("/ui/keys").await;
    assert_eq!(page.status, 303);
    assert!(page.location().starts_with("/ui/login"));
    let page = b.post("/ui/keys/new", &[("_csrf", &csrf), ("name", "x")]).await;
    assert_eq!(page.status, 303);
}

#[tokio::test]
async fn an_expired_or_tampered_session_is_refused() {
    let g = start().await;
    let mut b = signed_in(&g).await;
    let admin_id = g
        .state
        .auth
        .authenticate(&g.admin, |k| g.state.vault.hash(k), now_ms())
        .unwrap()
        .id
        .clone();
    // Issued 8 hours and a second ago: expired.
    let stale = session::issue(&g.state, &admin_id, now_ms() - session::SESSION_TTL_MS - 1000);
    b.cookies.insert("kg_session".into(), stale);
    assert_eq!(b.get("/ui/keys").await.status, 303);
    // Issued 8 hours less a minute ago: still valid.
    let fresh = session::issue(&g.state, &admin_id, now_ms() - session::SESSION_TTL_MS + 60_000);
    b.cookies.insert("kg_session".into(), fresh.clone());
    assert_eq!(b.get("/ui/keys").await.status, 200);
    // A payload changed to a later expiry no longer matches its MAC.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (p, mac) = fresh.split_once('.').unwrap();
    let payload = String::from_utf8(b64.decode(p).unwrap()).unwrap();
    let parts: Vec<&str> = payload.splitn(3, '|').collect();
    let later = format!("{}|{}|{}", parts[0], now_ms() + 3_600_000 * 100, parts[2]);
    b.cookies
        .insert("kg_session".into(), format!("{}.{mac}", b64.encode(later)));
    assert_eq!(b.get("/ui/keys").await.status, 303);
    // A cookie signed by another keygate (another vault key) is refused.
    let other = start().await;
    let foreign = session::issue(&other.state, &admin_id, now_ms());
    b.cookies.insert("kg_session".into(), foreign);
    assert_eq!(b.get("/ui/keys").await.status, 303);
    // A session of an INFERENCE key (never issued by sign-in) is refused as well.
    let inf_id = g
        .state
        .auth
        .authenticate(&g.inference, |k| g.state.vault.hash(k), now_ms())
        .unwrap()
        .id
        .clone();
    b.cookies
        .insert("kg_session".into(), session::issue(&g.state, &inf_id, now_ms()));
    assert_eq!(b.get("/ui/keys").await.status, 303);
}

#[tokio::test]
async fn deleting_the_admin_key_ends_its_sessions() {
    let g = start().await;
    let second = key(&g.state, PlatformKeyType::Admin, KeySettings::default()).await;
    let mut b = Browser::new(&g);
    assert_eq!(b.sign_in(&second).await.status, 303);
    assert_eq!(b.get("/ui/api-keys").await.status, 200);
    let id = g
        .state
        .auth
        .authenticate(&second, |k| g.state.vault.hash(k), now_ms())
        .unwrap()
        .id
        .clone();
    let (s, v) = g.admin("DELETE", &format!("/api/v1/api_keys?id={id}"), None).await;
    assert_eq!(s, 200, "{v}");
    let page = b.get("/ui/api-keys").await;
    assert_eq!(page.status, 303);
    assert!(page.location().starts_with("/ui/login"));
    // Deleting one's own key from the UI signs out as well.
    let third = key(&g.state, PlatformKeyType::Admin, KeySettings::default()).await;
    let mut b = Browser::new(&g);
    assert_eq!(b.sign_in(&third).await.status, 303);
    let id = g
        .state
        .auth
        .authenticate(&third, |k| g.state.vault.hash(k), now_ms())
        .unwrap()
        .id
        .clone();
    let page = b.get(&format!("/ui/api-keys/{id}/delete")).await;
    assert!(page.body.contains("signs you out"));
    let csrf = page.csrf();
    let page = b.post(&format!("/ui/api-keys/{id}/delete"), &[("_csrf", &csrf)]).await;
    assert_eq!(page.status, 303);
    assert_eq!(b.get("/ui/keys").await.status, 303);
}

#[tokio::test]
async fn inference_keys_and_wrong_keys_cannot_sign_in_and_failures_are_throttled() {
    let g = start().await;
    let mut b = Browser::new(&g);
    let page = b.sign_in(&g.inference).await;
    assert_eq!(page.status, 403);
    assert!(page.body.contains("INFERENCE key"), "{}", page.body);
    assert!(!b.cookies.contains_key("kg_session"));
    assert!(!page.body.contains(&g.inference), "the key is not echoed");
    let page = b.sign_in("kg_adm_not-a-real-key").await;
    assert_eq!(page.status, 401);
    assert!(
        page.body.contains("Malformed API key") || page.body.contains("Invalid API key"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("not-a-real-key"));
    // Ten failures from one address, then even the right key waits.
    for _ in 0..8 {
        assert_eq!(b.sign_in("kg_adm_nope").await.status, 401);
    }
    let page = b.sign_in(&g.admin).await;
    assert_eq!(page.status, 429, "{}", page.body);
    assert!(page.headers.get("retry-after").is_some());
    assert!(page.body.contains("Too many failed sign-ins"));
    assert!(!b.cookies.contains_key("kg_session"));
}

#[tokio::test]
async fn user_text_is_escaped() {
    let g = start().await;
    let mut b = signed_in(&g).await;
    let csrf = b.csrf().await;
    // A provider-key name cannot hold markup; the form shows it back escaped with the error.
    let evil = r#"<script>alert("pk")</script>"#;
    let page = b
        .post(
            "/ui/keys/new",
            &[
                ("_csrf", &csrf),
                ("name", evil),
                ("model_hub", "openai"),
                ("api_key", "sk-escape-test-0000000"),
            ],
        )
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(!page.body.contains(evil));
    assert!(page.body.contains("&lt;script&gt;alert(&quot;pk&quot;)&lt;/script&gt;"));
    assert!(page.body.contains("flash-error"));
    assert!(!page.body.contains("sk-escape-test"), "a secret is never shown back");
    // Names that may hold markup (virtual keys, API-key descriptions) are shown as text.
    g.vk(
        "esc",
        "openai",
        json!({}),
        json!({"name": "<script>alert('vk')</script>"}),
    )
    .await;
    let (s, v) = g
        .admin(
            "POST",
            "/api/v1/api_keys",
            Some(json!({"apiKeyType": "INFERENCE", "description": "<img src=x onerror=alert(1)>"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let page = b.get("/ui/virtual-keys").await;
    assert!(!page.body.contains("<script>alert('vk')"));
    assert!(page.body.contains("&lt;script&gt;alert(&#39;vk&#39;)&lt;/script&gt;"));
    for path in ["/ui/api-keys", "/ui/audit", "/ui/usage?by=apiKey"] {
        let page = b.get(path).await;
        assert!(!page.body.contains("<img src=x"), "{path}");
    }
    let page = b.get("/ui/api-keys").await;
    assert!(page.body.contains("&lt;img src=x onerror=alert(1)&gt;"));
    // Query text is escaped where it is shown back.
    let page = b.get("/ui/keys?q=%22%3E%3Cscript%3Ex%3C/script%3E").await;
    assert!(!page.body.contains("<script>x</script>"));
    assert!(page.body.contains("&quot;&gt;&lt;script&gt;x&lt;/script&gt;"));
}

/// A hostile name as stored and as it must appear in HTML: every `<`, `>` and `"` escaped, so
/// it cannot close an attribute or open an element.
const HOSTILE_NAMES: [(&str, &str); 2] = [
    ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    (
        r#""><img src=x onerror=alert(1)>"#,
        "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;",
    ),
];

/// `raw` is nowhere in the page as markup and `escaped` is: it was rendered, as text.
fn assert_shown_escaped(page: &Page, raw: &str, escaped: &str, what: &str) {
    assert!(page.status < 500, "{what}: status {}: {}", page.status, page.body);
    assert!(!page.body.contains(raw), "{what}: the name is in the page raw");
    assert!(!page.body.contains("<script>alert"), "{what}: a script element");
    assert!(!page.body.contains("<img src=x"), "{what}: an img element");
    assert!(page.body.contains(escaped), "{what}: the escaped name is missing");
}

/// Names chosen by people, with markup in them, are text on every page that shows them: the
/// lists, the edit and confirm forms (in headings and in `value="..."` attributes), the page
/// that shows a new API key, and the one-time flash messages. The provider key's name is
/// written to the store directly: the API refuses such a name, but a page must not trust that
/// what it reads was checked.
#[tokio::test]
async fn hostile_names_are_escaped_on_lists_forms_and_flash_messages() {
    let g = start().await;
    let mut b = signed_in(&g).await;
    let csrf = b.csrf().await;
    for (n, (raw, escaped)) in HOSTILE_NAMES.into_iter().enumerate() {
        // A provider key named `raw`.
        let plain = format!("hostile-pk-{n}");
        let (s, v) = g
            .admin(
                "POST",
                "/api/v1/provider_keys",
                Some(json!({"name": plain, "modelHub": "openai", "apiKey": "sk-hostile-000000000000"})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let mut provider = g.state.store.get_provider_key_by_name("default", &plain).await.unwrap();
        provider.name = raw.to_string();
        g.state
            .store
            .update_provider_key(&provider, &[], &[], None, None)
            .await
            .unwrap();
        let pk_id = provider.id.clone();
        let page = b.get("/ui/keys").await;
        assert_shown_escaped(&page, raw, escaped, "provider-key list");
        let page = b.get(&format!("/ui/keys/{pk_id}")).await;
        assert_shown_escaped(&page, raw, escaped, "provider-key edit form");
        assert!(page.body.contains(&format!(r#"name="new_name" value="{escaped}""#)));
        let page = b.get(&format!("/ui/keys/{pk_id}/delete")).await;
        assert_shown_escaped(&page, raw, escaped, "provider-key delete form");
        // An error shown over the edit form: the name is shown again in the form.
        let page = b
            .post(
                &format!("/ui/keys/{pk_id}/rename"),
                &[("_csrf", &csrf), ("new_name", raw)],
            )
            .await;
        assert!(page.body.contains("flash-error"), "{}", page.body);
        assert_shown_escaped(&page, raw, escaped, "provider-key rename refused");

        // A virtual key named `raw` over it, made with the UI's form: its flash names it.
        let slug = format!("hostile-vk-{n}");
        let page = b.get("/ui/virtual-keys/new").await;
        assert_shown_escaped(&page, raw, escaped, "virtual-key form's targets");
        let page = b
            .post(
                "/ui/virtual-keys/new",
                &[("_csrf", &csrf), ("name", raw), ("slug", &slug), ("target", &pk_id)],
            )
            .await;
        assert_eq!(page.status, 303, "{}", page.body);
        let page = b.get("/ui/virtual-keys").await;
        assert_shown_escaped(&page, raw, escaped, "virtual-key list");
        assert!(
            page.body
                .contains(&format!("Created virtual key {escaped} (slug {slug}).")),
            "the flash message, escaped: {}",
            page.body
        );
        let vk = g.state.store.get_virtual_key("default", &slug).await.unwrap();
        let page = b.get(&format!("/ui/virtual-keys/{}", vk.id)).await;
        assert_shown_escaped(&page, raw, escaped, "virtual-key edit form");
        assert!(page.body.contains(&format!(r#"name="name" value="{escaped}""#)));
        let page = b.get(&format!("/ui/virtual-keys/{}/delete", vk.id)).await;
        assert_shown_escaped(&page, raw, escaped, "virtual-key delete form");
        // The provider key's page names the virtual keys that use it.
        let page = b.get(&format!("/ui/keys/{pk_id}")).await;
        assert!(page.body.contains(&slug));

        // An API key described as `raw`, made with the UI's form.
        let page = b
            .post(
                "/ui/api-keys/new",
                &[("_csrf", &csrf), ("api_key_type", "INFERENCE"), ("description", raw)],
            )
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert_shown_escaped(&page, raw, escaped, "the new API key's page");
        let page = b.get("/ui/api-keys").await;
        assert_shown_escaped(&page, raw, escaped, "API-key list");
        let (rows, _) = g
            .state
            .store
            .list_platform_keys("default", keygate_store::Page { page: 1, limit: 500 })
            .await
            .unwrap();
        let ak_id = rows.iter().find(|r| r.description == raw).unwrap().id.clone();
        let page = b.get(&format!("/ui/api-keys/{ak_id}/rotate")).await;
        assert_shown_escaped(&page, raw, escaped, "API-key rotate form");
        let page = b.get(&format!("/ui/api-keys/{ak_id}/delete")).await;
        assert_shown_escaped(&page, raw, escaped, "API-key delete form");
        // A form shown again after an error keeps the description, escaped.
        let page = b
            .post(
                "/ui/api-keys/new",
                &[
                    ("_csrf", &csrf),
                    ("api_key_type", "INFERENCE"),
                    ("description", raw),
                    ("limit_usd", "not a number"),
                ],
            )
            .await;
        assert_eq!(page.status, 400, "{}", page.body);
        assert_shown_escaped(&page, raw, escaped, "API-key form after an error");
        assert!(page.body.contains(&format!(r#"name="description" value="{escaped}""#)));
        // Deleting them: each flash message names what went.
        let page = b
            .post(&format!("/ui/api-keys/{ak_id}/delete"), &[("_csrf", &csrf)])
            .await;
        assert_eq!(page.status, 303, "{}", page.body);
        let page = b.get("/ui/api-keys").await;
        assert!(
            page.body.contains(&format!("Deleted API key {escaped} (kg_inf_")),
            "the flash message, escaped: {}",
            page.body
        );
        assert_shown_escaped(&page, raw, escaped, "API-key deleted flash");
        for path in ["/ui/audit", "/ui/usage?by=providerKey", "/ui/usage?by=key"] {
            let page = b.get(path).await;
            assert!(!page.body.contains(raw), "{path}");
        }
        let page = b
            .post(&format!("/ui/virtual-keys/{}/delete", vk.id), &[("_csrf", &csrf)])
            .await;
        assert_eq!(page.status, 303, "{}", page.body);
        let page = b.get("/ui/virtual-keys").await;
        assert_shown_escaped(&page, raw, escaped, "virtual-key deleted flash");
        let page = b.post(&format!("/ui/keys/{pk_id}/delete"), &[("_csrf", &csrf)]).await;
        assert_eq!(page.status, 303, "{}", page.body);
        let page = b.get("/ui/keys").await;
        assert!(
            page.body.contains(&format!("Deleted provider key {escaped}.")),
            "the flash message, escaped: {}",
            page.body
        );
        assert!(!page.body.contains(raw));
    }
}

#[tokio::test]
async fn provider_keys_add_rename_rotate_delete() {
    let g = start().await;
    let mut b = signed_in(&g).await;
    let csrf = b.csrf().await;
    let mock = format!("{}/v1", g.mock.url());
    let page = b
        .post(
            "/ui/keys/new",
            &[
                ("_csrf", &csrf),
                ("name", "ui-openai"),
                ("model_hub", "openai"),
                ("api_key", "sk-ui-first-secret-0001"),
                ("base_url", &mock),
                ("rate_limit_per_interval", "120"),
                ("rate_limit_interval", "60"),
                // Another hub's fields are ignored.
                ("hc.vertex.region", "us-central1"),
            ],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let page = b.get("/ui/keys").await;
    assert!(page.body.contains("Added provider key ui-openai."));
    assert!(page.body.contains("…0001"));
    assert!(page.body.contains("120 per minute"));
    assert!(!page.body.contains("sk-ui-first-secret"));
    // The flash message is shown once.
    assert!(!b.get("/ui/keys").await.body.contains("Added provider key"));
    let row = g
        .state
        .store
        .get_provider_key_by_name("default", "ui-openai")
        .await
        .unwrap();
    assert_eq!(row.rate_limit_per_interval, Some(120));
    let id = row.id.clone();
    // A hub with its own fields (Azure).
    let page = b
        .post(
            "/ui/keys/new",
            &[
                ("_csrf", &csrf),
                ("name", "ui-azure"),
                ("model_hub", "azure"),
                ("api_key", "az-secret-000000000000"),
                ("hc.azure.resource_name", "myres"),
                ("hc.azure.deployments", "gpt4=gpt-4o-prod\nmini = gpt-4o-mini"),
                ("hc.azure.default_deployment", "mini"),
            ],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let (_, v) = g.admin("GET", "/api/v1/provider_keys/ui-azure", None).await;
    assert_eq!(v["data"]["hubConfig"]["resourceName"], "myres");
    assert_eq!(v["data"]["hubConfig"]["deployments"]["mini"], "gpt-4o-mini");
    // A readable error: the name is taken.
    let page = b
        .post(
            "/ui/keys/new",
            &[
                ("_csrf", &csrf),
                ("name", "ui-openai"),
                ("model_hub", "openai"),
                ("api_key", "sk-x-000000000000"),
            ],
        )
        .await;
    assert_eq!(page.status, 409, "{}", page.body);
    assert!(page.body.contains("flash-error"));
    // Edit: only what changed is saved.
    let page = b
        .post(
            &format!("/ui/keys/{id}"),
            &[("_csrf", &csrf), ("base_url", &mock), ("private", "1")],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let row = g.state.store.get_provider_key(&row.workspace, &id).await.unwrap();
    assert!(row.private);
    assert_eq!(row.rate_limit_per_interval, None, "blank returns to the hub default");
    // Rename.
    let page = b
        .post(
            &format!("/ui/keys/{id}/rename"),
            &[("_csrf", &csrf), ("new_name", "ui-main")],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert!(b.get("/ui/keys").await.body.contains("Renamed ui-openai to ui-main."));
    // Rotate: the version goes up, the hint changes.
    let page = b
        .post(
            &format!("/ui/keys/{id}/rotate"),
            &[
                ("_csrf", &csrf),
                ("api_key", "sk-ui-second-secret-0002"),
                ("grace_period_seconds", "0"),
            ],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let page = b.get("/ui/keys").await;
    assert!(
        page.body.contains("Rotated ui-main: secret version 2."),
        "{}",
        page.body
    );
    assert!(page.body.contains("…0002"));
    let page = b.get(&format!("/ui/keys/{id}")).await;
    assert!(page.body.contains(r#"<strong id="secret-version">2</strong>"#));
    // Delete, after confirming.
    let page = b.get(&format!("/ui/keys/{id}/delete")).await;
    assert!(page.body.contains("Delete provider key ui-main?"));
    let page = b.post(&format!("/ui/keys/{id}/delete"), &[("_csrf", &csrf)]).await;
    assert_eq!(page.status, 303);
    let page = b.get("/ui/keys").await;
    assert!(page.body.contains("Deleted provider key ui-main."));
    assert!(!page.body.contains(r#"data-name="ui-main""#));
    // Every change was audited under the signed-in key.
    let (_, v) = g.admin("GET", "/api/v1/audit?limit=50", None).await;
    let actions: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "provider_key.create",
        "provider_key.update",
        "provider_key.rename",
        "provider_key.rotate",
        "provider_key.delete",
    ] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
}

#[tokio::test]
async fn api_keys_show_their_secret_once_and_virtual_keys_work() {
    let g = start().await;
    let mut b = signed_in(&g).await;
    let csrf = b.csrf().await;
    let page = b
        .post(
            "/ui/api-keys/new",
            &[
                ("_csrf", &csrf),
                ("api_key_type", "INFERENCE"),
                ("description", "ui inference"),
                ("limit_usd", "5"),
                ("limit_period", "EPOCH"),
                ("rpm", "60"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let at = page.body.find(r#"<code id="new-secret" class="secret">"#).unwrap();
    let rest = &page.body[at + r#"<code id="new-secret" class="secret">"#.len()..];
    let secret = rest[..rest.find('<').unwrap()].to_string();
    assert!(secret.starts_with("kg_inf_"), "{secret}");
    assert!(page.body.contains("will not show it again"));
    assert!(page.body.contains(r##"data-copy="#new-secret""##));
    // The secret works at the gateway, and appears on no other page.
    assert!(g
        .state
        .auth
        .authenticate(&secret, |k| g.state.vault.hash(k), now_ms())
        .is_ok());
    for path in ["/ui/api-keys", "/ui/audit", "/ui/keys"] {
        let page = b.get(path).await;
        assert!(!page.body.contains(&secret), "{path}");
    }
    let list = b.get("/ui/api-keys").await;
    assert!(list.body.contains("ui inference"));
    assert!(list.body.contains(&format!("kg_inf_…{}", &secret[secret.len() - 6..])));
    assert!(list.body.contains("$5.00 per day"));
    assert!(list.body.contains("60 rpm"));
    // The privilege rule applies: a limited ADMIN cannot create an unlimited key.
    let limited = key(
        &g.state,
        PlatformKeyType::Admin,
        KeySettings {
            rate_limits: [("rpm".to_string(), 10u64)].into_iter().collect(),
            ..Default::default()
        },
    )
    .await;
    let mut lb = Browser::new(&g);
    assert_eq!(lb.sign_in(&limited).await.status, 303);
    let lcsrf = lb.csrf().await;
    let page = lb
        .post(
            "/ui/api-keys/new",
            &[
                ("_csrf", &lcsrf),
                ("api_key_type", "INFERENCE"),
                ("description", "too much"),
            ],
        )
        .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("more rights or higher limits"));
    // Rotate: a new secret, once; the old one stops.
    let id = g
        .state
        .auth
        .authenticate(&secret, |k| g.state.vault.hash(k), now_ms())
        .unwrap()
        .id
        .clone();
    let page = b
        .post(
            &format!("/ui/api-keys/{id}/rotate"),
            &[("_csrf", &csrf), ("grace_period_seconds", "0")],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("The rotated API key"));
    assert!(!page.body.contains(&secret));
    assert!(g
        .state
        .auth
        .authenticate(&secret, |k| g.state.vault.hash(k), now_ms())
        .is_err());
    // A virtual key over a provider key, with a budget bar.
    let (s, _) = g
        .admin(
            "POST",
            "/api/v1/provider_keys",
            Some(json!({"name": "vk-target", "modelHub": "openai", "apiKey": common::SECRET, "baseUrl": format!("{}/v1", g.mock.url())})),
        )
        .await;
    assert_eq!(s, 201);
    let pk = g
        .state
        .store
        .get_provider_key_by_name("default", "vk-target")
        .await
        .unwrap();
    let weight = format!("weight.{}", pk.id);
    let page = b
        .post(
            "/ui/virtual-keys/new",
            &[
                ("_csrf", &csrf),
                ("name", "UI key"),
                ("slug", "ui-key"),
                ("target", &pk.id),
                (&weight, "1"),
                ("budget_usd", "2.50"),
                ("budget_period", "MONTH"),
                ("rpm", "30"),
            ],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let (s, _, _) = g.chat("ui-key", common::chat_body()).await;
    assert_eq!(s, 200);
    let page = b.get("/ui/virtual-keys").await;
    assert!(page.body.contains("Created virtual key UI key (slug ui-key)."));
    assert!(page.body.contains(r#"class="meter""#), "a budget bar");
    assert!(page.body.contains("of $2.50 this month"), "{}", page.body);
    assert!(page.body.contains("30 rpm"));
    // Disable, then enable; edit; delete.
    let vk = g.state.store.get_virtual_key("default", "ui-key").await.unwrap();
    let page = b
        .post(
            &format!("/ui/virtual-keys/{}/status", vk.id),
            &[("_csrf", &csrf), ("status", "disabled")],
        )
        .await;
    assert_eq!(page.status, 303);
    let (s, _, _) = g.chat("ui-key", common::chat_body()).await;
    assert_eq!(s, 403, "a disabled virtual key is refused");
    assert!(b.get("/ui/virtual-keys?status=disabled").await.body.contains("ui-key"));
    b.post(
        &format!("/ui/virtual-keys/{}/status", vk.id),
        &[("_csrf", &csrf), ("status", "active")],
    )
    .await;
    let page = b
        .post(
            &format!("/ui/virtual-keys/{}", vk.id),
            &[
                ("_csrf", &csrf),
                ("name", "UI key"),
                ("slug", "ui-key"),
                ("target", &pk.id),
                (&weight, "1"),
                ("budget_usd", "2.5"),
                ("budget_period", "MONTH"),
                ("rpm", "30"),
                ("models", "gpt-4o-mini, gpt-4o"),
            ],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let (_, v) = g
        .admin("GET", "/api/v1/audit?action=virtual_key.update&limit=10", None)
        .await;
    let last = &v["data"][0]["details"]["changed"];
    assert_eq!(last, &json!(["models"]), "only what changed: {v}");
    let page = b
        .post(&format!("/ui/virtual-keys/{}/delete", vk.id), &[("_csrf", &csrf)])
        .await;
    assert_eq!(page.status, 303);
    assert!(b
        .get("/ui/virtual-keys")
        .await
        .body
        .contains("Deleted virtual key UI key."));
}

#[tokio::test]
async fn every_ui_route_with_an_id_hides_other_workspaces() {
    use keygate_api::platform_keys::{create_platform_key, NewPlatformKey};
    let g = start().await;
    // Workspace default: a provider key, a virtual key, and the ADMIN key itself.
    let slug = g.vk("iso", "openai", json!({}), json!({})).await;
    let pk = g
        .state
        .store
        .get_provider_key_by_name("default", "iso-pk")
        .await
        .unwrap();
    let vk = g.state.store.get_virtual_key("default", &slug).await.unwrap();
    let ak_id = g
        .state
        .auth
        .authenticate(&g.admin, |k| g.state.vault.hash(k), now_ms())
        .unwrap()
        .id
        .clone();
    // An ADMIN of workspace team-b signs in.
    let now = now_ms();
    g.state
        .store
        .create_workspace(
            &keygate_store::WorkspaceRow {
                id: "team-b".into(),
                name: "Team B".into(),
                created_at: now,
                updated_at: now,
            },
            None,
        )
        .await
        .unwrap();
    let (_, b_key) = create_platform_key(
        g.state.store.as_ref(),
        &g.state.vault,
        NewPlatformKey {
            workspace: "team-b",
            key_type: PlatformKeyType::Admin,
            org_admin: false,
            description: "b",
            settings: KeySettings::default(),
            expires_at: None,
            created_by: None,
        },
        None,
    )
    .await
    .unwrap();
    g.state.refresh_caches().await;
    let mut b = Browser::new(&g);
    assert_eq!(b.sign_in(b_key.expose()).await.status, 303);
    let csrf = b.csrf().await;
    // Lists show none of default's keys.
    for path in ["/ui/keys", "/ui/virtual-keys", "/ui/api-keys", "/ui/audit"] {
        let page = b.get(path).await;
        assert_eq!(page.status, 200);
        assert!(!page.body.contains("iso-pk") && !page.body.contains(&vk.slug), "{path}");
        assert!(!page.body.contains(&ak_id), "{path}");
    }
    let table = keygate_api::routes(g.state.clone());
    let mut checked = 0;
    for spec in table.specs() {
        if spec.role != Role::Session || !spec.path.contains("{id}") {
            continue;
        }
        let id = if spec.path.starts_with("/ui/keys/") {
            &pk.id
        } else if spec.path.starts_with("/ui/virtual-keys/") {
            &vk.id
        } else {
            &ak_id
        };
        let path = spec.path.replace("{id}", id);
        let page = if spec.method == reqwest::Method::GET {
            b.get(&path).await
        } else {
            b.post(
                &path,
                &[
                    ("_csrf", &csrf),
                    ("new_name", "stolen"),
                    ("api_key", "sk-stolen-000000000000"),
                    ("status", "disabled"),
                    ("name", "stolen"),
                ],
            )
            .await
        };
        assert_eq!(page.status, 404, "{} {path}: {}", spec.method, page.body);
        assert!(page.body.contains("no such"), "{} {path}", spec.method);
        checked += 1;
    }
    assert!(checked >= 14, "{checked}");
    // Nothing of default's changed.
    let same = g.state.store.get_provider_key("default", &pk.id).await.unwrap();
    assert_eq!((same.name.as_str(), same.secret_version), ("iso-pk", 1));
    let same = g.state.store.get_virtual_key("default", &vk.id).await.unwrap();
    assert_eq!(same.status, "active");
    assert!(g
        .state
        .auth
        .authenticate(&g.admin, |k| g.state.vault.hash(k), now_ms())
        .is_ok());
}
