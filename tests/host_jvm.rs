//! Host tier (root, the test containerd; run by `tests/run-all.sh`, or by hand as
//! tests/README.md shows: `cargo test --test host_jvm -- --ignored --test-threads=1`):
//! JVMChaos (`InstallJVMRules` / `UninstallJVMRules`, and `faultd.v1` `ApplyFault` with
//! `install_jvm_rules`) against the Java target `tests/env/java/Target.java` (compiled by
//! `tests/env/setup.sh` into `tests/env/cache/java/`, run by the host's JDK 17). Every 50 ms it
//! calls `Target.value()` (7) and times a call of `Target.work()` (~1 ms), and appends
//! `<seq> ok <micros> <value>` or `<seq> exc <ExceptionClass> <micros>` to its log, which the
//! test only reads. faultd runs with `--byteman-dir tests/env/cache/byteman` (Byteman's agent jar
//! from Debian's libbyteman-java, also provided by setup.sh).
//!
//! Most tests start the JVM as a child process of the test and target it with `target_pid`;
//! the last one runs it in a container of the test image with the host's JDK bind-mounted
//! (`/usr`, `/lib`, `/lib64`, `/etc/java-17-openjdk`) as the child of a shell, addressed by
//! container id. A check after a call skips the log line of a call that may have been in flight
//! when faultd answered and looks at the next [`CALLS`] calls. Byteman's own view (`LIST` on
//! its agent listener) is checked too. Latencies are printed.
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::ctr::{unique, Container};
use common::host::{free_port, list, settled, DaemonProc};
use faultd::proto::faultd::v1 as api;
use faultd::proto::pb;
use faultd::proto::pb::chaos_daemon_client::ChaosDaemonClient;
use tonic::transport::Channel;
use tonic::Code;

/// The JDK the target runs on (Debian's openjdk-17-jdk-headless; setup.sh compiles with it).
const JDK: &str = "/usr/lib/jvm/java-17-openjdk-amd64";
/// A call of `work()` at least this long (µs) was delayed by the 300 ms rule.
const DELAYED_US: u64 = 300_000;
/// A call of `work()` shorter than this (µs) was not (it takes ~1 ms; slack for a loaded
/// 2-core machine: a safepoint or a JIT compilation).
const FAST_US: u64 = 150_000;
/// Calls every check looks at.
const CALLS: usize = 3;

const DELAY_RULE: &str =
    "RULE delay\nCLASS Target\nMETHOD work\nAT ENTRY\nIF true\nDO\n\tThread.sleep(300L);\nENDRULE";
const EXC_RULE: &str = "RULE exception\nCLASS Target\nMETHOD work\nAT ENTRY\nIF true\nDO\n\t\
                        throw new java.lang.IllegalStateException(\"chaos\");\nENDRULE";
const RETURN_RULE: &str =
    "RULE return42\nCLASS Target\nMETHOD value\nAT ENTRY\nIF true\nDO\n\treturn 42;\nENDRULE";
/// Fails Byteman's type check: `work()` declares no `throws`.
const BAD_RULE: &str = "RULE badthrow\nCLASS Target\nMETHOD work\nAT ENTRY\nIF true\nDO\n\t\
                        throw new java.io.IOException(\"chaos\");\nENDRULE";

fn ctr_sock() -> String {
    std::env::var("FAULTD_TEST_CTR_SOCK")
        .unwrap_or_else(|_| "/run/k3s/containerd/containerd.sock".into())
}

/// `tests/env/cache` (or `TESTENV_CACHE`, as setup.sh).
fn cache() -> PathBuf {
    std::env::var_os("TESTENV_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/env/cache"))
}

/// The directory with `byteman.jar`, for `--byteman-dir`.
fn byteman_dir() -> String {
    let d = cache().join("byteman");
    assert!(
        d.join("byteman.jar").is_file(),
        "{}/byteman.jar missing: run tests/env/setup.sh",
        d.display()
    );
    d.display().to_string()
}

/// The directory with `Target.class`.
fn classes_dir() -> PathBuf {
    let d = cache().join("java");
    assert!(
        d.join("Target.class").is_file(),
        "{}/Target.class missing: run tests/env/setup.sh",
        d.display()
    );
    d
}

fn java() -> String {
    format!("{JDK}/bin/java")
}

// ---------------------------------------------------------------------------------------------
// the target's log

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Ok { micros: u64, value: i64 },
    Exc { class: String, micros: u64 },
}

#[derive(Debug, Clone)]
struct Line {
    call: Call,
    raw: String,
}

