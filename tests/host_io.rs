//! Host tier (root, `/dev/fuse`; run by `tests/run-all.sh`, or by hand:
//! `cargo test --test host_io -- --ignored --test-threads=1 --nocapture`): faultd's IOChaos
//! FUSE layer (`faults::io::IoLayer`) stacked on a tmpfs "volume" inside a scratch mount
//! namespace each test makes (`unshare(CLONE_NEWNS)` on a thread, every mount made private
//! first), so no mount of the host is ever touched: the volume directory under `/tmp` is an
//! empty directory on the host, the tmpfs and the layer exist only in the scratch namespace
//! and vanish with it. Every check runs in that namespace through `Namespace::run`.
//!
//! Covered: passthrough operations land in the volume; latency on `read` of `*.log` (other
//! files fast, delayed reads overlap); `fault` EIO on `open` and on `read`; a non-root caller
//! owns what it creates and is refused another's file, a shared mapping writes through, a
//! binary on the volume runs; `attrOverride` in `stat`; `mistake` changes what is read, never
//! the file; a live injector swap; unmount gives the original back with mountinfo clean and
//! answers requests still delayed; a shared volume, a non-root path and a second layer are
//! refused; a hung server and a killed server (a child process serving the layer, SIGKILLed)
//! are repaired with `abort_connection` + `detach_ours`. Overhead numbers are printed
//! (`layer_overhead_numbers`).
//!
//! `a_container_volume_through_the_layer` uses the test containerd (`FAULTD_TEST_CTR_SOCK`,
//! `FAULTD_TEST_IMAGE`, as the other container tests): a container with a bind-mounted
//! directory of this test at `/data`; the layer goes on top of `/data` in the container's mount
//! namespace only (the host's mountinfo never shows it) and the host directory's files are the
//! same bytes before and after.
mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use faultd::failure::{Failure, FailureKind};
use faultd::faults::io::{
    abort_connection, detach_ours, layers_at, Injector, IoError, IoLayer, LayerOptions,
};
use faultd::ns::{Namespace, NsKind};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// A scratch mount namespace with a tmpfs at `<dir>/vol`.
struct Scratch {
    ns: Namespace,
    dir: PathBuf,
    vol: PathBuf,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = PathBuf::from(format!("/tmp/faultd-io-{tag}-{}", std::process::id()));
        let vol = dir.join("vol");
        std::fs::create_dir_all(&vol).unwrap();
        let v = vol.clone();
        let ns = std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_FS).unwrap();
            unshare(CloneFlags::CLONE_NEWNS).unwrap();
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .unwrap();
            mount(
                Some("tmpfs"),
                &v,
                Some("tmpfs"),
                MsFlags::empty(),
                Some("size=256m,mode=755"),
            )
            .unwrap();
            Namespace::open(Path::new("/proc/thread-self/ns/mnt"), NsKind::Mnt).unwrap()
        })
        .join()
        .unwrap();
        Scratch { ns, dir, vol }
    }

    /// Runs `f` in the scratch namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.ns.run(f).unwrap()
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.vol.join(rel)
    }

    fn write(&self, rel: &str, data: &[u8]) {
        let (p, d) = (self.p(rel), data.to_vec());
        self.run(move || std::fs::write(p, d)).unwrap();
    }

    fn read(&self, rel: &str) -> std::io::Result<Vec<u8>> {
        let p = self.p(rel);
        self.run(move || std::fs::read(p))
    }

    /// How long reading `rel` through the volume path takes, and its result.
    fn timed_read(&self, rel: &str) -> (Duration, std::io::Result<Vec<u8>>) {
        let p = self.p(rel);
        self.run(move || {
            let t0 = Instant::now();
            let r = std::fs::read(p);
            (t0.elapsed(), r)
        })
    }

    fn mountinfo(&self) -> String {
        self.run(|| std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap())
    }

    fn layer(&self, actions: &str) -> IoLayer {
        self.layer_with(actions, LayerOptions::default())
    }

    fn layer_with(&self, actions: &str, opts: LayerOptions) -> IoLayer {
        IoLayer::mount(&self.ns, &self.vol, self.injector(actions), opts).unwrap()
    }

    fn injector(&self, actions: &str) -> Injector {
        Injector::parse(
            &self.vol,
            &actions.replace("$VOL", self.vol.to_str().unwrap()),
        )
        .unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn errno(r: &std::io::Result<impl Sized>) -> Option<i32> {
    r.as_ref().err().and_then(|e| e.raw_os_error())
}

#[test]
#[ignore = "host tier: needs root and /dev/fuse; run by tests/run-all.sh"]
fn passthrough_operations_land_in_the_volume() {
    let s = Scratch::new("ops");
    s.write("orig.txt", b"original content");
    s.run({
        let d = s.p("dir");
        move || std::fs::create_dir(d)
    })
    .unwrap();
    let layer = s.layer("[]");
    let info = s.mountinfo();
    let line = info
        .lines()
        .find(|l| l.contains(" - fuse.faultd faultd-io "))
        .expect("the layer is in mountinfo");
    assert!(line.contains(&format!(" 0:{} ", layer.conn())), "{line}");
    assert!(faultd::faults::io::is_ours(line));
    assert_eq!(layers_at(&s.ns, &s.vol).unwrap().len(), 1);
    let vol = s.vol.clone();
    s.run(move || {
        let p = |r: &str| vol.join(r);
        assert_eq!(std::fs::read(p("orig.txt")).unwrap(), b"original content");
        std::fs::write(p("new.txt"), b"written through the layer").unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(p("new.txt"))
            .unwrap();
        f.write_all(b" + appended").unwrap();
        drop(f);
        std::fs::create_dir(p("dir/sub")).unwrap();
        std::fs::write(p("dir/sub/f"), b"deep").unwrap();
        std::fs::rename(p("dir"), p("moved")).unwrap();
        assert_eq!(std::fs::read(p("moved/sub/f")).unwrap(), b"deep");
        std::fs::write(p("gone"), b"x").unwrap();
        std::fs::remove_file(p("gone")).unwrap();
        assert!(!p("gone").exists());
        std::os::unix::fs::symlink("orig.txt", p("link")).unwrap();
        assert_eq!(
            std::fs::read_link(p("link")).unwrap(),
            PathBuf::from("orig.txt")
        );
        assert_eq!(std::fs::read(p("link")).unwrap(), b"original content");
        std::fs::hard_link(p("orig.txt"), p("hard")).unwrap();
        assert_eq!(std::fs::metadata(p("orig.txt")).unwrap().nlink(), 2);
        std::fs::set_permissions(p("new.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            std::fs::metadata(p("new.txt")).unwrap().mode() & 0o7777,
            0o640
        );
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(p("hard"))
            .unwrap();
        f.set_len(8).unwrap();
        drop(f);
        let mut names: Vec<String> = std::fs::read_dir(&vol)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["hard", "link", "moved", "new.txt", "orig.txt"]);
        let st = std::fs::metadata(p("orig.txt")).unwrap();
        assert_eq!((st.len(), st.is_file()), (8, true));
        // A file made and removed by many names (readdir across several replies).
        for i in 0..300 {
            std::fs::write(p(&format!("moved/n{i:03}")), b"").unwrap();
        }
        assert_eq!(std::fs::read_dir(p("moved")).unwrap().count(), 301);
        // statfs answers the tmpfs's numbers.
        let sv = nix::sys::statvfs::statvfs(&vol).unwrap();
        assert!(sv.blocks() > 0);
    });
    let conn = layer.conn();
    layer.unmount().unwrap();
    let info = s.mountinfo();
    assert!(!info.contains("fuse.faultd"), "{info}");
    assert!(layers_at(&s.ns, &s.vol).unwrap().is_empty());
    assert_eq!(
        s.read("new.txt").unwrap(),
        b"written through the layer + appended"
    );
    assert_eq!(s.read("orig.txt").unwrap(), b"original");
    assert_eq!(s.read("moved/sub/f").unwrap(), b"deep");
    assert!(!abort_connection(conn).unwrap(), "the connection is gone");
}

#[test]
#[ignore = "host tier: needs root and /dev/fuse; run by tests/run-all.sh"]
fn callers_own_what_they_create_and_mmap_and_exec_work() {
    let s = Scratch::new("own");
    let v = s.vol.clone();
    s.run(move || std::fs::set_permissions(v, std::fs::Permissions::from_mode(0o1777)))
        .unwrap();
    std::fs::copy("/bin/true", s.dir.join("true")).unwrap();
    let (src, dst) = (s.dir.join("true"), s.p("true"));
    s.run(move || std::fs::copy(src, dst)).unwrap();
    s.write("map", &[0u8; 8192]);
    let layer = s.layer("[]");
    let vol = s.vol.clone();
    let (uid, gid, mode, dmode) = s.run(move || {
        // This namespace thread only (raw syscalls: glibc's wrappers would change every
        // thread of the process).
        // SAFETY: plain syscalls on the calling thread.
        unsafe {
            assert_eq!(libc::syscall(libc::SYS_setresgid, 1234, 1234, 1234), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, 1234, 1234, 1234), 0);
        }
        std::fs::write(vol.join("mine"), b"by 1234").unwrap();
        std::fs::create_dir(vol.join("mydir")).unwrap();
        let m = std::fs::metadata(vol.join("mine")).unwrap();
        let d = std::fs::metadata(vol.join("mydir")).unwrap();
        // Another user's file is refused by the kernel's permission check.
        let denied = std::fs::write(vol.join("map"), b"x").unwrap_err();
        assert_eq!(denied.raw_os_error(), Some(libc::EACCES));
        (m.uid(), m.gid(), m.mode() & 0o777, d.mode() & 0o777)
    });
    assert_eq!((uid, gid), (1234, 1234));
    // The caller's umask (022 here) applied by the kernel, faultd's own not applied twice.
    assert_eq!((mode, dmode), (0o644, 0o755));
    let vol = s.vol.clone();
    let status = s.run(move || {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(vol.join("map"))
            .unwrap();
        // SAFETY: a fresh shared mapping of an open file, unmapped below; nothing else
        // refers to it.
        unsafe {
            let p = nix::sys::mman::mmap(
                None,
                std::num::NonZeroUsize::new(8192).unwrap(),
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
                &f,
                0,
            )
            .unwrap();
            std::ptr::copy_nonoverlapping(b"mapped".as_ptr(), p.as_ptr().cast::<u8>().add(4096), 6);
            nix::sys::mman::msync(p, 8192, nix::sys::mman::MsFlags::MS_SYNC).unwrap();
            nix::sys::mman::munmap(p, 8192).unwrap();
        }
        std::process::Command::new(vol.join("true"))
            .status()
            .unwrap()
    });
    assert!(
        status.success(),
        "a binary on the volume runs through the layer"
    );
    layer.unmount().unwrap();
    let m = s.read("map").unwrap();
    assert_eq!(&m[4096..4102], b"mapped", "a shared mapping wrote through");
    let p = s.p("mine");
    let owner = s.run(move || std::fs::metadata(p).unwrap().uid());
    assert_eq!(owner, 1234, "on the volume itself");
}

