//! Unit tests of the registry against fake runtimes (HTTP servers and a tonic containerd on unix
//! sockets in a temp dir) and fake procfs trees.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::StatusCode;
use tokio::net::UnixListener;

use super::procfs::fake;
use super::unix_http::fake_server;
use super::*;

const HEX: &str = "4c8a3a7b2f0e9d1c6b5a4e3f2d1c0b9a8f7e6d5c4b3a29180716253443526170";
const HEX2: &str = "99aa3a7b2f0e9d1c6b5a4e3f2d1c0b9a8f7e6d5c4b3a29180716253443526170";
const UID: &str = "0f3c1a9e-7c1d-4a0e-9d59-1f3e1d2c3b4a";

fn cfg(dir: &Path, probes: Vec<(RuntimeKind, PathBuf)>) -> RuntimeConfig {
    RuntimeConfig {
        probe_paths: probes,
        proc_root: dir.join("proc"),
        timeout: Duration::from_secs(2),
        ..RuntimeConfig::default()
    }
}

fn proc_tree(dir: &Path) -> PathBuf {
    let root = dir.join("proc");
    std::fs::create_dir_all(&root).unwrap();
    fake::init(&root);
    root
}

#[test]
fn kinds_and_defaults() {
    assert_eq!("crio".parse::<RuntimeKind>().unwrap(), RuntimeKind::Crio);
    assert_eq!("cri-o".parse::<RuntimeKind>().unwrap(), RuntimeKind::Crio);
    assert_eq!(
        "docker".parse::<RuntimeKind>().unwrap(),
        RuntimeKind::Docker
    );
    assert_eq!(
        "containerd".parse::<RuntimeKind>().unwrap(),
        RuntimeKind::Containerd
    );
    assert!("rkt".parse::<RuntimeKind>().is_err());
    let p = default_probe_paths();
    let names: Vec<String> = p.iter().map(|(_, p)| p.display().to_string()).collect();
    assert_eq!(
        names,
        [
            "/run/k3s/containerd/containerd.sock",
            "/run/containerd/containerd.sock",
            "/var/snap/microk8s/common/run/containerd.sock",
            "/var/run/crio/crio.sock",
            "/var/run/docker.sock",
            "/host-run/containerd.sock",
            "/host-run/crio.sock",
            "/host-run/docker.sock",
        ]
    );
    assert_eq!(p[6].0, RuntimeKind::Crio);
    assert_eq!(
        RuntimeKind::guess_from_socket(Path::new("/host-run/containerd.sock")),
        Some(RuntimeKind::Containerd)
    );
    assert_eq!(RuntimeKind::guess_from_socket(Path::new("/x/y.sock")), None);
}

#[tokio::test]
async fn discovery_follows_probe_order_and_skips_dead_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _k3s = UnixListener::bind(d.join("k3s.sock")).unwrap();
    let _plain = UnixListener::bind(d.join("containerd.sock")).unwrap();
    let _docker = UnixListener::bind(d.join("docker.sock")).unwrap();
    // A socket file nobody listens on (crashed runtime) and a missing path.
    drop(UnixListener::bind(d.join("stale-crio.sock")).unwrap());
    let probes = vec![
        (RuntimeKind::Containerd, d.join("missing.sock")),
        (RuntimeKind::Containerd, d.join("k3s.sock")),
        (RuntimeKind::Containerd, d.join("containerd.sock")),
        (RuntimeKind::Crio, d.join("stale-crio.sock")),
        (RuntimeKind::Docker, d.join("docker.sock")),
    ];
    let rt = Runtimes::new(cfg(d, probes)).await;
    let found: Vec<String> = rt.discovered().iter().map(ToString::to_string).collect();
    assert_eq!(
        found,
        [
            format!("containerd at {}", d.join("k3s.sock").display()),
            format!("containerd at {}", d.join("containerd.sock").display()),
            format!("docker at {}", d.join("docker.sock").display()),
        ]
    );
    assert_eq!(rt.describe(), found.join(", "));
    let c = rt.endpoint(RuntimeKind::Containerd).unwrap();
    assert_eq!(c.socket, d.join("k3s.sock"));
    assert_eq!(c.namespace.as_deref(), Some("k8s.io"));
    assert!(rt.endpoint(RuntimeKind::Crio).is_none());
    assert_eq!(rt.endpoint(RuntimeKind::Docker).unwrap().namespace, None);
}

