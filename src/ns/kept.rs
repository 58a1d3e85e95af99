//! Sockets kept open per namespace, each owned by a thread of its own.
//!
//! A netlink socket keeps talking to the namespace it was created in, whichever thread uses it.
//! Kinds that visit the same namespace again and again (a fault's apply, its update, its undo)
//! keep one socket there instead of paying, on every request, for a namespace thread, `setns`,
//! the socket and its close. The socket is opened on a namespace thread
//! ([`Namespace::run_async`]); no thread that uses it afterwards enters a namespace.
//!
//! A job runs on the calling thread when the socket is free: a netlink request is processed by
//! the kernel inside the `sendmsg` that carries it, so using a kept socket is a few system calls
//! of tens of microseconds each, and handing them to another thread would cost two thread
//! wake-ups (on a virtual machine with halted vCPUs, more than the work). Only when another
//! caller is using the socket at that moment does the job go to the socket's own thread, which
//! runs such jobs one at a time. The kernel may make a request wait for a lock (rtnl, held for
//! long while many namespaces are torn down): after a job in place took over [`SLOW_JOB`],
//! every job goes to the sockets' threads for [`SLOW_FOR`], so the runtime's workers wait on
//! the kernel at most once in a while.
//!
//! That thread also closes the socket and exits when it has been idle for the kept set's
//! `idle`, or its `linger` after the namespace's last fault ended ([`Kept::release`]). The
//! close happens there, never on a request's path (closing an nf_tables socket that deleted
//! objects waits for an RCU grace period). A socket holds a reference on its namespace, so a
//! namespace stays alive at most `idle` after faultd last touched it, and its identity
//! `(dev, inode)` cannot be reused while it is kept: a job sent by identity always reaches the
//! namespace the socket was opened in.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use super::{Namespace, NsError, NsId};

