//! Files of a container, reached through `/proc/<pid>/root` without a shell and without ever
//! leaving the container's root: paths are resolved with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` (an absolute symlink inside the container resolves inside it), the
//! opened file is identified by `(st_dev, st_ino)`, and writes go **in place** (`pwrite` +
//! `ftruncate` + `fsync`) on that descriptor. Never a temp file and a `rename` through
//! `/proc/<pid>/root`: from another mount namespace the kernel does not refuse that, and it
//! replaces the file *under* a bind mount, which can be the host's own file.
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use serde::{Deserialize, Serialize};

use crate::failure::{Failure, FailureKind};

/// A file's identity: `(st_dev, st_ino)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileIdent {
    pub dev: u64,
    pub ino: u64,
}

impl std::fmt::Display for FileIdent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.dev, self.ino)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("process {pid} is gone (no /proc/{pid}/root)")]
    NoProcess { pid: u32 },
    #[error("{path} in the root of process {pid}: {source}")]
    Open {
        pid: u32,
        path: String,
        source: nix::Error,
    },
    #[error("{path} in the root of process {pid} is not a regular file")]
    NotAFile { pid: u32, path: String },
    #[error(
        "{path} in the root of process {pid} is {size} bytes, more than the {max} faultd handles"
    )]
    TooLarge {
        pid: u32,
        path: String,
        size: u64,
        max: usize,
    },
    #[error("{what} {path} in the root of process {pid}: {source}")]
    Io {
        what: &'static str,
        pid: u32,
        path: String,
        source: std::io::Error,
    },
}

impl Failure for RootfsError {
    fn failure(&self) -> FailureKind {
        match self {
            RootfsError::NoProcess { .. } => FailureKind::NotFound,
            RootfsError::Open { source, .. } if *source == nix::Error::ENOENT => {
                FailureKind::FailedPrecondition
            }
            RootfsError::Open { .. } | RootfsError::Io { .. } => FailureKind::Internal,
            RootfsError::NotAFile { .. } | RootfsError::TooLarge { .. } => {
                FailureKind::FailedPrecondition
            }
        }
    }
}

/// A file opened inside a process's root, with its identity.
pub struct RootFile {
    pub file: File,
    pub ident: FileIdent,
    pid: u32,
    path: String,
}

impl RootFile {
    /// Opens `path` (absolute, as the container sees it) in the root of `pid`, for reading and,
    /// with `write`, writing. Refuses anything but a regular file.
    pub fn open(pid: u32, path: &str, write: bool) -> Result<RootFile, RootfsError> {
        let root = nix::fcntl::open(
            format!("/proc/{pid}/root").as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|_| RootfsError::NoProcess { pid })?;
        let flags = OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY
            | if write {
                OFlag::O_RDWR
            } else {
                OFlag::O_RDONLY
            };
        let how = OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd: OwnedFd = nix::fcntl::openat2(root.as_fd(), path.trim_start_matches('/'), how)
            .map_err(|source| RootfsError::Open {
                pid,
                path: path.into(),
                source,
            })?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(|source| RootfsError::Io {
            what: "stat",
            pid,
            path: path.into(),
            source,
        })?;
        if !meta.is_file() {
            return Err(RootfsError::NotAFile {
                pid,
                path: path.into(),
            });
        }
        Ok(RootFile {
            ident: FileIdent {
                dev: meta.dev(),
                ino: meta.ino(),
            },
            file,
            pid,
            path: path.into(),
        })
    }

    fn io(&self, what: &'static str, source: std::io::Error) -> RootfsError {
        RootfsError::Io {
            what,
            pid: self.pid,
            path: self.path.clone(),
            source,
        }
    }

    /// The whole content, refusing files over `max` bytes.
    pub fn read_all(&self, max: usize) -> Result<Vec<u8>, RootfsError> {
        let size = self.file.metadata().map_err(|e| self.io("stat", e))?.len();
        if size > max as u64 {
            return Err(RootfsError::TooLarge {
                pid: self.pid,
                path: self.path.clone(),
                size,
                max,
            });
        }
        let mut buf = vec![0u8; max + 1];
        let mut n = 0;
        loop {
            let got = self
                .file
                .read_at(&mut buf[n..], n as u64)
                .map_err(|e| self.io("read", e))?;
            if got == 0 {
                break;
            }
            n += got;
            if n > max {
                return Err(RootfsError::TooLarge {
                    pid: self.pid,
                    path: self.path.clone(),
                    size: n as u64,
                    max,
                });
            }
        }
        buf.truncate(n);
        Ok(buf)
    }

    /// Replaces the content in place and makes it durable: `pwrite` at 0, `ftruncate` to the
    /// new length, `fsync`. The inode (and so every bind mount of it) stays the same.
    pub fn rewrite(&self, bytes: &[u8]) -> Result<(), RootfsError> {
        self.file
            .write_all_at(bytes, 0)
            .map_err(|e| self.io("write", e))?;
        self.file
            .set_len(bytes.len() as u64)
            .map_err(|e| self.io("truncate", e))?;
        self.file.sync_all().map_err(|e| self.io("fsync", e))
    }
}

/// The identity of `path` as the host sees it (pid 1's root) and as this process sees it, so
/// a caller can refuse to touch the host's own file through a process that shares it.
pub fn host_idents(path: &str) -> Vec<FileIdent> {
    [format!("/proc/1/root{path}"), path.to_string()]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| FileIdent {
            dev: m.dev(),
            ino: m.ino(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rewrites_in_place_and_stays_inside_the_root() {
        // Our own root is "/": the file of a temp dir is reachable by its absolute path.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resolv.conf");
        std::fs::write(&p, b"nameserver 1.1.1.1\nsearch a\n").unwrap();
        let ino = std::fs::metadata(&p).unwrap().ino();
        let f = RootFile::open(std::process::id(), p.to_str().unwrap(), true).unwrap();
        assert_eq!(f.ident.ino, ino);
        assert_eq!(f.read_all(64).unwrap(), b"nameserver 1.1.1.1\nsearch a\n");
        f.rewrite(b"x\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"x\n");
        assert_eq!(std::fs::metadata(&p).unwrap().ino(), ino, "same inode");
        assert!(matches!(
            f.read_all(1),
            Err(RootfsError::TooLarge { size: 2, .. })
        ));
        // A directory is refused; a missing file is FailedPrecondition; a dead pid NotFound.
        let d = RootFile::open(std::process::id(), dir.path().to_str().unwrap(), false);
        assert!(matches!(d, Err(RootfsError::NotAFile { .. })));
        let e = RootFile::open(std::process::id(), "/nonexistent/faultd", false).err();
        assert_eq!(e.unwrap().failure(), FailureKind::FailedPrecondition);
        let e = RootFile::open(u32::MAX - 1, "/etc/hostname", false).err();
        assert_eq!(e.unwrap().failure(), FailureKind::NotFound);
    }

    #[test]
    fn magic_links_are_not_followed() {
        // /proc/self/root is a magic link: resolving through it is refused.
        let e = RootFile::open(std::process::id(), "/proc/self/root/etc/hostname", false);
        assert!(matches!(e, Err(RootfsError::Open { .. })), "{:?}", e.err());
    }
}
