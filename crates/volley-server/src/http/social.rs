//! Social: friends, presence, lobbies (parties, lobbies, groups) and chat.

use aide::axum::routing::{get_with, post_with};
use aide::axum::ApiRouter;
use axum::extract::State;
use axum::Json;
use schemars::JsonSchema;
use serde::Deserialize;
use volley_proto::api::{
    ChatMessage, ChatPage, CreateLobby, Friend, FriendPage, LobbyInfo, LobbyPage, MemberRequest,
    Presence, SendChat, UpdateLobby,
};

use super::error::Error;
use super::extract::{Body, Path, Player, Query};
use super::{doc, doc_long, AppState, Created, NoContent};

/// Most attribute filters a lobby search takes.
const LOBBY_FILTERS_MAX: usize = 16;

pub(super) fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/friends",
            get_with(
                friends,
                doc("Friends, requests and blocks, by player id (query: after, limit <= 100)"),
            ),
        )
        .api_route(
            "/v1/friends/{id}",
            post_with(add_friend, doc("Send or accept a friend request")).delete_with(
                remove_friend,
                doc("Remove a friend, decline, withdraw or unblock"),
            ),
        )
        .api_route(
            "/v1/friends/{id}/block",
            post_with(block, doc("Block a player")),
        )
        .api_route(
            "/v1/presence/{id}",
            get_with(presence, doc("A player's presence")),
        )
        .api_route(
            "/v1/lobbies",
            post_with(create_lobby, doc("Create a party, lobby or group")).get_with(
                search_lobbies,
                doc_long(
                    "Search open lobbies or groups by attribute",
                    "Query: kind=lobby|group, limit, before (a page's next_before), and any \
                     key=value attribute filters (at most 16).",
                ),
            ),
        )
        .api_route(
            "/v1/lobbies/{id}",
            get_with(get_lobby, doc("A party or lobby"))
                .patch_with(update_lobby, doc("Change attributes or openness (leader)")),
        )
        .api_route(
            "/v1/lobbies/{id}/join",
            post_with(join_lobby, doc("Join (open, or invited)")),
        )
        .api_route(
            "/v1/lobbies/{id}/leave",
            post_with(leave_lobby, doc("Leave")),
        )
        .api_route(
            "/v1/lobbies/{id}/invite",
            post_with(invite, doc("Invite a player")),
        )
        .api_route(
            "/v1/lobbies/{id}/kick",
            post_with(kick, doc("Remove a member (leader)")),
        )
        .api_route(
            "/v1/lobbies/{id}/promote",
            post_with(promote, doc("Hand over leadership (leader)")),
        )
        .api_route(
            "/v1/chat/{channel}",
            post_with(
                send_chat,
                doc_long(
                    "Send a chat message",
                    "Channels: lobby.<id>, dm.<a>.<b>, room.<id>.",
                ),
            )
            .get_with(
                chat_history,
                doc("History, newest first (query: before, limit <= 100)"),
            ),
        )
}

/// A page of friends.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct FriendsQuery {
    /// Only players after this id (the `next_after` of the previous page).
    after: Option<u64>,
    /// Page size (at most 100, default 100).
    limit: Option<usize>,
}

async fn friends(
    State(api): State<AppState>,
    Player(me): Player,
    Query(q): Query<FriendsQuery>,
) -> Result<Json<FriendPage>, Error> {
    Ok(Json(
        api.platform
            .friends_page(me, q.after, q.limit.unwrap_or(100))
            .await?,
    ))
}

async fn add_friend(
    State(api): State<AppState>,
    Player(me): Player,
    Path(id): Path<u64>,
) -> Result<Json<Friend>, Error> {
    Ok(Json(api.platform.add_friend(me, id).await?))
}

async fn remove_friend(
    State(api): State<AppState>,
    Player(me): Player,
    Path(id): Path<u64>,
) -> Result<NoContent, Error> {
    api.platform.remove_friend(me, id).await?;
    Ok(NoContent)
}

async fn block(
    State(api): State<AppState>,
    Player(me): Player,
    Path(id): Path<u64>,
) -> Result<NoContent, Error> {
    api.platform.block(me, id).await?;
    Ok(NoContent)
}

