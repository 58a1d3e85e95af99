//! Containers from the test containerd (`tests/run-all.sh` starts it at the k3s socket path and
//! imports the busybox test image), labelled like the CRI plugin labels them, removed on drop.
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub fn sock() -> String {
    std::env::var("FAULTD_TEST_CTR_SOCK")
        .unwrap_or_else(|_| "/run/k3s/containerd/containerd.sock".into())
}

pub fn image() -> String {
    std::env::var("FAULTD_TEST_IMAGE").unwrap_or_else(|_| "docker.io/library/testbox:latest".into())
}

pub fn ctr(args: &[&str]) -> Output {
    Command::new("ctr")
        .args(["-a", &sock(), "-n", "k8s.io"])
        .args(args)
        .output()
        .expect("running ctr")
}

pub struct Container {
    pub name: String,
}

impl Container {
    /// `ctr run -d` with CRI-style labels; `kind` is `container` or `sandbox`.
    pub fn run(tag: &str, pod_uid: &str, kind: &str, extra: &[&str]) -> Container {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "fdc-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let uid_label = format!("io.kubernetes.pod.uid={pod_uid}");
        let kind_label = format!("io.cri-containerd.kind={kind}");
        let img = image();
        let mut args = vec!["run", "-d", "--label", &uid_label, "--label", &kind_label];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[&img, &name, "sleep", "3600"]);
        let out = ctr(&args);
        let shown = args.join(" ");
        let c = Container { name: name.clone() };
        assert!(
            out.status.success(),
            "ctr {shown}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        c
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

    pub fn pid(&self) -> u32 {
        self.task().expect("task listed").0
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
