//! The file system operations of the layer, done on the original volume through the descriptor
//! held on its root and never through the mounted path (which is the layer itself: the server
//! would wait on its own request). Names are single components resolved with `*at` calls
//! relative to a node's `O_PATH` descriptor, without following a final symlink; an `O_PATH`
//! descriptor is turned into an open file through faultd's `/proc/self/fd` (the way
//! passthrough file systems re-open by descriptor). No multi-component path is ever resolved,
//! so nothing outside the volume is reachable.
//!
//! Ownership: the server creates as root, then gives a new node the caller's uid, and its gid
//! unless the directory is set-group-ID (which the new node inherits, as the kernel does).
//! The kernel has already checked permissions against the attributes the layer returns
//! (`default_permissions`). The mode the kernel sends has the caller's umask applied; faultd's
//! own umask is undone with a `chmod` when it took bits away.
//!
//! Every operation answers an `Errno` as the underlying call did.
use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode};

use super::inodes::{child, Inodes, Key};

pub type Res<T> = Result<T, Errno>;

/// The caller of an operation (from the FUSE request header).
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// A time to set: now or a given one (`None` in [`SetAttr`]: left alone).
#[derive(Debug, Clone, Copy)]
pub enum SetTime {
    Now,
    At(libc::timespec),
}

/// The changes of a `setattr`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    pub fh: Option<u64>,
}

/// A directory entry as `getdents64` returns it.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: u64,
    /// The offset of the next entry.
    pub next: i64,
    /// `DT_*`.
    pub kind: u8,
    pub name: Vec<u8>,
}

/// An open file or directory of the layer.
#[derive(Debug)]
struct Handle {
    file: File,
    /// Serializes `lseek` + `getdents64` of a directory handle.
    dir: Mutex<()>,
}

/// The passthrough over one volume.
#[derive(Debug)]
pub struct Passthrough {
    inodes: Mutex<Inodes<OwnedFd>>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// faultd's `/proc/self/fd`.
    proc_fd: OwnedFd,
    /// faultd's umask (what `openat`/`mkdirat`/`mknodat` take away).
    umask: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn cvt(r: libc::c_int) -> Res<libc::c_int> {
    Errno::result(r)
}

fn cstr(name: &OsStr) -> Res<CString> {
    CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)
}

fn key(st: &libc::stat) -> Key {
    (st.st_dev, st.st_ino)
}

/// `fstat` of an `O_PATH` descriptor without following a symlink it stands for.
pub fn stat_fd(fd: BorrowedFd<'_>) -> Res<libc::stat> {
    fstatat(
        fd,
        "",
        AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW,
    )
}

/// A single path component the layer accepts (`.`, `..` and `/` never reach the volume).
fn component(name: &OsStr) -> Res<&OsStr> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    Ok(name)
}

impl Passthrough {
    /// A passthrough over the directory `root` (an `O_PATH` descriptor on the volume root).
    pub fn new(root: OwnedFd) -> std::io::Result<Passthrough> {
        let st = stat_fd(root.as_fd())?;
        let proc_fd = nix::fcntl::open(
            "/proc/self/fd",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Passthrough {
            inodes: Mutex::new(Inodes::new(root, key(&st))),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            proc_fd,
            umask: process_umask(),
        })
    }

    fn fd(&self, ino: u64) -> Res<Arc<OwnedFd>> {
        lock(&self.inodes).fd(ino).ok_or(Errno::ESTALE)
    }

    fn handle(&self, fh: u64) -> Res<Arc<Handle>> {
        lock(&self.handles).get(&fh).cloned().ok_or(Errno::EBADF)
    }

