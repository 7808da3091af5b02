//! Game builds through the real interfaces: `volley content keygen|publish|fetch` as processes
//! against a node on loopback (the origin).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{serve_process, start_node, KillOnDrop};
use rand::{RngCore, SeedableRng};

const KEY: &str = "studio-server-key-0123456789";

fn volley(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(args)
        .env_remove("VOLLEY_SERVER_KEY")
        .output()
        .expect("volley runs")
}

fn ok_json(out: Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// A build: an executable, two large packs, small files, an empty file, nested directories.
fn make_build(dir: &Path, mib: usize) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("data/levels")).unwrap();
    std::fs::write(dir.join("bin/game"), random(3 << 20, 1)).unwrap();
    std::fs::set_permissions(dir.join("bin/game"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("data/levels/one.pak"), random(mib << 20, 2)).unwrap();
    std::fs::write(dir.join("data/levels/two.pak"), random(mib << 20, 3)).unwrap();
    std::fs::write(dir.join("readme.txt"), b"hello from the arena\n").unwrap();
    std::fs::write(dir.join("data/empty"), b"").unwrap();
}

/// Every file under `dir` (but the installer's `.volley`): bytes and mode.
fn tree(dir: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, (Vec<u8>, u32)>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_name() == ".volley" {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
                let mode = e.metadata().unwrap().permissions().mode() & 0o777;
                out.insert(rel, (std::fs::read(&p).unwrap(), mode));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn keygen(dir: &Path) -> (String, String) {
    let key = dir.join("publisher.key");
    let out = volley(&["content", "keygen", "--out", key.to_str().unwrap()]);
    assert!(out.status.success());
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(public.len(), 64);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the secret key is private");
    // Never overwrites.
    assert!(
        !volley(&["content", "keygen", "--out", key.to_str().unwrap()])
            .status
            .success()
    );
    (key.to_str().unwrap().to_owned(), public)
}

fn publish(base: &str, key: &str, dir: &Path, version: &str) -> serde_json::Value {
    publish_with(base, key, dir, version, &[])
}

fn publish_with(
    base: &str,
    key: &str,
    dir: &Path,
    version: &str,
    extra: &[&str],
) -> serde_json::Value {
    let mut args = vec![
        "content",
        "publish",
        dir.to_str().unwrap(),
        "--game",
        "arena",
        "--version",
        version,
        "--key",
        key,
        "--node",
        base,
        "--server-key",
        KEY,
        "--json",
    ];
    args.extend_from_slice(extra);
    ok_json(volley(&args))
}

fn fetch(base: &str, public: &str, to: &Path, version: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "content",
        "fetch",
        "--node",
        base,
        "--game",
        "arena",
        "--version",
        version,
        "--to",
        to.to_str().unwrap(),
        "--trust",
        public,
        "--json",
    ];
    args.extend_from_slice(extra);
    volley(&args)
}

/// Counters from the node's metrics (0 when absent).
async fn metrics<const N: usize>(base: &str, names: [&str; N]) -> [u64; N] {
    let text = volley_client::Api::raw_get(&format!("{base}/metrics"))
        .await
        .unwrap();
    names.map(|name| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    })
}

async fn served(base: &str) -> (u64, u64) {
    let [chunks, bytes] = metrics(
        base,
        [
            "volley_content_chunks_served_total",
            "volley_content_bytes_served_total",
        ],
    )
    .await;
    (chunks, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_and_an_update_install_byte_identical_and_the_update_moves_only_changed_chunks() {
    let n = start_node(|c| c.server_key = Some(KEY.into())).await;
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path());
    let v1 = work.path().join("v1");
    make_build(&v1, 8);
    let p1 = publish(&n.base, &key, &v1, "1.0.0");
    assert_eq!(p1["files"], 5);
    assert_eq!(
        p1["uploaded_chunks"], p1["chunks"],
        "a new build uploads everything"
    );
    // Publishing again uploads nothing.
    assert_eq!(publish(&n.base, &key, &v1, "1.0.0")["uploaded_chunks"], 0);
    let install = work.path().join("install");
    let f1 = ok_json(fetch(&n.base, &public, &install, "1.0.0", &[]));
    assert_eq!(tree(&install), tree(&v1), "byte-identical, same modes");
    assert_eq!(f1["reused_chunks"], 0);
    assert_eq!(f1["downloaded_bytes"], f1["total_bytes"]);
    // Version 2: bytes inserted near the start and in the middle of both packs, one file
    // removed, one added.
    let v2 = work.path().join("v2");
    make_build(&v2, 8);
    for (name, seed) in [("one.pak", 20), ("two.pak", 30)] {
        let p = v2.join("data/levels").join(name);
        let mut data = std::fs::read(&p).unwrap();
        data.splice(1000..1000, random(100, seed));
        data.splice(5 << 20..5 << 20, random(40, seed + 1));
        std::fs::write(&p, data).unwrap();
    }
    std::fs::remove_file(v2.join("readme.txt")).unwrap();
    std::fs::write(v2.join("data/new.cfg"), b"difficulty = 3\n").unwrap();
    let p2 = publish(&n.base, &key, &v2, "2.0.0");
    let total = p2["total_bytes"].as_u64().unwrap();
    let uploaded = p2["uploaded_bytes"].as_u64().unwrap();
    assert!(
        uploaded < total / 20,
        "the update uploads {uploaded} of {total} bytes"
    );
    let (_, bytes_before) = served(&n.base).await;
    let f2 = ok_json(fetch(&n.base, &public, &install, "2.0.0", &[]));
    let (_, bytes_after) = served(&n.base).await;
    assert_eq!(tree(&install), tree(&v2));
    let downloaded = f2["downloaded_bytes"].as_u64().unwrap();
    assert_eq!(downloaded, bytes_after - bytes_before, "the origin agrees");
    assert!(
        downloaded < total / 20,
        "the update downloads {downloaded} of {total} bytes"
    );
    // Four edit sites at a 64 KiB average: a handful of chunks each, nothing like the build.
    assert!(
        f2["downloaded_chunks"].as_u64().unwrap() <= 4 * 3 + 2,
        "{f2}"
    );
    // Nothing is left beside the install.
    for suffix in ["volley-old", "volley-staging"] {
        assert!(
            !work.path().join(format!("install.{suffix}")).exists(),
            "{suffix}"
        );
    }
    n.node.shutdown().await;
}

/// Posts a chunk batch; the status and the JSON body.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn notes(r: &serde_json::Value) -> String {
    r["notes"].to_string()
}

