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

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::ctr::{unique, Container};
use common::host::{free_port, settled};
use common::jvm::*;
use faultd::proto::faultd::v1 as api;
use faultd::proto::pb;
use tonic::Code;

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
