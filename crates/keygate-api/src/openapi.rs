//! The OpenAPI document of the native API, served at `/api/v1/openapi.json`.
//!
//! What must stay true: every documented path is routed (`every_route_declares_a_role_and_guards_it`)
//! and every answer of a documented operation matches its documented status, content type and
//! schema (`tests/python/test_schemathesis.py` checks that on the real binary). Responses built
//! with `json!` are described by the documentation-only types of [`doc`] and of each module.

use axum::Json;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{api_keys, audit, provider_keys, usage, virtual_keys, wallets, workspaces};

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A keygate platform key: kg_adm_… (ADMIN) or kg_inf_… (INFERENCE)"))
                    .build(),
            ),
        );
    }
}

/// Shapes shared by the whole management API, for the document only.
pub mod doc {
    use utoipa::ToSchema;

    /// Every error: `{"error": {"code", "message", "param", "type"}}`.
    #[derive(ToSchema)]
    pub struct ErrorBody {
        pub error: ErrorDetail,
    }

    #[derive(ToSchema)]
    pub struct ErrorDetail {
        /// Machine-readable, e.g. `invalid_api_key`, `invalid_request`, `not_found`.
        pub code: String,
        /// Human-readable; never repeats a submitted value.
        pub message: String,
        /// Always `null`.
        #[schema(required = true)]
        pub param: Option<String>,
        /// The OpenAI error type, e.g. `invalid_request_error`, `authentication_error`.
        #[schema(rename = "type")]
        pub kind: String,
    }

    /// `{"data": …}`.
    #[derive(ToSchema)]
    pub struct Data<T> {
        pub data: T,
    }

    /// `{"success": true, "data": …}`: the answer of a change.
    #[derive(ToSchema)]
    pub struct Saved<T> {
        pub success: bool,
        pub data: T,
    }

    /// `{"success": true}`: the answer of a deletion.
    #[derive(ToSchema)]
    pub struct Success {
        pub success: bool,
    }

    /// The `object` of a list.
    #[derive(ToSchema)]
    #[schema(rename_all = "lowercase")]
    pub enum ListObject {
        List,
    }

    /// A page of a native list: `{"object": "list", "data", "page", "limit", "total"}`.
    #[derive(ToSchema)]
    pub struct Paged<T> {
        pub object: ListObject,
        pub data: Vec<T>,
        /// 1-based.
        pub page: u32,
        pub limit: u32,
        /// Items in all pages.
        pub total: i64,
    }

    /// A whole list: `{"object": "list", "data"}`.
    #[derive(ToSchema)]
    pub struct List<T> {
        pub object: ListObject,
        pub data: Vec<T>,
    }

    /// One window or budget read live (`limits::states_view`).
    #[derive(ToSchema)]
    pub struct LimitState {
        /// `api_key`, `virtual_key`, `model` or `provider_key`.
        pub scope: String,
        /// `RPM`, `TPD`, `BUDGET`…
        #[schema(rename = "type")]
        pub kind: String,
        pub measure: Measure,
        /// USD as a decimal number for `usd`, else a count.
        pub limit: f64,
        pub used: f64,
        pub remaining: f64,
        /// When the count next falls; `null` when nothing is counted or it never resets.
        #[schema(required = true)]
        pub reset: Option<String>,
    }

