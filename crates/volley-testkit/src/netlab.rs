//! A NAT lab built from Linux network namespaces (needs root, `ip` and `nft`).
//!
//! A [`Lab`] owns an "internet" namespace holding a bridge on the public segment
//! `203.0.113.0/24` (TEST-NET-3). [`Lab::add_public_host`] plugs a host straight into that
//! segment; [`Lab::add_nat_host`] adds a router namespace doing NAT of a given [`NatKind`] with a
//! host namespace behind it on its own `100.64.N.0/24` (shared address space, never routed on
//! the real machine). Nothing touches the machine's own network: every address lives inside
//! namespaces the lab created, and dropping the lab deletes them.
//!
//! ```text
//!   host h1 100.64.1.2 ── r1 (NAT) 203.0.113.2 ─┐
//!                                                ├─ br0 in "inet", 203.0.113.0/24
//!   host h2 100.64.2.2 ── r2 (NAT) 203.0.113.3 ─┤
//!                           public host 203.0.113.4
//! ```
//!
//! The NAT kinds follow the measurements in the project's netlab notes: endpoint-independent
//! mapping is a dynamic nftables map from private source port to (private address, port),
//! learned on egress and used for `dnat` on ingress, with the public port equal to the private
//! one; symmetric NAT is `masquerade random`; address-and-port-dependent filtering is a forward
//! chain that accepts only established/related traffic from the WAN side.
//!
//! Rust code runs inside a namespace with [`HostHandle::enter`] (or [`enter_namespace`]); a
//! socket created there stays in that namespace for its whole life, whatever thread uses it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// Most hosts (public hosts plus NAT routers) on one lab's public segment: `.2` to `.254`.
pub const PUBLIC_HOSTS_MAX: u8 = 253;
/// Most NAT hosts in one lab: each gets its own `100.64.N.0/24`, N from 1.
pub const NAT_HOSTS_MAX: u8 = 200;
/// Longest accepted lab prefix. Namespace names stay short enough to read in `ip netns list`.
pub const PREFIX_LEN_MAX: usize = 8;
/// How long one `ip`/`nft` command may run before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Mapping lifetime of the endpoint-independent NAT map, like a home router's UDP timeout.
const NAT_MAPPING_TIMEOUT_S: u32 = 120;
/// Most mappings the endpoint-independent NAT map holds.
const NAT_MAPPINGS_MAX: u32 = 4096;
/// Where `ip netns` keeps its namespace handles.
const NETNS_DIR: &str = "/run/netns";
/// Router address on the public segment's bridge.
const INTERNET_BRIDGE_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The public segment's prefix length.
const PUBLIC_PREFIX_LEN: u8 = 24;

/// Numbers labs made by this process, so parallel tests get distinct namespace names.
static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// How a NAT router maps and filters UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// No NAT: the host sits directly on the public segment.
    None,
    /// Endpoint-independent mapping and filtering: once a host has sent from a port, anyone may
    /// send to the same public port.
    FullCone,
    /// Endpoint-independent mapping with address-and-port-dependent filtering, like most home
    /// routers: only remotes the host has sent to may answer.
    PortRestricted,
    /// Endpoint-dependent mapping (a new random public port per remote) and
    /// address-and-port-dependent filtering, like many carrier-grade NATs.
    Symmetric,
}

impl NatKind {
    /// The three kinds that really translate, for matrices of tests.
    pub const TRANSLATING: [NatKind; 3] = [
        NatKind::FullCone,
        NatKind::PortRestricted,
        NatKind::Symmetric,
    ];

    /// A short name for tables and logs.
    pub fn name(self) -> &'static str {
        match self {
            NatKind::None => "none",
            NatKind::FullCone => "full-cone",
            NatKind::PortRestricted => "port-restricted",
            NatKind::Symmetric => "symmetric",
        }
    }
}

