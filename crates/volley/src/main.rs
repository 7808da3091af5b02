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
mod progress;
mod serve;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use volley_server::Node;

#[derive(Parser, Debug)]
#[command(
    name = "volley",
    version,
    about = "Self-hostable backend for real-time multiplayer games"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    logging: serve::Logging,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a node.
    Serve(Box<serve::ServeArgs>),
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve(args) => {
            cli.logging.init("info");
            let cfg = args.to_config()?;
            if args.print_config {
                print!("{}", cfg.to_annotated_toml()?);
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
            cli.logging.init("warn");
            bot::run(args).await
        }
        Cmd::Content { which } => {
            cli.logging.init("warn");
            content_cmd::run(which).await
        }
        Cmd::Admin {
            which: AdminCmd::Audit { database, data_dir },
        } => audit(database, data_dir).await,
    }
}
