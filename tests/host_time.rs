//! Host tier (root, the test containerd; run by `tests/run-all.sh`, or by hand as
//! tests/README.md shows: `cargo test --test host_time -- --ignored --test-threads=1`):
//! TimeChaos (`SetTimeOffset` / `RecoverTimeOffset`, and `faultd.v1` `ApplyFault` with
//! `set_time_offset`) against containers of the test image running `/bin/clockreport`
//! (`tests/env/ctr/clockreport.c`: a static C program with two extra threads that appends
//! `clock_gettime(REALTIME)`, `clock_gettime(MONOTONIC)`, `gettimeofday` and `time()` through
//! libc (the vDSO), next to the raw syscall's values, to `/tmp/clock.log` inside the container
//! every 100 ms, and forks a reporting child on SIGUSR1). The file is only read, through
//! `/proc/<pid>/root`. The skew a process sees is libc's value minus the raw syscall's
//! (`common::clock`); every check waits for a line made after the call returned.
//!
//! Rollback is also checked on the bytes: every process of the container has a `[vdso]`
//! byte-identical to this test process's own again. Deltas are printed.
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::clock::{assert_near, children_of, vdso_patched, vdso_pristine, Report, Skew};
use common::ctr::{unique, Container};
use common::host::{list, settled, DaemonProc};
use faultd::proto::faultd::v1 as api;
use faultd::proto::pb;
use faultd::proto::pb::chaos_daemon_client::ChaosDaemonClient;
use tonic::transport::Channel;
use tonic::Code;

const REALTIME: u64 = 1 << libc::CLOCK_REALTIME;
const MONOTONIC: u64 = 1 << libc::CLOCK_MONOTONIC;
/// Tolerance of a skew check, in seconds (the measurement itself is in-process, µs-exact).
const TOL: f64 = 1.0;

fn ctr_sock() -> String {
    std::env::var("FAULTD_TEST_CTR_SOCK")
        .unwrap_or_else(|_| "/run/k3s/containerd/containerd.sock".into())
}

/// faultd as a child process with the Chaos Mesh API on a TCP port.
struct Daemon {
    proc: DaemonProc,
    admin: Channel,
    client: ChaosDaemonClient<Channel>,
    http: u16,
}

impl Daemon {
    async fn start(state: &Path) -> Daemon {
        let sock = ctr_sock();
        let (mut proc, url, http) = DaemonProc::spawn_tcp(
            state,
            &["--runtime", "containerd", "--runtime-socket-path", &sock],
        );
        let admin = proc.ready().await;
        let client = ChaosDaemonClient::connect(url).await.unwrap();
        Daemon {
            proc,
            admin,
            client,
            http,
        }
    }

    /// The faults of kind "time" (active ones; with `ended` also the ended ones).
    async fn time_faults(&self, ended: bool) -> Vec<api::Fault> {
        list(&self.admin, ended)
            .await
            .into_iter()
            .filter(|f| f.kind == "time")
            .collect()
    }

