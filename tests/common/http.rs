//! HTTPChaos test helpers (host tier, VM tier, bench): a pod network namespace joined by a veth
//! to a client network namespace (addresses only inside those two namespaces, so nothing of the
//! host's routing is touched and parallel runs on one machine cannot collide), an HTTP
//! application served by the test inside the pod namespace that records what it received
//! (peer address, method, URI, headers, body), raw TCP echo/banner servers, an HTTP/1.1 client
//! whose sockets live in the client namespace (new connection per request or kept alive, plain
//! or TLS), a throwaway PKI, and what `table inet faultd_http`, the fwmark rule and routing table
//! 64023 look like in a namespace.
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use faultd::ns::{Namespace, NsKind};
use faultd::proto::faultd::v1 as api;
use faultd::proto::pb;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tonic::transport::Channel;

use super::host::run;

/// The HTTP application's port in every test.
pub const APP_PORT: u16 = 8080;
/// faultd's mark, policy routing table and rule priority (`faults::http::route`).
pub const MARK: &str = "0xfa17";
pub const ROUTE_TABLE: &str = "64023";

/// A pod network namespace (named, held by a `sleep`, or a container's) with `eth0` at
/// 10.88.N.2/24 (and fd88:0:0:N::2/64 when the namespace has IPv6), joined by a veth to a
/// client namespace whose `c0` is 10.88.N.1 (fd88:0:0:N::1).
pub struct Net {
    /// `ip netns` name of the pod namespace (empty for a container's).
    pub pod: String,
    /// `ip netns` name of the client namespace.
    pub client: String,
    /// `/run/netns/<pod>` or `/proc/<pid>/ns/net`.
    pub pod_path: String,
    pub n: u8,
    pub v6: bool,
    holder: Option<Child>,
    pid: u32,
}

