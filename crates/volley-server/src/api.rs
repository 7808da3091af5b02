//! The platform half of the HTTP API: auth, account, friends, lobbies and parties, chat,
//! presence, matchmaking, the event WebSocket, server-to-server calls and the OpenAPI document.
//!
//! Every route is listed once in [`ROUTES`], which the OpenAPI document is built from; a test
//! checks that each listed route answers and each answering route is listed.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use volley_platform::accounts::AuthKind;
use volley_proto::api::{
    self, ChatMessage, ChatPage, CreateLobby, CustomLogin, DeviceLogin, EmailLogin, EmailRegister,
    Event, Friend, LinkRequest, LobbyInfo, MatchResult, MemberRequest, Presence, RatingInfo,
    RefreshRequest, SendChat, Session, TicketRequest, TicketStatus, UpdateLobby,
};

use crate::http::{authed, bad, bearer, parse, Api, Error};

/// Header carrying the studio's server key.
pub(crate) const SERVER_KEY_HEADER: &str = "x-volley-server-key";

/// One route: method, path, summary, whether it needs a session (`bearer`), the server key
/// (`server`) or nothing (`none`), request and response body type names.
pub(crate) struct RouteDoc {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    pub(crate) summary: &'static str,
    pub(crate) auth: &'static str,
    pub(crate) request: Option<&'static str>,
    pub(crate) response: Option<&'static str>,
}

macro_rules! r {
    ($m:literal, $p:literal, $s:literal, $a:literal, $req:expr, $resp:expr) => {
        RouteDoc {
            method: $m,
            path: $p,
            summary: $s,
            auth: $a,
            request: $req,
            response: $resp,
        }
    };
}

