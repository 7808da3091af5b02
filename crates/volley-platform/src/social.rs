//! Friends: request, accept, remove, block. Each relation is two rows, one per side, so "my
//! friends" is one indexed query.

use sqlx::Row;
use volley_proto::api::{Event, Friend, FriendPage};

use crate::{now_ms, AccountId, Platform, PlatformError};

const INVITE_SENT: i64 = 0;
const INVITE_RECEIVED: i64 = 1;
const FRIEND: i64 = 2;
const BLOCKED: i64 = 3;

fn state_name(s: i64) -> &'static str {
    match s {
        INVITE_SENT => "invite_sent",
        INVITE_RECEIVED => "invite_received",
        FRIEND => "friend",
        _ => "blocked",
    }
}

/// Most friends (and pending requests) per player.
pub const MAX_FRIENDS: i64 = 1000;

impl Platform {
    async fn friend_state(&self, a: AccountId, b: AccountId) -> Result<Option<i64>, PlatformError> {
        let row = sqlx::query("SELECT state FROM friends WHERE account_id = $1 AND other_id = $2")
            .bind(a as i64)
            .bind(b as i64)
            .fetch_optional(self.db().reader())
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("state")?),
            None => None,
        })
    }

    async fn put_friend(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        a: AccountId,
        b: AccountId,
        state: i64,
    ) -> Result<(), PlatformError> {
        sqlx::query(
            "INSERT INTO friends (account_id, other_id, state, updated_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account_id, other_id) DO UPDATE SET state = $3, updated_ms = $4",
        )
        .bind(a as i64)
        .bind(b as i64)
        .bind(state)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Sends a friend request to `other`, or accepts theirs if they sent one.
    pub async fn add_friend(
        &self,
        me: AccountId,
        other: AccountId,
    ) -> Result<Friend, PlatformError> {
        if me == other {
            return Err(PlatformError::bad("self", "you cannot befriend yourself"));
        }
        if !self.is_active(other).await? {
            return Err(PlatformError::not_found("player"));
        }
        let mine = self.friend_state(me, other).await?;
        let theirs = self.friend_state(other, me).await?;
        if theirs == Some(BLOCKED) {
            // Indistinguishable from success for the sender, so blocking cannot be probed.
            return Ok(Friend {
                player_id: other,
                state: "invite_sent".into(),
            });
        }
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM friends WHERE account_id = $1")
            .bind(me as i64)
            .fetch_one(self.db().reader())
            .await?
            .try_get("n")?;
        if n >= MAX_FRIENDS && mine.is_none() {
            return Err(PlatformError::conflict(
                "too_many_friends",
                "friend list is full",
            ));
        }
        let mut tx = self.db().writer().begin().await?;
        let (state, event) = match mine {
            Some(FRIEND) | Some(INVITE_SENT) => {
                return Ok(Friend {
                    player_id: other,
                    state: state_name(mine.unwrap_or(FRIEND)).into(),
                })
            }
            Some(INVITE_RECEIVED) => {
                Self::put_friend(&mut tx, me, other, FRIEND).await?;
                Self::put_friend(&mut tx, other, me, FRIEND).await?;
                (FRIEND, "friend")
            }
            _ => {
                Self::put_friend(&mut tx, me, other, INVITE_SENT).await?;
                Self::put_friend(&mut tx, other, me, INVITE_RECEIVED).await?;
                (INVITE_SENT, "invite_received")
            }
        };
        tx.commit().await?;
        self.notify(
            other,
            &Event::Friend {
                player_id: me,
                state: event.into(),
            },
        )
        .await?;
        Ok(Friend {
            player_id: other,
            state: state_name(state).into(),
        })
    }

    /// Removes a friend, declines or withdraws a request, or unblocks.
    pub async fn remove_friend(
        &self,
        me: AccountId,
        other: AccountId,
    ) -> Result<(), PlatformError> {
        let mut tx = self.db().writer().begin().await?;
        sqlx::query("DELETE FROM friends WHERE account_id = $1 AND other_id = $2")
            .bind(me as i64)
            .bind(other as i64)
            .execute(&mut *tx)
            .await?;
        // Their side goes too unless they block me.
        sqlx::query("DELETE FROM friends WHERE account_id = $1 AND other_id = $2 AND state <> $3")
            .bind(other as i64)
            .bind(me as i64)
            .bind(BLOCKED)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.notify(
            other,
            &Event::Friend {
                player_id: me,
                state: "removed".into(),
            },
        )
        .await?;
        Ok(())
    }

    /// Blocks `other`: any relation ends, their requests are silently dropped.
    pub async fn block(&self, me: AccountId, other: AccountId) -> Result<(), PlatformError> {
        if me == other {
            return Err(PlatformError::bad("self", "you cannot block yourself"));
        }
        if !self.is_active(other).await? {
            return Err(PlatformError::not_found("player"));
        }
        let mut tx = self.db().writer().begin().await?;
        Self::put_friend(&mut tx, me, other, BLOCKED).await?;
        sqlx::query("DELETE FROM friends WHERE account_id = $1 AND other_id = $2 AND state <> $3")
            .bind(other as i64)
            .bind(me as i64)
            .bind(BLOCKED)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether `a` has blocked `b`.
    pub async fn blocks(&self, a: AccountId, b: AccountId) -> Result<bool, PlatformError> {
        Ok(self.friend_state(a, b).await? == Some(BLOCKED))
    }

    /// `me`'s friends, requests and blocks.
    pub async fn friends(&self, me: AccountId) -> Result<Vec<Friend>, PlatformError> {
        let rows = sqlx::query(
            "SELECT other_id, state FROM friends WHERE account_id = $1 ORDER BY other_id LIMIT $2",
        )
        .bind(me as i64)
        .bind(MAX_FRIENDS + 1000)
        .fetch_all(self.db().reader())
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Friend {
                    player_id: r.try_get::<i64, _>("other_id")? as AccountId,
                    state: state_name(r.try_get("state")?).into(),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// A page of `me`'s friends, requests and blocks by the other player's id: at most `limit`
    /// (<= 100) after `after`, and the next page's cursor when there is one.
    pub async fn friends_page(
        &self,
        me: AccountId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<FriendPage, PlatformError> {
        let limit = limit.clamp(1, 100);
        let rows = sqlx::query(
            "SELECT other_id, state FROM friends WHERE account_id = $1 AND other_id > $2 \
             ORDER BY other_id LIMIT $3",
        )
        .bind(me as i64)
        .bind(after.map_or(-1, |a| a.min(i64::MAX as u64) as i64))
        .bind(limit as i64 + 1)
        .fetch_all(self.db().reader())
        .await?;
        let mut friends = rows
            .into_iter()
            .map(|r| {
                Ok(Friend {
                    player_id: r.try_get::<i64, _>("other_id")? as AccountId,
                    state: state_name(r.try_get("state")?).into(),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let next_after = if friends.len() > limit {
            friends.truncate(limit);
            friends.last().map(|f| f.player_id)
        } else {
            None
        };
        Ok(FriendPage {
            friends,
            next_after,
        })
    }

    /// Accepted friends only.
    pub async fn friend_ids(&self, me: AccountId) -> Result<Vec<AccountId>, PlatformError> {
        let rows = sqlx::query("SELECT other_id FROM friends WHERE account_id = $1 AND state = $2")
            .bind(me as i64)
            .bind(FRIEND)
            .fetch_all(self.db().reader())
            .await?;
        rows.into_iter()
            .map(|r| Ok(r.try_get::<i64, _>("other_id")? as AccountId))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Into::into)
    }
}
