//! Containers from the test containerd (`tests/run-all.sh` starts it at the k3s socket path and
//! imports the busybox test image), made with the `ctr` CLI in namespace `k8s.io`, killed and
//! removed on drop (also when the test panics).
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use faultd::faults::stress::cgroup::{self, TargetCgroups};

/// containerd's socket in the k3s layout (where `tests/run-all.sh` puts the test containerd).
pub const K3S_SOCK: &str = "/run/k3s/containerd/containerd.sock";

/// `FAULTD_TEST_CTR_SOCK`, else the k3s path.
pub fn sock() -> PathBuf {
    PathBuf::from(std::env::var("FAULTD_TEST_CTR_SOCK").unwrap_or_else(|_| K3S_SOCK.into()))
}

/// `FAULTD_TEST_IMAGE`, else the test image's name.
pub fn image() -> String {
    std::env::var("FAULTD_TEST_IMAGE").unwrap_or_else(|_| "docker.io/library/testbox:latest".into())
}

pub fn ctr(args: &[&str]) -> Output {
    Command::new("ctr")
        .arg("-a")
        .arg(sock())
        .args(["-n", "k8s.io"])
        .args(args)
        .output()
        .expect("running ctr")
}

/// A container name no other test (of any test binary running now) uses: `fdc-<tag>-<pid>-<n>`.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "fdc-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A `ctr run -d … sleep 3600` container (or another command: [`Container::run_argv`]).
pub struct Container {
    pub name: String,
}

impl Container {
    /// `ctr run -d <opts> IMAGE <name> sleep 3600`.
    pub fn run_named(name: &str, opts: &[&str]) -> Container {
        Container::run_argv(name, opts, &["sleep", "3600"])
    }

    /// `ctr run -d <opts> IMAGE <name> <argv...>`.
    pub fn run_argv(name: &str, opts: &[&str], argv: &[&str]) -> Container {
        let img = image();
        let mut args = vec!["run", "-d"];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[&img, name]);
        args.extend_from_slice(argv);
        let c = Container { name: name.into() };
        let out = ctr(&args);
        assert!(
            out.status.success(),
            "ctr {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        c
    }

    /// A uniquely named container without labels or options.
    pub fn start(tag: &str) -> Container {
        Container::with_labels(tag, &[], &[])
    }

    /// A uniquely named container with `--label k=v` for each of `labels`, then `opts`.
    pub fn with_labels(tag: &str, labels: &[(&str, &str)], opts: &[&str]) -> Container {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args: Vec<&str> = labels.iter().flat_map(|l| ["--label", l]).collect();
        args.extend_from_slice(opts);
        Container::run_named(&unique(tag), &args)
    }

    /// With CRI-style labels: pod `pod_uid`, `kind` `container` or `sandbox`.
    pub fn run(tag: &str, pod_uid: &str, kind: &str, opts: &[&str]) -> Container {
        Container::with_labels(
            tag,
            &[
                ("io.kubernetes.pod.uid", pod_uid),
                ("io.cri-containerd.kind", kind),
            ],
            opts,
        )
    }

    /// Limited to one CPU (`--cpu-quota 100000 --cpu-period 100000`) and, if given, to
    /// `memory_limit` bytes.
    pub fn limited(tag: &str, memory_limit: Option<u64>) -> Container {
        let limit = memory_limit.map(|m| m.to_string());
        let mut opts = vec!["--cpu-quota", "100000", "--cpu-period", "100000"];
        if let Some(m) = &limit {
            opts.extend_from_slice(&["--memory-limit", m]);
        }
        Container::with_labels(tag, &[], &opts)
    }

    pub fn id(&self) -> String {
        format!("containerd://{}", self.name)
    }

    /// (pid, status) from `ctr task ls`.
    pub fn task(&self) -> Option<(u32, String)> {
        let out = ctr(&["task", "ls"]);
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[0] == self.name)
                .then(|| (f[1].parse().unwrap_or(0), f[2].to_string()))
        })
    }

    /// The host pid of the task, which must be RUNNING.
    pub fn pid(&self) -> u32 {
        let (pid, status) = self.task().expect("task listed");
        assert_eq!(status, "RUNNING");
        assert_ne!(pid, 0, "a running task has a pid");
        pid
    }

    pub fn running(&self) -> bool {
        self.task().is_some_and(|(_, s)| s == "RUNNING")
    }

    /// The cgroups of the task's init.
    pub fn cgroups(&self) -> TargetCgroups {
        cgroup::of_pid(self.pid()).unwrap()
    }

    pub fn remove(&self) {
        let _ = ctr(&["task", "kill", "-s", "SIGKILL", &self.name]);
        for _ in 0..50 {
            if self.task().is_none_or(|(_, s)| s == "STOPPED") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = ctr(&["task", "rm", "-f", &self.name]);
        let _ = ctr(&["containers", "rm", &self.name]);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.remove();
    }
}
