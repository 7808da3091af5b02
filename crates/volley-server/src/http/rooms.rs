//! Rooms: create one, look at one, and get a connect ticket for one.

use aide::axum::routing::{get_with, post_with};
use aide::axum::ApiRouter;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rand::RngCore;
use volley_proto::api::{CreateRoom, JoinRoom, JoinTicket, PathInfo, RoomInfo};
use volley_proto::ticket::{Ticket, NONCE_BYTES};
use volley_proto::Fingerprint;

use super::error::Error;
use super::extract::{Body, OptionalBody, Path, Player};
use super::{doc, AppState, Created};
use crate::room::Room;
use crate::rooms::{MadeFor, RoomError};

pub(super) fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route("/v1/rooms", post_with(create_room, doc("Create a room")))
        .api_route("/v1/rooms/{id}", get_with(get_room, doc("A room")))
        .api_route(
            "/v1/rooms/{id}/join",
            post_with(join_room, doc("A connect ticket for a room")),
        )
}

impl From<RoomError> for Error {
    fn from(e: RoomError) -> Self {
        match e {
            RoomError::Refused(why) => Error::bad_request(why),
            RoomError::Full => Error::unavailable("room_limit", e.to_string(), 1000),
            RoomError::PlayerLimit(_) => Error::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_rooms",
                e.to_string(),
            )
            .retry_after(5_000),
        }
    }
}

/// What the API shows of a room.
pub(crate) fn room_info(room: &Room) -> RoomInfo {
    let mut paths: Vec<PathInfo> = room
        .paths
        .lock()
        .map(|p| {
            p.iter()
                .map(|((from, to), (kind, rtt_us))| PathInfo {
                    from: *from,
                    to: *to,
                    path: kind.as_str().to_owned(),
                    rtt_us: *rtt_us,
                })
                .collect()
        })
        .unwrap_or_default();
    paths.sort_by_key(|p| (p.from, p.to));
    RoomInfo {
        room_id: room.id,
        max_players: room.max_players,
        players: room.player_ids(),
        paths,
        mode: room.logic.get().map(|(m, _, _)| m.clone()),
        logic: room
            .logic
            .get()
            .and_then(|(_, _, r)| r.lock().ok().map(|v| v.clone())),
    }
}

async fn create_room(
    State(api): State<AppState>,
    Player(me): Player,
    OptionalBody(req): OptionalBody<CreateRoom>,
) -> Result<Created<RoomInfo>, Error> {
    let req = req.unwrap_or_default();
    let room = api
        .rooms
        .make(req.max_players, req.mode.as_deref(), MadeFor::Player(me))?;
    Ok(Created(room_info(&room)))
}

fn no_room(id: u64) -> Error {
    Error::not_found(format!("room {id} does not exist"))
}

async fn get_room(
    State(api): State<AppState>,
    _: Player,
    Path(id): Path<u64>,
) -> Result<Json<RoomInfo>, Error> {
    let room = api.rooms.get(id).ok_or_else(|| no_room(id))?;
    Ok(Json(room_info(&room)))
}

async fn join_room(
    State(api): State<AppState>,
    Player(player_id): Player,
    Path(id): Path<u64>,
    Body(req): Body<JoinRoom>,
) -> Result<Json<JoinTicket>, Error> {
    let fingerprint = Fingerprint::from_hex(&req.fingerprint)
        .map_err(|e| Error::bad_request(format!("fingerprint: {e}")))?;
    let room = api.rooms.get(id).ok_or_else(|| no_room(id))?;
    if let Some(r) = room.reserved.get() {
        if !r.contains(&player_id) {
            return Err(Error::new(
                StatusCode::FORBIDDEN,
                "not_in_match",
                format!("room {id} was made for a match you are not in"),
            ));
        }
    }
    let members = room.player_ids();
    if members.len() >= room.max_players as usize && !members.contains(&player_id) {
        return Err(Error::new(
            StatusCode::CONFLICT,
            "room_full",
            format!("room {id} is full"),
        ));
    }
    let lifetime = api.cfg.ticket_lifetime_ms;
    let ticket = Ticket {
        player_id,
        room_id: id,
        node_addr: api.public_addr,
        fingerprint,
        expires_at_ms: crate::state::unix_ms() + lifetime,
    };
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = ticket.seal(&api.ticket_key, nonce);
    Ok(Json(JoinTicket {
        room_id: id,
        player_id,
        node_addr: api.public_addr.to_string(),
        node_fingerprint: api.identity.fingerprint.to_hex(),
        ticket: volley_proto::to_hex(&sealed),
        expires_in_ms: lifetime,
    }))
}
