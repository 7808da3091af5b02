//! Accounts and sessions.
//!
//! An account has one or more login methods (`auth_ids`): a device id, an email with an Argon2id
//! password hash, or a custom id vouched for by the studio's backend. A login returns an opaque
//! session token and a refresh token; the database keeps only their SHA-256. Every request's
//! token is checked against the account's status, so a ban or a deletion ends every session at
//! once.
//!
//! Refresh tokens rotate: each use returns a new one in the same *family*. A token used a second
//! time after the grace period means it was copied; the whole family is revoked, and the thief
//! and the victim both have to log in again (RFC 6819 §5.2.2.3, OAuth 2.1 refresh rotation).
//!
//! Login limits: a token bucket per client address (memory), and a failure count per account in
//! the database (so every node sees it): after `login_free_failures` failures the account is
//! locked for 1 s, 2 s, 4 s ... (capped at the window), and after `login_max_failures` in a
//! window until the window ends. A locked account's password is not even checked.

use std::net::IpAddr;

use sqlx::Row;
use volley_proto::api::{AccountInfo, Session};

use crate::{now_ms, random_token, token_hash, AccountId, ErrorKind, Platform, PlatformError};

/// Account status values in the database.
const ACTIVE: i64 = 0;
const BANNED: i64 = 1;
const DELETED: i64 = 2;

/// A login method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// A device id the game generated.
    Device,
    /// Email and password.
    Email,
    /// The studio's own id, server-to-server only.
    Custom,
}

impl AuthKind {
    /// Its name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::Device => "device",
            AuthKind::Email => "email",
            AuthKind::Custom => "custom",
        }
    }

    /// Parses an API name.
    pub fn parse(s: &str) -> Result<AuthKind, PlatformError> {
        match s {
            "device" => Ok(AuthKind::Device),
            "email" => Ok(AuthKind::Email),
            "custom" => Ok(AuthKind::Custom),
            _ => Err(PlatformError::bad(
                "bad_kind",
                "kind must be device, email or custom",
            )),
        }
    }
}

/// How a device id is stored: `sha256:` and the hash of the id (never the id itself).
pub fn stored_device_id(id: &str) -> String {
    format!(
        "{DEVICE_HASH_PREFIX}{}",
        token_hash(&format!("volley-device:{id}"))
    )
}

const DEVICE_HASH_PREFIX: &str = "sha256:";