    /// What a limit counts.
    #[derive(ToSchema)]
    #[schema(rename_all = "lowercase")]
    pub enum Measure {
        Requests,
        Tokens,
        Usd,
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "keygate", description = "Management API of keygate, the LLM API-key vault and gateway."),
    paths(
        provider_keys::list_handler,
        provider_keys::create_handler,
        provider_keys::get_handler,
        provider_keys::update_handler,
        provider_keys::rename_handler,
        provider_keys::delete_handler,
        virtual_keys::list_handler,
        virtual_keys::create_handler,
        virtual_keys::get_handler,
        virtual_keys::update_handler,
        virtual_keys::delete_handler,
        virtual_keys::limits_handler,
        api_keys::list,
        api_keys::create,
        api_keys::update,
        api_keys::delete,
        api_keys::retrieve,
        api_keys::rotate,
        api_keys::rate_limits,
        api_keys::rate_limit_log,
        api_keys::web3_token,
        api_keys::web3_create,
        wallets::list,
        wallets::create,
        wallets::delete,
        workspaces::list,
        workspaces::create,
        workspaces::get,
        workspaces::rename,
        workspaces::delete,
        usage::summary,
        usage::records,
        audit::list,
    ),
    components(schemas(
        doc::ErrorBody,
        provider_keys::CreateProviderKey,
        provider_keys::UpdateProviderKey,
        provider_keys::RenameProviderKey,
        provider_keys::ProviderKeyView,
        virtual_keys::CreateVirtualKey,
        virtual_keys::UpdateVirtualKey,
        virtual_keys::TargetInput,
        virtual_keys::BudgetInput,
        virtual_keys::RateLimits,
        virtual_keys::ModelLimitInput,
        virtual_keys::Strategy,
        virtual_keys::Period,
        usage::UsageGroupBy,
    )),
    modifiers(&Security, &OptionalBodies),
)]
pub struct ApiDoc;

/// `POST /api/v1/api_keys/{id}/rotate` takes an empty body as well as a JSON one.
struct OptionalBodies;

impl Modify for OptionalBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let rotate = openapi
            .paths
            .paths
            .get_mut("/api/v1/api_keys/{id}/rotate")
            .and_then(|item| item.post.as_mut())
            .and_then(|op| op.request_body.as_mut());
        if let Some(body) = rotate {
            body.required = Some(utoipa::openapi::Required::False);
        }
    }
}

/// The document as JSON. utoipa 5 writes a link's fields in snake case (`operation_id`);
/// OpenAPI spells them `operationId`, `operationRef` and `requestBody`, so they are renamed here.
pub fn document_json() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| Value::Object(Default::default()));
    let operations = doc
        .get_mut("paths")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for op in operations {
        let links = op
            .get_mut("responses")
            .and_then(Value::as_object_mut)
            .into_iter()
            .flat_map(|responses| responses.values_mut())
            .filter_map(|r| r.get_mut("links").and_then(Value::as_object_mut))
            .flat_map(|links| links.values_mut())
            .filter_map(Value::as_object_mut);
        for link in links {
            for (from, to) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(v) = link.remove(from) {
                    link.insert(to.to_string(), v);
                }
            }
        }
    }
    doc
}

pub async fn document() -> Json<Value> {
    Json(document_json())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                out.push((method.to_uppercase(), path.clone(), op));
            }
        }
        out
    }

    #[test]
    fn operation_ids_are_unique_and_links_name_them() {
        let doc = document_json();
        let ops = operations(&doc);
        let ids: BTreeSet<&str> = ops
            .iter()
            .map(|(_, _, op)| op["operationId"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), ops.len(), "an operationId is repeated");
        let mut links = 0;
        for (method, path, op) in &ops {
            for (status, resp) in op["responses"].as_object().unwrap() {
                for (name, link) in resp["links"].as_object().into_iter().flatten() {
                    links += 1;
                    let target = link["operationId"].as_str();
                    assert!(
                        target.is_some_and(|t| ids.contains(t)),
                        "{method} {path} {status}: link {name} names no operation: {link}"
                    );
                    assert!(link.get("operation_id").is_none(), "{link}");
                }
            }
        }
        assert!(links >= 10, "{links} links");
    }

    #[test]
    fn every_operation_documents_its_errors_as_json() {
        let doc = document_json();
        for (method, path, op) in operations(&doc) {
            let responses = op["responses"].as_object().unwrap();
            let secured = op.get("security").is_some();
            let has_body = op.get("requestBody").is_some();
            if secured {
                assert!(responses.contains_key("401"), "{method} {path}: no 401");
                assert!(responses.contains_key("403"), "{method} {path}: no 403");
            }
            if has_body {
                assert!(responses.contains_key("400"), "{method} {path}: no 400");
                assert!(responses.contains_key("413"), "{method} {path}: no 413");
            }
            for (status, resp) in responses {
                assert!(
                    resp["content"]["application/json"]["schema"].is_object(),
                    "{method} {path} {status}: no JSON schema"
                );
                if status.starts_with('4') {
                    assert_eq!(
                        resp["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document_json();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling reference to {name}");
        }
    }
}
