//! The real router, in process, on a fresh SQLite store: authentication, provider keys,
//! the Vijil mount, workspaces, audit and error shapes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use keygate_api::auth::AuthCache;
use keygate_api::platform_keys::{create_platform_key, KeySettings, NewPlatformKey};
use keygate_api::vault::VaultService;
use keygate_api::{ApiSettings, AppState, Role};
use keygate_store::{Store, WorkspaceRow};
use keygate_types::pricing::PriceTable;
use keygate_types::PlatformKeyType;
use keygate_vault::MasterKey;
use serde_json::{json, Value};
use tower::ServiceExt;

struct H {
    app: Router,
    state: AppState,
    admin: String,
    _dir: tempfile::TempDir,
}

async fn harness_with(settings: ApiSettings) -> H {
    let dir = tempfile::tempdir().unwrap();
    let store = keygate_store::open(&format!("sqlite://{}", dir.path().join("k.db").display()))
        .await
        .unwrap();
    let vault = VaultService::bootstrap(store.as_ref(), MasterKey::generate())
        .await
        .unwrap();
    let (state, _writer) = AppState::build(
        store.clone(),
        vault,
        settings,
        Default::default(),
        Arc::new(PriceTable::builtin().clone()),
    )
    .await
    .unwrap();
    let admin = key(&state, "default", PlatformKeyType::Admin, true, None).await;
    let (app, _) = keygate_api::app(state.clone());
    H {
        app,
        state,
        admin,
        _dir: dir,
    }
}

async fn harness() -> H {
    harness_with(ApiSettings {
        allow_private_upstreams: true,
        ..Default::default()
    })
    .await
}

async fn key(state: &AppState, ws: &str, t: PlatformKeyType, org: bool, expires_at: Option<i64>) -> String {
    let (_, secret) = create_platform_key(
        state.store.as_ref(),
        &state.vault,
        NewPlatformKey {
            workspace: ws,
            key_type: t,
            org_admin: org,
            description: "test",
            settings: KeySettings::default(),
            expires_at,
            created_by: None,
        },
        None,
    )
    .await
    .unwrap();
    state.auth.refresh(state.store.as_ref()).await.unwrap();
    secret.expose().to_string()
}

impl H {
    async fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        self.call_h(method, path, key, body, &[]).await
    }

    async fn call_h(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string()))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        assert!(
            resp.headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().starts_with("application/json"))
                .unwrap_or(false),
            "{method} {path}: every answer is JSON"
        );
        assert!(
            resp.headers().contains_key("x-request-id"),
            "{method} {path}: x-request-id"
        );
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        (status, v)
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let k = self.admin.clone();
        self.call(method, path, Some(&k), body).await
    }
}

const CANARY: &str = "sk-canary-7f3a9c1e5d2b8f40a6e4";