/// Every route of the node's HTTP API.
pub(crate) const ROUTES: &[RouteDoc] = &[
    r!("get", "/v1/health", "Liveness", "none", None, None),
    r!("get", "/metrics", "Prometheus metrics", "none", None, None),
    r!(
        "get",
        "/v1/openapi.json",
        "This document",
        "none",
        None,
        None
    ),
    r!(
        "post",
        "/v1/auth/device",
        "Log in (or sign up) with a device id",
        "none",
        Some("DeviceLogin"),
        Some("Session")
    ),
    r!(
        "post",
        "/v1/auth/email/register",
        "Sign up with email and password",
        "none",
        Some("EmailRegister"),
        Some("Session")
    ),
    r!(
        "post",
        "/v1/auth/email",
        "Log in with email and password",
        "none",
        Some("EmailLogin"),
        Some("Session")
    ),
    r!(
        "post",
        "/v1/auth/custom",
        "Log a studio's player in by its custom id",
        "server",
        Some("CustomLogin"),
        Some("Session")
    ),
    r!(
        "post",
        "/v1/auth/refresh",
        "Rotate a refresh token for a new session",
        "none",
        Some("RefreshRequest"),
        Some("Session")
    ),
    r!(
        "post",
        "/v1/auth/logout",
        "End this session and its refresh family",
        "bearer",
        Some("RefreshRequest"),
        None
    ),
    r!(
        "get",
        "/v1/account",
        "The caller's account",
        "bearer",
        None,
        Some("AccountInfo")
    ),
    r!(
        "patch",
        "/v1/account",
        "Set the display name",
        "bearer",
        Some("SetDisplayName"),
        Some("AccountInfo")
    ),
    r!(
        "post",
        "/v1/account/link",
        "Attach a login method",
        "bearer",
        Some("LinkRequest"),
        Some("AccountInfo")
    ),
    r!(
        "post",
        "/v1/account/unlink",
        "Detach a login method",
        "bearer",
        Some("LinkRequest"),
        Some("AccountInfo")
    ),
    r!(
        "get",
        "/v1/friends",
        "Friends, requests and blocks",
        "bearer",
        None,
        Some("FriendList")
    ),
    r!(
        "post",
        "/v1/friends/{id}",
        "Send or accept a friend request",
        "bearer",
        None,
        Some("Friend")
    ),
    r!(
        "delete",
        "/v1/friends/{id}",
        "Remove a friend, decline, withdraw or unblock",
        "bearer",
        None,
        None
    ),
    r!(
        "post",
        "/v1/friends/{id}/block",
        "Block a player",
        "bearer",
        None,
        None
    ),
    r!(
        "get",
        "/v1/presence/{id}",
        "A player's presence",
        "bearer",
        None,
        Some("Presence")
    ),
    r!(
        "post",
        "/v1/lobbies",
        "Create a party, lobby or group",
        "bearer",
        Some("CreateLobby"),
        Some("LobbyInfo")
    ),
    r!(
        "get",
        "/v1/lobbies",
        "Search open lobbies or groups by attribute (query: kind=lobby|group, key=value..., limit)",
        "bearer",
        None,
        Some("LobbyList")
    ),
    r!(
        "get",
        "/v1/lobbies/{id}",
        "A party or lobby",
        "bearer",
        None,
        Some("LobbyInfo")
    ),
    r!(
        "patch",
        "/v1/lobbies/{id}",
        "Change attributes or openness (leader)",
        "bearer",
        Some("UpdateLobby"),
        Some("LobbyInfo")
    ),
    r!(
        "post",
        "/v1/lobbies/{id}/join",
        "Join (open, or invited)",
        "bearer",
        None,
        Some("LobbyInfo")
    ),
    r!(
        "post",
        "/v1/lobbies/{id}/leave",
        "Leave",
        "bearer",
        None,
        None
    ),
    r!(
        "post",
        "/v1/lobbies/{id}/invite",
        "Invite a player",
        "bearer",
        Some("MemberRequest"),
        None
    ),
    r!(
        "post",
        "/v1/lobbies/{id}/kick",
        "Remove a member (leader)",
        "bearer",
        Some("MemberRequest"),
        None
    ),
    r!(
        "post",
        "/v1/lobbies/{id}/promote",
        "Hand over leadership (leader)",
        "bearer",
        Some("MemberRequest"),
        None
    ),
    r!(
        "post",
        "/v1/chat/{channel}",
        "Send a message (channel: lobby.<id>, dm.<a>.<b>, room.<id>)",
        "bearer",
        Some("SendChat"),
        Some("ChatMessage")
    ),
    r!(
        "get",
        "/v1/chat/{channel}",
        "History, newest first (query: before, limit <= 100)",
        "bearer",
        None,
        Some("ChatPage")
    ),
    r!(
        "get",
        "/v1/events",
        "WebSocket of real-time events (token in Authorization or ?token=)",
        "bearer",
        None,
        Some("Event")
    ),
    r!(
        "post",
        "/v1/matchmaker/tickets",
        "Queue a ticket (solo or the party you lead)",
        "bearer",
        Some("TicketRequest"),
        Some("TicketStatus")
    ),
    r!(
        "get",
        "/v1/matchmaker/tickets/{id}",
        "A ticket's state and its match once found",
        "bearer",
        None,
        Some("TicketStatus")
    ),
    r!(
        "delete",
        "/v1/matchmaker/tickets/{id}",
        "Cancel a queued ticket",
        "bearer",
        None,
        None
    ),
    r!(
        "get",
        "/v1/ratings/{pool}",
        "The caller's skill rating in a pool",
        "bearer",
        None,
        Some("RatingInfo")
    ),
    r!(
        "post",
        "/v1/matches/{id}/result",
        "Report a match's placements; updates ratings",
        "server",
        Some("MatchResult"),
        None
    ),
    r!(
        "post",
        "/v1/admin/accounts/{id}/ban",
        "Ban an account; its sessions end at once",
        "server",
        None,
        None
    ),
    r!(
        "post",
        "/v1/admin/accounts/{id}/unban",
        "Lift a ban",
        "server",
        None,
        None
    ),
    r!(
        "delete",
        "/v1/admin/accounts/{id}",
        "Delete an account",
        "server",
        None,
        None
    ),
    r!(
        "post",
        "/v1/rooms",
        "Create a room",
        "bearer",
        Some("CreateRoom"),
        Some("RoomInfo")
    ),
    r!(
        "get",
        "/v1/rooms/{id}",
        "A room",
        "bearer",
        None,
        Some("RoomInfo")
    ),
    r!(
        "post",
        "/v1/rooms/{id}/join",
        "A connect ticket for a room",
        "bearer",
        Some("JoinRoom"),
        Some("JoinTicket")
    ),    r!(
        "get",
        "/v1/wallet",
        "Balances and unique items",
        "bearer",
        None,
        Some("Wallet")
    ),
    r!(
        "get",
        "/v1/wallet/history",
        "Transfers touching the caller, newest first (query: before, limit <= 100)",
        "bearer",
        None,
        Some("TransferList")
    ),
    r!(
        "post",
        "/v1/wallet/gift",
        "Give currency or a unique item to another player (idempotent by id; fraud-scored by address and x-volley-device)",
        "bearer",
        Some("Gift"),
        Some("ChainResult")
    ),
    r!(
        "post",
        "/v1/bonus/redeem",
        "Redeem a bonus code (idempotent by id; may be held for review)",
        "bearer",
        Some("RedeemRequest"),
        Some("Redemption")
    ),
    r!(
        "get",
        "/v1/store",
        "The store catalogue",
        "bearer",
        None,
        Some("StoreCatalogue")
    ),
    r!(
        "post",
        "/v1/store/purchase",
        "Buy a catalogue entry: paid and delivered in one chain (idempotent by id)",
        "bearer",
        Some("PurchaseRequest"),
        Some("ChainResult")
    ),
    r!(
        "post",
        "/v1/admin/store",
        "Add or replace a catalogue entry",
        "server",
        Some("StoreItem"),
        None
    ),
    r!(
        "post",
        "/v1/admin/grant",
        "Grant currency from the mint, e.g. a match reward (idempotent by id)",
        "server",
        Some("GrantRequest"),
        Some("ChainResult")
    ),
    r!(
        "post",
        "/v1/admin/items",
        "Mint a unique item for a player (idempotent by id)",
        "server",
        Some("MintItemRequest"),
        Some("MintedItem")
    ),
    r!(
        "post",
        "/v1/admin/bonus-codes",
        "Create a bonus code and fund its uses",
        "server",
        Some("BonusCode"),
        None
    ),
    r!(
        "get",
        "/v1/admin/held",
        "Transfers held for review",
        "server",
        None,
        Some("HeldList")
    ),
    r!(
        "post",
        "/v1/admin/held/{id}/approve",
        "Apply a held transfer",
        "server",
        None,
        Some("ChainResult")
    ),
    r!(
        "post",
        "/v1/admin/held/{id}/reject",
        "Reject a held transfer (nothing moves)",
        "server",
        None,
        None
    ),
    r!(
        "get",
        "/v1/admin/audit",
        "Check every ledger invariant over the whole database",
        "server",
        None,
        Some("AuditReport")
    ),
    r!(
        "post",
        "/v1/admin/leaderboards",
        "Create a leaderboard (idempotent for the same definition)",
        "server",
        Some("BoardDef"),
        None
    ),
    r!(
        "post",
        "/v1/leaderboards/{id}/scores",
        "Submit a score (the node or a studio's server only)",
        "server",
        Some("ScoreRequest"),
        Some("ScoreReply")
    ),
    r!(
        "get",
        "/v1/leaderboards/{id}",
        "A page in rank order (query: start, count <= 100)",
        "bearer",
        None,
        Some("RecordList")
    ),
    r!(
        "get",
        "/v1/leaderboards/{id}/around-me",
        "Records around the caller (query: radius <= 50)",
        "bearer",
        None,
        Some("RecordList")
    ),
    r!(
        "get",
        "/v1/leaderboards/{id}/rank/{player}",
        "A player's rank",
        "bearer",
        None,
        Some("RankReply")
    ),
    r!(
        "get",
        "/v1/leaderboards/{id}/seasons/{season}",
        "A page of an archived season by final rank (query: start, count)",
        "bearer",
        None,
        Some("RecordList")
    ),
    r!(
        "get",
        "/v1/content/{game}/chunks/{hash}",
        "A build chunk by its BLAKE3 hash (raw bytes)",
        "none",
        None,
        None
    ),
    r!(
        "put",
        "/v1/content/{game}/chunks/{hash}",
        "Upload a chunk (raw bytes; refused unless they hash to its name)",
        "server",
        None,
        None
    ),
    r!(
        "post",
        "/v1/content/{game}/chunks",
        "Upload many chunks with one flush to disk (raw frames: 32-byte hash, 4-byte big-endian length, bytes; all are checked before any is stored)",
        "server",
        None,
        Some("ChunkBatchReply")
    ),
    r!(
        "post",
        "/v1/content/{game}/missing",
        "Which of these chunks the origin lacks",
        "server",
        Some("ChunkList"),
        Some("ChunkList")
    ),
    r!(
        "get",
        "/v1/content/{game}/versions",
        "The versions this node holds, oldest first",
        "none",
        None,
        Some("ContentVersions")
    ),
    r!(
        "delete",
        "/v1/content/{game}/versions/{version}",
        "Withdraw a version: its manifest is removed here and on the cluster's other nodes (its chunks go at the next collection)",
        "server",
        None,
        None
    ),
    r!(
        "post",
        "/v1/content/{game}/collect",
        "Drop the chunks no version references (except those uploaded or asked about in the grace period) and give their disk space back",
        "server",
        None,
        Some("ContentCollected")
    ),
    r!(
        "get",
        "/v1/content/{game}/versions/{version}",
        "A version's signed manifest (raw bytes)",
        "none",
        None,
        None
    ),
    r!(
        "put",
        "/v1/content/{game}/versions/{version}",
        "Publish a signed manifest whose chunks are all uploaded",
        "server",
        None,
        None
    ),
    r!(
        "post",
        "/v1/content/{game}/versions/{version}/peers",
        "Announce holding (part of) a version; answers with other peers, most complete first",
        "bearer",
        Some("PeerAnnounce"),
        Some("SwarmPeers")
    ),
    r!(
        "delete",
        "/v1/content/{game}/versions/{version}/peers",
        "Leave a version's swarm",
        "bearer",
        None,
        None
    ),
];

