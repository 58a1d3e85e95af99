//! Starting stress workers, and finding and killing them again.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process.
//! tokio's blocking-pool threads exit when idle, so workers are forked by one dedicated,
//! never-exiting spawner thread fed through a channel; it also reaps them and remembers how
//! they ended (for the OOM note in the logs).
//!
//! The child's `pre_exec` (async-signal-safe calls only, everything prepared before the fork)
//! arms PDEATHSIG, enters the host cgroup namespace when needed, joins every cgroup of the
//! target, and sets `oom_score_adj`, all before `exec`, so the worker never allocates or spins
//! outside the container's accounting.
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::cgroup::TargetCgroups;
use super::worker::{self, WorkerArgs};
use super::StressError;
use crate::process::ProcessIdentity;

/// How long a worker may take to report readiness.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Reaping cadence while workers live.
const REAP_EVERY: Duration = Duration::from_millis(50);

struct SpawnRequest {
    cmd: Command,
    reply: mpsc::Sender<std::io::Result<ProcessIdentity>>,
}

/// How a worker this process started has ended.
#[derive(Debug, Clone, Copy)]
pub struct WorkerExit {
    pub start_ticks: u64,
    pub status: ExitStatus,
}

fn exits() -> &'static Mutex<HashMap<u32, WorkerExit>> {
    static EXITS: OnceLock<Mutex<HashMap<u32, WorkerExit>>> = OnceLock::new();
    EXITS.get_or_init(Default::default)
}

/// How the worker `who` ended, if this process started and reaped it.
pub fn exit_of(who: &ProcessIdentity) -> Option<ExitStatus> {
    let map = exits().lock().unwrap_or_else(|p| p.into_inner());
    map.get(&who.pid)
        .filter(|e| e.start_ticks == who.start_ticks)
        .map(|e| e.status)
}

/// Describes a worker's exit status for logs.
pub fn describe_exit(st: ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(0), _) => "exited normally".into(),
        (Some(worker::EXIT_SETUP), _) => "failed to set up".into(),
        (Some(worker::EXIT_TARGET_GONE), _) => "stopped: the target process exited".into(),
        (Some(worker::EXIT_LOAD_FAILED), _) => "stopped: a load process failed".into(),
        (Some(worker::EXIT_LOAD_KILLED), _) => {
            "stopped: a load process was killed by a signal".into()
        }
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(libc::SIGKILL)) => "was killed by SIGKILL".into(),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended".into(),
    }
}

fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    static TX: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("faultd-stress-spawner".into())
            .spawn(move || spawner_loop(rx))
            .expect("spawning the stress spawner thread");
        tx
    })
}