#[tokio::test]
async fn authentication_answers_per_failure() {
    let h = harness().await;
    let path = "/api/v1/provider_keys";
    let (s, v) = h.call("GET", path, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let (s, v) = h.call("GET", path, Some("kg_adm_short"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(v["error"]["message"].as_str().unwrap().contains("malformed"));
    // Well-formed (checksum correct) but unknown.
    let unknown = keygate_types::PlatformSecret::generate(PlatformKeyType::Admin, &mut rand::rngs::OsRng);
    let (s, v) = h.call("GET", path, Some(unknown.expose()), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["message"], "invalid API key");
    // Wrong checksum.
    let mut bad = h.admin.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == 'a' { 'b' } else { 'a' });
    let (s, v) = h.call("GET", path, Some(&bad), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(v["error"]["message"].as_str().unwrap().contains("checksum"));
    // INFERENCE keys may not manage.
    let inf = key(&h.state, "default", PlatformKeyType::Inference, false, None).await;
    let (s, v) = h.call("GET", path, Some(&inf), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(v["error"]["code"], "forbidden");
    // Expired.
    let old = key(&h.state, "default", PlatformKeyType::Admin, false, Some(1_000)).await;
    let (s, v) = h.call("GET", path, Some(&old), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(v["error"]["message"].as_str().unwrap().contains("expired"));
    // Scheme must be Bearer; x-portkey-api-key works too; an empty one is no key.
    let (s, _) = h
        .call_h(
            "GET",
            path,
            None,
            None,
            &[("authorization", &format!("Basic {}", h.admin))],
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = h
        .call_h(
            "GET",
            path,
            None,
            None,
            &[
                ("x-portkey-api-key", &h.admin),
                ("authorization", "Bearer OPENAI_API_KEY"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h.call_h("GET", path, None, None, &[("x-portkey-api-key", "")]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = h.admin("GET", path, None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn every_route_declares_a_role_and_guards_it() {
    let h = harness().await;
    let table = keygate_api::routes(h.state.clone());
    let specs = table.specs().to_vec();
    assert!(specs.len() >= 14);
    for spec in &specs {
        let path = spec.path.replace("{name}", "x").replace("{id}", "x");
        if spec.role == Role::Session || spec.path.starts_with("/ui") || spec.path == "/metrics" {
            // UI pages answer HTML; their guard is tested with the UI.
            continue;
        }
        let (status, _) = h.call(spec.method.as_str(), &path, None, Some(json!({}))).await;
        match spec.role {
            Role::Session => unreachable!(),
            Role::Public => assert_ne!(status, StatusCode::UNAUTHORIZED, "{} {}", spec.method, spec.path),
            Role::Admin | Role::Inference => {
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{} {} must refuse a missing key",
                    spec.method,
                    spec.path
                )
            }
        }
    }
    // The OpenAPI document lists only routes of the table.
    let (_, doc) = h.call("GET", "/api/v1/openapi.json", None, None).await;
    for (path, _) in doc["paths"].as_object().unwrap() {
        assert!(
            specs.iter().any(|s| s.path == path),
            "{path} is documented but not routed"
        );
    }
}

#[tokio::test]
async fn provider_key_lifecycle_native() {
    let h = harness().await;
    let (s, v) = h
        .admin("POST", "/api/v1/provider_keys", Some(json!({"name":"openai-prod","modelHub":"openai","apiKey":CANARY,"rateLimitPerInterval":600,"rateLimitInterval":60})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let d = &v["data"];
    assert_eq!(d["secretHint"], "e6e4"[..].replace("e6e4", &CANARY[CANARY.len() - 4..]));
    assert_eq!(d["secretVersion"], 1);
    assert_eq!(d["rateLimitPerInterval"], 600);
    assert_eq!(d["rateLimitSource"], "explicit");
    assert_eq!(d["effectiveBaseUrl"], "https://api.openai.com/v1");
    assert!(!v.to_string().contains(CANARY));

    // Name taken: 409.
    let (s, _) = h
        .admin(
            "POST",
            "/api/v1/provider_keys",
            Some(json!({"name":"openai-prod","modelHub":"openai","apiKey":"x"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // Default rate limit of the hub.
    let (s, v) = h
        .admin(
            "POST",
            "/api/v1/provider_keys",
            Some(json!({"name":"t1","modelHub":"together","apiKey":"tk-123456789012"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(v["data"]["rateLimitSource"], "hubDefault");
    assert_eq!(v["data"]["rateLimitPerInterval"], 60);

    // Get, list.
    let (s, v) = h.admin("GET", "/api/v1/provider_keys/openai-prod", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"]["name"], "openai-prod");
    let (_, v) = h.admin("GET", "/api/v1/provider_keys?page=1&limit=1", None).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["total"], 2);

    // Rotation: version up, hint changes; name change refused on PATCH.
    let (s, v) = h
        .admin(
            "PATCH",
            "/api/v1/provider_keys/openai-prod",
            Some(json!({"apiKey":"sk-second-secret-000011112222","gracePeriodSeconds":60})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["secretVersion"], 2);
    assert_eq!(v["data"]["secretHint"], "2222");
    let secrets = h
        .state
        .store
        .secrets_of("default", v["data"]["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(secrets.len(), 2, "the old version stays for the grace period");
    assert!(secrets.iter().any(|s| s.version == 1 && s.expires_at.is_some()));
    let (s, _) = h
        .admin(
            "PATCH",
            "/api/v1/provider_keys/openai-prod",
            Some(json!({"name":"other"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Rate limit back to the hub default with null.
    let (_, v) = h
        .admin(
            "PATCH",
            "/api/v1/provider_keys/openai-prod",
            Some(json!({"rateLimitPerInterval":null})),
        )
        .await;
    assert_eq!(v["data"]["rateLimitSource"], "hubDefault");
    assert_eq!(v["data"]["secretVersion"], 2, "no secret change, no rotation");

    // Rename and its conflict.
    let (s, _) = h
        .admin(
            "POST",
            "/api/v1/provider_keys/openai-prod/rename",
            Some(json!({"newName":"t1"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, v) = h
        .admin(
            "POST",
            "/api/v1/provider_keys/openai-prod/rename",
            Some(json!({"newName":"openai-main"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"]["name"], "openai-main");
    let (s, _) = h.admin("GET", "/api/v1/provider_keys/openai-prod", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Delete: JSON answer, gone, secrets destroyed.
    let id = v["data"]["id"].as_str().unwrap().to_string();
    let (s, v) = h.admin("DELETE", "/api/v1/provider_keys/openai-main", None).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"success": true})));
    assert!(h.state.store.secrets_of("default", &id).await.unwrap().is_empty());
    let (s, _) = h.admin("DELETE", "/api/v1/provider_keys/openai-main", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // One audit event per change, never a secret.
    let (_, v) = h.admin("GET", "/api/v1/audit?limit=50", None).await;
    let actions: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "provider_key.delete",
            "provider_key.rename",
            "provider_key.update",
            "provider_key.rotate",
            "provider_key.create",
            "provider_key.create"
        ]
    );
    assert!(!v.to_string().contains(CANARY));
    assert!(v["data"][0]["requestId"].as_str().is_some());
}

#[tokio::test]
async fn hub_configs_are_validated_and_secret_parts_sealed() {
    let h = harness().await;
    let vertex = json!({"name":"vx","modelHub":"vertex","hubConfig":{"region":"us-central1","project_id":"p1","client_id":"cid","client_secret":"cs-canary-secret-1","refresh_token":"rt-canary-secret-2"}});
    let (s, v) = h.admin("POST", "/api/v1/provider_keys", Some(vertex)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let body = v.to_string();
    assert!(!body.contains("cs-canary") && !body.contains("rt-canary"));
    assert_eq!(
        v["data"]["hubConfig"]["secretFields"],
        json!(["client_secret", "refresh_token"])
    );
    assert!(v["data"]["effectiveBaseUrl"]
        .as_str()
        .unwrap()
        .contains("us-central1-aiplatform.googleapis.com/v1/projects/p1"));
    // Changing one secret part rotates and carries the other over.
    let (s, v) = h
        .admin(
            "PATCH",
            "/api/v1/provider_keys/vx",
            Some(json!({"hubConfig":{"refresh_token":"rt-new-value-3"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["secretVersion"], 2);
    let id = v["data"]["id"].as_str().unwrap();
    let secrets = h.state.store.secrets_of("default", id).await.unwrap();
    let live: Vec<_> = secrets.iter().filter(|s| s.version == 2).collect();
    assert_eq!(live.len(), 2);
    for s in live {
        let place = keygate_vault::SecretPlace {
            workspace: "default",
            record_id: id,
            secret_version: 2,
            field: &s.field,
        };
        let text = h.state.vault.open_string(&place, &s.sealed).unwrap();
        match s.field.as_str() {
            "client_secret" => assert_eq!(text.as_str(), "cs-canary-secret-1"),
            "refresh_token" => assert_eq!(text.as_str(), "rt-new-value-3"),
            other => panic!("unexpected field {other}"),
        }
    }
    // Changing only public settings keeps the version.
    let (_, v) = h
        .admin(
            "PATCH",
            "/api/v1/provider_keys/vx",
            Some(json!({"hubConfig":{"region":"europe-west4"}})),
        )
        .await;
    assert_eq!(v["data"]["secretVersion"], 2);
    assert_eq!(v["data"]["hubConfig"]["region"], "europe-west4");

    for (body, needle) in [
        (
            json!({"name":"v2","modelHub":"vertex","hubConfig":{"region":"us"}}),
            "project_id",
        ),
        (json!({"name":"a1","modelHub":"azure","apiKey":"k"}), "resource_name"),
        (json!({"name":"o1","modelHub":"openai"}), "apiKey"),
        (json!({"name":"o1","modelHub":"nope","apiKey":"k"}), "unknown modelHub"),
        (json!({"name":"bad name","modelHub":"openai","apiKey":"k"}), "name"),
        (
            json!({"name":"o1","modelHub":"openai","apiKey":"k","hubConfig":{"agent_id":"x"}}),
            "does not apply",
        ),
        (
            json!({"name":"o1","modelHub":"openai","apiKey":"k","rateLimitInterval":5}),
            "rateLimitPerInterval",
        ),
        (json!({"name":"o1","modelHub":"openai","apiKey":"k","bogus":1}), "bogus"),
        (json!({"name":"c1","modelHub":"custom","apiKey":"k"}), "baseUrl"),
    ] {
        let (s, v) = h.admin("POST", "/api/v1/provider_keys", Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert!(v["error"]["message"].as_str().unwrap().contains(needle), "{body}: {v}");
    }
    let (s, v) = h
        .admin("POST", "/api/v1/provider_keys", Some(json!({"name":"az","modelHub":"azure","apiKey":"azure-key-123456","hubConfig":{"resourceName":"res","deployments":{"gpt-4o":"dep1"},"defaultDeployment":"dep1"}})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["data"]["effectiveBaseUrl"], "https://res.openai.azure.com");
    assert_eq!(v["data"]["hubConfig"]["apiVersion"], "2024-10-21");
}

#[tokio::test]
async fn upstream_urls_are_checked_when_saved() {
    let strict = harness_with(ApiSettings::default()).await;
    for url in [
        "http://127.0.0.1:9/v1",
        "http://localhost:8080",
        "http://10.1.2.3/",
        "http://2130706433/",
        "http://[::1]/",
    ] {
        let (s, v) = strict
            .admin(
                "POST",
                "/api/v1/provider_keys",
                Some(json!({"name":"c","modelHub":"custom","apiKey":"k","baseUrl":url})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{url}: {v}");
    }
    let open = harness().await;
    for url in [
        "http://169.254.169.254/",
        "http://metadata.google.internal/",
        "http://user:pw@127.0.0.1/",
        "http://127.0.0.1/#x",
    ] {
        let (s, _) = open
            .admin(
                "POST",
                "/api/v1/provider_keys",
                Some(json!({"name":"c","modelHub":"custom","apiKey":"k","baseUrl":url})),
            )
            .await;
        assert_eq!(
            s,
            StatusCode::BAD_REQUEST,
            "{url} must be refused even with private upstreams allowed"
        );
    }
    let (s, v) = open
        .admin(
            "POST",
            "/api/v1/provider_keys",
            Some(json!({"name":"c","modelHub":"custom","apiKey":"k","baseUrl":"http://127.0.0.1:9/v1/"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(v["data"]["baseUrl"], "http://127.0.0.1:9/v1");
}

#[tokio::test]
async fn vijil_mount_speaks_vijils_shapes() {
    let h = harness().await;
    let (s, v) = h
        .admin("POST", "/v1/api-keys", Some(json!({"name":"new-key","hub":"openai","rate_limit_per_interval":30,"rate_limit_interval":5,"value":CANARY,"url":null})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = v["id"].as_str().unwrap().to_string();
    assert!(!v.to_string().contains(CANARY));
    let (s, v) = h.admin("GET", "/v1//api-keys", None).await;
    assert_eq!(s, StatusCode::OK);
    let list = v.as_array().expect("a bare array");
    assert_eq!(list[0]["hub"], "openai");
    assert_eq!(list[0]["rate_limit_per_interval"], 30);
    // Modify: same name, new secret and limits.
    let (s, v) = h
        .admin(
            "PUT",
            &format!("/v1/api-keys/{id}"),
            Some(json!({"name":"new-key","hub":"openai","rate_limit_per_interval":10,"value":"sk-new-000000000000"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["secret_version"], 2);
    assert_eq!(v["rate_limit_per_interval"], 10);
    assert_eq!(v["rate_limit_interval"], 5);
    // Rename: name only.
    let (_, v) = h
        .admin("PUT", &format!("/v1/api-keys/{id}"), Some(json!({"name":"renamed"})))
        .await;
    assert_eq!(v["name"], "renamed");
    assert_eq!(v["secret_version"], 2);
    let (s, v) = h.admin("DELETE", &format!("/v1/api-keys/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["message"], "deleted");
    let (_, v) = h.admin("GET", "/v1/api-keys", None).await;
    assert_eq!(v, json!([]));
}

#[tokio::test]
async fn workspaces_are_isolated() {
    let h = harness().await;
    h.state
        .store
        .create_workspace(
            &WorkspaceRow {
                id: "team-b".into(),
                name: "B".into(),
                created_at: 1,
                updated_at: 1,
            },
            None,
        )
        .await
        .unwrap();
    let b_admin = key(&h.state, "team-b", PlatformKeyType::Admin, false, None).await;
    let (s, _) = h
        .call(
            "POST",
            "/api/v1/provider_keys",
            Some(&b_admin),
            Some(json!({"name":"b-key","modelHub":"openai","apiKey":"k-b-000000000000"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, v) = h.call("GET", "/v1/api-keys", Some(&b_admin), None).await;
    let b_id = v[0]["id"].as_str().unwrap().to_string();
    // The org admin sees nothing of team-b by default...
    let (s, _) = h.admin("GET", "/api/v1/provider_keys/b-key", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h.admin("DELETE", &format!("/v1/api-keys/{b_id}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // ...and all of it when naming the workspace.
    let admin = h.admin.clone();
    let (s, _) = h
        .call_h(
            "GET",
            "/api/v1/provider_keys/b-key",
            Some(&admin),
            None,
            &[("x-keygate-workspace", "team-b")],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // A workspace admin cannot reach another workspace, not even by naming it.
    let (s, _) = h
        .call_h(
            "GET",
            "/api/v1/provider_keys",
            Some(&b_admin),
            None,
            &[("x-keygate-workspace", "default")],
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h
        .call_h(
            "GET",
            "/api/v1/provider_keys",
            Some(&admin),
            None,
            &[("x-keygate-workspace", "nope")],
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn oversized_and_malformed_bodies() {
    let h = harness_with(ApiSettings {
        allow_private_upstreams: true,
        max_body_bytes: 2048,
        ..Default::default()
    })
    .await;
    let big = json!({"name":"x","modelHub":"openai","apiKey":"a".repeat(4096)});
    let (s, v) = h.admin("POST", "/api/v1/provider_keys", Some(big)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(v["error"]["code"], "request_too_large");
    let admin = h.admin.clone();
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/provider_keys")
        .header("authorization", format!("Bearer {admin}"))
        .header("content-type", "application/json")
        .body(Body::from("{\"name\": \"sk-canary"))
        .unwrap();
    let resp = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(!String::from_utf8_lossy(&bytes).contains("sk-canary"));
    let (s, v) = h.admin("GET", "/nowhere", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found");
}

#[tokio::test]
async fn a_key_created_elsewhere_is_picked_up_by_refresh() {
    let h = harness().await;
    // Another process (keygate admin-key, another replica) writes straight to the store.
    let (_, secret) = create_platform_key(
        h.state.store.as_ref(),
        &h.state.vault,
        NewPlatformKey {
            workspace: "default",
            key_type: PlatformKeyType::Admin,
            org_admin: false,
            description: "x",
            settings: KeySettings::default(),
            expires_at: None,
            created_by: None,
        },
        None,
    )
    .await
    .unwrap();
    let (s, _) = h
        .call("GET", "/api/v1/provider_keys", Some(secret.expose()), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "not yet loaded");
    h.state.auth.refresh(h.state.store.as_ref()).await.unwrap();
    let (s, _) = h
        .call("GET", "/api/v1/provider_keys", Some(secret.expose()), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    // Deleting it revokes it at the next refresh.
    let rows = h
        .state
        .store
        .list_platform_keys("default", keygate_store::Page { page: 1, limit: 10 })
        .await
        .unwrap()
        .0;
    let row = rows.iter().find(|r| r.last6 == secret.last6()).unwrap();
    h.state
        .store
        .delete_platform_key("default", &row.id, 1, None)
        .await
        .unwrap();
    h.state.auth.refresh(h.state.store.as_ref()).await.unwrap();
    let (s, _) = h
        .call("GET", "/api/v1/provider_keys", Some(secret.expose()), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn master_key_rotation_keeps_every_secret_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = keygate_store::open(&format!("sqlite://{}", dir.path().join("k.db").display()))
        .await
        .unwrap();
    let old = MasterKey::generate();
    let vault = VaultService::bootstrap(store.as_ref(), old.clone()).await.unwrap();
    let (state, _writer) = AppState::build(
        store.clone(),
        vault,
        ApiSettings::default(),
        Default::default(),
        Arc::new(PriceTable::builtin().clone()),
    )
    .await
    .unwrap();
    let admin = key(&state, "default", PlatformKeyType::Admin, true, None).await;
    let (app, _) = keygate_api::app(state.clone());
    let h = H {
        app,
        state: state.clone(),
        admin: admin.clone(),
        _dir: tempfile::tempdir().unwrap(),
    };
    for i in 0..25 {
        let (s, _) = h
            .admin(
                "POST",
                "/api/v1/provider_keys",
                Some(json!({"name":format!("k{i}"),"modelHub":"openai","apiKey":format!("sk-secret-number-{i:04}")})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let new = MasterKey::generate();
    let seen = std::sync::Mutex::new((0u64, 0u64));
    let progress = |d: u64, t: u64| *seen.lock().unwrap() = (d, t);
    let report = keygate_api::vault::rotate_master_key(store.as_ref(), old.clone(), new.clone(), &progress)
        .await
        .unwrap();
    assert_eq!((report.from_version, report.to_version), (1, 2));
    assert_eq!(report.rewrapped, 26, "25 provider secrets and the hashing secret");
    assert_eq!(*seen.lock().unwrap(), (26, 26));
    // The old key no longer starts keygate; the new one reads everything and keeps platform keys valid.
    let err = VaultService::bootstrap(store.as_ref(), old).await.unwrap_err();
    assert!(err.to_string().contains("retired"), "{err}");
    let err = VaultService::bootstrap(store.as_ref(), MasterKey::generate())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    let vault2 = VaultService::bootstrap(store.as_ref(), new).await.unwrap();
    assert_eq!(vault2.master_version(), 2);
    let (rows, _) = store
        .list_provider_keys("default", keygate_store::Page { page: 1, limit: 100 })
        .await
        .unwrap();
    for (i, row) in rows.iter().enumerate() {
        let secrets = store.secrets_of("default", &row.id).await.unwrap();
        let place = keygate_vault::SecretPlace {
            workspace: "default",
            record_id: &row.id,
            secret_version: 1,
            field: "api_key",
        };
        let text = vault2.open_string(&place, &secrets[0].sealed).unwrap();
        assert_eq!(text.as_str(), format!("sk-secret-number-{i:04}"));
    }
    let auth2 = Arc::new(AuthCache::new());
    auth2.refresh(store.as_ref()).await.unwrap();
    assert!(
        auth2.authenticate(&admin, |k| vault2.hash(k), 0).is_ok(),
        "platform keys survive a rotation"
    );
    // A server still holding the old key refuses to seal new secrets.
    let (s, v) = h
        .admin(
            "POST",
            "/api/v1/provider_keys",
            Some(json!({"name":"late","modelHub":"openai","apiKey":"sk-late-0000000000"})),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
}

/// Found by Schemathesis (`tests/python/test_schemathesis.py`): a query string that does not
/// parse was refused by axum in text/plain; every management route answers the JSON error.
#[tokio::test]
async fn query_strings_that_do_not_parse_answer_a_json_400() {
    let h = harness().await;
    for path in [
        "/api/v1/provider_keys?page=abc",
        "/api/v1/virtual_keys?limit=-1",
        "/api/v1/api_keys?page=1&page=2",
        "/api/v1/workspaces?bogus=1",
        "/api/v1/usage?limit=99999999999",
        "/api/v1/usage/records?page=x",
        "/api/v1/audit?page=1.5",
    ] {
        // `call` asserts the answer is JSON.
        let (s, v) = h.admin("GET", path, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_eq!(v["error"]["code"], "invalid_request", "{path}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{path}: {v}");
    }
    for path in ["/api/v1/api_keys?id=x&foo=1", "/api/v1/api_keys?id=a&id=b"] {
        let (s, v) = h.admin("DELETE", path, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_eq!(v["error"]["code"], "invalid_request", "{path}: {v}");
    }
}

/// An arbitrary JSON value, nested a few levels.
fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::from),
        prop::sample::select(vec![
            "openai",
            "custom",
            "azure",
            "INFERENCE",
            "ADMIN",
            "gpt-4o-mini",
            ""
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let keys = prop::sample::select(vec![
            "name",
            "modelHub",
            "apiKey",
            "baseUrl",
            "model",
            "messages",
            "stream",
            "slug",
            "providerKey",
            "targets",
            "budget",
            "apiKeyType",
            "description",
            "consumptionLimit",
            "expiresAt",
            "hubConfig",
            "rateLimits",
            "x",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// Sends `body` (raw bytes) with `authorization`; the status and whether the answer was JSON.
async fn raw(
    app: &Router,
    method: &str,
    path: &str,
    authorization: Option<&[u8]>,
    body: Vec<u8>,
) -> (u16, bool, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(a) = authorization {
        req = req.header("authorization", axum::http::HeaderValue::from_bytes(a).unwrap());
    }
    let resp = app.clone().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let json = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("application/json"));
    let text = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    (status, json, text)
}

#[test]
fn hostile_authorization_headers_are_refused_with_401_and_never_echoed() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let h = rt.block_on(harness());
    let header = prop_oneof![
        // Any header value bytes (visible ASCII, spaces, tabs, obs-text).
        prop::collection::vec(prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff], 0..120),
        "[A-Za-z]{0,8} {1,3}[ -~]{0,80}".prop_map(String::into_bytes),
        "(kg_adm_|kg_inf_|kg_xyz_)[A-Za-z0-9]{0,50}".prop_map(|k| format!("Bearer {k}").into_bytes()),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&header, |value| {
            let (status, json, text) =
                rt.block_on(raw(&h.app, "GET", "/api/v1/provider_keys", Some(&value), Vec::new()));
            prop_assert_eq!(status, 401, "{}", text);
            prop_assert!(json, "a JSON refusal");
            let shown = String::from_utf8_lossy(&value);
            let presented = shown.trim().rsplit(' ').next().unwrap_or("");
            prop_assert!(
                presented.len() < 12 || !text.contains(presented),
                "the refusal repeats what was presented: {}",
                text
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn hostile_json_bodies_get_a_json_4xx_never_a_5xx() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let h = rt.block_on(harness());
    let auth = format!("Bearer {}", h.admin);
    let body = prop_oneof![
        any_json().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..200),
        // Valid JSON cut short, and JSON with trailing garbage.
        any_json().prop_flat_map(|v| {
            let s = v.to_string().into_bytes();
            let n = s.len();
            (Just(s), 0..=n).prop_map(|(s, cut)| s[..cut].to_vec())
        }),
    ];
    let paths = prop::sample::select(vec![
        ("POST", "/api/v1/provider_keys"),
        ("POST", "/api/v1/virtual_keys"),
        ("POST", "/api/v1/api_keys"),
        ("PATCH", "/api/v1/api_keys"),
        ("POST", "/api/v1/workspaces"),
        ("POST", "/api/v1/wallets"),
        ("POST", "/v1/api-keys"),
        ("POST", "/v1/virtual-keys"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/messages"),
    ]);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 384,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&(paths, body), |((method, path), bytes)| {
            let (status, json, text) = rt.block_on(raw(&h.app, method, path, Some(auth.as_bytes()), bytes));
            prop_assert!(status < 500, "{} {}: {} {}", method, path, status, text);
            prop_assert!(json, "{} {}: {} answered without JSON: {}", method, path, status, text);
            Ok(())
        })
        .unwrap();
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_always_answered() {
    let h = harness_with(ApiSettings {
        allow_private_upstreams: true,
        max_body_bytes: 2048,
        ..Default::default()
    })
    .await;
    let send = |id: Option<&str>, declared: Option<&str>| {
        let mut req = Request::builder()
            .method("GET")
            .uri("/api/v1//workspaces")
            .header("authorization", format!("Bearer {}", h.admin));
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        if let Some(len) = declared {
            req = req.method("POST").header("content-length", len);
        }
        let app = h.app.clone();
        let req = req.body(Body::empty()).unwrap();
        async move { app.oneshot(req).await.unwrap() }
    };
    // The client's own id comes back as it was sent (and the doubled slash still routes).
    let resp = send(Some("client-id-42"), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-request-id"], "client-id-42");
    // Without one, keygate makes a UUID, a new one per request.
    let a = send(None, None).await.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let b = send(None, None).await.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(uuid::Uuid::parse_str(&a).is_ok(), "{a}");
    assert_ne!(a, b);
    // A declared body over the cap is refused before routing, with the id all the same.
    let resp = send(Some("too-big-1"), Some("4096")).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp.headers()["x-request-id"], "too-big-1");
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["error"]["code"], "request_too_large");
    assert_eq!(
        v["error"]["message"],
        "the request body is larger than the limit of 2048 bytes"
    );
}
