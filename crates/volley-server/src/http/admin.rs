//! Calls from the game's own servers, with the server key: bans and deletions, grants and
//! minted items, the store catalogue, bonus codes, held transfers and the ledger audit.

use aide::axum::routing::{delete_with, get_with, post_with};
use aide::axum::ApiRouter;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use schemars::JsonSchema;
use serde::Deserialize;
use volley_platform::economy::{BonusCode, StoreItem};
use volley_proto::api::{ChainResult, GrantRequest, HeldPage, MintItemRequest, MintedItem};

use super::error::Error;
use super::extract::{Body, Path, Query, ServerKey};
use super::{doc, AppState, NoContent};

/// Longest `kind` a grant may be labelled with.
const GRANT_KIND_CHARS_MAX: usize = 32;

pub(super) fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/admin/accounts/{id}/ban",
            post_with(ban, doc("Ban an account; its sessions end at once")),
        )
        .api_route(
            "/v1/admin/accounts/{id}/unban",
            post_with(unban, doc("Lift a ban")),
        )
        .api_route(
            "/v1/admin/accounts/{id}",
            delete_with(delete_account, doc("Delete an account")),
        )
        .api_route(
            "/v1/admin/store",
            post_with(put_store_item, doc("Add or replace a catalogue entry")),
        )
        .api_route(
            "/v1/admin/grant",
            post_with(
                grant,
                doc("Grant currency from the mint, e.g. a match reward (idempotent by id)"),
            ),
        )
        .api_route(
            "/v1/admin/items",
            post_with(
                mint_item,
                doc("Mint a unique item for a player (idempotent by id)"),
            ),
        )
        .api_route(
            "/v1/admin/bonus-codes",
            post_with(create_code, doc("Create a bonus code and fund its uses")),
        )
        .api_route(
            "/v1/admin/held",
            get_with(
                held,
                doc("Transfers held for review, oldest first (query: after, limit <= 100)"),
            ),
        )
        .api_route(
            "/v1/admin/held/{id}/approve",
            post_with(approve, doc("Apply a held transfer")),
        )
        .api_route(
            "/v1/admin/held/{id}/reject",
            post_with(reject, doc("Reject a held transfer (nothing moves)")),
        )
        .api_route(
            "/v1/admin/audit",
            get_with(
                audit,
                doc("Check every ledger invariant over the whole database"),
            ),
        )
}

async fn ban(
    State(api): State<AppState>,
    _: ServerKey,
    Path(id): Path<u64>,
) -> Result<NoContent, Error> {
    api.platform.set_banned(id, true).await?;
    Ok(NoContent)
}

async fn unban(
    State(api): State<AppState>,
    _: ServerKey,
    Path(id): Path<u64>,
) -> Result<NoContent, Error> {
    api.platform.set_banned(id, false).await?;
    Ok(NoContent)
}

async fn delete_account(
    State(api): State<AppState>,
    _: ServerKey,
    Path(id): Path<u64>,
) -> Result<NoContent, Error> {
    api.platform.delete_account(id).await?;
    Ok(NoContent)
}

async fn put_store_item(
    State(api): State<AppState>,
    _: ServerKey,
    Body(item): Body<StoreItem>,
) -> Result<NoContent, Error> {
    api.platform.put_store_item(&item).await?;
    Ok(NoContent)
}

async fn grant(
    State(api): State<AppState>,
    _: ServerKey,
    Body(req): Body<GrantRequest>,
) -> Result<Json<ChainResult>, Error> {
    let kind = req.kind.unwrap_or_else(|| "grant".into());
    if kind.is_empty() || kind.chars().count() > GRANT_KIND_CHARS_MAX {
        return Err(Error::bad_request(format!(
            "kind must be 1-{GRANT_KIND_CHARS_MAX} characters"
        )));
    }
    Ok(Json(
        api.platform
            .grant(&req.id, req.player, &req.currency, req.amount, &kind)
            .await?,
    ))
}

async fn mint_item(
    State(api): State<AppState>,
    _: ServerKey,
    Body(req): Body<MintItemRequest>,
) -> Result<Json<MintedItem>, Error> {
    if !api.platform.is_active(req.player).await? {
        return Err(volley_platform::PlatformError::not_found("player").into());
    }
    let item = api
        .platform
        .mint_item("sys", &req.id, req.player, &req.item_type)
        .await?;
    Ok(Json(MintedItem { item_id: item }))
}

async fn create_code(
    State(api): State<AppState>,
    _: ServerKey,
    Body(req): Body<BonusCode>,
) -> Result<(StatusCode, NoContent), Error> {
    api.platform.create_bonus_code(&req).await?;
    Ok((StatusCode::CREATED, NoContent))
}

/// A page of held transfers.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct HeldQuery {
    /// Only transfers after this cursor (the `next_after` of the previous page).
    after: Option<String>,
    /// Page size (at most 100, default 50).
    limit: Option<usize>,
}

async fn held(
    State(api): State<AppState>,
    _: ServerKey,
    Query(q): Query<HeldQuery>,
) -> Result<Json<HeldPage>, Error> {
    Ok(Json(
        api.platform
            .held_page(q.after.as_deref(), q.limit.unwrap_or(50))
            .await?,
    ))
}

async fn approve(
    State(api): State<AppState>,
    _: ServerKey,
    Path(id): Path<String>,
) -> Result<Json<Option<ChainResult>>, Error> {
    Ok(Json(api.platform.review(&id, true).await?))
}

async fn reject(
    State(api): State<AppState>,
    _: ServerKey,
    Path(id): Path<String>,
) -> Result<NoContent, Error> {
    api.platform.review(&id, false).await?;
    Ok(NoContent)
}

async fn audit(
    State(api): State<AppState>,
    _: ServerKey,
) -> Result<Json<serde_json::Value>, Error> {
    let report = api.platform.audit().await?;
    serde_json::to_value(&report)
        .map(Json)
        .map_err(|e| Error::internal("audit report", e))
}