async fn presence(
    State(api): State<AppState>,
    _: Player,
    Path(id): Path<u64>,
) -> Result<Json<Presence>, Error> {
    Ok(Json(api.platform.presence(id).await?))
}

async fn create_lobby(
    State(api): State<AppState>,
    Player(me): Player,
    Body(req): Body<CreateLobby>,
) -> Result<Created<LobbyInfo>, Error> {
    Ok(Created(api.platform.create_lobby(me, &req).await?))
}

async fn search_lobbies(
    State(api): State<AppState>,
    _: Player,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<LobbyPage>, Error> {
    let mut limit = 20;
    let mut before = None;
    let mut kind = "lobby".to_owned();
    let mut filter = Vec::new();
    for (k, v) in q {
        if k == "limit" {
            limit = v
                .parse()
                .map_err(|_| Error::bad_request("limit must be a number"))?;
        } else if k == "before" {
            before = Some(
                v.parse()
                    .map_err(|_| Error::bad_request("before must be a lobby id"))?,
            );
        } else if k == "kind" {
            kind = v;
        } else if filter.len() < LOBBY_FILTERS_MAX {
            filter.push((k, v));
        } else {
            return Err(Error::bad_request(format!(
                "at most {LOBBY_FILTERS_MAX} attribute filters"
            )));
        }
    }
    Ok(Json(
        api.platform
            .search_lobbies_page(&kind, &filter, before, limit)
            .await?,
    ))
}

async fn get_lobby(
    State(api): State<AppState>,
    _: Player,
    Path(id): Path<u64>,
) -> Result<Json<LobbyInfo>, Error> {
    Ok(Json(api.platform.lobby(id).await?))
}

async fn update_lobby(
    State(api): State<AppState>,
    Player(me): Player,
    Path(id): Path<u64>,
    Body(req): Body<UpdateLobby>,
) -> Result<Json<LobbyInfo>, Error> {
    Ok(Json(api.platform.update_lobby(me, id, &req).await?))
}

async fn join_lobby(
    State(api): State<AppState>,
    Player(me): Player,
    Path(id): Path<u64>,
) -> Result<Json<LobbyInfo>, Error> {
    Ok(Json(api.platform.join_lobby(me, id).await?))
}

async fn leave_lobby(
    State(api): State<AppState>,
    Player(me): Player,
    Path(id): Path<u64>,
) -> Result<NoContent, Error> {
    api.platform.leave_lobby(me, id).await?;
    Ok(NoContent)
}

async fn invite(
    State(api): State<AppState>,
    Player(me): Player,
    Path(id): Path<u64>,
    Body(req): Body<MemberRequest>,
) -> Result<NoContent, Error> {
    api.platform.invite(me, id, req.player_id).await?;
    Ok(NoContent)
}

async fn kick(
    State(api): State<AppState>,
    Player(me): Player,
    Path(id): Path<u64>,
    Body(req): Body<MemberRequest>,
) -> Result<NoContent, Error> {
    api.platform.kick(me, id, req.player_id).await?;
    Ok(NoContent)
}

async fn promote(
    State(api): State<AppState>,
    Player(me): Player,
    Path(id): Path<u64>,
    Body(req): Body<MemberRequest>,
) -> Result<NoContent, Error> {
    api.platform.promote(me, id, req.player_id).await?;
    Ok(NoContent)
}

async fn send_chat(
    State(api): State<AppState>,
    Player(me): Player,
    Path(channel): Path<String>,
    Body(req): Body<SendChat>,
) -> Result<Created<ChatMessage>, Error> {
    Ok(Created(
        api.platform.send_chat(me, &channel, &req.body).await?,
    ))
}

/// A page of history: messages before a cursor.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    /// Only messages before this cursor (the `next` of the previous page).
    pub(super) before: Option<i64>,
    /// Page size (default 50).
    pub(super) limit: Option<usize>,
}

async fn chat_history(
    State(api): State<AppState>,
    Player(me): Player,
    Path(channel): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<ChatPage>, Error> {
    Ok(Json(
        api.platform
            .chat_history(me, &channel, q.before, q.limit.unwrap_or(50))
            .await?,
    ))
}
