//! One netfilter socket per network namespace, kept open while faultd works there.
//!
//! Closing an nfnetlink socket that deleted anything makes the kernel wait for the deferred
//! destroy of those objects (an RCU grace period: 7-45 ms measured, with the namespace's
//! nf_tables commit mutex held). Every faultd batch deletes (the atomic replace deletes the old
//! table), so a socket per call would put that wait on every request. Instead each namespace
//! gets a thread that owns its socket and runs the namespace's firewall jobs one at a time; the
//! thread closes the socket and exits when it has been idle for [`IDLE`], or [`LINGER`] after
//! the namespace's last firewall fault ended ([`release`]). The close, and its wait, happen on
//! that thread, never on a request's path.
//!
//! The socket is opened on a namespace thread ([`Namespace::run_async`]); the owning thread
//! never enters a namespace (a netlink socket keeps talking to the namespace it was created
//! in). A socket holds a reference on its namespace, so a namespace stays alive at most
//! [`IDLE`] after faultd last touched it.
use std::collections::HashMap;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::nlsock::NfSocket;
use super::FirewallError;
use crate::ns::{Namespace, NsId};

/// An idle socket is closed after this.
pub const IDLE: Duration = Duration::from_secs(10);
/// After [`release`]: short, so a pod's namespace is not pinned, but long enough for the
/// controller's next call (it often recovers and re-applies back to back).
pub const LINGER: Duration = Duration::from_secs(1);

type Job = Box<dyn FnOnce(&mut NfSocket) + Send>;

enum Cmd {
    /// A job; `hold`: it writes a fault's table, so the socket is kept [`IDLE`] again.
    Job(Job, bool),
    /// The namespace's last fault ended: close [`LINGER`] after the last job from now on.
    Release,
}

struct Entry {
    tx: Sender<Cmd>,
    generation: u64,
}

#[derive(Default)]
struct Map {
    entries: HashMap<NsId, Entry>,
    generation: u64,
}

static CONNS: Mutex<Option<Map>> = Mutex::new(None);

fn conns() -> MutexGuard<'static, Option<Map>> {
    CONNS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands `cmd` to the thread of `id`, if there is one; gives it back otherwise.
fn send(id: NsId, cmd: Cmd) -> Result<(), Cmd> {
    let mut g = conns();
    let map = g.get_or_insert_with(Map::default);
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

/// Runs `f` with the namespace's socket on its thread.
pub async fn with_socket<T, F>(ns: &Namespace, f: F) -> Result<T, FirewallError>
where
    T: Send + 'static,
    F: FnOnce(&mut NfSocket) -> Result<T, FirewallError> + Send + 'static,
{
    run(ns, f, false).await
}

/// [`with_socket`] for a job that writes a fault's table: the socket is kept while it lives
/// (undoes [`release`]).
pub async fn with_socket_holding<T, F>(ns: &Namespace, f: F) -> Result<T, FirewallError>
where
    T: Send + 'static,
    F: FnOnce(&mut NfSocket) -> Result<T, FirewallError> + Send + 'static,
{
    run(ns, f, true).await
}

/// [`with_socket`] for a one-off read (doctor's scan of every namespace): uses the namespace's
/// kept socket if it has one, else a socket of its own on a namespace thread, closed there (a
/// socket that deleted nothing closes without waiting), so a scan starts no kept threads.
pub async fn with_socket_once<T, F>(ns: &Namespace, f: F) -> Result<T, FirewallError>
where
    T: Send + 'static,
    F: FnOnce(&mut NfSocket) -> Result<T, FirewallError> + Send + 'static,
{
    if is_open(ns.id()) {
        return with_socket(ns, f).await;
    }
    ns.run_async(move || NfSocket::open().and_then(|mut s| f(&mut s)))
        .await
        .map_err(|e| FirewallError::Namespace(e.to_string()))?
}

async fn run<T, F>(ns: &Namespace, f: F, hold: bool) -> Result<T, FirewallError>
where
    T: Send + 'static,
    F: FnOnce(&mut NfSocket) -> Result<T, FirewallError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |s: &mut NfSocket| {
        let _ = tx.send(f(s));
    });
    let id = ns.id();
    if let Err(cmd) = send(id, Cmd::Job(job, hold)) {
        let socket = ns
            .run_async(NfSocket::open)
            .await
            .map_err(|e| FirewallError::Namespace(e.to_string()))??;
        start(id, socket, cmd)?;
    }
    rx.await
        .map_err(|_| FirewallError::Internal("the namespace's firewall thread ended".into()))?
}

/// Starts the thread of `id` with `socket` and `first` as its first command (or hands `first`
/// to a thread another call started meanwhile, closing the spare socket in the background).
fn start(id: NsId, socket: NfSocket, first: Cmd) -> Result<(), FirewallError> {
    let mut g = conns();
    let map = g.get_or_insert_with(Map::default);
    if let Some(e) = map.entries.get(&id) {
        if let Err(back) = e.tx.send(first) {
            map.entries.remove(&id);
            drop(g);
            return start(id, socket, back.0);
        }
        drop(g);
        close_in_background(socket);
        return Ok(());
    }
    let (tx, rx) = channel::<Cmd>();
    tx.send(first).expect("receiver alive");
    map.generation += 1;
    let generation = map.generation;
    std::thread::Builder::new()
        .name("faultd-nft".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let mut socket = socket;
            let mut released = false;
            let mut deadline = Instant::now() + IDLE;
            let handle = |cmd: Cmd, socket: &mut NfSocket, released: &mut bool| {
                match cmd {
                    Cmd::Job(job, hold) => {
                        job(socket);
                        *released &= !hold;
                    }
                    Cmd::Release => *released = true,
                }
                Instant::now() + if *released { LINGER } else { IDLE }
            };
            loop {
                let wait = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(cmd) => deadline = handle(cmd, &mut socket, &mut released),
                    Err(RecvTimeoutError::Timeout) => {
                        let mut g = conns();
                        let map = g.get_or_insert_with(Map::default);
                        if let Ok(cmd) = rx.try_recv() {
                            drop(g);
                            deadline = handle(cmd, &mut socket, &mut released);
                            continue;
                        }
                        if map
                            .entries
                            .get(&id)
                            .is_some_and(|e| e.generation == generation)
                        {
                            map.entries.remove(&id);
                        }
                        break;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            drop(socket); // the close and its RCU wait happen here, off every request
        })
        .map_err(|e| FirewallError::Internal(format!("spawning the firewall thread: {e}")))?;
    map.entries.insert(id, Entry { tx, generation });
    Ok(())
}

fn close_in_background(socket: NfSocket) {
    let _ = std::thread::Builder::new()
        .name("faultd-nft-close".into())
        .stack_size(64 * 1024)
        .spawn(move || drop(socket));
}

/// The namespace's last firewall fault ended: close its socket soon unless it is used again.
pub fn release(id: NsId) {
    let _ = send(id, Cmd::Release);
}

/// Namespaces with an open socket (tests, diagnostics).
pub fn open_count() -> usize {
    conns().as_ref().map_or(0, |m| m.entries.len())
}

/// Whether namespace `id` has an open socket (tests, diagnostics).
pub fn is_open(id: NsId) -> bool {
    conns()
        .as_ref()
        .is_some_and(|m| m.entries.contains_key(&id))
}
