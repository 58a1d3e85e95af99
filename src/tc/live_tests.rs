//! Host-tier tests against the real kernel, each in its own throwaway network namespace with a
//! veth pair (IPv6 disabled so no stray packets touch qdisc counters). They need root plus
//! `ip`/`tc` (iproute2) and a kernel with tbf and htb; netem is optional (probed).
//!
//! Run: `cargo test --lib tc -- --include-ignored --test-threads=1`
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::netem::NetemSpec;
use super::qdisc::{
    apply_qdisc, delete_root_qdisc, link_index, restore_root_qdisc, root_qdisc, AddMode, Qdisc,
};
use super::socket::RouteSocket;
use super::tbf::{TbfArgs, TbfLimit, TbfSpec};
use super::{tc_handle, TcError, TcErrorClass, TC_H_ROOT};
use crate::ns::{Namespace, NsKind};

/// Runs a fixed argv (no shell) and returns stdout; panics with stderr on failure.
fn run(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A named network namespace with `v0 <-> v1` up; deleted on drop.
struct TestNs {
    name: String,
}

impl TestNs {
    fn new() -> TestNs {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "faultd-tc-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name]);
        let ns = TestNs { name };
        ns.exec(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        run(&[
            "ip", "-n", &ns.name, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
        ]);
        run(&["ip", "-n", &ns.name, "link", "set", "v0", "up"]);
        run(&["ip", "-n", &ns.name, "link", "set", "v1", "up"]);
        ns
    }

    fn exec(&self, argv: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(argv);
        run(&full)
    }

    fn tc_show(&self) -> String {
        self.exec(&["tc", "qdisc", "show", "dev", "v0"])
    }

    /// The root qdisc of v0 as `tc -j` reports it.
    fn tc_root_json(&self) -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&self.exec(&["tc", "-j", "qdisc", "show", "dev", "v0"]))
                .expect("tc -j output");
        v.as_array()
            .and_then(|a| {
                a.iter()
                    .find(|q| q["root"] == serde_json::Value::Bool(true))
            })
            .cloned()
            .expect("a root qdisc")
    }

    /// A route socket opened inside the namespace (it keeps talking to it from this thread).
    fn socket(&self) -> RouteSocket {
        let ns = Namespace::open(&PathBuf::from("/run/netns").join(&self.name), NsKind::Net)
            .expect("open netns");
        RouteSocket::open_in(&ns).expect("netlink socket in netns")
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn tbf_50ms() -> TbfSpec {
    TbfSpec {
        rate: 125_000,
        burst: 32768,
        limit: TbfLimit::Latency(Duration::from_millis(50)),
        peak: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn live_tbf_applies_and_reads_back() {
    let t = TestNs::new();
    let mut s = t.socket();
    let h = &mut s;
    let idx = link_index(h, "v0").unwrap();
    apply_qdisc(
        h,
        idx,
        &Qdisc::tbf(TC_H_ROOT, tc_handle(1, 0), &tbf_50ms()).unwrap(),
        AddMode::Replace,
    )
    .unwrap();
    let q = t.tc_root_json();
    assert_eq!(q["kind"], "tbf", "{q}");
    assert_eq!(q["handle"], "1:", "{q}");
    assert_eq!(q["options"]["rate"], 125_000, "{q}");
    assert_eq!(q["options"]["burst"], 32768, "{q}");
    assert_eq!(q["options"]["lat"], 50_000, "{q}");

    // Our own dump sees the same qdisc, with the kernel's TCA_TBF_PARMS first.
    let root = root_qdisc(h, idx).unwrap().expect("root");
    assert_eq!(
        (root.kind.as_str(), root.handle, root.parent),
        ("tbf", 0x1_0000, TC_H_ROOT)
    );
    let opts = root.options.expect("options");
    assert_eq!(&opts[2..4], &1u16.to_ne_bytes(), "TCA_TBF_PARMS");
    assert_eq!(&opts[12..16], &125_000u32.to_ne_bytes(), "rate");

    // The Chaos Mesh argv shape, replacing in place (same handle, same kind: a change).
    let spec = TbfSpec::from_args(&TbfArgs {
        rate: "1mbps".into(),
        limit: 20_000,
        buffer: 10_000,
        peak_rate: 16_000_000,
        min_burst: 1600,
    })
    .unwrap();
    apply_qdisc(
        h,
        idx,
        &Qdisc::tbf(TC_H_ROOT, tc_handle(1, 0), &spec).unwrap(),
        AddMode::Replace,
    )
    .unwrap();
    let q = t.tc_root_json();
    assert_eq!(q["options"]["rate"], 1_000_000, "{q}");
    assert_eq!(q["options"]["burst"], 10_000, "{q}");
    assert_eq!(q["options"]["minburst"], 1600, "{q}");
    let text = t.tc_show();
    assert!(
        text.contains("rate 8Mbit burst 10000b peakrate 16Mbit minburst 1600b"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn live_restore_htb_root_same_and_other_handle() {
    let t = TestNs::new();
    t.exec(&[
        "tc", "qdisc", "add", "dev", "v0", "root", "handle", "1:", "htb", "default", "10", "r2q",
        "5",
    ]);
    let before = t.tc_show();
    assert!(before.contains("qdisc htb 1: root"), "{before}");
    let mut s = t.socket();
    let h = &mut s;
    let idx = link_index(h, "v0").unwrap();
    let saved = root_qdisc(h, idx).unwrap().expect("root");
    assert_eq!((saved.kind.as_str(), saved.handle), ("htb", 0x1_0000));
    assert!(saved.is_classful() && !saved.is_kernel_default());
    // The journal stores it as JSON; restore from the round-tripped copy.
    let saved: Qdisc = serde_json::from_str(&serde_json::to_string(&saved).unwrap()).unwrap();

    // Same handle: the fault replaces 1: (upstream deletes the root, then adds handle 1:).
    let tbf = Qdisc::tbf(TC_H_ROOT, tc_handle(1, 0), &tbf_50ms()).unwrap();
    let replace = apply_qdisc(h, idx, &tbf, AddMode::Replace).unwrap_err();
    assert_eq!(
        replace.errno(),
        Some(libc::EINVAL),
        "kernel refuses a kind change at the same handle: {replace}"
    );
    assert!(delete_root_qdisc(h, idx).unwrap());
    apply_qdisc(h, idx, &tbf, AddMode::Exclusive).unwrap();
    assert!(t.tc_show().contains("qdisc tbf 1: root"));
    restore_root_qdisc(h, idx, &saved).unwrap();
    assert_eq!(t.tc_show(), before);
    restore_root_qdisc(h, idx, &saved).unwrap();
    assert_eq!(t.tc_show(), before, "restore is idempotent");

    // Other handle: grafted over the htb atomically, restored atomically.
    let tbf2 = Qdisc::tbf(TC_H_ROOT, tc_handle(2, 0), &tbf_50ms()).unwrap();
    apply_qdisc(h, idx, &tbf2, AddMode::Replace).unwrap();
    assert!(t.tc_show().contains("qdisc tbf 2: root"));
    restore_root_qdisc(h, idx, &saved).unwrap();
    assert_eq!(t.tc_show(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn live_restore_user_tbf_root() {
    let t = TestNs::new();
    t.exec(&[
        "tc", "qdisc", "add", "dev", "v0", "root", "handle", "5:", "tbf", "rate", "3mbit", "burst",
        "7000", "latency", "70ms", "peakrate", "5mbit", "mtu", "1600",
    ]);
    let before = t.tc_show();
    let before_raw = t.exec(&["tc", "-d", "-r", "qdisc", "show", "dev", "v0"]);
    let mut s = t.socket();
    let h = &mut s;
    let idx = link_index(h, "v0").unwrap();
    let saved = root_qdisc(h, idx).unwrap().expect("root");
    assert_eq!(
        saved.restore_options(),
        saved.options,
        "tbf dumps are re-sent verbatim"
    );
    for handle in [tc_handle(5, 0), tc_handle(1, 0)] {
        if handle == saved.handle {
            assert!(delete_root_qdisc(h, idx).unwrap());
        }
        let fault = Qdisc::tbf(TC_H_ROOT, handle, &tbf_50ms()).unwrap();
        apply_qdisc(h, idx, &fault, AddMode::Replace).unwrap();
        assert_ne!(t.tc_show(), before);
        restore_root_qdisc(h, idx, &saved).unwrap();
        assert_eq!(t.tc_show(), before);
        assert_eq!(
            t.exec(&["tc", "-d", "-r", "qdisc", "show", "dev", "v0"]),
            before_raw
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn live_restore_kernel_default_root() {
    let t = TestNs::new();
    let before = t.tc_show();
    let mut s = t.socket();
    let h = &mut s;
    let idx = link_index(h, "v0").unwrap();
    let saved = root_qdisc(h, idx).unwrap().expect("root");
    assert!(saved.is_kernel_default(), "{saved:?}");
    apply_qdisc(
        h,
        idx,
        &Qdisc::tbf(TC_H_ROOT, tc_handle(1, 0), &tbf_50ms()).unwrap(),
        AddMode::Exclusive,
    )
    .unwrap();
    assert_ne!(t.tc_show(), before);
    restore_root_qdisc(h, idx, &saved).unwrap();
    assert_eq!(t.tc_show(), before);
    restore_root_qdisc(h, idx, &saved).unwrap();
    assert_eq!(t.tc_show(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn live_delete_root_is_idempotent() {
    let t = TestNs::new();
    let mut s = t.socket();
    let h = &mut s;
    let idx = link_index(h, "v0").unwrap();
    assert!(
        !delete_root_qdisc(h, idx).unwrap(),
        "nothing to delete on a default root"
    );
    let tbf = Qdisc::tbf(TC_H_ROOT, tc_handle(1, 0), &tbf_50ms()).unwrap();
    apply_qdisc(h, idx, &tbf, AddMode::Exclusive).unwrap();
    let dup = apply_qdisc(h, idx, &tbf, AddMode::Exclusive).unwrap_err();
    assert_eq!(dup.errno(), Some(libc::EEXIST), "{dup}");
    assert!(delete_root_qdisc(h, idx).unwrap());
    assert!(!delete_root_qdisc(h, idx).unwrap());
    assert!(!delete_root_qdisc(h, idx).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn live_missing_device_is_not_found() {
    let t = TestNs::new();
    let mut s = t.socket();
    let h = &mut s;
    let e = link_index(h, "nosuchdev0").unwrap_err();
    assert!(matches!(e, TcError::LinkNotFound { .. }), "{e}");
    assert_eq!(e.class(), TcErrorClass::NotFound);
    // The socket only sees the namespace's own devices.
    assert_eq!(link_index(h, "lo").unwrap(), 1);
    let tbf = Qdisc::tbf(TC_H_ROOT, 0, &tbf_50ms()).unwrap();
    let e = apply_qdisc(h, 4242, &tbf, AddMode::Replace).unwrap_err();
    assert_eq!(e.class(), TcErrorClass::NotFound, "{e}");
    let e = delete_root_qdisc(h, 4242).unwrap_err();
    assert_eq!(e.class(), TcErrorClass::NotFound, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn live_netem_when_the_kernel_has_it() {
    let t = TestNs::new();
    let mut s = t.socket();
    let h = &mut s;
    let idx = link_index(h, "v0").unwrap();
    let spec = NetemSpec {
        delay: Duration::from_millis(100),
        ..Default::default()
    };
    match apply_qdisc(
        h,
        idx,
        &Qdisc::netem(TC_H_ROOT, tc_handle(1, 0), &spec),
        AddMode::Exclusive,
    ) {
        Ok(()) => {
            let q = t.tc_root_json();
            assert_eq!(q["kind"], "netem", "{q}");
            assert_eq!(q["options"]["delay"]["delay"], 0.1, "{q}");
        }
        // sch_netem missing: "Specified qdisc kind is unknown".
        Err(e) => {
            assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
            assert!(matches!(e, TcError::KindMissing { .. }), "{e:?}");
            assert_eq!(
                e.to_string(),
                "the kernel has no sch_netem (modprobe sch_netem)"
            );
        }
    }
}

/// The kernel contract faultd's one-request apply relies on: an exclusive add of a root works
/// over the kernel's default root only, and over any configured root (another tool's, or a
/// faultd tree with the same handle) fails with `EEXIST` and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn live_exclusive_root_add_works_over_the_default_root_only() {
    let t = TestNs::new();
    let mut s = t.socket();
    let h = &mut s;
    let idx = link_index(h, "v0").unwrap();
    let ours = Qdisc::tbf(TC_H_ROOT, tc_handle(0xfa01, 0), &tbf_50ms()).unwrap();
    // the kernel's default (noqueue on a veth, handle 0): the add grafts over it
    assert_eq!(root_qdisc(h, idx).unwrap().map(|q| q.handle), Some(0));
    apply_qdisc(h, idx, &ours, AddMode::Exclusive).unwrap();
    assert_eq!(t.tc_root_json()["handle"], "fa01:");
    // a faultd tree with the same handle already there: refused, untouched
    let again = apply_qdisc(h, idx, &ours, AddMode::Exclusive).unwrap_err();
    assert!(
        matches!(again, TcError::Kernel { errno, .. } if errno == libc::EEXIST),
        "{again:?}"
    );
    assert_eq!(t.tc_root_json()["options"]["rate"], 125_000);
    // someone else's root: refused, untouched
    delete_root_qdisc(h, idx).unwrap();
    t.exec(&[
        "tc", "qdisc", "add", "dev", "v0", "root", "handle", "5:", "tbf", "rate", "2mbit", "burst",
        "5000", "latency", "20ms",
    ]);
    let before = t.tc_root_json();
    let other = apply_qdisc(h, idx, &ours, AddMode::Exclusive).unwrap_err();
    assert!(
        matches!(other, TcError::Kernel { errno, .. } if errno == libc::EEXIST),
        "{other:?}"
    );
    assert_eq!(t.tc_root_json(), before);
}
