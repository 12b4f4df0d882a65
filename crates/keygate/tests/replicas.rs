//! Scale-out: several `keygate serve` replicas on one PostgreSQL and one Redis behave as one.
//! Runs when `KEYGATE_TEST_DATABASE_URL` and `KEYGATE_TEST_REDIS_URL` are set (`.ci/run` sets
//! both); skipped with a message otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::zombie_processes)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

mod common;
use common::TempDb as Db;

const BIN: &str = env!("CARGO_BIN_EXE_keygate");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env_urls() -> Option<(String, String)> {
    match (
        std::env::var("KEYGATE_TEST_DATABASE_URL"),
        std::env::var("KEYGATE_TEST_REDIS_URL"),
    ) {
        (Ok(d), Ok(r)) if !d.is_empty() && !r.is_empty() => Some((d, r)),
        _ => {
            eprintln!("KEYGATE_TEST_DATABASE_URL or KEYGATE_TEST_REDIS_URL is not set: the replica tests are skipped");
            None
        }
    }
}

struct Replica {
    child: Child,
    url: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn master_key() -> String {
    use rand::RngCore;
    let mut k = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut k);
    base64::engine::general_purpose::STANDARD.encode(k)
}

fn replica(dir: &Path, db: &str, redis: &str, mk: &str, extra: &[(&str, &str)]) -> (Replica, String) {
    let port = free_port();
    let out = dir.join(format!("out-{port}.log"));
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.join(format!("data-{port}")))
        .args(["--database-url", db, "--redis-url", redis, "--allow-private-upstreams"])
        .env("KEYGATE_MASTER_KEY", mk)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if reqwest::blocking::get(format!("{url}/healthz"))
            .map(|r| r.status().is_success())
            .unwrap_or(false)
        {
            let banner = std::fs::read_to_string(&out).unwrap_or_default();
            return (Replica { child, url }, banner);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("replica did not start");
}

fn call(method: &str, url: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let c = reqwest::blocking::Client::new();
    let mut r = c.request(method.parse().unwrap(), url).bearer_auth(key);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().unwrap();
    let s = resp.status().as_u16();
    (s, resp.json().unwrap_or(Value::Null))
}

/// Three replicas, a mock upstream, a provider key and the ADMIN key.
fn three(db: &str, redis: &str, dir: &Path, mock: &str) -> (Vec<Replica>, String) {
    let mk = master_key();
    let (first, banner) = replica(dir, db, redis, &mk, &[]);
    let i = banner.find("kg_adm_").expect("first start prints a key");
    let admin = banner[i..i + 45].to_string();
    let (b, _) = replica(dir, db, redis, &mk, &[]);
    let (c, _) = replica(dir, db, redis, &mk, &[]);
    let (s, v) = call(
        "POST",
        &format!("{}/api/v1/provider_keys", first.url),
        &admin,
        Some(
            json!({"name":"p","modelHub":"openai","apiKey":"sk-replica-0000000000","baseUrl":format!("{mock}/v1"),"rateLimitPerInterval":100000,"rateLimitInterval":60}),
        ),
    );
    assert_eq!(s, 201, "{v}");
    (vec![first, b, c], admin)
}

fn chat(url: &str, key: &str, slug: &str) -> u16 {
    reqwest::blocking::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-keygate-virtual-key", slug)
        .json(&json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}],"max_tokens":16}))
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Polls `f` every 20 ms until it holds and returns how long that took; panics after 60 s, far
/// above anything awaited here (a change reaches the other replicas at their next cache refresh,
/// every 250 ms; seen at most 0.13 s).
fn wait_until(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not happen within 60 s");
}

/// Whether the replica at `url` knows the virtual key `slug`: `GET /v1/models` naming it answers
/// 200 once the replica's cache has it (403 before), and spends nothing of its limits.
fn knows_virtual_key(url: &str, key: &str, slug: &str) -> bool {
    reqwest::blocking::Client::new()
        .get(format!("{url}/v1/models"))
        .bearer_auth(key)
        .header("x-keygate-virtual-key", slug)
        .send()
        .map(|r| r.status().as_u16() == 200)
        .unwrap_or(false)
}

/// The promise tested by the propagation waits: a change made on one replica is in force on the
/// others within a second. Asserted with ten times that room, so that a loaded machine cannot fail
/// it by chance while a change that never propagates (or waits for a restart) still fails.
const PROPAGATION_BOUND: Duration = Duration::from_secs(10);

