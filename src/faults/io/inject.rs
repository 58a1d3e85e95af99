//! What one operation on the volume gets, given the validated actions. Pure decisions over
//! plain data: the FUSE layer asks at three points of an operation, in toda's order
//! (`src/hookfs/mod.rs`):
//!
//! 1. [`Injector::before`], before the operation runs: the delay to wait (every covered
//!    `latency` up to the first firing `fault`) and the errno to answer instead of running it.
//!    toda asks for every operation but `forget`, `release`, `releasedir`, `fsyncdir`,
//!    `getlk`, `setlk` and `bmap`.
//! 2. For a `write` that goes ahead, [`Injector::write_data`] damages the buffer before it is
//!    written (toda's `inject_write_data`, method `write`).
//! 3. After the operation: [`Injector::attr`] for every attribute set the layer returns
//!    (the replies of `lookup`, `getattr`, `setattr`, `mknod`, `mkdir`, `symlink`, `link` and
//!    `create`: toda's `get_file_attr`; toda also calls it for the stats `unlink`, `rmdir` and
//!    `rename` make for their own bookkeeping, where an `ino` override breaks its inode map),
//!    applied with [`AttrOverride::apply`] to an [`Attr`] or field by field to the FUSE crate's
//!    own struct; [`Injector::reply_data`] for the data of a `read` or `readlink` reply.
//!
//! Paths are given relative to the volume, as the layer knows them (`""` is the volume root);
//! actions match them as the container sees them (`<volume>/<path>`, see `matcher.rs`).
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::actions::WeightedErrno;
use super::actions::{Action, ActionKind, AttrOverride, FileKind, Filling, Mistake, Timespec};
use super::matcher::Method;
use super::{parse_actions, IoError, IoRng};

/// What happens before an operation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Before {
    /// Wait this long first (0: no wait).
    pub delay: Duration,
    /// Then answer this errno (positive, `1..=511`) instead of running the operation.
    pub errno: Option<i32>,
}

impl Before {
    pub fn is_nothing(&self) -> bool {
        self.delay.is_zero() && self.errno.is_none()
    }
}

/// The validated actions of one volume.
#[derive(Debug, Clone, PartialEq)]
pub struct Injector {
    volume: PathBuf,
    actions: Vec<Action>,
    /// Whether any action is a latency or a fault / an attrOverride / a mistake.
    any_before: bool,
    any_attr: bool,
    any_mistake: bool,
}

impl Injector {
    /// `volume`: the volume's path in the container (`ApplyIOChaosRequest.volume`).
    pub fn new(volume: impl Into<PathBuf>, actions: Vec<Action>) -> Injector {
        let has = |f: fn(&ActionKind) -> bool| actions.iter().any(|a| f(&a.kind));
        Injector {
            volume: volume.into(),
            any_before: has(|k| matches!(k, ActionKind::Latency(_) | ActionKind::Fault(_))),
            any_attr: has(|k| matches!(k, ActionKind::AttrOverride(_))),
            any_mistake: has(|k| matches!(k, ActionKind::Mistake(_))),
            actions,
        }
    }

    /// Parses `actions` ([`parse_actions`]) for the volume at `volume`.
    pub fn parse(volume: impl Into<PathBuf>, actions: &str) -> Result<Injector, IoError> {
        Ok(Injector::new(volume, parse_actions(actions)?))
    }

