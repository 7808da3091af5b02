//! Matchmaking: tickets from players and parties go into the `volley-match` core; each match it
//! forms becomes a room on this node (through the [`RoomMaker`] the node installs), every member
//! is told over the event stream and can also poll the ticket (offline matchmaking: a ticket
//! needs no open socket, it lives until it matches, is cancelled or expires).
//!
//! Tickets are stored in the database as well as in the in-memory core, so a restarted node
//! reloads its queue. Each node matches the tickets submitted to it; ratings, matches and
//! results are shared through the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use sqlx::Row;
use volley_match::rating::{update_match, DEFAULT_TAU};
use volley_match::{
    Clause as MClause, Matchmaker, MatchmakerConfig, Member, Rating, Ticket, TicketId,
};
use volley_proto::api::{
    Clause, Event, MatchFound, MatchResult, RatingInfo, TicketRequest, TicketStatus,
};

use crate::{now_ms, AccountId, ErrorKind, Platform, PlatformError};

/// Longest a ticket may wait.
pub const MAX_TTL_MS: u64 = 3_600_000;
/// Default ticket lifetime.
pub const DEFAULT_TTL_MS: u64 = 300_000;

const QUEUED: i64 = 0;
const MATCHED: i64 = 1;
const EXPIRED: i64 = 2;
const CANCELLED: i64 = 3;

fn state_name(s: i64) -> &'static str {
    match s {
        QUEUED => "queued",
        MATCHED => "matched",
        EXPIRED => "expired",
        _ => "cancelled",
    }
}

/// Makes a room for a match; the node implements it over its room table.
pub trait RoomMaker: Send + Sync + std::fmt::Debug {
    /// A room for exactly `players` in `pool`; only they may join it.
    fn make_room(&self, pool: &str, players: &[AccountId]) -> Result<u64, String>;
}

/// What a stored ticket keeps besides its columns.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredTicket {
    request: TicketRequest,
    members: Vec<AccountId>,
    skills: Vec<f64>,
}

/// The node's matchmaker: the core plus the map between its ids and the API's ticket ids.
#[derive(Debug)]
pub(crate) struct Engine {
    state: Mutex<EngineState>,
    rooms: OnceLock<Arc<dyn RoomMaker>>,
}

#[derive(Debug)]
struct EngineState {
    core: Matchmaker,
    api_id: HashMap<TicketId, String>,
    core_id: HashMap<String, TicketId>,
}

impl Engine {
    pub(crate) fn new(cfg: MatchmakerConfig) -> Result<Engine, PlatformError> {
        let core = Matchmaker::new(cfg)
            .map_err(|e| PlatformError::bad("bad_matchmaker_config", e.to_string()))?;
        Ok(Engine {
            state: Mutex::new(EngineState {
                core,
                api_id: HashMap::new(),
                core_id: HashMap::new(),
            }),
            rooms: OnceLock::new(),
        })
    }
}

fn lock_err() -> PlatformError {
    PlatformError::new(ErrorKind::Internal, "internal", "matchmaker state poisoned")
}

fn core_error(e: volley_match::Error) -> PlatformError {
    match e {
        volley_match::Error::UserQueued { .. } => {
            PlatformError::conflict("already_queued", e.to_string())
        }
        volley_match::Error::UnknownPool(_) => PlatformError::bad("unknown_pool", e.to_string()),
        volley_match::Error::Full => {
            PlatformError::new(ErrorKind::Overloaded, "queue_full", e.to_string())
        }
        other => PlatformError::bad("bad_ticket", other.to_string()),
    }
}

fn rating_info(r: &Rating, games: u64) -> RatingInfo {
    RatingInfo {
        rating: r.rating,
        deviation: r.deviation,
        volatility: r.volatility,
        games,
    }
}

impl Platform {
    /// Lets the matchmaker make rooms. Only the first maker set is used; a later one is
    /// dropped with a warning.
    pub fn set_room_maker(&self, maker: Arc<dyn RoomMaker>) {
        if self.inner.matchmaker.rooms.set(maker).is_err() {
            tracing::warn!("a room maker was set already; the new one is dropped");
        }
    }

