//! Remote syscalls in another process through ptrace (x86_64): seize and stop every thread,
//! run one syscall in the main thread, read and write its memory, let it go.
//!
//! The syscall runs in place: the main thread's registers are saved, `0f 05` (`syscall`) is
//! written at its PC, the registers are set to the call (`orig_rax = -1`, so a thread stopped
//! inside an interrupted syscall does not have the kernel's restart logic applied to ours),
//! one single step executes it, then the bytes and registers are restored; the interrupted
//! syscall restarts as it would have. Memory goes through `/proc/<pid>/mem`, which (to a
//! tracer) writes read-only text too, as `PTRACE_POKEDATA` does.
//!
//! Every thread is stopped from [`Traced::seize`] until [`Traced::detach`] (or drop); keep the
//! window short. Signals that arrive meanwhile are held and delivered on detach.
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::failure::FailureKind;

#[derive(Debug, thiserror::Error)]
pub enum PtraceError {
    #[error("process {0} is gone")]
    Gone(i32),
    #[error("cannot trace {pid}: {errno} (is another tracer attached, or a capability missing?)")]
    Seize { pid: i32, errno: Errno },
    #[error("{what} on thread {tid}: {errno}")]
    Ptrace {
        what: &'static str,
        tid: i32,
        errno: Errno,
    },
    #[error("thread {tid}: unexpected wait status {status}")]
    Unexpected { tid: i32, status: String },
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("the threads of {0} did not settle (threads keep appearing)")]
    Unsettled(i32),
    #[error("remote syscalls are not implemented for this architecture")]
    Unsupported,
}

impl PtraceError {
    pub fn kind(&self) -> FailureKind {
        match self {
            PtraceError::Gone(_) => FailureKind::NotFound,
            PtraceError::Seize { .. } | PtraceError::Unsettled(_) | PtraceError::Unsupported => {
                FailureKind::FailedPrecondition
            }
            PtraceError::Ptrace { .. } | PtraceError::Unexpected { .. } | PtraceError::Io(..) => {
                FailureKind::Internal
            }
        }
    }
}

crate::impl_failure!(PtraceError);

/// How many times the thread list is re-read before giving up on a process that keeps
/// spawning threads.
const SETTLE_ROUNDS: usize = 20;

struct Thread {
    tid: Pid,
    /// A signal the thread received while stopped by us, delivered on detach.
    pending: Option<Signal>,
}

/// A process with every thread stopped by us.
pub struct Traced {
    pid: Pid,
    threads: Vec<Thread>,
    mem: File,
    since: Instant,
    detached: bool,
}

fn ptrace_err(what: &'static str, tid: Pid) -> impl Fn(Errno) -> PtraceError {
    move |errno| PtraceError::Ptrace {
        what,
        tid: tid.as_raw(),
        errno,
    }
}

/// The thread ids of `pid` under `proc_root`.
pub fn thread_ids(proc_root: &Path, pid: i32) -> Result<Vec<i32>, PtraceError> {
    let dir = proc_root.join(pid.to_string()).join("task");
    let entries = std::fs::read_dir(&dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PtraceError::Gone(pid),
        _ => PtraceError::Io(dir.display().to_string(), e),
    })?;
    let mut tids: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

/// Waits for `tid` to stop. `Ok(None)`: the thread exited. A signal-delivery stop holds its
/// signal for detach.
fn wait_stop(tid: Pid) -> Result<Option<Option<Signal>>, PtraceError> {
    match waitpid(tid, Some(WaitPidFlag::__WALL)) {
        Ok(WaitStatus::PtraceEvent(..)) => Ok(Some(None)),
        Ok(WaitStatus::Stopped(_, Signal::SIGTRAP)) => Ok(Some(None)),
        Ok(WaitStatus::Stopped(_, sig)) => Ok(Some(Some(sig))),
        Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => Ok(None),
        Ok(status) => Err(PtraceError::Unexpected {
            tid: tid.as_raw(),
            status: format!("{status:?}"),
        }),
        Err(errno) => Err(ptrace_err("waitpid", tid)(errno)),
    }
}