pub(crate) fn routes() -> Router<Api> {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/auth/device", post(login_device))
        .route("/v1/auth/email/register", post(register_email))
        .route("/v1/auth/email", post(login_email))
        .route("/v1/auth/custom", post(login_custom))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/account", get(account).patch(set_display_name))
        .route("/v1/account/link", post(link))
        .route("/v1/account/unlink", post(unlink))
        .route("/v1/friends", get(friends))
        .route("/v1/friends/{id}", post(add_friend).delete(remove_friend))
        .route("/v1/friends/{id}/block", post(block))
        .route("/v1/presence/{id}", get(presence))
        .route("/v1/lobbies", post(create_lobby).get(search_lobbies))
        .route("/v1/lobbies/{id}", get(get_lobby).patch(update_lobby))
        .route("/v1/lobbies/{id}/join", post(join_lobby))
        .route("/v1/lobbies/{id}/leave", post(leave_lobby))
        .route("/v1/lobbies/{id}/invite", post(invite))
        .route("/v1/lobbies/{id}/kick", post(kick))
        .route("/v1/lobbies/{id}/promote", post(promote))
        .route("/v1/chat/{channel}", post(send_chat).get(chat_history))
        .route("/v1/events", get(events))
        .route("/v1/matchmaker/tickets", post(submit_ticket))
        .route(
            "/v1/matchmaker/tickets/{id}",
            get(ticket_status).delete(cancel_ticket),
        )
        .route("/v1/ratings/{pool}", get(rating))
        .route("/v1/matches/{id}/result", post(report_result))
        .route("/v1/wallet", get(wallet))
        .route("/v1/wallet/history", get(wallet_history))
        .route("/v1/wallet/gift", post(wallet_gift))
        .route("/v1/bonus/redeem", post(redeem))
        .route("/v1/store", get(store))
        .route("/v1/store/purchase", post(purchase))
        .route("/v1/admin/store", post(put_store_item))
        .route("/v1/admin/grant", post(grant))
        .route("/v1/admin/items", post(mint_item))
        .route("/v1/admin/bonus-codes", post(create_code))
        .route("/v1/admin/held", get(held))
        .route("/v1/admin/held/{id}/approve", post(approve))
        .route("/v1/admin/held/{id}/reject", post(reject))
        .route("/v1/admin/audit", get(audit))
        .route("/v1/admin/leaderboards", post(create_board))
        .route("/v1/leaderboards/{id}/scores", post(submit_score))
        .route("/v1/leaderboards/{id}", get(board_page))
        .route("/v1/leaderboards/{id}/around-me", get(board_around))
        .route("/v1/leaderboards/{id}/rank/{player}", get(board_rank))
        .route(
            "/v1/content/{game}/chunks/{hash}",
            get(crate::content::get_chunk)
                .put(crate::content::put_chunk)
                .layer(axum::extract::DefaultBodyLimit::max(
                    crate::content::CHUNK_BODY_MAX,
                )),
        )
        .route(
            "/v1/content/{game}/chunks",
            post(crate::content::put_chunks).layer(axum::extract::DefaultBodyLimit::max(
                volley_content::batch::BODY_MAX,
            )),
        )
        .route(
            "/v1/content/{game}/missing",
            post(crate::content::missing).layer(axum::extract::DefaultBodyLimit::max(
                crate::content::LIST_BODY_MAX,
            )),
        )
        .route(
            "/v1/content/{game}/versions/{version}/peers",
            post(crate::content::announce).delete(crate::content::leave),
        )
        .route(
            "/v1/content/{game}/versions",
            get(crate::content::list_versions),
        )
        .route("/v1/content/{game}/collect", post(crate::content::collect))
        .route(
            "/v1/content/{game}/versions/{version}",
            get(crate::content::get_manifest)
                .put(crate::content::put_manifest)
                .delete(crate::content::delete_version)
                .layer(axum::extract::DefaultBodyLimit::max(
                    crate::content::MANIFEST_BODY_MAX,
                )),
        )
        .route("/v1/leaderboards/{id}/seasons/{season}", get(board_archive))
        .route("/v1/admin/accounts/{id}/ban", post(ban))
        .route("/v1/admin/accounts/{id}/unban", post(unban))
        .route("/v1/admin/accounts/{id}", delete(delete_account))
}

