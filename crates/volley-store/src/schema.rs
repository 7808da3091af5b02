//! The schema and its migrations, for both backends.
//!
//! Each migration is written once; three tokens stand for what the backends spell differently:
//! `{ID}` (an auto-increment 64-bit primary key), `{REAL}` (a double) and `{BLOB}` (bytes).
//! Applied migrations are recorded in `volley_migrations`; on PostgreSQL a transaction-scoped
//! advisory lock keeps two nodes starting at once from migrating twice.

use sqlx::Row;

use crate::{Backend, Db, StoreError};

/// One schema step.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Strictly increasing version.
    pub version: i64,
    /// What it adds.
    pub name: &'static str,
    /// Statements separated by `;`, with the `{ID}`/`{REAL}`/`{BLOB}` tokens.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "players: accounts, sessions, social, chat, presence, matchmaking",
        sql: r#"
CREATE TABLE accounts (
    id {ID},
    display_name TEXT NOT NULL,
    status BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE TABLE auth_ids (
    kind TEXT NOT NULL,
    external_id TEXT NOT NULL,
    account_id BIGINT NOT NULL REFERENCES accounts(id),
    secret TEXT,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (kind, external_id)
);
CREATE INDEX auth_ids_account ON auth_ids (account_id);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts(id),
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sessions_account ON sessions (account_id);
CREATE TABLE refresh_families (
    family TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts(id),
    revoked BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL
);
CREATE INDEX refresh_families_account ON refresh_families (account_id);
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family TEXT NOT NULL REFERENCES refresh_families(family),
    account_id BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    used_ms BIGINT,
    successor TEXT
);
CREATE TABLE login_limits (
    key TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    window_start_ms BIGINT NOT NULL,
    locked_until_ms BIGINT NOT NULL
);
CREATE TABLE friends (
    account_id BIGINT NOT NULL REFERENCES accounts(id),
    other_id BIGINT NOT NULL REFERENCES accounts(id),
    state BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (account_id, other_id)
);
CREATE TABLE lobbies (
    id {ID},
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    owner_id BIGINT NOT NULL,
    max_members BIGINT NOT NULL,
    member_count BIGINT NOT NULL DEFAULT 0,
    open BIGINT NOT NULL,
    attrs TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX lobbies_kind ON lobbies (kind, open);
CREATE TABLE lobby_members (
    lobby_id BIGINT NOT NULL REFERENCES lobbies(id),
    account_id BIGINT NOT NULL REFERENCES accounts(id),
    role BIGINT NOT NULL,
    joined_ms BIGINT NOT NULL,
    PRIMARY KEY (lobby_id, account_id)
);
CREATE INDEX lobby_members_account ON lobby_members (account_id);
CREATE TABLE lobby_invites (
    lobby_id BIGINT NOT NULL REFERENCES lobbies(id),
    account_id BIGINT NOT NULL REFERENCES accounts(id),
    inviter_id BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (lobby_id, account_id)
);
CREATE TABLE chat_messages (
    id {ID},
    channel TEXT NOT NULL,
    sender_id BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX chat_messages_channel ON chat_messages (channel, id);
CREATE TABLE presence (
    account_id BIGINT NOT NULL,
    node_id TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (account_id, node_id)
);
CREATE TABLE ratings (
    account_id BIGINT NOT NULL REFERENCES accounts(id),
    pool TEXT NOT NULL,
    rating {REAL} NOT NULL,
    deviation {REAL} NOT NULL,
    volatility {REAL} NOT NULL,
    games BIGINT NOT NULL,
    PRIMARY KEY (account_id, pool)
);
CREATE TABLE mm_tickets (
    id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    owner_id BIGINT NOT NULL,
    pool TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    state BIGINT NOT NULL,
    match_id TEXT
);
CREATE INDEX mm_tickets_state ON mm_tickets (node_id, state);
CREATE TABLE matches (
    id TEXT PRIMARY KEY,
    room_id BIGINT NOT NULL,
    node_id TEXT NOT NULL,
    pool TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    result_ms BIGINT
);
CREATE TABLE match_members (
    match_id TEXT NOT NULL REFERENCES matches(id),
    account_id BIGINT NOT NULL,
    PRIMARY KEY (match_id, account_id)
);
CREATE INDEX match_members_account ON match_members (account_id)
"#,
    },
    Migration {
        version: 2,
        name: "economy: double-entry ledger, unique items, bonus codes, held transfers",
        sql: r#"
CREATE TABLE ledger_accounts (
    id {ID},
    owner_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    balance BIGINT NOT NULL,
    min_balance BIGINT NOT NULL,
    max_balance BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX ledger_accounts_key ON ledger_accounts (owner_id, name, currency);
CREATE TABLE ledger_transfers (
    seq {ID},
    id TEXT NOT NULL UNIQUE,
    chain TEXT NOT NULL,
    debit_account BIGINT NOT NULL REFERENCES ledger_accounts(id),
    credit_account BIGINT NOT NULL REFERENCES ledger_accounts(id),
    currency TEXT NOT NULL,
    amount BIGINT NOT NULL,
    kind TEXT NOT NULL,
    item_id TEXT,
    created_ms BIGINT NOT NULL
);
CREATE INDEX ledger_transfers_debit ON ledger_transfers (debit_account, seq);
CREATE INDEX ledger_transfers_credit ON ledger_transfers (credit_account, seq);
CREATE TABLE items (
    id TEXT PRIMARY KEY,
    item_type TEXT NOT NULL,
    owner_id BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX items_owner ON items (owner_id);
CREATE TABLE bonus_codes (
    code TEXT PRIMARY KEY,
    currency TEXT NOT NULL,
    amount BIGINT NOT NULL,
    global_limit BIGINT NOT NULL,
    per_player_limit BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    min_account_age_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE fraud_events (
    id {ID},
    account_id BIGINT NOT NULL,
    address TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX fraud_events_account ON fraud_events (account_id, created_ms);
CREATE INDEX fraud_events_address ON fraud_events (address, created_ms);
CREATE TABLE held_transfers (
    id TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    body TEXT NOT NULL,
    score {REAL} NOT NULL,
    reasons TEXT NOT NULL,
    state BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
)
"#,
    },
    Migration {
        version: 3,
        name: "leaderboards with seasons and archives",
        sql: r#"
CREATE TABLE leaderboards (
    id TEXT PRIMARY KEY,
    descending BIGINT NOT NULL,
    operator TEXT NOT NULL,
    reset_cron TEXT NOT NULL,
    season BIGINT NOT NULL,
    next_reset_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE leaderboard_archive (
    board TEXT NOT NULL REFERENCES leaderboards(id),
    season BIGINT NOT NULL,
    rank BIGINT NOT NULL,
    member TEXT NOT NULL,
    score BIGINT NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (board, season, rank)
);
CREATE TABLE leaderboard_records (
    board TEXT NOT NULL REFERENCES leaderboards(id),
    member TEXT NOT NULL,
    score BIGINT NOT NULL,
    metadata TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (board, member)
)
"#,
    },
    Migration {
        version: 4,
        name: "store catalogue",
        sql: r#"
CREATE TABLE store_items (
    sku TEXT PRIMARY KEY,
    price_currency TEXT NOT NULL,
    price BIGINT NOT NULL,
    gives_currency TEXT NOT NULL,
    gives_amount BIGINT NOT NULL,
    item_type TEXT,
    active BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
)
"#,
    },
    Migration {
        version: 5,
        name: "leaderboard change log, fraud events by device",
        sql: r#"
ALTER TABLE leaderboards ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE fraud_events ADD COLUMN device TEXT NOT NULL DEFAULT '';
CREATE INDEX fraud_events_device ON fraud_events (device, created_ms);
CREATE TABLE leaderboard_changes (
    board TEXT NOT NULL REFERENCES leaderboards(id),
    version BIGINT NOT NULL,
    member TEXT NOT NULL,
    PRIMARY KEY (board, version)
)
"#,
    },
    Migration {
        version: 6,
        name: "sessions belong to their login's refresh family; logins remember their device",
        sql: r#"
ALTER TABLE sessions ADD COLUMN family TEXT NOT NULL DEFAULT '';
CREATE INDEX sessions_family ON sessions (family);
ALTER TABLE refresh_families ADD COLUMN device TEXT NOT NULL DEFAULT '';
ALTER TABLE refresh_families ADD COLUMN last_used_ms BIGINT NOT NULL DEFAULT 0
"#,
    },
];

fn render(sql: &str, backend: Backend) -> String {
    let (id, real, blob) = match backend {
        Backend::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "REAL", "BLOB"),
        Backend::Postgres => (
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            "DOUBLE PRECISION",
            "BYTEA",
        ),
    };
    sql.replace("{ID}", id)
        .replace("{REAL}", real)
        .replace("{BLOB}", blob)
}

/// Applies every migration not yet applied, each in its own transaction.
pub async fn migrate(db: &Db) -> Result<(), StoreError> {
    let w = db.writer();
    // Under the same lock as the migrations: two PostgreSQL nodes racing on CREATE TABLE IF
    // NOT EXISTS collide on the catalog (a unique violation, or "type already exists").
    let mut tx = w.begin().await?;
    if db.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(7301455)")
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS volley_migrations (version BIGINT PRIMARY KEY, \
         name TEXT NOT NULL, applied_ms BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    for m in MIGRATIONS {
        let mut tx = w.begin().await?;
        if db.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7301455)")
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query("SELECT version FROM volley_migrations WHERE version = $1")
            .bind(m.version)
            .fetch_optional(&mut *tx)
            .await?;
        if done.is_some() {
            tx.commit().await?;
            continue;
        }
        for stmt in render(m.sql, db.backend()).split(';') {
            if stmt.trim().is_empty() {
                continue;
            }
            sqlx::query(stmt).execute(&mut *tx).await.map_err(|e| {
                StoreError::Migration(format!("migration {} ({}): {e}", m.version, m.name))
            })?;
        }
        sqlx::query(
            "INSERT INTO volley_migrations (version, name, applied_ms) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(crate::unix_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(
            version = m.version,
            name = m.name,
            backend = db.backend().name(),
            "migrated"
        );
    }
    Ok(())
}

/// The highest applied migration.
pub async fn version(db: &Db) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM volley_migrations")
        .fetch_one(db.reader())
        .await?;
    Ok(row.try_get::<i64, _>("v")?)
}

/// Whether a sqlx error is a unique-constraint violation.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.is_unique_violation(),
        _ => false,
    }
}
