//! The FUSE server of the layer: `fuser`'s `Filesystem` over [`Passthrough`], with the
//! injectors hooked in toda's places (`inject.rs`):
//!
//! - every operation but `forget` asks [`Injector::before`] with its method and the path
//!   (relative to the volume) of the node or of `parent/name`: an errno is answered without
//!   touching the file; a delay hands the operation, with its reply, to [`Delays`] so the
//!   serving thread stays free (a delayed `release` still closes its file, before answering
//!   an injected errno). `fallocate`, `lseek` and `copy_file_range` have no IOChaos method
//!   and are not gated; `getlk`, `setlk` and `bmap` are gated, then answered `ENOSYS` (the
//!   kernel keeps locks itself).
//! - [`Injector::attr`] on the attributes of `lookup`, `getattr`, `setattr`, `mknod`, `mkdir`,
//!   `symlink`, `link` and `create`. In the replies that name a node (all but `getattr` and
//!   `setattr`) the `ino` is the node id and is not overridden (the kernel would address the
//!   node by the overridden number); `stat` goes through `getattr`, where it is.
//! - [`Injector::reply_data`] on `read` and `readlink` data; [`Injector::write_data`] on a copy
//!   of a `write` buffer before it is written.
//!
//! The injector is an `Arc` behind a lock, replaced whole by [`Hooks::set`]: operations that
//! already read it finish with the old actions, the next ones see the new.
//!
//! Files are opened with `FOPEN_DIRECT_IO` (by default): every `read`/`write` call of the
//! application reaches the layer (the page cache would answer repeated reads without it, so
//! a latency on `read` would only hit the first), and `FUSE_DIRECT_IO_ALLOW_MMAP` (Linux 6.6)
//! keeps shared mappings working. Before 6.6 a `MAP_SHARED` mapping of a file opened through
//! the layer fails with `ENODEV` (private mappings and `exec` work); `direct_io: false` in
//! `LayerOptions` trades that for reads the page cache answers without the layer. Attributes and entries are valid for `attr_ttl` (0 by
//! default: every `stat` and path walk reaches the layer and sees the current actions).
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, Generation};

use super::actions::{FileKind, Timespec};
use super::delay::Delays;
use super::inject::{Attr, Before};
use super::matcher::Method;
use super::passthrough::Passthrough;
use super::{Injector, IoRng, SplitMix64};

thread_local! {
    static RNG: std::cell::RefCell<SplitMix64> = std::cell::RefCell::new(SplitMix64::from_entropy());
}

/// Runs `f` with this thread's generator.
pub fn with_rng<T>(f: impl FnOnce(&mut dyn IoRng) -> T) -> T {
    RNG.with(|r| f(&mut *r.borrow_mut()))
}

/// The swappable actions of a layer.
#[derive(Debug)]
pub struct Hooks {
    injector: RwLock<Arc<Injector>>,
}

impl Hooks {
    pub fn new(injector: Injector) -> Hooks {
        Hooks {
            injector: RwLock::new(Arc::new(injector)),
        }
    }

    pub fn get(&self) -> Arc<Injector> {
        self.injector
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set(&self, injector: Injector) {
        *self.injector.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(injector);
    }
}

/// What an operation gets before it runs.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    Go,
    Fail(i32),
    /// Wait, then run (`None`) or answer the errno.
    Later(Duration, Option<i32>),
}

impl From<Before> for Gate {
    fn from(b: Before) -> Gate {
        match (b.delay.is_zero(), b.errno) {
            (true, None) => Gate::Go,
            (true, Some(e)) => Gate::Fail(e),
            (false, e) => Gate::Later(b.delay, e),
        }
    }
}

/// Everything an operation needs, shared with delayed jobs.
#[derive(Debug)]
pub struct Core {
    pub pt: Passthrough,
    pub hooks: Hooks,
    pub ttl: Duration,
    pub direct_io: bool,
}

impl Core {
    /// The decision for `method` on the path `path` computes (only computed when some action
    /// can delay or fail an operation).
    pub fn gate(
        &self,
        inj: &Injector,
        method: Method,
        path: impl FnOnce() -> Option<PathBuf>,
    ) -> Gate {
        if !inj.has_before() {
            return Gate::Go;
        }
        let Some(p) = path() else {
            return Gate::Go;
        };
        with_rng(|r| inj.before(method, &p, r)).into()
    }