    pub fn volume(&self) -> &Path {
        &self.volume
    }

    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Whether some action is a `latency` or a `fault` ([`Injector::before`] can answer
    /// something).
    pub fn has_before(&self) -> bool {
        self.any_before
    }

    /// Whether some action is an `attrOverride`.
    pub fn has_attr(&self) -> bool {
        self.any_attr
    }

    /// Whether some action is a `mistake`.
    pub fn has_mistake(&self) -> bool {
        self.any_mistake
    }

    /// The path actions match for `rel`: toda's `mount_path.join(tail)` (the root, `""`, is
    /// `"<volume>/"`). A leading `/` in `rel` is ignored (it stays inside the volume).
    pub fn container_path(&self, rel: &Path) -> PathBuf {
        self.volume.join(rel.strip_prefix("/").unwrap_or(rel))
    }

    /// Before `method` runs on `rel`: the total delay and the errno to answer instead.
    pub fn before<R: IoRng + ?Sized>(&self, method: Method, rel: &Path, rng: &mut R) -> Before {
        let mut out = Before::default();
        if !self.any_before {
            return out;
        }
        let mut path = Lazy::new(self, rel);
        for a in &self.actions {
            let fires = |path: &mut Lazy, rng: &mut R| {
                a.filter.covers_method(method)
                    && a.filter.covers_path(path.get())
                    && a.filter.roll(rng)
            };
            match &a.kind {
                ActionKind::Latency(d) if fires(&mut path, rng) => {
                    out.delay = out.delay.saturating_add(*d);
                }
                ActionKind::Fault(faults) if fires(&mut path, rng) => {
                    out.errno = Some(choose_errno(faults, rng));
                    return out;
                }
                _ => {}
            }
        }
        out
    }

    /// The attributes to replace in what the layer returns for `rel` (empty: none). Every
    /// `attrOverride` covering the path draws its percent; later ones win field by field.
    pub fn attr<R: IoRng + ?Sized>(&self, rel: &Path, rng: &mut R) -> AttrOverride {
        let mut out = AttrOverride::default();
        if !self.any_attr {
            return out;
        }
        let mut path = Lazy::new(self, rel);
        for a in &self.actions {
            if let ActionKind::AttrOverride(o) = &a.kind {
                if a.filter.covers_path(path.get()) && a.filter.roll(rng) {
                    out.merge(o);
                }
            }
        }
        out
    }

    /// Damages the data of a reply of `method` (toda: `read` and `readlink` replies) in place;
    /// returns how many runs were written.
    pub fn reply_data<R: IoRng + ?Sized>(
        &self,
        method: Method,
        rel: &Path,
        data: &mut [u8],
        rng: &mut R,
    ) -> usize {
        self.mistakes(method, rel, data, rng)
    }

    /// Damages a `write`'s buffer in place before it is written; returns how many runs were
    /// written.
    pub fn write_data<R: IoRng + ?Sized>(&self, rel: &Path, data: &mut [u8], rng: &mut R) -> usize {
        self.mistakes(Method::Write, rel, data, rng)
    }

    fn mistakes<R: IoRng + ?Sized>(
        &self,
        method: Method,
        rel: &Path,
        data: &mut [u8],
        rng: &mut R,
    ) -> usize {
        if !self.any_mistake {
            return 0;
        }
        let mut path = Lazy::new(self, rel);
        let mut runs = 0;
        for a in &self.actions {
            if let ActionKind::Mistake(m) = &a.kind {
                if a.filter.covers_method(method)
                    && a.filter.covers_path(path.get())
                    && a.filter.roll(rng)
                {
                    runs += m.apply(data, rng).len();
                }
            }
        }
        runs
    }
}

/// The container path of an operation, built once and only when an action needs it.
struct Lazy<'a> {
    injector: &'a Injector,
    rel: &'a Path,
    path: Option<PathBuf>,
}

impl<'a> Lazy<'a> {
    fn new(injector: &'a Injector, rel: &'a Path) -> Lazy<'a> {
        Lazy {
            injector,
            rel,
            path: None,
        }
    }

    fn get(&mut self) -> &Path {
        self.path
            .get_or_insert_with(|| self.injector.container_path(self.rel))
    }
}

/// One errno of `faults`, each with probability `weight / Σweight` (the parser guarantees a
/// positive sum); no draw when there is only one.
pub fn choose_errno<R: IoRng + ?Sized>(faults: &[WeightedErrno], rng: &mut R) -> i32 {
    if let [only] = faults {
        return only.errno;
    }
    let total: u64 = faults.iter().map(|f| u64::from(f.weight)).sum();
    if total == 0 {
        return faults.first().map_or(libc::EIO, |f| f.errno);
    }
    let mut left = rng.below(total);
    for f in faults {
        let w = u64::from(f.weight);
        if left < w {
            return f.errno;
        }
        left -= w;
    }
    unreachable!("a draw below the total weight lands on an entry")
}

