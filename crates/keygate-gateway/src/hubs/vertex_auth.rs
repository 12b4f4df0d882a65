//! Vertex AI access tokens: a provider key's credentials (Vijil's OAuth refresh-token shape, or a
//! Google service-account JSON) exchanged at Google's token endpoint for short-lived access
//! tokens, cached per provider key and secret version until shortly before they expire.
//!
//! Concurrent callers for the same key share one token request (single flight). The shared
//! request is driven by whichever caller polls it, so a caller that gives up (client
//! disconnect) does not fail the others. A failure is handed to every caller waiting on that
//! request and is not cached: the next call asks again.
//!
//! Nothing secret leaves this module except the access token itself: [`VertexCredentials`]'s
//! Debug output is redacted, and [`VertexAuthError`] carries at most the token endpoint's
//! sanitized OAuth `error` code, never its body, the credentials, or the service-account JSON.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// Google's OAuth 2.0 token endpoint.
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// The scope asked for by a service account's assertion.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The grant type of a service account's self-signed assertion (RFC 7523).
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Timeout of one token request, connect to end of body.
const TOKEN_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Lifetime assumed when the endpoint gives no (or a non-positive) `expires_in`.
const DEFAULT_LIFETIME_SECS: u64 = 3600;

/// Longest lifetime believed, whatever the endpoint says.
const MAX_LIFETIME_SECS: u64 = 24 * 3600;

/// Lifetime of a service account's self-signed assertion (Google's maximum).
const ASSERTION_LIFETIME_SECS: i64 = 3600;

/// Largest token-endpoint answer read; anything bigger is refused.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Longest OAuth `error` code kept from a refusal.
const MAX_ERROR_CODE_LEN: usize = 64;

/// Credentials of a Vertex provider key (from its sealed hub config). Debug shows no secret.
#[derive(Clone)]
pub enum VertexCredentials {
    /// Vijil's shape: OAuth client + refresh token, exchanged at the token endpoint
    /// (`grant_type=refresh_token`).
    OAuth {
        client_id: String,
        client_secret: Zeroizing<String>,
        refresh_token: Zeroizing<String>,
    },
    /// A Google service-account JSON (fields `client_email`, `private_key` (PEM),
    /// `private_key_id`, `token_uri`): a self-signed RS256 JWT exchanged with
    /// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`.
    ServiceAccount { json: Zeroizing<String> },
}

impl fmt::Debug for VertexCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OAuth { client_id, .. } => f
                .debug_struct("OAuth")
                .field("client_id", client_id)
                .field("client_secret", &"<redacted>")
                .field("refresh_token", &"<redacted>")
                .finish(),
            Self::ServiceAccount { .. } => f.debug_struct("ServiceAccount").field("json", &"<redacted>").finish(),
        }
    }
}

/// Why no access token could be had. Messages never contain a secret, the service-account
/// JSON, a URL, or the token endpoint's body (only its sanitized OAuth `error` code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VertexAuthError {
    /// The service-account JSON is unusable (the reason names a field, never its value).
    #[error("invalid service-account JSON: {0}")]
    InvalidServiceAccount(&'static str),
    /// The OAuth credentials are incomplete.
    #[error("invalid OAuth credentials: {0}")]
    InvalidOAuth(&'static str),
    /// The token endpoint is not an absolute http(s) URL.
    #[error("the token endpoint is not a valid http(s) URL")]
    InvalidTokenUrl,
    /// The service account's assertion could not be signed with its private key.
    #[error("could not sign the service-account assertion")]
    Signing,
    /// The token endpoint could not be reached or did not answer in time.
    #[error("token endpoint request failed: {0}")]
    Transport(&'static str),
    /// The token endpoint refused the credentials (4xx), with its OAuth `error` code when it
    /// gave a plain one (e.g. `invalid_grant`, `invalid_client`).
    #[error(
        "token endpoint refused the credentials (HTTP {status}, {})",
        .code.as_deref().unwrap_or("no error code")
    )]
    Rejected { status: u16, code: Option<String> },
    /// The token endpoint failed (5xx, or any other non-success status).
    #[error("token endpoint answered HTTP {status}")]
    Upstream { status: u16 },
    /// The token endpoint answered success with something that is not a usable token.
    #[error("token endpoint returned an unusable answer: {0}")]
    BadResponse(&'static str),
}

impl VertexAuthError {
    /// Whether trying again later may help (network trouble, 5xx, 429), as opposed to
    /// credentials or configuration that will keep failing until an admin fixes them.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) | Self::BadResponse(_) => true,
            Self::Upstream { status } => *status >= 500 || *status == 429,
            Self::Rejected { status, .. } => *status == 429,
            Self::InvalidServiceAccount(_) | Self::InvalidOAuth(_) | Self::InvalidTokenUrl | Self::Signing => false,
        }
    }
}

/// Source of monotonic time for the cache's expiry decisions (injectable for tests).
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// What one token request yields: the token and when it stops being valid.
type Fetched = Result<(Arc<Zeroizing<String>>, Instant), VertexAuthError>;

/// A token request shared by every caller for the same key.
type Flight = Shared<BoxFuture<'static, Fetched>>;

enum Slot {
    Ready {
        token: Arc<Zeroizing<String>>,
        expires_at: Instant,
    },
    Pending {
        id: u64,
        flight: Flight,
    },
}

struct Slots {
    map: HashMap<String, Slot>,
    next_id: u64,
}

/// Access tokens per provider key and secret version, refreshed shortly before they expire.
pub struct TokenCache {
    http: reqwest::Client,
    margin: Duration,
    clock: Arc<dyn Clock>,
    slots: Mutex<Slots>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("refresh_margin", &self.margin)
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// `refresh_margin`: a token is refreshed when it expires within this margin (production:
    /// 5 minutes). `http` should follow no redirects; every token call gets a 10 s timeout.
    pub fn new(http: reqwest::Client, refresh_margin: Duration) -> Self {
        Self::with_clock(http, refresh_margin, Arc::new(SystemClock))
    }

