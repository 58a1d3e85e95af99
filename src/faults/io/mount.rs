//! Stacking faultd's FUSE layer on a volume and taking it off again, decided from the target's
//! mountinfo. Everything here that touches mounts runs on a thread that has entered the
//! target's mount namespace ([`crate::ns::Namespace::run`]); the mountinfo it reads is that
//! thread's own (`/proc/thread-self/mountinfo` through faultd's `/proc`, opened before entering:
//! the container's `/proc` belongs to its pid namespace, where faultd's thread has no entry).
//!
//! - [`stack`]: opens the volume root `O_PATH` first (that descriptor keeps the original
//!   reachable for the server), checks that the path is a mount root and not shared, then
//!   mounts `fuse.faultd` (source [`SOURCE`]) on top of the path: nothing is moved and no
//!   directory is created.
//! - [`detach`]: `umount2(MNT_DETACH)` of the top mount at the path, only after mountinfo shows
//!   that it is ours (source and type, and the connection's device when known).
//! - [`abort_connection`]: `echo 1 > <fusectl>/<conn>/abort`, through a private, detached
//!   `fusectl` mount (`fsopen`/`fsmount`) when faultd's namespace has none: no mount is added
//!   to any namespace.
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{openat, OFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;

use super::IoError;

/// The mount source of faultd's layer (`/proc/<pid>/mountinfo` field 10).
pub const SOURCE: &str = "faultd-io";
/// The file system type of faultd's layer (`fuse` with subtype `faultd`).
pub const FSTYPE: &str = "fuse.faultd";

/// One line of `/proc/<pid>/mountinfo` (`proc(5)`), paths unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    pub major: u32,
    pub minor: u32,
    /// The directory of the file system mounted here (`/` for a whole file system).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,relatime`).
    pub options: String,
    /// Optional fields (`shared:12`, `master:3`, `propagate_from:3`, `unbindable`).
    pub optional: Vec<String>,
    pub fstype: String,
    pub source: String,
    pub super_options: String,
}

impl MountEntry {
    /// Parses one mountinfo line; `None` if it is malformed.
    pub fn parse(line: &str) -> Option<MountEntry> {
        let mut f = line.split(' ');
        let id = f.next()?.parse().ok()?;
        let parent = f.next()?.parse().ok()?;
        let (major, minor) = f.next()?.split_once(':')?;
        let (major, minor) = (major.parse().ok()?, minor.parse().ok()?);
        let root = unescape(f.next()?);
        let mount_point = unescape(f.next()?);
        let options = f.next()?.to_string();
        let mut optional = Vec::new();
        loop {
            match f.next()? {
                "-" => break,
                o => optional.push(o.to_string()),
            }
        }
        let fstype = f.next()?.to_string();
        let source = unescape(f.next()?).to_string_lossy().into_owned();
        let super_options = f.next().unwrap_or("").to_string();
        Some(MountEntry {
            id,
            parent,
            major,
            minor,
            root,
            mount_point,
            options,
            optional,
            fstype,
            source,
            super_options,
        })
    }

    /// The peer group of a shared mount (`shared:N`).
    pub fn shared_group(&self) -> Option<u32> {
        self.optional
            .iter()
            .find_map(|o| o.strip_prefix("shared:")?.parse().ok())
    }

    /// Whether this is faultd's FUSE layer (source and type).
    pub fn is_ours(&self) -> bool {
        self.fstype == FSTYPE && self.source == SOURCE
    }

    /// Whether a per-mount option (`ro`, `noexec`) is set.
    pub fn has_option(&self, o: &str) -> bool {
        self.options.split(',').any(|x| x == o)
    }

    /// `major:minor` as mountinfo shows it.
    pub fn dev(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }
}

/// `mountinfo` escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// Every well-formed line of a mountinfo text, in its order.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(MountEntry::parse).collect()
}

/// Whether a mountinfo line is faultd's FUSE layer.
pub fn is_ours(mountinfo_line: &str) -> bool {
    MountEntry::parse(mountinfo_line).is_some_and(|e| e.is_ours())
}

/// The mount a lookup of `path` ends on: of the mounts whose mount point is `path`, the one no
/// other of them is stacked on (a mount on top of another has the lower one as its parent).
pub fn top_at<'a>(entries: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    let here: Vec<&MountEntry> = entries.iter().filter(|e| e.mount_point == path).collect();
    here.iter()
        .copied()
        .find(|e| !here.iter().any(|o| o.parent == e.id && o.id != e.id))
}

/// `volume` lexically normal: absolute, no `.`/`..`, no trailing or doubled separators.
/// `None` for a relative path or one with `..`.
pub fn normalize_volume(volume: &Path) -> Option<PathBuf> {
    if !volume.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in volume.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// What [`stack`] leaves behind: the held root of the original and both mounts.
#[derive(Debug)]
pub struct Stacked {
    /// `O_PATH|O_DIRECTORY` on the volume root of the original mount.
    pub root: OwnedFd,
    /// The volume's own mount (under the layer).
    pub volume: MountEntry,
    /// faultd's layer on top of it.
    pub layer: MountEntry,
}

/// A mount-namespace thread's view: faultd's `/proc` (opened before entering the namespace).
pub struct ProcView<'a>(pub &'a OwnedFd);

