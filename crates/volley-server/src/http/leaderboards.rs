//! Leaderboards: boards made by the game's servers, scores they submit, pages, ranks and
//! archived seasons players read.

use aide::axum::routing::{get_with, post_with};
use aide::axum::ApiRouter;
use axum::extract::State;
use axum::Json;
use schemars::JsonSchema;
use serde::Deserialize;
use volley_platform::leaderboards::BoardDef;
use volley_proto::api::{BoardPage, BoardRecord, RankReply, ScoreReply, ScoreRequest};

use super::error::Error;
use super::extract::{Body, Path, Player, Query, ServerKey};
use super::{doc, AppState, NoContent};

pub(super) fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/admin/leaderboards",
            post_with(
                create_board,
                doc("Create a leaderboard (idempotent for the same definition)"),
            ),
        )
        .api_route(
            "/v1/leaderboards/{id}/scores",
            post_with(
                submit_score,
                doc("Submit a score (the node or a studio's server only)"),
            ),
        )
        .api_route(
            "/v1/leaderboards/{id}",
            get_with(
                board_page,
                doc("A page in rank order (query: start, count <= 100)"),
            ),
        )
        .api_route(
            "/v1/leaderboards/{id}/around-me",
            get_with(
                board_around,
                doc("Records around the caller (query: radius <= 50)"),
            ),
        )
        .api_route(
            "/v1/leaderboards/{id}/rank/{player}",
            get_with(board_rank, doc("A player's rank")),
        )
        .api_route(
            "/v1/leaderboards/{id}/seasons/{season}",
            get_with(
                board_archive,
                doc("A page of an archived season by final rank (query: start, count)"),
            ),
        )
}

async fn create_board(
    State(api): State<AppState>,
    _: ServerKey,
    Body(def): Body<BoardDef>,
) -> Result<(axum::http::StatusCode, NoContent), Error> {
    api.platform.create_board(&def).await?;
    Ok((axum::http::StatusCode::CREATED, NoContent))
}

async fn submit_score(
    State(api): State<AppState>,
    _: ServerKey,
    Path(id): Path<String>,
    Body(req): Body<ScoreRequest>,
) -> Result<Json<ScoreReply>, Error> {
    if !api.platform.is_active(req.player).await? {
        return Err(volley_platform::PlatformError::not_found("player").into());
    }
    let meta = req.metadata.map(|m| m.to_string()).unwrap_or_default();
    let score = api
        .platform
        .submit_score(&id, req.player, req.score, &meta)
        .await?;
    Ok(Json(ScoreReply { score }))
}

/// Where a page starts and how long it is.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    /// First rank of the page, from 0.
    start: Option<usize>,
    /// Records in the page (at most 100, default 20).
    count: Option<usize>,
}

/// How many records around the caller.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AroundQuery {
    /// Records above and below (at most 50, default 5).
    radius: Option<usize>,
}

async fn board_page(
    State(api): State<AppState>,
    _: Player,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<BoardPage>, Error> {
    let (start, count) = (q.start.unwrap_or(0), q.count.unwrap_or(20).clamp(1, 100));
    let records = api.platform.board_page(&id, start, count).await?;
    // Whether a next page exists: one more record past this page (an index lookup).
    let more = records.len() == count
        && !api
            .platform
            .board_page(&id, start + count, 1)
            .await?
            .is_empty();
    Ok(Json(page(records, start, count, more)))
}

/// A page of records and the cursor of the next one.
fn page(records: Vec<BoardRecord>, start: usize, count: usize, more: bool) -> BoardPage {
    BoardPage {
        records,
        next_start: more.then_some((start + count) as u64),
    }
}

async fn board_around(
    State(api): State<AppState>,
    Player(me): Player,
    Path(id): Path<String>,
    Query(q): Query<AroundQuery>,
) -> Result<Json<Vec<BoardRecord>>, Error> {
    let page = api
        .platform
        .board_around(&id, me, q.radius.unwrap_or(5))
        .await?;
    Ok(Json(page))
}

async fn board_rank(
    State(api): State<AppState>,
    _: Player,
    Path((id, player)): Path<(String, u64)>,
) -> Result<Json<RankReply>, Error> {
    let rank = api.platform.board_rank(&id, player).await?;
    Ok(Json(RankReply {
        rank: rank.map(|r| r as u64),
    }))
}

async fn board_archive(
    State(api): State<AppState>,
    _: Player,
    Path((id, season)): Path<(String, i64)>,
    Query(q): Query<PageQuery>,
) -> Result<Json<BoardPage>, Error> {
    let (start, count) = (q.start.unwrap_or(0), q.count.unwrap_or(20).clamp(1, 100));
    let records = api
        .platform
        .archived_page(&id, season, start, count)
        .await?;
    let more = records.len() == count
        && !api
            .platform
            .archived_page(&id, season, start + count, 1)
            .await?
            .is_empty();
    Ok(Json(page(records, start, count, more)))
}
