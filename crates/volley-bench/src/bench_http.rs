//! The HTTP API's own cost: requests/s and latency through the node's router (extractors,
//! error type, request metrics, access log) next to a bare axum server answering the same
//! bytes in the same process, the floor for any route on this HTTP stack.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use volley_server::{Node, NodeConfig};

/// Options of `volley-bench http`.
#[derive(clap::Args, Debug)]
pub(crate) struct HttpArgs {
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds measured per case.
    #[arg(long, default_value_t = 4.0)]
    duration_s: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    case: &'static str,
    requests_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    of_floor: f64,
}

/// Runs `clients` loops sending `make()` for `duration`; returns (requests/s, p50 µs, p99 µs).
async fn load(
    clients: usize,
    duration: Duration,
    make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync + 'static,
) -> anyhow::Result<(f64, f64, f64)> {
    let make = Arc::new(make);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (make, stop, done) = (make.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let resp = make(&http).send().await?;
                anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
                resp.bytes().await?;
                lat.push(t.elapsed().as_secs_f64() * 1e6);
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<Vec<f64>, anyhow::Error>(lat)
        }));
    }
    // A short warm-up, then the measured window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (n0, t0) = (done.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(duration).await;
    let rate = (done.load(Ordering::Relaxed) - n0) as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.context("load task")??);
    }
    all.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        all.get(((all.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok((rate, pct(0.5), pct(0.99)))
}

/// A bare axum server answering `GET /v1/health` with the node's exact body.
async fn floor_server() -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let app = axum::Router::new().route(
        "/v1/health",
        axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("floor server: {e}");
        }
    });
    Ok((format!("http://{addr}"), task))
}

pub(crate) async fn run(args: HttpArgs) -> anyhow::Result<()> {
    let duration = Duration::from_secs_f64(args.duration_s.clamp(0.5, 60.0));
    let clients = args.clients.clamp(1, 256);
    let mut rows = Vec::new();
    let (floor_base, floor_task) = floor_server().await?;
    let url = format!("{floor_base}/v1/health");
    let floor = load(clients, duration, move |h| h.get(&url)).await?;
    floor_task.abort();
    rows.push(("bare axum, GET /v1/health (the floor)", floor));

    let data = tempfile::tempdir()?;
    let node = Node::start(NodeConfig {
        data_dir: data.path().to_owned(),
        http_addr: "127.0.0.1:0".parse()?,
        quic_addr: "127.0.0.1:0".parse()?,
        ..NodeConfig::default()
    })
    .await?;
    let base = format!("http://{}", node.http_addr);
    let url = format!("{base}/v1/health");
    let health = load(clients, duration, move |h| h.get(&url)).await?;
    rows.push(("node, GET /v1/health", health));
    let mut api = volley_client::Api::new(&base);
    api.login_device("bench-http-device-1").await?;
    let token = api.token().unwrap_or_default().to_owned();
    let url = format!("{base}/v1/account");
    let account = load(clients, duration, move |h| h.get(&url).bearer_auth(&token)).await?;
    rows.push(("node, GET /v1/account (session + account read)", account));

    // The access log on, as `volley serve` runs it (JSON lines, here into a sink).
    let sink = tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::sink)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .finish();
    tracing::subscriber::set_global_default(sink).context("log subscriber")?;
    let url = format!("{base}/v1/health");
    let logged = load(clients, duration, move |h| h.get(&url)).await?;
    rows.push(("node, GET /v1/health, access log on (JSON)", logged));
    node.shutdown().await;

    let floor_rate = floor.0;
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|(case, (rate, p50, p99))| Row {
            case,
            requests_per_s: rate,
            p50_us: p50,
            p99_us: p99,
            of_floor: rate / floor_rate,
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{clients} keep-alive clients, {:.0} s per case",
        duration.as_secs_f64()
    );
    println!("| case | requests/s | p50 µs | p99 µs | of the floor |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.2} |",
            r.case, r.requests_per_s, r.p50_us, r.p99_us, r.of_floor
        );
    }
    Ok(())
}
