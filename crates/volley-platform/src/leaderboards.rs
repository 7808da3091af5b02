//! Leaderboards with the semantics of Redis sorted sets.
//!
//! Records live in the database (`leaderboard_records`, the source of truth). Ranked queries go
//! to an index: by default an in-memory [`RankIndex`] per board on each node, or, when the node
//! is given a Redis URL, one Redis sorted set per board and season shared by every node.
//!
//! A submission reads the stored score, applies the board's operator (`best`, `set`, `incr`,
//! `decr`) with checked arithmetic, writes the record, bumps the board's `version` and logs
//! `(version, member)` in `leaderboard_changes`, all in one transaction; the version bump locks
//! the board's row, so submissions to one board serialize (no lost increments) and versions are
//! committed in order. Every index remembers the version it reflects. Before answering, a node
//! compares it with the database: behind means another node (or a concurrent request) wrote,
//! and the index catches up by replaying the logged changes with the records' current values,
//! or is rebuilt from the records when the log no longer reaches back that far. Members are
//! player ids written in decimal; ties order by that string, byte-wise, exactly as Redis orders
//! the same members.

use std::collections::HashMap;
use std::sync::Mutex;

use sqlx::Row;

use crate::rank::{RankIndex, SCORE_MAX};

use crate::{now_ms, AccountId, ErrorKind, Platform, PlatformError};
pub use volley_proto::api::{BoardDef, BoardRecord as Record, Operator};

#[derive(Debug)]
pub(crate) struct Board {
    season: i64,
    /// The board version this index reflects (its records are at least that new).
    version: i64,
    index: RankIndex,
    metadata: HashMap<String, String>,
}

/// The node's boards: in-memory indexes, or the Redis connection when configured.
#[derive(Default)]
pub(crate) struct Boards {
    loaded: Mutex<HashMap<String, Board>>,
    redis: std::sync::OnceLock<RedisRanks>,
}

impl std::fmt::Debug for Boards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Boards")
            .field("redis", &self.redis.get().map(|r| &r.prefix))
            .finish_non_exhaustive()
    }
}

/// What the database says of a board.
#[derive(Debug, Clone)]
struct BoardState {
    def: BoardDef,
    season: i64,
    version: i64,
    created_ms: i64,
}

/// One logged change with the record's current value (`None`: removed).
#[derive(Debug, Clone)]
struct Change {
    version: i64,
    member: String,
    value: Option<(i64, String)>,
}

/// Changes further back than this are pruned from the log; an index further behind reloads.
const CHANGE_LOG_KEEP: i64 = 65_536;

/// Redis sorted sets as the shared rank index.
struct RedisRanks {
    conn: redis::aio::ConnectionManager,
    prefix: String,
    apply: redis::Script,
    install: redis::Script,
}

/// Applies logged changes newer than the stored version, if the stored version reaches back to
/// the first of them. KEYS: the set, its version. ARGV: from, to, then (version, member, score
/// or empty for a removal) triples. Returns -1 when the set has no version (rebuild), 0 on a
/// gap, 1 when applied.
const APPLY_LUA: &str = r#"
local cur = redis.call('GET', KEYS[2])
if not cur then return -1 end
cur = tonumber(cur)
if cur < tonumber(ARGV[1]) then return 0 end
for i = 3, #ARGV, 3 do
  if tonumber(ARGV[i]) > cur then
    if ARGV[i + 2] == '' then
      redis.call('ZREM', KEYS[1], ARGV[i + 1])
    else
      redis.call('ZADD', KEYS[1], ARGV[i + 2], ARGV[i + 1])
    end
  end
end
if tonumber(ARGV[2]) > cur then redis.call('SET', KEYS[2], ARGV[2]) end
return 1
"#;

/// Moves a freshly built set into place with its version. KEYS: staging set, set, version.
const INSTALL_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('RENAME', KEYS[1], KEYS[2])
else
  redis.call('DEL', KEYS[2])
end
redis.call('SET', KEYS[3], ARGV[1])
return 1
"#;

fn redis_err(e: redis::RedisError) -> PlatformError {
    tracing::error!(error = %e, "redis failure");
    PlatformError::new(
        ErrorKind::Overloaded,
        "rank_store",
        "the rank store is unavailable",
    )
}

