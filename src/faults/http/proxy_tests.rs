//! The proxy end to end on loopback (tier 1): a small app server, the proxy in front of it
//! with a plain `TcpStream::connect` as its connector, clients through hyper or raw sockets.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderMap;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::{serve_connection, HttpError, ProxyConfig};
use crate::tls::pki::Ca;

/// What the app saw of one request.
#[derive(Debug)]
struct Seen {
    method: String,
    uri: String,
    headers: HeaderMap,
    body: Bytes,
    peer: SocketAddr,
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("test step timed out")
}

async fn app_answer(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    seen: mpsc::UnboundedSender<Seen>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_string();
    let upgrade = path == "/ws" && req.headers().contains_key("upgrade");
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let _ = seen.send(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
        peer,
    });
    let resp = Response::builder().header("x-app", "1");
    Ok(match path.as_str() {
        "/json" => resp
            .header("content-type", "application/json")
            .body(Full::from(r#"{"a":1,"b":{"c":2}}"#)),
        "/missing" => resp.status(StatusCode::NOT_FOUND).body(Full::from("no")),
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            resp.body(Full::from("slow"))
        }
        "/ws" if upgrade => {
            let on_upgrade = on_upgrade.unwrap();
            tokio::spawn(async move {
                let mut io = TokioIo::new(on_upgrade.await.unwrap());
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            resp.status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "echo")
                .body(Full::default())
        }
        _ => resp.body(Full::from("hello")),
    }
    .unwrap())
}

/// An HTTP app (TLS with `tls`) recording every request it serves.
async fn app(
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let (tx, tls) = (tx.clone(), tls.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| app_answer(req, peer, tx.clone()));
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(cfg) => {
                        let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await
                        else {
                            return;
                        };
                        let _ = builder
                            .serve_connection(TokioIo::new(s), svc)
                            .with_upgrades()
                            .await;
                    }
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), svc)
                            .with_upgrades()
                            .await;
                    }
                }
            });
        }
    });
    (addr, rx)
}

struct Proxy {
    addr: SocketAddr,
    config: watch::Sender<Arc<ProxyConfig>>,
    results: mpsc::UnboundedReceiver<Result<(), HttpError>>,
}

/// The proxy in front of `to`, with `rules` and `tls` JSON.
async fn proxy(to: SocketAddr, rules: &str, tls: &str) -> Proxy {
    proxy_as(to, to, rules, tls).await
}

/// The proxy connecting to `to` for connections whose original destination was `dst`.
async fn proxy_as(to: SocketAddr, dst: SocketAddr, rules: &str, tls: &str) -> Proxy {
    let (config, rx) = watch::channel(Arc::new(ProxyConfig::parse(rules, tls).unwrap()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (done, results) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (rx, done) = (rx.clone(), done.clone());
            tokio::spawn(async move {
                let r = serve_connection(stream, dst, move || TcpStream::connect(to), rx).await;
                let _ = done.send(r);
            });
        }
    });
    Proxy {
        addr,
        config,
        results,
    }
}

impl Proxy {
    fn swap(&self, rules: &str) {
        let tls = self.config.borrow().tls.clone();
        let mut cfg = ProxyConfig::parse(rules, "").unwrap();
        cfg.tls = tls;
        self.config.send_replace(Arc::new(cfg));
    }
}

async fn http_client<S>(io: S) -> SendRequest<Full<Bytes>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn client(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    http_client(TcpStream::connect(addr).await.unwrap()).await
}

fn req(method: &str, path: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "app.test")
        .header("x-user", "alice")
        .body(Full::from(body.to_string()))
        .unwrap()
}

async fn send(
    c: &mut SendRequest<Full<Bytes>>,
    r: Request<Full<Bytes>>,
) -> (StatusCode, HeaderMap, Bytes) {
    within(async {
        c.ready().await.unwrap();
        let resp = c.send_request(r).await.unwrap();
        let (parts, body) = resp.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    })
    .await
}

