//! The event bus: how presence, chat and matchmaker events reach the node a player is connected
//! to. In-process on one node; NATS across nodes.
//!
//! Subjects are dot-separated tokens (`user.42`). A subscription may use `*` for one token and
//! a trailing `>` for one or more, with the meaning NATS gives them, so the same code runs on
//! both. On NATS every subject travels under `volley.<cluster>.`, so deployments sharing a
//! NATS server never see each other's messages; callers never see the prefix.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::StoreError;

/// Messages a subscription buffers before newer ones are dropped (a slow consumer loses events,
/// it never stalls the publisher or other consumers).
pub const SUBSCRIPTION_BUFFER: usize = 1024;

/// One message.
#[derive(Debug, Clone)]
pub struct BusMessage {
    /// Its subject.
    pub subject: String,
    /// Its bytes.
    pub payload: Vec<u8>,
}

/// A live subscription; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    inner: SubInner,
}

#[derive(Debug)]
enum SubInner {
    Local {
        rx: mpsc::Receiver<BusMessage>,
        _guard: LocalGuard,
    },
    Nats {
        sub: async_nats::Subscriber,
        /// `volley.<cluster>.`, stripped from received subjects.
        prefix: Arc<str>,
    },
}

fn unprefixed(prefix: &str, m: async_nats::Message) -> BusMessage {
    let subject = m.subject.as_str();
    BusMessage {
        subject: subject.strip_prefix(prefix).unwrap_or(subject).to_owned(),
        payload: m.payload.to_vec(),
    }
}

impl Subscription {
    /// The next message; `None` when the bus is gone.
    pub async fn next(&mut self) -> Option<BusMessage> {
        match &mut self.inner {
            SubInner::Local { rx, .. } => rx.recv().await,
            SubInner::Nats { sub, prefix } => sub.next().await.map(|m| unprefixed(prefix, m)),
        }
    }

    /// A message if one is ready.
    pub fn try_next(&mut self) -> Option<BusMessage> {
        match &mut self.inner {
            SubInner::Local { rx, .. } => rx.try_recv().ok(),
            SubInner::Nats { sub, prefix } => {
                let waker = futures_util::task::noop_waker();
                let mut cx = std::task::Context::from_waker(&waker);
                match sub.poll_next_unpin(&mut cx) {
                    std::task::Poll::Ready(Some(m)) => Some(unprefixed(prefix, m)),
                    _ => None,
                }
            }
        }
    }
}

/// The bus: cheap to clone.
#[derive(Debug, Clone)]
pub enum Bus {
    /// In-process.
    Local(LocalBus),
    /// NATS (core publish/subscribe), every subject under `prefix` (`volley.<cluster>.`).
    Nats {
        /// The connection.
        client: async_nats::Client,
        /// `volley.<cluster>.`
        prefix: Arc<str>,
    },
}

