//! Host-tier helpers: throwaway network namespaces with a holder process, a faultd daemon run
//! as a real child process (so it can be SIGKILLed), and a client on its admin socket.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use faultd::proto::faultd::v1 as api;
use faultd::proto::pb;
use tonic::transport::Channel;

fn run(args: &[&str]) -> String {
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

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl DaemonProc {
    /// faultd serving plaintext gRPC on a known port (the ChaosDaemon service is not on the
    /// admin socket); returns the daemon and `http://127.0.0.1:<port>`.
    pub fn spawn_tcp(state: &Path, extra: &[&str]) -> (DaemonProc, String, u16) {
        let grpc = free_port();
        let http = free_port();
        let (g, h) = (grpc.to_string(), http.to_string());
        let mut args = vec!["--grpc-port", g.as_str(), "--http-port", h.as_str()];
        args.extend_from_slice(extra);
        (
            DaemonProc::spawn(state, &args),
            format!("http://127.0.0.1:{grpc}"),
            http,
        )
    }

    pub fn spawn(state: &Path, extra: &[&str]) -> DaemonProc {
        let child = Command::new(env!("CARGO_BIN_EXE_faultd"))
            .args(daemon_args(state))
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        DaemonProc {
            child,
            state: state.to_path_buf(),
            socket: state.join("faultd.sock"),
        }
    }

    /// Waits until the admin socket serves (after start-up reconciliation).
    pub async fn ready(&mut self) -> Channel {
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("faultd exited during start-up: {st}");
            }
            if let Ok(ch) = faultd::ctl::connect_unix(&self.socket).await {
                let mut c = api::faults_client::FaultsClient::new(ch.clone());
                if c.list_faults(api::ListFaultsRequest::default())
                    .await
                    .is_ok()
                {
                    return ch;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "faultd not ready after 20 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
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