    /// `account`'s rating in `pool` (the default if it has none).
    pub async fn rating(
        &self,
        account: AccountId,
        pool: &str,
    ) -> Result<(Rating, u64), PlatformError> {
        let row = sqlx::query(
            "SELECT rating, deviation, volatility, games FROM ratings WHERE account_id = $1 AND pool = $2",
        )
        .bind(account as i64)
        .bind(pool)
        .fetch_optional(self.db().reader())
        .await?;
        Ok(match row {
            Some(r) => (
                Rating::new(
                    r.try_get("rating")?,
                    r.try_get("deviation")?,
                    r.try_get("volatility")?,
                ),
                r.try_get::<i64, _>("games")?.max(0) as u64,
            ),
            None => (Rating::default(), 0),
        })
    }

    /// The same, as the API shows it.
    pub async fn rating_info(
        &self,
        account: AccountId,
        pool: &str,
    ) -> Result<RatingInfo, PlatformError> {
        let (r, g) = self.rating(account, pool).await?;
        Ok(rating_info(&r, g))
    }

    /// Queues a ticket for `me` (or, with `party_id`, for the party `me` leads).
    pub async fn submit_ticket(
        &self,
        me: AccountId,
        req: &TicketRequest,
    ) -> Result<TicketStatus, PlatformError> {
        if req.pool.is_empty() || req.pool.len() > 64 {
            return Err(PlatformError::bad(
                "bad_pool",
                "pool must be 1-64 characters",
            ));
        }
        let members = match req.party_id {
            Some(party) => {
                let l = self.lobby(party).await?;
                if l.kind != "party" || l.leader != me {
                    return Err(PlatformError::forbidden(
                        "only the party's leader can queue the party",
                    ));
                }
                l.members
            }
            None => vec![me],
        };
        let ttl = req.ttl_ms.unwrap_or(DEFAULT_TTL_MS);
        if ttl == 0 || ttl > MAX_TTL_MS {
            return Err(PlatformError::bad(
                "bad_ttl",
                format!("ttl_ms must be 1..={MAX_TTL_MS}"),
            ));
        }
        let mut skills = Vec::with_capacity(members.len());
        for m in &members {
            skills.push(self.rating(*m, &req.pool).await?.0.rating);
        }
        let now = now_ms();
        let stored = StoredTicket {
            request: req.clone(),
            members,
            skills,
        };
        let id = crate::random_id();
        let expires = now + ttl as i64;
        self.enqueue(&id, &stored, now, expires)?;
        let body = serde_json::to_string(&stored)
            .map_err(|e| PlatformError::new(ErrorKind::Internal, "internal", e.to_string()))?;
        let ins = sqlx::query(
            "INSERT INTO mm_tickets (id, node_id, owner_id, pool, body, created_ms, expires_ms, state) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0)",
        )
        .bind(&id)
        .bind(&self.config().node_id)
        .bind(me as i64)
        .bind(&req.pool)
        .bind(body)
        .bind(now)
        .bind(expires)
        .execute(self.db().writer())
        .await;
        if let Err(e) = ins {
            self.dequeue(&id);
            return Err(e.into());
        }
        Ok(TicketStatus {
            ticket_id: id,
            state: "queued".into(),
            found: None,
        })
    }

