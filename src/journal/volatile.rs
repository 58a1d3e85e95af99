//! Whether a directory lives in memory, where an `fdatasync` makes nothing survive a reboot
//! (the daemon warns when its state directory is there; the engine may skip syncing).
use std::io;
use std::path::Path;

/// `TMPFS_MAGIC` from `<linux/magic.h>`.
const TMPFS_MAGIC: u64 = 0x0102_1994;
/// `RAMFS_MAGIC` from `<linux/magic.h>` (not exported by the libc crate).
const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// The `f_type` magic `statfs(2)` reports for the filesystem holding `path`.
pub fn fs_type(path: &Path) -> io::Result<u64> {
    let st = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
    // `f_type` is a signed long on some targets; the magics are 32-bit values.
    Ok(st.filesystem_type().0 as u64 & 0xffff_ffff)
}

/// Whether `dir` is on a volatile filesystem (tmpfs or ramfs): its contents, synced or not,
/// are gone after a reboot.
pub fn is_volatile_fs(dir: &Path) -> io::Result<bool> {
    Ok(matches!(fs_type(dir)?, TMPFS_MAGIC | RAMFS_MAGIC))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount_type(mount_point: &str) -> Option<String> {
        std::fs::read_to_string("/proc/self/mounts")
            .ok()?
            .lines()
            .rev()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                let (_, mp, ty) = (f.next()?, f.next()?, f.next()?);
                (mp == mount_point).then(|| ty.to_string())
            })
    }

    #[test]
    fn journal_volatile_fs_is_detected_by_statfs() {
        // procfs is in memory but not a place for files; only tmpfs and ramfs count.
        assert!(!is_volatile_fs(Path::new("/proc")).unwrap());
        assert_eq!(fs_type(Path::new("/proc")).unwrap(), 0x9fa0);
        if mount_type("/dev/shm").as_deref() == Some("tmpfs") {
            assert!(is_volatile_fs(Path::new("/dev/shm")).unwrap());
            assert_eq!(fs_type(Path::new("/dev/shm")).unwrap(), TMPFS_MAGIC);
        }
        let err = is_volatile_fs(Path::new("/nonexistent/faultd-state")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
