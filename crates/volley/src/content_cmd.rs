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
    /// Lists the versions a node holds, oldest first.
    Versions {
        /// The node's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:7350")]
        node: String,
        /// The game's id.
        #[arg(long)]
        game: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Withdraws a version from a node (and the nodes of its cluster): new fetches of it fail.
    /// Its chunks stay until `volley content collect` finds no other version using them.
    Delete {
        /// The node's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:7350")]
        node: String,
        /// The game's id.
        #[arg(long)]
        game: String,
        /// The version's name.
        #[arg(long)]
        version: String,
        /// The node's server key.
        #[arg(long, env = "VOLLEY_SERVER_KEY", hide_env_values = true)]
        server_key: String,
        /// Then collect (`volley content collect`): free the chunks no other version uses.
        #[arg(long)]
        collect: bool,
    },
    /// Drops the chunks no version on the node references and gives their disk space back
    /// (chunks uploaded within the node's grace period are kept: a publish may be under way).
    Collect {
        /// The node's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:7350")]
        node: String,
        /// The game's id.
        #[arg(long)]
        game: String,
        /// The node's server key.
        #[arg(long, env = "VOLLEY_SERVER_KEY", hide_env_values = true)]
        server_key: String,
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
        /// A directory holding some version of the game (a copy from elsewhere, an install
        /// moved aside): its files are re-cut with the version's rule and every chunk found
        /// there is taken instead of downloaded. Repeatable.
        #[arg(long)]
        reuse_from: Vec<PathBuf>,
        /// Print a JSON report instead of a progress line.
        #[arg(long)]
        json: bool,
        /// Fetch from peers too (and serve them): join the version's swarm through the node's
        /// tracker, LAN discovery and `--peer`s.
        #[arg(long)]
        swarm: bool,
        /// After installing, keep serving the version for this many seconds (with `--swarm`).
        #[arg(long, default_value_t = 0)]
        seed_secs: u64,
        #[command(flatten)]
        peer: PeerArgs,
    },
    /// Serves an installed version to the swarm (a seed) until interrupted or `--for-secs`.
    Seed {
        /// The install directory.
        #[arg(long)]
        to: PathBuf,
        /// The publisher's public key (64 hex characters).
        #[arg(long, env = "VOLLEY_CONTENT_TRUST")]
        trust: String,
        /// The node whose tracker to announce to (none: LAN discovery and `--peer` only).
        #[arg(long)]
        node: Option<String>,
        /// Stop after this many seconds (0: run until interrupted).
        #[arg(long, default_value_t = 0)]
        for_secs: u64,
        /// Print a JSON line with the counters when stopping.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        peer: PeerArgs,
    },
    /// Checks an install against its manifest: every file's size and mode and every chunk's
    /// hash. Exits non-zero when something is wrong; fetching the same version again repairs
    /// it, downloading only the damaged chunks.
    Verify {
        /// The install directory.
        #[arg(long)]
        to: PathBuf,
        /// The publisher's public key (64 hex characters): the manifest must be signed by it.
        #[arg(long, env = "VOLLEY_CONTENT_TRUST")]
        trust: Option<String>,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
}

/// How this process takes part in a swarm.
#[derive(clap::Args, Debug)]
pub(crate) struct PeerArgs {
    /// UDP address the peer endpoint listens on.
    #[arg(long, default_value = "0.0.0.0:0")]
    listen: std::net::SocketAddr,
    /// Another peer to connect to (repeatable).
    #[arg(long = "peer")]
    peers: Vec<std::net::SocketAddr>,
    /// Find peers on the LAN by multicast (and be found).
    #[arg(long)]
    lan: bool,
    /// LAN discovery group (IPv4 multicast address:port).
    #[arg(long, default_value_t = volley_client::swarm::LAN_GROUP)]
    lan_group: std::net::SocketAddrV4,
    /// Interface address for LAN discovery (0.0.0.0: the system's choice).
    #[arg(long, default_value = "0.0.0.0")]
    lan_iface: std::net::Ipv4Addr,
    /// Upload cap for serving peers, KiB/s (0: none).
    #[arg(long, default_value_t = 0)]
    max_up_kib_per_s: u64,
    /// Peers unchoked at once.
    #[arg(long, default_value_t = 6)]
    upload_slots: usize,
    /// Device id to log in to the node's tracker with (default: a random one).
    #[arg(long)]
    device: Option<String>,
}

impl PeerArgs {
    fn options(&self, download_bytes_per_s: u64) -> volley_client::swarm::SwarmOptions {
        volley_client::swarm::SwarmOptions {
            listen: self.listen,
            peers: self.peers.clone(),
            lan: self.lan.then_some((self.lan_group, self.lan_iface)),
            upload_bytes_per_s: self.max_up_kib_per_s.saturating_mul(1024),
            download_bytes_per_s,
            upload_slots: self.upload_slots,
            ..Default::default()
        }
    }

    async fn tracker(&self, node: &str) -> anyhow::Result<volley_client::Api> {
        let mut api = volley_client::Api::new(node);
        let device = self
            .device
            .clone()
            .unwrap_or_else(|| format!("content-peer-{:016x}", rand::random::<u64>()));
        api.login_device(&device)
            .await
            .context("logging in to the node's tracker")?;
        Ok(api)
    }
}

fn stats_json(s: &volley_client::swarm::SwarmStats) -> serde_json::Value {
    serde_json::json!({
        "peers": s.peers, "peer_bytes": s.peer_bytes, "origin_bytes": s.origin_bytes,
        "wasted_bytes": s.wasted_bytes, "uploaded_bytes": s.uploaded_bytes,
        "banned_peers": s.banned_peers,
    })
}

/// Waits `secs` seconds (0: forever) or until SIGINT/SIGTERM.
async fn run_for(secs: u64) {
    let limit = async {
        if secs == 0 {
            std::future::pending::<()>().await
        } else {
            tokio::time::sleep(Duration::from_secs(secs)).await
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = limit => {}
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Asks the node to collect, with a progress line while it works.
async fn collect_showing(
    node: &str,
    server_key: &str,
    game: &str,
) -> anyhow::Result<volley_proto::api::ContentCollected> {
    let what = game.to_owned();
    let line = crate::progress::Line::start(move |t| {
        format!("collecting {what} on the node… {:.0} s", t.as_secs_f64())
    });
    let r = volley_client::content::collect(node, server_key, game).await;
    line.finish().await;
    Ok(r?)
}

/// Prints what a collection did, and why when it freed nothing.
fn print_collected(game: &str, r: &volley_proto::api::ContentCollected) {
    println!(
        "{game}: {} versions, {} chunks: {} referenced, {} held, {} dropped ({:.1} MiB); disk {:.1} -> {:.1} MiB ({} packs removed, {:.1} MiB moved)",
        r.versions,
        r.chunks,
        r.referenced,
        r.held,
        r.dropped,
        mib(r.dropped_bytes),
        mib(r.disk_bytes_before),
        mib(r.disk_bytes_after),
        r.packs_removed,
        mib(r.moved_bytes)
    );
    if r.corrupt > 0 {
        println!(
            "{} chunks were damaged on disk and dropped; publishing again restores them",
            r.corrupt
        );
    }
    if r.dropped == 0 && r.held > 0 {
        println!(
            "nothing freed: the {} chunks no version references were uploaded or asked about within the node's grace period (content_grace_secs), so a publish may still need them; a collection after it frees them",
            r.held
        );
    } else if r.dropped == 0 {
        println!("nothing freed: every chunk the node holds belongs to a version it keeps");
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Has the C allocator hand freed memory back to the system once 128 KiB is free at the top
/// of a heap (the default threshold grows with the largest block freed, up to 32 MiB). A
/// download allocates and frees every chunk, often on different threads; with the default,
/// resident memory crept up with the length of the download (a 4 GiB fetch ended 2.5 MiB
/// above a 512 MiB one with the same heap), and with this it does not (BENCHMARKS.md).
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before the command
    // allocates for its work.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

pub(crate) async fn run(cmd: ContentCmd) -> anyhow::Result<()> {
    return_freed_memory();
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
            let progress = std::sync::Arc::new(volley_client::content::PublishProgress::default());
            let shown = progress.clone();
            let line = crate::progress::Line::start(move |t| {
                use std::sync::atomic::Ordering::Relaxed;
                let secs = t.as_secs_f64();
                match shown.phase.load(Relaxed) {
                    0 => format!("publishing: chunking the build… {secs:.0} s"),
                    1 => format!("publishing: asking the node what it lacks… {secs:.0} s"),
                    2 => {
                        let (done, total) = (
                            shown.uploaded_bytes.load(Relaxed),
                            shown.upload_bytes.load(Relaxed),
                        );
                        format!(
                            "publishing: uploaded {} of {} ({:.0}%)… {secs:.0} s",
                            crate::progress::size(done),
                            crate::progress::size(total),
                            crate::progress::percent(done, total)
                        )
                    }
                    _ => format!("publishing: storing the manifest… {secs:.0} s"),
                }
            });
            let r = volley_client::content::publish_with(
                &node,
                &server_key,
                &dir,
                &game,
                &version,
                &key,
                chunk_avg,
                &progress,
            )
            .await;
            line.finish().await;
            let r = r?;
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
        ContentCmd::Versions { node, game, json } => {
            let versions = volley_client::content::versions(&node, &game).await?;
            if json {
                println!("{}", serde_json::to_string(&versions)?);
            } else if versions.is_empty() {
                println!("no versions of {game}");
            } else {
                for v in versions {
                    println!(
                        "{}  {} files  {:.1} MiB  {} chunks",
                        v.version,
                        v.files,
                        mib(v.bytes),
                        v.chunks
                    );
                }
            }
            Ok(())
        }
        ContentCmd::Delete {
            node,
            game,
            version,
            server_key,
            collect,
        } => {
            volley_client::content::delete_version(&node, &server_key, &game, &version).await?;
            if !collect {
                println!("withdrew {game} {version}; `volley content collect` frees its chunks");
                return Ok(());
            }
            println!("withdrew {game} {version}");
            let r = collect_showing(&node, &server_key, &game).await?;
            print_collected(&game, &r);
            Ok(())
        }
        ContentCmd::Collect {
            node,
            game,
            server_key,
            json,
        } => {
            let r = collect_showing(&node, &server_key, &game).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print_collected(&game, &r);
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
            reuse_from,
            json,
            swarm,
            seed_secs,
            peer,
        } => {
            let trusted = volley_content::manifest::parse_public_key(&trust)?;
            let max_bytes_per_s = max_kib_per_s.saturating_mul(1024);
            let opts = volley_content::install::InstallOptions {
                concurrency,
                max_bytes_per_s,
                reuse_from,
                ..Default::default()
            };
            let mut last = Instant::now() - Duration::from_secs(1);
            let show = |p: &volley_content::install::Progress| {
                if json || last.elapsed() < Duration::from_millis(200) {
                    return;
                }
                last = Instant::now();
                if p.scanning {
                    eprint!(
                        "\rre-cutting local files: {:.1} MiB read   ",
                        mib(p.recut_bytes)
                    );
                    return;
                }
                let eta = p
                    .eta()
                    .map_or("-".to_owned(), |d| format!("{:.0} s", d.as_secs_f64()));
                eprint!(
                    "\r{:.1}/{:.1} MiB  {:.1} MiB/s  peers {}  origin {:.0}%  ETA {eta}   ",
                    mib(p.have_bytes),
                    mib(p.need_bytes),
                    p.rate() / (1024.0 * 1024.0),
                    p.peers,
                    p.origin_share() * 100.0,
                );
            };
            let started = Instant::now();
            let (r, swarm) = if swarm {
                let api = peer.tracker(&node).await?;
                let f = volley_client::swarm::fetch(
                    &node,
                    Some(api),
                    &game,
                    &version,
                    &to,
                    &trusted,
                    opts,
                    peer.options(max_bytes_per_s),
                    show,
                )
                .await?;
                (f.report, Some((f.swarm, f.stats)))
            } else {
                let r = volley_client::content::fetch_with(
                    &node, &game, &version, &to, &trusted, opts, show,
                )
                .await?;
                (r, None)
            };
            let seconds = started.elapsed().as_secs_f64();
            if json {
                let mut v = serde_json::json!({
                    "files": r.files, "total_bytes": r.total_bytes, "chunks": r.chunks,
                    "reused_chunks": r.reused_chunks, "reused_bytes": r.reused_bytes,
                    "resumed_chunks": r.resumed_chunks,
                    "downloaded_chunks": r.downloaded_chunks,
                    "downloaded_bytes": r.downloaded_bytes,
                    "corrupt_chunks": r.corrupt_chunks,
                    "recut_bytes": r.recut_bytes,
                    "notes": r.notes,
                    "seconds": seconds,
                    "download_seconds": r.download_time.as_secs_f64(),
                    "local_seconds": r.local_time.as_secs_f64(),
                    "build_seconds": r.build_time.as_secs_f64(),
                });
                if let Some((_, s)) = &swarm {
                    v["swarm"] = stats_json(s);
                }
                println!("{v}");
            } else {
                eprintln!();
                for n in &r.notes {
                    eprintln!("note: {n}");
                }
                if r.recut_bytes > 0 {
                    eprintln!("re-cut {:.1} MiB of local files", mib(r.recut_bytes));
                }
                println!(
                    "installed {game} {version} in {}: {:.1} MiB; {:.1} MiB reused from this machine, {} chunks resumed, {:.1} MiB downloaded in {seconds:.1} s",
                    to.display(),
                    mib(r.total_bytes),
                    mib(r.reused_bytes),
                    r.resumed_chunks,
                    mib(r.downloaded_bytes)
                );
                if let Some((_, s)) = &swarm {
                    println!(
                        "from peers {:.1} MiB, from the origin {:.1} MiB, {} peers, {} dropped for corrupt chunks",
                        mib(s.peer_bytes),
                        mib(s.origin_bytes),
                        s.peers,
                        s.banned_peers
                    );
                }
            }
            if let Some((swarm, _)) = swarm {
                if seed_secs > 0 {
                    run_for(seed_secs).await;
                }
                let s = swarm.stats();
                if json {
                    println!("{}", serde_json::json!({ "seeded": stats_json(&s) }));
                }
                swarm.close().await;
            }
            Ok(())
        }
        ContentCmd::Verify { to, trust, json } => {
            let trusted = trust
                .as_deref()
                .map(volley_content::manifest::parse_public_key)
                .transpose()?;
            let dir = to.clone();
            let progress = std::sync::Arc::new(volley_content::install::VerifyProgress::default());
            let (shown, working) = (progress.clone(), progress.clone());
            let line = crate::progress::Line::start(move |t| {
                use std::sync::atomic::Ordering::Relaxed;
                let (done, total) = (
                    shown.checked_bytes.load(Relaxed),
                    shown.total_bytes.load(Relaxed),
                );
                format!(
                    "verifying: {} of {} checked ({:.0}%)… {:.0} s",
                    crate::progress::size(done),
                    crate::progress::size(total),
                    crate::progress::percent(done, total),
                    t.as_secs_f64()
                )
            });
            let r = tokio::task::spawn_blocking(move || {
                volley_content::install::verify_with(&dir, trusted.as_ref(), &working)
            })
            .await;
            line.finish().await;
            let r = r??;
            if json {
                let problems: Vec<_> = r
                    .problems
                    .iter()
                    .map(|p| serde_json::json!({ "path": p.path, "what": p.what }))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "game": r.game, "version": r.version, "files": r.files,
                        "checked_bytes": r.checked_bytes, "damaged_chunks": r.damaged_chunks,
                        "damaged_bytes": r.damaged_bytes, "problems": problems,
                    })
                );
            } else {
                for p in &r.problems {
                    println!("{}: {}", p.path, p.what);
                }
                println!(
                    "{} {} in {}: {} files, {:.1} MiB checked, {} damaged chunks ({:.1} MiB)",
                    r.game,
                    r.version,
                    to.display(),
                    r.files,
                    mib(r.checked_bytes),
                    r.damaged_chunks,
                    mib(r.damaged_bytes)
                );
            }
            if !r.problems.is_empty() {
                anyhow::bail!(
                    "{} of {} files are damaged or missing; `volley content fetch` of {} {} into {} repairs them, downloading only the damaged chunks",
                    r.problems.len(),
                    r.files,
                    r.game,
                    r.version,
                    to.display()
                );
            }
            Ok(())
        }
        ContentCmd::Seed {
            to,
            trust,
            node,
            for_secs,
            json,
            peer,
        } => {
            let trusted = volley_content::manifest::parse_public_key(&trust)?;
            let api = match &node {
                Some(n) => Some(peer.tracker(n).await?),
                None => None,
            };
            let swarm = volley_client::swarm::seed(&to, &trusted, api, peer.options(0)).await?;
            eprintln!(
                "seeding {} on {}",
                to.display(),
                swarm.local_addr().map_or("?".to_owned(), |a| a.to_string())
            );
            run_for(for_secs).await;
            let s = swarm.stats();
            if json {
                println!("{}", serde_json::json!({ "seeded": stats_json(&s) }));
            } else {
                println!(
                    "served {:.1} MiB to {} peers",
                    mib(s.uploaded_bytes),
                    s.peers
                );
            }
            swarm.close().await;
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