/// Runs forever (the sender lives in a static): workers' PDEATHSIG is tied to this thread.
fn spawner_loop(rx: mpsc::Receiver<SpawnRequest>) {
    let mut children: Vec<(Child, u64)> = Vec::new();
    loop {
        let msg = if children.is_empty() {
            rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(REAP_EVERY)
        };
        match msg {
            Ok(mut req) => {
                let r = req.cmd.spawn().and_then(|child| {
                    // Not reaped yet (only this thread reaps), so the pid is still the child's.
                    match ProcessIdentity::of(child.id()) {
                        Ok(who) => {
                            children.push((child, who.start_ticks));
                            Ok(who)
                        }
                        Err(e) => {
                            children.push((child, 0));
                            Err(std::io::Error::other(e.to_string()))
                        }
                    }
                });
                let _ = req.reply.send(r);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Unreachable with a static sender; never exit (workers' PDEATHSIG is tied to
                // this thread), keep reaping.
                if children.is_empty() {
                    std::thread::park();
                } else {
                    std::thread::sleep(REAP_EVERY);
                }
            }
        }
        // The map stays locked while children are reaped, so a reader that saw a worker vanish
        // from /proc finds its exit status recorded (see `is_unreaped_child`).
        let mut map = exits().lock().unwrap_or_else(|p| p.into_inner());
        children.retain_mut(|(c, ticks)| match c.try_wait() {
            Ok(Some(status)) => {
                let pid = c.id();
                if map.len() > 512 {
                    map.clear();
                }
                map.insert(
                    pid,
                    WorkerExit {
                        start_ticks: *ticks,
                        status,
                    },
                );
                false
            }
            Ok(None) => true,
            Err(_) => false,
        });
    }
}

fn cstr(s: String) -> Result<CString, StressError> {
    CString::new(s).map_err(|_| StressError::Cgroup("a cgroup path contains a NUL byte".into()))
}

/// Where the pre-exec step failed (written to the ready pipe as `E<step><index>`).
const STEP_PDEATHSIG: u8 = 1;
const STEP_CGROUPNS: u8 = 2;
const STEP_JOIN: u8 = 3;
const STEP_OOM: u8 = 4;
const STEP_FD: u8 = 5;

/// Starts a worker (blocking: call from a blocking context) and waits until it reports that
/// its load processes run. Returns the worker's identity.
pub fn spawn_worker(
    mut args: WorkerArgs,
    cgroups: &TargetCgroups,
    oom_score_adj: i32,
) -> Result<ProcessIdentity, StressError> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(StressError::Spawn(format!(
            "creating the readiness pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: both descriptors were just created and are owned here only.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let wfd = write_end.as_raw_fd();
    args.ready_fd = wfd;

    let joins: Vec<(CString, bool)> = cgroups
        .joins
        .iter()
        .map(|j| {
            Ok((
                cstr(j.dir.join("cgroup.procs").display().to_string())?,
                j.required,
            ))
        })
        .collect::<Result<_, StressError>>()?;
    let cgns: Option<OwnedFd> = if cgroups.host_cgroupns {
        let f = std::fs::File::open("/proc/1/ns/cgroup")
            .map_err(|e| StressError::Spawn(format!("opening /proc/1/ns/cgroup: {e}")))?;
        Some(f.into())
    } else {
        None
    };
    let cgns_fd = cgns.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
    let oom_path = CString::new("/proc/self/oom_score_adj").expect("static path");
    let oom_value = oom_score_adj.to_string().into_bytes();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };

    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("faultd")
        .args(args.to_argv())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0);
    // SAFETY: the closure only makes async-signal-safe calls (prctl, getppid, setns, open,
    // write, close, fcntl) on data prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let report = |step: u8, idx: u8| {
                let rec = [b'E', step, idx];
                libc::write(wfd, rec.as_ptr().cast(), rec.len());
            };
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0
                || libc::getppid() != parent
            {
                report(STEP_PDEATHSIG, 0);
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            if cgns_fd >= 0 && libc::setns(cgns_fd, libc::CLONE_NEWCGROUP) != 0 {
                let e = std::io::Error::last_os_error();
                report(STEP_CGROUPNS, 0);
                return Err(e);
            }
            for (i, (path, required)) in joins.iter().enumerate() {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                let ok = fd >= 0 && libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                let e = std::io::Error::last_os_error();
                if fd >= 0 {
                    libc::close(fd);
                }
                if !ok && *required {
                    report(STEP_JOIN, i as u8);
                    return Err(e);
                }
            }
            let fd = libc::open(oom_path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            let ok = fd >= 0
                && libc::write(fd, oom_value.as_ptr().cast(), oom_value.len())
                    == oom_value.len() as isize;
            let e = std::io::Error::last_os_error();
            if fd >= 0 {
                libc::close(fd);
            }
            if !ok {
                report(STEP_OOM, 0);
                return Err(e);
            }
            // The worker inherits the pipe's write end.
            if libc::fcntl(wfd, libc::F_SETFD, 0) != 0 {
                let e = std::io::Error::last_os_error();
                report(STEP_FD, 0);
                return Err(e);
            }
            Ok(())
        });
    }

    let (tx, rx) = mpsc::channel();
    spawner()
        .send(SpawnRequest { cmd, reply: tx })
        .map_err(|_| StressError::Spawn("the spawner thread is gone".into()))?;
    let spawned = rx
        .recv()
        .map_err(|_| StressError::Spawn("the spawner thread did not answer".into()));
    drop(write_end);
    drop(cgns);
    let mut pipe = std::fs::File::from(read_end);
    let who = match spawned? {
        Ok(who) => who,
        Err(e) => {
            let mut rec = [0u8; 3];
            let step = match pipe.read(&mut rec) {
                Ok(3) if rec[0] == b'E' => Some((rec[1], rec[2] as usize)),
                _ => None,
            };
            let what = match step {
                Some((STEP_PDEATHSIG, _)) => "arming PR_SET_PDEATHSIG".to_string(),
                Some((STEP_CGROUPNS, _)) => "entering the host cgroup namespace".to_string(),
                Some((STEP_JOIN, i)) => format!(
                    "joining the target's cgroup {}",
                    cgroups
                        .joins
                        .get(i)
                        .map(|j| j.dir.display().to_string())
                        .unwrap_or_default()
                ),
                Some((STEP_OOM, _)) => format!("setting oom_score_adj {oom_score_adj}"),
                _ => "starting the worker".to_string(),
            };
            return Err(StressError::Spawn(format!("{what}: {e}")));
        }
    };
    match read_ready_line(&mut pipe, READY_TIMEOUT) {
        Ok(line) if line == "ok" => Ok(who),
        Ok(line) => {
            kill_verified(&who, libc::SIGKILL);
            let msg = line.strip_prefix("err ").unwrap_or(&line).to_string();
            if msg.contains("is gone") {
                Err(StressError::TargetGone(args.target_pid))
            } else {
                Err(StressError::Spawn(msg))
            }
        }
        Err(msg) => {
            kill_verified(&who, libc::SIGKILL);
            // Give the spawner a moment to reap it, for a better message.
            let t0 = Instant::now();
            while exit_of(&who).is_none() && t0.elapsed() < Duration::from_millis(300) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let how = exit_of(&who).map(describe_exit).unwrap_or_default();
            Err(StressError::Spawn(
                format!("the worker {msg} {how}").trim().to_string(),
            ))
        }
    }
}

