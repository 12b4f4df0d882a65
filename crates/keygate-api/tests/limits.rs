//! Limits through the gateway: exact rate limits, budgets that concurrency cannot overspend,
//! reservations released on every exit path, refusal events and headers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;

use std::sync::Arc;
use std::time::Duration;

use keygate_api::gateway::GatewaySettings;
use keygate_api::limits::{BudgetMode, FailMode, LimitEngine};
use keygate_api::platform_keys::KeySettings;
use keygate_limits::memory::MemoryCounters;
use keygate_limits::{Clock, ManualClock};
use keygate_testkit::{Fault, MockConfig};
use keygate_types::PlatformKeyType;
use serde_json::{json, Value};

fn manual_engine(clock: Arc<ManualClock>) -> Arc<LimitEngine> {
    let clock: Arc<dyn Clock> = clock;
    Arc::new(LimitEngine::new(
        Arc::new(MemoryCounters::new()),
        clock,
        FailMode::Closed,
        BudgetMode::Strict,
    ))
}

#[tokio::test]
async fn a_virtual_key_rate_limit_admits_exactly_its_limit_with_headers_and_events() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let g = start_full(
        MockConfig::default(),
        GatewaySettings::default(),
        Some(manual_engine(clock.clone())),
    )
    .await;
    let slug = g.vk("rl", "openai", json!({}), json!({"rateLimits": {"rpm": 5}})).await;
    let mut ok = 0;
    let mut last_headers = None;
    for _ in 0..8 {
        let (s, v, h) = g.chat(&slug, chat_body()).await;
        match s {
            200 => {
                ok += 1;
                assert_eq!(h["x-ratelimit-limit-requests"], "5");
                last_headers = Some(h);
            }
            429 => {
                assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");
                assert!(v["error"]["message"].as_str().unwrap().contains("RPM"));
                let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=62).contains(&retry), "{retry}");
                assert_eq!(h["x-ratelimit-remaining-requests"], "0");
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(ok, 5);
    assert_eq!(g.mock.calls(), 5, "refused requests never reach the upstream");
    assert_eq!(last_headers.unwrap()["x-ratelimit-remaining-requests"], "0");
    // A minute later the window has room again, without sleeping.
    clock.advance(63_000);
    assert_eq!(g.chat(&slug, chat_body()).await.0, 200);
    // Every refusal was written down.
    let (_, log) = g.admin("GET", "/api/v1/api_keys/rate_limits/log", None).await;
    let events = log["data"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["rateLimitType"], "RPM");
    assert_eq!(events[0]["rateLimitTier"], "virtual_key");
    assert_eq!(events[0]["modelId"], "gpt-4o-mini");
    // Live state.
    let (_, lim) = g
        .admin("GET", &format!("/api/v1/virtual_keys/{slug}/limits"), None)
        .await;
    assert_eq!(lim["data"]["limits"][0]["type"], "RPM");
    assert_eq!(lim["data"]["limits"][0]["used"], 1);
}

#[tokio::test]
async fn two_hundred_concurrent_requests_never_overspend_a_budget() {
    let g = start().await;
    // gpt-4o-mini: 0.15/0.60 USD per million; a request's bound with max_tokens 16 is
    // (4 + 6 + 3) prompt + 16 output tokens: 13 x 150 + 16 x 600 = 11,550 nano-USD (rounded up).
    // A budget of 10 such bounds admits exactly 10 concurrent requests.
    let slug = g
        .vk("b", "openai", json!({}), json!({"budget": {"usd": 0.0001155}}))
        .await;
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let req = g
            .post("/v1/chat/completions", chat_body())
            .header("x-keygate-virtual-key", &slug);
        tasks.push(tokio::spawn(async move { req.send().await.unwrap().status().as_u16() }));
    }
    let mut counts = std::collections::BTreeMap::new();
    for t in tasks {
        *counts.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    let calls = g.mock.calls();
    assert!(calls <= 10 + 10, "the upstream saw {calls} calls");
    assert_eq!(counts.get(&200).copied().unwrap_or(0), calls, "{counts:?}");
    assert_eq!(counts.get(&402).copied().unwrap_or(0) + calls, 200, "{counts:?}");
    // What was really spent never exceeds the budget.
    let u = g.usage("").await;
    assert!(u["costNanoUsd"].as_i64().unwrap() <= 115_500, "{u}");
    let (_, v) = g
        .admin("GET", &format!("/api/v1/virtual_keys/{slug}/limits"), None)
        .await;
    let budget = &v["data"]["limits"][0];
    assert_eq!(budget["type"], "BUDGET");
    assert!(budget["used"].as_f64().unwrap() <= 0.0001155);
}

