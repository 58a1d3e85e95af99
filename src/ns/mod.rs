//! Linux namespace entry. Work that must run inside a target's namespaces runs on a dedicated,
//! single-use OS thread that calls `setns` and exits afterwards, so no tokio worker (nor any
//! reused thread) ever changes namespace. A namespace is identified by the `(dev, inode)` of its
//! nsfs file, which is stable for the namespace's lifetime.
//!
//! Creating a thread costs far more than the namespace work itself (on a 2-vCPU VM with idle
//! cores, ~200 µs to spawn and join against ~70 µs to wake a parked thread), so [`run_async`]
//! hands its job to a *spare*: a thread spawned ahead of time that has entered no namespace and
//! waits for exactly one job. The caller starts a replacement while the job runs. Each thread
//! still runs one job and exits; spares only move the `clone` off the critical path.
//!
//! Kinds that return to a namespace keep a socket opened there on a thread of their own
//! ([`kept`]), so a namespace thread is needed only once per namespace, not once per request.
//!
//! [`run_async`]: Namespace::run_async
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

pub mod kept;

/// Errors entering a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("setns({kind}) failed: {source}")]
    Setns {
        kind: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("spawning the namespace worker thread: {0}")]
    Spawn(std::io::Error),
    #[error("the namespace worker thread panicked")]
    Panicked,
}

/// Which namespace to enter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsKind {
    Net,
    Mnt,
    Pid,
}

impl NsKind {
    fn file(self) -> &'static str {
        match self {
            NsKind::Net => "net",
            NsKind::Mnt => "mnt",
            NsKind::Pid => "pid",
        }
    }
    fn flag(self) -> CloneFlags {
        match self {
            NsKind::Net => CloneFlags::CLONE_NEWNET,
            NsKind::Mnt => CloneFlags::CLONE_NEWNS,
            NsKind::Pid => CloneFlags::CLONE_NEWPID,
        }
    }
}

/// Identity of a namespace: device and inode of its nsfs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

/// An open handle on a namespace. Holding it keeps the namespace alive, so drop it when done.
#[derive(Debug)]
pub struct Namespace {
    kind: NsKind,
    file: File,
    id: NsId,
    /// For a mount namespace: a process's root directory, entered (`chroot`) after the
    /// `setns`, so paths and mountinfo are the process's even where its root is not its
    /// namespace's root (a runtime that `chroot`s instead of `pivot_root`).
    root: Option<std::sync::Arc<File>>,
}

impl Namespace {
    /// Opens `/proc/<pid>/ns/<kind>`.
    pub fn of_pid(pid: u32, kind: NsKind) -> Result<Self, NsError> {
        Self::open(
            &Path::new("/proc")
                .join(pid.to_string())
                .join("ns")
                .join(kind.file()),
            kind,
        )
    }

    /// Opens a namespace file (`/proc/<pid>/ns/net`, `/run/netns/<name>`, ...).
    pub fn open(path: &Path, kind: NsKind) -> Result<Self, NsError> {
        let open_err = |source| NsError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let md = file.metadata().map_err(open_err)?;
        Ok(Namespace {
            kind,
            file,
            id: NsId {
                dev: md.dev(),
                ino: md.ino(),
            },
            root: None,
        })
    }

    /// The mount namespace of process `pid`, entered at its root directory
    /// (`/proc/<pid>/root`): the container's view of paths and mounts.
    pub fn mnt_of_process(pid: u32) -> Result<Self, NsError> {
        let mut ns = Self::of_pid(pid, NsKind::Mnt)?;
        let path = Path::new("/proc").join(pid.to_string()).join("root");
        let fd = nix::fcntl::open(
            &path,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| NsError::Open {
            path,
            source: e.into(),
        })?;
        ns.root = Some(std::sync::Arc::new(File::from(fd)));
        Ok(ns)
    }

    pub fn id(&self) -> NsId {
        self.id
    }

    pub fn kind(&self) -> NsKind {
        self.kind
    }

