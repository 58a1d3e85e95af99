//! Sockets kept open per namespace, each owned by a thread of its own.
//!
//! A netlink socket keeps talking to the namespace it was created in, whichever thread uses it.
//! Kinds that visit the same namespace again and again (a fault's apply, its update, its undo)
//! keep one socket there instead of paying, on every request, for a namespace thread, `setns`,
//! the socket and its close. Each namespace's socket is owned by one thread that runs the jobs
//! sent to it one at a time; the socket is opened on a namespace thread
//! ([`Namespace::run_async`]), and the owning thread never enters a namespace.
//!
//! The thread closes the socket and exits when it has been idle for the kept set's `idle`, or
//! its `linger` after the namespace's last fault ended ([`Kept::release`]). The close happens
//! there, never on a request's path (closing an nf_tables socket that deleted objects waits
//! for an RCU grace period). A socket holds a reference on its namespace, so a namespace stays
//! alive at most `idle` after faultd last touched it, and its identity `(dev, inode)` cannot be
//! reused while it is kept: a job sent by identity always reaches the namespace the socket was
//! opened in.
use std::collections::HashMap;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Mutex, MutexGuard};
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

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

enum Cmd<S> {
    /// A job; `hold`: it belongs to a live fault, so the socket is kept `idle` again.
    Job(Job<S>, bool),
    /// The namespace's last fault ended: close `linger` after the last job from now on.
    Release,
}

struct Entry<S> {
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
}

impl<S: Send + 'static> Kept<S> {
    pub const fn new(name: &'static str, idle: Duration, linger: Duration) -> Self {
        Kept {
            name,
            idle,
            linger,
            map: Mutex::new(None),
        }
    }

    fn map(&self) -> MutexGuard<'_, Option<Map<S>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Runs `f` with the socket kept for namespace `id`, on its thread. When there is none yet,
    /// `ns` gives the namespace, `open` opens a socket inside it (on a namespace thread) and a
    /// thread starts to own it. `hold`: the job belongs to a live fault (undoes
    /// [`Kept::release`]).
    pub async fn run<T, E, F>(
        &'static self,
        id: NsId,
        ns: impl FnOnce() -> Result<Namespace, E>,
        open: fn() -> Result<S, E>,
        hold: bool,
        f: F,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<KeptError> + Send + 'static,
        F: FnOnce(&mut S) -> Result<T, E> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job<S> = Box::new(move |s: &mut S| {
            let _ = tx.send(f(s));
        });
        if let Err(cmd) = self.send(id, Cmd::Job(job, hold)) {
            let socket = ns()?
                .run_async(open)
                .await
                .map_err(|e| E::from(KeptError::Namespace(e)))??;
            self.start(id, socket, cmd).map_err(E::from)?;
        }
        rx.await.map_err(|_| E::from(KeptError::Ended(self.name)))?
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
        std::thread::Builder::new()
            .name(self.name.into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut socket = socket;
                let mut released = false;
                let mut deadline = Instant::now() + self.idle;
                let handle = |cmd: Cmd<S>, socket: &mut S, released: &mut bool| {
                    match cmd {
                        Cmd::Job(job, hold) => {
                            job(socket);
                            *released &= !hold;
                        }
                        Cmd::Release => *released = true,
                    }
                    Instant::now() + if *released { self.linger } else { self.idle }
                };
                loop {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait) {
                        Ok(cmd) => deadline = handle(cmd, &mut socket, &mut released),
                        Err(RecvTimeoutError::Timeout) => {
                            let mut g = self.map();
                            if let Ok(cmd) = rx.try_recv() {
                                drop(g);
                                deadline = handle(cmd, &mut socket, &mut released);
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
                            break;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                drop(socket); // the close (and any wait it has) happens here, off every request
            })
            .map_err(|source| KeptError::Spawn {
                name: self.name,
                source,
            })?;
        map.entries.insert(id, Entry { tx, generation });
        Ok(())
    }

    fn close_in_background(&self, socket: S) {
        let _ = std::thread::Builder::new()
            .name(format!("{}-close", self.name))
            .stack_size(64 * 1024)
            .spawn(move || drop(socket));
    }

    /// The namespace's last fault ended: close its socket soon unless it is used again.
    pub fn release(&self, id: NsId) {
        let _ = self.send(id, Cmd::Release);
    }

    /// Whether namespace `id` has an open socket (tests, diagnostics).
    pub fn is_open(&self, id: NsId) -> bool {
        self.map()
            .as_ref()
            .is_some_and(|m| m.entries.contains_key(&id))
    }
}
