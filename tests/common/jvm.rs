//! JVMChaos test helpers (tests/host_jvm.rs, tests/vm_jvm.rs): the Java target
//! (`tests/env/java/Target.java`, compiled by setup.sh) and its log, Byteman's own view of a
//! port, and faultd with `--byteman-dir` (see tests/host_jvm.rs for how they are used).
#![allow(dead_code)]
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::host::{list, DaemonProc};
use faultd::proto::faultd::v1 as api;
use faultd::proto::pb;
use faultd::proto::pb::chaos_daemon_client::ChaosDaemonClient;
use tonic::transport::Channel;

/// The JDK the target runs on (Debian's openjdk-17-jdk-headless; setup.sh compiles with it).
pub const JDK: &str = "/usr/lib/jvm/java-17-openjdk-amd64";
/// A call of `work()` at least this long (µs) was delayed by the 300 ms rule.
pub const DELAYED_US: u64 = 300_000;
/// A call of `work()` shorter than this (µs) was not (it takes ~1 ms; slack for a loaded
/// 2-core machine: a safepoint or a JIT compilation).
pub const FAST_US: u64 = 150_000;
/// Calls every check looks at.
pub const CALLS: usize = 3;

pub const DELAY_RULE: &str =
    "RULE delay\nCLASS Target\nMETHOD work\nAT ENTRY\nIF true\nDO\n\tThread.sleep(300L);\nENDRULE";
pub const EXC_RULE: &str = "RULE exception\nCLASS Target\nMETHOD work\nAT ENTRY\nIF true\nDO\n\t\
                        throw new java.lang.IllegalStateException(\"chaos\");\nENDRULE";
pub const RETURN_RULE: &str =
    "RULE return42\nCLASS Target\nMETHOD value\nAT ENTRY\nIF true\nDO\n\treturn 42;\nENDRULE";
/// Fails Byteman's type check: `work()` declares no `throws`.
pub const BAD_RULE: &str = "RULE badthrow\nCLASS Target\nMETHOD work\nAT ENTRY\nIF true\nDO\n\t\
                        throw new java.io.IOException(\"chaos\");\nENDRULE";

pub fn ctr_sock() -> String {
    std::env::var("FAULTD_TEST_CTR_SOCK")
        .unwrap_or_else(|_| "/run/k3s/containerd/containerd.sock".into())
}

/// `tests/env/cache` (or `TESTENV_CACHE`, as setup.sh).
pub fn cache() -> PathBuf {
    std::env::var_os("TESTENV_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/env/cache"))
}

/// The directory with `byteman.jar`, for `--byteman-dir`.
pub fn byteman_dir() -> String {
    let d = cache().join("byteman");
    assert!(
        d.join("byteman.jar").is_file(),
        "{}/byteman.jar missing: run tests/env/setup.sh",
        d.display()
    );
    d.display().to_string()
}

/// The directory with `Target.class`.
pub fn classes_dir() -> PathBuf {
    let d = cache().join("java");
    assert!(
        d.join("Target.class").is_file(),
        "{}/Target.class missing: run tests/env/setup.sh",
        d.display()
    );
    d
}

pub fn java() -> String {
    format!("{JDK}/bin/java")
}

// ---------------------------------------------------------------------------------------------
// the target's log

#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Ok { micros: u64, value: i64 },
    Exc { class: String, micros: u64 },
}

#[derive(Debug, Clone)]
pub struct Line {
    pub call: Call,
    pub raw: String,
}

impl Line {
    pub fn micros(&self) -> u64 {
        match &self.call {
            Call::Ok { micros, .. } | Call::Exc { micros, .. } => *micros,
        }
    }

    pub fn ms(&self) -> f64 {
        self.micros() as f64 / 1000.0
    }

    /// Returned 7 within [`FAST_US`]: no rule in effect.
    pub fn normal(&self) -> bool {
        matches!(self.call, Call::Ok { micros, value: 7 } if micros < FAST_US)
    }

