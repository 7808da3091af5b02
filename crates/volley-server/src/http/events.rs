//! The event WebSocket (`GET /v1/events`): a player's real-time events (chat, presence,
//! lobbies, friends, matches) one JSON object per text message, and what the player sends back
//! ([`ClientEvent`]: chat, presence status). Presence: the player is online while a socket is
//! open; the last socket closing on this node marks it offline here.

use aide::axum::routing::get_with;
use aide::axum::ApiRouter;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use schemars::JsonSchema;
use serde::Deserialize;
use volley_proto::api::{ClientEvent, Event};

use super::error::Error;
use super::extract::{bearer, ClientAddr, Query};
use super::{doc, AppState};
use crate::state::SocketSlot;

/// How often the node pings an open event socket.
const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(20);

/// Largest message a player may send on the socket.
const MESSAGE_BYTES_MAX: usize = 64 * 1024;

pub(super) fn routes() -> ApiRouter<AppState> {
    ApiRouter::new().api_route(
        "/v1/events",
        get_with(
            events,
            doc("WebSocket of real-time events (token in Authorization or ?token=)"),
        ),
    )
}

/// How a browser, which cannot set headers on a WebSocket, authenticates.
#[derive(Deserialize, JsonSchema)]
struct EventsQuery {
    /// The session token, when not in `Authorization`.
    token: Option<String>,
    /// The presence status to show while connected (default `online`).
    status: Option<String>,
}

async fn events(
    State(api): State<AppState>,
    ClientAddr(from): ClientAddr,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Error> {
    let ws = ws.map_err(|e| {
        Error::bad_request(format!(
            "open this endpoint as a WebSocket: {}",
            e.body_text()
        ))
    })?;
    let token = match &q.token {
        Some(t) => t.as_str(),
        None => bearer(&headers)?,
    };
    let me = api.platform.authenticate(token).await?;
    let slot = api.ws_reserve(me, from.ip()).map_err(|why| {
        Error::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_sockets",
            why,
        )
        .retry_after(5_000)
    })?;
    let stream = api.platform.events(me).await?;
    let status = q.status.unwrap_or_else(|| "online".into());
    Ok(ws
        .max_message_size(MESSAGE_BYTES_MAX)
        .on_upgrade(move |socket| run(api, me, slot, status, stream, socket)))
}

/// Sends one event; false when the socket is gone.
async fn send(socket: &mut WebSocket, ev: &Event) -> bool {
    match serde_json::to_string(ev) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "an event does not serialize");
            true
        }
    }
}

/// Acts on what the player sent; the event to answer with when it was refused.
async fn handle(api: &AppState, me: u64, text: &str) -> Option<Event> {
    let refused = |code: &str, message: String| Event::Error {
        code: code.to_owned(),
        message,
    };
    let msg: ClientEvent = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            return Some(refused(
                "bad_request",
                format!(
                    "expected {{\"type\": \"chat\"|\"presence\", ...}} (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            ))
        }
    };
    let done = match msg {
        ClientEvent::Chat { channel, body } => api
            .platform
            .send_chat(me, &channel, &body)
            .await
            .map(|_| ()),
        ClientEvent::Presence { status } => api.platform.set_online(me, &status).await,
    };
    done.err().map(|e| {
        let e = Error::from(e);
        refused(e.code, e.message)
    })
}

/// Pumps a player's events into its socket and its messages into the platform until either
/// side closes.
async fn run(
    api: AppState,
    me: u64,
    slot: SocketSlot,
    status: String,
    mut stream: volley_platform::events::EventStream,
    mut socket: WebSocket,
) {
    if slot.first {
        if let Err(e) = api.platform.set_online(me, &status).await {
            tracing::warn!(player = me, error = %e, "presence: could not mark online");
        }
    }
    if send(&mut socket, &Event::Ready { player_id: me }).await {
        // Pings keep idle sockets alive through proxies and find dead peers (a write fails).
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                _ = ping.tick() => {
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        break;
                    }
                }
                ev = stream.next() => {
                    let Some(ev) = ev else { break };
                    if !send(&mut socket, &ev).await {
                        break;
                    }
                }
                msg = socket.recv() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(answer) = handle(&api, me, text.as_str()).await {
                            if !send(&mut socket, &answer).await {
                                break;
                            }
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let answer = Event::Error {
                            code: "bad_request".into(),
                            message: "send JSON text messages".into(),
                        };
                        if !send(&mut socket, &answer).await {
                            break;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    // Pings are answered by the WebSocket layer.
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    if slot.release() {
        if let Err(e) = api.platform.set_offline(me).await {
            tracing::warn!(player = me, error = %e, "presence: could not mark offline");
        }
    }
}