    /// The attributes to answer for a `stat` of `path`, overridden; `as_node`: the node id
    /// that a reply naming a node must carry as `ino`.
    pub fn attr(
        &self,
        inj: &Injector,
        st: &libc::stat,
        path: Option<&Path>,
        as_node: Option<u64>,
    ) -> Option<FileAttr> {
        let mut a = Attr::from_stat(st)?;
        if inj.has_attr() {
            if let Some(p) = path {
                let o = with_rng(|r| inj.attr(p, r));
                o.apply(&mut a);
            }
        }
        if let Some(id) = as_node {
            a.ino = id;
        }
        Some(file_attr(&a, st.st_blksize))
    }

    /// Damages `data` of a `read`/`readlink` reply of node `ino` if a mistake covers it.
    pub fn damage_reply(&self, inj: &Injector, method: Method, ino: u64, data: &mut [u8]) {
        if inj.has_mistake() {
            if let Some(p) = self.pt.path(ino) {
                with_rng(|r| inj.reply_data(method, &p, data, r));
            }
        }
    }

    pub fn entry(&self, reply: fuser::ReplyEntry, r: Result<(u64, libc::stat), nix::Error>) {
        match r {
            Ok((id, st)) => {
                let inj = self.hooks.get();
                let path = if inj.has_attr() {
                    self.pt.path(id)
                } else {
                    None
                };
                match self.attr(&inj, &st, path.as_deref(), Some(id)) {
                    Some(a) => reply.entry(&self.ttl, &a, Generation(0)),
                    None => reply.error(fuser::Errno::EIO),
                }
            }
            Err(e) => reply.error(errno(e as i32)),
        }
    }

    /// Attributes of node `ino` for `getattr`/`setattr` (the real `st_ino`, overrides applied).
    pub fn attr_reply(&self, reply: fuser::ReplyAttr, ino: u64, r: Result<libc::stat, nix::Error>) {
        match r {
            Ok(st) => {
                let inj = self.hooks.get();
                let path = if inj.has_attr() {
                    self.pt.path(ino)
                } else {
                    None
                };
                match self.attr(&inj, &st, path.as_deref(), None) {
                    Some(a) => reply.attr(&self.ttl, &a),
                    None => reply.error(fuser::Errno::EIO),
                }
            }
            Err(e) => reply.error(errno(e as i32)),
        }
    }

    /// `FOPEN_*` flags of an opened file.
    pub fn open_flags(&self) -> fuser::FopenFlags {
        if self.direct_io {
            fuser::FopenFlags::FOPEN_DIRECT_IO
        } else {
            fuser::FopenFlags::empty()
        }
    }

    /// Path of `name` in `parent`, as the actions see it.
    pub fn child(&self, parent: u64, name: &OsStr) -> Option<PathBuf> {
        self.pt.child_path(parent, name)
    }
}

pub fn errno(e: i32) -> fuser::Errno {
    fuser::Errno::from_i32(e)
}

/// A [`Timespec`] as a `SystemTime` (before the epoch too).
pub fn system_time(t: Timespec) -> SystemTime {
    let nsec = Duration::from_nanos(u64::from(t.nsec));
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::from_secs(t.sec.unsigned_abs()) + nsec
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + nsec
    }
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::NamedPipe => FileType::NamedPipe,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Directory => FileType::Directory,
        FileKind::RegularFile => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Socket => FileType::Socket,
    }
}

/// The `DT_*` of a directory entry as a FUSE type (`None`: `DT_UNKNOWN`).
pub fn dirent_type(dt: u8) -> Option<FileType> {
    Some(match dt {
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        libc::DT_DIR => FileType::Directory,
        libc::DT_REG => FileType::RegularFile,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_SOCK => FileType::Socket,
        _ => return None,
    })
}

/// The `S_IFMT` bits as a FUSE type.
pub fn mode_type(m: u32) -> Option<FileType> {
    FileKind::from_mode(m).map(file_type)
}

/// FUSE's attribute struct from the injectors' [`Attr`].
pub fn file_attr(a: &Attr, blksize: i64) -> FileAttr {
    FileAttr {
        ino: fuser::INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: system_time(a.atime),
        mtime: system_time(a.mtime),
        ctime: system_time(a.ctime),
        crtime: UNIX_EPOCH,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: u32::try_from(blksize).unwrap_or(4096),
        flags: 0,
    }
}

