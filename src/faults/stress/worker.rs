//! `faultd stress-worker`: the hidden subcommand a stress fault runs as (faultd re-executes
//! itself through `/proc/self/exe`). By the time `main` runs, the daemon's `pre_exec` has put
//! the process in the target's cgroups, set `PR_SET_PDEATHSIG(SIGKILL)` and `oom_score_adj`.
//!
//! The worker (single-threaded, no async runtime) checks the target is still the process the
//! fault was aimed at, enters its pid namespace for its future children (`setns(CLONE_NEWPID)`),
//! drops every capability (bounding, ambient, inheritable, effective, permitted) and sets
//! `no_new_privs` ([`crate::privilege::drop_all`]; failing that, it exits), forks the load
//! processes (visible in the container, dying with it), reports readiness on a pipe, and
//! supervises:
//! * SIGTERM/SIGINT: kill and reap the load processes, exit 0 (a clean cancel);
//! * the target exits: same, exit [`EXIT_TARGET_GONE`];
//! * a load process dies: kill the others, exit [`EXIT_LOAD_KILLED`] if it was killed by a
//!   signal (the OOM killer sends SIGKILL), else [`EXIT_LOAD_FAILED`].
//!
//! Load processes carry PDEATHSIG too, so nothing outlives the worker, and the worker nothing
//! outlives the daemon thread that spawned it. Every process keeps the worker's command line,
//! including `--fault-id`, so a later daemon finds them in `/proc/*/cmdline`.
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::parse::CpuMethod;

/// Setup failed (message on the ready pipe and stderr).
pub const EXIT_SETUP: i32 = 2;
/// The target process exited.
pub const EXIT_TARGET_GONE: i32 = 3;
/// A load process exited by itself (allocation failed, ...).
pub const EXIT_LOAD_FAILED: i32 = 4;
/// A load process was killed by a signal (SIGKILL: the OOM killer, usually).
pub const EXIT_LOAD_KILLED: i32 = 9;

/// The subcommand name; doctor and revert look for it in command lines.
pub const SUBCOMMAND: &str = "stress-worker";

/// What load to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadKind {
    Cpu,
    Memory,
}

/// Arguments of `faultd stress-worker` (built by the daemon, never typed by people).
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Fault this worker belongs to.
    #[arg(long)]
    pub fault_id: String,
    /// Target process (host pid) and its start time in clock ticks.
    #[arg(long)]
    pub target_pid: u32,
    #[arg(long)]
    pub target_start_ticks: u64,
    /// Start the load processes in the target's pid namespace.
    #[arg(long)]
    pub enter_pid_ns: bool,
    /// Inherited pipe to report readiness on (`ok` or `err <message>`).
    #[arg(long, default_value_t = -1)]
    pub ready_fd: i32,
    #[arg(long, value_enum)]
    pub kind: LoadKind,
    /// Number of load processes.
    #[arg(long)]
    pub workers: u32,
    /// CPU: percent of one CPU per process.
    #[arg(long, default_value_t = 100)]
    pub load: u8,
    /// CPU: duty cycle in microseconds.
    #[arg(long, default_value_t = 100_000)]
    pub period_us: u64,
    #[arg(long, value_enum, default_value_t = CpuMethod::Sqrt)]
    pub method: CpuMethod,
    /// Memory: bytes per load process.
    #[arg(long, default_value_t = 0)]
    pub bytes: u64,
    /// Memory: time to reach the size, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub ramp_ms: u64,
}

impl WorkerArgs {
    /// The argv after the executable name (`stress-worker --fault-id ...`).
    pub fn to_argv(&self) -> Vec<String> {
        let mut v = vec![
            SUBCOMMAND.to_string(),
            "--fault-id".into(),
            self.fault_id.clone(),
            "--target-pid".into(),
            self.target_pid.to_string(),
            "--target-start-ticks".into(),
            self.target_start_ticks.to_string(),
        ];
        if self.enter_pid_ns {
            v.push("--enter-pid-ns".into());
        }
        v.extend([
            "--ready-fd".into(),
            self.ready_fd.to_string(),
            "--workers".into(),
            self.workers.to_string(),
        ]);
        match self.kind {
            LoadKind::Cpu => v.extend([
                "--kind".into(),
                "cpu".into(),
                "--load".into(),
                self.load.to_string(),
                "--period-us".into(),
                self.period_us.to_string(),
                "--method".into(),
                self.method.as_str().into(),
            ]),
            LoadKind::Memory => v.extend([
                "--kind".into(),
                "memory".into(),
                "--bytes".into(),
                self.bytes.to_string(),
                "--ramp-ms".into(),
                self.ramp_ms.to_string(),
            ]),
        }
        v
    }
}

