//! Presence: a player is online while at least one event stream (WebSocket) is open on any
//! node. Each node records its own connections in the `presence` table (one row per player and
//! node), so the question "is X online" has one answer across the cluster, and tells the
//! player's friends through the bus when that answer changes.

use sqlx::Row;
use volley_proto::api::{Event, Presence};

use crate::{now_ms, AccountId, Platform, PlatformError};

impl Platform {
    /// Records that `account` connected to this node with `status`; tells friends if it was
    /// offline everywhere.
    pub async fn set_online(&self, account: AccountId, status: &str) -> Result<(), PlatformError> {
        let status: String = status
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        let was = self.presence(account).await?.online;
        sqlx::query(
            "INSERT INTO presence (account_id, node_id, status, updated_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account_id, node_id) DO UPDATE SET status = $3, updated_ms = $4",
        )
        .bind(account as i64)
        .bind(&self.config().node_id)
        .bind(&status)
        .bind(now_ms())
        .execute(self.db().writer())
        .await?;
        if !was {
            self.announce(account, Some(status)).await?;
        }
        Ok(())
    }

    /// Records that `account`'s last connection to this node closed; tells friends if it is
    /// now offline everywhere.
    pub async fn set_offline(&self, account: AccountId) -> Result<(), PlatformError> {
        sqlx::query("DELETE FROM presence WHERE account_id = $1 AND node_id = $2")
            .bind(account as i64)
            .bind(&self.config().node_id)
            .execute(self.db().writer())
            .await?;
        if !self.presence(account).await?.online {
            self.announce(account, None).await?;
        }
        Ok(())
    }

    /// Forgets every presence this node recorded (at start: a killed node left rows behind).
    pub async fn clear_node_presence(&self) -> Result<(), PlatformError> {
        sqlx::query("DELETE FROM presence WHERE node_id = $1")
            .bind(&self.config().node_id)
            .execute(self.db().writer())
            .await?;
        Ok(())
    }

    async fn announce(
        &self,
        account: AccountId,
        status: Option<String>,
    ) -> Result<(), PlatformError> {
        let ev = Event::Presence {
            presence: Presence {
                player_id: account,
                online: status.is_some(),
                status,
            },
        };
        let friends = self.friend_ids(account).await?;
        self.notify_all(friends, &ev).await
    }

    /// `account`'s presence across the cluster.
    pub async fn presence(&self, account: AccountId) -> Result<Presence, PlatformError> {
        let row = sqlx::query(
            "SELECT status FROM presence WHERE account_id = $1 ORDER BY updated_ms DESC LIMIT 1",
        )
        .bind(account as i64)
        .fetch_optional(self.db().reader())
        .await?;
        Ok(match row {
            Some(r) => Presence {
                player_id: account,
                online: true,
                status: Some(r.try_get("status")?),
            },
            None => Presence {
                player_id: account,
                online: false,
                status: None,
            },
        })
    }
}