/// Why the lab cannot run on this machine. The message tells the user what to do.
///
/// `Debug` prints the full message too, because a test returning `Result` shows its error with
/// `Debug`, and in CI that line is the whole explanation.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabUnavailable {
    /// Namespaces, veth and nftables need root.
    #[error(
        "network namespace lab needs root (running as uid {uid}); run the tests as root on a \
         machine prepared with scripts/setup-lab.sh"
    )]
    NotRoot {
        /// The effective user id.
        uid: u32,
    },
    /// A required program is missing.
    #[error(
        "`{tool}` not found in PATH or /usr/sbin, /sbin; run scripts/setup-lab.sh to install \
         it (Debian package `{package}`)"
    )]
    MissingTool {
        /// The program.
        tool: &'static str,
        /// The Debian package that ships it.
        package: &'static str,
    },
    /// A probe namespace could not be set up.
    #[error(
        "cannot {step} in a probe network namespace: {detail}; run scripts/setup-lab.sh and \
         check that the kernel has network namespaces, veth, bridge and nf_tables"
    )]
    Probe {
        /// What was being tried.
        step: &'static str,
        /// What went wrong.
        detail: String,
    },
}

impl std::fmt::Debug for LabUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            LabUnavailable::NotRoot { .. } => "NotRoot",
            LabUnavailable::MissingTool { .. } => "MissingTool",
            LabUnavailable::Probe { .. } => "Probe",
        };
        write!(f, "LabUnavailable::{kind}: {self}")
    }
}

/// Errors from the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The machine cannot run the lab at all.
    #[error(transparent)]
    Unavailable(#[from] LabUnavailable),
    /// The prefix is empty, too long or has characters other than `a-z0-9`.
    #[error(
        "invalid lab prefix {prefix:?}: use 1 to {PREFIX_LEN_MAX} characters from a-z and 0-9"
    )]
    InvalidPrefix {
        /// The rejected prefix.
        prefix: String,
    },
    /// A namespace name that `ip netns` would not accept or that does not exist.
    #[error("no network namespace named {name:?} (looked in {NETNS_DIR})")]
    NoSuchNamespace {
        /// The name.
        name: String,
    },
    /// A command exited with an error.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A command ran longer than [`COMMAND_TIMEOUT`] and was killed.
    #[error("`{command}` did not finish within {COMMAND_TIMEOUT:?} and was killed")]
    Timeout {
        /// The command line.
        command: String,
    },
    /// An OS call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// The lab's address plan is exhausted.
    #[error(
        "lab is full: at most {PUBLIC_HOSTS_MAX} public addresses and {NAT_HOSTS_MAX} NAT hosts"
    )]
    Full,
    /// A closure run inside a namespace panicked.
    #[error("the thread running inside namespace {namespace:?} panicked")]
    ThreadPanicked {
        /// The namespace.
        namespace: String,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> LabError {
    let context = context.into();
    move |source| LabError::Io { context, source }
}

/// Checks that this machine can run the lab: root, `ip`, `nft`, and a namespace with a veth
/// pair, a bridge and an nftables table can be made. Returns the first reason it cannot.
pub fn lab_available() -> Result<(), LabUnavailable> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        return Err(LabUnavailable::NotRoot { uid });
    }
    require_tool("ip", "iproute2")?;
    require_tool("nft", "nftables")?;
    let _ = cleanup_stale_names("vtkprobe");
    let name = format!(
        "vtkprobe-{}-{}",
        std::process::id(),
        LAB_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let probe = |step: &'static str, result: Result<String, LabError>| {
        result.map(drop).map_err(|e| LabUnavailable::Probe {
            step,
            detail: e.to_string(),
        })
    };
    probe("create a namespace", ip(&["netns", "add", &name]))?;
    let steps = (|| {
        probe(
            "create a veth pair",
            ip(&[
                "-n", &name, "link", "add", "name", "vx0", "type", "veth", "peer", "name", "vx1",
            ]),
        )?;
        probe(
            "create a bridge",
            ip(&["-n", &name, "link", "add", "name", "br0", "type", "bridge"]),
        )?;
        probe(
            "load an nftables table",
            nft(&name, "table ip volley_probe {\n  chain c {\n    type nat hook postrouting priority srcnat; policy accept;\n  }\n}\n"),
        )
    })();
    let _ = ip(&["netns", "del", &name]);
    steps
}

/// For integration tests: `Ok(true)` when the lab is available; otherwise, when the `CI`
/// environment variable is set, the reason as an error (so the test fails), and when it is not,
/// `Ok(false)` after printing a loud `SKIPPED: <reason>` to stderr.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// if !volley_testkit::netlab::lab_required("nat_matrix")? {
///     return Ok(());
/// }
/// # Ok(()) }
/// ```
pub fn lab_required(test_name: &str) -> Result<bool, LabUnavailable> {
    match lab_available() {
        Ok(()) => Ok(true),
        Err(reason) if ci_is_set() => Err(reason),
        Err(reason) => {
            eprintln!("\n!!!!! SKIPPED: {test_name}: {reason}\n");
            Ok(false)
        }
    }
}

