//! Matchmaking: tickets, skill ratings, and match results reported by the game's servers.

use aide::axum::routing::{get_with, post_with};
use aide::axum::ApiRouter;
use axum::extract::State;
use axum::Json;
use volley_proto::api::{MatchResult, RatingInfo, TicketRequest, TicketStatus};

use super::error::Error;
use super::extract::{Body, Path, Player, ServerKey};
use super::{doc, AppState, Created, NoContent};

pub(super) fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/matchmaker/tickets",
            post_with(
                submit_ticket,
                doc("Queue a ticket (solo or the party you lead)"),
            ),
        )
        .api_route(
            "/v1/matchmaker/tickets/{id}",
            get_with(
                ticket_status,
                doc("A ticket's state and its match once found"),
            )
            .delete_with(cancel_ticket, doc("Cancel a queued ticket")),
        )
        .api_route(
            "/v1/ratings/{pool}",
            get_with(rating, doc("The caller's skill rating in a pool")),
        )
        .api_route(
            "/v1/matches/{id}/result",
            post_with(
                report_result,
                doc("Report a match's placements; updates ratings"),
            ),
        )
}

async fn submit_ticket(
    State(api): State<AppState>,
    Player(me): Player,
    Body(req): Body<TicketRequest>,
) -> Result<Created<TicketStatus>, Error> {
    Ok(Created(api.platform.submit_ticket(me, &req).await?))
}

async fn ticket_status(
    State(api): State<AppState>,
    Player(me): Player,
    Path(id): Path<String>,
) -> Result<Json<TicketStatus>, Error> {
    Ok(Json(api.platform.ticket_status(me, &id).await?))
}

async fn cancel_ticket(
    State(api): State<AppState>,
    Player(me): Player,
    Path(id): Path<String>,
) -> Result<NoContent, Error> {
    api.platform.cancel_ticket(me, &id).await?;
    Ok(NoContent)
}

async fn rating(
    State(api): State<AppState>,
    Player(me): Player,
    Path(pool): Path<String>,
) -> Result<Json<RatingInfo>, Error> {
    Ok(Json(api.platform.rating_info(me, &pool).await?))
}

async fn report_result(
    State(api): State<AppState>,
    _: ServerKey,
    Path(id): Path<String>,
    Body(req): Body<MatchResult>,
) -> Result<Json<Vec<(u64, RatingInfo)>>, Error> {
    Ok(Json(api.platform.report_result(&id, &req).await?))
}
