//! Host tier (root, `/dev/fuse`, the test containerd; run by `tests/run-all.sh`, or by hand as
//! tests/README.md shows: `cargo test --test host_io_chaos -- --ignored --test-threads=1`):
//! IOChaos (`ApplyIOChaos`, and `faultd.v1` `ApplyFault` with `apply_io_chaos` through
//! `faultd ctl io`) on a container of the test image with a host directory bind-mounted at
//! `/data`, running `/bin/ioprobe` (`tests/env/ctr/ioprobe.c`) as its init: it opens `/data/f`
//! once and keeps the descriptor, and every 50 ms preads it, re-opens and reads `/data/g`,
//! and stats `/data/g`, logging latency, errno and the first bytes to `/tmp/io.log` inside the
//! container. The log is only read, through `/proc/<pid>/root`; the files of the volume are
//! only read on the host, and compared before and after. Nothing is mounted in the host's
//! mount namespace: faultd's layer goes into the container's.
mod common;

use std::time::{Duration, Instant};

use common::host::settled;
use common::io::{latency, p50, summary, Daemon, Target, ENOTCONN, F_HEX, G_HEX};
use faultd::proto::faultd::v1 as api;
use serde_json::json;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root, /dev/fuse and the test containerd; run by tests/run-all.sh"]
async fn apply_io_chaos_latency_fault_attr_mistake_then_recover() {
    let t = Target::start("io").await;
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    let orig_dev = t.held_dev();

    let base = t.next(t.last_seq(), 6).await;
    eprintln!("baseline: {}", summary(&base));
    assert!(
        base.iter().all(|s| s.held.1 == 0 && s.held.3 == F_HEX),
        "{base:?}"
    );
    assert!(base.iter().all(|s| s.reopen.3 == G_HEX), "{base:?}");
    assert!(!t.has_layer());

    // Bad input changes nothing.
    for (actions, what) in [
        ("{not json", "bad JSON"),
        (
            r#"[{"type":"latency","latency":"100ms","methods":["reed"],"percent":100}]"#,
            "unknown method",
        ),
        (r#"[{"type":"explode","percent":100}]"#, "unknown type"),
        (
            r#"[{"type":"fault","faults":[{"errno":9999,"weight":1}],"percent":100}]"#,
            "bad errno",
        ),
        (
            r#"[{"type":"latency","latency":"soon","percent":100}]"#,
            "bad duration",
        ),
    ] {
        let e = d.apply(&t, actions).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
    }
    let e = d
        .apply_on(&t, "/data/sub", &latency(100, &["read"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    eprintln!("not a mount root: {}", e.message());
    assert!(!t.has_layer());
    assert!(d.io_faults(false).await.is_empty());

    // latency 100 ms on read: both the held descriptor (switched onto the layer) and a
    // re-opened file are slow.
    let t0 = Instant::now();
    let r = d.apply(&t, &latency(100, &["read"])).await.unwrap();
    let took = t0.elapsed();
    let mark = t.last_seq();
    assert_eq!(r.instance, i64::from(d.proc.child.id()), "{r:?}");
    assert!(r.start_time > 0, "{r:?}");
    assert!(t.has_layer(), "{}", t.mountinfo());
    assert!(t.held_on_layer(), "the held descriptor is on the layer");
    let s = t.next(mark, 4).await;
    eprintln!(
        "latency 100ms on read (ApplyIOChaos took {took:?}): {}",
        summary(&s)
    );
    for x in &s {
        assert!(
            x.held.0 >= 100_000 && x.held.1 == 0 && x.held.3 == F_HEX,
            "{x:?}"
        );
        assert!(x.reopen.0 >= 100_000 && x.reopen.3 == G_HEX, "{x:?}");
    }
    let active = d.io_faults(false).await;
    assert_eq!(active.len(), 1, "{active:?}");
    eprintln!("fault: {}", active[0].summary);

    // fault errno 5: EIO on both (replaces the latency: the full desired state).
    let r = d
        .apply(
            &t,
            &json!([{"type": "fault", "path": "/data/*", "percent": 100,
                     "faults": [{"errno": 5, "weight": 1}]}])
            .to_string(),
        )
        .await
        .unwrap();
    assert_eq!(r.instance, i64::from(d.proc.child.id()));
    let s = t.next(t.last_seq(), 3).await;
    eprintln!("fault errno 5: {}", summary(&s));
    assert!(s.iter().all(|x| x.held.1 == 5 && x.reopen.1 == 5), "{s:?}");
    let active = d.io_faults(false).await;
    assert_eq!(active.len(), 1, "the replaced fault ended: {active:?}");

    // methods [write]: reads are not delayed.
    d.apply(&t, &latency(200, &["write"])).await.unwrap();
    let s = t.next(t.last_seq(), 4).await;
    eprintln!("latency 200ms on write: {}", summary(&s));
    assert!(
        s.iter()
            .all(|x| x.held.0 < 100_000 && x.held.1 == 0 && x.reopen.1 == 0),
        "{s:?}"
    );

    // attrOverride: perm and size show in stat.
    d.apply(
        &t,
        &json!([{"type": "attrOverride", "path": "/data/g", "percent": 100,
                 "perm": 0o600, "size": 12345}])
        .to_string(),
    )
    .await
    .unwrap();
    let s = t.next(t.last_seq(), 2).await;
    eprintln!("attrOverride: stat {:?}", s[0].stat);
    assert!(
        s.iter()
            .all(|x| x.stat.0 == 0 && x.stat.1 & 0o7777 == 0o600 && x.stat.2 == 12345),
        "{s:?}"
    );

    // mistake: the bytes read change, the files on disk do not.
    d.apply(
        &t,
        &json!([{"type": "mistake", "path": "", "methods": ["read"], "percent": 100,
                 "mistake": {"filling": "zero", "maxOccurrences": 2, "maxLength": 4}}])
        .to_string(),
    )
    .await
    .unwrap();
    let s = t.next(t.last_seq(), 3).await;
    eprintln!(
        "mistake: held {:?}, reopen {:?}",
        s.iter().map(|x| x.held.3.as_str()).collect::<Vec<_>>(),
        s.iter().map(|x| x.reopen.3.as_str()).collect::<Vec<_>>()
    );
    assert!(
        s.iter()
            .all(|x| x.held.3 != F_HEX && x.reopen.3 != G_HEX && x.held.2 == 8),
        "{s:?}"
    );
    t.on_disk_unchanged("after mistake");

    // Recover (`[]`): instance 0, latency back to baseline, the layer gone, the probe on the
    // same descriptor of the original file.
    let t0 = Instant::now();
    let r = d.apply(&t, "[]").await.unwrap();
    let took = t0.elapsed();
    assert_eq!((r.instance, r.start_time), (0, 0), "{r:?}");
    assert!(!t.has_layer(), "{}", t.mountinfo());
    assert_eq!(
        t.held_dev(),
        orig_dev,
        "the held descriptor is back on the volume"
    );
    let s = t.next(t.last_seq(), 6).await;
    eprintln!("recovered (ApplyIOChaos [] took {took:?}): {}", summary(&s));
    assert!(
        s.iter()
            .all(|x| x.held == (x.held.0, 0, 8, F_HEX.to_string())
                && x.reopen.1 == 0
                && x.reopen.3 == G_HEX
                && x.stat.1 & 0o7777 == 0o644),
        "{s:?}"
    );
    let mut h: Vec<u64> = s.iter().map(|x| x.held.0).collect();
    assert!(p50(&mut h) < 20_000, "{}", summary(&s));
    assert!(t.c.running() && t.c.pid() == t.pid, "the probe still runs");
    t.on_disk_unchanged("after recover");
    let ended = settled(&d.admin, "io", Duration::from_secs(10)).await;
    assert!(
        ended.iter().all(|f| f.phase == api::Phase::Reverted as i32),
        "{ended:?}"
    );
    assert!(d.io_faults(false).await.is_empty());
    // A second recover is a no-op.
    assert_eq!(d.apply(&t, "null").await.unwrap().instance, 0);
    d.proc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root, /dev/fuse and the test containerd; run by tests/run-all.sh"]
async fn ctl_io_ttl_expires_and_kill_9_is_repaired_on_restart() {
    let t = Target::start("io-crash").await;
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    let orig_dev = t.held_dev();

    // `faultd ctl io` with a TTL: applied, then rolled back by the deadline.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faultd"))
        .arg("ctl")
        .arg("--socket")
        .arg(&d.proc.socket)
        .args(["io", "--container", &t.c.id(), "--volume", "/data"])
        .args(["--actions", &latency(100, &[])])
        .args(["--ttl", "5s"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ctl io: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("ctl io: {}", String::from_utf8_lossy(&out.stdout).trim());
    assert!(t.has_layer());
    let s = t.next(t.last_seq(), 1).await;
    assert!(s.iter().all(|x| x.held.0 >= 100_000), "{s:?}");
    let ended = settled(&d.admin, "io", Duration::from_secs(15)).await;
    assert_eq!(
        (ended[0].phase, ended[0].end_reason.as_str()),
        (api::Phase::Reverted as i32, "expiry"),
        "{ended:?}"
    );
    assert!(!t.has_layer());
    assert_eq!(t.held_dev(), orig_dev);

    // kill -9 while injected: the probe's reads fail (the kernel ended the connection with
    // the process), the next start repairs the volume before it serves.
    d.apply(&t, &latency(50, &["read"])).await.unwrap();
    assert!(t.held_on_layer(), "the held descriptor is on the layer");
    d.proc.kill9();
    let s = t.next(t.last_seq(), 2).await;
    eprintln!("after kill -9: {}", summary(&s));
    assert!(s.iter().all(|x| x.held.1 == ENOTCONN), "{s:?}");
    let t0 = Instant::now();
    let mut d = Daemon::start(state.path()).await;
    eprintln!("restart to ready: {:?}", t0.elapsed());
    assert!(!t.has_layer(), "{}", t.mountinfo());
    assert_eq!(
        t.held_dev(),
        orig_dev,
        "the held descriptor is back on the volume"
    );
    let s = t.next(t.last_seq(), 4).await;
    eprintln!("after the restart: {}", summary(&s));
    assert!(
        s.iter()
            .all(|x| x.held.1 == 0 && x.held.3 == F_HEX && x.reopen.1 == 0 && x.held.0 < 50_000),
        "{s:?}"
    );
    assert!(t.c.running() && t.c.pid() == t.pid);
    t.on_disk_unchanged("after the repair");
    let ended = d.io_faults(true).await;
    assert!(
        ended
            .iter()
            .any(|f| f.phase == api::Phase::Reverted as i32 && f.end_reason == "restart"),
        "{ended:?}"
    );
    // The volume takes a new layer again.
    d.apply(&t, &latency(100, &["read"])).await.unwrap();
    assert!(t.has_layer());
    d.apply(&t, "[]").await.unwrap();
    assert!(!t.has_layer());
    d.proc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root, /dev/fuse and the test containerd; run by tests/run-all.sh"]
async fn doctor_reports_and_fixes_a_layer_no_fault_accounts_for() {
    let t = Target::start("io-doctor").await;
    let orig_dev = t.held_dev();
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    d.apply(&t, &latency(20, &["read"])).await.unwrap();
    d.proc.kill9();
    // A daemon on another state dir knows nothing of the fault: its doctor finds the layer.
    let other = tempfile::tempdir().unwrap();
    let mut d2 = Daemon::start(other.path()).await;
    assert!(t.has_layer(), "{}", t.mountinfo());
    let doctor = |fix| {
        let ch = d2.admin.clone();
        async move {
            api::doctor_client::DoctorClient::new(ch)
                .check(api::DoctorRequest { fix })
                .await
                .unwrap()
                .into_inner()
                .residue
                .into_iter()
                .filter(|r| r.kind == "io layer")
                .collect::<Vec<_>>()
        }
    };
    let found = doctor(false).await;
    eprintln!("doctor: {found:?}");
    assert!(
        found
            .iter()
            .any(|r| r.location.ends_with(" /data") && !r.removed),
        "{found:?}"
    );
    assert!(t.has_layer(), "the doctor without --fix changes nothing");
    let fixed = doctor(true).await;
    assert!(fixed.iter().any(|r| r.removed), "{fixed:?}");
    assert!(!t.has_layer(), "{}", t.mountinfo());
    assert_eq!(t.held_dev(), orig_dev);
    let s = t.next(t.last_seq(), 2).await;
    assert!(
        s.iter().all(|x| x.held.1 == 0 && x.held.3 == F_HEX),
        "{s:?}"
    );
    assert!(doctor(false).await.is_empty());
    d2.proc.shutdown().await;
    // The first journal's owner repairs nothing more and ends the fault on its restart.
    let mut d = Daemon::start(state.path()).await;
    let ended = d.io_faults(true).await;
    assert!(
        ended.iter().all(|f| f.phase == api::Phase::Reverted as i32),
        "{ended:?}"
    );
    d.proc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root, /dev/fuse and the test containerd; run by tests/run-all.sh"]
async fn a_shared_volume_is_refused_unless_the_daemon_allows_it() {
    // A layer on a shared volume propagates to its peers, which include the test containerd's
    // mount namespace: only ever in a private one (tests/run-all.sh runs tier 2 in one), never
    // the host's.
    // tests/run-all.sh says so with FAULTD_RUN_ALL_NS=1; otherwise our `/` must not be a
    // shared mount (`unshare --mount --propagation private` makes it private), so nothing
    // propagates out of this namespace.
    let root_private = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some("/"))
        .is_some_and(|l| !l.contains(" shared:"));
    assert!(
        std::env::var("FAULTD_RUN_ALL_NS").as_deref() == Ok("1") || root_private,
        "run this test in a private mount namespace (tests/run-all.sh does)"
    );
    let t = Target::start_with("io-shared", "rshared").await;
    assert!(
        t.mountinfo()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some("/data") && l.contains(" shared:")),
        "the test volume is not shared:\n{}",
        t.mountinfo()
    );
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    let e = d.apply(&t, &latency(50, &["read"])).await.unwrap_err();
    eprintln!("shared volume: {e:?}");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("shared"), "{e:?}");
    assert!(!t.has_layer());
    d.proc.shutdown().await;

    let mut d = Daemon::start_with(state.path(), &["--io-allow-shared-volumes"]).await;
    d.apply(&t, &latency(50, &["read"])).await.unwrap();
    assert!(t.has_layer() && t.held_on_layer(), "{}", t.mountinfo());
    let s = t.next(t.last_seq(), 2).await;
    assert!(s.iter().all(|x| x.held.0 >= 50_000), "{s:?}");
    d.apply(&t, "[]").await.unwrap();
    assert!(!t.has_layer());
    t.on_disk_unchanged("after recover");
    d.proc.shutdown().await;
}
