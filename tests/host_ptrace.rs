//! Host tier (root; `cargo test --test host_ptrace -- --ignored --test-threads=1`): faultd's
//! remote-syscall module and vDSO patch against a real multi-threaded process — this test
//! binary re-executed as a helper (`helper_process`) whose main thread blocks in `read(0)`,
//! one thread reports the four clocks every 20 ms and two threads spin on `clock_gettime`.
//!
//! 1. a remote `mmap` of faultd's fake page, written and read back, then `munmap`ped; the
//!    helper keeps working (its interrupted `read` restarts: it still answers on stdin);
//! 2. the whole TimeChaos cycle by hand: the helper's vDSO is byte-equal to the test's own,
//!    the three entry points get faultd's jump (+3600 s on `CLOCK_REALTIME`), the helper's
//!    `clock_gettime(REALTIME)`, `gettimeofday` and `time` move by 3600 s while
//!    `CLOCK_MONOTONIC` does not, and writing the pristine bytes back undoes it exactly.
//!
//! 3. a `sleep` stopped inside `nanosleep`: a remote mmap/munmap over it, and a SIGTERM sent
//!    while it is stopped reaches it after detach (held, not swallowed).
//!
//! Each stop of the helper (seize → detach) is measured and printed.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use faultd::ptrace::Traced;
use faultd::vdso::elf::read_vdso;
use faultd::vdso::{
    entry_state, jump_patch, patch_sites, EntryState, FakePage, TimeOffset, VdsoImage, PATCH_LEN,
};

const HELPER_ENV: &str = "FAULTD_TEST_PTRACE_HELPER";
const PAGE: u64 = 4096;

