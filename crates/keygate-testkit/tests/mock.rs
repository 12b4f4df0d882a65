#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::StreamExt as _;
use keygate_testkit::{mock_content, mock_embedding, Fault, MockConfig, MockUpstream};
use serde_json::{json, Value};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The JSON payloads of the `data:` lines of an SSE body, `[DONE]` kept as the string "[DONE]".
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_owned))
        .collect()
}

/// `(event name, data JSON)` pairs of an Anthropic SSE body.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e.lines().find_map(|l| l.strip_prefix("event: ")).unwrap().to_owned();
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (name, serde_json::from_str(data).unwrap())
        })
        .collect()
}

fn chat_body(stream: bool, include_usage: Option<bool>) -> Value {
    let mut b = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]});
    if stream {
        b["stream"] = json!(true);
    }
    if let Some(u) = include_usage {
        b["stream_options"] = json!({"include_usage": u});
    }
    b
}

/// Read a streaming body frame by frame until it ends or errors. Returns (bytes, frames, error?).
async fn read_stream(resp: reqwest::Response) -> (Vec<u8>, usize, Option<reqwest::Error>) {
    let mut s = resp.bytes_stream();
    let mut out = Vec::new();
    let mut frames = 0;
    while let Some(item) = s.next().await {
        match item {
            Ok(b) => {
                frames += 1;
                out.extend_from_slice(&b);
            }
            Err(e) => return (out, frames, Some(e)),
        }
    }
    (out, frames, None)
}

