//! Host tier (root, the test containerd; run by `tests/run-all.sh`, or by hand as
//! tests/README.md shows: `cargo test --test host_dns -- --ignored --test-threads=1`):
//! DNSChaos (`SetDNSServer`) against containers whose `/etc/resolv.conf` is a bind mount of one
//! file, as CRI makes it. Every test checks that the host's own `/etc/resolv.conf` is unchanged
//! (content and `(dev, ino)`), before and after.
mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::ctr::{ctr, Container};
use common::host::DaemonProc;
use faultd::proto::pb;
use faultd::proto::pb::chaos_daemon_client::ChaosDaemonClient;
use tonic::transport::Channel;
use tonic::Code;

const ORIGINAL: &[u8] = b"search ns1.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n";
const CHAOS_DNS: &str = "10.96.0.99";

fn ctr_sock() -> String {
    std::env::var("FAULTD_TEST_CTR_SOCK")
        .unwrap_or_else(|_| "/run/k3s/containerd/containerd.sock".into())
}

/// The host's own resolv.conf: content and identity, to prove no test touched it.
struct HostResolv(Vec<u8>, u64, u64);
impl HostResolv {
    fn now() -> HostResolv {
        let m = std::fs::metadata("/etc/resolv.conf").unwrap();
        HostResolv(std::fs::read("/etc/resolv.conf").unwrap(), m.dev(), m.ino())
    }
    fn unchanged(&self) {
        let now = HostResolv::now();
        assert_eq!(
            (&now.0, now.1, now.2),
            (&self.0, self.1, self.2),
            "the host's /etc/resolv.conf changed"
        );
    }
}

/// A sandbox-style resolv.conf file on the host, bind-mounted into containers.
struct PodFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}
impl PodFile {
    fn new() -> PodFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, ORIGINAL).unwrap();
        PodFile { _dir: dir, path }
    }
    fn mount_opt(&self) -> String {
        format!(
            "type=bind,src={},dst=/etc/resolv.conf,options=rbind:rw",
            self.path.display()
        )
    }
    fn content(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }
}

fn container(pod: &PodFile, uid: &str) -> Container {
    let m = pod.mount_opt();
    Container::run("dns", uid, "container", &["--mount", &m])
}