fn now(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    assert_eq!(unsafe { libc::clock_gettime(clock, &mut ts) }, 0);
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// The helper's body: runs only when re-executed with `HELPER_ENV` set.
#[test]
#[ignore = "host tier: the helper process of the other tests (does nothing on its own)"]
fn helper_process() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    std::thread::spawn(|| {
        loop {
            let mut tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            };
            // SAFETY: `tv` is writable; a NULL timezone is allowed.
            unsafe { libc::gettimeofday(&mut tv, std::ptr::null_mut()) };
            // SAFETY: time(NULL) only reads the clock.
            let t = unsafe { libc::time(std::ptr::null_mut()) };
            let (real, mono) = (now(libc::CLOCK_REALTIME), now(libc::CLOCK_MONOTONIC));
            let gtod = tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
            println!("CLOCKS {real:.6} {mono:.6} {gtod:.6} {t}");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    for _ in 0..2 {
        std::thread::spawn(|| loop {
            for _ in 0..1000 {
                std::hint::black_box(now(libc::CLOCK_MONOTONIC));
            }
            std::thread::sleep(Duration::from_millis(1));
        });
    }
    println!("READY");
    let mut line = String::new();
    loop {
        line.clear();
        if std::io::stdin().read_line(&mut line).unwrap_or(0) == 0 || line.trim() == "exit" {
            std::process::exit(0);
        }
        println!("ECHO {}", line.trim());
    }
}

struct Helper {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Helper {
    fn start() -> Helper {
        let mut child = Command::new(std::env::current_exe().unwrap())
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
        h.expect(|l| l.ends_with("READY")); // after libtest's "test helper_process ... "
                                            // Its threads are all running once a clock line arrived.
        h.expect(|l| l.contains("CLOCKS "));
        h
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits (5 s at most) for a line that `want` accepts.
    fn expect(&mut self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) if want(&l) => return l,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("helper: no expected line in 5 s"),
                Err(RecvTimeoutError::Disconnected) => panic!("helper exited"),
            }
        }
    }

    /// A clock line read after `after`: (REALTIME, MONOTONIC, gettimeofday, time) seen by
    /// the helper minus the test's own REALTIME/MONOTONIC at the time it was read.
    fn clock_deltas(&mut self) -> [f64; 4] {
        // Drop lines queued before now.
        while self.lines.try_recv().is_ok() {}
        let l = self.expect(|l| l.contains("CLOCKS "));
        let (real, mono) = (now(libc::CLOCK_REALTIME), now(libc::CLOCK_MONOTONIC));
        let v: Vec<f64> = l
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        [v[0] - real, v[1] - mono, v[2] - real, v[3] - real]
    }

    /// The helper's main thread still answers (its interrupted `read` restarted cleanly).
    fn echo(&mut self, word: &str) {
        writeln!(self.stdin, "{word}").unwrap();
        let want = format!("ECHO {word}");
        self.expect(|l| l.ends_with(&want));
    }

    fn finish(mut self) {
        writeln!(self.stdin, "exit").unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "helper: {status}");
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn maps(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap()
}

fn mapping_at(pid: i32, addr: u64) -> Option<String> {
    let start = format!("{addr:x}-");
    maps(pid)
        .lines()
        .find(|l| l.starts_with(&start))
        .map(str::to_string)
}

#[test]
#[ignore = "host tier: ptrace of a child process (root)"]
fn remote_mmap_write_and_munmap_in_a_four_thread_process() {
    let mut h = Helper::start();
    let pid = h.pid();

    let mut t = Traced::seize(Path::new("/proc"), pid).unwrap();
    assert!(t.threads() >= 4, "{} threads", t.threads());
    let pcs = t.pcs().unwrap();
    let addr = t
        .mmap_page(PAGE, libc::PROT_READ | libc::PROT_EXEC)
        .unwrap();
    let page = FakePage::new(TimeOffset::new(3600, 0).unwrap(), 1);
    t.write(addr, page.as_bytes()).unwrap();
    let mut back = vec![0; PAGE as usize];
    t.read(addr, &mut back).unwrap();
    assert_eq!(back, page.as_bytes());
    assert!(FakePage::is_ours(&back));
    assert_eq!(
        t.pcs().unwrap(),
        pcs,
        "the remote syscall left a thread's PC moved"
    );
    let threads = t.threads();
    let stopped = t.detach();
    eprintln!("mmap + write: {threads} threads stopped for {stopped:?}");

    let line = mapping_at(pid, addr).expect("the page is not mapped");
    assert!(line.contains(" r-xp "), "{line}");
    h.echo("after-mmap");

    let mut t = Traced::seize(Path::new("/proc"), pid).unwrap();
    let pcs = t.pcs().unwrap();
    assert!(pcs.iter().all(|pc| !(addr..addr + PAGE).contains(pc)));
    t.munmap(addr, PAGE).unwrap();
    let stopped = t.detach();
    eprintln!("munmap: stopped for {stopped:?}");
    assert_eq!(mapping_at(pid, addr), None);
    h.echo("after-munmap");
    h.finish();
}

#[test]
#[ignore = "host tier: ptrace of a child process (root)"]
fn vdso_patch_shifts_realtime_of_a_running_process_and_pristine_bytes_undo_it() {
    let mut h = Helper::start();
    let pid = h.pid();
    let (_, own) = read_vdso(Path::new("/proc"), "self").unwrap();
    let image = VdsoImage::parse(&own).unwrap();
    let (base, theirs) = read_vdso(Path::new("/proc"), &pid.to_string()).unwrap();
    assert_eq!(
        theirs, own,
        "one vDSO image per boot for every 64-bit process"
    );
    let sites = patch_sites(&image, 1).unwrap();
    assert_eq!(sites.len(), 3);
    let pristine = |off: u64| own[off as usize..off as usize + PATCH_LEN].to_vec();

    let before = h.clock_deltas();
    assert!(before.iter().all(|d| d.abs() < 1.5), "{before:?}");

    // Apply: page, then the jumps (only over pristine entries, no thread in a window).
    let mut t = Traced::seize(Path::new("/proc"), pid).unwrap();
    let page_addr = t
        .mmap_page(PAGE, libc::PROT_READ | libc::PROT_EXEC)
        .unwrap();
    t.write(
        page_addr,
        FakePage::new(TimeOffset::new(3600, 0).unwrap(), 1).as_bytes(),
    )
    .unwrap();
    let pcs = t.pcs().unwrap();
    for (f, sym) in &sites {
        let at = base + sym.offset;
        assert!(
            pcs.iter()
                .all(|pc| !(at..at + PATCH_LEN as u64).contains(pc)),
            "{f:?}"
        );
        let mut cur = [0; PATCH_LEN];
        t.read(at, &mut cur).unwrap();
        assert_eq!(
            entry_state(&cur, &pristine(sym.offset)),
            EntryState::Pristine
        );
        t.write(at, &jump_patch(page_addr + f.entry() as u64))
            .unwrap();
    }
    let stopped = t.detach();
    eprintln!("apply (mmap + page + 3 patches): stopped for {stopped:?}");

    let d = h.clock_deltas();
    eprintln!("deltas while applied (realtime, monotonic, gettimeofday, time): {d:?}");
    assert!((d[0] - 3600.0).abs() < 0.5, "REALTIME {d:?}");
    assert!(d[1].abs() < 0.5, "MONOTONIC moved: {d:?}");
    assert!((d[2] - 3600.0).abs() < 0.5, "gettimeofday {d:?}");
    assert!((d[3] - 3600.0).abs() < 1.5, "time {d:?}");
    h.echo("applied");

    // Update: rewrite only the data block.
    let t = Traced::seize(Path::new("/proc"), pid).unwrap();
    let data = FakePage::data(TimeOffset::new(-600, -100).unwrap(), 1);
    t.write(page_addr + faultd::vdso::fake::DATA_OFFSET as u64, &data)
        .unwrap();
    eprintln!("update (data block): stopped for {:?}", t.detach());
    let d = h.clock_deltas();
    assert!(
        (d[0] + 600.0).abs() < 0.5 && (d[2] + 600.0).abs() < 0.5,
        "{d:?}"
    );

    // Revert: pristine bytes over faultd's jumps; the page stays mapped.
    let t = Traced::seize(Path::new("/proc"), pid).unwrap();
    for (f, sym) in &sites {
        let at = base + sym.offset;
        let mut cur = [0; PATCH_LEN];
        t.read(at, &mut cur).unwrap();
        let want = EntryState::Patched(page_addr + f.entry() as u64);
        assert_eq!(entry_state(&cur, &pristine(sym.offset)), want);
        t.write(at, &pristine(sym.offset)).unwrap();
    }
    eprintln!("revert (3 entries): stopped for {:?}", t.detach());
    let (_, after) = read_vdso(Path::new("/proc"), &pid.to_string()).unwrap();
    assert_eq!(
        after, own,
        "the helper's vDSO is byte-identical to pristine again"
    );
    let d = h.clock_deltas();
    assert!(d.iter().all(|x| x.abs() < 1.5), "{d:?}");
    h.echo("reverted");
    h.finish();
}

#[test]
#[ignore = "host tier: ptrace of a child process (root)"]
fn a_signal_sent_while_stopped_is_delivered_on_detach() {
    let mut sleep = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = sleep.id() as i32;
    std::thread::sleep(Duration::from_millis(50)); // in nanosleep by now
    let mut t = Traced::seize(Path::new("/proc"), pid).unwrap();
    assert_eq!(t.threads(), 1);
    // The remote syscall runs over an interrupted nanosleep.
    let addr = t.mmap_page(PAGE, libc::PROT_READ).unwrap();
    // SAFETY: plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    t.munmap(addr, PAGE).unwrap();
    let stopped = t.detach();
    eprintln!("sleep: stopped for {stopped:?}");
    let status = sleep.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
}