#[test]
fn three_replicas_share_limits_budgets_and_revocations() {
    let Some((base, redis)) = env_urls() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(keygate_testkit::MockUpstream::start());
    let db = Db::new(&base);
    let dir = tempfile::tempdir().unwrap();
    let (replicas, admin) = three(&db.url, &redis, dir.path(), &mock.url());
    let slug = format!("rl-{}", uuid::Uuid::new_v4().simple());
    let (s, _) = call(
        "POST",
        &format!("{}/api/v1/virtual_keys", replicas[1].url),
        &admin,
        Some(json!({"name":"rl","slug":slug,"providerKey":"p","rateLimits":{"rpm":7}})),
    );
    assert_eq!(s, 201);
    // Created on replica 2: usable on replicas 1 and 3 within a second.
    for r in [&replicas[0], &replicas[2]] {
        let took = wait_until("a new virtual key reaching another replica", || {
            knows_virtual_key(&r.url, &admin, &slug)
        });
        eprintln!("a new virtual key reached {} after {took:?}", r.url);
        assert!(took < PROPAGATION_BOUND, "{took:?}");
    }
    // The rate limit is global: 7 per minute across the three replicas.
    let mut ok = 0;
    for i in 0..17 {
        if chat(&replicas[i % 3].url, &admin, &slug) == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 7, "a global limit admits exactly its limit");

    // A budget that holds ten request bounds, 200 concurrent requests over three replicas.
    let bslug = format!("bud-{}", uuid::Uuid::new_v4().simple());
    let (s, _) = call(
        "POST",
        &format!("{}/api/v1/virtual_keys", replicas[0].url),
        &admin,
        Some(json!({"name":"b","slug":bslug,"providerKey":"p","budget":{"requests":10}})),
    );
    assert_eq!(s, 201);
    for r in &replicas {
        wait_until("the budget's virtual key reaching every replica", || {
            knows_virtual_key(&r.url, &admin, &bslug)
        });
    }
    let before = mock.calls();
    let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
    let handles: Vec<_> = (0..200)
        .map(|i| {
            let (url, key, slug) = (urls[i % 3].clone(), admin.clone(), bslug.clone());
            std::thread::spawn(move || chat(&url, &key, &slug))
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(admitted, 10, "{statuses:?}");
    assert_eq!(mock.calls() - before, 10, "the upstream saw exactly the budget");
    assert_eq!(statuses.iter().filter(|s| **s == 402).count(), 190);

    // Revocation on one replica is refused by the others within a second.
    let (s, v) = call(
        "POST",
        &format!("{}/api/v1/api_keys", replicas[0].url),
        &admin,
        Some(json!({"apiKeyType":"INFERENCE","description":"revoke me"})),
    );
    assert_eq!(s, 201);
    let (id, key) = (
        v["data"]["id"].as_str().unwrap().to_string(),
        v["data"]["apiKey"].as_str().unwrap().to_string(),
    );
    wait_until("a new key reaching replica 3", || {
        call(
            "GET",
            &format!("{}/api/v1/api_keys/rate_limits", replicas[2].url),
            &key,
            None,
        )
        .0 == 200
    });
    let (s, _) = call(
        "DELETE",
        &format!("{}/api/v1/api_keys?id={id}", replicas[0].url),
        &admin,
        None,
    );
    assert_eq!(s, 200);
    for r in &replicas[1..] {
        let took = wait_until("a revocation reaching another replica", || {
            call("GET", &format!("{}/api/v1/api_keys/rate_limits", r.url), &key, None).0 == 401
        });
        eprintln!("a revocation reached {} after {took:?}", r.url);
        assert!(took < PROPAGATION_BOUND, "revoked after {took:?}");
    }
}

struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        wait_until("redis-server accepting connections", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        RedisServer { child, port }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn redis_down_fails_closed_or_open_and_recovers() {
    let Some((base, _)) = env_urls() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(keygate_testkit::MockUpstream::start());
    let db = Db::new(&base);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let redis = RedisServer::start(port);
    let redis_url = format!("redis://127.0.0.1:{}", redis.port);
    let mk = master_key();
    let (closed, banner) = replica(dir.path(), &db.url, &redis_url, &mk, &[]);
    let i = banner.find("kg_adm_").unwrap();
    let admin = banner[i..i + 45].to_string();
    let (open, _) = replica(dir.path(), &db.url, &redis_url, &mk, &[("KEYGATE_FAIL_MODE", "open")]);
    call(
        "POST",
        &format!("{}/api/v1/provider_keys", closed.url),
        &admin,
        Some(
            json!({"name":"p","modelHub":"openai","apiKey":"sk-redis-0000000000","baseUrl":format!("{}/v1", mock.url())}),
        ),
    );
    call(
        "POST",
        &format!("{}/api/v1/virtual_keys", closed.url),
        &admin,
        Some(json!({"name":"v","slug":"v","providerKey":"p","rateLimits":{"rpm":1000}})),
    );
    for r in [&closed, &open] {
        wait_until("the virtual key reaching both replicas", || {
            knows_virtual_key(&r.url, &admin, "v")
        });
    }
    assert_eq!(chat(&closed.url, &admin, "v"), 200);
    assert_eq!(chat(&open.url, &admin, "v"), 200);
    drop(redis);
    let before = mock.calls();
    assert_eq!(chat(&closed.url, &admin, "v"), 503, "fail_mode closed: 503");
    assert_eq!(mock.calls(), before, "and no upstream call");
    assert_eq!(chat(&open.url, &admin, "v"), 200, "fail_mode open: local counters");
    // Redis back on the same port: both recover without a restart.
    let _redis = RedisServer::start(port);
    wait_until("recovery after Redis returns", || chat(&closed.url, &admin, "v") == 200);
}
