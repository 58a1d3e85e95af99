//! Host tier (root; run by tests/run-all.sh with `--ignored`): IOChaos's fd switching
//! (`faults::io::switch`) against a real process. The process (this test binary re-executed)
//! lives in its own mount namespace with a tmpfs at a scratch path, holds a file there open
//! read-write at offset 3 and has its working directory there. The test then stacks a second
//! tmpfs over the same path (as the FUSE layer will be stacked over a volume) and switches the
//! process: its descriptor (same number, same offset, same flags) and its working directory now
//! reach the new filesystem, and the stop time is reported. Everything happens inside the
//! process's private mount namespace; nothing of the host's mounts changes.
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const HELPER_ENV: &str = "FAULTD_TEST_SWITCH_HELPER";

fn dir_for(pid: u32) -> String {
    format!("/tmp/fdt-switch-{pid}")
}

#[test]
#[ignore = "host tier: the helper process of the other test (does nothing on its own)"]
fn helper_process() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    // The whole process is in a private mount namespace already (`unshare --mount` executed
    // it): libtest runs this body on a thread, and a mount namespace unshared by one thread
    // would not be the one the process's main thread (where remote syscalls run) sees.
    let dir = dir_for(std::process::id());
    std::fs::create_dir_all(&dir).unwrap();
    nix::mount::mount(
        Some("fdt-old"),
        dir.as_str(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    std::fs::write(format!("{dir}/f"), b"AAAAAAAA").unwrap();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("{dir}/f"))
        .unwrap();
    let mut three = [0u8; 3];
    std::io::Read::read_exact(&mut f, &mut three).unwrap();
    // A private and a shared read-only mapping of the file.
    let map = |flags: libc::c_int| {
        // SAFETY: a new read-only mapping of an open file; never unmapped while in use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                flags,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        p as usize
    };
    let (private, shared) = (map(libc::MAP_PRIVATE), map(libc::MAP_SHARED));
    std::env::set_current_dir(&dir).unwrap();
    let dev = std::fs::metadata(&dir).unwrap().dev();
    println!("READY {} {dev}", f.as_raw_fd());
    let mut line = String::new();
    loop {
        line.clear();
        if std::io::stdin().read_line(&mut line).unwrap_or(0) == 0 || line.trim() == "exit" {
            std::process::exit(0);
        }
        match line.trim() {
            "read2" => {
                let mut two = [0u8; 2];
                std::io::Read::read_exact(&mut f, &mut two).unwrap();
                let pos = std::io::Seek::stream_position(&mut f).unwrap();
                println!("READ {} {pos}", String::from_utf8_lossy(&two));
            }
            "cwd" => {
                let s = std::fs::read_to_string("f").unwrap();
                println!("CWD {s}");
            }
            "map" => {
                // SAFETY: both mappings are 4096 readable bytes, alive for the process's life.
                let (a, b) = unsafe {
                    (
                        std::slice::from_raw_parts(private as *const u8, 8),
                        std::slice::from_raw_parts(shared as *const u8, 8),
                    )
                };
                println!(
                    "MAP {} {}",
                    String::from_utf8_lossy(a),
                    String::from_utf8_lossy(b)
                );
            }
            "slowread" => {
                // Through whatever is mounted on the directory now (a delayed layer).
                let t0 = Instant::now();
                let r = std::fs::read(format!("{dir}/f"));
                println!("SLOW {:?} {}", t0.elapsed(), r.is_ok());
            }
            other => println!("ECHO {other}"),
        }
    }
}

