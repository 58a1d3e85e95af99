//! Containers from the test Docker engine (`tests/env/docker/start-docker.sh`: a private dockerd
//! at `FAULTD_TEST_DOCKER_SOCK` with the busybox test image imported as
//! `FAULTD_TEST_DOCKER_IMAGE`), made with the docker CLI, removed on drop (also on panic).
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use faultd::faults::stress::cgroup::{self, TargetCgroups};

/// `FAULTD_TEST_DOCKER_SOCK`, else where `tests/run-all.sh` starts the test dockerd.
pub fn sock() -> PathBuf {
    PathBuf::from(
        std::env::var("FAULTD_TEST_DOCKER_SOCK")
            .unwrap_or_else(|_| "/run/faultd-test/docker.sock".into()),
    )
}

/// `FAULTD_TEST_DOCKER_IMAGE`, else the name start-docker.sh imports the test image as.
pub fn image() -> String {
    std::env::var("FAULTD_TEST_DOCKER_IMAGE").unwrap_or_else(|_| "faultd-testbox:latest".into())
}

/// `docker -H unix://<sock> <args>` with the CLI of Debian's docker.io (the engine's own version;
/// another CLI may come first in PATH).
pub fn docker(args: &[&str]) -> Output {
    let cli = if std::path::Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    };
    Command::new(cli)
        .arg("-H")
        .arg(format!("unix://{}", sock().display()))
        .args(args)
        .output()
        .expect("running the docker CLI")
}

/// `docker <args>`, which must succeed; its trimmed stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A `docker run -d --network none … sleep 3600` container.
pub struct Container {
    pub name: String,
    /// The full id (64 hex digits).
    pub hex: String,
}

impl Container {
    /// Named `fdd-<tag>-<pid>-<n>`, with `opts` before the image (labels, limits...).
    pub fn run(tag: &str, opts: &[&str]) -> Container {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "fdd-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let img = image();
        let mut args = vec!["run", "-d", "--network", "none", "--name", &name];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[&img, "sleep", "3600"]);
        let out = docker(&args);
        // removed on drop even if the checks below fail
        let mut c = Container {
            name: name.clone(),
            hex: String::new(),
        };
        assert!(
            out.status.success(),
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        c.hex = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            c.hex.len() == 64 && c.hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "docker run printed {:?}, not a full id",
            c.hex
        );
        c
    }

    /// `docker://<64 hex>`, as the kubelet reports Docker containers.
    pub fn id(&self) -> String {
        format!("docker://{}", self.hex)
    }

    /// `docker inspect -f <format>`.
    pub fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "-f", format, &self.hex])
    }

    /// `.State.Pid`, which must be a running process.
    pub fn pid(&self) -> u32 {
        let pid: u32 = self.inspect("{{.State.Pid}}").parse().unwrap();
        assert_ne!(pid, 0, "container {} is not running", self.name);
        pid
    }

    /// `.State.Running`.
    pub fn running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }

    /// The cgroups of the container's init.
    pub fn cgroups(&self) -> TargetCgroups {
        cgroup::of_pid(self.pid()).unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}
