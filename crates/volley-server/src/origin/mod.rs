//! The node as the origin of game builds: chunks named by their BLAKE3 hash in each game's
//! pack store, and signed manifests, under `<data_dir>/content/<game>/`. [`Origin`] owns all
//! of it: the open stores, the upload pace, the pulls from the cluster's other nodes and the
//! swarm tracker. The HTTP routes (`crate::http::content`) are thin over its methods.
//!
//! - [`chunks`]: store, read and list chunks;
//! - [`versions`]: manifests (publish, read, withdraw, list) and collections;
//! - [`cluster`]: pulling what this node lacks from its peers, version announcements;
//! - [`tracker`]: which players hold which build.

mod chunks;
pub(crate) mod cluster;
pub(crate) mod tracker;
pub(crate) mod versions;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use volley_content::manifest::check_name;
use volley_content::pack::PackStore;
use volley_content::ContentError;

use crate::metrics::Metrics;

pub(crate) use cluster::{Pulled, KEEP_QUEUE};

/// Largest chunk accepted: four times the largest average an upload may use.
pub(crate) const CHUNK_BODY_MAX: usize = 4 * volley_content::cdc::AVG_UPLOAD_MAX as usize;
/// Largest chunk list accepted (10,000 names and then some).
pub(crate) const LIST_BODY_MAX: usize = 1 << 20;
/// Largest manifest accepted.
pub(crate) const MANIFEST_BODY_MAX: usize = 64 << 20;

/// Why an origin call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OriginError {
    /// The request is wrong (a bad name, a corrupt chunk, a mismatched manifest).
    #[error("{message}")]
    BadRequest {
        /// Stable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No such chunk or version.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with what is stored (a manifest whose chunks are missing).
    #[error("{message}")]
    Conflict {
        /// Stable code.
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// A dependency is unavailable or full; try again later.
    #[error("{message}")]
    Unavailable {
        /// Stable code.
        code: &'static str,
        /// What is unavailable.
        message: String,
        /// When to try again, ms.
        ms: u64,
    },
    /// The caller is over a per-player limit; it may try again after `ms`.
    #[error("{message}")]
    TooMany {
        /// Stable code.
        code: &'static str,
        /// Which limit.
        message: String,
        /// When to try again, ms.
        ms: u64,
    },
    /// The disk failed (logged; the client sees a request id).
    #[error("content storage: {0}")]
    Storage(String),
    /// A stored manifest no longer parses, so what it references is unknown.
    #[error("the stored manifest of version {version} does not parse: {cause}")]
    BadStoredManifest {
        /// The version.
        version: String,
        /// The parser's reason.
        cause: String,
    },
}

impl OriginError {
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        OriginError::BadRequest {
            code: "bad_request",
            message: message.into(),
        }
    }
}

impl From<ContentError> for OriginError {
    fn from(e: ContentError) -> Self {
        match e {
            ContentError::Io { .. } => OriginError::Storage(e.to_string()),
            ContentError::Corrupt(_) => OriginError::BadRequest {
                code: "hash_mismatch",
                message: e.to_string(),
            },
            other => OriginError::BadRequest {
                code: "bad_content",
                message: other.to_string(),
            },
        }
    }
}

/// How the origin is set up.
#[derive(Debug, Clone)]
pub(crate) struct OriginConfig {
    /// `<data_dir>/content`.
    pub(crate) root: PathBuf,
    /// How long chunks uploaded but not yet referenced survive a collection.
    pub(crate) grace: Duration,
    /// Other nodes to pull from.
    pub(crate) peers: Vec<String>,
    /// Upload cap for chunks served, bytes per second (0: none).
    pub(crate) upload_bytes_per_s: u64,
}

/// The content origin of one node.
pub(crate) struct Origin {
    cfg: OriginConfig,
    metrics: Arc<Metrics>,
    bus: volley_store::Bus,
    /// Who holds which build.
    pub(crate) tracker: tracker::SwarmTracker,
    /// The upload cap for chunks.
    pace: volley_content::pace::Pace,
    /// Each game's chunk store, opened on first use (opening reads its index).
    stores: Mutex<HashMap<String, Arc<PackStore>>>,
    /// Pulls content from the other nodes of the cluster.
    http: reqwest::Client,
    /// Pulled chunks on their way into the store (written behind, in batches).
    keep: tokio::sync::mpsc::Sender<Pulled>,
    /// Versions (`game/version`) whose chunks this node is pulling in the background.
    prefetching: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Origin {
    /// The origin, and the task that stores pulled chunks behind the requests that pulled them
    /// (it ends with the origin).
    pub(crate) fn start(
        cfg: OriginConfig,
        tracker: tracker::SwarmTracker,
        bus: volley_store::Bus,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Origin>, String> {
        let (keep, kept) = tokio::sync::mpsc::channel(KEEP_QUEUE);
        let origin = Arc::new(Origin {
            pace: volley_content::pace::Pace::new(cfg.upload_bytes_per_s),
            cfg,
            metrics,
            bus,
            tracker,
            stores: Mutex::new(HashMap::new()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| format!("http client: {e}"))?,
            keep,
            prefetching: Mutex::new(HashSet::new()),
        });
        tokio::spawn(cluster::keep_pulled(Arc::downgrade(&origin), kept));
        Ok(origin)
    }

    /// Whether other nodes are configured to pull from.
    pub(crate) fn has_peers(&self) -> bool {
        !self.cfg.peers.is_empty()
    }

    fn game_dir(&self, game: &str) -> Result<PathBuf, OriginError> {
        check_name("game", game)?;
        Ok(self.cfg.root.join(game))
    }

    /// The game's chunk store: `<game>/packs` (and `<game>/chunks`, the one-file-per-chunk
    /// layout of earlier nodes, still read). `create` for uploads; otherwise `None` for a game
    /// with no content, so requests for unknown games create nothing. Opening reads the index
    /// and trims what a crash left half written; stores are opened under one lock so that
    /// never races a writer.
    pub(crate) async fn store(
        self: &Arc<Self>,
        game: &str,
        create: bool,
    ) -> Result<Option<Arc<PackStore>>, OriginError> {
        let dir = self.game_dir(game)?;
        let me = self.clone();
        let game = game.to_owned();
        blocking(move || {
            let mut stores = me.stores.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = stores.get(&game) {
                return Ok(Some(s.clone()));
            }
            let opened = PackStore::open_with(
                &dir.join("packs"),
                &dir.join("chunks"),
                create,
                volley_content::pack::PACK_BYTES,
                me.cfg.grace,
            )?;
            Ok(opened.map(|s| {
                let s = Arc::new(s);
                stores.insert(game, s.clone());
                s
            }))
        })
        .await
    }

    /// The game's chunk store for writing (created if missing).
    pub(crate) async fn writable_store(
        self: &Arc<Self>,
        game: &str,
    ) -> Result<Arc<PackStore>, OriginError> {
        self.store(game, true)
            .await?
            .ok_or_else(|| OriginError::bad("no such game"))
    }
}

/// Runs blocking disk work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OriginError> + Send + 'static,
) -> Result<T, OriginError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| OriginError::Storage(format!("worker failed: {e}")))?
}
