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
        sqlx::query(
            "INSERT INTO leaderboards (id, descending, operator, created_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&def.id)
        .bind(i64::from(def.descending))
        .bind(def.operator.as_str())
        .bind(now_ms())
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
        check_board_id(id)?;
        let r = sqlx::query("SELECT descending, operator FROM leaderboards WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db().reader())
            .await?
            .ok_or_else(|| PlatformError::not_found("leaderboard"))?;
        let op: String = r.try_get("operator")?;
        Ok(BoardDef {
            id: id.to_owned(),
            descending: r.try_get::<i64, _>("descending")? != 0,
            operator: Operator::parse(&op).ok_or_else(|| {
                PlatformError::new(ErrorKind::Internal, "internal", "bad operator")
            })?,
        })
    }

    /// Loads a board's index from the database if this node has not yet.
    async fn ensure_loaded(&self, id: &str) -> Result<(), PlatformError> {
        if self
            .inner
            .boards
            .loaded
            .lock()
            .map_err(|_| lock_err())?
            .contains_key(id)
        {
            return Ok(());
        }
        let def = self.board_def(id).await?;
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
