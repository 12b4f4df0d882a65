//! Platform keys, wallets and workspaces through the real router on a real socket: rotation
//! with grace, expiry, IP allow-lists, the privilege rule, throttles, wallet sign-in with
//! real secp256k1 signatures, and tenant isolation on every route with an id.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use keygate_api::platform_keys::{create_platform_key, KeySettings, NewPlatformKey};
use keygate_api::vault::VaultService;
use keygate_api::{ApiSettings, AppState, Role};
use keygate_store::WorkspaceRow;
use keygate_types::pricing::PriceTable;
use keygate_types::PlatformKeyType;
use keygate_vault::wallet::{personal_sign, Address};
use keygate_vault::MasterKey;
use serde_json::{json, Value};

struct P {
    url: String,
    state: AppState,
    org: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start(settings: ApiSettings) -> P {
    let dir = tempfile::tempdir().unwrap();
    let store = keygate_store::open(&format!("sqlite://{}", dir.path().join("k.db").display()))
        .await
        .unwrap();
    let vault = VaultService::bootstrap(store.as_ref(), MasterKey::generate())
        .await
        .unwrap();
    let (state, _w) = AppState::build(
        store,
        vault,
        settings,
        Default::default(),
        Arc::new(PriceTable::builtin().clone()),
    )
    .await
    .unwrap();
    let (_, org) = create_platform_key(
        state.store.as_ref(),
        &state.vault,
        NewPlatformKey {
            workspace: "default",
            key_type: PlatformKeyType::Admin,
            org_admin: true,
            description: "org",
            settings: KeySettings::default(),
            expires_at: None,
            created_by: None,
        },
        None,
    )
    .await
    .unwrap();
    state.refresh_caches().await;
    let (app, _) = keygate_api::app(state.clone());
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
    P {
        url,
        state,
        org: org.expose().to_string(),
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

fn settings() -> ApiSettings {
    ApiSettings {
        allow_private_upstreams: true,
        ..Default::default()
    }
}

impl P {
    async fn call(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        self.call_h(method, path, key, body, &[]).await
    }

    async fn call_h(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url));
        if !key.is_empty() {
            req = req.bearer_auth(key);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let s = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        assert!(ct.starts_with("application/json"), "{method} {path}: {s} answered {ct}");
        (s, resp.json().await.unwrap())
    }

    /// Creates a key with `creator`; returns (id, secret).
    async fn create(&self, creator: &str, body: Value) -> (String, String) {
        let (s, v) = self.call("POST", "/api/v1/api_keys", creator, Some(body)).await;
        assert_eq!(s, 201, "{v}");
        (
            v["data"]["id"].as_str().unwrap().to_string(),
            v["data"]["apiKey"].as_str().unwrap().to_string(),
        )
    }
}

#[tokio::test]
async fn venice_shapes_and_lifecycle() {
    let p = start(settings()).await;
    let (s, v) = p
        .call("POST", "/api/v1/api_keys", &p.org, Some(json!({"apiKeyType":"INFERENCE","description":"Example API Key","consumptionLimit":{"usd":50.0,"diem":10.0},"limitPeriod":"MONTH","expiresAt":"2030-01-01T00:00:00Z"})))
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["success"], true);
    let d = &v["data"];
    let secret = d["apiKey"].as_str().unwrap();
    assert!(secret.starts_with("kg_inf_") && secret.len() == 45);
    assert_eq!(d["consumptionLimit"], json!({"diem": 10.0, "usd": 50.0}));
    assert_eq!(d["expiresAt"], "2030-01-01T00:00:00.000Z");
    let id = d["id"].as_str().unwrap().to_string();
    let (s, v) = p.call("GET", &format!("/api/v1/api_keys/{id}"), &p.org, None).await;
    assert_eq!(s, 200);
    let k = &v["data"];
    assert_eq!(k["last6Chars"], &secret[secret.len() - 6..]);
    assert_eq!(k["consumptionLimits"]["usd"], 50.0);
    assert_eq!(k["limitPeriod"], "MONTH");
    assert_eq!(k["usage"]["trailingSevenDays"]["usd"], "0.0");
    assert!(!v.to_string().contains(secret), "the secret is shown once");
    // PATCH with the id in the body; [] clears the allow-list.
    let (s, v) = p
        .call("PATCH", "/api/v1/api_keys", &p.org, Some(json!({"id": id, "description":"Updated","ipAllowlist":["11.22.33.44","10.1.2.3/8"],"modelPrivacy":"ALL","limitPeriod":"LIFETIME","consumptionLimit":{"usd":5.0}})))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["success"], true);
    assert_eq!(v["data"]["ipAllowlist"], json!(["11.22.33.44/32", "10.0.0.0/8"]));
    assert_eq!(v["data"]["description"], "Updated");
    let (_, v) = p
        .call(
            "PATCH",
            "/api/v1/api_keys",
            &p.org,
            Some(json!({"id": id, "ipAllowlist": []})),
        )
        .await;
    assert_eq!(v["data"]["ipAllowlist"], json!([]));
    // Paging never returns more than the limit.
    for i in 0..4 {
        p.create(
            &p.org,
            json!({"apiKeyType":"INFERENCE","description":format!("batch {i}")}),
        )
        .await;
    }
    let mut seen = Vec::new();
    for page in 1..=4 {
        let (_, v) = p
            .call("GET", &format!("/api/v1/api_keys?page={page}&limit=2"), &p.org, None)
            .await;
        let items = v["data"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_string()));
    }
    assert_eq!(seen.len(), 6, "the org key, the first key and four more");
    // Delete with ?id=, twice: idempotent; an unknown id: 404.
    let (s, v) = p
        .call("DELETE", &format!("/api/v1/api_keys?id={id}"), &p.org, None)
        .await;
    assert_eq!((s, v), (200, json!({"success": true})));
    let (s, v) = p
        .call("DELETE", &format!("/api/v1/api_keys?id={id}"), &p.org, None)
        .await;
    assert_eq!((s, v), (200, json!({"success": true})));
    let (s, _) = p
        .call(
            "DELETE",
            "/api/v1/api_keys?id=00000000-0000-0000-0000-000000000000",
            &p.org,
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = p.call("GET", "/api/v1/api_keys/rate_limits", secret, None).await;
    assert_eq!(s, 401, "a deleted key is refused");
    // Literal routes win over {id}.
    let (s, v) = p.call("GET", "/api/v1/api_keys/rate_limits", &p.org, None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["accessPermitted"], true);
    assert!(v["data"]["balances"]["USD"].is_number() && v["data"]["balances"]["DIEM"].is_number());
    assert!(v["data"]["nextEpochBegins"].is_string());
    let (s, v) = p.call("GET", "/api/v1/api_keys/rate_limits/log", &p.org, None).await;
    assert_eq!((s, &v["object"]), (200, &json!("list")));
}