    /// Like [`TokenCache::new`], with the clock that decides expiry.
    pub fn with_clock(http: reqwest::Client, refresh_margin: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            http,
            margin: refresh_margin,
            clock,
            slots: Mutex::new(Slots {
                map: HashMap::new(),
                next_id: 0,
            }),
        }
    }

    /// A valid access token for the provider key `cache_key` ("<provider key id>:<secret
    /// version>", so a rotation starts a new entry). `token_url` overrides the endpoint; without
    /// it a service account's `token_uri` is used, else [`GOOGLE_TOKEN_URL`]. Concurrent callers
    /// for the same key share one token request; a failure is not cached, but every caller
    /// waiting on the failed request gets the error.
    pub async fn token(
        &self,
        cache_key: &str,
        creds: &VertexCredentials,
        token_url: Option<&str>,
    ) -> Result<Arc<Zeroizing<String>>, VertexAuthError> {
        let (id, flight) = {
            let mut slots = self.slots.lock();
            let now = self.clock.now();
            match slots.map.get(cache_key) {
                Some(Slot::Ready { token, expires_at }) if expires_at.saturating_duration_since(now) > self.margin => {
                    return Ok(Arc::clone(token));
                }
                Some(Slot::Pending { id, flight }) => (*id, flight.clone()),
                _ => {
                    let id = slots.next_id;
                    slots.next_id = slots.next_id.wrapping_add(1);
                    let flight = fetch(
                        self.http.clone(),
                        creds.clone(),
                        token_url.map(str::to_owned),
                        Arc::clone(&self.clock),
                    )
                    .boxed()
                    .shared();
                    slots.map.insert(
                        cache_key.to_owned(),
                        Slot::Pending {
                            id,
                            flight: flight.clone(),
                        },
                    );
                    (id, flight)
                }
            }
        };

        let result = flight.await;

        {
            let mut slots = self.slots.lock();
            // Only the request still registered for this key may settle it: a `forget` (or a
            // newer request) in between must not be overwritten by this answer.
            let ours = matches!(slots.map.get(cache_key), Some(Slot::Pending { id: p, .. }) if *p == id);
            if ours {
                match &result {
                    Ok((token, expires_at)) => {
                        let now = self.clock.now();
                        slots
                            .map
                            .retain(|_, slot| !matches!(slot, Slot::Ready { expires_at, .. } if *expires_at <= now));
                        slots.map.insert(
                            cache_key.to_owned(),
                            Slot::Ready {
                                token: Arc::clone(token),
                                expires_at: *expires_at,
                            },
                        );
                    }
                    Err(e) => {
                        slots.map.remove(cache_key);
                        tracing::warn!(key = %cache_key, error = %e, "vertex access token request failed");
                    }
                }
            }
        }

        result.map(|(token, _)| token)
    }

    /// Drops the cached tokens (and forgets in-flight requests) of a provider key, every secret
    /// version: entries whose key starts with "<provider key id>:".
    pub fn forget(&self, provider_key_id: &str) {
        let prefix = format!("{provider_key_id}:");
        self.slots.lock().map.retain(|k, _| !k.starts_with(&prefix));
    }

    /// Number of entries (cached or being fetched).
    pub fn len(&self) -> usize {
        self.slots.lock().map.len()
    }

    /// Whether no entry is cached or being fetched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One token request, start to finish.
async fn fetch(
    http: reqwest::Client,
    creds: VertexCredentials,
    token_url: Option<String>,
    clock: Arc<dyn Clock>,
) -> Fetched {
    let (endpoint, form) = match &creds {
        VertexCredentials::OAuth {
            client_id,
            client_secret,
            refresh_token,
        } => {
            if client_id.is_empty() {
                return Err(VertexAuthError::InvalidOAuth("client_id is empty"));
            }
            if refresh_token.is_empty() {
                return Err(VertexAuthError::InvalidOAuth("refresh_token is empty"));
            }
            let endpoint = checked_url(token_url.as_deref().unwrap_or(GOOGLE_TOKEN_URL))?;
            let form = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "refresh_token")
                .append_pair("client_id", client_id)
                .append_pair("client_secret", client_secret)
                .append_pair("refresh_token", refresh_token)
                .finish();
            (endpoint, form)
        }
        VertexCredentials::ServiceAccount { json } => {
            let sa = ServiceAccountKey::parse(json)?;
            let endpoint = checked_url(
                token_url
                    .as_deref()
                    .or(sa.token_uri.as_deref())
                    .unwrap_or(GOOGLE_TOKEN_URL),
            )?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let assertion = Zeroizing::new(sa.sign_assertion(endpoint.as_str(), now)?);
            let form = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", JWT_BEARER_GRANT)
                .append_pair("assertion", &assertion)
                .finish();
            (endpoint, form)
        }
    };
    drop(creds);

    // The token's life is counted from before the request: conservative by the round trip.
    let started = clock.now();
    let response = http
        .post(endpoint)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(TOKEN_CALL_TIMEOUT)
        .body(form)
        .send()
        .await
        .map_err(transport_error)?;
    let status = response.status();
    let body = read_capped(response).await?;

    if !status.is_success() {
        return Err(if status.is_client_error() {
            VertexAuthError::Rejected {
                status: status.as_u16(),
                code: oauth_error_code(&body),
            }
        } else {
            VertexAuthError::Upstream {
                status: status.as_u16(),
            }
        });
    }

    let mut answer: TokenResponse =
        serde_json::from_slice(&body).map_err(|_| VertexAuthError::BadResponse("not a JSON token response"))?;
    if let Some(kind) = answer.token_type.as_deref() {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(VertexAuthError::BadResponse("token_type is not Bearer"));
        }
    }
    let token = Zeroizing::new(answer.access_token.take().unwrap_or_default());
    if token.is_empty() {
        return Err(VertexAuthError::BadResponse("no access_token"));
    }
    if token.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        // It goes into an Authorization header: refuse anything that cannot.
        return Err(VertexAuthError::BadResponse("access_token is not a plain token"));
    }
    let lifetime = Duration::from_secs(lifetime_secs(answer.expires_in.as_ref()));
    tracing::debug!(lifetime_secs = lifetime.as_secs(), "vertex access token obtained");
    Ok((Arc::new(token), started + lifetime))
}

