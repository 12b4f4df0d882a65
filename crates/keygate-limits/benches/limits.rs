//! Micro-benchmarks of the limit decision on the gateway's hot path (docs/benchmarks.md).
//!
//! - `memory/*`: the embedded default, [`MemoryCounters`], with the checks a gateway request
//!   meets: the provider key's rate limit alone (a virtual key with no limits, what the macro
//!   benchmark runs), three checks (provider RPM, virtual-key RPM and TPM) and six (adds a
//!   platform-key RPM and two strict budgets).
//! - `memory/acquire_settle_*`: reservation + settlement, i.e. `acquire` then the `adjust`
//!   that `keygate-api/src/limits.rs::Reservation::settle` sends with the real token count.
//! - `memory/as_gateway_*`: what `keygate-api/src/limits.rs::LimitEngine::{provider_check,
//!   acquire}` do around the counters: `format!` the counter key, then clone every `Check`
//!   into a plain `Vec<Check>` before calling the backend.
//! - `memory/100k_counters`: one decision among 100,000 live counters (one per virtual key).
//! - `redis/*`: [`RedisCounters`] against `KEYGATE_BENCH_REDIS_URL` (default
//!   `redis://127.0.0.1:6379`), one round trip per decision; skipped with a message when Redis
//!   does not answer.
//!
//! Run: `cargo bench -p keygate-limits --bench limits` (add `-- --quick` for a short run).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use keygate_limits::memory::MemoryCounters;
use keygate_limits::redis::RedisCounters;
use keygate_limits::{Adjustment, Check, Counters, Kind};

const NOW: i64 = 1_764_547_200_000;

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
        kind: Kind::Budget {
            expires_at_ms: Some(NOW + 86_400_000),
        },
        limit,
        amount,
    }
}

/// The provider key's own limit (the bench setup's 100,000,000 per 60 s).
fn one_check(id: &str) -> Vec<Check> {
    vec![rate(&format!("prov:{id}:req"), 60_000, 100_000_000, 1)]
}

fn three_checks(id: &str) -> Vec<Check> {
    vec![
        rate(&format!("vk:{id}:rpm"), 60_000, i64::MAX / 4, 1),
        rate(&format!("vk:{id}:tpm"), 60_000, i64::MAX / 4, 16_400),
        rate(&format!("prov:{id}:req"), 60_000, 100_000_000, 1),
    ]
}

fn six_checks(id: &str) -> Vec<Check> {
    vec![
        rate(&format!("pk:{id}:rpm"), 60_000, i64::MAX / 4, 1),
        rate(&format!("vk:{id}:rpm"), 60_000, i64::MAX / 4, 1),
        rate(&format!("vk:{id}:tpm"), 60_000, i64::MAX / 4, 16_400),
        budget(&format!("vk:{id}:usd:1764547200000"), i64::MAX / 4, 9_840_000),
        budget(&format!("vk:{id}:tokens:1764547200000"), i64::MAX / 4, 16_400),
        rate(&format!("prov:{id}:req"), 60_000, 100_000_000, 1),
    ]
}

/// What `Reservation::settle` sends: the token and cost checks brought to the real figures.
fn settlements(checks: &[Check], buckets: &[i64]) -> Vec<Adjustment> {
    checks
        .iter()
        .zip(buckets)
        .filter(|(c, _)| c.amount > 1)
        .map(|(c, b)| Adjustment {
            key: c.key.clone(),
            kind: c.kind,
            bucket: *b,
            delta: 12 - c.amount,
        })
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn memory(c: &mut Criterion) {
    let rt = rt();
    let mut g = c.benchmark_group("memory");
    for (name, checks) in [
        ("acquire_1", one_check("pk_bench")),
        ("acquire_3", three_checks("vk_bench")),
        ("acquire_6", six_checks("vk_bench")),
    ] {
        let counters = MemoryCounters::new();
        let mut now = NOW;
        g.bench_function(name, |b| {
            b.iter(|| {
                now += 1;
                rt.block_on(counters.acquire(black_box(&checks), now)).unwrap()
            })
        });
    }
    for (name, checks) in [
        ("acquire_settle_3", three_checks("vk_bench")),
        ("acquire_settle_6", six_checks("vk_bench")),
    ] {
        let counters = MemoryCounters::new();
        let mut now = NOW;
        g.bench_function(name, |b| {
            b.iter(|| {
                now += 1;
                let a = rt.block_on(counters.acquire(black_box(&checks), now)).unwrap();
                let adj = settlements(&checks, &a.buckets);
                rt.block_on(counters.adjust(&adj, now)).unwrap();
            })
        });
    }
    // As keygate-api/src/limits.rs does it: format the key, then clone the checks.
    let counters = MemoryCounters::new();
    let mut now = NOW;
    g.bench_function("as_gateway_1", |b| {
        b.iter(|| {
            now += 1;
            let labeled = [rate(
                &format!("prov:{}:req", black_box("pk_0192f3a4b5c6")),
                60_000,
                100_000_000,
                1,
            )];
            let plain: Vec<Check> = labeled.to_vec();
            rt.block_on(counters.acquire(&plain, now)).unwrap()
        })
    });
    // One decision among 100,000 live counters.
    let counters = MemoryCounters::new();
    let sets: Vec<Vec<Check>> = (0..100_000).map(|i| one_check(&format!("pk_{i:06}"))).collect();
    for s in &sets {
        rt.block_on(counters.acquire(s, NOW)).unwrap();
    }
    let mut i = 0usize;
    g.bench_function("100k_counters", |b| {
        b.iter(|| {
            i = (i + 7919) % sets.len();
            rt.block_on(counters.acquire(&sets[i], NOW + 1)).unwrap()
        })
    });
    g.finish();
}

fn redis(c: &mut Criterion) {
    let url = std::env::var("KEYGATE_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let rt = rt();
    let prefix = format!("kgbench:{}:", std::process::id());
    let counters = match rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(2), RedisCounters::connect(&url, &prefix)).await })
    {
        Ok(Ok(c)) => c,
        _ => {
            eprintln!("redis: no Redis answers at {url}; the redis benchmarks are skipped");
            return;
        }
    };
    let mut g = c.benchmark_group("redis");
    for (name, checks) in [
        ("acquire_1", one_check("pk_bench")),
        ("acquire_3", three_checks("vk_bench")),
        ("acquire_6", six_checks("vk_bench")),
    ] {
        let mut now = NOW;
        g.bench_function(name, |b| {
            b.iter(|| {
                now += 1;
                rt.block_on(counters.acquire(black_box(&checks), now)).unwrap()
            })
        });
    }
    let checks = three_checks("vk_bench");
    let mut now = NOW;
    g.bench_function("acquire_settle_3", |b| {
        b.iter_batched(
            || (),
            |_| {
                now += 1;
                let a = rt.block_on(counters.acquire(&checks, now)).unwrap();
                let adj = settlements(&checks, &a.buckets);
                rt.block_on(counters.adjust(&adj, now)).unwrap();
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = memory, redis
}
criterion_main!(benches);