/// The FUSE file system: the shared core and the delay pool.
pub struct Fs {
    pub core: Arc<Core>,
    pub delays: Arc<Delays>,
}

/// Gates an operation: runs `$body` now, answers the injected errno, or runs it (or answers)
/// after the injected delay. The borrowed arguments listed in `[...]` are copied for a
/// delayed run and borrowed again inside it, so `$body` sees the same types either way;
/// `$body` sees the core as `$c`.
macro_rules! gated {
    ($s:ident, $m:expr, $path:expr, $reply:ident, [$($own:ident),*], |$c:ident| $body:expr) => {{
        let inj = $s.core.hooks.get();
        match $s.core.gate(&inj, $m, || $path) {
            $crate::faults::io::fuse::Gate::Go => {
                let $c: &$crate::faults::io::fuse::Core = &$s.core;
                $body
            }
            $crate::faults::io::fuse::Gate::Fail(e) => $reply.error($crate::faults::io::fuse::errno(e)),
            $crate::faults::io::fuse::Gate::Later(d, e) => {
                $(let $own = $own.to_owned();)*
                let core = $s.core.clone();
                $s.delays.after(
                    d,
                    Box::new(move || match e {
                        Some(e) => $reply.error($crate::faults::io::fuse::errno(e)),
                        None => {
                            $(let $own = &*$own;)*
                            let $c: &$crate::faults::io::fuse::Core = &core;
                            $body
                        }
                    }),
                );
            }
        }
    }};
}
pub(crate) use gated;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_follow_the_injector() {
        let d = Duration::from_millis(5);
        assert_eq!(Gate::from(Before::default()), Gate::Go);
        assert_eq!(
            Gate::from(Before {
                delay: Duration::ZERO,
                errno: Some(5)
            }),
            Gate::Fail(5)
        );
        assert_eq!(
            Gate::from(Before {
                delay: d,
                errno: None
            }),
            Gate::Later(d, None)
        );
        assert_eq!(
            Gate::from(Before {
                delay: d,
                errno: Some(5)
            }),
            Gate::Later(d, Some(5))
        );
    }

    #[test]
    fn times_before_and_after_the_epoch() {
        assert_eq!(
            system_time(Timespec { sec: 1, nsec: 5 }),
            UNIX_EPOCH + Duration::new(1, 5)
        );
        assert_eq!(
            system_time(Timespec {
                sec: -2,
                nsec: 500_000_000
            }),
            UNIX_EPOCH - Duration::from_millis(1500)
        );
    }

    #[test]
    fn attrs_take_overrides_but_nodes_keep_their_id() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.log"), b"abc").unwrap();
        let st = nix::sys::stat::lstat(&dir.path().join("a.log")).unwrap();
        let root = nix::fcntl::open(
            dir.path(),
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let core = Core {
            pt: Passthrough::new(root).unwrap(),
            hooks: Hooks::new(
                Injector::parse(
                    "/data",
                    r#"[{"type":"attrOverride","path":"/data/*.log","percent":100,"perm":448,"size":7,"ino":99}]"#,
                )
                .unwrap(),
            ),
            ttl: Duration::ZERO,
            direct_io: true,
        };
        let inj = core.hooks.get();
        let a = core
            .attr(&inj, &st, Some(Path::new("a.log")), None)
            .unwrap();
        assert_eq!(
            (a.perm, a.size, a.ino.0, a.kind),
            (0o700, 7, 99, FileType::RegularFile)
        );
        let e = core
            .attr(&inj, &st, Some(Path::new("a.log")), Some(1234))
            .unwrap();
        assert_eq!((e.perm, e.ino.0), (0o700, 1234));
        let other = core
            .attr(&inj, &st, Some(Path::new("b.txt")), None)
            .unwrap();
        assert_eq!((other.perm, other.size), ((st.st_mode & 0o7777) as u16, 3));
        core.hooks.set(Injector::new("/data", Vec::new()));
        let plain = core
            .attr(&core.hooks.get(), &st, Some(Path::new("a.log")), None)
            .unwrap();
        assert_eq!(plain.size, 3, "a swapped injector applies to the next call");
        assert_eq!(
            core.gate(&inj, Method::Read, || panic!("no before-action: no path")),
            Gate::Go
        );
    }
}
