//! Host tier: `faultd::runtime` against a real containerd (the private one `tests/run-all.sh`
//! starts at the k3s socket path, CRI plugin disabled) with containers made by the `ctr` CLI.
//!
//! Every test is `#[ignore]`: `cargo test` skips them. As root, with containerd up and the test
//! image imported in namespace `k8s.io`:
//!
//! ```text
//! FAULTD_TEST_CTR_SOCK=/run/k3s/containerd/containerd.sock \
//! FAULTD_TEST_IMAGE=docker.io/library/testbox:latest \
//!   cargo test --test host_runtime -- --ignored --test-threads=1 --nocapture
//! ```
//!
//! Each test creates uniquely named containers and removes them in a `Drop` guard, so a failing
//! test leaves nothing behind.
mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::ctr::{sock, unique, Container, K3S_SOCK};
use common::stats::percentile;
use faultd::process::ProcessIdentity;
use faultd::runtime::{ErrorKind, RuntimeConfig, RuntimeError, RuntimeKind, Runtimes};

fn pinned_config(socket: &Path) -> RuntimeConfig {
    RuntimeConfig {
        runtime: Some(RuntimeKind::Containerd),
        socket: Some(socket.to_path_buf()),
        ..RuntimeConfig::default()
    }
}

async fn pinned() -> Runtimes {
    Runtimes::new(pinned_config(&sock())).await
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn resolved_pid_equals_ctr_task_pid() {
    let c = Container::start("pid");
    let rt = pinned().await;
    let who = rt.pid(&c.id()).await.unwrap();
    assert_eq!(who.pid, c.pid());
    assert_eq!(who, ProcessIdentity::of(who.pid).unwrap());
    // Second lookup: from the cache, still the same process.
    assert_eq!(rt.pid(&c.id()).await.unwrap(), who);
    assert_eq!(rt.cache_stats().hits.load(Ordering::Relaxed), 1);
    assert_eq!(rt.cache_stats().misses.load(Ordering::Relaxed), 1);
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn kill_stops_the_task_within_a_second() {
    let c = Container::start("kill");
    let rt = pinned().await;
    let who = rt.pid(&c.id()).await.unwrap();
    let t0 = Instant::now();
    rt.kill(&c.id()).await.unwrap();
    loop {
        if c.task().is_some_and(|(_, s)| s == "STOPPED") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "task not STOPPED after 1 s: {:?}",
            c.task()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("kill → STOPPED in {:?}", t0.elapsed());
    assert!(!who.is_alive());
    // A stopped task has no pid to hand out; the cache must not resurrect the old one.
    let e = rt.pid(&c.id()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("not running"), "{e}");
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn sandbox_fallback_by_pod_uid() {
    let uid = uuid();
    let sandbox = Container::run("sandbox", &uid, "sandbox", &[]);
    // An app container of the same pod must not be mistaken for the sandbox.
    let app = Container::run("app", &uid, "container", &[]);
    let rt = pinned().await;
    let sb_pid = sandbox.pid();
    assert_ne!(sb_pid, app.pid());
    assert_eq!(rt.sandbox_pid(&uid).await.unwrap().pid, sb_pid);
    // The app container is crash-looping: its id is gone (or empty) → the sandbox answers.
    let gone = format!("containerd://{}", unique("gone"));
    assert_eq!(rt.pid_or_sandbox(&gone, &uid).await.unwrap().pid, sb_pid);
    assert_eq!(rt.pid_or_sandbox("", &uid).await.unwrap().pid, sb_pid);
    // When the container exists, it wins.
    assert_eq!(
        rt.pid_or_sandbox(&app.id(), &uid).await.unwrap().pid,
        app.pid()
    );
    // Unknown pod: NotFound.
    let e = rt.sandbox_pid(&uuid()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = rt.pid_or_sandbox(&gone, &uuid()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn discovers_the_k3s_socket_without_a_flag() {
    let c = Container::start("disc");
    let mut cfg = RuntimeConfig::default();
    if sock() != Path::new(K3S_SOCK) {
        // Not at the k3s path in this environment: probe the test socket instead.
        cfg.probe_paths.insert(0, (RuntimeKind::Containerd, sock()));
    }
    let rt = Runtimes::new(cfg).await;
    println!("discovered: {}", rt.describe());
    let first = rt.discovered().first().expect("something discovered");
    assert_eq!(first.kind, RuntimeKind::Containerd);
    assert_eq!(first.socket, sock());
    assert_eq!(
        first.to_string(),
        format!("containerd at {}", sock().display())
    );
    assert_eq!(rt.endpoint(RuntimeKind::Containerd).unwrap().socket, sock());
    assert_eq!(rt.pid(&c.id()).await.unwrap().pid, c.pid());
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn proc_fallback_when_the_configured_socket_is_wrong() {
    let c = Container::start("fallback");
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtimes::new(pinned_config(&dir.path().join("wrong.sock"))).await;
    assert!(rt.discovered().is_empty(), "{}", rt.describe());
    let who = rt.pid(&c.id()).await.unwrap();
    assert_eq!(who.pid, c.pid());
    assert_eq!(rt.cache_stats().proc_fallbacks.load(Ordering::Relaxed), 1);
    // Kill through the fallback: SIGKILL to the verified init stops the task.
    rt.kill(&c.id()).await.unwrap();
    let t0 = Instant::now();
    while c.task().is_none_or(|(_, s)| s != "STOPPED") {
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", c.task());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn a_reused_pid_in_the_cache_is_never_returned() {
    let c = Container::start("reuse");
    let rt = pinned().await;
    let real = rt.pid(&c.id()).await.unwrap();
    // The cache holds the container's PID but with another start time (what a reused PID looks
    // like): it must be evicted and re-resolved, never returned.
    let stale = ProcessIdentity {
        start_ticks: real.start_ticks.wrapping_sub(1),
        start_time_ms: real.start_time_ms - 1000,
        ..real
    };
    rt.cache_insert(&c.id(), stale).unwrap();
    assert_eq!(rt.pid(&c.id()).await.unwrap(), real);
    assert_eq!(rt.cache_stats().stale_evictions.load(Ordering::Relaxed), 1);
    // A cache entry pointing at a live, unrelated process (our own PID, wrong start time).
    let me = ProcessIdentity::of(std::process::id()).unwrap();
    rt.cache_insert(
        &c.id(),
        ProcessIdentity {
            start_ticks: me.start_ticks + 1,
            ..me
        },
    )
    .unwrap();
    assert_eq!(rt.pid(&c.id()).await.unwrap(), real);

    // The real thing: the container is recreated under the same name; the cached PID is dead.
    let name = c.name.clone();
    c.remove();
    std::mem::forget(c);
    let again = Container::run_named(&name, &[]);
    let fresh = rt.pid(&again.id()).await.unwrap();
    assert_ne!(fresh, real);
    assert_eq!(fresh.pid, again.pid());
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn bad_input_gets_the_right_error_kind() {
    let rt = pinned().await;
    for bad in [
        "",
        "containerd://",
        "containerd://../../etc/passwd",
        "containerd://a/b",
        "containerd://a\0b",
        "containerd://a b",
        "containerd://é",
        "crio://abc",
        "abc",
        "docker://not-hex",
    ] {
        let e = rt.pid(bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}: {e}");
        let e = rt.kill(bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}: {e}");
    }
    let e = rt.sandbox_pid("a,b").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);

    let name = unique("unknown");
    let e = rt.pid(&format!("containerd://{name}")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "container \"{name}\" not found in containerd at {} (namespace k8s.io)",
            sock().display()
        )
    );
    let e = rt.kill(&format!("containerd://{name}")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn stopped_containerd_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    // A socket file nobody listens on (containerd crashed), and a path that does not exist.
    let stale = dir.path().join("containerd.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    for socket in [stale, dir.path().join("missing.sock")] {
        let rt = Runtimes::new(pinned_config(&socket)).await;
        let id = format!("containerd://{}", unique("nothing"));
        let e = rt.pid(&id).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(matches!(e, RuntimeError::Unavailable { .. }));
        assert!(e.to_string().contains(&socket.display().to_string()), "{e}");
        let e = rt.kill(&id).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        let e = rt.sandbox_pid(&uuid()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    }
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn bench_pid_resolution() {
    const N: usize = 1000;
    let c = Container::start("bench");
    let rt = pinned().await;
    let want = rt.pid_uncached(&c.id()).await.unwrap();
    let mut direct = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        let who = rt.pid_uncached(&c.id()).await.unwrap();
        direct.push(t.elapsed());
        assert_eq!(who, want);
    }
    let mut cached = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        let who = rt.pid(&c.id()).await.unwrap();
        cached.push(t.elapsed());
        assert_eq!(who, want);
    }
    let dir = tempfile::tempdir().unwrap();
    let fb = Runtimes::new(pinned_config(&dir.path().join("none.sock"))).await;
    let mut scan = Vec::with_capacity(100);
    for _ in 0..100 {
        let t = Instant::now();
        assert_eq!(fb.pid_uncached(&c.id()).await.unwrap(), want);
        scan.push(t.elapsed());
    }
    let (d50, d99) = (percentile(&direct, 0.50), percentile(&direct, 0.99));
    let (c50, c99) = (percentile(&cached, 0.50), percentile(&cached, 0.99));
    let (s50, s99) = (percentile(&scan, 0.50), percentile(&scan, 0.99));
    println!("pid via containerd Tasks.Get ({N}x): p50 {d50:?} p99 {d99:?}");
    println!("pid via cache ({N}x):                p50 {c50:?} p99 {c99:?}");
    println!("pid via /proc cgroup scan (100x):    p50 {s50:?} p99 {s99:?}");
}
