//! Parties and lobbies: groups of players with a leader.
//!
//! A *party* is small and invite-based, a player is in at most one, and it enters matchmaking as
//! one ticket. A *lobby* is searchable by its attributes. A *group* is a lasting community (a
//! clan, a guild) of up to 1,000 members with its own chat channel. Capacity holds under concurrent joins
//! on both backends: a join claims a seat with one conditional `UPDATE` of the lobby's member
//! count (a row lock on PostgreSQL, the single writer on SQLite) before it inserts the member.

use sqlx::Row;
use volley_proto::api::{CreateLobby, Event, LobbyInfo, LobbyPage, UpdateLobby};

use crate::{now_ms, AccountId, Platform, PlatformError};

const MEMBER: i64 = 0;
const LEADER: i64 = 1;
/// Largest party.
pub const MAX_PARTY: u32 = 16;
/// Largest lobby.
pub const MAX_LOBBY: u32 = 256;
/// Largest group.
pub const MAX_GROUP: u32 = 1000;
/// Most results of a search.
pub const MAX_SEARCH: usize = 100;

type Attrs = serde_json::Map<String, serde_json::Value>;

fn check_attrs(attrs: &Attrs) -> Result<(), PlatformError> {
    if attrs.len() > 16 {
        return Err(PlatformError::bad("bad_attrs", "at most 16 attributes"));
    }
    for (k, v) in attrs {
        let ok_key = (1..=32).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic());
        let ok_val = match v {
            serde_json::Value::String(s) => s.len() <= 128,
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => true,
            _ => false,
        };
        if !ok_key || !ok_val {
            return Err(PlatformError::bad(
                "bad_attrs",
                format!("attribute {k:?}: keys 1-32 printable characters, values strings (<= 128 bytes), numbers or booleans"),
            ));
        }
    }
    Ok(())
}

fn lobby_event(id: u64, what: &str, player: AccountId) -> Event {
    Event::Lobby {
        lobby_id: id,
        what: what.into(),
        player_id: player,
    }
}

