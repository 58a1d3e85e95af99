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
//! File mappings move too: the file is mapped again by its path at an address the kernel picks
//! (so a mapping the new file system refuses leaves the old one untouched), then `mremap`
//! puts it over the old range in one step; a shared mapping is `msync`ed first. Not moved
//! (reported): deleted files (no path to re-open), paths longer than a page, and private
//! writable mappings (re-mapping them would drop their modified pages).
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
    /// File mappings on the filesystem.
    pub mappings: Vec<Mapping>,
}

/// One file mapping (a `/proc/<pid>/maps` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// `PROT_*` of the mapping.
    pub prot: i32,
    pub shared: bool,
    pub offset: u64,
    /// The path to map again (as the process sees it); `None` when there is none (deleted).
    pub path: Option<String>,
    /// The line as the kernel showed it.
    pub line: String,
}

impl Mapping {
    /// Parses a `maps` line's fields (the path is set by the caller).
    pub fn parse(line: &str) -> Option<(Mapping, String)> {
        let mut f = line.split_whitespace();
        let (start, end) = f.next()?.split_once('-')?;
        let perms = f.next()?.as_bytes();
        let offset = u64::from_str_radix(f.next()?, 16).ok()?;
        let _dev = f.next()?;
        let _ino = f.next()?;
        // The path is the rest of the line (it may contain spaces).
        let idx = line.find('/')?;
        let shown = line[idx..].to_string();
        if perms.len() < 4 {
            return None;
        }
        let mut prot = 0;
        if perms[0] == b'r' {
            prot |= libc::PROT_READ;
        }
        if perms[1] == b'w' {
            prot |= libc::PROT_WRITE;
        }
        if perms[2] == b'x' {
            prot |= libc::PROT_EXEC;
        }
        Some((
            Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                prot,
                shared: perms[3] == b's',
                offset,
                path: None,
                line: line.to_string(),
            },
            shown,
        ))
    }

    fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
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
    /// The descriptors moved.
    pub fds: Vec<i32>,
    /// File mappings moved.
    pub mappings: usize,
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

/// `mnt_id:` of an `fdinfo` text: the mount the file was opened through.
pub fn fdinfo_mnt_id(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("mnt_id:")?.trim().parse().ok())
}

/// The device numbers (`major:minor` of `/proc/<pid>/maps`) of `dev`.
fn maps_dev(dev: u64) -> String {
    format!(
        "{:02x}:{:02x}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    )
}

/// Which files move: those on one filesystem, possibly only below one path, possibly shown
/// relative to a detached mount's root.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The filesystem being left (`st_dev` of its files).
    pub dev: u64,
    /// Only files and a working directory at or below this path (as the process sees it):
    /// other mounts of the same device (a container's `/etc/hosts` comes from the host's disk
    /// like a bind-mounted volume) stay where they are.
    pub under: Option<&'a Path>,
    /// The filesystem's mount is detached: the kernel shows its paths relative to the mount's
    /// own root (`/f`), so they are re-rooted here (`/data/f`) before being re-opened.
    pub reroot: Option<&'a Path>,
    /// Files match by the mount they were opened through (`fdinfo`'s `mnt_id`) instead of
    /// `dev`: an overlayfs reports the device of the layer a file lives on, not its own.
    pub mnt_id: Option<u32>,
}

impl Source<'_> {
    /// Every file on `dev`, paths as shown.
    pub fn dev(dev: u64) -> Source<'static> {
        Source {
            dev,
            under: None,
            reroot: None,
            mnt_id: None,
        }
    }

    /// The path to re-open for a path the kernel shows; `None`: not moved.
    pub fn map(&self, shown: &str) -> Option<String> {
        let path = match self.reroot {
            Some(root) => {
                let rel = shown.strip_prefix('/')?;
                if rel.is_empty() {
                    root.to_string_lossy().into_owned()
                } else {
                    root.join(rel).to_string_lossy().into_owned()
                }
            }
            None => shown.to_string(),
        };
        match self.under {
            Some(u) if !Path::new(&path).starts_with(u) => None,
            _ => Some(path),
        }
    }
}

