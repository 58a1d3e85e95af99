//! IOChaos test helpers (tests/host_io_chaos.rs, tests/vm_io.rs): faultd with the Chaos Mesh
//! API against the test containerd, and a container of the test image with a host directory
//! bind-mounted at `/data`, running `/bin/ioprobe` (`tests/env/ctr/ioprobe.c`) as its init. The
//! probe's log is only read, through `/proc/<pid>/root`; the volume's files only on the host.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::ctr::{unique, Container};
use super::host::{list, DaemonProc};
use faultd::proto::faultd::v1 as api;
use faultd::proto::pb;
use faultd::proto::pb::chaos_daemon_client::ChaosDaemonClient;
use serde_json::json;
use tonic::transport::Channel;

pub const F: &[u8] = b"AAAAAAAA";
pub const G: &[u8] = b"BBBBBBBB";
pub const F_HEX: &str = "4141414141414141";
pub const G_HEX: &str = "4242424242424242";
pub const ENOTCONN: i32 = 107;

pub fn ctr_sock() -> String {
    std::env::var("FAULTD_TEST_CTR_SOCK")
        .unwrap_or_else(|_| "/run/k3s/containerd/containerd.sock".into())
}

pub struct Daemon {
    pub proc: DaemonProc,
    pub admin: Channel,
    pub client: ChaosDaemonClient<Channel>,
}

impl Daemon {
    pub async fn start(state: &Path) -> Daemon {
        Daemon::start_with(state, &[]).await
    }

    /// With more daemon flags.
    pub async fn start_with(state: &Path, extra: &[&str]) -> Daemon {
        let sock = ctr_sock();
        let mut args = vec!["--runtime", "containerd", "--runtime-socket-path", &sock];
        args.extend_from_slice(extra);
        let (mut proc, url, _) = DaemonProc::spawn_tcp(state, &args);
        let admin = proc.ready().await;
        let client = ChaosDaemonClient::connect(url).await.unwrap();
        Daemon {
            proc,
            admin,
            client,
        }
    }

    pub async fn apply(
        &mut self,
        c: &Target,
        actions: &str,
    ) -> Result<pb::ApplyIoChaosResponse, tonic::Status> {
        self.apply_on(c, "/data", actions).await
    }