#[tokio::test]
async fn explicit_runtime_and_socket_skip_discovery_for_that_kind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _k3s = UnixListener::bind(d.join("k3s.sock")).unwrap();
    let _mine = UnixListener::bind(d.join("mine.sock")).unwrap();
    let _docker = UnixListener::bind(d.join("docker.sock")).unwrap();
    let probes = vec![
        (RuntimeKind::Containerd, d.join("k3s.sock")),
        (RuntimeKind::Docker, d.join("docker.sock")),
    ];
    let mut c = cfg(d, probes.clone());
    c.runtime = Some(RuntimeKind::Containerd);
    c.socket = Some(PathBuf::from(format!(
        "unix://{}",
        d.join("mine.sock").display()
    )));
    c.containerd_ns = "custom".into();
    let rt = Runtimes::new(c).await;
    let at = rt.endpoint(RuntimeKind::Containerd).unwrap();
    assert_eq!(at.socket, d.join("mine.sock"));
    assert_eq!(
        at.to_string(),
        format!(
            "containerd at {} (namespace custom)",
            d.join("mine.sock").display()
        )
    );
    assert_eq!(rt.discovered().len(), 2, "{}", rt.describe());
    assert_eq!(rt.discovered()[0].socket, d.join("mine.sock"));
    assert_eq!(rt.discovered()[1].kind, RuntimeKind::Docker);

    // --runtime crio with nothing found: Chaos Mesh's default path is used (and retried).
    let mut c = cfg(d, probes.clone());
    c.runtime = Some(RuntimeKind::Crio);
    let rt = Runtimes::new(c).await;
    assert_eq!(
        rt.endpoint(RuntimeKind::Crio).unwrap().socket,
        Path::new("/var/run/crio/crio.sock")
    );
    assert_eq!(
        rt.endpoint(RuntimeKind::Containerd).unwrap().socket,
        d.join("k3s.sock")
    );

    // A socket without --runtime: kind from the file name.
    let mut c = cfg(d, vec![]);
    c.socket = Some(d.join("docker.sock"));
    let rt = Runtimes::new(c).await;
    assert_eq!(
        rt.endpoint(RuntimeKind::Docker).unwrap().socket,
        d.join("docker.sock")
    );
    assert!(rt.endpoint(RuntimeKind::Containerd).is_none());
}

// ---------------------------------------------------------------- Docker

