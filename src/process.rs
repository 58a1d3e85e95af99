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
        Self::of_in(Path::new("/proc"), pid)
    }

    /// Same as [`ProcessIdentity::of`] with another procfs mount (tests, `/host-proc`).
    pub fn of_in(proc_root: &Path, pid: u32) -> Result<Self, ProcessError> {
        let path = proc_root.join(pid.to_string()).join("stat");
        let stat = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ProcessError::NotFound { pid })
            }
            Err(e) => {
                return Err(ProcessError::Io {
                    path: path.display().to_string(),
                    source: e,
                })
            }
        };
        let start_ticks = parse_start_ticks(&stat)?;
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
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|stat| parse_start_ticks(&stat).ok())
            == Some(self.start_ticks)
    }
}

/// `((ticks / clk_tck) + btime) * 1000`, exactly as gopsutil computes `CreateTime()`.
pub fn gopsutil_create_time_ms(start_ticks: u64, clk_tck: u64, btime_secs: u64) -> i64 {
    let clk = clk_tck.max(1);
    ((start_ticks / clk + btime_secs) * 1000) as i64
}

/// Field `n` (1-based, `n >= 3`) of a `/proc/<pid>/stat` line. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after the last `)`.
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let close = stat.rfind(')')?;
    stat[close + 1..]
        .split_ascii_whitespace()
        .nth(n.checked_sub(3)?)
}

/// Extracts field 22 (starttime) from a `/proc/<pid>/stat` line.
pub fn parse_start_ticks(stat: &str) -> Result<u64, ProcessError> {
    if !stat.contains(')') {
        return Err(ProcessError::Parse {
            what: "/proc/<pid>/stat",
            detail: "no ')' after the command name".into(),
        });
    }
    stat_field(stat, 22)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| ProcessError::Parse {
            what: "/proc/<pid>/stat",
            detail: "field 22 (starttime) missing or not a number".into(),
        })
}

/// Extracts field 4 (ppid) from a `/proc/<pid>/stat` line.
pub fn parse_ppid(stat: &str) -> Option<u32> {
    stat_field(stat, 4)?.parse().ok()
}

/// Extracts field 3 (state: `R`, `S`, `Z`, ...) from a `/proc/<pid>/stat` line.
pub fn parse_state(stat: &str) -> Option<char> {
    stat_field(stat, 3)?.chars().next()
}

/// The parent of a live process.
pub fn parent_pid(pid: u32) -> Option<u32> {
    parse_ppid(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
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
    // SAFETY: sysconf has no preconditions and only reads a constant.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

fn boot_time_secs_in(proc_root: &Path) -> Result<u64, ProcessError> {
    let path = proc_root.join("stat");
    let s = std::fs::read_to_string(&path).map_err(|e| ProcessError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    s.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| ProcessError::Parse {
            what: "/proc/stat",
            detail: "no btime line".into(),
        })
}

/// The kernel's boot id (`/proc/sys/kernel/random/boot_id`): changes on every boot.
pub fn boot_id() -> Result<String, ProcessError> {
    let path = "/proc/sys/kernel/random/boot_id";
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| ProcessError::Io {
            path: path.into(),
            source: e,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_with_hostile_comm() {
        let line = "42 (a) b) (c d) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10 18446744073709551615";
        assert_eq!(parse_start_ticks(line).unwrap(), 123456);
        assert_eq!(parse_state(line), Some('S'));
        assert_eq!(parse_ppid(line), Some(1));
        assert_eq!(parse_state("42 no paren"), None);
        assert!(parse_start_ticks("42 no paren").is_err());
        assert!(parse_start_ticks("42 (x) S 1").is_err());
        assert!(parse_start_ticks("").is_err());
    }

    #[test]
    fn ppid_and_pid_listing() {
        let line = "42 (a) b) (c d) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000";
        assert_eq!(parse_ppid(line), Some(7));
        assert_eq!(parse_ppid("42 (x)"), None);
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
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let ticks = parse_start_ticks(&stat).unwrap();
        assert_eq!(me.start_ticks, ticks);
        let btime: u64 = std::fs::read_to_string("/proc/stat")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("btime ").map(|v| v.trim().parse().unwrap()))
            .unwrap();
        assert_eq!(
            me.start_time_ms,
            ((ticks / clock_ticks() + btime) * 1000) as i64
        );
        // A create time lies between boot and now.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(me.start_time_ms >= (btime * 1000) as i64 && me.start_time_ms <= now_ms);
        assert!(me.is_alive());
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
    }
}
