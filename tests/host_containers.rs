//! Host tier (root; containerd from `tests/run-all.sh` at the k3s socket path): the Chaos Mesh
//! RPCs end to end through a faultd child process against real containers — ContainerGetPid,
//! ContainerKill, SetTcs on a container's eth0 (tbf measured as throughput) with a `faultd-ttl`
//! header, the sandbox fallback by pod uid, and bad input.
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::ctr::Container;
use common::host::*;
use faultd::proto::faultd::v1 as api;
use faultd::proto::pb;
use faultd::proto::pb::chaos_daemon_client::ChaosDaemonClient;
use tonic::transport::Channel;
use tonic::Code;

async fn chaos(addr: &str) -> ChaosDaemonClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(addr.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    ChaosDaemonClient::new(ch)
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn get_pid_and_kill_through_the_daemon() {
    let state = tempfile::tempdir().unwrap();
    // No --runtime flag: the k3s socket must be discovered.
    let (mut d, addr, _) = DaemonProc::spawn_tcp(state.path(), &[]);
    d.ready().await;
    let mut c = chaos(&addr).await;
    let victim = Container::run("kill", "uid-kill", "container", &[]);
    let pid = c
        .container_get_pid(kill_req(&victim.id(), pb::container_action::Action::Getpid))
        .await
        .unwrap()
        .into_inner()
        .pid;
    assert_eq!(pid, victim.pid(), "GetPid must match ctr task ls");

    let t0 = Instant::now();
    c.container_kill(kill_req(&victim.id(), pb::container_action::Action::Kill))
        .await
        .unwrap();
    while victim.task().is_some_and(|(_, s)| s != "STOPPED") {
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "task not stopped within 1 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "HOST ContainerKill stopped the task in {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    // The action must say KILL.
    let other = Container::run("kill2", "uid-kill2", "container", &[]);
    let e = c
        .container_kill(kill_req(&other.id(), pb::container_action::Action::Getpid))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(other.task().unwrap().1, "RUNNING");
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn bad_container_ids_get_clear_statuses_and_the_daemon_keeps_serving() {
    let state = tempfile::tempdir().unwrap();
    let (mut d, addr, _) = DaemonProc::spawn_tcp(state.path(), &[]);
    d.ready().await;
    let mut c = chaos(&addr).await;
    for (id, want) in [
        ("", Code::InvalidArgument),
        ("containerd://", Code::InvalidArgument),
        ("containerd://../../etc/passwd", Code::InvalidArgument),
        ("containerd://a/b", Code::InvalidArgument),
        ("rkt://0123abcd", Code::InvalidArgument),
        ("0123abcd", Code::InvalidArgument),
        ("docker://not-hex!", Code::InvalidArgument),
        ("containerd://no-such-container-0123", Code::NotFound),
    ] {
        let e = c
            .container_get_pid(kill_req(id, pb::container_action::Action::Getpid))
            .await
            .unwrap_err();
        assert_eq!(e.code(), want, "{id:?}: {}", e.message());
        let e = c
            .container_kill(kill_req(id, pb::container_action::Action::Kill))
            .await
            .unwrap_err();
        assert_eq!(e.code(), want, "{id:?}: {}", e.message());
        if want == Code::NotFound {
            assert!(
                e.message().contains("containerd") && e.message().contains(".sock"),
                "must name runtime and socket: {}",
                e.message()
            );
        }
    }
    // still serving
    let v = Container::run("alive", "uid-alive", "container", &[]);
    c.container_get_pid(kill_req(&v.id(), pb::container_action::Action::Getpid))
        .await
        .unwrap();
}

/// Bytes per second the container can push to the host for `secs`.
fn container_egress_rate(pid: u32, host_ip: &str, secs: f64) -> f64 {
    let listener = TcpListener::bind(format!("{host_ip}:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let rx = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        let mut total = 0usize;
        let t0 = Instant::now();
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        (total, t0.elapsed())
    });
    // A socket created inside the container's netns sends through its eth0.
    let ns = faultd::ns::Namespace::of_pid(pid, faultd::ns::NsKind::Net).unwrap();
    let mut s: TcpStream = ns.run(move || TcpStream::connect(addr)).unwrap().unwrap();
    let chunk = vec![1u8; 16384];
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < secs {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    drop(s);
    let (total, took) = rx.join().unwrap();
    total as f64 / took.as_secs_f64()
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn set_tcs_tbf_on_a_container_is_measured_and_expires_with_the_ttl_header() {
    let state = tempfile::tempdir().unwrap();
    let (mut d, addr, _) = DaemonProc::spawn_tcp(state.path(), &[]);
    let admin = d.ready().await;
    let mut c = chaos(&addr).await;
    let victim = Container::run("tbf", "uid-tbf", "container", &[]);
    let (host_if, host_ip) = wire_eth0(victim.pid(), 1);
    let free = container_egress_rate(victim.pid(), &host_ip, 1.0);

    let mut req = tonic::Request::new(pb::TcsRequest {
        tcs: vec![pb::Tc {
            r#type: pb::tc::Type::Bandwidth as i32,
            tbf: Some(pb::Tbf {
                rate: "8mbit".into(),
                limit: 100_000,
                buffer: 10_000,
                peak_rate: 0,
                min_burst: 0,
            }),
            ..Default::default() // device "" = eth0, as the controller sends it
        }],
        container_id: victim.id(),
        enter_ns: true,
        pod_uid: "uid-tbf".into(),
    });
    req.metadata_mut()
        .insert("faultd-ttl", "8s".parse().unwrap());
    req.metadata_mut().insert(
        "namespaced-name",
        "default/bandwidth-chaos".parse().unwrap(),
    );
    let t0 = Instant::now();
    c.set_tcs(req).await.unwrap();
    let shaped = container_egress_rate(victim.pid(), &host_ip, 3.0);
    let want = 8e6 / 8.0;
    println!(
        "HOST tbf 8mbit on container eth0: unshaped {:.1} MB/s, shaped {:.3} MB/s ({:+.1}%)",
        free / 1e6,
        shaped / 1e6,
        (shaped / want - 1.0) * 100.0
    );
    // The shaper holds the rate (never more than 10% above it); below it, a sender starved of
    // CPU on a busy 2-vCPU machine measures short (-12% seen under a load average of 4-5), so
    // the floor is looser: still two orders of magnitude under the unshaped rate.
    let ratio = shaped / want;
    assert!(
        (0.75..=1.10).contains(&ratio),
        "shaped {shaped:.0} B/s, want {want:.0} (-25% .. +10%)"
    );

    let list = faults(&admin)
        .list_faults(api::ListFaultsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let f = list
        .faults
        .iter()
        .find(|f| {
            f.target
                .as_ref()
                .is_some_and(|t| t.container_id == victim.id())
        })
        .expect("fault listed");
    let ttl = f.deadline_unix_ms - f.created_unix_ms;
    assert!(
        (7_900..=8_100).contains(&ttl),
        "faultd-ttl header gives the deadline: {ttl} ms"
    );
    assert_eq!(f.target.as_ref().unwrap().device, "eth0");

    // The daemon alone ends it at the deadline.
    let ns_has_tbf = || qdiscs_of(victim.pid(), "eth0").contains("tbf fa01:");
    assert!(ns_has_tbf());
    while ns_has_tbf() {
        assert!(t0.elapsed() < Duration::from_secs(10), "not expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = container_egress_rate(victim.pid(), &host_ip, 1.0);
    assert!(
        after > want * 3.0,
        "unshaped again after expiry: {after:.0} B/s"
    );
    let _ = std::process::Command::new("ip")
        .args(["link", "del", &host_if])
        .output();
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn set_tcs_falls_back_to_the_pod_sandbox_and_empty_list_recovers() {
    let state = tempfile::tempdir().unwrap();
    let (mut d, addr, _) = DaemonProc::spawn_tcp(state.path(), &[]);
    let admin = d.ready().await;
    let mut c = chaos(&addr).await;
    let sandbox = Container::run("sbx", "uid-sbx", "sandbox", &[]);
    let (host_if, _) = wire_eth0(sandbox.pid(), 2);
    let before = qdiscs_of(sandbox.pid(), "eth0");
    let tbf = pb::Tc {
        r#type: pb::tc::Type::Bandwidth as i32,
        tbf: Some(pb::Tbf {
            rate: "1mbit".into(),
            limit: 20_000,
            buffer: 10_000,
            peak_rate: 0,
            min_burst: 0,
        }),
        ..Default::default()
    };
    // The app container is gone (CrashLoopBackOff): its id resolves to nothing.
    c.set_tcs(pb::TcsRequest {
        tcs: vec![tbf],
        container_id: "containerd://crashed-app-0123".into(),
        enter_ns: true,
        pod_uid: "uid-sbx".into(),
    })
    .await
    .unwrap();
    let list = faults(&admin)
        .list_faults(api::ListFaultsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.faults.len(), 1);
    assert_eq!(list.faults[0].target.as_ref().unwrap().pid, sandbox.pid());
    // Without pod_uid there is no fallback.
    let e = c
        .set_tcs(pb::TcsRequest {
            tcs: vec![],
            container_id: "containerd://crashed-app-0123".into(),
            enter_ns: true,
            pod_uid: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Empty desired state = recover: exactly the qdiscs that were there before.
    c.set_tcs(pb::TcsRequest {
        tcs: vec![],
        container_id: "containerd://crashed-app-0123".into(),
        enter_ns: true,
        pod_uid: "uid-sbx".into(),
    })
    .await
    .unwrap();
    let after = qdiscs_of(sandbox.pid(), "eth0");
    let norm = |s: &str| {
        s.lines()
            .map(|l| l.split(" refcnt").next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(norm(&after), norm(&before));
    let list = faults(&admin)
        .list_faults(api::ListFaultsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.faults.is_empty());
    let _ = std::process::Command::new("ip")
        .args(["link", "del", &host_if])
        .output();
}