/// Whether `name` can name a cluster: 1-32 of `a-z`, `0-9` and `-` (one subject token, safe
/// in Redis keys and log lines).
pub fn valid_cluster_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Bus {
    /// A new in-process bus.
    pub fn local() -> Bus {
        Bus::Local(LocalBus::default())
    }

    /// Connects to NATS at `url` (`nats://127.0.0.1:4222`) for the cluster named `cluster`
    /// (see [`valid_cluster_name`]): its subjects are `volley.<cluster>.…` on the server.
    pub async fn nats(url: &str, cluster: &str) -> Result<Bus, StoreError> {
        if !valid_cluster_name(cluster) {
            return Err(StoreError::Bus(format!(
                "invalid cluster name {cluster:?}: 1-32 of a-z, 0-9 and -"
            )));
        }
        let client = async_nats::connect(url)
            .await
            .map_err(|e| StoreError::Bus(format!("connect to {url}: {e}")))?;
        Ok(Bus::Nats {
            client,
            prefix: format!("volley.{cluster}.").into(),
        })
    }

    /// Which kind of bus.
    pub fn kind(&self) -> &'static str {
        match self {
            Bus::Local(_) => "local",
            Bus::Nats { .. } => "nats",
        }
    }

    /// Publishes `payload` on `subject` (no wildcards).
    pub async fn publish(&self, subject: &str, payload: Vec<u8>) -> Result<(), StoreError> {
        if !valid_subject(subject, false) {
            return Err(StoreError::Bus(format!("invalid subject {subject:?}")));
        }
        match self {
            Bus::Local(b) => {
                b.publish(subject, payload);
                Ok(())
            }
            Bus::Nats { client, prefix } => client
                .publish(format!("{prefix}{subject}"), payload.into())
                .await
                .map_err(|e| StoreError::Bus(format!("publish: {e}"))),
        }
    }

    /// Makes sure everything published so far has reached the server (NATS); a no-op locally.
    pub async fn flush(&self) -> Result<(), StoreError> {
        match self {
            Bus::Local(_) => Ok(()),
            Bus::Nats { client, .. } => client
                .flush()
                .await
                .map_err(|e| StoreError::Bus(format!("flush: {e}"))),
        }
    }

    /// Subscribes to `subject` (wildcards allowed).
    pub async fn subscribe(&self, subject: &str) -> Result<Subscription, StoreError> {
        if !valid_subject(subject, true) {
            return Err(StoreError::Bus(format!("invalid subject {subject:?}")));
        }
        match self {
            Bus::Local(b) => Ok(b.subscribe(subject)),
            Bus::Nats { client, prefix } => {
                let sub = client
                    .subscribe(format!("{prefix}{subject}"))
                    .await
                    .map_err(|e| StoreError::Bus(format!("subscribe: {e}")))?;
                // The server must know of the subscription before we return, or a publish that
                // follows at once from another client could miss it. The client's flush only
                // writes its buffer, so round-trip a message of our own: the server handles one
                // connection's operations in order.
                sync_with_server(client).await?;
                Ok(Subscription {
                    inner: SubInner::Nats {
                        sub,
                        prefix: prefix.clone(),
                    },
                })
            }
        }
    }
}

async fn sync_with_server(c: &async_nats::Client) -> Result<(), StoreError> {
    let inbox = c.new_inbox();
    let mut probe = c
        .subscribe(inbox.clone())
        .await
        .map_err(|e| StoreError::Bus(format!("subscribe: {e}")))?;
    c.publish(inbox, Default::default())
        .await
        .map_err(|e| StoreError::Bus(format!("publish: {e}")))?;
    match tokio::time::timeout(std::time::Duration::from_secs(10), probe.next()).await {
        Ok(Some(_)) => Ok(()),
        _ => Err(StoreError::Bus("no round trip from the NATS server".into())),
    }
}

/// Whether `s` is a well-formed subject: non-empty tokens of printable ASCII without spaces;
/// wildcards only when `pattern`, `>` only last.
pub fn valid_subject(s: &str, pattern: bool) -> bool {
    if s.is_empty() || s.len() > 256 {
        return false;
    }
    let tokens: Vec<&str> = s.split('.').collect();
    let last = tokens.len() - 1;
    tokens.iter().enumerate().all(|(i, t)| {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return false;
        }
        match *t {
            "*" => pattern,
            ">" => pattern && i == last,
            _ => !t.contains('*') && !t.contains('>'),
        }
    })
}

/// Whether `subject` matches `pattern` (NATS wildcard rules).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The in-process bus.
#[derive(Debug, Clone, Default)]
pub struct LocalBus {
    inner: Arc<Mutex<LocalInner>>,
}

#[derive(Debug, Default)]
struct LocalInner {
    next: u64,
    subs: HashMap<u64, (String, mpsc::Sender<BusMessage>)>,
}

/// Removes a local subscription when the last handle to it goes.
#[derive(Debug)]
struct LocalGuard {
    id: u64,
    inner: Arc<Mutex<LocalInner>>,
}

