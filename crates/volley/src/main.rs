//! `volley`: the node and a self-contained demo.
//!
//! - `volley serve`: run a node (no configuration needed; TOML file, `VOLLEY_*` environment
//!   variables and flags override the defaults, in that order).
//! - `volley demo`: an embedded node plus bot players in one room, with a live per-pair summary.
//! - `volley bot`: one bot player against any node (used by the NAT lab tests).
//! - `volley content`, `volley admin`: game builds, and operator commands against the database.
//!
//! The benchmarks are a separate binary, `volley-bench` (`cargo run --release -p volley-bench --
//! <which>`, crate `crates/volley-bench`).

mod bot;
mod content_cmd;
mod demo;
mod demo_netcode;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use volley_server::{Node, NodeConfig, RetryPolicy};

#[derive(Parser, Debug)]
#[command(
    name = "volley",
    version,
    about = "Self-hostable backend for real-time multiplayer games"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a node.
    Serve(Box<ServeArgs>),
    /// Run an embedded node and bot players in one room; print per-pair path, RTT, loss, bytes.
    Demo(demo::DemoArgs),
    /// A bot player that joins a room on a node, exchanges messages, and prints a JSON report.
    Bot(bot::BotArgs),
    /// Game builds: keygen, publish to a node, fetch and install.
    Content {
        #[command(subcommand)]
        which: content_cmd::ContentCmd,
    },
    /// Operator commands against a node's database.
    Admin {
        #[command(subcommand)]
        which: AdminCmd,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCmd {
    /// Checks every ledger invariant over the whole database (balances re-derived from transfers,
    /// each currency summing to zero, bounds, unique item owners); exits 1 if any is broken.
    Audit {
        /// The database: sqlite://path or postgres://... (default: SQLite in the data directory).
        #[arg(long, env = "VOLLEY_DATABASE")]
        database: Option<String>,
        /// The node's data directory (for the default SQLite database).
        #[arg(long, env = "VOLLEY_DATA_DIR", default_value = "volley-data")]
        data_dir: PathBuf,
    },
}

async fn audit(database: Option<String>, data_dir: PathBuf) -> anyhow::Result<()> {
    let db = match database {
        Some(url) => volley_store::Db::open(&url).await?,
        None => {
            let path = data_dir.join("volley.db");
            anyhow::ensure!(path.exists(), "no database at {}", path.display());
            volley_store::Db::open_sqlite(&path).await?
        }
    };
    let p = volley_platform::Platform::new(db, volley_store::Bus::local(), Default::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let report = p.audit().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.ok() {
        eprintln!(
            "audit: ok ({} accounts, {} transfers)",
            report.accounts, report.transfers
        );
        Ok(())
    } else {
        eprintln!("audit: INVARIANTS BROKEN");
        std::process::exit(1);
    }
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// TOML config file; missing keys keep their defaults.
    #[arg(long, env = "VOLLEY_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (key and certificate are created there on first run).
    #[arg(long, env = "VOLLEY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP API listen address.
    #[arg(long, env = "VOLLEY_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// QUIC listen address.
    #[arg(long, env = "VOLLEY_QUIC_ADDR")]
    quic_addr: Option<SocketAddr>,
    /// Address players connect to (tickets are bound to it); defaults to the QUIC address.
    #[arg(long, env = "VOLLEY_PUBLIC_ADDR")]
    public_addr: Option<SocketAddr>,
    /// Connect ticket lifetime in milliseconds.
    #[arg(long, env = "VOLLEY_TICKET_LIFETIME_MS")]
    ticket_lifetime_ms: Option<u64>,
    /// When to answer new connections with a QUIC Retry: always | under-load.
    #[arg(long, env = "VOLLEY_RETRY", value_parser = parse_retry)]
    retry: Option<RetryPolicy>,
    /// Most players at once.
    #[arg(long, env = "VOLLEY_PLAYERS_MAX")]
    players_max: Option<usize>,
    /// Most rooms at once.
    #[arg(long, env = "VOLLEY_ROOMS_MAX")]
    rooms_max: Option<usize>,
    /// New connections allowed per source IP per second.
    #[arg(long, env = "VOLLEY_CONNECTS_PER_IP_PER_S")]
    connects_per_ip_per_s: Option<f64>,
    /// Burst of new connections allowed per source IP.
    #[arg(long, env = "VOLLEY_CONNECTS_PER_IP_BURST")]
    connects_per_ip_burst: Option<f64>,
    /// Handshakes in progress beyond which new connections are refused.
    #[arg(long, env = "VOLLEY_HANDSHAKES_MAX")]
    handshakes_max: Option<usize>,
    /// Players per room when the creator does not say.
    #[arg(long, env = "VOLLEY_ROOM_PLAYERS_DEFAULT")]
    room_players_default: Option<u32>,
    /// Most players a room may be created for.
    #[arg(long, env = "VOLLEY_ROOM_PLAYERS_MAX")]
    room_players_max: Option<u32>,
    /// With --retry under-load: handshakes in progress before Retry starts.
    #[arg(long, env = "VOLLEY_HANDSHAKES_BEFORE_RETRY")]
    handshakes_before_retry: Option<usize>,
    /// Milliseconds a connected player has to present its ticket.
    #[arg(long, env = "VOLLEY_HELLO_TIMEOUT_MS")]
    hello_timeout_ms: Option<u64>,
    /// Control frames queued towards one player before its senders are slowed down.
    #[arg(long, env = "VOLLEY_PLAYER_QUEUE_FRAMES_MAX")]
    player_queue_frames_max: Option<usize>,
    /// Database URL: sqlite://path or postgres://user@host:port/db (default: SQLite in the data
    /// directory).
    #[arg(long, env = "VOLLEY_DATABASE")]
    database: Option<String>,
    /// NATS URL for events between nodes (default: in-process).
    #[arg(long, env = "VOLLEY_NATS")]
    nats: Option<String>,
    /// Redis URL for leaderboard ranks and the content tracker, shared by all nodes (default:
    /// in memory per node).
    #[arg(long, env = "VOLLEY_REDIS")]
    redis: Option<String>,
    /// Prefix of this cluster's Redis keys.
    #[arg(long, env = "VOLLEY_REDIS_PREFIX")]
    redis_prefix: Option<String>,
    /// Upload cap for serving content chunks, KiB/s (0: none).
    #[arg(long, env = "VOLLEY_CONTENT_MAX_KIB_PER_S")]
    content_max_kib_per_s: Option<u64>,
    /// Another node of the cluster to pull builds from when this one lacks them (repeatable,
    /// or comma-separated).
    #[arg(
        long = "content-peer",
        env = "VOLLEY_CONTENT_PEERS",
        value_delimiter = ','
    )]
    content_peers: Vec<String>,
    /// How long a collection keeps a chunk uploaded (or reported present to a publisher) but
    /// not yet referenced by a version, seconds (default 3600).
    #[arg(long, env = "VOLLEY_CONTENT_GRACE_SECS")]
    content_grace_secs: Option<u64>,
    /// Collect every game's unreferenced chunks this often, seconds (default 0: only when
    /// asked, `volley content collect`).
    #[arg(long, env = "VOLLEY_CONTENT_COLLECT_EVERY_SECS")]
    content_collect_every_secs: Option<u64>,
    /// This node's name in the cluster.
    #[arg(long, env = "VOLLEY_NODE_ID")]
    node_id: Option<String>,
    /// Key a studio's backend presents for server-to-server calls (at least 16 characters).
    #[arg(long, env = "VOLLEY_SERVER_KEY", hide_env_values = true)]
    server_key: Option<String>,
    /// Session token lifetime in milliseconds.
    #[arg(long, env = "VOLLEY_SESSION_TTL_MS")]
    session_ttl_ms: Option<u64>,
    /// Argon2id memory cost in KiB.
    #[arg(long, env = "VOLLEY_ARGON2_M_KIB")]
    argon2_m_kib: Option<u32>,
    /// Argon2id passes.
    #[arg(long, env = "VOLLEY_ARGON2_T")]
    argon2_t: Option<u32>,
    /// Login/register/refresh calls allowed per client address per second.
    #[arg(long, env = "VOLLEY_LOGINS_PER_IP_PER_S")]
    logins_per_ip_per_s: Option<f64>,
    /// Burst of the above.
    #[arg(long, env = "VOLLEY_LOGINS_PER_IP_BURST")]
    logins_per_ip_burst: Option<f64>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

fn parse_retry(s: &str) -> Result<RetryPolicy, String> {
    match s {
        "always" => Ok(RetryPolicy::Always),
        "under-load" => Ok(RetryPolicy::UnderLoad),
        _ => Err("expected 'always' or 'under-load'".into()),
    }
}

impl ServeArgs {
    fn to_config(&self) -> anyhow::Result<NodeConfig> {
        let mut c = match &self.config {
            Some(p) => NodeConfig::from_toml_file(p)?,
            None => NodeConfig::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f.clone() { c.$f = v; } )* };
        }
        set!(
            data_dir,
            http_addr,
            quic_addr,
            ticket_lifetime_ms,
            retry,
            players_max,
            rooms_max,
            connects_per_ip_per_s,
            connects_per_ip_burst,
            handshakes_max,
            room_players_default,
            room_players_max,
            handshakes_before_retry,
            hello_timeout_ms,
            player_queue_frames_max,
            node_id,
            session_ttl_ms,
            argon2_m_kib,
            argon2_t,
            logins_per_ip_per_s,
            logins_per_ip_burst
        );
        if self.public_addr.is_some() {
            c.public_addr = self.public_addr;
        }
        if self.database.is_some() {
            c.database = self.database.clone();
        }
        if self.nats.is_some() {
            c.nats = self.nats.clone();
        }
        if self.redis.is_some() {
            c.redis = self.redis.clone();
        }
        if let Some(p) = &self.redis_prefix {
            c.redis_prefix = p.clone();
        }
        if self.server_key.is_some() {
            c.server_key = self.server_key.clone();
        }
        if let Some(k) = self.content_max_kib_per_s {
            c.content_max_kib_per_s = k;
        }
        if !self.content_peers.is_empty() {
            c.content_peers = self.content_peers.clone();
        }
        if let Some(s) = self.content_grace_secs {
            c.content_grace_secs = s;
        }
        if let Some(s) = self.content_collect_every_secs {
            c.content_collect_every_secs = s;
        }
        c.validate()?;
        Ok(c)
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VOLLEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Logs for commands whose stdout is a report: warnings only unless `VOLLEY_LOG` says otherwise.
fn init_tracing_quiet() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VOLLEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve(args) => {
            init_tracing();
            let cfg = args.to_config()?;
            if args.print_config {
                println!(
                    "{}",
                    toml::to_string_pretty(&cfg).context("config to TOML")?
                );
                return Ok(());
            }
            let node =
                Node::start_with(cfg, Some(std::sync::Arc::new(volley_server::modes::Modes)))
                    .await?;
            println!(
                "volley node: http://{} quic {} fingerprint {}",
                node.http_addr,
                node.public_addr(),
                node.fingerprint().to_hex()
            );
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
            node.shutdown().await;
            Ok(())
        }
        Cmd::Demo(args) => demo::run(args).await,
        Cmd::Bot(args) => {
            init_tracing_quiet();
            bot::run(args).await
        }
        Cmd::Content { which } => {
            init_tracing_quiet();
            content_cmd::run(which).await
        }
        Cmd::Admin {
            which: AdminCmd::Audit { database, data_dir },
        } => audit(database, data_dir).await,
    }
}
