//! The HTTP API: device login, rooms, connect tickets, health and metrics.
//!
//! Every error is a JSON [`ApiError`] with a stable code; bodies are parsed by hand so a bad body
//! gets a 400 with a reason, never a framework default.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::RngCore;
use serde::de::DeserializeOwned;
use volley_proto::api::{ApiError, CreateRoom, JoinRoom, JoinTicket, PathInfo, RoomInfo};
use volley_proto::ticket::{Ticket, NONCE_BYTES};
use volley_proto::{Fingerprint, PlayerId};

use crate::room::Room;
use crate::{unix_ms, Shared};

/// Request bodies are small JSON documents; anything larger is refused before parsing.
const BODY_BYTES_MAX: usize = 16 * 1024;

pub(crate) type Api = Arc<Shared>;

pub(crate) struct Error(
    pub(crate) StatusCode,
    pub(crate) &'static str,
    pub(crate) String,
    pub(crate) Option<u64>,
);

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut r = (
            self.0,
            Json(ApiError {
                code: self.1.to_owned(),
                message: self.2,
            }),
        )
            .into_response();
        if let Some(ms) = self.3 {
            if let Ok(v) = header::HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

impl From<volley_platform::PlatformError> for Error {
    fn from(e: volley_platform::PlatformError) -> Self {
        use volley_platform::ErrorKind as K;
        let (status, retry) = match e.kind {
            K::BadRequest => (StatusCode::BAD_REQUEST, None),
            K::Unauthorized => (StatusCode::UNAUTHORIZED, None),
            K::Forbidden => (StatusCode::FORBIDDEN, None),
            K::NotFound => (StatusCode::NOT_FOUND, None),
            K::Conflict => (StatusCode::CONFLICT, None),
            K::TooMany(ms) => (StatusCode::TOO_MANY_REQUESTS, Some(ms)),
            K::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, Some(1000)),
            K::Internal => (StatusCode::SERVICE_UNAVAILABLE, Some(1000)),
        };
        Error(status, e.code, e.message, retry)
    }
}

pub(crate) fn bad(msg: impl Into<String>) -> Error {
    Error(StatusCode::BAD_REQUEST, "bad_request", msg.into(), None)
}

pub(crate) fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

/// The bearer token of a request, from `Authorization: Bearer ...`.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, Error> {
    let unauthorized =
        |m: &str| Error(StatusCode::UNAUTHORIZED, "unauthorized", m.to_owned(), None);
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <token> header"))?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or_else(|| unauthorized("Authorization must be 'Bearer <token>'"))?;
    Ok(token.trim())
}

pub(crate) async fn authed(api: &Api, headers: &HeaderMap) -> Result<PlayerId, Error> {
    Ok(api.platform.authenticate(bearer(headers)?).await?)
}

pub(crate) async fn serve(api: Api, listener: tokio::net::TcpListener) {
    let app = Router::new()
        .route(
            "/v1/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/v1/rooms", post(create_room))
        .route("/v1/rooms/{id}", get(get_room))
        .route("/v1/rooms/{id}/join", post(join_room))
        .route("/metrics", get(metrics))
        .merge(crate::api::routes())
        .fallback(|| async {
            Error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint".into(),
                None,
            )
        })
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(api);
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}

async fn metrics(State(api): State<Api>) -> Response {
    let (direct, relay) = api
        .rooms
        .lock()
        .map(|rooms| {
            let mut d = 0;
            let mut r = 0;
            for room in rooms.values() {
                if let Ok(paths) = room.paths.lock() {
                    for (kind, _) in paths.values() {
                        match kind {
                            volley_proto::msg::PathKind::Direct => d += 1,
                            volley_proto::msg::PathKind::Relay => r += 1,
                        }
                    }
                }
            }
            (d, r)
        })
        .unwrap_or((0, 0));
    api.metrics.paths_direct.store(direct, Ordering::Relaxed);
    api.metrics.paths_relay.store(relay, Ordering::Relaxed);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.metrics.render(),
    )
        .into_response()
}

