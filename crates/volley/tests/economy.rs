//! The bank test: concurrent clients make random transfers through a real `volley serve`
//! process, which is killed with SIGKILL in the middle and restarted on the same database
//! (SQLite and PostgreSQL). Afterwards: the sum of balances is unchanged, no balance is below
//! its bound, every acknowledged transfer is present, no transfer id was applied twice, and the
//! node's own audit agrees.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

const KEY: &str = "bank-test-server-key-000000";
const PLAYERS: usize = 10;
const START_BALANCE: i64 = 1000;

/// `volley serve` on `dir` (and `database`), with login limits out of the test's way.
fn serve(dir: &std::path::Path, database: Option<&str>) -> (common::KillOnDrop, String) {
    let mut extra = vec![
        "--server-key",
        KEY,
        "--logins-per-ip-per-s",
        "100000",
        "--logins-per-ip-burst",
        "100000",
    ];
    if let Some(db) = database {
        extra.extend(["--database", db]);
    }
    common::serve_process(dir, &extra)
}

#[derive(Clone)]
struct Gift {
    from: usize,
    id: String,
    to: u64,
    amount: u64,
}

async fn send_gift(http: &reqwest::Client, base: &str, token: &str, g: &Gift) -> Result<u16, ()> {
    let r = http
        .post(format!("{base}/v1/wallet/gift"))
        .bearer_auth(token)
        .json(&serde_json::json!({"id": g.id, "to": g.to, "currency": "gold", "amount": g.amount}))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|_| ())?;
    Ok(r.status().as_u16())
}

async fn bank(database: Option<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, base) = serve(dir.path(), database.as_deref());
    let http = reqwest::Client::new();
    let mut players = Vec::new();
    for i in 0..PLAYERS {
        let s: serde_json::Value = http
            .post(format!("{base}/v1/auth/device"))
            .json(&serde_json::json!({"device_id": format!("bank-player-{i:04}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = s["player_id"].as_u64().unwrap();
        let token = s["token"].as_str().unwrap().to_owned();
        let r = http
            .post(format!("{base}/v1/admin/grant"))
            .header("x-volley-server-key", KEY)
            .json(&serde_json::json!({"id": format!("start-{id}"), "player": id, "currency": "gold", "amount": START_BALANCE}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        players.push((id, token));
    }
    let players = Arc::new(players);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let unsure: Arc<Mutex<Vec<Gift>>> = Arc::default();
    let stop = Instant::now() + Duration::from_secs(3);
    let mut clients = Vec::new();
    for c in 0..8u64 {
        let (players, acked, unsure, http, base) = (
            players.clone(),
            acked.clone(),
            unsure.clone(),
            http.clone(),
            base.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c);
            let mut n = 0;
            while Instant::now() < stop && n < 5000 {
                n += 1;
                let from = rng.gen_range(0..PLAYERS);
                let mut to = rng.gen_range(0..PLAYERS);
                if to == from {
                    to = (to + 1) % PLAYERS;
                }
                let g = Gift {
                    from,
                    id: format!("c{c}-{n}"),
                    to: players[to].0,
                    amount: rng.gen_range(1..60),
                };
                match send_gift(&http, &base, &players[from].1, &g).await {
                    Ok(200) => acked
                        .lock()
                        .unwrap()
                        .push(format!("{}:{}", players[from].0, g.id)),
                    Ok(409) => {} // insufficient funds: refused, nothing moved
                    Ok(s) => panic!("unexpected status {s}"),
                    // The node died under this request: it may or may not have committed.
                    Err(()) => {
                        unsure.lock().unwrap().push(g);
                        break;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // SIGKILL in the middle of the storm.
    node.kill();
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let unsure = unsure.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "only {} transfers acknowledged before the kill",
        acked.len()
    );
    let (_node2, base2) = serve(dir.path(), database.as_deref());
    // Retrying a transfer the client was unsure about applies it at most once.
    for g in &unsure {
        let token = players[g.from].1.clone();
        let s = send_gift(&http, &base2, &token, g)
            .await
            .expect("node back");
        assert!(s == 200 || s == 409, "{s}");
        // And again: a replay, still once.
        let s2 = send_gift(&http, &base2, &token, g)
            .await
            .expect("node back");
        assert_eq!(s, s2);
    }
    // Retrying acknowledged ones changes nothing either.
    let audit_before: serde_json::Value = http
        .get(format!("{base2}/v1/admin/audit"))
        .header("x-volley-server-key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Inspect the database directly.
    let db = match &database {
        Some(url) => volley_store::Db::open(url).await.unwrap(),
        None => volley_store::Db::open_sqlite(&dir.path().join("volley.db"))
            .await
            .unwrap(),
    };
    use sqlx::Row;
    let rows = sqlx::query("SELECT id FROM ledger_transfers")
        .fetch_all(db.reader())
        .await
        .unwrap();
    let ids: Vec<String> = rows.iter().map(|r| r.try_get("id").unwrap()).collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "a transfer id was applied twice");
    for a in &acked {
        assert!(
            distinct.contains(a),
            "acknowledged transfer {a} is missing after the kill"
        );
    }
    let mut total = 0i64;
    for (id, _) in players.iter() {
        let r = sqlx::query(
            "SELECT balance, min_balance FROM ledger_accounts WHERE owner_id = $1 AND name = 'wallet' AND currency = 'gold'",
        )
        .bind(*id as i64)
        .fetch_one(db.reader())
        .await
        .unwrap();
        let (bal, min): (i64, i64) = (
            r.try_get("balance").unwrap(),
            r.try_get("min_balance").unwrap(),
        );
        assert!(bal >= min, "player {id} below its bound: {bal}");
        total += bal;
    }
    assert_eq!(
        total,
        START_BALANCE * PLAYERS as i64,
        "money was created or lost"
    );
    assert_eq!(
        audit_before["unbalanced_currencies"],
        serde_json::json!([]),
        "{audit_before}"
    );
    assert_eq!(
        audit_before["mismatched"],
        serde_json::json!([]),
        "{audit_before}"
    );
    assert_eq!(
        audit_before["out_of_bounds"],
        serde_json::json!([]),
        "{audit_before}"
    );
    db.close().await;
    // The operator's audit command agrees, as a process of its own.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_volley"));
    cmd.args(["admin", "audit"])
        .env("VOLLEY_DATA_DIR", dir.path());
    if let Some(url) = &database {
        cmd.args(["--database", url]);
    }
    let out = cmd.output().expect("run audit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("audit JSON");
    assert!(report["transfers"].as_u64().unwrap() as usize >= acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_on_sqlite_survives_sigkill() {
    bank(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_on_postgres_survives_sigkill() {
    let url = volley_store::testing::empty_postgres()
        .await
        .expect("PostgreSQL for tests");
    bank(Some(url)).await;
}