    /// Duplicates the handle (for a second worker thread).
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Namespace {
            kind: self.kind,
            file: self.file.try_clone()?,
            id: self.id,
            root: self.root.clone(),
        })
    }

    /// Runs `f` on a fresh OS thread that has entered this namespace; the thread exits after.
    pub fn run<T, F>(&self, f: F) -> Result<T, NsError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let ns = self.try_clone().map_err(NsError::Spawn)?;
        std::thread::Builder::new()
            .name(format!("faultd-ns-{}", self.kind.file()))
            .spawn(move || {
                ns.enter_current_thread()?;
                Ok(f())
            })
            .map_err(NsError::Spawn)?
            .join()
            .map_err(|_| NsError::Panicked)?
    }

    /// Async form of [`Namespace::run`] on a spare thread (see the module docs): the caller's
    /// tokio worker only awaits a channel.
    pub async fn run_async<T, F>(&self, f: F) -> Result<T, NsError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let ns = self.try_clone().map_err(NsError::Spawn)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: spare::Job = Box::new(move || {
            let r = ns.enter_current_thread().map(|()| f());
            let _ = tx.send(r);
        });
        spare::dispatch(job).map_err(NsError::Spawn)?;
        rx.await.map_err(|_| NsError::Panicked)?
    }

    /// Enters the namespace on the calling thread. Only for threads faultd created for this
    /// purpose (and for `pre_exec` in a freshly forked child).
    fn enter_current_thread(&self) -> Result<(), NsError> {
        if self.kind == NsKind::Mnt {
            // setns(CLONE_NEWNS) is refused in a thread that shares its fs info with others.
            nix::sched::unshare(CloneFlags::CLONE_FS)
                .map_err(|source| NsError::Setns { kind: "fs", source })?;
        }
        nix::sched::setns(self.file.as_fd(), self.kind.flag()).map_err(|source| {
            NsError::Setns {
                kind: self.kind.file(),
                source,
            }
        })?;
        if let Some(root) = &self.root {
            let chroot = |source| NsError::Setns {
                kind: "root",
                source,
            };
            nix::unistd::fchdir(root.as_fd()).map_err(chroot)?;
            nix::unistd::chroot(".").map_err(chroot)?;
            nix::unistd::chdir("/").map_err(chroot)?;
        }
        Ok(())
    }
}

/// Spare single-use threads for [`Namespace::run_async`].
mod spare {
    use std::sync::mpsc::{sync_channel, SyncSender};
    use std::sync::Mutex;

    pub type Job = Box<dyn FnOnce() + Send>;

    /// Spares kept waiting: enough for a SetTcs (two entries) without waiting for a spawn.
    const SPARES: usize = 2;

    static IDLE: Mutex<Vec<SyncSender<Job>>> = Mutex::new(Vec::new());

    fn idle() -> std::sync::MutexGuard<'static, Vec<SyncSender<Job>>> {
        IDLE.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A thread that waits for one job, runs it and exits.
    fn spawn() -> std::io::Result<SyncSender<Job>> {
        let (tx, rx) = sync_channel::<Job>(1);
        std::thread::Builder::new()
            .name("faultd-ns".into())
            .spawn(move || {
                if let Ok(job) = rx.recv() {
                    job();
                }
            })?;
        Ok(tx)
    }

    /// Runs `job` on a spare (or, when none is left, a new thread), then tops the spares up
    /// while the job runs.
    pub fn dispatch(mut job: Job) -> std::io::Result<()> {
        loop {
            let Some(tx) = idle().pop() else { break };
            match tx.send(job) {
                Ok(()) => {
                    refill();
                    return Ok(());
                }
                // The spare is gone (it cannot die before a job, but be safe): try another.
                Err(e) => job = e.0,
            }
        }
        spawn()?.send(job).map_err(|_| {
            std::io::Error::other("the namespace thread exited before its job arrived")
        })?;
        refill();
        Ok(())
    }

