//! `volley serve`: the flags and environment variables a node takes, layered over its TOML
//! file, and the process's logging.
//!
//! Every key of [`NodeConfig`] has one name: the TOML key `a_b`, the flag `--a-b` and the
//! environment variable `VOLLEY_A_B` (a test holds the three together). The matchmaker tables
//! `pools` and `pool_modes` are TOML only.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use volley_server::{NodeConfig, RetryPolicy};

/// Log output, for every command.
#[derive(clap::Args, Debug)]
pub(crate) struct Logging {
    /// Log format on stderr: `text` (colour only on a terminal) or `json` (one object per line).
    #[arg(long, env = "VOLLEY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// What to log: a level (`error`, `warn`, `info`, `debug`, `trace`) or per-target directives
    /// (`info,volley::access=off` silences the access log). Default: `info` for serve, `warn`
    /// for the other commands.
    #[arg(long, env = "VOLLEY_LOG", global = true)]
    log_level: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

impl Logging {
    /// Starts logging to stderr at `default_level` unless told otherwise.
    pub(crate) fn init(&self, default_level: &str) {
        let level = self.log_level.as_deref().unwrap_or(default_level);
        let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|e| {
            eprintln!(
                "volley: --log-level {level:?} is not understood ({e}); logging at {default_level}"
            );
            tracing_subscriber::EnvFilter::new(default_level)
        });
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal());
        let started = match self.log_format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
        };
        if let Err(e) = started {
            eprintln!("volley: logging not started: {e}");
        }
    }
}

