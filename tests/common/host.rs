//! Host-tier helpers: throwaway network namespaces with a holder process, veth links into a
//! container's network namespace, a faultd daemon run as a real child process (so it can be
//! SIGKILLed), clients on its admin socket and Chaos Mesh API (plaintext or mTLS), polling, and
//! the stress-worker views of `/proc` and cgroups.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use faultd::faults::stress::cgroup::TargetCgroups;
use faultd::proto::faultd::v1 as api;
use faultd::proto::pb;
use faultd::proto::pb::chaos_daemon_client::ChaosDaemonClient;
use tonic::transport::Channel;

/// Runs `args[0]` with the rest as arguments; it must succeed. Its stdout.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A network namespace `name` with a veth end `d0` (up; its peer `host_if` in the host
/// namespace) and a `sleep` holding it. This host kernel has no dummy driver.
pub struct Netns {
    pub name: String,
    pub holder: Child,
    pub dev: String,
    pub host_if: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("fdt-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        let host_if = format!("fdh{:x}", {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            name.hash(&mut h);
            h.finish() & 0xFF_FFFF_FFFF
        });
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        run(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "d0", "netns", &name,
        ]);
        run(&["ip", "link", "set", &host_if, "up"]);
        run(&["ip", "-n", &name, "link", "set", "d0", "up"]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        let holder = Command::new("ip")
            .args(["netns", "exec", &name, "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        // `ip netns exec` execs sleep in place: wait until the pid is in the namespace.
        let want = std::fs::metadata(format!("/run/netns/{name}"))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        let t0 = Instant::now();
        loop {
            let ino = std::fs::metadata(format!("/proc/{}/ns/net", holder.id()))
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .unwrap_or(0);
            if ino == want {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "holder never entered the netns"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Netns {
            name,
            holder,
            dev: "d0".into(),
            host_if,
        }
    }

    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    pub fn tc(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name, "tc"];
        full.extend_from_slice(args);
        run(&full)
    }

    /// `tc qdisc show dev d0`, normalised (no refcnt noise).
    pub fn qdisc_dump(&self) -> String {
        self.tc(&["qdisc", "show", "dev", &self.dev])
            .lines()
            .map(|l| l.split(" refcnt").next().unwrap_or(l).trim().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether a qdisc with one of faultd's `faXX:` handles is on the device.
    pub fn has_faultd_qdisc(&self) -> bool {
        self.tc(&["qdisc", "show", "dev", &self.dev])
            .lines()
            .any(|l| {
                l.split_whitespace()
                    .nth(2)
                    .is_some_and(|h| h.starts_with("fa") && h.ends_with(':'))
            })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

/// faultd as a child process.
pub struct DaemonProc {
    pub child: Child,
    pub state: PathBuf,
    pub socket: PathBuf,
}

pub fn daemon_args(state: &Path) -> Vec<String> {
    [
        "--insecure",
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--listen-address",
        "127.0.0.1",
        "--state-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([state.display().to_string()])
    .collect()
}

/// `N` distinct TCP ports nothing listens on right now (all bound at once, so they differ).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// Polls `f` every 10 ms until it holds; panics naming `what` after `limit`. Returns the wait.
pub async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t0.elapsed()
}

impl DaemonProc {
    /// faultd serving plaintext gRPC on a known port (the ChaosDaemon service is not on the
    /// admin socket); returns the daemon and `http://127.0.0.1:<port>`.
    pub fn spawn_tcp(state: &Path, extra: &[&str]) -> (DaemonProc, String, u16) {
        let [grpc, http] = free_ports::<2>();
        let (g, h) = (grpc.to_string(), http.to_string());
        let mut args = vec!["--grpc-port", g.as_str(), "--http-port", h.as_str()];
        args.extend_from_slice(extra);
        (
            DaemonProc::spawn(state, &args),
            format!("http://127.0.0.1:{grpc}"),
            http,
        )
    }

    /// `faultd --insecure` on ephemeral ports (later flags win) with `extra`.
    pub fn spawn(state: &Path, extra: &[&str]) -> DaemonProc {
        DaemonProc::spawn_with(state, daemon_args(state), extra)
    }

    /// `faultd <args> <extra>`, logging at `FAULTD_TEST_LOG` (default `warn`) to stderr.
    pub fn spawn_with(state: &Path, args: Vec<String>, extra: &[&str]) -> DaemonProc {
        let child = Command::new(env!("CARGO_BIN_EXE_faultd"))
            .args(args)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("FAULTD_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        DaemonProc::of(child, state)
    }

    /// A faultd child started some other way, with `state` as its state dir.
    pub fn of(child: Child, state: &Path) -> DaemonProc {
        DaemonProc {
            child,
            state: state.to_path_buf(),
            socket: state.join("faultd.sock"),
        }
    }

    /// Waits until the admin socket serves (after start-up reconciliation).
    pub async fn ready(&mut self) -> Channel {
        self.ready_polling(Duration::from_millis(10), Duration::from_secs(20))
            .await
    }

    /// Polls every `every` until the admin socket answers ListFaults; panics after `limit`.
    pub async fn ready_polling(&mut self, every: Duration, limit: Duration) -> Channel {
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("faultd exited during start-up: {st}");
            }
            if self.socket.exists() {
                if let Ok(ch) = faultd::ctl::connect_unix(&self.socket).await {
                    let mut c = faults(&ch);
                    let call = c.list_faults(api::ListFaultsRequest::default());
                    if let Ok(Ok(_)) = tokio::time::timeout(limit, call).await {
                        return ch;
                    }
                }
            }
            assert!(t0.elapsed() < limit, "faultd not ready after {limit:?}");
            tokio::time::sleep(every).await;
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn sigterm(&self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }

    /// SIGTERM (faultd rolls every fault back), then SIGKILL if it has not exited after 10 s.
    pub fn stop(&mut self) {
        self.sigterm();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill9();
    }

    /// SIGTERM and wait up to 15 s without blocking the runtime, so client connections can close
    /// (a blocking wait would hold them open through faultd's shutdown grace period).
    pub async fn shutdown(&mut self) {
        self.sigterm();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// faultd as a child process serving the Chaos Mesh gRPC API on a known port: plaintext, or
/// mTLS with certificates of a [`super::Pki`] (the client then presents the controller's).
pub struct Faultd {
    pub proc: DaemonProc,
    pub port: u16,
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Faultd {
    /// `faultd --insecure --grpc-port <port> <extra>`.
    pub fn spawn(state: &Path, port: u16, extra: &[&str]) -> Faultd {
        let mut args = daemon_args(state);
        let i = args.iter().position(|a| a == "--grpc-port").unwrap();
        args[i + 1] = port.to_string();
        Faultd {
            proc: DaemonProc::spawn_with(state, args, extra),
            port,
            tls: None,
        }
    }

    /// `faultd --ca --cert --key (from pki) --grpc-port <port> <extra>`.
    pub fn spawn_tls(state: &Path, port: u16, pki: &super::Pki, extra: &[&str]) -> Faultd {
        let mut args = daemon_args(state);
        args.retain(|a| a != "--insecure");
        let i = args.iter().position(|a| a == "--grpc-port").unwrap();
        args[i + 1] = port.to_string();
        for (flag, path) in [
            ("--ca", &pki.ca_path),
            ("--cert", &pki.server_cert),
            ("--key", &pki.server_key),
        ] {
            args.extend([flag.to_string(), path.display().to_string()]);
        }
        Faultd {
            proc: DaemonProc::spawn_with(state, args, extra),
            port,
            tls: Some(super::client_tls(
                &pki.ca.cert_pem,
                Some(&pki.client(super::CONTROLLER_CN)),
            )),
        }
    }

    /// Waits for the admin socket, then connects the Chaos Mesh API. Returns (admin, pb).
    pub async fn ready(&mut self) -> (Channel, ChaosDaemonClient<Channel>) {
        let admin = self.proc.ready().await;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut ep =
            tonic::transport::Endpoint::from_shared(format!("{scheme}://127.0.0.1:{}", self.port))
                .unwrap();
        if let Some(tls) = &self.tls {
            ep = ep.tls_config(tls.clone()).unwrap();
        }
        (admin, ChaosDaemonClient::new(ep.connect().await.unwrap()))
    }

    /// See [`DaemonProc::shutdown`].
    pub async fn stop(mut self) {
        self.proc.shutdown().await;
    }
}

/// A ContainerGetPid / ContainerKill request.
pub fn kill_req(id: &str, action: pb::container_action::Action) -> pb::ContainerRequest {
    pb::ContainerRequest {
        action: Some(pb::ContainerAction {
            action: action as i32,
        }),
        container_id: id.into(),
    }
}

pub fn tbf_request(dev: &str, rate: &str) -> pb::TcsRequest {
    pb::TcsRequest {
        tcs: vec![pb::Tc {
            r#type: pb::tc::Type::Bandwidth as i32,
            tbf: Some(pb::Tbf {
                rate: rate.into(),
                limit: 20000,
                buffer: 10000,
                peak_rate: 0,
                min_burst: 0,
            }),
            device: dev.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn apply_tbf(ns: &Netns, ttl_s: u64, lease: &str) -> api::ApplyFaultRequest {
    api::ApplyFaultRequest {
        ttl_seconds: ttl_s,
        lease_id: lease.into(),
        target_pid: ns.pid(),
        fault: Some(api::apply_fault_request::Fault::SetTcs(tbf_request(
            &ns.dev, "1mbit",
        ))),
    }
}

pub fn faults(ch: &Channel) -> api::faults_client::FaultsClient<Channel> {
    api::faults_client::FaultsClient::new(ch.clone())
}

/// Gives the network namespace of `pid` (a container's) an `eth0`: a veth to the host at
/// 10.251.N.2, host side 10.251.N.1. Returns (host interface, host address); delete the host
/// interface when done (that removes both ends).
pub fn wire_eth0(pid: u32, n: u8) -> (String, String) {
    let host_if = format!("fdce{n}-{}", std::process::id() % 10000);
    let _ = Command::new("ip").args(["link", "del", &host_if]).output();
    let p = pid.to_string();
    run(&[
        "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &p,
    ]);
    run(&[
        "ip",
        "addr",
        "add",
        &format!("10.251.{n}.1/24"),
        "dev",
        &host_if,
    ]);
    run(&["ip", "link", "set", &host_if, "up"]);
    run(&[
        "nsenter",
        "-t",
        &p,
        "-n",
        "ip",
        "addr",
        "add",
        &format!("10.251.{n}.2/24"),
        "dev",
        "eth0",
    ]);
    run(&["nsenter", "-t", &p, "-n", "ip", "link", "set", "eth0", "up"]);
    (host_if, format!("10.251.{n}.1"))
}

/// `tc qdisc show dev <dev>` in the network namespace of `pid` (`nsenter -t PID -n`).
pub fn qdiscs_of(pid: u32, dev: &str) -> String {
    run(&[
        "nsenter",
        "-t",
        &pid.to_string(),
        "-n",
        "tc",
        "qdisc",
        "show",
        "dev",
        dev,
    ])
}

// ---------------------------------------------------------------------------------------------
// stress faults

/// An ExecStressors request for one CPU stressor at `load` percent in container `target`.
pub fn cpu_request(target: &str, load: u32) -> pb::ExecStressRequest {
    pb::ExecStressRequest {
        scope: pb::exec_stress_request::Scope::Container as i32,
        target: target.into(),
        cpu_stressors: format!(" --cpu-load-slice 10 --cpu-method sqrt --cpu 1 --cpu-load {load}"),
        enter_ns: true,
        ..Default::default()
    }
}

/// An ExecStressors request for one memory stressor of `size` in container `target`.
pub fn memory_request(target: &str, size: &str) -> pb::ExecStressRequest {
    pb::ExecStressRequest {
        scope: pb::exec_stress_request::Scope::Container as i32,
        target: target.into(),
        memory_stressors: format!(" --workers 1 --size {size}"),
        enter_ns: true,
        ..Default::default()
    }
}

/// Processes of the cgroup (`cgroup.procs` of its first required hierarchy).
pub fn cgroup_procs(cg: &TargetCgroups) -> Vec<u32> {
    let j = cg.joins.iter().find(|j| j.required).unwrap();
    std::fs::read_to_string(j.dir.join("cgroup.procs"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Live `faultd stress-worker` processes (worker and load processes) of these fault ids; all
/// of them when `ids` is empty.
pub fn worker_pids(ids: &[&str]) -> Vec<u32> {
    faultd::faults::stress::spawn::scan_workers()
        .into_iter()
        .filter(|w| ids.is_empty() || ids.contains(&w.fault_id.as_str()))
        .map(|w| w.pid)
        .collect()
}

/// The host pid namespace view of `pid`'s `NSpid` line: one entry per namespace level.
pub fn nspid(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|v| {
            v.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The active faults (and, with `include_ended`, the ended ones) on the admin socket.
pub async fn list(admin: &Channel, include_ended: bool) -> Vec<api::Fault> {
    faults(admin)
        .list_faults(api::ListFaultsRequest { include_ended })
        .await
        .unwrap()
        .into_inner()
        .faults
}

/// The faults of `kind` (ended ones included) once none of them is still
/// `applied` or `reverting`: a fault's undo becomes visible (clock restored,
/// proxy gone) a moment before the engine records its end, so a test that saw
/// the undo polls the record instead of racing it. Gives up after `within`
/// and returns what it has, for the caller's assertion to show.
pub async fn settled(admin: &Channel, kind: &str, within: std::time::Duration) -> Vec<api::Fault> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let got: Vec<api::Fault> = list(admin, true)
            .await
            .into_iter()
            .filter(|f| f.kind == kind)
            .collect();
        let open = |f: &api::Fault| {
            f.phase == api::Phase::Applied as i32 || f.phase == api::Phase::Reverting as i32
        };
        if !got.iter().any(open) || std::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
