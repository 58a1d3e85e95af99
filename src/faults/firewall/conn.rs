//! One netfilter socket per network namespace, kept open while faultd works there.
//!
//! Closing an nfnetlink socket that deleted anything makes the kernel wait for the deferred
//! destroy of those objects (an RCU grace period: 7-45 ms measured, with the namespace's
//! nf_tables commit mutex held). Every faultd batch deletes (the atomic replace deletes the old
//! table), so a socket per call would put that wait on every request. Instead each namespace's
//! socket is kept ([`crate::ns::kept`]): its thread runs the namespace's firewall jobs one at a
//! time and closes the socket when it has been idle for [`IDLE`], or [`LINGER`] after the
//! namespace's last firewall fault ended ([`release`]). The close, and its wait, happen on that
//! thread, never on a request's path.
use std::time::Duration;

use super::nlsock::NfSocket;
use super::nlwire::Batch;
use super::FirewallError;
use crate::ns::kept::{JobSize, Kept, KeptError};
use crate::ns::{Namespace, NsId};

/// An idle socket is closed after this.
pub const IDLE: Duration = Duration::from_secs(10);
/// After [`release`]: short, so a pod's namespace is not pinned, but long enough for the
/// controller's next call (it often recovers and re-applies back to back).
pub const LINGER: Duration = Duration::from_secs(1);

static CONNS: Kept<NfSocket> = Kept::new("faultd-nft", IDLE, LINGER);

impl From<KeptError> for FirewallError {
    fn from(e: KeptError) -> Self {
        match e {
            KeptError::Namespace(e) => FirewallError::Namespace(e.to_string()),
            other => FirewallError::Internal(other.to_string()),
        }
    }
}

/// A batch with more attribute bytes than this makes the kernel work for about a millisecond
/// or more (measured: ~37 µs per KiB), so it runs on the socket's thread, not in place.
pub const IN_PLACE_MAX_BATCH: usize = 16 * 1024;

/// How a job that sends `batch` is run (see [`crate::ns::kept`]).
pub fn job_size(batch: &Batch) -> JobSize {
    if batch.payload_len() > IN_PLACE_MAX_BATCH {
        JobSize::Large
    } else {
        JobSize::Small
    }
}

/// Runs `f` with the namespace's socket (a read, or a small write: in place when the socket is
/// free).
pub async fn with_socket<T, F>(ns: &Namespace, f: F) -> Result<T, FirewallError>
where
    T: Send + 'static,
    F: FnOnce(&mut NfSocket) -> Result<T, FirewallError> + Send + 'static,
{
    run(ns, f, false, JobSize::Small).await
}

/// [`with_socket`] for a job of `size` that sends a batch.
pub async fn with_socket_sized<T, F>(
    ns: &Namespace,
    size: JobSize,
    f: F,
) -> Result<T, FirewallError>
where
    T: Send + 'static,
    F: FnOnce(&mut NfSocket) -> Result<T, FirewallError> + Send + 'static,
{
    run(ns, f, false, size).await
}

/// [`with_socket_sized`] for a job that writes a fault's table: the socket is kept while it
/// lives (undoes [`release`]).
pub async fn with_socket_holding<T, F>(
    ns: &Namespace,
    size: JobSize,
    f: F,
) -> Result<T, FirewallError>
where
    T: Send + 'static,
    F: FnOnce(&mut NfSocket) -> Result<T, FirewallError> + Send + 'static,
{
    run(ns, f, true, size).await
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

async fn run<T, F>(ns: &Namespace, f: F, hold: bool, size: JobSize) -> Result<T, FirewallError>
where
    T: Send + 'static,
    F: FnOnce(&mut NfSocket) -> Result<T, FirewallError> + Send + 'static,
{
    let found = || {
        ns.try_clone()
            .map_err(|e| FirewallError::Namespace(e.to_string()))
    };
    CONNS
        .run(ns.id(), found, NfSocket::open, hold, size, f)
        .await
}

/// The namespace's last firewall fault ended: close its socket soon unless it is used again.
pub fn release(id: NsId) {
    CONNS.release(id);
}

/// Whether namespace `id` has an open socket (tests, diagnostics).
pub fn is_open(id: NsId) -> bool {
    CONNS.is_open(id)
}