fn read_ready_line(pipe: &mut std::fs::File, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("did not report readiness within {timeout:?};"));
        }
        let mut pfd = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd we own.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("readiness pipe: {e};"));
        }
        if n == 0 {
            continue;
        }
        let mut chunk = [0u8; 512];
        match pipe.read(&mut chunk) {
            Ok(0) => return Err("exited during setup:".into()),
            Ok(k) => {
                buf.extend_from_slice(&chunk[..k]);
                if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                    return Ok(String::from_utf8_lossy(&buf[..pos]).trim().to_string());
                }
                if buf.len() > 64 * 1024 {
                    return Err("sent garbage on the readiness pipe;".into());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("readiness pipe: {e};")),
        }
    }
}

/// `/proc/<pid>/stat` of `who`, if that pid is still the same process (same start ticks; a
/// zombie still counts).
fn stat_of(who: &ProcessIdentity) -> Option<crate::process::ProcStat> {
    crate::process::stat(who.pid)
        .ok()
        .filter(|s| s.start_ticks == who.start_ticks)
}

/// Whether `who` is still running (same start time, not a zombie).
pub fn is_running(who: &ProcessIdentity) -> bool {
    stat_of(who).is_some_and(|s| !matches!(s.state, 'Z' | 'X'))
}

/// Whether `who` is a zombie child of this process that the spawner has not reaped yet (it reaps
/// every 50 ms): its exit status is about to be known, so it is not "gone" yet.
pub fn is_unreaped_child(who: &ProcessIdentity) -> bool {
    stat_of(who).is_some_and(|s| s.state == 'Z' && s.ppid == std::process::id())
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    // SAFETY: a non-negative result is a descriptor we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_signal(fd: &OwnedFd, sig: i32) -> bool {
    // SAFETY: signalling through a pidfd we own; no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        ) == 0
    }
}

/// Signals `who` only if it still is that process (a pidfd pins it while we check).
pub fn kill_verified(who: &ProcessIdentity, sig: i32) -> bool {
    match pidfd_open(who.pid) {
        Some(fd) => is_running(who) && pidfd_signal(&fd, sig),
        None => {
            // SAFETY: plain kill after an identity check (kernels without pidfd).
            is_running(who) && unsafe { libc::kill(who.pid as i32, sig) } == 0
        }
    }
}

/// A `faultd stress-worker` process (the worker or one of its load processes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerProcess {
    pub pid: u32,
    /// Parent process (host pid view): the daemon for a worker, the worker for a load process.
    pub ppid: u32,
    pub fault_id: String,
    pub cmdline: String,
}

/// The fault id of a stress worker's command line, if it is one.
pub fn worker_fault_id(argv: &[&str]) -> Option<String> {
    if argv.get(1) != Some(&worker::SUBCOMMAND) {
        return None;
    }
    argv.windows(2)
        .find(|w| w[0] == "--fault-id")
        .map(|w| w[1].to_string())
}

fn read_cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    (!raw.is_empty()).then(|| String::from_utf8_lossy(&raw).into_owned())
}

/// Every live stress worker process on the node (zombies have no command line).
pub fn scan_workers() -> Vec<WorkerProcess> {
    let mut out = Vec::new();
    for pid in crate::process::pids() {
        let Some(cmd) = read_cmdline(pid) else {
            continue;
        };
        let argv: Vec<&str> = cmd.trim_end_matches('\0').split('\0').collect();
        if let Some(fault_id) = worker_fault_id(&argv) {
            out.push(WorkerProcess {
                pid,
                ppid: crate::process::parent_pid(pid).unwrap_or(0),
                fault_id,
                cmdline: argv.join(" "),
            });
        }
    }
    out
}

