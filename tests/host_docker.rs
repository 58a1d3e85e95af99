//! Host tier: `docker://` ids against a real Docker engine (Debian's docker.io, the private
//! dockerd `tests/env/docker/start-docker.sh` starts: its own containerd, no bridge, no iptables,
//! the busybox test image imported with `docker import`). Containers run with `--network none`;
//! a veth gives one an `eth0` where a device is needed. faultd runs as a child process with
//! `--runtime docker --runtime-socket-path <sock>` and is driven over the Chaos Mesh gRPC API with
//! mTLS: ContainerGetPid, ContainerKill, SetTcs (tbf) and recover, ExecStressors /
//! CancelStressors; and `faultd::runtime` in-process for the pod sandbox lookup and the `/proc`
//! fallback on Docker's cgroup layout.
//!
//! Every test is `#[ignore]`: `cargo test` skips them. `tests/run-all.sh` starts dockerd after
//! containerd and exports `FAULTD_TEST_DOCKER_SOCK` / `FAULTD_TEST_DOCKER_IMAGE`. By hand (root):
//!
//! ```text
//! tests/env/setup.sh && tests/env/docker/start-docker.sh
//! FAULTD_TEST_DOCKER_SOCK=/run/faultd-test/docker.sock FAULTD_TEST_DOCKER_IMAGE=faultd-testbox:latest \
//!   cargo test --test host_docker -- --ignored --test-threads=1
//! tests/env/docker/stop-docker.sh
//! ```
//!
//! Each test removes the containers it creates (`docker rm -f` in a `Drop` guard).
mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::docker::{self, Container};
use common::host::*;
use common::Pki;
use faultd::proto::pb;
use faultd::proto::pb::container_action::Action;
use faultd::runtime::{ErrorKind, RuntimeConfig, RuntimeKind, Runtimes};
use tonic::Code;

/// faultd pinned to the test dockerd, serving the Chaos Mesh API with mTLS on a free port.
fn spawn_faultd(state: &Path, pki: &Pki) -> Faultd {
    let s = docker::sock();
    Faultd::spawn_tls(
        state,
        free_port(),
        pki,
        &[
            "--runtime",
            "docker",
            "--runtime-socket-path",
            s.to_str().unwrap(),
        ],
    )
}

/// `docker://` and 64 hex digits no container has.
fn unknown_id() -> String {
    format!("docker://fa17d{:059x}", std::process::id())
}