#[tokio::test]
async fn a_budget_admits_again_once_reservations_settle_to_the_real_cost() {
    let g = start().await;
    // Room for exactly one bound at a time: the next request fits only after the first settles
    // to its real cost (9 x 150 + 3 x 600 = 3,150 nano-USD).
    let slug = g
        .vk("settle", "openai", json!({}), json!({"budget": {"usd": 0.00002}}))
        .await;
    assert_eq!(g.chat(&slug, chat_body()).await.0, 200);
    // Settling trails the answer by a moment: a 402 before it is the reservation still held (and
    // costs nothing); once settled to the real cost, the budget has room.
    assert_eq!(
        admitted_within_a_minute(&g, &slug).await,
        200,
        "settled to the real cost, the budget has room"
    );
    let u = g.usage("").await;
    assert_eq!(u["costNanoUsd"], 6_300);
}

#[tokio::test]
async fn reservations_are_released_on_errors_timeouts_and_cancels() {
    let g = start_with(
        MockConfig::default(),
        GatewaySettings {
            // Far above a mock's answer on a loaded machine; the hanging upstream waits it out.
            first_byte_timeout: Duration::from_secs(3),
            ..Default::default()
        },
    )
    .await;
    // Room for one request's bound only.
    let slug = g
        .vk("rel", "openai", json!({}), json!({"budget": {"usd": 0.000012}}))
        .await;
    // Upstream error.
    g.mock.push_fault(Fault::Status {
        status: 400,
        body: json!({"error": {"message": "bad"}}),
        retry_after: None,
    });
    assert_eq!(g.chat(&slug, chat_body()).await.0, 400);
    // Timeout: the next request is admitted only once the error's reservation is released.
    g.mock.push_fault(Fault::Hang);
    assert_eq!(admitted_within_a_minute(&g, &slug).await, 504);
    // Client cancel while waiting for the upstream: the client goes away once the upstream has
    // the request (counted by the mock), not after a guessed time.
    g.mock.push_fault(Fault::SlowFirstByte(Duration::from_secs(30)));
    let calls = g.mock.calls();
    let req = g
        .post("/v1/chat/completions", chat_body())
        .header("x-keygate-virtual-key", &slug)
        .send();
    let pending = tokio::spawn(req);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while g.mock.calls() == calls {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upstream never got the request"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pending.abort();
    assert!(pending.await.is_err(), "the request was cancelled");
    // No false 402: the budget is whole again (once the cancel is noticed).
    assert_eq!(admitted_within_a_minute(&g, &slug).await, 200);
}

/// Sends the chat until it is admitted (anything but 402), for at most a minute, and gives its
/// status: a reservation being released or settled trails the previous answer by a moment.
async fn admitted_within_a_minute(g: &G, slug: &str) -> u16 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (s, v, _) = g.chat(slug, chat_body()).await;
        if s != 402 {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "still 402 after a minute: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn platform_key_limits_and_provider_key_limits() {
    let g = start().await;
    let slug = g
        .vk(
            "pkl",
            "openai",
            json!({"rateLimitPerInterval": 3, "rateLimitInterval": 60}),
            json!({}),
        )
        .await;
    let k = key(
        &g.state,
        PlatformKeyType::Inference,
        KeySettings {
            rate_limits: [("rpm".to_string(), 2u64)].into_iter().collect(),
            ..Default::default()
        },
    )
    .await;
    let call = |key: String| {
        let req = g
            .http
            .post(format!("{}/v1/chat/completions", g.url))
            .bearer_auth(key)
            .header("x-keygate-virtual-key", &slug)
            .json(&chat_body());
        async move {
            let r = req.send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(call(k.clone()).await.0, 200);
    assert_eq!(call(k.clone()).await.0, 200);
    let (s, v) = call(k.clone()).await;
    assert_eq!(s, 429);
    assert!(v["error"]["message"].as_str().unwrap().contains("API key"), "{v}");
    // The provider key's own limit (3 per minute) binds the other key after one more call.
    assert_eq!(call(g.inference.clone()).await.0, 200);
    let (s, v) = call(g.inference.clone()).await;
    assert_eq!(s, 429);
    assert!(v["error"]["message"].as_str().unwrap().contains("provider key"), "{v}");
    // Venice's rate_limits shows the calling key's windows live.
    let r = g
        .http
        .get(format!("{}/api/v1/api_keys/rate_limits", g.url))
        .bearer_auth(&k)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"]["windows"][0]["type"], "RPM");
    assert_eq!(v["data"]["windows"][0]["used"], 2);
    assert_eq!(v["data"]["windows"][0]["remaining"], 0);
}

#[tokio::test]
async fn a_key_over_its_budget_shows_exhausted_and_answers_402() {
    let g = start().await;
    let slug = g
        .vk("ex", "openai", json!({}), json!({"budget": {"requests": 2}}))
        .await;
    assert_eq!(g.chat(&slug, chat_body()).await.0, 200);
    assert_eq!(g.chat(&slug, chat_body()).await.0, 200);
    let (s, v, _) = g.chat(&slug, chat_body()).await;
    assert_eq!(s, 402);
    assert_eq!(v["error"]["code"], "budget_exceeded");
    let (_, v) = g.admin("GET", &format!("/api/v1/virtual_keys/{slug}"), None).await;
    assert_eq!(v["data"]["status"], "exhausted");
}