/// The device of the file `path` names (links followed), without asking its file system: a
/// FUSE file whose server is gone answers a plain `stat` with `ENOTCONN`, while its cached
/// attributes (`AT_STATX_DONT_SYNC`) still carry the device.
pub fn dev_of(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a buffer of the right type, both outliving the call.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_STATX_DONT_SYNC,
            libc::STATX_TYPE,
            &mut stx,
        )
    };
    (r == 0).then(|| {
        nix::sys::stat::makedev(u64::from(stx.stx_dev_major), u64::from(stx.stx_dev_minor))
    })
}

/// What process `pid` holds on device `dev` (read without stopping it).
pub fn holdings(pid: u32, dev: u64) -> Result<Holdings, SwitchError> {
    holdings_of(pid, &Source::dev(dev))
}

/// What process `pid` holds of `src` (read without stopping it), paths as they will be
/// re-opened.
pub fn holdings_of(pid: u32, src: &Source<'_>) -> Result<Holdings, SwitchError> {
    let dev = src.dev;
    let base = format!("/proc/{pid}");
    let gone = |e: std::io::Error, what: &str| match e.kind() {
        std::io::ErrorKind::NotFound => SwitchError::Gone(pid),
        _ => SwitchError::Proc(format!("{base}/{what}"), e),
    };
    // The kernel shows a process's paths relative to the reader's root when it can reach
    // them: where the process's root is below faultd's (a runtime that `chroot`s), its paths
    // start with that root, which is taken off so they are the process's own.
    let root = std::fs::read_link(format!("{base}/root")).map_err(|e| gone(e, "root"))?;
    let root = root.to_string_lossy().into_owned();
    let own = |shown: &str| -> Option<String> {
        // A detached mount's paths are relative to that mount (see `Source::reroot`).
        if root == "/" || src.reroot.is_some() {
            return Some(shown.to_string());
        }
        match shown.strip_prefix(root.as_str()) {
            Some("") => Some("/".into()),
            Some(rest) if rest.starts_with('/') => Some(rest.to_string()),
            _ => None,
        }
    };
    let mut h = Holdings::default();
    for entry in std::fs::read_dir(format!("{base}/fd")).map_err(|e| gone(e, "fd"))? {
        let Ok(entry) = entry else { continue };
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(info) = std::fs::read_to_string(format!("{base}/fdinfo/{fd}")) else {
            continue;
        };
        // The mount it was opened through, or the file itself (the link is followed): its
        // device.
        let on = match src.mnt_id {
            Some(m) => fdinfo_mnt_id(&info) == Some(m),
            None => dev_of(&entry.path()) == Some(dev),
        };
        if !on {
            continue;
        }
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let Some((pos, flags)) = parse_fdinfo(&info) else {
            continue;
        };
        let shown = target.to_string_lossy();
        // Deleted files keep their marker: they are reported, never re-opened.
        let path = match shown.strip_suffix(" (deleted)") {
            Some(p) => own(p)
                .and_then(|p| src.map(&p))
                .map(|p| format!("{p} (deleted)")),
            None => own(&shown).and_then(|p| src.map(&p)),
        };
        let Some(path) = path else { continue };
        h.files.push(OpenFile {
            fd,
            path,
            flags,
            pos,
        });
    }
    // A working directory has no fdinfo: with a mount id, its path under the volume decides
    // (re-entering a directory of the same path elsewhere is harmless).
    let cwd_on = src.mnt_id.is_some() && src.under.is_some()
        || dev_of(Path::new(&format!("{base}/cwd"))) == Some(dev);
    if cwd_on {
        if let Ok(p) = std::fs::read_link(format!("{base}/cwd")) {
            h.cwd = own(&p.to_string_lossy()).and_then(|p| src.map(&p));
        }
    }
    let maps = std::fs::read_to_string(format!("{base}/maps")).map_err(|e| gone(e, "maps"))?;
    let dev_s = maps_dev(dev);
    // With a mount id, like the working directory, the path under the volume decides (an
    // overlayfs mapping shows the device of the layer below).
    let by_path = src.mnt_id.is_some() && src.under.is_some();
    h.mappings = maps
        .lines()
        .filter(|l| by_path || l.split_whitespace().nth(3) == Some(dev_s.as_str()))
        .filter_map(Mapping::parse)
        .filter_map(|(mut m, shown)| {
            m.path = match shown.strip_suffix(" (deleted)") {
                // Reported (when it is the source's), never mapped again.
                Some(p) => {
                    own(p).and_then(|p| src.map(&p))?;
                    None
                }
                None => Some(own(&shown).and_then(|p| src.map(&p))?),
            };
            Some(m)
        })
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
    switch_from(pid, &Source::dev(dev), budget, None)
}