    fn refill() {
        while idle().len() < SPARES {
            match spawn() {
                Ok(tx) => idle().push(tx),
                Err(e) => {
                    tracing::warn!(error = %e, "spawning a spare namespace thread failed");
                    return;
                }
            }
        }
    }
}

/// Finds a namespace by identity after a restart: through `hint_pid` if that process still lives
/// in it, else through any process in `/proc` or a bind mount in `/run/netns`. `None` means the
/// namespace no longer exists (nothing holds it).
pub fn find(id: NsId, kind: NsKind, hint_pid: Option<u32>) -> Option<Namespace> {
    let matches = |ns: Namespace| (ns.id() == id).then_some(ns);
    if let Some(pid) = hint_pid {
        if let Some(ns) = Namespace::of_pid(pid, kind).ok().and_then(matches) {
            return Some(ns);
        }
    }
    let from_path = |p: PathBuf| -> Option<Namespace> {
        let md = std::fs::metadata(&p).ok()?;
        if md.dev() == id.dev && md.ino() == id.ino {
            Namespace::open(&p, kind).ok()
        } else {
            None
        }
    };
    if kind == NsKind::Net {
        if let Ok(dir) = std::fs::read_dir("/run/netns") {
            for e in dir.flatten() {
                if let Some(ns) = from_path(e.path()) {
                    return Some(ns);
                }
            }
        }
    }
    for pid in crate::process::pids() {
        if let Some(ns) = from_path(
            Path::new("/proc")
                .join(pid.to_string())
                .join("ns")
                .join(kind.file()),
        ) {
            return Some(ns);
        }
    }
    None
}

/// Identity of the calling thread's network namespace.
pub fn current_netns_id() -> Result<NsId, NsError> {
    Namespace::open(Path::new("/proc/thread-self/ns/net"), NsKind::Net).map(|n| n.id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_identity_is_stable() {
        let a = Namespace::of_pid(std::process::id(), NsKind::Net).unwrap();
        let b = current_netns_id().unwrap();
        assert_eq!(a.id(), b);
        // Entering our own netns on a worker thread works where we have CAP_SYS_ADMIN; the closure
        // result comes back either way the call is allowed.
        if nix::unistd::geteuid().is_root() {
            let seen = a.run(|| current_netns_id().unwrap()).unwrap();
            assert_eq!(seen, b);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_async_uses_each_thread_once_and_never_a_worker() {
        if !nix::unistd::geteuid().is_root() {
            return; // setns needs CAP_SYS_ADMIN
        }
        let me = Namespace::of_pid(std::process::id(), NsKind::Net).unwrap();
        let worker = std::thread::current().id();
        let mut jobs = Vec::new();
        for _ in 0..16 {
            let ns = me.try_clone().unwrap();
            jobs.push(tokio::spawn(async move {
                ns.run_async(|| (std::thread::current().id(), current_netns_id().unwrap()))
                    .await
                    .unwrap()
            }));
        }
        let mut seen = std::collections::HashSet::new();
        for j in jobs {
            let (thread, netns) = j.await.unwrap();
            assert_eq!(netns, me.id());
            assert_ne!(thread, worker);
            // ThreadIds are never reused within a process: a repeat would be a reused thread.
            assert!(seen.insert(thread), "a namespace thread ran two jobs");
        }
    }

    #[test]
    fn find_locates_a_namespace_by_identity() {
        let me = Namespace::of_pid(std::process::id(), NsKind::Net).unwrap();
        let found = find(me.id(), NsKind::Net, None).expect("our own netns is held by us");
        assert_eq!(found.id(), me.id());
        let bogus = NsId {
            dev: me.id().dev,
            ino: 1,
        };
        assert!(find(bogus, NsKind::Net, Some(std::process::id())).is_none());
    }

    #[test]
    fn missing_pid_is_an_open_error() {
        let e = Namespace::of_pid(u32::MAX - 1, NsKind::Net).unwrap_err();
        assert!(matches!(e, NsError::Open { .. }), "{e}");
    }
}