fn docker_handler(pid: Arc<AtomicU32>) -> Arc<fake_server::Handler> {
    Arc::new(move |method: &str, pq: &str| {
        let p = pid.load(Ordering::SeqCst);
        match (method, pq) {
            ("GET", q) if q == format!("/containers/{HEX}/json") => (
                StatusCode::OK,
                format!(r#"{{"Id":"{HEX}","State":{{"Status":"running","Pid":{p}}}}}"#),
            ),
            ("GET", q) if q == format!("/containers/{HEX2}/json") => (
                StatusCode::OK,
                format!(r#"{{"Id":"{HEX2}","State":{{"Status":"exited","Pid":0}}}}"#),
            ),
            ("POST", q) if q == format!("/containers/{HEX}/kill?signal=SIGKILL") => {
                (StatusCode::NO_CONTENT, String::new())
            }
            ("POST", q) if q == format!("/containers/{HEX2}/kill?signal=SIGKILL") => (
                StatusCode::CONFLICT,
                format!(r#"{{"message":"Container {HEX2} is not running"}}"#),
            ),
            ("GET", q) if q.starts_with("/containers/json?filters=") => {
                let want = super::unix_http::query_escape(&format!("io.kubernetes.pod.uid={UID}"));
                if q.contains(&want) && q.contains("podsandbox") {
                    (
                        StatusCode::OK,
                        format!(r#"[{{"Id":"{HEX2}","Created":1}},{{"Id":"{HEX}","Created":5}}]"#),
                    )
                } else {
                    (StatusCode::OK, "[]".into())
                }
            }
            (_, q) => (
                StatusCode::NOT_FOUND,
                format!(r#"{{"message":"No such container: {q}"}}"#),
            ),
        }
    })
}

#[tokio::test]
async fn docker_pid_kill_sandbox_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = proc_tree(d);
    fake::process(
        &root,
        4242,
        1,
        100,
        &fake::cgroup_at(&format!("/docker/{HEX}")),
    );
    let srv = fake_server::start(
        d,
        "docker.sock",
        docker_handler(Arc::new(AtomicU32::new(4242))),
    );
    let rt = Runtimes::new(cfg(d, vec![(RuntimeKind::Docker, srv.socket.clone())])).await;

    let who = rt.pid(&format!("docker://{HEX}")).await.unwrap();
    assert_eq!((who.pid, who.start_ticks), (4242, 100));
    assert_eq!(
        srv.requests.lock().unwrap()[0],
        format!("GET /containers/{HEX}/json docker")
    );

    let e = rt.pid(&format!("docker://{HEX2}")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("not running"), "{e}");

    let unknown = "abcdef";
    let e = rt.pid(&format!("docker://{unknown}")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(
        e.to_string(),
        format!(
            "container \"{unknown}\" not found in docker at {}",
            srv.socket.display()
        )
    );

    rt.kill(&format!("docker://{HEX}")).await.unwrap();
    assert!(srv.requests.lock().unwrap().contains(&format!(
        "POST /containers/{HEX}/kill?signal=SIGKILL docker"
    )));
    let e = rt.kill(&format!("docker://{HEX2}")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = rt.kill(&format!("docker://{unknown}")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // Sandbox: newest running first (HEX, created 5); HEX2 is skipped anyway (pid 0).
    let who = rt.sandbox_pid(UID).await.unwrap();
    assert_eq!(who.pid, 4242);
    let e = rt
        .sandbox_pid("11111111-2222-3333-4444-555555555555")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = rt.sandbox_pid("bad\"uid").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);

    // A container that is gone falls back to its pod's sandbox; so does an empty id.
    let who = rt
        .pid_or_sandbox(&format!("docker://{unknown}"), UID)
        .await
        .unwrap();
    assert_eq!(who.pid, 4242);
    let who = rt.pid_or_sandbox("", UID).await.unwrap();
    assert_eq!(who.pid, 4242);
    let e = rt.pid_or_sandbox("", "").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = rt
        .pid_or_sandbox("", "11111111-2222-3333-4444-555555555555")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(matches!(e, RuntimeError::NoPid { .. }));

    // Routing is by prefix: a containerd id never goes to Docker. No containerd is known, so
    // that kind is unavailable.
    let before = srv.requests.lock().unwrap().len();
    let e = rt.pid("containerd://web").await;
    assert_eq!(e.unwrap_err().kind(), ErrorKind::Unavailable);
    assert_eq!(srv.requests.lock().unwrap().len(), before);
}

#[tokio::test]
async fn pid_cache_revalidates_start_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = proc_tree(d);
    let cg = fake::cgroup_at(&format!("/docker/{HEX}"));
    fake::process(&root, 4242, 1, 100, &cg);
    let pid = Arc::new(AtomicU32::new(4242));
    let srv = fake_server::start(d, "docker.sock", docker_handler(pid.clone()));
    let rt = Runtimes::new(cfg(d, vec![(RuntimeKind::Docker, srv.socket.clone())])).await;
    let id = format!("docker://{HEX}");
    let asked = || srv.requests.lock().unwrap().len();

    let first = rt.pid(&id).await.unwrap();
    assert_eq!(asked(), 1);
    let again = rt.pid(&id).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(asked(), 1, "second lookup must come from the cache");
    let s = rt.cache_stats();
    assert_eq!(
        (
            s.hits.load(Ordering::Relaxed),
            s.misses.load(Ordering::Relaxed)
        ),
        (1, 1)
    );

    // The container restarted: PID 4242 was reused by an unrelated process (new start time)
    // and the container's init is now 5000.
    fake::process(&root, 4242, 1, 900, "0::/user.slice\n");
    fake::process(&root, 5000, 1, 800, &cg);
    pid.store(5000, Ordering::SeqCst);
    let now = rt.pid(&id).await.unwrap();
    assert_eq!((now.pid, now.start_ticks), (5000, 800));
    assert_eq!(
        asked(),
        2,
        "a stale entry must send the lookup to the runtime"
    );
    assert_eq!(s.stale_evictions.load(Ordering::Relaxed), 1);

    // Same PID, new start time, runtime still reports that PID: the fresh identity is returned.
    fake::process(&root, 5000, 1, 801, &cg);
    let now = rt.pid(&id).await.unwrap();
    assert_eq!(now.start_ticks, 801);
    assert_eq!(asked(), 3);

    // A planted entry with a wrong start time is never returned.
    rt.cache_insert(
        &id,
        ProcessIdentity {
            start_ticks: 1,
            ..now
        },
    )
    .unwrap();
    assert_eq!(rt.pid(&id).await.unwrap().start_ticks, 801);
    assert_eq!(asked(), 4);
}

#[tokio::test]
async fn proc_fallback_when_runtime_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = proc_tree(d);
    fake::process(&root, 70, 1, 50, "0::/system.slice/containerd.service\n");
    fake::process(
        &root,
        71,
        70,
        60,
        &fake::cgroup_at(&format!("/system.slice/docker-{HEX}.scope")),
    );
    fake::process(
        &root,
        72,
        71,
        61,
        &fake::cgroup_at(&format!("/system.slice/docker-{HEX}.scope")),
    );
    // Docker pinned to a socket where nothing listens.
    let mut c = cfg(d, vec![]);
    c.runtime = Some(RuntimeKind::Docker);
    c.socket = Some(d.join("dead.sock"));
    let rt = Runtimes::new(c).await;
    assert!(rt.discovered().is_empty());
    let who = rt.pid(&format!("docker://{HEX}")).await.unwrap();
    assert_eq!((who.pid, who.start_ticks), (71, 60));
    assert_eq!(rt.cache_stats().proc_fallbacks.load(Ordering::Relaxed), 1);

    let e = rt.pid(&format!("docker://{HEX2}")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("docker at {}", d.join("dead.sock").display())),
        "{msg}"
    );
    assert!(msg.contains("no process under"), "{msg}");

    // No runtime of that kind at all: Unavailable naming what was probed.
    let rt = Runtimes::new(cfg(d, vec![(RuntimeKind::Crio, d.join("nope.sock"))])).await;
    let e = rt.pid(&format!("cri-o://{HEX2}")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.to_string().contains("nope.sock"), "{e}");
    // ... but the /proc fallback still finds containers of that kind.
    assert_eq!(rt.pid(&format!("docker://{HEX}")).await.unwrap().pid, 71);
}

// ---------------------------------------------------------------- CRI-O

#[tokio::test]
async fn crio_pid_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = proc_tree(d);
    fake::process(
        &root,
        3000,
        2999,
        10,
        &fake::cgroup_at(&format!(
            "/kubepods.slice/kubepods-pod1.slice/crio-{HEX}.scope"
        )),
    );
    fake::process(&root, 3100, 1, 10, "0::/user.slice\n");
    let handler: Arc<fake_server::Handler> = Arc::new(|_m: &str, pq: &str| {
        if pq == format!("/containers/{HEX}") {
            (
                StatusCode::OK,
                r#"{"pid":3000,"image":"x","labels":{}}"#.into(),
            )
        } else if pq == format!("/containers/{HEX2}") {
            // A stopped container whose old PID now belongs to someone else.
            (StatusCode::OK, r#"{"pid":3100}"#.into())
        } else if pq == "/containers/abc" {
            (StatusCode::OK, r#"{"pid":0}"#.into())
        } else {
            (
                StatusCode::NOT_FOUND,
                "container with id: x not found".into(),
            )
        }
    });
    let srv = fake_server::start(d, "crio.sock", handler);
    let rt = Runtimes::new(cfg(d, vec![(RuntimeKind::Crio, srv.socket.clone())])).await;
    let who = rt.pid(&format!("cri-o://{HEX}")).await.unwrap();
    assert_eq!(who.pid, 3000);
    assert_eq!(
        srv.requests.lock().unwrap()[0],
        format!("GET /containers/{HEX} crio")
    );
    let e = rt.pid(&format!("cri-o://{HEX2}")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = rt.pid("cri-o://abc").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = rt.pid("cri-o://abcd").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "container \"abcd\" not found in cri-o at {}",
            srv.socket.display()
        )
    );
    // Kill refuses the PID that is not in the container's cgroup (never signals PID 3100).
    let e = rt.kill(&format!("cri-o://{HEX2}")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = rt.sandbox_pid(UID).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
}

#[tokio::test]
async fn crio_kill_signals_the_verified_pid() {
    // A real child process in a cgroup-less setting: fake the cgroup by a proc root whose
    // entries are symlinks to the real /proc/<pid> except for a fake `cgroup` file.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = child.id();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("proc");
    std::fs::create_dir_all(root.join(pid.to_string())).unwrap();
    std::fs::copy("/proc/stat", root.join("stat")).unwrap();
    std::fs::copy(
        format!("/proc/{pid}/stat"),
        root.join(pid.to_string()).join("stat"),
    )
    .unwrap();
    std::fs::write(
        root.join(pid.to_string()).join("cgroup"),
        format!("0::/crio-{HEX}.scope\n"),
    )
    .unwrap();
    let body = format!(r#"{{"pid":{pid}}}"#);
    let srv = fake_server::start(
        d,
        "crio.sock",
        Arc::new(move |_: &str, _: &str| (StatusCode::OK, body.clone())),
    );
    let rt = Runtimes::new(cfg(d, vec![(RuntimeKind::Crio, srv.socket.clone())])).await;
    rt.kill(&format!("cri-o://{HEX}")).await.unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
}

// ---------------------------------------------------------------- containerd (fake gRPC)

mod fake_containerd {
    use super::*;
    use crate::proto::containerd::services::containers::v1 as c;
    use crate::proto::containerd::services::tasks::v1 as t;
    use crate::proto::containerd::v1::types::{Process, Status as TaskStatus};
    use tonic::{Request, Response, Status};

    /// (id, labels, created seconds)
    pub type FakeContainer = (String, Vec<(String, String)>, i64);

    #[derive(Default)]
    pub struct State {
        /// container id → (pid, status)
        pub tasks: Mutex<std::collections::HashMap<String, (u32, TaskStatus)>>,
        pub containers: Mutex<Vec<FakeContainer>>,
        pub kills: Mutex<Vec<(String, u32, bool)>>,
        pub filters: Mutex<Vec<String>>,
        pub namespaces: Mutex<Vec<String>>,
        pub calls: AtomicU64,
    }

    #[derive(Clone)]
    pub struct Fake(pub Arc<State>);

    impl Fake {
        fn ns<T>(&self, r: &Request<T>) -> Result<(), Status> {
            self.0.calls.fetch_add(1, Ordering::SeqCst);
            let ns = r
                .metadata()
                .get("containerd-namespace")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            self.0.namespaces.lock().unwrap().push(ns.clone());
            if ns.is_empty() {
                return Err(Status::failed_precondition("namespace is required"));
            }
            Ok(())
        }
    }

    #[tonic::async_trait]
    impl t::tasks_server::Tasks for Fake {
        async fn get(&self, r: Request<t::GetRequest>) -> Result<Response<t::GetResponse>, Status> {
            self.ns(&r)?;
            let id = r.into_inner().container_id;
            match self.0.tasks.lock().unwrap().get(&id) {
                Some((pid, st)) => Ok(Response::new(t::GetResponse {
                    process: Some(Process {
                        container_id: id.clone(),
                        pid: *pid,
                        status: *st as i32,
                        ..Default::default()
                    }),
                })),
                None => Err(Status::not_found(format!(
                    "container \"{id}\" in namespace \"k8s.io\": not found"
                ))),
            }
        }
        async fn kill(&self, r: Request<t::KillRequest>) -> Result<Response<()>, Status> {
            self.ns(&r)?;
            let k = r.into_inner();
            if !self.0.tasks.lock().unwrap().contains_key(&k.container_id) {
                return Err(Status::not_found("no such task"));
            }
            self.0
                .kills
                .lock()
                .unwrap()
                .push((k.container_id, k.signal, k.all));
            Ok(Response::new(()))
        }
    }

    #[tonic::async_trait]
    impl c::containers_server::Containers for Fake {
        async fn get(
            &self,
            _r: Request<c::GetContainerRequest>,
        ) -> Result<Response<c::GetContainerResponse>, Status> {
            Err(Status::unimplemented("unused"))
        }
        async fn list(
            &self,
            r: Request<c::ListContainersRequest>,
        ) -> Result<Response<c::ListContainersResponse>, Status> {
            self.ns(&r)?;
            let filters = r.into_inner().filters;
            self.0.filters.lock().unwrap().extend(filters.clone());
            // Understands exactly the sandbox filter faultd sends.
            let f = filters.first().cloned().unwrap_or_default();
            let containers = self
                .0
                .containers
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, labels, _)| {
                    labels.iter().all(|(k, v)| {
                        f.contains(&format!("labels.\"{k}\"=={v}"))
                            || f.contains(&format!("labels.\"{k}\"==\"{v}\""))
                    }) && !labels.is_empty()
                })
                .map(|(id, labels, created)| c::Container {
                    id: id.clone(),
                    labels: labels.iter().cloned().collect(),
                    created_at: Some(prost_types::Timestamp {
                        seconds: *created,
                        nanos: 0,
                    }),
                    ..Default::default()
                })
                .collect();
            Ok(Response::new(c::ListContainersResponse { containers }))
        }
    }

    /// Serves the fake on `socket` until the returned sender is dropped/fired.
    pub async fn serve(socket: &Path, state: Arc<State>) -> tokio::sync::oneshot::Sender<()> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let fake = Fake(state);
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(t::tasks_server::TasksServer::new(fake.clone()))
                .add_service(c::containers_server::ContainersServer::new(fake))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    async {
                        let _ = rx.await;
                    },
                )
                .await
                .unwrap();
        });
        tx
    }
}

