//! VM tier (run by `tests/run-all.sh` inside the qemu guest, stock Debian 6.1 kernel: another
//! vDSO layout than the host's): TimeChaos on a plain process, with no container runtime
//! involved. `faultd.v1` `ApplyFault` with `set_time_offset` and `target_pid` (scope: that
//! process and its descendants) against clockreport (`tests/env/ctr/clockreport.c`, the static
//! binary `tests/env/setup.sh` leaves in `tests/env/cache/`, compiled on the spot if missing)
//! run as a child of this test with two extra threads, reporting to a file. `faultd ctl time`
//! with a TTL too. And once through the Chaos Mesh API on a container of the guest's containerd
//! (cgroup v2; skipped with a note when the suite runs without containerd). Every test is
//! `#[ignore]`d and refuses to run outside the VM. By hand:
//!
//! ```text
//! cargo test --no-run --test vm_time
//! tests/env/vm/run-vm.sh -- target/debug/deps/vm_time-<hash> --ignored --test-threads=1
//! ```
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::clock::{
    assert_near, binary, children_of, own_vdso, vdso_patched, vdso_pristine, Report, Skew,
};
use common::ctr::{unique, Container};
use common::host::{faults, list, settled, DaemonProc};
use faultd::proto::faultd::v1 as api;
use faultd::proto::pb;
use faultd::proto::pb::chaos_daemon_client::ChaosDaemonClient;

const REALTIME: u64 = 1 << libc::CLOCK_REALTIME;
const MONOTONIC: u64 = 1 << libc::CLOCK_MONOTONIC;
const TOL: f64 = 1.0;

fn require_vm() {
    assert_eq!(
        std::env::var("FAULTD_TEST_VM").as_deref(),
        Ok("1"),
        "VM-only test: run it through tests/run-all.sh or tests/env/vm/run-vm.sh"
    );
}

/// clockreport as a child process (3 threads), killed on drop.
struct Target {
    child: Child,
    report: Report,
    _dir: tempfile::TempDir,
}