/// `volley serve`.
#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
    /// TOML config file; missing keys keep their defaults, unknown keys are errors.
    #[arg(long, env = "VOLLEY_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration (every key, described, secrets redacted) and exit.
    #[arg(long)]
    pub(crate) print_config: bool,
    /// Data directory (key and certificate are created there on first run).
    #[arg(long, env = "VOLLEY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP API listen address.
    #[arg(long, env = "VOLLEY_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// QUIC listen address.
    #[arg(long, env = "VOLLEY_QUIC_ADDR")]
    quic_addr: Option<SocketAddr>,
    /// Address players connect to (tickets are bound to it); defaults to the QUIC address.
    #[arg(long, env = "VOLLEY_PUBLIC_ADDR")]
    public_addr: Option<SocketAddr>,
    /// Connect ticket lifetime in milliseconds.
    #[arg(long, env = "VOLLEY_TICKET_LIFETIME_MS")]
    ticket_lifetime_ms: Option<u64>,
    /// When to answer new connections with a QUIC Retry: always | under-load.
    #[arg(long, env = "VOLLEY_RETRY", value_parser = parse_retry)]
    retry: Option<RetryPolicy>,
    /// Most players at once.
    #[arg(long, env = "VOLLEY_PLAYERS_MAX")]
    players_max: Option<usize>,
    /// Most rooms at once.
    #[arg(long, env = "VOLLEY_ROOMS_MAX")]
    rooms_max: Option<usize>,
    /// Percent of rooms_max only the matchmaker may use (0-90, default 10).
    #[arg(long, env = "VOLLEY_ROOMS_RESERVED_FOR_MATCHES_PERCENT")]
    rooms_reserved_for_matches_percent: Option<u8>,
    /// Most open rooms one player may have created.
    #[arg(long, env = "VOLLEY_ROOMS_PER_PLAYER_MAX")]
    rooms_per_player_max: Option<usize>,
    /// Most content uploads read at once (default 8).
    #[arg(long, env = "VOLLEY_CONTENT_UPLOADS_MAX")]
    content_uploads_max: Option<usize>,
    /// Most content swarms one player may be in at once.
    #[arg(long, env = "VOLLEY_SWARMS_PER_PLAYER_MAX")]
    swarms_per_player_max: Option<usize>,
    /// New connections allowed per source IP per second.
    #[arg(long, env = "VOLLEY_CONNECTS_PER_IP_PER_S")]
    connects_per_ip_per_s: Option<f64>,
    /// Burst of new connections allowed per source IP.
    #[arg(long, env = "VOLLEY_CONNECTS_PER_IP_BURST")]
    connects_per_ip_burst: Option<f64>,
    /// Handshakes in progress beyond which new connections are refused.
    #[arg(long, env = "VOLLEY_HANDSHAKES_MAX")]
    handshakes_max: Option<usize>,
    /// Players per room when the creator does not say.
    #[arg(long, env = "VOLLEY_ROOM_PLAYERS_DEFAULT")]
    room_players_default: Option<u32>,
    /// Most players a room may be created for.
    #[arg(long, env = "VOLLEY_ROOM_PLAYERS_MAX")]
    room_players_max: Option<u32>,
    /// With --retry under-load: handshakes in progress before Retry starts.
    #[arg(long, env = "VOLLEY_HANDSHAKES_BEFORE_RETRY")]
    handshakes_before_retry: Option<usize>,
    /// Milliseconds a connected player has to present its ticket.
    #[arg(long, env = "VOLLEY_HELLO_TIMEOUT_MS")]
    hello_timeout_ms: Option<u64>,
    /// Control frames queued towards one player before its senders are slowed down.
    #[arg(long, env = "VOLLEY_PLAYER_QUEUE_FRAMES_MAX")]
    player_queue_frames_max: Option<usize>,
    /// Database URL: sqlite://path or postgres://user@host:port/db (default: SQLite in the data
    /// directory).
    #[arg(long, env = "VOLLEY_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// NATS URL for events between nodes (default: in-process).
    #[arg(long, env = "VOLLEY_NATS", hide_env_values = true)]
    nats: Option<String>,
    /// Redis URL for leaderboard ranks and the content tracker, shared by all nodes (default:
    /// in memory per node).
    #[arg(long, env = "VOLLEY_REDIS", hide_env_values = true)]
    redis: Option<String>,
    /// Root of the Redis keys (default "volley:"); the cluster name follows it.
    #[arg(long, env = "VOLLEY_REDIS_PREFIX")]
    redis_prefix: Option<String>,
    /// This deployment's name (a-z, 0-9, -; default "default"): NATS subjects and Redis keys
    /// are under it, so deployments sharing those servers stay apart.
    #[arg(long, env = "VOLLEY_CLUSTER")]
    cluster: Option<String>,
    /// How long start-up waits for PostgreSQL, Redis and NATS each, seconds (default 5).
    #[arg(long, env = "VOLLEY_CONNECT_TIMEOUT_SECS")]
    connect_timeout_secs: Option<u64>,
    /// Upload cap for serving content chunks, KiB/s (0: none).
    #[arg(long, env = "VOLLEY_CONTENT_MAX_KIB_PER_S")]
    content_max_kib_per_s: Option<u64>,
    /// Other nodes of the cluster to pull builds from when this one lacks them (repeatable, or
    /// comma-separated).
    #[arg(
        long = "content-peers",
        alias = "content-peer",
        env = "VOLLEY_CONTENT_PEERS",
        value_delimiter = ','
    )]
    content_peers: Vec<String>,
    /// How long a collection keeps a chunk uploaded (or reported present to a publisher) but
    /// not yet referenced by a version, seconds (default 3600).
    #[arg(long, env = "VOLLEY_CONTENT_GRACE_SECS")]
    content_grace_secs: Option<u64>,
    /// Collect every game's unreferenced chunks this often, seconds (default 0: only when
    /// asked, `volley content collect`).
    #[arg(long, env = "VOLLEY_CONTENT_COLLECT_EVERY_SECS")]
    content_collect_every_secs: Option<u64>,
    /// This node's name in the cluster.
    #[arg(long, env = "VOLLEY_NODE_ID")]
    node_id: Option<String>,
    /// Key the game's own servers present for server-to-server calls (at least 16
    /// characters). Prefer VOLLEY_SERVER_KEY: a flag shows in the process list.
    #[arg(long, env = "VOLLEY_SERVER_KEY", hide_env_values = true)]
    server_key: Option<String>,
    /// Token /metrics on the API port asks for (at least 16 characters; without it only
    /// loopback clients get /metrics there). Prefer VOLLEY_METRICS_TOKEN.
    #[arg(long, env = "VOLLEY_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// A listener of its own for /metrics and /healthz (no token; keep it private).
    #[arg(long, env = "VOLLEY_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Serve the API over HTTPS with the node's own certificate (or --tls-cert/--tls-key).
    #[arg(long, env = "VOLLEY_HTTPS")]
    https: bool,
    /// PEM certificate chain for HTTPS.
    #[arg(long, env = "VOLLEY_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, env = "VOLLEY_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Seconds a request head may take, and a kept-alive connection may idle (default 10).
    #[arg(long, env = "VOLLEY_HTTP_HEADER_TIMEOUT_SECS")]
    http_header_timeout_secs: Option<u64>,
    /// Seconds a request body may send nothing before it is refused (default 10).
    #[arg(long, env = "VOLLEY_HTTP_BODY_STALL_SECS")]
    http_body_stall_secs: Option<u64>,
    /// Most HTTP connections from one address (default 128).
    #[arg(long, env = "VOLLEY_HTTP_CONNECTIONS_PER_ADDRESS_MAX")]
    http_connections_per_address_max: Option<usize>,
    /// Most HTTP connections in all (default 16384).
    #[arg(long, env = "VOLLEY_HTTP_CONNECTIONS_MAX")]
    http_connections_max: Option<usize>,
    /// Most event WebSockets one player may hold open (default 8).
    #[arg(long, env = "VOLLEY_SOCKETS_PER_PLAYER_MAX")]
    sockets_per_player_max: Option<usize>,
    /// Most event WebSockets from one address (default 256).
    #[arg(long, env = "VOLLEY_SOCKETS_PER_ADDRESS_MAX")]
    sockets_per_address_max: Option<usize>,
    /// Session token lifetime in milliseconds.
    #[arg(long, env = "VOLLEY_SESSION_TTL_MS")]
    session_ttl_ms: Option<u64>,
    /// Argon2id memory cost in KiB.
    #[arg(long, env = "VOLLEY_ARGON2_M_KIB")]
    argon2_m_kib: Option<u32>,
    /// Argon2id passes.
    #[arg(long, env = "VOLLEY_ARGON2_T")]
    argon2_t: Option<u32>,
    /// Login/register/refresh calls allowed per client address per second.
    #[arg(long, env = "VOLLEY_LOGINS_PER_IP_PER_S")]
    logins_per_ip_per_s: Option<f64>,
    /// Burst of the above.
    #[arg(long, env = "VOLLEY_LOGINS_PER_IP_BURST")]
    logins_per_ip_burst: Option<f64>,
    /// Chat messages per second per sender.
    #[arg(long, env = "VOLLEY_CHAT_PER_S")]
    chat_per_s: Option<f64>,
    /// Burst of the above.
    #[arg(long, env = "VOLLEY_CHAT_BURST")]
    chat_burst: Option<f64>,
}

