//! Process identity on this node: PIDs paired with their start time, so a reused PID is never
//! mistaken for the process that was targeted, plus the node's boot id.
//!
//! The start time crosses the wire in Chaos Mesh as gopsutil's `CreateTime()` in milliseconds:
//! `((starttime_ticks / CLK_TCK) + btime) * 1000` with integer division (1 s resolution). The
//! controller stores that pair and hands it back on cancel, so it must be computed exactly so.
use std::path::Path;

/// Errors reading process identity from procfs.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("process {pid} does not exist")]
    NotFound { pid: u32 },
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse {what}: {detail}")]
    Parse { what: &'static str, detail: String },
}

/// A process as the kernel knows it: PID plus the start time that makes it unique on this boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessIdentity {
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: start time in clock ticks since boot.
    pub start_ticks: u64,
    /// gopsutil-compatible create time in milliseconds since the epoch.
    pub start_time_ms: i64,
}

impl ProcessIdentity {
    /// Reads the identity of a live process.
    pub fn of(pid: u32) -> Result<Self, ProcessError> {
        Self::with_start(Path::new("/proc"), pid, stat(pid)?.start_ticks)
    }

    /// Same as [`ProcessIdentity::of`] with another procfs mount (tests, `/host-proc`).
    pub fn of_in(proc_root: &Path, pid: u32) -> Result<Self, ProcessError> {
        Self::with_start(proc_root, pid, stat_in(proc_root, pid)?.start_ticks)
    }

    fn with_start(proc_root: &Path, pid: u32, start_ticks: u64) -> Result<Self, ProcessError> {
        let btime = boot_time_secs_in(proc_root)?;
        Ok(ProcessIdentity {
            pid,
            start_ticks,
            start_time_ms: gopsutil_create_time_ms(start_ticks, clock_ticks(), btime),
        })
    }

    /// True when `pid` is still the same process (same start time). Reads only
    /// `/proc/<pid>/stat`: the start ticks identify the process, no boot time needed.
    pub fn is_alive(&self) -> bool {
        stat(self.pid).ok().map(|s| s.start_ticks) == Some(self.start_ticks)
    }
}

/// `((ticks / clk_tck) + btime) * 1000`, exactly as gopsutil computes `CreateTime()`.
pub fn gopsutil_create_time_ms(start_ticks: u64, clk_tck: u64, btime_secs: u64) -> i64 {
    let clk = clk_tck.max(1);
    ((start_ticks / clk + btime_secs) * 1000) as i64
}

/// The fields of `/proc/<pid>/stat` faultd uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: `R`, `S`, `Z`, ...
    pub state: char,
    /// Field 4.
    pub ppid: u32,
    /// Field 22: start time in clock ticks since boot.
    pub start_ticks: u64,
}

/// Maps a `procfs` error about `what` (a file of process `pid`, if any) to ours.
fn proc_error(
    pid: Option<u32>,
    what: &'static str,
    path: &Path,
    e: procfs::ProcError,
) -> ProcessError {
    use procfs::ProcError as E;
    match (e, pid) {
        (E::NotFound(_), Some(pid)) => ProcessError::NotFound { pid },
        (e @ (E::Incomplete(_) | E::InternalError(_)), _) => ProcessError::Parse {
            what,
            detail: e.to_string(),
        },
        (E::Io(source, _), _) => ProcessError::Io {
            path: path.display().to_string(),
            source,
        },
        (e, _) => ProcessError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        },
    }
}

/// `/proc/<pid>/stat` under another procfs mount. Read with one `open` and reads into a stack
/// buffer and parsed in place (it sits on every pid-targeted request's path: the `procfs` crate
/// took eight system calls and parsed all 52 fields into an allocated struct).
pub fn stat_in(proc_root: &Path, pid: u32) -> Result<ProcStat, ProcessError> {
    open_stat(proc_root, pid).map(|(st, _)| st)
}

