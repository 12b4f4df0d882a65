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

use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, JsonBody};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateWallet {
    pub address: String,
    /// Whether the wallet may mint ADMIN keys (default: INFERENCE only).
    #[serde(default)]
    pub allow_admin: bool,
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

pub async fn list(State(state): State<AppState>, ctx: Ctx) -> ApiResult<Json<Value>> {
    let rows = state.store.list_wallets(&ctx.workspace).await?;
    Ok(Json(
        json!({"object": "list", "data": rows.iter().map(view).collect::<Vec<_>>()}),
    ))
}

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