impl Traced {
    /// Seizes and stops every thread of `pid` (re-reading `/proc/<pid>/task` until no new
    /// thread appears). On error every thread seized so far is let go.
    pub fn seize(proc_root: &Path, pid: i32) -> Result<Traced, PtraceError> {
        let mem_path: PathBuf = proc_root.join(pid.to_string()).join("mem");
        let since = Instant::now();
        let mut traced = Traced {
            pid: Pid::from_raw(pid),
            threads: Vec::new(),
            mem: File::options()
                .read(true)
                .write(true)
                .open(&mem_path)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => PtraceError::Gone(pid),
                    _ => PtraceError::Io(mem_path.display().to_string(), e),
                })?,
            since,
            detached: false,
        };
        let mut gone = Vec::new();
        for _ in 0..SETTLE_ROUNDS {
            // Seize and interrupt every new thread first, then wait for them all: the stops
            // overlap instead of queueing one behind the other (a busy thread may need a
            // scheduler tick to notice its interrupt).
            let first_new = traced.threads.len();
            for tid in thread_ids(proc_root, pid)? {
                if traced.threads.iter().any(|t| t.tid.as_raw() == tid) || gone.contains(&tid) {
                    continue;
                }
                let tid = Pid::from_raw(tid);
                match ptrace::seize(tid, ptrace::Options::empty()) {
                    Ok(()) => {}
                    Err(Errno::ESRCH) => {
                        // Exited meanwhile (or a zombie leader whose task entry stays).
                        gone.push(tid.as_raw());
                        continue;
                    }
                    Err(errno) => {
                        return Err(PtraceError::Seize {
                            pid: tid.as_raw(),
                            errno,
                        })
                    }
                }
                // Tracked from here on, so an error below still lets it go (drop).
                traced.threads.push(Thread { tid, pending: None });
                ptrace::interrupt(tid).map_err(ptrace_err("PTRACE_INTERRUPT", tid))?;
            }
            if traced.threads.len() == first_new {
                if !traced.threads.iter().any(|t| t.tid == traced.pid) {
                    return Err(PtraceError::Gone(pid));
                }
                return Ok(traced);
            }
            let mut i = first_new;
            while i < traced.threads.len() {
                let tid = traced.threads[i].tid;
                match wait_stop(tid)? {
                    Some(pending) => {
                        traced.threads[i].pending = pending;
                        i += 1;
                    }
                    None => {
                        traced.threads.remove(i);
                        gone.push(tid.as_raw());
                    }
                }
            }
        }
        Err(PtraceError::Unsettled(pid))
    }

    /// The number of threads stopped.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// How long the process has been stopped so far.
    pub fn stopped_for(&self) -> Duration {
        self.since.elapsed()
    }

    /// Reads `buf.len()` bytes at `addr` of the process.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), PtraceError> {
        self.mem.read_exact_at(buf, addr).map_err(|e| {
            PtraceError::Io(
                format!("reading {} bytes at {addr:#x} of {}", buf.len(), self.pid),
                e,
            )
        })
    }

    /// Writes `bytes` at `addr` of the process (read-only text included).
    pub fn write(&self, addr: u64, bytes: &[u8]) -> Result<(), PtraceError> {
        self.mem.write_all_at(bytes, addr).map_err(|e| {
            PtraceError::Io(
                format!("writing {} bytes at {addr:#x} of {}", bytes.len(), self.pid),
                e,
            )
        })
    }

    /// Lets every thread go, delivering held signals; returns how long the process was
    /// stopped. Threads that exited meanwhile are skipped.
    pub fn detach(mut self) -> Duration {
        self.detach_all();
        self.since.elapsed()
    }

    fn detach_all(&mut self) {
        if self.detached {
            return;
        }
        self.detached = true;
        for t in &self.threads {
            let mut r = ptrace::detach(t.tid, t.pending);
            if r == Err(Errno::ESRCH) {
                // ESRCH is also "seized but not stopped" (an error between seize and the
                // stop): stop it, then let it go. A thread that is gone fails again: fine.
                if ptrace::interrupt(t.tid).is_ok() && matches!(wait_stop(t.tid), Ok(Some(_))) {
                    r = ptrace::detach(t.tid, t.pending);
                }
            }
            match r {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => tracing::warn!(tid = t.tid.as_raw(), error = %e, "PTRACE_DETACH failed"),
            }
        }
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        self.detach_all();
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(test)]
mod tests;
