//! One suite for every counter backend: in process always, on Redis when
//! `KEYGATE_TEST_REDIS_URL` is set. Time comes from a manual clock: no test sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use keygate_limits::memory::MemoryCounters;
use keygate_limits::redis::RedisCounters;
use keygate_limits::{Adjustment, Check, Counters, Kind, SUB_BUCKETS};

pub async fn backends() -> Vec<(&'static str, Arc<dyn Counters>)> {
    let mut out: Vec<(&'static str, Arc<dyn Counters>)> = vec![("memory", Arc::new(MemoryCounters::new()))];
    if let Some(redis) = redis_backend().await {
        out.push(("redis", redis));
    } else {
        eprintln!("KEYGATE_TEST_REDIS_URL is not set: the counter suite runs in process only");
    }
    out
}

/// The Redis backend when `KEYGATE_TEST_REDIS_URL` is set.
async fn redis_backend() -> Option<Arc<dyn Counters>> {
    let url = std::env::var("KEYGATE_TEST_REDIS_URL").ok()?;
    let counters = RedisCounters::builder(&url, "keygate-test:")
        .timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .expect("KEYGATE_TEST_REDIS_URL is set but Redis does not answer");
    Some(Arc::new(counters))
}

/// Keys unique to one test run, so runs on a shared Redis never meet.
fn k(name: &str) -> String {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        )
    });
    format!("test:{run}:{name}")
}

fn rate(key: &str, window_ms: i64, limit: i64, amount: i64) -> Check {
    Check {
        key: key.to_string(),
        kind: Kind::Rate { window_ms },
        limit,
        amount,
    }
}

fn budget(key: &str, limit: i64, amount: i64) -> Check {
    Check {
        key: key.to_string(),
        kind: Kind::Budget { expires_at_ms: None },
        limit,
        amount,
    }
}

const T0: i64 = 1_800_000_000_000;

#[tokio::test]
async fn a_rate_limit_admits_exactly_its_limit_per_window() {
    for (name, c) in backends().await {
        let key = k(&format!("{name}:exact"));
        let mut admitted = 0;
        for i in 0..25 {
            let a = c.acquire(&[rate(&key, 60_000, 10, 1)], T0 + i * 100).await.unwrap();
            if a.admitted {
                admitted += 1;
            } else {
                assert_eq!(a.refused, Some(0));
                assert!(
                    a.retry_after_ms > 0 && a.retry_after_ms <= 62_000,
                    "{name}: {}",
                    a.retry_after_ms
                );
            }
        }
        assert_eq!(admitted, 10, "{name}");
        // Still full just before the window passes, room again after it.
        assert!(
            !c.acquire(&[rate(&key, 60_000, 10, 1)], T0 + 59_000)
                .await
                .unwrap()
                .admitted,
            "{name}"
        );
        assert!(
            c.acquire(&[rate(&key, 60_000, 10, 1)], T0 + 62_500)
                .await
                .unwrap()
                .admitted,
            "{name}"
        );
    }
}

#[tokio::test]
async fn no_sliding_window_ever_holds_more_than_the_limit_and_overload_gets_95_percent() {
    for (name, c) in backends().await {
        let key = k(&format!("{name}:sliding"));
        let window = 10_000;
        let limit = 50;
        let mut admitted_at = Vec::new();
        // Sustained overload: an attempt every 20 ms for 10 windows.
        let mut t = T0;
        while t < T0 + 10 * window {
            if c.acquire(&[rate(&key, window, limit, 1)], t).await.unwrap().admitted {
                admitted_at.push(t);
            }
            t += 20;
        }
        // Strict: every window of the limit's length holds at most the limit.
        for (i, start) in admitted_at.iter().enumerate() {
            let n = admitted_at[i..].iter().take_while(|x| **x < start + window).count();
            assert!(n as i64 <= limit, "{name}: {n} admitted in one window");
        }
        // And at least 95% of the limit per window under overload (after the first window).
        let steady: Vec<_> = admitted_at.iter().filter(|t| **t >= T0 + window).collect();
        let per_window = steady.len() as f64 / 9.0;
        assert!(per_window >= 0.95 * limit as f64, "{name}: {per_window} per window");
    }
}

