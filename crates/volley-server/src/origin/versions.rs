//! Versions: signed manifests stored under `<game>/versions/<version>` (published, read,
//! withdrawn, listed), and collections that drop the chunks no stored version references.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use volley_content::manifest::{check_name, Manifest};
use volley_content::ContentError;
use volley_proto::api::{ContentCollected, ContentVersion, ContentVersions};

use super::{blocking, Origin, OriginError};

fn no_version(game: &str, version: &str) -> OriginError {
    OriginError::NotFound(format!("no version {version} of {game}"))
}

impl Origin {
    /// Stores a signed manifest of `game` `version` whose chunks are all here, and tells the
    /// cluster.
    pub(crate) async fn put_manifest(
        self: &Arc<Self>,
        game: &str,
        version: &str,
        body: bytes::Bytes,
    ) -> Result<(), OriginError> {
        check_name("version", version)?;
        let dir = self.game_dir(game)?;
        let s = self.writable_store(game).await?;
        let (g, v) = (game.to_owned(), version.to_owned());
        blocking(move || {
            let (m, _) = Manifest::open(&body, None)?;
            if m.game != g || m.version != v {
                return Err(OriginError::bad(format!(
                    "the manifest is for {} {}, not {g} {v}",
                    m.game, m.version
                )));
            }
            let absent = s.hold(m.chunks().map(|c| &c.hash)).len();
            if absent > 0 {
                return Err(OriginError::Conflict {
                    code: "missing_chunks",
                    message: format!("{absent} chunks of this version are not uploaded yet"),
                });
            }
            write_version(&dir, &v, &body)
        })
        .await?;
        let (me, game, version) = (self.clone(), game.to_owned(), version.to_owned());
        tokio::spawn(async move { me.tell_cluster(&game, &version, false).await });
        Ok(())
    }

    /// The signed manifest of `game` `version`, pulled from the cluster when not here.
    pub(crate) async fn get_manifest(
        self: &Arc<Self>,
        game: &str,
        version: &str,
        is_pull: bool,
    ) -> Result<Vec<u8>, OriginError> {
        check_name("version", version)?;
        let path = self.game_dir(game)?.join("versions").join(version);
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(data),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self
                .pull_version(is_pull, game, version)
                .await?
                .ok_or_else(|| no_version(game, version)),
            Err(e) => Err(ContentError::io(&path, e).into()),
        }
    }

    /// Whether `game` `version` is published: held here, or pulled now from the cluster.
    /// Reads no manifest when the version is here.
    pub(crate) async fn has_version(
        self: &Arc<Self>,
        game: &str,
        version: &str,
    ) -> Result<bool, OriginError> {
        check_name("version", version)?;
        let path = self.game_dir(game)?.join("versions").join(version);
        match tokio::fs::try_exists(&path).await {
            Ok(true) => Ok(true),
            Ok(false) => Ok(self.pull_version(false, game, version).await?.is_some()),
            Err(e) => Err(ContentError::io(&path, e).into()),
        }
    }

    /// Withdraws a version: its manifest is removed here, and on the cluster's other nodes
    /// that follow announcements; its chunks stay until a collection finds no other version
    /// referencing them. Players already holding it keep it.
    pub(crate) async fn delete_version(
        &self,
        game: &str,
        version: &str,
    ) -> Result<(), OriginError> {
        check_name("version", version)?;
        let dir = self.game_dir(game)?;
        if !remove_version(&dir, version).await? {
            return Err(no_version(game, version));
        }
        tracing::info!(game, version, "version withdrawn");
        self.tell_cluster(game, version, true).await;
        Ok(())
    }

    /// The versions this node holds, oldest first.
    pub(crate) async fn list_versions(&self, game: &str) -> Result<ContentVersions, OriginError> {
        let dir = self.game_dir(game)?;
        let versions = blocking(move || {
            let mut out = Vec::new();
            stored_versions(&dir, |version, stored_ms, m| {
                let distinct: HashSet<&[u8; 32]> = m.chunks().map(|c| &c.hash).collect();
                out.push(ContentVersion {
                    version,
                    files: m.files.len() as u64,
                    bytes: m.total_size(),
                    chunks: distinct.len() as u64,
                    stored_ms,
                });
            })?;
            Ok(out)
        })
        .await?;
        Ok(ContentVersions { versions })
    }

    /// Drops the chunks of `game` no stored version references (see `PackStore::collect`).
    /// Refuses, dropping nothing, when a stored manifest cannot be read.
    pub(crate) async fn collect(
        self: &Arc<Self>,
        game: &str,
    ) -> Result<ContentCollected, OriginError> {
        let dir = self.game_dir(game)?;
        let Some(s) = self.store(game, false).await? else {
            return Ok(ContentCollected::default());
        };
        let r = blocking(move || {
            let mut referenced = HashSet::new();
            let n = stored_versions(&dir, |_, _, m| {
                referenced.extend(m.chunks().map(|c| c.hash));
            })? as u64;
            let mut c = s.collect(&referenced)?;
            c.versions = n;
            Ok(c)
        })
        .await?;
        tracing::info!(
            game,
            dropped = r.dropped,
            dropped_bytes = r.dropped_bytes,
            freed = r.disk_bytes_before.saturating_sub(r.disk_bytes_after),
            "content collected"
        );
        self.metrics
            .content_chunks_collected
            .fetch_add(r.dropped, Ordering::Relaxed);
        Ok(r)
    }

    /// Every game with a chunk store here.
    fn games(&self) -> Vec<String> {
        match std::fs::read_dir(&self.cfg.root) {
            Ok(entries) => entries
                .flatten()
                .filter(|e| e.path().join("packs").is_dir() || e.path().join("chunks").is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|g| check_name("game", g).is_ok())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the content directory");
                Vec::new()
            }
        }
    }
}

