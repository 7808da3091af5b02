//! Leaderboards with the semantics of Redis sorted sets.
//!
//! Records live in the database (`leaderboard_records`, the source of truth); each node keeps an
//! in-memory [`RankIndex`] per board, rebuilt from the database the first time the board is used,
//! for top-N, rank, around-me and page queries. A submission reads the stored score, applies the
//! board's operator (`best`, `set`, `incr`, `decr`) with checked arithmetic inside one
//! transaction, then updates the index. Members are player ids written in decimal; ties order by
//! that string, byte-wise, exactly as Redis orders the same members.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::rank::{RankIndex, SCORE_MAX};
use crate::{now_ms, AccountId, ErrorKind, Platform, PlatformError};

/// How a submission combines with the stored score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    /// Keep the better of old and new (higher on a descending board, lower on an ascending one).
    Best,
    /// Replace.
    Set,
    /// Add.
    Incr,
    /// Subtract.
    Decr,
}

impl Operator {
    fn as_str(self) -> &'static str {
        match self {
            Operator::Best => "best",
            Operator::Set => "set",
            Operator::Incr => "incr",
            Operator::Decr => "decr",
        }
    }

    fn parse(s: &str) -> Option<Operator> {
        Some(match s {
            "best" => Operator::Best,
            "set" => Operator::Set,
            "incr" => Operator::Incr,
            "decr" => Operator::Decr,
            _ => return None,
        })
    }
}

/// A board's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardDef {
    /// 1-64 characters of `[a-z0-9_-]`.
    pub id: String,
    /// Higher scores rank first.
    pub descending: bool,
    /// How submissions combine.
    pub operator: Operator,
    /// Season reset schedule (five-field cron, UTC); the board never resets when absent.
    #[serde(default)]
    pub reset_cron: Option<String>,
}

/// One record as queries return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// 0-based rank in the board's order.
    pub rank: usize,
    /// The player.
    pub player_id: AccountId,
    /// The score.
    pub score: i64,
    /// What the submitter attached (JSON text, at most 1 KiB).
    pub metadata: String,
}

#[derive(Debug)]
pub(crate) struct Board {
    def: BoardDef,
    season: i64,
    index: RankIndex,
    metadata: HashMap<String, String>,
}

/// The node's loaded boards.
#[derive(Debug, Default)]
pub(crate) struct Boards {
    loaded: Mutex<HashMap<String, Board>>,
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
        Ok(self.board_state(id).await?.0)
    }

    /// A board's definition, current season and next reset time.
    async fn board_state(&self, id: &str) -> Result<(BoardDef, i64, i64), PlatformError> {
        check_board_id(id)?;
        let r = sqlx::query(
            "SELECT descending, operator, reset_cron, season, next_reset_ms FROM leaderboards WHERE id = $1",
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
        Ok((def, r.try_get("season")?, r.try_get("next_reset_ms")?))
    }

    /// The board's current season (1 at creation, +1 at each reset).
    pub async fn board_season(&self, id: &str) -> Result<i64, PlatformError> {
        Ok(self.board_state(id).await?.1)
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
            let Ok(c) = crate::cron::Cron::parse(&cron) else {
                continue;
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
            tx.commit().await?;
            if let Ok(mut boards) = self.inner.boards.loaded.lock() {
                boards.remove(&id);
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

    /// Loads a board's index from the database if this node has not yet, or again when the
    /// season moved on (another node reset it).
    async fn ensure_loaded(&self, id: &str) -> Result<(), PlatformError> {
        let (def, season, _) = self.board_state(id).await?;
        {
            let mut boards = self.inner.boards.loaded.lock().map_err(|_| lock_err())?;
            match boards.get(id) {
                Some(b) if b.season == season => return Ok(()),
                Some(_) => {
                    boards.remove(id);
                }
                None => {}
            }
        }
        let rows =
            sqlx::query("SELECT member, score, metadata FROM leaderboard_records WHERE board = $1")
                .bind(id)
                .fetch_all(self.db().reader())
                .await?;
        let mut index = RankIndex::new();
        let mut metadata = HashMap::new();
        for r in rows {
            let m: String = r.try_get("member")?;
            index.set(&m, r.try_get("score")?);
            metadata.insert(m, r.try_get("metadata")?);
        }
        self.inner
            .boards
            .loaded
            .lock()
            .map_err(|_| lock_err())?
            .entry(id.to_owned())
            .or_insert(Board {
                def,
                season,
                index,
                metadata,
            });
        Ok(())
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
        self.ensure_loaded(board).await?;
        let def = self.board_def(board).await?;
        let member = player.to_string();
        let mut tx = self.db().writer().begin().await?;
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
        tx.commit().await?;
        let mut boards = self.inner.boards.loaded.lock().map_err(|_| lock_err())?;
        if let Some(b) = boards.get_mut(board) {
            b.index.set(&member, new);
            b.metadata.insert(member, metadata.to_owned());
        }
        Ok(new)
    }

    /// Removes a player's record.
    pub async fn remove_score(&self, board: &str, player: AccountId) -> Result<(), PlatformError> {
        self.ensure_loaded(board).await?;
        let member = player.to_string();
        sqlx::query("DELETE FROM leaderboard_records WHERE board = $1 AND member = $2")
            .bind(board)
            .bind(&member)
            .execute(self.db().writer())
            .await?;
        if let Some(b) = self
            .inner
            .boards
            .loaded
            .lock()
            .map_err(|_| lock_err())?
            .get_mut(board)
        {
            b.index.remove(&member);
            b.metadata.remove(&member);
        }
        Ok(())
    }

    fn with_board<T>(&self, board: &str, f: impl FnOnce(&Board) -> T) -> Result<T, PlatformError> {
        let boards = self.inner.boards.loaded.lock().map_err(|_| lock_err())?;
        let b = boards
            .get(board)
            .ok_or_else(|| PlatformError::not_found("leaderboard"))?;
        Ok(f(b))
    }

    /// Records at board ranks `start..start + count` (count <= 100), in the board's order.
    pub async fn board_page(
        &self,
        board: &str,
        start: usize,
        count: usize,
    ) -> Result<Vec<Record>, PlatformError> {
        self.ensure_loaded(board).await?;
        let count = count.clamp(1, 100);
        self.with_board(board, |b| {
            let stop = start.saturating_add(count - 1);
            let rows = if b.def.descending {
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

    /// A player's 0-based rank in the board's order.
    pub async fn board_rank(
        &self,
        board: &str,
        player: AccountId,
    ) -> Result<Option<usize>, PlatformError> {
        self.ensure_loaded(board).await?;
        let m = player.to_string();
        self.with_board(board, |b| {
            if b.def.descending {
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
        self.ensure_loaded(board).await?;
        self.with_board(board, |b| b.index.len())
    }
}