/// `cat /etc/resolv.conf` inside the container (busybox image).
fn inside(c: &Container) -> String {
    let id = format!("cat-{}", std::process::id());
    let out = ctr(&[
        "task",
        "exec",
        "--exec-id",
        &id,
        &c.name,
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn daemon(state: &Path) -> (DaemonProc, ChaosDaemonClient<Channel>) {
    let sock = ctr_sock();
    let (mut d, url, _) = DaemonProc::spawn_tcp(
        state,
        &["--runtime", "containerd", "--runtime-socket-path", &sock],
    );
    d.ready().await;
    let client = ChaosDaemonClient::connect(url).await.unwrap();
    (d, client)
}

fn dns(container_id: &str, server: &str, enable: bool) -> pb::SetDnsServerRequest {
    pb::SetDnsServerRequest {
        container_id: container_id.into(),
        dns_server: server.into(),
        enable,
        enter_ns: true,
    }
}

fn chaos_content_ok(text: &str) {
    assert!(
        text.contains(&format!("nameserver {CHAOS_DNS}\n")),
        "{text}"
    );
    assert!(!text.contains("nameserver 10.96.0.10"), "{text}");
    assert!(
        text.starts_with("search ns1.svc.cluster.local svc.cluster.local cluster.local\n"),
        "{text}"
    );
    assert!(text.contains("\noptions ndots:5\n"), "{text}");
}

/// A UDP listener on `CHAOS_DNS:53` inside the network namespace of `pid` (the address is
/// put on its `lo`); returns the first datagram it gets within `limit`.
fn listen_in_netns(pid: u32, limit: Duration) -> std::thread::JoinHandle<Option<Vec<u8>>> {
    let ns = format!("/proc/{pid}/ns/net");
    for args in [
        vec!["ip", "link", "set", "lo", "up"],
        vec!["ip", "addr", "add", "10.96.0.99/32", "dev", "lo"],
    ] {
        let out = Command::new("nsenter")
            .arg(format!("--net={ns}"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let f = std::fs::File::open(&ns).unwrap();
        // This thread only: the test's other threads stay in the host's namespace.
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let sock = std::net::UdpSocket::bind(("10.96.0.99", 53)).unwrap();
        sock.set_read_timeout(Some(limit)).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 1500];
        sock.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    });
    rx.recv().unwrap();
    h
}

#[tokio::test]
#[ignore = "host tier: root and the test containerd; run by tests/run-all.sh"]
async fn set_points_the_pod_at_the_chaos_server_and_unset_restores_byte_for_byte() {
    let host = HostResolv::now();
    let pod = PodFile::new();
    let c = container(&pod, "dns-pod-1");
    let state = tempfile::tempdir().unwrap();
    let (_d, mut client) = daemon(state.path()).await;

    let t0 = Instant::now();
    client
        .set_dns_server(dns(&c.id(), CHAOS_DNS, true))
        .await
        .unwrap();
    let took = t0.elapsed();
    let text = inside(&c);
    chaos_content_ok(&text);
    assert_eq!(
        text.as_bytes(),
        pod.content(),
        "the bind-mounted file itself changed"
    );
    host.unchanged();

    // A DNS query from inside the container reaches the chaos server.
    let listener = listen_in_netns(c.pid(), Duration::from_secs(10));
    let mut q = Command::new("ctr")
        .args([
            "-a",
            &ctr_sock(),
            "-n",
            "k8s.io",
            "task",
            "exec",
            "--exec-id",
            "nslookup",
        ])
        .args([c.name.as_str(), "nslookup", "faultd-probe.example"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let got = listener.join().unwrap();
    let _ = q.kill();
    let _ = q.wait();
    let query = got.expect("no DNS query reached the chaos server");
    // DNS wire format: the name's labels, length-prefixed.
    assert!(
        query.windows(13).any(|w| w == b"\x0cfaultd-probe"),
        "not a query for the probe name: {query:?}"
    );

    // Idempotent set; then unset restores the original bytes exactly.
    client
        .set_dns_server(dns(&c.id(), CHAOS_DNS, true))
        .await
        .unwrap();
    client
        .set_dns_server(dns(&c.id(), "", false))
        .await
        .unwrap();
    assert_eq!(pod.content(), ORIGINAL);
    assert_eq!(inside(&c).as_bytes(), ORIGINAL);
    // Unset with nothing to restore is OK.
    client
        .set_dns_server(dns(&c.id(), "", false))
        .await
        .unwrap();
    host.unchanged();
    eprintln!("SetDNSServer took {:.2} ms", took.as_secs_f64() * 1e3);
}

#[tokio::test]
#[ignore = "host tier: root and the test containerd; run by tests/run-all.sh"]
async fn kill_9_of_the_daemon_and_a_restarted_container_still_get_the_original_back() {
    let host = HostResolv::now();
    let pod = PodFile::new();
    let c = container(&pod, "dns-pod-2");
    let state = tempfile::tempdir().unwrap();

    // kill -9 while set: the next daemon restores it before it serves.
    {
        let (mut d, mut client) = daemon(state.path()).await;
        client
            .set_dns_server(dns(&c.id(), CHAOS_DNS, true))
            .await
            .unwrap();
        chaos_content_ok(&inside(&c));
        d.kill9();
    }
    {
        let (_d, _client) = daemon(state.path()).await;
        assert_eq!(
            pod.content(),
            ORIGINAL,
            "not restored after kill -9 and restart"
        );
    }
    host.unchanged();

    // The container restarts while set (new task, new pid, same bind-mounted file).
    let (_d, mut client) = daemon(state.path()).await;
    client
        .set_dns_server(dns(&c.id(), CHAOS_DNS, true))
        .await
        .unwrap();
    let old_pid = c.pid();
    let _ = ctr(&["task", "kill", "-s", "SIGKILL", &c.name]);
    let t0 = Instant::now();
    while c.task().is_some_and(|(_, s)| s != "STOPPED") {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = ctr(&["task", "rm", &c.name]);
    let out = ctr(&["task", "start", "-d", &c.name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(c.pid(), old_pid);
    client
        .set_dns_server(dns(&c.id(), "", false))
        .await
        .unwrap();
    assert_eq!(
        pod.content(),
        ORIGINAL,
        "not restored through the restarted container"
    );
    host.unchanged();
}

#[tokio::test]
#[ignore = "host tier: root and the test containerd; run by tests/run-all.sh"]
async fn two_containers_of_one_pod_share_the_original_and_a_shell_less_image_works() {
    let host = HostResolv::now();
    // An image with no shell and no tools at all (only /bin/sleep): upstream cannot do DNSChaos
    // there; faultd runs nothing in the target.
    let tar = std::env::temp_dir().join(format!("noshell-{}.tar", std::process::id()));
    let img = "docker.io/library/faultd-noshell:latest";
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/env/ctr/mk-oci-image.py"))
        .arg(&tar)
        .arg(img)
        .env("OCI_MINIMAL", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctr(&["images", "import", tar.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&tar);

    let pod = PodFile::new();
    let app = container(&pod, "dns-pod-3");
    let name = format!("fdc-noshell-{}", std::process::id());
    let m = pod.mount_opt();
    let out = ctr(&["run", "-d", "--mount", &m, img, &name, "/bin/sleep", "3600"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bare = Container { name };
    let no_sh = ctr(&[
        "task",
        "exec",
        "--exec-id",
        "sh",
        &bare.name,
        "/bin/sh",
        "-c",
        "true",
    ]);
    assert!(!no_sh.status.success(), "the shell-less image has a shell");

    let state = tempfile::tempdir().unwrap();
    let (_d, mut client) = daemon(state.path()).await;
    client
        .set_dns_server(dns(&bare.id(), CHAOS_DNS, true))
        .await
        .unwrap();
    chaos_content_ok(&String::from_utf8(pod.content()).unwrap());
    // The second container of the pod joins; the first one leaves: still chaos for the second.
    client
        .set_dns_server(dns(&app.id(), CHAOS_DNS, true))
        .await
        .unwrap();
    client
        .set_dns_server(dns(&bare.id(), "", false))
        .await
        .unwrap();
    chaos_content_ok(&inside(&app));
    // The last one leaves: the original, byte for byte (not the first fault's content).
    client
        .set_dns_server(dns(&app.id(), "", false))
        .await
        .unwrap();
    assert_eq!(pod.content(), ORIGINAL);
    host.unchanged();
    let _ = ctr(&["images", "rm", img]);
}

#[tokio::test]
#[ignore = "host tier: root and the test containerd; run by tests/run-all.sh"]
async fn bad_input_is_refused_and_changes_nothing() {
    let host = HostResolv::now();
    let pod = PodFile::new();
    let c = container(&pod, "dns-pod-4");
    let state = tempfile::tempdir().unwrap();
    let (_d, mut client) = daemon(state.path()).await;
    for bad in [
        "not-an-ip",
        "10.96.0.999",
        "",
        "10.0.0.1; rm -rf /",
        "example.com",
    ] {
        let e = client
            .set_dns_server(dns(&c.id(), bad, true))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
    }
    let e = client
        .set_dns_server(dns("containerd://no-such-container", CHAOS_DNS, true))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert_eq!(pod.content(), ORIGINAL);
    // IPv6 is accepted (as upstream's ParseIP).
    client
        .set_dns_server(dns(&c.id(), "fd00::53", true))
        .await
        .unwrap();
    assert!(inside(&c).contains("nameserver fd00::53\n"));
    client
        .set_dns_server(dns(&c.id(), "", false))
        .await
        .unwrap();
    assert_eq!(pod.content(), ORIGINAL);
    host.unchanged();
}
