//! The Redis backend alone: replicas sharing one Redis, an unreachable Redis, a Redis that
//! restarts, one round trip per decision, and the same answers as the in-process backend for
//! random call sequences.
//!
//! Tests that need a Redis use `KEYGATE_TEST_REDIS_URL`, else a private `redis-server`;
//! the ones that stop and start Redis always use a private `redis-server` on a free port
//! (required when `KEYGATE_TEST_REDIS_URL` is set, skipped otherwise when the binary is missing).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate_limits::memory::MemoryCounters;
use keygate_limits::redis::RedisCounters;
use keygate_limits::{Adjustment, Check, Counters, Kind, LimitError};

const T0: i64 = 1_800_000_000_000;

/// A private `redis-server`, killed when dropped (also when a test fails).
struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts one on a free port; `None` when `redis-server` cannot run and no Redis is
    /// required.
    fn start() -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer { child: None, port };
        match server.spawn() {
            Ok(()) => Some(server),
            Err(e) if std::env::var_os("KEYGATE_TEST_REDIS_URL").is_some() => {
                panic!("redis-server is required (KEYGATE_TEST_REDIS_URL is set): {e}")
            }
            Err(e) => {
                eprintln!("skipped: cannot start redis-server: {e}");
                None
            }
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and waits until it answers.
    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(mut c) = redis::Client::open(self.url())
                .unwrap()
                .get_connection_with_timeout(Duration::from_millis(200))
            {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("redis-server did not answer within 60 s".into())
    }

    /// Sends a signal to the server (`STOP`: it keeps its connections but answers nothing).
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A plain connection for inspecting the server.
    fn admin(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(10))
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis to test against: `KEYGATE_TEST_REDIS_URL`, else a private server (kept alive by
/// the returned guard); `None` when neither is possible.
fn some_redis() -> Option<(String, Option<RedisServer>)> {
    if let Ok(url) = std::env::var("KEYGATE_TEST_REDIS_URL") {
        return Some((url, None));
    }
    let server = RedisServer::start()?;
    Some((server.url(), Some(server)))
}

/// A prefix unique to this run and test.
fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("keygate-test:{nanos:x}:{test}:")
}

fn rate(key: &str, window_ms: i64, limit: i64, amount: i64) -> Check {
    Check {
        key: key.to_string(),
        kind: Kind::Rate { window_ms },
        limit,
        amount,
    }
}

fn budget(key: &str, expires_at_ms: Option<i64>, limit: i64, amount: i64) -> Check {
    Check {
        key: key.to_string(),
        kind: Kind::Budget { expires_at_ms },
        limit,
        amount,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_sharing_one_redis_admit_exactly_the_limit() {
    let Some((url, _server)) = some_redis() else {
        return;
    };
    let p = prefix("replicas");
    let timeout = Duration::from_secs(5);
    let replicas: Vec<Arc<RedisCounters>> = vec![
        Arc::new(
            RedisCounters::builder(&url, &p)
                .timeout(timeout)
                .connect()
                .await
                .unwrap(),
        ),
        Arc::new(
            RedisCounters::builder(&url, &p)
                .timeout(timeout)
                .connect()
                .await
                .unwrap(),
        ),
    ];
    let checks = vec![
        rate("rpm", 60_000, 1_000, 1),
        rate("tpm", 60_000, 50 * 40, 40),
        budget("usd", Some(T0 + 86_400_000), 1_000_000, 7),
    ];
    let mut tasks = Vec::new();
    for i in 0..200 {
        let replica = replicas[i % 2].clone();
        let checks = checks.clone();
        tasks.push(tokio::spawn(async move {
            replica.acquire(&checks, T0 + i as i64).await.unwrap().admitted
        }));
    }
    let mut admitted = [0usize; 2];
    for (i, t) in tasks.into_iter().enumerate() {
        admitted[i % 2] += usize::from(t.await.unwrap());
    }
    assert_eq!(admitted[0] + admitted[1], 50, "admitted per replica: {admitted:?}");
    // Both replicas read the same global counters.
    for replica in &replicas {
        let s = replica.peek(&checks, T0 + 300).await.unwrap();
        assert_eq!((s[0].used, s[1].used, s[2].used), (50, 2_000, 350), "{s:?}");
        assert_eq!(s[1].remaining, 0);
    }
    // Taking turns: each replica sees what the other added.
    let check = [rate("rps", 1_000, 10, 1)];
    let mut admitted = [0usize; 2];
    for i in 0..40 {
        let a = replicas[i % 2].acquire(&check, T0 + i as i64).await.unwrap();
        admitted[i % 2] += usize::from(a.admitted);
    }
    assert_eq!(admitted, [5, 5]);
}

#[tokio::test]
async fn an_unreachable_redis_is_unavailable_quickly() {
    // A closed port (refused at once) and a black hole on loopback: a listener that accepts
    // connections and never answers, as a hung or firewalled Redis looks to the client.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_url = format!("redis://{}", hole.local_addr().unwrap());
    let _hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = hole.accept().await {
            held.push(conn);
        }
    });
    // Each call is bounded by its timeout (500 ms to connect, 250 ms a call); the bounds asserted
    // are ten times those, so that only a call that waits past its timeout fails them.
    for url in ["redis://127.0.0.1:1", hole_url.as_str()] {
        let started = Instant::now();
        let r = RedisCounters::builder(url, "x:")
            .connect_timeout(Duration::from_millis(500))
            .connect()
            .await;
        assert!(matches!(r, Err(LimitError::Unavailable(_))), "{url}: {r:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{url}");

        // A client made while Redis is away answers every call within its timeout.
        let c = RedisCounters::builder(url, "x:")
            .timeout(Duration::from_millis(250))
            .connect_lazy()
            .unwrap();
        for _ in 0..3 {
            let started = Instant::now();
            let r = c.acquire(&[rate("a", 1_000, 1, 1)], T0).await;
            assert!(matches!(r, Err(LimitError::Unavailable(_))), "{url}: {r:?}");
            let r = c.peek(&[budget("b", None, 1, 0)], T0).await;
            assert!(matches!(r, Err(LimitError::Unavailable(_))), "{r:?}");
            let r = c
                .adjust(
                    &[Adjustment {
                        key: "b".into(),
                        kind: Kind::Budget { expires_at_ms: None },
                        bucket: 0,
                        delta: -1,
                    }],
                    T0,
                )
                .await;
            assert!(matches!(r, Err(LimitError::Unavailable(_))), "{r:?}");
            assert!(
                started.elapsed() < Duration::from_millis(3 * 2_500),
                "{url}: {:?}",
                started.elapsed()
            );
        }
        // Invalid checks are refused before any round trip.
        assert!(matches!(
            c.acquire(&[rate("a", 0, 1, 1)], T0).await,
            Err(LimitError::Invalid(_))
        ));
    }
    assert!(matches!(
        RedisCounters::builder("not a url", "x:").connect_lazy(),
        Err(LimitError::Invalid(_))
    ));
}

#[tokio::test]
async fn the_client_recovers_when_redis_comes_back() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    // 1 s a call: room for a loaded machine when Redis is up; the bound when it is down.
    let c = RedisCounters::builder(&server.url(), "kg:")
        .timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let check = [rate("rpm", 60_000, 100, 1)];
    assert!(c.acquire(&check, T0).await.unwrap().admitted);

    server.kill();
    // Bounded by the 1 s timeout; asserted with ten times that.
    let started = Instant::now();
    let r = c.acquire(&check, T0 + 1).await;
    assert!(matches!(r, Err(LimitError::Unavailable(_))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Still down: still quick.
    let started = Instant::now();
    assert!(c.acquire(&check, T0 + 2).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(10));

    server.spawn().unwrap();
    // Same client: it reconnects (and reloads its scripts into the empty server) by itself.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < deadline {
        match c.acquire(&check, T0 + 3).await {
            Ok(a) => {
                assert!(a.admitted);
                // The restarted server had no data: only this request is counted.
                assert_eq!(a.states[0].used, 1);
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last, None, "no recovery within 60 s");
    assert!(c.ping().await.is_ok());
}

#[tokio::test]
async fn a_redis_that_stops_answering_is_unavailable_within_the_timeout() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // 1 s a call: room for a loaded machine when Redis answers; the bound when it does not.
    let c = RedisCounters::builder(&server.url(), "kg:")
        .timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let check = [budget("usd", None, 100, 1)];
    assert!(c.acquire(&check, T0).await.unwrap().admitted);

    // The connection stays open, nothing answers: every call ends at its timeout (asserted with
    // ten times that).
    server.signal("STOP");
    for i in 0..5 {
        let started = Instant::now();
        let r = c.acquire(&check, T0 + i).await;
        assert!(matches!(r, Err(LimitError::Unavailable(_))), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }
    server.signal("CONT");

    // Answers again (on the old connection or a new one): the counters are all there, plus
    // whatever timed-out calls Redis still ran after they gave up (at most 5).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match c.peek(&check, T0 + 10).await {
            Ok(s) => {
                assert!((1..=6).contains(&s[0].used), "{s:?}");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "no recovery within 60 s: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn one_acquire_is_one_round_trip() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let c = RedisCounters::connect(&server.url(), "kg:").await.unwrap();
    let checks = vec![
        rate("pk:rpm", 60_000, 100, 1),
        rate("pk:tpm", 60_000, 100_000, 900),
        rate("vk:rpd", 86_400_000, 10_000, 1),
        budget("vk:usd:day", Some(T0 + 86_400_000), 1_000_000_000, 5_000),
        budget("pk:usd:life", None, 1_000_000_000, 5_000),
        rate("model:rpm", 60_000, 10, 1),
    ];
    assert!(c.acquire(&checks, T0).await.unwrap().admitted);
    let mut admin = server.admin();
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut admin).unwrap();

    let a = c.acquire(&checks, T0 + 10).await.unwrap();
    assert!(a.admitted);
    assert_eq!(a.states.len(), 6);

    let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut admin).unwrap();
    let mut calls = std::collections::BTreeMap::new();
    for line in stats.lines() {
        if let Some((name, rest)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) {
            let n: u64 = rest
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .unwrap()
                .parse()
                .unwrap();
            calls.insert(name.to_string(), n);
        }
    }
    // The client sent one EVALSHA; everything else ran inside it (or is this test's own).
    assert_eq!(calls.get("evalsha"), Some(&1), "{calls:?}");
    let inside_the_script = [
        "type",
        "hgetall",
        "hdel",
        "del",
        "get",
        "pexpiretime",
        "set",
        "pexpireat",
        "hincrby",
        "hset",
        "pexpire",
        "incrby",
        "pttl",
    ];
    for name in calls.keys() {
        assert!(
            name == "evalsha" || name == "config|resetstat" || inside_the_script.contains(&name.as_str()),
            "a command outside the script: {name} ({calls:?})"
        );
    }
    // And the script did read all six counters, once.
    assert_eq!(calls.get("type"), Some(&6), "{calls:?}");
    assert_eq!(calls.get("hgetall"), Some(&4), "{calls:?}");
    assert_eq!(calls.get("get"), Some(&2), "{calls:?}");
}

#[tokio::test]
async fn data_layout_and_bounded_memory() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let c = RedisCounters::connect(&server.url(), "kg:").await.unwrap();
    let mut admin = server.admin();
    // One acquire per sub-bucket for 10 windows: the hash never holds more than 33 of them.
    let window = 3_200; // sub-buckets of 100 ms
    for i in 0..320 {
        let a = c
            .acquire(&[rate("rps", window, 1_000_000, 1)], T0 + i * 100)
            .await
            .unwrap();
        assert!(a.admitted);
        assert_eq!(a.buckets[0], (T0 + i * 100) / 100);
        let len: usize = redis::cmd("HLEN").arg("kg:rps").query(&mut admin).unwrap();
        assert!(len <= 33 + 1, "{len} fields");
    }
    let b: i64 = redis::cmd("HGET").arg("kg:rps").arg("b").query(&mut admin).unwrap();
    assert_eq!(b, 100);
    let ttl: i64 = redis::cmd("PTTL").arg("kg:rps").query(&mut admin).unwrap();
    assert!(ttl > 0 && ttl <= 34 * 100, "{ttl}");

    let end = T0 + 86_400_000;
    assert!(
        c.acquire(&[budget("day", Some(end), 10, 3)], T0)
            .await
            .unwrap()
            .admitted
    );
    let v: i64 = redis::cmd("GET").arg("kg:day").query(&mut admin).unwrap();
    let at: i64 = redis::cmd("PEXPIRETIME").arg("kg:day").query(&mut admin).unwrap();
    assert_eq!((v, at), (3, end));
    assert!(c.acquire(&[budget("life", None, 10, 3)], T0).await.unwrap().admitted);
    let ttl: i64 = redis::cmd("PTTL").arg("kg:life").query(&mut admin).unwrap();
    assert_eq!(ttl, -1);
}

mod same_answers {
    //! Random call sequences give the same answers on both backends, except where the module
    //! documentation of `keygate_limits::redis` says they differ: the in-process `peek` drops
    //! stale sub-buckets and restarts a window met with a budget check, the Redis `peek` never
    //! writes. So sequences here never peek a counter with a budget check when it may be a
    //! window, and leave out a positive settlement of a window that was peeked since its last
    //! acquire.
    use super::*;
    use proptest::prelude::*;

    /// Counter, kind (see `kind_of`), and limit and amount or bucket and delta.
    #[derive(Clone, Debug)]
    enum Op {
        Acquire(Vec<(usize, usize, i64, i64)>),
        Adjust(Vec<(usize, usize, Option<usize>, i64)>),
        Peek(Vec<(usize, usize)>),
    }

    /// Six kinds of counter: three rate windows and three budgets.
    fn kind_of(t: usize) -> Kind {
        match t {
            // Windows long enough that Redis keeps their keys (relative TTLs run in real
            // time) for the whole sequence, short enough that steps pass them.
            0 => Kind::Rate { window_ms: 3_200 },
            1 => Kind::Rate { window_ms: 60_000 },
            2 => Kind::Rate { window_ms: 3_000 },
            3 => Kind::Budget { expires_at_ms: None },
            4 => Kind::Budget {
                expires_at_ms: Some(T0 + 5_000),
            },
            _ => Kind::Budget {
                expires_at_ms: Some(T0 + 90_000),
            },
        }
    }

    /// Operations on six counters. Counter `k` is met with checks of kind `k`; with `mixed`,
    /// acquires and settlements meet it as rate window `k % 3` or as budget `k % 3 + 3`, peeks
    /// as the rate window (one window length and one expiry per counter, as keygate's keys
    /// name them).
    fn op(mixed: bool) -> impl Strategy<Value = Op> {
        let check = move |peek: bool| {
            (0..6usize).prop_flat_map(move |k| {
                let t = match (mixed, peek) {
                    (false, _) => Just(k).boxed(),
                    (true, false) => prop_oneof![Just(k % 3), Just(k % 3 + 3)].boxed(),
                    (true, true) => Just(k % 3).boxed(),
                };
                (Just(k), t)
            })
        };
        prop_oneof![
            4 => prop::collection::vec((check(false), 0..20i64, 0..8i64), 1..4)
                .prop_map(|v| Op::Acquire(v.into_iter().map(|((k, t), l, a)| (k, t, l, a)).collect())),
            2 => prop::collection::vec((check(false), prop::option::of(0..8usize), -10..10i64), 1..3)
                .prop_map(|v| Op::Adjust(v.into_iter().map(|((k, t), b, d)| (k, t, b, d)).collect())),
            1 => prop::collection::vec(check(true), 1..4).prop_map(Op::Peek),
        ]
    }

    fn run(ops: Vec<(u16, Op)>, redis: &RedisCounters, rt: &tokio::runtime::Runtime) {
        let p = prefix("same");
        let memory = MemoryCounters::new();
        let key = |k: usize| format!("{p}{k}");
        let mut now = T0;
        // Sub-buckets returned by acquires, per counter.
        let mut buckets: Vec<Vec<i64>> = vec![Vec::new(); 6];
        // Whether a counter was peeked since it was last acquired.
        let mut peeked = [false; 6];
        for (dt, op) in ops {
            now += i64::from(dt);
            match op {
                Op::Acquire(mut cs) => {
                    // A counter met twice in one call is met as one kind (the in-process
                    // backend writes a window's amount into sub-bucket 0 of a budget turned
                    // window within the call, which no caller does).
                    for i in 0..cs.len() {
                        if let Some(first) = cs[..i].iter().find(|c| c.0 == cs[i].0) {
                            cs[i].1 = first.1;
                        }
                    }
                    let checks: Vec<Check> = cs
                        .iter()
                        .map(|&(k, t, limit, amount)| Check {
                            key: key(k),
                            kind: kind_of(t),
                            limit,
                            amount,
                        })
                        .collect();
                    let m = rt.block_on(memory.acquire(&checks, now)).unwrap();
                    let r = rt.block_on(redis.acquire(&checks, now)).unwrap();
                    assert_eq!(m, r, "acquire {checks:?} at +{}", now - T0);
                    for (c, b) in cs.iter().zip(&m.buckets) {
                        buckets[c.0].push(*b);
                        peeked[c.0] = false;
                    }
                }
                Op::Adjust(items) => {
                    let items: Vec<Adjustment> = items
                        .iter()
                        .filter(|&&(k, _, _, delta)| !(peeked[k] && delta > 0))
                        .map(|&(k, t, b, delta)| Adjustment {
                            key: key(k),
                            kind: kind_of(t),
                            bucket: b.and_then(|b| buckets[k].iter().rev().nth(b).copied()).unwrap_or(0),
                            delta,
                        })
                        .collect();
                    rt.block_on(memory.adjust(&items, now)).unwrap();
                    rt.block_on(redis.adjust(&items, now)).unwrap();
                }
                Op::Peek(ks) => {
                    let checks: Vec<Check> = ks
                        .iter()
                        .map(|&(k, t)| Check {
                            key: key(k),
                            kind: kind_of(t),
                            limit: 10,
                            amount: 0,
                        })
                        .collect();
                    let m = rt.block_on(memory.peek(&checks, now)).unwrap();
                    let r = rt.block_on(redis.peek(&checks, now)).unwrap();
                    assert_eq!(m, r, "peek {checks:?} at +{}", now - T0);
                    for &(k, _) in &ks {
                        peeked[k] = true;
                    }
                }
            }
        }
    }

    fn check_both(mixed: bool) {
        let Some((url, _server)) = some_redis() else {
            return;
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let redis = rt
            .block_on(
                RedisCounters::builder(&url, "")
                    .timeout(Duration::from_secs(5))
                    .connect(),
            )
            .unwrap();
        let cases = std::env::var("KEYGATE_TEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(256);
        // Steps of up to 4 s: sub-buckets fill, leave the window, windows and budgets expire.
        let steps = prop_oneof![3 => 0..200u16, 1 => 0..4_000u16];
        let config = ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        proptest!(config, |(ops in prop::collection::vec((steps, op(mixed)), 1..60))| {
            run(ops, &redis, &rt);
        });
    }

    #[test]
    fn random_sequences_give_the_same_answers_on_both_backends() {
        check_both(false);
    }

    #[test]
    fn counters_met_with_checks_of_another_kind_too() {
        check_both(true);
    }
}