impl Line {
    fn micros(&self) -> u64 {
        match &self.call {
            Call::Ok { micros, .. } | Call::Exc { micros, .. } => *micros,
        }
    }

    fn ms(&self) -> f64 {
        self.micros() as f64 / 1000.0
    }

    /// Returned 7 within [`FAST_US`]: no rule in effect.
    fn normal(&self) -> bool {
        matches!(self.call, Call::Ok { micros, value: 7 } if micros < FAST_US)
    }

    fn delayed(&self) -> bool {
        matches!(self.call, Call::Ok { micros, .. } if micros >= DELAYED_US)
    }
}

fn parse(raw: &str) -> Line {
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
struct JavaLog {
    path: PathBuf,
    out: Option<PathBuf>,
}

impl JavaLog {
    /// The complete lines so far.
    fn lines(&self) -> Vec<Line> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        complete.lines().map(parse).collect()
    }

    /// The last lines of the log and of the JVM's output, for a failure message.
    fn dump(&self) -> String {
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
    async fn range(&self, from: usize, n: usize, limit: Duration) -> Vec<Line> {
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
    async fn next_calls(&self) -> Vec<Line> {
        let from = self.lines().len() + 1;
        // a delayed call takes 0.35 s with the 50 ms pause
        self.range(from, CALLS, Duration::from_secs(20)).await
    }

    fn check(&self, what: &str, calls: &[Line], ok: impl Fn(&Line) -> bool) {
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
    async fn expect_delayed(&self, what: &str) {
        let calls = self.next_calls().await;
        self.check(what, &calls, Line::delayed);
    }

    /// The next calls are all fast and return 7.
    async fn expect_normal(&self, what: &str) {
        let calls = self.next_calls().await;
        self.check(what, &calls, Line::normal);
    }

    /// The next calls all throw `class`.
    async fn expect_exception(&self, what: &str, class: &str) {
        let calls = self.next_calls().await;
        self.check(
            what,
            &calls,
            |l| matches!(&l.call, Call::Exc { class: c, .. } if c == class),
        );
    }

    /// The next calls are fast and `value()` returns `v`.
    async fn expect_value(&self, what: &str, v: i64) {
        let calls = self.next_calls().await;
        self.check(
            what,
            &calls,
            |l| matches!(l.call, Call::Ok { micros, value } if value == v && micros < FAST_US),
        );
    }

    /// Waits until [`CALLS`] calls in a row are normal (lines written after now); the time that
    /// took. Panics after `limit`.
    async fn until_normal(&self, what: &str, limit: Duration) -> Duration {
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
struct Jvm {
    child: Child,
    log: JavaLog,
    _dir: tempfile::TempDir,
}

impl Jvm {
    async fn start() -> Jvm {
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

    fn pid(&self) -> u32 {
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
fn byteman_list(port: u16) -> Option<String> {
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
fn byteman_list_in(pid: u32, port: u16) -> Option<String> {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        byteman_list(port)
    })
    .join()
    .unwrap()
}

/// Byteman lists `rule` as installed.
fn assert_listed(what: &str, listing: Option<String>, rule: &str) {
    let l = listing.unwrap_or_else(|| panic!("{what}: nothing listens on Byteman's port"));
    assert!(
        l.lines().any(|x| x.trim() == format!("RULE {rule}")),
        "{what}: Byteman does not list RULE {rule}:\n{l}"
    );
}

/// Byteman lists no rule (or no agent listens on the port).
fn assert_no_rules(what: &str, listing: Option<String>) {
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
struct Daemon {
    proc: DaemonProc,
    admin: Channel,
    client: ChaosDaemonClient<Channel>,
}

impl Daemon {
    async fn start(state: &Path) -> Daemon {
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
    async fn jvm_faults(&self, ended: bool) -> Vec<api::Fault> {
        list(&self.admin, ended)
            .await
            .into_iter()
            .filter(|f| f.kind == "jvm")
            .collect()
    }

    /// `ApplyFault` of `rule` on the first `java` of host pid `pid` (and its descendants),
    /// Byteman listening on `port`. Bounded by 60 s, so a hang fails with a message.
    async fn apply(
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
        let mut c = common::host::faults(&self.admin);
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

    async fn revoke(&self, id: &str) -> api::Fault {
        let mut c = common::host::faults(&self.admin);
        let r = bounded(
            "RevokeFault",
            c.revoke_fault(api::RevokeFaultRequest { id: id.into() }),
        )
        .await;
        r.unwrap_or_else(|e| panic!("RevokeFault {id}: {e:?}"))
            .into_inner()
    }

    async fn install(&mut self, req: &pb::InstallJvmRulesRequest) {
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

    async fn uninstall(&mut self, req: &pb::UninstallJvmRulesRequest) {
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

fn phase(f: &api::Fault) -> api::Phase {
    api::Phase::try_from(f.phase).unwrap_or(api::Phase::Unspecified)
}

/// The one fault of `faults`, which must be the only one.
fn only(faults: &[api::Fault]) -> &api::Fault {
    assert_eq!(faults.len(), 1, "{faults:#?}");
    &faults[0]
}

// ---------------------------------------------------------------------------------------------
// tests

#[tokio::test]
#[ignore = "host tier: root, JDK 17 and Byteman from tests/env/setup.sh; run by tests/run-all.sh"]
async fn host_process_delay_exception_and_return_rules_are_applied_and_revoked() {
    let jvm = Jvm::start().await;
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    let port = free_port();

    // Delay: every call of work() takes 300 ms more.
    let f = d.apply(jvm.pid(), port, DELAY_RULE, 0).await.unwrap();
    assert_eq!((f.kind.as_str(), phase(&f)), ("jvm", api::Phase::Applied));
    jvm.log.expect_delayed("delay rule").await;
    assert_listed("delay rule", byteman_list(port), "delay");
    let active = d.jvm_faults(false).await;
    assert_eq!(only(&active).id, f.id);

    // The same again (a controller retry): OK, still delayed, the rule there once.
    let again = d.apply(jvm.pid(), port, DELAY_RULE, 0).await.unwrap();
    assert_eq!(phase(&again), api::Phase::Applied, "{again:?}");
    jvm.log.expect_delayed("delay rule installed twice").await;
    let l = byteman_list(port).expect("Byteman listens");
    assert_eq!(
        l.lines().filter(|x| x.trim() == "RULE delay").count(),
        1,
        "the rule listed once:\n{l}"
    );

    // RevokeFault (every jvm fault there is: the retry may be a record of its own) -> normal.
    for f in d.jvm_faults(false).await {
        let ended = d.revoke(&f.id).await;
        assert_eq!(phase(&ended), api::Phase::Reverted, "{ended:?}");
    }
    jvm.log.expect_normal("delay revoked").await;
    assert_no_rules("delay revoked", byteman_list(port));
    assert!(d.jvm_faults(false).await.is_empty());

    // Exception: work() throws the rule's exception; the agent on `port` is reused.
    let f = d.apply(jvm.pid(), port, EXC_RULE, 0).await.unwrap();
    jvm.log
        .expect_exception("exception rule", "java.lang.IllegalStateException")
        .await;
    assert_listed("exception rule", byteman_list(port), "exception");
    d.revoke(&f.id).await;
    jvm.log.expect_normal("exception revoked").await;
    assert_no_rules("exception revoked", byteman_list(port));

    // Return value: value() returns 42 instead of 7.
    let f = d.apply(jvm.pid(), port, RETURN_RULE, 0).await.unwrap();
    jvm.log.expect_value("return rule", 42).await;
    d.revoke(&f.id).await;
    jvm.log.expect_normal("return revoked").await;
    assert_no_rules("return revoked", byteman_list(port));

    let ended = settled(&d.admin, "jvm", Duration::from_secs(10)).await;
    assert!(
        ended
            .iter()
            .all(|f| (phase(f), f.end_reason.as_str()) == (api::Phase::Reverted, "request")),
        "{ended:#?}"
    );
    assert!(d.jvm_faults(false).await.is_empty());
    d.proc.shutdown().await;
}

#[tokio::test]
#[ignore = "host tier: root, JDK 17 and Byteman from tests/env/setup.sh; run by tests/run-all.sh"]
async fn kill_9_after_install_is_undone_by_the_restart_and_sigterm_undoes() {
    let jvm = Jvm::start().await;
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    {
        let mut d = Daemon::start(state.path()).await;
        d.apply(jvm.pid(), port, DELAY_RULE, 0).await.unwrap();
        jvm.log.expect_delayed("before kill -9").await;
        d.proc.kill9();
        // Nobody deletes the rule meanwhile.
        jvm.log.expect_delayed("faultd dead").await;
        assert_listed("faultd dead", byteman_list(port), "delay");
    }
    let t0 = Instant::now();
    let mut d = Daemon::start(state.path()).await;
    eprintln!("restarted daemon ready in {:?}", t0.elapsed());
    // Deleted during the start-up, before the admin socket answered.
    jvm.log.expect_normal("after kill -9 and restart").await;
    assert_no_rules("after restart", byteman_list(port));
    assert!(d.jvm_faults(false).await.is_empty());
    let ended = settled(&d.admin, "jvm", Duration::from_secs(10)).await;
    let f = only(&ended);
    assert_eq!(
        (phase(f), f.end_reason.as_str()),
        (api::Phase::Reverted, "restart"),
        "{f:?}"
    );

    // SIGTERM deletes the rules on the way out.
    d.apply(jvm.pid(), port, DELAY_RULE, 0).await.unwrap();
    jvm.log.expect_delayed("applied again").await;
    d.proc.shutdown().await;
    assert!(
        d.proc.child.try_wait().unwrap().is_some(),
        "faultd did not exit on SIGTERM"
    );
    jvm.log.expect_normal("after SIGTERM").await;
    assert_no_rules("after SIGTERM", byteman_list(port));
}

#[tokio::test]
#[ignore = "host tier: root, JDK 17 and Byteman from tests/env/setup.sh; run by tests/run-all.sh"]
async fn a_port_held_by_another_listener_is_failed_precondition() {
    let jvm = Jvm::start().await;
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    // Bound and listening, never answering: not Byteman.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = other.local_addr().unwrap().port();

    let e = d.apply(jvm.pid(), port, DELAY_RULE, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains(&port.to_string()),
        "the message names port {port}: {e:?}"
    );
    assert!(d.jvm_faults(false).await.is_empty());
    jvm.log.expect_normal("after the refusal").await;
    // The test's listener still has the port.
    assert_eq!(other.local_addr().unwrap().port(), port);
    drop(other);
    d.proc.shutdown().await;
}

#[tokio::test]
#[ignore = "host tier: root, JDK 17 and Byteman from tests/env/setup.sh; run by tests/run-all.sh"]
async fn a_rule_failing_the_type_check_is_refused_and_leaves_nothing() {
    let jvm = Jvm::start().await;
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    let port = free_port();

    let e = d.apply(jvm.pid(), port, BAD_RULE, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("badthrow"),
        "the message names the rule: {e:?}"
    );
    assert!(d.jvm_faults(false).await.is_empty());
    jvm.log.expect_normal("after the refused rule").await;
    assert_no_rules("after the refused rule", byteman_list(port));

    // A good rule on the same JVM and port works afterwards.
    let f = d.apply(jvm.pid(), port, DELAY_RULE, 0).await.unwrap();
    jvm.log
        .expect_delayed("a good rule after the bad one")
        .await;
    d.revoke(&f.id).await;
    jvm.log.expect_normal("revoked").await;
    d.proc.shutdown().await;
}

#[tokio::test]
#[ignore = "host tier: root, JDK 17 and Byteman from tests/env/setup.sh; run by tests/run-all.sh"]
async fn ctl_jvm_with_a_ttl_expires_and_an_inline_rule_is_revoked() {
    let jvm = Jvm::start().await;
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    let port = free_port();
    let rule_file = state.path().join("delay.btm");
    std::fs::write(&rule_file, DELAY_RULE).unwrap();
    let ctl = |rule: &str, ttl: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_faultd"))
            .arg("ctl")
            .arg("--socket")
            .arg(&d.proc.socket)
            .args(["--output", "json", "jvm", "--pid", &jvm.pid().to_string()])
            .args(["--port", &port.to_string(), "--rule", rule, "--ttl", ttl])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctl jvm --rule {rule:?} --ttl {ttl}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // `--rule @FILE --ttl 3s`: delayed, then normal again by itself.
    let t0 = Instant::now();
    ctl(&format!("@{}", rule_file.display()), "3s");
    let f = only(&d.jvm_faults(false).await).clone();
    assert!(f.deadline_unix_ms > 0, "{f:?}");
    jvm.log.expect_delayed("ctl jvm --ttl 3s").await;
    jvm.log
        .until_normal("ttl 3s", Duration::from_secs(20))
        .await;
    let after = t0.elapsed();
    eprintln!("normal {after:?} after ctl");
    assert!(
        after >= Duration::from_millis(2900),
        "normal before the TTL: {after:?}\n{}",
        jvm.log.dump()
    );
    assert_no_rules("after expiry", byteman_list(port));
    let ended = settled(&d.admin, "jvm", Duration::from_secs(10)).await;
    let e = only(&ended);
    assert_eq!(
        (e.id.as_str(), phase(e), e.end_reason.as_str()),
        (f.id.as_str(), api::Phase::Reverted, "expiry"),
        "{e:?}"
    );

    // An inline rule (`--rule TEXT`), ended by RevokeFault with the id ctl printed.
    let out = ctl(EXC_RULE, "60s");
    jvm.log
        .expect_exception("ctl jvm inline rule", "java.lang.IllegalStateException")
        .await;
    let id = only(&d.jvm_faults(false).await).id.clone();
    assert!(
        out.contains(&id),
        "ctl's output names the fault {id}: {out}"
    );
    let ended = d.revoke(&id).await;
    assert_eq!(phase(&ended), api::Phase::Reverted, "{ended:?}");
    jvm.log.expect_normal("inline rule revoked").await;
    assert_no_rules("inline rule revoked", byteman_list(port));
    d.proc.shutdown().await;
}

/// The target in a container of the test image: the host's JDK bind-mounted read-only, the
/// classes at /opt/target, the JVM a child of a shell (the container's init).
struct ContainerJvm {
    c: Container,
    init: u32,
    log: JavaLog,
}

impl ContainerJvm {
    async fn start() -> ContainerJvm {
        let classes = format!(
            "type=bind,src={},dst=/opt/target,options=rbind:ro",
            classes_dir().display()
        );
        let mut opts = vec![];
        for m in [
            "type=bind,src=/usr,dst=/usr,options=rbind:ro",
            "type=bind,src=/usr/lib,dst=/lib,options=rbind:ro",
            "type=bind,src=/usr/lib64,dst=/lib64,options=rbind:ro",
            "type=bind,src=/etc/java-17-openjdk,dst=/etc/java-17-openjdk,options=rbind:ro",
            &classes,
        ] {
            opts.extend(["--mount", m]);
        }
        let cmd = format!("{} -cp /opt/target Target /tmp/target.log & wait", java());
        let c = Container::run_argv(&unique("jvm"), &opts, &["/bin/sh", "-c", &cmd]);
        let init = c.pid();
        let t = ContainerJvm {
            c,
            init,
            log: JavaLog {
                path: PathBuf::from(format!("/proc/{init}/root/tmp/target.log")),
                out: None,
            },
        };
        t.log.range(0, 1, Duration::from_secs(60)).await;
        t.log.expect_normal("container: before any rule").await;
        t
    }

    /// The JVM's host pid: the `java` child of the shell.
    fn java_pid(&self) -> u32 {
        let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.init))
            .unwrap_or_default();
        kids.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .find(|p: &u32| {
                std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "java")
            })
            .unwrap_or_else(|| panic!("no java child of the container's init {}", self.init))
    }

    fn req(
        &self,
        rule: &str,
        port: u16,
    ) -> (pb::InstallJvmRulesRequest, pb::UninstallJvmRulesRequest) {
        (
            pb::InstallJvmRulesRequest {
                container_id: self.c.id(),
                rule: rule.into(),
                port: port.into(),
                enter_ns: true,
            },
            pb::UninstallJvmRulesRequest {
                container_id: self.c.id(),
                rule: rule.into(),
                port: port.into(),
                enter_ns: true,
            },
        )
    }
}

#[tokio::test]
#[ignore = "host tier: root, the test containerd, JDK 17 and Byteman from tests/env/setup.sh; run by tests/run-all.sh"]
async fn install_and_uninstall_jvm_rules_on_a_container() {
    let t = ContainerJvm::start().await;
    let java = t.java_pid();
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    let port = free_port();
    let (install, uninstall) = t.req(DELAY_RULE, port);

    d.install(&install).await;
    t.log.expect_delayed("container: delay rule").await;
    // Byteman listens in the container's network namespace.
    assert_listed(
        "container: delay rule",
        byteman_list_in(java, port),
        "delay",
    );
    let active = d.jvm_faults(false).await;
    assert!(!active.is_empty(), "no jvm fault recorded");
    assert!(
        active.iter().all(|f| phase(f) == api::Phase::Applied),
        "{active:#?}"
    );

    // Installed twice: OK, still delayed.
    d.install(&install).await;
    t.log.expect_delayed("container: installed twice").await;

    d.uninstall(&uninstall).await;
    t.log.expect_normal("container: uninstalled").await;
    assert_no_rules("container: uninstalled", byteman_list_in(java, port));
    assert!(d.jvm_faults(false).await.is_empty());
    // Uninstall again (the rule is gone): OK.
    d.uninstall(&uninstall).await;

    // Installed again, then the container goes away: uninstall is OK.
    d.install(&install).await;
    t.log.expect_delayed("container: installed again").await;
    t.c.remove();
    d.uninstall(&uninstall).await;
    let ended = settled(&d.admin, "jvm", Duration::from_secs(10)).await;
    assert!(
        ended.iter().all(|f| phase(f) != api::Phase::Applied),
        "{ended:#?}"
    );
    d.proc.shutdown().await;
}
