//! What can stop a node from starting, and the external services it opens on the way: each
//! reached within `connect_timeout_secs` or named in the error.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{self, NodeConfig};
use crate::store;

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The data directory could not be prepared.
    #[error("data directory {path}: {message}")]
    DataDir {
        /// The file or directory.
        path: std::path::PathBuf,
        /// What failed.
        message: String,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] volley_net::tls::TlsError),
    /// The HTTPS certificate or key could not be used.
    #[error("HTTPS: {0}")]
    Https(String),
    /// The database or the bus could not be opened.
    #[error(transparent)]
    Store(#[from] volley_store::StoreError),
    /// The platform services could not start.
    #[error("platform: {0}")]
    Platform(String),
    /// An external service did not answer or refused.
    #[error("cannot use {service} at {url}: {reason}")]
    Service {
        /// PostgreSQL, Redis or NATS.
        service: &'static str,
        /// Its URL, password redacted.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

impl From<store::DataDirError> for StartError {
    fn from(e: store::DataDirError) -> Self {
        StartError::DataDir {
            path: e.path,
            message: e.message,
        }
    }
}

/// Waits for an external service at most `connect_timeout_secs`, so a wrong URL or a closed
/// port fails the start at once with the service named, instead of hanging.
async fn reach<T, E: std::fmt::Display>(
    cfg: &NodeConfig,
    service: &'static str,
    url: &str,
    connect: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, StartError> {
    let limit = Duration::from_secs(cfg.connect_timeout_secs);
    let failed = |reason: String| StartError::Service {
        service,
        url: config::redact_url(url),
        reason,
    };
    match tokio::time::timeout(limit, connect).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(_) => Err(failed(format!(
            "no answer within {} s (connect_timeout_secs)",
            limit.as_secs()
        ))),
    }
}

/// Opens the database (SQLite in the data directory unless `database` names one), the bus
/// (NATS when `nats` is set) and the platform services over them.
pub(crate) async fn open_platform(
    cfg: &NodeConfig,
) -> Result<volley_platform::Platform, StartError> {
    let db = match &cfg.database {
        Some(url) => {
            let service = if url.starts_with("postgres") {
                "PostgreSQL"
            } else {
                "the database"
            };
            reach(cfg, service, url, volley_store::Db::open(url)).await?
        }
        None => {
            // The database holds every account: created (and kept) readable by the node only,
            // with its journal files, which SQLite creates with the database's mode.
            let path = cfg.data_dir.join("volley.db");
            if !path.exists() {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(store::SECRET_MODE)
                    .open(&path)
                    .map_err(|e| StartError::DataDir {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
            }
            for file in ["volley.db", "volley.db-wal", "volley.db-shm"] {
                store::restrict(&cfg.data_dir.join(file), store::SECRET_MODE)?;
            }
            volley_store::Db::open_sqlite(&path).await?
        }
    };
    let bus = match &cfg.nats {
        Some(url) => reach(cfg, "NATS", url, volley_store::Bus::nats(url, &cfg.cluster)).await?,
        None => volley_store::Bus::local(),
    };
    let pcfg = volley_platform::PlatformConfig {
        node_id: cfg.node_id.clone(),
        server_key: cfg.server_key.clone().unwrap_or_default(),
        session_ttl_ms: cfg.session_ttl_ms as i64,
        argon2_m_kib: cfg.argon2_m_kib,
        argon2_t: cfg.argon2_t,
        login_per_ip_per_s: cfg.logins_per_ip_per_s,
        login_per_ip_burst: cfg.logins_per_ip_burst,
        chat_per_s: cfg.chat_per_s,
        chat_burst: cfg.chat_burst,
        matchmaker: volley_match::MatchmakerConfig {
            pools: cfg.pools.clone(),
            default_pool: Some(volley_match::PoolConfig::new(2, 2)),
            ..volley_match::MatchmakerConfig::default()
        },
        ..volley_platform::PlatformConfig::default()
    };
    let platform = volley_platform::Platform::new(db, bus, pcfg)
        .map_err(|e| StartError::Platform(e.to_string()))?;
    platform
        .clear_node_presence()
        .await
        .map_err(|e| StartError::Platform(e.to_string()))?;
    match platform.hash_clear_device_ids().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(n, "device ids stored in the clear are now stored hashed"),
        Err(e) => return Err(StartError::Platform(e.to_string())),
    }
    if let Some(url) = &cfg.redis {
        reach(
            cfg,
            "Redis",
            url,
            platform.use_redis(url, &cfg.redis_keys()),
        )
        .await?;
    }
    Ok(platform)
}