fn ci_is_set() -> bool {
    match std::env::var("CI") {
        Ok(v) => !matches!(v.trim(), "" | "0" | "false"),
        Err(std::env::VarError::NotUnicode(_)) => true,
        Err(std::env::VarError::NotPresent) => false,
    }
}

/// Runs `f` on a fresh OS thread that has joined the network namespace `namespace`, and returns
/// its result.
///
/// Sockets (and TUN devices) created inside `f` belong to that namespace for their whole life:
/// a socket's namespace is fixed when it is created, so it can be handed back and used from any
/// thread or async runtime afterwards. The calling thread itself never changes namespace.
pub fn enter_namespace<F, R>(namespace: &str, f: F) -> Result<R, LabError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let handle = File::open(namespace_path(namespace)?)
        .map_err(io_error(format!("opening namespace {namespace}")))?;
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name(format!("netns {namespace}"))
            .spawn_scoped(scope, move || {
                // SAFETY: the fd is a valid namespace handle owned by `handle`, alive for the
                // call; CLONE_NEWNET only affects this thread.
                let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                drop(handle);
                Ok(f())
            })
            .map_err(io_error("spawning a namespace thread"))?;
        match thread.join() {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(LabError::Io {
                context: format!("setns into {namespace}"),
                source,
            }),
            Err(_) => Err(LabError::ThreadPanicked {
                namespace: namespace.to_owned(),
            }),
        }
    })
}

/// The handle file of a namespace, after checking the name cannot escape [`NETNS_DIR`].
fn namespace_path(name: &str) -> Result<PathBuf, LabError> {
    let valid = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0');
    let path = Path::new(NETNS_DIR).join(name);
    if valid && path.exists() {
        Ok(path)
    } else {
        Err(LabError::NoSuchNamespace {
            name: name.to_owned(),
        })
    }
}

/// A host in the lab: a namespace with one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostHandle {
    namespace: String,
    ip: Ipv4Addr,
    public_ip: Ipv4Addr,
    nat: NatKind,
    router_namespace: Option<String>,
}

impl HostHandle {
    /// The host's namespace name (for `ip netns exec`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The host's own address (private when behind a NAT).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The address the internet sees: the NAT router's public address, or [`Self::ip`].
    pub fn public_ip(&self) -> Ipv4Addr {
        self.public_ip
    }

    /// The kind of NAT in front of the host.
    pub fn nat(&self) -> NatKind {
        self.nat
    }

    /// The NAT router's namespace, if the host is behind one.
    pub fn router_namespace(&self) -> Option<&str> {
        self.router_namespace.as_deref()
    }

    /// A command that runs `program` inside the host's namespace (`ip netns exec NS program`).
    /// Add arguments, stdio and environment as usual, then spawn it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(tool_path("ip").unwrap_or_else(|| PathBuf::from("ip")));
        cmd.args(["netns", "exec", &self.namespace]).arg(program);
        cmd
    }

    /// Spawns a copy of `cmd` (program, arguments, environment and working directory) inside
    /// the host's namespace. Stdio is inherited; use [`Self::command`] to choose it.
    pub fn spawn(&self, cmd: &Command) -> Result<Child, LabError> {
        let mut inside = self.command(cmd.get_program());
        inside.args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => inside.env(key, value),
                None => inside.env_remove(key),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            inside.current_dir(dir);
        }
        inside.spawn().map_err(io_error(format!(
            "spawning {:?} in {}",
            cmd, self.namespace
        )))
    }

    /// Runs `program args...` inside the namespace, waits at most [`COMMAND_TIMEOUT`], and
    /// returns its stdout; a non-zero exit is an error carrying stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, LabError> {
        let mut full = vec!["netns", "exec", self.namespace.as_str(), program];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs `f` on a thread inside the host's namespace; see [`enter_namespace`].
    ///
    /// ```no_run
    /// # fn demo(host: &volley_testkit::netlab::HostHandle) -> Result<(), Box<dyn std::error::Error>> {
    /// let socket = host.enter(|| std::net::UdpSocket::bind((host.ip(), 5000)))??;
    /// // `socket` lives in the host's namespace even though this thread does not.
    /// # Ok(()) }
    /// ```
    pub fn enter<F, R>(&self, f: F) -> Result<R, LabError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        enter_namespace(&self.namespace, f)
    }
}