/// The token's lifetime from `expires_in`: missing, unreadable or non-positive means 3600 s;
/// capped at 24 h.
fn lifetime_secs(expires_in: Option<&serde_json::Value>) -> u64 {
    let secs = match expires_in {
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        Some(serde_json::Value::String(s)) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match secs {
        Some(s) if s > 0 => u64::try_from(s).unwrap_or(MAX_LIFETIME_SECS).min(MAX_LIFETIME_SECS),
        _ => DEFAULT_LIFETIME_SECS,
    }
}

fn transport_error(e: reqwest::Error) -> VertexAuthError {
    VertexAuthError::Transport(if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "connection lost while reading the answer"
    } else {
        "request failed"
    })
}

/// Reads the answer's body, refusing more than [`MAX_RESPONSE_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Zeroizing<Vec<u8>>, VertexAuthError> {
    if response.content_length().is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
        return Err(VertexAuthError::BadResponse("answer too large"));
    }
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(VertexAuthError::BadResponse("answer too large"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The OAuth `error` code of a refusal (`{"error": "invalid_grant", ...}`, or Google APIs'
/// `{"error": {"status": "PERMISSION_DENIED", ...}}`), when it is a short plain identifier.
/// Nothing else of the body is kept.
fn oauth_error_code(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = match value.get("error")? {
        serde_json::Value::String(s) => s.as_str(),
        serde_json::Value::Object(o) => o.get("status")?.as_str()?,
        _ => return None,
    };
    let plain = !code.is_empty()
        && code.len() <= MAX_ERROR_CODE_LEN
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    plain.then(|| code.to_owned())
}

fn checked_url(raw: &str) -> Result<url::Url, VertexAuthError> {
    let url = url::Url::parse(raw).map_err(|_| VertexAuthError::InvalidTokenUrl)?;
    let ok = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none();
    if ok {
        Ok(url)
    } else {
        Err(VertexAuthError::InvalidTokenUrl)
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    token_type: Option<String>,
}

impl Drop for TokenResponse {
    fn drop(&mut self) {
        self.access_token.zeroize();
    }
}

/// The fields of a service-account JSON this module uses. The private key is wiped on drop.
#[derive(Deserialize)]
struct ServiceAccountKey {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    client_email: Option<String>,
    #[serde(default)]
    private_key: Option<String>,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

impl Drop for ServiceAccountKey {
    fn drop(&mut self) {
        self.private_key.zeroize();
    }
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

impl ServiceAccountKey {
    /// Parses and checks the fields (not yet the key itself). Errors name fields, never values.
    fn parse(json: &str) -> Result<Self, VertexAuthError> {
        let sa: Self = serde_json::from_str(json).map_err(|e| {
            VertexAuthError::InvalidServiceAccount(match e.classify() {
                serde_json::error::Category::Data => "a field has the wrong type",
                _ => "not a JSON object",
            })
        })?;
        if sa.kind.as_deref() != Some("service_account") {
            return Err(VertexAuthError::InvalidServiceAccount(
                "type is not \"service_account\"",
            ));
        }
        let email = sa.client_email.as_deref().unwrap_or_default();
        if email.is_empty() || !email.contains('@') {
            return Err(VertexAuthError::InvalidServiceAccount(
                "client_email is missing or not an e-mail address",
            ));
        }
        if sa.private_key.as_deref().is_none_or(|k| k.trim().is_empty()) {
            return Err(VertexAuthError::InvalidServiceAccount("private_key is missing"));
        }
        if let Some(uri) = sa.token_uri.as_deref() {
            checked_url(uri).map_err(|_| VertexAuthError::InvalidServiceAccount("token_uri is not an http(s) URL"))?;
        }
        Ok(sa)
    }

    /// The self-signed RS256 assertion for `aud` (the token endpoint), issued at `iat`.
    fn sign_assertion(&self, aud: &str, iat: i64) -> Result<String, VertexAuthError> {
        let pem = self.private_key.as_deref().unwrap_or_default();
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|_| VertexAuthError::InvalidServiceAccount("private_key is not an RSA private key in PEM"))?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = self
            .private_key_id
            .as_deref()
            .filter(|k| !k.is_empty())
            .map(str::to_owned);
        let claims = AssertionClaims {
            iss: self.client_email.as_deref().unwrap_or_default(),
            scope: CLOUD_PLATFORM_SCOPE,
            aud,
            iat,
            exp: iat + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &key).map_err(|_| VertexAuthError::Signing)
    }
}

/// Parses and checks a service-account JSON at save time: `type` is `service_account`,
/// `client_email` is present, `private_key` is an RSA private key in PEM that can sign, and
/// `token_uri`, when present, is an http(s) URL. Errors name the field, never its value.
pub fn check_service_account(json: &str) -> Result<(), VertexAuthError> {
    let sa = ServiceAccountKey::parse(json)?;
    // Signing once proves the key is usable (a PEM can parse and still hold a broken key).
    sa.sign_assertion(GOOGLE_TOKEN_URL, 0).map_err(|e| match e {
        VertexAuthError::Signing => {
            VertexAuthError::InvalidServiceAccount("private_key is not a usable RSA private key")
        }
        other => other,
    })?;
    Ok(())
}

/// The `token_uri` of a service-account JSON, if it has one: the caller should put it through
/// the same upstream-URL checks (SSRF) as a base URL when the JSON is saved.
pub fn service_account_token_uri(json: &str) -> Result<Option<String>, VertexAuthError> {
    let sa = ServiceAccountKey::parse(json)?;
    Ok(sa.token_uri.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // TEST FIXTURE ONLY: a throwaway 2048-bit RSA key generated locally with `openssl genrsa`
    // for these tests. It protects nothing and is not used anywhere else.
    const TEST_RSA_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC+ddKr8dzkTwBh
Jre3ctOSphD1OPqT51iTDWWE3RfD6hZY2ThOHKCy3hLjvtmcQLJFptr6Qz18txff
GIdy4YrBHB1HdcBSjhnI0oINK67xhZpII1qqPJJcfq3uWkRDpT0o2AFJMXpaWhoE
Zj+Og4I2ZyahuXgbP5Ni/CIEEySqoYYm4LgWOdbc3Tw5CUerOrQLb4hnx8njDSGn
X2jYY9X88oHodoWoIAxF30en57KvKy4eataiM7Xke/qkHiUbkzckyeUK26ns49Iz
zkq5CbX+AJYJKI1sIgaCQqbLMakTmuv7juMBulBavv4ZbqHSbcDoH0vyYGcrHX4d
lPkLdL51AgMBAAECggEAFlnnZkxU+uoWhlAv4TR1hdE9TjnoljDhISjCUCxOHKy9
AKJFTE1pwnPzTYzZJtAk262wJwx7C8bE42aShrXXPcBZ40f7UPTiK8IghwEoX6mp
KGwVuMKw/m/TY5RuTG341nE6/Wb0D+RhB0EklknynwXN786/PJtiZYxnRYkllWx5
A9g6VUbXmFSEgVF+B00WFdmz5hmA8Lb4xnJRFtt1asLjaK9qM6fYxnTYfC6ugp7J
ORrtZqj1EmpPq6js05Hz8vYW9Xp3R4KCITPNxvxDq3vjL38f8gujnCb/rVXxCXww
dXYGvVujT6dLKsM9u3QJmSRN9fOztooZ8JaU4lF9RQKBgQD51uVQJjUGbmYQCHM3
UeF86r6CM/3kAFD9urMoNiaJnSn773t6D+iTypSnlKY9fIWKSAyrHkusL+iMYDVF
orMFFLE6NxdAiDqA4POJVW8t43At6KzZtL4x/w8iwXUITsqU0Hc5UPNF8WooQzjF
9yPs/dpUg55vTw1qY1RBF2C9gwKBgQDDKBkGOjTqjhVI9D1HiyPYdyQzca/Edakm
tOIOu5W6rO3lv+bPthsHxCqbP3QYdDW9I1pCOtUbd68FjK+BbHex0Os8KrH6wKMB
YZGpKgSf4Mt/8lbGBI9YkEunT0iD5VwTWAMNZs3gD/j5DRW4wBoHIsImhfgRjFEI
4wKoi6YKpwKBgQDB1aYn3ty41qI8wjGRs+c74WxY3DmY0V4E3PruscSIc/UEz7J+
6yTItR1MPxoTDi8VL/0ULfcL6keD0YjDNA2sXXd68Q8LNCYfo2ePH0eY1KJOG/0v
EvmVFIwLrQg9n9OwTWSShWmY1EpGXpEHlky7K+BePZeISE7iQZo2vgqCPQKBgEQE
IJycAr9Q37g6b3UU2FxkQbiwQbst6tMzranG1Qtno840EMSJymfthY/wEI1JS0Vt
IdL9YDKfht9fRffMjvbpQmMI2ljzdJxRngugOlZiaWphUr7W7gLG36cjKbnWYT3Y
qc+s6cnSp0pdthla0nd0NMhqXqf3CHMZc168tRT3AoGAU0fG7NN+OLLYiM2UAx1I
4kG3gnUkciITV1CMUU2qtd9DvBvKI0XhO14ZiHYIbnxPbS4aVc1+Sq8hBFbuCn1R
BfW7w+7lsD0isgNWoho2uJbWS+lHgV/UN2Nh4zV8c3Z8Q9zVd2JDR1yq499keM3f
Q+rxEDZZ5ocRIh81qWuH29o=
-----END PRIVATE KEY-----\n";
    // TEST FIXTURE ONLY: the public half of TEST_RSA_PRIVATE_PEM.
    const TEST_RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAvnXSq/Hc5E8AYSa3t3LT
kqYQ9Tj6k+dYkw1lhN0Xw+oWWNk4Thygst4S477ZnECyRaba+kM9fLcX3xiHcuGK
wRwdR3XAUo4ZyNKCDSuu8YWaSCNaqjySXH6t7lpEQ6U9KNgBSTF6WloaBGY/joOC
Nmcmobl4Gz+TYvwiBBMkqqGGJuC4FjnW3N08OQlHqzq0C2+IZ8fJ4w0hp19o2GPV
/PKB6HaFqCAMRd9Hp+eyrysuHmrWojO15Hv6pB4lG5M3JMnlCtup7OPSM85KuQm1
/gCWCSiNbCIGgkKmyzGpE5rr+47jAbpQWr7+GW6h0m3A6B9L8mBnKx1+HZT5C3S+
dQIDAQAB
-----END PUBLIC KEY-----\n";
    // TEST FIXTURE ONLY: a throwaway P-256 key, to check that non-RSA keys are refused.
    const TEST_EC_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgJaKfJqRLYWJbNAMO
7YwoBRwRy9fxBTlf3sRgp9tqugOhRANCAASolF9E0WB3rj6yIYjTWh/FojMSovZ+
dPdkMraG0W2EccxdDfoni+2mB7ftf6Nro+8RjSDV1kB2MVbUUNBaySVP
-----END PRIVATE KEY-----\n";

    const SA_EMAIL: &str = "keygate-test@example-project.iam.gserviceaccount.com";

    /// One request as the mock token endpoint saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        content_type: Option<String>,
        body: String,
    }

    type Responder = Arc<dyn Fn(usize) -> (u16, String) + Send + Sync>;

    /// A token endpoint answering minimal HTTP/1.1 by hand: the `n`th request (from 0) gets
    /// `respond(n)` after `delay`.
    struct MockEndpoint {
        url: String,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl MockEndpoint {
        async fn start(delay: Duration, respond: Responder) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/token", listener.local_addr().unwrap());
            let seen = Arc::new(Mutex::new(Vec::new()));
            let seen2 = Arc::clone(&seen);
            tokio::spawn(async move {
                while let Ok((sock, _)) = listener.accept().await {
                    let seen = Arc::clone(&seen2);
                    let respond = Arc::clone(&respond);
                    tokio::spawn(async move {
                        let _ = serve_one(sock, seen, respond, delay).await;
                    });
                }
            });
            Self { url, seen }
        }

        fn calls(&self) -> usize {
            self.seen.lock().len()
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().clone()
        }
    }

    async fn serve_one(
        mut sock: tokio::net::TcpStream,
        seen: Arc<Mutex<Vec<Seen>>>,
        respond: Responder,
        delay: Duration,
    ) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default().to_owned();
        let path = request_line.next().unwrap_or_default().to_owned();
        let mut content_length = 0usize;
        let mut content_type = None;
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim().to_owned();
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => content_length = value.parse().unwrap_or(0),
                    "content-type" => content_type = Some(value),
                    _ => {}
                }
            }
        }
        while buf.len() < head_end + content_length {
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
        let n = {
            let mut seen = seen.lock();
            seen.push(Seen {
                method,
                path,
                content_type,
                body,
            });
            seen.len() - 1
        };
        tokio::time::sleep(delay).await;
        let (status, body) = respond(n);
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(response.as_bytes()).await?;
        sock.shutdown().await
    }

    /// Answers `token-<n>` valid for `expires_in` (raw JSON, or absent when `None`).
    fn ok_tokens(expires_in: Option<&'static str>) -> Responder {
        Arc::new(move |n| {
            let body = match expires_in {
                Some(e) => format!(r#"{{"access_token":"token-{n}","expires_in":{e},"token_type":"Bearer"}}"#),
                None => format!(r#"{{"access_token":"token-{n}","token_type":"Bearer"}}"#),
            };
            (200, body)
        })
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    fn oauth() -> VertexCredentials {
        VertexCredentials::OAuth {
            client_id: "client-123.apps.googleusercontent.com".into(),
            client_secret: Zeroizing::new("GOCSPX-very+secret/value=".into()),
            refresh_token: Zeroizing::new("1//refresh&token=secret".into()),
        }
    }

    fn sa_json(private_key: &str, token_uri: Option<&str>) -> String {
        let mut v = serde_json::json!({
            "type": "service_account",
            "project_id": "example-project",
            "private_key_id": "test-kid-1",
            "private_key": private_key,
            "client_email": SA_EMAIL,
            "client_id": "1234567890",
        });
        if let Some(uri) = token_uri {
            v["token_uri"] = serde_json::Value::String(uri.to_owned());
        }
        v.to_string()
    }

    fn service_account(token_uri: Option<&str>) -> VertexCredentials {
        VertexCredentials::ServiceAccount {
            json: Zeroizing::new(sa_json(TEST_RSA_PRIVATE_PEM, token_uri)),
        }
    }

    fn form(body: &str) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
        pairs.sort();
        pairs
    }

    /// A clock the test moves by hand.
    struct TestClock {
        base: Instant,
        offset: Mutex<Duration>,
    }

    impl TestClock {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                base: Instant::now(),
                offset: Mutex::new(Duration::ZERO),
            })
        }
        fn advance(&self, by: Duration) {
            *self.offset.lock() += by;
        }
    }

    impl Clock for TestClock {
        fn now(&self) -> Instant {
            self.base + *self.offset.lock()
        }
    }

    #[tokio::test]
    async fn vertex_oauth_exchange_sends_exact_form_fields() {
        let mock = MockEndpoint::start(Duration::ZERO, ok_tokens(Some("3599"))).await;
        let cache = TokenCache::new(client(), Duration::from_secs(300));
        let token = cache.token("pk1:1", &oauth(), Some(&mock.url)).await.unwrap();
        assert_eq!(token.as_str(), "token-0");

        let seen = mock.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].path, "/token");
        assert_eq!(
            seen[0].content_type.as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        let mut expected = vec![
            (
                "client_id".to_owned(),
                "client-123.apps.googleusercontent.com".to_owned(),
            ),
            ("client_secret".to_owned(), "GOCSPX-very+secret/value=".to_owned()),
            ("grant_type".to_owned(), "refresh_token".to_owned()),
            ("refresh_token".to_owned(), "1//refresh&token=secret".to_owned()),
        ];
        expected.sort();
        assert_eq!(form(&seen[0].body), expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn vertex_fifty_concurrent_callers_share_one_request() {
        let mock = MockEndpoint::start(Duration::from_millis(200), ok_tokens(Some("3600"))).await;
        let cache = Arc::new(TokenCache::new(client(), Duration::from_secs(300)));
        let creds = oauth();
        let calls = (0..50).map(|_| {
            let cache = Arc::clone(&cache);
            let creds = creds.clone();
            let url = mock.url.clone();
            tokio::spawn(async move { cache.token("pk1:1", &creds, Some(&url)).await })
        });
        let results = futures::future::join_all(calls).await;
        for r in results {
            assert_eq!(r.unwrap().unwrap().as_str(), "token-0");
        }
        assert_eq!(mock.calls(), 1);
        // And the cached token is reused afterwards.
        let again = cache.token("pk1:1", &creds, Some(&mock.url)).await.unwrap();
        assert_eq!(again.as_str(), "token-0");
        assert_eq!(mock.calls(), 1);
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn vertex_token_refreshed_once_within_margin_of_expiry() {
        let mock = MockEndpoint::start(Duration::ZERO, ok_tokens(Some("120"))).await;
        let clock = TestClock::new();
        let cache = TokenCache::with_clock(client(), Duration::from_secs(60), clock.clone());
        let creds = oauth();
        let get = || cache.token("pk1:1", &creds, Some(&mock.url));

        assert_eq!(get().await.unwrap().as_str(), "token-0");
        clock.advance(Duration::from_secs(59)); // 61 s left: still good
        assert_eq!(get().await.unwrap().as_str(), "token-0");
        assert_eq!(mock.calls(), 1);
        clock.advance(Duration::from_secs(2)); // 59 s left: within the margin
        assert_eq!(get().await.unwrap().as_str(), "token-1");
        assert_eq!(mock.calls(), 2);
        assert_eq!(get().await.unwrap().as_str(), "token-1");
        assert_eq!(mock.calls(), 2);
    }

    #[tokio::test]
    async fn vertex_token_refreshed_in_real_time() {
        // Cached for 4 - 1 = 3 s: the two calls below take milliseconds, far inside that.
        let mock = MockEndpoint::start(Duration::ZERO, ok_tokens(Some("4"))).await;
        let cache = TokenCache::new(client(), Duration::from_secs(1));
        let creds = oauth();
        assert_eq!(
            cache.token("k:1", &creds, Some(&mock.url)).await.unwrap().as_str(),
            "token-0"
        );
        assert_eq!(
            cache.token("k:1", &creds, Some(&mock.url)).await.unwrap().as_str(),
            "token-0"
        );
        tokio::time::sleep(Duration::from_millis(3100)).await;
        assert_eq!(
            cache.token("k:1", &creds, Some(&mock.url)).await.unwrap().as_str(),
            "token-1"
        );
        assert_eq!(mock.calls(), 2);
    }

    /// How long a token answered with `expires_in` stays cached with a 300 s margin.
    async fn cached_for(expires_in: Option<&'static str>) -> u64 {
        let mock = MockEndpoint::start(Duration::ZERO, ok_tokens(expires_in)).await;
        let clock = TestClock::new();
        let cache = TokenCache::with_clock(client(), Duration::from_secs(300), clock.clone());
        let creds = oauth();
        cache.token("k:1", &creds, Some(&mock.url)).await.unwrap();
        let mut elapsed = 0;
        // Step a minute at a time until a second request is made.
        while mock.calls() == 1 {
            clock.advance(Duration::from_secs(60));
            elapsed += 60;
            cache.token("k:1", &creds, Some(&mock.url)).await.unwrap();
            assert!(elapsed < 200_000);
        }
        elapsed
    }

    #[tokio::test]
    async fn vertex_lifetime_defaults_and_cap() {
        // 3600 - 300 = 3300 s of use; refreshed at the first minute step past it.
        assert_eq!(cached_for(None).await, 3300);
        assert_eq!(cached_for(Some("0")).await, 3300);
        assert_eq!(cached_for(Some("-5")).await, 3300);
        assert_eq!(cached_for(Some("\"soon\"")).await, 3300);
        assert_eq!(cached_for(Some("\"1800\"")).await, 1500);
        // Capped at 24 h.
        assert_eq!(cached_for(Some("100000000")).await, 86_400 - 300);
    }

    #[test]
    fn vertex_lifetime_parsing() {
        use serde_json::json;
        assert_eq!(lifetime_secs(None), 3600);
        assert_eq!(lifetime_secs(Some(&json!(null))), 3600);
        assert_eq!(lifetime_secs(Some(&json!(0))), 3600);
        assert_eq!(lifetime_secs(Some(&json!(-1))), 3600);
        assert_eq!(lifetime_secs(Some(&json!(59.9))), 59);
        assert_eq!(lifetime_secs(Some(&json!(3599))), 3599);
        assert_eq!(lifetime_secs(Some(&json!(u64::MAX))), 86_400);
        assert_eq!(lifetime_secs(Some(&json!(1e300))), 86_400);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn vertex_failure_shared_by_waiters_and_not_cached() {
        let respond: Responder = Arc::new(|n| {
            if n == 0 {
                (
                    400,
                    r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked. hint: 1//refresh"}"#
                        .to_owned(),
                )
            } else {
                (200, r#"{"access_token":"fresh","expires_in":3600}"#.to_owned())
            }
        });
        let mock = MockEndpoint::start(Duration::from_millis(150), respond).await;
        let cache = Arc::new(TokenCache::new(client(), Duration::from_secs(300)));
        let creds = oauth();
        let calls = (0..10).map(|_| {
            let cache = Arc::clone(&cache);
            let creds = creds.clone();
            let url = mock.url.clone();
            tokio::spawn(async move { cache.token("pk1:1", &creds, Some(&url)).await })
        });
        for r in futures::future::join_all(calls).await {
            let err = r.unwrap().unwrap_err();
            assert_eq!(
                err,
                VertexAuthError::Rejected {
                    status: 400,
                    code: Some("invalid_grant".into())
                }
            );
            let msg = err.to_string();
            assert!(msg.contains("invalid_grant"), "{msg}");
            assert!(
                !msg.contains("revoked") && !msg.contains("refresh") && !msg.contains("error_description"),
                "{msg}"
            );
            assert!(!err.is_transient());
        }
        assert_eq!(mock.calls(), 1);
        assert!(cache.is_empty(), "a failure must not stay cached");

        let token = cache.token("pk1:1", &creds, Some(&mock.url)).await.unwrap();
        assert_eq!(token.as_str(), "fresh");
        assert_eq!(mock.calls(), 2);
    }

    #[tokio::test]
    async fn vertex_error_bodies_are_not_echoed() {
        let respond: Responder = Arc::new(|n| match n {
            0 => (500, "internal trace: secret-stack-frame".to_owned()),
            1 => (401, r#"{"error":"<script>alert(1)</script>"}"#.to_owned()),
            2 => (
                403,
                r#"{"error":{"code":403,"message":"caller x lacks y","status":"PERMISSION_DENIED"}}"#.to_owned(),
            ),
            3 => (200, "not json at all secret-ish".to_owned()),
            4 => (200, r#"{"access_token":"","expires_in":3600}"#.to_owned()),
            5 => (200, r#"{"access_token":"abc","token_type":"MAC"}"#.to_owned()),
            _ => (429, r#"{"error":"rate_limit_exceeded"}"#.to_owned()),
        });
        let mock = MockEndpoint::start(Duration::ZERO, respond).await;
        let cache = TokenCache::new(client(), Duration::from_secs(300));
        let creds = oauth();
        let mut errs = Vec::new();
        for _ in 0..7 {
            errs.push(cache.token("k:1", &creds, Some(&mock.url)).await.unwrap_err());
        }
        assert_eq!(errs[0], VertexAuthError::Upstream { status: 500 });
        assert!(errs[0].is_transient());
        assert_eq!(
            errs[1],
            VertexAuthError::Rejected {
                status: 401,
                code: None
            }
        );
        assert_eq!(
            errs[2],
            VertexAuthError::Rejected {
                status: 403,
                code: Some("PERMISSION_DENIED".into())
            }
        );
        assert!(matches!(errs[3], VertexAuthError::BadResponse(_)));
        assert!(matches!(errs[4], VertexAuthError::BadResponse(_)));
        assert!(matches!(errs[5], VertexAuthError::BadResponse(_)));
        assert!(errs[6].is_transient());
        for e in &errs {
            let msg = e.to_string();
            for bad in ["secret", "script", "lacks", "127.0.0.1", "MAC"] {
                assert!(!msg.contains(bad), "{msg}");
            }
        }
        assert_eq!(mock.calls(), 7);
    }

    #[tokio::test]
    async fn vertex_unreachable_endpoint_is_a_transport_error() {
        // Bind then drop a listener: nothing listens on that port any more.
        let addr = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let cache = TokenCache::new(client(), Duration::from_secs(300));
        let err = cache
            .token("k:1", &oauth(), Some(&format!("http://{addr}/token")))
            .await
            .unwrap_err();
        assert!(matches!(err, VertexAuthError::Transport(_)), "{err:?}");
        assert!(!err.to_string().contains("127.0.0.1"));
        assert!(err.is_transient());

        for bad in [
            "not a url",
            "ftp://example.com/token",
            "http://user:pw@example.com/token",
        ] {
            let err = cache.token("k:1", &oauth(), Some(bad)).await.unwrap_err();
            assert_eq!(err, VertexAuthError::InvalidTokenUrl);
            assert!(!err.to_string().contains("pw"));
        }
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn vertex_oauth_missing_fields_refused_without_a_call() {
        let mock = MockEndpoint::start(Duration::ZERO, ok_tokens(Some("3600"))).await;
        let cache = TokenCache::new(client(), Duration::from_secs(300));
        let creds = VertexCredentials::OAuth {
            client_id: "id".into(),
            client_secret: Zeroizing::new("s".into()),
            refresh_token: Zeroizing::new(String::new()),
        };
        let err = cache.token("k:1", &creds, Some(&mock.url)).await.unwrap_err();
        assert!(matches!(err, VertexAuthError::InvalidOAuth(_)));
        assert_eq!(mock.calls(), 0);
    }

    #[derive(Debug, Deserialize)]
    struct SeenClaims {
        iss: String,
        scope: String,
        aud: String,
        iat: i64,
        exp: i64,
    }

    fn verify_assertion(seen: &Seen, expected_aud: &str) -> SeenClaims {
        let fields: HashMap<String, String> = form(&seen.body).into_iter().collect();
        assert_eq!(fields.len(), 2, "{:?}", fields.keys());
        assert_eq!(fields["grant_type"], JWT_BEARER_GRANT);
        let jwt = &fields["assertion"];

        let header = jsonwebtoken::decode_header(jwt).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some("test-kid-1"));
        assert_eq!(header.typ.as_deref(), Some("JWT"));

        let key = jsonwebtoken::DecodingKey::from_rsa_pem(TEST_RSA_PUBLIC_PEM.as_bytes()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[expected_aud]);
        validation.set_issuer(&[SA_EMAIL]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<SeenClaims>(jwt, &key, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims.iss, SA_EMAIL);
        assert_eq!(claims.aud, expected_aud);
        assert_eq!(claims.scope, CLOUD_PLATFORM_SCOPE);
        assert_eq!(claims.exp - claims.iat, 3600);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!((claims.iat - now).abs() < 60, "iat {} vs now {now}", claims.iat);
        claims
    }

    #[tokio::test]
    async fn vertex_service_account_jwt_is_signed_and_verifiable() {
        let mock = MockEndpoint::start(Duration::ZERO, ok_tokens(Some("3600"))).await;
        let cache = TokenCache::new(client(), Duration::from_secs(300));
        // The override wins over the JSON's token_uri.
        let creds = service_account(Some("https://oauth2.example.invalid/token"));
        let token = cache.token("sa:1", &creds, Some(&mock.url)).await.unwrap();
        assert_eq!(token.as_str(), "token-0");
        let seen = mock.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].content_type.as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        let claims = verify_assertion(&seen[0], &mock.url);
        assert_eq!(claims.aud, mock.url);
    }

    #[tokio::test]
    async fn vertex_service_account_uses_token_uri_without_override() {
        let mock = MockEndpoint::start(Duration::ZERO, ok_tokens(Some("3600"))).await;
        let cache = TokenCache::new(client(), Duration::from_secs(300));
        let creds = service_account(Some(&mock.url));
        assert_eq!(
            service_account_token_uri(&sa_json(TEST_RSA_PRIVATE_PEM, Some(&mock.url))).unwrap(),
            Some(mock.url.clone())
        );
        let token = cache.token("sa:1", &creds, None).await.unwrap();
        assert_eq!(token.as_str(), "token-0");
        verify_assertion(&mock.seen()[0], &mock.url);
    }

    #[tokio::test]
    async fn vertex_service_account_bad_key_refused_without_a_call() {
        let mock = MockEndpoint::start(Duration::ZERO, ok_tokens(Some("3600"))).await;
        let cache = TokenCache::new(client(), Duration::from_secs(300));
        let creds = VertexCredentials::ServiceAccount {
            json: Zeroizing::new(sa_json(TEST_EC_PRIVATE_PEM, None)),
        };
        let err = cache.token("sa:1", &creds, Some(&mock.url)).await.unwrap_err();
        assert!(matches!(err, VertexAuthError::InvalidServiceAccount(_)), "{err:?}");
        assert_eq!(mock.calls(), 0);
        assert!(cache.is_empty());
    }

    #[test]
    fn vertex_check_service_account() {
        check_service_account(&sa_json(TEST_RSA_PRIVATE_PEM, None)).unwrap();
        check_service_account(&sa_json(TEST_RSA_PRIVATE_PEM, Some(GOOGLE_TOKEN_URL))).unwrap();

        let body: String = TEST_RSA_PRIVATE_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let truncated = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            &body[..400]
        );
        let mut wrong_type: serde_json::Value = serde_json::from_str(&sa_json(TEST_RSA_PRIVATE_PEM, None)).unwrap();
        wrong_type["type"] = "authorized_user".into();
        let mut no_email = wrong_type.clone();
        no_email["type"] = "service_account".into();
        no_email.as_object_mut().unwrap().remove("client_email");
        let mut no_key = no_email.clone();
        no_key["client_email"] = SA_EMAIL.into();
        no_key.as_object_mut().unwrap().remove("private_key");
        let mut key_number = no_key.clone();
        key_number["private_key"] = 12345.into();

        let refused = [
            "not json".to_owned(),
            "[]".to_owned(),
            "{}".to_owned(),
            wrong_type.to_string(),
            no_email.to_string(),
            no_key.to_string(),
            key_number.to_string(),
            sa_json("not a pem", None),
            sa_json(TEST_RSA_PUBLIC_PEM, None),
            sa_json(TEST_EC_PRIVATE_PEM, None),
            sa_json(&truncated, None),
            sa_json(TEST_RSA_PRIVATE_PEM, Some("file:///etc/passwd")),
        ];
        for json in &refused {
            let err = check_service_account(json).unwrap_err();
            assert!(matches!(err, VertexAuthError::InvalidServiceAccount(_)), "{err:?}");
            let msg = err.to_string();
            for bad in [&body[..40], "BEGIN", SA_EMAIL, "12345", "passwd", "authorized_user"] {
                assert!(!msg.contains(bad), "{msg}");
            }
        }
    }

    #[test]
    fn vertex_debug_shows_no_secret() {
        let dbg = format!("{:?}", oauth());
        assert!(dbg.contains("client-123"), "{dbg}");
        assert!(!dbg.contains("GOCSPX") && !dbg.contains("refresh&token"), "{dbg}");
        let dbg = format!("{:?}", service_account(None));
        assert!(
            !dbg.contains("PRIVATE") && !dbg.contains(SA_EMAIL) && !dbg.contains("MII"),
            "{dbg}"
        );
        let cache = TokenCache::new(client(), Duration::from_secs(300));
        let dbg = format!("{cache:?}");
        assert!(dbg.contains("TokenCache"), "{dbg}");
    }

    #[tokio::test]
    async fn vertex_forget_drops_every_version_of_one_key() {
        let mock = MockEndpoint::start(Duration::ZERO, ok_tokens(Some("3600"))).await;
        let cache = TokenCache::new(client(), Duration::from_secs(300));
        let creds = oauth();
        for key in ["pk1:1", "pk1:2", "pk10:1"] {
            cache.token(key, &creds, Some(&mock.url)).await.unwrap();
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(mock.calls(), 3);
        cache.forget("pk1");
        assert_eq!(cache.len(), 1, "pk10 must survive forgetting pk1");
        assert_eq!(
            cache.token("pk10:1", &creds, Some(&mock.url)).await.unwrap().as_str(),
            "token-2"
        );
        assert_eq!(mock.calls(), 3);
        assert_eq!(
            cache.token("pk1:2", &creds, Some(&mock.url)).await.unwrap().as_str(),
            "token-3"
        );
        assert_eq!(mock.calls(), 4);
    }

    #[tokio::test]
    async fn vertex_forget_during_a_request_does_not_resurrect_the_entry() {
        // The token endpoint answers after 3 s: the forget below lands while the request is in
        // flight however slow the machine (it waits 50 ms).
        let mock = MockEndpoint::start(Duration::from_secs(3), ok_tokens(Some("3600"))).await;
        let cache = Arc::new(TokenCache::new(client(), Duration::from_secs(300)));
        let pending = {
            let cache = Arc::clone(&cache);
            let url = mock.url.clone();
            tokio::spawn(async move { cache.token("pk1:1", &oauth(), Some(&url)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(cache.len(), 1);
        cache.forget("pk1");
        assert_eq!(pending.await.unwrap().unwrap().as_str(), "token-0");
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn vertex_a_cancelled_caller_does_not_fail_the_others() {
        // The token endpoint answers after 3 s, the first caller gives up after 50 ms.
        let mock = MockEndpoint::start(Duration::from_secs(3), ok_tokens(Some("3600"))).await;
        let cache = TokenCache::new(client(), Duration::from_secs(300));
        let creds = oauth();
        // The first caller starts the request and gives up half way.
        let gave_up =
            tokio::time::timeout(Duration::from_millis(50), cache.token("k:1", &creds, Some(&mock.url))).await;
        assert!(gave_up.is_err());
        // The next caller picks the same request up rather than starting another.
        let token = cache.token("k:1", &creds, Some(&mock.url)).await.unwrap();
        assert_eq!(token.as_str(), "token-0");
        assert_eq!(mock.calls(), 1);
    }

    #[tokio::test]
    async fn vertex_oversized_answer_refused() {
        let respond: Responder = Arc::new(|_| (200, format!(r#"{{"access_token":"{}"}}"#, "a".repeat(100_000))));
        let mock = MockEndpoint::start(Duration::ZERO, respond).await;
        let cache = TokenCache::new(client(), Duration::from_secs(300));
        let err = cache.token("k:1", &oauth(), Some(&mock.url)).await.unwrap_err();
        assert_eq!(err, VertexAuthError::BadResponse("answer too large"));
    }

    #[test]
    fn vertex_token_future_is_send_and_cache_is_sync() {
        fn is_send<T: Send>(_: &T) {}
        fn is_send_sync<T: Send + Sync>() {}
        is_send_sync::<TokenCache>();
        let cache = TokenCache::new(client(), Duration::from_secs(300));
        let creds = oauth();
        let fut = cache.token("k:1", &creds, None);
        is_send(&fut);
    }
}
