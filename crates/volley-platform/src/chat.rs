//! Chat: channels for lobbies and parties (`lobby.<id>`), direct messages (`dm.<a>.<b>`, a < b)
//! and rooms (`room.<id>`, members as the room directory reports them). Messages are persisted
//! and paged newest first; each is delivered live to every member through the bus. Senders are
//! rate limited and messages size limited.

use std::sync::Arc;

use sqlx::Row;
use volley_proto::api::{ChatMessage, ChatPage, Event};

use crate::{now_ms, AccountId, ErrorKind, Platform, PlatformError};

/// Largest history page.
pub const MAX_PAGE: usize = 100;

/// Who is in a game room: the node's room table answers for rooms it hosts.
pub trait RoomDirectory: Send + Sync + std::fmt::Debug {
    /// The players of `room`, or `None` if it does not exist here.
    fn members(&self, room: u64) -> Option<Vec<AccountId>>;
}

pub use volley_proto::api::Channel;

fn parse_channel(s: &str) -> Result<Channel, PlatformError> {
    Channel::parse(s).ok_or_else(|| {
        PlatformError::bad(
            "bad_channel",
            "channel must be lobby.<id>, dm.<a>.<b> (a < b) or room.<id>",
        )
    })
}

impl Platform {
    /// Lets chat see the node's rooms. Only the first directory set is used; a later one is
    /// dropped with a warning.
    pub fn set_room_directory(&self, dir: Arc<dyn RoomDirectory>) {
        if self.inner.rooms.set(dir).is_err() {
            tracing::warn!("a room directory was set already; the new one is dropped");
        }
    }

    /// Members of `ch` if `me` may read it.
    async fn channel_members(
        &self,
        me: AccountId,
        ch: Channel,
    ) -> Result<Vec<AccountId>, PlatformError> {
        let members = match ch {
            Channel::Lobby(id) => self.lobby_members(id).await?,
            Channel::Direct(a, b) => vec![a, b],
            Channel::Room(id) => self
                .inner
                .rooms
                .get()
                .and_then(|d| d.members(id))
                .unwrap_or_default(),
        };
        if !members.contains(&me) {
            return Err(PlatformError::forbidden("you are not in this channel"));
        }
        Ok(members)
    }

    /// Sends `body` to `channel` as `me`.
    pub async fn send_chat(
        &self,
        me: AccountId,
        channel: &str,
        body: &str,
    ) -> Result<ChatMessage, PlatformError> {
        let ch = parse_channel(channel)?;
        let cfg = self.config();
        if body.is_empty() || body.len() > cfg.chat_max_bytes {
            return Err(PlatformError::bad(
                "bad_body",
                format!("message must be 1-{} bytes", cfg.chat_max_bytes),
            ));
        }
        if body
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(PlatformError::bad("bad_body", "no control characters"));
        }
        let members = self.channel_members(me, ch).await?;
        if let Channel::Direct(a, b) = ch {
            let other = if a == me { b } else { a };
            if !self.is_active(other).await? {
                return Err(PlatformError::not_found("player"));
            }
            if self.blocks(other, me).await? {
                return Err(PlatformError::forbidden(
                    "this player does not accept your messages",
                ));
            }
        }
        let now = now_ms();
        self.inner.chat_limits.take(&me, now).map_err(|retry| {
            PlatformError::new(
                ErrorKind::TooMany(retry),
                "rate_limited",
                format!("sending too fast; retry in {retry} ms"),
            )
        })?;
        let id: i64 = sqlx::query(
            "INSERT INTO chat_messages (channel, sender_id, body, created_ms) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(ch.name())
        .bind(me as i64)
        .bind(body)
        .bind(now)
        .fetch_one(self.db().writer())
        .await?
        .try_get("id")?;
        let msg = ChatMessage {
            id,
            channel: ch.name(),
            sender: me,
            body: body.to_owned(),
            created_ms: now,
        };
        self.notify_all(
            members,
            &Event::Chat {
                message: msg.clone(),
            },
        )
        .await?;
        Ok(msg)
    }

    /// History of `channel`, newest first, messages with id < `before` (all when `None`).
    pub async fn chat_history(
        &self,
        me: AccountId,
        channel: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<ChatPage, PlatformError> {
        let ch = parse_channel(channel)?;
        self.channel_members(me, ch).await?;
        let limit = limit.clamp(1, MAX_PAGE);
        let rows = sqlx::query(
            "SELECT id, sender_id, body, created_ms FROM chat_messages \
             WHERE channel = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(ch.name())
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit as i64 + 1)
        .fetch_all(self.db().reader())
        .await?;
        let mut messages = rows
            .into_iter()
            .map(|r| {
                Ok(ChatMessage {
                    id: r.try_get("id")?,
                    channel: ch.name(),
                    sender: r.try_get::<i64, _>("sender_id")? as AccountId,
                    body: r.try_get("body")?,
                    created_ms: r.try_get("created_ms")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let next_before = if messages.len() > limit {
            messages.truncate(limit);
            messages.last().map(|m| m.id)
        } else {
            None
        };
        Ok(ChatPage {
            messages,
            next_before,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip_and_reject_junk() {
        for s in ["lobby.7", "dm.1.2", "room.99"] {
            assert_eq!(parse_channel(s).unwrap().name(), s);
        }
        assert_eq!(Channel::direct(9, 3).name(), "dm.3.9");
        for s in [
            "", "lobby", "lobby.x", "dm.2.1", "dm.1.1", "room.1.2", "x.1", "lobby.-1",
        ] {
            assert!(parse_channel(s).is_err(), "{s}");
        }
    }
}