// ------------------------------------------------------------------------------------------------
// Default behaviour
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn chat_non_stream() {
    let mock = MockUpstream::start().await;
    let resp = client()
        .post(format!("{}/v1/chat/completions", mock.url()))
        .bearer_auth("sk-upstream")
        .json(&json!({"model": "gpt-4.1-nano", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["id"], "chatcmpl-mock");
    assert_eq!(v["model"], "gpt-4.1-nano");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello!");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12})
    );
    assert_eq!(mock.calls(), 1);
    let r = mock.last_request().unwrap();
    assert_eq!(r.bearer(), Some("sk-upstream"));
    assert_eq!(r.header("Authorization"), Some("Bearer sk-upstream"));
}

#[tokio::test]
async fn chat_stream_without_usage() {
    let mock = MockUpstream::start().await;
    let resp = client()
        .post(format!("{}/v1/chat/completions", mock.url()))
        .json(&chat_body(true, None))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let body = resp.text().await.unwrap();
    let data = sse_data(&body);
    assert_eq!(data.len(), 1 + 3 + 1 + 1, "{body}");
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "gpt-4o-mini"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello!");
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
}

#[tokio::test]
async fn chat_stream_include_usage_on_and_off() {
    let mock = MockUpstream::start().await;
    for (flag, expect_usage) in [(Some(true), true), (Some(false), false)] {
        let body = client()
            .post(format!("{}/v1/chat/completions", mock.url()))
            .json(&chat_body(true, flag))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let data = sse_data(&body);
        assert_eq!(data.last().unwrap(), "[DONE]");
        let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
        if expect_usage {
            assert_eq!(data.len(), 7);
            assert_eq!(last["choices"], json!([]));
            assert_eq!(
                last["usage"],
                json!({"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12})
            );
        } else {
            assert_eq!(data.len(), 6);
            assert_eq!(last["choices"][0]["finish_reason"], "stop");
            assert!(last.get("usage").is_none());
        }
    }
}

#[tokio::test]
async fn chat_stream_chunks_are_separate_frames_with_delay() {
    let mock = MockUpstream::start_with(MockConfig {
        stream_chunks: 5,
        chunk_delay: Duration::from_millis(40),
        prompt_tokens: 20,
        completion_tokens: 5,
        ..MockConfig::default()
    })
    .await;
    let started = Instant::now();
    let resp = client()
        .post(format!("{}/v1/chat/completions", mock.url()))
        .json(&chat_body(true, Some(true)))
        .send()
        .await
        .unwrap();
    let (bytes, frames, err) = read_stream(resp).await;
    assert!(err.is_none());
    // role + 5 content + finish + usage + [DONE] = 9 events, 8 delays between them.
    assert!(
        started.elapsed() >= Duration::from_millis(8 * 40),
        "{:?}",
        started.elapsed()
    );
    assert!(frames >= 9, "frames {frames}");
    let data = sse_data(std::str::from_utf8(&bytes).unwrap());
    assert_eq!(data.len(), 9);
    let text: String = data[1..6]
        .iter()
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(text, mock_content(5));
    assert_eq!(text, "Hello! How can");
    let usage: Value = serde_json::from_str(&data[7]).unwrap();
    assert_eq!(usage["usage"]["total_tokens"], 25);
}

#[tokio::test]
async fn azure_vertex_digitalocean_paths() {
    let mock = MockUpstream::start().await;
    let c = client();
    // Azure: no model in the body, deployment in the path, api-key header, api-version query.
    let v: Value = c
        .post(format!(
            "{}/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21",
            mock.url()
        ))
        .header("api-key", "azure-secret")
        .json(&json!({"messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["model"], "my-gpt4o");
    let r = mock.last_request().unwrap();
    assert_eq!(r.path, "/openai/deployments/my-gpt4o/chat/completions");
    assert_eq!(r.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(r.header("api-key"), Some("azure-secret"));
    assert_eq!(r.header("authorization"), None);

    // Vertex OpenAI-compatible endpoint.
    let v: Value = c
        .post(format!(
            "{}/v1/projects/p1/locations/us-central1/endpoints/openapi/chat/completions",
            mock.url()
        ))
        .bearer_auth("mock-access-1")
        .json(&json!({"model": "google/gemini-2.0-flash", "messages": []}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["model"], "google/gemini-2.0-flash");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello!");

    // DigitalOcean agent.
    let resp = c
        .post(format!("{}/api/v1/chat/completions", mock.url()))
        .bearer_auth("agent-key")
        .json(&chat_body(true, Some(true)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(sse_data(&resp.text().await.unwrap()).len(), 7);
    assert_eq!(mock.calls(), 3);
    assert_eq!(mock.requests_to("/chat/completions").len(), 3);
}

#[tokio::test]
async fn legacy_completions() {
    let mock = MockUpstream::start().await;
    let c = client();
    let v: Value = c
        .post(format!("{}/v1/completions", mock.url()))
        .json(&json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "gpt-3.5-turbo-instruct");
    assert_eq!(v["choices"][0]["text"], "Hello!");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["total_tokens"], 12);

    let body = c
        .post(format!("{}/v1/completions", mock.url()))
        .json(&json!({"model": "m", "prompt": "x", "stream": true, "stream_options": {"include_usage": true}}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data = sse_data(&body);
    // 3 content + finish + usage + [DONE]
    assert_eq!(data.len(), 6, "{body}");
    let chunks: Vec<Value> = data[..5].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    let text: String = chunks[..3]
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello!");
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(chunks[4]["usage"]["prompt_tokens"], 9);
    assert_eq!(data[5], "[DONE]");
}

#[tokio::test]
async fn embeddings_float_and_base64() {
    let mock = MockUpstream::start().await;
    let c = client();
    let url = format!("{}/v1/embeddings", mock.url());

    let v: Value = c
        .post(&url)
        .json(&json!({"model": "text-embedding-3-small", "input": "a", "encoding_format": "float"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "text-embedding-3-small");
    assert_eq!(v["usage"], json!({"prompt_tokens": 9, "total_tokens": 9}));
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    let floats: Vec<f32> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(floats, mock_embedding(0, 8));

    // One embedding per input item; base64 little-endian f32 decodes to the same floats.
    let v: Value = c
        .post(&url)
        .json(&json!({"model": "text-embedding-3-small", "input": ["a", "b", "c"], "encoding_format": "base64"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["index"], i);
        assert_eq!(d["object"], "embedding");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(d["embedding"].as_str().unwrap())
            .unwrap();
        let decoded: Vec<f32> = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(decoded, mock_embedding(i, 8));
    }
    assert_ne!(mock_embedding(0, 8), mock_embedding(1, 8));

    // Token ids are one item; arrays of token arrays are one per element; `dimensions` is honoured.
    let v: Value = c
        .post(&url)
        .json(&json!({"model": "m", "input": [1, 2, 3], "dimensions": 4}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 4);
    let v: Value = c
        .post(&url)
        .json(&json!({"model": "m", "input": [[1, 2], [3]]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn models_list_and_retrieve() {
    let mock = MockUpstream::start().await;
    let c = client();
    let v: Value = c
        .get(format!("{}/v1/models", mock.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gpt-4o-mini", "text-embedding-3-small"]);

    let v: Value = c
        .get(format!("{}/v1/models/gpt-4o-mini", mock.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"id": "gpt-4o-mini", "object": "model", "created": 1686935002, "owned_by": "openai"})
    );

    let v: Value = c
        .get(format!("{}/v1/models/org%2Fmodel%20name", mock.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["id"], "org/model name");
    assert_eq!(mock.last_request().unwrap().path, "/v1/models/org%2Fmodel%20name");
}

#[tokio::test]
async fn anthropic_messages() {
    let mock = MockUpstream::start().await;
    let c = client();
    let req =
        json!({"model": "claude-3-5-haiku-latest", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]});
    let v: Value = c
        .post(format!("{}/v1/messages", mock.url()))
        .header("x-api-key", "sk-ant-secret")
        .header("anthropic-version", "2023-06-01")
        .json(&req)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-3-5-haiku-latest");
    assert_eq!(v["content"], json!([{"type": "text", "text": "Hello!"}]));
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"], json!({"input_tokens": 9, "output_tokens": 3}));
    let r = mock.last_request().unwrap();
    assert_eq!(r.header("x-api-key"), Some("sk-ant-secret"));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));

    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let resp = c
        .post(format!("{}/v1/messages", mock.url()))
        .json(&sreq)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = sse_events(&resp.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
    }
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 9);
    assert_eq!(events[0].1["message"]["model"], "claude-3-5-haiku-latest");
    let text: String = events[3..6]
        .iter()
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "Hello!");
    assert_eq!(events[7].1["delta"]["stop_reason"], "end_turn");
    assert_eq!(events[7].1["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn oauth_token_endpoint_counts() {
    let mock = MockUpstream::start().await;
    let c = client();
    let url = format!("{}/token", mock.url());
    for n in 1..=3 {
        let grant = if n == 2 {
            vec![
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", "eyJhbGciOi.x.y"),
            ]
        } else {
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", "cid"),
                ("client_secret", "csecret"),
                ("refresh_token", "rt/1+2"),
            ]
        };
        let v: Value = c.post(&url).form(&grant).send().await.unwrap().json().await.unwrap();
        assert_eq!(
            v,
            json!({"access_token": format!("mock-access-{n}"), "expires_in": 3600, "token_type": "Bearer"})
        );
    }
    assert_eq!(mock.tokens_issued(), 3);
    let reqs = mock.requests_to("/token");
    assert_eq!(reqs.len(), 3);
    assert_eq!(
        reqs[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(reqs[0].form_field("refresh_token").as_deref(), Some("rt/1+2"));
    assert_eq!(reqs[1].form_field("assertion").as_deref(), Some("eyJhbGciOi.x.y"));

    let resp = c.post(&url).form(&[("grant_type", "password")]).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(mock.tokens_issued(), 3);
    assert_eq!(mock.calls(), 4);
}

#[tokio::test]
async fn token_expiry_is_configurable() {
    let mock = MockUpstream::start_with(MockConfig {
        token_expires_in: 5,
        ..MockConfig::default()
    })
    .await;
    let v: Value = client()
        .post(format!("{}/token", mock.url()))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "r")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["expires_in"], 5);
}

#[tokio::test]
async fn unknown_routes_are_404_json() {
    let mock = MockUpstream::start().await;
    let c = client();
    for (method, path) in [
        (reqwest::Method::POST, "/v1/images/generations"),
        (reqwest::Method::GET, "/v1/chat/completions"),
        (reqwest::Method::DELETE, "/v1/models/x"),
        (reqwest::Method::GET, "/"),
    ] {
        let resp = c.request(method, format!("{}{path}", mock.url())).send().await.unwrap();
        assert_eq!(resp.status(), 404);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "not_found");
    }
    assert_eq!(mock.calls(), 4);
}

#[tokio::test]
async fn invalid_json_is_400() {
    let mock = MockUpstream::start().await;
    let resp = client()
        .post(format!("{}/v1/chat/completions", mock.url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(mock.last_request().unwrap().text(), "{not json");
}

#[tokio::test]
async fn records_exact_bodies_headers_and_counts() {
    let mock = MockUpstream::start().await;
    let c = client();
    let raw = r#"{ "model" : "gpt-4o-mini", "messages": [], "extra_field": {"keep": [1, 2.50]} }"#;
    c.post(format!("{}/v1/chat/completions?x=1&y=2", mock.url()))
        .header("Content-Type", "application/json")
        .header("X-Custom-Header", "Value-Case-Kept")
        .header("x-multi", "a")
        .header("x-multi", "b")
        .body(raw)
        .send()
        .await
        .unwrap();
    c.get(format!("{}/v1/models", mock.url())).send().await.unwrap();
    assert_eq!(mock.calls(), 2);
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.query.as_deref(), Some("x=1&y=2"));
    assert_eq!(&r.body[..], raw.as_bytes());
    assert_eq!(r.json()["extra_field"]["keep"][1], 2.5);
    assert!(r.headers.iter().all(|(k, _)| k == &k.to_ascii_lowercase()));
    assert_eq!(r.header("x-custom-header"), Some("Value-Case-Kept"));
    assert_eq!(r.header("X-CUSTOM-HEADER"), Some("Value-Case-Kept"));
    let multi: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k == "x-multi")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(multi, ["a", "b"]);
    assert_eq!(reqs[1].method, "GET");
    assert!(reqs[1].body.is_empty());
    assert!(reqs[0].received_at <= reqs[1].received_at);

    mock.clear();
    assert_eq!(mock.calls(), 0);
    assert!(mock.requests().is_empty());
    assert!(mock.last_request().is_none());
    c.get(format!("{}/v1/models", mock.url())).send().await.unwrap();
    assert_eq!(mock.calls(), 1);
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn record_off_still_counts() {
    let mock = MockUpstream::start_with(MockConfig {
        record: false,
        ..MockConfig::default()
    })
    .await;
    let c = client();
    for _ in 0..5 {
        let resp = c
            .post(format!("{}/v1/chat/completions", mock.url()))
            .json(&chat_body(false, None))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(mock.calls(), 5);
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn concurrent_requests_are_all_counted() {
    let mock = MockUpstream::start().await;
    let c = client();
    let url = format!("{}/v1/chat/completions", mock.url());
    let futs = (0..64).map(|i| {
        let c = c.clone();
        let url = url.clone();
        async move {
            let v: Value = c
                .post(&url)
                .json(&json!({"model": format!("m{i}"), "messages": []}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(v["model"], format!("m{i}"));
        }
    });
    futures::future::join_all(futs).await;
    assert_eq!(mock.calls(), 64);
    assert_eq!(mock.requests().len(), 64);
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let mock = MockUpstream::start_with(MockConfig {
        latency: Duration::from_millis(150),
        ..MockConfig::default()
    })
    .await;
    let started = Instant::now();
    let resp = client().get(format!("{}/v1/models", mock.url())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn dropping_the_mock_stops_it() {
    let mock = MockUpstream::start().await;
    let url = mock.url();
    assert_eq!(
        client().get(format!("{url}/v1/models")).send().await.unwrap().status(),
        200
    );
    drop(mock);
    // The server stops once its task next runs: polled, with a minute's room.
    let deadline = Instant::now() + Duration::from_secs(60);
    let err = loop {
        match client().get(format!("{url}/v1/models")).send().await {
            Err(e) => break e,
            Ok(_) => assert!(Instant::now() < deadline, "the mock still answers"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(err.is_connect(), "{err:?}");
}

// ------------------------------------------------------------------------------------------------
// Faults
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn fault_status_with_retry_after_then_default() {
    let mock = MockUpstream::start().await;
    mock.push_fault(Fault::Status {
        status: 429,
        body: json!({"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"}}),
        retry_after: Some(2),
    });
    mock.push_fault(Fault::Status {
        status: 503,
        body: json!({"error": {"message": "overloaded"}}),
        retry_after: None,
    });
    assert_eq!(mock.pending_faults(), 2);
    let c = client();
    let url = format!("{}/v1/chat/completions", mock.url());

    let resp = c.post(&url).json(&chat_body(false, None)).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["message"], "slow down");

    // Faults apply to any path, in order.
    let resp = c.get(format!("{}/v1/models", mock.url())).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_none());

    let resp = c.post(&url).json(&chat_body(false, None)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.pending_faults(), 0);
    assert_eq!(mock.calls(), 3);
}

#[tokio::test]
async fn fault_500() {
    let mock = MockUpstream::start().await;
    mock.push_fault(Fault::Status {
        status: 500,
        body: json!({"error": {"message": "boom", "type": "server_error"}}),
        retry_after: None,
    });
    let resp = client()
        .post(format!("{}/v1/messages", mock.url()))
        .json(&json!({"model": "claude", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["message"], "boom");
}

#[tokio::test]
async fn fault_for_path_skips_other_paths() {
    let mock = MockUpstream::start().await;
    mock.push_fault_for(
        "/chat/completions",
        Fault::Status {
            status: 429,
            body: json!({}),
            retry_after: Some(1),
        },
    );
    let c = client();
    let v: Value = c
        .post(format!("{}/token", mock.url()))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "r")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["access_token"], "mock-access-1");
    assert_eq!(mock.pending_faults(), 1);
    let resp = c
        .post(format!(
            "{}/v1/projects/p/locations/r/endpoints/openapi/chat/completions",
            mock.url()
        ))
        .json(&chat_body(false, None))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(mock.pending_faults(), 0);

    mock.push_fault(Fault::Hang);
    mock.clear_faults();
    assert_eq!(mock.pending_faults(), 0);
    let resp = c.get(format!("{}/v1/models", mock.url())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn fault_hang_times_out_the_client() {
    let mock = MockUpstream::start().await;
    mock.push_fault(Fault::Hang);
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = c
        .post(format!("{}/v1/chat/completions", mock.url()))
        .json(&chat_body(false, None))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(mock.calls(), 1);
    assert_eq!(mock.requests()[0].json()["model"], "gpt-4o-mini");
    // The mock keeps serving others.
    let resp = client().get(format!("{}/v1/models", mock.url())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn fault_drop_connection_is_an_error() {
    let mock = MockUpstream::start().await;
    mock.push_fault(Fault::DropConnection);
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = c
        .post(format!("{}/v1/chat/completions", mock.url()))
        .json(&chat_body(false, None))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    assert!(err.status().is_none());
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(mock.calls(), 1, "no hidden retry");
    let resp = c.get(format!("{}/v1/models", mock.url())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn fault_stream_then_die() {
    let mock = MockUpstream::start().await;
    mock.push_fault(Fault::StreamThenDie { chunks: 2 });
    let resp = client()
        .post(format!("{}/v1/chat/completions", mock.url()))
        .json(&chat_body(true, Some(true)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let (bytes, _, err) = read_stream(resp).await;
    assert!(err.is_some(), "the body must end abruptly");
    let text = String::from_utf8(bytes).unwrap();
    assert!(!text.contains("[DONE]"), "{text}");
    let data = sse_data(&text);
    assert_eq!(data.len(), 3, "role + 2 content chunks: {text}");
    let last: Value = serde_json::from_str(&data[2]).unwrap();
    assert_eq!(last["choices"][0]["delta"]["content"], "lo");
    assert!(!text.contains("finish_reason\":\"stop"));
}

#[tokio::test]
async fn fault_stream_then_die_anthropic() {
    let mock = MockUpstream::start().await;
    mock.push_fault(Fault::StreamThenDie { chunks: 1 });
    let resp = client()
        .post(format!("{}/v1/messages", mock.url()))
        .json(&json!({"model": "claude", "stream": true, "messages": []}))
        .send()
        .await
        .unwrap();
    let (bytes, _, err) = read_stream(resp).await;
    assert!(err.is_some());
    let events = sse_events(std::str::from_utf8(&bytes).unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["message_start", "content_block_start", "ping", "content_block_delta"]
    );
}

#[tokio::test]
async fn fault_slow_first_byte() {
    let mock = MockUpstream::start().await;
    mock.push_fault(Fault::SlowFirstByte(Duration::from_millis(250)));
    let started = Instant::now();
    let resp = client()
        .post(format!("{}/v1/chat/completions", mock.url()))
        .json(&chat_body(true, None))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().ends_with("data: [DONE]\n\n"));

    // A client with a shorter first-byte budget gives up (100 ms against 10 s: no race).
    mock.push_fault(Fault::SlowFirstByte(Duration::from_secs(10)));
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let err = c.get(format!("{}/v1/models", mock.url())).send().await.unwrap_err();
    assert!(err.is_timeout());
}

#[tokio::test]
async fn fault_huge_frame() {
    let mock = MockUpstream::start().await;
    let size = 200_000;
    mock.push_fault(Fault::HugeFrame { bytes: size });
    let body = client()
        .post(format!("{}/v1/chat/completions", mock.url()))
        .json(&chat_body(true, None))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let first = body.lines().next().unwrap();
    assert!(first.starts_with("data: "));
    assert_eq!(first.len(), size);
    let v: Value = serde_json::from_str(&first["data: ".len()..]).unwrap();
    assert_eq!(v["choices"][0]["delta"]["role"], "assistant");
    assert!(body.ends_with("data: [DONE]\n\n"));

    // Anthropic: the message_start data line is the huge one.
    mock.push_fault(Fault::HugeFrame { bytes: 100_000 });
    let body = client()
        .post(format!("{}/v1/messages", mock.url()))
        .json(&json!({"model": "claude", "stream": true, "messages": []}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data_line = body.lines().find(|l| l.starts_with("data: ")).unwrap();
    assert_eq!(data_line.len(), 100_000);
    assert_eq!(sse_events(&body).last().unwrap().0, "message_stop");

    // Legacy completions.
    mock.push_fault(Fault::HugeFrame { bytes: 70_000 });
    let body = client()
        .post(format!("{}/v1/completions", mock.url()))
        .json(&json!({"model": "m", "prompt": "p", "stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body.lines().next().unwrap().len(), 70_000);
}

#[tokio::test]
async fn fault_endless_stream() {
    let mock = MockUpstream::start().await;
    mock.push_fault(Fault::EndlessStream);
    let resp = client()
        .post(format!("{}/v1/chat/completions", mock.url()))
        .json(&chat_body(true, Some(true)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let started = Instant::now();
    let mut s = resp.bytes_stream();
    let mut seen = Vec::new();
    while seen.iter().filter(|b| **b == b'\n').count() < 2 * 25 {
        seen.extend_from_slice(&s.next().await.unwrap().unwrap());
    }
    // 25 events at one every 10 ms: well past the 3 configured chunks, and paced.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    let text = String::from_utf8(seen).unwrap();
    assert!(!text.contains("[DONE]"));
    assert!(!text.contains("finish_reason\":\"stop"));
    drop(s);
    // The mock survives the client hanging up.
    let resp = client().get(format!("{}/v1/models", mock.url())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn fault_invalid_utf8() {
    let mock = MockUpstream::start().await;
    mock.push_fault(Fault::InvalidUtf8);
    let resp = client()
        .post(format!("{}/v1/chat/completions", mock.url()))
        .json(&chat_body(true, None))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let bytes = resp.bytes().await.unwrap();
    assert!(std::str::from_utf8(&bytes).is_err());
    assert!(bytes.windows(3).any(|w| w == [0xFF, 0xFE, 0xFD]));
    assert!(bytes.ends_with(b"data: [DONE]\n\n"));
    // The bad bytes sit in a `data:` line.
    let line = bytes
        .split(|b| *b == b'\n')
        .find(|l| l.windows(2).any(|w| w == [0xFF, 0xFE]))
        .unwrap();
    assert!(line.starts_with(b"data: "));
}

#[tokio::test]
async fn fault_bogus_usage() {
    let mock = MockUpstream::start().await;
    let c = client();
    mock.push_fault(Fault::BogusUsage);
    let resp = c
        .post(format!("{}/v1/chat/completions", mock.url()))
        .json(&chat_body(false, None))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello!");
    let u = &v["usage"];
    assert_eq!(u["prompt_tokens"].as_i64(), Some(-7));
    assert!(u["prompt_tokens"].as_u64().is_none());
    assert!(u["completion_tokens"].as_u64().is_none());
    assert!(u["completion_tokens"].as_f64().unwrap() > u64::MAX as f64);
    assert_eq!(u["total_tokens"].as_f64(), Some(3.5));

    // Streaming: the usage chunk carries the bogus numbers even without include_usage.
    mock.push_fault(Fault::BogusUsage);
    let body = c
        .post(format!("{}/v1/chat/completions", mock.url()))
        .json(&chat_body(true, None))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data = sse_data(&body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], -7);

    // Anthropic.
    mock.push_fault(Fault::BogusUsage);
    let v: Value = c
        .post(format!("{}/v1/messages", mock.url()))
        .json(&json!({"model": "claude", "messages": []}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["usage"]["input_tokens"], -7);
    assert!(v["usage"]["output_tokens"].as_u64().is_none());

    // Embeddings.
    mock.push_fault(Fault::BogusUsage);
    let v: Value = c
        .post(format!("{}/v1/embeddings", mock.url()))
        .json(&json!({"model": "e", "input": "a"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], -7);
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
}