impl Mistake {
    /// Damages `data` in place as toda's `MistakeInjector::handle` does: 1 to
    /// `max_occurrences` runs, each at a uniform position with a uniform length of 1 to
    /// `max_length` bytes clipped to the end of the buffer, filled with zeros or random bytes.
    /// Returns the runs written (they may overlap; none for an empty buffer).
    pub fn apply<R: IoRng + ?Sized>(&self, data: &mut [u8], rng: &mut R) -> Vec<Range<usize>> {
        let len = data.len();
        if len == 0 {
            return Vec::new();
        }
        let occurrences = 1 + rng.below(self.max_occurrences.max(1));
        let mut runs = Vec::with_capacity(occurrences.min(64) as usize);
        for _ in 0..occurrences {
            let pos = rng.below(len as u64) as usize;
            let room = self.max_length.max(1).min((len - pos) as u64);
            let run = pos..pos + (1 + rng.below(room)) as usize;
            match self.filling {
                Filling::Zero => data[run.clone()].fill(0),
                Filling::Random => rng.fill(&mut data[run.clone()]),
            }
            runs.push(run);
        }
        runs
    }
}

/// A file's attributes as the layer returns them (what `stat` shows), with the type and the
/// permission bits apart as FUSE crates keep them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    /// 512-byte units.
    pub blocks: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub kind: FileKind,
    /// `st_mode & 0o7777`.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    /// The device number as FUSE's `fuse_attr.rdev` carries it (the kernel's
    /// `new_encode_dev`, which is the low 32 bits of glibc's `dev_t` for majors below 4096).
    pub rdev: u32,
}

impl Attr {
    /// From a `stat` of the file; `None` if `st_mode` names no file type.
    pub fn from_stat(st: &libc::stat) -> Option<Attr> {
        let ts = |sec: i64, nsec: i64| Timespec {
            sec,
            nsec: nsec.clamp(0, 999_999_999) as u32,
        };
        Some(Attr {
            ino: st.st_ino,
            size: st.st_size.max(0) as u64,
            blocks: st.st_blocks.max(0) as u64,
            atime: ts(st.st_atime, st.st_atime_nsec),
            mtime: ts(st.st_mtime, st.st_mtime_nsec),
            ctime: ts(st.st_ctime, st.st_ctime_nsec),
            kind: FileKind::from_mode(st.st_mode)?,
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink.try_into().unwrap_or(u32::MAX),
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
        })
    }

    /// `st_mode`: type bits and permission bits.
    pub fn mode(&self) -> u32 {
        self.kind.mode_bits() | u32::from(self.perm)
    }
}

impl AttrOverride {
    pub fn is_empty(&self) -> bool {
        *self == AttrOverride::default()
    }

    /// Takes every field `later` sets (the later action wins).
    pub fn merge(&mut self, later: &AttrOverride) {
        fn take<T: Copy>(mine: &mut Option<T>, theirs: Option<T>) {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
        take(&mut self.ino, later.ino);
        take(&mut self.size, later.size);
        take(&mut self.blocks, later.blocks);
        take(&mut self.atime, later.atime);
        take(&mut self.mtime, later.mtime);
        take(&mut self.ctime, later.ctime);
        take(&mut self.kind, later.kind);
        take(&mut self.perm, later.perm);
        take(&mut self.nlink, later.nlink);
        take(&mut self.uid, later.uid);
        take(&mut self.gid, later.gid);
        take(&mut self.rdev, later.rdev);
    }

    /// Replaces the fields this override sets.
    pub fn apply(&self, attr: &mut Attr) {
        fn set<T: Copy>(field: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *field = v;
            }
        }
        set(&mut attr.ino, self.ino);
        set(&mut attr.size, self.size);
        set(&mut attr.blocks, self.blocks);
        set(&mut attr.atime, self.atime);
        set(&mut attr.mtime, self.mtime);
        set(&mut attr.ctime, self.ctime);
        set(&mut attr.kind, self.kind);
        set(&mut attr.perm, self.perm);
        set(&mut attr.nlink, self.nlink);
        set(&mut attr.uid, self.uid);
        set(&mut attr.gid, self.gid);
        set(&mut attr.rdev, self.rdev);
    }
}

#[cfg(test)]
#[path = "inject_tests.rs"]
mod tests;