impl Platform {
    /// Creates a party or lobby led by `me`.
    pub async fn create_lobby(
        &self,
        me: AccountId,
        req: &CreateLobby,
    ) -> Result<LobbyInfo, PlatformError> {
        let max = match req.kind.as_str() {
            "party" => MAX_PARTY,
            "lobby" => MAX_LOBBY,
            "group" => MAX_GROUP,
            _ => {
                return Err(PlatformError::bad(
                    "bad_kind",
                    "kind must be party, lobby or group",
                ))
            }
        };
        if req.max_members == 0 || req.max_members > max {
            return Err(PlatformError::bad(
                "bad_max_members",
                format!("max_members must be 1-{max} for a {}", req.kind),
            ));
        }
        let name = req.name.clone().unwrap_or_else(|| req.kind.clone());
        if !(1..=64).contains(&name.chars().count()) || name.chars().any(char::is_control) {
            return Err(PlatformError::bad(
                "bad_name",
                "name must be 1-64 characters",
            ));
        }
        check_attrs(&req.attrs)?;
        if req.kind == "party" {
            self.leave_current_party_check(me).await?;
        }
        let attrs = serde_json::Value::Object(req.attrs.clone()).to_string();
        let now = now_ms();
        let mut tx = self.db().writer().begin().await?;
        let id: i64 = sqlx::query(
            "INSERT INTO lobbies (kind, name, owner_id, max_members, member_count, open, attrs, created_ms) \
             VALUES ($1, $2, $3, $4, 1, $5, $6, $7) RETURNING id",
        )
        .bind(&req.kind)
        .bind(&name)
        .bind(me as i64)
        .bind(i64::from(req.max_members))
        .bind(i64::from(req.open))
        .bind(attrs)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
        sqlx::query(
            "INSERT INTO lobby_members (lobby_id, account_id, role, joined_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(me as i64)
        .bind(LEADER)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.lobby(id as u64).await
    }

    async fn leave_current_party_check(&self, me: AccountId) -> Result<(), PlatformError> {
        if self.party_of(me).await?.is_some() {
            return Err(PlatformError::conflict(
                "already_in_party",
                "leave your party first",
            ));
        }
        Ok(())
    }

    /// The party `me` is in, if any.
    pub async fn party_of(&self, me: AccountId) -> Result<Option<u64>, PlatformError> {
        let row = sqlx::query(
            "SELECT m.lobby_id FROM lobby_members m JOIN lobbies l ON l.id = m.lobby_id \
             WHERE m.account_id = $1 AND l.kind = 'party'",
        )
        .bind(me as i64)
        .fetch_optional(self.db().reader())
        .await?;
        Ok(match row {
            Some(r) => Some(r.try_get::<i64, _>("lobby_id")? as u64),
            None => None,
        })
    }

    /// A party or lobby.
    pub async fn lobby(&self, id: u64) -> Result<LobbyInfo, PlatformError> {
        let row =
            sqlx::query("SELECT kind, name, max_members, open, attrs FROM lobbies WHERE id = $1")
                .bind(id as i64)
                .fetch_optional(self.db().reader())
                .await?
                .ok_or_else(|| PlatformError::not_found("lobby"))?;
        let members = sqlx::query(
            "SELECT account_id, role FROM lobby_members WHERE lobby_id = $1 ORDER BY joined_ms, account_id",
        )
        .bind(id as i64)
        .fetch_all(self.db().reader())
        .await?;
        let mut leader = 0;
        let mut ids = Vec::with_capacity(members.len());
        for m in members {
            let a = m.try_get::<i64, _>("account_id")? as u64;
            if m.try_get::<i64, _>("role")? == LEADER {
                leader = a;
            }
            ids.push(a);
        }
        let attrs: String = row.try_get("attrs")?;
        let attrs = match serde_json::from_str(&attrs) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => Attrs::new(),
        };
        Ok(LobbyInfo {
            lobby_id: id,
            kind: row.try_get("kind")?,
            name: row.try_get("name")?,
            leader,
            members: ids,
            max_members: row
                .try_get::<i64, _>("max_members")?
                .clamp(0, i64::from(u32::MAX)) as u32,
            open: row.try_get::<i64, _>("open")? != 0,
            attrs,
        })
    }

