//! Host tier: assertions about the privileged host environment that faultd's host tests rely on
//! (a private containerd at the k3s socket path with the test image in namespace `k8s.io`).
//!
//! Every test is `#[ignore]`: `cargo test` skips them. `tests/run-all.sh` starts containerd
//! (`tests/env/ctr/start-containerd.sh`), imports the image, exports `FAULTD_TEST_CTR_SOCK`,
//! `FAULTD_TEST_IMAGE` and `FAULTD_TEST_IMAGE_TAR`, then runs
//! `cargo test --test host_env -- --ignored --test-threads=1` as root.
//! By hand (as root):
//!
//! ```text
//! tests/env/setup.sh && tests/env/ctr/start-containerd.sh && tests/env/ctr/import-image.sh
//! FAULTD_TEST_CTR_SOCK=/run/k3s/containerd/containerd.sock \
//! FAULTD_TEST_IMAGE=docker.io/library/testbox:latest \
//!   cargo test --test host_env -- --ignored --test-threads=1
//! tests/env/ctr/stop-containerd.sh
//! ```

use std::os::unix::net::UnixStream;
use std::process::Command;

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the host tier through tests/run-all.sh"))
}

#[test]
#[ignore = "host tier: needs root and the containerd started by tests/run-all.sh"]
fn containerd_socket_accepts_connections() {
    let sock = env("FAULTD_TEST_CTR_SOCK");
    UnixStream::connect(&sock).unwrap_or_else(|e| panic!("connect {sock}: {e}"));
}

#[test]
#[ignore = "host tier: needs root and the containerd started by tests/run-all.sh"]
fn test_image_is_imported_in_k8s_namespace() {
    let sock = env("FAULTD_TEST_CTR_SOCK");
    let image = env("FAULTD_TEST_IMAGE");
    let out = Command::new("ctr")
        .args(["-a", &sock, "-n", "k8s.io", "images", "ls", "-q"])
        .output()
        .expect("running ctr");
    assert!(
        out.status.success(),
        "ctr images ls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.lines().any(|l| l.trim() == image),
        "{image} not in k8s.io images:\n{listed}"
    );
}
