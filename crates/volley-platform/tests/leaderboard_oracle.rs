//! Leaderboards against a real Redis as the oracle: the same random operations go to Volley and
//! to a Redis sorted set, and every query must give identical answers (ties included). Volley
//! runs as two nodes on one database, each operation sent to either, with the in-memory rank
//! index and with Redis as the rank store.
//! Redis is the one the project's scripts start on 127.0.0.1:6379 (`VOLLEY_TEST_REDIS`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use volley_platform::leaderboards::{BoardDef, Operator};
use volley_platform::{Platform, PlatformConfig};
use volley_store::testing::TestDb;
use volley_store::{Backend, Bus};

/// A minimal RESP client: enough for ZADD/ZINCRBY/ZREM/ZRANK/ZREVRANK/ZRANGE/ZREVRANGE/DEL.
struct Redis {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

#[derive(Debug, PartialEq)]
enum Reply {
    Nil,
    Int(i64),
    Str(String),
    Arr(Vec<Reply>),
}

impl Redis {
    fn connect() -> Redis {
        let addr = std::env::var("VOLLEY_TEST_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into());
        let s = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("Redis at {addr}: {e}"));
        Redis {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    fn cmd(&mut self, args: &[&str]) -> Reply {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.w.write_all(out.as_bytes()).unwrap();
        self.read()
    }

    fn read(&mut self) -> Reply {
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let line = line.trim_end();
        let (t, rest) = line.split_at(1);
        match t {
            "+" => Reply::Str(rest.into()),
            "-" => panic!("redis error: {rest}"),
            ":" => Reply::Int(rest.parse().unwrap()),
            "$" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    return Reply::Nil;
                }
                let mut buf = vec![0u8; n as usize + 2];
                std::io::Read::read_exact(&mut self.r, &mut buf).unwrap();
                Reply::Str(String::from_utf8(buf[..n as usize].to_vec()).unwrap())
            }
            "*" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    return Reply::Nil;
                }
                Reply::Arr((0..n).map(|_| self.read()).collect())
            }
            "_" => Reply::Nil,
            other => panic!("unexpected RESP type {other}"),
        }
    }

    fn pairs(&mut self, args: &[&str]) -> Vec<(String, i64)> {
        match self.cmd(args) {
            Reply::Arr(v) => v
                .chunks(2)
                .map(|c| match (&c[0], &c[1]) {
                    (Reply::Str(m), Reply::Str(s)) => (m.clone(), s.parse::<f64>().unwrap() as i64),
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("{other:?}"),
        }
    }
}

fn redis_url() -> String {
    format!(
        "redis://{}/",
        std::env::var("VOLLEY_TEST_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into())
    )
}

/// Where ranks are kept.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ranks {
    Memory,
    Redis,
}

/// A node on `db` with its rank store; Redis keys under a prefix unique to this test run.
async fn node(db: &volley_store::Db, ranks: Ranks) -> Platform {
    let p = Platform::new(db.clone(), Bus::local(), PlatformConfig::default()).unwrap();
    if ranks == Ranks::Redis {
        let prefix = format!("volley-test:{}:{:?}:", std::process::id(), db.backend());
        p.use_redis(&redis_url(), &prefix).await.unwrap();
        assert!(p.ranks_in_redis());
    }
    p
}

async fn oracle(backend: Backend, descending: bool, operator: Operator, seed: u64, ranks: Ranks) {
    let t = TestDb::new(backend).await.unwrap();
    let nodes = [node(&t.db, ranks).await, node(&t.db, ranks).await];
    let p = &nodes[0];
    let board = format!("b-{}-{seed}", std::process::id());
    p.create_board(&BoardDef {
        id: board.clone(),
        descending,
        operator,
        reset_cron: None,
    })
    .await
    .unwrap();
    let mut redis = Redis::connect();
    let key = format!("volley-oracle:{board}:{}", backend.name());
    redis.cmd(&["DEL", &key]);
    // Players: ids whose decimal strings tie-break differently from their numbers (9 vs 10...).
    let mut players = Vec::new();
    for i in 0..40 {
        players.push(
            p.login_device(&format!("device-oracle-{seed}-{i:03}"))
                .await
                .unwrap()
                .player_id,
        );
    }
    let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for step in 0..600 {
        // Each operation goes to either node.
        let p = &nodes[(next() % 2) as usize];
        let player = players[(next() % players.len() as u64) as usize];
        let m = player.to_string();
        // Few distinct scores, so ties are common.
        let score = (next() % 7) as i64 - 3;
        if next() % 12 == 0 {
            p.remove_score(&board, player).await.unwrap();
            redis.cmd(&["ZREM", &key, &m]);
        } else {
            let got = p.submit_score(&board, player, score, "{}").await.unwrap();
            let s = score.to_string();
            let neg = (-score).to_string();
            match operator {
                Operator::Set => redis.cmd(&["ZADD", &key, &s, &m]),
                Operator::Best => {
                    redis.cmd(&["ZADD", &key, if descending { "GT" } else { "LT" }, &s, &m])
                }
                Operator::Incr => redis.cmd(&["ZINCRBY", &key, &s, &m]),
                Operator::Decr => redis.cmd(&["ZINCRBY", &key, &neg, &m]),
            };
            let want = match redis.cmd(&["ZSCORE", &key, &m]) {
                Reply::Str(v) => v.parse::<f64>().unwrap() as i64,
                other => panic!("{other:?}"),
            };
            assert_eq!(got, want, "step {step}: stored score of {m}");
        }
        if step % 20 == 0 {
            let n = p.board_len(&board).await.unwrap();
            assert_eq!(redis.cmd(&["ZCARD", &key]), Reply::Int(n as i64));
            let page_cmd = if descending { "ZREVRANGE" } else { "ZRANGE" };
            let want = redis.pairs(&[page_cmd, &key, "0", "-1", "WITHSCORES"]);
            let got: Vec<(String, i64)> = p
                .board_page(&board, 0, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.player_id.to_string(), r.score))
                .collect();
            assert_eq!(got, want, "step {step}: whole board");
            let start = (next() % 30) as usize;
            let want = redis.pairs(&[
                page_cmd,
                &key,
                &start.to_string(),
                &(start + 4).to_string(),
                "WITHSCORES",
            ]);
            let got: Vec<(String, i64)> = p
                .board_page(&board, start, 5)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.player_id.to_string(), r.score))
                .collect();
            assert_eq!(got, want, "step {step}: page from {start}");
            for pl in players.iter().step_by(7) {
                let rank_cmd = if descending { "ZREVRANK" } else { "ZRANK" };
                let want = match redis.cmd(&[rank_cmd, &key, &pl.to_string()]) {
                    Reply::Int(r) => Some(r as usize),
                    Reply::Nil => None,
                    other => panic!("{other:?}"),
                };
                assert_eq!(
                    p.board_rank(&board, *pl).await.unwrap(),
                    want,
                    "step {step}: rank of {pl}"
                );
            }
        }
    }
    // Around-me is a page around the rank.
    let someone = players[3];
    if let Some(r) = p.board_rank(&board, someone).await.unwrap() {
        let around = p.board_around(&board, someone, 2).await.unwrap();
        assert!(around.iter().any(|x| x.player_id == someone && x.rank == r));
        assert!(around.len() <= 5);
    }
    // A restarted node rebuilds the same index from the database.
    let fresh = node(&t.db, ranks).await;
    assert_eq!(
        fresh.board_page(&board, 0, 100).await.unwrap(),
        p.board_page(&board, 0, 100).await.unwrap()
    );
    redis.cmd(&["DEL", &key]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_descending_matches_redis_on_sqlite() {
    oracle(Backend::Sqlite, true, Operator::Best, 1, Ranks::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_ascending_matches_redis_on_postgres() {
    oracle(Backend::Postgres, false, Operator::Best, 2, Ranks::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_and_incr_decr_match_redis() {
    oracle(Backend::Sqlite, true, Operator::Set, 3, Ranks::Memory).await;
    oracle(Backend::Sqlite, false, Operator::Incr, 4, Ranks::Memory).await;
    oracle(Backend::Postgres, true, Operator::Decr, 5, Ranks::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_as_the_rank_store_matches_redis() {
    oracle(Backend::Postgres, true, Operator::Best, 6, Ranks::Redis).await;
    oracle(Backend::Sqlite, false, Operator::Incr, 7, Ranks::Redis).await;
    oracle(Backend::Postgres, true, Operator::Set, 8, Ranks::Redis).await;
}

/// Two nodes incrementing the same records at once lose no increment, and both serve the same
/// board afterwards, whichever rank store.
async fn concurrent_increments(backend: Backend, ranks: Ranks) {
    let t = TestDb::new(backend).await.unwrap();
    let a = node(&t.db, ranks).await;
    let b = node(&t.db, ranks).await;
    let board = format!("inc-{}", std::process::id());
    a.create_board(&BoardDef {
        id: board.clone(),
        descending: true,
        operator: Operator::Incr,
        reset_cron: None,
    })
    .await
    .unwrap();
    let mut players = Vec::new();
    for i in 0..4 {
        players.push(
            a.login_device(&format!("device-inc-{i:03}"))
                .await
                .unwrap()
                .player_id,
        );
    }
    // Both nodes have loaded the board before the storm.
    assert!(a.board_page(&board, 0, 10).await.unwrap().is_empty());
    assert!(b.board_page(&board, 0, 10).await.unwrap().is_empty());
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let n = if i % 2 == 0 { a.clone() } else { b.clone() };
        let board = board.clone();
        let pl = players[(i % 4) as usize];
        tasks.push(tokio::spawn(async move {
            n.submit_score(&board, pl, (i + 1) as i64, "")
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut want: Vec<(u64, i64)> = players
        .iter()
        .enumerate()
        .map(|(k, pl)| {
            let sum = (0..64u64)
                .filter(|i| i % 4 == k as u64)
                .map(|i| (i + 1) as i64)
                .sum();
            (*pl, sum)
        })
        .collect();
    want.sort_by_key(|w| std::cmp::Reverse(w.1));
    for n in [&a, &b] {
        let got: Vec<(u64, i64)> = n
            .board_page(&board, 0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.player_id, r.score))
            .collect();
        assert_eq!(got, want, "{backend:?} {ranks:?}");
    }
    // A removal on one node is seen by the other.
    a.remove_score(&board, players[0]).await.unwrap();
    assert_eq!(b.board_len(&board).await.unwrap(), 3);
    assert_eq!(b.board_rank(&board, players[0]).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_lose_no_increment() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        for ranks in [Ranks::Memory, Ranks::Redis] {
            concurrent_increments(backend, ranks).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_outside_the_exact_double_range_are_refused() {
    let t = TestDb::sqlite().await.unwrap();
    let p = Platform::new(t.db.clone(), Bus::local(), PlatformConfig::default()).unwrap();
    p.create_board(&BoardDef {
        id: "lim".into(),
        descending: true,
        operator: Operator::Incr,
        reset_cron: None,
    })
    .await
    .unwrap();
    let a = p.login_device("device-limit-aa").await.unwrap().player_id;
    assert_eq!(
        p.submit_score("lim", a, (1 << 53) + 1, "")
            .await
            .unwrap_err()
            .code,
        "bad_score"
    );
    p.submit_score("lim", a, 1 << 53, "").await.unwrap();
    assert_eq!(
        p.submit_score("lim", a, 1, "").await.unwrap_err().code,
        "score_overflow"
    );
    assert_eq!(p.board_page("lim", 0, 10).await.unwrap()[0].score, 1 << 53);
    assert_eq!(
        p.submit_score("nope", a, 1, "").await.unwrap_err().code,
        "not_found"
    );
    assert_eq!(
        p.create_board(&BoardDef {
            id: "lim".into(),
            descending: false,
            operator: Operator::Incr,
            reset_cron: None
        })
        .await
        .unwrap_err()
        .code,
        "board_exists"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seasons_reset_once_on_time_across_nodes_and_restarts() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let t = TestDb::new(backend).await.unwrap();
        let node_a = Platform::new(t.db.clone(), Bus::local(), PlatformConfig::default()).unwrap();
        let node_b = Platform::new(t.db.clone(), Bus::local(), PlatformConfig::default()).unwrap();
        // Weekly, Mondays 00:00 UTC.
        node_a
            .create_board(&BoardDef {
                id: "weekly".into(),
                descending: true,
                operator: Operator::Best,
                reset_cron: Some("0 0 * * 1".into()),
            })
            .await
            .unwrap();
        let x = node_a
            .login_device("device-season-x")
            .await
            .unwrap()
            .player_id;
        let y = node_a
            .login_device("device-season-y")
            .await
            .unwrap()
            .player_id;
        node_a.submit_score("weekly", x, 50, "{}").await.unwrap();
        node_b.submit_score("weekly", y, 70, "{}").await.unwrap();
        assert_eq!(node_b.board_page("weekly", 0, 10).await.unwrap().len(), 2);
        let next = volley_platform::cron::Cron::parse("0 0 * * 1")
            .unwrap()
            .next_after(volley_platform::now_ms())
            .unwrap();
        // Not yet.
        assert!(node_a.run_season_resets(next - 1).await.unwrap().is_empty());
        // Both nodes notice at once: exactly one reset.
        let (ra, rb) = tokio::join!(
            node_a.run_season_resets(next),
            node_b.run_season_resets(next)
        );
        let resets = ra.unwrap().len() + rb.unwrap().len();
        assert_eq!(resets, 1, "{backend:?}");
        assert!(
            node_a.run_season_resets(next).await.unwrap().is_empty(),
            "never twice"
        );
        assert_eq!(node_a.board_season("weekly").await.unwrap(), 2);
        // Both nodes serve the new, empty season (B's index was loaded before the reset).
        assert!(node_b.board_page("weekly", 0, 10).await.unwrap().is_empty());
        assert!(node_a.board_page("weekly", 0, 10).await.unwrap().is_empty());
        // The archive keeps the final standings.
        let archived = node_b.archived_page("weekly", 1, 0, 10).await.unwrap();
        assert_eq!(
            archived
                .iter()
                .map(|r| (r.rank, r.player_id, r.score))
                .collect::<Vec<_>>(),
            vec![(0, y, 70), (1, x, 50)]
        );
        // A node that starts later sees the same; the next reset is a week on.
        let restarted =
            Platform::new(t.db.clone(), Bus::local(), PlatformConfig::default()).unwrap();
        assert_eq!(restarted.board_season("weekly").await.unwrap(), 2);
        assert!(restarted
            .run_season_resets(next + 6 * 86_400_000)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            restarted
                .run_season_resets(next + 7 * 86_400_000)
                .await
                .unwrap(),
            vec![("weekly".to_owned(), 2)]
        );
        assert_eq!(
            node_a
                .create_board(&BoardDef {
                    id: "bad".into(),
                    descending: true,
                    operator: Operator::Set,
                    reset_cron: Some("61 * * * *".into())
                })
                .await
                .unwrap_err()
                .code,
            "bad_cron"
        );
    }
}
