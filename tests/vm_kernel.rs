//! VM tier: assertions about the test VM's kernel that faultd's VM tests rely on
//! (real `sch_netem`, cgroup v2 with the cpu and memory controllers).
//!
//! Every test is `#[ignore]`: `cargo test` skips them. `tests/run-all.sh` builds this file with
//! `cargo test --no-run --test vm_kernel` and runs the binary inside the test VM
//! (`tests/env/vm/run-vm.sh`, stock Debian kernel under qemu, cgroup v2) with
//! `--ignored --test-threads=1`. By hand:
//!
//! ```text
//! tests/env/setup.sh
//! tests/env/vm/run-vm.sh -- target/debug/deps/vm_kernel-<hash> --ignored --test-threads=1
//! ```
//!
//! The tests refuse to run outside the VM (they change the qdisc of `lo`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const TC: &str = "/usr/sbin/tc";

fn require_vm() {
    assert_eq!(
        std::env::var("FAULTD_TEST_VM").as_deref(),
        Ok("1"),
        "VM-only test: run it through tests/run-all.sh or tests/env/vm/run-vm.sh"
    );
}

fn tc(args: &[&str]) -> std::process::Output {
    Command::new(TC)
        .args(args)
        .output()
        .expect("running /usr/sbin/tc")
}

/// Removes the root qdisc of `lo` when dropped, so a failed assertion leaves no delay behind.
struct LoQdisc;

impl LoQdisc {
    fn add(args: &[&str]) -> LoQdisc {
        let mut argv = vec!["qdisc", "add", "dev", "lo", "root"];
        argv.extend_from_slice(args);
        let out = tc(&argv);
        assert!(
            out.status.success(),
            "tc {}: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        LoQdisc
    }
}

impl Drop for LoQdisc {
    fn drop(&mut self) {
        let _ = tc(&["qdisc", "del", "dev", "lo", "root"]);
    }
}

/// Round trip of an 8-byte TCP echo over 127.0.0.1 (connection set up before timing).
fn tcp_echo_rtt() -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 8];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(&buf).unwrap();
    });
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_nodelay(true).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let start = Instant::now();
    client.write_all(b"faultd!!").unwrap();
    let mut buf = [0u8; 8];
    client.read_exact(&mut buf).unwrap();
    let rtt = start.elapsed();
    server.join().unwrap();
    assert_eq!(&buf, b"faultd!!");
    rtt
}

#[test]
#[ignore = "VM tier: run by tests/run-all.sh inside the test VM"]
fn netem_delay_on_loopback_delays_tcp_round_trip() {
    require_vm();
    let base = tcp_echo_rtt();
    let rtt = {
        let _qdisc = LoQdisc::add(&["netem", "delay", "50ms"]);
        let show = tc(&["qdisc", "show", "dev", "lo"]);
        let show = String::from_utf8_lossy(&show.stdout);
        assert!(
            show.contains("netem") && show.contains("delay 50"),
            "{show}"
        );
        tcp_echo_rtt()
    };
    eprintln!("tcp echo rtt: base {base:?}, with netem delay 50ms on lo {rtt:?}");
    // the request and the reply each cross lo once: 2 x 50 ms
    assert!(
        rtt >= Duration::from_millis(95),
        "netem added too little delay: {rtt:?}"
    );
    assert!(
        rtt < Duration::from_secs(2),
        "round trip far too slow: {rtt:?}"
    );
    let after = tcp_echo_rtt();
    assert!(
        after < Duration::from_millis(95),
        "delay still present after qdisc removal: {after:?}"
    );
}

#[test]
#[ignore = "VM tier: run by tests/run-all.sh inside the test VM"]
fn cgroup_v2_is_mounted_with_cpu_and_memory_controllers() {
    require_vm();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.split(' ').nth(1) == Some("/sys/fs/cgroup")
                && l.split(' ').nth(2) == Some("cgroup2")),
        "cgroup2 is not mounted at /sys/fs/cgroup:\n{mounts}"
    );
    for file in ["cgroup.controllers", "cgroup.subtree_control"] {
        let content = std::fs::read_to_string(format!("/sys/fs/cgroup/{file}")).unwrap();
        let controllers: Vec<&str> = content.split_whitespace().collect();
        for needed in ["cpu", "memory"] {
            assert!(
                controllers.contains(&needed),
                "{file} lacks {needed}: {content:?}"
            );
        }
    }
}