impl Drop for LocalGuard {
    fn drop(&mut self) {
        match self.inner.lock() {
            Ok(mut g) => {
                g.subs.remove(&self.id);
            }
            Err(_) => poisoned("a subscription stays registered after its end"),
        }
    }
}

/// Logs, once per process, that the in-process bus's lock was poisoned (a panic while it was
/// held), and what that cost this time.
fn poisoned(what: &str) {
    static LOGGED: std::sync::Once = std::sync::Once::new();
    LOGGED.call_once(|| {
        tracing::warn!(
            what,
            "the in-process bus lock is poisoned; its messages are dropped"
        );
    });
}

static LOCAL_DROPPED: AtomicU64 = AtomicU64::new(0);

impl LocalBus {
    fn publish(&self, subject: &str, payload: Vec<u8>) {
        let Ok(g) = self.inner.lock() else {
            LOCAL_DROPPED.fetch_add(1, Ordering::Relaxed);
            poisoned("a published message is dropped");
            return;
        };
        for (pattern, tx) in g.subs.values() {
            if subject_matches(pattern, subject) {
                let m = BusMessage {
                    subject: subject.to_owned(),
                    payload: payload.clone(),
                };
                if tx.try_send(m).is_err() {
                    LOCAL_DROPPED.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn subscribe(&self, pattern: &str) -> Subscription {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        let id = match self.inner.lock() {
            Ok(mut g) => {
                g.next += 1;
                let id = g.next;
                g.subs.insert(id, (pattern.to_owned(), tx));
                id
            }
            Err(_) => {
                // The sender goes with this arm: the subscription ends at once.
                poisoned("a subscription ends at once");
                0
            }
        };
        Subscription {
            inner: SubInner::Local {
                rx,
                _guard: LocalGuard {
                    id,
                    inner: self.inner.clone(),
                },
            },
        }
    }

    /// Live subscriptions (for tests and metrics).
    pub fn subscriptions(&self) -> usize {
        self.inner.lock().map(|g| g.subs.len()).unwrap_or(0)
    }
}

/// Messages the in-process bus dropped: a subscriber's buffer was full (or the subscriber was
/// going away), or the bus's lock was poisoned.
pub fn local_dropped() -> u64 {
    LOCAL_DROPPED.load(Ordering::Relaxed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_follow_nats_rules() {
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(!subject_matches("a.*.c", "a.b.d"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(valid_subject("volley.user.1", false));
        assert!(valid_cluster_name("eu-west-2"));
        for bad in ["", "EU", "a.b", "a b", "a*", &"x".repeat(33)] {
            assert!(!valid_cluster_name(bad), "{bad:?}");
        }
        assert!(!valid_subject("volley.*", false));
        assert!(valid_subject("volley.*", true));
        assert!(!valid_subject("a.>.b", true));
        assert!(!valid_subject("a..b", true));
        assert!(!valid_subject("a b", true));
        assert!(!valid_subject("", true));
    }

    #[tokio::test]
    async fn local_bus_delivers_to_matching_subscriptions_and_unsubscribes_on_drop() {
        let bus = Bus::local();
        let mut a = bus.subscribe("user.*").await.unwrap();
        let mut b = bus.subscribe("user.2").await.unwrap();
        bus.publish("user.1", b"one".to_vec()).await.unwrap();
        bus.publish("user.2", b"two".to_vec()).await.unwrap();
        assert_eq!(a.next().await.unwrap().payload, b"one");
        assert_eq!(a.next().await.unwrap().payload, b"two");
        assert_eq!(b.next().await.unwrap().payload, b"two");
        assert!(b.try_next().is_none());
        let Bus::Local(local) = &bus else { panic!() };
        assert_eq!(local.subscriptions(), 2);
        drop(a);
        assert_eq!(local.subscriptions(), 1);
        assert!(bus.publish("volley.*", vec![]).await.is_err());
    }
}