#[tokio::test]
async fn rotation_keeps_the_old_secret_for_the_grace_period() {
    let p = start(settings()).await;
    let (id, old) = p
        .create(&p.org, json!({"apiKeyType":"INFERENCE","description":"r"}))
        .await;
    let (s, v) = p
        .call(
            "POST",
            &format!("/api/v1/api_keys/{id}/rotate"),
            &p.org,
            Some(json!({"gracePeriodSeconds": 3})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["id"], id.as_str(), "same id");
    let new = v["data"]["apiKey"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(
        p.call("GET", "/api/v1/api_keys/rate_limits", &old, None).await.0,
        200,
        "old valid during the grace"
    );
    assert_eq!(p.call("GET", "/api/v1/api_keys/rate_limits", &new, None).await.0, 200);
    // The grace ends 3 s after the rotation: polled, with a minute's room.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (s, v) = loop {
        let (s, v) = p.call("GET", "/api/v1/api_keys/rate_limits", &old, None).await;
        if s != 200 || tokio::time::Instant::now() > deadline {
            break (s, v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s, 401);
    assert!(v["error"]["message"].as_str().unwrap().contains("rotated"), "{v}");
    assert_eq!(p.call("GET", "/api/v1/api_keys/rate_limits", &new, None).await.0, 200);
    // Without a grace the old secret stops at once.
    let (_, v) = p
        .call("POST", &format!("/api/v1/api_keys/{id}/rotate"), &p.org, None)
        .await;
    let newer = v["data"]["apiKey"].as_str().unwrap().to_string();
    assert_eq!(p.call("GET", "/api/v1/api_keys/rate_limits", &new, None).await.0, 401);
    assert_eq!(p.call("GET", "/api/v1/api_keys/rate_limits", &newer, None).await.0, 200);
}

#[tokio::test]
async fn expiry_and_ip_allowlists_are_enforced() {
    let p = start(settings()).await;
    let (_, expired) = p
        .create(
            &p.org,
            json!({"apiKeyType":"ADMIN","description":"e","expiresAt":"2001-01-01"}),
        )
        .await;
    let (s, v) = p.call("GET", "/api/v1/api_keys", &expired, None).await;
    assert_eq!(s, 401);
    assert!(v["error"]["message"].as_str().unwrap().contains("expired"));
    let (_, elsewhere) = p
        .create(
            &p.org,
            json!({"apiKeyType":"ADMIN","description":"ip","ipAllowlist":["10.0.0.0/8"]}),
        )
        .await;
    let (s, v) = p.call("GET", "/api/v1/api_keys", &elsewhere, None).await;
    assert_eq!(s, 403);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("This API key is restricted to configured IP addresses"));
    let (_, here) = p
        .create(
            &p.org,
            json!({"apiKeyType":"INFERENCE","description":"ip","ipAllowlist":["127.0.0.1"]}),
        )
        .await;
    assert_eq!(p.call("GET", "/api/v1/api_keys/rate_limits", &here, None).await.0, 200);
    let (s, _) = p.call("GET", "/api/v1/api_keys", &here, None).await;
    assert_eq!(s, 403, "INFERENCE keys do not manage");
}

#[tokio::test]
async fn no_key_creates_or_edits_a_key_above_its_own() {
    let p = start(settings()).await;
    let (id, limited) = p
        .create(&p.org, json!({"apiKeyType":"ADMIN","description":"limited","consumptionLimit":{"usd":10.0},"limitPeriod":"MONTH","rateLimits":{"rpm":10},"expiresAt":"2035-01-01","modelPrivacy":"PRIVATE_ONLY"}))
        .await;
    let ok = json!({"apiKeyType":"INFERENCE","description":"child","consumptionLimit":{"usd":5.0},"limitPeriod":"MONTH","rateLimits":{"rpm":5},"expiresAt":"2034-01-01","modelPrivacy":"PRIVATE_ONLY"});
    let (child_id, _) = p.create(&limited, ok.clone()).await;
    for (field, value) in [
        ("consumptionLimit", json!({"usd": 20.0})),
        ("consumptionLimit", json!({"diem": 1.0})),
        ("limitPeriod", json!("LIFETIME")),
        ("rateLimits", json!({"rpm": 20})),
        ("rateLimits", json!({"rph": 5})),
        ("expiresAt", json!("2040-01-01")),
        ("modelPrivacy", json!("ALL")),
    ] {
        let mut body = ok.clone();
        body[field] = value.clone();
        let (s, v) = p.call("POST", "/api/v1/api_keys", &limited, Some(body)).await;
        assert_eq!(s, 403, "{field}={value}: {v}");
    }
    let mut no_expiry = ok.clone();
    no_expiry.as_object_mut().unwrap().remove("expiresAt");
    assert_eq!(
        p.call("POST", "/api/v1/api_keys", &limited, Some(no_expiry)).await.0,
        403
    );
    // Editing: not above its own either, and never an organisation admin's key.
    let (s, _) = p
        .call(
            "PATCH",
            "/api/v1/api_keys",
            &limited,
            Some(json!({"id": child_id, "consumptionLimit": {"usd": 50.0}})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = p
        .call(
            "PATCH",
            "/api/v1/api_keys",
            &limited,
            Some(json!({"id": id, "rateLimits": {"rpm": 1000}})),
        )
        .await;
    assert_eq!(s, 403, "not even its own limits upward");
    let (_, v) = p.call("GET", "/api/v1/api_keys?limit=500", &p.org, None).await;
    let org_id = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["organisationAdmin"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        p.call(
            "PATCH",
            "/api/v1/api_keys",
            &limited,
            Some(json!({"id": org_id, "description": "x"}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        p.call("POST", &format!("/api/v1/api_keys/{org_id}/rotate"), &limited, None)
            .await
            .0,
        403
    );
    assert_eq!(
        p.call("DELETE", &format!("/api/v1/api_keys?id={org_id}"), &limited, None)
            .await
            .0,
        403
    );
}

#[tokio::test]
async fn creation_is_throttled_and_capped() {
    let p = start(ApiSettings {
        api_key_creations_per_minute: 3,
        max_api_keys_per_workspace: 100,
        ..settings()
    })
    .await;
    for i in 0..3 {
        p.create(&p.org, json!({"apiKeyType":"INFERENCE","description":format!("t{i}")}))
            .await;
    }
    let resp = p
        .http
        .post(format!("{}/api/v1/api_keys", p.url))
        .bearer_auth(&p.org)
        .json(&json!({"apiKeyType":"INFERENCE","description":"t4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    let p = start(ApiSettings {
        max_api_keys_per_workspace: 3,
        ..settings()
    })
    .await;
    p.create(&p.org, json!({"apiKeyType":"INFERENCE","description":"a"}))
        .await;
    let (id, _) = p
        .create(&p.org, json!({"apiKeyType":"INFERENCE","description":"b"}))
        .await;
    let (s, v) = p
        .call(
            "POST",
            "/api/v1/api_keys",
            &p.org,
            Some(json!({"apiKeyType":"INFERENCE","description":"c"})),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("limit of 3"));
    p.call("DELETE", &format!("/api/v1/api_keys?id={id}"), &p.org, None)
        .await;
    p.create(&p.org, json!({"apiKeyType":"INFERENCE","description":"c"}))
        .await;
}

#[tokio::test]
async fn wallet_sign_in_with_real_signatures() {
    let p = start(settings()).await;
    let key: [u8; 32] = [
        0x4c, 0x08, 0x83, 0xa6, 0x91, 0x02, 0x93, 0x7d, 0x62, 0x31, 0x47, 0x1b, 0x5d, 0xbb, 0x62, 0x04, 0xfe, 0x51,
        0x29, 0x61, 0x70, 0x82, 0x79, 0x2a, 0xe4, 0x68, 0xd0, 0x1a, 0x3f, 0x36, 0x23, 0x18,
    ];
    let other: [u8; 32] = [7; 32];
    let address = Address::from_private_key(&key).unwrap();
    assert_eq!(address.to_checksum(), "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23");
    let (s, v) = p
        .call(
            "POST",
            "/api/v1/wallets",
            &p.org,
            Some(json!({"address": address.to_checksum()})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let token = || async {
        let (s, v) = p.call("GET", "/api/v1/api_keys/generate_web3_key", "", None).await;
        assert_eq!((s, &v["success"]), (200, &json!(true)));
        v["data"]["token"].as_str().unwrap().to_string()
    };
    let t = token().await;
    let sig = personal_sign(&key, t.as_bytes()).unwrap();
    let body = json!({"apiKeyType":"INFERENCE","address": address.to_checksum(),"signature": sig,"token": t,"description":"Web3 API Key"});
    // The public route ignores an Authorization header.
    let (s, v) = p
        .call(
            "POST",
            "/api/v1/api_keys/generate_web3_key",
            "kg_adm_bogus",
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let minted = v["data"]["apiKey"].as_str().unwrap().to_string();
    assert_eq!(v["data"]["consumptionLimit"], json!({}));
    assert_eq!(
        p.call("GET", "/api/v1/api_keys/rate_limits", &minted, None).await.0,
        200
    );
    // Replay.
    let (s, v) = p
        .call("POST", "/api/v1/api_keys/generate_web3_key", "", Some(body))
        .await;
    assert_eq!(s, 401);
    assert!(v["error"]["message"].as_str().unwrap().contains("already used"), "{v}");
    // Forged: signed by another account.
    let t = token().await;
    let forged = personal_sign(&other, t.as_bytes()).unwrap();
    let (s, v) = p
        .call(
            "POST",
            "/api/v1/api_keys/generate_web3_key",
            "",
            Some(json!({"apiKeyType":"INFERENCE","address": address.to_checksum(),"signature": forged,"token": t})),
        )
        .await;
    assert_eq!(s, 401);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not made by this address"),
        "{v}"
    );
    // An address nobody registered.
    let stranger = Address::from_private_key(&other).unwrap();
    let sig = personal_sign(&other, t.as_bytes()).unwrap();
    let (s, v) = p
        .call(
            "POST",
            "/api/v1/api_keys/generate_web3_key",
            "",
            Some(json!({"apiKeyType":"INFERENCE","address": stranger.to_checksum(),"signature": sig,"token": t})),
        )
        .await;
    assert_eq!(s, 401);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("not registered"),
        "{v}"
    );
    // An unknown token; an ADMIN key from a wallet that may mint only INFERENCE keys.
    let sig = personal_sign(&key, b"made-up-token").unwrap();
    let (s, _) = p.call("POST", "/api/v1/api_keys/generate_web3_key", "", Some(json!({"apiKeyType":"INFERENCE","address": address.to_checksum(),"signature": sig,"token": "made-up-token"}))).await;
    assert_eq!(s, 401);
    let t = token().await;
    let sig = personal_sign(&key, t.as_bytes()).unwrap();
    let (s, _) = p
        .call(
            "POST",
            "/api/v1/api_keys/generate_web3_key",
            "",
            Some(json!({"apiKeyType":"ADMIN","address": address.to_checksum(),"signature": sig,"token": t})),
        )
        .await;
    assert_eq!(s, 403);
    let (_, v) = p.call("GET", "/api/v1/wallets", &p.org, None).await;
    assert_eq!(v["data"][0]["address"], address.to_checksum());
    assert_eq!(
        p.call(
            "DELETE",
            &format!("/api/v1/wallets/{}", address.to_lower_hex()),
            &p.org,
            None
        )
        .await
        .0,
        200
    );
}

/// A second workspace `team-b`, and objects of the default workspace for the routes with an id
/// to name: a provider key `a-key`, a virtual key `a-vk`, an INFERENCE key and a wallet.
struct Named {
    pk_id: String,
    vk_id: String,
    key_id: String,
    wallet: String,
}

impl Named {
    async fn make(p: &P) -> Named {
        p.state
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
        let (s, pk) = p
            .call(
                "POST",
                "/api/v1/provider_keys",
                &p.org,
                Some(json!({"name":"a-key","modelHub":"openai","apiKey":"sk-a-0000000000000"})),
            )
            .await;
        assert_eq!(s, 201);
        let (s, vk) = p
            .call(
                "POST",
                "/api/v1/virtual_keys",
                &p.org,
                Some(json!({"name":"a-vk","slug":"a-vk","providerKey":"a-key"})),
            )
            .await;
        assert_eq!(s, 201);
        let (key_id, _) = p
            .create(&p.org, json!({"apiKeyType":"INFERENCE","description":"a"}))
            .await;
        let wallet = Address::from_private_key(&[9; 32]).unwrap().to_lower_hex();
        let (s, _) = p
            .call("POST", "/api/v1/wallets", &p.org, Some(json!({"address": wallet})))
            .await;
        assert_eq!(s, 201);
        Named {
            pk_id: pk["data"]["id"].as_str().unwrap().to_string(),
            vk_id: vk["data"]["id"].as_str().unwrap().to_string(),
            key_id,
            wallet,
        }
    }

    /// The ways a route's path may name its object: name and id, slug and id, …
    fn ids_for(&self, route: &str) -> Vec<String> {
        if route.contains("{name}") {
            vec!["a-key".into(), self.pk_id.clone()]
        } else if route.contains("{slug}") {
            vec!["a-vk".into(), self.vk_id.clone()]
        } else if route.contains("{address}") {
            vec![self.wallet.clone()]
        } else if route.starts_with("/api/v1/workspaces") {
            vec!["default".into()]
        } else if route.starts_with("/v1/api-keys") {
            vec![self.pk_id.clone()]
        } else {
            vec![self.key_id.clone()]
        }
    }
}

/// `route` with its capture filled with `id` (a pass-through capture with `files/file-abc`).
fn fill(route: &str, id: &str) -> String {
    route
        .replace("{name}", id)
        .replace("{slug}", id)
        .replace("{address}", id)
        .replace("{id}", id)
        .replace("{*path}", "files/file-abc")
}

#[tokio::test]
async fn every_route_with_an_id_hides_other_workspaces() {
    let p = start(settings()).await;
    let named = Named::make(&p).await;
    let ak_id = named.key_id.clone();
    // A workspace admin of team-b.
    let (_, b) = p
        .create(
            &p.org,
            json!({"apiKeyType":"ADMIN","description":"b","workspace":"team-b"}),
        )
        .await;
    let table = keygate_api::routes(p.state.clone());
    let mut checked = 0;
    for spec in table.specs() {
        // UI pages (sessions, HTML) have their own isolation tests.
        if !spec.path.contains('{')
            || spec.path.contains("{*")
            || spec.role == Role::Public
            || spec.path.starts_with("/ui")
        {
            continue;
        }
        for id in named.ids_for(spec.path) {
            let path = fill(spec.path, &id);
            // A body each route accepts, so only the id can be what is refused.
            let body = match (spec.method.as_str(), spec.path) {
                ("PATCH", "/api/v1/provider_keys/{name}") => Some(json!({"private": true})),
                ("POST", "/api/v1/provider_keys/{name}/rename") => Some(json!({"newName": "renamed"})),
                ("PATCH", "/api/v1/virtual_keys/{slug}") => Some(json!({"note": "x"})),
                ("POST", "/api/v1/api_keys/{id}/rotate") => Some(json!({})),
                ("PATCH" | "PUT", _) => Some(json!({"name": "renamed"})),
                _ => None,
            };
            let (s, v) = p.call(spec.method.as_str(), &path, &b, body).await;
            assert_eq!(s, 404, "{} {path} from another workspace: {v}", spec.method);
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked}");
    // Id-in-body and id-in-query routes too.
    assert_eq!(
        p.call(
            "PATCH",
            "/api/v1/api_keys",
            &b,
            Some(json!({"id": ak_id, "description": "x"}))
        )
        .await
        .0,
        404
    );
    assert_eq!(
        p.call("DELETE", &format!("/api/v1/api_keys?id={ak_id}"), &b, None)
            .await
            .0,
        404
    );
    // And the objects are untouched.
    assert_eq!(p.call("GET", "/api/v1/provider_keys/a-key", &p.org, None).await.0, 200);
    assert_eq!(
        p.call("GET", &format!("/api/v1/api_keys/{ak_id}"), &p.org, None)
            .await
            .0,
        200
    );
    // The org admin reaches team-b through the header.
    let (s, v) = p
        .call_h(
            "GET",
            "/api/v1/api_keys",
            &p.org,
            None,
            &[("x-keygate-workspace", "team-b")],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn workspaces_lifecycle() {
    let p = start(settings()).await;
    let (s, v) = p
        .call(
            "POST",
            "/api/v1/workspaces",
            &p.org,
            Some(json!({"id":"research","name":"Research"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = p
        .call(
            "POST",
            "/api/v1/workspaces",
            &p.org,
            Some(json!({"id":"research","name":"Again"})),
        )
        .await;
    assert_eq!(s, 409);
    let (_, ws_admin) = p
        .create(
            &p.org,
            json!({"apiKeyType":"ADMIN","description":"r","workspace":"research"}),
        )
        .await;
    let (_, v) = p.call("GET", "/api/v1/workspaces", &ws_admin, None).await;
    assert_eq!(
        v["data"].as_array().unwrap().len(),
        1,
        "a workspace key sees only its own"
    );
    assert_eq!(
        p.call("POST", "/api/v1/workspaces", &ws_admin, Some(json!({"name":"x"})))
            .await
            .0,
        403
    );
    let (_, v) = p.call("GET", "/api/v1/workspaces", &p.org, None).await;
    assert_eq!(v["total"], 2);
    let (s, v) = p
        .call(
            "PATCH",
            "/api/v1/workspaces/research",
            &p.org,
            Some(json!({"name":"R&D"})),
        )
        .await;
    assert_eq!((s, &v["data"]["name"]), (200, &json!("R&D")));
    assert_eq!(
        p.call("DELETE", "/api/v1/workspaces/research", &p.org, None).await.0,
        409,
        "not empty"
    );
    let (_, v) = p
        .call_h(
            "GET",
            "/api/v1/api_keys",
            &p.org,
            None,
            &[("x-keygate-workspace", "research")],
        )
        .await;
    let id = v["data"][0]["id"].as_str().unwrap().to_string();
    p.call_h(
        "DELETE",
        &format!("/api/v1/api_keys?id={id}"),
        &p.org,
        None,
        &[("x-keygate-workspace", "research")],
    )
    .await;
    assert_eq!(
        p.call("DELETE", "/api/v1/workspaces/research", &p.org, None).await.0,
        200
    );
    assert_eq!(
        p.call("DELETE", "/api/v1/workspaces/default", &p.org, None).await.0,
        409
    );
}

async fn audit_total(p: &P) -> i64 {
    let mut total = 0;
    let (list, _) = p
        .state
        .store
        .list_workspaces(keygate_store::Page { page: 1, limit: 500 })
        .await
        .unwrap();
    for ws in list {
        let (_, n) = p
            .state
            .store
            .list_audit(
                &ws.id,
                &keygate_store::AuditFilter::default(),
                keygate_store::Page { page: 1, limit: 1 },
            )
            .await
            .unwrap();
        total += n;
    }
    total
}

#[tokio::test]
async fn every_mutating_route_writes_exactly_one_audit_event() {
    let p = start(settings()).await;
    let mut covered: Vec<(String, String)> = Vec::new();
    let key = [3u8; 32];
    let address = Address::from_private_key(&key).unwrap().to_lower_hex();
    // (method, route as declared, concrete path, body)
    let steps: Vec<(&str, &str, String, Option<Value>)> = vec![
        (
            "POST",
            "/api/v1/workspaces",
            "/api/v1/workspaces".into(),
            Some(json!({"id":"audit-ws","name":"A"})),
        ),
        (
            "PATCH",
            "/api/v1/workspaces/{id}",
            "/api/v1/workspaces/audit-ws".into(),
            Some(json!({"name":"B"})),
        ),
        (
            "DELETE",
            "/api/v1/workspaces/{id}",
            "/api/v1/workspaces/audit-ws".into(),
            None,
        ),
        (
            "POST",
            "/api/v1/provider_keys",
            "/api/v1/provider_keys".into(),
            Some(json!({"name":"a","modelHub":"openai","apiKey":"sk-audit-000000000000"})),
        ),
        (
            "PATCH",
            "/api/v1/provider_keys/{name}",
            "/api/v1/provider_keys/a".into(),
            Some(json!({"private":true})),
        ),
        (
            "POST",
            "/api/v1/provider_keys/{name}/rename",
            "/api/v1/provider_keys/a/rename".into(),
            Some(json!({"newName":"b"})),
        ),
        (
            "POST",
            "/api/v1/virtual_keys",
            "/api/v1/virtual_keys".into(),
            Some(json!({"name":"v","slug":"v","providerKey":"b"})),
        ),
        (
            "PATCH",
            "/api/v1/virtual_keys/{slug}",
            "/api/v1/virtual_keys/v".into(),
            Some(json!({"note":"n"})),
        ),
        (
            "DELETE",
            "/api/v1/virtual_keys/{slug}",
            "/api/v1/virtual_keys/v".into(),
            None,
        ),
        (
            "DELETE",
            "/api/v1/provider_keys/{name}",
            "/api/v1/provider_keys/b".into(),
            None,
        ),
        (
            "POST",
            "/v1/api-keys",
            "/v1/api-keys".into(),
            Some(
                json!({"name":"vj","hub":"openai","rate_limit_per_interval":60,"rate_limit_interval":10,"value":"sk-vijil-00000000000","url":null}),
            ),
        ),
        (
            "POST",
            "/v1/virtual-keys",
            "/v1/virtual-keys".into(),
            Some(json!({"name":"pk","provider":"openai","key":"sk-portkey-000000000","slug":"pk-audit"})),
        ),
        (
            "PUT",
            "/v1/virtual-keys/{slug}",
            "/v1/virtual-keys/pk-audit".into(),
            Some(json!({"name":"pk2","key":"sk-portkey-111111111","usage_limits":{"credit_limit":5}})),
        ),
        (
            "DELETE",
            "/v1/virtual-keys/{slug}",
            "/v1/virtual-keys/pk-audit".into(),
            None,
        ),
        (
            "POST",
            "/api/v1/wallets",
            "/api/v1/wallets".into(),
            Some(json!({"address": address})),
        ),
        (
            "POST",
            "/api/v1/api_keys",
            "/api/v1/api_keys".into(),
            Some(json!({"apiKeyType":"INFERENCE","description":"audited"})),
        ),
    ];
    for (method, route, path, body) in steps {
        let before = audit_total(&p).await;
        let (s, v) = p.call(method, &path, &p.org, body).await;
        assert!(s < 300, "{method} {path}: {s} {v}");
        assert_eq!(
            audit_total(&p).await - before,
            1,
            "{method} {route} must write exactly one audit event"
        );
        covered.push((method.into(), route.into()));
    }
    // The Vijil key by id: PUT (modify and rename at once) and DELETE.
    let (_, list) = p.call("GET", "/v1/api-keys", &p.org, None).await;
    let vj = list[0]["id"].as_str().unwrap().to_string();
    for (method, body) in [
        (
            "PUT",
            Some(json!({"name":"vj2","hub":"openai","value":"sk-vijil-22222222222"})),
        ),
        ("DELETE", None),
    ] {
        let before = audit_total(&p).await;
        let (s, v) = p.call(method, &format!("/v1/api-keys/{vj}"), &p.org, body).await;
        assert!(s < 300, "{v}");
        assert_eq!(audit_total(&p).await - before, 1, "{method} /v1/api-keys/{{id}}");
        covered.push((method.into(), "/v1/api-keys/{id}".into()));
    }
    // Platform keys by id and in the body.
    let (_, keys) = p.call("GET", "/api/v1/api_keys", &p.org, None).await;
    let id = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["description"] == "audited")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (method, route, path, body) in [
        (
            "PATCH",
            "/api/v1/api_keys",
            "/api/v1/api_keys".to_string(),
            Some(json!({"id": id, "description": "x"})),
        ),
        (
            "POST",
            "/api/v1/api_keys/{id}/rotate",
            format!("/api/v1/api_keys/{id}/rotate"),
            Some(json!({})),
        ),
        ("DELETE", "/api/v1/api_keys", format!("/api/v1/api_keys?id={id}"), None),
        (
            "DELETE",
            "/api/v1/wallets/{address}",
            format!("/api/v1/wallets/{address}"),
            None,
        ),
    ] {
        let before = audit_total(&p).await;
        let (s, v) = p.call(method, &path, &p.org, body).await;
        assert!(s < 300, "{method} {path}: {v}");
        assert_eq!(audit_total(&p).await - before, 1, "{method} {route}");
        covered.push((method.into(), route.into()));
    }
    // Wallet sign-in creates a key: one event, in the wallet's workspace.
    p.call("POST", "/api/v1/wallets", &p.org, Some(json!({"address": address})))
        .await;
    let (_, t) = p.call("GET", "/api/v1/api_keys/generate_web3_key", "", None).await;
    let token = t["data"]["token"].as_str().unwrap().to_string();
    let sig = personal_sign(&key, token.as_bytes()).unwrap();
    let before = audit_total(&p).await;
    let (s, _) = p
        .call(
            "POST",
            "/api/v1/api_keys/generate_web3_key",
            "",
            Some(json!({"apiKeyType":"INFERENCE","address":address,"signature":sig,"token":token})),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(audit_total(&p).await - before, 1);
    covered.push(("POST".into(), "/api/v1/api_keys/generate_web3_key".into()));
    // Every mutating management route of the table was walked: a new one fails this test
    // until it is added here (and audited).
    let table = keygate_api::routes(p.state.clone());
    for spec in table.specs() {
        let mutating = matches!(spec.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE");
        let gateway = spec.role == Role::Inference;
        let ui = spec.path.starts_with("/ui");
        if mutating && !gateway && !ui {
            assert!(
                covered.iter().any(|(m, r)| m == spec.method.as_str() && r == spec.path),
                "{} {} is not covered by the audit test",
                spec.method,
                spec.path
            );
        }
    }
}

/// One credential of the route-role matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Cred {
    NoKey,
    Malformed,
    WrongChecksum,
    Unknown,
    Expired,
    RotatedOut,
    Inference,
    OtherWorkspaceAdmin,
    Admin,
}

/// The status docs/security.md promises for a route of `role` called with `cred`:
/// `Ok(n)` exactly `n`, `Err(())` "served": neither 401 nor 403 nor 5xx.
fn documented(role: Role, method: &str, path: &str, has_id: bool, cred: Cred) -> Result<u16, ()> {
    use Cred::*;
    // Routes only an organisation admin may call; a workspace admin gets 403 (404 for another
    // workspace's id, which it may not even see).
    let org_only = path.starts_with("/api/v1/workspaces") && method != "GET";
    match (role, cred) {
        (Role::Public, _) => Err(()),
        (_, NoKey | Malformed | WrongChecksum | Unknown | Expired | RotatedOut) => Ok(401),
        (Role::Admin, Inference) => Ok(403),
        (_, Inference) => Err(()),
        (Role::Admin, OtherWorkspaceAdmin) if has_id => Ok(404),
        (Role::Admin, OtherWorkspaceAdmin) if org_only => Ok(403),
        (_, OtherWorkspaceAdmin) => Err(()),
        (Role::Admin, Admin) if org_only => Ok(403),
        (_, Admin) => Err(()),
    }
}

#[tokio::test]
async fn every_route_answers_each_credential_as_documented() {
    let p = start(settings()).await;
    let named = Named::make(&p).await;

    // The nine credentials.
    let (_, admin) = p.create(&p.org, json!({"apiKeyType":"ADMIN","description":"a"})).await;
    let (_, inference) = p
        .create(&p.org, json!({"apiKeyType":"INFERENCE","description":"i"}))
        .await;
    let (_, other) = p
        .create(
            &p.org,
            json!({"apiKeyType":"ADMIN","description":"b","workspace":"team-b"}),
        )
        .await;
    let (_, expired) = p
        .create(
            &p.org,
            json!({"apiKeyType":"ADMIN","description":"e","expiresAt":"2001-01-01"}),
        )
        .await;
    let (rot_id, rotated_out) = p.create(&p.org, json!({"apiKeyType":"ADMIN","description":"r"})).await;
    let (s, _) = p
        .call("POST", &format!("/api/v1/api_keys/{rot_id}/rotate"), &p.org, None)
        .await;
    assert_eq!(s, 200);
    let unknown = keygate_types::PlatformSecret::generate(PlatformKeyType::Admin, &mut rand::rngs::OsRng)
        .expose()
        .to_string();
    let mut wrong_checksum = admin.clone();
    let last = wrong_checksum.pop().unwrap();
    wrong_checksum.push(if last == 'a' { 'b' } else { 'a' });
    let creds: [(Cred, &str); 9] = [
        (Cred::NoKey, ""),
        (Cred::Malformed, "kg_adm_short"),
        (Cred::WrongChecksum, &wrong_checksum),
        (Cred::Unknown, &unknown),
        (Cred::Expired, &expired),
        (Cred::RotatedOut, &rotated_out),
        (Cred::Inference, &inference),
        (Cred::OtherWorkspaceAdmin, &other),
        // Last on each route: the one call that may change what the route names.
        (Cred::Admin, &admin),
    ];

    let table = keygate_api::routes(p.state.clone());
    let mut specs: Vec<_> = table
        .specs()
        .iter()
        .filter(|s| s.role != Role::Session && !s.path.starts_with("/ui"))
        .cloned()
        .collect();
    assert!(specs.len() >= 40, "{}", specs.len());
    // Deletions last, so every other route still finds what it names.
    specs.sort_by_key(|s| s.method == axum::http::Method::DELETE);
    let mut failures = Vec::new();
    let mut calls = 0;
    for spec in &specs {
        let has_id = spec.path.contains('{') && !spec.path.contains("{*");
        // The first way each route names its object (the isolation test covers the others).
        let path = fill(spec.path, &named.ids_for(spec.path)[0]);
        // A body each route accepts, so only the credential can be what is refused.
        let body = match (spec.method.as_str(), spec.path) {
            ("PATCH", "/api/v1/provider_keys/{name}") => Some(json!({"private": true})),
            ("POST", "/api/v1/provider_keys/{name}/rename") => Some(json!({"newName": "renamed"})),
            ("PATCH", "/api/v1/virtual_keys/{slug}") => Some(json!({"note": "x"})),
            ("POST", "/api/v1/workspaces") => Some(json!({"id": "made-here", "name": "Made"})),
            ("PATCH" | "PUT", p) if p.contains('{') && !p.contains("{*") => Some(json!({"name": "renamed"})),
            ("GET" | "DELETE", _) => None,
            _ => Some(json!({})),
        };
        for (cred, secret) in &creds {
            let mut req = p.http.request(spec.method.clone(), format!("{}{path}", p.url));
            if !secret.is_empty() {
                req = req.bearer_auth(secret);
            }
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            calls += 1;
            let want = documented(spec.role, spec.method.as_str(), spec.path, has_id, *cred);
            let ok = match want {
                Ok(n) => status == n,
                Err(()) => status != 401 && status != 403 && status < 500,
            };
            eprintln!(
                "{:>6} {:<45} {:<20} -> {status}",
                spec.method,
                spec.path,
                format!("{cred:?}")
            );
            if !ok {
                failures.push(format!(
                    "{} {} as {cred:?}: {status}, documented {want:?}: {}",
                    spec.method,
                    spec.path,
                    body.chars().take(160).collect::<String>()
                ));
            }
            if status == 401 {
                assert!(body.contains("invalid_api_key") || body.contains("\"error\""), "{body}");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {calls} calls:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(calls >= 360, "{calls}");
}
