//! Container runtimes: turning `containerd://<id>`, `cri-o://<id>` and `docker://<id>` targets
//! (and pod UIDs, for the sandbox fallback) into host processes, and killing containers.
//!
//! This module owns:
//! * id validation ([`ContainerId`], [`validate_pod_uid`]);
//! * runtime socket discovery ([`Runtimes::new`] probes k3s/RKE2, containerd, MicroK8s, CRI-O and
//!   Docker sockets, also under `/host-run/`, unless `--runtime`/`--runtime-socket-path` pin one);
//! * one client per runtime kind, chosen by the id's prefix (containerd over its gRPC API,
//!   Docker over the Engine API, CRI-O over its inspect endpoint), reconnecting lazily;
//! * the `/proc/*/cgroup` fallback used when a runtime is unreachable;
//! * a PID cache whose entries are re-validated by start time, so a reused PID is never returned.
//!
//! Errors are [`RuntimeError`]s with an [`ErrorKind`]; the gRPC layer maps kinds to status codes.
//! Every PID returned is a host PID: faultd needs `hostPID` and a host view of `/proc`.
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::process::{ProcessError, ProcessIdentity};

mod cache;
mod containerd;
mod crio;
mod docker;
pub mod id;
mod procfs;
mod unix_http;

pub use cache::CacheStats;
pub use containerd::NAMESPACE_HEADER as CONTAINERD_NAMESPACE_HEADER;
pub use id::{validate_pod_uid, ContainerId};

/// A container runtime faultd can talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuntimeKind {
    Containerd,
    Crio,
    Docker,
}

impl RuntimeKind {
    pub const ALL: [RuntimeKind; 3] = [
        RuntimeKind::Containerd,
        RuntimeKind::Crio,
        RuntimeKind::Docker,
    ];

    /// The prefix the kubelet puts on container ids of this runtime.
    pub fn prefix(self) -> &'static str {
        match self {
            RuntimeKind::Containerd => "containerd://",
            RuntimeKind::Crio => "cri-o://",
            RuntimeKind::Docker => "docker://",
        }
    }

    /// Chaos Mesh's default socket when `--runtime` is given without `--runtime-socket-path`.
    pub fn default_socket(self) -> &'static Path {
        Path::new(match self {
            RuntimeKind::Containerd => "/run/containerd/containerd.sock",
            RuntimeKind::Crio => "/var/run/crio/crio.sock",
            RuntimeKind::Docker => "/var/run/docker.sock",
        })
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Guesses the runtime from a socket path (`--runtime-socket-path` without `--runtime`).
    pub fn guess_from_socket(path: &Path) -> Option<RuntimeKind> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        if name.contains("containerd") {
            Some(RuntimeKind::Containerd)
        } else if name.contains("crio") || name.contains("cri-o") {
            Some(RuntimeKind::Crio)
        } else if name.contains("docker") {
            Some(RuntimeKind::Docker)
        } else {
            None
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuntimeKind::Containerd => "containerd",
            RuntimeKind::Crio => "cri-o",
            RuntimeKind::Docker => "docker",
        })
    }
}

impl FromStr for RuntimeKind {
    type Err = String;
    /// Accepts the upstream `--runtime` values `docker`, `containerd`, `crio` (and `cri-o`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "containerd" => Ok(RuntimeKind::Containerd),
            "crio" | "cri-o" => Ok(RuntimeKind::Crio),
            "docker" => Ok(RuntimeKind::Docker),
            other => Err(format!(
                "unknown runtime {other:?} (expected docker, containerd or crio)"
            )),
        }
    }
}

/// Error classes; the gRPC layer maps them to status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed id / pod uid, or a request the runtime refused as invalid.
    InvalidArgument,
    /// No such container, container not running, no running sandbox.
    NotFound,
    /// The runtime could not be reached (and the `/proc` fallback found nothing).
    Unavailable,
    /// The runtime cannot do this (sandbox lookup on CRI-O).
    Unsupported,
    /// Anything else: unexpected runtime answers, PID not visible, signal failures.
    Internal,
}

/// A runtime endpoint, for messages: `containerd at /run/k3s/... (namespace k8s.io)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeAt {
    pub kind: RuntimeKind,
    pub socket: PathBuf,
    /// containerd namespace; `None` for other runtimes.
    pub namespace: Option<String>,
}

impl fmt::Display for RuntimeAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.kind, self.socket.display())?;
        if let Some(ns) = &self.namespace {
            write!(f, " (namespace {ns})")?;
        }
        Ok(())
    }
}

