//! Wallets registered for sign-in: `POST /api/v1/wallets {"address", "allowAdmin"?}` ties an
//! Ethereum address to the caller's workspace; keys minted by that wallet land there.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use keygate_store::{StoreError, WalletRow};
use keygate_types::timefmt::{format_ms, now_ms};
use keygate_vault::wallet::Address;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, JsonBody};
use crate::openapi::doc::{ErrorBody, List, Saved, Success};
use crate::state::AppState;

/// Body of `POST /api/v1/wallets`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateWallet {
    /// `0x` and 40 hex digits; a mixed-case address must carry a valid EIP-55 checksum.
    #[schema(pattern = "^0x[0-9a-fA-F]{40}$")]
    pub address: String,
    /// Whether the wallet may mint ADMIN keys (default: INFERENCE only).
    #[serde(default)]
    pub allow_admin: bool,
}

/// A wallet as [`view`] shows it (for the document).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct WalletView {
    /// EIP-55 checksummed.
    pub address: String,
    pub allow_admin: bool,
    pub workspace: String,
    pub created_at: String,
}

fn view(w: &WalletRow) -> Value {
    let checksum = Address::parse(&w.address)
        .map(|a| a.to_checksum())
        .unwrap_or_else(|_| w.address.clone());
    json!({"address": checksum, "allowAdmin": w.allow_admin, "workspace": w.workspace, "createdAt": format_ms(w.created_at)})
}

fn parse(address: &str) -> ApiResult<Address> {
    Address::parse(address.trim()).map_err(|_| {
        ApiError::bad_request("address must be an Ethereum address: 0x and 40 hex digits (a mixed-case one must carry a valid EIP-55 checksum)")
    })
}

/// Register a wallet for sign-in in the caller's workspace.
#[utoipa::path(post, path = "/api/v1/wallets", tag = "wallets", operation_id = "createWallet",
    request_body = CreateWallet,
    responses(
        (status = 201, description = "Registered", body = Saved<WalletView>, links(
            ("DeleteWallet" = (operation_id = "deleteWallet", parameters(("address" = "$response.body#/data/address")))),
        )),
        (status = 400, description = "Invalid body, or not an Ethereum address", body = ErrorBody),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
        (status = 409, description = "The wallet is already registered", body = ErrorBody),
        (status = 413, description = "The body is over the size limit", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    JsonBody(body): JsonBody<CreateWallet>,
) -> ApiResult<impl IntoResponse> {
    let address = parse(&body.address)?;
    if body.allow_admin && !ctx.principal.is_admin() {
        return Err(ApiError::forbidden(
            "only an ADMIN key may let a wallet mint ADMIN keys",
        ));
    }
    let row = WalletRow {
        address: address.to_lower_hex(),
        workspace: ctx.workspace.clone(),
        allow_admin: body.allow_admin,
        created_at: now_ms(),
        created_by: Some(ctx.principal.id.clone()),
    };
    let audit = ctx.audit(
        "wallet.create",
        "wallet",
        Some(&row.address),
        json!({"allowAdmin": row.allow_admin}),
    );
    let row = state.store.create_wallet(&row, Some(&audit)).await?;
    Ok((StatusCode::CREATED, Json(json!({"success": true, "data": view(&row)}))))
}

/// List the wallets of the caller's workspace.
#[utoipa::path(get, path = "/api/v1/wallets", tag = "wallets", operation_id = "listWallets",
    responses(
        (status = 200, description = "Every wallet of the workspace", body = List<WalletView>),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    let rows = state.store.list_wallets(&ctx.workspace).await?;
    Ok(Json(
        json!({"object": "list", "data": rows.iter().map(view).collect::<Vec<_>>()}),
    ))
}

/// Unregister a wallet.
#[utoipa::path(delete, path = "/api/v1/wallets/{address}", tag = "wallets", operation_id = "deleteWallet",
    params(("address" = String, Path, description = "The wallet's address, any case")),
    responses(
        (status = 200, description = "Unregistered", body = Success),
        (status = 400, description = "Not an Ethereum address", body = ErrorBody),
        (status = 401, description = "Missing or invalid platform key", body = ErrorBody),
        (status = 403, description = "Not an ADMIN key, or a refused client address", body = ErrorBody),
        (status = 404, description = "No such wallet in this workspace", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn delete(State(state): State<AppState>, ctx: Ctx, Path(address): Path<String>) -> ApiResult<Json<Value>> {
    let address = parse(&address)?.to_lower_hex();
    let audit = ctx.audit("wallet.delete", "wallet", Some(&address), json!({}));
    state
        .store
        .delete_wallet(&ctx.workspace, &address, Some(&audit))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("no such wallet in this workspace"),
            other => other.into(),
        })?;
    Ok(Json(json!({"success": true})))
}