fn docker_at(socket: &Path) -> RuntimeConfig {
    RuntimeConfig {
        runtime: Some(RuntimeKind::Docker),
        socket: Some(socket.to_path_buf()),
        ..RuntimeConfig::default()
    }
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh (needs the test dockerd)"]
async fn get_pid_matches_docker_inspect_and_kill_stops_the_container() {
    let pki = Pki::new();
    let state = tempfile::tempdir().unwrap();
    let mut d = spawn_faultd(state.path(), &pki);
    let (_admin, mut c) = d.ready().await;
    let victim = Container::run("kill", &[]);
    let other = Container::run("other", &[]);

    let pid = c
        .container_get_pid(kill_req(&victim.id(), Action::Getpid))
        .await
        .unwrap()
        .into_inner()
        .pid;
    assert_eq!(
        pid,
        victim.pid(),
        "GetPid must match docker inspect .State.Pid"
    );
    // Docker also resolves a unique prefix of the id (what `docker ps` shows).
    let short = format!("docker://{}", &victim.hex[..12]);
    let p = c
        .container_get_pid(kill_req(&short, Action::Getpid))
        .await
        .unwrap()
        .into_inner()
        .pid;
    assert_eq!(p, pid);
    assert_ne!(
        c.container_get_pid(kill_req(&other.id(), Action::Getpid))
            .await
            .unwrap()
            .into_inner()
            .pid,
        pid
    );

    // The action must say KILL.
    let e = c
        .container_kill(kill_req(&victim.id(), Action::Getpid))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(victim.running());

    let t0 = Instant::now();
    c.container_kill(kill_req(&victim.id(), Action::Kill))
        .await
        .unwrap();
    let rpc = t0.elapsed();
    wait_until(
        "docker reports the container stopped",
        Duration::from_secs(5),
        || !victim.running(),
    )
    .await;
    println!(
        "HOST docker ContainerKill: RPC {:.1} ms, State.Running false after {:.1} ms",
        rpc.as_secs_f64() * 1e3,
        t0.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(victim.inspect("{{.State.ExitCode}}"), "137", "SIGKILLed");
    assert!(other.running(), "only the target is killed");
    // A stopped container has no pid, and cannot be killed again.
    for e in [
        c.container_get_pid(kill_req(&victim.id(), Action::Getpid))
            .await
            .unwrap_err(),
        c.container_kill(kill_req(&victim.id(), Action::Kill))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(e.message().contains("not running"), "{}", e.message());
    }
    drop((_admin, c));
    d.stop().await;
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh (needs the test dockerd)"]
async fn bad_docker_ids_get_clear_statuses_and_the_daemon_keeps_serving() {
    let pki = Pki::new();
    let state = tempfile::tempdir().unwrap();
    let mut d = spawn_faultd(state.path(), &pki);
    let (_admin, mut c) = d.ready().await;
    let sock = docker::sock().display().to_string();
    let unknown = unknown_id();
    for (id, want) in [
        // Docker ids are hex (what the kubelet reports): a name is refused before any lookup.
        ("docker://nope", Code::InvalidArgument),
        ("docker://", Code::InvalidArgument),
        ("docker://../../containers/json", Code::InvalidArgument),
        (unknown.as_str(), Code::NotFound),
    ] {
        for e in [
            c.container_get_pid(kill_req(id, Action::Getpid))
                .await
                .unwrap_err(),
            c.container_kill(kill_req(id, Action::Kill))
                .await
                .unwrap_err(),
        ] {
            assert_eq!(e.code(), want, "{id:?}: {}", e.message());
            if want == Code::NotFound {
                assert!(
                    e.message().contains("not found in docker at") && e.message().contains(&sock),
                    "must name the runtime and its socket: {}",
                    e.message()
                );
            }
        }
    }
    let e = c
        .set_tcs(pb::TcsRequest {
            container_id: unknown.clone(),
            enter_ns: true,
            ..tbf_request("eth0", "1mbit")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = c
        .exec_stressors(cpu_request(&unknown, 10))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    // still serving
    let v = Container::run("alive", &[]);
    let pid = c
        .container_get_pid(kill_req(&v.id(), Action::Getpid))
        .await
        .unwrap()
        .into_inner()
        .pid;
    assert_eq!(pid, v.pid());
    drop((_admin, c));
    d.stop().await;
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh (needs the test dockerd)"]
async fn set_tcs_puts_a_tbf_in_the_container_netns_and_recover_restores_it() {
    let pki = Pki::new();
    let state = tempfile::tempdir().unwrap();
    let mut d = spawn_faultd(state.path(), &pki);
    let (admin, mut c) = d.ready().await;
    let victim = Container::run("tbf", &[]);
    let pid = victim.pid();
    let (host_if, _) = wire_eth0(pid, 3);
    let norm = |s: &str| {
        s.lines()
            .map(|l| l.split(" refcnt").next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let before = qdiscs_of(pid, "eth0");

    let t0 = Instant::now();
    c.set_tcs(pb::TcsRequest {
        container_id: victim.id(),
        enter_ns: true,
        ..tbf_request("eth0", "1mbit")
    })
    .await
    .unwrap();
    let took = t0.elapsed();
    let shaped = qdiscs_of(pid, "eth0");
    println!("HOST docker SetTcs tbf in {took:?}: {}", shaped.trim());
    assert!(
        shaped.contains("tbf fa01: root") && shaped.contains("rate 1Mbit"),
        "{shaped}"
    );
    let active = list(&admin, false).await;
    assert_eq!(active.len(), 1, "{active:?}");
    let target = active[0].target.as_ref().unwrap();
    assert_eq!(
        (target.pid, target.container_id.as_str()),
        (pid, victim.id().as_str())
    );
    assert_eq!(target.device, "eth0");
    // The host side of the veth is untouched: the qdisc went into the container's namespace.
    assert!(!run(&["tc", "qdisc", "show", "dev", &host_if]).contains("tbf"));

    // Recover: SetTcs with no rules.
    c.set_tcs(pb::TcsRequest {
        tcs: vec![],
        container_id: victim.id(),
        enter_ns: true,
        pod_uid: String::new(),
    })
    .await
    .unwrap();
    assert_eq!(norm(&qdiscs_of(pid, "eth0")), norm(&before));
    assert!(list(&admin, false).await.is_empty());
    assert!(victim.running());
    let _ = std::process::Command::new("ip")
        .args(["link", "del", &host_if])
        .output();
    drop((admin, c));
    d.stop().await;
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh (needs the test dockerd)"]
async fn cpu_stressor_runs_in_the_container_cgroup_and_cancel_stops_it() {
    let pki = Pki::new();
    let state = tempfile::tempdir().unwrap();
    let mut d = spawn_faultd(state.path(), &pki);
    let (admin, mut c) = d.ready().await;
    let victim = Container::run("cpu", &["--memory", "64m", "--cpus", "1"]);
    let cg = victim.cgroups();
    let target = victim.pid();
    assert!(
        cg.joins
            .iter()
            .any(|j| j.dir.to_string_lossy().contains(&victim.hex)),
        "Docker's cgroup of the container: {:?}",
        cg.joins
    );

    let t0 = Instant::now();
    let resp = c
        .exec_stressors(cpu_request(&victim.id(), 20))
        .await
        .unwrap()
        .into_inner();
    println!("HOST docker ExecStressors took {:?}", t0.elapsed());
    let worker: u32 = resp.cpu_instance.parse().unwrap();
    let who = faultd::process::ProcessIdentity::of(worker).unwrap();
    assert_eq!(who.start_time_ms, resp.cpu_start_time);
    let fault = &list(&admin, false).await[0];
    assert_eq!(fault.kind, "stress-cpu");
    assert_eq!(fault.target.as_ref().unwrap().pid, target);
    let pids = worker_pids(&[&fault.id]);
    assert_eq!(pids.len(), 2, "worker + 1 load process: {pids:?}");
    assert!(pids.contains(&worker));
    let procs = cgroup_procs(&cg);
    for p in &pids {
        assert!(
            procs.contains(p),
            "{p} not in the container's cgroup: {procs:?}"
        );
    }
    let load = *pids.iter().find(|&&p| p != worker).unwrap();
    assert_eq!(
        nspid(load).len(),
        2,
        "load process in the container's pid ns"
    );
    assert_eq!(nspid(target).len(), 2);

    let t0 = Instant::now();
    c.cancel_stressors(pb::CancelStressRequest {
        cpu_instance: resp.cpu_instance.clone(),
        cpu_start_time: resp.cpu_start_time,
        ..Default::default()
    })
    .await
    .unwrap();
    let gone = wait_until(
        "stress processes gone after cancel",
        Duration::from_secs(1),
        || worker_pids(&[&fault.id]).is_empty(),
    )
    .await;
    println!(
        "HOST docker CancelStressors: processes gone {:?} after the call",
        t0.elapsed().max(gone)
    );
    assert_eq!(
        cgroup_procs(&cg),
        vec![target],
        "only the container's own process is left"
    );
    assert!(victim.running(), "the container's own process survives");
    drop((admin, c));
    d.stop().await;
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh (needs the test dockerd)"]
async fn pod_sandbox_is_found_by_pod_uid() {
    let uid = uuid::Uuid::new_v4().to_string();
    let uid_label = format!("io.kubernetes.pod.uid={uid}");
    // As dockershim / cri-dockerd label them.
    let sandbox = Container::run(
        "sandbox",
        &[
            "--label",
            &uid_label,
            "--label",
            "io.kubernetes.docker.type=podsandbox",
        ],
    );
    let app = Container::run(
        "app",
        &[
            "--label",
            &uid_label,
            "--label",
            "io.kubernetes.docker.type=container",
        ],
    );
    let rt = Runtimes::new(docker_at(&docker::sock())).await;
    assert_eq!(rt.pid(&app.id()).await.unwrap().pid, app.pid());
    let sb = sandbox.pid();
    assert_eq!(rt.sandbox_pid(&uid).await.unwrap().pid, sb);
    // The app container crash-loops (its id is gone, or empty): the sandbox answers.
    assert_eq!(
        rt.pid_or_sandbox(&unknown_id(), &uid).await.unwrap().pid,
        sb
    );
    assert_eq!(rt.pid_or_sandbox("", &uid).await.unwrap().pid, sb);
    assert_eq!(
        rt.pid_or_sandbox(&app.id(), &uid).await.unwrap().pid,
        app.pid()
    );
    // Another pod, or a stopped sandbox: NotFound.
    let e = rt
        .sandbox_pid(&uuid::Uuid::new_v4().to_string())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    docker::docker_ok(&["kill", &sandbox.hex]);
    wait_until(
        "docker reports the sandbox stopped",
        Duration::from_secs(5),
        || !sandbox.running(),
    )
    .await;
    let e = rt.sandbox_pid(&uid).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh (needs the test dockerd)"]
async fn proc_fallback_finds_a_docker_container_when_the_socket_is_wrong() {
    let c = Container::run("fallback", &[]);
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtimes::new(docker_at(&dir.path().join("docker.sock"))).await;
    let who = rt.pid(&c.id()).await.unwrap();
    assert_eq!(
        who.pid,
        c.pid(),
        "found through Docker's cgroup path /docker/<id>"
    );
    assert_eq!(rt.cache_stats().proc_fallbacks.load(Ordering::Relaxed), 1);
    // Kill through the fallback: SIGKILL to the verified init stops the container.
    rt.kill(&c.id()).await.unwrap();
    wait_until(
        "docker reports the container stopped",
        Duration::from_secs(5),
        || !c.running(),
    )
    .await;
}