impl ProcView<'_> {
    /// This thread's mountinfo, parsed.
    pub fn mountinfo(&self) -> Result<Vec<MountEntry>, IoError> {
        let fd = openat(
            self.0.as_fd(),
            "thread-self/mountinfo",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| IoError::Mountinfo(e.into()))?;
        let mut text = String::new();
        File::from(fd)
            .read_to_string(&mut text)
            .map_err(IoError::Mountinfo)?;
        Ok(parse_mountinfo(&text))
    }
}

/// Options of [`stack`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StackOptions {
    /// Stack on a `shared:` mount too (the layer then propagates to the peer group).
    pub allow_shared: bool,
}

/// Opens `/proc` of faultd's own pid namespace, to be used on a namespace thread.
pub fn open_proc() -> Result<OwnedFd, IoError> {
    nix::fcntl::open(
        "/proc",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| IoError::Mountinfo(e.into()))
}

/// On a thread in the target's mount namespace: opens the volume root and checks that it is a
/// mount root, not faultd's layer, not shared (unless allowed). Returns the held root and the
/// volume's mount.
fn check_volume(
    proc: &ProcView<'_>,
    volume: &Path,
    opts: StackOptions,
) -> Result<(OwnedFd, MountEntry), IoError> {
    let vol_err = |source| IoError::Volume {
        path: volume.to_path_buf(),
        source,
    };
    // A layer already there (maybe dead or hung after a crash) is found without touching the
    // path: a stat of its root would wait on its server.
    if let Some(top) = top_at(&proc.mountinfo()?, volume).filter(|t| t.is_ours()) {
        return Err(IoError::AlreadyLayered {
            path: volume.to_path_buf(),
            conn: top.minor,
        });
    }
    let root = nix::fcntl::open(
        volume,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(vol_err)?;
    let mnt_id = mount_id(&root).map_err(vol_err)?;
    let before = proc.mountinfo()?;
    let Some(vm) = before.iter().find(|e| e.id == mnt_id).cloned() else {
        return Err(IoError::Mountinfo(std::io::Error::other(format!(
            "mount {mnt_id} of {} is not in mountinfo",
            volume.display()
        ))));
    };
    if vm.mount_point != volume {
        return Err(IoError::NotMountRoot {
            path: volume.to_path_buf(),
            mount_point: vm.mount_point,
        });
    }
    if vm.is_ours() {
        return Err(IoError::AlreadyLayered {
            path: volume.to_path_buf(),
            conn: vm.minor,
        });
    }
    if let (Some(group), false) = (vm.shared_group(), opts.allow_shared) {
        return Err(IoError::Shared {
            path: volume.to_path_buf(),
            group,
        });
    }
    Ok((root, vm))
}

/// The mount of `volume` in `ns` (a mount namespace) and the device of its files, checked as
/// [`stack`] checks it (a mount root, not faultd's layer, not shared unless `opts` allow it),
/// touching nothing.
pub fn volume_mount(
    ns: &crate::ns::Namespace,
    volume: &Path,
    opts: StackOptions,
) -> Result<(MountEntry, u64), IoError> {
    let proc = open_proc()?;
    let vol = volume.to_path_buf();
    ns.run(move || {
        let (root, vm) = check_volume(&ProcView(&proc), &vol, opts)?;
        let st = nix::sys::stat::fstat(root.as_fd()).map_err(|source| IoError::Volume {
            path: vol.clone(),
            source,
        })?;
        Ok((vm, st.st_dev))
    })?
}

/// On a thread in the target's mount namespace: opens the volume root, checks it, and mounts
/// the FUSE connection `dev_fuse` (an open `/dev/fuse`) on top of `volume` (normalized).
pub fn stack(
    proc: &ProcView<'_>,
    dev_fuse: RawFd,
    volume: &Path,
    opts: StackOptions,
) -> Result<Stacked, IoError> {
    let (root, vm) = check_volume(proc, volume, opts)?;
    let vol_err = |source| IoError::Volume {
        path: volume.to_path_buf(),
        source,
    };
    let st = nix::sys::stat::fstat(root.as_fd()).map_err(vol_err)?;
    let data = format!(
        "fd={dev_fuse},rootmode={:o},user_id=0,group_id=0,allow_other,default_permissions",
        st.st_mode & libc::S_IFMT
    );
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if vm.has_option("ro") {
        flags |= MsFlags::MS_RDONLY;
    }
    if vm.has_option("noexec") {
        flags |= MsFlags::MS_NOEXEC;
    }
    nix::mount::mount(
        Some(SOURCE),
        volume,
        Some(FSTYPE),
        flags,
        Some(data.as_str()),
    )
    .map_err(|e| IoError::Mount {
        path: volume.to_path_buf(),
        source: e.into(),
    })?;
    let after = proc.mountinfo()?;
    match top_at(&after, volume) {
        Some(top) if top.is_ours() && top.parent == vm.id => Ok(Stacked {
            root,
            volume: vm,
            layer: top.clone(),
        }),
        other => {
            let msg = format!(
                "after mounting, the top of {} is {:?}, not faultd's layer",
                volume.display(),
                other.map(|e| (e.id, &e.fstype, &e.source))
            );
            // Take off whatever of ours is on top (the dev_fuse the caller drops ends it).
            let undone = detach(proc, volume, None);
            Err(IoError::Mountinfo(std::io::Error::other(format!(
                "{msg} (detaching faultd's layers there: {undone:?})"
            ))))
        }
    }
}

/// The mount id of an open file (`statx(STATX_MNT_ID)`, Linux 5.8; `AT_STATX_DONT_SYNC` so a
/// FUSE file system is not asked).
fn mount_id(fd: &OwnedFd) -> Result<u32, nix::Error> {
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd, a NUL-terminated empty path with AT_EMPTY_PATH, and a buffer of
    // the right type that outlives the call.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    nix::errno::Errno::result(r)?;
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(nix::errno::Errno::ENOSYS);
    }
    u32::try_from(stx.stx_mnt_id).map_err(|_| nix::errno::Errno::EOVERFLOW)
}

