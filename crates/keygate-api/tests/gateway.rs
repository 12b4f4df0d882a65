//! The gateway end to end: the real router on a real socket, a mock upstream that records
//! every request, and the virtual keys, provider keys and usage of a fresh store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;

use std::time::Duration;

use futures::StreamExt;
use keygate_api::gateway::GatewaySettings;
use keygate_api::platform_keys::KeySettings;
use keygate_testkit::{Fault, MockConfig};
use keygate_types::PlatformKeyType;
use serde_json::{json, Value};

#[tokio::test]
async fn openai_chat_injects_only_the_stored_secret_and_meters() {
    let g = start().await;
    let slug = g.vk("prod", "openai", json!({}), json!({})).await;
    let (s, v, h) = g.chat(&slug, chat_body()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello!");
    assert!(h.contains_key("x-request-id"));
    let reqs = g.mock.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/chat/completions"));
    assert_eq!(r.header("authorization"), Some(format!("Bearer {SECRET}").as_str()));
    for (name, value) in &r.headers {
        assert!(
            !value.contains(&g.inference),
            "the client's key reached the upstream in {name}"
        );
        assert!(
            !name.contains("keygate") && !name.contains("portkey"),
            "{name} forwarded"
        );
    }
    assert_eq!(r.json()["model"], "gpt-4o-mini");
    assert_eq!(r.json()["messages"][0]["content"], "Say hi");
    let u = g.usage("").await;
    assert_eq!(
        (
            u["requests"].as_i64(),
            u["promptTokens"].as_i64(),
            u["completionTokens"].as_i64()
        ),
        (Some(1), Some(9), Some(3))
    );
    // 9 x 0.15 + 3 x 0.60 USD per million tokens, rounded up to the nano-dollar.
    assert_eq!(u["costNanoUsd"], 3_150);
    let (_, recs) = g.admin("GET", "/api/v1/usage/records", None).await;
    let rec = &recs["data"][0];
    assert_eq!(rec["hub"], "openai");
    assert_eq!(rec["estimated"], false);
    assert_eq!(rec["requestId"], h["x-request-id"].to_str().unwrap());
}

#[tokio::test]
async fn streams_pass_through_and_are_metered_with_the_injected_usage_removed() {
    let g = start().await;
    let slug = g.vk("s", "openai", json!({}), json!({})).await;
    let mut body = chat_body();
    body["stream"] = json!(true);
    let resp = g
        .post("/v1/chat/completions", body.clone())
        .header("x-keygate-virtual-key", &slug)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = sse(resp).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(
        events.iter().all(|e| !e.contains("\"usage\"")),
        "no usage chunk the client did not ask for: {events:?}"
    );
    let text: String = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, "Hello!");
    // keygate asked upstream for usage.
    assert_eq!(
        g.mock.last_request().unwrap().json()["stream_options"]["include_usage"],
        true
    );
    // A client that asks gets it.
    body["stream_options"] = json!({"include_usage": true});
    let resp = g
        .post("/v1/chat/completions", body)
        .header("x-keygate-virtual-key", &slug)
        .send()
        .await
        .unwrap();
    let events = sse(resp).await;
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    let u = g.usage("").await;
    assert_eq!(
        (
            u["requests"].as_i64(),
            u["completionTokens"].as_i64(),
            u["estimatedRequests"].as_i64()
        ),
        (Some(2), Some(6), Some(0))
    );
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_is_still_metered() {
    let g = start_with(
        MockConfig {
            stream_chunks: 50,
            chunk_delay: Duration::from_millis(20),
            ..Default::default()
        },
        GatewaySettings::default(),
    )
    .await;
    let slug = g.vk("d", "openai", json!({}), json!({})).await;
    let mut body = chat_body();
    body["stream"] = json!(true);
    let resp = g
        .post("/v1/chat/completions", body)
        .header("x-keygate-virtual-key", &slug)
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut seen = 0;
    while let Some(chunk) = stream.next().await {
        seen += chunk.unwrap().len();
        if seen > 400 {
            break;
        }
    }
    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, recs) = g.admin("GET", "/api/v1/usage/records", None).await;
        if let Some(rec) = recs["data"].as_array().and_then(|a| a.first()) {
            assert_eq!(rec["status"], 499);
            assert_eq!(rec["errorKind"], "client_disconnected");
            assert_eq!(rec["estimated"], true);
            assert!(rec["completionTokens"].as_i64().unwrap() >= 1, "{rec}");
            assert!(rec["completionTokens"].as_i64().unwrap() < 50, "{rec}");
            assert!(rec["promptTokens"].as_i64().unwrap() > 0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no usage record after the client went away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn choosing_the_virtual_key() {
    let g = start().await;
    let slug = g
        .vk(
            "choose",
            "openai",
            json!({}),
            json!({"models":["gpt-4o-mini","cheap"],"aliases":{"cheap":"gpt-4o-mini"}}),
        )
        .await;
    // @slug/model.
    let resp = g
        .post(
            "/v1/chat/completions",
            json!({"model": format!("@{slug}/gpt-4o-mini"), "messages":[{"role":"user","content":"x"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(g.mock.last_request().unwrap().json()["model"], "gpt-4o-mini");
    // Portkey's header and an alias.
    let resp = g
        .post(
            "/v1/chat/completions",
            json!({"model":"cheap","messages":[{"role":"user","content":"x"}]}),
        )
        .header("x-portkey-virtual-key", &slug)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(g.mock.last_request().unwrap().json()["model"], "gpt-4o-mini");
    // Not on the allow-list.
    let (s, v, _) = g
        .chat(
            &slug,
            json!({"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    // None named: 400 that says how.
    let resp = g.post("/v1/chat/completions", chat_body()).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("x-keygate-virtual-key"));
    assert_eq!(v["error"]["code"], "invalid_request");
    // Unknown, disabled, expired: one 403 for all.
    let (s, unknown, _) = g.chat("nope", chat_body()).await;
    assert_eq!(s, 403);
    g.admin(
        "PATCH",
        &format!("/api/v1/virtual_keys/{slug}"),
        Some(json!({"status":"disabled"})),
    )
    .await;
    let (s, disabled, _) = g.chat(&slug, chat_body()).await;
    assert_eq!(s, 403);
    assert_eq!(unknown, disabled);
    g.admin(
        "PATCH",
        &format!("/api/v1/virtual_keys/{slug}"),
        Some(json!({"status":"active","expiresAt":"2000-01-01"})),
    )
    .await;
    let (s, expired, _) = g.chat(&slug, chat_body()).await;
    assert_eq!((s, &expired), (403, &unknown));
    let (_, v) = g.admin("GET", &format!("/api/v1/virtual_keys/{slug}"), None).await;
    assert_eq!(v["data"]["status"], "expired");
    // The platform key's default virtual key.
    let slug2 = g
        .vk("dflt", "openai", json!({}), json!({"defaultModel":"gpt-4o-mini"}))
        .await;
    let k = key(
        &g.state,
        PlatformKeyType::Inference,
        KeySettings {
            default_virtual_key: Some(slug2.clone()),
            ..Default::default()
        },
    )
    .await;
    let resp = g
        .http
        .post(format!("{}/v1/chat/completions", g.url))
        .bearer_auth(&k)
        .json(&json!({"messages":[{"role":"user","content":"x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        g.mock.last_request().unwrap().json()["model"],
        "gpt-4o-mini",
        "the default model fills an empty one"
    );
    // An allow-list of virtual keys on the platform key.
    let k = key(
        &g.state,
        PlatformKeyType::Inference,
        KeySettings {
            virtual_keys: vec!["other".into()],
            ..Default::default()
        },
    )
    .await;
    let resp = g
        .http
        .post(format!("{}/v1/chat/completions", g.url))
        .bearer_auth(&k)
        .header("x-keygate-virtual-key", &slug2)
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn every_openai_compatible_hub_gets_its_path_and_bearer() {
    let g = start().await;
    for hub in [
        "together",
        "mistral",
        "fireworks",
        "nvidia",
        "openrouter",
        "digitalocean",
    ] {
        let slug = g.vk(hub, hub, json!({}), json!({})).await;
        let (s, v, _) = g.chat(&slug, chat_body()).await;
        assert_eq!(s, 200, "{hub}: {v}");
        let r = g.mock.last_request().unwrap();
        assert_eq!(r.path, "/v1/chat/completions", "{hub}");
        assert_eq!(r.bearer(), Some(SECRET), "{hub}");
    }
    // Custom hubs: the configured header and scheme.
    let slug = g
        .vk(
            "cust",
            "custom",
            json!({"hubConfig":{"auth_header":"X-Api-Key","auth_scheme":""}}),
            json!({}),
        )
        .await;
    let (s, _, _) = g.chat(&slug, chat_body()).await;
    assert_eq!(s, 200);
    let r = g.mock.last_request().unwrap();
    assert_eq!(r.header("x-api-key"), Some(SECRET));
    assert_eq!(r.header("authorization"), None);
    // DigitalOcean agents: the agent endpoint and the agent key.
    let (s, v) = g
        .admin("POST", "/api/v1/provider_keys", Some(json!({"name":"agent","modelHub":"digitalocean","baseUrl":g.mock.url(),"hubConfig":{"agent_id":"a-1","agent_key":"agent-key-secret-123"}})))
        .await;
    assert_eq!(s, 201, "{v}");
    g.admin(
        "POST",
        "/api/v1/virtual_keys",
        Some(json!({"name":"agent","slug":"agent","providerKey":"agent"})),
    )
    .await;
    let (s, v, _) = g.chat("agent", chat_body()).await;
    assert_eq!(s, 200, "{v}");
    let r = g.mock.last_request().unwrap();
    assert_eq!(r.path, "/api/v1/chat/completions");
    assert_eq!(r.bearer(), Some("agent-key-secret-123"));
}

#[tokio::test]
async fn azure_deployments_api_key_and_streams() {
    let g = start().await;
    let slug = g
        .vk(
            "az",
            "azure",
            json!({"baseUrl": g.mock.url(), "hubConfig":{"deployments":{"gpt-4o":"dep-4o","gpt-4o-mini":"dep-mini"},"defaultDeployment":"dep-mini","apiVersion":"2024-10-21"}}),
            json!({"aliases":{"smart":"gpt-4o"}}),
        )
        .await;
    let (s, v, _) = g
        .chat(
            &slug,
            json!({"model":"smart","messages":[{"role":"user","content":"x"}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let r = g.mock.last_request().unwrap();
    assert_eq!(r.path, "/openai/deployments/dep-4o/chat/completions");
    assert_eq!(r.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(r.header("api-key"), Some(SECRET));
    assert_eq!(r.header("authorization"), None);
    let (s, _, _) = g
        .chat(
            &slug,
            json!({"model":"unknown-model","messages":[{"role":"user","content":"x"}]}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        g.mock.last_request().unwrap().path,
        "/openai/deployments/dep-mini/chat/completions"
    );
    let (s, _, _) = g.chat(&slug, json!({"messages":[{"role":"user","content":"x"}]})).await;
    assert_eq!(s, 200);
    assert_eq!(
        g.mock.last_request().unwrap().path,
        "/openai/deployments/dep-mini/chat/completions"
    );
    let resp = g
        .post(
            "/v1/chat/completions",
            json!({"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"x"}]}),
        )
        .header("x-keygate-virtual-key", &slug)
        .send()
        .await
        .unwrap();
    let events = sse(resp).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(events.iter().all(|e| !e.contains("\"usage\"")));
    let u = g.usage("?groupBy=model").await;
    assert_eq!(u["requests"], 4);
    assert_eq!(
        u["completionTokens"], 12,
        "streams metered from the injected usage chunk"
    );
}

#[tokio::test]
async fn vertex_gets_a_cached_access_token() {
    let g = start().await;
    let cfg = json!({"region":"us-central1","project_id":"proj","client_id":"cid","client_secret":"cs-secret-123456","refresh_token":"rt-secret-123456","token_url": format!("{}/token", g.mock.url())});
    let slug = g.vk("vx", "vertex", json!({"apiKey": null, "hubConfig": cfg, "baseUrl": format!("{}/v1/projects/proj/locations/us-central1/endpoints/openapi", g.mock.url())}), json!({})).await;
    for _ in 0..3 {
        let (s, v, _) = g
            .chat(
                &slug,
                json!({"model":"gemini-2.0-flash","messages":[{"role":"user","content":"x"}]}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    assert_eq!(g.mock.tokens_issued(), 1, "one token for three requests");
    let token_req = &g.mock.requests_to("/token")[0];
    assert_eq!(token_req.form_field("grant_type").as_deref(), Some("refresh_token"));
    assert_eq!(
        token_req.form_field("refresh_token").as_deref(),
        Some("rt-secret-123456")
    );
    let r = g.mock.last_request().unwrap();
    assert_eq!(
        r.path,
        "/v1/projects/proj/locations/us-central1/endpoints/openapi/chat/completions"
    );
    assert_eq!(r.bearer(), Some("mock-access-1"));
    assert_eq!(r.json()["model"], "google/gemini-2.0-flash");
}

#[tokio::test]
async fn anthropic_is_translated_both_ways_with_usage() {
    let g = start().await;
    let slug = g.vk("an", "anthropic", json!({}), json!({})).await;
    let (s, v, _) = g.chat(&slug, json!({"model":"claude-sonnet-4-5","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"Hi"}],"max_tokens":32})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello!");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let r = g.mock.last_request().unwrap();
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.header("x-api-key"), Some(SECRET));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(r.json()["system"], "be brief");
    assert_eq!(r.json()["max_tokens"], 32);
    // Streaming: Anthropic events become chat.completion.chunk frames.
    let resp = g
        .post("/v1/chat/completions", json!({"model":"claude-sonnet-4-5","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hi"}]}))
        .header("x-keygate-virtual-key", &slug)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = sse(resp).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello!");
    let last = chunks.last().unwrap();
    assert_eq!(last["usage"]["prompt_tokens"], 9);
    let u = g.usage("").await;
    assert_eq!(
        (
            u["requests"].as_i64(),
            u["promptTokens"].as_i64(),
            u["completionTokens"].as_i64()
        ),
        (Some(2), Some(18), Some(6))
    );
    assert!(u["costNanoUsd"].as_i64().unwrap() > 0);
    // Not every endpoint exists there.
    let resp = g
        .post("/v1/embeddings", json!({"model":"x","input":"a"}))
        .header("x-keygate-virtual-key", &slug)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn embeddings_models_and_passthrough() {
    let g = start().await;
    let slug = g
        .vk(
            "emb",
            "openai",
            json!({}),
            json!({"models":["text-embedding-3-small","gpt-4o-mini"]}),
        )
        .await;
    let resp = g
        .post(
            "/v1/embeddings",
            json!({"model":"text-embedding-3-small","input":["a","b"],"encoding_format":"base64"}),
        )
        .header("x-keygate-virtual-key", &slug)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert!(v["data"][0]["embedding"].is_string());
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    // Models: the virtual key's, and with none named every usable key's as @slug/model.
    let resp = g
        .http
        .get(format!("{}/v1/models", g.url))
        .bearer_auth(&g.inference)
        .header("x-keygate-virtual-key", &slug)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["text-embedding-3-small", "gpt-4o-mini"]);
    let resp = g
        .http
        .get(format!("{}/v1/models", g.url))
        .bearer_auth(&g.inference)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == format!("@{slug}/gpt-4o-mini")));
    let resp = g
        .http
        .get(format!("{}/v1/models/%40{slug}%2Fgpt-4o-mini", g.url))
        .bearer_auth(&g.inference)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["id"], format!("@{slug}/gpt-4o-mini"));
    let resp = g
        .http
        .get(format!("{}/v1/models/gpt-4o", g.url))
        .bearer_auth(&g.inference)
        .header("x-keygate-virtual-key", &slug)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // Pass-through of another path, with the stored secret.
    let resp = g
        .post("/v1/moderations", json!({"model":"gpt-4o-mini","input":"x"}))
        .header("x-keygate-virtual-key", &slug)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        404,
        "the mock has no moderations route; the request reached it"
    );
    let r = g.mock.last_request().unwrap();
    assert_eq!(r.path, "/v1/moderations");
    assert_eq!(r.bearer(), Some(SECRET));
    let u = g.usage("?groupBy=model").await;
    assert_eq!(u["requests"], 2);
}

#[tokio::test]
async fn upstream_failures() {
    let g = start_with(
        MockConfig::default(),
        GatewaySettings {
            // Far above a mock's answer on a loaded machine; the hanging upstream below waits it out.
            first_byte_timeout: Duration::from_secs(3),
            ..Default::default()
        },
    )
    .await;
    let slug = g.vk("f", "openai", json!({}), json!({})).await;
    // An upstream error passes through in OpenAI's shape, with any echo of the key scrubbed.
    g.mock.push_fault(Fault::Status { status: 401, body: json!({"error":{"message":format!("Incorrect API key provided: {SECRET}"),"type":"invalid_request_error","code":"invalid_api_key"}}), retry_after: None });
    let (s, v, _) = g.chat(&slug, chat_body()).await;
    assert_eq!(s, 401);
    assert!(!v.to_string().contains(SECRET), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("[redacted]"));
    // A 429 keeps its Retry-After.
    g.mock.push_fault(Fault::Status {
        status: 429,
        body: json!({"error":{"message":"slow down"}}),
        retry_after: Some(7),
    });
    let (s, _, h) = g.chat(&slug, chat_body()).await;
    assert_eq!(s, 429);
    assert_eq!(h["retry-after"], "7");
    // No answer in time: 504.
    g.mock.push_fault(Fault::Hang);
    let (s, v, h) = g.chat(&slug, chat_body()).await;
    assert_eq!(s, 504, "{v}");
    assert_eq!(v["error"]["code"], "upstream_timeout");
    assert_eq!(h["x-should-retry"], "false");
    // Fallback: the first target fails before the first byte, the second answers.
    let (s, v) = g.admin("POST", "/api/v1/provider_keys", Some(json!({"name":"dead","modelHub":"openai","apiKey":"sk-dead-0000000000","baseUrl":"http://127.0.0.1:9/v1"}))).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = g.admin("POST", "/api/v1/virtual_keys", Some(json!({"name":"fb","slug":"fb","strategy":"fallback","targets":[{"providerKey":"dead"},{"providerKey":"f-pk"}]}))).await;
    assert_eq!(s, 201, "{v}");
    let before = g.mock.calls();
    let (s, v, _) = g.chat("fb", chat_body()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(g.mock.calls(), before + 1);
    g.mock.push_fault(Fault::Status {
        status: 503,
        body: json!({"error":{"message":"busy"}}),
        retry_after: None,
    });
    let (s, v) = g.admin("POST", "/api/v1/virtual_keys", Some(json!({"name":"fb2","slug":"fb2","strategy":"fallback","targets":[{"providerKey":"f-pk"},{"providerKey":"dead"}]}))).await;
    assert_eq!(s, 201, "{v}");
    let (s, v, _) = g.chat("fb2", chat_body()).await;
    assert_eq!(s, 502, "503 then a dead target: {v}");
    // Only a dead target: 502.
    let (s, _) = g
        .admin(
            "POST",
            "/api/v1/virtual_keys",
            Some(json!({"name":"only-dead","slug":"only-dead","providerKey":"dead"})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, v, _) = g.chat("only-dead", chat_body()).await;
    assert_eq!(s, 502, "{v}");
    assert_eq!(v["error"]["code"], "upstream_error");
}

#[tokio::test]
async fn a_stream_cut_by_the_upstream_ends_with_an_error_event() {
    let g = start().await;
    let slug = g.vk("cut", "openai", json!({}), json!({})).await;
    g.mock.push_fault(Fault::StreamThenDie { chunks: 2 });
    let (s, events) = stream_chat(&g, &slug).await;
    assert_eq!(s, 200);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "upstream_error", "{events:?}");
    let (_, recs) = g.admin("GET", "/api/v1/usage/records", None).await;
    assert_eq!(recs["data"][0]["status"], 502);
    assert_eq!(recs["data"][0]["estimated"], true);
}

#[tokio::test]
async fn bogus_upstream_usage_is_not_trusted() {
    let g = start().await;
    let slug = g.vk("bogus", "openai", json!({}), json!({})).await;
    g.mock.push_fault(Fault::BogusUsage);
    let (s, _, _) = g.chat(&slug, chat_body()).await;
    assert_eq!(s, 200);
    let (_, recs) = g.admin("GET", "/api/v1/usage/records", None).await;
    let rec = &recs["data"][0];
    assert_eq!(rec["estimated"], true, "{rec}");
    assert!(rec["promptTokens"].as_i64().unwrap() >= 0);
}

#[tokio::test]
async fn metrics_count_requests_without_key_ids() {
    keygate_api::metrics::install();
    let g = start().await;
    let slug = g.vk("m", "openai", json!({}), json!({})).await;
    assert_eq!(g.chat(&slug, chat_body()).await.0, 200);
    let text = g
        .http
        .get(format!("{}/metrics", g.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("keygate_gateway_requests_total"), "{text}");
    assert!(text.contains("endpoint=\"chat\""), "{text}");
    assert!(!text.contains(&slug) && !text.contains("vk_") && !text.contains(SECRET));
}

/// A streamed chat through `slug`; the status and the `data:` payloads.
async fn stream_chat(g: &G, slug: &str) -> (u16, Vec<String>) {
    let mut body = chat_body();
    body["stream"] = json!(true);
    let resp = g
        .post("/v1/chat/completions", body)
        .header("x-keygate-virtual-key", slug)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, sse(resp).await)
}

#[tokio::test]
async fn upstream_redirects_are_never_followed() {
    let g = start().await;
    let elsewhere = keygate_testkit::MockUpstream::start().await;
    let slug = g.vk("redir", "openai", json!({}), json!({})).await;
    for (status, location) in [
        (307, format!("{}/v1/chat/completions", elsewhere.url())),
        (302, "http://169.254.169.254/latest/meta-data/".to_string()),
        (308, format!("{}/v1/chat/completions", elsewhere.url())),
    ] {
        g.mock.push_fault(Fault::Redirect { status, location });
        let (s, v, h) = g.chat(&slug, chat_body()).await;
        assert_eq!(s, 502, "{status}: {v}");
        assert_eq!(v["error"]["code"], "upstream_error");
        assert!(v["error"]["message"].as_str().unwrap().contains("redirect"), "{v}");
        assert!(h.get("location").is_none(), "the client is not sent on either");
    }
    // The passthrough route follows no redirect either.
    g.mock.push_fault(Fault::Redirect {
        status: 301,
        location: format!("{}/v1/files", elsewhere.url()),
    });
    let resp = g
        .http
        .get(format!("{}/v1/files", g.url))
        .bearer_auth(&g.inference)
        .header("x-keygate-virtual-key", &slug)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(elsewhere.calls(), 0, "nothing reached the redirect's target");
    let (_, recs) = g.admin("GET", "/api/v1/usage/records", None).await;
    assert_eq!(recs["data"][0]["status"], 502, "{recs}");
}

/// This machine's host name when it resolves only to loopback or private addresses (as in
/// `/etc/hosts` on most Linux machines): a DNS name that passes the save-time check.
async fn a_name_for_loopback() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()?
        .trim()
        .to_ascii_lowercase();
    if name.is_empty() || name == "localhost" {
        return None;
    }
    let addrs: Vec<_> = tokio::net::lookup_host((name.as_str(), 80)).await.ok()?.collect();
    let private = !addrs.is_empty()
        && addrs
            .iter()
            .all(|a| keygate_types::netpolicy::address_allowed(a.ip(), false).is_err());
    private.then_some(name)
}

#[tokio::test]
async fn a_name_resolving_to_a_private_address_is_refused_when_connecting() {
    let Some(name) = a_name_for_loopback().await else {
        eprintln!("SKIPPED: this machine's host name does not resolve to a private address only");
        return;
    };
    // Saved and served where private upstreams are allowed.
    let open = start().await;
    let base = format!("http://{name}:{}/v1", open.mock.addr().port());
    let slug = open.vk("dns", "openai", json!({"baseUrl": base}), json!({})).await;
    let (s, v, _) = open.chat(&slug, chat_body()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(open.mock.calls(), 1);
    // A replica of the same store without --allow-private-upstreams (or a name that resolved
    // elsewhere when it was saved): the address is refused at connect time.
    let (strict, _writer) = keygate_api::AppState::build(
        open.state.store.clone(),
        open.state.vault.clone(),
        keygate_api::ApiSettings::default(),
        GatewaySettings::default(),
        std::sync::Arc::new(keygate_types::pricing::PriceTable::builtin().clone()),
    )
    .await
    .unwrap();
    let url = serve(strict).await;
    let resp = open
        .http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(&open.inference)
        .header("x-keygate-virtual-key", &slug)
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_error", "{v}");
    assert_eq!(open.mock.calls(), 1, "no connection was made");
    // And saving such a name where private upstreams are not allowed is refused outright.
    let saving = start_custom(
        MockConfig::default(),
        GatewaySettings::default(),
        None,
        keygate_api::ApiSettings::default(),
    )
    .await;
    let (s, v) = saving
        .admin(
            "POST",
            "/api/v1/provider_keys",
            Some(json!({"name":"dns","modelHub":"openai","apiKey":SECRET,"baseUrl":base})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("refused address"),
        "{v}"
    );
}

#[tokio::test]
async fn a_hostile_upstream_ends_every_request_and_is_metered() {
    // The caps are what end these requests, however long the mock takes to write megabytes on a
    // loaded machine: the total timeout stays far above that (600 s). It is tested on its own
    // gateway below, against an endless stream that only the clock can end.
    let g = start_with(
        MockConfig::default(),
        GatewaySettings {
            total_timeout: Duration::from_secs(600),
            max_response_bytes: 1024 * 1024,
            ..Default::default()
        },
    )
    .await;
    let slug = g.vk("hostile", "openai", json!({}), json!({})).await;
    // A frame over the 4 MiB line cap: the stream ends with an error event.
    g.mock.push_fault(Fault::HugeFrame { bytes: 6 * 1024 * 1024 });
    let (s, events) = stream_chat(&g, &slug).await;
    assert_eq!(s, 200);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"].as_str().unwrap().contains("oversized"),
        "{last}"
    );
    // Invalid UTF-8 inside an event passes as bytes; the stream still completes.
    g.mock.push_fault(Fault::InvalidUtf8);
    let mut body = chat_body();
    body["stream"] = json!(true);
    let resp = g
        .post("/v1/chat/completions", body)
        .header("x-keygate-virtual-key", &slug)
        .send()
        .await
        .unwrap();
    let raw = resp.bytes().await.unwrap();
    assert!(raw.ends_with(b"data: [DONE]\n\n"), "the stream completes");
    // A non-streamed answer over the cap (and no Content-Length to warn of it): 502.
    g.mock.push_fault(Fault::HugeBody { bytes: 8 * 1024 * 1024 });
    let (s, v, _) = g.chat(&slug, chat_body()).await;
    assert_eq!(s, 502, "{v}");
    // Each of the three is one usage record with its outcome.
    let statuses = wait_statuses(&g, 3).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");

    // An endless stream is ended at the total timeout (700 ms here; the bound asserted is ten
    // times that, as the request cannot end any other way).
    let short = start_with(
        MockConfig::default(),
        GatewaySettings {
            total_timeout: Duration::from_millis(700),
            ..Default::default()
        },
    )
    .await;
    let slug = short.vk("endless", "openai", json!({}), json!({})).await;
    short.mock.push_fault(Fault::EndlessStream);
    let t = std::time::Instant::now();
    let (_, events) = stream_chat(&short, &slug).await;
    assert!(t.elapsed() < Duration::from_secs(7), "{:?}", t.elapsed());
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_timeout", "{last}");
    let statuses = wait_statuses(&short, 1).await;
    assert_ne!(statuses[0], 200, "{statuses:?}");
}

/// The statuses of the gateway's usage records once there are `n` of them (records are written a
/// moment after the answer); fails after 60 s, or when more than `n` appear.
async fn wait_statuses(g: &G, n: usize) -> Vec<i64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, recs) = g.admin("GET", "/api/v1/usage/records", None).await;
        let statuses: Vec<i64> = recs["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_i64().unwrap())
            .collect();
        assert!(statuses.len() <= n, "{recs}");
        if statuses.len() == n {
            return statuses;
        }
        assert!(tokio::time::Instant::now() < deadline, "{n} records: {recs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_unchanged_body_reaches_the_upstream_byte_for_byte() {
    let g = start().await;
    let slug = g
        .vk(
            "bytes",
            "openai",
            json!({}),
            json!({"aliases": {"fast": "gpt-4o-mini"}}),
        )
        .await;
    // Spacing, key order and a field keygate knows nothing of: forwarded exactly.
    let sent = "{ \"messages\":[{\"role\":\"user\",\"content\":\"Say hi\"}],\n  \"model\" : \"gpt-4o-mini\", \"x_vendor\": {\"k\": [1, 2.50]} }";
    let resp = g
        .http
        .post(format!("{}/v1/chat/completions", g.url))
        .bearer_auth(&g.inference)
        .header("x-keygate-virtual-key", &slug)
        .header("content-type", "application/json")
        .body(sent)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(g.mock.last_request().unwrap().text(), sent);
    // An alias is rewritten, and a stream gets `stream_options.include_usage`: re-encoded then.
    let (s, _, _) = g
        .chat(
            &slug,
            json!({"model":"fast","messages":[{"role":"user","content":"hi"}]}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(g.mock.last_request().unwrap().json()["model"], "gpt-4o-mini");
    let (s, _) = stream_chat(&g, &slug).await;
    assert_eq!(s, 200);
    assert_eq!(
        g.mock.last_request().unwrap().json()["stream_options"]["include_usage"],
        true
    );
}

#[tokio::test]
async fn bodies_are_read_as_json_reads_them() {
    let g = start().await;
    let slug = g
        .vk("odd", "openai", json!({}), json!({"aliases": {"fast": "gpt-4o-mini"}}))
        .await;
    let send = |body: &'static str| {
        g.http
            .post(format!("{}/v1/chat/completions", g.url))
            .bearer_auth(&g.inference)
            .header("x-keygate-virtual-key", &slug)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Not JSON, or not an object: a 400 that says where, and nothing reaches the upstream.
    for (body, says) in [
        (
            "{\"model\":\"fast\",\n \"messages\": }",
            "the body is not valid JSON (line 2, column 14)",
        ),
        (
            "{\"model\":\"fast\"} trailing",
            "the body is not valid JSON (line 1, column 18)",
        ),
        ("[{\"model\":\"fast\"}]", "the body must be a JSON object"),
        ("\"fast\"", "the body must be a JSON object"),
    ] {
        let resp = send(body).await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["message"], says, "{body}");
    }
    assert!(g.mock.requests().is_empty());
    // A field given twice counts with its last value, an escaped key is its name: the alias is
    // found and the model rewritten.
    for body in [
        r#"{"model":"gpt-4o","model":"fast","messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"mod\u0065l":"fast","messages":[{"role":"user","content":"hi"}]}"#,
    ] {
        let resp = send(body).await.unwrap();
        let status = resp.status();
        assert_eq!(status, 200, "{body}: {}", resp.text().await.unwrap());
        assert_eq!(g.mock.last_request().unwrap().json()["model"], "gpt-4o-mini", "{body}");
    }
    // Fields of odd types count as absent: a non-boolean `stream` is no stream, so no usage
    // chunk is asked for and the bytes go as they came (the upstream judges them).
    let odd = r#"{"model":"gpt-4o-mini","stream":"yes","messages":[{"role":"user","content":"hi"}]}"#;
    let resp = send(odd).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(g.mock.last_request().unwrap().text(), odd);
}