/// A set of network namespaces forming a small internet. Dropping it deletes them.
#[derive(Debug)]
pub struct Lab {
    base: String,
    namespaces: Vec<String>,
    internet: String,
    next_public_octet: u8,
    nat_hosts: u8,
    bare_namespaces: u32,
}

impl Lab {
    /// Creates the internet namespace with its public segment. Namespace names are
    /// `{prefix}-{pid}-{n}-{role}`, unique per process and lab, so tests may run in parallel.
    /// Leftovers of earlier runs with the same prefix whose process is gone are removed first.
    pub fn new(name_prefix: &str) -> Result<Self, LabError> {
        validate_prefix(name_prefix)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        if uid != 0 {
            return Err(LabUnavailable::NotRoot { uid }.into());
        }
        require_tool("ip", "iproute2")?;
        require_tool("nft", "nftables")?;
        if let Err(error) = Self::cleanup_stale(name_prefix) {
            tracing::warn!(%error, "netlab: could not remove stale namespaces");
        }
        let seq = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
        let mut lab = Self {
            base: format!("{name_prefix}-{}-{seq}", std::process::id()),
            namespaces: Vec::new(),
            internet: String::new(),
            next_public_octet: 2,
            nat_hosts: 0,
            bare_namespaces: 0,
        };
        // From here on, `lab` owns whatever was created, so an error below still cleans up.
        let inet = lab.create_namespace("inet")?;
        let bridge_addr = format!("{INTERNET_BRIDGE_ADDR}/{PUBLIC_PREFIX_LEN}");
        ip(&["-n", &inet, "link", "add", "name", "br0", "type", "bridge"])?;
        ip(&["-n", &inet, "addr", "add", &bridge_addr, "dev", "br0"])?;
        ip(&["-n", &inet, "link", "set", "br0", "up"])?;
        lab.internet = inet;
        Ok(lab)
    }

    /// The unique part shared by all of this lab's namespace names.
    pub fn name(&self) -> &str {
        &self.base
    }

    /// The internet namespace (holds the public bridge `br0`, `203.0.113.1/24`).
    pub fn internet_namespace(&self) -> &str {
        &self.internet
    }

    /// Adds a host directly on the public segment, without NAT (e.g. a server or a node).
    pub fn add_public_host(&mut self) -> Result<HostHandle, LabError> {
        let octet = self.take_public_octet()?;
        let ns = self.create_namespace(&format!("p{octet}"))?;
        let ip = self.plug_into_internet(&ns, "eth0", octet)?;
        Ok(HostHandle {
            namespace: ns,
            ip,
            public_ip: ip,
            nat: NatKind::None,
            router_namespace: None,
        })
    }