fn parse_retry(s: &str) -> Result<RetryPolicy, String> {
    match s {
        "always" => Ok(RetryPolicy::Always),
        "under-load" => Ok(RetryPolicy::UnderLoad),
        _ => Err("expected 'always' or 'under-load'".into()),
    }
}

impl ServeArgs {
    /// The file (or defaults), then the environment and flags over it; validated.
    pub(crate) fn to_config(&self) -> anyhow::Result<NodeConfig> {
        let mut c = match &self.config {
            Some(p) => NodeConfig::from_toml_file(p)?,
            None => NodeConfig::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f.clone() { c.$f = v; } )* };
        }
        macro_rules! set_optional {
            ($($f:ident),*) => { $( if self.$f.is_some() { c.$f = self.$f.clone(); } )* };
        }
        set!(
            data_dir,
            http_addr,
            quic_addr,
            ticket_lifetime_ms,
            retry,
            players_max,
            rooms_max,
            rooms_reserved_for_matches_percent,
            rooms_per_player_max,
            swarms_per_player_max,
            content_uploads_max,
            connects_per_ip_per_s,
            connects_per_ip_burst,
            handshakes_max,
            room_players_default,
            room_players_max,
            handshakes_before_retry,
            hello_timeout_ms,
            player_queue_frames_max,
            redis_prefix,
            cluster,
            connect_timeout_secs,
            content_max_kib_per_s,
            content_grace_secs,
            content_collect_every_secs,
            node_id,
            session_ttl_ms,
            argon2_m_kib,
            argon2_t,
            logins_per_ip_per_s,
            logins_per_ip_burst,
            chat_per_s,
            chat_burst,
            http_header_timeout_secs,
            http_body_stall_secs,
            http_connections_per_address_max,
            http_connections_max,
            sockets_per_player_max,
            sockets_per_address_max
        );
        set_optional!(
            public_addr,
            database,
            nats,
            redis,
            server_key,
            metrics_token,
            metrics_addr,
            tls_cert,
            tls_key
        );
        if self.https {
            c.https = true;
        }
        if !self.content_peers.is_empty() {
            c.content_peers = self.content_peers.clone();
        }
        c.validate()?;
        Ok(c)
    }
}
