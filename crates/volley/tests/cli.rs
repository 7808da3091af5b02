//! The binary as a user runs it: `volley demo --json` and `volley serve` with no configuration,
//! a TOML file, environment variables and flags.

mod common;

use std::process::Command;
use std::time::Duration;

fn volley() -> Command {
    Command::new(env!("CARGO_BIN_EXE_volley"))
}

fn demo_json(extra: &[&str]) -> serde_json::Value {
    let out = volley()
        .args(["demo", "--bots", "3", "--duration-s", "1.5", "--json"])
        .args(extra)
        .output()
        .expect("run demo");
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document on stdout")
}

#[test]
fn demo_json_reports_every_pair_direct_with_nothing_lost() {
    let r = demo_json(&[]);
    let peers = r["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 6, "3 bots → 6 directed pairs");
    for p in peers {
        assert_eq!(p["path"], "direct", "{p}");
        for f in ["from", "to", "sent", "received", "rtt_ms_p50", "rtt_ms_p99"] {
            assert!(!p[f].is_null(), "field {f} in {p}");
        }
        assert_eq!(p["reliable_sent"], p["reliable_received"], "{p}");
        assert!(p["sent"].as_u64().expect("sent") > 30, "{p}");
        let p50 = p["rtt_ms_p50"].as_f64().expect("p50");
        let p99 = p["rtt_ms_p99"].as_f64().expect("p99");
        assert!(p50 > 0.0 && p50 <= p99, "{p}");
    }
    assert_eq!(r["reliable_faults"], 0);
    assert_eq!(r["node"]["admitted"], 3);
}

#[test]
fn demo_relay_only_goes_through_the_node() {
    let r = demo_json(&["--relay-only"]);
    for p in r["peers"].as_array().expect("peers") {
        assert_eq!(p["path"], "relay", "{p}");
        assert_eq!(p["reliable_sent"], p["reliable_received"], "{p}");
    }
    assert!(r["node"]["relay_frames"].as_u64().expect("frames") > 0);
    assert!(r["node"]["relay_datagrams"].as_u64().expect("dgrams") > 0);
}

#[test]
fn demo_refuses_bad_arguments() {
    let out = volley()
        .args(["demo", "--bots", "1"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bots"));
}

fn effective_config(args: &[&str], envs: &[(&str, &str)]) -> Result<toml::Value, String> {
    let mut cmd = volley();
    cmd.args(["serve", "--print-config"]).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run serve");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    toml::from_str(&String::from_utf8_lossy(&out.stdout)).map_err(|e| e.to_string())
}

#[test]
fn serve_config_precedence_is_flags_then_env_then_file_then_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("volley.toml");
    std::fs::write(
        &file,
        "ticket_lifetime_ms = 5000\nrooms_max = 7\nretry = \"under-load\"\n",
    )
    .expect("write");
    let f = file.to_str().expect("path");
    let defaults = effective_config(&[], &[]).expect("defaults");
    assert_eq!(defaults["ticket_lifetime_ms"].as_integer(), Some(30_000));
    let c = effective_config(&["--config", f], &[]).expect("file");
    assert_eq!(c["ticket_lifetime_ms"].as_integer(), Some(5000));
    assert_eq!(c["rooms_max"].as_integer(), Some(7));
    assert_eq!(c["retry"].as_str(), Some("under-load"));
    let c =
        effective_config(&["--config", f], &[("VOLLEY_TICKET_LIFETIME_MS", "6000")]).expect("env");
    assert_eq!(c["ticket_lifetime_ms"].as_integer(), Some(6000));
    assert_eq!(c["rooms_max"].as_integer(), Some(7));
    let c = effective_config(
        &["--config", f, "--ticket-lifetime-ms", "7000"],
        &[("VOLLEY_TICKET_LIFETIME_MS", "6000")],
    )
    .expect("flag");
    assert_eq!(c["ticket_lifetime_ms"].as_integer(), Some(7000));

    // Bad values and unknown keys fail at start, naming the problem.
    let err = effective_config(&["--ticket-lifetime-ms", "5"], &[]).expect_err("too short");
    assert!(err.contains("ticket_lifetime_ms"), "{err}");
    std::fs::write(&file, "no_such_key = 1\n").expect("write");
    let err = effective_config(&["--config", f], &[]).expect_err("unknown key");
    assert!(err.contains("no_such_key"), "{err}");
    std::fs::write(&file, "ticket_lifetime_ms = \"soon\"\n").expect("write");
    assert!(effective_config(&["--config", f], &[]).is_err());
}

/// Starts `volley serve` and returns it with its announced fingerprint.
fn serve(dir: &std::path::Path) -> (common::KillOnDrop, String) {
    let (child, line) = common::serve_process_ready(dir, &[]);
    let fp = line
        .split_whitespace()
        .skip_while(|w| *w != "fingerprint")
        .nth(1)
        .unwrap_or_else(|| panic!("no fingerprint in {line:?}"))
        .to_owned();
    (child, fp)
}

#[test]
fn serve_creates_its_data_dir_and_keeps_its_certificate_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("fresh").join("data");
    let (first, fp1) = serve(&data);
    assert_eq!(fp1.len(), 64);
    for f in ["node-cert.der", "node-key.der", "ticket.key"] {
        assert!(data.join(f).exists(), "{f} written");
    }
    drop(first);
    std::thread::sleep(Duration::from_millis(100));
    let (_second, fp2) = serve(&data);
    assert_eq!(fp1, fp2, "same certificate after restart");

    // A truncated ticket key is a clear error, not a new key silently replacing the old.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).expect("mkdir");
    std::fs::write(broken.join("ticket.key"), [1u8; 5]).expect("write");
    let out = volley()
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--quic-addr",
            "127.0.0.1:0",
        ])
        .env("VOLLEY_DATA_DIR", &broken)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ticket key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn snapshot_demo_on_weak_4g_keeps_every_client_connected_and_fed() {
    let out = volley()
        .args([
            "demo",
            "--mode",
            "snapshot",
            "--bots",
            "4",
            "--duration-s",
            "4",
            "--profile",
            "weak-4g",
            "--json",
        ])
        .output()
        .expect("run demo");
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let clients = r["clients"].as_array().expect("clients");
    assert_eq!(clients.len(), 4);
    for c in clients {
        assert_eq!(c["disconnected"], false, "{c}");
        assert_eq!(c["refused"], 0, "{c}");
        // 30 Hz snapshots over a link with ~2 % bursty loss.
        let delivery = c["snapshot_delivery"].as_f64().expect("delivery");
        assert!((0.85..=1.1).contains(&delivery), "{c}");
        let rtt = c["rtt_ms"].as_f64().expect("rtt");
        assert!((60.0..300.0).contains(&rtt), "weak-4g RTT: {c}");
        // Mispredictions are events (deaths, collisions), not a per-snapshot drift.
        assert!(c["corrections"].as_u64().expect("corrections") < 30, "{c}");
    }
    assert!(r["node"]["frames"].as_u64().expect("frames") > 200);
    assert!(r["node"]["tick_us_p99"].as_u64().is_some());
    // Lag compensation rewinds by about the weak-4g delay plus interpolation (capped at 12).
    let rewind = r["node"]["lag_rewind_ticks_mean"].as_f64().expect("rewind");
    assert!((4.0..=12.0).contains(&rewind), "{}", r["node"]);
    assert_eq!(r["node"]["refused_packets"], 0);
}

