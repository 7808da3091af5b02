//! Operating a node, through the real binary: configuration names, redaction, start-up against
//! services that are down or silent, the missing server key warning, log formats, and the
//! per-route request metrics and access log.

use std::io::{BufRead, Read};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

fn volley() -> Command {
    Command::new(env!("CARGO_BIN_EXE_volley"))
}

/// The keys `--print-config` shows, set or commented out as unset.
fn printed_keys(text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for line in text.lines() {
        let line = line.trim_start_matches("# ");
        if let Some((key, _)) = line.split_once(" = ") {
            if key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
            {
                keys.push(key.to_owned());
            }
        } else if let Some(table) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            keys.push(table.split('.').next().unwrap_or(table).to_owned());
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

#[test]
fn every_config_key_is_a_flag_and_an_environment_variable_of_the_same_name() {
    let out = volley()
        .args(["serve", "--print-config"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    // What is printed reads back as a configuration file.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("volley.toml");
    std::fs::write(&file, &printed).expect("write");
    let again = volley()
        .args(["serve", "--print-config", "--config"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&again.stdout), printed);

    let keys = printed_keys(&printed);
    assert!(keys.len() >= 30, "{keys:?}");
    let help = volley().args(["serve", "--help"]).output().expect("run");
    let help = String::from_utf8_lossy(&help.stdout);
    for key in &keys {
        if key == "pools" || key == "pool_modes" {
            // Tables: TOML only, described in the file itself.
            assert!(printed.contains(&format!("[{key}]")), "{key}");
            continue;
        }
        let flag = format!("--{}", key.replace('_', "-"));
        let env = format!("VOLLEY_{}", key.to_uppercase());
        assert!(help.contains(&flag), "no flag {flag} for key {key}");
        assert!(help.contains(&env), "no variable {env} for key {key}");
        // Each key is described in the printed file, on the lines above it.
        let lines: Vec<&str> = printed.lines().collect();
        let at = lines
            .iter()
            .position(|l| {
                l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} = "))
            })
            .expect("key printed");
        assert!(
            at > 0 && lines[at - 1].starts_with("# ") && lines[at - 1].len() > 4,
            "{key} has no description"
        );
    }
}

#[test]
fn printed_configuration_hides_secrets() {
    let out = volley()
        .args(["serve", "--print-config"])
        .args([
            "--database",
            "postgres://volley:pg-secret-1@db.example:5432/game",
        ])
        .args(["--redis", "redis://:redis-secret-2@cache.example:6379/0"])
        .args(["--nats", "nats://nats-secret-3@bus.example:4222"])
        .env("VOLLEY_SERVER_KEY", "server-key-secret-4-long-enough")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for secret in [
        "pg-secret-1",
        "redis-secret-2",
        "nats-secret-3",
        "server-key-secret-4",
    ] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert!(
        text.contains("postgres://volley:<redacted>@db.example:5432/game"),
        "{text}"
    );
    assert!(text.contains("# server_key = \"<redacted>\""), "{text}");
}

/// `volley serve` on loopback with free ports and its data in `dir`.
fn serve_in(dir: &std::path::Path) -> Command {
    let mut cmd = volley();
    cmd.args(["serve", "--http-addr", "127.0.0.1:0"])
        .args(["--quic-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir);
    cmd
}

/// Runs `volley serve` against `flags` expecting it to fail; returns (seconds, stderr).
fn failed_start(flags: &[&str]) -> (f64, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let out = serve_in(dir.path())
        .args(flags)
        .stdout(Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success(), "serve started with {flags:?}");
    (
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn services_at_closed_or_silent_ports_fail_the_start_naming_the_service() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    // A silent service: it accepts connections and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().flatten().take(64) {
            held.push(c);
        }
    });
    for (flag, scheme, service) in [
        ("--database", "postgres://volley@127.0.0.1", "PostgreSQL"),
        ("--redis", "redis://127.0.0.1", "Redis"),
        ("--nats", "nats://127.0.0.1", "NATS"),
    ] {
        for (port, how) in [(closed, "closed"), (silent_port, "silent")] {
            let url = if service == "PostgreSQL" {
                format!("{scheme}:{port}/volley")
            } else {
                format!("{scheme}:{port}")
            };
            let (secs, err) = failed_start(&[flag, &url, "--connect-timeout-secs", "2"]);
            assert!(secs < 10.0, "{service} {how}: took {secs:.1} s\n{err}");
            assert!(err.contains(service), "{service} {how}: {err}");
            assert!(
                err.contains(&format!("127.0.0.1:{port}")),
                "{service} {how}: {err}"
            );
        }
    }
}

/// Starts a node with stderr captured to a file; returns it, its base URL and the file.
fn serve_logged(
    extra: &[&str],
) -> (
    common::KillOnDrop,
    String,
    tempfile::NamedTempFile,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut child = serve_in(dir.path())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log.reopen().expect("reopen")))
        .spawn()
        .expect("spawn");
    let out = child.stdout.take().expect("stdout");
    let child = common::KillOnDrop(Some(child));
    let mut line = String::new();
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("ready line");
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (child, base, log, dir)
}

fn read_log(log: &tempfile::NamedTempFile) -> String {
    let mut s = String::new();
    log.reopen()
        .expect("reopen")
        .read_to_string(&mut s)
        .expect("read log");
    s
}

#[test]
fn a_node_without_a_server_key_says_how_to_set_one() {
    let (node, base, log, _dir) = serve_logged(&[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let body = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{base}/v1/admin/accounts/1/ban"))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body")
    });
    assert!(body.contains("VOLLEY_SERVER_KEY"), "{body}");
    drop(node);
    let text = read_log(&log);
    assert!(text.contains("no server key"), "{text}");
    assert!(text.contains("VOLLEY_SERVER_KEY"), "{text}");
    // Piped, not a terminal: no colour codes.
    assert!(!text.contains('\u{1b}'), "ANSI codes in piped logs");
}

