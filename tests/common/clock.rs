//! The TimeChaos test target `clockreport` (`tests/env/ctr/clockreport.c`; in the test image as
//! `/bin/clockreport`, beside it as `tests/env/cache/clockreport`): its report lines parsed into
//! the skew each process sees, waiting for a line made after a given moment, and the vDSO checks
//! (a process's `[vdso]` byte-identical to this test process's own = nothing of faultd's left).
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One `CLK` line of clockreport; times in nanoseconds (i128: a skewed clock may be past
/// what 64-bit nanoseconds hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// `parent`, or `child` for a process forked on SIGUSR1.
    pub role: String,
    /// The pid in the process's own pid namespace.
    pub pid: u32,
    pub seq: u64,
    /// Through libc (the vDSO): CLOCK_REALTIME, CLOCK_MONOTONIC, gettimeofday (µs
    /// resolution), time() (s resolution).
    pub realtime_ns: i128,
    pub monotonic_ns: i128,
    pub tod_ns: i128,
    pub time_ns: i128,
    /// The raw syscall (the kernel's clock, which no vDSO patch moves), read just before.
    pub sys_realtime_ns: i128,
    pub sys_monotonic_ns: i128,
}

/// The skew a process sees in seconds: libc's value minus the kernel's own clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Skew {
    pub realtime: f64,
    pub monotonic: f64,
    pub gettimeofday: f64,
    /// time() truncates to whole seconds: within (offset - 1 s, offset].
    pub time: f64,
}

impl Sample {
    /// `CLK role pid seq rt_s rt_ns mono_s mono_ns tod_s tod_us time_s sys_rt_s sys_rt_ns
    /// sys_mono_s sys_mono_ns`.
    pub fn parse(line: &str) -> Option<Sample> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 15 || f[0] != "CLK" {
            return None;
        }
        let n = |i: usize| f[i].parse::<i128>().ok();
        let ts = |i: usize| Some(n(i)? * 1_000_000_000 + n(i + 1)?);
        Some(Sample {
            role: f[1].to_string(),
            pid: f[2].parse().ok()?,
            seq: f[3].parse().ok()?,
            realtime_ns: ts(4)?,
            monotonic_ns: ts(6)?,
            tod_ns: n(8)? * 1_000_000_000 + n(9)? * 1000,
            time_ns: n(10)? * 1_000_000_000,
            sys_realtime_ns: ts(11)?,
            sys_monotonic_ns: ts(13)?,
        })
    }

    pub fn skew(&self) -> Skew {
        let s = |ns: i128| ns as f64 / 1e9;
        let rt = self.sys_realtime_ns;
        Skew {
            realtime: s(self.realtime_ns - rt),
            monotonic: s(self.monotonic_ns - self.sys_monotonic_ns),
            gettimeofday: s(self.tod_ns - rt),
            time: s(self.time_ns - rt),
        }
    }
}

impl Skew {
    /// The skew expected from an offset of `offset` seconds on the clocks of `mask` (bit 0
    /// CLOCK_REALTIME, which gettimeofday and time follow; bit 1 CLOCK_MONOTONIC).
    pub fn expected(offset: f64, mask: u64) -> Skew {
        let rt = if mask & 1 != 0 { offset } else { 0.0 };
        let mono = if mask & 2 != 0 { offset } else { 0.0 };
        Skew {
            realtime: rt,
            monotonic: mono,
            gettimeofday: rt,
            time: rt,
        }
    }

    /// Within `tol` seconds of `want` (time(): within (want - 1 - tol, want + tol]).
    pub fn near(&self, want: &Skew, tol: f64) -> bool {
        (self.realtime - want.realtime).abs() <= tol
            && (self.monotonic - want.monotonic).abs() <= tol
            && (self.gettimeofday - want.gettimeofday).abs() <= tol
            && self.time <= want.time + tol
            && self.time >= want.time - 1.0 - tol
    }
}

impl std::fmt::Display for Skew {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "realtime {:+.6} s, monotonic {:+.6} s, gettimeofday {:+.6} s, time {:+.3} s",
            self.realtime, self.monotonic, self.gettimeofday, self.time
        )
    }
}

/// This process's CLOCK_MONOTONIC in ns (never skewed: faultd does not patch its tests).
pub fn mono_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// This process's CLOCK_REALTIME in ns.
pub fn real_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// The report lines clockreport appends to a file (read only; for a container through
/// `/proc/<pid>/root`).
pub struct Report {
    pub path: PathBuf,
}

impl Report {
    pub fn new(path: impl Into<PathBuf>) -> Report {
        Report { path: path.into() }
    }

