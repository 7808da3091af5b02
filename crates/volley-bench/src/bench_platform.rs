//! Platform benchmarks, each next to its physical floor measured in the same run:
//!
//! - `volley-bench auth`: register and login requests/s through the node's HTTP API, next to
//!   the Argon2id hashes/s this box can do (one core, and all cores) with the same parameters.
//! - `volley-bench matchmaker`: time to process 1k/10k/100k tickets (and with unmatchable
//!   ones), next to a plain sort of the same tickets by skill.
//! - `volley-bench chat`: chat messages and deliveries per second through one node (next to the
//!   raw insert rate of its database) and across two nodes over NATS (next to raw NATS
//!   publish/subscribe of the same deliveries).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use volley_client::Api;
use volley_proto::api::{CreateLobby, Event};
use volley_server::{Node, NodeConfig, NodeHandle};

#[derive(clap::Args, Debug)]
pub(crate) struct AuthArgs {
    /// Accounts registered (then logged in) through the API.
    #[arg(long, default_value_t = 200)]
    accounts: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub(crate) struct MatchArgs {
    /// Ticket counts (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    tickets: Vec<usize>,
    /// Fractions of tickets that can never match (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,0.5")]
    unmatchable: Vec<f64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub(crate) struct ChatArgs {
    /// Members of the channel (each with an event WebSocket).
    #[arg(long, default_value_t = 8)]
    members: usize,
    /// Messages sent in all.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// PostgreSQL for the two-node run (default: the tests' database URL).
    #[arg(long)]
    postgres: Option<String>,
    /// NATS for the two-node run.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Skip the two-node run.
    #[arg(long)]
    one_node_only: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn node_config(dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        data_dir: dir.to_owned(),
        http_addr: ([127, 0, 0, 1], 0).into(),
        quic_addr: ([127, 0, 0, 1], 0).into(),
        logins_per_ip_per_s: 1e9,
        logins_per_ip_burst: 1e9,
        chat_per_s: 1e9,
        chat_burst: 1e9,
        ..NodeConfig::default()
    }
}

/// Argon2id hashes per second with `threads` threads for about `secs`.
fn argon2_rate(m_kib: u32, t: u32, threads: usize, secs: f64) -> f64 {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let done = done.clone();
            std::thread::spawn(move || {
                let Ok(params) = argon2::Params::new(m_kib, t, 1, None) else {
                    return;
                };
                let a = argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    params,
                );
                while start.elapsed().as_secs_f64() < secs {
                    let salt = SaltString::generate(&mut rand::rngs::OsRng);
                    if a.hash_password(b"benchmark password", &salt).is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Runs `n` calls of `f(i)` with `concurrency` at a time; returns (ok, failed, seconds).
async fn drive<F, Fut>(n: usize, concurrency: usize, f: F) -> (usize, usize, f64)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (f, next, ok) = (f.clone(), next.clone(), ok.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= n {
                        break;
                    }
                    if f(i).await {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let ok = ok.load(Ordering::Relaxed) as usize;
    (ok, n - ok, start.elapsed().as_secs_f64())
}

#[derive(Debug, Serialize)]
struct AuthReport {
    argon2_m_kib: u32,
    argon2_t: u32,
    cores: usize,
    hashes_per_s_one_core: f64,
    hashes_per_s_all_cores: f64,
    register_per_s: f64,
    register_failed: usize,
    login_per_s: f64,
    login_failed: usize,
    device_login_per_s: f64,
    register_ratio_to_floor: f64,
    login_ratio_to_floor: f64,
}

pub(crate) async fn auth(args: AuthArgs) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let base_cfg = NodeConfig::default();
    let (m, t) = (base_cfg.argon2_m_kib, base_cfg.argon2_t);
    let one = tokio::task::spawn_blocking(move || argon2_rate(m, t, 1, 3.0)).await?;
    let all = tokio::task::spawn_blocking(move || argon2_rate(m, t, cores, 3.0)).await?;
    let dir = tempfile::tempdir()?;
    let node = Node::start(node_config(dir.path())).await?;
    let base = format!("http://{}", node.http_addr);
    let http = reqwest::Client::new();
    let tag = std::process::id();
    let (b, h) = (base.clone(), http.clone());
    let (reg_ok, reg_fail, reg_s) = drive(args.accounts, args.concurrency, move |i| {
        let (b, h) = (b.clone(), h.clone());
        async move {
            let body = serde_json::json!({"email": format!("bench{i}-{tag}@example.com"), "password": "benchmark password"});
            h.post(format!("{b}/v1/auth/email/register")).json(&body).send().await.is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    let (b, h) = (base.clone(), http.clone());
    let (login_ok, login_fail, login_s) = drive(args.accounts, args.concurrency, move |i| {
        let (b, h) = (b.clone(), h.clone());
        async move {
            let body = serde_json::json!({"email": format!("bench{i}-{tag}@example.com"), "password": "benchmark password"});
            h.post(format!("{b}/v1/auth/email")).json(&body).send().await.is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    let (b, h) = (base.clone(), http.clone());
    let devices = args.accounts * 10;
    let (dev_ok, _, dev_s) = drive(devices, args.concurrency, move |i| {
        let (b, h) = (b.clone(), h.clone());
        async move {
            let body = serde_json::json!({"device_id": format!("bench-device-{i}-{tag}")});
            h.post(format!("{b}/v1/auth/device"))
                .json(&body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    node.shutdown().await;
    let register = reg_ok as f64 / reg_s;
    let login = login_ok as f64 / login_s;
    let r = AuthReport {
        argon2_m_kib: m,
        argon2_t: t,
        cores,
        hashes_per_s_one_core: one,
        hashes_per_s_all_cores: all,
        register_per_s: register,
        register_failed: reg_fail,
        login_per_s: login,
        login_failed: login_fail,
        device_login_per_s: dev_ok as f64 / dev_s,
        register_ratio_to_floor: register / all,
        login_ratio_to_floor: login / all,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("Argon2id m={} KiB t={} p=1 on {} cores", m, t, cores);
        println!(
            "  floor: {:.1} hashes/s on one core, {:.1} on all cores",
            one, all
        );
        println!(
            "  register: {:.1}/s ({} failed), {:.2} of the all-core floor",
            register, reg_fail, r.register_ratio_to_floor
        );
        println!(
            "  login:    {:.1}/s ({} failed), {:.2} of the all-core floor",
            login, login_fail, r.login_ratio_to_floor
        );
        println!("  device login (no hashing): {:.0}/s", r.device_login_per_s);
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct MatchRow {
    tickets: usize,
    unmatchable_fraction: f64,
    matchmaker_ms: f64,
    add_ms: f64,
    sort_ms: f64,
    ratio_to_sort: f64,
    matches: usize,
    players_matched: usize,
    unmatchable_matched: usize,
}

pub(crate) fn matchmaker(args: MatchArgs) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for &u in &args.unmatchable {
        for &n in &args.tickets {
            let r = volley_match::bench::run_bench(n, u, 7);
            let mm = r.matchmaker_time.as_secs_f64() * 1e3;
            let sort = r.sort_time.as_secs_f64() * 1e3;
            rows.push(MatchRow {
                tickets: n,
                unmatchable_fraction: u,
                matchmaker_ms: mm,
                add_ms: r.add_time.as_secs_f64() * 1e3,
                sort_ms: sort,
                ratio_to_sort: mm / sort.max(1e-9),
                matches: r.matches,
                players_matched: r.players_matched,
                unmatchable_matched: r.unmatchable_matched,
            });
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:>8} {:>6} {:>12} {:>9} {:>9} {:>8} {:>8} {:>9}",
            "tickets", "unm.", "matchmaker", "(add)", "sort", "ratio", "matches", "matched"
        );
        for r in &rows {
            println!(
                "{:>8} {:>6.2} {:>10.1}ms {:>7.1}ms {:>7.1}ms {:>7.1}x {:>8} {:>9}",
                r.tickets,
                r.unmatchable_fraction,
                r.matchmaker_ms,
                r.add_ms,
                r.sort_ms,
                r.ratio_to_sort,
                r.matches,
                r.players_matched
            );
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct ChatRun {
    setup: String,
    members: usize,
    messages: usize,
    messages_per_s: f64,
    deliveries_per_s: f64,
    lost: u64,
    floor_name: String,
    floor_per_s: f64,
    ratio_to_floor: f64,
}

/// Members log in on `recv_base`, open their event sockets there, join a lobby; senders post
/// through `send_base`. Returns (msgs/s, deliveries/s, lost).
async fn chat_run(
    send_base: &str,
    recv_base: &str,
    members: usize,
    messages: usize,
) -> anyhow::Result<(f64, f64, u64)> {
    let tag = std::process::id();
    let mut recv = Vec::new();
    let mut send = Vec::new();
    for i in 0..members {
        let dev = format!("bench-chat-{tag}-{i}-{}", volley_store::unix_ms());
        let mut r = Api::new(recv_base);
        r.login_device(&dev).await?;
        let mut s = Api::new(send_base);
        s.login_device(&dev).await?;
        recv.push(r);
        send.push(s);
    }
    let lobby = send[0]
        .create_lobby(&CreateLobby {
            kind: "lobby".into(),
            name: None,
            max_members: members as u32,
            open: true,
            attrs: Default::default(),
        })
        .await?;
    for s in &send[1..] {
        s.join_lobby(lobby.lobby_id).await?;
    }
    let channel = format!("lobby.{}", lobby.lobby_id);
    let delivered = Arc::new(AtomicU64::new(0));
    let want = (messages * members) as u64;
    let mut readers = Vec::new();
    for r in &recv {
        let mut ev = r.events().await?;
        anyhow::ensure!(
            matches!(ev.next().await, Some(Event::Ready { .. })),
            "no ready event"
        );
        let d = delivered.clone();
        readers.push(tokio::spawn(async move {
            while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(10), ev.next()).await {
                if matches!(e, Event::Chat { .. }) && d.fetch_add(1, Ordering::Relaxed) + 1 >= want
                {
                    break;
                }
            }
        }));
    }
    // Let join events drain.
    tokio::time::sleep(Duration::from_millis(300)).await;
    delivered.store(0, Ordering::Relaxed);
    let send = Arc::new(send);
    let start = Instant::now();
    let s2 = send.clone();
    let ch = channel.clone();
    let (_ok, failed, sent_s) = drive(messages, members.min(8), move |i| {
        let s = s2.clone();
        let ch = ch.clone();
        async move {
            s[i % s.len()]
                .send_chat(&ch, &format!("message {i}"))
                .await
                .is_ok()
        }
    })
    .await;
    anyhow::ensure!(failed == 0, "{failed} sends failed");
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_s = start.elapsed().as_secs_f64();
    let got = delivered.load(Ordering::Relaxed);
    for r in readers {
        r.abort();
    }
    Ok((
        messages as f64 / sent_s,
        got as f64 / all_s,
        want.saturating_sub(got),
    ))
}

/// Raw database floor: one-row INSERT commits per second on `db` (what each chat message costs).
async fn insert_floor(db: &volley_store::Db, n: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let db = db.clone();
            let done = done.clone();
            tokio::spawn(async move {
                for i in 0..n / 8 {
                    let r = sqlx::query(
                        "INSERT INTO chat_messages (channel, sender_id, body, created_ms) VALUES ($1, $2, $3, $4)",
                    )
                    .bind("floor")
                    .bind(w as i64)
                    .bind(format!("message {i}"))
                    .bind(0i64)
                    .execute(db.writer())
                    .await;
                    if r.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// Raw NATS floor: `messages` publishes each fanned out to `members` subscribers on per-user
/// subjects (what the node does per chat message), deliveries per second.
async fn nats_floor(url: &str, members: usize, messages: usize) -> anyhow::Result<f64> {
    let tag = std::process::id();
    let pubc = volley_store::Bus::nats(url, "bench").await?;
    let subc = volley_store::Bus::nats(url, "bench").await?;
    let got = Arc::new(AtomicU64::new(0));
    let want = (messages * members) as u64;
    let mut subs = Vec::new();
    for m in 0..members {
        let mut s = subc.subscribe(&format!("bench.{tag}.user.{m}")).await?;
        let got = got.clone();
        subs.push(tokio::spawn(async move {
            while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(10), s.next()).await {
                if got.fetch_add(1, Ordering::Relaxed) + 1 >= want {
                    break;
                }
            }
        }));
    }
    let payload = vec![b'x'; 150];
    let start = Instant::now();
    for _ in 0..messages {
        for m in 0..members {
            pubc.publish(&format!("bench.{tag}.user.{m}"), payload.clone())
                .await?;
        }
    }
    pubc.flush().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = got.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    for s in subs {
        s.abort();
    }
    Ok(rate)
}

async fn start(cfg: NodeConfig) -> anyhow::Result<(NodeHandle, String)> {
    let node = Node::start(cfg).await?;
    let base = format!("http://{}", node.http_addr);
    Ok((node, base))
}

pub(crate) async fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    // One node, SQLite, in-process bus.
    let dir = tempfile::tempdir()?;
    let (node, base) = start(node_config(dir.path())).await?;
    let (mps, dps, lost) = chat_run(&base, &base, args.members, args.messages).await?;
    node.shutdown().await;
    let floor_db = volley_store::Db::open_sqlite(&dir.path().join("floor.db")).await?;
    let floor = insert_floor(&floor_db, args.messages).await?;
    runs.push(ChatRun {
        setup: "one node, SQLite, in-process bus".into(),
        members: args.members,
        messages: args.messages,
        messages_per_s: mps,
        deliveries_per_s: dps,
        lost,
        floor_name: "raw SQLite INSERT commits/s".into(),
        floor_per_s: floor,
        ratio_to_floor: mps / floor,
    });
    if !args.one_node_only {
        let pg = match &args.postgres {
            Some(u) => u.clone(),
            None => volley_store::testing::empty_postgres()
                .await
                .context("PostgreSQL for the two-node run")?,
        };
        let mut cfgs = Vec::new();
        let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
        for (i, d) in dirs.iter().enumerate() {
            let mut c = node_config(d.path());
            c.database = Some(pg.clone());
            c.nats = Some(args.nats.clone());
            c.node_id = format!("bench-{i}");
            cfgs.push(c);
        }
        let (n1, b1) = start(cfgs.remove(0)).await?;
        let (n2, b2) = start(cfgs.remove(0)).await?;
        let (mps, dps, lost) = chat_run(&b1, &b2, args.members, args.messages).await?;
        n1.shutdown().await;
        n2.shutdown().await;
        let nf = nats_floor(&args.nats, args.members, args.messages).await?;
        let pg_db = volley_store::Db::open(&pg).await?;
        let pf = insert_floor(&pg_db, args.messages).await?;
        runs.push(ChatRun {
            setup: "two nodes, PostgreSQL + NATS (send on A, receive on B)".into(),
            members: args.members,
            messages: args.messages,
            messages_per_s: mps,
            deliveries_per_s: dps,
            lost,
            floor_name: "raw NATS fan-out deliveries/s".into(),
            floor_per_s: nf,
            ratio_to_floor: dps / nf,
        });
        runs.push(ChatRun {
            setup: "(floor) raw PostgreSQL INSERT commits/s".into(),
            members: 0,
            messages: args.messages,
            messages_per_s: pf,
            deliveries_per_s: 0.0,
            lost: 0,
            floor_name: "-".into(),
            floor_per_s: pf,
            ratio_to_floor: mps / pf,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
    } else {
        for r in &runs {
            println!(
                "{}: {:.0} msgs/s, {:.0} deliveries/s, {} lost; floor {} = {:.0}/s, ratio {:.2}",
                r.setup,
                r.messages_per_s,
                r.deliveries_per_s,
                r.lost,
                r.floor_name,
                r.floor_per_s,
                r.ratio_to_floor
            );
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub(crate) struct LedgerArgs {
    /// Transfers per run.
    #[arg(long, default_value_t = 4000)]
    transfers: usize,
    /// PostgreSQL URL (default: a fresh database on the tests' server); `skip` to skip.
    #[arg(long)]
    postgres: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct LedgerRow {
    backend: String,
    mode: String,
    transfers_per_s: f64,
    raw_insert_commits_per_s: f64,
    ratio: f64,
}

/// Transfers/s between 100 wallets with 8 concurrent callers, one transfer per chain (`batch`
/// 1) or linked chains of `batch` transfers (one commit each).
async fn ledger_rate(
    p: &volley_platform::Platform,
    n: usize,
    batch: usize,
    tag: &str,
) -> anyhow::Result<f64> {
    use volley_platform::ledger::{AccountRef, Transfer};
    let wallets: Vec<u64> = (1..=100).collect();
    let chains = n / batch;
    let p2 = p.clone();
    let tag = tag.to_owned();
    let (ok, failed, secs) = drive(chains, 8, move |i| {
        let p = p2.clone();
        let tag = tag.clone();
        let wallets = wallets.clone();
        async move {
            let chain: Vec<Transfer> = (0..batch)
                .map(|k| {
                    let from = wallets[(i * 7 + k * 13) % wallets.len()];
                    let to = wallets[(i * 11 + k * 3 + 1) % wallets.len()];
                    let to = if to == from {
                        wallets[(from as usize) % wallets.len()]
                    } else {
                        to
                    };
                    Transfer {
                        id: format!("{tag}-{i}-{k}"),
                        debit: AccountRef::wallet(from),
                        credit: AccountRef::wallet(to),
                        currency: "gold".into(),
                        amount: 1,
                        kind: "bench".into(),
                        item_id: None,
                    }
                })
                .collect();
            p.transfer_chain("bench", &chain).await.is_ok()
        }
    })
    .await;
    anyhow::ensure!(failed == 0, "{failed} of {} chains failed", ok + failed);
    Ok((ok * batch) as f64 / secs)
}

async fn ledger_backend(
    db: volley_store::Db,
    name: &str,
    n: usize,
    rows: &mut Vec<LedgerRow>,
) -> anyhow::Result<()> {
    let p =
        volley_platform::Platform::new(db.clone(), volley_store::Bus::local(), Default::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    // 100 funded wallets (ids 1..=100 are accounts of the bench database).
    for i in 1..=100u64 {
        sqlx::query("INSERT INTO accounts (id, display_name, status, created_ms, updated_ms) VALUES ($1, 'b', 0, 0, 0) ON CONFLICT (id) DO NOTHING")
            .bind(i as i64)
            .execute(db.writer())
            .await?;
        p.grant(&format!("fund-{i}"), i, "gold", 1_000_000, "grant")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let raw = insert_floor(&db, n).await?;
    for (mode, batch) in [("single", 1usize), ("linked chains of 16", 16)] {
        let rate = ledger_rate(&p, n, batch, &format!("{name}-{batch}")).await?;
        rows.push(LedgerRow {
            backend: name.into(),
            mode: mode.into(),
            transfers_per_s: rate,
            raw_insert_commits_per_s: raw,
            ratio: rate / raw,
        });
    }
    let audit = p.audit().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(audit.ok(), "audit failed after the bench: {audit:?}");
    Ok(())
}

pub(crate) async fn ledger(args: LedgerArgs) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let dir = tempfile::tempdir()?;
    let db = volley_store::Db::open_sqlite(&dir.path().join("bench.db")).await?;
    ledger_backend(db, "sqlite", args.transfers, &mut rows).await?;
    if args.postgres.as_deref() != Some("skip") {
        let url = match &args.postgres {
            Some(u) => u.clone(),
            None => volley_store::testing::empty_postgres().await?,
        };
        let db = volley_store::Db::open(&url).await?;
        ledger_backend(db, "postgres", args.transfers, &mut rows).await?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in &rows {
            println!(
                "{:>8} {:>20}: {:>8.0} transfers/s; raw INSERT commits {:>8.0}/s; ratio {:.2}",
                r.backend, r.mode, r.transfers_per_s, r.raw_insert_commits_per_s, r.ratio
            );
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub(crate) struct BoardArgs {
    /// Records loaded before measuring.
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    /// Operations measured per kind.
    #[arg(long, default_value_t = 100_000)]
    ops: usize,
    /// Redis address (the peer).
    #[arg(long, default_value = "127.0.0.1:6379")]
    redis: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// A minimal blocking RESP client for the Redis peer.
struct Resp {
    r: std::io::BufReader<std::net::TcpStream>,
    w: std::net::TcpStream,
}

impl Resp {
    fn connect(addr: &str) -> anyhow::Result<Resp> {
        let s = std::net::TcpStream::connect(addr).with_context(|| format!("Redis at {addr}"))?;
        s.set_nodelay(true)?;
        Ok(Resp {
            r: std::io::BufReader::new(s.try_clone()?),
            w: s,
        })
    }

    fn send(&mut self, args: &[&str]) -> anyhow::Result<()> {
        use std::io::Write;
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.w.write_all(out.as_bytes())?;
        Ok(())
    }

    /// Reads one reply, skipping its content.
    fn skip_reply(&mut self) -> anyhow::Result<()> {
        use std::io::{BufRead, Read};
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        let line = line.trim_end();
        anyhow::ensure!(!line.is_empty(), "Redis closed the connection");
        let (t, rest) = line.split_at(1);
        match t {
            "-" => anyhow::bail!("Redis error: {rest}"),
            "$" => {
                let n: i64 = rest.parse()?;
                if n >= 0 {
                    let mut buf = vec![0u8; n as usize + 2];
                    self.r.read_exact(&mut buf)?;
                }
            }
            "*" => {
                let n: i64 = rest.parse()?;
                for _ in 0..n.max(0) {
                    self.skip_reply()?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn cmd(&mut self, args: &[&str]) -> anyhow::Result<()> {
        self.send(args)?;
        self.skip_reply()
    }
}

#[derive(Debug, Serialize)]
struct BoardReport {
    records: usize,
    volley_index_submit_per_s: f64,
    redis_zadd_per_s: f64,
    submit_ratio: f64,
    volley_index_rank_per_s: f64,
    redis_zrevrank_per_s: f64,
    rank_ratio: f64,
    platform: Vec<PlatformBoardRow>,
    note: &'static str,
}

#[derive(Debug, Serialize)]
struct PlatformBoardRow {
    rank_store: &'static str,
    submit_per_s: f64,
    raw_sqlite_commits_per_s: f64,
    submit_ratio_to_floor: f64,
    rank_per_s: f64,
}

pub(crate) async fn leaderboard(args: BoardArgs) -> anyhow::Result<()> {
    use volley_platform::rank::RankIndex;
    let n = args.records;
    let mut x: u64 = 0x2545f4914f6cdd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let members: Vec<String> = (0..n).map(|i| format!("{}", 1_000_000 + i)).collect();
    let scores: Vec<i64> = (0..n).map(|_| (next() % 1_000_000) as i64).collect();
    // Volley's index, in-process.
    let mut idx = RankIndex::new();
    for (m, s) in members.iter().zip(&scores) {
        idx.set(m, *s);
    }
    let picks: Vec<(usize, i64)> = (0..args.ops)
        .map(|_| ((next() % n as u64) as usize, (next() % 1_000_000) as i64))
        .collect();
    let t = Instant::now();
    for (i, s) in &picks {
        idx.set(&members[*i], *s);
    }
    let v_submit = picks.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut sink = 0usize;
    for (i, _) in &picks {
        sink = sink.wrapping_add(idx.rev_rank(&members[*i]).unwrap_or(0));
    }
    let v_rank = picks.len() as f64 / t.elapsed().as_secs_f64();
    anyhow::ensure!(sink > 0 || n < 2, "rank results unused");
    // Redis, same data, one client, one request at a time (as a game server would ask).
    let mut r = Resp::connect(&args.redis)?;
    let key = format!("volley-bench:{}", std::process::id());
    r.cmd(&["DEL", &key])?;
    for chunk in members.iter().zip(&scores).collect::<Vec<_>>().chunks(1000) {
        let mut a: Vec<String> = vec!["ZADD".into(), key.clone()];
        for (m, s) in chunk {
            a.push(s.to_string());
            a.push((*m).clone());
        }
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        r.cmd(&refs)?;
    }
    let t = Instant::now();
    for (i, s) in &picks {
        r.cmd(&["ZADD", &key, &s.to_string(), &members[*i]])?;
    }
    let r_submit = picks.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for (i, _) in &picks {
        r.cmd(&["ZREVRANK", &key, &members[*i]])?;
    }
    let r_rank = picks.len() as f64 / t.elapsed().as_secs_f64();
    r.cmd(&["DEL", &key])?;
    // Durable submissions and rank queries through the platform (SQLite, synchronous=FULL), on
    // a board of 500 players, with the rank index in memory and in Redis; next to the raw
    // SQLite commit rate (the floor for a durable submission).
    let mut platform_rows = Vec::new();
    for store in ["memory", "redis"] {
        let dir = tempfile::tempdir()?;
        let db = volley_store::Db::open_sqlite(&dir.path().join("board.db")).await?;
        let p = volley_platform::Platform::new(db, volley_store::Bus::local(), Default::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if store == "redis" {
            p.use_redis(
                &format!("redis://{}/", args.redis),
                &format!("volley-bench:{}:", std::process::id()),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        p.create_board(&volley_platform::leaderboards::BoardDef {
            id: "bench".into(),
            descending: true,
            operator: volley_platform::leaderboards::Operator::Best,
            reset_cron: None,
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let durable_n = 2000usize;
        let p2 = p.clone();
        let (ok, _, secs) = drive(durable_n, 8, move |i| {
            let p = p2.clone();
            async move {
                p.submit_score("bench", (i % 500) as u64 + 1, i as i64, "")
                    .await
                    .is_ok()
            }
        })
        .await;
        anyhow::ensure!(
            ok == durable_n,
            "{store}: {} submissions failed",
            durable_n - ok
        );
        let p2 = p.clone();
        let (rok, _, rsecs) = drive(20_000, 8, move |i| {
            let p = p2.clone();
            async move {
                matches!(
                    p.board_rank("bench", (i % 500) as u64 + 1).await,
                    Ok(Some(_))
                )
            }
        })
        .await;
        anyhow::ensure!(
            rok == 20_000,
            "{store}: {} rank queries failed",
            20_000 - rok
        );
        let floor = insert_floor(p.db(), 2000).await?;
        platform_rows.push(PlatformBoardRow {
            rank_store: store,
            submit_per_s: ok as f64 / secs,
            raw_sqlite_commits_per_s: floor,
            submit_ratio_to_floor: ok as f64 / secs / floor,
            rank_per_s: rok as f64 / rsecs,
        });
    }
    let report = BoardReport {
        records: n,
        volley_index_submit_per_s: v_submit,
        redis_zadd_per_s: r_submit,
        submit_ratio: v_submit / r_submit,
        volley_index_rank_per_s: v_rank,
        redis_zrevrank_per_s: r_rank,
        rank_ratio: v_rank / r_rank,
        platform: platform_rows,
        note: "Volley's index is in-process; Redis is asked over loopback, one request at a time",
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{} records", n);
        println!(
            "  submit: Volley index {:.0}/s, Redis ZADD {:.0}/s, ratio {:.1}",
            v_submit, r_submit, report.submit_ratio
        );
        println!(
            "  rank:   Volley index {:.0}/s, Redis ZREVRANK {:.0}/s, ratio {:.1}",
            v_rank, r_rank, report.rank_ratio
        );
        for r in &report.platform {
            println!(
                "  platform, SQLite, 8 callers, ranks in {}: submit {:.0}/s (raw SQLite commits {:.0}/s, ratio {:.2}), rank {:.0}/s",
                r.rank_store, r.submit_per_s, r.raw_sqlite_commits_per_s, r.submit_ratio_to_floor, r.rank_per_s
            );
        }
    }
    Ok(())
}