fn hash_name(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

impl Net {
    /// A fresh pod namespace `fdt-<tag>-<pid>` held by `sleep`, client `fdt-<tag>c-<pid>`.
    pub fn new(tag: &str, n: u8) -> Net {
        let pod = format!("fdt-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &pod]).output();
        run(&["ip", "netns", "add", &pod]);
        let holder = Command::new("ip")
            .args(["netns", "exec", &pod, "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let want = std::fs::metadata(format!("/run/netns/{pod}"))
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
                t0.elapsed() < Duration::from_secs(10),
                "holder never entered the netns"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let pid = holder.id();
        Net::wire(
            tag,
            n,
            pod.clone(),
            format!("/run/netns/{pod}"),
            Some(holder),
            pid,
        )
    }

    /// Joins the network namespace of `pid` (a container's) to a new client namespace: the
    /// container gets `eth0` (it must not have one).
    pub fn of_pid(tag: &str, n: u8, pid: u32) -> Net {
        Net::wire(
            tag,
            n,
            String::new(),
            format!("/proc/{pid}/ns/net"),
            None,
            pid,
        )
    }

    fn wire(
        tag: &str,
        n: u8,
        pod: String,
        pod_path: String,
        holder: Option<Child>,
        pid: u32,
    ) -> Net {
        let client = format!("fdt-{tag}c-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &client]).output();
        run(&["ip", "netns", "add", &client]);
        let mut net = Net {
            pod,
            client,
            pod_path,
            n,
            v6: false,
            holder,
            pid,
        };
        // A temporary name in the client namespace, so two tests' links never meet anywhere.
        let tmp = format!("fdv{:x}", hash_name(&net.client) & 0xff_ffff_ffff);
        run(&[
            "ip",
            "-n",
            &net.client,
            "link",
            "add",
            "c0",
            "type",
            "veth",
            "peer",
            "name",
            &tmp,
        ]);
        let p = pid.to_string();
        run(&["ip", "-n", &net.client, "link", "set", &tmp, "netns", &p]);
        net.pod_ip_cmd(&["link", "set", &tmp, "name", "eth0"]);
        net.pod_ip_cmd(&["addr", "add", &format!("10.88.{n}.2/24"), "dev", "eth0"]);
        net.pod_ip_cmd(&["link", "set", "eth0", "up"]);
        net.pod_ip_cmd(&["link", "set", "lo", "up"]);
        run(&[
            "ip",
            "-n",
            &net.client,
            "addr",
            "add",
            &format!("10.88.{n}.1/24"),
            "dev",
            "c0",
        ]);
        run(&["ip", "-n", &net.client, "link", "set", "c0", "up"]);
        run(&["ip", "-n", &net.client, "link", "set", "lo", "up"]);
        // IPv6 where the namespaces have it (nodad: usable at once).
        net.v6 = net
            .pod_try(&[
                "ip",
                "addr",
                "add",
                &format!("fd88:0:0:{n}::2/64"),
                "dev",
                "eth0",
                "nodad",
            ])
            .is_ok()
            && Command::new("ip")
                .args(["-n", &net.client, "addr", "add"])
                .arg(format!("fd88:0:0:{n}::1/64"))
                .args(["dev", "c0", "nodad"])
                .output()
                .is_ok_and(|o| o.status.success());
        net
    }

    /// The pid whose network namespace is the pod's (ApplyFault `target_pid`).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn pod_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 88, self.n, 2)
    }

    pub fn client_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 88, self.n, 1)
    }

    pub fn pod_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd88, 0, 0, self.n.into(), 0, 0, 0, 2)
    }

    pub fn client_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd88, 0, 0, self.n.into(), 0, 0, 0, 1)
    }

    /// The pod's IPv4 address and `port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.pod_ip().into(), port)
    }

    pub fn addr6(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.pod_ip6().into(), port)
    }

    pub fn pod_ns(&self) -> Namespace {
        Namespace::open(std::path::Path::new(&self.pod_path), NsKind::Net).unwrap()
    }

    pub fn client_ns(&self) -> Namespace {
        Namespace::open(
            std::path::Path::new(&format!("/run/netns/{}", self.client)),
            NsKind::Net,
        )
        .unwrap()
    }

    /// `nsenter --net=<pod> <args>`; its stdout, or stderr as the error.
    pub fn pod_try(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.pod_path))
            .args(args)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `nsenter --net=<pod> <args>`, which must succeed.
    pub fn pod_cmd(&self, args: &[&str]) -> String {
        self.pod_try(args)
            .unwrap_or_else(|e| panic!("in the pod netns: {args:?}: {e}"))
    }

    fn pod_ip_cmd(&self, args: &[&str]) -> String {
        let mut full = vec!["ip"];
        full.extend_from_slice(args);
        self.pod_cmd(&full)
    }

    /// What faultd's interception leaves in the pod namespace.
    pub fn trace(&self) -> Trace {
        let tables = self
            .pod_cmd(&["nft", "list", "tables"])
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        let pick = |args: &[&str], what: &str| -> Vec<String> {
            self.pod_try(args)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(what))
                .map(|l| l.trim().to_string())
                .collect()
        };
        Trace {
            tables,
            rules4: pick(&["ip", "-4", "rule", "show"], MARK),
            rules6: pick(&["ip", "-6", "rule", "show"], MARK),
            routes4: pick(
                &["ip", "-4", "route", "show", "table", ROUTE_TABLE],
                "local",
            ),
            routes6: pick(
                &["ip", "-6", "route", "show", "table", ROUTE_TABLE],
                "local",
            ),
        }
    }

    /// The pod goes away as a deleted pod's does: its processes end and its name is removed
    /// (for a named pod namespace). The namespace itself lives on while anything holds it.
    pub fn remove_pod(&mut self) {
        if let Some(h) = &mut self.holder {
            let _ = h.kill();
            let _ = h.wait();
        }
        self.holder = None;
        if !self.pod.is_empty() {
            run(&["ip", "netns", "del", &self.pod]);
            self.pod.clear();
        }
    }

    /// Whether the client's end of the veth still exists: it goes when the pod namespace is
    /// really freed (its `eth0` is destroyed with it, and the peer with that).
    pub fn veth_alive(&self) -> bool {
        Command::new("ip")
            .args(["-n", &self.client, "link", "show", "c0"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// `nft list table inet faultd_http` in the pod namespace (empty if there is none).
    pub fn http_table(&self) -> String {
        self.pod_try(&["nft", "list", "table", "inet", "faultd_http"])
            .unwrap_or_default()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(h) = &mut self.holder {
            let _ = h.kill();
            let _ = h.wait();
        }
        // Deleting the client namespace removes the veth pair (also from a container).
        let _ = Command::new("ip")
            .args(["netns", "del", &self.client])
            .output();
        if !self.pod.is_empty() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.pod])
                .output();
        }
    }
}

/// faultd's interception state in one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// `nft list tables`.
    pub tables: Vec<String>,
    /// `ip rule` lines with faultd's fwmark.
    pub rules4: Vec<String>,
    pub rules6: Vec<String>,
    /// `local` routes of table 64023.
    pub routes4: Vec<String>,
    pub routes6: Vec<String>,
}