/// Writes a line to stderr (the daemon's log), ignoring errors: unlike `eprintln!` it never
/// panics when the daemon's end of the pipe is gone.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn set_name(name: &str) {
    if let Ok(c) = CString::new(name) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr() as libc::c_ulong, 0, 0, 0) };
    }
}

struct Ready(i32);

impl Ready {
    fn send(&mut self, msg: &str) {
        if self.0 < 0 {
            return;
        }
        let line = format!("{}\n", msg.replace('\n', " "));
        // SAFETY: writing a buffer we own to a descriptor we own, then closing it.
        unsafe {
            libc::write(self.0, line.as_ptr().cast(), line.len());
            libc::close(self.0);
        }
        self.0 = -1;
    }
}

/// The start ticks of `pid` if it runs (not a zombie).
fn start_ticks(pid: u32) -> Option<u64> {
    crate::process::stat(pid)
        .ok()
        .filter(|s| !matches!(s.state, 'Z' | 'X'))
        .map(|s| s.start_ticks)
}

/// Runs the worker; returns the exit code.
pub fn run(a: &WorkerArgs) -> i32 {
    set_name("faultd-stress");
    let mut ready = Ready(a.ready_fd);
    let worker_pid = std::process::id();
    // SAFETY: installing an async-signal-safe handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
    }
    let target_alive = || start_ticks(a.target_pid) == Some(a.target_start_ticks);
    let fail = |ready: &mut Ready, msg: String| {
        note!(
            "faultd stress-worker {} (fault {}): {msg}",
            worker_pid,
            a.fault_id
        );
        ready.send(&format!("err {msg}"));
        EXIT_SETUP
    };
    if a.workers == 0 {
        return fail(&mut ready, "no load processes requested".into());
    }
    if !target_alive() {
        return fail(
            &mut ready,
            format!("target process {} is gone", a.target_pid),
        );
    }
    // A pidfd tells the supervision loop at once when the target exits.
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let pidfd =
        unsafe { libc::syscall(libc::SYS_pidfd_open, a.target_pid as libc::c_int, 0) } as i32;
    // (Read while capabilities are held.) Children see a parent outside their pid namespace as pid 0; a target in the worker's
    // own pid namespace (a host process, a hostPID container) leaves them beside it.
    let own_pid_ns = {
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
        let own = ino("/proc/self/ns/pid");
        own.is_some() && own == ino(&format!("/proc/{}/ns/pid", a.target_pid))
    };
    if a.enter_pid_ns {
        let ns = match std::fs::File::open(format!("/proc/{}/ns/pid", a.target_pid)) {
            Ok(f) => f,
            Err(e) => {
                return fail(
                    &mut ready,
                    format!("opening the target's pid namespace: {e}"),
                )
            }
        };
        // Opened after the identity check: make sure it is still the same process.
        if !target_alive() {
            return fail(
                &mut ready,
                format!("target process {} is gone", a.target_pid),
            );
        }
        use std::os::fd::AsFd;
        if let Err(e) = nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWPID) {
            return fail(
                &mut ready,
                format!("entering the target's pid namespace: {e}"),
            );
        }
    }
    // Everything that needs a capability is done (the daemon joined the cgroups and set
    // oom_score_adj before exec; the pid namespace is entered above): drop every capability and
    // set no_new_privs before any load, so the load processes inherit the empty sets. A worker
    // that cannot drop them does not run.
    if let Err(e) = crate::privilege::drop_all() {
        return fail(&mut ready, format!("dropping privileges: {e}"));
    }
    let expected_ppid = if a.enter_pid_ns && !own_pid_ns {
        0
    } else {
        worker_pid as i32
    };
    let mut children: Vec<i32> = Vec::with_capacity(a.workers as usize);
    for i in 0..a.workers {
        // SAFETY: the worker is single-threaded, so the child may run arbitrary code.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            child_main(a, i, expected_ppid);
        }
        if pid < 0 {
            let e = std::io::Error::last_os_error();
            kill_and_reap(&children);
            return fail(&mut ready, format!("forking load process {i}: {e}"));
        }
        children.push(pid);
    }
    ready.send("ok");
    supervise(a, pidfd, &children, &target_alive)
}