impl RedisRanks {
    fn keys(&self, board: &str, st: &BoardState) -> (String, String) {
        let set = format!("{}lb:{board}:{}:{}", self.prefix, st.created_ms, st.season);
        let ver = format!("{set}:v");
        (set, ver)
    }
}

fn check_board_id(id: &str) -> Result<(), PlatformError> {
    if (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        Ok(())
    } else {
        Err(PlatformError::bad(
            "bad_board",
            "board id: 1-64 characters of [a-z0-9_-]",
        ))
    }
}

fn check_score(s: i64) -> Result<i64, PlatformError> {
    if (-SCORE_MAX..=SCORE_MAX).contains(&s) {
        Ok(s)
    } else {
        Err(PlatformError::bad(
            "bad_score",
            format!("scores are integers within ±{SCORE_MAX}"),
        ))
    }
}

fn lock_err() -> PlatformError {
    PlatformError::new(
        ErrorKind::Internal,
        "internal",
        "leaderboard state poisoned",
    )
}

impl Platform {
    /// Creates a board (idempotent for the same definition).
    pub async fn create_board(&self, def: &BoardDef) -> Result<(), PlatformError> {
        check_board_id(&def.id)?;
        let now = now_ms();
        let next_reset = match &def.reset_cron {
            Some(c) => crate::cron::Cron::parse(c)
                .map_err(|e| PlatformError::bad("bad_cron", e))?
                .next_after(now)
                .ok_or_else(|| PlatformError::bad("bad_cron", "the schedule never fires"))?,
            None => i64::MAX,
        };
        sqlx::query(
            "INSERT INTO leaderboards (id, descending, operator, reset_cron, season, next_reset_ms, created_ms) \
             VALUES ($1, $2, $3, $4, 1, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&def.id)
        .bind(i64::from(def.descending))
        .bind(def.operator.as_str())
        .bind(def.reset_cron.clone().unwrap_or_default())
        .bind(next_reset)
        .bind(now)
        .execute(self.db().writer())
        .await?;
        let stored = self.board_def(&def.id).await?;
        if &stored != def {
            return Err(PlatformError::conflict(
                "board_exists",
                "a different board has that id",
            ));
        }
        Ok(())
    }

    async fn board_def(&self, id: &str) -> Result<BoardDef, PlatformError> {
        Ok(self.board_state(id).await?.def)
    }

    /// A board's definition, season and version.
    async fn board_state(&self, id: &str) -> Result<BoardState, PlatformError> {
        check_board_id(id)?;
        let r = sqlx::query(
            "SELECT descending, operator, reset_cron, season, version, created_ms FROM leaderboards WHERE id = $1",
        )
            .bind(id)
            .fetch_optional(self.db().reader())
            .await?
            .ok_or_else(|| PlatformError::not_found("leaderboard"))?;
        let op: String = r.try_get("operator")?;
        let cron: String = r.try_get("reset_cron")?;
        let def = BoardDef {
            id: id.to_owned(),
            descending: r.try_get::<i64, _>("descending")? != 0,
            operator: Operator::parse(&op).ok_or_else(|| {
                PlatformError::new(ErrorKind::Internal, "internal", "bad operator")
            })?,
            reset_cron: (!cron.is_empty()).then_some(cron),
        };
        Ok(BoardState {
            def,
            season: r.try_get("season")?,
            version: r.try_get("version")?,
            created_ms: r.try_get("created_ms")?,
        })
    }

    /// The board's current season (1 at creation, +1 at each reset).
    pub async fn board_season(&self, id: &str) -> Result<i64, PlatformError> {
        Ok(self.board_state(id).await?.season)
    }

    /// Runs every season reset due at `now` across all boards. Each reset is claimed with a
    /// conditional update of the season number, so it happens once whatever the number of
    /// nodes, and a node that was down resets (once) as soon as it is back. The finished
    /// season's records are archived with their final ranks. Returns `(board, archived season)`.
    pub async fn run_season_resets(&self, now: i64) -> Result<Vec<(String, i64)>, PlatformError> {
        let due = sqlx::query(
            "SELECT id, season, reset_cron FROM leaderboards WHERE reset_cron <> '' AND next_reset_ms <= $1",
        )
        .bind(now)
        .fetch_all(self.db().reader())
        .await?;
        let mut done = Vec::new();
        for row in due {
            let id: String = row.try_get("id")?;
            let season: i64 = row.try_get("season")?;
            let cron: String = row.try_get("reset_cron")?;
            let c = match crate::cron::Cron::parse(&cron) {
                Ok(c) => c,
                Err(error) => {
                    tracing::warn!(
                        board = %id,
                        cron = %cron,
                        %error,
                        "a leaderboard's reset schedule does not parse; it is not reset"
                    );
                    continue;
                }
            };
            let next = c.next_after(now).unwrap_or(i64::MAX);
            let def = self.board_def(&id).await?;
            let mut tx = self.db().writer().begin().await?;
            let claim = sqlx::query(
                "UPDATE leaderboards SET season = season + 1, next_reset_ms = $1 WHERE id = $2 AND season = $3",
            )
            .bind(next)
            .bind(&id)
            .bind(season)
            .execute(&mut *tx)
            .await?;
            if claim.rows_affected() == 0 {
                continue; // another node (or an earlier pass) did it
            }
            let rows = sqlx::query(
                "SELECT member, score, metadata FROM leaderboard_records WHERE board = $1",
            )
            .bind(&id)
            .fetch_all(&mut *tx)
            .await?;
            let mut index = RankIndex::new();
            let mut meta = HashMap::new();
            for r in rows {
                let m: String = r.try_get("member")?;
                index.set(&m, r.try_get("score")?);
                meta.insert(m, r.try_get::<String, _>("metadata")?);
            }
            let n = index.len();
            let ordered = if n == 0 {
                Vec::new()
            } else if def.descending {
                index.rev_range(0, n - 1)
            } else {
                index.range(0, n - 1)
            };
            for (rank, (m, s)) in ordered.into_iter().enumerate() {
                sqlx::query(
                    "INSERT INTO leaderboard_archive (board, season, rank, member, score, metadata) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&id)
                .bind(season)
                .bind(rank as i64)
                .bind(&m)
                .bind(s)
                .bind(meta.remove(&m).unwrap_or_default())
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("DELETE FROM leaderboard_records WHERE board = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM leaderboard_changes WHERE board = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            match self.inner.boards.loaded.lock() {
                Ok(mut boards) => {
                    boards.remove(&id);
                }
                Err(_) => tracing::warn!(
                    board = %id,
                    "leaderboard cache poisoned; the reset board's old entries may still be served"
                ),
            }
            if let Some(r) = self.inner.boards.redis.get() {
                let st = self.board_state(&id).await?;
                let (set, ver) = r.keys(&id, &BoardState { season, ..st });
                let gone: Result<(), _> = redis::cmd("DEL")
                    .arg(&set)
                    .arg(&ver)
                    .query_async(&mut r.conn.clone())
                    .await;
                if let Err(e) = gone {
                    tracing::warn!(board = %id, error = %e, "old season's rank set not deleted");
                }
            }
            tracing::info!(board = %id, season, "leaderboard season archived");
            done.push((id, season));
        }
        Ok(done)
    }

    /// A page of an archived season, by final rank.
    pub async fn archived_page(
        &self,
        board: &str,
        season: i64,
        start: usize,
        count: usize,
    ) -> Result<Vec<Record>, PlatformError> {
        check_board_id(board)?;
        let rows = sqlx::query(
            "SELECT rank, member, score, metadata FROM leaderboard_archive \
             WHERE board = $1 AND season = $2 AND rank >= $3 ORDER BY rank LIMIT $4",
        )
        .bind(board)
        .bind(season)
        .bind(start.min(i64::MAX as usize) as i64)
        .bind(count.clamp(1, 100) as i64)
        .fetch_all(self.db().reader())
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Record {
                    rank: r.try_get::<i64, _>("rank")?.max(0) as usize,
                    player_id: r.try_get::<String, _>("member")?.parse().unwrap_or(0),
                    score: r.try_get("score")?,
                    metadata: r.try_get("metadata")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Uses Redis sorted sets (shared by every node on `url`, keys under `prefix`) as the rank
    /// index instead of in-memory indexes. Call once, before the first leaderboard request.
    pub async fn use_redis(&self, url: &str, prefix: &str) -> Result<(), PlatformError> {
        let client = redis::Client::open(url)
            .map_err(|e| PlatformError::bad("bad_redis_url", e.to_string()))?;
        let conn = redis::aio::ConnectionManager::new(client)
            .await
            .map_err(redis_err)?;
        let ranks = RedisRanks {
            conn,
            prefix: prefix.to_owned(),
            apply: redis::Script::new(APPLY_LUA),
            install: redis::Script::new(INSTALL_LUA),
        };
        self.inner
            .boards
            .redis
            .set(ranks)
            .map_err(|_| PlatformError::conflict("redis_set", "a rank store is already set"))
    }

    /// Whether ranks live in Redis.
    pub fn ranks_in_redis(&self) -> bool {
        self.inner.boards.redis.get().is_some()
    }

    /// The changes to `board` after version `from` up to `to`, with current values; `None` when
    /// the log no longer holds all of them.
    async fn changes_between(
        &self,
        board: &str,
        from: i64,
        to: i64,
    ) -> Result<Option<Vec<Change>>, PlatformError> {
        if to - from > CHANGE_LOG_KEEP {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT c.version AS version, c.member AS member, r.score AS score, r.metadata AS metadata \
             FROM leaderboard_changes c LEFT JOIN leaderboard_records r \
             ON r.board = c.board AND r.member = c.member \
             WHERE c.board = $1 AND c.version > $2 AND c.version <= $3 ORDER BY c.version",
        )
        .bind(board)
        .bind(from)
        .bind(to)
        .fetch_all(self.db().reader())
        .await?;
        if rows.len() as i64 != to - from {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let score: Option<i64> = r.try_get("score")?;
            let meta: Option<String> = r.try_get("metadata")?;
            out.push(Change {
                version: r.try_get("version")?,
                member: r.try_get("member")?,
                value: score.map(|s| (s, meta.unwrap_or_default())),
            });
        }
        Ok(Some(out))
    }

    /// Every record of `board`, read after its version was: the records are at least that new.
    async fn all_records(&self, board: &str) -> Result<Vec<(String, i64, String)>, PlatformError> {
        let rows =
            sqlx::query("SELECT member, score, metadata FROM leaderboard_records WHERE board = $1")
                .bind(board)
                .fetch_all(self.db().reader())
                .await?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get("member")?,
                    r.try_get("score")?,
                    r.try_get("metadata")?,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Applies changes `(from, to]` to the index of `board` in `season`: only those newer than
    /// what the index reflects, and only when the index reaches back to `from` (else it is left
    /// for the next reader to catch up). Returns whether the index now reflects `to`.
    async fn apply_changes(
        &self,
        board: &str,
        st: &BoardState,
        changes: &[Change],
        from: i64,
        to: i64,
    ) -> Result<bool, PlatformError> {
        if let Some(r) = self.inner.boards.redis.get() {
            let (set, ver) = r.keys(board, st);
            let mut inv = r.apply.key(&set);
            inv.key(&ver).arg(from).arg(to);
            for c in changes {
                inv.arg(c.version).arg(&c.member);
                match &c.value {
                    Some((s, _)) => inv.arg(s.to_string()),
                    None => inv.arg(""),
                };
            }
            let done: i64 = inv
                .invoke_async(&mut r.conn.clone())
                .await
                .map_err(redis_err)?;
            return Ok(done == 1);
        }
        let mut boards = self.inner.boards.loaded.lock().map_err(|_| lock_err())?;
        let Some(b) = boards.get_mut(board) else {
            return Ok(false);
        };
        if b.season != st.season || b.version < from {
            return Ok(false);
        }
        for c in changes.iter().filter(|c| c.version > b.version) {
            match &c.value {
                Some((s, m)) => {
                    b.index.set(&c.member, *s);
                    b.metadata.insert(c.member.clone(), m.clone());
                }
                None => {
                    b.index.remove(&c.member);
                    b.metadata.remove(&c.member);
                }
            }
        }
        b.version = b.version.max(to);
        Ok(true)
    }

    /// Rebuilds the index of `board` from its records.
    async fn rebuild(&self, board: &str, st: &BoardState) -> Result<(), PlatformError> {
        let records = self.all_records(board).await?;
        if let Some(r) = self.inner.boards.redis.get() {
            let (set, ver) = r.keys(board, st);
            let staging = format!("{set}:build:{}", crate::random_id());
            let mut conn = r.conn.clone();
            for batch in records.chunks(1000) {
                let mut cmd = redis::cmd("ZADD");
                cmd.arg(&staging);
                for (m, s, _) in batch {
                    cmd.arg(s.to_string()).arg(m);
                }
                cmd.query_async::<()>(&mut conn).await.map_err(redis_err)?;
            }
            r.install
                .key(&staging)
                .key(&set)
                .key(&ver)
                .arg(st.version)
                .invoke_async::<()>(&mut conn)
                .await
                .map_err(redis_err)?;
            tracing::info!(
                board,
                season = st.season,
                records = records.len(),
                "rank set rebuilt in redis"
            );
            return Ok(());
        }
        let mut index = RankIndex::new();
        let mut metadata = HashMap::new();
        for (m, s, meta) in records {
            index.set(&m, s);
            metadata.insert(m, meta);
        }
        let mut boards = self.inner.boards.loaded.lock().map_err(|_| lock_err())?;
        let keep = boards
            .get(board)
            .is_some_and(|b| b.season == st.season && b.version >= st.version);
        if !keep {
            boards.insert(
                board.to_owned(),
                Board {
                    season: st.season,
                    version: st.version,
                    index,
                    metadata,
                },
            );
        }
        Ok(())
    }

    /// The version the index of `board` reflects, if it has one for this season.
    async fn index_version(
        &self,
        board: &str,
        st: &BoardState,
    ) -> Result<Option<i64>, PlatformError> {
        if let Some(r) = self.inner.boards.redis.get() {
            let (_, ver) = r.keys(board, st);
            let v: Option<i64> = redis::cmd("GET")
                .arg(&ver)
                .query_async(&mut r.conn.clone())
                .await
                .map_err(redis_err)?;
            return Ok(v);
        }
        let boards = self.inner.boards.loaded.lock().map_err(|_| lock_err())?;
        Ok(boards
            .get(board)
            .filter(|b| b.season == st.season)
            .map(|b| b.version))
    }

    /// Brings the index of `board` up to the database's version (catching up from the change
    /// log, or rebuilding) and returns the board's state.
    async fn ensure_loaded(&self, id: &str) -> Result<BoardState, PlatformError> {
        let st = self.board_state(id).await?;
        for _ in 0..4 {
            let have = self.index_version(id, &st).await?;
            match have {
                Some(v) if v >= st.version => return Ok(st),
                Some(v) => match self.changes_between(id, v, st.version).await? {
                    Some(changes) => {
                        if self.apply_changes(id, &st, &changes, v, st.version).await? {
                            return Ok(st);
                        }
                    }
                    None => self.rebuild(id, &st).await?,
                },
                None => self.rebuild(id, &st).await?,
            }
        }
        // Other writers kept moving it; what is there is at most a few changes old.
        Ok(st)
    }

    /// Submits `score` for `player` (the node or a studio's server only); returns the stored
    /// score after the board's operator.
    pub async fn submit_score(
        &self,
        board: &str,
        player: AccountId,
        score: i64,
        metadata: &str,
    ) -> Result<i64, PlatformError> {
        check_score(score)?;
        if metadata.len() > 1024 {
            return Err(PlatformError::bad(
                "bad_metadata",
                "metadata: at most 1 KiB",
            ));
        }
        let st = self.ensure_loaded(board).await?;
        let def = &st.def;
        let member = player.to_string();
        let mut tx = self.db().writer().begin().await?;
        let (version, season) = bump_version(&mut tx, board).await?;
        let old: Option<i64> =
            sqlx::query("SELECT score FROM leaderboard_records WHERE board = $1 AND member = $2")
                .bind(board)
                .bind(&member)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("score"))
                .transpose()?;
        let new = match (def.operator, old) {
            (_, None) if def.operator != Operator::Decr => score,
            (Operator::Decr, None) => score.checked_neg().unwrap_or(i64::MIN),
            (Operator::Set, Some(_)) => score,
            (Operator::Best, Some(o)) => {
                if def.descending {
                    o.max(score)
                } else {
                    o.min(score)
                }
            }
            (Operator::Incr, Some(o)) => o.checked_add(score).unwrap_or(i64::MAX),
            (Operator::Decr, Some(o)) => o.checked_sub(score).unwrap_or(i64::MIN),
            (_, None) => score,
        };
        check_score(new).map_err(|_| {
            PlatformError::conflict(
                "score_overflow",
                format!("the score would leave ±{SCORE_MAX}"),
            )
        })?;
        sqlx::query(
            "INSERT INTO leaderboard_records (board, member, score, metadata, updated_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (board, member) DO UPDATE SET score = $3, metadata = $4, updated_ms = $5",
        )
        .bind(board)
        .bind(&member)
        .bind(new)
        .bind(metadata)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        log_change(&mut tx, board, version, &member).await?;
        tx.commit().await?;
        let st = BoardState { season, ..st };
        let change = Change {
            version,
            member,
            value: Some((new, metadata.to_owned())),
        };
        // The write is durable; a failed index update only leaves the index behind, and the
        // next reader catches it up from the log.
        if let Err(e) = self
            .apply_changes(board, &st, &[change], version - 1, version)
            .await
        {
            tracing::warn!(board, error = %e, "rank index left behind");
        }
        Ok(new)
    }

    /// Removes a player's record.
    pub async fn remove_score(&self, board: &str, player: AccountId) -> Result<(), PlatformError> {
        let st = self.ensure_loaded(board).await?;
        let member = player.to_string();
        let mut tx = self.db().writer().begin().await?;
        let (version, season) = bump_version(&mut tx, board).await?;
        sqlx::query("DELETE FROM leaderboard_records WHERE board = $1 AND member = $2")
            .bind(board)
            .bind(&member)
            .execute(&mut *tx)
            .await?;
        log_change(&mut tx, board, version, &member).await?;
        tx.commit().await?;
        let st = BoardState { season, ..st };
        let change = Change {
            version,
            member,
            value: None,
        };
        if let Err(e) = self
            .apply_changes(board, &st, &[change], version - 1, version)
            .await
        {
            tracing::warn!(board, error = %e, "rank index left behind");
        }
        Ok(())
    }

    /// Metadata of `members` on `board` (for pages served from Redis).
    async fn metadata_of(
        &self,
        board: &str,
        members: &[String],
    ) -> Result<HashMap<String, String>, PlatformError> {
        if members.is_empty() {
            return Ok(HashMap::new());
        }
        let marks: Vec<String> = (0..members.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT member, metadata FROM leaderboard_records WHERE board = $1 AND member IN ({})",
            marks.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(board);
        for m in members {
            q = q.bind(m);
        }
        let rows = q.fetch_all(self.db().reader()).await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get("member")?, r.try_get("metadata")?)))
            .collect::<Result<HashMap<_, _>, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Records at board ranks `start..start + count` (count <= 100), in the board's order.
    pub async fn board_page(
        &self,
        board: &str,
        start: usize,
        count: usize,
    ) -> Result<Vec<Record>, PlatformError> {
        let st = self.ensure_loaded(board).await?;
        let count = count.clamp(1, 100);
        let stop = start.saturating_add(count - 1);
        if let Some(r) = self.inner.boards.redis.get() {
            let (set, _) = r.keys(board, &st);
            let rows: Vec<(String, f64)> = redis::cmd(if st.def.descending {
                "ZREVRANGE"
            } else {
                "ZRANGE"
            })
            .arg(&set)
            .arg(start.min(i64::MAX as usize) as i64)
            .arg(stop.min(i64::MAX as usize) as i64)
            .arg("WITHSCORES")
            .query_async(&mut r.conn.clone())
            .await
            .map_err(redis_err)?;
            let members: Vec<String> = rows.iter().map(|(m, _)| m.clone()).collect();
            let mut meta = self.metadata_of(board, &members).await?;
            return Ok(rows
                .into_iter()
                .enumerate()
                .map(|(i, (m, s))| Record {
                    rank: start + i,
                    player_id: m.parse().unwrap_or(0),
                    score: s as i64,
                    metadata: meta.remove(&m).unwrap_or_default(),
                })
                .collect());
        }
        self.with_board(board, |b| {
            let rows = if st.def.descending {
                b.index.rev_range(start, stop)
            } else {
                b.index.range(start, stop)
            };
            rows.into_iter()
                .enumerate()
                .map(|(i, (m, s))| Record {
                    rank: start + i,
                    player_id: m.parse().unwrap_or(0),
                    score: s,
                    metadata: b.metadata.get(&m).cloned().unwrap_or_default(),
                })
                .collect()
        })
    }

    fn with_board<T>(&self, board: &str, f: impl FnOnce(&Board) -> T) -> Result<T, PlatformError> {
        let boards = self.inner.boards.loaded.lock().map_err(|_| lock_err())?;
        let b = boards
            .get(board)
            .ok_or_else(|| PlatformError::not_found("leaderboard"))?;
        Ok(f(b))
    }

    /// A player's 0-based rank in the board's order.
    pub async fn board_rank(
        &self,
        board: &str,
        player: AccountId,
    ) -> Result<Option<usize>, PlatformError> {
        let st = self.ensure_loaded(board).await?;
        let m = player.to_string();
        if let Some(r) = self.inner.boards.redis.get() {
            let (set, _) = r.keys(board, &st);
            let rank: Option<usize> = redis::cmd(if st.def.descending {
                "ZREVRANK"
            } else {
                "ZRANK"
            })
            .arg(&set)
            .arg(&m)
            .query_async(&mut r.conn.clone())
            .await
            .map_err(redis_err)?;
            return Ok(rank);
        }
        self.with_board(board, |b| {
            if st.def.descending {
                b.index.rev_rank(&m)
            } else {
                b.index.rank(&m)
            }
        })
    }

    /// The `radius` records either side of `player` (and the player's own).
    pub async fn board_around(
        &self,
        board: &str,
        player: AccountId,
        radius: usize,
    ) -> Result<Vec<Record>, PlatformError> {
        let Some(rank) = self.board_rank(board, player).await? else {
            return Err(PlatformError::not_found("record"));
        };
        let radius = radius.min(50);
        let start = rank.saturating_sub(radius);
        self.board_page(board, start, rank - start + radius + 1)
            .await
    }

    /// Records on a board.
    pub async fn board_len(&self, board: &str) -> Result<usize, PlatformError> {
        let st = self.ensure_loaded(board).await?;
        if let Some(r) = self.inner.boards.redis.get() {
            let (set, _) = r.keys(board, &st);
            return redis::cmd("ZCARD")
                .arg(&set)
                .query_async(&mut r.conn.clone())
                .await
                .map_err(redis_err);
        }
        self.with_board(board, |b| b.index.len())
    }
}

/// Bumps the board's version inside `tx`, locking its row until commit; returns the new
/// version and the current season.
async fn bump_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    board: &str,
) -> Result<(i64, i64), PlatformError> {
    let row = sqlx::query(
        "UPDATE leaderboards SET version = version + 1 WHERE id = $1 RETURNING version, season",
    )
    .bind(board)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| PlatformError::not_found("leaderboard"))?;
    Ok((row.try_get("version")?, row.try_get("season")?))
}

/// Logs a change and, now and then, prunes the log's old end.
async fn log_change(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    board: &str,
    version: i64,
    member: &str,
) -> Result<(), PlatformError> {
    sqlx::query("INSERT INTO leaderboard_changes (board, version, member) VALUES ($1, $2, $3)")
        .bind(board)
        .bind(version)
        .bind(member)
        .execute(&mut **tx)
        .await?;
    if version % 1024 == 0 {
        sqlx::query("DELETE FROM leaderboard_changes WHERE board = $1 AND version <= $2")
            .bind(board)
            .bind(version - CHANGE_LOG_KEEP)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