/// On a thread in the target's mount namespace: detaches faultd's layers stacked at the top of
/// `volume`, top-down, each only after mountinfo shows it is ours. With `conn`, only that
/// connection's layer (a layer of another connection on top of it is refused); without, every
/// faultd layer on top. Returns how many were detached (0: nothing of ours was there).
pub fn detach(proc: &ProcView<'_>, volume: &Path, conn: Option<u32>) -> Result<usize, IoError> {
    let mut n = 0;
    loop {
        let entries = proc.mountinfo()?;
        let ours_below = |e: &MountEntry| {
            e.mount_point == volume
                && e.is_ours()
                && conn.is_none_or(|c| e.major == 0 && e.minor == c)
        };
        let Some(top) = top_at(&entries, volume) else {
            return Ok(n);
        };
        if !ours_below(top) {
            if let (Some(c), true) = (conn, entries.iter().any(ours_below)) {
                return Err(IoError::NotOurs {
                    path: volume.to_path_buf(),
                    found: format!(
                        "{} {} {} stacked on faultd's layer {c}",
                        top.dev(),
                        top.fstype,
                        top.source
                    ),
                });
            }
            return Ok(n);
        }
        nix::mount::umount2(volume, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW).map_err(
            |e| IoError::Mount {
                path: volume.to_path_buf(),
                source: e.into(),
            },
        )?;
        n += 1;
        if conn.is_some() {
            return Ok(n);
        }
    }
}

/// Where fusectl usually is in faultd's own namespace.
const FUSECTL: &str = "/sys/fs/fuse/connections";

/// Aborts FUSE connection `conn` (the minor of the layer's device) through fusectl, so every
/// request waiting on it fails with `ENOTCONN` and the server's reads end with `ENODEV`.
/// Returns `false` if the connection no longer exists (its file system is gone). Uses
/// `/sys/fs/fuse/connections` when fusectl is mounted there, else a detached fusectl mount
/// of its own (nothing is added to any namespace).
pub fn abort_connection(conn: u32) -> Result<bool, IoError> {
    let err = |source: std::io::Error| IoError::Abort { conn, source };
    let mounted = Path::new(FUSECTL);
    let dir = if mounted.join(conn.to_string()).exists() {
        nix::fcntl::open(
            mounted,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| err(e.into()))?
    } else {
        detached_fusectl().map_err(err)?
    };
    let abort = match openat(
        dir.as_fd(),
        format!("{conn}/abort").as_str(),
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(false),
        Err(e) => return Err(err(e.into())),
    };
    match File::from(abort).write_all(b"1") {
        Ok(()) => Ok(true),
        // The connection went away between the open and the write.
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(false),
        Err(e) => Err(err(e)),
    }
}

/// A fusectl mount attached nowhere (`fsopen` + `fsmount`, Linux 5.2).
fn detached_fusectl() -> std::io::Result<OwnedFd> {
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    // SAFETY: fsopen takes a NUL-terminated name and flags; it returns a new fd or -1.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, c"fusectl".as_ptr(), 1 as libc::c_uint) };
    let fs = owned(fs)?;
    // SAFETY: fsconfig(CMD_CREATE) on the context fd, with null key and value as documented.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0 as libc::c_int,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fsmount on the configured context fd, FSMOUNT_CLOEXEC, no attributes.
    let m = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            1 as libc::c_uint,
            0 as libc::c_uint,
        )
    };
    owned(m)
}

fn owned(r: libc::c_long) -> std::io::Result<OwnedFd> {
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = RawFd::try_from(r).map_err(|_| std::io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
#[path = "mount_tests.rs"]
mod tests;
