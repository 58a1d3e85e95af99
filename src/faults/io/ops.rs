//! `fuser::Filesystem` for the layer: each operation gated by the injector (`fuse.rs`, macro
//! `gated!`), then done by [`Passthrough`](super::passthrough::Passthrough).
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno, FileHandle, FopenFlags, INodeNo, KernelConfig, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyBmap, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyLock, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};

use super::fuse::{dirent_type, errno, gated, mode_type, Fs};
use super::matcher::Method;
use super::passthrough::{Caller, SetAttr, SetTime};

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(s) => {
            let (sec, nsec) = match s.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_nanos())),
                Err(e) => {
                    let d = e.duration();
                    let (s, n) = (-(d.as_secs() as i64), i64::from(d.subsec_nanos()));
                    if n == 0 {
                        (s, 0)
                    } else {
                        (s - 1, 1_000_000_000 - n)
                    }
                }
            };
            SetTime::At(libc::timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            })
        }
    })
}

fn empty(reply: ReplyEmpty, r: Result<(), nix::Error>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e as i32)),
    }
}

impl fuser::Filesystem for Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let want = fuser::InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP
            | fuser::InitFlags::FUSE_PARALLEL_DIROPS
            | fuser::InitFlags::FUSE_ASYNC_DIO;
        let _ = config.add_capabilities(want & config.capabilities());
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let parent = parent.0;
        gated!(
            self,
            Method::Lookup,
            self.core.child(parent, name),
            reply,
            [name],
            |c| c.entry(reply, c.pt.lookup(parent, name))
        )
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.core.pt.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let ino = ino.0;
        gated!(
            self,
            Method::Getattr,
            self.core.pt.path(ino),
            reply,
            [],
            |c| c.attr_reply(reply, ino, c.pt.getattr(ino))
        )
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ino = ino.0;
        let a = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
            fh: fh.map(|f| f.0),
        };
        gated!(
            self,
            Method::Setattr,
            self.core.pt.path(ino),
            reply,
            [],
            |c| c.attr_reply(reply, ino, c.pt.setattr(ino, &a))
        )
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let ino = ino.0;
        gated!(
            self,
            Method::Readlink,
            self.core.pt.path(ino),
            reply,
            [],
            |c| {
                match c.pt.readlink(ino) {
                    Ok(mut data) => {
                        c.damage_reply(&c.hooks.get(), Method::Readlink, ino, &mut data);
                        reply.data(&data)
                    }
                    Err(e) => reply.error(errno(e as i32)),
                }
            }
        )
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let (parent, who) = (parent.0, caller(req));
        gated!(
            self,
            Method::Mknod,
            self.core.child(parent, name),
            reply,
            [name],
            |c| c.entry(reply, c.pt.mknod(parent, name, mode, rdev, who))
        )
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let (parent, who) = (parent.0, caller(req));
        gated!(
            self,
            Method::Mkdir,
            self.core.child(parent, name),
            reply,
            [name],
            |c| c.entry(reply, c.pt.mkdir(parent, name, mode, who))
        )
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let parent = parent.0;
        gated!(
            self,
            Method::Unlink,
            self.core.child(parent, name),
            reply,
            [name],
            |c| empty(reply, c.pt.unlink(parent, name, false))
        )
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let parent = parent.0;
        gated!(
            self,
            Method::Rmdir,
            self.core.child(parent, name),
            reply,
            [name],
            |c| empty(reply, c.pt.unlink(parent, name, true))
        )
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (parent, who) = (parent.0, caller(req));
        gated!(
            self,
            Method::Symlink,
            self.core.child(parent, link_name),
            reply,
            [link_name, target],
            |c| c.entry(reply, c.pt.symlink(parent, link_name, target, who))
        )
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (parent, newparent, flags) = (parent.0, newparent.0, flags.bits());
        gated!(
            self,
            Method::Rename,
            self.core.child(parent, name),
            reply,
            [name, newname],
            |c| empty(reply, c.pt.rename(parent, name, newparent, newname, flags))
        )
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let (ino, newparent) = (ino.0, newparent.0);
        gated!(
            self,
            Method::Link,
            self.core.pt.path(ino),
            reply,
            [newname],
            |c| c.entry(reply, c.pt.link(ino, newparent, newname))
        )
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let ino = ino.0;
        gated!(self, Method::Open, self.core.pt.path(ino), reply, [], |c| {
            match c.pt.open(ino, flags.0) {
                Ok(fh) => reply.opened(FileHandle(fh), c.open_flags()),
                Err(e) => reply.error(errno(e as i32)),
            }
        })
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let (ino, fh) = (ino.0, fh.0);
        gated!(self, Method::Read, self.core.pt.path(ino), reply, [], |c| {
            match c.pt.read(fh, offset, size) {
                Ok(mut data) => {
                    c.damage_reply(&c.hooks.get(), Method::Read, ino, &mut data);
                    reply.data(&data)
                }
                Err(e) => reply.error(errno(e as i32)),
            }
        })
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let (ino, fh) = (ino.0, fh.0);
        gated!(
            self,
            Method::Write,
            self.core.pt.path(ino),
            reply,
            [data],
            |c| {
                let inj = c.hooks.get();
                let path = if inj.has_mistake() {
                    c.pt.path(ino)
                } else {
                    None
                };
                let r = match path {
                    Some(p) => {
                        let mut copy = data.to_vec();
                        super::fuse::with_rng(|r| inj.write_data(&p, &mut copy, r));
                        c.pt.write(fh, offset, &copy)
                    }
                    None => c.pt.write(fh, offset, data),
                };
                match r {
                    Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
                    Err(e) => reply.error(errno(e as i32)),
                }
            }
        )
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let (ino, fh) = (ino.0, fh.0);
        gated!(
            self,
            Method::Flush,
            self.core.pt.path(ino),
            reply,
            [],
            |c| empty(reply, c.pt.flush(fh))
        )
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.release_either(Method::Release, ino.0, fh.0, reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let (ino, fh) = (ino.0, fh.0);
        gated!(
            self,
            Method::Fsync,
            self.core.pt.path(ino),
            reply,
            [],
            |c| empty(reply, c.pt.fsync(fh, datasync))
        )
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let ino = ino.0;
        gated!(
            self,
            Method::Opendir,
            self.core.pt.path(ino),
            reply,
            [],
            |c| {
                match c.pt.opendir(ino) {
                    Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                    Err(e) => reply.error(errno(e as i32)),
                }
            }
        )
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let (ino, fh) = (ino.0, fh.0);
        gated!(
            self,
            Method::Readdir,
            self.core.pt.path(ino),
            reply,
            [],
            |c| {
                let offset = i64::try_from(offset).unwrap_or(i64::MAX);
                match c.pt.readdir(fh, offset, 16 * 1024) {
                    Ok(entries) => {
                        for e in entries {
                            let kind = dirent_type(e.kind)
                                .or_else(|| c.pt.entry_kind(fh, &e.name).ok().and_then(mode_type))
                                .unwrap_or(fuser::FileType::RegularFile);
                            let next = u64::try_from(e.next).unwrap_or(u64::MAX);
                            if reply.add(INodeNo(e.ino), next, kind, OsStr::from_bytes(&e.name)) {
                                break;
                            }
                        }
                        reply.ok()
                    }
                    Err(e) => reply.error(errno(e as i32)),
                }
            }
        )
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.release_either(Method::Releasedir, ino.0, fh.0, reply);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let (ino, fh) = (ino.0, fh.0);
        gated!(
            self,
            Method::Fsyncdir,
            self.core.pt.path(ino),
            reply,
            [],
            |c| empty(reply, c.pt.fsync(fh, datasync))
        )
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let ino = ino.0;
        gated!(
            self,
            Method::Statfs,
            self.core.pt.path(ino),
            reply,
            [],
            |c| {
                match c.pt.statfs(ino) {
                    Ok(s) => reply.statfs(
                        s.f_blocks,
                        s.f_bfree,
                        s.f_bavail,
                        s.f_files,
                        s.f_ffree,
                        u32::try_from(s.f_bsize).unwrap_or(4096),
                        u32::try_from(s.f_namemax).unwrap_or(255),
                        u32::try_from(s.f_frsize).unwrap_or(4096),
                    ),
                    Err(e) => reply.error(errno(e as i32)),
                }
            }
        )
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let ino = ino.0;
        gated!(
            self,
            Method::Setxattr,
            self.core.pt.path(ino),
            reply,
            [name, value],
            |c| empty(reply, c.pt.setxattr(ino, name, value, flags))
        )
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let ino = ino.0;
        gated!(
            self,
            Method::Getxattr,
            self.core.pt.path(ino),
            reply,
            [name],
            |c| xattr(reply, size, c.pt.getxattr(ino, Some(name), size))
        )
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let ino = ino.0;
        gated!(
            self,
            Method::Listxattr,
            self.core.pt.path(ino),
            reply,
            [],
            |c| xattr(reply, size, c.pt.getxattr(ino, None, size))
        )
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let ino = ino.0;
        gated!(
            self,
            Method::Removexattr,
            self.core.pt.path(ino),
            reply,
            [name],
            |c| empty(reply, c.pt.removexattr(ino, name))
        )
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Not sent with `default_permissions` (the kernel checks); gated for completeness.
        let ino = ino.0;
        gated!(
            self,
            Method::Access,
            self.core.pt.path(ino),
            reply,
            [],
            |_c| reply.ok()
        )
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (parent, who) = (parent.0, caller(req));
        gated!(
            self,
            Method::Create,
            self.core.child(parent, name),
            reply,
            [name],
            |c| {
                match c.pt.create(parent, name, mode, flags, who) {
                    Ok((id, st, fh)) => {
                        let inj = c.hooks.get();
                        let path = if inj.has_attr() { c.pt.path(id) } else { None };
                        match c.attr(&inj, &st, path.as_deref(), Some(id)) {
                            Some(a) => reply.created(
                                &c.ttl,
                                &a,
                                fuser::Generation(0),
                                FileHandle(fh),
                                c.open_flags(),
                            ),
                            None => reply.error(Errno::EIO),
                        }
                    }
                    Err(e) => reply.error(errno(e as i32)),
                }
            }
        )
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        let ino = ino.0;
        gated!(
            self,
            Method::Getlk,
            self.core.pt.path(ino),
            reply,
            [],
            |_c| reply.error(Errno::ENOSYS)
        )
    }

    fn setlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        _sleep: bool,
        reply: ReplyEmpty,
    ) {
        let ino = ino.0;
        gated!(
            self,
            Method::Setlk,
            self.core.pt.path(ino),
            reply,
            [],
            |_c| reply.error(Errno::ENOSYS)
        )
    }

    fn bmap(&self, _req: &Request, ino: INodeNo, _blocksize: u32, _idx: u64, reply: ReplyBmap) {
        let ino = ino.0;
        gated!(
            self,
            Method::Bmap,
            self.core.pt.path(ino),
            reply,
            [],
            |_c| reply.error(Errno::ENOSYS)
        )
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.core.pt.fallocate(fh.0, offset, length, mode))
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.core.pt.lseek(fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(errno(e as i32)),
        }
    }
}

fn xattr(reply: ReplyXattr, size: u32, r: Result<Vec<u8>, nix::Error>) {
    match r {
        Ok(v) if size == 0 => {
            let n = v
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_ne_bytes);
            reply.size(n)
        }
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(errno(e as i32)),
    }
}

impl Fs {
    /// `release`/`releasedir`: the handle is always closed (after the delay, if any); an
    /// injected errno is answered after that.
    fn release_either(&self, method: Method, ino: u64, fh: u64, reply: ReplyEmpty) {
        let inj = self.core.hooks.get();
        match self.core.gate(&inj, method, || self.core.pt.path(ino)) {
            super::fuse::Gate::Go => {
                self.core.pt.release(fh);
                reply.ok()
            }
            super::fuse::Gate::Fail(e) => {
                self.core.pt.release(fh);
                reply.error(errno(e))
            }
            super::fuse::Gate::Later(d, e) => {
                let core = self.core.clone();
                self.delays.after(
                    d,
                    Box::new(move || {
                        core.pt.release(fh);
                        match e {
                            Some(e) => reply.error(errno(e)),
                            None => reply.ok(),
                        }
                    }),
                );
            }
        }
    }
}
