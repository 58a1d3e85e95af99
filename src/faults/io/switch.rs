//! Moving a process's open files and working directory from one filesystem to whatever their
//! paths resolve to now, one process at a time: how IOChaos puts running processes on its layer
//! after stacking it over a volume, and back on the original after removing it.
//!
//! Reading what to move needs no stop: `/proc/<pid>/fd/*` (the file's device decides),
//! `fdinfo` (flags, position) and `cwd`. Then, with every thread stopped ([`Traced`]), one
//! scratch page is mapped for the paths and each file is re-opened **inside the process** by
//! its path (so its own root and mount namespace resolve it, through the new top mount),
//! positioned where the old one was, and `dup3`ed over the old descriptor number (`O_CLOEXEC`
//! kept); the working directory is re-entered with `chdir`. The stop is measured, and a process
//! is let go as soon as its budget is spent: whatever is left is reported, never forced.
//!
//! Not moved (reported): deleted files (no path to re-open), paths longer than a page, and file
//! mappings (re-mapping them in place would drop a private mapping's modified pages).
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use crate::failure::FailureKind;
use crate::ptrace::{PtraceError, Traced};

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("process {0} is gone")]
    Gone(u32),
    #[error("process {pid}: {source}")]
    Ptrace {
        pid: u32,
        #[source]
        source: PtraceError,
    },
    #[error("process {pid}: {what}: {errno}")]
    Remote {
        pid: u32,
        what: String,
        errno: nix::errno::Errno,
    },
    #[error("reading {0}: {1}")]
    Proc(String, std::io::Error),
}

impl SwitchError {
    pub fn kind(&self) -> FailureKind {
        match self {
            SwitchError::Gone(_) => FailureKind::NotFound,
            SwitchError::Ptrace { source, .. } => source.kind(),
            SwitchError::Remote { .. } | SwitchError::Proc(..) => FailureKind::Internal,
        }
    }
}

crate::impl_failure!(SwitchError);

/// One open file of a process on the filesystem being left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFile {
    pub fd: i32,
    /// As the process sees it (`/proc/<pid>/fd/<fd>`).
    pub path: String,
    /// `fdinfo` flags (octal in the file).
    pub flags: i32,
    pub pos: u64,
}

/// What a process holds on a filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    pub files: Vec<OpenFile>,
    /// The working directory, when it is on the filesystem.
    pub cwd: Option<String>,
    /// File mappings on the filesystem (`/proc/<pid>/maps` lines).
    pub mappings: Vec<String>,
}

impl Holdings {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.cwd.is_none() && self.mappings.is_empty()
    }
}

/// The outcome for one process.
#[derive(Debug, Clone, Default)]
pub struct Moved {
    pub pid: u32,
    pub files: usize,
    pub cwd: bool,
    pub stopped: Duration,
    /// What was left where it was, and why.
    pub skipped: Vec<String>,
}

/// The flags a re-open keeps: access mode and the status flags a file carries, never the
/// creation flags.
const KEEP: i32 = libc::O_ACCMODE
    | libc::O_APPEND
    | libc::O_NONBLOCK
    | libc::O_DIRECT
    | libc::O_SYNC
    | libc::O_DSYNC
    | libc::O_NOATIME
    | libc::O_DIRECTORY
    | libc::O_PATH
    | libc::O_LARGEFILE
    | libc::O_CLOEXEC;

/// `pos:` and `flags:` of an `fdinfo` text.
pub fn parse_fdinfo(text: &str) -> Option<(u64, i32)> {
    let mut pos = None;
    let mut flags = None;
    for l in text.lines() {
        if let Some(v) = l.strip_prefix("pos:") {
            pos = v.trim().parse().ok();
        } else if let Some(v) = l.strip_prefix("flags:") {
            flags = i32::from_str_radix(v.trim(), 8).ok();
        }
    }
    Some((pos?, flags?))
}