/// Runs while the node does: every interval, collects every game that has content here, one
/// after another. A failure is logged and tried again at the next interval.
pub(crate) async fn collect_periodically(origin: Weak<Origin>, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(origin) = origin.upgrade() else {
            return;
        };
        for game in origin.games() {
            if let Err(e) = origin.collect(&game).await {
                tracing::warn!(game, error = %e, "scheduled content collection failed");
            }
        }
    }
}

/// Stores a version's signed manifest atomically (temporary file, flush, rename).
pub(crate) fn write_version(dir: &Path, version: &str, body: &[u8]) -> Result<(), OriginError> {
    let versions = dir.join("versions");
    std::fs::create_dir_all(&versions).map_err(|e| ContentError::io(&versions, e))?;
    let path = versions.join(version);
    let tmp = versions.join(format!(".{version}.tmp-{}", rand::random::<u64>()));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        if let Err(rm) = std::fs::remove_file(&tmp) {
            if rm.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %tmp.display(), error = %rm, "could not remove a partial manifest");
            }
        }
        ContentError::io(&path, e).into()
    })
}

/// Removes a version's manifest; whether there was one.
pub(crate) async fn remove_version(dir: &Path, version: &str) -> Result<bool, OriginError> {
    let versions = dir.join("versions");
    let path = versions.join(version);
    match tokio::fs::remove_file(&path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(ContentError::io(&path, e).into()),
    }
    let synced = match tokio::fs::File::open(&versions).await {
        Ok(d) => d.sync_all().await,
        Err(e) => Err(e),
    };
    synced.map_err(|e| ContentError::io(&versions, e))?;
    Ok(true)
}

/// Calls `each` with every version stored under `dir` (name, when stored, its parsed
/// manifest), oldest first, one manifest in memory at a time; returns how many. A manifest
/// that no longer parses is an error: what it references is unknown.
fn stored_versions(
    dir: &Path,
    mut each: impl FnMut(String, u64, Manifest),
) -> Result<usize, OriginError> {
    let versions = dir.join("versions");
    let entries = match std::fs::read_dir(&versions) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(ContentError::io(&versions, e).into()),
    };
    let mut found = Vec::new();
    for e in entries {
        let e = e.map_err(|e| ContentError::io(&versions, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || check_name("version", &name).is_err() {
            continue; // a manifest being written, or not ours
        }
        let stored_ms = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        found.push((stored_ms, name, e.path()));
    }
    found.sort();
    let mut n = 0;
    for (stored_ms, name, path) in found {
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            // Withdrawn meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ContentError::io(&path, e).into()),
        };
        let (m, _) = Manifest::open(&bytes, None).map_err(|e| OriginError::BadStoredManifest {
            version: name.clone(),
            cause: e.to_string(),
        })?;
        each(name, stored_ms, m);
        n += 1;
    }
    Ok(n)
}