/// Chunks on this machine that no readable manifest locates are still found, by re-cutting
/// files with the new version's rule: a copy of the game from elsewhere (`--reuse-from`), an
/// install whose manifest was damaged or deleted, an install cut at another average size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_no_manifest_locates_are_found_by_recutting_local_files() {
    let n = start_node(|c| c.server_key = Some(KEY.into())).await;
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path());
    let v1 = work.path().join("v1");
    make_build(&v1, 8);
    publish(&n.base, &key, &v1, "1.0.0");
    let v2 = work.path().join("v2");
    make_build(&v2, 8);
    for (name, seed) in [("one.pak", 40), ("two.pak", 50)] {
        let p = v2.join("data/levels").join(name);
        let mut data = std::fs::read(&p).unwrap();
        data.splice(2000..2000, random(77, seed));
        data.splice(6 << 20..6 << 20, random(30, seed + 1));
        std::fs::write(&p, data).unwrap();
    }
    let total = publish(&n.base, &key, &v2, "2.0.0")["total_bytes"]
        .as_u64()
        .unwrap();
    let small = total / 20;

    // 1. A copy of version 1 from elsewhere, laid out differently, with files of its own, a
    //    symlink (not followed) and an unreadable corner: version 2 installs into a new
    //    directory downloading only what changed, and the copy is left as it was.
    let elsewhere = work.path().join("elsewhere");
    copy_tree(&v1, &elsewhere.join("nested/game"));
    std::fs::rename(
        elsewhere.join("nested/game/data/levels/one.pak"),
        elsewhere.join("moved.pak"),
    )
    .unwrap();
    std::fs::write(elsewhere.join("saves.dat"), random(300_000, 9)).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", elsewhere.join("dangling")).unwrap();
    let before = tree(&elsewhere.join("nested"));
    let fresh = work.path().join("fresh");
    let (_, served_before) = served(&n.base).await;
    let r = ok_json(fetch(
        &n.base,
        &public,
        &fresh,
        "2.0.0",
        &["--reuse-from", elsewhere.to_str().unwrap()],
    ));
    let (_, served_after) = served(&n.base).await;
    assert_eq!(tree(&fresh), tree(&v2), "byte-identical");
    let downloaded = r["downloaded_bytes"].as_u64().unwrap();
    assert_eq!(
        downloaded,
        served_after - served_before,
        "the origin agrees"
    );
    assert!(
        downloaded < small,
        "downloaded {downloaded} of {total}: {r}"
    );
    assert_eq!(
        r["reused_bytes"].as_u64().unwrap() + downloaded,
        total,
        "every byte was either found in the copy or downloaded (no chunk repeats): {r}"
    );
    assert!(r["recut_bytes"].as_u64().unwrap() >= (16 << 20), "{r}");
    assert_eq!(
        tree(&elsewhere.join("nested")),
        before,
        "the copy is untouched"
    );

    // 2. An installed file was changed locally (bytes inserted near its start, as a mod or a
    //    damaged copy might): the update re-cuts that file and still downloads only what the
    //    new version changed, not everything after the local change.
    let modded = work.path().join("modded");
    ok_json(fetch(&n.base, &public, &modded, "1.0.0", &[]));
    let pack = modded.join("data/levels/two.pak");
    let mut data = std::fs::read(&pack).unwrap();
    data.splice(3000..3000, random(10, 99));
    std::fs::write(&pack, data).unwrap();
    let r = ok_json(fetch(&n.base, &public, &modded, "2.0.0", &[]));
    assert_eq!(tree(&modded), tree(&v2));
    assert!(notes(&r).contains("changed since"), "{r}");
    assert!(r["downloaded_bytes"].as_u64().unwrap() < small, "{r}");

    // 3. The install's manifest is damaged: the update still reuses the installed files.
    let install = work.path().join("install");
    ok_json(fetch(&n.base, &public, &install, "1.0.0", &[]));
    let manifest = install.join(".volley/manifest");
    let bytes = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, &bytes[..bytes.len() / 2]).unwrap();
    let r = ok_json(fetch(&n.base, &public, &install, "2.0.0", &[]));
    assert_eq!(tree(&install), tree(&v2));
    assert!(notes(&r).contains("unreadable"), "{r}");
    assert!(r["downloaded_bytes"].as_u64().unwrap() < small, "{r}");

    // 4. Its manifest is gone: the same, back to version 1.
    std::fs::remove_file(&manifest).unwrap();
    let r = ok_json(fetch(&n.base, &public, &install, "1.0.0", &[]));
    assert_eq!(tree(&install), tree(&v1));
    assert!(notes(&r).contains("holds no manifest"), "{r}");
    assert!(r["downloaded_bytes"].as_u64().unwrap() < small, "{r}");

    // 5. Version 1 again, published at twice the average chunk size: no chunk is shared by
    //    hash, yet nothing is downloaded, since re-cutting the installed files finds them all.
    let p = publish_with(&n.base, &key, &v1, "1.0.1", &["--chunk-avg", "131072"]);
    assert!(p["uploaded_chunks"].as_u64().unwrap() > 0);
    let r = ok_json(fetch(&n.base, &public, &install, "1.0.1", &[]));
    assert_eq!(tree(&install), tree(&v1));
    assert!(notes(&r).contains("65536-byte average"), "{r}");
    assert_eq!(r["downloaded_bytes"], 0, "{r}");

    // 6. Bad input: a reuse directory that does not exist, and a non-empty directory that
    //    holds no install, each refused with a clear error and nothing left behind.
    let out = fetch(
        &n.base,
        &public,
        &work.path().join("other"),
        "2.0.0",
        &[
            "--reuse-from",
            work.path().join("missing").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing") && err.contains("not a directory"),
        "{err}"
    );
    assert!(!work.path().join("other.volley-staging").exists());
    let out = fetch(&n.base, &public, &elsewhere, "2.0.0", &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--reuse-from"), "{err}");
    assert_eq!(tree(&elsewhere.join("nested")), before);
    n.node.shutdown().await;
}

/// `volley content verify` finds every kind of damage to an install, and fetching the same
/// version again repairs it, downloading only the damaged chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_damage_and_fetching_the_same_version_repairs_only_that() {
    let n = start_node(|c| c.server_key = Some(KEY.into())).await;
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path());
    let v1 = work.path().join("v1");
    make_build(&v1, 8);
    let total = publish(&n.base, &key, &v1, "1.0.0")["total_bytes"]
        .as_u64()
        .unwrap();
    let install = work.path().join("install");
    ok_json(fetch(&n.base, &public, &install, "1.0.0", &[]));
    let dir = install.to_str().unwrap();
    let verify = |extra: &[&str]| {
        let mut args = vec!["content", "verify", "--to", dir, "--json"];
        args.extend_from_slice(extra);
        volley(&args)
    };
    let piped = verify(&["--trust", &public]);
    assert!(
        !String::from_utf8_lossy(&piped.stderr).contains("verifying:"),
        "no progress line into a pipe"
    );
    let clean = ok_json(piped);
    assert_eq!(clean["checked_bytes"].as_u64(), Some(total), "{clean}");
    // On a terminal (a pseudo-terminal from script(1)) it shows how far it is while it works.
    let on_terminal = Command::new("script")
        .args([
            "-qec",
            &format!(
                "{} content verify --to {dir} --trust {public}",
                env!("CARGO_BIN_EXE_volley")
            ),
            "/dev/null",
        ])
        .env_remove("VOLLEY_SERVER_KEY")
        .output()
        .expect("script runs");
    let shown = String::from_utf8_lossy(&on_terminal.stdout);
    assert!(shown.contains("verifying:"), "{shown}");
    assert_eq!(clean["problems"], serde_json::json!([]));
    assert_eq!(clean["version"], "1.0.0");
    // Damage of every kind: a flipped byte, a truncated file, a deleted file, a lost mode bit.
    let one = install.join("data/levels/one.pak");
    let mut data = std::fs::read(&one).unwrap();
    data[4 << 20] ^= 0x40;
    std::fs::write(&one, data).unwrap();
    let two = install.join("data/levels/two.pak");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&two)
        .unwrap()
        .set_len(5 << 20)
        .unwrap();
    std::fs::remove_file(install.join("readme.txt")).unwrap();
    std::fs::set_permissions(
        install.join("bin/game"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = verify(&[]);
    assert!(!out.status.success(), "damage is an error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("4 of 5 files") && err.contains("repairs"),
        "{err}"
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems: Vec<(String, String)> = r["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_owned(),
                p["what"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "bin/game",
            "data/levels/one.pak",
            "data/levels/two.pak",
            "readme.txt"
        ],
        "{r}"
    );
    assert!(problems[0].1.contains("mode 644"), "{r}");
    assert!(problems[1].1.contains("1 damaged chunk"), "{r}");
    assert!(problems[2].1.contains("5242880 bytes"), "{r}");
    assert!(problems[3].1.contains("missing"), "{r}");
    let damaged = r["damaged_bytes"].as_u64().unwrap();
    assert!(damaged > 3 << 20 && damaged < 4 << 20, "{r}");
    // Bad input: a key that did not sign it, a directory that holds no install.
    let other = volley(&[
        "content",
        "keygen",
        "--out",
        work.path().join("other.key").to_str().unwrap(),
    ]);
    let other = String::from_utf8(other.stdout).unwrap().trim().to_owned();
    assert!(!verify(&["--trust", &other]).status.success());
    let out = volley(&["content", "verify", "--to", v1.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds no Volley install"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The repair: the same version fetched again downloads only the damaged chunks.
    let (_, before) = served(&n.base).await;
    let f = ok_json(fetch(&n.base, &public, &install, "1.0.0", &[]));
    let (_, after) = served(&n.base).await;
    assert_eq!(tree(&install), tree(&v1), "repaired, modes too");
    let downloaded = f["downloaded_bytes"].as_u64().unwrap();
    assert_eq!(downloaded, after - before);
    assert!(
        downloaded <= damaged,
        "downloaded {downloaded}, damaged {damaged}"
    );
    assert!(downloaded > 3 << 20, "{f}");
    assert_eq!(ok_json(verify(&[]))["problems"], serde_json::json!([]));
    n.node.shutdown().await;
}

async fn post_batch(
    base: &str,
    game: &str,
    key: Option<&str>,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/v1/content/{game}/chunks"))
        .body(body);
    if let Some(key) = key {
        req = req.header("x-volley-server-key", key);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Which of `names` the origin lacks.
async fn origin_missing(base: &str, names: &[String]) -> Vec<String> {
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/content/arena/missing"))
        .header("x-volley-server-key", KEY)
        .json(&serde_json::json!({ "chunks": names }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    serde_json::from_value(v["chunks"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_batches_are_stored_whole_or_refused_whole_with_clear_errors() {
    use volley_content::batch::push;
    let n = start_node(|c| c.server_key = Some(KEY.into())).await;
    let data: Vec<Vec<u8>> = (0..4u64)
        .map(|i| random(50_000 + i as usize, 40 + i))
        .collect();
    let hash = |d: &[u8]| *blake3::hash(d).as_bytes();
    let names: Vec<String> = data
        .iter()
        .map(|d| volley_content::chunk_name(&hash(d)))
        .collect();
    let batch = |items: &[(&[u8; 32], &[u8])]| {
        let mut body = Vec::new();
        for (h, d) in items {
            push(&mut body, h, d);
        }
        body
    };
    let h: Vec<[u8; 32]> = data.iter().map(|d| hash(d)).collect();

    // Two good chunks: stored; sent again: nothing new.
    let good = batch(&[(&h[0], &data[0]), (&h[1], &data[1])]);
    let (status, reply) = post_batch(&n.base, "arena", Some(KEY), good.clone()).await;
    assert_eq!(
        (status, &reply),
        (200, &serde_json::json!({"chunks": 2, "stored": 2}))
    );
    let (status, reply) = post_batch(&n.base, "arena", Some(KEY), good).await;
    assert_eq!(
        (status, &reply),
        (200, &serde_json::json!({"chunks": 2, "stored": 0}))
    );
    assert_eq!(origin_missing(&n.base, &names).await, names[2..].to_vec());
    // Each is served back byte for byte.
    for i in 0..2 {
        let got = volley_client::content::Origin::new(&n.base, "arena");
        let bytes = volley_content::install::ChunkSource::fetch(
            &got,
            volley_content::ChunkRef {
                hash: h[i],
                size: data[i].len() as u32,
            },
        )
        .await
        .unwrap();
        assert_eq!(bytes, data[i]);
    }

    // Bad batches: a clear 4xx each, and none of their good chunks stored.
    let corrupt = batch(&[(&h[2], &data[2]), (&h[3], &data[2])]);
    let full = batch(&[(&h[2], &data[2]), (&h[3], &data[3])]);
    let mut oversize = Vec::new();
    oversize.extend_from_slice(&h[2]);
    oversize.extend_from_slice(&u32::MAX.to_be_bytes());
    let cases: Vec<(Vec<u8>, u16, &str, String)> = vec![
        (corrupt, 400, "hash_mismatch", names[3].clone()),
        (
            full[..full.len() - 1].to_vec(),
            400,
            "bad_content",
            "chunk 1 is cut short".into(),
        ),
        (
            full[..40].to_vec(),
            400,
            "bad_content",
            "chunk 0 is cut short: 4 of its".into(),
        ),
        (
            full[..full.len() - 50_003].to_vec(),
            400,
            "bad_content",
            "chunk 1 is cut short".into(),
        ),
        (oversize, 400, "bad_content", "over the".into()),
        (Vec::new(), 400, "bad_content", "holds no chunk".into()),
    ];
    for (body, want_status, want_code, want_text) in cases {
        let (status, reply) = post_batch(&n.base, "arena", Some(KEY), body).await;
        assert_eq!(status, want_status, "{reply}");
        assert_eq!(reply["code"], want_code, "{reply}");
        let message = reply["message"].as_str().unwrap();
        assert!(
            message.contains(&want_text),
            "{message} should name {want_text}"
        );
        assert_eq!(origin_missing(&n.base, &names).await, names[2..].to_vec());
    }
    // No server key, a wrong one, a bad game name, a body over the limit.
    let one = batch(&[(&h[2], &data[2])]);
    let (status, _) = post_batch(&n.base, "arena", None, one.clone()).await;
    assert!(status == 401 || status == 403, "{status}");
    let (status, _) = post_batch(
        &n.base,
        "arena",
        Some("wrong-key-0123456789abc"),
        one.clone(),
    )
    .await;
    assert!(status == 401 || status == 403, "{status}");
    let (status, reply) = post_batch(&n.base, "..", Some(KEY), one).await;
    assert!((400..500).contains(&status), "{status} {reply}");
    let (status, _) = post_batch(
        &n.base,
        "arena",
        Some(KEY),
        vec![0; volley_content::batch::BODY_MAX + 1],
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(origin_missing(&n.base, &names).await, names[2..].to_vec());

    // And the good half of the refused batch goes through on its own.
    let rest = batch(&[(&h[2], &data[2]), (&h[3], &data[3])]);
    let (status, reply) = post_batch(&n.base, "arena", Some(KEY), rest).await;
    assert_eq!(
        (status, &reply),
        (200, &serde_json::json!({"chunks": 2, "stored": 2}))
    );
    assert!(origin_missing(&n.base, &names).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_and_corrupt_chunks_are_refused_and_the_installed_version_stays_whole() {
    let n = start_node(|c| c.server_key = Some(KEY.into())).await;
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path());
    let v1 = work.path().join("v1");
    make_build(&v1, 2);
    publish(&n.base, &key, &v1, "1.0.0");
    // Without the server key nothing is published.
    let out = volley(&[
        "content",
        "publish",
        v1.to_str().unwrap(),
        "--game",
        "arena",
        "--version",
        "1.0.1",
        "--key",
        &key,
        "--node",
        &n.base,
        "--server-key",
        "wrong-key-0123456789abc",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad_server_key"));
    // A player trusting another publisher refuses the manifest; nothing is written.
    let (_, other_public) = keygen(&work.path().join("other").tap_mkdir());
    let stray = work.path().join("stray");
    let out = fetch(&n.base, &other_public, &stray, "1.0.0", &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not the trusted publisher"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stray.exists());
    // An unknown version is a clear 404.
    let out = fetch(&n.base, &public, &stray, "9.9.9", &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no version 9.9.9"));
    // Install 1.0.0, then publish 2.0.0 and rot one of its new chunks on the origin's disk.
    let install = work.path().join("install");
    ok_json(fetch(&n.base, &public, &install, "1.0.0", &[]));
    let v2 = work.path().join("v2");
    make_build(&v2, 2);
    std::fs::write(v2.join("bin/game"), random(3 << 20, 99)).unwrap();
    publish(&n.base, &key, &v2, "2.0.0");
    // Rot one byte of the new executable's first chunk in the origin's pack files.
    let game = std::fs::read(v2.join("bin/game")).unwrap();
    let first = volley_content::cdc::Params::new(65_536).unwrap().cut(&game);
    let packs = n.data_dir().join("content/arena/packs");
    let mut rotted = false;
    for e in std::fs::read_dir(&packs).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "pack") {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(first).position(|w| w == &game[..first]) {
            bytes[at + 10] ^= 0xff;
            std::fs::write(&path, bytes).unwrap();
            rotted = true;
        }
    }
    assert!(rotted, "the new executable's first chunk is on the origin");
    let out = fetch(&n.base, &public, &install, "2.0.0", &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed verification"), "{err}");
    assert_eq!(
        tree(&install),
        tree(&v1),
        "the installed version is untouched"
    );
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_fetch_resumes_without_downloading_verified_chunks_again() {
    let n = start_node(|c| c.server_key = Some(KEY.into())).await;
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path());
    let v1 = work.path().join("v1");
    make_build(&v1, 8);
    let p = publish(&n.base, &key, &v1, "1.0.0");
    let chunks = p["chunks"].as_u64().unwrap();
    let install = work.path().join("install");
    let staging = volley_content::install::staging_dir(&install);
    let mut killed_at = Vec::new();
    // Three runs killed at different points (19 MiB at 4 MiB/s takes ~5 s), then one to the end.
    for wait_ms in [700u64, 1300, 900] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_volley"))
            .args([
                "content",
                "fetch",
                "--node",
                &n.base,
                "--game",
                "arena",
                "--version",
                "1.0.0",
                "--to",
                install.to_str().unwrap(),
                "--trust",
                &public,
                "--json",
                "--concurrency",
                "2",
                "--max-kib-per-s",
                "4096",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Chunks whole in the staging area, by the installer's own check.
        killed_at.push(match volley_content::staging::target(&staging) {
            Some(signed) => {
                let m = volley_content::manifest::SignedManifest::open(signed, None).unwrap();
                let table = volley_content::table::ChunkTable::new(std::sync::Arc::new(m)).unwrap();
                volley_content::staging::Staging::open(&staging, std::sync::Arc::new(table))
                    .unwrap()
                    .count()
            }
            None => 0,
        });
    }
    assert!(
        !install.exists(),
        "a killed first install leaves no install directory"
    );
    // Let the node finish any request a killed fetch left in flight before counting.
    std::thread::sleep(Duration::from_millis(300));
    let cached = *killed_at.last().unwrap() as u64;
    assert!(
        cached > 0 && cached < chunks,
        "killed mid-way: {killed_at:?} of {chunks}"
    );
    let (served_before, _) = served(&n.base).await;
    let started = Instant::now();
    let r = ok_json(fetch(&n.base, &public, &install, "1.0.0", &[]));
    assert!(started.elapsed() < Duration::from_secs(60));
    let (served_after, _) = served(&n.base).await;
    assert_eq!(tree(&install), tree(&v1));
    assert_eq!(r["resumed_chunks"].as_u64().unwrap(), cached, "{r}");
    assert_eq!(
        r["resumed_chunks"].as_u64().unwrap() + r["downloaded_chunks"].as_u64().unwrap(),
        chunks
    );
    assert_eq!(
        served_after - served_before,
        chunks - cached,
        "no verified chunk was downloaded again"
    );
    n.node.shutdown().await;
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// Unmounts on every exit path.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A fetch onto a full disk fails with the system's error and the path, leaves the installed
/// version whole, and succeeds once there is room. Needs root (a 6 MiB tmpfs); prints SKIPPED
/// without it, or fails when `CI` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_and_the_installed_version_stays() {
    let work = tempfile::tempdir().unwrap();
    let disk = work.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&disk)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs root to mount a tmpfs for the disk-full test"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs (not root?)");
        return;
    }
    let _guard = Mount(disk.clone());
    let n = start_node(|c| c.server_key = Some(KEY.into())).await;
    let (key, public) = keygen(work.path());
    // Version 1 (2.1 MiB) fits with its staging area; version 2 (5.1 MiB, a new 3 MiB executable)
    // does not fit beside it.
    let v1 = work.path().join("v1");
    make_build(&v1, 1);
    std::fs::write(v1.join("bin/game"), random(64 << 10, 5)).unwrap();
    publish(&n.base, &key, &v1, "1.0.0");
    let install = disk.join("install");
    ok_json(fetch(&n.base, &public, &install, "1.0.0", &[]));
    let v2 = work.path().join("v2");
    make_build(&v2, 1);
    std::fs::write(v2.join("bin/game"), random(3 << 20, 6)).unwrap();
    publish(&n.base, &key, &v2, "2.0.0");
    let out = fetch(&n.base, &public, &install, "2.0.0", &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(tree(&install), tree(&v1), "the installed version is whole");
    // Room made (the disk grown): the same command now completes, reusing what it can.
    assert!(Command::new("mount")
        .args(["-o", "remount,size=16m"])
        .arg(&disk)
        .status()
        .unwrap()
        .success());
    let r = ok_json(fetch(&n.base, &public, &install, "2.0.0", &[]));
    assert_eq!(tree(&install), tree(&v2));
    assert!(r["reused_chunks"].as_u64().unwrap() > 0, "{r}");
    n.node.shutdown().await;
}

/// Publishes two small versions of "arena", 0.9.0 and 0.9.1, to each node of `bases`: swarms
/// exist only for published versions.
fn publish_tracker_versions(bases: &[&str]) {
    let work = tempfile::tempdir().unwrap();
    let (key, _) = keygen(work.path());
    let build = work.path().join("build");
    make_build(&build, 1);
    for base in bases {
        publish(base, &key, &build, "0.9.0");
        publish(base, &key, &build, "0.9.1");
    }
}

/// The tracker's rules, seen by three players `a`, `b`, `c` (logged in to one node or to
/// nodes of one cluster, where [`publish_tracker_versions`] published): most complete first,
/// at the address the node saw; another version is another swarm; leaving removes a player;
/// lies, bad names and unpublished versions are refused.
async fn tracker_rules(a: &volley_client::Api, b: &volley_client::Api, c: &volley_client::Api) {
    use volley_proto::api::PeerAnnounce;
    let have = |port, have_chunks| PeerAnnounce {
        port,
        have_chunks,
        total_chunks: 100,
    };
    assert!(a
        .announce_peer("arena", "0.9.0", &have(7001, 100))
        .await
        .unwrap()
        .peers
        .is_empty());
    b.announce_peer("arena", "0.9.0", &have(7002, 40))
        .await
        .unwrap();
    let seen = c
        .announce_peer("arena", "0.9.0", &have(7003, 0))
        .await
        .unwrap()
        .peers;
    assert_eq!(
        seen.iter()
            .map(|p| (p.addr.as_str(), p.have_chunks))
            .collect::<Vec<_>>(),
        vec![("127.0.0.1:7001", 100), ("127.0.0.1:7002", 40)],
        "most complete first, at the address the node saw"
    );
    assert!(c
        .announce_peer("arena", "0.9.1", &have(7003, 0))
        .await
        .unwrap()
        .peers
        .is_empty());
    a.leave_swarm("arena", "0.9.0").await.unwrap();
    let seen = c
        .announce_peer("arena", "0.9.0", &have(7003, 5))
        .await
        .unwrap()
        .peers;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let err = c
        .announce_peer("arena", "0.9.0", &have(7003, 101))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("have_chunks"), "{err}");
    assert!(c
        .announce_peer("Arena!", "0.9.0", &have(7003, 0))
        .await
        .is_err());
    let err = c
        .announce_peer("arena", "7.7.7", &have(7003, 0))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no version 7.7.7"), "{err}");
    // Leave the swarms clean for whoever uses these players next.
    b.leave_swarm("arena", "0.9.0").await.unwrap();
    c.leave_swarm("arena", "0.9.0").await.unwrap();
    c.leave_swarm("arena", "0.9.1").await.unwrap();
}

/// The tracker over HTTP: players announce what they hold and see each other, most complete
/// first, at the address the node sees them from; leaving and bad announces behave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracker_introduces_players_holding_a_version() {
    let n = start_node(|c| c.server_key = Some(KEY.into())).await;
    publish_tracker_versions(&[&n.base]);
    let a = common::login(&n.base, "device-swarm-aaaa").await;
    let b = common::login(&n.base, "device-swarm-bbbb").await;
    let c = common::login(&n.base, "device-swarm-cccc").await;
    tracker_rules(&a, &b, &c).await;
    // Strangers are refused.
    let stranger = volley_client::Api::new(&n.base);
    let anyone = volley_proto::api::PeerAnnounce {
        port: 7009,
        have_chunks: 0,
        total_chunks: 100,
    };
    assert!(stranger
        .announce_peer("arena", "1.0.0", &anyone)
        .await
        .is_err());
    n.node.shutdown().await;
}

/// A `volley content fetch --swarm` process whose first stdout line (the install report) and
/// last (the seeding counters, after SIGTERM) are collected.
struct SwarmPeer {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// What the process wrote to stderr, for the failure message.
    errors: std::sync::Arc<std::sync::Mutex<String>>,
}

impl SwarmPeer {
    fn spawn(base: &str, public: &str, to: &Path, extra: &[&str]) -> SwarmPeer {
        let mut args = vec![
            "content",
            "fetch",
            "--node",
            base,
            "--game",
            "arena",
            "--version",
            "1.0.0",
            "--to",
            to.to_str().unwrap(),
            "--trust",
            public,
            "--json",
            "--swarm",
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let mut child = Command::new(env!("CARGO_BIN_EXE_volley"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("volley runs");
        let out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let errors = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = errors.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut err, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        SwarmPeer {
            child,
            lines,
            errors,
        }
    }

    fn next_json(&self, within: Duration) -> serde_json::Value {
        let l = self.lines.recv_timeout(within).unwrap_or_else(|e| {
            // Give the stderr reader a moment to catch the process's last words.
            std::thread::sleep(Duration::from_millis(200));
            panic!(
                "the peer did not report in time ({e}); its stderr:\n{}",
                self.errors.lock().unwrap()
            )
        });
        serde_json::from_str(&l).expect("JSON line")
    }

    fn stop(mut self) -> serde_json::Value {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let v = self.next_json(Duration::from_secs(20));
        let _ = self.child.wait();
        v
    }
}

impl Drop for SwarmPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_of_eight_peers_installs_byte_identical_builds_with_the_origin_sending_about_one_copy(
) {
    // The origin uploads at most 4 MiB/s: alone it would need 8 copies of the build.
    let n = start_node(|c| {
        c.server_key = Some(KEY.into());
        c.content_max_kib_per_s = 4 << 10;
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path());
    let build = work.path().join("build");
    make_build(&build, 8);
    let size = publish(&n.base, &key, &build, "1.0.0")["total_bytes"]
        .as_u64()
        .unwrap();
    let (_, origin_before) = served(&n.base).await;
    let peers: Vec<(SwarmPeer, std::path::PathBuf)> = (0..8)
        .map(|i| {
            let to = work.path().join(format!("peer{i}"));
            (
                SwarmPeer::spawn(&n.base, &public, &to, &["--seed-secs", "120"]),
                to,
            )
        })
        .collect();
    let mut from_peers = 0;
    for (p, to) in &peers {
        let r = p.next_json(Duration::from_secs(180));
        assert_eq!(r["total_bytes"], size);
        assert_eq!(r["downloaded_bytes"], size);
        assert_eq!(r["corrupt_chunks"], 0);
        let s = &r["swarm"];
        assert_eq!(
            s["peer_bytes"].as_u64().unwrap() + s["origin_bytes"].as_u64().unwrap(),
            size,
            "every byte came from a peer or the origin: {r}"
        );
        from_peers += s["peer_bytes"].as_u64().unwrap();
        assert_eq!(tree(to), tree(&build), "byte-identical, same modes");
    }
    let (_, origin_after) = served(&n.base).await;
    let origin = origin_after - origin_before;
    assert!(
        origin < 2 * size,
        "the origin sent {origin} bytes for 8 peers of a {size}-byte build"
    );
    assert_eq!(from_peers + origin, 8 * size, "the rest came from peers");
    let mut uploaded = 0;
    for (p, _) in peers {
        uploaded += p.stop()["seeded"]["uploaded_bytes"].as_u64().unwrap();
    }
    assert!(
        uploaded >= from_peers,
        "peers served {uploaded} bytes, received {from_peers}"
    );
}

/// A peer that claims every chunk and answers each request with garbage of the right size.
async fn malicious_peer(manifest: Vec<u8>) -> (std::net::SocketAddr, tokio::task::JoinHandle<u64>) {
    use volley_content::wire::{Bits, Hello, Msg};
    let (m, _) = volley_content::Manifest::open(&manifest, None).unwrap();
    let mut seen = std::collections::HashSet::new();
    let sizes: Vec<u32> = m
        .chunks()
        .filter(|c| seen.insert(c.hash))
        .map(|c| c.size)
        .collect();
    let me = volley_net::tls::Identity::generate("evil").unwrap();
    let crypto = volley_net::tls::server_crypto(&me, volley_net::tls::Pin::AnyVerifiedKey).unwrap();
    let cfg = quinn::ServerConfig::with_crypto(std::sync::Arc::new(crypto));
    let ep = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = ep.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut served = 0u64;
        while let Some(inc) = ep.accept().await {
            let Ok(conn) = inc.await else { continue };
            let Ok((mut send, mut recv)) = conn.accept_bi().await else {
                continue;
            };
            let mut len = [0u8; 4];
            recv.read_exact(&mut len).await.unwrap();
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            recv.read_exact(&mut body).await.unwrap();
            let Msg::Hello(h) = Msg::decode(&body).unwrap() else {
                panic!("hello first")
            };
            let mine = Msg::Hello(Hello {
                peer_id: h.peer_id ^ 1,
                ..h
            });
            send.write_all(&mine.frame()).await.unwrap();
            let full = Bits::full(sizes.len()).to_bytes();
            send.write_all(&Msg::Bitfield(full).frame()).await.unwrap();
            send.write_all(&Msg::Unchoke.frame()).await.unwrap();
            while let Ok((mut s, mut r)) = conn.accept_bi().await {
                let mut i = [0u8; 4];
                if r.read_exact(&mut i).await.is_err() {
                    break;
                }
                let size = sizes[u32::from_be_bytes(i) as usize] as usize;
                let mut garbage = vec![0u8; size + 1];
                garbage[1..].fill(0x5a);
                if s.write_all(&garbage).await.is_err() {
                    break;
                }
                let _ = s.finish();
                served += 1;
            }
            // Dropped by the fetcher: done.
            return served;
        }
        served
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serving_corrupt_chunks_is_dropped_and_the_build_still_installs() {
    let n = start_node(|c| c.server_key = Some(KEY.into())).await;
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path());
    let build = work.path().join("build");
    make_build(&build, 2);
    publish(&n.base, &key, &build, "1.0.0");
    let manifest = volley_client::content::Origin::new(&n.base, "arena")
        .manifest("1.0.0")
        .await
        .unwrap();
    let (evil, evil_task) = malicious_peer(manifest).await;
    let to = work.path().join("install");
    let p = SwarmPeer::spawn(&n.base, &public, &to, &["--peer", &evil.to_string()]);
    let r = p.next_json(Duration::from_secs(120));
    assert_eq!(tree(&to), tree(&build), "the result is still right");
    assert_eq!(r["swarm"]["banned_peers"], 1, "{r}");
    assert!(r["corrupt_chunks"].as_u64().unwrap() >= 1, "{r}");
    let served = tokio::time::timeout(Duration::from_secs(30), evil_task)
        .await
        .expect("the fetcher hung up on the bad peer")
        .unwrap();
    assert!(served >= 1, "the bad peer was asked");
    // Nothing it sent was kept: every byte came from the origin.
    assert_eq!(r["swarm"]["peer_bytes"], 0);
    assert_eq!(r["swarm"]["origin_bytes"], r["total_bytes"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_found_by_lan_discovery_serves_a_fetch_without_the_tracker_knowing_it() {
    // The origin is slow (2 MiB/s); the seed on the "LAN" is not announced to the node.
    let n = start_node(|c| {
        c.server_key = Some(KEY.into());
        c.content_max_kib_per_s = 2 << 10;
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path());
    let build = work.path().join("build");
    make_build(&build, 1);
    let size = publish(&n.base, &key, &build, "1.0.0")["total_bytes"]
        .as_u64()
        .unwrap();
    let first = work.path().join("first");
    ok_json(fetch(&n.base, &public, &first, "1.0.0", &[]));
    // A multicast group and port of this test's own (several tests may run at once).
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let group = format!("239.255.76.77:{port}");
    let lan = ["--lan", "--lan-group", &group, "--lan-iface", "127.0.0.1"];
    let seed = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(["content", "seed", "--to", first.to_str().unwrap()])
        .args(["--trust", &public, "--json", "--listen", "127.0.0.1:0"])
        .args(lan)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let seed = KillOnDrop(Some(seed));
    let second = work.path().join("second");
    let p = SwarmPeer::spawn(&n.base, &public, &second, &lan);
    let r = p.next_json(Duration::from_secs(120));
    assert_eq!(tree(&second), tree(&build));
    let from_peers = r["swarm"]["peer_bytes"].as_u64().unwrap();
    assert!(
        from_peers > size / 2,
        "the LAN seed served {from_peers} of {size} bytes: {r}"
    );
    let out = seed.terminate();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["seeded"]["uploaded_bytes"].as_u64().unwrap() >= from_peers);
}

/// Two nodes of one cluster (one PostgreSQL, one Redis): a seed announced through node 1 is
/// introduced to a player fetching through node 2 and serves it most of the build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_redis_share_one_tracker() {
    let db = volley_store::testing::empty_postgres()
        .await
        .expect("PostgreSQL for tests");
    let redis = format!(
        "redis://{}/",
        std::env::var("VOLLEY_TEST_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into())
    );
    let prefix = format!(
        "volley-test-tracker:{}:{}:",
        std::process::id(),
        rand::random::<u32>()
    );
    let node = |id: &'static str, slow: bool| {
        let (db, redis, prefix) = (db.clone(), redis.clone(), prefix.clone());
        start_node(move |c| {
            c.database = Some(db);
            c.redis = Some(redis);
            c.redis_prefix = prefix;
            c.node_id = id.into();
            c.server_key = Some(KEY.into());
            if slow {
                c.content_max_kib_per_s = 2 << 10;
            }
        })
    };
    let n1 = node("node-a", false).await;
    let n2 = node("node-b", true).await;
    // Announces through either node land in one swarm, and every rule holds across nodes.
    use volley_proto::api::PeerAnnounce;
    let have = |port, have_chunks| PeerAnnounce {
        port,
        have_chunks,
        total_chunks: 100,
    };
    let a = common::login(&n1.base, "device-shared-aaaa").await;
    let b = common::login(&n2.base, "device-shared-bbbb").await;
    let c = common::login(&n2.base, "device-shared-cccc").await;
    publish_tracker_versions(&[&n1.base, &n2.base]);
    tracker_rules(&a, &b, &c).await;

    // The same build published to both nodes (the same signed manifest).
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path());
    let build = work.path().join("build");
    make_build(&build, 1);
    let size = publish(&n1.base, &key, &build, "1.0.0")["total_bytes"]
        .as_u64()
        .unwrap();
    publish(&n2.base, &key, &build, "1.0.0");
    let first = work.path().join("first");
    ok_json(fetch(&n1.base, &public, &first, "1.0.0", &[]));
    let seed = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(["content", "seed", "--to", first.to_str().unwrap()])
        .args(["--trust", &public, "--json", "--listen", "127.0.0.1:0"])
        .args(["--node", &n1.base])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let seed = KillOnDrop(Some(seed));
    // Node 2 learns of the seed that announced to node 1.
    let probe = common::login(&n2.base, "device-shared-probe").await;
    let mut introduced = false;
    for _ in 0..100 {
        let peers = probe
            .announce_peer("arena", "1.0.0", &have(7100, 0))
            .await
            .unwrap()
            .peers;
        if peers.iter().any(|p| p.have_chunks == p.total_chunks) {
            introduced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(introduced, "node 2 never saw the seed announced to node 1");
    probe.leave_swarm("arena", "1.0.0").await.unwrap();
    // A swarm fetch through node 2 (whose origin is slow) gets most of the build from the seed.
    let second = work.path().join("second");
    let p = SwarmPeer::spawn(&n2.base, &public, &second, &[]);
    let r = p.next_json(Duration::from_secs(120));
    assert_eq!(tree(&second), tree(&build));
    let from_peers = r["swarm"]["peer_bytes"].as_u64().unwrap();
    assert!(
        from_peers > size / 2,
        "the seed found through the other node served {from_peers} of {size} bytes: {r}"
    );
    drop(seed);
    n1.node.shutdown().await;
    n2.node.shutdown().await;
}

/// The origin killed (SIGKILL) while chunks stream into its pack store: after a restart it
/// holds whole chunks only, the publish run again uploads only what it lacks, and the build
/// installs byte-identical.
#[test]
fn a_node_killed_mid_publish_keeps_what_it_stored_and_the_publish_completes_after_a_restart() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("node");
    let (key, public) = keygen(work.path());
    let build = work.path().join("build");
    make_build(&build, 64);
    let (node, base) = serve_process(&data, &["--server-key", KEY]);
    let publisher = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(["content", "publish", build.to_str().unwrap()])
        .args(["--game", "arena", "--version", "1.0.0", "--key", &key])
        .args(["--node", &base, "--server-key", KEY])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut publisher = KillOnDrop(Some(publisher));
    let index = data.join("content/arena/packs/index");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&index).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < deadline, "no chunk was ever stored");
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(node); // SIGKILL
    let status = publisher.0.take().unwrap().wait().unwrap();
    assert!(!status.success(), "the publish fails with its node gone");
    assert!(
        !data.join("content/arena/versions/1.0.0").exists(),
        "the node was killed before the publish finished"
    );
    let (node, base) = serve_process(&data, &["--server-key", KEY]);
    let r = publish(&base, &key, &build, "1.0.0");
    let (all, uploaded) = (
        r["chunks"].as_u64().unwrap(),
        r["uploaded_chunks"].as_u64().unwrap(),
    );
    assert!(
        uploaded < all,
        "chunks stored before the kill are kept: {r}"
    );
    let to = work.path().join("install");
    ok_json(fetch(&base, &public, &to, "1.0.0", &[]));
    assert_eq!(tree(&to), tree(&build));
    drop(node);
}

/// Waits (up to a minute) until the node at `base` has kept `chunks` pulled chunks.
async fn wait_until_kept(base: &str, chunks: u64) {
    let kept = format!("volley_content_chunks_pulled_total {chunks}\n");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = volley_client::Api::raw_get(&format!("{base}/metrics"))
            .await
            .unwrap();
        if metrics.contains(&kept) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the node never kept the build: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A cluster where the build was published to one node only: another node, told of it with
/// `content_peers`, pulls the manifest when asked for it and then every chunk in the background
/// (and any chunk asked for on demand), checks and keeps them, and serves the version on its
/// own once the first node is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_pulls_a_version_it_lacks_from_another_node_of_its_cluster() {
    let n1 = start_node(|c| c.server_key = Some(KEY.into())).await;
    let base1 = n1.base.clone();
    let n2 = start_node(|c| {
        c.server_key = Some(KEY.into());
        c.content_peers = vec![base1];
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path());
    let build = work.path().join("build");
    make_build(&build, 2);
    let chunks = publish(&n1.base, &key, &build, "1.0.0")["chunks"]
        .as_u64()
        .unwrap();
    // An unknown version is still unknown (and no pull loops: node 1 has no peers anyway).
    let out = fetch(&n2.base, &public, &work.path().join("none"), "9.9.9", &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));
    // Asked for the manifest, node 2 pulls it and then, in the background, every chunk.
    let manifest = volley_client::content::Origin::new(&n2.base, "arena")
        .manifest("1.0.0")
        .await
        .unwrap();
    assert_eq!(
        manifest,
        volley_client::content::Origin::new(&n1.base, "arena")
            .manifest("1.0.0")
            .await
            .unwrap()
    );
    wait_until_kept(&n2.base, chunks).await;
    let (served1, _) = served(&n1.base).await;
    assert_eq!(served1, chunks, "node 2 pulled each chunk once from node 1");
    // A player fetching through node 2 now needs nothing from node 1.
    let first = work.path().join("first");
    let r = ok_json(fetch(&n2.base, &public, &first, "1.0.0", &[]));
    assert_eq!(tree(&first), tree(&build));
    assert_eq!(r["downloaded_chunks"].as_u64().unwrap(), chunks);
    assert_eq!(
        served(&n1.base).await.0,
        chunks,
        "node 1 served nothing more"
    );
    // A pull request is answered locally only: node 1 does not ask anyone.
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/content/arena/versions/2.0.0", n2.base))
        .header("x-volley-content-pull", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // A third node whose first peer answers everything with garbage: refused, and the next
    // peer asked.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fake_base = format!("http://{}", fake.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for s in fake.incoming() {
            let Ok(mut s) = s else { break };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    let base1 = n1.base.clone();
    let n3 = start_node(|c| c.content_peers = vec![fake_base, base1]).await;
    // A chunk asked for on its own (no manifest, so no prefetch) is pulled on demand.
    let exe = std::fs::read(build.join("bin/game")).unwrap();
    let cut = volley_content::cdc::Params::new(65_536).unwrap().cut(&exe);
    let hash = *blake3::hash(&exe[..cut]).as_bytes();
    let got = volley_content::install::ChunkSource::fetch(
        &volley_client::content::Origin::new(&n3.base, "arena"),
        volley_content::ChunkRef {
            hash,
            size: cut as u32,
        },
    )
    .await
    .unwrap();
    assert_eq!(got, &exe[..cut]);
    let third = work.path().join("third");
    ok_json(fetch(&n3.base, &public, &third, "1.0.0", &[]));
    assert_eq!(tree(&third), tree(&build));
    n3.node.shutdown().await;
    // Node 1 gone: node 2 serves the version from what it kept.
    n1.node.shutdown().await;
    let second = work.path().join("second");
    ok_json(fetch(&n2.base, &public, &second, "1.0.0", &[]));
    assert_eq!(tree(&second), tree(&build));
    n2.node.shutdown().await;
}

/// Two nodes sharing one NATS: a version published to node 1 is announced on the bus, and
/// node 2 (with node 1 as its content peer) pulls the manifest and every chunk without anyone
/// asking it for the version; malformed announcements are ignored; once node 1 is gone node 2
/// serves the build on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_version_is_announced_and_pulled_by_the_rest_of_the_cluster() {
    let nats = volley_store::testing::nats_url();
    let n1 = {
        let nats = nats.clone();
        start_node(move |c| {
            c.server_key = Some(KEY.into());
            c.nats = Some(nats);
        })
        .await
    };
    let n2 = {
        let (nats, base1) = (nats.clone(), n1.base.clone());
        start_node(move |c| {
            c.server_key = Some(KEY.into());
            c.nats = Some(nats);
            c.content_peers = vec![base1];
        })
        .await
    };
    // Garbage on the subject first: not JSON, bad names, a version nobody has.
    let bus = volley_store::Bus::nats(&nats, "default").await.unwrap();
    for junk in [
        &b"\x00\xff not json"[..],
        br#"{"game":"../etc","version":"1"}"#,
        br#"{"game":"arena","version":"no such/version"}"#,
        br#"{"game":"arena","version":"0.0.0-nobody-has-this"}"#,
    ] {
        bus.publish("content.published", junk.to_vec())
            .await
            .unwrap();
    }
    bus.flush().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path());
    let build = work.path().join("build");
    make_build(&build, 2);
    // A version of this run's own, so that nodes of other test runs on this NATS ignore it.
    let version = format!("3.{}.{}", std::process::id(), rand::random::<u16>());
    let chunks = publish(&n1.base, &key, &build, &version)["chunks"]
        .as_u64()
        .unwrap();
    // Nobody asks node 2 for anything but its metrics.
    wait_until_kept(&n2.base, chunks).await;
    assert_eq!(served(&n1.base).await.0, chunks, "each chunk pulled once");
    let to = work.path().join("install");
    let r = ok_json(fetch(&n2.base, &public, &to, &version, &[]));
    assert_eq!(tree(&to), tree(&build));
    assert_eq!(r["downloaded_chunks"].as_u64().unwrap(), chunks);
    assert_eq!(
        served(&n1.base).await.0,
        chunks,
        "node 2 served the fetch from its own store"
    );
    // Withdrawn on node 1: node 2 drops its copy of the manifest too.
    volley_client::content::delete_version(&n1.base, KEY, "arena", &version)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let held = volley_client::content::versions(&n2.base, "arena")
            .await
            .unwrap();
        if !held.iter().any(|v| v.version == version) {
            break;
        }
        assert!(Instant::now() < deadline, "node 2 still lists {version}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone = fetch(&n2.base, &public, &work.path().join("again"), &version, &[]);
    assert!(!gone.status.success());
    n1.node.shutdown().await;
    n2.node.shutdown().await;
}

/// Version 1 (`make_build` of `mib`) and version 2, the same but for `replaced`, which
/// gets other random bytes of the same size.
fn two_versions(work: &Path, mib: usize, replaced: &str, seed: u64) -> (PathBuf, PathBuf) {
    let v1 = work.join("v1");
    make_build(&v1, mib);
    let v2 = work.join("v2");
    copy_tree(&v1, &v2);
    std::fs::write(
        v2.join("data/levels").join(replaced),
        random(mib << 20, seed),
    )
    .unwrap();
    (v1, v2)
}

/// The chunk hashes of `bytes` cut at the default 64 KiB average.
fn chunk_hashes(bytes: &[u8]) -> Vec<[u8; 32]> {
    let params = volley_content::cdc::Params::new(65_536).unwrap();
    let mut at = 0;
    volley_content::cdc::chunk_lengths(bytes, &params)
        .into_iter()
        .map(|len| {
            at += len;
            *blake3::hash(&bytes[at - len..at]).as_bytes()
        })
        .collect()
}

/// Bytes of the node's pack files for `arena`.
fn pack_bytes_on_disk(data_dir: &Path) -> u64 {
    std::fs::read_dir(data_dir.join("content/arena/packs"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// `volley content delete` of an `arena` version.
fn delete(base: &str, version: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "content",
        "delete",
        "--node",
        base,
        "--game",
        "arena",
        "--version",
        version,
        "--server-key",
        KEY,
    ];
    args.extend_from_slice(extra);
    volley(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_version_is_gone_and_collecting_frees_only_its_own_chunks() {
    let n = start_node(|c| {
        c.server_key = Some(KEY.into());
        c.content_grace_secs = 0;
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path());
    // Version 2 shares everything but one.pak, which it replaces by other bytes.
    let (v1, v2) = two_versions(work.path(), 2, "one.pak", 77);
    publish(&n.base, &key, &v1, "1.0.0");
    publish(&n.base, &key, &v2, "2.0.0");
    let listed = ok_json(volley(&[
        "content", "versions", "--node", &n.base, "--game", "arena", "--json",
    ]));
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["1.0.0", "2.0.0"]);
    let build_bytes = (3 << 20) + (4 << 20) + 21;
    assert_eq!(listed[0]["bytes"], build_bytes);
    assert_eq!(listed[0]["files"], 5);

    // Only the server key withdraws or collects; bad names and unknown versions are refused.
    let http = reqwest::Client::new();
    let url = format!("{}/v1/content/arena/versions/1.0.0", n.base);
    assert_eq!(http.delete(&url).send().await.unwrap().status(), 401);
    let wrong = http
        .delete(&url)
        .header("x-volley-server-key", "not-the-key-at-all-0000")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let collect_url = format!("{}/v1/content/arena/collect", n.base);
    assert_eq!(http.post(&collect_url).send().await.unwrap().status(), 401);
    let bad = http
        .delete(format!("{}/v1/content/arena/versions/..", n.base))
        .header("x-volley-server-key", KEY)
        .send()
        .await
        .unwrap();
    assert!(bad.status().is_client_error());
    let out = delete(&n.base, "9.9.9", &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no version 9.9.9"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Withdraw 1.0.0: it is no longer listed or fetched.
    let out = delete(&n.base, "1.0.0", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = ok_json(volley(&[
        "content", "versions", "--node", &n.base, "--game", "arena", "--json",
    ]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["version"], "2.0.0");
    let gone = fetch(&n.base, &public, &work.path().join("old"), "1.0.0", &[]);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("no version 1.0.0"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );

    // Collect: exactly the chunks of 1.0.0's own one.pak go, and their space with them.
    let one_pak = std::fs::read(v1.join("data/levels/one.pak")).unwrap();
    let own = chunk_hashes(&one_pak);
    let disk_before = pack_bytes_on_disk(n.data_dir());
    let r = ok_json(volley(&[
        "content",
        "collect",
        "--node",
        &n.base,
        "--game",
        "arena",
        "--server-key",
        KEY,
        "--json",
    ]));
    assert_eq!(r["versions"], 1);
    assert_eq!(r["dropped"], own.len() as u64, "{r}");
    assert_eq!(r["dropped_bytes"], one_pak.len() as u64, "{r}");
    assert_eq!(r["held"], 0);
    assert_eq!(r["corrupt"], 0);
    assert_eq!(r["disk_bytes_before"], disk_before);
    let disk_after = pack_bytes_on_disk(n.data_dir());
    assert_eq!(r["disk_bytes_after"], disk_after);
    assert!(
        disk_after + (one_pak.len() as u64) * 9 / 10 <= disk_before,
        "freed {} of {}",
        disk_before - disk_after,
        one_pak.len()
    );
    for h in &own {
        let resp = http
            .get(format!(
                "{}/v1/content/arena/chunks/{}",
                n.base,
                volley_content::chunk_name(h)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
    }
    // 2.0.0 installs byte-identical from what is left.
    let install = work.path().join("install");
    ok_json(fetch(&n.base, &public, &install, "2.0.0", &[]));
    assert_eq!(tree(&install), tree(&v2));
    assert_eq!(
        metrics(&n.base, ["volley_content_chunks_collected_total"]).await,
        [own.len() as u64],
        "the metric counts them"
    );

    // `delete --collect` withdraws and collects in one go: 1.0.0's bytes published again as
    // 3.0.0 bring back exactly its own chunks, and they go again.
    publish(&n.base, &key, &v1, "3.0.0");
    let out = delete(&n.base, "3.0.0", &["--collect"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains(&format!(" {} dropped", own.len())), "{said}");
    assert_eq!(pack_bytes_on_disk(n.data_dir()), disk_after, "{said}");

    // A stored manifest that no longer parses: the collection refuses and drops nothing.
    std::fs::write(
        n.data_dir().join("content/arena/versions/3.0.0"),
        b"not a manifest",
    )
    .unwrap();
    let resp = http
        .post(&collect_url)
        .header("x-volley-server-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "bad_stored_manifest", "{body}");
    assert_eq!(pack_bytes_on_disk(n.data_dir()), disk_after);
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_uploaded_for_a_publish_not_yet_finished_survive_a_collection() {
    use volley_content::batch::push;
    // The default grace period.
    let n = start_node(|c| c.server_key = Some(KEY.into())).await;
    let data: Vec<Vec<u8>> = (0..3).map(|i| random(40_000, 500 + i)).collect();
    let mut body = Vec::new();
    let mut names = Vec::new();
    for d in &data {
        let h = *blake3::hash(d).as_bytes();
        push(&mut body, &h, d);
        names.push(volley_content::chunk_name(&h));
    }
    let (status, _) = post_batch(&n.base, "arena", Some(KEY), body).await;
    assert_eq!(status, 200);
    // No manifest references them yet.
    let r = volley_client::content::collect(&n.base, KEY, "arena")
        .await
        .unwrap();
    assert_eq!((r.versions, r.held, r.dropped), (0, 3, 0), "{r:?}");
    assert!(origin_missing(&n.base, &names).await.is_empty());
    // The command says why it freed nothing.
    let out = volley(&[
        "content",
        "collect",
        "--node",
        &n.base,
        "--game",
        "arena",
        "--server-key",
        KEY,
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("nothing freed") && said.contains("grace period"),
        "{said}"
    );
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_collecting_on_a_schedule_frees_a_withdrawn_version_once_its_grace_is_over() {
    let n = start_node(|c| {
        c.server_key = Some(KEY.into());
        c.content_grace_secs = 5;
        c.content_collect_every_secs = 1;
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path());
    let (v1, v2) = two_versions(work.path(), 1, "two.pak", 99);
    // Publishes run while collections do: nothing they upload goes missing.
    publish(&n.base, &key, &v1, "1.0.0");
    publish(&n.base, &key, &v2, "2.0.0");
    let collected =
        || async { metrics(&n.base, ["volley_content_chunks_collected_total"]).await[0] };
    volley_client::content::delete_version(&n.base, KEY, "arena", "1.0.0")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while collected().await == 0 {
        assert!(
            Instant::now() < deadline,
            "no scheduled collection dropped anything"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Exactly 1.0.0's own two.pak went.
    let two = std::fs::read(v1.join("data/levels/two.pak")).unwrap();
    let own = chunk_hashes(&two).len() as u64;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(collected().await, own);
    let install = work.path().join("install");
    ok_json(fetch(&n.base, &public, &install, "2.0.0", &[]));
    assert_eq!(tree(&install), tree(&v2));
    n.node.shutdown().await;
}