fn printable(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Checks and normalizes an external id of `kind`.
pub fn normalize_id(kind: AuthKind, id: &str) -> Result<String, PlatformError> {
    match kind {
        AuthKind::Device => {
            if !printable(id, 8, 128) {
                return Err(PlatformError::bad(
                    "bad_device_id",
                    "device_id must be 8-128 printable ASCII characters",
                ));
            }
            // A device id is the whole credential of its account: only its hash is stored.
            Ok(stored_device_id(id))
        }
        AuthKind::Custom => {
            if !printable(id, 1, 128) {
                return Err(PlatformError::bad(
                    "bad_custom_id",
                    "custom_id must be 1-128 printable ASCII characters",
                ));
            }
            Ok(id.to_owned())
        }
        AuthKind::Email => {
            let e = id.trim().to_ascii_lowercase();
            let ok = printable(&e, 3, 254)
                && e.split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'));
            if !ok {
                return Err(PlatformError::bad("bad_email", "not an email address"));
            }
            Ok(e)
        }
    }
}

fn check_password(p: &str) -> Result<(), PlatformError> {
    let n = p.chars().count();
    if !(8..=128).contains(&n) {
        return Err(PlatformError::bad(
            "bad_password",
            "password must be 8-128 characters",
        ));
    }
    Ok(())
}

fn check_display_name(n: &str) -> Result<(), PlatformError> {
    let len = n.chars().count();
    if !(1..=32).contains(&len) || n.chars().any(char::is_control) {
        return Err(PlatformError::bad(
            "bad_display_name",
            "display_name must be 1-32 characters, no control characters",
        ));
    }
    Ok(())
}

fn invalid_credentials() -> PlatformError {
    PlatformError::unauthorized("invalid_credentials", "wrong email or password")
}

fn too_many(retry_ms: u64) -> PlatformError {
    PlatformError::new(
        ErrorKind::TooMany(retry_ms),
        "too_many_attempts",
        format!("too many attempts; retry in {} ms", retry_ms),
    )
}

impl Platform {
    /// Per-address limit on login and register calls.
    pub fn check_login_rate(&self, ip: IpAddr) -> Result<(), PlatformError> {
        self.inner.ip_limits.take(&ip, now_ms()).map_err(too_many)
    }

    async fn find_auth(
        &self,
        kind: AuthKind,
        id: &str,
    ) -> Result<Option<(AccountId, Option<String>, i64)>, PlatformError> {
        let row = sqlx::query(
            "SELECT a.account_id, a.secret, c.status FROM auth_ids a \
             JOIN accounts c ON c.id = a.account_id WHERE a.kind = $1 AND a.external_id = $2",
        )
        .bind(kind.as_str())
        .bind(id)
        .fetch_optional(self.db().reader())
        .await?;
        match row {
            None => Ok(None),
            Some(r) => Ok(Some((
                r.try_get::<i64, _>("account_id")? as AccountId,
                r.try_get::<Option<String>, _>("secret")?,
                r.try_get::<i64, _>("status")?,
            ))),
        }
    }

    /// Creates an account with one login method; `Conflict` if the method is taken.
    async fn create_account(
        &self,
        kind: AuthKind,
        id: &str,
        secret: Option<String>,
        display_name: Option<String>,
    ) -> Result<AccountId, PlatformError> {
        let now = now_ms();
        let mut tx = self.db().writer().begin().await?;
        let row = sqlx::query(
            "INSERT INTO accounts (display_name, status, created_ms, updated_ms) \
             VALUES ($1, 0, $2, $2) RETURNING id",
        )
        .bind(display_name.clone().unwrap_or_default())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let account: i64 = row.try_get("id")?;
        if display_name.is_none() {
            sqlx::query("UPDATE accounts SET display_name = $1 WHERE id = $2")
                .bind(format!("player-{account}"))
                .bind(account)
                .execute(&mut *tx)
                .await?;
        }
        let ins = sqlx::query(
            "INSERT INTO auth_ids (kind, external_id, account_id, secret, created_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(kind.as_str())
        .bind(id)
        .bind(account)
        .bind(secret)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match ins {
            Ok(_) => {}
            Err(e) if volley_store::schema::is_unique_violation(&e) => {
                return Err(PlatformError::conflict(
                    "already_exists",
                    format!("that {} is already registered", kind.as_str()),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(account as AccountId)
    }

    fn status_error(status: i64) -> Option<PlatformError> {
        match status {
            ACTIVE => None,
            BANNED => Some(PlatformError::forbidden("this account is banned")),
            _ => Some(PlatformError::unauthorized(
                "account_deleted",
                "this account was deleted",
            )),
        }
    }

    /// Device login: signs up on first use.
    pub async fn login_device(&self, device_id: &str) -> Result<Session, PlatformError> {
        let id = normalize_id(AuthKind::Device, device_id)?;
        if self.find_auth(AuthKind::Device, &id).await?.is_none() {
            // Stored in the clear by an older node: hash it in place, keeping its account.
            self.adopt_clear_device_id(device_id, &id).await?;
        }
        self.login_or_create(AuthKind::Device, &id).await
    }

    async fn adopt_clear_device_id(&self, clear: &str, hashed: &str) -> Result<(), PlatformError> {
        if clear.starts_with(DEVICE_HASH_PREFIX) {
            return Ok(());
        }
        sqlx::query(
            "UPDATE auth_ids SET external_id = $1 WHERE kind = 'device' AND external_id = $2",
        )
        .bind(hashed)
        .bind(clear)
        .execute(self.db().writer())
        .await?;
        Ok(())
    }

    /// Replaces every device id still stored in the clear (by an older node) with its hash;
    /// how many were replaced. Run at start; safe to run on several nodes at once.
    pub async fn hash_clear_device_ids(&self) -> Result<u64, PlatformError> {
        let mut done = 0;
        loop {
            let clear: Vec<String> = sqlx::query_scalar(
                "SELECT external_id FROM auth_ids WHERE kind = 'device' \
                 AND external_id NOT LIKE 'sha256:%' LIMIT 500",
            )
            .fetch_all(self.db().reader())
            .await?;
            if clear.is_empty() {
                return Ok(done);
            }
            for id in &clear {
                self.adopt_clear_device_id(id, &stored_device_id(id))
                    .await?;
                done += 1;
            }
        }
    }

    /// Custom-id login for a studio's backend (the caller checked the server key).
    pub async fn login_custom(&self, custom_id: &str) -> Result<Session, PlatformError> {
        let id = normalize_id(AuthKind::Custom, custom_id)?;
        self.login_or_create(AuthKind::Custom, &id).await
    }

    async fn login_or_create(&self, kind: AuthKind, id: &str) -> Result<Session, PlatformError> {
        let (account, created) = match self.find_auth(kind, id).await? {
            Some((account, _, status)) => {
                if let Some(e) = Self::status_error(status) {
                    return Err(e);
                }
                (account, false)
            }
            None => match self.create_account(kind, id, None, None).await {
                Ok(a) => (a, true),
                // Two first logins raced: the other one created it.
                Err(e) if e.kind == ErrorKind::Conflict => match self.find_auth(kind, id).await? {
                    Some((a, _, ACTIVE)) => (a, false),
                    _ => return Err(e),
                },
                Err(e) => return Err(e),
            },
        };
        self.issue(account, created, None).await
    }

    /// Registers an email account.
    pub async fn register_email(
        &self,
        email: &str,
        password: &str,
        display_name: Option<&str>,
    ) -> Result<Session, PlatformError> {
        let email = normalize_id(AuthKind::Email, email)?;
        check_password(password)?;
        if let Some(n) = display_name {
            check_display_name(n)?;
        }
        if self.find_auth(AuthKind::Email, &email).await?.is_some() {
            return Err(PlatformError::conflict(
                "already_exists",
                "that email is already registered",
            ));
        }
        let hash = self.hasher().hash(password.to_owned()).await?;
        let account = self
            .create_account(
                AuthKind::Email,
                &email,
                Some(hash),
                display_name.map(str::to_owned),
            )
            .await?;
        self.issue(account, true, None).await
    }

    /// Email login, with the per-account failure limits.
    pub async fn login_email(&self, email: &str, password: &str) -> Result<Session, PlatformError> {
        let email = normalize_id(AuthKind::Email, email).map_err(|_| invalid_credentials())?;
        if password.chars().count() > 128 {
            return Err(invalid_credentials());
        }
        let key = format!("email:{email}");
        let now = now_ms();
        self.check_lock(&key, now).await?;
        let found = self.find_auth(AuthKind::Email, &email).await?;
        let (account, phc, status) = match found {
            Some((a, Some(phc), s)) => (Some(a), phc, s),
            _ => (None, self.dummy_hash(), ACTIVE),
        };
        let ok = self.hasher().verify(password.to_owned(), phc).await?;
        match account {
            Some(account) if ok => {
                self.clear_failures(&key).await?;
                if let Some(e) = Self::status_error(status) {
                    return Err(e);
                }
                self.issue(account, false, None).await
            }
            _ => {
                self.record_failure(&key, now).await?;
                Err(invalid_credentials())
            }
        }
    }

    fn dummy_hash(&self) -> String {
        static DUMMY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        DUMMY
            .get_or_init(|| self.hasher().hash_blocking("volley-no-such-account"))
            .clone()
            .unwrap_or_default()
    }

    async fn check_lock(&self, key: &str, now: i64) -> Result<(), PlatformError> {
        let row = sqlx::query("SELECT locked_until_ms FROM login_limits WHERE key = $1")
            .bind(key)
            .fetch_optional(self.db().reader())
            .await?;
        if let Some(r) = row {
            let until: i64 = r.try_get("locked_until_ms")?;
            if until > now {
                return Err(too_many((until - now) as u64));
            }
        }
        Ok(())
    }

    async fn record_failure(&self, key: &str, now: i64) -> Result<(), PlatformError> {
        let cfg = self.config();
        let mut tx = self.db().writer().begin().await?;
        let row = sqlx::query("SELECT failures, window_start_ms FROM login_limits WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        let (mut failures, mut start) = match row {
            Some(r) => (
                r.try_get::<i64, _>("failures")?,
                r.try_get::<i64, _>("window_start_ms")?,
            ),
            None => (0, now),
        };
        if now - start >= cfg.login_window_ms {
            failures = 0;
            start = now;
        }
        failures += 1;
        let locked_until = if failures >= cfg.login_max_failures {
            start + cfg.login_window_ms
        } else if failures > cfg.login_free_failures {
            let exp = (failures - cfg.login_free_failures - 1).min(20) as u32;
            now + (1000i64 << exp).min(cfg.login_window_ms)
        } else {
            0
        };
        sqlx::query(
            "INSERT INTO login_limits (key, failures, window_start_ms, locked_until_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO UPDATE SET failures = $2, \
             window_start_ms = $3, locked_until_ms = $4",
        )
        .bind(key)
        .bind(failures)
        .bind(start)
        .bind(locked_until)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn clear_failures(&self, key: &str) -> Result<(), PlatformError> {
        sqlx::query("DELETE FROM login_limits WHERE key = $1")
            .bind(key)
            .execute(self.db().writer())
            .await?;
        Ok(())
    }

    /// Issues a session and a refresh token (a new family unless `family` is given).
    async fn issue(
        &self,
        account: AccountId,
        created: bool,
        family: Option<String>,
    ) -> Result<Session, PlatformError> {
        let cfg = self.config();
        let now = now_ms();
        let token = random_token();
        let refresh = random_token();
        let mut tx = self.db().writer().begin().await?;
        let family = match family {
            Some(f) => {
                // One live session per login: the one this refresh replaces ends now, so a
                // refresh token used twice within the grace period never yields two.
                sqlx::query("UPDATE sessions SET revoked = 1 WHERE family = $1")
                    .bind(&f)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE refresh_families SET last_used_ms = $1 WHERE family = $2")
                    .bind(now)
                    .bind(&f)
                    .execute(&mut *tx)
                    .await?;
                f
            }
            None => {
                let f = crate::random_id();
                sqlx::query(
                    "INSERT INTO refresh_families (family, account_id, revoked, created_ms) \
                     VALUES ($1, $2, 0, $3)",
                )
                .bind(&f)
                .bind(account as i64)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                f
            }
        };
        sqlx::query(
            "INSERT INTO sessions (token_hash, account_id, created_ms, expires_ms, revoked, family) \
             VALUES ($1, $2, $3, $4, 0, $5)",
        )
        .bind(token_hash(&token))
        .bind(account as i64)
        .bind(now)
        .bind(now + cfg.session_ttl_ms)
        .bind(&family)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family, account_id, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash(&refresh))
        .bind(&family)
        .bind(account as i64)
        .bind(now)
        .bind(now + cfg.refresh_ttl_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Session {
            token,
            player_id: account,
            created,
            refresh_token: refresh,
            expires_in_ms: cfg.session_ttl_ms.max(0) as u64,
        })
    }

    /// Exchanges a refresh token for a new session and refresh token. Reuse after the grace
    /// period revokes the whole family.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Session, PlatformError> {
        let bad = || PlatformError::unauthorized("invalid_refresh", "refresh token is not valid");
        if !printable(refresh_token, 1, 128) {
            return Err(bad());
        }
        let now = now_ms();
        let hash = token_hash(refresh_token);
        let mut tx = self.db().writer().begin().await?;
        let row = sqlx::query(
            "SELECT t.family, t.account_id, t.expires_ms, t.used_ms, f.revoked, a.status \
             FROM refresh_tokens t JOIN refresh_families f ON f.family = t.family \
             JOIN accounts a ON a.id = t.account_id WHERE t.token_hash = $1",
        )
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Err(bad()) };
        let family: String = row.try_get("family")?;
        let account = row.try_get::<i64, _>("account_id")? as AccountId;
        let expires: i64 = row.try_get("expires_ms")?;
        let used: Option<i64> = row.try_get("used_ms")?;
        let revoked: i64 = row.try_get("revoked")?;
        let status: i64 = row.try_get("status")?;
        if revoked != 0 || expires <= now {
            return Err(bad());
        }
        if let Some(e) = Self::status_error(status) {
            return Err(e);
        }
        if let Some(used) = used {
            if now - used > self.config().refresh_grace_ms {
                // Replay: someone holds a copy. End every session of the family's account that
                // this family could have produced by revoking the family and its sessions.
                sqlx::query("UPDATE refresh_families SET revoked = 1 WHERE family = $1")
                    .bind(&family)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE sessions SET revoked = 1 WHERE account_id = $1")
                    .bind(account as i64)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                tracing::warn!(account, "refresh token reused; family revoked");
                return Err(PlatformError::unauthorized(
                    "refresh_reused",
                    "refresh token was already used; all sessions of this login were ended",
                ));
            }
        } else {
            sqlx::query("UPDATE refresh_tokens SET used_ms = $1 WHERE token_hash = $2")
                .bind(now)
                .bind(&hash)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.issue(account, false, Some(family)).await
    }

    /// The account behind a session token, if the token is live and the account active.
    pub async fn authenticate(&self, token: &str) -> Result<AccountId, PlatformError> {
        let bad =
            || PlatformError::unauthorized("unauthorized", "missing or invalid session token");
        if !printable(token, 1, 128) {
            return Err(bad());
        }
        let row = sqlx::query(
            "SELECT s.account_id, s.expires_ms, s.revoked, a.status FROM sessions s \
             JOIN accounts a ON a.id = s.account_id WHERE s.token_hash = $1",
        )
        .bind(token_hash(token))
        .fetch_optional(self.db().reader())
        .await?;
        let Some(row) = row else { return Err(bad()) };
        let expires: i64 = row.try_get("expires_ms")?;
        let revoked: i64 = row.try_get("revoked")?;
        let status: i64 = row.try_get("status")?;
        if revoked != 0 || expires <= now_ms() {
            return Err(bad());
        }
        if let Some(e) = Self::status_error(status) {
            return Err(e);
        }
        Ok(row.try_get::<i64, _>("account_id")? as AccountId)
    }

    /// The live logins of `account` (refresh families not revoked nor expired), newest first,
    /// at most 100; `current` marks the one `token` belongs to.
    pub async fn logins(
        &self,
        account: AccountId,
        token: &str,
    ) -> Result<Vec<volley_proto::api::LoginInfo>, PlatformError> {
        let now = now_ms();
        let current: Option<String> =
            sqlx::query_scalar("SELECT family FROM sessions WHERE token_hash = $1")
                .bind(token_hash(token))
                .fetch_optional(self.db().reader())
                .await?;
        let rows = sqlx::query(
            "SELECT f.family, f.created_ms, f.last_used_ms FROM refresh_families f \
             WHERE f.account_id = $1 AND f.revoked = 0 AND EXISTS (SELECT 1 FROM refresh_tokens t \
             WHERE t.family = f.family AND t.expires_ms > $2) \
             ORDER BY f.created_ms DESC, f.family LIMIT 100",
        )
        .bind(account as i64)
        .bind(now)
        .fetch_all(self.db().reader())
        .await?;
        rows.into_iter()
            .map(|r| {
                let id: String = r.try_get("family")?;
                Ok(volley_proto::api::LoginInfo {
                    current: current.as_deref() == Some(id.as_str()),
                    id,
                    created_ms: r.try_get("created_ms")?,
                    last_refresh_ms: r.try_get("last_used_ms")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Ends one of `account`'s logins (its refresh tokens and sessions); `not_found` when it is
    /// not one of the account's.
    pub async fn end_login(&self, account: AccountId, login: &str) -> Result<(), PlatformError> {
        let mut tx = self.db().writer().begin().await?;
        let ended = sqlx::query(
            "UPDATE refresh_families SET revoked = 1 WHERE family = $1 AND account_id = $2",
        )
        .bind(login)
        .bind(account as i64)
        .execute(&mut *tx)
        .await?;
        if ended.rows_affected() == 0 {
            return Err(PlatformError::not_found("login"));
        }
        sqlx::query("UPDATE sessions SET revoked = 1 WHERE family = $1 AND account_id = $2")
            .bind(login)
            .bind(account as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends every login of `account` but the one `token` belongs to; how many ended.
    pub async fn end_other_logins(
        &self,
        account: AccountId,
        token: &str,
    ) -> Result<u64, PlatformError> {
        let current: String =
            sqlx::query_scalar("SELECT family FROM sessions WHERE token_hash = $1")
                .bind(token_hash(token))
                .fetch_optional(self.db().reader())
                .await?
                .unwrap_or_default();
        let mut tx = self.db().writer().begin().await?;
        let ended = sqlx::query(
            "UPDATE refresh_families SET revoked = 1 WHERE account_id = $1 AND family <> $2 \
             AND revoked = 0",
        )
        .bind(account as i64)
        .bind(&current)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("UPDATE sessions SET revoked = 1 WHERE account_id = $1 AND family <> $2")
            .bind(account as i64)
            .bind(&current)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Ends a session and the login it belongs to (its refresh family: the refresh token that
    /// came with it stops working too), and with `refresh`, that token's family as well.
    pub async fn logout(&self, token: &str, refresh: Option<&str>) -> Result<(), PlatformError> {
        let me = self.authenticate(token).await?;
        if let Some(r) = refresh {
            // Only the caller's own refresh family: a stolen or guessed refresh token of
            // another player must not let this session end that player's logins.
            let owner: Option<i64> =
                sqlx::query_scalar("SELECT account_id FROM refresh_tokens WHERE token_hash = $1")
                    .bind(token_hash(r))
                    .fetch_optional(self.db().reader())
                    .await?;
            match owner {
                Some(owner) if owner as AccountId == me => {
                    sqlx::query(
                        "UPDATE refresh_families SET revoked = 1 WHERE family = \
                         (SELECT family FROM refresh_tokens WHERE token_hash = $1)",
                    )
                    .bind(token_hash(r))
                    .execute(self.db().writer())
                    .await?;
                }
                Some(_) => {
                    return Err(PlatformError::forbidden(
                        "that refresh token belongs to another player",
                    ))
                }
                None => {}
            }
        }
        let mut tx = self.db().writer().begin().await?;
        let family: Option<String> =
            sqlx::query_scalar("SELECT family FROM sessions WHERE token_hash = $1")
                .bind(token_hash(token))
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(f) = family.filter(|f| !f.is_empty()) {
            sqlx::query("UPDATE refresh_families SET revoked = 1 WHERE family = $1")
                .bind(&f)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE sessions SET revoked = 1 WHERE family = $1")
                .bind(&f)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE sessions SET revoked = 1 WHERE token_hash = $1")
            .bind(token_hash(token))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Attaches a login method to `account`.
    pub async fn link(
        &self,
        account: AccountId,
        kind: AuthKind,
        id: &str,
        password: Option<&str>,
    ) -> Result<(), PlatformError> {
        let id = normalize_id(kind, id)?;
        let secret = match kind {
            AuthKind::Email => {
                let p = password.ok_or_else(|| {
                    PlatformError::bad("bad_password", "an email link needs a password")
                })?;
                check_password(p)?;
                Some(self.hasher().hash(p.to_owned()).await?)
            }
            _ => None,
        };
        let r = sqlx::query(
            "INSERT INTO auth_ids (kind, external_id, account_id, secret, created_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(kind.as_str())
        .bind(&id)
        .bind(account as i64)
        .bind(secret)
        .bind(now_ms())
        .execute(self.db().writer())
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if volley_store::schema::is_unique_violation(&e) => {
                Err(PlatformError::conflict(
                    "already_linked",
                    format!("that {} belongs to an account", kind.as_str()),
                ))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Detaches a login method; the last one cannot be removed.
    pub async fn unlink(
        &self,
        account: AccountId,
        kind: AuthKind,
        id: &str,
    ) -> Result<(), PlatformError> {
        let id = normalize_id(kind, id)?;
        let mut tx = self.db().writer().begin().await?;
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM auth_ids WHERE account_id = $1")
            .bind(account as i64)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        let del = sqlx::query(
            "DELETE FROM auth_ids WHERE account_id = $1 AND kind = $2 AND external_id = $3",
        )
        .bind(account as i64)
        .bind(kind.as_str())
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        if del.rows_affected() == 0 {
            return Err(PlatformError::not_found("link"));
        }
        if n <= 1 {
            return Err(PlatformError::conflict(
                "last_link",
                "an account keeps at least one login method",
            ));
        }
        tx.commit().await?;
        Ok(())
    }

    /// The account's public record and its links.
    pub async fn account(&self, account: AccountId) -> Result<AccountInfo, PlatformError> {
        let row =
            sqlx::query("SELECT display_name, status, created_ms FROM accounts WHERE id = $1")
                .bind(account as i64)
                .fetch_optional(self.db().reader())
                .await?
                .ok_or_else(|| PlatformError::not_found("account"))?;
        let links = sqlx::query(
            "SELECT kind, external_id FROM auth_ids WHERE account_id = $1 ORDER BY kind, external_id",
        )
        .bind(account as i64)
        .fetch_all(self.db().reader())
        .await?
        .into_iter()
        .map(|r| Ok((r.try_get("kind")?, r.try_get("external_id")?)))
        .collect::<Result<Vec<(String, String)>, sqlx::Error>>()?;
        let status = match row.try_get::<i64, _>("status")? {
            ACTIVE => "active",
            BANNED => "banned",
            _ => "deleted",
        };
        Ok(AccountInfo {
            player_id: account,
            display_name: row.try_get("display_name")?,
            status: status.into(),
            created_ms: row.try_get("created_ms")?,
            links,
        })
    }

    /// Sets the display name.
    pub async fn set_display_name(
        &self,
        account: AccountId,
        name: &str,
    ) -> Result<(), PlatformError> {
        check_display_name(name)?;
        sqlx::query("UPDATE accounts SET display_name = $1, updated_ms = $2 WHERE id = $3")
            .bind(name)
            .bind(now_ms())
            .bind(account as i64)
            .execute(self.db().writer())
            .await?;
        Ok(())
    }

    /// Whether the account exists and is active.
    pub async fn is_active(&self, account: AccountId) -> Result<bool, PlatformError> {
        let row = sqlx::query("SELECT status FROM accounts WHERE id = $1")
            .bind(account as i64)
            .fetch_optional(self.db().reader())
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<i64, _>("status")? == ACTIVE,
            None => false,
        })
    }

    /// Bans (or unbans) an account; a ban ends its sessions and refresh families at once.
    pub async fn set_banned(&self, account: AccountId, banned: bool) -> Result<(), PlatformError> {
        self.set_status(account, if banned { BANNED } else { ACTIVE })
            .await
    }

    /// Deletes an account: its login methods are released (the device or email can sign up
    /// again as a new player), its sessions end, and its record stays as `deleted` so ledgers
    /// and histories keep a valid reference.
    pub async fn delete_account(&self, account: AccountId) -> Result<(), PlatformError> {
        self.set_status(account, DELETED).await?;
        sqlx::query("DELETE FROM auth_ids WHERE account_id = $1")
            .bind(account as i64)
            .execute(self.db().writer())
            .await?;
        Ok(())
    }

    async fn set_status(&self, account: AccountId, status: i64) -> Result<(), PlatformError> {
        let mut tx = self.db().writer().begin().await?;
        let r = sqlx::query("UPDATE accounts SET status = $1, updated_ms = $2 WHERE id = $3")
            .bind(status)
            .bind(now_ms())
            .bind(account as i64)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(PlatformError::not_found("account"));
        }
        if status != ACTIVE {
            sqlx::query("UPDATE sessions SET revoked = 1 WHERE account_id = $1")
                .bind(account as i64)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE refresh_families SET revoked = 1 WHERE account_id = $1")
                .bind(account as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Display names of `ids` (missing ids are left out).
    pub async fn display_names(
        &self,
        ids: &[AccountId],
    ) -> Result<Vec<(AccountId, String)>, PlatformError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids.iter().take(1000) {
            if let Some(r) = sqlx::query("SELECT display_name FROM accounts WHERE id = $1")
                .bind(*id as i64)
                .fetch_optional(self.db().reader())
                .await?
            {
                out.push((*id, r.try_get("display_name")?));
            }
        }
        Ok(out)
    }
}