/// Errors resolving or killing a container.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid container id {input:?}: {reason}")]
    InvalidId { input: String, reason: String },
    #[error("invalid pod uid {input:?}: expected 1-64 characters of [A-Za-z0-9-]")]
    InvalidPodUid { input: String },
    #[error("container {id:?} not found in {at}")]
    NotFound { id: String, at: RuntimeAt },
    #[error("container {id:?} is not running in {at}")]
    NotRunning { id: String, at: RuntimeAt },
    #[error("no running sandbox for pod uid {pod_uid:?} in {at}")]
    SandboxNotFound { pod_uid: String, at: RuntimeAt },
    #[error("{at} is unavailable: {detail}")]
    Unavailable { at: RuntimeAt, detail: String },
    #[error("no {kind} socket is configured or was found (probed: {probed}); {detail}")]
    NoRuntime {
        kind: RuntimeKind,
        probed: String,
        detail: String,
    },
    #[error("{at} rejected the request: {detail}")]
    Rejected { at: RuntimeAt, detail: String },
    #[error("{what} is not supported for {kind}")]
    Unsupported {
        kind: RuntimeKind,
        what: &'static str,
    },
    #[error("{source_name} reported pid {pid} for {id:?}, but {detail}")]
    BadPid {
        source_name: String,
        id: String,
        pid: u32,
        detail: String,
    },
    #[error("{context}: {detail}")]
    Internal { context: String, detail: String },
    #[error("no pid for container {id:?} ({container}) nor for the sandbox of pod {pod_uid:?} ({sandbox})")]
    NoPid {
        id: String,
        pod_uid: String,
        container: Box<RuntimeError>,
        sandbox: Box<RuntimeError>,
    },
}

impl crate::failure::Failure for RuntimeError {
    fn failure(&self) -> crate::failure::FailureKind {
        use crate::failure::FailureKind as F;
        match self.kind() {
            ErrorKind::InvalidArgument => F::InvalidArgument,
            ErrorKind::NotFound => F::NotFound,
            ErrorKind::Unavailable => F::Unavailable,
            ErrorKind::Unsupported => F::FailedPrecondition,
            ErrorKind::Internal => F::Internal,
        }
    }
}

impl RuntimeError {
    /// The class of the error, for mapping to a gRPC status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RuntimeError::InvalidId { .. }
            | RuntimeError::InvalidPodUid { .. }
            | RuntimeError::Rejected { .. } => ErrorKind::InvalidArgument,
            RuntimeError::NotFound { .. }
            | RuntimeError::NotRunning { .. }
            | RuntimeError::SandboxNotFound { .. } => ErrorKind::NotFound,
            RuntimeError::Unavailable { .. } | RuntimeError::NoRuntime { .. } => {
                ErrorKind::Unavailable
            }
            RuntimeError::Unsupported { .. } => ErrorKind::Unsupported,
            RuntimeError::BadPid { .. } | RuntimeError::Internal { .. } => ErrorKind::Internal,
            RuntimeError::NoPid {
                container, sandbox, ..
            } => {
                // A missing/malformed container id is expected for CrashLoopBackOff targets: the
                // sandbox answer is the meaningful one then.
                if container.kind() == ErrorKind::InvalidArgument {
                    sandbox.kind()
                } else {
                    container.kind()
                }
            }
        }
    }

    fn not_found(id: &str, at: &RuntimeAt) -> Self {
        RuntimeError::NotFound {
            id: id.into(),
            at: at.clone(),
        }
    }
}

/// Joins an error and its sources: `a: b: c`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Where runtimes are looked for and how they are called.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// `--runtime`: pin this kind (to `socket` if given, else to the first probe path of that kind
    /// that answers, else to Chaos Mesh's default socket for it). Other kinds are still probed.
    pub runtime: Option<RuntimeKind>,
    /// `--runtime-socket-path`: explicit socket for `runtime` (kind guessed from the file name if
    /// `runtime` is `None`). A `unix://` prefix is accepted.
    pub socket: Option<PathBuf>,
    /// `--containerd-ns`.
    pub containerd_ns: String,
    /// Sockets probed, in order; the first that accepts a connection wins for its kind.
    pub probe_paths: Vec<(RuntimeKind, PathBuf)>,
    /// Host procfs (`/proc` with hostPID).
    pub proc_root: PathBuf,
    /// Per-call deadline for runtime requests (connect is capped at 2 s).
    pub timeout: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            runtime: None,
            socket: None,
            containerd_ns: "k8s.io".into(),
            probe_paths: default_probe_paths(),
            proc_root: PathBuf::from("/proc"),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Sockets probed when none is configured: k3s/RKE2, containerd, MicroK8s, CRI-O, Docker, then