fn kill_and_reap(children: &[i32]) {
    for &c in children {
        // SAFETY: signalling our own children.
        unsafe { libc::kill(c, libc::SIGKILL) };
    }
    for &c in children {
        let mut st = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(c, &mut st, 0) };
    }
}

fn supervise(a: &WorkerArgs, pidfd: i32, children: &[i32], target_alive: &dyn Fn() -> bool) -> i32 {
    let mut live: Vec<i32> = children.to_vec();
    loop {
        let mut pfd = libc::pollfd {
            fd: pidfd,
            events: libc::POLLIN,
            revents: 0,
        };
        let n = if pidfd >= 0 { 1 } else { 0 };
        // SAFETY: one pollfd we own (or none), bounded timeout.
        unsafe { libc::poll(&mut pfd, n, 100) };
        if STOP.load(Ordering::SeqCst) {
            kill_and_reap(&live);
            return 0;
        }
        let gone = if pidfd >= 0 {
            pfd.revents != 0 && !target_alive()
        } else {
            !target_alive()
        };
        if gone {
            note!(
                "faultd stress-worker (fault {}): target process {} exited; stopping",
                a.fault_id,
                a.target_pid
            );
            kill_and_reap(&live);
            return EXIT_TARGET_GONE;
        }
        let mut st = 0;
        // SAFETY: non-blocking reap of any of our children.
        let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if pid <= 0 {
            continue;
        }
        live.retain(|&c| c != pid);
        let code = if libc::WIFSIGNALED(st) {
            let sig = libc::WTERMSIG(st);
            note!(
                "faultd stress-worker (fault {}): load process {pid} was killed by signal {sig}{}",
                a.fault_id,
                if sig == libc::SIGKILL {
                    " (the OOM killer, if memory ran out)"
                } else {
                    ""
                }
            );
            EXIT_LOAD_KILLED
        } else {
            note!(
                "faultd stress-worker (fault {}): load process {pid} exited with status {}",
                a.fault_id,
                libc::WEXITSTATUS(st)
            );
            EXIT_LOAD_FAILED
        };
        kill_and_reap(&live);
        return code;
    }
}

/// A load process: never returns.
fn child_main(a: &WorkerArgs, index: u32, expected_ppid: i32) -> ! {
    // SAFETY: plain syscalls in a freshly forked single-threaded child.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        // The worker may have died before PDEATHSIG was armed.
        if libc::getppid() != expected_ppid {
            libc::_exit(1);
        }
        if a.ready_fd >= 0 {
            libc::close(a.ready_fd);
        }
    }
    let code = match a.kind {
        LoadKind::Cpu => {
            set_name(&format!("faultd-cpu-{index}"));
            cpu_load(
                a.load,
                Duration::from_micros(a.period_us.max(1000)),
                a.method,
            )
        }
        LoadKind::Memory => {
            set_name(&format!("faultd-mem-{index}"));
            memory_load(a.bytes, Duration::from_millis(a.ramp_ms))
        }
    };
    // SAFETY: leaving the forked child without running the parent's atexit handlers.
    unsafe { libc::_exit(code) }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn sleep_until_ns(deadline: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: absolute sleep on CLOCK_MONOTONIC; retried when a signal interrupts it.
    while unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    } == libc::EINTR
    {}
}

/// About 20 µs of work of the given kind.
#[inline(never)]
fn burn(method: CpuMethod, seed: &mut u64) {
    use std::hint::black_box;
    match method {
        CpuMethod::Sqrt => {
            let mut x = *seed as f64;
            for i in 0..2000u32 {
                x = black_box((x + i as f64).sqrt() + 1.0);
            }
            *seed = x as u64 ^ 0x5eed;
        }
        CpuMethod::Int64 => {
            let mut x = *seed;
            for i in 0..4000u64 {
                x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
            }
            *seed = x;
        }
        CpuMethod::Double => {
            let mut x = *seed as f64 * 1e-9 + 1.0;
            for _ in 0..4000u32 {
                x = black_box(x * 1.000_000_1 + 0.000_000_1);
            }
            *seed = x.to_bits();
        }
        CpuMethod::Loop => {
            for i in 0..8000u64 {
                black_box(i);
            }
        }
    }
}