/// Opens and reads `<proc_root>/<pid>/stat`; returns the open file too.
fn open_stat(proc_root: &Path, pid: u32) -> Result<(ProcStat, std::fs::File), ProcessError> {
    let path = proc_root.join(pid.to_string()).join("stat");
    let io = |source: std::io::Error| match source.raw_os_error() {
        // ESRCH: the process exited between the open and the read
        Some(libc::ENOENT | libc::ESRCH) => ProcessError::NotFound { pid },
        _ => ProcessError::Io {
            path: path.display().to_string(),
            source,
        },
    };
    let file = std::fs::File::open(&path).map_err(io)?;
    match read_stat(&file) {
        Ok(st) => Ok((st, file)),
        Err(StatRead::Io(e)) => Err(io(e)),
        Err(StatRead::Parse(detail)) => Err(ProcessError::Parse {
            what: "/proc/<pid>/stat",
            detail,
        }),
    }
}

enum StatRead {
    Io(std::io::Error),
    Parse(String),
}

/// Reads an open `/proc/<pid>/stat` from its start (`pread`: procfs renders it anew on every
/// read at offset 0) and parses it.
fn read_stat(file: &std::fs::File) -> Result<ProcStat, StatRead> {
    use std::os::unix::fs::FileExt;
    // 52 fields of at most 20 digits and a 64-byte comm fit with room to spare
    let mut buf = [0u8; 2048];
    let mut len = 0;
    loop {
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StatRead::Io(e)),
        }
        if len == buf.len() {
            return Err(StatRead::Parse(format!("longer than {} bytes", buf.len())));
        }
    }
    parse_stat(&buf[..len]).map_err(StatRead::Parse)
}

/// `/proc/<pid>/stat` files of the processes read most recently, kept open: reading one again
/// is a `pread`, where opening it walks `/proc` and builds the file anew (two thirds of the
/// read's cost on a SetTcs apply). A kept file stays bound to the process it was opened for:
/// once that process is gone its reads fail (`ESRCH`) whoever has the pid by then, and the
/// caller opens the pid afresh.
mod kept_stat {
    use std::fs::File;
    use std::sync::Mutex;

    /// At most this many files (one descriptor each).
    pub(super) const CAPACITY: usize = 32;

    /// Newest last.
    static FILES: Mutex<Vec<(u32, File)>> = Mutex::new(Vec::new());

    fn files() -> std::sync::MutexGuard<'static, Vec<(u32, File)>> {
        FILES.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the kept file of `pid` out (a caller reads it without holding the lock).
    pub(super) fn take(pid: u32) -> Option<File> {
        let mut files = files();
        let i = files.iter().position(|(p, _)| *p == pid)?;
        Some(files.remove(i).1)
    }

    /// Keeps `file` as `pid`'s (the newest), dropping the oldest beyond [`CAPACITY`].
    pub(super) fn put(pid: u32, file: File) {
        let mut files = files();
        files.retain(|(p, _)| *p != pid);
        if files.len() >= CAPACITY {
            files.remove(0);
        }
        files.push((pid, file));
    }

    #[cfg(test)]
    pub(super) fn pids() -> Vec<u32> {
        files().iter().map(|(p, _)| *p).collect()
    }
}

/// Parses a `/proc/<pid>/stat` line: `pid (comm) state ppid ... starttime ...`. `comm` may hold
/// spaces, parentheses and bytes that are not UTF-8, so the fields start after the last `)`.
fn parse_stat(text: &[u8]) -> Result<ProcStat, String> {
    let close = text
        .iter()
        .rposition(|&b| b == b')')
        .ok_or("no \")\" after the command name")?;
    let rest = std::str::from_utf8(&text[close + 1..]).map_err(|e| e.to_string())?;
    let mut fields = rest.split_ascii_whitespace();
    let mut state = fields.next().ok_or("no state (field 3)")?.chars();
    let state = match (state.next(), state.next()) {
        (Some(c), None) => c,
        _ => return Err("the state (field 3) is not one character".into()),
    };
    let number = |field: Option<&str>, what: &str| -> Result<u64, String> {
        let f = field.ok_or_else(|| format!("no {what}"))?;
        f.parse()
            .map_err(|_| format!("{what} is not a number: {f:?}"))
    };
    let ppid = number(fields.next(), "ppid (field 4)")?;
    // fields 5..=21 skipped: the 17 between ppid and starttime
    let start_ticks = number(fields.nth(17), "starttime (field 22)")?;
    Ok(ProcStat {
        state,
        ppid: u32::try_from(ppid).unwrap_or(0),
        start_ticks,
    })
}