/// the same basenames under `/host-run/` (where the Chaos Mesh chart mounts the socket dir).
pub fn default_probe_paths() -> Vec<(RuntimeKind, PathBuf)> {
    let host = [
        (
            RuntimeKind::Containerd,
            "/run/k3s/containerd/containerd.sock",
        ),
        (RuntimeKind::Containerd, "/run/containerd/containerd.sock"),
        (
            RuntimeKind::Containerd,
            "/var/snap/microk8s/common/run/containerd.sock",
        ),
        (RuntimeKind::Crio, "/var/run/crio/crio.sock"),
        (RuntimeKind::Docker, "/var/run/docker.sock"),
    ];
    let mut out: Vec<(RuntimeKind, PathBuf)> =
        host.iter().map(|(k, p)| (*k, PathBuf::from(p))).collect();
    for (k, p) in host {
        let under = Path::new("/host-run").join(Path::new(p).file_name().unwrap_or_default());
        if !out.iter().any(|(_, q)| *q == under) {
            out.push((k, under));
        }
    }
    out
}

/// A runtime socket that accepted a connection during discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredRuntime {
    pub kind: RuntimeKind,
    pub socket: PathBuf,
}

impl fmt::Display for DiscoveredRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.kind, self.socket.display())
    }
}

/// One client per runtime kind.
#[derive(Debug)]
enum Client {
    Containerd(containerd::Containerd),
    Crio(crio::Crio),
    Docker(docker::Docker),
}

impl Client {
    fn new(at: RuntimeAt, timeout: Duration) -> Result<Self, RuntimeError> {
        Ok(match at.kind {
            RuntimeKind::Containerd => {
                Client::Containerd(containerd::Containerd::new(at, timeout)?)
            }
            RuntimeKind::Crio => Client::Crio(crio::Crio { at, timeout }),
            RuntimeKind::Docker => Client::Docker(docker::Docker { at, timeout }),
        })
    }

    fn at(&self) -> &RuntimeAt {
        match self {
            Client::Containerd(c) => &c.at,
            Client::Crio(c) => &c.at,
            Client::Docker(c) => &c.at,
        }
    }

    async fn pid(&self, id: &str) -> Result<u32, RuntimeError> {
        match self {
            Client::Containerd(c) => c.pid(id).await,
            Client::Crio(c) => c.pid(id).await,
            Client::Docker(c) => c.pid(id).await,
        }
    }

    async fn sandbox_pid(&self, pod_uid: &str) -> Result<u32, RuntimeError> {
        match self {
            Client::Containerd(c) => c.sandbox_pid(pod_uid).await,
            Client::Docker(c) => c.sandbox_pid(pod_uid).await,
            Client::Crio(_) => Err(RuntimeError::Unsupported {
                kind: RuntimeKind::Crio,
                what: "pod sandbox lookup",
            }),
        }
    }
}

/// The runtime registry: routes each container id to the client for its prefix.
#[derive(Debug)]
pub struct Runtimes {
    clients: [Option<Client>; 3],
    discovered: Vec<DiscoveredRuntime>,
    probed: Vec<(RuntimeKind, PathBuf)>,
    proc_root: PathBuf,
    cache: cache::PidCache,
}

/// Cache key of a pod's sandbox.
fn sandbox_key(pod_uid: &str) -> String {
    format!("pod-sandbox://{pod_uid}")
}

async fn socket_answers(path: &Path) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::UnixStream::connect(path)
        )
        .await,
        Ok(Ok(_))
    )
}