    /// `faultd_time_stop_seconds_count` (summed over its labels).
    async fn stops(&self) -> u64 {
        let addr = format!("127.0.0.1:{}", self.http).parse().unwrap();
        let (code, body) = common::http_get(addr, "/metrics").await;
        assert_eq!(code, 200);
        body.lines()
            .filter(|l| {
                l.strip_prefix("faultd_time_stop_seconds_count")
                    .is_some_and(|r| r.starts_with([' ', '{']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

/// A container running clockreport (3 threads) as its init.
struct Target {
    c: Container,
    pid: u32,
    report: Report,
    pod_container: String,
}

impl Target {
    async fn start(tag: &str) -> Target {
        Target::start_with(tag, &[]).await
    }

    /// With more `ctr run` options (e.g. `--with-ns pid:…` to join another pid namespace).
    async fn start_with(tag: &str, opts: &[&str]) -> Target {
        let name = unique(tag);
        let c = Container::run_argv(
            &name,
            opts,
            &["/bin/clockreport", "-o", "/tmp/clock.log", "-t", "2"],
        );
        let pid = c.pid();
        let report = Report::new(format!("/proc/{pid}/root/tmp/clock.log"));
        let first = report.next("parent", None).await;
        let s = first.skew();
        assert_near("before any fault", &s, &Skew::expected(0.0, 0), TOL);
        Target {
            c,
            pid,
            report,
            pod_container: format!("pod-{name}:app"),
        }
    }

    /// A SetTimeOffset request as the controller sends it.
    fn set(&self, uid: &str, sec: i64, nsec: i64, mask: u64) -> pb::TimeRequest {
        pb::TimeRequest {
            container_id: self.c.id(),
            sec,
            nsec,
            clk_ids_mask: mask,
            uid: uid.into(),
            pod_container_name: self.pod_container.clone(),
        }
    }

    /// A RecoverTimeOffset request as the controller sends it (no offset, no mask).
    fn recover(&self, uid: &str) -> pb::TimeRequest {
        self.set(uid, 0, 0, 0)
    }

    /// Skew of the parent's next line.
    async fn skew(&self) -> Skew {
        self.report.skew("parent", None).await
    }

    /// SIGUSR1: the parent forks a reporting child; its in-namespace pid once it reported.
    async fn fork_child(&self) -> u32 {
        let before = self.report.children();
        // SAFETY: kill(2) of the container's init by its host pid.
        assert_eq!(unsafe { libc::kill(self.pid as i32, libc::SIGUSR1) }, 0);
        let t0 = Instant::now();
        loop {
            if let Some(p) = self
                .report
                .children()
                .into_iter()
                .find(|p| !before.contains(p))
            {
                return p;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no child reported");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Host pids of every process of the container: its pid namespace when it has its own
    /// (init is pid 1 there), else init and its children.
    fn host_pids(&self) -> Vec<u32> {
        let ns = |p: u32| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
        let nspid = common::host::nspid(self.pid);
        if nspid.len() > 1 && nspid.last() == Some(&1) {
            let own = ns(self.pid);
            return faultd::process::pids()
                .into_iter()
                .filter(|&p| own.is_some() && ns(p) == own)
                .collect();
        }
        let mut v = vec![self.pid];
        v.extend(children_of(self.pid));
        v
    }

    /// Every process of the container has a pristine `[vdso]` again.
    fn assert_pristine(&self, what: &str) {
        for p in self.host_pids() {
            assert!(
                vdso_pristine(p),
                "{what}: process {p} of the container still has a modified [vdso] (patched: {})",
                vdso_patched(p)
            );
        }
    }

    /// Still running with the same init.
    fn assert_running(&self) {
        assert!(self.c.running(), "the target container stopped");
        assert_eq!(self.c.pid(), self.pid, "the target's init changed");
    }
}

/// The one fault of `faults`, which must be the only one.
fn only(faults: &[api::Fault]) -> &api::Fault {
    assert_eq!(faults.len(), 1, "{faults:#?}");
    &faults[0]
}

fn phase(f: &api::Fault) -> api::Phase {
    api::Phase::try_from(f.phase).unwrap_or(api::Phase::Unspecified)
}

#[tokio::test]
#[ignore = "host tier: root and the test containerd; run by tests/run-all.sh"]
async fn realtime_monotonic_and_negative_offsets_set_and_recover() {
    let t = Target::start("time-a").await;
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    let stops0 = d.stops().await;

    // (a) +3600 s on CLOCK_REALTIME: realtime, gettimeofday and time move; monotonic does not.
    let t0 = Instant::now();
    d.client
        .set_time_offset(t.set("chaos-a", 3600, 0, REALTIME))
        .await
        .unwrap();
    let took = t0.elapsed();
    let s = t.skew().await;
    eprintln!("+3600 s REALTIME: {s} (SetTimeOffset took {took:?})");
    assert_near(
        "+3600 s REALTIME",
        &s,
        &Skew::expected(3600.0, REALTIME),
        TOL,
    );
    assert!(vdso_patched(t.pid));
    let f = only(&d.time_faults(false).await).clone();
    eprintln!("listed: {} {:?} {}", f.id, phase(&f), f.summary);
    assert_eq!(phase(&f), api::Phase::Applied, "{f:?}");
    let stops1 = d.stops().await;
    assert!(
        stops1 > stops0,
        "faultd_time_stop_seconds: no observation for the apply ({stops0} -> {stops1})"
    );

    let t0 = Instant::now();
    d.client
        .recover_time_offset(t.recover("chaos-a"))
        .await
        .unwrap();
    let took = t0.elapsed();
    let s = t.skew().await;
    eprintln!("recovered: {s} (RecoverTimeOffset took {took:?})");
    assert_near("after recover", &s, &Skew::expected(0.0, 0), TOL);
    t.assert_pristine("after recover");
    assert!(d.time_faults(false).await.is_empty());
    let ended = d.time_faults(true).await;
    let f = only(&ended);
    assert_eq!(
        (phase(f), f.end_reason.as_str()),
        (api::Phase::Reverted, "request"),
        "{f:?}"
    );
    let stops2 = d.stops().await;
    assert!(
        stops2 > stops1,
        "faultd_time_stop_seconds: no observation for the rollback ({stops1} -> {stops2})"
    );
    eprintln!(
        "faultd_time_stop_seconds_count: {stops0} -> {stops1} (apply) -> {stops2} (rollback)"
    );

    // (b) +600 s on CLOCK_MONOTONIC only: realtime, gettimeofday and time stay.
    d.client
        .set_time_offset(t.set("chaos-b", 600, 0, MONOTONIC))
        .await
        .unwrap();
    let s = t.skew().await;
    eprintln!("+600 s MONOTONIC: {s}");
    assert_near(
        "+600 s MONOTONIC",
        &s,
        &Skew::expected(600.0, MONOTONIC),
        TOL,
    );
    d.client
        .recover_time_offset(t.recover("chaos-b"))
        .await
        .unwrap();
    let s = t.skew().await;
    eprintln!("recovered: {s}");
    assert_near("after recover", &s, &Skew::expected(0.0, 0), TOL);
    t.assert_pristine("after the MONOTONIC recover");

    // (f) "-10m100ns" as the controller sends it: sec=-600, nsec=-100.
    d.client
        .set_time_offset(t.set("chaos-f", -600, -100, REALTIME))
        .await
        .unwrap();
    let s = t.skew().await;
    eprintln!("-600 s -100 ns REALTIME: {s}");
    assert_near("-10m100ns", &s, &Skew::expected(-600.0, REALTIME), TOL);
    d.client
        .recover_time_offset(t.recover("chaos-f"))
        .await
        .unwrap();
    // nsec carries: +1 s - 0.5 s = +0.5 s (checked to 0.1 s).
    d.client
        .set_time_offset(t.set("chaos-g", 1, -500_000_000, REALTIME | MONOTONIC))
        .await
        .unwrap();
    let (s, _) = t
        .report
        .until(
            "parent",
            None,
            &Skew::expected(0.5, REALTIME | MONOTONIC),
            0.1,
            Duration::from_secs(3),
        )
        .await;
    eprintln!("+1 s -500000000 ns REALTIME|MONOTONIC: {s}");
    d.client
        .recover_time_offset(t.recover("chaos-g"))
        .await
        .unwrap();
    assert_near(
        "after recover",
        &t.skew().await,
        &Skew::expected(0.0, 0),
        TOL,
    );
    t.assert_pristine("at the end");
    t.assert_running();
    let ended = d.time_faults(true).await;
    assert_eq!(ended.len(), 4, "{ended:#?}");
    assert!(ended.iter().all(|f| phase(f) == api::Phase::Reverted));
    d.proc.shutdown().await;
}

#[tokio::test]
#[ignore = "host tier: root and the test containerd; run by tests/run-all.sh"]
async fn children_forked_before_and_after_injection_are_skewed_and_restored() {
    let t = Target::start("time-c").await;
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    let early = t.fork_child().await;
    let want = Skew::expected(3600.0, REALTIME);

    d.client
        .set_time_offset(t.set("chaos-c", 3600, 0, REALTIME))
        .await
        .unwrap();
    let s = t.skew().await;
    let se = t.report.skew("child", Some(early)).await;
    eprintln!("parent: {s}\nchild forked before: {se}");
    assert_near("parent", &s, &want, TOL);
    assert_near("child forked before the injection", &se, &want, TOL);

    // (c) forked after the injection: it inherits the patched vDSO.
    let late = t.fork_child().await;
    let sl = t.report.skew("child", Some(late)).await;
    eprintln!("child forked after: {sl}");
    assert_near("child forked after the injection", &sl, &want, TOL);
    let procs = t.host_pids();
    assert_eq!(procs.len(), 3, "init and two children: {procs:?}");
    assert!(procs.iter().all(|&p| vdso_patched(p)), "{procs:?}");
    // A process exec'd into the container after the injection (`ctr task exec`, as kubectl
    // exec): a fresh vDSO. Its skew is printed; the recover must cope with it.
    let out = common::ctr::ctr(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "clk-exec",
        &t.c.name,
        "/bin/clockreport",
        "-o",
        "/tmp/exec.log",
    ]);
    assert!(
        out.status.success(),
        "ctr task exec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exec = Report::new(format!("/proc/{}/root/tmp/exec.log", t.pid));
    let sx = exec.skew("parent", None).await;
    eprintln!("process exec'd after the injection: {sx}");
    assert_eq!(t.host_pids().len(), 4, "{:?}", t.host_pids());

    let before = d.stops().await;
    d.client
        .recover_time_offset(t.recover("chaos-c"))
        .await
        .unwrap();
    let zero = Skew::expected(0.0, 0);
    for (who, pid) in [
        ("parent", None),
        ("child", Some(early)),
        ("child", Some(late)),
    ] {
        let s = t.report.skew(who, pid).await;
        eprintln!("recovered {who} {pid:?}: {s}");
        assert_near(&format!("{who} {pid:?} after recover"), &s, &zero, TOL);
    }
    let sx = exec.skew("parent", None).await;
    eprintln!("recovered: the exec'd process {sx}");
    assert_near("the exec'd process after recover", &sx, &zero, TOL);
    t.assert_pristine("after recover");
    let after = d.stops().await;
    eprintln!(
        "faultd_time_stop_seconds_count over the rollback of 3 processes: {before} -> {after}"
    );
    assert!(
        after >= before + 3,
        "one stop per process of the rollback: {before} -> {after}"
    );
    t.assert_running();
    d.proc.shutdown().await;
}

#[tokio::test]
#[ignore = "host tier: root and the test containerd; run by tests/run-all.sh"]
async fn kill_9_while_set_is_rolled_back_by_the_next_daemon_and_sigterm_rolls_back() {
    let t = Target::start("time-d").await;
    let state = tempfile::tempdir().unwrap();
    let want = Skew::expected(3600.0, REALTIME);

    // (d) kill -9 while set: the next daemon restores every process before it serves.
    {
        let mut d = Daemon::start(state.path()).await;
        d.client
            .set_time_offset(t.set("chaos-d", 3600, 0, REALTIME))
            .await
            .unwrap();
        let child = t.fork_child().await;
        assert_near("before kill -9", &t.skew().await, &want, TOL);
        assert_near(
            "child before kill -9",
            &t.report.skew("child", Some(child)).await,
            &want,
            TOL,
        );
        d.proc.kill9();
        // Nobody restores it meanwhile; a child forked while faultd is dead inherits the
        // patch and must be restored by the next daemon too.
        assert_near("faultd dead", &t.skew().await, &want, TOL);
        let orphan = t.fork_child().await;
        assert_near(
            "child forked while faultd is dead",
            &t.report.skew("child", Some(orphan)).await,
            &want,
            TOL,
        );
        assert_eq!(t.host_pids().len(), 3);
        assert!(t.host_pids().iter().all(|&p| vdso_patched(p)));
    }
    let t0 = Instant::now();
    let mut d = Daemon::start(state.path()).await;
    let ready = t0.elapsed();
    // Reconciled before the admin socket answered: the bytes are back already.
    t.assert_pristine("when the restarted daemon serves");
    let s = t.skew().await;
    eprintln!("after kill -9 and restart (ready in {ready:?}): {s}");
    assert_near("after restart", &s, &Skew::expected(0.0, 0), TOL);
    for c in t.report.children() {
        assert_near(
            "child after restart",
            &t.report.skew("child", Some(c)).await,
            &Skew::expected(0.0, 0),
            TOL,
        );
    }
    t.assert_running();
    assert!(d.time_faults(false).await.is_empty());
    let ended = d.time_faults(true).await;
    let f = only(&ended);
    assert_eq!(
        (phase(f), f.end_reason.as_str()),
        (api::Phase::Reverted, "restart"),
        "{f:?}"
    );

    // A recover for the fault the dead daemon applied: nothing left to do, OK.
    d.client
        .recover_time_offset(t.recover("chaos-d"))
        .await
        .unwrap();

    // SIGTERM rolls back on the way out.
    d.client
        .set_time_offset(t.set("chaos-d2", 3600, 0, REALTIME))
        .await
        .unwrap();
    assert_near("set again", &t.skew().await, &want, TOL);
    d.proc.shutdown().await;
    assert!(
        d.proc.child.try_wait().unwrap().is_some(),
        "faultd did not exit on SIGTERM"
    );
    let s = t.skew().await;
    eprintln!("after SIGTERM: {s}");
    assert_near("after SIGTERM", &s, &Skew::expected(0.0, 0), TOL);
    t.assert_pristine("after SIGTERM");
    t.assert_running();
}

#[tokio::test]
#[ignore = "host tier: root and the test containerd; run by tests/run-all.sh"]
async fn two_time_chaos_on_one_container_merge_and_recover_one_at_a_time() {
    let t = Target::start("time-e").await;
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    let (a, b) = ("chaos-a-uid/pod-uid", "chaos-b-uid/pod-uid");

    // (e) +3600 s (A) and +60 s (B): offsets summed.
    d.client
        .set_time_offset(t.set(a, 3600, 0, REALTIME))
        .await
        .unwrap();
    d.client
        .set_time_offset(t.set(b, 60, 0, REALTIME))
        .await
        .unwrap();
    let s = t.skew().await;
    eprintln!("A (+3600) + B (+60): {s}");
    assert_near("A + B", &s, &Skew::expected(3660.0, REALTIME), TOL);
    let active = d.time_faults(false).await;
    assert!(!active.is_empty());
    assert!(
        active.iter().all(|f| phase(f) == api::Phase::Applied),
        "{active:#?}"
    );
    // Setting A again (the controller retries) does not add it twice.
    d.client
        .set_time_offset(t.set(a, 3600, 0, REALTIME))
        .await
        .unwrap();
    assert_near(
        "A again",
        &t.skew().await,
        &Skew::expected(3660.0, REALTIME),
        TOL,
    );

    // Recover A: B alone is re-applied.
    d.client.recover_time_offset(t.recover(a)).await.unwrap();
    let s = t.skew().await;
    eprintln!("B alone: {s}");
    assert_near("B alone", &s, &Skew::expected(60.0, REALTIME), TOL);
    assert!(!d.time_faults(false).await.is_empty());

    // A recover of an unknown uid is OK and changes nothing.
    d.client
        .recover_time_offset(t.recover("no-such-chaos"))
        .await
        .unwrap();
    assert_near(
        "after an unknown recover",
        &t.skew().await,
        &Skew::expected(60.0, REALTIME),
        TOL,
    );

    d.client.recover_time_offset(t.recover(b)).await.unwrap();
    let s = t.skew().await;
    eprintln!("none: {s}");
    assert_near("none", &s, &Skew::expected(0.0, 0), TOL);
    t.assert_pristine("after both recovers");
    assert!(d.time_faults(false).await.is_empty());

    // Masks are OR-ed: A on REALTIME and B on MONOTONIC give +3660 s on both; recover A
    // leaves B's +60 s on MONOTONIC only; HaltAll ends the rest.
    d.client
        .set_time_offset(t.set(a, 3600, 0, REALTIME))
        .await
        .unwrap();
    d.client
        .set_time_offset(t.set(b, 60, 0, MONOTONIC))
        .await
        .unwrap();
    let s = t.skew().await;
    eprintln!("A (+3600 REALTIME) + B (+60 MONOTONIC): {s}");
    assert_near(
        "A + B, masks OR-ed",
        &s,
        &Skew::expected(3660.0, REALTIME | MONOTONIC),
        TOL,
    );
    d.client.recover_time_offset(t.recover(a)).await.unwrap();
    let s = t.skew().await;
    eprintln!("B alone (MONOTONIC): {s}");
    assert_near("B alone", &s, &Skew::expected(60.0, MONOTONIC), TOL);
    let halted = common::host::faults(&d.admin)
        .halt_all(api::HaltAllRequest {
            reason: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(halted.failed, 0, "{halted:?}");
    assert!(halted.rolled_back >= 1, "{halted:?}");
    let s = t.skew().await;
    eprintln!("after HaltAll: {s}");
    assert_near("after HaltAll", &s, &Skew::expected(0.0, 0), TOL);
    t.assert_pristine("after HaltAll");
    assert!(d.time_faults(false).await.is_empty());
    t.assert_running();
    d.proc.shutdown().await;
}

#[tokio::test]
#[ignore = "host tier: root and the test containerd; run by tests/run-all.sh"]
async fn bad_input_is_refused_and_changes_nothing() {
    let t = Target::start("time-g").await;
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;

    // (g) no container id; a container that does not exist.
    let mut req = t.set("chaos-g", 3600, 0, REALTIME);
    req.container_id.clear();
    let e = d.client.set_time_offset(req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let mut req = t.set("chaos-g", 3600, 0, REALTIME);
    req.container_id = "containerd://no-such-container".into();
    let e = d.client.set_time_offset(req).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(d.time_faults(false).await.is_empty());
    assert_near(
        "after refused requests",
        &t.skew().await,
        &Skew::expected(0.0, 0),
        TOL,
    );
    t.assert_pristine("after refused requests");
    t.assert_running();
    d.proc.shutdown().await;
}

#[tokio::test]
#[ignore = "host tier: root and the test containerd; run by tests/run-all.sh"]
async fn apply_fault_with_a_ttl_expires_and_ctl_time_is_revoked() {
    let t = Target::start("time-h").await;
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    let mut c = common::host::faults(&d.admin);

    // (h) faultd.v1 ApplyFault with the Chaos Mesh body and a 2 s TTL.
    let t0 = Instant::now();
    let f = c
        .apply_fault(api::ApplyFaultRequest {
            ttl_seconds: 2,
            lease_id: String::new(),
            target_pid: 0,
            fault: Some(api::apply_fault_request::Fault::SetTimeOffset(
                t.set("chaos-h", 3600, 0, REALTIME),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((f.kind.as_str(), phase(&f)), ("time", api::Phase::Applied));
    assert!(f.deadline_unix_ms > 0, "{f:?}");
    let s = t.skew().await;
    eprintln!("ApplyFault +3600 s, ttl 2 s: {s}");
    assert_near("ttl fault", &s, &Skew::expected(3600.0, REALTIME), TOL);
    let (s, waited) = t
        .report
        .until(
            "parent",
            None,
            &Skew::expected(0.0, 0),
            TOL,
            Duration::from_secs(10),
        )
        .await;
    let after = t0.elapsed();
    eprintln!("expired {after:?} after the apply: {s}");
    assert!(
        after >= Duration::from_millis(1900),
        "rolled back before the TTL: {after:?} (waited {waited:?})"
    );
    t.assert_pristine("after expiry");
    let ended = settled(&d.admin, "time", Duration::from_secs(10)).await;
    let f = only(&ended);
    assert_eq!(
        (phase(f), f.end_reason.as_str()),
        (api::Phase::Reverted, "expiry"),
        "{f:?}"
    );

    // `faultd ctl time --container`: MONOTONIC +1h, then RevokeFault by its id.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faultd"))
        .arg("ctl")
        .arg("--socket")
        .arg(&d.proc.socket)
        .args(["--output", "json", "time", "--container", &t.c.id()])
        .args(["--offset", "1h", "--clocks", "MONOTONIC", "--ttl", "60s"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ctl time: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = t.skew().await;
    eprintln!("ctl time --offset 1h --clocks MONOTONIC: {s}");
    assert_near("ctl time", &s, &Skew::expected(3600.0, MONOTONIC), TOL);
    let active = d.time_faults(false).await;
    let id = only(&active).id.clone();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&id),
        "ctl's output names the fault {id}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let ended = c
        .revoke_fault(api::RevokeFaultRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(phase(&ended), api::Phase::Reverted, "{ended:?}");
    let s = t.skew().await;
    eprintln!("revoked: {s}");
    assert_near("after RevokeFault", &s, &Skew::expected(0.0, 0), TOL);
    t.assert_pristine("after RevokeFault");
    t.assert_running();
    d.proc.shutdown().await;
}

#[tokio::test]
#[ignore = "host tier: root and the test containerd; run by tests/run-all.sh"]
async fn containers_without_their_own_pid_namespace_are_covered_by_their_cgroup_only() {
    // A pod with shareProcessNamespace: a pause container holds the pid namespace, two app
    // containers join it. TimeChaos on one app container shifts it (and its later child) only.
    let pause = Container::run_argv(&unique("time-pause"), &[], &["sleep", "3600"]);
    let shared = format!("pid:/proc/{}/ns/pid", pause.pid());
    let app = Target::start_with("time-app", &["--with-ns", &shared]).await;
    let other = Target::start_with("time-other", &["--with-ns", &shared]).await;
    // A hostPID container: in the host's pid namespace (this test's), like faultd.
    let own_ns = format!("pid:/proc/{}/ns/pid", std::process::id());
    let host_pid = Target::start_with("time-hostpid", &["--with-ns", &own_ns]).await;
    // And a plain host process: must never be touched.
    let dir = tempfile::tempdir().unwrap();
    let mut bystander = std::process::Command::new(common::clock::binary(dir.path()))
        .arg("-o")
        .arg(dir.path().join("clock.log"))
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let by = Report::new(dir.path().join("clock.log"));
    by.next("parent", None).await;

    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    let want = Skew::expected(3600.0, REALTIME);
    let zero = Skew::expected(0.0, 0);

    d.client
        .set_time_offset(app.set("chaos-app", 3600, 0, REALTIME))
        .await
        .unwrap();
    let child = app.fork_child().await;
    let (s, sc, so) = (
        app.skew().await,
        app.report.skew("child", Some(child)).await,
        other.skew().await,
    );
    eprintln!("shared pid ns: app {s}\n  app's child forked after {sc}\n  other container {so}");
    assert_near("app", &s, &want, TOL);
    assert_near("app's child", &sc, &want, TOL);
    assert_near("the other container of the pod", &so, &zero, TOL);
    assert!(vdso_pristine(pause.pid()), "the pause process was patched");
    assert!(vdso_pristine(other.pid), "the other container was patched");

    d.client
        .set_time_offset(host_pid.set("chaos-hostpid", 600, 0, MONOTONIC))
        .await
        .unwrap();
    let (s, sb) = (host_pid.skew().await, by.skew("parent", None).await);
    eprintln!("hostPID container: {s}\n  host process beside it: {sb}");
    assert_near(
        "hostPID container",
        &s,
        &Skew::expected(600.0, MONOTONIC),
        TOL,
    );
    assert_near("a host process", &sb, &zero, TOL);
    assert!(vdso_pristine(bystander.id()), "a host process was patched");
    assert!(
        vdso_pristine(std::process::id()),
        "the test itself was patched"
    );

    d.client
        .recover_time_offset(app.recover("chaos-app"))
        .await
        .unwrap();
    d.client
        .recover_time_offset(host_pid.recover("chaos-hostpid"))
        .await
        .unwrap();
    for (what, t) in [("app", &app), ("hostPID", &host_pid), ("other", &other)] {
        let s = t.skew().await;
        eprintln!("recovered {what}: {s}");
        assert_near(what, &s, &zero, TOL);
        t.assert_pristine(what);
        t.assert_running();
    }
    assert_near(
        "app's child",
        &app.report.skew("child", Some(child)).await,
        &zero,
        TOL,
    );
    assert!(d.time_faults(false).await.is_empty());
    let _ = bystander.kill();
    let _ = bystander.wait();
    d.proc.shutdown().await;
    // The app containers go before the pause container that holds their namespace.
    drop((app, other, host_pid));
    drop(pause);
}

#[tokio::test]
#[ignore = "host tier: root and the test containerd; run by tests/run-all.sh"]
async fn a_skew_whose_journal_is_lost_is_found_by_the_doctor_and_taken_over_by_a_new_fault() {
    let t = Target::start("time-lost").await;
    let want = Skew::expected(3600.0, REALTIME);
    let zero = Skew::expected(0.0, 0);
    let here = format!("pid {}", t.pid);
    let fake_clocks = |r: &api::DoctorReport| -> Vec<api::Residue> {
        r.residue
            .iter()
            .filter(|x| x.kind == "fake clock" && x.location == here)
            .cloned()
            .collect()
    };

    // kill -9 while set, and the state dir is lost: a daemon with a fresh one knows nothing.
    let lost = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(lost.path()).await;
    d.client
        .set_time_offset(t.set("chaos-lost", 3600, 0, REALTIME))
        .await
        .unwrap();
    d.proc.kill9();
    drop(lost);
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    assert_near("journal lost", &t.skew().await, &want, TOL);
    let mut doctor = api::doctor_client::DoctorClient::new(d.admin.clone());
    let report = doctor
        .check(api::DoctorRequest { fix: false })
        .await
        .unwrap()
        .into_inner();
    let found = fake_clocks(&report);
    eprintln!("doctor: {found:?}");
    assert_eq!(found.len(), 1, "{:#?}", report.residue);
    assert!(!found[0].removed);
    assert_near("doctor without --fix", &t.skew().await, &want, TOL);
    let report = doctor
        .check(api::DoctorRequest { fix: true })
        .await
        .unwrap()
        .into_inner();
    let fixed = fake_clocks(&report);
    assert!(
        fixed.len() == 1 && fixed[0].removed,
        "{:#?}",
        report.residue
    );
    let s = t.skew().await;
    eprintln!("after doctor --fix: {s}");
    assert_near("after doctor --fix", &s, &zero, TOL);
    t.assert_pristine("after doctor --fix");

    // Lost again; then a new TimeChaos on the container takes the patched entries over: its
    // own offset only (nothing of the stale one), and its recover restores everything.
    d.client
        .set_time_offset(t.set("chaos-lost", 3600, 0, REALTIME))
        .await
        .unwrap();
    d.proc.kill9();
    drop(state);
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    assert_near("journal lost again", &t.skew().await, &want, TOL);
    d.client
        .set_time_offset(t.set("chaos-new", 60, 0, REALTIME))
        .await
        .unwrap();
    let s = t.skew().await;
    eprintln!("a new fault over the stale patch: {s}");
    assert_near(
        "a new fault over the stale patch",
        &s,
        &Skew::expected(60.0, REALTIME),
        TOL,
    );
    d.client
        .recover_time_offset(t.recover("chaos-new"))
        .await
        .unwrap();
    let s = t.skew().await;
    eprintln!("recovered: {s}");
    assert_near("recovered", &s, &zero, TOL);
    t.assert_pristine("after the new fault's recover");
    t.assert_running();
    d.proc.shutdown().await;
}

#[tokio::test]
#[ignore = "host tier: root and the test containerd; run by tests/run-all.sh"]
async fn a_target_that_is_gone_does_not_block_the_recover() {
    let t = Target::start("time-gone").await;
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    d.client
        .set_time_offset(t.set("chaos-gone", 3600, 0, REALTIME))
        .await
        .unwrap();
    assert_near(
        "set",
        &t.skew().await,
        &Skew::expected(3600.0, REALTIME),
        TOL,
    );
    t.c.remove();
    d.client
        .recover_time_offset(t.recover("chaos-gone"))
        .await
        .unwrap();
    assert!(d.time_faults(false).await.is_empty());
    let ended = d.time_faults(true).await;
    let f = only(&ended);
    eprintln!("ended: {:?} {} {}", phase(f), f.end_reason, f.last_error);
    assert_eq!(phase(f), api::Phase::Reverted, "{f:?}");
    assert!(
        ["target_gone", "request"].contains(&f.end_reason.as_str()),
        "{f:?}"
    );
    d.proc.shutdown().await;
}

#[tokio::test]
#[ignore = "host tier: root and the test containerd; run by tests/run-all.sh"]
async fn concurrent_sets_and_recovers_on_one_container_merge_consistently() {
    let t = Target::start("time-race").await;
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    for round in 0..5 {
        let (mut ca, mut cb) = (d.client.clone(), d.client.clone());
        let (ra, rb) = tokio::join!(
            ca.set_time_offset(t.set("race-a", 3600, 0, REALTIME)),
            cb.set_time_offset(t.set("race-b", 60, 0, REALTIME)),
        );
        ra.unwrap();
        rb.unwrap();
        let s = t.skew().await;
        assert_near(
            &format!("round {round}: A + B set at once"),
            &s,
            &Skew::expected(3660.0, REALTIME),
            TOL,
        );
        let (ra, rb) = tokio::join!(
            ca.recover_time_offset(t.recover("race-a")),
            cb.recover_time_offset(t.recover("race-b")),
        );
        ra.unwrap();
        rb.unwrap();
        let z = t.skew().await;
        eprintln!("round {round}: both set {s}; both recovered {z}");
        assert_near(
            &format!("round {round}: both recovered at once"),
            &z,
            &Skew::expected(0.0, 0),
            TOL,
        );
        t.assert_pristine(&format!("round {round}"));
        assert!(d.time_faults(false).await.is_empty());
    }
    t.assert_running();
    d.proc.shutdown().await;
}

#[tokio::test]
#[ignore = "host tier: root and the test containerd; run by tests/run-all.sh"]
async fn an_offset_beyond_what_the_clock_can_hold_is_refused() {
    let t = Target::start("time-big").await;
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    // Chaos Mesh's timeOffset is a Go duration: |offset| < 2^63 ns (292 years); the largest
    // ones work.
    for sec in [9_000_000_000i64, -1_700_000_000] {
        d.client
            .set_time_offset(t.set("chaos-big", sec, 0, REALTIME))
            .await
            .unwrap();
        let s = t.skew().await;
        eprintln!("sec={sec}: {s}");
        assert_near(
            &format!("sec={sec}"),
            &s,
            &Skew::expected(sec as f64, REALTIME),
            TOL,
        );
        d.client
            .recover_time_offset(t.recover("chaos-big"))
            .await
            .unwrap();
    }
    // Far beyond that, now + offset overflows the 64-bit seconds of a timespec: refused.
    for sec in [i64::MAX, i64::MIN, i64::MAX / 2] {
        let r = d
            .client
            .set_time_offset(t.set("chaos-big", sec, 0, REALTIME))
            .await;
        if r.is_ok() {
            let s = t.skew().await;
            let raw = t.report.next("parent", None).await;
            eprintln!(
                "sec={sec} accepted: the target sees {s} (clock_gettime tv_sec {}, time() {})",
                raw.realtime_ns.div_euclid(1_000_000_000),
                raw.time_ns / 1_000_000_000
            );
            d.client
                .recover_time_offset(t.recover("chaos-big"))
                .await
                .unwrap();
        }
        let e = r.expect_err(&format!("sec={sec} was accepted"));
        assert_eq!(e.code(), Code::InvalidArgument, "sec={sec}: {e:?}");
    }
    assert_near("after", &t.skew().await, &Skew::expected(0.0, 0), TOL);
    t.assert_pristine("after");
    d.proc.shutdown().await;
}

#[tokio::test]
#[ignore = "host tier: root and the test containerd; run by tests/run-all.sh"]
async fn a_target_gone_while_faultd_was_dead_does_not_stop_the_restart() {
    let t = Target::start("time-gone9").await;
    let state = tempfile::tempdir().unwrap();
    {
        let mut d = Daemon::start(state.path()).await;
        d.client
            .set_time_offset(t.set("chaos-gone9", 3600, 0, REALTIME))
            .await
            .unwrap();
        d.proc.kill9();
    }
    t.c.remove();
    let mut d = Daemon::start(state.path()).await;
    assert!(d.time_faults(false).await.is_empty());
    let ended = d.time_faults(true).await;
    let f = only(&ended);
    eprintln!("ended: {:?} {} {}", phase(f), f.end_reason, f.last_error);
    assert!(
        ["target_gone", "restart"].contains(&f.end_reason.as_str()),
        "{f:?}"
    );
    assert_ne!(phase(f), api::Phase::Applied, "{f:?}");
    // The controller's recover for it is still OK.
    d.client
        .recover_time_offset(t.recover("chaos-gone9"))
        .await
        .unwrap();
    d.proc.shutdown().await;
}
