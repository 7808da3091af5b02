//! Economy, the player's side: wallet and history, gifts, bonus codes, the store. Every movement
//! is a ledger transfer chain, idempotent by the client's id.

use aide::axum::routing::{get_with, post_with};
use aide::axum::ApiRouter;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use volley_platform::economy::{FraudRules, Origin};
use volley_proto::api::{
    ChainResult, Gift, PurchaseRequest, RedeemRequest, Redemption, StoreItem, TransferPage,
    WalletView,
};

use super::error::Error;
use super::extract::{Body, ClientAddr, Player, Query};
use super::social::HistoryQuery;
use super::{doc, AppState};

/// Header in which the SDK reports the player's device, for fraud checks.
const DEVICE_HEADER: &str = "x-volley-device";

pub(super) fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/wallet",
            get_with(wallet, doc("Balances and unique items")),
        )
        .api_route(
            "/v1/wallet/history",
            get_with(
                wallet_history,
                doc("Transfers touching the caller, newest first (query: before, limit <= 100)"),
            ),
        )
        .api_route(
            "/v1/wallet/gift",
            post_with(
                wallet_gift,
                doc(
                    "Give currency or a unique item to another player (idempotent by id; \
                     fraud-scored by address and x-volley-device)",
                ),
            ),
        )
        .api_route(
            "/v1/bonus/redeem",
            post_with(
                redeem,
                doc("Redeem a bonus code (idempotent by id; may be held for review)"),
            ),
        )
        .api_route("/v1/store", get_with(store, doc("The store catalogue")))
        .api_route(
            "/v1/store/purchase",
            post_with(
                purchase,
                doc("Buy a catalogue entry: paid and delivered in one chain (idempotent by id)"),
            ),
        )
}

/// The fraud origin of a request: the peer's address and the device the SDK reports in
/// `x-volley-device` (ignored unless 1-128 visible ASCII characters).
fn origin(peer: std::net::SocketAddr, headers: &HeaderMap) -> Origin {
    let device = headers
        .get(DEVICE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|d| (1..=128).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_graphic()));
    Origin::new(Some(peer.ip()), device)
}

async fn wallet(
    State(api): State<AppState>,
    Player(me): Player,
) -> Result<Json<WalletView>, Error> {
    Ok(Json(WalletView {
        balances: api.platform.balances(me).await?,
        items: api.platform.items_of(me).await?,
    }))
}

async fn wallet_history(
    State(api): State<AppState>,
    Player(me): Player,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<TransferPage>, Error> {
    let page = api
        .platform
        .ledger_page(me, q.before, q.limit.unwrap_or(50))
        .await?;
    Ok(Json(page))
}

async fn wallet_gift(
    State(api): State<AppState>,
    Player(me): Player,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Body(gift): Body<Gift>,
) -> Result<Json<ChainResult>, Error> {
    Ok(Json(
        api.platform
            .gift(me, &gift, &origin(peer, &headers))
            .await?,
    ))
}

async fn redeem(
    State(api): State<AppState>,
    Player(me): Player,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Body(req): Body<RedeemRequest>,
) -> Result<Json<Redemption>, Error> {
    let rules = FraudRules::default();
    Ok(Json(
        api.platform
            .redeem(me, &req.code, &req.id, &origin(peer, &headers), &rules)
            .await?,
    ))
}

async fn store(State(api): State<AppState>, _: Player) -> Result<Json<Vec<StoreItem>>, Error> {
    Ok(Json(api.platform.store_items().await?))
}

async fn purchase(
    State(api): State<AppState>,
    Player(me): Player,
    Body(req): Body<PurchaseRequest>,
) -> Result<Json<ChainResult>, Error> {
    Ok(Json(api.platform.purchase(me, &req.sku, &req.id).await?))
}
