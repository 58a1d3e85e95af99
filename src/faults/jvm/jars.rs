//! Byteman's jars, put where the JVM can read them: `/tmp/.faultd-byteman/` in the JVM's root,
//! reached through `/proc/<pid>/root` without leaving it (`openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` for `/tmp`, then `O_NOFOLLOW` for everything faultd creates). Each
//! jar is written once under a name carrying its content hash (`byteman-<hash>.jar`), created
//! with `O_EXCL` and never renamed or overwritten: a file already there under that name is
//! compared byte for byte and reused. Nothing is written outside that directory, and nothing
//! needs a shell or a writable `/usr` in the application's image.
use std::fs::File;
use std::hash::Hasher;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::JvmError;

/// faultd's directory in the JVM's `/tmp`.
pub const DIR: &str = "/tmp/.faultd-byteman";

/// Content-addressed name of `bytes` as `stem-<hash>.jar`.
pub fn name_of(stem: &str, bytes: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(bytes);
    format!("{stem}-{:016x}.jar", h.finish())
}

fn err(pid: u32, what: &str, e: impl std::fmt::Display) -> JvmError {
    JvmError::Jar {
        pid,
        reason: format!("{what}: {e}"),
    }
}

/// Writes `jars` (`(stem, bytes)`) into the JVM's root; returns their paths as the JVM sees
/// them, in order. Blocking.
pub fn install(pid: u32, jars: &[(&str, &[u8])]) -> Result<Vec<String>, JvmError> {
    let root = nix::fcntl::open(
        format!("/proc/{pid}/root").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|_| JvmError::Gone(pid))?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let tmp: OwnedFd =
        nix::fcntl::openat2(root.as_fd(), "tmp", how).map_err(|e| err(pid, "/tmp", e))?;
    let dir_name = Path::new(DIR).file_name().unwrap_or_default();
    match nix::sys::stat::mkdirat(tmp.as_fd(), dir_name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(err(pid, DIR, e)),
    }
    let dir: OwnedFd = nix::fcntl::openat(
        tmp.as_fd(),
        dir_name,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
        Mode::empty(),
    )
    .map_err(|e| err(pid, DIR, e))?;
    // Only a directory faultd made (root's, not writable by others) is written into.
    let st = nix::sys::stat::fstat(dir.as_fd()).map_err(|e| err(pid, DIR, e))?;
    if st.st_uid != 0 || st.st_mode & 0o022 != 0 {
        return Err(err(
            pid,
            DIR,
            format!(
                "exists but is not root's or is writable by others (uid {}, mode {:o})",
                st.st_uid,
                st.st_mode & 0o7777
            ),
        ));
    }
    let mut out = Vec::with_capacity(jars.len());
    for (stem, bytes) in jars {
        let name = name_of(stem, bytes);
        let created = nix::fcntl::openat(
            dir.as_fd(),
            name.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        );
        match created {
            Ok(fd) => {
                let mut f = File::from(fd);
                if let Err(e) = f.write_all(bytes) {
                    let _ = nix::unistd::unlinkat(
                        dir.as_fd(),
                        name.as_str(),
                        nix::unistd::UnlinkatFlags::NoRemoveDir,
                    );
                    return Err(err(pid, &name, e));
                }
            }
            Err(nix::errno::Errno::EEXIST) => {
                let fd = nix::fcntl::openat(
                    dir.as_fd(),
                    name.as_str(),
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| err(pid, &name, e))?;
                let mut have = Vec::with_capacity(bytes.len());
                File::from(fd)
                    .take(bytes.len() as u64 + 1)
                    .read_to_end(&mut have)
                    .map_err(|e| err(pid, &name, e))?;
                if have != *bytes {
                    return Err(err(
                        pid,
                        &name,
                        "exists with other content than faultd's jar",
                    ));
                }
            }
            Err(e) => return Err(err(pid, &name, e)),
        }
        out.push(format!("{DIR}/{name}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_content_hash() {
        let a = name_of("byteman", b"one");
        assert!(a.starts_with("byteman-") && a.ends_with(".jar"), "{a}");
        assert_eq!(a, name_of("byteman", b"one"));
        assert_ne!(a, name_of("byteman", b"two"));
    }
}
