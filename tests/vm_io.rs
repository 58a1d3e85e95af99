//! VM tier (a stock Debian kernel under qemu, cgroup v2, the guest's containerd; run by
//! `tests/run-all.sh` inside the test VM): IOChaos on that kernel, as tests/host_io_chaos.rs
//! does it on the host: a container with a host directory at `/data` running `/bin/ioprobe`;
//! `ApplyIOChaos` latency on `read` reaches both the descriptor held since before the fault
//! (switched onto faultd's layer) and a re-opened file; `kill -9` of faultd leaves the probe
//! with `ENOTCONN` until the next start repairs the volume (same descriptor, reads work, no
//! layer left); a second fault and its recover leave the files on disk as they were.
mod common;

use std::time::{Duration, Instant};

use common::host::settled;
use common::io::{latency, summary, Daemon, Target, ENOTCONN, F_HEX, G_HEX};
use faultd::proto::faultd::v1 as api;

fn require_vm() {
    assert_eq!(
        std::env::var("FAULTD_TEST_VM").as_deref(),
        Ok("1"),
        "VM-only test: run it through tests/run-all.sh or tests/env/vm/run-vm.sh"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "VM tier: run by tests/run-all.sh inside the test VM"]
async fn io_chaos_on_a_guest_container_latency_kill_9_repair_and_recover() {
    require_vm();
    if std::env::var("FAULTD_TEST_CTR_SOCK").is_err() {
        eprintln!("no containerd in this VM run (FAULTD_TEST_CTR_SOCK unset): skipped");
        return;
    }
    // The guest has no udev: load fuse (the kernel creates /dev/fuse) as a node's boot would.
    if !std::path::Path::new("/dev/fuse").exists() {
        let out = std::process::Command::new("modprobe")
            .arg("fuse")
            .output()
            .expect("modprobe");
        assert!(
            out.status.success(),
            "modprobe fuse: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(std::path::Path::new("/dev/fuse").exists());
    let t = Target::start("vmio").await;
    let orig_dev = t.held_dev();
    let state = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(state.path()).await;
    let base = t.next(t.last_seq(), 4).await;
    eprintln!("baseline: {}", summary(&base));

    let t0 = Instant::now();
    let r = d.apply(&t, &latency(100, &["read"])).await.unwrap();
    eprintln!("ApplyIOChaos latency 100ms took {:?}", t0.elapsed());
    assert_eq!(r.instance, i64::from(d.proc.child.id()));
    assert!(t.has_layer(), "{}", t.mountinfo());
    assert!(t.held_on_layer(), "the held descriptor is on the layer");
    let s = t.next(t.last_seq(), 3).await;
    eprintln!("latency 100ms on read: {}", summary(&s));
    assert!(
        s.iter()
            .all(|x| x.held.0 >= 100_000 && x.held.3 == F_HEX && x.reopen.0 >= 100_000),
        "{s:?}"
    );

    d.proc.kill9();
    let s = t.next(t.last_seq(), 2).await;
    eprintln!("after kill -9: {}", summary(&s));
    assert!(s.iter().all(|x| x.held.1 == ENOTCONN), "{s:?}");
    let t0 = Instant::now();
    let mut d = Daemon::start(state.path()).await;
    eprintln!("restart to ready: {:?}", t0.elapsed());
    assert!(!t.has_layer(), "{}", t.mountinfo());
    assert_eq!(t.held_dev(), orig_dev);
    let s = t.next(t.last_seq(), 3).await;
    eprintln!("after the restart: {}", summary(&s));
    assert!(
        s.iter()
            .all(|x| x.held.1 == 0 && x.held.3 == F_HEX && x.reopen.3 == G_HEX),
        "{s:?}"
    );
    let ended = settled(&d.admin, "io", Duration::from_secs(10)).await;
    assert!(
        ended
            .iter()
            .any(|f| f.phase == api::Phase::Reverted as i32 && f.end_reason == "restart"),
        "{ended:?}"
    );

    d.apply(
        &t,
        &serde_json::json!([{"type": "fault", "path": "", "methods": ["read"], "percent": 100,
                             "faults": [{"errno": 5, "weight": 1}]}])
        .to_string(),
    )
    .await
    .unwrap();
    let s = t.next(t.last_seq(), 2).await;
    assert!(s.iter().all(|x| x.held.1 == 5 && x.reopen.1 == 5), "{s:?}");
    let r = d.apply(&t, "[]").await.unwrap();
    assert_eq!(r.instance, 0);
    assert!(!t.has_layer());
    let s = t.next(t.last_seq(), 2).await;
    assert!(
        s.iter().all(|x| x.held.1 == 0 && x.held.3 == F_HEX),
        "{s:?}"
    );
    t.on_disk_unchanged("after recover");
    assert!(t.c.running() && t.c.pid() == t.pid);
    d.proc.shutdown().await;
}