/// Keeps `load` % of one CPU busy: each cycle of `period` spins until this process has used
/// `load` % of the wall time since it started (CPU time, so preemption does not count as
/// work), then sleeps to the cycle's end. A deficit (the CPU was contended or the cgroup
/// throttled) is caught up, up to two cycles or half a second of busy time; more is forgiven.
fn cpu_load(load: u8, period: Duration, method: CpuMethod) -> i32 {
    if load == 0 {
        loop {
            // SAFETY: pause only waits for a signal.
            unsafe { libc::pause() };
        }
    }
    let period_ns = period.as_nanos() as u64;
    let share = load as f64 / 100.0;
    // Catch up a deficit of up to 2 cycles or 0.5 s (whichever is longer) of busy time.
    let max_debt = (share * (2 * period_ns).max(500_000_000) as f64) as u64;
    let t0 = clock_ns(libc::CLOCK_MONOTONIC);
    let cpu0 = clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID);
    let mut forgiven: u64 = 0;
    let mut seed = t0;
    loop {
        let now = clock_ns(libc::CLOCK_MONOTONIC);
        let cycle_end = t0 + ((now - t0) / period_ns + 1) * period_ns;
        let want = ((cycle_end - t0) as f64 * share) as u64;
        let used = clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID) - cpu0 + forgiven;
        if want > used + max_debt {
            forgiven += want - used - max_debt;
        }
        let want = want.saturating_sub(forgiven);
        while clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID) - cpu0 < want
            && clock_ns(libc::CLOCK_MONOTONIC) < cycle_end
        {
            burn(method, &mut seed);
        }
        if load < 100 {
            sleep_until_ns(cycle_end);
        }
    }
}

/// Maps `bytes`, writes every page (linearly over `ramp`), then holds it.
fn memory_load(bytes: u64, ramp: Duration) -> i32 {
    // SAFETY: sysconf has no preconditions.
    let page = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as u64;
    let len = bytes.max(1).div_ceil(page) * page;
    // SAFETY: a fresh private anonymous mapping; we only write inside it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        note!(
            "faultd stress-worker: mapping {len} bytes: {}",
            std::io::Error::last_os_error()
        );
        return EXIT_LOAD_FAILED;
    }
    let base = p as *mut u8;
    let pages = len / page;
    let touch = |from: u64, to: u64| {
        for i in from..to {
            // SAFETY: i < pages, so the byte lies inside the mapping.
            unsafe { std::ptr::write_volatile(base.add((i * page) as usize), (i as u8) | 1) };
        }
    };
    if ramp.is_zero() {
        touch(0, pages);
    } else {
        let start = Instant::now();
        let mut done = 0;
        while done < pages {
            let f = (start.elapsed().as_secs_f64() / ramp.as_secs_f64()).min(1.0);
            let target = ((pages as f64) * f) as u64;
            let target = if f >= 1.0 { pages } else { target };
            touch(done, target);
            done = done.max(target);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    loop {
        // SAFETY: pause only waits for a signal.
        unsafe { libc::pause() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn argv_round_trips_through_the_cli() {
        for kind in [LoadKind::Cpu, LoadKind::Memory] {
            let a = WorkerArgs {
                fault_id: "0b0e5c1e-1111-2222-3333-444455556666".into(),
                target_pid: 4242,
                target_start_ticks: 987654,
                enter_pid_ns: true,
                ready_fd: 7,
                kind,
                workers: 3,
                load: 55,
                period_us: 20_000,
                method: CpuMethod::Int64,
                bytes: 1 << 20,
                ramp_ms: 1500,
            };
            let argv = a.to_argv();
            let cli = crate::cli::Cli::try_parse_from(
                std::iter::once("faultd".to_string()).chain(argv.clone()),
            )
            .unwrap();
            let Some(crate::cli::Command::StressWorker(b)) = cli.command else {
                panic!("not parsed as stress-worker: {argv:?}");
            };
            assert_eq!(b.to_argv(), argv);
            assert_eq!(b.fault_id, a.fault_id);
            assert_eq!(b.kind, kind);
        }
    }

    #[test]
    fn worker_is_hidden_from_help() {
        use clap::CommandFactory;
        let help = crate::cli::Cli::command().render_long_help().to_string();
        assert!(!help.contains(SUBCOMMAND), "{help}");
    }

    #[test]
    fn cpu_burn_takes_tens_of_microseconds() {
        for m in [
            CpuMethod::Sqrt,
            CpuMethod::Int64,
            CpuMethod::Double,
            CpuMethod::Loop,
        ] {
            let mut seed = 1;
            let t = Instant::now();
            for _ in 0..100 {
                burn(m, &mut seed);
            }
            // 100 chunks: well under a second even unoptimised.
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "{m:?}: {:?}",
                t.elapsed()
            );
        }
    }
}