/// Moves what `pid` holds of `src` to what its paths resolve to now, within `budget` of stop
/// time. `cancel`, when given and set by the time every thread is stopped, lets the process go
/// untouched (the caller stopped waiting: see [`switch_bounded`]).
pub fn switch_from(
    pid: u32,
    src: &Source<'_>,
    budget: Duration,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<Moved, SwitchError> {
    let h = holdings_of(pid, src)?;
    let mut out = Moved {
        pid,
        ..Default::default()
    };
    if h.is_empty() {
        return Ok(out);
    }
    let traced = |e: PtraceError| match e {
        PtraceError::Gone(_) => SwitchError::Gone(pid),
        e => SwitchError::Ptrace { pid, source: e },
    };
    let mut t = Traced::seize(Path::new("/proc"), pid as i32).map_err(traced)?;
    if cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst)) {
        out.stopped = t.detach();
        out.skipped
            .push("stopped after the caller gave up on it: left untouched".into());
        return Ok(out);
    }
    let result = move_all(&mut t, pid, &h, budget, &mut out);
    out.stopped = t.detach();
    result.map(|()| out)
}

/// [`switch_from`] on a thread of its own, waited for at most `limit`: a process that does not
/// stop in time (a thread in uninterruptible sleep) is reported and left alone, never waited
/// for. The thread is the tracer; when it ends, the kernel lets go of anything still seized.
/// If the process stops after the limit, the thread finds the call cancelled and only detaches.
pub fn switch_bounded(pid: u32, src: &Source<'_>, budget: Duration, limit: Duration) -> Moved {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let cancel = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let (dev, under, reroot, mnt_id) = (
        src.dev,
        src.under.map(Path::to_path_buf),
        src.reroot.map(Path::to_path_buf),
        src.mnt_id,
    );
    let c = cancel.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("faultd-sw{pid}"))
        .spawn(move || {
            let src = Source {
                dev,
                under: under.as_deref(),
                reroot: reroot.as_deref(),
                mnt_id,
            };
            let _ = tx.send(switch_from(pid, &src, budget, Some(&c)));
        });
    let failed = |why: String| Moved {
        pid,
        skipped: vec![why],
        ..Default::default()
    };
    if let Err(e) = spawned {
        return failed(format!("no thread to switch it on: {e}"));
    }
    match rx.recv_timeout(limit) {
        Ok(Ok(m)) => m,
        Ok(Err(SwitchError::Gone(_))) => Moved {
            pid,
            ..Default::default()
        },
        Ok(Err(e)) => failed(e.to_string()),
        Err(_) => {
            cancel.store(true, Ordering::SeqCst);
            failed(format!(
                "did not stop within {limit:?}: left as it was (its files stay where they are)"
            ))
        }
    }
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
            Ok(_) => {
                out.files += 1;
                out.fds.push(f.fd);
            }
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
    for m in &h.mappings {
        if t.stopped_for() > budget {
            out.skipped
                .push(format!("mapping {} (stop budget spent)", m.line));
            continue;
        }
        match remap(t, pid, page, m, &put_path)? {
            Ok(()) => out.mappings += 1,
            Err(why) => out.skipped.push(format!("mapping {}: {why}", m.line)),
        }
    }
    t.munmap(page, PAGE).map_err(traced)?;
    Ok(())
}

