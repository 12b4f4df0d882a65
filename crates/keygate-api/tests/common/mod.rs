//! The harness of the gateway tests: the real router on a real socket, a mock upstream that
//! records every request, and the keys of a fresh store.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use keygate_api::gateway::GatewaySettings;
use keygate_api::limits::LimitEngine;
use keygate_api::platform_keys::{create_platform_key, KeySettings, NewPlatformKey};
use keygate_api::vault::VaultService;
use keygate_api::{ApiSettings, AppState};
use keygate_testkit::{MockConfig, MockUpstream};
use keygate_types::pricing::PriceTable;
use keygate_types::PlatformKeyType;
use keygate_vault::MasterKey;
use serde_json::{json, Value};

pub const SECRET: &str = "sk-stored-upstream-secret-000111";

pub struct G {
    pub url: String,
    pub state: AppState,
    pub admin: String,
    pub inference: String,
    pub mock: MockUpstream,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

pub async fn start_with(mock: MockConfig, gw: GatewaySettings) -> G {
    start_full(mock, gw, None).await
}

/// A gateway with a given limit engine (Redis counters, a manual clock…).
pub async fn start_full(mock: MockConfig, gw: GatewaySettings, engine: Option<Arc<LimitEngine>>) -> G {
    let settings = ApiSettings {
        allow_private_upstreams: true,
        ..Default::default()
    };
    start_custom(mock, gw, engine, settings).await
}

/// A gateway with the given API settings (`allow_private_upstreams` off, say).
pub async fn start_custom(
    mock: MockConfig,
    gw: GatewaySettings,
    engine: Option<Arc<LimitEngine>>,
    settings: ApiSettings,
) -> G {
    let dir = tempfile::tempdir().unwrap();
    let store = keygate_store::open(&format!("sqlite://{}", dir.path().join("k.db").display()))
        .await
        .unwrap();
    let vault = VaultService::bootstrap(store.as_ref(), MasterKey::generate())
        .await
        .unwrap();
    let prices = Arc::new(PriceTable::builtin().clone());
    let (state, _writer) = match engine {
        Some(e) => AppState::build_with(store, vault, settings, gw, prices, e)
            .await
            .unwrap(),
        None => AppState::build(store, vault, settings, gw, prices).await.unwrap(),
    };
    let admin = key(&state, PlatformKeyType::Admin, KeySettings::default()).await;
    let inference = key(&state, PlatformKeyType::Inference, KeySettings::default()).await;
    let url = serve(state.clone()).await;
    G {
        url,
        state,
        admin,
        inference,
        mock: MockUpstream::start_with(mock).await,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

/// Serves `state`'s router on a fresh 127.0.0.1 port; its base URL.
pub async fn serve(state: AppState) -> String {
    let (app, _) = keygate_api::app(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    url
}

pub async fn start() -> G {
    start_with(MockConfig::default(), GatewaySettings::default()).await
}

pub async fn key(state: &AppState, t: PlatformKeyType, settings: KeySettings) -> String {
    let (_, secret) = create_platform_key(
        state.store.as_ref(),
        &state.vault,
        NewPlatformKey {
            workspace: "default",
            key_type: t,
            org_admin: false,
            description: "t",
            settings,
            expires_at: None,
            created_by: None,
        },
        None,
    )
    .await
    .unwrap();
    state.refresh_caches().await;
    secret.expose().to_string()
}

impl G {
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(&self.admin);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let s = resp.status().as_u16();
        (s, resp.json().await.unwrap_or(Value::Null))
    }

    /// A provider key on the mock and a virtual key over it; returns the slug.
    pub async fn vk(&self, name: &str, hub: &str, extra_pk: Value, extra_vk: Value) -> String {
        let mut pk = json!({"name": format!("{name}-pk"), "modelHub": hub, "apiKey": SECRET, "baseUrl": format!("{}/v1", self.mock.url())});
        merge(&mut pk, extra_pk);
        let (s, v) = self.admin("POST", "/api/v1/provider_keys", Some(pk)).await;
        assert_eq!(s, 201, "{v}");
        let mut vk = json!({"name": name, "slug": name, "providerKey": format!("{name}-pk")});
        merge(&mut vk, extra_vk);
        let (s, v) = self.admin("POST", "/api/v1/virtual_keys", Some(vk)).await;
        assert_eq!(s, 201, "{v}");
        v["data"]["slug"].as_str().unwrap().to_string()
    }

    pub fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.inference)
            .json(&body)
    }

    pub async fn chat(&self, slug: &str, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
        let resp = self
            .post("/v1/chat/completions", body)
            .header("x-keygate-virtual-key", slug)
            .send()
            .await
            .unwrap();
        let s = resp.status().as_u16();
        let h = resp.headers().clone();
        (s, resp.json().await.unwrap_or(Value::Null), h)
    }

    pub async fn usage(&self, query: &str) -> Value {
        let (s, v) = self.admin("GET", &format!("/api/v1/usage{query}"), None).await;
        assert_eq!(s, 200, "{v}");
        v["data"].clone()
    }
}

pub fn merge(a: &mut Value, b: Value) {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        for (k, v) in b {
            a.insert(k, v);
        }
    }
}

pub fn chat_body() -> Value {
    json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}],"max_tokens":16})
}

/// The SSE `data:` payloads of a streamed answer.
pub async fn sse(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_string))
        .collect()
}
