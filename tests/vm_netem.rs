//! VM tier (run by `tests/run-all.sh` inside a qemu guest with a stock Debian kernel, which has
//! sch_netem and sch_fq_codel): netem faults measured on real traffic, exact restore of the
//! prior root qdisc, and crash recovery. Every test is `#[ignore]`d so the host tiers skip them.
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::host::*;
use common::stats::median;
use common::upstream;
use faultd::ns::{Namespace, NsKind};
use faultd::proto::faultd::v1 as api;
use faultd::proto::pb;

/// A netns with its veth end `d0` at 10.250.N.2 and the host end at 10.250.N.1, plus an echo
/// server on port 7777 inside the netns.
struct Link {
    ns: Netns,
    peer: SocketAddr,
}

fn link(tag: &str, n: u8) -> Link {
    let ns = Netns::new(tag);
    let host_addr = format!("10.250.{n}.1/24");
    let ns_addr = format!("10.250.{n}.2/24");
    let out = std::process::Command::new("ip")
        .args(["addr", "add", &host_addr, "dev", &ns.host_if])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ns.ip(&["addr", "add", &ns_addr, "dev", "d0"]);
    let peer: SocketAddr = format!("10.250.{n}.2:7777").parse().unwrap();
    // A socket keeps the namespace it was created in: bind inside, serve from a normal thread.
    let netns = Namespace::open(
        std::path::Path::new(&format!("/run/netns/{}", ns.name)),
        NsKind::Net,
    )
    .unwrap();
    let listener = netns.run(move || TcpListener::bind(peer)).unwrap().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let _ = c.set_nodelay(true);
                let mut cmd = [0u8; 1];
                while c.read_exact(&mut cmd).is_ok() {
                    match cmd[0] {
                        // ping: echo one byte
                        b'p' => {
                            if c.write_all(b"p").is_err() {
                                return;
                            }
                        }
                        // bulk: send 1 MiB
                        b'b' => {
                            let buf = vec![7u8; 1 << 20];
                            if c.write_all(&buf).is_err() {
                                return;
                            }
                        }
                        _ => return,
                    }
                }
            });
        }
    });
    Link { ns, peer }
}

fn connect(peer: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let c = TcpStream::connect_timeout(&peer, timeout)?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(c)
}