impl Trace {
    pub fn http_tables(&self) -> usize {
        self.tables
            .iter()
            .filter(|t| *t == "table inet faultd_http")
            .count()
    }

    /// Nothing of faultd's interception is left.
    pub fn is_clean(&self) -> bool {
        self.http_tables() == 0
            && self.rules4.is_empty()
            && self.rules6.is_empty()
            && self.routes4.is_empty()
            && self.routes6.is_empty()
    }

    /// Exactly one table, one fwmark rule per family and one local route per family.
    pub fn assert_installed(&self, v6: bool) {
        assert_eq!(self.http_tables(), 1, "{self:#?}");
        assert_eq!(self.rules4.len(), 1, "{self:#?}");
        assert!(
            self.rules4[0].contains(&format!("fwmark {MARK} lookup {ROUTE_TABLE}")),
            "{self:#?}"
        );
        assert!(self.rules4[0].starts_with("9017:"), "{self:#?}");
        assert_eq!(self.routes4.len(), 1, "{self:#?}");
        assert!(self.routes4[0].contains("dev lo"), "{self:#?}");
        if v6 {
            assert_eq!(self.rules6.len(), 1, "{self:#?}");
            assert_eq!(self.routes6.len(), 1, "{self:#?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// servers in the pod namespace

/// A listening socket made inside `ns` (dual-stack `[::]:port`, IPv4 where there is no IPv6).
pub fn listen_in(ns: &Namespace, port: u16) -> tokio::net::TcpListener {
    let l = ns
        .run(move || {
            std::net::TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
                .or_else(|_| std::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))))
        })
        .unwrap()
        .unwrap();
    l.set_nonblocking(true).unwrap();
    tokio::net::TcpListener::from_std(l).unwrap()
}

/// `n` bytes that are not text and repeat only every 251 bytes.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ 0x5a).collect()
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// One request as the application received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub peer: SocketAddr,
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub tls: bool,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The HTTP/1.1 application (hyper, keep-alive). Answers every request with 200 (or the `NNN`
/// of `/status/NNN`), after sleeping `MS` ms for `/sleep/MS`, with `content-type:
/// application/json`, `x-app: 1` and the body `{"app":"ok","method":M,"path":P}`; `/big/N`
/// answers the `N` bytes of [`pattern`] as `application/octet-stream`.
pub struct App {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl App {
    pub fn start(ns: &Namespace, port: u16) -> App {
        App::start_with(ns, port, None)
    }

    /// The application over TLS with `config`.
    pub fn start_tls(ns: &Namespace, port: u16, config: Arc<rustls::ServerConfig>) -> App {
        App::start_with(ns, port, Some(tokio_rustls::TlsAcceptor::from(config)))
    }

    fn start_with(ns: &Namespace, port: u16, tls: Option<tokio_rustls::TlsAcceptor>) -> App {
        let listener = listen_in(ns, port);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let (s, tls) = (s.clone(), tls.clone());
                tokio::spawn(async move {
                    let peer = canonical(peer);
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve_app(stream, peer, true, s).await;
                            }
                        }
                        None => serve_app(stream, peer, false, s).await,
                    }
                });
            }
        });
        App { port, seen, task }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The last request received.
    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the app received no request")
    }

    /// Whether the app received a request for this path (and query).
    pub fn saw(&self, uri: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|s| s.uri == uri)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_app<I>(io: I, peer: SocketAddr, tls: bool, seen: Arc<Mutex<Vec<Seen>>>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let seen = seen.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let path = parts.uri.path().to_string();
            seen.lock().unwrap().push(Seen {
                peer,
                method: parts.method.to_string(),
                uri: parts
                    .uri
                    .path_and_query()
                    .map_or(path.clone(), |p| p.to_string()),
                headers: parts.headers.clone(),
                body,
                tls,
            });
            let mut code = 200;
            if let Some(c) = path.strip_prefix("/status/") {
                code = c.parse().unwrap_or(200);
            }
            if let Some(ms) = path.strip_prefix("/sleep/") {
                let ms: u64 = ms.parse().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if let Some(n) = path.strip_prefix("/big/") {
                let n: usize = n.parse().unwrap_or(0);
                return Ok::<_, Infallible>(
                    Response::builder()
                        .status(code)
                        .header("content-type", "application/octet-stream")
                        .header("x-app", "1")
                        .body(Full::new(Bytes::from(pattern(n))))
                        .unwrap(),
                );
            }
            let body =
                serde_json::json!({"app": "ok", "method": parts.method.as_str(), "path": path})
                    .to_string();
            Ok::<_, Infallible>(
                Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .header("x-app", "1")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap(),
            )
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

/// A raw TCP server in the pod namespace: echoes every byte back; with a banner, it sends the
/// banner first (a server that speaks first, like SMTP or SSH).
pub struct Echo {
    pub peers: Arc<Mutex<Vec<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Echo {
    pub fn start(ns: &Namespace, port: u16, banner: Option<&'static [u8]>) -> Echo {
        let listener = listen_in(ns, port);
        let peers = Arc::new(Mutex::new(Vec::new()));
        let p = peers.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, peer)) = listener.accept().await else {
                    continue;
                };
                p.lock().unwrap().push(canonical(peer));
                tokio::spawn(async move {
                    if let Some(b) = banner {
                        if s.write_all(b).await.is_err() {
                            return;
                        }
                    }
                    let mut buf = vec![0u8; 16384];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });
        Echo { peers, task }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// the client, in the client namespace

/// Connects from the client namespace (the socket is made and connected on a thread inside
/// it; tokio then serves it from any thread).
pub async fn connect(ns: &Namespace, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let ns = ns.try_clone()?;
    let s = tokio::task::spawn_blocking(move || {
        ns.run(move || std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
    })
    .await
    .map_err(std::io::Error::other)?
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(s)
}

/// A response as the client received it.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

/// Why a request got no response.
#[derive(Debug, Clone)]
pub struct NoResp {
    /// The connection was closed (or reset) before any response byte.
    pub closed: bool,
    pub msg: String,
}

pub type Outcome = Result<Resp, NoResp>;

fn no_resp(e: hyper::Error) -> NoResp {
    let reset = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            )
        });
    NoResp {
        closed: e.is_incomplete_message() || e.is_closed() || reset,
        msg: format!("{e:?}"),
    }
}

/// A request with `Host`, `method`, `path` and `body`.
pub fn request(method: &str, path: &str, body: &str) -> Request<Full<Bytes>> {
    request_bytes(method, path, body.as_bytes().to_vec())
}

/// [`request`] with a binary body.
pub fn request_bytes(method: &str, path: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "app.test")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// An HTTP/1.1 client connection (kept alive across requests).
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn over<I>(io: I) -> Result<Conn, NoResp>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(no_resp)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender })
    }

    pub async fn open(ns: &Namespace, addr: SocketAddr) -> Result<Conn, NoResp> {
        let s = connect(ns, addr).await.map_err(|e| NoResp {
            closed: false,
            msg: format!("connect {addr}: {e}"),
        })?;
        Conn::over(s).await
    }

    /// Sends one request; the whole response is read (20 s limit).
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Outcome {
        self.send_within(req, Duration::from_secs(20)).await
    }

    /// [`Conn::send`] with another limit.
    pub async fn send_within(&mut self, req: Request<Full<Bytes>>, limit: Duration) -> Outcome {
        let go = async {
            self.sender.ready().await.map_err(no_resp)?;
            let resp = self.sender.send_request(req).await.map_err(no_resp)?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(no_resp)?.to_bytes();
            Ok(Resp {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(limit, go).await {
            Ok(r) => r,
            Err(_) => Err(NoResp {
                closed: false,
                msg: format!("no response within {limit:?}"),
            }),
        }
    }

    /// Whether the connection can take another request.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// One request on a new connection from `ns`: the outcome and the time from before the connect
/// to the end of the response.
pub async fn fetch(
    ns: &Namespace,
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> (Outcome, Duration) {
    let t0 = Instant::now();
    let r = match Conn::open(ns, addr).await {
        Ok(mut c) => c.send(req).await,
        Err(e) => Err(e),
    };
    (r, t0.elapsed())
}

/// `GET path` on a new connection.
pub async fn get(ns: &Namespace, addr: SocketAddr, path: &str) -> (Outcome, Duration) {
    fetch(ns, addr, request("GET", path, "")).await
}

/// `GET path` on a new connection; it must answer. The response and the time taken.
pub async fn get_ok(ns: &Namespace, addr: SocketAddr, path: &str) -> (Resp, Duration) {
    let (r, took) = get(ns, addr, path).await;
    match r {
        Ok(r) => (r, took),
        Err(e) => panic!(
            "GET {path} on {addr}: no response after {took:?}: {}",
            e.msg
        ),
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------------------------
// TLS

/// A throwaway CA and a server certificate for `sans` (DNS names and IP addresses).
pub struct TlsPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TlsPki {
    pub fn new(sans: &[&str]) -> TlsPki {
        let ca = faultd::tls::pki::Ca::new("faultd HTTPChaos test CA").unwrap();
        let leaf = ca.issue("app.test", sans, true, false).unwrap();
        TlsPki {
            ca_pem: ca.cert_pem,
            cert_pem: leaf.cert_pem,
            key_pem: leaf.key_pem,
        }
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// The application's TLS configuration (this certificate and key).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let certs: Vec<_> = rustls_pemfile::certs(&mut self.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut self.key_pem.as_bytes())
            .unwrap()
            .unwrap();
        let mut c = rustls::ServerConfig::builder_with_provider(TlsPki::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    }

    /// A client configuration trusting only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut self.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        Arc::new(
            rustls::ClientConfig::builder_with_provider(TlsPki::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// `ApplyHttpChaosRequest.tls`: this certificate and key, trusting this CA upstream.
    pub fn chaos_json(&self) -> String {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        serde_json::json!({
            "cert_file": {"type": "Contents", "value": b64(&self.cert_pem)},
            "key_file": {"type": "Contents", "value": b64(&self.key_pem)},
            "ca_file": {"type": "Contents", "value": b64(&self.ca_pem)},
        })
        .to_string()
    }
}

/// A TLS connection from `ns` to `addr` with server name `name`, trusting `config`'s roots.
pub async fn tls_conn(
    ns: &Namespace,
    addr: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<Conn, NoResp> {
    let s = connect(ns, addr).await.map_err(|e| NoResp {
        closed: false,
        msg: format!("connect {addr}: {e}"),
    })?;
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, s)
        .await
        .map_err(|e| NoResp {
            closed: false,
            msg: format!("TLS handshake with {addr}: {e}"),
        })?;
    Conn::over(tls).await
}

// ---------------------------------------------------------------------------------------------
// requests to faultd

/// The `ApplyHttpChaosRequest` of `rules` (JSON) on `ports`.
pub fn chaos(
    container_id: &str,
    ports: &[u16],
    rules: &str,
    tls: &str,
) -> pb::ApplyHttpChaosRequest {
    pb::ApplyHttpChaosRequest {
        rules: rules.into(),
        proxy_ports: ports.iter().map(|p| u32::from(*p)).collect(),
        container_id: container_id.into(),
        enter_ns: true,
        tls: tls.into(),
        ..Default::default()
    }
}

/// faultd.v1 `ApplyFault` with `apply_http_chaos` on the namespace of `pid`.
pub fn apply_req(
    pid: u32,
    ports: &[u16],
    rules: &str,
    tls: &str,
    ttl_s: u64,
) -> api::ApplyFaultRequest {
    api::ApplyFaultRequest {
        ttl_seconds: ttl_s,
        lease_id: String::new(),
        target_pid: pid,
        fault: Some(api::apply_fault_request::Fault::ApplyHttpChaos(chaos(
            "", ports, rules, tls,
        ))),
    }
}

/// Applies `rules` on `ports` of `net`'s pod namespace (TTL `ttl_s`, 0 = none).
pub async fn apply(
    admin: &Channel,
    net: &Net,
    ports: &[u16],
    rules: &str,
    ttl_s: u64,
) -> Result<api::Fault, tonic::Status> {
    super::host::faults(admin)
        .apply_fault(apply_req(net.pid(), ports, rules, "", ttl_s))
        .await
        .map(|r| r.into_inner())
}

pub async fn revoke(admin: &Channel, id: &str) -> api::Fault {
    super::host::faults(admin)
        .revoke_fault(api::RevokeFaultRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

/// The active (and, with `ended`, ended) faults of kind `http`.
pub async fn http_faults(admin: &Channel, ended: bool) -> Vec<api::Fault> {
    super::host::list(admin, ended)
        .await
        .into_iter()
        .filter(|f| f.kind == "http")
        .collect()
}

/// Base64 as the controller writes `[]byte` (standard, padded).
pub fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// `[{"target":"Request","selector":{"port":PORT,"path":PATH},"actions":{"delay":DELAY}}]`.
pub fn delay_rule(port: u16, path: &str, delay: &str) -> String {
    serde_json::json!([{"target": "Request", "selector": {"port": port, "path": path},
                        "actions": {"delay": delay}}])
    .to_string()
}

/// Polls (async) until `f` holds; panics after `limit`. Returns the wait.
pub async fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    super::host::wait_until(what, limit, &mut f).await
}

/// The IP of a socket address, IPv4-mapped shown as IPv4.
pub fn ip_of(a: SocketAddr) -> IpAddr {
    a.ip().to_canonical()
}
