//! Host tier (root; run by `tests/run-all.sh`, or `cargo test --test host_partition --
//! --ignored --test-threads=1 --nocapture`): network partitions (`FlushIPSets` +
//! `SetIptablesChains`) through a real faultd child process, measured with real TCP connections
//! between two throwaway network namespaces joined by a veth pair.
//!
//! Topology (names carry the test's pid and a tag, so runs never collide):
//!
//! ```text
//!   netns fdp-s-*  (the target: a `sleep` holder in a cgroup named like a docker container)
//!     eth0 10.201.0.1/24, listeners on P1 and P2
//!        | veth
//!   netns fdp-c-*  (the peer)
//!     eth0 10.201.0.2/24, .3, .4, .5, listener on P3
//! ```
//!
//! The daemon resolves `docker://<id>` through its `/proc` cgroup scan (the docker socket it is
//! pointed at does not exist), exactly as it would for a container whose runtime is down.
mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::host::DaemonProc;
use faultd::ns::{Namespace, NsKind};
use faultd::proto::pb;
use faultd::proto::pb::chaos_daemon_client::ChaosDaemonClient;
use tonic::transport::Channel;
use tonic::Code;

const SRV: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const CLI_BLOCKED: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
const CLI_PORT_BLOCKED: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 3);
const CLI_FREE: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 4);
const CLI_DST_BLOCKED: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 5);
/// A dropped SYN: the probe gives up after this.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A listener inside a namespace, accepting (and dropping) connections until dropped.
struct Listener {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn start(ns: &Namespace) -> Listener {
        // The socket is created inside the namespace and keeps it; accepting needs no setns.
        let l = ns.run(|| TcpListener::bind("0.0.0.0:0")).unwrap().unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => drop(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Listener {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Two network namespaces joined by a veth pair; the target side's holder sits in a cgroup
/// whose name is a fake docker container id.
struct Pair {
    srv_name: String,
    cli_name: String,
    holder: Child,
    cgroup: PathBuf,
    container_id: String,
    srv: Namespace,
    cli: Namespace,
}

fn cgroup_root() -> PathBuf {
    for c in [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/systemd",
    ] {
        if Path::new(c).join("cgroup.procs").exists() {
            return PathBuf::from(c);
        }
    }
    panic!("no writable cgroup hierarchy found under /sys/fs/cgroup");
}

impl Pair {
    fn new(tag: &str) -> Pair {
        let pid = std::process::id();
        let srv_name = format!("fdp-s-{tag}-{pid}");
        let cli_name = format!("fdp-c-{tag}-{pid}");
        for n in [&srv_name, &cli_name] {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
            run(&["ip", "netns", "add", n]);
        }
        run(&[
            "ip", "-n", &srv_name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
            "netns", &cli_name,
        ]);
        run(&[
            "ip",
            "-n",
            &srv_name,
            "addr",
            "add",
            "10.201.0.1/24",
            "dev",
            "eth0",
        ]);
        for a in [
            "10.201.0.2/24",
            "10.201.0.3/24",
            "10.201.0.4/24",
            "10.201.0.5/24",
        ] {
            run(&["ip", "-n", &cli_name, "addr", "add", a, "dev", "eth0"]);
        }
        for n in [&srv_name, &cli_name] {
            run(&["ip", "-n", n, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        let holder = Command::new("ip")
            .args(["netns", "exec", &srv_name, "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let want = std::fs::metadata(format!("/run/netns/{srv_name}"))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        let t0 = Instant::now();
        while std::fs::metadata(format!("/proc/{}/ns/net", holder.id()))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap_or(0)
            != want
        {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "holder never entered"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let id = format!(
            "{:032x}{:032x}",
            uuid::Uuid::new_v4().as_u128(),
            uuid::Uuid::new_v4().as_u128()
        );
        let cgroup = cgroup_root().join(&id);
        std::fs::create_dir(&cgroup).unwrap();
        std::fs::write(cgroup.join("cgroup.procs"), holder.id().to_string()).unwrap();
        let open =
            |n: &str| Namespace::open(&Path::new("/run/netns").join(n), NsKind::Net).unwrap();
        let (srv, cli) = (open(&srv_name), open(&cli_name));
        Pair {
            srv_name,
            cli_name,
            holder,
            cgroup,
            container_id: format!("docker://{id}"),
            srv,
            cli,
        }
    }

    /// `nft -s list ruleset` (without counters) in the target namespace.
    fn ruleset(&self) -> String {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.srv_name,
            "nft",
            "-s",
            "list",
            "ruleset",
        ])
    }

    fn has_table(&self) -> bool {
        self.ruleset().contains("table inet faultd")
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = std::fs::remove_dir(&self.cgroup);
        for n in [&self.srv_name, &self.cli_name] {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Connected,
    Refused,
    TimedOut,
}

/// One TCP connect from `src` (an address in namespace `from`) to `dst`.
async fn probe(from: &Namespace, src: Ipv4Addr, dst: SocketAddrV4) -> (Outcome, Duration) {
    let sock = from
        .run(move || -> std::io::Result<tokio::net::TcpSocket> {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.bind(SocketAddr::new(src.into(), 0))?;
            Ok(s)
        })
        .unwrap()
        .unwrap();
    let t0 = Instant::now();
    let out = match tokio::time::timeout(PROBE_TIMEOUT, sock.connect(dst.into())).await {
        Ok(Ok(_)) => Outcome::Connected,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
        Ok(Err(e)) => panic!("connect {src} -> {dst}: {e}"),
        Err(_) => Outcome::TimedOut,
    };
    (out, t0.elapsed())
}

async fn expect(from: &Namespace, src: Ipv4Addr, dst: SocketAddrV4, want: Outcome, what: &str) {
    let (got, took) = probe(from, src, dst).await;
    println!("  {what:<48} {src} -> {dst}: {got:?} in {took:.1?}");
    assert_eq!(got, want, "{what}: {src} -> {dst}");
}

fn spawn_daemon(state: &Path) -> (DaemonProc, u16) {
    spawn_daemon_with(state, None)
}

/// With `hide`: the daemon runs in a private mount namespace where an empty file is
/// bind-mounted over the `nft` program (this machine's own mount namespace is untouched).
fn spawn_daemon_with(state: &Path, hide: Option<(&Path, &Path)>) -> (DaemonProc, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let missing_docker = state.join("no-docker.sock");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultd"));
    cmd.args([
        "--insecure",
        "--listen-address",
        "127.0.0.1",
        "--http-port",
        "0",
    ])
    .args(["--grpc-port", &port.to_string()])
    .args(["--runtime", "docker", "--runtime-socket-path"])
    .arg(&missing_docker)
    .arg("--state-dir")
    .arg(state)
    .env("RUST_LOG", "warn")
    .stdin(Stdio::null());
    if let Some((empty, nft)) = hide {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::process::CommandExt;
        let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        let (src, dst, root) = (c(empty), c(nft), c(Path::new("/")));
        // SAFETY: runs in the forked child before exec and only makes syscalls (unshare,
        // mount) on C strings allocated before the fork; errors come from errno.
        unsafe {
            cmd.pre_exec(move || {
                let err = || Err(std::io::Error::last_os_error());
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return err();
                }
                let none = std::ptr::null();
                if libc::mount(
                    none,
                    root.as_ptr(),
                    none,
                    libc::MS_REC | libc::MS_PRIVATE,
                    none.cast(),
                ) != 0
                {
                    return err();
                }
                if libc::mount(src.as_ptr(), dst.as_ptr(), none, libc::MS_BIND, none.cast()) != 0 {
                    return err();
                }
                Ok(())
            });
        }
    }
    let child = cmd.spawn().unwrap();
    (
        DaemonProc {
            child,
            state: state.to_path_buf(),
            socket: state.join("faultd.sock"),
        },
        port,
    )
}

async fn client(d: &mut DaemonProc, port: u16) -> ChaosDaemonClient<Channel> {
    d.ready().await;
    let t0 = Instant::now();
    loop {
        if let Ok(c) = ChaosDaemonClient::connect(format!("http://127.0.0.1:{port}")).await {
            return c;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "gRPC port never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Closes the client's connection before the daemon is asked to stop, so its shutdown does
/// not wait out the grace period for a connection the blocked test thread cannot close.
async fn shutdown(c: ChaosDaemonClient<Channel>, d: DaemonProc) {
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(d);
}

fn net(name: &str, cidrs: &[&str]) -> pb::IpSet {
    pb::IpSet {
        name: name.into(),
        r#type: "hash:net".into(),
        cidrs: cidrs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn chain(name: &str, dir: pb::chain::Direction, ipsets: &[&str], target: &str) -> pb::Chain {
    pb::Chain {
        name: name.into(),
        direction: dir as i32,
        ipsets: ipsets.iter().map(|s| s.to_string()).collect(),
        target: target.into(),
        ..Default::default()
    }
}

fn sets_req(p: &Pair, ipsets: Vec<pb::IpSet>) -> pb::IpSetsRequest {
    pb::IpSetsRequest {
        ipsets,
        container_id: p.container_id.clone(),
        enter_ns: true,
        pod_uid: String::new(),
    }
}

fn chains_req(p: &Pair, chains: Vec<pb::Chain>) -> pb::IptablesChainsRequest {
    pb::IptablesChainsRequest {
        chains,
        container_id: p.container_id.clone(),
        enter_ns: true,
        pod_uid: String::new(),
    }
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn partition_blocks_selected_peers_and_recovers_exactly() {
    let p = Pair::new("part");
    let (l1, l2, l3) = (
        Listener::start(&p.srv),
        Listener::start(&p.srv),
        Listener::start(&p.cli),
    );
    let to_srv = |port| SocketAddrV4::new(SRV, port);
    let before = p.ruleset();
    let state = tempfile::tempdir().unwrap();
    let (mut d, port) = spawn_daemon(state.path());
    let mut c = client(&mut d, port).await;
    use Outcome::*;

    println!("baseline:");
    for src in [CLI_BLOCKED, CLI_PORT_BLOCKED, CLI_FREE] {
        expect(&p.cli, src, to_srv(l1.port), Connected, "baseline").await;
    }
    expect(
        &p.srv,
        SRV,
        SocketAddrV4::new(CLI_DST_BLOCKED, l3.port),
        Connected,
        "baseline out",
    )
    .await;

    // The controller's shapes: a hash:net and a hash:net,port set joined by a list:set, plus
    // a destination set for an OUTPUT chain.
    let ipsets = vec![
        net("fdt_src_net", &["10.201.0.2/32"]),
        pb::IpSet {
            name: "fdt_src_np".into(),
            r#type: "hash:net,port".into(),
            cidr_and_ports: vec![pb::CidrAndPort {
                cidr: "10.201.0.3".into(),
                port: u32::from(l2.port),
            }],
            ..Default::default()
        },
        pb::IpSet {
            name: "fdt_src".into(),
            r#type: "list:set".into(),
            set_names: vec!["fdt_src_net".into(), "fdt_src_np".into()],
            ..Default::default()
        },
        net("fdt_dst", &["10.201.0.5"]),
    ];
    let t0 = Instant::now();
    c.flush_ip_sets(sets_req(&p, ipsets.clone())).await.unwrap();
    println!("FlushIPSets (first): {:.1?}", t0.elapsed());
    assert!(p.ruleset().contains("set v4_fdt_src"), "{}", p.ruleset());
    println!("ipsets only (no chain yet):");
    expect(
        &p.cli,
        CLI_BLOCKED,
        to_srv(l1.port),
        Connected,
        "sets alone block nothing",
    )
    .await;

    let drop_chains = vec![
        chain(
            "INPUT/fdt-in",
            pb::chain::Direction::Input,
            &["fdt_src"],
            "DROP",
        ),
        chain(
            "OUTPUT/fdt-out",
            pb::chain::Direction::Output,
            &["fdt_dst"],
            "DROP",
        ),
    ];
    let t0 = Instant::now();
    c.set_iptables_chains(chains_req(&p, drop_chains.clone()))
        .await
        .unwrap();
    println!(
        "SetIptablesChains (replaces the table): {:.1?}",
        t0.elapsed()
    );
    println!("partition (DROP):\n{}", p.ruleset());
    expect(
        &p.cli,
        CLI_BLOCKED,
        to_srv(l1.port),
        TimedOut,
        "INPUT hash:net source",
    )
    .await;
    expect(
        &p.cli,
        CLI_PORT_BLOCKED,
        to_srv(l2.port),
        TimedOut,
        "INPUT hash:net,port (src, dport)",
    )
    .await;
    expect(
        &p.cli,
        CLI_PORT_BLOCKED,
        to_srv(l1.port),
        Connected,
        "same source, other port",
    )
    .await;
    expect(
        &p.cli,
        CLI_FREE,
        to_srv(l1.port),
        Connected,
        "source in no set",
    )
    .await;
    expect(
        &p.srv,
        SRV,
        SocketAddrV4::new(CLI_DST_BLOCKED, l3.port),
        TimedOut,
        "OUTPUT hash:net destination",
    )
    .await;
    expect(
        &p.srv,
        SRV,
        SocketAddrV4::new(CLI_FREE, l3.port),
        Connected,
        "destination in no set",
    )
    .await;

    // partitionBehavior: reject (controller PR #5068).
    let mut reject = drop_chains.clone();
    reject[0].target = "REJECT --reject-with tcp-reset".into();
    reject[0].protocol = "tcp".into();
    c.set_iptables_chains(chains_req(&p, reject)).await.unwrap();
    println!("partition (REJECT tcp-reset):");
    let (got, took) = probe(&p.cli, CLI_BLOCKED, to_srv(l1.port)).await;
    println!(
        "  {:<48} {CLI_BLOCKED} -> {}: {got:?} in {took:.1?}",
        "INPUT reject",
        to_srv(l1.port)
    );
    assert_eq!(got, Refused);
    assert!(took < Duration::from_millis(500), "{took:?}");
    expect(
        &p.cli,
        CLI_FREE,
        to_srv(l1.port),
        Connected,
        "source in no set",
    )
    .await;

    // Hostile or inconsistent requests change nothing.
    let kept = p.ruleset();
    for (target, code) in [
        ("DROP; flush ruleset", Code::InvalidArgument),
        ("CLASSIFY --set-class 1:2", Code::InvalidArgument),
    ] {
        let e = c
            .set_iptables_chains(chains_req(
                &p,
                vec![chain("INPUT/x", pb::chain::Direction::Input, &[], target)],
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{target}: {e:?}");
    }
    let e = c
        .set_iptables_chains(chains_req(
            &p,
            vec![chain(
                "INPUT/x",
                pb::chain::Direction::Input,
                &["nope"],
                "DROP",
            )],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = c
        .flush_ip_sets(sets_req(&p, vec![net("bad name", &["10.0.0.1"])]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let mut bad_dir = chain("INPUT/x", pb::chain::Direction::Input, &[], "DROP");
    bad_dir.direction = 7;
    let e = c
        .set_iptables_chains(chains_req(&p, vec![bad_dir]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(
        p.ruleset(),
        kept,
        "refused requests must not touch the table"
    );

    // Recover in the controller's order: ipsets first (the chains then name missing sets and
    // match nothing), then chains.
    c.flush_ip_sets(sets_req(&p, vec![])).await.unwrap();
    println!("after FlushIPSets([]):");
    expect(
        &p.cli,
        CLI_BLOCKED,
        to_srv(l1.port),
        Connected,
        "chains without sets",
    )
    .await;
    c.set_iptables_chains(chains_req(&p, vec![])).await.unwrap();
    let after = p.ruleset();
    assert_eq!(
        after, before,
        "recover must leave the ruleset exactly as it was"
    );
    println!("recovered:");
    expect(&p.cli, CLI_BLOCKED, to_srv(l1.port), Connected, "recovered").await;
    expect(
        &p.cli,
        CLI_PORT_BLOCKED,
        to_srv(l2.port),
        Connected,
        "recovered",
    )
    .await;
    expect(
        &p.srv,
        SRV,
        SocketAddrV4::new(CLI_DST_BLOCKED, l3.port),
        Connected,
        "recovered",
    )
    .await;
    // Recovering again is a no-op.
    c.set_iptables_chains(chains_req(&p, vec![])).await.unwrap();
    c.flush_ip_sets(sets_req(&p, vec![])).await.unwrap();
    assert_eq!(p.ruleset(), before);
    shutdown(c, d).await;
}

/// Partitions need no `nft` program: the daemon runs where `/usr/sbin/nft` is an empty file
/// (a private mount namespace), applies a partition that blocks, and recovers it exactly.
#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn a_partition_applies_and_recovers_on_a_node_without_nft() {
    let nft = std::fs::canonicalize("/usr/sbin/nft").expect("the test machine has nft");
    let p = Pair::new("nonft");
    let l1 = Listener::start(&p.srv);
    let dst = SocketAddrV4::new(SRV, l1.port);
    let before = p.ruleset();
    let state = tempfile::tempdir().unwrap();
    let empty = state.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let (mut d, port) = spawn_daemon_with(&state.path().join("s"), Some((&empty, &nft)));
    let mut c = client(&mut d, port).await;
    // Inside the daemon's mount namespace nft is the empty file; outside it is not.
    let inside =
        std::fs::metadata(format!("/proc/{}/root{}", d.child.id(), nft.display())).unwrap();
    assert_eq!(inside.len(), 0, "nft is hidden from the daemon");
    assert!(std::fs::metadata(&nft).unwrap().len() > 0);
    c.flush_ip_sets(sets_req(&p, vec![net("fdt_n", &["10.201.0.2"])]))
        .await
        .unwrap();
    c.set_iptables_chains(chains_req(
        &p,
        vec![chain(
            "INPUT/fdt-n",
            pb::chain::Direction::Input,
            &["fdt_n"],
            "DROP",
        )],
    ))
    .await
    .unwrap();
    assert!(p.has_table());
    expect(
        &p.cli,
        CLI_BLOCKED,
        dst,
        Outcome::TimedOut,
        "partitioned, no nft",
    )
    .await;
    expect(
        &p.cli,
        CLI_FREE,
        dst,
        Outcome::Connected,
        "others pass, no nft",
    )
    .await;
    c.set_iptables_chains(chains_req(&p, vec![])).await.unwrap();
    c.flush_ip_sets(sets_req(&p, vec![])).await.unwrap();
    assert!(!p.has_table(), "{}", p.ruleset());
    assert_eq!(p.ruleset(), before);
    expect(
        &p.cli,
        CLI_BLOCKED,
        dst,
        Outcome::Connected,
        "recovered, no nft",
    )
    .await;
    shutdown(c, d).await;
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn sigkill_with_a_partition_active_rolls_back_on_restart() {
    let p = Pair::new("kill");
    let l1 = Listener::start(&p.srv);
    let dst = SocketAddrV4::new(SRV, l1.port);
    let before = p.ruleset();
    let state = tempfile::tempdir().unwrap();
    let (mut d, port) = spawn_daemon(state.path());
    let mut c = client(&mut d, port).await;
    c.flush_ip_sets(sets_req(&p, vec![net("fdt_k", &["10.201.0.2"])]))
        .await
        .unwrap();
    c.set_iptables_chains(chains_req(
        &p,
        vec![chain(
            "INPUT/fdt-k",
            pb::chain::Direction::Input,
            &["fdt_k"],
            "DROP",
        )],
    ))
    .await
    .unwrap();
    expect(&p.cli, CLI_BLOCKED, dst, Outcome::TimedOut, "partitioned").await;
    d.kill9();
    assert!(
        p.has_table(),
        "the partition outlives a SIGKILLed daemon until restart"
    );
    expect(&p.cli, CLI_BLOCKED, dst, Outcome::TimedOut, "daemon dead").await;

    let t0 = Instant::now();
    let (mut d2, port2) = spawn_daemon(state.path());
    let c2 = client(&mut d2, port2).await;
    println!("restart to serving (rollback done): {:.1?}", t0.elapsed());
    assert!(!p.has_table(), "{}", p.ruleset());
    assert_eq!(p.ruleset(), before);
    expect(
        &p.cli,
        CLI_BLOCKED,
        dst,
        Outcome::Connected,
        "after restart",
    )
    .await;
    shutdown(c2, d2).await;
}

#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn a_faultd_table_nobody_owns_is_refused_and_doctor_removes_it() {
    use faultd::proto::faultd::v1 as api;
    let p = Pair::new("foreign");
    run(&[
        "ip",
        "netns",
        "exec",
        &p.srv_name,
        "nft",
        "add",
        "table",
        "inet",
        "faultd",
    ]);
    let state = tempfile::tempdir().unwrap();
    let (mut d, port) = spawn_daemon(state.path());
    let mut c = client(&mut d, port).await;
    let e = c
        .flush_ip_sets(sets_req(&p, vec![net("fdt_f", &["10.201.0.2"])]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("doctor"), "{e:?}");
    assert!(p.has_table());

    let ch = d.ready().await;
    let mut doc = api::doctor_client::DoctorClient::new(ch);
    let r = doc
        .check(api::DoctorRequest { fix: false })
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.residue
            .iter()
            .any(|x| x.kind == "nft table" && !x.removed && x.location.contains(&p.srv_name)),
        "{r:?}"
    );
    // The daemon's `fix: true` is node-wide and would also remove the tables of other test runs
    // on this host; the same removal, scoped to this namespace:
    let ns = (p.srv.id(), p.srv.try_clone().unwrap(), p.srv_name.clone());
    let found = faultd::faults::firewall::stray_tables(&[ns], &Default::default(), true).await;
    assert!(found.len() == 1 && found[0].removed, "{found:?}");
    assert!(!p.has_table());
    // Now faultd owns the table; an owned table is not residue.
    c.flush_ip_sets(sets_req(&p, vec![net("fdt_f", &["10.201.0.2"])]))
        .await
        .unwrap();
    let r = doc
        .check(api::DoctorRequest { fix: false })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !r.residue
            .iter()
            .any(|x| x.kind == "nft table" && x.location.contains(&p.srv_name)),
        "{r:?}"
    );
    assert!(p.has_table());
    c.flush_ip_sets(sets_req(&p, vec![])).await.unwrap();
    assert!(!p.has_table());
    drop(doc);
    shutdown(c, d).await;
}

/// A throwaway named network namespace, deleted on drop.
struct ScratchNs {
    name: String,
    ns: Namespace,
}

impl ScratchNs {
    fn new(tag: &str) -> ScratchNs {
        let name = format!("fdp-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        let ns = Namespace::open(&Path::new("/run/netns").join(&name), NsKind::Net).unwrap();
        ScratchNs { name, ns }
    }

    /// `nft` (the test oracle only) in this namespace.
    fn nft(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            Ok(String::from_utf8(out.stdout).unwrap())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for ScratchNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The correctness oracle: every golden ruleset, loaded natively (its `.nlhex`, the batch the
/// daemon sends for the golden's state) in one namespace and with `nft -f <golden>.nft` in
/// another, lists identically; the native read-back sees the owner; a foreign owner's delete is
/// refused as a whole, the owner's succeeds.
#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn every_golden_loads_natively_exactly_as_nft_loads_it() {
    use faultd::faults::firewall::{commit, nl, table_state, TableState};
    let native = ScratchNs::new("gn");
    let oracle = ScratchNs::new("go");
    let owner = "00000000-0000-4000-8000-000000000001";
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/faults/firewall/golden");
    let mut n = 0;
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "nft"))
        .collect();
    names.sort();
    for path in names {
        let text = std::fs::read_to_string(&path).unwrap();
        let hex = std::fs::read_to_string(path.with_extension("nlhex")).unwrap();
        let batch = nl::from_hex_lines(&hex).unwrap();
        commit(&native.ns, "golden", batch)
            .await
            .unwrap_or_else(|e| panic!("{}: native: {e}", path.display()));
        oracle
            .nft(&["-f", "-"], Some(&text))
            .unwrap_or_else(|e| panic!("{}: nft: {e}", path.display()));
        let list = ["list", "table", "inet", "faultd"];
        let got = native.nft(&list, None).unwrap();
        let want = oracle.nft(&list, None).unwrap();
        assert_eq!(got, want, "{}: native vs nft listing", path.display());
        // The JSON form too (it spells out what the text form abbreviates, handles included:
        // the native batch creates the objects in nft's order).
        let json = ["-j", "list", "table", "inet", "faultd"];
        assert_eq!(
            native.nft(&json, None).unwrap(),
            oracle.nft(&json, None).unwrap(),
            "{}: native vs nft JSON",
            path.display()
        );
        let TableState::Present(l) = table_state(&native.ns).await.unwrap() else {
            panic!("{}: table absent after loading", path.display())
        };
        assert_eq!(l.owner(), Some(owner), "{}", path.display());
        let TableState::Present(lo) = table_state(&oracle.ns).await.unwrap() else {
            panic!("{}: oracle table absent", path.display())
        };
        assert_eq!(l, lo, "{}: native read-back of both tables", path.display());
        // Someone else's delete is refused as a whole; the owner's succeeds.
        let other = nl::delete_owned_batch("ffffffff-0000-4000-8000-000000000000").unwrap();
        assert!(commit(&native.ns, "other", other).await.is_err());
        let mine = nl::delete_owned_batch(owner).unwrap();
        commit(&native.ns, "mine", mine.clone()).await.unwrap();
        commit(&oracle.ns, "mine", mine).await.unwrap();
        assert_eq!(table_state(&native.ns).await.unwrap(), TableState::Absent);
        assert_eq!(table_state(&oracle.ns).await.unwrap(), TableState::Absent);
        n += 1;
    }
    assert!(n >= 6, "{n} goldens");
    // The idempotent delete succeeds on an absent table.
    commit(&native.ns, "any", nl::delete_any_batch())
        .await
        .unwrap();
}

/// Packets counted by the rule of chain `k_0` (SetTcs' classification) in `table inet faultd`.
fn classified(p: &Pair) -> u64 {
    let text = run(&[
        "ip",
        "netns",
        "exec",
        &p.srv_name,
        "nft",
        "list",
        "chain",
        "inet",
        "faultd",
        "k_0",
    ]);
    let line = text
        .lines()
        .find(|l| l.contains("meta priority set"))
        .unwrap_or_else(|| panic!("no classification rule:\n{text}"));
    let n = line.split("counter packets ").nth(1).unwrap();
    n.split(' ').next().unwrap().parse().unwrap()
}

/// ipset-filtered SetTcs' classification (`Part::Classify`, what `set_tcs_for` writes next to
/// its `prio` qdisc; this host kernel has no sch_prio, so the qdisc half is the VM tier's):
/// written into the same native table, it counts the selected destination's packets only and
/// goes on recover.
#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn ipset_filtered_settcs_classifies_through_the_native_table() {
    use faultd::engine::FaultMeta;
    use faultd::faults::firewall::{Classify, IpSet, Part};
    let p = Pair::new("cls");
    let l3 = Listener::start(&p.cli);
    let before = p.ruleset();
    let state = tempfile::tempdir().unwrap();
    let engine = faultd::faults::FaultEngine::open(
        state.path(),
        Duration::from_secs(600),
        Arc::new(faultd::metrics::Metrics::new()),
    )
    .unwrap();
    let who = faultd::process::ProcessIdentity::of(p.holder.id()).unwrap();
    let meta = FaultMeta {
        owner: "host-test".into(),
        ..Default::default()
    };
    let set = |s: &str| {
        Part::Sets(vec![IpSet {
            name: "chaos-tgt".into(),
            set_type: "hash:net".into(),
            cidrs: vec![s.into()],
            cidr_and_ports: vec![],
            set_names: vec![],
        }])
    };
    let fw = |part| faultd::faults::firewall::set_firewall_for(&engine, who, part, &meta);
    fw(set("10.201.0.2/32")).await.unwrap();
    fw(Part::Classify(vec![Classify {
        ipset: "chaos-tgt".into(),
        protocol: "tcp".into(),
        device: "eth0".into(),
        class: 0xFA02_0004,
    }]))
    .await
    .unwrap();
    let listing = p.ruleset();
    assert!(
        listing.contains(
            "oifname \"eth0\" ip daddr @v4_chaos-tgt meta l4proto tcp counter meta priority set fa02:4"
        ),
        "{listing}"
    );
    assert_eq!(classified(&p), 0);
    let to = |ip| SocketAddrV4::new(ip, l3.port);
    expect(
        &p.srv,
        SRV,
        to(CLI_FREE),
        Outcome::Connected,
        "other destination",
    )
    .await;
    assert_eq!(classified(&p), 0, "another destination is not classified");
    expect(
        &p.srv,
        SRV,
        to(CLI_BLOCKED),
        Outcome::Connected,
        "selected destination",
    )
    .await;
    let n = classified(&p);
    assert!(n > 0, "the selected destination's packets are classified");
    println!("classified packets: {n}");

    // One socket per namespace, kept while faults live there and closed (off the request
    // path) soon after the last one ended.
    use faultd::faults::firewall::conn;
    assert!(conn::is_open(p.srv.id()));
    fw(Part::Classify(vec![])).await.unwrap();
    assert!(conn::is_open(p.srv.id()), "still in use: the ipsets remain");
    let t = Instant::now();
    fw(Part::Sets(vec![])).await.unwrap();
    println!("recover (table deleted): {:.2?}", t.elapsed());
    assert!(!p.has_table(), "{}", p.ruleset());
    assert_eq!(p.ruleset(), before);
    let t = Instant::now();
    while conn::is_open(p.srv.id()) {
        assert!(
            t.elapsed() < conn::LINGER + Duration::from_secs(2),
            "the namespace's socket was not closed after its last fault ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "socket closed {:.2?} after the last fault ended",
        t.elapsed()
    );
}

/// A large partition (65,536 IPv4 and 20,000 IPv6 entries, the per-ipset maximum and more) loads
/// as one native batch: element lists split over many messages, a send buffer sized to the
/// batch; nft lists every element back.
#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn a_large_partition_loads_as_one_native_batch() {
    use faultd::faults::firewall::{commit, compile, nl, table_state, DesiredState, IpSet};
    use faultd::faults::firewall::{Chain, Direction, TableState};
    let ns = ScratchNs::new("big");
    let v4: Vec<String> = (0..65_536u32)
        .map(|i| format!("10.{}.{}.{}", 100 + (i >> 16), (i >> 8) & 255, i & 255))
        .collect();
    let v6: Vec<String> = (0..20_000u32)
        .map(|i| format!("fd00::{:x}:{:x}", i >> 16, i & 0xffff))
        .collect();
    let state = DesiredState {
        sets: vec![
            IpSet {
                name: "big4".into(),
                set_type: "hash:net".into(),
                cidrs: v4,
                ..Default::default()
            },
            IpSet {
                name: "big6".into(),
                set_type: "hash:net".into(),
                cidrs: v6,
                ..Default::default()
            },
        ],
        chains: vec![Chain {
            name: "INPUT/big".into(),
            direction: Direction::Input,
            ipsets: vec!["big4".into(), "big6".into()],
            target: "DROP".into(),
            protocol: String::new(),
            source_ports: String::new(),
            destination_ports: String::new(),
            tcp_flags: String::new(),
            device: String::new(),
        }],
        classify: vec![],
    };
    let table = compile(&state).unwrap();
    let owner = "00000000-0000-4000-8000-00000000000b";
    let batch = nl::apply_batch(&table, owner).unwrap();
    let (msgs, bytes) = (batch.msgs.len(), batch.bytes(1).len());
    let t = Instant::now();
    commit(&ns.ns, "big", batch).await.unwrap();
    println!(
        "{msgs} messages, {bytes} bytes: committed in {:.1?}",
        t.elapsed()
    );
    let TableState::Present(l) = table_state(&ns.ns).await.unwrap() else {
        panic!("table absent")
    };
    assert_eq!(l.owner(), Some(owner));
    assert_eq!(l.chains.get("c_INPUT/big"), Some(&2));
    let listed = ns
        .nft(&["list", "set", "inet", "faultd", "v4_big4"], None)
        .unwrap();
    // Each /32 is its own interval (adjacent ones are not merged): first and last are there.
    assert!(
        listed.contains("10.100.0.0") && listed.contains("10.100.255.255"),
        "{}",
        &listed[..400.min(listed.len())]
    );
    commit(&ns.ns, "del", nl::delete_owned_batch(owner).unwrap())
        .await
        .unwrap();
    assert_eq!(table_state(&ns.ns).await.unwrap(), TableState::Absent);
}

/// HTTPChaos's interception table (`inet faultd_http`: one `tproxy` rule per port) loads
/// natively exactly as `nft -f` loads its rendering, and only its owner can delete it.
#[tokio::test]
#[ignore = "host tier: run by tests/run-all.sh"]
async fn the_http_interception_table_loads_natively_exactly_as_nft_loads_it() {
    use faultd::faults::firewall::{commit, conn, tproxy};
    let native = ScratchNs::new("hn");
    let oracle = ScratchNs::new("ho");
    let owner = "00000000-0000-4000-8000-0000000000aa";
    let i = tproxy::Interception {
        ports: vec![80, 8080, 443],
        listener: 15080,
        mark: Some(0xfa17),
    };
    commit(&native.ns, "http", tproxy::apply_batch(&i, owner).unwrap())
        .await
        .unwrap();
    // The same transaction as text: create-or-keep, delete, then the table (so the handles
    // match too).
    let text = format!(
        "add table inet faultd_http\ndelete table inet faultd_http\n{}",
        tproxy::render(&i, owner).unwrap()
    );
    oracle.nft(&["-f", "-"], Some(&text)).unwrap();
    for list in [
        &["list", "table", "inet", "faultd_http"][..],
        &["-j", "list", "table", "inet", "faultd_http"][..],
    ] {
        let got = native.nft(list, None).unwrap();
        assert_eq!(got, oracle.nft(list, None).unwrap(), "native vs nft");
        assert!(got.contains("tproxy"), "{got}");
    }
    // Replace with other ports: one transaction, the old rules gone.
    let j = tproxy::Interception {
        ports: vec![9090],
        listener: 15081,
        mark: None,
    };
    commit(&native.ns, "http", tproxy::apply_batch(&j, owner).unwrap())
        .await
        .unwrap();
    let listed = native
        .nft(&["list", "table", "inet", "faultd_http"], None)
        .unwrap();
    assert!(
        listed.contains("dport 9090 tproxy to :15081") && !listed.contains("dport 80 "),
        "{listed}"
    );
    let present = conn::with_socket(&native.ns, |s| s.has_table(tproxy::HTTP_TABLE))
        .await
        .unwrap();
    assert!(present);
    // Someone else's delete fails as a whole; the owner's removes the table.
    let other = "00000000-0000-4000-8000-0000000000bb";
    assert!(commit(
        &native.ns,
        "http",
        tproxy::delete_owned_batch(other).unwrap()
    )
    .await
    .is_err());
    commit(
        &native.ns,
        "http",
        tproxy::delete_owned_batch(owner).unwrap(),
    )
    .await
    .unwrap();
    let present = conn::with_socket(&native.ns, |s| s.has_table(tproxy::HTTP_TABLE))
        .await
        .unwrap();
    assert!(!present);
}
