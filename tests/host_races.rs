//! Host tier (root; run by `tests/run-all.sh`, or `cargo test --test host_races -- --ignored
//! --test-threads=1`): updates of one device fired around the expiry of the fault they replace,
//! against the real daemon (a child process) and real tbf qdiscs on a veth in a throwaway
//! network namespace. The engine serializes every apply and rollback of a device, so the newest
//! tree is always the one in place, and the device returns to its original root at the end.
mod common;

use std::time::{Duration, Instant};

use common::host::*;
use faultd::proto::faultd::v1 as api;

/// `ApplyFault` with a tbf rule of `rate` on the namespace's device and a TTL in milliseconds
/// through the `faultd-ttl` header (0: none).
fn apply(ns: &Netns, rate: &str, ttl_ms: u64) -> tonic::Request<api::ApplyFaultRequest> {
    let mut req = tonic::Request::new(api::ApplyFaultRequest {
        ttl_seconds: 0,
        lease_id: String::new(),
        target_pid: ns.pid(),
        fault: Some(api::apply_fault_request::Fault::SetTcs(tbf_request(
            &ns.dev, rate,
        ))),
    });
    if ttl_ms > 0 {
        req.metadata_mut()
            .insert("faultd-ttl", format!("{ttl_ms}ms").parse().unwrap());
    }
    req
}

/// The device's root qdisc line (`qdisc tbf fa02: root ... rate 3Mbit ...`).
fn root_line(ns: &Netns) -> String {
    ns.tc(&["qdisc", "show", "dev", &ns.dev])
        .lines()
        .find(|l| l.contains(" root "))
        .unwrap_or("")
        .to_string()
}

/// A small deterministic pseudo-random sequence (no dependency, reproducible failures).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[tokio::test]
#[ignore = "host tier: needs root; run by tests/run-all.sh"]
async fn updates_fired_around_expiries_always_leave_the_newest_tree() {
    let state = tempfile::tempdir().unwrap();
    let ns = Netns::new("race");
    // An original root faultd must put back at the end.
    ns.tc(&[
        "qdisc", "add", "dev", "d0", "root", "handle", "1:", "htb", "default", "10", "r2q", "7",
    ]);
    let original = ns.qdisc_dump();
    let mut d = DaemonProc::spawn(state.path(), &[]);
    let ch = d.ready().await;
    let mut c = faults(&ch);
    let mut rng = Lcg(0x5eed);
    let t0 = Instant::now();
    let mut roots = std::collections::BTreeSet::new();
    for i in 0..100u64 {
        // The fault that expires: a TTL of 5-60 ms.
        let first = format!("{}mbit", 1 + i % 9);
        let ttl = 5 + rng.next(56);
        c.apply_fault(apply(&ns, &first, ttl)).await.unwrap();
        // The update lands before, around or after that expiry.
        tokio::time::sleep(Duration::from_millis(rng.next(70))).await;
        let newest = format!("{}mbit", 1 + (i + 4) % 9);
        let f = c
            .apply_fault(apply(&ns, &newest, 0))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(f.phase, api::Phase::Applied as i32, "iteration {i}");
        // Let any expiry in flight finish, then the newest tree must be the one in place.
        tokio::time::sleep(Duration::from_millis(rng.next(40))).await;
        let root = root_line(&ns);
        let want = format!("rate {}Mbit", 1 + (i + 4) % 9);
        assert!(
            root.contains("tbf fa") && root.contains(&want),
            "iteration {i}: the newest tree ({want}) is not in place: {root:?}\n{}",
            ns.qdisc_dump()
        );
        roots.insert(root.split_whitespace().nth(2).unwrap_or("").to_string());
        // Every other round ends by request, the rest by a HaltAll-free expiry of the update.
        if i % 2 == 0 {
            c.revoke_fault(api::RevokeFaultRequest { id: f.id })
                .await
                .unwrap();
            assert_eq!(ns.qdisc_dump(), original, "iteration {i}: not restored");
        }
    }
    let halt = c
        .halt_all(api::HaltAllRequest {
            reason: "test end".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(halt.failed, 0);
    assert_eq!(ns.qdisc_dump(), original, "the original root is back");
    let listed = c
        .list_faults(api::ListFaultsRequest {
            include_ended: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.faults.is_empty(), "{:?}", listed.faults);
    // Consecutive faults of the device alternate root handles: the expiring fault (whose
    // predecessor was an update at fa02:) always got fa01:, so its update never reuses fa01:,
    // and a late undo of one fault could never remove the next.
    assert!(!roots.contains("fa01:") && !roots.is_empty(), "{roots:?}");
    eprintln!(
        "100 update/expiry rounds in {:.1} s; root handles used: {roots:?}",
        t0.elapsed().as_secs_f64()
    );
}
