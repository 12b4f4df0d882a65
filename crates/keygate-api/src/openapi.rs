//! The OpenAPI document of the native API, served at `/api/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{audit, provider_keys, usage, virtual_keys};

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
        usage::summary,
        usage::records,
        audit::list,
    ),
    components(schemas(
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
    )),
    modifiers(&Security),
)]
pub struct ApiDoc;

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
