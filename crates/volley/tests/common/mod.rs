//! Helpers shared by the integration tests: a node on loopback and players that join it
//! through the real HTTP API and QUIC gate.
#![allow(dead_code)]

use std::time::Duration;

use volley_client::{Api, Client, ClientConfig, Event, Session};
use volley_proto::msg::PathKind;
use volley_server::{Node, NodeConfig, NodeHandle};

pub struct TestNode {
    pub node: NodeHandle,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl TestNode {
    /// The node's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }
}

pub async fn start_node(tweak: impl FnOnce(&mut NodeConfig)) -> TestNode {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = NodeConfig {
        data_dir: dir.path().to_owned(),
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        quic_addr: "127.0.0.1:0".parse().expect("addr"),
        logins_per_ip_per_s: 10_000.0,
        logins_per_ip_burst: 10_000.0,
        connects_per_ip_burst: 1000.0,
        connects_per_ip_per_s: 1000.0,
        ..NodeConfig::default()
    };
    tweak(&mut cfg);
    let node = Node::start(cfg).await.expect("node starts");
    let base = format!("http://{}", node.http_addr);
    TestNode {
        node,
        base,
        _dir: dir,
    }
}

pub async fn login(base: &str, device: &str) -> Api {
    let mut api = Api::new(base);
    api.login_device(device).await.expect("login");
    api
}

pub fn loopback_config(direct: bool) -> ClientConfig {
    ClientConfig {
        bind_addr: "127.0.0.1:0".parse().expect("addr"),
        direct,
        ..ClientConfig::default()
    }
}

/// Logs in as `device`, asks for a ticket to `room` and joins.
pub async fn join(base: &str, device: &str, room: u64, cfg: ClientConfig) -> Session {
    let api = login(base, device).await;
    let client = Client::new(cfg).expect("client");
    let ticket = api.join(room, client.fingerprint()).await.expect("ticket");
    client.join(&ticket).await.expect("join")
}

/// Waits until `peer` is on `path`, handing every other event to `other`.
pub async fn wait_path(
    s: &mut Session,
    peer: u64,
    path: PathKind,
    within: Duration,
    mut other: impl FnMut(Event),
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if s.peers()
            .iter()
            .any(|p| p.player_id == peer && p.path == path)
        {
            return true;
        }
        match tokio::time::timeout_at(deadline, s.next_event()).await {
            Ok(Some(e)) => other(e),
            _ => return false,
        }
    }
}

/// Waits for `n` reliable messages from `from`; returns them in arrival order.
pub async fn recv_reliable(s: &mut Session, from: u64, n: usize, within: Duration) -> Vec<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout_at(deadline, s.next_event()).await {
            Ok(Some(Event::Reliable { from: f, payload })) if f == from => got.push(payload),
            Ok(Some(Event::Closed { reason })) => panic!("session closed: {reason}"),
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    got
}

pub fn numbered(i: u64) -> Vec<u8> {
    let mut v = i.to_be_bytes().to_vec();
    v.extend_from_slice(&[0xab; 24]);
    v
}

pub fn number_of(p: &[u8]) -> u64 {
    u64::from_be_bytes(p[..8].try_into().expect("8 bytes"))
}

/// A child process that is killed (and reaped) when dropped, so a failing test leaves none
/// running.
pub struct KillOnDrop(pub Option<std::process::Child>);

impl KillOnDrop {
    /// Asks it to stop (SIGTERM) and collects what it printed.
    pub fn terminate(mut self) -> std::process::Output {
        let child = self.0.take().expect("still running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait_with_output().expect("the child is waited for")
    }

    /// Kills it at once (SIGKILL) and reaps it.
    pub fn kill(mut self) {
        if let Some(mut child) = self.0.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reaped");
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `volley serve` as a process on `dir` (both listeners on free loopback ports) with `extra`
/// arguments: its guard and the HTTP base it announces.
pub fn serve_process(dir: &std::path::Path, extra: &[&str]) -> (KillOnDrop, String) {
    let (child, line) = serve_process_ready(dir, extra);
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches(',')
        .to_owned();
    (child, base)
}

/// [`serve_process`], returning the whole line the node prints once it is ready.
pub fn serve_process_ready(dir: &std::path::Path, extra: &[&str]) -> (KillOnDrop, String) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(["serve", "--http-addr", "127.0.0.1:0"])
        .args(["--quic-addr", "127.0.0.1:0"])
        .args(extra)
        .env("VOLLEY_DATA_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let out = child.stdout.take().expect("stdout");
    let child = KillOnDrop(Some(child));
    let mut line = String::new();
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("ready line");
    (child, line)
}

/// The value of the first line of the node's `/metrics` that starts with `line_prefix`.
pub async fn metric(base: &str, line_prefix: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {line_prefix} missing in:\n{text}"))
}