fn id_param(s: &str) -> Result<u64, Error> {
    s.parse()
        .map_err(|_| bad(format!("{s:?} is not a numeric id")))
}

pub(crate) fn require_server_key(api: &Api, headers: &HeaderMap) -> Result<(), Error> {
    server_key(api, headers)
}

fn server_key(api: &Api, headers: &HeaderMap) -> Result<(), Error> {
    let key = headers
        .get(SERVER_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if api.platform.check_server_key(key) {
        Ok(())
    } else {
        Err(Error(
            StatusCode::UNAUTHORIZED,
            "bad_server_key",
            format!("this call needs the node's server key in {SERVER_KEY_HEADER}"),
            None,
        ))
    }
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        crate::openapi::document(),
    )
        .into_response()
}

async fn login_device(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Json<Session>, Error> {
    api.platform.check_login_rate(peer.ip())?;
    let req: DeviceLogin = parse(&body)?;
    Ok(Json(api.platform.login_device(&req.device_id).await?))
}

async fn register_email(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<(StatusCode, Json<Session>), Error> {
    api.platform.check_login_rate(peer.ip())?;
    let req: EmailRegister = parse(&body)?;
    let s = api
        .platform
        .register_email(&req.email, &req.password, req.display_name.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(s)))
}

async fn login_email(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Json<Session>, Error> {
    api.platform.check_login_rate(peer.ip())?;
    let req: EmailLogin = parse(&body)?;
    Ok(Json(
        api.platform.login_email(&req.email, &req.password).await?,
    ))
}

async fn login_custom(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Session>, Error> {
    server_key(&api, &headers)?;
    let req: CustomLogin = parse(&body)?;
    Ok(Json(api.platform.login_custom(&req.custom_id).await?))
}

async fn refresh(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Json<Session>, Error> {
    api.platform.check_login_rate(peer.ip())?;
    let req: RefreshRequest = parse(&body)?;
    Ok(Json(api.platform.refresh(&req.refresh_token).await?))
}

async fn logout(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Error> {
    authed(&api, &headers).await?;
    let refresh = if body.is_empty() {
        None
    } else {
        Some(parse::<RefreshRequest>(&body)?.refresh_token)
    };
    api.platform
        .logout(bearer(&headers)?, refresh.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn account(
    State(api): State<Api>,
    headers: HeaderMap,
) -> Result<Json<volley_proto::api::AccountInfo>, Error> {
    let me = authed(&api, &headers).await?;
    Ok(Json(api.platform.account(me).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetDisplayName {
    display_name: String,
}

async fn set_display_name(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<volley_proto::api::AccountInfo>, Error> {
    let me = authed(&api, &headers).await?;
    let req: SetDisplayName = parse(&body)?;
    api.platform.set_display_name(me, &req.display_name).await?;
    Ok(Json(api.platform.account(me).await?))
}

async fn link(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<volley_proto::api::AccountInfo>, Error> {
    let me = authed(&api, &headers).await?;
    let req: LinkRequest = parse(&body)?;
    let kind = AuthKind::parse(&req.kind)?;
    if kind == AuthKind::Custom {
        server_key(&api, &headers)?;
    }
    api.platform
        .link(me, kind, &req.id, req.password.as_deref())
        .await?;
    Ok(Json(api.platform.account(me).await?))
}

async fn unlink(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<volley_proto::api::AccountInfo>, Error> {
    let me = authed(&api, &headers).await?;
    let req: LinkRequest = parse(&body)?;
    let kind = AuthKind::parse(&req.kind)?;
    api.platform.unlink(me, kind, &req.id).await?;
    Ok(Json(api.platform.account(me).await?))
}

async fn friends(State(api): State<Api>, headers: HeaderMap) -> Result<Json<Vec<Friend>>, Error> {
    let me = authed(&api, &headers).await?;
    Ok(Json(api.platform.friends(me).await?))
}

async fn add_friend(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Friend>, Error> {
    let me = authed(&api, &headers).await?;
    Ok(Json(api.platform.add_friend(me, id_param(&id)?).await?))
}

async fn remove_friend(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let me = authed(&api, &headers).await?;
    api.platform.remove_friend(me, id_param(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn block(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let me = authed(&api, &headers).await?;
    api.platform.block(me, id_param(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn presence(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Presence>, Error> {
    authed(&api, &headers).await?;
    Ok(Json(api.platform.presence(id_param(&id)?).await?))
}

async fn create_lobby(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<LobbyInfo>), Error> {
    let me = authed(&api, &headers).await?;
    let req: CreateLobby = parse(&body)?;
    Ok((
        StatusCode::CREATED,
        Json(api.platform.create_lobby(me, &req).await?),
    ))
}

async fn search_lobbies(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Vec<LobbyInfo>>, Error> {
    authed(&api, &headers).await?;
    let mut limit = 20;
    let mut kind = "lobby".to_owned();
    let mut filter = Vec::new();
    for (k, v) in q {
        if k == "limit" {
            limit = v.parse().map_err(|_| bad("limit must be a number"))?;
        } else if k == "kind" {
            kind = v;
        } else if filter.len() < 16 {
            filter.push((k, v));
        }
    }
    Ok(Json(
        api.platform.search_lobbies(&kind, &filter, limit).await?,
    ))
}

async fn get_lobby(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<LobbyInfo>, Error> {
    authed(&api, &headers).await?;
    Ok(Json(api.platform.lobby(id_param(&id)?).await?))
}

async fn update_lobby(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<LobbyInfo>, Error> {
    let me = authed(&api, &headers).await?;
    let req: UpdateLobby = parse(&body)?;
    Ok(Json(
        api.platform.update_lobby(me, id_param(&id)?, &req).await?,
    ))
}

async fn join_lobby(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<LobbyInfo>, Error> {
    let me = authed(&api, &headers).await?;
    Ok(Json(api.platform.join_lobby(me, id_param(&id)?).await?))
}

async fn leave_lobby(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let me = authed(&api, &headers).await?;
    api.platform.leave_lobby(me, id_param(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn member_op(
    api: &Api,
    headers: &HeaderMap,
    id: &str,
    body: &Bytes,
) -> Result<(u64, u64, u64), Error> {
    let me = authed(api, headers).await?;
    let req: MemberRequest = parse(body)?;
    Ok((me, id_param(id)?, req.player_id))
}

async fn invite(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, Error> {
    let (me, lobby, other) = member_op(&api, &headers, &id, &body).await?;
    api.platform.invite(me, lobby, other).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn kick(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, Error> {
    let (me, lobby, other) = member_op(&api, &headers, &id, &body).await?;
    api.platform.kick(me, lobby, other).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn promote(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, Error> {
    let (me, lobby, other) = member_op(&api, &headers, &id, &body).await?;
    api.platform.promote(me, lobby, other).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn send_chat(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(channel): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<ChatMessage>), Error> {
    let me = authed(&api, &headers).await?;
    let req: SendChat = parse(&body)?;
    Ok((
        StatusCode::CREATED,
        Json(api.platform.send_chat(me, &channel, &req.body).await?),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    before: Option<i64>,
    limit: Option<usize>,
}

async fn chat_history(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(channel): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<ChatPage>, Error> {
    let me = authed(&api, &headers).await?;
    Ok(Json(
        api.platform
            .chat_history(me, &channel, q.before, q.limit.unwrap_or(50))
            .await?,
    ))
}

#[derive(Deserialize)]
struct EventsQuery {
    token: Option<String>,
    status: Option<String>,
}

async fn events(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, Error> {
    let me = match &q.token {
        Some(t) => api.platform.authenticate(t).await?,
        None => authed(&api, &headers).await?,
    };
    let stream = api.platform.events(me).await?;
    let status = q.status.unwrap_or_else(|| "online".into());
    Ok(ws
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| run_events(api, me, status, stream, socket)))
}

/// Pumps a player's events into its WebSocket until either side closes. Presence: the player
/// is online while a socket is open; the last socket closing on this node marks it offline here.
async fn run_events(
    api: Api,
    me: u64,
    status: String,
    mut stream: volley_platform::events::EventStream,
    mut socket: WebSocket,
) {
    let first = api.ws_open(me);
    if first {
        if let Err(e) = api.platform.set_online(me, &status).await {
            tracing::warn!(error = %e, "presence");
        }
    }
    let ready = serde_json::to_string(&Event::Ready { player_id: me }).unwrap_or_default();
    if socket.send(Message::Text(ready.into())).await.is_ok() {
        loop {
            tokio::select! {
                ev = stream.next() => {
                    let Some(ev) = ev else { break };
                    let Ok(text) = serde_json::to_string(&ev) else { continue };
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                msg = socket.recv() => match msg {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    // Clients may ping or send anything; the socket is one-way for events.
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    if api.ws_close(me) {
        if let Err(e) = api.platform.set_offline(me).await {
            tracing::warn!(error = %e, "presence");
        }
    }
}

async fn ban(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    server_key(&api, &headers)?;
    api.platform.set_banned(id_param(&id)?, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unban(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    server_key(&api, &headers)?;
    api.platform.set_banned(id_param(&id)?, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_account(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    server_key(&api, &headers)?;
    api.platform.delete_account(id_param(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn submit_ticket(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<TicketStatus>), Error> {
    let me = authed(&api, &headers).await?;
    let req: TicketRequest = parse(&body)?;
    Ok((
        StatusCode::CREATED,
        Json(api.platform.submit_ticket(me, &req).await?),
    ))
}

async fn ticket_status(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<TicketStatus>, Error> {
    let me = authed(&api, &headers).await?;
    Ok(Json(api.platform.ticket_status(me, &id).await?))
}

async fn cancel_ticket(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let me = authed(&api, &headers).await?;
    api.platform.cancel_ticket(me, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rating(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(pool): Path<String>,
) -> Result<Json<RatingInfo>, Error> {
    let me = authed(&api, &headers).await?;
    Ok(Json(api.platform.rating_info(me, &pool).await?))
}

async fn report_result(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Vec<(u64, RatingInfo)>>, Error> {
    server_key(&api, &headers)?;
    let req: MatchResult = parse(&body)?;
    Ok(Json(api.platform.report_result(&id, &req).await?))
}

async fn wallet(State(api): State<Api>, headers: HeaderMap) -> Result<Response, Error> {
    let me = authed(&api, &headers).await?;
    let view = api::WalletView {
        balances: api.platform.balances(me).await?,
        items: api.platform.items_of(me).await?,
    };
    Ok(Json(view).into_response())
}

async fn wallet_history(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, Error> {
    let me = authed(&api, &headers).await?;
    let h = api
        .platform
        .ledger_history(me, q.before, q.limit.unwrap_or(50))
        .await?;
    Ok(Json(h).into_response())
}

async fn wallet_gift(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let me = authed(&api, &headers).await?;
    let gift: api::Gift = parse(&body)?;
    let r = api
        .platform
        .gift(me, &gift, &origin(&peer, &headers))
        .await?;
    Ok(Json(r).into_response())
}

/// The fraud origin of a request: the peer's address and the device the SDK reports in
/// `x-volley-device` (ignored unless 1-128 visible ASCII characters).
fn origin(peer: &SocketAddr, headers: &HeaderMap) -> volley_platform::economy::Origin {
    let device = headers
        .get("x-volley-device")
        .and_then(|v| v.to_str().ok())
        .filter(|d| (1..=128).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_graphic()));
    volley_platform::economy::Origin::new(Some(peer.ip()), device)
}

async fn redeem(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let me = authed(&api, &headers).await?;
    let req: api::RedeemRequest = parse(&body)?;
    let rules = volley_platform::economy::FraudRules::default();
    let r = api
        .platform
        .redeem(me, &req.code, &req.id, &origin(&peer, &headers), &rules)
        .await?;
    Ok(Json(r).into_response())
}

async fn grant(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Result<Response, Error> {
    server_key(&api, &headers)?;
    let req: api::GrantRequest = parse(&body)?;
    let kind = req.kind.unwrap_or_else(|| "grant".into());
    if kind.is_empty() || kind.len() > 32 {
        return Err(bad("kind must be 1-32 characters"));
    }
    let r = api
        .platform
        .grant(&req.id, req.player, &req.currency, req.amount, &kind)
        .await?;
    Ok(Json(r).into_response())
}

async fn mint_item(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    server_key(&api, &headers)?;
    let req: api::MintItemRequest = parse(&body)?;
    if !api.platform.is_active(req.player).await? {
        return Err(volley_platform::PlatformError::not_found("player").into());
    }
    let item = api
        .platform
        .mint_item("sys", &req.id, req.player, &req.item_type)
        .await?;
    Ok(Json(api::MintedItem { item_id: item }).into_response())
}

async fn create_code(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Error> {
    server_key(&api, &headers)?;
    let req: volley_platform::economy::BonusCode = parse(&body)?;
    api.platform.create_bonus_code(&req).await?;
    Ok(StatusCode::CREATED)
}

async fn held(State(api): State<Api>, headers: HeaderMap) -> Result<Response, Error> {
    server_key(&api, &headers)?;
    Ok(Json(api.platform.held().await?).into_response())
}

async fn approve(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    server_key(&api, &headers)?;
    Ok(Json(api.platform.review(&id, true).await?).into_response())
}

async fn reject(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    server_key(&api, &headers)?;
    api.platform.review(&id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn audit(State(api): State<Api>, headers: HeaderMap) -> Result<Response, Error> {
    server_key(&api, &headers)?;
    Ok(Json(api.platform.audit().await?).into_response())
}

async fn create_board(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Error> {
    server_key(&api, &headers)?;
    let def: volley_platform::leaderboards::BoardDef = parse(&body)?;
    api.platform.create_board(&def).await?;
    Ok(StatusCode::CREATED)
}

async fn submit_score(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Error> {
    server_key(&api, &headers)?;
    let req: api::ScoreRequest = parse(&body)?;
    if !api.platform.is_active(req.player).await? {
        return Err(volley_platform::PlatformError::not_found("player").into());
    }
    let meta = req.metadata.map(|m| m.to_string()).unwrap_or_default();
    let score = api
        .platform
        .submit_score(&id, req.player, req.score, &meta)
        .await?;
    Ok(Json(api::ScoreReply { score }).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    start: Option<usize>,
    count: Option<usize>,
    radius: Option<usize>,
}

async fn board_page(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, Error> {
    authed(&api, &headers).await?;
    let page = api
        .platform
        .board_page(&id, q.start.unwrap_or(0), q.count.unwrap_or(20))
        .await?;
    Ok(Json(page).into_response())
}

async fn board_around(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, Error> {
    let me = authed(&api, &headers).await?;
    let page = api
        .platform
        .board_around(&id, me, q.radius.unwrap_or(5))
        .await?;
    Ok(Json(page).into_response())
}

async fn board_rank(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((id, player)): Path<(String, String)>,
) -> Result<Response, Error> {
    authed(&api, &headers).await?;
    let rank = api.platform.board_rank(&id, id_param(&player)?).await?;
    Ok(Json(api::RankReply {
        rank: rank.map(|r| r as u64),
    })
    .into_response())
}

async fn board_archive(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((id, season)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Result<Response, Error> {
    authed(&api, &headers).await?;
    let season: i64 = season.parse().map_err(|_| bad("season must be a number"))?;
    let page = api
        .platform
        .archived_page(&id, season, q.start.unwrap_or(0), q.count.unwrap_or(20))
        .await?;
    Ok(Json(page).into_response())
}

async fn store(State(api): State<Api>, headers: HeaderMap) -> Result<Response, Error> {
    authed(&api, &headers).await?;
    Ok(Json(api.platform.store_items().await?).into_response())
}

async fn purchase(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let me = authed(&api, &headers).await?;
    let req: api::PurchaseRequest = parse(&body)?;
    Ok(Json(api.platform.purchase(me, &req.sku, &req.id).await?).into_response())
}

async fn put_store_item(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Error> {
    server_key(&api, &headers)?;
    let item: volley_platform::economy::StoreItem = parse(&body)?;
    api.platform.put_store_item(&item).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    /// Every path the router serves is documented in [`super::ROUTES`] with the same methods
    /// (the integration test checks the other direction: every documented route answers).
    #[test]
    fn every_routed_path_is_documented() {
        let src = include_str!("api.rs");
        let router = &src[src.find("pub(crate) fn routes()").unwrap()..];
        let mut routed = 0;
        for piece in router.split(".route(").skip(1) {
            let path = piece.split('"').nth(1).unwrap();
            let handlers = &piece[..piece.find(")\n").unwrap_or(piece.len())];
            for method in ["get", "post", "put", "patch", "delete"] {
                if handlers.contains(&format!("{method}(")) {
                    routed += 1;
                    assert!(
                        super::ROUTES
                            .iter()
                            .any(|r| r.path == path && r.method == method),
                        "{method} {path} is routed but not in ROUTES"
                    );
                }
            }
        }
        assert!(routed >= 50, "the router was not parsed: {routed} routes");
    }
}