/// One request on a new connection.
async fn once(addr: SocketAddr, r: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
    send(&mut client(addr).await, r).await
}

/// Writes raw bytes and reads until the peer closes; a reset counts as closed.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    within(async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        out
    })
    .await
}

fn rule(target: &str, selector: &str, actions: &str) -> String {
    format!(r#"{{"target":"{target}","selector":{selector},"actions":{actions}}}"#)
}

#[tokio::test]
async fn delay_holds_the_request() {
    let (app, _seen) = app(None).await;
    let rules = format!("[{}]", rule("Request", "{}", r#"{"delay":"300ms"}"#));
    let p = proxy(app, &rules, "").await;
    let t = Instant::now();
    let (status, headers, body) = once(p.addr, req("GET", "/", "")).await;
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));
    assert_eq!(headers["x-app"], "1");
    p.swap("[]");
    let t = Instant::now();
    once(p.addr, req("GET", "/", "")).await;
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn abort_closes_without_a_response() {
    let (app, mut seen) = app(None).await;
    let rules = format!(
        "[{}, {}]",
        rule("Request", r#"{"path":"/req"}"#, r#"{"abort":true}"#),
        rule("Response", r#"{"path":"/resp"}"#, r#"{"abort":true}"#)
    );
    let mut p = proxy(app, &rules, "").await;
    let out = raw(p.addr, b"GET /req HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(out.is_empty(), "{:?}", String::from_utf8_lossy(&out));
    // The abort is the connection's normal end.
    assert!(within(p.results.recv()).await.unwrap().is_ok());
    // A Response abort: the app served the request, the client got nothing.
    let out = raw(p.addr, b"GET /resp HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(out.is_empty(), "{:?}", String::from_utf8_lossy(&out));
    assert_eq!(within(seen.recv()).await.unwrap().uri, "/resp");
    assert!(
        seen.try_recv().is_err(),
        "the request abort reached the app"
    );
    // Other paths pass.
    let out = raw(
        p.addr,
        b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
}

#[tokio::test]
async fn replace_code_on_the_response() {
    let (app, _seen) = app(None).await;
    let rules = format!(
        "[{}]",
        rule(
            "Response",
            r#"{"port":PORT}"#,
            r#"{"replace":{"code":503}}"#
        )
    )
    .replace("PORT", &app.port().to_string());
    let p = proxy(app, &rules, "").await;
    let (status, _, body) = once(p.addr, req("GET", "/", "")).await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::SERVICE_UNAVAILABLE, &b"hello"[..])
    );
    // Another port's rule does not apply.
    p.swap(&rules.replace(&app.port().to_string(), "1"));
    assert_eq!(once(p.addr, req("GET", "/", "")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn replace_on_the_request_reaches_the_app() {
    let (app, mut seen) = app(None).await;
    let actions = r#"{"replace":{"path":"/new","method":"PUT","body":"bmV3IGJvZHk=",
        "queries":{"q":"2","z":"a b"},"headers":{"X-User":"mallory","X-Added":"yes"}}}"#;
    let rules = format!("[{}]", rule("Request", "{}", actions));
    let p = proxy(app, &rules, "").await;
    let (status, _, _) = once(p.addr, req("POST", "/old?q=1&keep=me", "old body")).await;
    assert_eq!(status, StatusCode::OK);
    let s = within(seen.recv()).await.unwrap();
    assert_eq!(s.method, "PUT");
    assert_eq!(s.uri, "/new?q=2&keep=me&z=a+b");
    assert_eq!(&s.body[..], b"new body");
    assert_eq!(s.headers["content-length"], "8");
    let users: Vec<_> = s.headers.get_all("x-user").iter().collect();
    assert_eq!(users, ["mallory"]);
    assert_eq!(s.headers["x-added"], "yes");
    assert_eq!(s.headers["host"], "app.test");
}

#[tokio::test]
async fn patch_merges_json_and_appends() {
    let (app, mut seen) = app(None).await;
    let rules = format!(
        "[{}, {}]",
        rule(
            "Request",
            "{}",
            r#"{"patch":{"body":{"type":"JSON","value":"{\"b\":null,\"c\":[1]}"},
                "queries":[["k","v"],["k","w"]],"headers":[["X-User","bob"]]}}"#
        ),
        rule(
            "Response",
            r#"{"path":"/json"}"#,
            r#"{"patch":{"body":{"type":"JSON","value":"{\"b\":{\"c\":null,\"d\":3}}"},"headers":[["X-App","2"]]}}"#
        )
    );
    let p = proxy(app, &rules, "").await;
    once(p.addr, req("POST", "/in?x=1", r#"{"a":1,"b":2}"#)).await;
    let s = within(seen.recv()).await.unwrap();
    assert_eq!(s.uri, "/in?x=1&k=v&k=w");
    assert_eq!(&s.body[..], br#"{"a":1,"c":[1]}"#);
    let users: Vec<_> = s.headers.get_all("x-user").iter().collect();
    assert_eq!(users, ["alice", "bob"]);
    let (_, headers, body) = once(p.addr, req("GET", "/json", "")).await;
    assert_eq!(&body[..], br#"{"a":1,"b":{"d":3}}"#);
    let apps: Vec<_> = headers.get_all("x-app").iter().collect();
    assert_eq!(apps, ["1", "2"]);
    assert_eq!(headers["content-length"], body.len().to_string());
}

#[tokio::test]
async fn selectors_method_path_and_headers() {
    let (app, _seen) = app(None).await;
    let teapot = r#"{"replace":{"code":418}}"#;
    let rules = format!(
        "[{}, {}, {}]",
        rule("Response", r#"{"method":"POST","path":"/m"}"#, teapot),
        rule("Response", r#"{"path":"/api/*/items?"}"#, teapot),
        rule(
            "Response",
            r#"{"path":"/h","request_headers":{"X-User":"bob"}}"#,
            teapot
        )
    );
    let p = proxy(app, &rules, "").await;
    let status = |m: &'static str, path: &'static str| {
        let addr = p.addr;
        async move { once(addr, req(m, path, "")).await.0 }
    };
    assert_eq!(status("POST", "/m").await, StatusCode::IM_A_TEAPOT);
    assert_eq!(status("GET", "/m").await, StatusCode::OK);
    assert_eq!(
        status("GET", "/api/v1/items2").await,
        StatusCode::IM_A_TEAPOT
    );
    assert_eq!(
        status("GET", "/api/v1/v2/itemsX").await,
        StatusCode::IM_A_TEAPOT
    );
    assert_eq!(status("GET", "/api/v1/items").await, StatusCode::OK);
    assert_eq!(status("GET", "/api/v1/items22").await, StatusCode::OK);
    // Header selector: alice is not bob; one of several values is enough.
    assert_eq!(status("GET", "/h").await, StatusCode::OK);
    let mut r = req("GET", "/h", "");
    r.headers_mut().append("x-user", "bob".parse().unwrap());
    assert_eq!(once(p.addr, r).await.0, StatusCode::IM_A_TEAPOT);
}

#[tokio::test]
async fn response_rules_select_on_code_and_replace_the_body() {
    let (app, _seen) = app(None).await;
    let rules = format!(
        "[{}, {}]",
        rule(
            "Response",
            r#"{"code":404}"#,
            r#"{"replace":{"code":200,"body":{"type":"TEXT","value":"found after all"},"headers":{"X-App":"replaced"}}}"#
        ),
        // Chosen against the response as the app sent it (404), not as rule 1 left it.
        rule("Response", r#"{"code":200}"#, r#"{"replace":{"code":500}}"#)
    );
    let p = proxy(app, &rules, "").await;
    let (status, headers, body) = once(p.addr, req("GET", "/missing", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"found after all");
    assert_eq!(headers["x-app"], "replaced");
    assert_eq!(headers["content-length"], "15");
    assert_eq!(
        once(p.addr, req("GET", "/", "")).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test]
async fn rules_apply_in_order_chosen_on_the_original_request() {
    let (app, mut seen) = app(None).await;
    let rules = [
        rule(
            "Request",
            r#"{"path":"/a"}"#,
            r#"{"replace":{"path":"/b"}}"#,
        ),
        // Not chosen: the client asked for /a.
        rule("Request", r#"{"path":"/b"}"#, r#"{"abort":true}"#),
        // Both apply, in order: the later header write wins.
        rule(
            "Request",
            r#"{"path":"/a"}"#,
            r#"{"replace":{"headers":{"X-Step":"1"}}}"#,
        ),
        rule(
            "Request",
            r#"{"path":"/a"}"#,
            r#"{"replace":{"headers":{"X-Step":"2"}}}"#,
        ),
        // Response rules see the request as forwarded (/b).
        rule(
            "Response",
            r#"{"path":"/b"}"#,
            r#"{"replace":{"code":202}}"#,
        ),
    ];
    let rules = format!("[{}]", rules.join(","));
    let p = proxy(app, &rules, "").await;
    let (status, _, _) = once(p.addr, req("GET", "/a", "")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let s = within(seen.recv()).await.unwrap();
    assert_eq!(s.uri, "/b");
    assert_eq!(s.headers["x-step"], "2");
}

#[tokio::test]
async fn rules_swap_live_on_a_kept_alive_connection() {
    let (app, mut seen) = app(None).await;
    let p = proxy(app, "[]", "").await;
    let mut c = client(p.addr).await;
    assert_eq!(send(&mut c, req("GET", "/", "")).await.0, StatusCode::OK);
    p.swap(&format!(
        "[{}]",
        rule("Response", "{}", r#"{"replace":{"code":503}}"#)
    ));
    assert_eq!(
        send(&mut c, req("GET", "/", "")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // A request in flight while the rules change keeps its rules; the next one gets the new.
    let slow = {
        let mut c2 = client(p.addr).await;
        tokio::spawn(async move { send(&mut c2, req("GET", "/slow", "")).await.0 })
    };
    let mut peers: Vec<SocketAddr> = (0..2).map(|_| seen.try_recv().unwrap().peer).collect();
    // Once the app has the request, the proxy has chosen its rules.
    peers.push(within(seen.recv()).await.unwrap().peer);
    p.swap("[]");
    assert_eq!(within(slow).await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(send(&mut c, req("GET", "/", "")).await.0, StatusCode::OK);
    // One client connection, one app connection.
    peers.push(seen.try_recv().unwrap().peer);
    assert_eq!(peers[0], peers[1]);
    assert_eq!(peers[0], peers[3]);
    assert_ne!(peers[0], peers[2]);
}

#[tokio::test]
async fn non_http_bytes_are_spliced() {
    // An echo server that is not HTTP.
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = echo.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let rules = format!("[{}]", rule("Request", "{}", r#"{"abort":true}"#));
    let p = proxy(echo_addr, &rules, "").await;
    for bytes in [
        &b"\x00\x01binary\xff\xfe data"[..],
        b"PING\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET / HTTP/3.0\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        within(s.read_to_end(&mut out)).await.unwrap();
        assert_eq!(out, bytes);
    }
}

#[tokio::test]
async fn a_server_that_speaks_first_is_spliced() {
    let banner = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = banner.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = banner.accept().await.unwrap();
        s.write_all(b"220 ready\r\n").await.unwrap();
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.unwrap();
        s.write_all(&buf[..n]).await.unwrap();
    });
    let p = proxy(addr, "[]", "").await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let mut buf = [0u8; 11];
    within(s.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"220 ready\r\n");
    s.write_all(b"QUIT\r\n").await.unwrap();
    let mut out = Vec::new();
    within(s.read_to_end(&mut out)).await.unwrap();
    assert_eq!(out, b"QUIT\r\n");
}

#[tokio::test]
async fn a_refused_upstream_closes_the_client() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let mut p = proxy(addr, "[]", "").await;
    let out = raw(p.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(out.is_empty());
    let err = within(p.results.recv()).await.unwrap().unwrap_err();
    assert!(matches!(err, HttpError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn upgrades_are_tunnelled() {
    let (app, _seen) = app(None).await;
    let p = proxy(app, "[]", "").await;
    within(async {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101 "),
            "{}",
            String::from_utf8_lossy(&head)
        );
        s.write_all(b"frames").await.unwrap();
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"frames");
    })
    .await;
}

#[tokio::test]
async fn tls_is_terminated_and_re_established() {
    let ca = Ca::new("HTTPChaos test CA").unwrap();
    let leaf = ca
        .issue("app.test", &["app.test", "127.0.0.1"], true, false)
        .unwrap();
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    let tls_json = serde_json::json!({
        "cert_file": {"type": "Contents", "value": b64(&leaf.cert_pem)},
        "key_file": {"type": "Contents", "value": b64(&leaf.key_pem)},
        "ca_file": {"type": "Contents", "value": b64(&ca.cert_pem)},
    })
    .to_string();
    // The app serves the same certificate over TLS.
    let app_tls = super::parse_tls(&tls_json).unwrap().unwrap().server;
    let (app, mut seen) = app(Some(app_tls)).await;
    let rules = format!(
        "[{}, {}]",
        rule("Request", r#"{"path":"/slow*"}"#, r#"{"delay":"300ms"}"#),
        rule(
            "Response",
            "{}",
            r#"{"replace":{"headers":{"X-Proxied":"tls"}}}"#
        )
    );
    let p = proxy(app, &rules, &tls_json).await;
    // As a dual-stack listener sees an IPv4 destination.
    let mapped = SocketAddr::new(
        std::net::IpAddr::V6(std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
        app.port(),
    );
    let p_mapped = proxy_as(app, mapped, &rules, &tls_json).await;

    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let client_cfg = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    for (name, addr) in [
        ("app.test", p.addr),
        ("127.0.0.1", p.addr),
        ("127.0.0.1", p_mapped.addr),
    ] {
        // With SNI (a DNS name), and without (an IP: the proxy names the app by its IP).
        let tcp = TcpStream::connect(addr).await.unwrap();
        let server_name = ServerName::try_from(name.to_string()).unwrap();
        let tls =
            within(tokio_rustls::TlsConnector::from(client_cfg.clone()).connect(server_name, tcp))
                .await
                .unwrap();
        let mut c = http_client(tls).await;
        let t = Instant::now();
        let (status, headers, body) = send(&mut c, req("GET", "/slowish", "")).await;
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));
        assert_eq!(headers["x-proxied"], "tls");
        let (status, _, _) = send(&mut c, req("GET", "/", "")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(within(seen.recv()).await.unwrap().uri, "/slowish");
        assert_eq!(within(seen.recv()).await.unwrap().uri, "/");
    }
    // A client that does not start TLS is served in clear: here towards a TLS app, which
    // cannot answer, so the forward fails with 502.
    let out = raw(
        p.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        out.starts_with(b"HTTP/1.1 502"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[tokio::test]
async fn the_client_connection_follows_the_apps() {
    // An app that answers one request and closes its connection (no `Connection: close`).
    let once_app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = once_app.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = once_app.accept().await.unwrap();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read_exact(&mut b).await.is_ok() {
                    head.push(b[0]);
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let p = proxy(addr, "[]", "").await;
    // The proxy closes the kept-alive client connection once the app has closed its own.
    let out = raw(p.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(out.ends_with(b"\r\n\r\nok"));
    // A client that half-closes after its request still gets the response.
    let (app, _seen) = app(None).await;
    let p = proxy(app, "[]", "").await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    within(s.read_to_end(&mut out)).await.unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}