struct Helper {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Helper {
    fn start() -> (Helper, i32, u64) {
        // `unshare` executes the helper in a private mount namespace (same pid).
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helper_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HELPER_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines() {
                if tx.send(l.unwrap()).is_err() {
                    break;
                }
            }
        });
        let mut h = Helper {
            child,
            stdin,
            lines,
        };
        let ready = h.expect("READY ");
        let v: Vec<&str> = ready.split_whitespace().collect();
        let n = v.len();
        (h, v[n - 2].parse().unwrap(), v[n - 1].parse().unwrap())
    }

    fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let l = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("helper: no expected line");
            if let Some(i) = l.find(prefix) {
                return l[i..].to_string();
            }
        }
    }

    fn ask(&mut self, cmd: &str, prefix: &str) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.expect(prefix)
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "exit");
        let _ = self.child.wait();
        // The scratch directory (created on the host's /tmp; the mounts were the helper's).
        let _ = std::fs::remove_dir(dir_for(self.child.id()));
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "host tier: ptrace and mounts in a private mount namespace (root)"]
fn open_files_and_the_working_directory_move_to_the_filesystem_stacked_on_top() {
    let (mut h, fd, old_dev) = Helper::start();
    let pid = h.child.id();
    let dir = dir_for(pid);
    let target = pid.to_string();
    // Nothing moves while nothing is stacked: the paths resolve to the same filesystem.
    let held = faultd::faults::io::switch::holdings(pid, old_dev).unwrap();
    assert!(
        held.files.iter().any(|f| f.fd == fd && f.pos == 3),
        "{held:?}"
    );
    assert_eq!(held.cwd.as_deref(), Some(dir.as_str()));

    // Stack a new tmpfs over the path inside the helper's mount namespace, with new content;
    // never in ours (the host's).
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).unwrap();
    assert_ne!(
        ns(&target),
        ns("self"),
        "the helper must have its own mount namespace"
    );
    let src = format!("/tmp/fdt-switch-src-{pid}");
    std::fs::write(&src, b"BBBBBBBB").unwrap();
    run(&[
        "nsenter", "-t", &target, "-m", "--", "mount", "-t", "tmpfs", "fdt-new", &dir,
    ]);
    run(&[
        "nsenter",
        "-t",
        &target,
        "-m",
        "--",
        "cp",
        &src,
        &format!("{dir}/f"),
    ]);
    let _ = std::fs::remove_file(&src);
    // The helper still reaches the old file through its descriptor, its cwd and its mappings.
    assert_eq!(h.ask("cwd", "CWD "), "CWD AAAAAAAA");
    assert_eq!(h.ask("map", "MAP "), "MAP AAAAAAAA AAAAAAAA");

    let moved =
        faultd::faults::io::switch::switch(pid, old_dev, Duration::from_millis(50)).unwrap();
    eprintln!(
        "switched {} file(s), cwd {}, stopped {:?}, skipped {:?}",
        moved.files, moved.cwd, moved.stopped, moved.skipped
    );
    assert!(moved.files >= 1 && moved.cwd, "{moved:?}");
    // Both mappings now show the new file, at the same addresses.
    assert_eq!(moved.mappings, 2, "{moved:?}");
    assert_eq!(h.ask("map", "MAP "), "MAP BBBBBBBB BBBBBBBB");
    // Same descriptor number, same offset (3), new file: reads continue at 3 in "BBBBBBBB".
    assert_eq!(h.ask("read2", "READ "), "READ BB 5");
    assert_eq!(h.ask("cwd", "CWD "), "CWD BBBBBBBB");
    assert!(faultd::faults::io::switch::holdings(pid, old_dev)
        .unwrap()
        .files
        .iter()
        .all(|f| f.fd != fd));
    assert!(
        moved.stopped < Duration::from_millis(200),
        "{:?}",
        moved.stopped
    );
}

#[test]
#[ignore = "host tier: ptrace and mounts in a private mount namespace (root)"]
fn a_process_that_does_not_stop_in_time_is_left_alone_without_blocking_the_switch() {
    use faultd::faults::io::switch::{switch_bounded, Source};
    use faultd::faults::io::{Injector, IoLayer, LayerOptions};
    let (mut h, _fd, _old_dev) = Helper::start();
    let pid = h.child.id();
    let dir = dir_for(pid);
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).unwrap();
    assert_ne!(
        ns(&pid.to_string()),
        ns("self"),
        "the helper must have its own mount namespace"
    );
    // faultd's layer on the helper's directory (in its namespace), every read delayed 3 s.
    let mnt = faultd::ns::Namespace::of_pid(pid, faultd::ns::NsKind::Mnt).unwrap();
    let actions =
        r#"[{"type":"latency","path":"","methods":["read"],"percent":100,"latency":"3s"}]"#;
    let layer = IoLayer::mount(
        &mnt,
        std::path::Path::new(&dir),
        Injector::parse(&dir, actions).unwrap(),
        LayerOptions::default(),
    )
    .unwrap();
    let fuse_dev = nix::sys::stat::makedev(0, u64::from(layer.conn()));
    // The helper blocks in a read the layer holds for 3 s: a killable wait no ptrace stop
    // interrupts.
    writeln!(h.stdin, "slowread").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let src = Source::dev(fuse_dev);
    let moved = switch_bounded(
        pid,
        &src,
        Duration::from_millis(50),
        Duration::from_millis(500),
    );
    let took = t0.elapsed();
    eprintln!("switch of a process blocked in a delayed read: {took:?}, {moved:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(moved.files, 0, "{moved:?}");
    assert!(
        moved
            .skipped
            .iter()
            .any(|s| s.contains("did not stop within")),
        "{moved:?}"
    );
    // The process goes on by itself once its read is answered (never left stopped).
    let slow = h.expect("SLOW ");
    eprintln!("the helper: {slow}");
    assert!(slow.ends_with("true"), "{slow}");
    assert_eq!(h.ask("echo", "ECHO "), "ECHO echo");
    layer.unmount().unwrap();
}