    /// Adds a NAT router of `kind` on the public segment and a host behind it. With
    /// [`NatKind::None`] this is [`Self::add_public_host`].
    pub fn add_nat_host(&mut self, kind: NatKind) -> Result<HostHandle, LabError> {
        if kind == NatKind::None {
            return self.add_public_host();
        }
        if self.nat_hosts >= NAT_HOSTS_MAX {
            return Err(LabError::Full);
        }
        let octet = self.take_public_octet()?;
        self.nat_hosts += 1;
        let n = self.nat_hosts;
        let router = self.create_namespace(&format!("r{n}"))?;
        let host = self.create_namespace(&format!("h{n}"))?;
        let public_ip = self.plug_into_internet(&router, "wan", octet)?;

        let router_lan = Ipv4Addr::new(100, 64, n, 1);
        let host_ip = Ipv4Addr::new(100, 64, n, 2);
        ip(&[
            "link", "add", "name", "lan", "netns", &router, "type", "veth", "peer", "name", "eth0",
            "netns", &host,
        ])?;
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("{router_lan}/24"),
            "dev",
            "lan",
        ])?;
        ip(&["-n", &router, "link", "set", "lan", "up"])?;
        ip(&[
            "-n",
            &host,
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &host, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            &host,
            "route",
            "add",
            "default",
            "via",
            &router_lan.to_string(),
        ])?;
        // Forwarding is per namespace and off in a new one.
        ip(&[
            "netns",
            "exec",
            &router,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
        ])?;
        if let Some(rules) = nat_ruleset(kind, public_ip) {
            nft(&router, &rules)?;
        }
        Ok(HostHandle {
            namespace: host,
            ip: host_ip,
            public_ip,
            nat: kind,
            router_namespace: Some(router),
        })
    }

    /// Adds an empty namespace (only `lo`, up), owned and deleted by the lab. Useful for
    /// [`crate::tun_link::TunLink`]. Returns its name.
    pub fn add_namespace(&mut self) -> Result<String, LabError> {
        self.bare_namespaces += 1;
        self.create_namespace(&format!("n{}", self.bare_namespaces))
    }

    /// Deletes namespaces named `{prefix}-{pid}-...` whose process no longer exists: leftovers
    /// of runs that were killed before their `Lab` was dropped. Returns how many were deleted.
    pub fn cleanup_stale(prefix: &str) -> Result<usize, LabError> {
        validate_prefix(prefix)?;
        cleanup_stale_names(prefix)
    }

    fn take_public_octet(&mut self) -> Result<u8, LabError> {
        let octet = self.next_public_octet;
        if octet == 0 || octet > PUBLIC_HOSTS_MAX + 1 {
            return Err(LabError::Full);
        }
        // Wraps to 0 after 255, which the check above rejects next time.
        self.next_public_octet = octet.wrapping_add(1);
        Ok(octet)
    }

    fn create_namespace(&mut self, role: &str) -> Result<String, LabError> {
        let name = format!("{}-{role}", self.base);
        ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// Connects `ns` to the public bridge through a veth pair whose end in `ns` is `ifname`, and
    /// gives it `203.0.113.{octet}`. The pair is created directly in the two namespaces, so its
    /// names never clash with anything in the root namespace.
    fn plug_into_internet(&self, ns: &str, ifname: &str, octet: u8) -> Result<Ipv4Addr, LabError> {
        let inet = self.internet.as_str();
        let port = format!("v{octet}");
        let addr = Ipv4Addr::new(203, 0, 113, octet);
        ip(&[
            "link", "add", "name", &port, "netns", inet, "type", "veth", "peer", "name", ifname,
            "netns", ns,
        ])?;
        ip(&["-n", inet, "link", "set", &port, "master", "br0", "up"])?;
        let cidr = format!("{addr}/{PUBLIC_PREFIX_LEN}");
        ip(&["-n", ns, "addr", "add", &cidr, "dev", ifname])?;
        ip(&["-n", ns, "link", "set", ifname, "up"])?;
        Ok(addr)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Best effort: a namespace still held by a process or socket loses its name now and
        // disappears when the last user goes.
        for ns in self.namespaces.iter().rev() {
            if let Err(error) = ip(&["netns", "del", ns]) {
                tracing::warn!(%error, namespace = %ns, "netlab: could not delete namespace");
            }
        }
    }
}

/// The nftables ruleset of a NAT router whose WAN interface is `wan` with address `wan_ip`, or
/// `None` for [`NatKind::None`].
fn nat_ruleset(kind: NatKind, wan_ip: Ipv4Addr) -> Option<String> {
    // Unsolicited UDP to the router itself is dropped before conntrack confirms it: otherwise
    // that entry would occupy (wan_ip, port, remote) and force a later outgoing flow from the
    // host onto another public port, breaking port preservation.
    let router_input = "
  chain router_input {
    type filter hook input priority filter; policy accept;
    iifname \"wan\" meta l4proto udp drop
  }";
    let established_only = "
  chain wan_forward {
    type filter hook forward priority filter; policy accept;
    iifname \"wan\" ct state established,related accept
    iifname \"wan\" drop
  }";
    // Endpoint-independent mapping: learn private port -> (address, port) on every outgoing
    // packet (a filter chain sees every packet and the pre-SNAT source; a nat chain would only
    // see the first packet of each flow), SNAT keeps the port, and ingress to a learned public
    // port is sent to its owner whoever the remote is.
    let independent_mapping = format!(
        "
  map eim {{
    type inet_service : ipv4_addr . inet_service
    flags dynamic, timeout
    timeout {NAT_MAPPING_TIMEOUT_S}s
    size {NAT_MAPPINGS_MAX}
  }}
  chain learn {{
    type filter hook postrouting priority filter; policy accept;
    oifname \"wan\" meta l4proto udp update @eim {{ udp sport : ip saddr . udp sport }}
  }}
  chain nat_out {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"wan\" snat ip to {wan_ip}
  }}
  chain nat_in {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname \"wan\" ip daddr {wan_ip} meta l4proto udp dnat ip addr . port to udp dport map @eim
  }}"
    );
    let symmetric_mapping = "
  chain nat_out {
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"wan\" masquerade random
  }";
    let body = match kind {
        NatKind::None => return None,
        NatKind::FullCone => format!("{independent_mapping}{router_input}"),
        NatKind::PortRestricted => {
            format!("{independent_mapping}{established_only}{router_input}")
        }
        NatKind::Symmetric => format!("{symmetric_mapping}{established_only}{router_input}"),
    };
    Some(format!("table ip volley_nat {{{body}\n}}\n"))
}