#[test]
#[ignore = "host tier: needs root and /dev/fuse; run by tests/run-all.sh"]
fn latency_on_read_of_logs_only_and_without_holding_other_requests() {
    let s = Scratch::new("lat");
    s.write("a.log", &[7u8; 4096]);
    s.write("b.log", b"second log");
    s.write("c.txt", b"fast");
    let layer = s.layer(
        r#"[{"type":"latency","path":"$VOL/*.log","methods":["read"],"percent":100,"latency":"200ms"}]"#,
    );
    let (slow, r) = s.timed_read("a.log");
    assert_eq!(r.unwrap(), vec![7u8; 4096]);
    // std::fs::read: one read with data and one at EOF, each delayed.
    assert!(slow >= Duration::from_millis(200), "{slow:?}");
    let (fast, r) = s.timed_read("c.txt");
    assert_eq!(r.unwrap(), b"fast");
    assert!(fast < Duration::from_millis(100), "{fast:?}");
    // Delayed reads overlap and do not hold other requests: 4 delayed readers and one
    // plain one at the same time.
    let t0 = Instant::now();
    let readers: Vec<_> = ["a.log", "b.log", "a.log", "b.log"]
        .into_iter()
        .map(|f| {
            let (ns, p) = (s.ns.try_clone().unwrap(), s.p(f));
            std::thread::spawn(move || {
                ns.run(move || {
                    let mut f = std::fs::File::open(p).unwrap();
                    let mut b = [0u8; 16];
                    f.read(&mut b).unwrap()
                })
                .unwrap()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let (fast, _) = s.timed_read("c.txt");
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    let all = t0.elapsed();
    eprintln!("one 200 ms read {slow:?}, plain read {fast:?}, 4 delayed reads at once {all:?}");
    assert!(fast < Duration::from_millis(100), "{fast:?}");
    assert!(
        all < Duration::from_millis(390),
        "the delays overlapped: {all:?}"
    );
    drop(layer);
}

#[test]
#[ignore = "host tier: needs root and /dev/fuse; run by tests/run-all.sh"]
fn unmount_answers_delayed_requests_instead_of_aborting_them() {
    let s = Scratch::new("exp");
    s.write("slow.log", b"waited");
    let layer = s.layer(r#"[{"type":"latency","methods":["read"],"percent":100,"latency":"1h"}]"#);
    let (ns, p) = (s.ns.try_clone().unwrap(), s.p("slow.log"));
    let reader = std::thread::spawn(move || ns.run(move || std::fs::read(p)).unwrap());
    std::thread::sleep(Duration::from_millis(300));
    assert!(!reader.is_finished());
    let t0 = Instant::now();
    layer.unmount().unwrap();
    let took = t0.elapsed();
    assert_eq!(reader.join().unwrap().unwrap(), b"waited");
    eprintln!("unmount with a request delayed by 1 h: {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "{took:?}: no wait for the grace period"
    );
    assert!(!s.mountinfo().contains("fuse.faultd"));
}

#[test]
#[ignore = "host tier: needs root and /dev/fuse; run by tests/run-all.sh"]
fn faults_answer_the_errno_without_touching_the_file() {
    let s = Scratch::new("eio");
    s.write("x.db", b"payload");
    s.write("y.db", b"other");
    let layer = s.layer(
        r#"[{"type":"fault","path":"$VOL/x.db","methods":["open"],"percent":100,"faults":[{"errno":5,"weight":1}]}]"#,
    );
    assert_eq!(errno(&s.read("x.db")), Some(libc::EIO));
    assert_eq!(s.read("y.db").unwrap(), b"other");
    layer.set_injector(s.injector(
        r#"[{"type":"fault","path":"$VOL/*.db","methods":["read"],"percent":100,"faults":[{"errno":5,"weight":1}]}]"#,
    ));
    let p = s.p("x.db");
    let (opened, read) = s
        .run(move || {
            let mut f = std::fs::File::open(p)?;
            let mut b = Vec::new();
            Ok::<_, std::io::Error>((true, f.read_to_end(&mut b)))
        })
        .unwrap();
    assert!(opened);
    assert_eq!(errno(&read), Some(libc::EIO));
    // A write fault leaves the file as it was.
    layer.set_injector(s.injector(
        r#"[{"type":"fault","methods":["write"],"percent":100,"faults":[{"errno":28,"weight":1}]}]"#,
    ));
    let p = s.p("y.db");
    let w = s.run(move || std::fs::write(p, b"replaced"));
    assert_eq!(errno(&w), Some(libc::ENOSPC));
    layer.set_injector(s.injector("[]"));
    assert_eq!(s.read("x.db").unwrap(), b"payload");
    layer.unmount().unwrap();
    // The write's open truncated the file (O_TRUNC is a setattr, not a write); nothing was
    // written into it.
    assert_eq!(s.read("y.db").unwrap(), b"");
}

#[test]
#[ignore = "host tier: needs root and /dev/fuse; run by tests/run-all.sh"]
fn attr_overrides_show_in_stat_and_swap_live() {
    let s = Scratch::new("attr");
    s.write("f.log", b"12345");
    s.write("g.txt", b"12345");
    let layer = s.layer(
        r#"[{"type":"attrOverride","path":"$VOL/*.log","percent":100,"perm":384,"size":12345,"uid":4242,"mtime":{"sec":86400,"nsec":5}}]"#,
    );
    let (f, g) = (s.p("f.log"), s.p("g.txt"));
    let (mf, mg) = s.run(move || {
        (
            std::fs::symlink_metadata(f).unwrap(),
            std::fs::symlink_metadata(g).unwrap(),
        )
    });
    assert_eq!(mf.mode() & 0o7777, 0o600);
    assert_eq!(
        (mf.len(), mf.uid(), mf.mtime(), mf.mtime_nsec()),
        (12345, 4242, 86400, 5)
    );
    assert_eq!((mg.len(), mg.uid()), (5, 0), "another path is untouched");
    let conn = layer.conn();
    let mount_id = layer.layer_mount().id;
    layer.set_injector(s.injector("[]"));
    let f = s.p("f.log");
    let m = s.run(move || std::fs::metadata(f).unwrap());
    assert_eq!(
        (m.len(), m.uid()),
        (5, 0),
        "new actions at once (attr TTL 0)"
    );
    let now = layers_at(&s.ns, &s.vol).unwrap();
    assert_eq!(now.len(), 1);
    assert_eq!((now[0].id, now[0].minor), (mount_id, conn), "no remount");
    layer.unmount().unwrap();
}

#[test]
#[ignore = "host tier: needs root and /dev/fuse; run by tests/run-all.sh"]
fn mistakes_change_what_is_read_never_the_file() {
    let s = Scratch::new("mis");
    let orig = vec![0xabu8; 64 * 1024];
    s.write("data.bin", &orig);
    let layer = s.layer(
        r#"[{"type":"mistake","path":"$VOL/data.bin","methods":["read"],"percent":100,"mistake":{"filling":"zero","maxOccurrences":3,"maxLength":100}}]"#,
    );
    let got = s.read("data.bin").unwrap();
    assert_eq!(got.len(), orig.len());
    assert_ne!(got, orig, "a read through the layer is damaged");
    let zeros = got.iter().filter(|b| **b == 0).count();
    assert!((1..=3 * 100 * 4).contains(&zeros), "{zeros} zero bytes");
    layer.set_injector(s.injector("[]"));
    assert_eq!(s.read("data.bin").unwrap(), orig);
    layer.unmount().unwrap();
    assert_eq!(
        s.read("data.bin").unwrap(),
        orig,
        "the file on disk is unchanged"
    );
}

#[test]
#[ignore = "host tier: needs root and /dev/fuse; run by tests/run-all.sh"]
fn refuses_shared_volumes_non_roots_and_a_second_layer() {
    let s = Scratch::new("ref");
    std::fs::create_dir_all(s.dir.join("plain")).unwrap();
    // Not a mount root: a directory inside the tmpfs, and a directory of the host's /tmp.
    s.run({
        let d = s.p("sub");
        move || std::fs::create_dir(d)
    })
    .unwrap();
    for p in [s.p("sub"), s.dir.join("plain")] {
        let e = IoLayer::mount(&s.ns, &p, s.injector("[]"), LayerOptions::default()).unwrap_err();
        assert!(matches!(e, IoError::NotMountRoot { .. }), "{e}");
        assert_eq!(e.failure(), FailureKind::FailedPrecondition);
    }
    let e = IoLayer::mount(
        &s.ns,
        &s.dir.join("missing"),
        s.injector("[]"),
        LayerOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.failure(), FailureKind::NotFound, "{e}");
    let e = IoLayer::mount(
        &s.ns,
        Path::new("rel"),
        s.injector("[]"),
        LayerOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.failure(), FailureKind::InvalidArgument, "{e}");
    // A second layer on the same volume.
    let layer = s.layer("[]");
    let e = IoLayer::mount(&s.ns, &s.vol, s.injector("[]"), LayerOptions::default()).unwrap_err();
    assert!(matches!(e, IoError::AlreadyLayered { .. }), "{e}");
    layer.unmount().unwrap();
    // Shared (within the scratch namespace only).
    let v = s.vol.clone();
    s.run(move || {
        mount(
            None::<&str>,
            &v,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
    })
    .unwrap();
    let e = IoLayer::mount(&s.ns, &s.vol, s.injector("[]"), LayerOptions::default()).unwrap_err();
    assert!(matches!(e, IoError::Shared { .. }), "{e}");
    assert_eq!(e.failure(), FailureKind::FailedPrecondition);
    assert!(!s.mountinfo().contains("fuse.faultd"));
    let layer = s.layer_with(
        "[]",
        LayerOptions {
            allow_shared: true,
            ..LayerOptions::default()
        },
    );
    s.write("through", b"ok");
    layer.unmount().unwrap();
    assert_eq!(s.read("through").unwrap(), b"ok");
}

#[test]
#[ignore = "host tier: needs root and /dev/fuse; run by tests/run-all.sh"]
fn a_hung_server_is_aborted_and_detached() {
    let s = Scratch::new("hang");
    s.write("f", b"still here");
    let layer = s.layer(
        r#"[{"type":"latency","methods":["getattr","lookup","read"],"percent":100,"latency":"1h"}]"#,
    );
    let conn = layer.conn();
    let (ns, p) = (s.ns.try_clone().unwrap(), s.p("f"));
    let blocked =
        std::thread::spawn(move || ns.run(move || std::fs::metadata(p).map(drop)).unwrap());
    std::thread::sleep(Duration::from_millis(300));
    assert!(!blocked.is_finished(), "the stat waits on the hung layer");
    // A new layer is refused from mountinfo alone, without waiting on the hung one.
    let t0 = Instant::now();
    let e = IoLayer::mount(&s.ns, &s.vol, s.injector("[]"), LayerOptions::default()).unwrap_err();
    assert!(
        matches!(e, IoError::AlreadyLayered { conn: c, .. } if c == conn),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(1));
    let t0 = Instant::now();
    assert!(abort_connection(conn).unwrap());
    let r = blocked.join().unwrap();
    eprintln!(
        "blocked stat ended {:?} after the abort: {r:?}",
        t0.elapsed()
    );
    // A request the server held ends with ECONNABORTED, later ones with ENOTCONN.
    assert_eq!(errno(&r), Some(libc::ECONNABORTED));
    assert_eq!(errno(&s.read("f")), Some(libc::ENOTCONN), "a dead layer");
    assert_eq!(detach_ours(&s.ns, &s.vol).unwrap(), 1);
    assert_eq!(s.read("f").unwrap(), b"still here", "the original is back");
    assert!(!s.mountinfo().contains("fuse.faultd"));
    // The layer value ends without hanging and finds nothing left to detach.
    let t0 = Instant::now();
    assert!(!layer.is_serving());
    layer.unmount().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3));
}

/// The serving child of `a_killed_server_is_repaired` (does nothing unless that test
/// started it).
#[test]
#[ignore = "host tier: helper process of a_killed_server_is_repaired"]
fn killed_server_child() {
    let (Ok(ns), Ok(vol)) = (
        std::env::var("FAULTD_IO_CHILD_NS"),
        std::env::var("FAULTD_IO_CHILD_VOL"),
    ) else {
        return;
    };
    let ns = Namespace::open(Path::new(&ns), NsKind::Mnt).unwrap();
    let inj = Injector::parse(&vol, "[]").unwrap();
    let layer = IoLayer::mount(&ns, Path::new(&vol), inj, LayerOptions::default()).unwrap();
    println!("CONN {}", layer.conn());
    std::io::stdout().flush().unwrap();
    std::mem::forget(layer);
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
#[ignore = "host tier: needs root and /dev/fuse; run by tests/run-all.sh"]
fn a_killed_server_is_repaired() {
    let s = Scratch::new("kill");
    s.write("f", b"survives the crash");
    // The child enters the scratch namespace through a thread of ours that waits in it.
    let held = s.ns.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let waiter = std::thread::spawn(move || {
        held.run(move || {
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
            let _ = done_rx.recv();
        })
        .unwrap()
    });
    let ns_path = format!(
        "/proc/{}/task/{}/ns/mnt",
        std::process::id(),
        rx.recv().unwrap()
    );
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "killed_server_child", "--ignored", "--nocapture"])
        .env("FAULTD_IO_CHILD_NS", &ns_path)
        .env("FAULTD_IO_CHILD_VOL", &s.vol)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let conn: u32 = loop {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "child ended"
        );
        if let Some(c) = line.trim().strip_prefix("CONN ") {
            break c.parse().unwrap();
        }
    };
    drop(done_tx);
    waiter.join().unwrap();
    assert_eq!(
        s.read("f").unwrap(),
        b"survives the crash",
        "served by the child"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    assert_eq!(
        errno(&s.read("f")),
        Some(libc::ENOTCONN),
        "upstream's #3424 state"
    );
    let _ = abort_connection(conn).unwrap();
    assert_eq!(detach_ours(&s.ns, &s.vol).unwrap(), 1);
    assert_eq!(s.read("f").unwrap(), b"survives the crash");
    assert!(!s.mountinfo().contains("fuse.faultd"));
    assert_eq!(detach_ours(&s.ns, &s.vol).unwrap(), 0, "idempotent");
}

/// Sequential read throughput and per-operation latency, through the layer (no action
/// matching) against the same tmpfs without it. Printed, with loose sanity bounds only.
#[test]
#[ignore = "host tier: needs root and /dev/fuse; run by tests/run-all.sh"]
fn layer_overhead_numbers() {
    let s = Scratch::new("bench");
    let big = vec![0x5au8; 64 << 20];
    s.write("big", &big);
    s.write("small", &[1u8; 4096]);
    let measure = |s: &Scratch| {
        let (big, small) = (s.p("big"), s.p("small"));
        s.run(move || {
            let mut f = std::fs::File::open(&big).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let t0 = Instant::now();
            let mut n = 0;
            for _ in 0..4 {
                std::io::Seek::rewind(&mut f).unwrap();
                loop {
                    let r = f.read(&mut buf).unwrap();
                    if r == 0 {
                        break;
                    }
                    n += r;
                }
            }
            let mbps = n as f64 / t0.elapsed().as_secs_f64() / 1e6;
            let f = std::fs::File::open(&small).unwrap();
            let mut b = [0u8; 4096];
            let lat = |mut op: Box<dyn FnMut()>| {
                let mut v: Vec<Duration> = (0..2000)
                    .map(|_| {
                        let t = Instant::now();
                        op();
                        t.elapsed()
                    })
                    .collect();
                v.sort();
                v[v.len() / 2]
            };
            let pread = lat(Box::new(move || {
                f.read_at(&mut b, 0).unwrap();
            }));
            let sp = small.clone();
            let stat = lat(Box::new(move || {
                std::fs::metadata(&sp).unwrap();
            }));
            let open = lat(Box::new(move || {
                std::fs::File::open(&small).unwrap();
            }));
            (mbps, pread, stat, open)
        })
    };
    let direct = measure(&s);
    let layer = s.layer(r#"[{"type":"latency","path":"/nowhere/*","percent":100,"latency":"1s"}]"#);
    let through = measure(&s);
    layer.unmount().unwrap();
    eprintln!(
        "IOChaos layer overhead (tmpfs, no matching action):\n  \
         sequential read 1 MiB: {:.0} MB/s direct, {:.0} MB/s through the layer\n  \
         p50 pread 4 KiB: {:?} direct, {:?} through\n  \
         p50 stat: {:?} direct, {:?} through\n  \
         p50 open+close: {:?} direct, {:?} through",
        direct.0, through.0, direct.1, through.1, direct.2, through.2, direct.3, through.3
    );
    assert!(through.0 > 10.0, "at least 10 MB/s through the layer");
    assert!(through.1 < Duration::from_millis(5));
}

#[test]
#[ignore = "host tier: needs root, /dev/fuse and the test containerd; run by tests/run-all.sh"]
fn a_container_volume_through_the_layer() {
    use common::ctr::{ctr, unique, Container};
    let tmp = tempfile::Builder::new()
        .prefix("faultd-io-ctr-")
        .tempdir_in("/tmp")
        .unwrap();
    let host = tmp.path().to_path_buf();
    std::fs::write(host.join("a.log"), b"container log\n").unwrap();
    std::fs::write(host.join("b.txt"), b"plain\n").unwrap();
    let before = std::fs::metadata(host.join("a.log")).unwrap();
    let c = Container::run_named(
        &unique("io"),
        &[
            "--mount",
            &format!(
                "type=bind,src={},dst=/data,options=rbind:rw",
                host.display()
            ),
        ],
    );
    let exec = |argv: &[&str]| {
        let id = format!("x{}", rand_id());
        let mut args = vec!["task", "exec", "--exec-id", id.as_str(), c.name.as_str()];
        args.extend_from_slice(argv);
        ctr(&args)
    };
    let ns = Namespace::of_pid(c.pid(), NsKind::Mnt).unwrap();
    let inj = |a: &str| Injector::parse("/data", a).unwrap();
    let layer = IoLayer::mount(
        &ns,
        Path::new("/data"),
        inj(r#"[{"type":"latency","path":"/data/*.log","methods":["read"],"percent":100,"latency":"200ms"}]"#),
        LayerOptions::default(),
    )
    .unwrap();
    let mine = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mine.contains("fuse.faultd"),
        "the layer stays in the container's namespace"
    );
    let theirs = std::fs::read_to_string(format!("/proc/{}/mountinfo", c.pid())).unwrap();
    assert!(theirs
        .lines()
        .any(|l| l.contains(" /data ") && faultd::faults::io::is_ours(l)));
    // The container's own processes read through the layer.
    let t0 = Instant::now();
    let out = exec(&["cat", "/data/a.log"]);
    let slow = t0.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"container log\n");
    let t0 = Instant::now();
    assert!(exec(&["cat", "/data/b.txt"]).status.success());
    let fast = t0.elapsed();
    eprintln!("container: cat a.log {slow:?} (200 ms per read), cat b.txt {fast:?}");
    // (busybox cat copies with sendfile: one read, the size is known)
    assert!(slow >= Duration::from_millis(200), "{slow:?}");
    assert!(
        slow >= fast + Duration::from_millis(150),
        "{slow:?} vs {fast:?}"
    );
    layer.set_injector(inj(
        r#"[{"type":"fault","path":"/data/a.log","methods":["open"],"percent":100,"faults":[{"errno":5,"weight":1}]}]"#,
    ));
    let out = exec(&["cat", "/data/a.log"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(exec(&["sh", "-c", "echo new > /data/c.txt"])
        .status
        .success());
    layer.unmount().unwrap();
    let theirs = std::fs::read_to_string(format!("/proc/{}/mountinfo", c.pid())).unwrap();
    assert!(!theirs.contains("fuse.faultd"), "{theirs}");
    let out = exec(&["cat", "/data/a.log"]);
    assert_eq!(out.stdout, b"container log\n");
    let after = std::fs::metadata(host.join("a.log")).unwrap();
    assert_eq!((before.dev(), before.ino()), (after.dev(), after.ino()));
    assert_eq!(
        std::fs::read(host.join("a.log")).unwrap(),
        b"container log\n"
    );
    assert_eq!(std::fs::read(host.join("c.txt")).unwrap(), b"new\n");
    drop(c);
}

fn rand_id() -> u64 {
    use faultd::faults::io::IoRng;
    faultd::faults::io::SplitMix64::from_entropy().next_u64()
}