#[test]
fn snapshot_interest_demo_holds_back_far_updates_and_keeps_clients_fed() {
    let out = volley()
        .args([
            "demo",
            "--mode",
            "snapshot-interest",
            "--bots",
            "12",
            "--duration-s",
            "3",
            "--json",
        ])
        .output()
        .expect("run demo");
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(r["node"]["mode"], "snapshot-interest");
    assert!(
        r["node"]["interest_deferred"]
            .as_u64()
            .expect("interest_deferred")
            > 0,
        "{}",
        r["node"]
    );
    let clients = r["clients"].as_array().expect("clients");
    assert_eq!(clients.len(), 12);
    for c in clients {
        assert_eq!(c["disconnected"], false, "{c}");
        assert_eq!(c["refused"], 0, "{c}");
        let delivery = c["snapshot_delivery"].as_f64().expect("delivery");
        assert!((0.9..=1.1).contains(&delivery), "{c}");
        assert!(c["corrections"].as_u64().expect("corrections") < 30, "{c}");
    }
}

#[test]
fn rollback_demo_on_weak_4g_agrees_with_the_referee_and_loses_no_input() {
    let out = volley()
        .args([
            "demo",
            "--mode",
            "rollback",
            "--bots",
            "3",
            "--duration-s",
            "4",
            "--profile",
            "weak-4g",
            "--json",
        ])
        .output()
        .expect("run demo");
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(r["checksums_agree"], true, "{r}");
    let node = &r["node"];
    assert_eq!(
        node["verdicts"],
        serde_json::json!([]),
        "no honest player is accused: {node}"
    );
    assert_eq!(node["inputs_filled"], 0, "no input was lost: {node}");
    assert!(
        node["reports_matched"].as_u64().expect("reports") > 20,
        "{node}"
    );
    for c in r["clients"].as_array().expect("clients") {
        assert_eq!(c["disconnected"], false, "{c}");
        assert_eq!(c["refused"], 0, "{c}");
        assert!(c["frames"].as_u64().expect("frames") > 200, "{c}");
        // weak-4g through the relay is two impaired legs: prediction must cover it.
        assert!(c["rollbacks"].as_u64().expect("rollbacks") > 0, "{c}");
        assert!(c["rollback_frames_max"].as_u64().expect("max") <= 8, "{c}");
    }
}

#[test]
fn rollback_demo_on_a_perfect_link_goes_direct() {
    let out = volley()
        .args([
            "demo",
            "--mode",
            "rollback",
            "--bots",
            "2",
            "--duration-s",
            "2",
            "--json",
        ])
        .output()
        .expect("run demo");
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(r["checksums_agree"], true, "{r}");
    for c in r["clients"].as_array().expect("clients") {
        assert_eq!(c["path_to_peers"], serde_json::json!(["direct"]), "{c}");
    }
    assert_eq!(r["node"]["verdicts"], serde_json::json!([]));
}

#[test]
fn rollback_referee_names_a_cheater_and_resyncs_it() {
    let out = volley()
        .args([
            "demo",
            "--mode",
            "rollback",
            "--bots",
            "3",
            "--duration-s",
            "4",
            "--cheat",
            "--json",
        ])
        .output()
        .expect("run demo");
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let node = &r["node"];
    let verdicts = node["verdicts"].as_array().expect("verdicts");
    assert!(!verdicts.is_empty(), "the cheat was caught: {node}");
    let cheater = r["clients"][0]["slot"].clone();
    for v in verdicts {
        assert_eq!(v["kind"], "Desync", "{v}");
        assert_eq!(v["slot"], cheater, "only the cheater is named: {v}");
    }
    assert!(
        node["resyncs_sent"].as_u64().expect("resyncs") >= 1,
        "{node}"
    );
    // After the resync everyone agrees again.
    assert_eq!(r["checksums_agree"], true, "{r}");
}