impl Runtimes {
    /// Discovers runtime sockets and builds the clients. Never fails: a runtime that is down now
    /// is dialled again on each call, and unreachable runtimes fall back to `/proc`.
    pub async fn new(cfg: RuntimeConfig) -> Runtimes {
        let explicit_socket = cfg.socket.as_ref().map(|s| {
            let s = s.to_string_lossy();
            PathBuf::from(s.strip_prefix("unix://").unwrap_or(&s))
        });
        let pinned = cfg.runtime.or_else(|| {
            let sock = explicit_socket.as_ref()?;
            let guess = RuntimeKind::guess_from_socket(sock);
            if guess.is_none() {
                tracing::warn!(socket = %sock.display(), "cannot tell the runtime from the socket name; assuming docker (the upstream default). Pass --runtime");
            }
            Some(guess.unwrap_or(RuntimeKind::Docker))
        });
        let at = |kind: RuntimeKind, socket: PathBuf| RuntimeAt {
            kind,
            socket,
            namespace: (kind == RuntimeKind::Containerd).then(|| cfg.containerd_ns.clone()),
        };

        let mut sockets: [Option<PathBuf>; 3] = [None, None, None];
        let mut discovered = Vec::new();
        if let (Some(kind), Some(sock)) = (pinned, explicit_socket.as_ref()) {
            if socket_answers(sock).await {
                discovered.push(DiscoveredRuntime {
                    kind,
                    socket: sock.clone(),
                });
            } else {
                tracing::warn!(runtime = %kind, socket = %sock.display(), "configured runtime socket does not accept connections now; will retry on each call");
            }
            sockets[kind.index()] = Some(sock.clone());
        }
        let mut probed = Vec::new();
        for (kind, path) in &cfg.probe_paths {
            // An explicit socket for a kind skips discovery for that kind.
            if explicit_socket.is_some() && Some(*kind) == pinned {
                continue;
            }
            probed.push((*kind, path.clone()));
            if !socket_answers(path).await {
                continue;
            }
            discovered.push(DiscoveredRuntime {
                kind: *kind,
                socket: path.clone(),
            });
            match &sockets[kind.index()] {
                None => sockets[kind.index()] = Some(path.clone()),
                Some(first) => {
                    tracing::warn!(runtime = %kind, using = %first.display(), also = %path.display(), "several sockets answer for this runtime; using the first")
                }
            }
        }
        if let Some(kind) = pinned {
            if sockets[kind.index()].is_none() {
                let d = kind.default_socket().to_path_buf();
                tracing::warn!(runtime = %kind, socket = %d.display(), "no socket found for the configured runtime; using its default path, retried on each call");
                sockets[kind.index()] = Some(d);
            }
        }
        let mut clients: [Option<Client>; 3] = [None, None, None];
        for kind in RuntimeKind::ALL {
            if let Some(sock) = sockets[kind.index()].take() {
                match Client::new(at(kind, sock), cfg.timeout) {
                    Ok(c) => clients[kind.index()] = Some(c),
                    Err(e) => {
                        tracing::error!(runtime = %kind, error = %e, "cannot build runtime client")
                    }
                }
            }
        }
        for d in &discovered {
            tracing::info!(runtime = %d.kind, socket = %d.socket.display(), "container runtime found");
        }
        if discovered.is_empty() {
            tracing::warn!("no container runtime socket answered; PIDs will be resolved from /proc cgroups only");
        }
        Runtimes {
            clients,
            discovered,
            probed,
            proc_root: cfg.proc_root,
            cache: cache::PidCache::default(),
        }
    }

    /// Sockets that accepted a connection at startup, in probe order (explicit socket first).
    pub fn discovered(&self) -> &[DiscoveredRuntime] {
        &self.discovered
    }

    /// The endpoint used for `kind`, if any (found, configured, or the pinned runtime's default).
    pub fn endpoint(&self, kind: RuntimeKind) -> Option<&RuntimeAt> {
        self.clients[kind.index()].as_ref().map(Client::at)
    }

    /// Cache hit/miss counters for metrics.
    pub fn cache_stats(&self) -> &CacheStats {
        &self.cache.stats
    }