fn validate_prefix(prefix: &str) -> Result<(), LabError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= PREFIX_LEN_MAX
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(LabError::InvalidPrefix {
            prefix: prefix.to_owned(),
        })
    }
}

fn cleanup_stale_names(prefix: &str) -> Result<usize, LabError> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_error(format!("listing {NETNS_DIR}"))(e)),
    };
    let own_pid = std::process::id();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == own_pid || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if ip(&["netns", "del", &name]).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Finds `name` in PATH or the sbin directories, which a non-login root shell may lack.
fn tool_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn require_tool(tool: &'static str, package: &'static str) -> Result<PathBuf, LabUnavailable> {
    tool_path(tool).ok_or(LabUnavailable::MissingTool { tool, package })
}

/// Runs `ip args...` and returns its stdout.
pub(crate) fn ip(args: &[&str]) -> Result<String, LabError> {
    let path = require_tool("ip", "iproute2")?;
    run_command(&path, args, None)
}

/// Loads `ruleset` with `nft -f -` inside namespace `ns`.
fn nft(ns: &str, ruleset: &str) -> Result<String, LabError> {
    let nft = require_tool("nft", "nftables")?;
    let nft = nft.to_string_lossy();
    let path = require_tool("ip", "iproute2")?;
    run_command(
        &path,
        &["netns", "exec", ns, &nft, "-f", "-"],
        Some(ruleset),
    )
}

/// Runs a command with an optional stdin, killing it after [`COMMAND_TIMEOUT`].
fn run_command(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, LabError> {
    let command_line = format!("{} {}", program.display(), args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_error(format!("starting `{command_line}`")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Rulesets are a few KiB, far below the pipe buffer, so this cannot block on the child.
        pipe.write_all(input.as_bytes())
            .map_err(io_error(format!("writing stdin of `{command_line}`")))?;
    }
    let pid = child.id();
    // wait_with_output drains both pipes; it runs on a helper thread so the wait can time out.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(COMMAND_TIMEOUT) {
        Ok(result) => result.map_err(io_error(format!("waiting for `{command_line}`")))?,
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions; `pid` is our own child, not yet
            // reaped (the helper thread is still waiting on it).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            return Err(LabError::Timeout {
                command: command_line,
            });
        }
    };
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(LabError::Command {
            command: command_line,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_checked() {
        assert!(validate_prefix("vtk1").is_ok());
        for bad in ["", "Upper", "a-b", "waytoolongprefix", "../x"] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn namespace_names_cannot_escape() {
        for bad in ["", ".", "..", "../etc", "a/b"] {
            assert!(namespace_path(bad).is_err());
        }
    }

    #[test]
    fn rulesets_differ_by_kind() {
        let wan = Ipv4Addr::new(203, 0, 113, 9);
        assert!(nat_ruleset(NatKind::None, wan).is_none());
        let full = nat_ruleset(NatKind::FullCone, wan).unwrap();
        assert!(full.contains("update @eim") && !full.contains("established"));
        let home = nat_ruleset(NatKind::PortRestricted, wan).unwrap();
        assert!(home.contains("update @eim") && home.contains("established"));
        let sym = nat_ruleset(NatKind::Symmetric, wan).unwrap();
        assert!(sym.contains("masquerade random") && !sym.contains("@eim"));
    }
}