/// Round-trip times in ms of `n` one-byte pings on one connection.
fn rtts(peer: SocketAddr, n: usize) -> Vec<f64> {
    let mut c = connect(peer, Duration::from_secs(5)).unwrap();
    let mut b = [0u8; 1];
    (0..n)
        .map(|_| {
            let t = Instant::now();
            c.write_all(b"p").unwrap();
            c.read_exact(&mut b).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

fn netem(dev: &str, pid: u32, n: pb::Netem) -> api::ApplyFaultRequest {
    api::ApplyFaultRequest {
        ttl_seconds: 600,
        lease_id: String::new(),
        target_pid: pid,
        fault: Some(api::apply_fault_request::Fault::SetTcs(pb::TcsRequest {
            tcs: vec![pb::Tc {
                r#type: pb::tc::Type::Netem as i32,
                netem: Some(n),
                device: dev.into(),
                ..Default::default()
            }],
            ..Default::default()
        })),
    }
}

fn delay(ms: &str) -> pb::Netem {
    pb::Netem {
        time: ms.into(),
        ..Default::default()
    }
}

#[tokio::test]
#[ignore = "VM tier: run by tests/run-all.sh"]
async fn netem_delay_on_both_ends_adds_200ms_round_trip() {
    let l = link("delay", 1);
    let state = tempfile::tempdir().unwrap();
    let mut d = DaemonProc::spawn(state.path(), &[]);
    let ch = d.ready().await;
    let base = median(&rtts(l.peer, 7));
    // The pod side (in its netns) and the host side (the host netns: a host-scoped fault).
    let a = faults(&ch)
        .apply_fault(netem("d0", l.ns.pid(), delay("100ms")))
        .await
        .unwrap()
        .into_inner();
    let b = faults(&ch)
        .apply_fault(netem(&l.ns.host_if, std::process::id(), delay("100ms")))
        .await
        .unwrap()
        .into_inner();
    let delayed = median(&rtts(l.peer, 7));
    let added = delayed - base;
    println!("VM netem delay 100ms each way: base_rtt_ms={base:.1} delayed_rtt_ms={delayed:.1} added_ms={added:.1}");
    assert!(
        (180.0..=220.0).contains(&added),
        "added {added:.1} ms, want 200 ± 10%"
    );
    for id in [a.id, b.id] {
        faults(&ch)
            .revoke_fault(api::RevokeFaultRequest { id })
            .await
            .unwrap();
    }
    let after = median(&rtts(l.peer, 7));
    assert!(after < base + 20.0, "delay not removed: {after:.1} ms");
    assert!(!l.ns.has_faultd_qdisc());
}

#[tokio::test]
#[ignore = "VM tier: run by tests/run-all.sh"]
async fn netem_loss_100_percent_blocks_and_recovers() {
    let l = link("loss", 2);
    let state = tempfile::tempdir().unwrap();
    let mut d = DaemonProc::spawn(state.path(), &[]);
    let ch = d.ready().await;
    connect(l.peer, Duration::from_secs(3)).expect("reachable before the fault");
    let f = faults(&ch)
        .apply_fault(netem(
            "d0",
            l.ns.pid(),
            pb::Netem {
                loss: 100.0,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        connect(l.peer, Duration::from_millis(1500)).is_err(),
        "100% loss must block"
    );
    faults(&ch)
        .revoke_fault(api::RevokeFaultRequest { id: f.id })
        .await
        .unwrap();
    connect(l.peer, Duration::from_secs(3)).expect("reachable after recover");
}

#[tokio::test]
#[ignore = "VM tier: run by tests/run-all.sh"]
async fn netem_jitter_and_rate_are_visible() {
    let l = link("jitter", 3);
    let state = tempfile::tempdir().unwrap();
    let mut d = DaemonProc::spawn(state.path(), &[]);
    let ch = d.ready().await;
    let base = median(&rtts(l.peer, 9));
    let f = faults(&ch)
        .apply_fault(netem(
            "d0",
            l.ns.pid(),
            pb::Netem {
                time: "50ms".into(),
                jitter: "20ms".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let samples = rtts(l.peer, 25);
    let (min, max) = samples
        .iter()
        .fold((f64::MAX, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
    let med = median(&samples) - base;
    println!("VM netem 50ms jitter 20ms: median_added_ms={med:.1} min_ms={min:.1} max_ms={max:.1}");
    // Centred on 50 ms; the upper bound leaves room for TCG's scheduling delay on a busy host
    // (one CI run measured 65.5 ms; the exact delay is checked by the 100 ms test above).
    assert!((40.0..=70.0).contains(&med), "median {med:.1}");
    assert!(
        max - min > 15.0,
        "jitter not visible: spread {:.1} ms",
        max - min
    );
    faults(&ch)
        .revoke_fault(api::RevokeFaultRequest { id: f.id })
        .await
        .unwrap();

    // rate: 8 Mbit/s from the netns side = 1 MiB in about 1.05 s.
    let f = faults(&ch)
        .apply_fault(netem(
            "d0",
            l.ns.pid(),
            pb::Netem {
                rate: "8mbit".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut c = connect(l.peer, Duration::from_secs(3)).unwrap();
    let t = Instant::now();
    c.write_all(b"b").unwrap();
    let mut buf = vec![0u8; 1 << 20];
    c.read_exact(&mut buf).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let mbit = (1u64 << 20) as f64 * 8.0 / secs / 1e6;
    println!("VM netem rate 8mbit: 1 MiB in {secs:.2} s = {mbit:.2} Mbit/s");
    assert!(
        (6.8..=9.2).contains(&mbit),
        "{mbit:.2} Mbit/s, want 8 ± 15%"
    );
    faults(&ch)
        .revoke_fault(api::RevokeFaultRequest { id: f.id })
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "VM tier: run by tests/run-all.sh"]
async fn prior_fq_codel_and_htb_roots_are_restored_exactly() {
    let l = link("restore", 4);
    let state = tempfile::tempdir().unwrap();
    let mut d = DaemonProc::spawn(state.path(), &[]);
    let ch = d.ready().await;
    for prior in [
        vec![
            "qdisc", "replace", "dev", "d0", "root", "handle", "5:", "fq_codel", "limit", "2000",
            "target", "3ms", "interval", "50ms",
        ],
        vec![
            "qdisc", "replace", "dev", "d0", "root", "handle", "1:", "htb", "default", "10", "r2q",
            "5",
        ],
    ] {
        l.ns.tc(&prior);
        let before = l.ns.qdisc_dump();
        let f = faults(&ch)
            .apply_fault(netem("d0", l.ns.pid(), delay("10ms")))
            .await
            .unwrap()
            .into_inner();
        assert!(
            l.ns.qdisc_dump().contains("netem fa01:"),
            "{}",
            l.ns.qdisc_dump()
        );
        faults(&ch)
            .revoke_fault(api::RevokeFaultRequest { id: f.id })
            .await
            .unwrap();
        let after = l.ns.qdisc_dump();
        println!("VM restore: before={before:?} after={after:?}");
        assert_eq!(after, before);
    }
}

#[tokio::test]
#[ignore = "VM tier: run by tests/run-all.sh"]
async fn kill_9_with_netem_active_then_restart_removes_it() {
    let l = link("crash", 5);
    let state = tempfile::tempdir().unwrap();
    let base = median(&rtts(l.peer, 5));
    {
        let mut d = DaemonProc::spawn(state.path(), &[]);
        let ch = d.ready().await;
        faults(&ch)
            .apply_fault(netem("d0", l.ns.pid(), delay("100ms")))
            .await
            .unwrap();
        assert!(median(&rtts(l.peer, 3)) > base + 80.0);
        d.kill9();
    }
    // The fault outlives the killed process only until the next start.
    assert!(l.ns.has_faultd_qdisc());
    let mut d = DaemonProc::spawn(state.path(), &[]);
    let ch = d.ready().await;
    assert!(!l.ns.has_faultd_qdisc(), "{}", l.ns.qdisc_dump());
    assert!(median(&rtts(l.peer, 5)) < base + 20.0);
    let list = faults(&ch)
        .list_faults(api::ListFaultsRequest {
            include_ended: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        list.faults.iter().any(|f| f.end_reason == "restart"),
        "{list:?}"
    );
}

/// Echo server on the host side at `ip` (one byte per ping).
fn host_echo(ip: &str) -> SocketAddr {
    let l = TcpListener::bind(format!("{ip}:0")).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                let _ = c.set_nodelay(true);
                let mut b = [0u8; 1];
                while c.read_exact(&mut b).is_ok() && c.write_all(&b).is_ok() {}
            });
        }
    });
    addr
}

/// Median RTT (ms) of pings sent from inside the netns to `to`.
fn rtt_from_netns(ns: &Netns, to: SocketAddr) -> f64 {
    let netns = Namespace::open(
        std::path::Path::new(&format!("/run/netns/{}", ns.name)),
        NsKind::Net,
    )
    .unwrap();
    let mut c = netns
        .run(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    c.set_nodelay(true).unwrap();
    let mut b = [0u8; 1];
    let samples: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            c.write_all(b"p").unwrap();
            c.read_exact(&mut b).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median(&samples)
}

#[tokio::test]
#[ignore = "VM tier: run by tests/run-all.sh"]
async fn ipset_filtered_delay_slows_only_the_selected_destination() {
    use faultd::engine::FaultMeta;
    use faultd::faults::firewall::{IpSet, Part};
    use faultd::faults::qdisc::{TcRule, TcRuleKind};
    let l = link("filter", 6);
    let o = std::process::Command::new("ip")
        .args(["addr", "add", "10.250.6.3/24", "dev", &l.ns.host_if])
        .output()
        .unwrap();
    assert!(o.status.success());
    let selected = host_echo("10.250.6.3");
    let other = host_echo("10.250.6.1");
    let qdisc_before = l.ns.qdisc_dump();
    let base_sel = rtt_from_netns(&l.ns, selected);
    let base_other = rtt_from_netns(&l.ns, other);

    // In-process engine: the same domain calls the FlushIPSets and SetTcs adapters make.
    let state = tempfile::tempdir().unwrap();
    let engine = faultd::faults::FaultEngine::open(
        state.path(),
        Duration::from_secs(600),
        std::sync::Arc::new(faultd::metrics::Metrics::new()),
    )
    .unwrap();
    let who = faultd::process::ProcessIdentity::of(l.ns.pid()).unwrap();
    let meta = FaultMeta {
        owner: "vm-test".into(),
        ..Default::default()
    };
    faultd::faults::firewall::set_firewall_for(
        &engine,
        who,
        Part::Sets(vec![IpSet {
            name: "chaos-tgt".into(),
            set_type: "hash:net".into(),
            cidrs: vec!["10.250.6.3/32".into()],
            cidr_and_ports: vec![],
            set_names: vec![],
        }]),
        &meta,
    )
    .await
    .unwrap();
    let rule = TcRule {
        kind: TcRuleKind::Netem(faultd::tc::netem::NetemArgs {
            time: "100ms".into(),
            ..Default::default()
        }),
        ipset: "chaos-tgt".into(),
        protocol: String::new(),
        device: "d0".into(),
    };
    faultd::faults::qdisc::set_tcs_for(&engine, who, &[rule], &meta)
        .await
        .unwrap();
    let dump = l.ns.qdisc_dump();
    assert!(
        dump.contains("prio fa01:") && dump.contains("netem fa02:"),
        "{dump}"
    );
    let sel = rtt_from_netns(&l.ns, selected) - base_sel;
    let oth = rtt_from_netns(&l.ns, other) - base_other;
    println!("VM ipset-filtered netem 100ms: selected +{sel:.1} ms, other +{oth:.1} ms");
    assert!(
        (85.0..=120.0).contains(&sel),
        "selected destination: +{sel:.1} ms"
    );
    assert!(
        oth < 20.0,
        "other destination must not be delayed: +{oth:.1} ms"
    );

    // Recover in the controller's order: tcs, then ipsets.
    faultd::faults::qdisc::set_tcs_for(&engine, who, &[], &meta)
        .await
        .unwrap();
    faultd::faults::firewall::set_firewall_for(&engine, who, Part::Sets(vec![]), &meta)
        .await
        .unwrap();
    assert_eq!(l.ns.qdisc_dump(), qdisc_before);
    let nft = std::process::Command::new("ip")
        .args(["netns", "exec", &l.ns.name, "nft", "list", "ruleset"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&nft.stdout).trim().is_empty(),
        "{}",
        String::from_utf8_lossy(&nft.stdout)
    );
    assert!(rtt_from_netns(&l.ns, selected) - base_sel < 20.0);
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// SetTcs with netem against upstream's shell-out sequence, client-observed, interleaved, in the
/// VM (the host kernel has no sch_netem). Both sides run under TCG emulation and the daemon is
/// this tier's debug build, so only the ratio means anything; the host benchmark
/// (`tests/bench/run.sh`) has the release numbers. Prints one `VM-BENCH {json}` line; asserts
/// only that every call worked and nothing is left behind.
#[tokio::test]
#[ignore = "VM tier: run by tests/run-all.sh"]
async fn settcs_netem_latency_against_upstream_shell_out() {
    let iters: usize = std::env::var("FAULTD_VM_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let l = link("vmbench", 6);
    let pid = l.ns.pid();
    let before = l.ns.qdisc_dump();
    let state = tempfile::tempdir().unwrap();
    let mut d = DaemonProc::spawn(state.path(), &[]);
    let ch = d.ready().await;
    let mut c = faults(&ch);
    let (mut fa, mut fr, mut ua, mut ur) = (vec![], vec![], vec![], vec![]);
    for i in 0..iters + 2 {
        let keep = i >= 2;
        let t = Instant::now();
        let f = c
            .apply_fault(netem("d0", pid, delay("100ms")))
            .await
            .unwrap()
            .into_inner();
        let a = t.elapsed();
        assert_eq!(f.phase, api::Phase::Applied as i32);
        let t = Instant::now();
        c.revoke_fault(api::RevokeFaultRequest { id: f.id })
            .await
            .unwrap();
        let r = t.elapsed();
        let t = Instant::now();
        upstream::set_one(pid, "d0", &["netem", "delay", "100ms"]).unwrap();
        let ua_i = t.elapsed();
        assert!(
            l.ns.qdisc_dump().contains("netem 1:"),
            "{}",
            l.ns.qdisc_dump()
        );
        let t = Instant::now();
        upstream::reset(pid).unwrap();
        let ur_i = t.elapsed();
        if keep {
            fa.push(a.as_secs_f64() * 1e3);
            fr.push(r.as_secs_f64() * 1e3);
            ua.push(ua_i.as_secs_f64() * 1e3);
            ur.push(ur_i.as_secs_f64() * 1e3);
        }
    }
    assert_eq!(l.ns.qdisc_dump(), before, "residue after the runs");
    let (fa, fr, ua, ur) = (p50(fa), p50(fr), p50(ua), p50(ur));
    // Straight to the process's stdout, past the test harness's capture, so the line lands in
    // the tier-3 log of a passing run too.
    let line = format!(
        "VM-BENCH {}\n",
        serde_json::json!({
            "what": "SetTcs netem delay 100ms on d0, client-observed p50 (admin socket), VM under TCG, debug build",
            "iterations": iters,
            "faultd_apply_ms": (fa * 100.0).round() / 100.0,
            "upstream_apply_ms": (ua * 100.0).round() / 100.0,
            "apply_ratio": (ua / fa * 10.0).round() / 10.0,
            "faultd_recover_ms": (fr * 100.0).round() / 100.0,
            "upstream_recover_ms": (ur * 100.0).round() / 100.0,
            "recover_ratio": (ur / fr * 10.0).round() / 10.0,
        })
    );
    let _ = std::io::stdout().write_all(line.as_bytes());
}