    /// One-line summary of `discovered()` for logs: `containerd at /run/…, docker at /var/…`.
    pub fn describe(&self) -> String {
        if self.discovered.is_empty() {
            return "no container runtime found".into();
        }
        self.discovered
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Host PID (with start time) of the container's init process. Served from the cache when the
    /// cached PID still has the same start time; otherwise asks the runtime (or `/proc`).
    pub async fn pid(&self, id: &str) -> Result<ProcessIdentity, RuntimeError> {
        let cid = ContainerId::parse(id)?;
        let key = cid.to_string();
        if let Some(hit) = self.cache.get(&key, &self.proc_root) {
            return Ok(hit);
        }
        let who = self.resolve(&cid).await?;
        self.cache.insert(&key, who, &self.proc_root);
        Ok(who)
    }

    /// Like [`Runtimes::pid`] but always asks the runtime (the cache is refreshed, not read).
    pub async fn pid_uncached(&self, id: &str) -> Result<ProcessIdentity, RuntimeError> {
        let cid = ContainerId::parse(id)?;
        let who = self.resolve(&cid).await?;
        self.cache.insert(&cid.to_string(), who, &self.proc_root);
        Ok(who)
    }

    /// SIGKILLs the container's init process through its runtime (containerd `Tasks.Kill`
    /// with `all = false`, Docker `kill?signal=SIGKILL`, CRI-O: signal to the verified PID).
    /// If the runtime is unreachable, the init found through `/proc` is signalled directly.
    pub async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        let cid = ContainerId::parse(id)?;
        let key = cid.to_string();
        self.cache.remove(&key);
        let result = match self.client(cid.kind()) {
            Some(Client::Containerd(c)) => c.kill(cid.id()).await,
            Some(Client::Docker(c)) => c.kill(cid.id()).await,
            Some(Client::Crio(c)) => match self.crio_identity(c, &cid).await {
                Ok(who) => self.signal(&who, &cid, &c.at.to_string()),
                Err(e) => Err(e),
            },
            None => Err(self.no_runtime(cid.kind(), String::new())),
        };
        match result {
            Err(e) if e.kind() == ErrorKind::Unavailable => {
                let Some(who) = self.proc_fallback(&cid, &e).await else {
                    return Err(with_fallback_note(e, &self.proc_root));
                };
                self.signal(&who, &cid, "the /proc cgroup scan")
            }
            other => other,
        }
    }

    /// Host PID of the running sandbox (pause) container of pod `pod_uid`, asking containerd,
    /// then Docker (CRI-O cannot list sandboxes over its inspect API).
    pub async fn sandbox_pid(&self, pod_uid: &str) -> Result<ProcessIdentity, RuntimeError> {
        self.sandbox_pid_in(None, pod_uid).await
    }

    /// The PID of container `id`, or, if that fails and `pod_uid` is not empty, of the pod's
    /// sandbox (Chaos Mesh's fallback for targets in CrashLoopBackOff). `id` may be empty then.
    pub async fn pid_or_sandbox(
        &self,
        id: &str,
        pod_uid: &str,
    ) -> Result<ProcessIdentity, RuntimeError> {
        let err = match self.pid(id).await {
            Ok(who) => return Ok(who),
            Err(e) if pod_uid.is_empty() => return Err(e),
            Err(e) => e,
        };
        let kind = ContainerId::parse(id).ok().map(|c| c.kind());
        match self.sandbox_pid_in(kind, pod_uid).await {
            Ok(who) => {
                tracing::info!(container = id, pod_uid, pid = who.pid, reason = %err, "container pid unavailable; using the pod sandbox");
                Ok(who)
            }
            Err(sandbox) => Err(RuntimeError::NoPid {
                id: id.into(),
                pod_uid: pod_uid.into(),
                container: Box::new(err),
                sandbox: Box::new(sandbox),
            }),
        }
    }

    /// Test hook: plants a cache entry (e.g. one whose start time is stale).
    #[doc(hidden)]
    pub fn cache_insert(&self, id: &str, who: ProcessIdentity) -> Result<(), RuntimeError> {
        let cid = ContainerId::parse(id)?;
        self.cache.insert(&cid.to_string(), who, &self.proc_root);
        Ok(())
    }

    fn client(&self, kind: RuntimeKind) -> Option<&Client> {
        self.clients[kind.index()].as_ref()
    }