/// `/proc/<pid>/stat` of a process on this node, from a kept open file when `pid` was read
/// recently and is still the same process (see [`kept_stat`]).
pub fn stat(pid: u32) -> Result<ProcStat, ProcessError> {
    if let Some(file) = kept_stat::take(pid) {
        if let Ok(st) = read_stat(&file) {
            kept_stat::put(pid, file);
            return Ok(st);
        }
        // gone (or unreadable): the kept file is dropped, the pid looked up afresh below
    }
    let (st, file) = open_stat(Path::new("/proc"), pid)?;
    kept_stat::put(pid, file);
    Ok(st)
}

/// The parent of a live process.
pub fn parent_pid(pid: u32) -> Option<u32> {
    stat(pid).ok().map(|s| s.ppid)
}

/// Every PID listed in a procfs mount (processes may vanish before the caller looks at them).
pub fn pids_in(proc_root: &Path) -> Vec<u32> {
    std::fs::read_dir(proc_root)
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every PID on the node (`/proc`, hostPID).
pub fn pids() -> Vec<u32> {
    pids_in(Path::new("/proc"))
}

/// Kernel clock ticks per second (`sysconf(_SC_CLK_TCK)`), 100 on every mainstream kernel.
pub fn clock_ticks() -> u64 {
    procfs::ticks_per_second()
}

/// `btime` of `<proc_root>/stat`. gopsutil reads it anew on every call; reading `/proc/stat`
/// makes the kernel sum every CPU's and interrupt's counters (50-250 µs measured on a 2-vCPU
/// VM, most of a pid-targeted request's resolution), so faultd keeps the last value read and
/// reuses it while the kernel would still print the same one: the kernel derives `btime` from
/// the realtime clock minus the time since boot, and that difference only moves when the clock
/// is set or slewed. A move of more than [`BTIME_DRIFT_NS`] since the read makes faultd read
/// the file again.
fn boot_time_secs_in(proc_root: &Path) -> Result<u64, ProcessError> {
    use std::sync::Mutex;
    struct Cached {
        root: std::path::PathBuf,
        btime: u64,
        offset_ns: i128,
    }
    static CACHE: Mutex<Option<Cached>> = Mutex::new(None);
    let offset = realtime_minus_boottime_ns();
    if let (Some(now), Some(c)) = (offset, &*CACHE.lock().unwrap_or_else(|p| p.into_inner())) {
        if c.root == proc_root && (now - c.offset_ns).abs() <= BTIME_DRIFT_NS {
            return Ok(c.btime);
        }
    }
    let btime = read_boot_time_secs(proc_root)?;
    if let Some(offset_ns) = offset {
        *CACHE.lock().unwrap_or_else(|p| p.into_inner()) = Some(Cached {
            root: proc_root.to_path_buf(),
            btime,
            offset_ns,
        });
    }
    Ok(btime)
}

/// How far the realtime clock may move against the time since boot before a cached `btime`
/// is read again (NTP slews at most 0.5 ms per second).
const BTIME_DRIFT_NS: i128 = 1_000_000;

/// `CLOCK_REALTIME - CLOCK_BOOTTIME` in nanoseconds: the boot time the kernel reports as
/// `btime`, unrounded.
fn realtime_minus_boottime_ns() -> Option<i128> {
    use nix::time::{clock_gettime, ClockId};
    let ns = |c| {
        clock_gettime(c)
            .ok()
            .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
    };
    Some(ns(ClockId::CLOCK_REALTIME)? - ns(ClockId::CLOCK_BOOTTIME)?)
}

/// `btime` of `<proc_root>/stat`, read now.
fn read_boot_time_secs(proc_root: &Path) -> Result<u64, ProcessError> {
    use procfs::FromReadSI;
    let path = proc_root.join("stat");
    procfs::KernelStats::from_file(&path, procfs::current_system_info())
        .map(|k| k.btime)
        .map_err(|e| proc_error(None, "/proc/stat", &path, e))
}

/// The kernel's boot id (`/proc/sys/kernel/random/boot_id`): changes on every boot.
pub fn boot_id() -> Result<String, ProcessError> {
    procfs::sys::kernel::random::boot_id().map_err(|e| {
        proc_error(
            None,
            "boot_id",
            Path::new("/proc/sys/kernel/random/boot_id"),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `/proc/<pid>/stat` line as kernels >= 3.5 print it (52 fields).
    fn stat_line(pid: u32, comm: &str, state: char, ppid: u32, start_ticks: u64) -> String {
        let mut f = vec![state.to_string(), ppid.to_string()];
        f.extend((5..22).map(|_| "0".to_string()));
        f.push(start_ticks.to_string());
        f.extend((23..=52).map(|_| "0".to_string()));
        format!("{pid} ({comm}) {}\n", f.join(" "))
    }

    fn write_stat(root: &Path, pid: u32, text: &str) {
        std::fs::create_dir_all(root.join(pid.to_string())).unwrap();
        std::fs::write(root.join(pid.to_string()).join("stat"), text).unwrap();
    }

    #[test]
    fn start_ticks_with_hostile_comm() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write_stat(root, 42, &stat_line(42, "a) b) (c d", 'S', 1, 123456));
        assert_eq!(
            stat_in(root, 42).unwrap(),
            ProcStat {
                state: 'S',
                ppid: 1,
                start_ticks: 123456
            }
        );
        for bad in ["42 no paren", "42 (x) S 1", "", "42 (x) S 1 2 3 4 5"] {
            write_stat(root, 43, bad);
            assert!(
                matches!(stat_in(root, 43), Err(ProcessError::Parse { .. })),
                "{bad:?}: {:?}",
                stat_in(root, 43)
            );
        }
        assert!(matches!(
            stat_in(root, 44),
            Err(ProcessError::NotFound { pid: 44 })
        ));
    }

    #[test]
    fn the_own_parser_agrees_with_procfs_on_live_processes_and_takes_any_comm() {
        for pid in [std::process::id(), 1] {
            let ours = stat(pid).unwrap();
            let theirs = procfs::process::Process::new(pid as i32)
                .unwrap()
                .stat()
                .unwrap();
            assert_eq!(
                (ours.state, ours.ppid as i32, ours.start_ticks),
                (theirs.state, theirs.ppid, theirs.starttime),
                "pid {pid}"
            );
        }
        // a comm that is not UTF-8
        let mut line = b"42 (\xff\xfe) ".to_vec();
        line.extend_from_slice(
            stat_line(0, "x", 'R', 7, 99)
                .split_once(") ")
                .unwrap()
                .1
                .as_bytes(),
        );
        assert_eq!(
            parse_stat(&line).unwrap(),
            ProcStat {
                state: 'R',
                ppid: 7,
                start_ticks: 99
            }
        );
        assert!(parse_stat(b"42 (x) SS 1").is_err());
        assert!(parse_stat(b"42 (x) S one").is_err());
    }

    #[test]
    fn kept_stat_files_follow_their_process_and_stay_bounded() {
        use std::process::Command;
        let sleeper = || Command::new("sleep").arg("30").spawn().unwrap();
        let mut child = sleeper();
        let pid = child.id();
        let first = stat(pid).unwrap();
        assert!(kept_stat::pids().contains(&pid));
        // read again from the kept file: the same as a fresh open
        let again = stat(pid).unwrap();
        assert_eq!(again, stat_in(Path::new("/proc"), pid).unwrap());
        assert_eq!(first.start_ticks, again.start_ticks);
        // reaped: the kept file no longer reads (ESRCH, whoever gets the pid next), and the
        // fresh lookup says the process does not exist
        child.kill().unwrap();
        child.wait().unwrap();
        let kept = kept_stat::take(pid).expect("still kept");
        match read_stat(&kept) {
            Err(StatRead::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::ESRCH)),
            _ => panic!("a reaped process's stat file still reads"),
        }
        kept_stat::put(pid, kept);
        assert!(matches!(stat(pid), Err(ProcessError::NotFound { .. })));
        assert!(!kept_stat::pids().contains(&pid));
        // at most CAPACITY files, the newest kept
        let mut kids: Vec<_> = (0..kept_stat::CAPACITY + 8).map(|_| sleeper()).collect();
        for k in &kids {
            stat(k.id()).unwrap();
        }
        let pids = kept_stat::pids();
        assert!(pids.len() <= kept_stat::CAPACITY, "{}", pids.len());
        assert!(pids.contains(&kids.last().unwrap().id()));
        for k in &mut kids {
            let _ = k.kill();
            let _ = k.wait();
        }
    }

    #[test]
    fn ppid_and_pid_listing() {
        let tmp = tempfile::tempdir().unwrap();
        write_stat(tmp.path(), 42, &stat_line(42, "a) b) (c d", 'Z', 7, 1));
        let st = stat_in(tmp.path(), 42).unwrap();
        assert_eq!((st.ppid, st.state), (7, 'Z'));
        assert_eq!(
            parent_pid(std::process::id()),
            Some(nix::unistd::getppid().as_raw() as u32)
        );
        let all = pids();
        assert!(all.contains(&std::process::id()) && all.contains(&1));
    }

    #[test]
    fn gopsutil_formula_uses_integer_division() {
        // 199 ticks at 100 Hz is 1.99 s: gopsutil truncates to 1 s.
        assert_eq!(
            gopsutil_create_time_ms(199, 100, 1_700_000_000),
            1_700_000_001_000
        );
        assert_eq!(
            gopsutil_create_time_ms(200, 100, 1_700_000_000),
            1_700_000_002_000
        );
    }

    #[test]
    fn identity_of_self_matches_proc() {
        let me = ProcessIdentity::of(std::process::id()).unwrap();
        // Field 22 of /proc/self/stat and btime of /proc/stat, read here without procfs.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 1..];
        let ticks: u64 = after_comm
            .split_ascii_whitespace()
            .nth(22 - 3)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(me.start_ticks, ticks);
        let btime: u64 = std::fs::read_to_string("/proc/stat")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("btime ").map(|v| v.trim().parse().unwrap()))
            .unwrap();
        // SAFETY: sysconf has no preconditions.
        let clk = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(clock_ticks(), clk);
        assert_eq!(me.start_time_ms, ((ticks / clk + btime) * 1000) as i64);
        // A create time lies between boot and now.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(me.start_time_ms >= (btime * 1000) as i64 && me.start_time_ms <= now_ms);
        assert!(me.is_alive());
    }

    /// The cached `btime` is the one `/proc/stat` prints, and is what the clocks say it is.
    #[test]
    fn boot_time_is_cached_and_matches_proc_stat() {
        let fresh = read_boot_time_secs(Path::new("/proc")).unwrap();
        let first = boot_time_secs_in(Path::new("/proc")).unwrap();
        let again = boot_time_secs_in(Path::new("/proc")).unwrap();
        assert_eq!((first, again), (fresh, fresh));
        let derived = realtime_minus_boottime_ns().unwrap() / 1_000_000_000;
        assert!(
            (derived - fresh as i128).abs() <= 1,
            "btime {fresh} vs realtime - boottime {derived}"
        );
    }

    #[test]
    fn missing_process_is_not_found() {
        // PID numbers above pid_max never exist.
        assert!(matches!(
            ProcessIdentity::of(u32::MAX - 1),
            Err(ProcessError::NotFound { .. })
        ));
    }

    #[test]
    fn boot_id_is_a_uuid() {
        let id = boot_id().unwrap();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(
            id,
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .unwrap()
                .trim()
        );
    }
}