impl Target {
    async fn start() -> Target {
        let dir = tempfile::tempdir().unwrap();
        let exe = binary(dir.path());
        let log = dir.path().join("clock.log");
        let child = Command::new(&exe)
            .arg("-o")
            .arg(&log)
            .args(["-t", "2"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let report = Report::new(&log);
        let s = report.next("parent", None).await.skew();
        assert_near("before any fault", &s, &Skew::expected(0.0, 0), TOL);
        Target {
            child,
            report,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn skew(&self) -> Skew {
        self.report.skew("parent", None).await
    }

    /// SIGUSR1: a reporting child; its pid once it reported.
    async fn fork_child(&self) -> u32 {
        let before = self.report.children();
        // SAFETY: kill(2) of our own child.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, libc::SIGUSR1) }, 0);
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
            assert!(t0.elapsed() < Duration::from_secs(30), "no child reported");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn assert_pristine(&self, what: &str) {
        let mut all = vec![self.pid()];
        all.extend(children_of(self.pid()));
        for p in all {
            assert!(
                vdso_pristine(p),
                "{what}: process {p} still has a modified [vdso] (patched: {})",
                vdso_patched(p)
            );
        }
    }

    fn assert_running(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "clockreport exited"
        );
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn time_fault(pid: u32, sec: i64, nsec: i64, mask: u64, ttl: u64) -> api::ApplyFaultRequest {
    api::ApplyFaultRequest {
        ttl_seconds: ttl,
        lease_id: String::new(),
        target_pid: pid,
        fault: Some(api::apply_fault_request::Fault::SetTimeOffset(
            pb::TimeRequest {
                container_id: String::new(),
                sec,
                nsec,
                clk_ids_mask: mask,
                uid: "vm-time".into(),
                pod_container_name: String::new(),
            },
        )),
    }
}

/// The vDSO symbols faultd patches, with their sizes in this kernel.
fn vdso_layout() -> String {
    let own = own_vdso();
    let image = faultd::vdso::VdsoImage::parse(&own).unwrap();
    faultd::vdso::FakeFn::ALL
        .into_iter()
        .map(|f| {
            let name = f.vdso_symbol();
            match image.symbol(name) {
                Some(s) => format!("{name} {:#x}/{} B", s.offset, s.size),
                None => format!("{name} missing"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test]
#[ignore = "VM tier: run by tests/run-all.sh inside the test VM"]
async fn apply_fault_on_a_pid_shifts_realtime_of_it_and_its_children_and_revoke_restores() {
    require_vm();
    eprintln!(
        "kernel {}, vDSO {} bytes: {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        own_vdso().len(),
        vdso_layout()
    );
    let mut t = Target::start().await;
    let state = tempfile::tempdir().unwrap();
    let mut d = DaemonProc::spawn(state.path(), &[]);
    let admin = d.ready().await;
    let mut c = faults(&admin);
    let early = t.fork_child().await;
    let want = Skew::expected(3600.0, REALTIME);

    let t0 = Instant::now();
    let f = c
        .apply_fault(time_fault(t.pid(), 3600, 0, REALTIME, 600))
        .await
        .expect("ApplyFault set_time_offset")
        .into_inner();
    let took = t0.elapsed();
    assert_eq!(f.kind, "time", "{f:?}");
    assert_eq!(f.phase, api::Phase::Applied as i32, "{f:?}");
    let s = t.skew().await;
    eprintln!("+3600 s REALTIME (ApplyFault took {took:?}): parent {s}");
    assert_near("parent", &s, &want, TOL);
    let se = t.report.skew("child", Some(early)).await;
    eprintln!("child forked before: {se}");
    assert_near("child forked before", &se, &want, TOL);
    let late = t.fork_child().await;
    let sl = t.report.skew("child", Some(late)).await;
    eprintln!("child forked after: {sl}");
    assert_near("child forked after", &sl, &want, TOL);
    let listed = list(&admin, false).await;
    assert!(
        listed
            .iter()
            .any(|x| x.id == f.id && x.kind == "time" && x.phase == api::Phase::Applied as i32),
        "{listed:#?}"
    );

    let t0 = Instant::now();
    let ended = c
        .revoke_fault(api::RevokeFaultRequest { id: f.id.clone() })
        .await
        .expect("RevokeFault")
        .into_inner();
    let took = t0.elapsed();
    assert_eq!(ended.phase, api::Phase::Reverted as i32, "{ended:?}");
    let zero = Skew::expected(0.0, 0);
    for (who, pid) in [
        ("parent", None),
        ("child", Some(early)),
        ("child", Some(late)),
    ] {
        let s = t.report.skew(who, pid).await;
        eprintln!("revoked (RevokeFault took {took:?}): {who} {pid:?} {s}");
        assert_near(&format!("{who} {pid:?} after revoke"), &s, &zero, TOL);
    }
    t.assert_pristine("after revoke");
    t.assert_running();
    assert!(list(&admin, false).await.iter().all(|x| x.kind != "time"));
    d.shutdown().await;
}

#[tokio::test]
#[ignore = "VM tier: run by tests/run-all.sh inside the test VM"]
async fn ctl_time_on_a_pid_with_a_ttl_expires_and_kill_9_is_reconciled() {
    require_vm();
    let mut t = Target::start().await;
    let state = tempfile::tempdir().unwrap();
    let mut d = DaemonProc::spawn(state.path(), &[]);
    let admin = d.ready().await;

    // `faultd ctl time`: -10m100ns on REALTIME and MONOTONIC for 3 s.
    let out = Command::new(env!("CARGO_BIN_EXE_faultd"))
        .arg("ctl")
        .arg("--socket")
        .arg(&d.socket)
        .args(["time", "--pid", &t.pid().to_string()])
        .args(["--offset", "-10m100ns", "--clocks", "REALTIME,MONOTONIC"])
        .args(["--ttl", "3s"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ctl time: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("ctl time: {}", String::from_utf8_lossy(&out.stdout).trim());
    let s = t.skew().await;
    eprintln!("-10m100ns REALTIME|MONOTONIC: {s}");
    assert_near(
        "-10m100ns",
        &s,
        &Skew::expected(-600.0, REALTIME | MONOTONIC),
        TOL,
    );
    let (s, waited) = t
        .report
        .until(
            "parent",
            None,
            &Skew::expected(0.0, 0),
            TOL,
            Duration::from_secs(30),
        )
        .await;
    eprintln!("after the TTL ({waited:?} after the check): {s}");
    t.assert_pristine("after expiry");
    let ended = settled(&admin, "time", Duration::from_secs(10)).await;
    let f = ended.first().expect("the time fault");
    assert_eq!(
        (f.phase, f.end_reason.as_str()),
        (api::Phase::Reverted as i32, "expiry"),
        "{f:?}"
    );

    // kill -9 while applied: the next daemon restores it before serving.
    let mut c = faults(&admin);
    c.apply_fault(time_fault(t.pid(), 3600, 0, MONOTONIC, 600))
        .await
        .expect("ApplyFault");
    assert_near(
        "MONOTONIC +3600",
        &t.skew().await,
        &Skew::expected(3600.0, MONOTONIC),
        TOL,
    );
    d.kill9();
    let mut d = DaemonProc::spawn(state.path(), &[]);
    d.ready().await;
    t.assert_pristine("when the restarted daemon serves");
    let s = t.skew().await;
    eprintln!("after kill -9 and restart: {s}");
    assert_near("after restart", &s, &Skew::expected(0.0, 0), TOL);
    t.assert_running();
    d.shutdown().await;
}

#[tokio::test]
#[ignore = "VM tier: run by tests/run-all.sh inside the test VM"]
async fn set_time_offset_on_a_container_of_the_guest_containerd_and_recover() {
    require_vm();
    let Ok(sock) = std::env::var("FAULTD_TEST_CTR_SOCK") else {
        eprintln!("no containerd in this VM run (FAULTD_TEST_CTR_SOCK unset): skipped");
        return;
    };
    let name = unique("vmtime");
    let c = Container::run_argv(
        &name,
        &[],
        &["/bin/clockreport", "-o", "/tmp/clock.log", "-t", "2"],
    );
    let pid = c.pid();
    let report = Report::new(format!("/proc/{pid}/root/tmp/clock.log"));
    let s = report.next("parent", None).await.skew();
    assert_near("before", &s, &Skew::expected(0.0, 0), TOL);
    let state = tempfile::tempdir().unwrap();
    let (mut d, url, _) = DaemonProc::spawn_tcp(
        state.path(),
        &["--runtime", "containerd", "--runtime-socket-path", &sock],
    );
    d.ready().await;
    let mut client = ChaosDaemonClient::connect(url).await.unwrap();
    let req = |sec: i64, mask: u64| pb::TimeRequest {
        container_id: c.id(),
        sec,
        nsec: 0,
        clk_ids_mask: mask,
        uid: "vm-chaos".into(),
        pod_container_name: format!("pod-{name}:app"),
    };

    let t0 = Instant::now();
    client.set_time_offset(req(3600, REALTIME)).await.unwrap();
    let took = t0.elapsed();
    let s = report.skew("parent", None).await;
    eprintln!("container +3600 s REALTIME (SetTimeOffset took {took:?}): {s}");
    assert_near("container", &s, &Skew::expected(3600.0, REALTIME), TOL);
    // SIGUSR1: a child forked after the injection.
    // SAFETY: kill(2) of the container's init by its host pid.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGUSR1) }, 0);
    let t1 = Instant::now();
    let child = loop {
        if let Some(p) = report.children().first().copied() {
            break p;
        }
        assert!(t1.elapsed() < Duration::from_secs(30), "no child reported");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let s = report.skew("child", Some(child)).await;
    eprintln!("child forked after: {s}");
    assert_near("child", &s, &Skew::expected(3600.0, REALTIME), TOL);

    client.recover_time_offset(req(0, 0)).await.unwrap();
    for (who, p) in [("parent", None), ("child", Some(child))] {
        let s = report.skew(who, p).await;
        eprintln!("recovered {who}: {s}");
        assert_near(who, &s, &Skew::expected(0.0, 0), TOL);
    }
    let mut all = vec![pid];
    all.extend(children_of(pid));
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all.iter().all(|&p| vdso_pristine(p)), "{all:?}");
    assert!(c.running() && c.pid() == pid);
    d.shutdown().await;
}