#[test]
fn json_logs_carry_an_access_line_per_request_and_metrics_count_each_route() {
    let (node, base, log, _dir) = serve_logged(&["--log-format", "json"]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let metrics = rt.block_on(async {
        let http = reqwest::Client::new();
        for i in 0..3 {
            let r = http
                .post(format!("{base}/v1/auth/device"))
                .json(&serde_json::json!({"device_id": format!("ops-device-{i:04}")}))
                .send()
                .await
                .expect("login");
            assert_eq!(r.status(), 200);
        }
        let r = http
            .post(format!("{base}/v1/auth/device"))
            .body("{not json")
            .send()
            .await
            .expect("bad login");
        assert_eq!(r.status(), 400);
        http.get(format!("{base}/no/such/path"))
            .send()
            .await
            .expect("404");
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    });
    let count = |labels: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("volley_http_requests_total{{{labels}}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        count(r#"route="/v1/auth/device",method="POST",status="2xx""#),
        3,
        "{metrics}"
    );
    assert_eq!(
        count(r#"route="/v1/auth/device",method="POST",status="4xx""#),
        1
    );
    assert_eq!(count(r#"route="unmatched",method="GET",status="4xx""#), 1);
    assert!(
        metrics.contains(
            r#"volley_http_request_duration_seconds_count{route="/v1/auth/device",method="POST"} 4"#
        ),
        "{metrics}"
    );
    drop(node);
    std::thread::sleep(Duration::from_millis(100));
    let text = read_log(&log);
    let mut access = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["target"] == "volley::access" && v["route"] == "/v1/auth/device" {
            access += 1;
            assert!(v["status"].is_u64() && v["ms"].is_f64(), "{line}");
        }
    }
    assert_eq!(access, 4, "{text}");
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn the_data_directory_and_its_secrets_are_the_node_users_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (node, _) = common::serve_process_ready(&data, &[]);
    drop(node);
    assert_eq!(mode(&data), 0o700, "data directory");
    for secret in ["node-key.der", "ticket.key", "volley.db"] {
        assert_eq!(mode(&data.join(secret)), 0o600, "{secret}");
    }
    for journal in ["volley.db-wal", "volley.db-shm"] {
        let p = data.join(journal);
        if p.exists() {
            assert_eq!(mode(&p) & 0o077, 0, "{journal}");
        }
    }
    // Secrets left open by an older node are closed at the next start.
    use std::os::unix::fs::PermissionsExt;
    for (path, open) in [
        (data.clone(), 0o755),
        (data.join("ticket.key"), 0o644),
        (data.join("node-key.der"), 0o644),
        (data.join("volley.db"), 0o644),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(open)).expect("chmod");
    }
    let (node, _) = common::serve_process_ready(&data, &[]);
    drop(node);
    assert_eq!(mode(&data), 0o700);
    for secret in ["node-key.der", "ticket.key", "volley.db"] {
        assert_eq!(mode(&data.join(secret)), 0o600, "{secret} after restart");
    }
}