    /// Members of a lobby (empty if none).
    pub async fn lobby_members(&self, id: u64) -> Result<Vec<AccountId>, PlatformError> {
        let rows = sqlx::query("SELECT account_id FROM lobby_members WHERE lobby_id = $1")
            .bind(id as i64)
            .fetch_all(self.db().reader())
            .await?;
        rows.into_iter()
            .map(|r| Ok(r.try_get::<i64, _>("account_id")? as AccountId))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn require_member(&self, id: u64, me: AccountId) -> Result<LobbyInfo, PlatformError> {
        let l = self.lobby(id).await?;
        if !l.members.contains(&me) {
            return Err(PlatformError::forbidden("you are not in this lobby"));
        }
        Ok(l)
    }

    async fn require_leader(&self, id: u64, me: AccountId) -> Result<LobbyInfo, PlatformError> {
        let l = self.require_member(id, me).await?;
        if l.leader != me {
            return Err(PlatformError::forbidden("only the leader may do that"));
        }
        Ok(l)
    }

    /// Invites `other` (any member may invite).
    pub async fn invite(
        &self,
        me: AccountId,
        id: u64,
        other: AccountId,
    ) -> Result<(), PlatformError> {
        let l = self.require_member(id, me).await?;
        if l.members.contains(&other) {
            return Err(PlatformError::conflict(
                "already_member",
                "already a member",
            ));
        }
        if !self.is_active(other).await? || self.blocks(other, me).await? {
            return Err(PlatformError::not_found("player"));
        }
        sqlx::query(
            "INSERT INTO lobby_invites (lobby_id, account_id, inviter_id, created_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (lobby_id, account_id) DO UPDATE SET inviter_id = $3, created_ms = $4",
        )
        .bind(id as i64)
        .bind(other as i64)
        .bind(me as i64)
        .bind(now_ms())
        .execute(self.db().writer())
        .await?;
        self.notify(other, &lobby_event(id, "invited", other)).await
    }

    /// Joins: allowed when the lobby is open or `me` was invited, while there is room.
    pub async fn join_lobby(&self, me: AccountId, id: u64) -> Result<LobbyInfo, PlatformError> {
        let l = self.lobby(id).await?;
        if l.members.contains(&me) {
            return Ok(l);
        }
        if l.kind == "party" {
            self.leave_current_party_check(me).await?;
        }
        let mut tx = self.db().writer().begin().await?;
        let invited =
            sqlx::query("DELETE FROM lobby_invites WHERE lobby_id = $1 AND account_id = $2")
                .bind(id as i64)
                .bind(me as i64)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
        if !l.open && !invited {
            return Err(PlatformError::forbidden("this lobby needs an invite"));
        }
        let seat = sqlx::query(
            "UPDATE lobbies SET member_count = member_count + 1 WHERE id = $1 AND member_count < max_members",
        )
        .bind(id as i64)
        .execute(&mut *tx)
        .await?;
        if seat.rows_affected() == 0 {
            return Err(PlatformError::conflict("lobby_full", "the lobby is full"));
        }
        let ins = sqlx::query(
            "INSERT INTO lobby_members (lobby_id, account_id, role, joined_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(id as i64)
        .bind(me as i64)
        .bind(MEMBER)
        .bind(now_ms())
        .execute(&mut *tx)
        .await;
        match ins {
            Ok(_) => {}
            Err(e) if volley_store::schema::is_unique_violation(&e) => return self.lobby(id).await,
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        let l = self.lobby(id).await?;
        self.notify_all(l.members.clone(), &lobby_event(id, "joined", me))
            .await?;
        Ok(l)
    }

    async fn remove_member(
        &self,
        id: u64,
        who: AccountId,
        what: &str,
    ) -> Result<(), PlatformError> {
        let before = self.lobby(id).await?;
        let mut tx = self.db().writer().begin().await?;
        let del = sqlx::query("DELETE FROM lobby_members WHERE lobby_id = $1 AND account_id = $2")
            .bind(id as i64)
            .bind(who as i64)
            .execute(&mut *tx)
            .await?;
        if del.rows_affected() == 0 {
            return Err(PlatformError::not_found("member"));
        }
        sqlx::query("UPDATE lobbies SET member_count = member_count - 1 WHERE id = $1")
            .bind(id as i64)
            .execute(&mut *tx)
            .await?;
        let rest: Vec<AccountId> = before
            .members
            .iter()
            .copied()
            .filter(|m| *m != who)
            .collect();
        if rest.is_empty() {
            sqlx::query("DELETE FROM lobby_invites WHERE lobby_id = $1")
                .bind(id as i64)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM lobbies WHERE id = $1")
                .bind(id as i64)
                .execute(&mut *tx)
                .await?;
        } else if before.leader == who {
            // The longest-standing member leads next.
            sqlx::query(
                "UPDATE lobby_members SET role = $1 WHERE lobby_id = $2 AND account_id = $3",
            )
            .bind(LEADER)
            .bind(id as i64)
            .bind(rest[0] as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.notify_all(before.members.iter().copied(), &lobby_event(id, what, who))
            .await?;
        if before.leader == who {
            if let Some(next) = rest.first() {
                self.notify_all(rest.iter().copied(), &lobby_event(id, "promoted", *next))
                    .await?;
            }
        }
        Ok(())
    }

    /// Leaves; the lobby closes when its last member leaves, and a leader's leaving promotes
    /// the longest-standing member.
    pub async fn leave_lobby(&self, me: AccountId, id: u64) -> Result<(), PlatformError> {
        self.require_member(id, me).await?;
        self.remove_member(id, me, "left").await
    }

    /// Removes `other` (leader only).
    pub async fn kick(
        &self,
        me: AccountId,
        id: u64,
        other: AccountId,
    ) -> Result<(), PlatformError> {
        let l = self.require_leader(id, me).await?;
        if other == me {
            return Err(PlatformError::bad(
                "self",
                "leave instead of kicking yourself",
            ));
        }
        if !l.members.contains(&other) {
            return Err(PlatformError::not_found("member"));
        }
        self.remove_member(id, other, "kicked").await
    }

    /// Makes `other` the leader (leader only).
    pub async fn promote(
        &self,
        me: AccountId,
        id: u64,
        other: AccountId,
    ) -> Result<(), PlatformError> {
        let l = self.require_leader(id, me).await?;
        if !l.members.contains(&other) {
            return Err(PlatformError::not_found("member"));
        }
        let mut tx = self.db().writer().begin().await?;
        for (who, role) in [(me, MEMBER), (other, LEADER)] {
            sqlx::query(
                "UPDATE lobby_members SET role = $1 WHERE lobby_id = $2 AND account_id = $3",
            )
            .bind(role)
            .bind(id as i64)
            .bind(who as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.notify_all(l.members, &lobby_event(id, "promoted", other))
            .await
    }

    /// Changes attributes or openness (leader only).
    pub async fn update_lobby(
        &self,
        me: AccountId,
        id: u64,
        req: &UpdateLobby,
    ) -> Result<LobbyInfo, PlatformError> {
        let l = self.require_leader(id, me).await?;
        if let Some(a) = &req.attrs {
            check_attrs(a)?;
            sqlx::query("UPDATE lobbies SET attrs = $1 WHERE id = $2")
                .bind(serde_json::Value::Object(a.clone()).to_string())
                .bind(id as i64)
                .execute(self.db().writer())
                .await?;
        }
        if let Some(open) = req.open {
            sqlx::query("UPDATE lobbies SET open = $1 WHERE id = $2")
                .bind(i64::from(open))
                .bind(id as i64)
                .execute(self.db().writer())
                .await?;
        }
        self.notify_all(l.members, &lobby_event(id, "updated", me))
            .await?;
        self.lobby(id).await
    }

    /// Open lobbies (or groups) of `kind` with room left whose attributes match every
    /// `filter` pair, newest first: at most `limit` (<= the search cap).
    pub async fn search_lobbies(
        &self,
        kind: &str,
        filter: &[(String, String)],
        limit: usize,
    ) -> Result<Vec<LobbyInfo>, PlatformError> {
        Ok(self
            .search_lobbies_page(kind, filter, None, limit)
            .await?
            .lobbies)
    }

    /// A page of [`Platform::search_lobbies`]: lobbies older than `before` (a previous page's
    /// `next_before`), and where to go on. A search scans at most 2,000 lobbies per page; when
    /// it stops there, or at `limit`, `next_before` says where the next page starts.
    pub async fn search_lobbies_page(
        &self,
        kind: &str,
        filter: &[(String, String)],
        before: Option<u64>,
        limit: usize,
    ) -> Result<LobbyPage, PlatformError> {
        const SCAN_MAX: i64 = 2000;
        if kind != "lobby" && kind != "group" {
            return Err(PlatformError::bad(
                "bad_kind",
                "search kind must be lobby or group",
            ));
        }
        let limit = limit.clamp(1, MAX_SEARCH);
        let rows = sqlx::query(
            "SELECT id, attrs FROM lobbies WHERE kind = $1 AND open = 1 \
             AND member_count < max_members AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(kind)
        .bind(before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64))
        .bind(SCAN_MAX)
        .fetch_all(self.db().reader())
        .await?;
        let scanned_all = (rows.len() as i64) < SCAN_MAX;
        let mut lobbies = Vec::new();
        let mut last_id = None;
        for r in rows {
            let id = r.try_get::<i64, _>("id")? as u64;
            last_id = Some(id);
            let attrs: String = r.try_get("attrs")?;
            let attrs: Attrs = match serde_json::from_str(&attrs) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => continue,
            };
            let hit = filter.iter().all(|(k, v)| {
                attrs.get(k).is_some_and(|a| match a {
                    serde_json::Value::String(s) => s == v,
                    other => v.as_str() == other.to_string().as_str(),
                })
            });
            if hit {
                lobbies.push(self.lobby(id).await?);
                if lobbies.len() >= limit {
                    return Ok(LobbyPage {
                        lobbies,
                        next_before: Some(id),
                    });
                }
            }
        }
        Ok(LobbyPage {
            lobbies,
            next_before: if scanned_all { None } else { last_id },
        })
    }
}