    fn no_runtime(&self, kind: RuntimeKind, detail: String) -> RuntimeError {
        let probed: Vec<String> = self
            .probed
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, p)| p.display().to_string())
            .collect();
        RuntimeError::NoRuntime {
            kind,
            probed: if probed.is_empty() {
                "nothing".into()
            } else {
                probed.join(", ")
            },
            detail,
        }
    }

    /// Asks the runtime, falling back to `/proc` when it is unreachable.
    async fn resolve(&self, cid: &ContainerId) -> Result<ProcessIdentity, RuntimeError> {
        let result = match self.client(cid.kind()) {
            Some(Client::Crio(c)) => self.crio_identity(c, cid).await,
            Some(c) => match c.pid(cid.id()).await {
                Ok(pid) => self.identity(pid, cid.id(), &c.at().to_string()),
                Err(e) => Err(e),
            },
            None => Err(self.no_runtime(cid.kind(), String::new())),
        };
        match result {
            Err(e) if e.kind() == ErrorKind::Unavailable => self
                .proc_fallback(cid, &e)
                .await
                .ok_or_else(|| with_fallback_note(e, &self.proc_root)),
            other => other,
        }
    }

    /// CRI-O reports the PID of a stopped container too, so the PID must still be in the
    /// container's cgroup before it is used.
    async fn crio_identity(
        &self,
        c: &crio::Crio,
        cid: &ContainerId,
    ) -> Result<ProcessIdentity, RuntimeError> {
        let pid = c.pid(cid.id()).await?;
        let who = self.identity(pid, cid.id(), &c.at.to_string())?;
        if !procfs::pid_in_container(&self.proc_root, pid, cid.id()) {
            return Err(RuntimeError::NotRunning {
                id: cid.id().into(),
                at: c.at.clone(),
            });
        }
        Ok(who)
    }

    /// Reads the identity of a PID a runtime reported.
    fn identity(&self, pid: u32, id: &str, source: &str) -> Result<ProcessIdentity, RuntimeError> {
        ProcessIdentity::of_in(&self.proc_root, pid).map_err(|e| RuntimeError::BadPid {
            source_name: source.into(),
            id: id.into(),
            pid,
            detail: match e {
                ProcessError::NotFound { .. } => format!(
                    "it is not in {} (exited just now, or faultd lacks hostPID)",
                    self.proc_root.display()
                ),
                e => e.to_string(),
            },
        })
    }

    async fn proc_fallback(
        &self,
        cid: &ContainerId,
        cause: &RuntimeError,
    ) -> Option<ProcessIdentity> {
        let root = self.proc_root.clone();
        let id = cid.id().to_string();
        let found = tokio::task::spawn_blocking(move || procfs::find_container_init(&root, &id))
            .await
            .ok()
            .flatten();
        if let Some(who) = found {
            self.cache
                .stats
                .proc_fallbacks
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(container = %cid, pid = who.pid, cause = %cause, "container runtime not reachable; resolved the pid from /proc cgroups");
        }
        found
    }

    fn signal(
        &self,
        who: &ProcessIdentity,
        cid: &ContainerId,
        source: &str,
    ) -> Result<(), RuntimeError> {
        procfs::sigkill(&self.proc_root, who).map_err(|e| RuntimeError::BadPid {
            source_name: source.into(),
            id: cid.id().into(),
            pid: who.pid,
            detail: format!("SIGKILL failed: {e}"),
        })
    }

    async fn sandbox_pid_in(
        &self,
        prefer: Option<RuntimeKind>,
        pod_uid: &str,
    ) -> Result<ProcessIdentity, RuntimeError> {
        validate_pod_uid(pod_uid)?;
        let key = sandbox_key(pod_uid);
        if let Some(hit) = self.cache.get(&key, &self.proc_root) {
            return Ok(hit);
        }
        let order: Vec<RuntimeKind> = match prefer {
            Some(k) => vec![k],
            None => vec![
                RuntimeKind::Containerd,
                RuntimeKind::Docker,
                RuntimeKind::Crio,
            ],
        };
        let mut last = None;
        for kind in order {
            let Some(c) = self.client(kind) else {
                continue;
            };
            match c.sandbox_pid(pod_uid).await {
                Ok(pid) => {
                    let who = self.identity(pid, &key, &c.at().to_string())?;
                    self.cache.insert(&key, who, &self.proc_root);
                    return Ok(who);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            self.no_runtime(
                prefer.unwrap_or(RuntimeKind::Containerd),
                format!("cannot look up the sandbox of pod {pod_uid:?}"),
            )
        }))
    }
}

/// Adds "the /proc fallback found nothing" to an unavailability error.
fn with_fallback_note(e: RuntimeError, proc_root: &Path) -> RuntimeError {
    let note = format!(
        "no process under {} has a cgroup naming the container either",
        proc_root.display()
    );
    match e {
        RuntimeError::Unavailable { at, detail } => RuntimeError::Unavailable {
            at,
            detail: format!("{detail}; {note}"),
        },
        RuntimeError::NoRuntime {
            kind,
            probed,
            detail,
        } => RuntimeError::NoRuntime {
            kind,
            probed,
            detail: if detail.is_empty() {
                note
            } else {
                format!("{detail}; {note}")
            },
        },
        other => other,
    }
}

#[cfg(test)]
mod tests;