fn room_info(room: &Room) -> RoomInfo {
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
    State(api): State<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<RoomInfo>), Error> {
    authed(&api, &headers).await?;
    let req: CreateRoom = if body.is_empty() {
        CreateRoom::default()
    } else {
        parse(&body)?
    };
    let room = make_room(&api, req.max_players, req.mode.as_deref(), None)?;
    Ok((StatusCode::CREATED, Json(room_info(&room))))
}

/// Makes a room (`reserved`: only these players may join it).
pub(crate) fn make_room(
    api: &Shared,
    max_players: Option<u32>,
    mode: Option<&str>,
    reserved: Option<Vec<PlayerId>>,
) -> Result<Arc<Room>, Error> {
    let max = max_players.unwrap_or(api.cfg.room_players_default);
    if !(2..=api.cfg.room_players_max).contains(&max) {
        return Err(bad(format!(
            "max_players must be 2..={}",
            api.cfg.room_players_max
        )));
    }
    let mut rooms = api.rooms.lock().map_err(|_| {
        Error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "internal lock".into(),
            None,
        )
    })?;
    if rooms.len() >= api.cfg.rooms_max {
        return Err(Error(
            StatusCode::SERVICE_UNAVAILABLE,
            "room_limit",
            "this node hosts its maximum number of rooms".into(),
            None,
        ));
    }
    let logic = match (mode, &api.logic) {
        (None, _) => None,
        (Some(mode), Some(factory)) => Some(
            factory
                .create(mode, max)
                .map_err(|e| bad(format!("mode {mode:?}: {e}")))?,
        ),
        (Some(mode), None) => {
            return Err(bad(format!("this node runs no game logic (mode {mode:?})")));
        }
    };
    let id = api.next_room.fetch_add(1, Ordering::Relaxed);
    let room = Arc::new(Room::new(id, max));
    if let (Some(logic), Some(mode)) = (logic, mode) {
        let (tx, report) = crate::logic::spawn(&room, logic, api.metrics.clone());
        let _ = room.logic.set((mode.to_owned(), tx, report));
    }
    if let Some(r) = reserved {
        let _ = room.reserved.set(r);
    }
    rooms.insert(id, room.clone());
    api.metrics
        .rooms
        .store(rooms.len() as u64, Ordering::Relaxed);
    Ok(room)
}

async fn get_room(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RoomInfo>, Error> {
    authed(&api, &headers).await?;
    let id: u64 = id.parse().map_err(|_| bad("room id must be a number"))?;
    let room = api.room(id).ok_or(Error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("room {id} does not exist"),
        None,
    ))?;
    Ok(Json(room_info(&room)))
}

async fn join_room(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<JoinTicket>, Error> {
    let player_id = authed(&api, &headers).await?;
    let id: u64 = id.parse().map_err(|_| bad("room id must be a number"))?;
    let req: JoinRoom = parse(&body)?;
    let fingerprint =
        Fingerprint::from_hex(&req.fingerprint).map_err(|e| bad(format!("fingerprint: {e}")))?;
    let room = api.room(id).ok_or(Error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("room {id} does not exist"),
        None,
    ))?;
    if let Some(r) = room.reserved.get() {
        if !r.contains(&player_id) {
            return Err(Error(
                StatusCode::FORBIDDEN,
                "not_in_match",
                format!("room {id} was made for a match you are not in"),
                None,
            ));
        }
    }
    let members = room.player_ids();
    if members.len() >= room.max_players as usize && !members.contains(&player_id) {
        return Err(Error(
            StatusCode::CONFLICT,
            "room_full",
            format!("room {id} is full"),
            None,
        ));
    }
    let lifetime = api.cfg.ticket_lifetime_ms;
    let ticket = Ticket {
        player_id,
        room_id: id,
        node_addr: api.public_addr,
        fingerprint,
        expires_at_ms: unix_ms() + lifetime,
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
