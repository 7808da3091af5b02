//! `volley content`: keys, publishing builds to a node and fetching them.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub(crate) enum ContentCmd {
    /// Makes a publisher key: writes the secret (hex) to `--out` (mode 0600) and prints the
    /// public key players trust.
    Keygen {
        /// Where the secret key goes (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
    },
    /// Splits a build into chunks, signs its manifest and uploads what the node lacks.
    Publish {
        /// The build directory.
        dir: PathBuf,
        /// The game's id.
        #[arg(long)]
        game: String,
        /// The version's name.
        #[arg(long)]
        version: String,
        /// The publisher's secret key file (from `volley content keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The origin node's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:7350")]
        node: String,
        /// The node's server key.
        #[arg(long, env = "VOLLEY_SERVER_KEY", hide_env_values = true)]
        server_key: String,
        /// Average chunk size in bytes (a power of two); see BENCHMARKS.md for the choice.
        #[arg(long, default_value_t = 65_536)]
        chunk_avg: u32,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Downloads a version, verifies it against the trusted publisher key and installs it,
    /// reusing what the previous version in `--to` already has; resumes when interrupted.
    Fetch {
        /// The origin node's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:7350")]
        node: String,
        /// The game's id.
        #[arg(long)]
        game: String,
        /// The version's name.
        #[arg(long)]
        version: String,
        /// The install directory.
        #[arg(long)]
        to: PathBuf,
        /// The publisher's public key (64 hex characters).
        #[arg(long, env = "VOLLEY_CONTENT_TRUST")]
        trust: String,
        /// Chunk requests in flight.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Download rate cap in KiB/s (0: none).
        #[arg(long, default_value_t = 0)]
        max_kib_per_s: u64,
        /// Print a JSON report instead of a progress line.
        #[arg(long)]
        json: bool,
    },
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

pub(crate) async fn run(cmd: ContentCmd) -> anyhow::Result<()> {
    match cmd {
        ContentCmd::Keygen { out } => {
            let key = volley_content::manifest::generate_key();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode_0600()
                .open(&out)
                .with_context(|| format!("writing {}", out.display()))?;
            writeln!(f, "{}", hex::encode(key.to_bytes()))?;
            f.sync_all()?;
            println!("{}", hex::encode(key.verifying_key().as_bytes()));
            Ok(())
        }
        ContentCmd::Publish {
            dir,
            game,
            version,
            key,
            node,
            server_key,
            chunk_avg,
            json,
        } => {
            let text = std::fs::read_to_string(&key)
                .with_context(|| format!("reading key {}", key.display()))?;
            let key = volley_content::manifest::parse_secret_key(&text)?;
            let start = Instant::now();
            let r = volley_client::content::publish(
                &node,
                &server_key,
                &dir,
                &game,
                &version,
                &key,
                chunk_avg,
            )
            .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "files": r.files, "total_bytes": r.total_bytes, "chunks": r.chunks,
                        "uploaded_chunks": r.uploaded_chunks, "uploaded_bytes": r.uploaded_bytes,
                        "seconds": start.elapsed().as_secs_f64(),
                    })
                );
            } else {
                println!(
                    "published {game} {version}: {} files, {:.1} MiB in {} chunks; uploaded {} chunks ({:.1} MiB) in {:.1} s",
                    r.files,
                    mib(r.total_bytes),
                    r.chunks,
                    r.uploaded_chunks,
                    mib(r.uploaded_bytes),
                    start.elapsed().as_secs_f64()
                );
            }
            Ok(())
        }
        ContentCmd::Fetch {
            node,
            game,
            version,
            to,
            trust,
            concurrency,
            max_kib_per_s,
            json,
        } => {
            let trusted = volley_content::manifest::parse_public_key(&trust)?;
            let opts = volley_content::install::InstallOptions {
                concurrency,
                max_bytes_per_s: max_kib_per_s.saturating_mul(1024),
                ..Default::default()
            };
            let mut last = Instant::now() - Duration::from_secs(1);
            let r = volley_client::content::fetch_with(
                &node,
                &game,
                &version,
                &to,
                &trusted,
                opts,
                |p| {
                    if json || last.elapsed() < Duration::from_millis(200) {
                        return;
                    }
                    last = Instant::now();
                    let eta = p
                        .eta()
                        .map_or("-".to_owned(), |d| format!("{:.0} s", d.as_secs_f64()));
                    eprint!(
                        "\r{:.1}/{:.1} MiB  {:.1} MiB/s  peers 0  origin 100%  ETA {eta}   ",
                        mib(p.have_bytes),
                        mib(p.need_bytes),
                        p.rate() / (1024.0 * 1024.0),
                    );
                },
            )
            .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "files": r.files, "total_bytes": r.total_bytes, "chunks": r.chunks,
                        "reused_chunks": r.reused_chunks, "reused_bytes": r.reused_bytes,
                        "resumed_chunks": r.resumed_chunks,
                        "downloaded_chunks": r.downloaded_chunks,
                        "downloaded_bytes": r.downloaded_bytes,
                        "corrupt_chunks": r.corrupt_chunks,
                    })
                );
            } else {
                eprintln!();
                println!(
                    "installed {game} {version} in {}: {:.1} MiB; {:.1} MiB reused from the installed version, {} chunks resumed, {:.1} MiB downloaded",
                    to.display(),
                    mib(r.total_bytes),
                    mib(r.reused_bytes),
                    r.resumed_chunks,
                    mib(r.downloaded_bytes)
                );
            }
            Ok(())
        }
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}