/// Whether `pid` is a faultd daemon (its executable is named `faultd`, and it is not a worker).
pub fn is_faultd_daemon(pid: u32) -> bool {
    let exe_is_faultd = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| {
            p.file_name()
                .map(|n| matches!(n.to_str(), Some("faultd") | Some("faultd (deleted)")))
        })
        .unwrap_or(false);
    let is_worker = read_cmdline(pid)
        .map(|c| {
            let argv: Vec<&str> = c.trim_end_matches('\0').split('\0').collect();
            worker_fault_id(&argv).is_some()
        })
        .unwrap_or(true);
    exe_is_faultd && !is_worker
}

/// Fault ids whose worker is the child of a live faultd daemon other than `me`: another
/// daemon on this node manages them (only on test hosts), so they are nobody's residue here.
pub fn foreign_fault_ids(workers: &[WorkerProcess], me: u32) -> HashSet<String> {
    let worker_pids: HashSet<u32> = workers.iter().map(|w| w.pid).collect();
    workers
        .iter()
        .filter(|w| {
            !worker_pids.contains(&w.ppid) && w.ppid != me && w.ppid > 1 && is_faultd_daemon(w.ppid)
        })
        .map(|w| w.fault_id.clone())
        .collect()
}

/// SIGKILLs `p` if its command line still names the same fault (checked through a pidfd, so
/// a reused pid is never hit). True when that process is gone afterwards (also when it had
/// already exited, e.g. a load process that followed its worker through PDEATHSIG).
pub fn kill_worker_process(p: &WorkerProcess) -> bool {
    let Some(fd) = pidfd_open(p.pid) else {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    };
    let still_ours = read_cmdline(p.pid)
        .map(|c| {
            let argv: Vec<&str> = c.trim_end_matches('\0').split('\0').collect();
            worker_fault_id(&argv).as_deref() == Some(p.fault_id.as_str())
        })
        // No command line: it has exited (a zombie) or vanished.
        .unwrap_or(false);
    !still_ours || pidfd_signal(&fd, libc::SIGKILL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_id_from_command_lines() {
        assert_eq!(
            worker_fault_id(&[
                "faultd",
                "stress-worker",
                "--fault-id",
                "abc",
                "--kind",
                "cpu"
            ]),
            Some("abc".into())
        );
        assert_eq!(
            worker_fault_id(&["faultd", "ctl", "--fault-id", "abc"]),
            None
        );
        assert_eq!(worker_fault_id(&["faultd", "stress-worker"]), None);
        assert_eq!(worker_fault_id(&[]), None);
    }

    #[test]
    fn running_and_exit_descriptions() {
        let me = ProcessIdentity::of(std::process::id()).unwrap();
        assert!(is_running(&me));
        let other = ProcessIdentity {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!is_running(&other));
        // Never signals a process whose start time differs.
        assert!(!kill_verified(&other, 0));
        assert!(kill_verified(&me, 0));
        assert_eq!(
            describe_exit(ExitStatus::from_raw(worker::EXIT_LOAD_KILLED << 8)),
            "stopped: a load process was killed by a signal"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(9)),
            "was killed by SIGKILL"
        );
    }

    #[test]
    fn only_workers_of_another_live_daemon_are_foreign() {
        let w = |pid, ppid, id: &str| WorkerProcess {
            pid,
            ppid,
            fault_id: id.into(),
            cmdline: String::new(),
        };
        // Parent is this test binary (not a faultd daemon), init, or gone: not foreign.
        let me = std::process::id();
        let ws = [
            w(u32::MAX - 5, me, "a"),
            w(u32::MAX - 4, 1, "b"),
            w(u32::MAX - 3, u32::MAX - 2, "c"),
            // A load process (its parent is a worker) never decides.
            w(u32::MAX - 1, u32::MAX - 5, "a"),
        ];
        assert!(foreign_fault_ids(&ws, 0).is_empty());
        assert!(foreign_fault_ids(&ws, me).is_empty());
    }

    #[test]
    fn scan_finds_no_worker_in_a_test_run() {
        // Test binaries are never stress workers; the scan must not error on a live /proc.
        let me = std::process::id();
        assert!(scan_workers().iter().all(|w| w.pid != me));
    }
}