    pub async fn apply_on(
        &mut self,
        c: &Target,
        volume: &str,
        actions: &str,
    ) -> Result<pb::ApplyIoChaosResponse, tonic::Status> {
        self.client
            .apply_io_chaos(pb::ApplyIoChaosRequest {
                actions: actions.into(),
                volume: volume.into(),
                container_id: c.c.id(),
                enter_ns: true,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn io_faults(&self, ended: bool) -> Vec<api::Fault> {
        list(&self.admin, ended)
            .await
            .into_iter()
            .filter(|f| f.kind == "io")
            .collect()
    }
}

/// One iteration of the probe.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub seq: u64,
    /// Latency (µs), errno, bytes, hex of the first 8 bytes.
    pub held: (u64, i32, i64, String),
    pub reopen: (u64, i32, i64, String),
    /// errno, mode, size.
    pub stat: (i32, u32, u64),
}

/// A container with a host directory at /data running ioprobe.
pub struct Target {
    pub c: Container,
    pub pid: u32,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub fd: i32,
}

impl Target {
    pub async fn start(tag: &str) -> Target {
        Target::start_with(tag, "rprivate").await
    }

    /// With the bind mount's propagation (`rprivate`, `rshared`, ...).
    pub async fn start_with(tag: &str, propagation: &str) -> Target {
        let name = unique(tag);
        let dir = PathBuf::from(format!("/tmp/fdt-io-{name}"));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("f"), F).unwrap();
        std::fs::write(dir.join("g"), G).unwrap();
        let mount = format!(
            "type=bind,src={},dst=/data,options=rbind:rw:{propagation}",
            dir.display()
        );
        let c = Container::run_argv(
            &name,
            &["--mount", &mount],
            &["/bin/ioprobe", "/data/f", "/data/g", "/tmp/io.log", "50"],
        );
        let pid = c.pid();
        let log = PathBuf::from(format!("/proc/{pid}/root/tmp/io.log"));
        // The log is the container's, not a host file of the same name.
        let t0 = Instant::now();
        let fd = loop {
            if let Some(l) = std::fs::read_to_string(&log)
                .ok()
                .and_then(|s| s.lines().next().map(str::to_string))
            {
                let w: Vec<&str> = l.split_whitespace().collect();
                if w.len() >= 2 && w[0] == "fd" {
                    break w[1].parse().unwrap();
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "ioprobe did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(b)) = (std::fs::metadata(&log), std::fs::metadata("/tmp/io.log")) {
            assert_ne!(
                (a.dev(), a.ino()),
                (b.dev(), b.ino()),
                "the log is the host's"
            );
        }
        Target {
            c,
            pid,
            dir,
            log,
            fd,
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out: Vec<Sample> = Vec::new();
        for l in text.lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            let Some(seq) = w.first().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            if out.last().is_none_or(|s| s.seq != seq) {
                out.push(Sample {
                    seq,
                    ..Default::default()
                });
            }
            let s = out.last_mut().unwrap();
            match (w.get(1).copied(), w.len()) {
                (Some(k @ ("held" | "reopen")), 6) => {
                    let v = (
                        w[2].parse().unwrap(),
                        w[3].parse().unwrap(),
                        w[4].parse().unwrap(),
                        w[5].to_string(),
                    );
                    if k == "held" {
                        s.held = v;
                    } else {
                        s.reopen = v;
                    }
                }
                (Some("stat"), 5) => {
                    s.stat = (
                        w[2].parse().unwrap(),
                        u32::from_str_radix(w[3], 8).unwrap(),
                        w[4].parse().unwrap(),
                    )
                }
                _ => {}
            }
        }
        // The last iteration may be incomplete.
        out.retain(|s| !s.reopen.3.is_empty() || s.reopen.1 != 0);
        out
    }

    pub fn last_seq(&self) -> u64 {
        self.samples().last().map_or(0, |s| s.seq)
    }

    /// `n` complete iterations that started after the call that returned at `after` (the
    /// sequence number read then).
    pub async fn next(&self, after: u64, n: usize) -> Vec<Sample> {
        let t0 = Instant::now();
        loop {
            let got: Vec<Sample> = self
                .samples()
                .into_iter()
                .filter(|s| s.seq > after + 1 && s.stat != (0, 0, 0))
                .collect();
            if got.len() >= n {
                return got.into_iter().take(n).collect();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "ioprobe wrote {} iteration(s) after {after}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn mountinfo(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", self.pid)).unwrap()
    }

    pub fn has_layer(&self) -> bool {
        self.mountinfo()
            .lines()
            .any(|l| l.contains(" fuse.faultd "))
    }

    /// The device of faultd's layer on /data (from the container's mountinfo), if any.
    pub fn layer_dev(&self) -> Option<u64> {
        let m = self.mountinfo();
        let line = m.lines().find(|l| l.contains(" fuse.faultd "))?;
        let (a, b) = line.split(' ').nth(2)?.split_once(':')?;
        Some(nix::sys::stat::makedev(a.parse().ok()?, b.parse().ok()?))
    }

    /// Whether the probe's held descriptor is on faultd's layer.
    pub fn held_on_layer(&self) -> bool {
        self.layer_dev() == Some(self.held_dev())
    }

    /// The device of the probe's held descriptor.
    pub fn held_dev(&self) -> u64 {
        // Without asking the file system (a dead FUSE connection answers ENOTCONN).
        faultd::faults::io::switch::dev_of(Path::new(&format!("/proc/{}/fd/{}", self.pid, self.fd)))
            .expect("the held descriptor")
    }

    pub fn on_disk_unchanged(&self, when: &str) {
        assert_eq!(std::fs::read(self.dir.join("f")).unwrap(), F, "{when}");
        assert_eq!(std::fs::read(self.dir.join("g")).unwrap(), G, "{when}");
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.c.remove();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn latency(ms: u64, methods: &[&str]) -> String {
    json!([{"type": "latency", "path": "", "methods": methods, "percent": 100,
            "latency": format!("{ms}ms"), "source": "ns/latency"}])
    .to_string()
}

pub fn p50(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

pub fn summary(s: &[Sample]) -> String {
    let mut h: Vec<u64> = s.iter().map(|x| x.held.0).collect();
    let mut r: Vec<u64> = s.iter().map(|x| x.reopen.0).collect();
    format!(
        "held p50 {} us errno {:?}, reopen p50 {} us errno {:?}",
        p50(&mut h),
        s.iter().map(|x| x.held.1).collect::<Vec<_>>(),
        p50(&mut r),
        s.iter().map(|x| x.reopen.1).collect::<Vec<_>>()
    )
}