    fn add_handle(&self, file: File) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(
            fh,
            Arc::new(Handle {
                file,
                dir: Mutex::new(()),
            }),
        );
        fh
    }

    /// The path of node `ino` relative to the volume (`None`: unknown node).
    pub fn path(&self, ino: u64) -> Option<PathBuf> {
        lock(&self.inodes).path(ino).map(|p| p.to_path_buf())
    }

    /// The path of `name` in directory `parent`.
    pub fn child_path(&self, parent: u64, name: &OsStr) -> Option<PathBuf> {
        lock(&self.inodes).path(parent).map(|p| child(p, name))
    }

    /// Nodes the kernel holds (the root included).
    pub fn nodes(&self) -> usize {
        lock(&self.inodes).len()
    }

    /// Open handles.
    pub fn handles(&self) -> usize {
        lock(&self.handles).len()
    }

    /// `/proc/self/fd/<fd>` relative to the held `/proc/self/fd`.
    fn reopen(&self, fd: &OwnedFd, flags: OFlag) -> Res<File> {
        openat(
            self.proc_fd.as_fd(),
            fd.as_raw_fd().to_string().as_str(),
            flags | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
    }

    fn proc_name(fd: &OwnedFd) -> CString {
        CString::new(fd.as_raw_fd().to_string()).expect("digits")
    }

    pub fn getattr(&self, ino: u64) -> Res<libc::stat> {
        stat_fd(self.fd(ino)?.as_fd())
    }

    /// Looks `name` up in `parent` and counts a lookup of what it finds.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Res<(u64, libc::stat)> {
        let dir = self.fd(parent)?;
        let fd = openat(
            dir.as_fd(),
            component(name)?,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let st = stat_fd(fd.as_fd())?;
        let mut t = lock(&self.inodes);
        let path = t.path(parent).map(|p| child(p, name)).unwrap_or_default();
        Ok((t.remember(key(&st), path, fd), st))
    }

    pub fn forget(&self, ino: u64, n: u64) {
        lock(&self.inodes).forget(ino, n);
    }

    pub fn setattr(&self, ino: u64, a: &SetAttr) -> Res<libc::stat> {
        let fd = self.fd(ino)?;
        let name = Self::proc_name(&fd);
        if a.uid.is_some() || a.gid.is_some() {
            // SAFETY: a valid O_PATH fd, an empty NUL-terminated path with AT_EMPTY_PATH.
            cvt(unsafe {
                libc::fchownat(
                    fd.as_raw_fd(),
                    c"".as_ptr(),
                    a.uid.unwrap_or(u32::MAX),
                    a.gid.unwrap_or(u32::MAX),
                    libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
                )
            })?;
        }
        if let Some(mode) = a.mode {
            // SAFETY: the held /proc/self/fd dir fd and a NUL-terminated fd number.
            cvt(unsafe {
                libc::fchmodat(self.proc_fd.as_raw_fd(), name.as_ptr(), mode & 0o7777, 0)
            })?;
        }
        if let Some(size) = a.size {
            let size = i64::try_from(size).map_err(|_| Errno::EFBIG)?;
            match a.fh.map(|fh| self.handle(fh)).transpose()? {
                Some(h) => nix::unistd::ftruncate(h.file.as_fd(), size)?,
                None => {
                    let f = self.reopen(&fd, OFlag::O_WRONLY)?;
                    nix::unistd::ftruncate(f.as_fd(), size)?;
                }
            }
        }
        if a.atime.is_some() || a.mtime.is_some() {
            let ts = |t: Option<SetTime>| match t {
                None => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_OMIT,
                },
                Some(SetTime::Now) => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_NOW,
                },
                Some(SetTime::At(t)) => t,
            };
            let times = [ts(a.atime), ts(a.mtime)];
            // SAFETY: the held /proc/self/fd dir fd, a NUL-terminated name, two timespecs.
            cvt(unsafe {
                libc::utimensat(self.proc_fd.as_raw_fd(), name.as_ptr(), times.as_ptr(), 0)
            })?;
        }
        stat_fd(fd.as_fd())
    }

    pub fn readlink(&self, ino: u64) -> Res<Vec<u8>> {
        let fd = self.fd(ino)?;
        nix::fcntl::readlinkat(fd.as_fd(), "").map(std::os::unix::ffi::OsStringExt::into_vec)
    }

    /// After creating `name` in `parent` as root: the caller's ownership, the requested
    /// permission bits, then a counted lookup.
    fn created(
        &self,
        parent: u64,
        dir: &OwnedFd,
        name: &OsStr,
        mode: Option<u32>,
        caller: Caller,
    ) -> Res<(u64, libc::stat)> {
        let fd = openat(
            dir.as_fd(),
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let mut st = stat_fd(fd.as_fd())?;
        let dir_st = stat_fd(dir.as_fd())?;
        let gid = if dir_st.st_mode & libc::S_ISGID != 0 {
            st.st_gid
        } else {
            caller.gid
        };
        if st.st_uid != caller.uid || st.st_gid != gid {
            // SAFETY: a valid O_PATH fd, an empty NUL-terminated path with AT_EMPTY_PATH.
            cvt(unsafe {
                libc::fchownat(
                    fd.as_raw_fd(),
                    c"".as_ptr(),
                    caller.uid,
                    gid,
                    libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
                )
            })?;
            st = stat_fd(fd.as_fd())?;
        }
        if let Some(mode) = mode {
            let want = (st.st_mode & !0o777) | (mode & 0o777);
            if st.st_mode & libc::S_IFMT != libc::S_IFLNK && want != st.st_mode {
                let name = Self::proc_name(&fd);
                // SAFETY: the held /proc/self/fd dir fd and a NUL-terminated fd number.
                cvt(unsafe {
                    libc::fchmodat(self.proc_fd.as_raw_fd(), name.as_ptr(), want & 0o7777, 0)
                })?;
                st = stat_fd(fd.as_fd())?;
            }
        }
        let mut t = lock(&self.inodes);
        let path = t.path(parent).map(|p| child(p, name)).unwrap_or_default();
        Ok((t.remember(key(&st), path, fd), st))
    }

    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        caller: Caller,
    ) -> Res<(u64, libc::stat)> {
        let dir = self.fd(parent)?;
        let n = cstr(component(name)?)?;
        // SAFETY: a valid dir fd and a NUL-terminated single component.
        cvt(unsafe { libc::mknodat(dir.as_raw_fd(), n.as_ptr(), mode, u64::from(rdev)) })?;
        self.created(parent, &dir, name, Some(mode), caller)
    }

    pub fn mkdir(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        caller: Caller,
    ) -> Res<(u64, libc::stat)> {
        let dir = self.fd(parent)?;
        nix::sys::stat::mkdirat(
            dir.as_fd(),
            component(name)?,
            Mode::from_bits_truncate(mode),
        )?;
        self.created(parent, &dir, name, Some(mode), caller)
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &std::path::Path,
        caller: Caller,
    ) -> Res<(u64, libc::stat)> {
        let dir = self.fd(parent)?;
        nix::unistd::symlinkat(target, dir.as_fd(), component(name)?)?;
        self.created(parent, &dir, name, None, caller)
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> Res<(u64, libc::stat)> {
        let fd = self.fd(ino)?;
        let dir = self.fd(newparent)?;
        let n = cstr(component(newname)?)?;
        // SAFETY: valid fds, an empty path with AT_EMPTY_PATH (faultd holds
        // CAP_DAC_READ_SEARCH) and a NUL-terminated single component.
        cvt(unsafe {
            libc::linkat(
                fd.as_raw_fd(),
                c"".as_ptr(),
                dir.as_raw_fd(),
                n.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        })?;
        let st = stat_fd(fd.as_fd())?;
        let mut t = lock(&self.inodes);
        let path = t
            .path(newparent)
            .map(|p| child(p, newname))
            .unwrap_or_default();
        let dup = fd.try_clone().map_err(|_| Errno::EMFILE)?;
        Ok((t.remember(key(&st), path, dup), st))
    }

    pub fn unlink(&self, parent: u64, name: &OsStr, dir_too: bool) -> Res<()> {
        let dir = self.fd(parent)?;
        let flags = if dir_too {
            nix::unistd::UnlinkatFlags::RemoveDir
        } else {
            nix::unistd::UnlinkatFlags::NoRemoveDir
        };
        nix::unistd::unlinkat(dir.as_fd(), component(name)?, flags)
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Res<()> {
        let from = self.fd(parent)?;
        let to = self.fd(newparent)?;
        let (a, b) = (cstr(component(name)?)?, cstr(component(newname)?)?);
        // SAFETY: valid dir fds and NUL-terminated single components.
        cvt(unsafe {
            libc::renameat2(
                from.as_raw_fd(),
                a.as_ptr(),
                to.as_raw_fd(),
                b.as_ptr(),
                flags,
            )
        })?;
        let mut t = lock(&self.inodes);
        if let (Some(p), Some(q)) = (t.path(parent), t.path(newparent)) {
            let (old, new) = (child(p, name), child(q, newname));
            if flags & libc::RENAME_EXCHANGE != 0 {
                t.exchanged(&old, &new);
            } else {
                t.renamed(&old, &new);
            }
        }
        Ok(())
    }

    /// Opens node `ino` with the kernel's `flags` (creation flags and `O_DIRECT` dropped:
    /// the layer's buffers are not aligned; the kernel already does direct I/O to the layer).
    pub fn open(&self, ino: u64, flags: i32) -> Res<u64> {
        let fd = self.fd(ino)?;
        let flags = flags
            & !(libc::O_CREAT
                | libc::O_EXCL
                | libc::O_NOCTTY
                | libc::O_TRUNC
                | libc::O_DIRECT
                | libc::O_NOFOLLOW);
        let file = self.reopen(&fd, OFlag::from_bits_retain(flags))?;
        Ok(self.add_handle(file))
    }

    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        caller: Caller,
    ) -> Res<(u64, libc::stat, u64)> {
        let dir = self.fd(parent)?;
        let flags = (flags & !(libc::O_NOCTTY | libc::O_DIRECT)) | libc::O_CREAT | libc::O_NOFOLLOW;
        let file = openat(
            dir.as_fd(),
            component(name)?,
            OFlag::from_bits_retain(flags) | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map(File::from)?;
        let (ino, st) = self.created(parent, &dir, name, Some(mode), caller)?;
        Ok((ino, st, self.add_handle(file)))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Res<Vec<u8>> {
        let h = self.handle(fh)?;
        let mut buf = vec![0u8; size as usize];
        let n = h.file.read_at(&mut buf, offset).map_err(io_errno)?;
        buf.truncate(n);
        Ok(buf)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Res<usize> {
        self.handle(fh)?
            .file
            .write_at(data, offset)
            .map_err(io_errno)
    }

    /// `close` of a duplicate, as the close the application made.
    pub fn flush(&self, fh: u64) -> Res<()> {
        let h = self.handle(fh)?;
        let dup = nix::unistd::dup(h.file.as_fd())?;
        let raw = std::os::fd::IntoRawFd::into_raw_fd(dup);
        // SAFETY: `raw` is the duplicate just made, owned by nobody else.
        cvt(unsafe { libc::close(raw) }).map(drop)
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> Res<()> {
        let h = self.handle(fh)?;
        let r = if datasync {
            h.file.sync_data()
        } else {
            h.file.sync_all()
        };
        r.map_err(io_errno)
    }

    /// Drops handle `fh` (closing the file).
    pub fn release(&self, fh: u64) {
        lock(&self.handles).remove(&fh);
    }

    pub fn opendir(&self, ino: u64) -> Res<u64> {
        let fd = self.fd(ino)?;
        let file = openat(
            fd.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)?;
        Ok(self.add_handle(file))
    }

    /// The entries of directory handle `fh` from `offset` (0 or an entry's `next`), at most
    /// `room` bytes of `getdents64` records.
    pub fn readdir(&self, fh: u64, offset: i64, room: usize) -> Res<Vec<DirEntry>> {
        let h = self.handle(fh)?;
        let _g = lock(&h.dir);
        nix::unistd::lseek(h.file.as_fd(), offset, nix::unistd::Whence::SeekSet)?;
        let mut buf = vec![0u8; room.clamp(512, 64 * 1024)];
        // SAFETY: a valid directory fd and a writable buffer of the given length.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                h.file.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(Errno::last());
        }
        Ok(parse_dirents(&buf[..n as usize]))
    }

    pub fn statfs(&self, ino: u64) -> Res<libc::statvfs> {
        let fd = self.fd(ino)?;
        // SAFETY: statvfs is plain old data.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid fd (fstatvfs works on O_PATH) and a buffer of the right type.
        cvt(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut s) })?;
        Ok(s)
    }

    /// `/proc/self/fd/<n>` of node `ino`, for the xattr calls (no `*at` form before 6.13).
    fn xattr_path(&self, ino: u64) -> Res<(Arc<OwnedFd>, CString)> {
        let fd = self.fd(ino)?;
        let p = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("digits");
        Ok((fd, p))
    }

    /// `getxattr` with `size` 0 answering the value's size; `listxattr` when `name` is `None`.
    pub fn getxattr(&self, ino: u64, name: Option<&OsStr>, size: u32) -> Res<Vec<u8>> {
        let (_fd, p) = self.xattr_path(ino)?;
        let mut buf = vec![0u8; size as usize];
        let ptr = if size == 0 {
            std::ptr::null_mut()
        } else {
            buf.as_mut_ptr().cast()
        };
        let n = match name {
            Some(name) => {
                let name = cstr(name)?;
                // SAFETY: NUL-terminated path and name, a buffer of `size` bytes (or null/0).
                unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), ptr, buf.len()) }
            }
            // SAFETY: a NUL-terminated path and a buffer of `size` bytes (or null/0).
            None => unsafe { libc::listxattr(p.as_ptr(), ptr.cast(), buf.len()) },
        };
        if n < 0 {
            return Err(Errno::last());
        }
        if size == 0 {
            return Ok((n as u32).to_ne_bytes().to_vec());
        }
        buf.truncate(n as usize);
        Ok(buf)
    }

    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> Res<()> {
        let (_fd, p) = self.xattr_path(ino)?;
        let name = cstr(name)?;
        // SAFETY: NUL-terminated path and name, a value buffer of its length.
        cvt(unsafe {
            libc::setxattr(
                p.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        })
        .map(drop)
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> Res<()> {
        let (_fd, p) = self.xattr_path(ino)?;
        let name = cstr(name)?;
        // SAFETY: NUL-terminated path and name.
        cvt(unsafe { libc::removexattr(p.as_ptr(), name.as_ptr()) }).map(drop)
    }

    pub fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32) -> Res<()> {
        let h = self.handle(fh)?;
        let (o, l) = (
            i64::try_from(offset).map_err(|_| Errno::EFBIG)?,
            i64::try_from(len).map_err(|_| Errno::EFBIG)?,
        );
        // SAFETY: a valid fd and plain integers.
        cvt(unsafe { libc::fallocate(h.file.as_raw_fd(), mode, o, l) }).map(drop)
    }

    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Res<i64> {
        let h = self.handle(fh)?;
        // SAFETY: a valid fd and plain integers (SEEK_DATA/SEEK_HOLE come here).
        let r = unsafe { libc::lseek(h.file.as_raw_fd(), offset, whence) };
        Errno::result(r)
    }

    /// The `S_IFMT` type of a `DT_UNKNOWN` entry.
    pub fn entry_kind(&self, fh: u64, name: &[u8]) -> Res<u32> {
        let h = self.handle(fh)?;
        let st = fstatat(
            h.file.as_fd(),
            OsStr::from_bytes(name),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        Ok(st.st_mode & libc::S_IFMT)
    }

    /// faultd's umask (for the docs and tests).
    pub fn umask(&self) -> u32 {
        self.umask
    }
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// `linux_dirent64` records.
pub fn parse_dirents(mut b: &[u8]) -> Vec<DirEntry> {
    let mut out = Vec::new();
    // d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name NUL-terminated.
    while b.len() >= 19 {
        let ino = u64::from_ne_bytes(b[0..8].try_into().expect("8 bytes"));
        let next = i64::from_ne_bytes(b[8..16].try_into().expect("8 bytes"));
        let reclen = usize::from(u16::from_ne_bytes([b[16], b[17]]));
        if reclen < 19 || reclen > b.len() {
            break;
        }
        let kind = b[18];
        let name = &b[19..reclen];
        let name = &name[..name.iter().position(|c| *c == 0).unwrap_or(name.len())];
        out.push(DirEntry {
            ino,
            next,
            kind,
            name: name.to_vec(),
        });
        b = &b[reclen..];
    }
    out
}

/// The process umask, from `/proc/self/status` (reading it with `umask(2)` would change it).
fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

#[cfg(test)]
#[path = "passthrough_tests.rs"]
mod tests;