/// Errors of the kept threads themselves (a job's own errors are the caller's type).
#[derive(Debug, thiserror::Error)]
pub enum KeptError {
    #[error(transparent)]
    Namespace(#[from] NsError),
    #[error("spawning the {name} thread: {source}")]
    Spawn {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the namespace's {0} thread ended before answering")]
    Ended(&'static str),
}

/// A job for the socket's thread: it runs with the socket and gives back the answer, which the
/// thread sends once the socket is free again (so the caller's next job finds it free).
type Job<S> = Box<dyn FnOnce(&mut S) -> Reply + Send>;
type Reply = Box<dyn FnOnce() + Send>;

/// A job the caller could not run itself (the socket was in use).
struct Cmd<S>(Job<S>);

/// The socket of one namespace and when it was last used.
struct Held<S> {
    /// `None` once the owning thread has taken it to close it.
    socket: Option<S>,
    /// End of the last job.
    last: Instant,
}

/// What the callers and the owning thread of one namespace share.
struct Slot<S> {
    held: Mutex<Held<S>>,
    /// The namespace's last fault ended and no job of a live fault came since.
    released: AtomicBool,
}

impl<S> Slot<S> {
    fn lock(&self) -> MutexGuard<'_, Held<S>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The socket, unless a job is using it right now.
    fn try_lock(&self) -> Option<MutexGuard<'_, Held<S>>> {
        match self.held.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Runs `job` on the socket (if it is still open) and notes the use.
    fn use_socket<T>(
        held: &mut Held<S>,
        released: &AtomicBool,
        hold: bool,
        job: impl FnOnce(&mut S) -> T,
    ) -> Option<T> {
        let out = job(held.socket.as_mut()?);
        held.last = Instant::now();
        if hold {
            released.store(false, Ordering::Release);
        }
        Some(out)
    }
}

struct Entry<S> {
    slot: Arc<Slot<S>>,
    tx: Sender<Cmd<S>>,
    generation: u64,
}

struct Map<S> {
    entries: HashMap<NsId, Entry<S>>,
    generation: u64,
}

/// One kind of socket (`S`) kept per namespace: a `static` of the module that owns the kind.
pub struct Kept<S> {
    /// The threads' name.
    name: &'static str,
    idle: Duration,
    linger: Duration,
    map: Mutex<Option<Map<S>>>,
    /// Until when jobs go to the sockets' threads whether or not the socket is free: a job
    /// that ran in place took over [`SLOW_JOB`] (the kernel lock it needs was contended), so
    /// the callers' threads, the runtime's workers among them, stop waiting on the kernel for
    /// [`SLOW_FOR`].
    slow_until: Mutex<Option<Instant>>,
}

/// What a job asks of the kernel, as far as its caller knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobSize {
    /// A few requests of a few kilobytes: tens of microseconds unless a lock is contended.
    Small,
    /// Enough for the kernel to work for milliseconds (a large nf_tables batch): never in place.
    Large,
}

/// A job in place that takes longer than this sends the next ones to the sockets' threads.
pub const SLOW_JOB: Duration = Duration::from_millis(2);
/// For how long.
pub const SLOW_FOR: Duration = Duration::from_secs(10);

impl<S: Send + 'static> Kept<S> {
    pub const fn new(name: &'static str, idle: Duration, linger: Duration) -> Self {
        Kept {
            name,
            idle,
            linger,
            map: Mutex::new(None),
            slow_until: Mutex::new(None),
        }
    }

    /// Whether a job may run in place now (no slow job in place during the last [`SLOW_FOR`]).
    fn in_place_allowed(&self) -> bool {
        let g = self.slow_until.lock().unwrap_or_else(|p| p.into_inner());
        g.is_none_or(|until| Instant::now() >= until)
    }

    fn map(&self) -> MutexGuard<'_, Option<Map<S>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The slot of `id`, if a thread keeps a socket there.
    fn slot(&self, id: NsId) -> Option<Arc<Slot<S>>> {
        let g = self.map();
        Some(g.as_ref()?.entries.get(&id)?.slot.clone())
    }

    /// Hands `cmd` to the thread of `id`, if there is one; gives it back otherwise.
    fn send(&self, id: NsId, cmd: Cmd<S>) -> Result<(), Cmd<S>> {
        let mut g = self.map();
        let Some(map) = g.as_mut() else {
            return Err(cmd);
        };
        let Some(e) = map.entries.get(&id) else {
            return Err(cmd);
        };
        // Sent under the lock: the thread decides to exit under the same lock after checking
        // that nothing is queued, so a job sent here is always run.
        match e.tx.send(cmd) {
            Ok(()) => Ok(()),
            Err(back) => {
                map.entries.remove(&id);
                Err(back.0)
            }
        }
    }

    /// Runs `f` with the socket kept for namespace `id`: on the calling thread when the socket
    /// is free and the job [`JobSize::Small`], on the socket's thread otherwise. When there is
    /// no socket yet, `ns` gives the namespace, `open` opens a socket inside it (on a namespace
    /// thread) and a thread starts to own it. `hold`: the job belongs to a live fault (undoes
    /// [`Kept::release`]).
    pub async fn run<T, E, F>(
        &'static self,
        id: NsId,
        ns: impl FnOnce() -> Result<Namespace, E>,
        open: fn() -> Result<S, E>,
        hold: bool,
        size: JobSize,
        f: F,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<KeptError> + Send + 'static,
        F: FnOnce(&mut S) -> Result<T, E> + Send + 'static,
    {
        let in_place = size == JobSize::Small && self.in_place_allowed();
        if let Some(slot) = in_place.then(|| self.slot(id)).flatten() {
            if let Some(mut held) = slot.try_lock() {
                if held.socket.is_some() {
                    let started = Instant::now();
                    let out = Slot::use_socket(&mut held, &slot.released, hold, f);
                    if started.elapsed() > SLOW_JOB {
                        let mut g = self.slow_until.lock().unwrap_or_else(|p| p.into_inner());
                        *g = Some(Instant::now() + SLOW_FOR);
                        tracing::debug!(
                            kind = self.name,
                            took_ms = started.elapsed().as_secs_f64() * 1e3,
                            "slow netlink job in place: the next ones run on the sockets' threads"
                        );
                    }
                    return out.expect("socket checked");
                }
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job<S> = Box::new(move |s: &mut S| {
            let out = f(s);
            Box::new(move || {
                let _ = tx.send(out);
            }) as Reply
        });
        if let Err(cmd) = self.send(id, Cmd(job)) {
            let socket = ns()?
                .run_async(open)
                .await
                .map_err(|e| E::from(KeptError::Namespace(e)))??;
            self.start(id, socket, cmd).map_err(E::from)?;
        }
        let out = rx.await.map_err(|_| E::from(KeptError::Ended(self.name)))?;
        if hold {
            if let Some(slot) = self.slot(id) {
                slot.released.store(false, Ordering::Release);
            }
        }
        out
    }

    /// Starts the thread of `id` with `socket` and `first` as its first command (or hands
    /// `first` to a thread another call started meanwhile, closing the spare socket in the
    /// background).
    fn start(&'static self, id: NsId, socket: S, first: Cmd<S>) -> Result<(), KeptError> {
        let mut g = self.map();
        let map = g.get_or_insert_with(|| Map {
            entries: HashMap::new(),
            generation: 0,
        });
        if let Some(e) = map.entries.get(&id) {
            if let Err(back) = e.tx.send(first) {
                map.entries.remove(&id);
                drop(g);
                return self.start(id, socket, back.0);
            }
            drop(g);
            self.close_in_background(socket);
            return Ok(());
        }
        let (tx, rx) = channel::<Cmd<S>>();
        tx.send(first).expect("receiver alive");
        map.generation += 1;
        let generation = map.generation;
        let slot = Arc::new(Slot {
            held: Mutex::new(Held {
                socket: Some(socket),
                last: Instant::now(),
            }),
            released: AtomicBool::new(false),
        });
        let own = slot.clone();
        std::thread::Builder::new()
            .name(self.name.into())
            .stack_size(256 * 1024)
            .spawn(move || self.own(id, generation, &own, rx))
            .map_err(|source| KeptError::Spawn {
                name: self.name,
                source,
            })?;
        map.entries.insert(
            id,
            Entry {
                slot,
                tx,
                generation,
            },
        );
        Ok(())
    }

    /// The owning thread: runs the jobs sent to it and closes the socket once it has not been
    /// used for `idle` (`linger` after a release).
    fn own(
        &self,
        id: NsId,
        generation: u64,
        slot: &Slot<S>,
        rx: std::sync::mpsc::Receiver<Cmd<S>>,
    ) {
        let deadline = |held: &Held<S>| {
            let keep = if slot.released.load(Ordering::Acquire) {
                self.linger
            } else {
                self.idle
            };
            held.last + keep
        };
        // A job sent here is never `hold`: run() notes that itself once it returns.
        let run = |Cmd(job): Cmd<S>| {
            let reply = Slot::use_socket(&mut slot.lock(), &slot.released, false, job);
            if let Some(reply) = reply {
                reply();
            }
        };
        loop {
            // A release is not sent (waking this thread would compete with the request that
            // made it): looking every `linger` finds it in time.
            let wait = deadline(&slot.lock())
                .saturating_duration_since(Instant::now())
                .min(self.linger);
            match rx.recv_timeout(wait) {
                Ok(cmd) => run(cmd),
                Err(RecvTimeoutError::Timeout) => {
                    let mut g = self.map();
                    if let Ok(cmd) = rx.try_recv() {
                        drop(g);
                        run(cmd);
                        continue;
                    }
                    // In use right now, or used meanwhile: not idle.
                    let Some(mut held) = slot.try_lock() else {
                        continue;
                    };
                    if deadline(&held) > Instant::now() {
                        continue;
                    }
                    if let Some(map) = g.as_mut() {
                        if map
                            .entries
                            .get(&id)
                            .is_some_and(|e| e.generation == generation)
                        {
                            map.entries.remove(&id);
                        }
                    }
                    let socket = held.socket.take();
                    drop(held);
                    drop(g);
                    drop(socket); // the close (and any wait it has) happens here, off every request
                    return;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn close_in_background(&self, socket: S) {
        let _ = std::thread::Builder::new()
            .name(format!("{}-close", self.name))
            .stack_size(64 * 1024)
            .spawn(move || drop(socket));
    }

    /// The namespace's last fault ended: close its socket soon unless it is used again.
    pub fn release(&self, id: NsId) {
        if let Some(slot) = self.slot(id) {
            slot.released.store(true, Ordering::Release);
        }
    }

    /// Whether namespace `id` has an open socket (tests, diagnostics).
    pub fn is_open(&self, id: NsId) -> bool {
        self.map()
            .as_ref()
            .is_some_and(|m| m.entries.contains_key(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns::NsKind;
    use std::sync::atomic::AtomicUsize;
    use std::thread::ThreadId;

    /// A stand-in socket that notes where it is closed.
    struct Fake {
        closed_on: &'static Mutex<Vec<String>>,
    }
    impl Drop for Fake {
        fn drop(&mut self) {
            let name = std::thread::current().name().unwrap_or("?").to_string();
            self.closed_on.lock().unwrap().push(name);
        }
    }

    fn own_netns() -> Option<Namespace> {
        // Opening a socket "inside" our own namespace still needs setns (CAP_SYS_ADMIN).
        nix::unistd::geteuid()
            .is_root()
            .then(|| Namespace::of_pid(std::process::id(), NsKind::Net).unwrap())
    }

    fn where_am_i() -> (ThreadId, String) {
        let t = std::thread::current();
        (t.id(), t.name().unwrap_or("?").to_string())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_free_socket_is_used_in_place_and_a_busy_one_on_its_thread() {
        static CLOSED: Mutex<Vec<String>> = Mutex::new(Vec::new());
        static OPENED: AtomicUsize = AtomicUsize::new(0);
        static K: Kept<Fake> = Kept::new(
            "kept-test-a",
            Duration::from_secs(30),
            Duration::from_secs(30),
        );
        fn open() -> Result<Fake, KeptError> {
            OPENED.fetch_add(1, Ordering::SeqCst);
            Ok(Fake { closed_on: &CLOSED })
        }
        let Some(me) = own_netns() else { return };
        let id = me.id();
        let ns = || Ok::<_, KeptError>(me.try_clone().unwrap());

        // The first job opens the socket on a namespace thread and runs on the owning thread.
        let (_, first) = K
            .run(id, ns, open, true, JobSize::Small, |_| Ok(where_am_i()))
            .await
            .unwrap();
        assert_eq!(first, "kept-test-a");
        assert!(K.is_open(id));

        // A free socket: the job runs right here, on the caller's thread.
        let caller = std::thread::current().id();
        let (t, _) = K
            .run(id, ns, open, true, JobSize::Small, |_| Ok(where_am_i()))
            .await
            .unwrap();
        assert_eq!(t, caller);
        // A large job never runs in place.
        let (_, on) = K
            .run(id, ns, open, true, JobSize::Large, |_| Ok(where_am_i()))
            .await
            .unwrap();
        assert_eq!(on, "kept-test-a");

        // A busy socket: the job waits for its own thread, which runs it after the other one.
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let id2 = id;
        let busy = tokio::spawn(async move {
            let ns =
                || Ok::<_, KeptError>(Namespace::of_pid(std::process::id(), NsKind::Net).unwrap());
            K.run(id2, ns, open, true, JobSize::Small, move |_| {
                entered_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                Ok(where_am_i())
            })
            .await
            .unwrap()
        });
        tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
            .await
            .unwrap();
        let fresh =
            || Ok::<_, KeptError>(Namespace::of_pid(std::process::id(), NsKind::Net).unwrap());
        let queued =
            tokio::spawn(K.run(id, fresh, open, true, JobSize::Small, |_| Ok(where_am_i())));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !queued.is_finished(),
            "a job ran while another used the socket"
        );
        go_tx.send(()).unwrap();
        let (_, on) = queued.await.unwrap().unwrap();
        assert_eq!(on, "kept-test-a");
        busy.await.unwrap();
        assert_eq!(
            OPENED.load(Ordering::SeqCst),
            1,
            "one socket for the namespace"
        );
        assert!(CLOSED.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_released_socket_closes_after_its_linger_on_its_own_thread() {
        static CLOSED: Mutex<Vec<String>> = Mutex::new(Vec::new());
        static K: Kept<Fake> = Kept::new(
            "kept-test-b",
            Duration::from_secs(30),
            Duration::from_millis(300),
        );
        fn open() -> Result<Fake, KeptError> {
            Ok(Fake { closed_on: &CLOSED })
        }
        let Some(me) = own_netns() else { return };
        let id = me.id();
        let ns = || Ok::<_, KeptError>(me.try_clone().unwrap());
        K.run(id, ns, open, true, JobSize::Small, |_| Ok(()))
            .await
            .unwrap();
        K.run(id, ns, open, true, JobSize::Small, |_| Ok(()))
            .await
            .unwrap();

        // Released, then used again by a live fault: kept (idle is 30 s).
        K.release(id);
        K.run(id, ns, open, true, JobSize::Small, |_| Ok(()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(K.is_open(id), "a job of a live fault undoes the release");

        // Released for good: closed about `linger` after the last job, without anyone waking
        // the thread, and on that thread.
        K.run(id, ns, open, false, JobSize::Small, |_| Ok(()))
            .await
            .unwrap();
        let released = Instant::now();
        K.release(id);
        while K.is_open(id) {
            assert!(released.elapsed() < Duration::from_secs(3), "never closed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = released.elapsed();
        assert!(took >= Duration::from_millis(250), "closed early: {took:?}");
        assert_eq!(*CLOSED.lock().unwrap(), ["kept-test-b"]);

        // The next job opens a new socket.
        K.run(id, ns, open, true, JobSize::Small, |_| Ok(()))
            .await
            .unwrap();
        assert!(K.is_open(id));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_slow_job_in_place_jobs_go_to_the_sockets_thread() {
        static CLOSED: Mutex<Vec<String>> = Mutex::new(Vec::new());
        static K: Kept<Fake> = Kept::new(
            "kept-test-c",
            Duration::from_secs(30),
            Duration::from_secs(30),
        );
        fn open() -> Result<Fake, KeptError> {
            Ok(Fake { closed_on: &CLOSED })
        }
        let Some(me) = own_netns() else { return };
        let id = me.id();
        let ns = || Ok::<_, KeptError>(me.try_clone().unwrap());
        K.run(id, ns, open, true, JobSize::Small, |_| Ok(()))
            .await
            .unwrap();
        let caller = std::thread::current().id();
        // In place, and slow (a contended kernel lock, say).
        let (t, _) = K
            .run(id, ns, open, true, JobSize::Small, |_| {
                std::thread::sleep(SLOW_JOB + Duration::from_millis(3));
                Ok(where_am_i())
            })
            .await
            .unwrap();
        assert_eq!(t, caller);
        // The next one does not block the caller's thread: it runs on the socket's.
        let (_, on) = K
            .run(id, ns, open, true, JobSize::Small, |_| Ok(where_am_i()))
            .await
            .unwrap();
        assert_eq!(on, "kept-test-c");
    }
}