    pub fn samples(&self) -> Vec<Sample> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(Sample::parse)
            .collect()
    }

    /// The first line accepted by `want` made after `after_mono_ns` (this process's
    /// CLOCK_MONOTONIC, the same clock as the line's raw `sys_monotonic_ns`); panics after
    /// `limit`. Also checks the line's kernel REALTIME against this process's (the line is
    /// recent and the file is the one we think).
    pub async fn wait(
        &self,
        what: &str,
        after_mono_ns: i64,
        limit: Duration,
        want: impl Fn(&Sample) -> bool,
    ) -> Sample {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self
                .samples()
                .into_iter()
                .find(|s| s.sys_monotonic_ns > i128::from(after_mono_ns) && want(s))
            {
                let age = (i128::from(real_ns()) - s.sys_realtime_ns) as f64 / 1e9;
                assert!(
                    (-0.5..5.0).contains(&age),
                    "{what}: a line {age:.3} s old by this process's clock: {s:?}"
                );
                return s;
            }
            assert!(
                t0.elapsed() < limit,
                "{what}: no line after {after_mono_ns} in {limit:?} ({} lines in {})",
                self.samples().len(),
                self.path.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The next line of the process `role` (and in-namespace `pid`, if given) made from now on.
    pub async fn next(&self, role: &str, pid: Option<u32>) -> Sample {
        let after = mono_ns();
        self.wait(role, after, Duration::from_secs(10), |s| {
            s.role == role && pid.is_none_or(|p| s.pid == p)
        })
        .await
    }

    /// The skew of the next line of `role` (and `pid`).
    pub async fn skew(&self, role: &str, pid: Option<u32>) -> Skew {
        self.next(role, pid).await.skew()
    }

    /// Waits until the next line of `role` (and `pid`) is within `tol` of `want`; panics with
    /// the last skew after `limit`. Returns the skew and how long it took.
    pub async fn until(
        &self,
        role: &str,
        pid: Option<u32>,
        want: &Skew,
        tol: f64,
        limit: Duration,
    ) -> (Skew, Duration) {
        let t0 = Instant::now();
        loop {
            let s = self.skew(role, pid).await;
            if s.near(want, tol) {
                return (s, t0.elapsed());
            }
            assert!(
                t0.elapsed() < limit,
                "{role}: skew {s} not near {want} within {limit:?}"
            );
        }
    }

    /// The in-namespace pids of the children that reported so far.
    pub fn children(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .samples()
            .into_iter()
            .filter(|s| s.role == "child")
            .map(|s| s.pid)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Asserts that `skew` is within `tol` seconds of `want`, naming `what`.
pub fn assert_near(what: &str, skew: &Skew, want: &Skew, tol: f64) {
    assert!(
        skew.near(want, tol),
        "{what}: skew {skew}\n  expected {want} (±{tol} s)"
    );
}

/// The static clockreport binary: `tests/env/cache/clockreport` (left there by
/// `tests/env/ctr/mk-oci-image.py` when `tests/env/setup.sh` built the test image), else
/// compiled now into `dir` (`gcc -static -O2`).
pub fn binary(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/env/ctr/clockreport.c");
    let cache = std::env::var_os("TESTENV_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/env/cache"));
    let cached = cache.join("clockreport");
    let newer = |a: &Path, b: &Path| {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        matches!((m(a), m(b)), (Some(x), Some(y)) if x >= y)
    };
    if newer(&cached, &src) {
        return cached;
    }
    let exe = dir.join("clockreport");
    let out = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("running gcc");
    assert!(
        out.status.success(),
        "gcc -static {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// The host pids whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    faultd::process::pids()
        .into_iter()
        .filter(|&p| faultd::process::parent_pid(p) == Some(pid))
        .collect()
}

/// This test process's own `[vdso]` image (pristine: faultd never patches its tests).
pub fn own_vdso() -> Vec<u8> {
    faultd::vdso::elf::read_vdso(Path::new("/proc"), "self")
        .unwrap()
        .1
}

/// Whether the `[vdso]` of `pid` is byte-identical to this process's (nothing of faultd left).
pub fn vdso_pristine(pid: u32) -> bool {
    faultd::vdso::elf::read_vdso(Path::new("/proc"), &pid.to_string())
        .map(|(_, b)| b == own_vdso())
        .unwrap_or(false)
}

/// Whether faultd's jump is at any of the vDSO's clock entry points of `pid`.
pub fn vdso_patched(pid: u32) -> bool {
    let own = own_vdso();
    let image = faultd::vdso::VdsoImage::parse(&own).unwrap();
    let Ok((_, theirs)) = faultd::vdso::elf::read_vdso(Path::new("/proc"), &pid.to_string()) else {
        return false;
    };
    let patched = faultd::vdso::FakeFn::ALL.into_iter().any(|f| {
        image.symbol(f.vdso_symbol()).is_some_and(|sym| {
            let at = sym.offset as usize;
            theirs
                .get(at..at + faultd::vdso::PATCH_LEN)
                .and_then(faultd::vdso::parse_jump_patch)
                .is_some()
        })
    });
    patched
}