#[tokio::test]
async fn one_decision_for_all_checks() {
    for (name, c) in backends().await {
        let a = k(&format!("{name}:all-a"));
        let b = k(&format!("{name}:all-b"));
        assert!(
            c.acquire(&[rate(&a, 60_000, 5, 1), budget(&b, 100, 60)], T0)
                .await
                .unwrap()
                .admitted
        );
        // b would overflow: nothing is added to a either.
        let r = c
            .acquire(&[rate(&a, 60_000, 5, 1), budget(&b, 100, 60)], T0 + 1)
            .await
            .unwrap();
        assert!(!r.admitted);
        assert_eq!(r.refused, Some(1));
        let states = c
            .peek(&[rate(&a, 60_000, 5, 1), budget(&b, 100, 0)], T0 + 2)
            .await
            .unwrap();
        assert_eq!((states[0].used, states[1].used), (1, 60), "{name}");
        assert_eq!(states[1].remaining, 40);
    }
}

#[tokio::test]
async fn settlement_moves_reservations_to_real_amounts() {
    for (name, c) in backends().await {
        let tok = k(&format!("{name}:tpm"));
        let usd = k(&format!("{name}:usd"));
        let r = c
            .acquire(&[rate(&tok, 60_000, 1000, 800), budget(&usd, 1_000_000, 900_000)], T0)
            .await
            .unwrap();
        assert!(r.admitted);
        // The request used far less than its bound.
        c.adjust(
            &[
                Adjustment {
                    key: tok.clone(),
                    kind: Kind::Rate { window_ms: 60_000 },
                    bucket: r.buckets[0],
                    delta: -780,
                },
                Adjustment {
                    key: usd.clone(),
                    kind: Kind::Budget { expires_at_ms: None },
                    bucket: 0,
                    delta: -899_000,
                },
            ],
            T0 + 5,
        )
        .await
        .unwrap();
        let s = c
            .peek(&[rate(&tok, 60_000, 1000, 0), budget(&usd, 1_000_000, 0)], T0 + 6)
            .await
            .unwrap();
        assert_eq!((s[0].used, s[1].used), (20, 1_000), "{name}");
        // Releasing more than held never goes below zero.
        c.adjust(
            &[Adjustment {
                key: usd.clone(),
                kind: Kind::Budget { expires_at_ms: None },
                bucket: 0,
                delta: -5_000,
            }],
            T0 + 7,
        )
        .await
        .unwrap();
        assert_eq!(c.peek(&[budget(&usd, 1_000_000, 0)], T0 + 8).await.unwrap()[0].used, 0);
    }
}

#[tokio::test]
async fn budgets_forget_themselves_after_their_period() {
    for (name, c) in backends().await {
        let key = k(&format!("{name}:day"));
        let end = T0 + 86_400_000;
        let check = |amount| Check {
            key: key.clone(),
            kind: Kind::Budget {
                expires_at_ms: Some(end),
            },
            limit: 10,
            amount,
        };
        assert!(c.acquire(&[check(10)], T0).await.unwrap().admitted);
        let r = c.acquire(&[check(1)], T0 + 1_000).await.unwrap();
        assert!(!r.admitted);
        assert_eq!(r.retry_after_ms, end - T0 - 1_000, "{name}");
        assert!(c.acquire(&[check(1)], end + 1).await.unwrap().admitted, "{name}");
    }
}

#[tokio::test]
async fn concurrent_acquires_never_exceed_the_limit() {
    for (name, c) in backends().await {
        let key = k(&format!("{name}:race"));
        let mut tasks = Vec::new();
        for i in 0..200 {
            let c = c.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                c.acquire(&[budget(&key, 37, 1)], T0 + i).await.unwrap().admitted
            }));
        }
        let mut admitted = 0;
        for t in tasks {
            admitted += usize::from(t.await.unwrap());
        }
        assert_eq!(admitted, 37, "{name}");
    }
}

#[tokio::test]
async fn an_amount_above_the_limit_is_never_admitted() {
    for (name, c) in backends().await {
        let key = k(&format!("{name}:huge"));
        let r = c.acquire(&[rate(&key, 1_000, 10, 11)], T0).await.unwrap();
        assert!(!r.admitted, "{name}");
        assert_eq!(r.retry_after_ms, 0);
        assert_eq!(SUB_BUCKETS, 32);
    }
}