#[tokio::test]
async fn containerd_get_kill_sandbox_namespace_and_reconnect() {
    use crate::proto::containerd::v1::types::Status as TaskStatus;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = proc_tree(d);
    fake::process(&root, 800, 1, 10, "0::/k8s.io/web\n");
    fake::process(&root, 900, 1, 20, "0::/k8s.io/sb-new\n");
    let state = Arc::new(fake_containerd::State::default());
    {
        let mut tasks = state.tasks.lock().unwrap();
        tasks.insert("web".into(), (800, TaskStatus::Running));
        tasks.insert("done".into(), (801, TaskStatus::Stopped));
        tasks.insert("sb-old".into(), (0, TaskStatus::Stopped));
        tasks.insert("sb-new".into(), (900, TaskStatus::Running));
        let sb = |uid: &str| {
            vec![
                ("io.cri-containerd.kind".to_string(), "sandbox".to_string()),
                ("io.kubernetes.pod.uid".to_string(), uid.to_string()),
            ]
        };
        let mut cs = state.containers.lock().unwrap();
        cs.push(("sb-old".into(), sb(UID), 100));
        cs.push(("sb-new".into(), sb(UID), 200));
        cs.push(("sb-other".into(), sb("other"), 300));
    }
    let sock = d.join("containerd.sock");
    let stop = fake_containerd::serve(&sock, state.clone()).await;
    let rt = Runtimes::new(cfg(d, vec![(RuntimeKind::Containerd, sock.clone())])).await;
    assert_eq!(rt.discovered().len(), 1);

    let who = rt.pid("containerd://web").await.unwrap();
    assert_eq!((who.pid, who.start_ticks), (800, 10));
    assert!(state
        .namespaces
        .lock()
        .unwrap()
        .iter()
        .all(|n| n == "k8s.io"));

    let e = rt.pid("containerd://done").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("not running"), "{e}");

    let e = rt.pid("containerd://abc").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(
        e.to_string(),
        format!(
            "container \"abc\" not found in containerd at {} (namespace k8s.io)",
            sock.display()
        )
    );

    rt.kill("containerd://web").await.unwrap();
    assert_eq!(
        state.kills.lock().unwrap().as_slice(),
        &[("web".to_string(), 9, false)]
    );
    assert_eq!(
        rt.kill("containerd://abc").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    let who = rt.sandbox_pid(UID).await.unwrap();
    assert_eq!(who.pid, 900);
    assert_eq!(
        state.filters.lock().unwrap()[0],
        format!(
            r#"labels."io.cri-containerd.kind"==sandbox,labels."io.kubernetes.pod.uid"=="{UID}""#
        )
    );
    let who = rt.pid_or_sandbox("containerd://gone", UID).await.unwrap();
    assert_eq!(who.pid, 900);
    let e = rt.sandbox_pid("nobody").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // containerd goes away: Unavailable (the /proc fallback has no "abc" either).
    drop(stop);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = std::fs::remove_file(&sock);
    let e = rt.pid_uncached("containerd://abc").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains(&sock.display().to_string()), "{e}");
    // ... and "web" is still found through /proc.
    assert_eq!(rt.pid_uncached("containerd://web").await.unwrap().pid, 800);

    // containerd comes back on the same path: the next call reconnects.
    let calls = state.calls.load(Ordering::SeqCst);
    let _stop = fake_containerd::serve(&sock, state.clone()).await;
    let who = rt.pid_uncached("containerd://web").await.unwrap();
    assert_eq!(who.pid, 800);
    assert!(
        state.calls.load(Ordering::SeqCst) > calls,
        "answer must come from containerd"
    );
}