/// The device numbers (`major:minor` of `/proc/<pid>/maps`) of `dev`.
fn maps_dev(dev: u64) -> String {
    format!(
        "{:02x}:{:02x}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    )
}

/// What process `pid` holds on device `dev` (read without stopping it).
pub fn holdings(pid: u32, dev: u64) -> Result<Holdings, SwitchError> {
    let base = format!("/proc/{pid}");
    let gone = |e: std::io::Error, what: &str| match e.kind() {
        std::io::ErrorKind::NotFound => SwitchError::Gone(pid),
        _ => SwitchError::Proc(format!("{base}/{what}"), e),
    };
    let mut h = Holdings::default();
    for entry in std::fs::read_dir(format!("{base}/fd")).map_err(|e| gone(e, "fd"))? {
        let Ok(entry) = entry else { continue };
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // The file itself (the link is followed): its device decides.
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let Ok(info) = std::fs::read_to_string(format!("{base}/fdinfo/{fd}")) else {
            continue;
        };
        let Some((pos, flags)) = parse_fdinfo(&info) else {
            continue;
        };
        h.files.push(OpenFile {
            fd,
            path: target.to_string_lossy().into_owned(),
            flags,
            pos,
        });
    }
    if std::fs::metadata(format!("{base}/cwd")).is_ok_and(|m| m.dev() == dev) {
        if let Ok(p) = std::fs::read_link(format!("{base}/cwd")) {
            h.cwd = Some(p.to_string_lossy().into_owned());
        }
    }
    let maps = std::fs::read_to_string(format!("{base}/maps")).map_err(|e| gone(e, "maps"))?;
    let dev_s = maps_dev(dev);
    h.mappings = maps
        .lines()
        .filter(|l| l.split_whitespace().nth(3) == Some(dev_s.as_str()))
        .map(str::to_string)
        .collect();
    Ok(h)
}

fn remote(pid: u32, what: String, r: i64) -> Result<i64, SwitchError> {
    if (-4095..0).contains(&r) {
        Err(SwitchError::Remote {
            pid,
            what,
            errno: nix::errno::Errno::from_raw(-r as i32),
        })
    } else {
        Ok(r)
    }
}

/// Moves what `pid` holds on device `dev` to what the same paths resolve to now, within
/// `budget` of stop time (at least one file is always attempted).
pub fn switch(pid: u32, dev: u64, budget: Duration) -> Result<Moved, SwitchError> {
    let h = holdings(pid, dev)?;
    let mut out = Moved {
        pid,
        ..Default::default()
    };
    out.skipped
        .extend(h.mappings.iter().map(|m| format!("mapping {m}")));
    if h.files.is_empty() && h.cwd.is_none() {
        return Ok(out);
    }
    let traced = |e: PtraceError| match e {
        PtraceError::Gone(_) => SwitchError::Gone(pid),
        e => SwitchError::Ptrace { pid, source: e },
    };
    let mut t = Traced::seize(Path::new("/proc"), pid as i32).map_err(traced)?;
    let result = move_all(&mut t, pid, &h, budget, &mut out);
    out.stopped = t.detach();
    result.map(|()| out)
}

fn move_all(
    t: &mut Traced,
    pid: u32,
    h: &Holdings,
    budget: Duration,
    out: &mut Moved,
) -> Result<(), SwitchError> {
    let traced = |e: PtraceError| SwitchError::Ptrace { pid, source: e };
    const PAGE: u64 = 4096;
    let page = t
        .mmap_page(PAGE, libc::PROT_READ | libc::PROT_WRITE)
        .map_err(traced)?;
    let put_path = |t: &Traced, p: &str| -> Result<bool, SwitchError> {
        if p.len() >= PAGE as usize || p.contains('\0') {
            return Ok(false);
        }
        let mut b = p.as_bytes().to_vec();
        b.push(0);
        t.write(page, &b).map_err(traced)?;
        Ok(true)
    };
    let mut first = true;
    for f in &h.files {
        if !first && t.stopped_for() > budget {
            out.skipped
                .push(format!("fd {} {} (stop budget spent)", f.fd, f.path));
            continue;
        }
        first = false;
        if f.path.ends_with(" (deleted)") || !f.path.starts_with('/') {
            out.skipped
                .push(format!("fd {} {} (no path to re-open)", f.fd, f.path));
            continue;
        }
        if !put_path(t, &f.path)? {
            out.skipped.push(format!("fd {} (path too long)", f.fd));
            continue;
        }
        let flags = f.flags & KEEP;
        let what = |s: &str| format!("{s} fd {} {}", f.fd, f.path);
        let r = t
            .syscall(
                libc::SYS_openat,
                [libc::AT_FDCWD as u64, page, flags as u64, 0, 0, 0],
            )
            .map_err(traced)?;
        let new = match remote(pid, what("openat"), r) {
            Ok(n) => n as u64,
            Err(e) => {
                out.skipped.push(e.to_string());
                continue;
            }
        };
        if f.pos > 0 && flags & (libc::O_PATH | libc::O_DIRECTORY) == 0 {
            let r = t
                .syscall(
                    libc::SYS_lseek,
                    [new, f.pos, libc::SEEK_SET as u64, 0, 0, 0],
                )
                .map_err(traced)?;
            if let Err(e) = remote(pid, what("lseek"), r) {
                out.skipped.push(e.to_string());
                t.syscall(libc::SYS_close, [new, 0, 0, 0, 0, 0])
                    .map_err(traced)?;
                continue;
            }
        }
        let cloexec = (f.flags & libc::O_CLOEXEC) as u64;
        let r = t
            .syscall(libc::SYS_dup3, [new, f.fd as u64, cloexec, 0, 0, 0])
            .map_err(traced)?;
        let dup = remote(pid, what("dup3"), r);
        t.syscall(libc::SYS_close, [new, 0, 0, 0, 0, 0])
            .map_err(traced)?;
        match dup {
            Ok(_) => out.files += 1,
            Err(e) => out.skipped.push(e.to_string()),
        }
    }
    if let Some(cwd) = &h.cwd {
        if put_path(t, cwd)? {
            let r = t
                .syscall(libc::SYS_chdir, [page, 0, 0, 0, 0, 0])
                .map_err(traced)?;
            match remote(pid, format!("chdir {cwd}"), r) {
                Ok(_) => out.cwd = true,
                Err(e) => out.skipped.push(e.to_string()),
            }
        }
    }
    t.munmap(page, PAGE).map_err(traced)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_gives_position_and_octal_flags() {
        let text = "pos:\t4096\nflags:\t02100002\nmnt_id:\t31\nino:\t12\n";
        assert_eq!(parse_fdinfo(text), Some((4096, 0o2100002)));
        assert_eq!(parse_fdinfo("flags:\t0100000\n"), None);
        // O_CLOEXEC and O_RDWR survive the mask; O_CREAT and O_TRUNC do not.
        let f = libc::O_RDWR | libc::O_CLOEXEC | libc::O_CREAT | libc::O_TRUNC;
        assert_eq!(f & KEEP, libc::O_RDWR | libc::O_CLOEXEC);
    }

    #[test]
    fn the_own_process_holdings_are_found_by_device() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held");
        std::fs::write(&path, b"x").unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let dev = std::fs::metadata(&path).unwrap().dev();
        let h = holdings(std::process::id(), dev).unwrap();
        use std::os::fd::AsRawFd;
        let mine = h.files.iter().find(|o| o.fd == f.as_raw_fd()).unwrap();
        assert_eq!(Path::new(&mine.path), path);
        assert_eq!(mine.flags & libc::O_ACCMODE, libc::O_RDONLY);
        assert_eq!(maps_dev(nix::sys::stat::makedev(8, 1)), "08:01");
    }
}
