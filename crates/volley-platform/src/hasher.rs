//! Argon2id password hashing on a bounded pool that sheds load.
//!
//! Hashing is deliberately expensive (OWASP: 19 MiB, 2 passes, 1 lane, tens of milliseconds),
//! so it must neither block the async runtime nor queue without bound: a burst of logins would
//! otherwise pile up memory and latency for everyone. Hashes run on blocking threads, at most
//! one per worker; up to `queue` more requests wait; beyond that a request fails at once with
//! [`ErrorKind::Overloaded`](crate::ErrorKind::Overloaded) (HTTP 503).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::{ErrorKind, PlatformError};

struct PendingGuard(Arc<AtomicUsize>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The pool.
#[derive(Debug)]
pub struct Hasher {
    params: Params,
    workers: Arc<Semaphore>,
    pending: Arc<AtomicUsize>,
    worker_count: usize,
    queue: usize,
    shed: AtomicU64,
    done: AtomicU64,
}

impl Hasher {
    /// A pool with Argon2id at `m_kib` KiB and `t` passes; `workers` threads (0 = cores).
    pub fn new(m_kib: u32, t: u32, workers: usize, queue: usize) -> Hasher {
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            workers
        };
        let params =
            Params::new(m_kib.max(8), t.max(1), 1, None).unwrap_or_else(|_| Params::default());
        Hasher {
            params,
            workers: Arc::new(Semaphore::new(workers)),
            pending: Arc::new(AtomicUsize::new(0)),
            worker_count: workers,
            queue,
            shed: AtomicU64::new(0),
            done: AtomicU64::new(0),
        }
    }

    fn argon2(params: Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(Params) -> T + Send + 'static,
    ) -> Result<T, PlatformError> {
        let overloaded = || {
            PlatformError::new(
                ErrorKind::Overloaded,
                "overloaded",
                "too many logins at once; retry in a moment",
            )
        };
        // `pending` counts requests running or waiting; beyond workers + queue, shed.
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.queue + self.worker_count {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.shed.fetch_add(1, Ordering::Relaxed);
            return Err(overloaded());
        }
        let _pending = PendingGuard(self.pending.clone());
        let permit = self
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| overloaded())?;
        let params = self.params.clone();
        let out = tokio::task::spawn_blocking(move || {
            let out = f(params);
            drop(permit);
            out
        })
        .await
        .map_err(|_| PlatformError::new(ErrorKind::Internal, "internal", "hashing failed"))?;
        self.done.fetch_add(1, Ordering::Relaxed);
        Ok(out)
    }

    /// Hashes `password` into a PHC string (`$argon2id$v=19$m=...`).
    pub async fn hash(&self, password: String) -> Result<String, PlatformError> {
        self.run(move |params| {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            Self::argon2(params)
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| {
                    PlatformError::new(ErrorKind::Internal, "internal", format!("hash: {e}"))
                })
        })
        .await?
    }

    /// Whether `password` matches `phc` (a hash this pool made, whatever its parameters were).
    pub async fn verify(&self, password: String, phc: String) -> Result<bool, PlatformError> {
        self.run(move |params| {
            let Ok(parsed) = PasswordHash::new(&phc) else {
                return false;
            };
            Self::argon2(params)
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .await
    }

    /// A hash of nothing, verified against when an account does not exist, so a wrong email
    /// costs the same time as a wrong password.
    pub fn hash_blocking(&self, password: &str) -> Option<String> {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Self::argon2(self.params.clone())
            .hash_password(password.as_bytes(), &salt)
            .ok()
            .map(|h| h.to_string())
    }

    /// Requests refused because the pool was full.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Hashes and verifications done.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// The parameters, for reports: (m KiB, t, p).
    pub fn params(&self) -> (u32, u32, u32) {
        (
            self.params.m_cost(),
            self.params.t_cost(),
            self.params.p_cost(),
        )
    }
}