#[tokio::test]
async fn containerd_namespace_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = proc_tree(d);
    fake::process(&root, 800, 1, 10, "0::/moby/web\n");
    let state = Arc::new(fake_containerd::State::default());
    state.tasks.lock().unwrap().insert(
        "web".into(),
        (800, crate::proto::containerd::v1::types::Status::Running),
    );
    let sock = d.join("c.sock");
    let _stop = fake_containerd::serve(&sock, state.clone()).await;
    let mut c = cfg(d, vec![]);
    c.runtime = Some(RuntimeKind::Containerd);
    c.socket = Some(sock.clone());
    c.containerd_ns = "moby".into();
    let rt = Runtimes::new(c).await;
    rt.pid("containerd://web").await.unwrap();
    assert_eq!(
        state.namespaces.lock().unwrap().as_slice(),
        &["moby".to_string()]
    );
}

#[tokio::test]
async fn invalid_ids_are_rejected_before_any_runtime_call() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    proc_tree(d);
    let rt = Runtimes::new(cfg(d, vec![])).await;
    for bad in [
        "",
        "containerd://",
        "containerd://../x",
        "docker://zz",
        "rkt://a",
        "containerd://a b",
    ] {
        assert_eq!(
            rt.pid(bad).await.unwrap_err().kind(),
            ErrorKind::InvalidArgument,
            "{bad:?}"
        );
        assert_eq!(
            rt.kill(bad).await.unwrap_err().kind(),
            ErrorKind::InvalidArgument,
            "{bad:?}"
        );
    }
    assert_eq!(
        rt.sandbox_pid("").await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[tokio::test]
async fn a_hung_containerd_times_out_as_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    proc_tree(d);
    // Accepts connections (kernel backlog) but never speaks HTTP/2.
    let _silent = UnixListener::bind(d.join("hung.sock")).unwrap();
    let mut c = cfg(d, vec![]);
    c.runtime = Some(RuntimeKind::Containerd);
    c.socket = Some(d.join("hung.sock"));
    c.timeout = Duration::from_millis(300);
    let rt = Runtimes::new(c).await;
    let t0 = std::time::Instant::now();
    let e = rt.pid("containerd://web").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}