/// Maps `m`'s file again by its path and puts the new mapping over the old range. The outer
/// error is ptrace's (the process cannot be worked on); the inner one is why this mapping stays.
fn remap(
    t: &mut Traced,
    pid: u32,
    page: u64,
    m: &Mapping,
    put_path: &dyn Fn(&Traced, &str) -> Result<bool, SwitchError>,
) -> Result<Result<(), String>, SwitchError> {
    let traced = |e: PtraceError| SwitchError::Ptrace { pid, source: e };
    let Some(path) = &m.path else {
        return Ok(Err("deleted file".into()));
    };
    if !m.shared && m.prot & libc::PROT_WRITE != 0 {
        return Ok(Err(
            "private writable (its modified pages would be lost)".into()
        ));
    }
    if !put_path(t, path)? {
        return Ok(Err("path too long".into()));
    }
    let mode = if m.shared && m.prot & libc::PROT_WRITE != 0 {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    };
    let r = t
        .syscall(
            libc::SYS_openat,
            [
                libc::AT_FDCWD as u64,
                page,
                (mode | libc::O_CLOEXEC) as u64,
                0,
                0,
                0,
            ],
        )
        .map_err(traced)?;
    let fd = match remote(pid, format!("openat {path}"), r) {
        Ok(fd) => fd as u64,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let close = |t: &mut Traced| {
        t.syscall(libc::SYS_close, [fd, 0, 0, 0, 0, 0])
            .map(drop)
            .map_err(traced)
    };
    if m.shared {
        // Dirty pages of the old mapping reach the file before the new one reads it.
        let r = t
            .syscall(
                libc::SYS_msync,
                [m.start, m.len(), libc::MS_SYNC as u64, 0, 0, 0],
            )
            .map_err(traced)?;
        if let Err(e) = remote(pid, "msync".into(), r) {
            close(t)?;
            return Ok(Err(e.to_string()));
        }
    }
    let flags = if m.shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    let r = t
        .syscall(
            libc::SYS_mmap,
            [0, m.len(), m.prot as u64, flags as u64, fd, m.offset],
        )
        .map_err(traced)?;
    close(t)?;
    let new = match remote(pid, format!("mmap {path}"), r) {
        Ok(a) => a as u64,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let r = t
        .syscall(
            libc::SYS_mremap,
            [
                new,
                m.len(),
                m.len(),
                (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                m.start,
                0,
            ],
        )
        .map_err(traced)?;
    match remote(pid, "mremap".into(), r) {
        Ok(_) => Ok(Ok(())),
        Err(e) => {
            t.syscall(libc::SYS_munmap, [new, m.len(), 0, 0, 0, 0])
                .map_err(traced)?;
            Ok(Err(e.to_string()))
        }
    }
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
    fn maps_lines_parse_with_spaces_in_paths() {
        let (m, shown) =
            Mapping::parse("7f00a000-7f00c000 r--s 00001000 fd:01 1234   /data/my file.bin")
                .unwrap();
        assert_eq!((m.start, m.end, m.offset), (0x7f00a000, 0x7f00c000, 0x1000));
        assert_eq!((m.prot, m.shared), (libc::PROT_READ, true));
        assert_eq!(shown, "/data/my file.bin");
        let (p, _) = Mapping::parse("1000-2000 rw-p 00000000 00:2a 9 /x (deleted)").unwrap();
        assert_eq!(
            (p.prot, p.shared),
            (libc::PROT_READ | libc::PROT_WRITE, false)
        );
        assert!(Mapping::parse("7ffd-7ffe rw-p 00000000 00:00 0 [stack]").is_none());
    }

    #[test]
    fn sources_filter_and_reroot_paths() {
        let vol = Path::new("/data");
        let on = Source {
            dev: 1,
            under: Some(vol),
            reroot: None,
            mnt_id: None,
        };
        assert_eq!(on.map("/data/f").as_deref(), Some("/data/f"));
        assert_eq!(on.map("/data").as_deref(), Some("/data"));
        assert_eq!(on.map("/etc/hosts"), None);
        assert_eq!(on.map("/database/x"), None);
        let back = Source {
            dev: 2,
            under: None,
            reroot: Some(vol),
            mnt_id: None,
        };
        assert_eq!(
            fdinfo_mnt_id("pos:\t0\nflags:\t0100000\nmnt_id:\t31\n"),
            Some(31)
        );
        assert_eq!(back.map("/f").as_deref(), Some("/data/f"));
        assert_eq!(back.map("/").as_deref(), Some("/data"));
        assert_eq!(back.map("relative"), None);
        assert_eq!(Source::dev(3).map("/x").as_deref(), Some("/x"));
    }

    #[test]
    fn the_own_process_holdings_are_found_by_device() {
        use std::os::unix::fs::MetadataExt;
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
