//! The per-player event stream: events are published on the bus under `user.<id>`; the
//! node a player's WebSocket is connected to subscribes to that subject, so an event reaches the
//! player whichever node produced it.

use volley_proto::api::Event;
use volley_store::Subscription;

use crate::{AccountId, Platform, PlatformError};

/// The bus subject of a player's events.
pub fn subject(account: AccountId) -> String {
    format!("user.{account}")
}

impl Platform {
    /// Sends `event` to `account` (wherever it is connected; dropped if nowhere).
    pub async fn notify(&self, account: AccountId, event: &Event) -> Result<(), PlatformError> {
        let bytes = serde_json::to_vec(event).map_err(|e| {
            PlatformError::new(crate::ErrorKind::Internal, "internal", e.to_string())
        })?;
        self.bus().publish(&subject(account), bytes).await?;
        Ok(())
    }

    /// Sends `event` to each of `accounts`.
    pub async fn notify_all(
        &self,
        accounts: impl IntoIterator<Item = AccountId>,
        event: &Event,
    ) -> Result<(), PlatformError> {
        for a in accounts {
            self.notify(a, event).await?;
        }
        Ok(())
    }

    /// Subscribes to `account`'s events (the WebSocket handler does this).
    pub async fn events(&self, account: AccountId) -> Result<EventStream, PlatformError> {
        Ok(EventStream {
            sub: self.bus().subscribe(&subject(account)).await?,
        })
    }
}

/// A player's events.
#[derive(Debug)]
pub struct EventStream {
    sub: Subscription,
}

impl EventStream {
    /// The next event; `None` when the bus closed. Undecodable messages are skipped.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            let m = self.sub.next().await?;
            match serde_json::from_slice(&m.payload) {
                Ok(e) => return Some(e),
                Err(e) => tracing::warn!(error = %e, "undecodable event on the bus"),
            }
        }
    }
}