    pub fn delayed(&self) -> bool {
        matches!(self.call, Call::Ok { micros, .. } if micros >= DELAYED_US)
    }
}

pub fn parse(raw: &str) -> Line {
    let f: Vec<&str> = raw.split_whitespace().collect();
    let num = |i: usize| -> u64 {
        f.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad target log line {raw:?}"))
    };
    let call = match f.get(1).copied() {
        Some("ok") => Call::Ok {
            micros: num(2),
            value: num(3) as i64,
        },
        Some("exc") => Call::Exc {
            class: f.get(2).unwrap_or(&"").to_string(),
            micros: num(3),
        },
        _ => panic!("bad target log line {raw:?}"),
    };
    Line {
        call,
        raw: raw.into(),
    }
}

/// The target's log (read only) and, for a JVM the test started, its stdout/stderr (Byteman's
/// messages go there).
pub struct JavaLog {
    pub path: PathBuf,
    pub out: Option<PathBuf>,
}

impl JavaLog {
    /// The complete lines so far.
    pub fn lines(&self) -> Vec<Line> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        complete.lines().map(parse).collect()
    }

    /// The last lines of the log and of the JVM's output, for a failure message.
    pub fn dump(&self) -> String {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut s = format!(
            "last lines of {}:\n  {}",
            self.path.display(),
            lines[lines.len().saturating_sub(15)..].join("\n  ")
        );
        if let Some(out) = &self.out {
            let text = std::fs::read_to_string(out).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            s += &format!(
                "\nlast lines of the JVM's output {}:\n  {}",
                out.display(),
                lines[lines.len().saturating_sub(40)..].join("\n  ")
            );
        }
        s
    }

    /// The lines `from..from + n`, once written; panics after `limit`.
    pub async fn range(&self, from: usize, n: usize, limit: Duration) -> Vec<Line> {
        let t0 = Instant::now();
        loop {
            let lines = self.lines();
            if lines.len() >= from + n {
                return lines[from..from + n].to_vec();
            }
            assert!(
                t0.elapsed() < limit,
                "the target logged {} lines, waited for {} within {limit:?}\n{}",
                lines.len(),
                from + n,
                self.dump()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The next [`CALLS`] calls that started after now (the line of a call that may be in flight
    /// is skipped).
    pub async fn next_calls(&self) -> Vec<Line> {
        let from = self.lines().len() + 1;
        // a delayed call takes 0.35 s with the 50 ms pause
        self.range(from, CALLS, Duration::from_secs(20)).await
    }

    pub fn check(&self, what: &str, calls: &[Line], ok: impl Fn(&Line) -> bool) {
        let ms: Vec<String> = calls.iter().map(|l| format!("{:.1}", l.ms())).collect();
        eprintln!(
            "{what}: work() took {} ms ({})",
            ms.join(", "),
            calls
                .iter()
                .map(|l| l.raw.as_str())
                .collect::<Vec<_>>()
                .join(" | ")
        );
        for l in calls {
            assert!(
                ok(l),
                "{what}: unexpected call {:?}\n{}",
                l.raw,
                self.dump()
            );
        }
    }

    /// The next calls all take 300 ms more.
    pub async fn expect_delayed(&self, what: &str) {
        let calls = self.next_calls().await;
        self.check(what, &calls, Line::delayed);
    }

    /// The next calls are all fast and return 7.
    pub async fn expect_normal(&self, what: &str) {
        let calls = self.next_calls().await;
        self.check(what, &calls, Line::normal);
    }

    /// The next calls all throw `class`.
    pub async fn expect_exception(&self, what: &str, class: &str) {
        let calls = self.next_calls().await;
        self.check(
            what,
            &calls,
            |l| matches!(&l.call, Call::Exc { class: c, .. } if c == class),
        );
    }

    /// The next calls are fast and `value()` returns `v`.
    pub async fn expect_value(&self, what: &str, v: i64) {
        let calls = self.next_calls().await;
        self.check(
            what,
            &calls,
            |l| matches!(l.call, Call::Ok { micros, value } if value == v && micros < FAST_US),
        );
    }

    /// Waits until [`CALLS`] calls in a row are normal (lines written after now); the time that
    /// took. Panics after `limit`.
    pub async fn until_normal(&self, what: &str, limit: Duration) -> Duration {
        let from = self.lines().len();
        let t0 = Instant::now();
        loop {
            let lines = self.lines();
            let new = &lines[from.min(lines.len())..];
            if let Some(i) = new.windows(CALLS).position(|w| w.iter().all(Line::normal)) {
                let took = t0.elapsed();
                let before: Vec<String> =
                    new[..i].iter().map(|l| format!("{:.1}", l.ms())).collect();
                eprintln!(
                    "{what}: normal after {took:?}; calls before: [{}] ms",
                    before.join(", ")
                );
                return took;
            }
            assert!(
                t0.elapsed() < limit,
                "{what}: no {CALLS} normal calls in a row within {limit:?}\n{}",
                self.dump()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The target run by the test, as a child process (killed on drop), in a scratch directory
/// (its working directory and its log's).
pub struct Jvm {
    pub child: Child,
    pub log: JavaLog,
    pub _dir: tempfile::TempDir,
}

impl Jvm {
    pub async fn start() -> Jvm {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target.log");
        let out = dir.path().join("java.out");
        let f = std::fs::File::create(&out).unwrap();
        let child = Command::new(java())
            .arg("-cp")
            .arg(classes_dir())
            .arg("Target")
            .arg(&path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        let jvm = Jvm {
            child,
            log: JavaLog {
                path,
                out: Some(out),
            },
            _dir: dir,
        };
        // The first call is logged as soon as the JVM is up.
        jvm.log.range(0, 1, Duration::from_secs(60)).await;
        jvm.log.expect_normal("before any rule").await;
        jvm
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Jvm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Byteman's view

/// Byteman's `LIST` on its agent listener at 127.0.0.1:`port` in this thread's network
/// namespace: the installed rules ("no rules installed" when none), or None when nothing
/// listens there.
pub fn byteman_list(port: u16) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return None,
        Err(e) => panic!("connecting to Byteman's listener {addr}: {e}"),
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"LIST\n").unwrap();
    // The listener answers one command and closes the connection; the answer ends in "OK".
    let mut out = String::new();
    s.read_to_string(&mut out)
        .unwrap_or_else(|e| panic!("Byteman's LIST on {addr}: {e} (so far: {out:?})"));
    Some(out)
}

/// [`byteman_list`] in the network namespace of `pid` (from a thread that setns(2)s there).
pub fn byteman_list_in(pid: u32, port: u16) -> Option<String> {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        byteman_list(port)
    })
    .join()
    .unwrap()
}

/// Byteman lists `rule` as installed.
pub fn assert_listed(what: &str, listing: Option<String>, rule: &str) {
    let l = listing.unwrap_or_else(|| panic!("{what}: nothing listens on Byteman's port"));
    assert!(
        l.lines().any(|x| x.trim() == format!("RULE {rule}")),
        "{what}: Byteman does not list RULE {rule}:\n{l}"
    );
}

/// Byteman lists no rule (or no agent listens on the port).
pub fn assert_no_rules(what: &str, listing: Option<String>) {
    match listing {
        None => eprintln!("{what}: no Byteman listener on the port"),
        Some(l) => assert!(
            l.contains("no rules installed") && !l.contains("RULE "),
            "{what}: Byteman still lists rules:\n{l}"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// faultd

/// faultd as a child process with the Chaos Mesh API on a TCP port and `--byteman-dir`.
pub struct Daemon {
    pub proc: DaemonProc,
    pub admin: Channel,
    pub client: ChaosDaemonClient<Channel>,
}

impl Daemon {
    pub async fn start(state: &Path) -> Daemon {
        let sock = ctr_sock();
        let bm = byteman_dir();
        let (mut proc, url, _http) = DaemonProc::spawn_tcp(
            state,
            &[
                "--runtime",
                "containerd",
                "--runtime-socket-path",
                &sock,
                "--byteman-dir",
                &bm,
            ],
        );
        let admin = proc.ready().await;
        let client = ChaosDaemonClient::connect(url).await.unwrap();
        Daemon {
            proc,
            admin,
            client,
        }
    }

    /// The faults of kind "jvm" (active ones; with `ended` also the ended ones).
    pub async fn jvm_faults(&self, ended: bool) -> Vec<api::Fault> {
        list(&self.admin, ended)
            .await
            .into_iter()
            .filter(|f| f.kind == "jvm")
            .collect()
    }

    /// `ApplyFault` of `rule` on the first `java` of host pid `pid` (and its descendants),
    /// Byteman listening on `port`. Bounded by 60 s, so a hang fails with a message.
    pub async fn apply(
        &self,
        pid: u32,
        port: u16,
        rule: &str,
        ttl_seconds: u64,
    ) -> Result<api::Fault, tonic::Status> {
        let req = api::ApplyFaultRequest {
            ttl_seconds,
            lease_id: String::new(),
            target_pid: pid,
            fault: Some(api::apply_fault_request::Fault::InstallJvmRules(
                pb::InstallJvmRulesRequest {
                    container_id: String::new(),
                    rule: rule.into(),
                    port: port.into(),
                    enter_ns: true,
                },
            )),
        };
        let mut c = super::host::faults(&self.admin);
        let t0 = Instant::now();
        let r = bounded("ApplyFault install_jvm_rules", c.apply_fault(req))
            .await
            .map(|r| r.into_inner());
        eprintln!(
            "ApplyFault install_jvm_rules (port {port}) answered in {:?}: {}",
            t0.elapsed(),
            match &r {
                Ok(f) => format!("{} {:?}", f.id, phase(f)),
                Err(e) => format!("{:?} {}", e.code(), e.message()),
            }
        );
        r
    }

    pub async fn revoke(&self, id: &str) -> api::Fault {
        let mut c = super::host::faults(&self.admin);
        let r = bounded(
            "RevokeFault",
            c.revoke_fault(api::RevokeFaultRequest { id: id.into() }),
        )
        .await;
        r.unwrap_or_else(|e| panic!("RevokeFault {id}: {e:?}"))
            .into_inner()
    }

    pub async fn install(&mut self, req: &pb::InstallJvmRulesRequest) {
        let t0 = Instant::now();
        let r = bounded(
            "InstallJVMRules",
            self.client.install_jvm_rules(req.clone()),
        )
        .await;
        eprintln!(
            "InstallJVMRules answered in {:?}: {}",
            t0.elapsed(),
            r.as_ref().map_or_else(
                |e| format!("{:?} {}", e.code(), e.message()),
                |_| "OK".into()
            )
        );
        r.unwrap_or_else(|e| panic!("InstallJVMRules {req:?}: {e:?}"));
    }

    pub async fn uninstall(&mut self, req: &pb::UninstallJvmRulesRequest) {
        let t0 = Instant::now();
        let r = bounded(
            "UninstallJVMRules",
            self.client.uninstall_jvm_rules(req.clone()),
        )
        .await;
        eprintln!(
            "UninstallJVMRules answered in {:?}: {}",
            t0.elapsed(),
            r.as_ref().map_or_else(
                |e| format!("{:?} {}", e.code(), e.message()),
                |_| "OK".into()
            )
        );
        r.unwrap_or_else(|e| panic!("UninstallJVMRules {req:?}: {e:?}"));
    }
}

/// `f`, which must finish within 60 s (a hung call fails with `what`).
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 60 s"))
}

pub fn phase(f: &api::Fault) -> api::Phase {
    api::Phase::try_from(f.phase).unwrap_or(api::Phase::Unspecified)
}

/// The one fault of `faults`, which must be the only one.
pub fn only(faults: &[api::Fault]) -> &api::Fault {
    assert_eq!(faults.len(), 1, "{faults:#?}");
    &faults[0]
}

// ---------------------------------------------------------------------------------------------
// tests