    /// Puts a matched ticket whose match found no room back in this node's queue, if it is
    /// still queued (not cancelled meanwhile). A ticket that cannot be put back is logged: it
    /// stays queued in the database, and a node restart (`reload_tickets`) queues it again.
    async fn requeue(&self, id: &str, enqueued_at_ms: u64, expires_at_ms: u64) {
        let requeued = match self.load_ticket(id).await {
            Ok((_, st, QUEUED, _)) => {
                self.enqueue(id, &st, enqueued_at_ms as i64, expires_at_ms as i64)
            }
            // Cancelled (or otherwise settled) meanwhile: nothing to put back.
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(error) = requeued {
            tracing::warn!(
                ticket = id,
                %error,
                "a ticket whose match found no room could not be requeued"
            );
        }
    }

    fn enqueue(
        &self,
        id: &str,
        t: &StoredTicket,
        now: i64,
        expires: i64,
    ) -> Result<(), PlatformError> {
        let req = &t.request;
        let mut ticket = Ticket::new(
            req.pool.clone(),
            t.members
                .iter()
                .zip(&t.skills)
                .map(|(m, s)| Member::new(m.to_string(), *s))
                .collect(),
        )
        .expires_at(expires.max(0) as u64);
        for (k, v) in &req.string_props {
            ticket = ticket.with_string(k.clone(), v.clone());
        }
        for (k, v) in &req.numeric_props {
            ticket = ticket.with_number(k.clone(), *v);
        }
        let conv = |c: &Clause| match c {
            Clause::Eq { key, value } => MClause::eq(key.clone(), value.clone()),
            Clause::Range { key, min, max } => MClause::range(key.clone(), *min, *max),
        };
        for c in &req.must {
            ticket = ticket.must(conv(c));
        }
        for c in &req.must_not {
            ticket = ticket.must_not(conv(c));
        }
        for (region, rtt) in &req.latencies {
            ticket = ticket.with_latency(region.clone(), *rtt);
        }
        let mut st = self.inner.matchmaker.state.lock().map_err(|_| lock_err())?;
        let core_id = st.core.add(ticket, now.max(0) as u64).map_err(core_error)?;
        st.api_id.insert(core_id, id.to_owned());
        st.core_id.insert(id.to_owned(), core_id);
        Ok(())
    }

    fn dequeue(&self, id: &str) {
        match self.inner.matchmaker.state.lock() {
            Ok(mut st) => {
                if let Some(core) = st.core_id.remove(id) {
                    st.api_id.remove(&core);
                    st.core.remove(core);
                }
            }
            Err(_) => tracing::warn!(
                ticket = id,
                "matchmaker state poisoned; the ticket stays in this node's queue"
            ),
        }
    }

    /// Reloads this node's queued, unexpired tickets (after a restart).
    pub async fn reload_tickets(&self) -> Result<usize, PlatformError> {
        let now = now_ms();
        let rows = sqlx::query(
            "SELECT id, body, created_ms, expires_ms FROM mm_tickets WHERE node_id = $1 AND state = 0",
        )
        .bind(&self.config().node_id)
        .fetch_all(self.db().reader())
        .await?;
        let mut n = 0;
        for r in rows {
            let id: String = r.try_get("id")?;
            let expires: i64 = r.try_get("expires_ms")?;
            let body: String = r.try_get("body")?;
            let ok = expires > now
                && serde_json::from_str::<StoredTicket>(&body)
                    .ok()
                    .is_some_and(|t| self.enqueue(&id, &t, now, expires).is_ok());
            if ok {
                n += 1;
            } else {
                self.set_ticket_state(&id, EXPIRED, None).await?;
            }
        }
        Ok(n)
    }

    async fn set_ticket_state(
        &self,
        id: &str,
        state: i64,
        match_id: Option<&str>,
    ) -> Result<(), PlatformError> {
        sqlx::query("UPDATE mm_tickets SET state = $1, match_id = $2 WHERE id = $3 AND state = 0")
            .bind(state)
            .bind(match_id)
            .bind(id)
            .execute(self.db().writer())
            .await?;
        Ok(())
    }

    async fn load_ticket(
        &self,
        id: &str,
    ) -> Result<(i64, StoredTicket, i64, Option<String>), PlatformError> {
        let r = sqlx::query("SELECT owner_id, body, state, match_id FROM mm_tickets WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db().reader())
            .await?
            .ok_or_else(|| PlatformError::not_found("ticket"))?;
        let body: String = r.try_get("body")?;
        let t: StoredTicket = serde_json::from_str(&body)
            .map_err(|e| PlatformError::new(ErrorKind::Internal, "internal", e.to_string()))?;
        Ok((
            r.try_get("owner_id")?,
            t,
            r.try_get("state")?,
            r.try_get("match_id")?,
        ))
    }

    /// A ticket's state; any member of the ticket may ask.
    pub async fn ticket_status(
        &self,
        me: AccountId,
        id: &str,
    ) -> Result<TicketStatus, PlatformError> {
        if id.len() > 64 {
            return Err(PlatformError::not_found("ticket"));
        }
        let (_, t, state, match_id) = self.load_ticket(id).await?;
        if !t.members.contains(&me) {
            return Err(PlatformError::not_found("ticket"));
        }
        let found = match match_id {
            Some(m) => Some(self.match_found(&m).await?),
            None => None,
        };
        Ok(TicketStatus {
            ticket_id: id.to_owned(),
            state: state_name(state).into(),
            found,
        })
    }

    /// Cancels a queued ticket (its owner only).
    pub async fn cancel_ticket(&self, me: AccountId, id: &str) -> Result<(), PlatformError> {
        if id.len() > 64 {
            return Err(PlatformError::not_found("ticket"));
        }
        let (owner, _, state, _) = self.load_ticket(id).await?;
        if owner as u64 != me {
            return Err(PlatformError::not_found("ticket"));
        }
        if state != QUEUED {
            return Err(PlatformError::conflict(
                "not_queued",
                format!("the ticket is {}", state_name(state)),
            ));
        }
        self.dequeue(id);
        self.set_ticket_state(id, CANCELLED, None).await
    }

    async fn match_found(&self, match_id: &str) -> Result<MatchFound, PlatformError> {
        let r = sqlx::query("SELECT body FROM matches WHERE id = $1")
            .bind(match_id)
            .fetch_optional(self.db().reader())
            .await?
            .ok_or_else(|| PlatformError::not_found("match"))?;
        let body: String = r.try_get("body")?;
        serde_json::from_str(&body)
            .map_err(|e| PlatformError::new(ErrorKind::Internal, "internal", e.to_string()))
    }

    /// Queued tickets on this node.
    pub fn queued_tickets(&self) -> usize {
        self.inner
            .matchmaker
            .state
            .lock()
            .map(|s| s.core.len())
            .unwrap_or(0)
    }

    /// One matchmaking pass at `now`: forms matches, makes their rooms, records them, tells
    /// their players; expires old tickets. Returns the matches formed.
    pub async fn run_matchmaker(&self, now: i64) -> Result<Vec<MatchFound>, PlatformError> {
        let (out, ids) = {
            let mut st = self.inner.matchmaker.state.lock().map_err(|_| lock_err())?;
            let out = st.core.tick(now.max(0) as u64);
            let mut ids: HashMap<TicketId, String> = HashMap::new();
            for m in &out.matches {
                for t in &m.tickets {
                    if let Some(a) = st.api_id.remove(&t.id) {
                        st.core_id.remove(&a);
                        ids.insert(t.id, a);
                    }
                }
            }
            for e in &out.expired {
                if let Some(a) = st.api_id.remove(e) {
                    st.core_id.remove(&a);
                    ids.insert(*e, a);
                }
            }
            (out, ids)
        };
        for e in &out.expired {
            if let Some(a) = ids.get(e) {
                self.set_ticket_state(a, EXPIRED, None).await?;
            }
        }
        let mut found = Vec::new();
        for m in out.matches {
            let players: Vec<AccountId> = m
                .user_ids()
                .filter_map(|u| u.parse::<AccountId>().ok())
                .collect();
            let room = match self.inner.matchmaker.rooms.get() {
                Some(maker) => maker.make_room(&m.pool, &players),
                None => Err("no room maker installed".into()),
            };
            let room_id = match room {
                Ok(r) => r,
                Err(e) => {
                    // No capacity: the tickets go back in the queue with their wait kept
                    // short of nothing; they will match again on a later pass.
                    tracing::warn!(error = %e, "no room for a match; requeueing");
                    for t in &m.tickets {
                        if let Some(a) = ids.get(&t.id) {
                            self.requeue(a, t.enqueued_at_ms, t.ticket.expires_at_ms)
                                .await;
                        }
                    }
                    continue;
                }
            };
            let match_id = crate::random_id();
            let mf = MatchFound {
                match_id: match_id.clone(),
                room_id,
                pool: m.pool.clone(),
                region: m.region.clone(),
                players: players.clone(),
                skill_spread: m.quality.skill_spread,
                max_latency_ms: m.quality.max_latency_ms.unwrap_or(0),
                max_wait_ms: m.quality.max_wait_ms,
            };
            let body = serde_json::to_string(&mf)
                .map_err(|e| PlatformError::new(ErrorKind::Internal, "internal", e.to_string()))?;
            let mut tx = self.db().writer().begin().await?;
            sqlx::query(
                "INSERT INTO matches (id, room_id, node_id, pool, body, created_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&match_id)
            .bind(room_id as i64)
            .bind(&self.config().node_id)
            .bind(&m.pool)
            .bind(body)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            for p in &players {
                sqlx::query("INSERT INTO match_members (match_id, account_id) VALUES ($1, $2)")
                    .bind(&match_id)
                    .bind(*p as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            for t in &m.tickets {
                if let Some(a) = ids.get(&t.id) {
                    sqlx::query("UPDATE mm_tickets SET state = $1, match_id = $2 WHERE id = $3")
                        .bind(MATCHED)
                        .bind(&match_id)
                        .bind(a)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            self.notify_all(
                players.iter().copied(),
                &Event::MatchFound { found: mf.clone() },
            )
            .await?;
            found.push(mf);
        }
        Ok(found)
    }

    /// Records a match's result (once) and updates its players' ratings in its pool.
    pub async fn report_result(
        &self,
        match_id: &str,
        result: &MatchResult,
    ) -> Result<Vec<(AccountId, RatingInfo)>, PlatformError> {
        let mf = self.match_found(match_id).await?;
        let mut seen = std::collections::HashSet::new();
        if result.placements.len() < 2
            || result
                .placements
                .iter()
                .any(|(p, _)| !mf.players.contains(p) || !seen.insert(*p))
        {
            return Err(PlatformError::bad(
                "bad_result",
                "placements must name at least two distinct players of the match",
            ));
        }
        let claim =
            sqlx::query("UPDATE matches SET result_ms = $1 WHERE id = $2 AND result_ms IS NULL")
                .bind(now_ms())
                .bind(match_id)
                .execute(self.db().writer())
                .await?;
        if claim.rows_affected() == 0 {
            return Err(PlatformError::conflict(
                "already_reported",
                "this match's result is recorded",
            ));
        }
        let mut before = Vec::new();
        for (p, _) in &result.placements {
            before.push(self.rating(*p, &mf.pool).await?);
        }
        let ratings: Vec<Rating> = before.iter().map(|(r, _)| *r).collect();
        let places: Vec<u32> = result.placements.iter().map(|(_, pl)| *pl).collect();
        let after = update_match(&ratings, &places, DEFAULT_TAU)
            .map_err(|e| PlatformError::bad("bad_result", e.to_string()))?;
        let mut out = Vec::new();
        let mut tx = self.db().writer().begin().await?;
        for (((p, _), r), (_, games)) in result.placements.iter().zip(&after).zip(&before) {
            sqlx::query(
                "INSERT INTO ratings (account_id, pool, rating, deviation, volatility, games) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id, pool) DO UPDATE SET \
                 rating = $3, deviation = $4, volatility = $5, games = $6",
            )
            .bind(*p as i64)
            .bind(&mf.pool)
            .bind(r.rating)
            .bind(r.deviation)
            .bind(r.volatility)
            .bind((*games + 1) as i64)
            .execute(&mut *tx)
            .await?;
            out.push((*p, rating_info(r, games + 1)));
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Whether `player` was matched into `room` (matchmade rooms admit only their players).
    pub async fn match_of_room(&self, room: u64) -> Result<Option<Vec<AccountId>>, PlatformError> {
        let row = sqlx::query("SELECT body FROM matches WHERE room_id = $1 AND node_id = $2 ORDER BY created_ms DESC LIMIT 1")
            .bind(room as i64)
            .bind(&self.config().node_id)
            .fetch_optional(self.db().reader())
            .await?;
        match row {
            Some(r) => {
                let body: String = r.try_get("body")?;
                Ok(serde_json::from_str::<MatchFound>(&body)
                    .ok()
                    .map(|m| m.players))
            }
            None => Ok(None),
        }
    }
}
