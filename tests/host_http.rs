//! Host tier (root; run by `tests/run-all.sh`, or by hand as tests/README.md shows:
//! `cargo test --test host_http -- --ignored --test-threads=1`): HTTPChaos end to end through
//! faultd's transparent proxy (`table inet faultd_http`, the fwmark policy route, faultd's
//! listener in the pod namespace).
//!
//! Most tests need no container runtime: a pod network namespace held by a `sleep` (the
//! faultd.v1 `ApplyFault` `target_pid`) whose `eth0` is a veth to a client namespace; the HTTP
//! application (`common::http::App`, served by this test inside the pod namespace) records the
//! peer address, method, URI, headers and body of every request; the client's sockets are
//! made in the client namespace, so every packet crosses the veth as a real pod's would (the
//! addresses exist only inside those two namespaces: nothing of the host's routing changes).
//! The `chaos_mesh_*` tests go through `pb.ChaosDaemon/ApplyHttpChaos` against a busybox
//! `httpd` in a container of the test containerd (`FAULTD_TEST_CTR_SOCK`, `FAULTD_TEST_IMAGE`).
//! Every test prints what it measured; every rollback is checked in the namespace: no
//! `faultd_http` table, no fwmark rule, no route in table 64023.
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::ctr::{unique, Container};
use common::host::{faults, settled, DaemonProc};
use common::http::*;
use faultd::ns::Namespace;
use faultd::proto::faultd::v1 as api;
use faultd::proto::pb::chaos_daemon_client::ChaosDaemonClient;
use serde_json::json;
use tonic::transport::Channel;
use tonic::Code;

const FAST: Duration = Duration::from_millis(400);

/// A pod namespace with the application on 8080, a client namespace and a faultd.
struct Setup {
    net: Net,
    app: App,
    cl: Namespace,
    d: DaemonProc,
    admin: Channel,
    state: tempfile::TempDir,
}

impl Setup {
    async fn new(tag: &str, n: u8) -> Setup {
        let net = Net::new(tag, n);
        let app = App::start(&net.pod_ns(), APP_PORT);
        let cl = net.client_ns();
        let state = tempfile::tempdir().unwrap();
        let mut d = DaemonProc::spawn(state.path(), &[]);
        let admin = d.ready().await;
        let s = Setup {
            net,
            app,
            cl,
            d,
            admin,
            state,
        };
        // The application answers directly, and nothing of faultd is in the namespace.
        let (r, took) = get_ok(&s.cl, s.addr(), "/").await;
        assert_eq!(r.status, 200);
        assert!(s.net.trace().is_clean(), "{:#?}", s.net.trace());
        eprintln!("direct GET before any fault: {:.1} ms", ms(took));
        s
    }

    fn addr(&self) -> SocketAddr {
        self.net.addr(APP_PORT)
    }

    async fn apply(&self, ports: &[u16], rules: &str) -> api::Fault {
        let t0 = Instant::now();
        let f = apply(&self.admin, &self.net, ports, rules, 0)
            .await
            .unwrap_or_else(|e| panic!("ApplyFault apply_http_chaos {rules}: {e}"));
        eprintln!("ApplyFault apply_http_chaos: {:.1} ms", ms(t0.elapsed()));
        assert_eq!(f.kind, "http", "{f:?}");
        assert_eq!(f.phase, api::Phase::Applied as i32, "{f:?}");
        f
    }

    async fn get(&self, path: &str) -> (Outcome, Duration) {
        get(&self.cl, self.addr(), path).await
    }

    async fn get_ok(&self, path: &str) -> (Resp, Duration) {
        get_ok(&self.cl, self.addr(), path).await
    }

    async fn send(&self, req: http::Request<http_body_util::Full<bytes::Bytes>>) -> Resp {
        let (r, _) = fetch(&self.cl, self.addr(), req).await;
        r.unwrap_or_else(|e| panic!("no response: {}", e.msg))
    }

    /// Asserts the namespace is clean and a request goes straight to the app.
    async fn assert_rolled_back(&self, what: &str) {
        let t = self.net.trace();
        assert!(t.is_clean(), "{what}: faultd's interception left: {t:#?}");
        let (r, took) = self.get_ok("/slow/after").await;
        assert_eq!(r.status, 200, "{what}");
        assert!(took < FAST, "{what}: GET took {took:?}");
        eprintln!("{what}: clean, GET {:.1} ms", ms(took));
    }
}

fn phase(f: &api::Fault) -> api::Phase {
    api::Phase::try_from(f.phase).unwrap()
}

fn rules(v: serde_json::Value) -> String {
    v.to_string()
}

// ---------------------------------------------------------------------------------------------
// rules through the proxy

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn delay_on_one_path_keeps_the_client_address_and_revoke_leaves_nothing() {
    let s = Setup::new("http-a", 1).await;
    let f = s
        .apply(&[APP_PORT], &delay_rule(APP_PORT, "/slow/*", "500ms"))
        .await;
    let t = s.net.trace();
    t.assert_installed(s.net.v6);
    let table = s.net.http_table();
    for want in [
        format!("chain owner_{}", f.id),
        "type filter hook prerouting priority mangle; policy accept;".to_string(),
        "iifname != \"lo\" tcp dport 8080 tproxy to :".to_string(),
        "type route hook output priority mangle; policy accept;".to_string(),
        "meta mark 0x0000fa17 ct mark set meta mark".to_string(),
        "ct mark 0x0000fa17 meta mark set ct mark".to_string(),
    ] {
        assert!(table.contains(&want), "no {want:?} in\n{table}");
    }
    eprintln!("{table}{t:#?}");
    assert!(f.summary.contains("8080"), "{f:?}");

    let (r, slow) = s.get_ok("/slow/a").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/slow/a");
    assert!(
        slow >= Duration::from_millis(500),
        "delayed GET took {slow:?}"
    );
    let (r, fast) = s.get_ok("/fast").await;
    assert_eq!(r.status, 200);
    assert!(fast < FAST, "GET of another path took {fast:?}");
    eprintln!(
        "delay 500ms on /slow/*: /slow/a {:.1} ms, /fast {:.1} ms",
        ms(slow),
        ms(fast)
    );

    // The application sees the client's own address, not the pod's.
    let seen = s.app.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for x in &seen {
        assert_eq!(ip_of(x.peer), s.net.client_ip(), "{x:?}");
    }
    eprintln!(
        "the app saw the peers {:?}",
        seen.iter().map(|x| x.peer).collect::<Vec<_>>()
    );

    // Kept alive: every request of one connection is delayed, and the connection survives.
    let mut c = Conn::open(&s.cl, s.addr()).await.unwrap();
    let mut times = Vec::new();
    for i in 0..3 {
        let t0 = Instant::now();
        let r = c
            .send(request("GET", &format!("/slow/k{i}"), ""))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        times.push(t0.elapsed());
    }
    let t0 = Instant::now();
    assert_eq!(
        c.send(request("GET", "/fast", "")).await.unwrap().status,
        200
    );
    let fast_ka = t0.elapsed();
    assert!(
        times.iter().all(|t| *t >= Duration::from_millis(500)),
        "{times:?}"
    );
    assert!(fast_ka < FAST, "{fast_ka:?}");
    eprintln!("kept alive: {times:?}, then /fast {fast_ka:?}");
    let peers: std::collections::HashSet<_> = s.app.seen()[3..].iter().map(|x| x.peer).collect();
    assert_eq!(
        peers.len(),
        1,
        "one upstream connection per client connection: {peers:?}"
    );

    if s.net.v6 {
        let (r, took) = get_ok(&s.cl, s.net.addr6(APP_PORT), "/slow/v6").await;
        assert_eq!(r.status, 200);
        assert!(took >= Duration::from_millis(500), "IPv6: {took:?}");
        let x = s.app.last();
        assert_eq!(
            x.peer.ip(),
            std::net::IpAddr::from(s.net.client_ip6()),
            "{x:?}"
        );
        eprintln!(
            "IPv6: GET /slow/v6 {:.1} ms, the app saw {}",
            ms(took),
            x.peer
        );
    } else {
        eprintln!("no IPv6 in the namespaces: IPv6 not checked");
    }

    let active = http_faults(&s.admin, false).await;
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!(
        active[0].target.as_ref().unwrap().pid,
        s.net.pid(),
        "{active:?}"
    );

    let t0 = Instant::now();
    let ended = revoke(&s.admin, &f.id).await;
    eprintln!("RevokeFault: {:.1} ms", ms(t0.elapsed()));
    assert_eq!(phase(&ended), api::Phase::Reverted, "{ended:?}");
    s.assert_rolled_back("after RevokeFault").await;
    assert_eq!(ip_of(s.app.last().peer), s.net.client_ip());
    assert!(http_faults(&s.admin, false).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn abort_closes_the_connection_without_a_response() {
    let s = Setup::new("http-b", 2).await;
    s.apply(
        &[APP_PORT],
        &rules(json!([
            {"target": "Request", "selector": {"port": APP_PORT, "path": "/abort*"},
             "actions": {"abort": true}},
            {"target": "Response", "selector": {"port": APP_PORT, "path": "/rabort"},
             "actions": {"abort": true}},
        ])),
    )
    .await;
    let (r, took) = s.get("/abort").await;
    let e = r.expect_err("an aborted request got a response");
    assert!(e.closed, "{}", e.msg);
    assert!(!s.app.saw("/abort"), "an aborted request reached the app");
    eprintln!("Request abort: closed after {:.1} ms ({})", ms(took), e.msg);

    // A Response abort: the app served it, the client gets nothing.
    let (r, _) = s.get("/rabort").await;
    assert!(r.expect_err("response abort answered").closed);
    assert!(s.app.saw("/rabort"));

    // Other requests pass; on a kept-alive connection the abort ends the connection.
    let mut c = Conn::open(&s.cl, s.addr()).await.unwrap();
    assert_eq!(c.send(request("GET", "/ok", "")).await.unwrap().status, 200);
    let e = c.send(request("GET", "/abort/2", "")).await.unwrap_err();
    assert!(e.closed, "{}", e.msg);
    let e = c.send(request("GET", "/ok", "")).await.unwrap_err();
    eprintln!("kept-alive connection after the abort: {}", e.msg);
    let (r, _) = s.get_ok("/ok").await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn replace_code_and_selectors_on_method_header_and_code() {
    let s = Setup::new("http-c", 3).await;
    s.apply(
        &[APP_PORT],
        &rules(json!([
            {"target": "Response", "selector": {"port": APP_PORT, "path": "/r/*"},
             "actions": {"replace": {"code": 503}}},
            {"target": "Request", "selector": {"port": APP_PORT, "method": "POST"},
             "actions": {"delay": "800ms"}},
            {"target": "Request", "selector": {"request_headers": {"X-Chaos": "on"}},
             "actions": {"abort": true}},
            {"target": "Response", "selector": {"code": 404},
             "actions": {"replace": {"code": 200, "body": b64("found after all")}}},
        ])),
    )
    .await;
    let (r, took) = s.get_ok("/r/x").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["path"], "/r/x", "the body is the app's");
    assert!(s.app.saw("/r/x"));
    eprintln!(
        "Response replace code 503: {} in {:.1} ms",
        r.status,
        ms(took)
    );

    let (r, get) = s.get_ok("/other").await;
    assert_eq!(r.status, 200);
    assert!(get < FAST, "GET with a POST delay: {get:?}");
    let t0 = Instant::now();
    let r = s.send(request("POST", "/other", "x")).await;
    let post = t0.elapsed();
    assert_eq!(r.status, 200);
    assert!(post >= Duration::from_millis(800), "POST took {post:?}");
    eprintln!(
        "method POST delay 800ms: GET {:.1} ms, POST {:.1} ms",
        ms(get),
        ms(post)
    );

    // Header selector: the name is case-insensitive, the value exact.
    let mut req = request("GET", "/h", "");
    req.headers_mut().insert("x-chaos", "on".parse().unwrap());
    let (r, _) = fetch(&s.cl, s.addr(), req).await;
    assert!(r.expect_err("header selector").closed);
    let mut req = request("GET", "/h2", "");
    req.headers_mut().insert("x-chaos", "On".parse().unwrap());
    assert_eq!(s.send(req).await.status, 200);
    assert!(!s.app.saw("/h") && s.app.saw("/h2"));

    // Code selector: only the app's 404 is replaced.
    let (r, _) = s.get_ok("/status/404").await;
    assert_eq!((r.status, r.text().as_str()), (200, "found after all"));
    let (r, _) = s.get_ok("/status/500").await;
    assert_eq!(r.status, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn replace_of_the_request_is_what_the_app_receives_and_of_the_response_what_the_client_gets()
{
    let s = Setup::new("http-d", 4).await;
    s.apply(
        &[APP_PORT],
        &rules(json!([
            {"target": "Request", "selector": {"port": APP_PORT, "path": "/orig"},
             "actions": {"replace": {"path": "/replaced", "method": "PUT",
                                     "body": b64("new body"), "queries": {"q": "z"},
                                     "headers": {"X-Chaos": "replaced"}}}},
            {"target": "Response", "selector": {"path": "/body"},
             "actions": {"replace": {"body": b64("replaced!"),
                                     "headers": {"X-App": "2", "X-New": "yes"}}}},
        ])),
    )
    .await;
    let mut req = request("POST", "/orig?q=a&keep=1", "old body");
    req.headers_mut()
        .insert("x-chaos", "original".parse().unwrap());
    let r = s.send(req).await;
    assert_eq!(r.status, 200);
    let x = s.app.last();
    eprintln!(
        "the app received: {} {} x-chaos={:?} body={:?}",
        x.method,
        x.uri,
        x.header("x-chaos"),
        x.body
    );
    assert_eq!(x.method, "PUT");
    assert_eq!(x.uri, "/replaced?q=z&keep=1");
    assert_eq!(x.header("x-chaos"), Some("replaced"));
    assert_eq!(&x.body[..], b"new body");
    assert_eq!(x.header("content-length"), Some("8"), "{:?}", x.headers);
    assert_eq!(
        r.json()["path"],
        "/replaced",
        "the app answered the replaced request"
    );

    let (r, _) = s.get_ok("/body").await;
    assert_eq!(r.text(), "replaced!");
    assert_eq!(r.header("x-app"), Some("2"));
    assert_eq!(r.header("x-new"), Some("yes"));
    assert_eq!(r.header("content-length"), Some("9"), "{:?}", r.headers);
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn json_patch_of_bodies_queries_and_headers() {
    let s = Setup::new("http-e", 5).await;
    s.apply(
        &[APP_PORT],
        &rules(json!([
            {"target": "Response", "selector": {"path": "/patch"},
             "actions": {"patch": {"body": {"type": "JSON",
                                            "value": "{\"app\":\"patched\",\"extra\":{\"n\":1}}"},
                                   "headers": [["X-Patched", "yes"]]}}},
            {"target": "Request", "selector": {"path": "/preq"},
             "actions": {"patch": {"body": {"type": "JSON", "value": "{\"b\":null,\"c\":3}"},
                                   "queries": [["added", "1"]],
                                   "headers": [["X-Added", "1"]]}}},
        ])),
    )
    .await;
    let (r, _) = s.get_ok("/patch").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"app": "patched", "method": "GET", "path": "/patch", "extra": {"n": 1}})
    );
    assert_eq!(r.header("x-patched"), Some("yes"));
    assert_eq!(r.header("x-app"), Some("1"));
    eprintln!("patched response: {}", r.text());

    let r = s
        .send(request("POST", "/preq?x=1", "{\"a\":1,\"b\":2}"))
        .await;
    assert_eq!(r.status, 200);
    let x = s.app.last();
    eprintln!("the app received: {} body={:?}", x.uri, x.body);
    assert_eq!(x.uri, "/preq?x=1&added=1");
    assert_eq!(x.header("x-added"), Some("1"));
    let body: serde_json::Value = serde_json::from_slice(&x.body).unwrap();
    assert_eq!(body, json!({"a": 1, "c": 3}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn path_wildcards_match_the_path_only() {
    let s = Setup::new("http-f", 6).await;
    s.apply(
        &[APP_PORT],
        &rules(json!([
            {"target": "Response", "selector": {"path": "/api/*/items"},
             "actions": {"replace": {"code": 418}}},
            {"target": "Response", "selector": {"path": "/v?/x"},
             "actions": {"replace": {"code": 451}}},
        ])),
    )
    .await;
    for (path, code) in [
        ("/api/v1/items", 418),
        ("/api/v1/deep/items", 418),
        ("/api/v1/items?page=2", 418),
        ("/api/items", 200),
        ("/API/v1/items", 200),
        ("/api/v1/items/", 200),
        ("/v1/x", 451),
        ("/v10/x", 200),
        ("/v/x", 200),
    ] {
        let (r, _) = s.get_ok(path).await;
        assert_eq!(r.status, code, "{path}");
    }
    eprintln!("9 paths against /api/*/items and /v?/x: as expected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn every_matching_rule_applies_in_order_and_ports_select() {
    let s = Setup::new("http-o", 16).await;
    let second = App::start(&s.net.pod_ns(), 9090);
    s.apply(
        &[APP_PORT, 9090],
        &rules(json!([
            // Request rules are chosen against the request as the client sent it: the second
            // rule matches /b only, so it does not apply to /a rewritten to /b.
            {"target": "Request", "selector": {"path": "/a"},
             "actions": {"replace": {"path": "/b"}}},
            {"target": "Request", "selector": {"path": "/b"},
             "actions": {"abort": true}},
            // Two matching delays add up.
            {"target": "Request", "selector": {"path": "/twice"}, "actions": {"delay": "300ms"}},
            {"target": "Request", "selector": {"path": "/twi*"}, "actions": {"delay": "300ms"}},
            // Response rules see the request as forwarded (after the rewrite).
            {"target": "Response", "selector": {"path": "/b"},
             "actions": {"replace": {"headers": {"X-Forwarded-As": "b"}}}},
            // A Response delay.
            {"target": "Response", "selector": {"path": "/late"}, "actions": {"delay": "400ms"}},
            // Port selectors: 9090 only.
            {"target": "Response", "selector": {"port": 9090},
             "actions": {"replace": {"code": 502}}},
        ])),
    )
    .await;
    let (r, _) = s.get_ok("/a").await;
    assert_eq!(r.status, 200, "the rewritten request was aborted");
    assert_eq!(r.header("x-forwarded-as"), Some("b"));
    assert_eq!(s.app.last().uri, "/b");
    let (r, _) = s.get("/b").await;
    assert!(r.expect_err("a request for /b").closed);

    let (_, twice) = s.get_ok("/twice").await;
    assert!(twice >= Duration::from_millis(600), "{twice:?}");
    let (_, late) = s.get_ok("/late").await;
    assert!(late >= Duration::from_millis(400), "{late:?}");
    assert!(s.app.saw("/late"));
    eprintln!(
        "two delays of 300ms: {:.1} ms; Response delay 400ms: {:.1} ms",
        ms(twice),
        ms(late)
    );

    let (r, _) = s.get_ok("/port").await;
    assert_eq!(r.status, 200);
    let (r, _) = get_ok(&s.cl, s.net.addr(9090), "/port").await;
    assert_eq!(r.status, 502);
    assert!(second.saw("/port"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn large_bodies_pass_intact_and_concurrent_delays_overlap() {
    let s = Setup::new("http-p", 17).await;
    s.apply(
        &[APP_PORT],
        &rules(json!([
            {"target": "Request", "selector": {"path": "/delayed/*"}, "actions": {"delay": "500ms"}},
            {"target": "Response", "selector": {"path": "/none"},
             "actions": {"replace": {"code": 500}}},
        ])),
    )
    .await;
    // 4 MiB up, 8 MiB down, through the proxy (no rule touches them).
    let up = pattern(4 << 20);
    let t0 = Instant::now();
    let r = s.send(request_bytes("POST", "/upload", up.clone())).await;
    assert_eq!(r.status, 200);
    let x = s.app.last();
    assert_eq!(x.body.len(), up.len());
    assert!(x.body[..] == up[..], "the uploaded body changed");
    let (r, _) = s.get_ok(&format!("/big/{}", 8 << 20)).await;
    assert_eq!(r.body.len(), 8 << 20);
    assert!(
        r.body[..] == pattern(8 << 20)[..],
        "the downloaded body changed"
    );
    eprintln!(
        "4 MiB up + 8 MiB down through the proxy: {:.1} ms",
        ms(t0.elapsed())
    );

    // `Expect: 100-continue` (curl sends it for bodies over 1 MiB and waits 1 s for the 100):
    // the proxy lets the client go on at once.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = connect(&s.cl, s.addr()).await.unwrap();
    let t0 = Instant::now();
    sock.write_all(
        b"POST /expect HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let cont = tokio::time::timeout(Duration::from_secs(3), async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "closed: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let waited = t0.elapsed();
    assert!(cont.is_ok(), "no 100 Continue within 3 s");
    assert!(
        got.starts_with(b"HTTP/1.1 100"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    sock.write_all(b"hello").await.unwrap();
    let mut rest = vec![0u8; 12];
    sock.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"HTTP/1.1 200");
    eprintln!("Expect: 100-continue: 100 after {:.1} ms", ms(waited));
    assert_eq!(&s.app.last().body[..], b"hello");
    drop(sock);

    // 40 concurrent delayed requests on 40 connections take about one delay, not 40.
    let t0 = Instant::now();
    let mut all = Vec::new();
    for i in 0..40 {
        let (cl, addr) = (s.cl.try_clone().unwrap(), s.addr());
        all.push(tokio::spawn(async move {
            get(&cl, addr, &format!("/delayed/{i}")).await
        }));
    }
    let mut times = Vec::new();
    for h in all {
        let (r, t) = h.await.unwrap();
        assert_eq!(r.expect("a concurrent delayed request").status, 200);
        assert!(t >= Duration::from_millis(500));
        times.push(ms(t));
    }
    let wall = t0.elapsed();
    assert!(
        wall < Duration::from_millis(2500),
        "40 delays took {wall:?}"
    );
    // None of the 40 connections (closed by now) is left open in faultd.
    let pid = s.d.child.id();
    let net = &s.net;
    let held = || -> Vec<String> {
        net.pod_cmd(&["ss", "-Htanp"])
            .lines()
            .filter(|l| l.contains(&format!("pid={pid},")) && !l.starts_with("LISTEN"))
            .map(str::to_string)
            .collect()
    };
    let t0 = Instant::now();
    while !held().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "faultd still holds proxied sockets 10 s after their clients closed:\n{}",
            held().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = t0.elapsed();
    eprintln!(
        "faultd's proxied sockets all closed {:.0} ms after the last response",
        ms(left)
    );
    let st = common::stats::Stats::of(&times);
    eprintln!(
        "40 concurrent requests with delay 500ms: wall {:.1} ms, per request p50 {:.1} p99 {:.1} max {:.1} ms",
        ms(wall),
        st.p50,
        st.p99,
        st.max
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn connections_opened_during_the_fault_do_not_hang_after_the_revoke() {
    let s = Setup::new("http-q", 18).await;
    let f = s
        .apply(&[APP_PORT], &delay_rule(APP_PORT, "/*", "600ms"))
        .await;
    let mut c = Conn::open(&s.cl, s.addr()).await.unwrap();
    let t0 = Instant::now();
    assert_eq!(
        c.send(request("GET", "/ka/1", "")).await.unwrap().status,
        200
    );
    let before = t0.elapsed();
    assert!(before >= Duration::from_millis(600), "{before:?}");
    // A request in flight (the app answers after 1.5 s) while the fault is revoked.
    let (cl, addr) = (s.cl.try_clone().unwrap(), s.addr());
    let in_flight = tokio::spawn(async move {
        let mut c = Conn::open(&cl, addr).await.unwrap();
        let t0 = Instant::now();
        let r = c
            .send_within(request("GET", "/sleep/1500", ""), Duration::from_secs(8))
            .await;
        (r, t0.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    revoke(&s.admin, &f.id).await;
    assert!(s.net.trace().is_clean());

    // A connection opened during the fault may be closed by the revoke, or go on without the
    // fault; it must neither stay delayed nor hang.
    let t0 = Instant::now();
    let r = c
        .send_within(request("GET", "/ka/2", ""), Duration::from_secs(5))
        .await;
    let after = t0.elapsed();
    let sockets = s.net.pod_cmd(&["ss", "-tnpi", "state", "established"]);
    let kept = format!(
        "kept-alive connection: delayed {:.1} ms before the revoke; after it: {:?} in {:.1} ms",
        ms(before),
        r.as_ref().map(|r| r.status).map_err(|e| e.msg.clone()),
        ms(after)
    );
    let (r2, t2) = in_flight.await.unwrap();
    let flight = format!(
        "request in flight across the revoke: {:?} after {:.1} ms",
        r2.as_ref().map(|r| r.status).map_err(|e| e.msg.clone()),
        ms(t2)
    );
    eprintln!("{kept}\n{flight}");
    let ok = |r: &Outcome, t: Duration, limit: Duration| match r {
        Ok(_) => t < limit,
        Err(e) => e.closed,
    };
    assert!(
        ok(&r, after, FAST) && ok(&r2, t2, Duration::from_secs(3)),
        "{kept}\n{flight}\nsockets in the pod namespace:\n{sockets}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn two_pods_are_independent_and_a_lapsed_lease_rolls_back() {
    let s = Setup::new("http-r", 19).await;
    let other = Net::new("http-r2", 20);
    let other_app = App::start(&other.pod_ns(), APP_PORT);
    let ocl = other.client_ns();
    let mut leases = api::leases_client::LeasesClient::new(s.admin.clone());
    let lease = leases
        .create_lease(api::CreateLeaseRequest {
            period_seconds: 2,
            name: "host_http".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let a = s
        .apply(&[APP_PORT], &delay_rule(APP_PORT, "/*", "500ms"))
        .await;
    let mut req = apply_req(
        other.pid(),
        &[APP_PORT],
        &rules(json!([{"target": "Response", "actions": {"replace": {"code": 503}}}])),
        "",
        0,
    );
    req.lease_id = lease.id.clone();
    let b = faults(&s.admin)
        .apply_fault(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(http_faults(&s.admin, false).await.len(), 2);
    assert_eq!(get_ok(&ocl, other.addr(APP_PORT), "/").await.0.status, 503);
    assert!(s.get_ok("/").await.1 >= Duration::from_millis(500));
    assert_eq!(ip_of(other_app.last().peer), other.client_ip());

    // The lease is not renewed: the other pod's fault ends, this one stays.
    let t0 = Instant::now();
    eventually("the lease lapses", Duration::from_secs(15), || {
        other.trace().is_clean()
    })
    .await;
    eprintln!(
        "lease of 2 s lapsed: rolled back after {:.0} ms",
        ms(t0.elapsed())
    );
    assert_eq!(get_ok(&ocl, other.addr(APP_PORT), "/").await.0.status, 200);
    let ended = http_faults(&s.admin, true).await;
    let b = ended.iter().find(|f| f.id == b.id).unwrap();
    assert_eq!(b.end_reason, "lease", "{b:?}");
    s.net.trace().assert_installed(s.net.v6);
    assert!(s.get_ok("/").await.1 >= Duration::from_millis(500));

    revoke(&s.admin, &a.id).await;
    s.assert_rolled_back("after revoking the first pod's fault")
        .await;
}

// ---------------------------------------------------------------------------------------------
// updates, crashes and rollbacks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn a_second_apply_replaces_the_rules_live_without_breaking_connections() {
    let s = Setup::new("http-g", 7).await;
    let _echo = Echo::start(&s.net.pod_ns(), 9000, None);
    let a = s
        .apply(&[APP_PORT], &delay_rule(APP_PORT, "/slow*", "1s"))
        .await;
    let listener_of = |table: &str| {
        table
            .split("tproxy to :")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string)
            .unwrap()
    };
    let port_a = listener_of(&s.net.http_table());

    let mut kept = Conn::open(&s.cl, s.addr()).await.unwrap();
    assert_eq!(
        kept.send(request("GET", "/fast", "")).await.unwrap().status,
        200
    );
    // A long request in flight through the proxy while the rules change.
    let (cl, addr) = (s.cl.try_clone().unwrap(), s.addr());
    let in_flight = tokio::spawn(async move { get(&cl, addr, "/sleep/1500").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.app.saw("/sleep/1500"));

    let t0 = Instant::now();
    let b = apply(
        &s.admin,
        &s.net,
        &[APP_PORT, 9000],
        &rules(json!([{"target": "Response", "selector": {"path": "/r*"},
                       "actions": {"replace": {"code": 503}}}])),
        0,
    )
    .await
    .unwrap();
    let update = t0.elapsed();
    assert_ne!(a.id, b.id);
    eprintln!("update (second ApplyFault): {:.1} ms", ms(update));

    let all = http_faults(&s.admin, true).await;
    let active: Vec<_> = all.iter().filter(|f| f.ended_unix_ms == 0).collect();
    assert_eq!(active.len(), 1, "{all:?}");
    assert_eq!(active[0].id, b.id);
    let old = all.iter().find(|f| f.id == a.id).unwrap();
    assert_eq!(
        (phase(old), old.end_reason.as_str()),
        (api::Phase::Reverted, "replaced"),
        "{old:?}"
    );
    let t = s.net.trace();
    t.assert_installed(s.net.v6);
    let table = s.net.http_table();
    assert!(table.contains(&format!("owner_{}", b.id)), "{table}");
    assert!(!table.contains(&format!("owner_{}", a.id)), "{table}");
    assert!(table.contains("tcp dport 9000 tproxy"), "{table}");
    assert_eq!(listener_of(&table), port_a, "the listener stays");

    // The new rules, the old ones gone: on new connections and on the kept-alive one.
    let (r, took) = s.get_ok("/slow").await;
    assert_eq!(r.status, 200);
    assert!(took < FAST, "the replaced delay still applies: {took:?}");
    let (r, _) = s.get_ok("/r").await;
    assert_eq!(r.status, 503);
    let t0 = Instant::now();
    let r = kept.send(request("GET", "/slow", "")).await.unwrap();
    assert!(t0.elapsed() < FAST && r.status == 200);
    assert_eq!(
        kept.send(request("GET", "/r2", "")).await.unwrap().status,
        503
    );

    let (r, took) = in_flight.await.unwrap();
    let r = r.expect("the request in flight during the update");
    assert_eq!(r.status, 200);
    eprintln!(
        "request in flight across the update: {} after {:.1} ms",
        r.status,
        ms(took)
    );

    // Revoking the replaced fault changes nothing; revoking the new one cleans up.
    let ended = faults(&s.admin)
        .revoke_fault(api::RevokeFaultRequest { id: a.id.clone() })
        .await;
    eprintln!(
        "RevokeFault of the replaced fault: {:?}",
        ended.map(|r| r.into_inner().phase)
    );
    s.net.trace().assert_installed(s.net.v6);
    assert_eq!(s.get_ok("/r").await.0.status, 503);
    revoke(&s.admin, &b.id).await;
    s.assert_rolled_back("after revoking the update").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn kill_9_fails_open_and_the_restart_removes_the_interception() {
    let mut s = Setup::new("http-h", 8).await;
    let f = s
        .apply(&[APP_PORT], &delay_rule(APP_PORT, "/*", "1s"))
        .await;
    let (_, slow) = s.get_ok("/x").await;
    assert!(slow >= Duration::from_secs(1), "{slow:?}");

    s.d.kill9();
    let (r, took) = s.get_ok("/after-kill").await;
    assert_eq!(r.status, 200);
    assert!(took < FAST, "with faultd dead the request took {took:?}");
    assert_eq!(s.net.trace().http_tables(), 1, "the table is still there");
    assert_eq!(ip_of(s.app.last().peer), s.net.client_ip());
    let mut fails = Vec::new();
    for i in 0..5 {
        let (r, t) = s.get_ok(&format!("/dead/{i}")).await;
        assert_eq!(r.status, 200);
        fails.push(ms(t));
    }
    eprintln!(
        "faultd killed -9 with a 1 s delay on: first GET {:.1} ms, 5 more {fails:?} ms",
        ms(took)
    );

    let t0 = Instant::now();
    let mut d = DaemonProc::spawn(s.state.path(), &[]);
    let admin = d.ready().await;
    eprintln!("restart to ready: {:.1} ms", ms(t0.elapsed()));
    s.assert_rolled_back("after the restart").await;
    let ended = http_faults(&admin, true).await;
    let f = ended.iter().find(|x| x.id == f.id).unwrap();
    assert_eq!(
        (phase(f), f.end_reason.as_str()),
        (api::Phase::Reverted, "restart"),
        "{f:?}"
    );
    s.d = d;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn sigterm_and_halt_all_roll_back() {
    let mut s = Setup::new("http-i", 9).await;
    s.apply(&[APP_PORT], &delay_rule(APP_PORT, "/*", "1s"))
        .await;
    let t0 = Instant::now();
    s.d.shutdown().await;
    assert!(
        s.d.child.try_wait().unwrap().is_some(),
        "faultd did not exit"
    );
    eprintln!("SIGTERM to exit: {:.1} ms", ms(t0.elapsed()));
    s.assert_rolled_back("after SIGTERM").await;

    let mut d = DaemonProc::spawn(s.state.path(), &[]);
    s.admin = d.ready().await;
    s.d = d;
    s.apply(&[APP_PORT], &delay_rule(APP_PORT, "/*", "1s"))
        .await;
    let r = faults(&s.admin)
        .halt_all(api::HaltAllRequest {
            reason: "host_http".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.rolled_back, r.failed), (1, 0), "{r:?}");
    s.assert_rolled_back("after HaltAll").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn a_ttl_expires_and_ctl_http_applies_with_a_ttl() {
    let s = Setup::new("http-j", 10).await;
    let t0 = Instant::now();
    let f = apply(
        &s.admin,
        &s.net,
        &[APP_PORT],
        &delay_rule(APP_PORT, "/*", "600ms"),
        2,
    )
    .await
    .unwrap();
    assert!(f.deadline_unix_ms > 0, "{f:?}");
    let (_, slow) = s.get_ok("/x").await;
    assert!(slow >= Duration::from_millis(600), "{slow:?}");
    let net = &s.net;
    eventually(
        "the TTL rolls the fault back",
        Duration::from_secs(15),
        || net.trace().is_clean(),
    )
    .await;
    let after = t0.elapsed();
    assert!(
        after >= Duration::from_millis(1900),
        "rolled back after {after:?}"
    );
    eprintln!("ttl 2 s: rolled back {:.0} ms after the apply", ms(after));
    s.assert_rolled_back("after the TTL").await;
    let ended = settled(&s.admin, "http", Duration::from_secs(10)).await;
    assert_eq!(
        (phase(&ended[0]), ended[0].end_reason.as_str()),
        (api::Phase::Reverted, "expiry"),
        "{ended:?}"
    );

    // faultd ctl http --pid with rules from a file.
    let file = s.state.path().join("rules.json");
    std::fs::write(&file, delay_rule(APP_PORT, "/ctl*", "700ms")).unwrap();
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_faultd"))
        .arg("ctl")
        .arg("--socket")
        .arg(&s.d.socket)
        .args([
            "http",
            "--pid",
            &s.net.pid().to_string(),
            "--port",
            "8080,9000",
        ])
        .arg("--rules")
        .arg(format!("@{}", file.display()))
        .args(["--ttl", "3s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ctl http: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("ctl http:\n{stdout}");
    let active = http_faults(&s.admin, false).await;
    assert_eq!(active.len(), 1);
    assert!(
        stdout.contains(&active[0].id) && stdout.contains("http"),
        "{stdout}"
    );
    assert!(s.net.http_table().contains("tcp dport 9000 tproxy"));
    let (_, slow) = s.get_ok("/ctl").await;
    assert!(slow >= Duration::from_millis(700), "{slow:?}");
    let net = &s.net;
    eventually("ctl's TTL", Duration::from_secs(15), || {
        net.trace().is_clean()
    })
    .await;
    assert!(t0.elapsed() >= Duration::from_millis(2900));
    eprintln!(
        "ctl http --ttl 3s: expired after {:.0} ms",
        ms(t0.elapsed())
    );

    // Bad rules through ctl: a usage-level error, nothing applied.
    let out = Command::new(env!("CARGO_BIN_EXE_faultd"))
        .arg("ctl")
        .arg("--socket")
        .arg(&s.d.socket)
        .args(["http", "--pid", &s.net.pid().to_string(), "--port", "8080"])
        .args(["--rules", "[{\"target\":\"Sideways\"}]", "--ttl", "3s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("rules[0].target"), "{stderr}");
    assert!(s.net.trace().is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn bad_input_is_invalid_argument_and_changes_nothing() {
    let s = Setup::new("http-k", 11).await;
    let pid = s.net.pid();
    let bad = |ports: &[u32], rules: &str, tls: &str| {
        let mut r = apply_req(pid, &[], rules, tls, 0);
        if let Some(api::apply_fault_request::Fault::ApplyHttpChaos(h)) = &mut r.fault {
            h.proxy_ports = ports.to_vec();
        }
        r
    };
    let p = u32::from(APP_PORT);
    let tls_path = "{\"cert_file\":{\"type\":\"Path\",\"value\":\"/etc/passwd\"}}";
    let cases: Vec<(api::ApplyFaultRequest, &str)> = vec![
        (bad(&[p], "not json", ""), "rules"),
        (bad(&[p], "{}", ""), "rules"),
        (
            bad(&[p], &delay_rule(APP_PORT, "/", "soon"), ""),
            "rules[0].actions.delay",
        ),
        (
            bad(&[p], &delay_rule(APP_PORT, "/", "-1s"), ""),
            "rules[0].actions.delay",
        ),
        (bad(&[p], "[{\"selector\":{}}]", ""), "rules[0].target"),
        (
            bad(
                &[p],
                &rules(json!([{"target": "Request", "selector": {"port": 70000}}])),
                "",
            ),
            "rules[0].selector.port",
        ),
        (
            bad(
                &[p],
                &rules(json!([{"target": "Request",
                               "actions": {"replace": {"path": "no-slash"}}}])),
                "",
            ),
            "rules[0].actions.replace.path",
        ),
        (
            bad(
                &[p],
                &rules(json!([{"target": "Response", "actions": {"replace": {"code": 1000}}}])),
                "",
            ),
            "rules[0].actions.replace.code",
        ),
        (
            bad(&[], &delay_rule(APP_PORT, "/", "1s"), ""),
            "proxy_ports",
        ),
        (bad(&[70000], &delay_rule(APP_PORT, "/", "1s"), ""), "70000"),
        (
            bad(&[0], &delay_rule(APP_PORT, "/", "1s"), ""),
            "proxy_ports",
        ),
        (bad(&[p], "[]", tls_path), "tls.cert_file"),
        (bad(&[p], "[]", "[1]"), "tls"),
    ];
    let mut c = faults(&s.admin);
    for (req, want) in cases {
        let e = c.apply_fault(req).await.expect_err(want);
        assert_eq!(e.code(), Code::InvalidArgument, "{want}: {e:?}");
        assert!(e.message().contains(want), "{want}: {}", e.message());
        eprintln!("refused: {}", e.message());
    }
    assert!(s.net.trace().is_clean(), "{:#?}", s.net.trace());
    assert!(http_faults(&s.admin, true).await.is_empty());

    // A bad update leaves the fault in force as it was.
    let f = s
        .apply(&[APP_PORT], &delay_rule(APP_PORT, "/*", "500ms"))
        .await;
    let e = c
        .apply_fault(bad(&[p], &delay_rule(APP_PORT, "/", "later"), ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let active = http_faults(&s.admin, false).await;
    assert_eq!((active.len(), active[0].id.as_str()), (1, f.id.as_str()));
    let (_, took) = s.get_ok("/still").await;
    assert!(took >= Duration::from_millis(500), "{took:?}");
    s.net.trace().assert_installed(s.net.v6);
}

/// The socket descriptors of process `pid`.
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn a_pod_namespace_deleted_under_the_fault_is_not_kept_alive_by_faultd() {
    let state = tempfile::tempdir().unwrap();
    let mut d = DaemonProc::spawn(state.path(), &[]);
    let admin = d.ready().await;
    let pid = d.child.id();

    // Control: with nothing of faultd in it, a removed pod namespace is freed at once.
    let mut ctl = Net::new("http-s0", 21);
    drop(App::start(&ctl.pod_ns(), APP_PORT));
    ctl.remove_pod();
    let freed = eventually(
        "an unused pod namespace is freed",
        Duration::from_secs(10),
        || !ctl.veth_alive(),
    )
    .await;
    eprintln!(
        "control: a removed pod namespace was freed after {:.0} ms",
        ms(freed)
    );

    let mut net = Net::new("http-s", 22);
    let app = App::start(&net.pod_ns(), APP_PORT);
    let cl = net.client_ns();
    let before = sockets_of(pid);
    let f = apply(
        &admin,
        &net,
        &[APP_PORT],
        &delay_rule(APP_PORT, "/*", "100ms"),
        0,
    )
    .await
    .unwrap();
    assert_eq!(get_ok(&cl, net.addr(APP_PORT), "/").await.0.status, 200);
    let during = sockets_of(pid);
    // The pod is deleted while the fault is on (as when a pod under HTTPChaos is deleted).
    drop(app);
    net.remove_pod();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ended = faults(&admin)
        .revoke_fault(api::RevokeFaultRequest { id: f.id.clone() })
        .await;
    eprintln!(
        "faultd's sockets: {before} before, {during} with the fault; RevokeFault after the pod went: {:?}",
        ended.as_ref().map(|r| (r.get_ref().phase, r.get_ref().end_reason.clone()))
    );
    // faultd's kept netlink socket may pin the namespace for its idle time (10 s); nothing
    // may pin it for longer.
    let t0 = Instant::now();
    while net.veth_alive() || sockets_of(pid) > before {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "20 s after the revoke, the deleted pod's network namespace is still alive (its veth \
             exists: {}), faultd holds {} sockets ({before} before the fault, {during} with it)",
            net.veth_alive(),
            sockets_of(pid)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "the deleted pod's namespace was freed {:.0} ms after the revoke; faultd's sockets: {}",
        ms(t0.elapsed()),
        sockets_of(pid)
    );
}

// ---------------------------------------------------------------------------------------------
// other protocols and TLS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn non_http_bytes_on_a_proxied_port_pass_unchanged() {
    let s = Setup::new("http-l", 12).await;
    let pod = s.net.pod_ns();
    let echo = Echo::start(&pod, 9000, None);
    let banner = Echo::start(&pod, 9001, Some(b"220 faultd-test ready\r\n"));
    s.apply(
        &[APP_PORT, 9000, 9001, 9002],
        &rules(json!([{"target": "Response", "selector": {},
                       "actions": {"replace": {"code": 503}}}])),
    )
    .await;
    assert_eq!(s.get_ok("/").await.0.status, 503, "HTTP is proxied");

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // 256 KiB of binary bytes (not a request line), echoed byte for byte.
    let data: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let t0 = Instant::now();
    let mut sock = connect(&s.cl, s.net.addr(9000)).await.unwrap();
    // While it is open, the pod namespace shows faultd holding the intercepted connection.
    sock.write_all(&data[..1024]).await.unwrap();
    let mut got = vec![0u8; 1024];
    sock.read_exact(&mut got).await.unwrap();
    let ss = s
        .net
        .pod_cmd(&["ss", "-Htnp", "state", "established", "sport", "=", ":9000"]);
    assert!(
        ss.contains("\"faultd\""),
        "faultd holds no connection to :9000:\n{ss}"
    );
    let (mut rd, mut wr) = sock.into_split();
    let rest = data[1024..].to_vec();
    let writer = tokio::spawn(async move {
        wr.write_all(&rest).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    rd.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the echoed bytes differ");
    eprintln!(
        "256 KiB of binary bytes echoed unchanged through the proxy in {:.1} ms",
        ms(t0.elapsed())
    );
    assert_eq!(ip_of(echo.peers.lock().unwrap()[0]), s.net.client_ip());

    // A server that speaks first: the banner reaches the client, then the echo.
    let mut sock = connect(&s.cl, s.net.addr(9001)).await.unwrap();
    let mut b = vec![0u8; 23];
    tokio::time::timeout(Duration::from_secs(5), sock.read_exact(&mut b))
        .await
        .expect("the banner never arrived")
        .unwrap();
    assert_eq!(&b, b"220 faultd-test ready\r\n");
    sock.write_all(b"EHLO faultd\r\n").await.unwrap();
    let mut e = vec![0u8; 13];
    sock.read_exact(&mut e).await.unwrap();
    assert_eq!(&e, b"EHLO faultd\r\n");
    assert_eq!(ip_of(banner.peers.lock().unwrap()[0]), s.net.client_ip());
    eprintln!("banner-first protocol on a proxied port: spliced");

    // A proxied port nothing listens on: the client's connection ends at once (the proxy
    // accepted it, the app refused it), it does not hang.
    let t0 = Instant::now();
    let end = match connect(&s.cl, s.net.addr(9002)).await {
        Err(e) => format!("refused: {e}"),
        Ok(mut sock) => {
            let _ = sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            let mut buf = Vec::new();
            let r = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut buf))
                .await
                .expect("a connection to a closed proxied port hangs");
            assert!(buf.is_empty(), "{:?}", String::from_utf8_lossy(&buf));
            format!("accepted, then closed ({r:?})")
        }
    };
    eprintln!(
        "closed proxied port 9002: {end} after {:.1} ms",
        ms(t0.elapsed())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn tls_is_terminated_and_re_encrypted() {
    let s = Setup::new("http-m", 13).await;
    let ip = s.net.pod_ip().to_string();
    let pki = TlsPki::new(&["app.test", &ip]);
    let tls_app = App::start_tls(&s.net.pod_ns(), 8443, pki.server_config());
    let addr = s.net.addr(8443);
    let client = pki.client_config();
    let mut c = tls_conn(&s.cl, addr, "app.test", client.clone())
        .await
        .unwrap();
    assert_eq!(
        c.send(request("GET", "/tls", "")).await.unwrap().status,
        200
    );
    drop(c);

    let t0 = Instant::now();
    let f = faults(&s.admin)
        .apply_fault(apply_req(
            s.net.pid(),
            &[8443],
            &rules(json!([
                {"target": "Response", "selector": {"port": 8443, "path": "/tls*"},
                 "actions": {"replace": {"code": 503, "headers": {"X-Chaos-TLS": "1"}}}},
                {"target": "Request", "selector": {"port": 8443, "path": "/slow*"},
                 "actions": {"delay": "500ms"}},
            ])),
            &pki.chaos_json(),
            0,
        ))
        .await
        .unwrap()
        .into_inner();
    eprintln!(
        "ApplyFault with TLS: {:.1} ms ({})",
        ms(t0.elapsed()),
        f.summary
    );
    assert!(f.summary.contains("TLS"), "{f:?}");

    // With SNI.
    let mut c = tls_conn(&s.cl, addr, "app.test", client.clone())
        .await
        .unwrap();
    let r = c.send(request("GET", "/tls", "")).await.unwrap();
    assert_eq!((r.status, r.header("x-chaos-tls")), (503, Some("1")));
    let x = tls_app.last();
    assert!(x.tls && x.uri == "/tls", "{x:?}");
    assert_eq!(ip_of(x.peer), s.net.client_ip(), "{x:?}");
    let t0 = Instant::now();
    let r = c.send(request("GET", "/slow", "")).await.unwrap();
    let slow = t0.elapsed();
    assert_eq!(r.status, 200);
    assert!(slow >= Duration::from_millis(500), "HTTPS delay: {slow:?}");
    let t0 = Instant::now();
    assert_eq!(
        c.send(request("GET", "/plain", "")).await.unwrap().status,
        200
    );
    let fast = t0.elapsed();
    assert!(fast < FAST);
    eprintln!(
        "over TLS: replace 503 seen by the client, delay 500ms -> {:.1} ms, other path {:.1} ms",
        ms(slow),
        ms(fast)
    );

    // Without SNI (an IP as the name): the proxy names the app by the destination IP.
    let mut c = tls_conn(&s.cl, addr, &ip, client.clone()).await.unwrap();
    let r = c.send(request("GET", "/tls-ip", "")).await.unwrap();
    assert_eq!(r.status, 503);
    assert!(tls_app.saw("/tls-ip"));

    // A client that does not trust the proxy's certificate gets no TLS session.
    let other = TlsPki::new(&["app.test"]);
    let e = tls_conn(&s.cl, addr, "app.test", other.client_config())
        .await
        .err()
        .expect("an untrusted certificate was accepted");
    eprintln!("client with another CA: {}", e.msg);

    revoke(&s.admin, &f.id).await;
    s.assert_rolled_back("after revoking the TLS fault").await;
    let mut c = tls_conn(&s.cl, addr, "app.test", client).await.unwrap();
    assert_eq!(
        c.send(request("GET", "/tls", "")).await.unwrap().status,
        200
    );
}

// ---------------------------------------------------------------------------------------------
// the doctor

/// `faultd ctl --socket S doctor [--fix]`: its stdout.
fn ctl_doctor(socket: &Path, fix: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultd"));
    cmd.arg("ctl").arg("--socket").arg(socket).arg("doctor");
    if fix {
        cmd.arg("--fix");
    }
    let out = cmd.output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: needs root"]
async fn doctor_reports_a_stray_table_and_fix_removes_it() {
    let mut s = Setup::new("http-n", 14).await;
    s.apply(&[APP_PORT], &delay_rule(APP_PORT, "/*", "1s"))
        .await;
    s.d.kill9();
    // The journal is lost: the next daemon cannot know the table.
    std::fs::remove_dir_all(s.state.path()).unwrap();
    std::fs::create_dir_all(s.state.path()).unwrap();
    // A table made by hand in a second namespace: no owner marker at all.
    let other = Net::new("http-n2", 15);
    other.pod_cmd(&["nft", "add", "table", "inet", "faultd_http"]);

    let mut d = DaemonProc::spawn(s.state.path(), &[]);
    let admin = d.ready().await;
    assert_eq!(
        s.net.trace().http_tables(),
        1,
        "the table survived the restart"
    );
    let report = api::doctor_client::DoctorClient::new(admin.clone())
        .check(api::DoctorRequest { fix: false })
        .await
        .unwrap()
        .into_inner();
    let mine =
        |r: &api::Residue| r.location.contains(&s.net.pod) || r.location.contains(&other.pod);
    let ours: Vec<_> = report.residue.iter().filter(|r| mine(r)).collect();
    eprintln!("residue: {ours:#?}");
    let text = ctl_doctor(&d.socket, false);
    for ns in [&s.net.pod, &other.pod] {
        assert!(
            text.lines()
                .any(|l| l.contains("table inet faultd_http") && l.contains(ns.as_str())),
            "no faultd_http residue for {ns}:\n{text}"
        );
    }
    assert!(text.contains("owner marker: none"), "{text}");
    assert!(ours.iter().all(|r| !r.removed));
    // --fix acts on the whole machine: only when every residue is this test's.
    let foreign: Vec<_> = report.residue.iter().filter(|r| !mine(r)).collect();
    if !foreign.is_empty() {
        eprintln!("NOTE: other residue on this machine, --fix not run: {foreign:#?}");
        return;
    }
    let text = ctl_doctor(&d.socket, true);
    eprintln!("doctor --fix:\n{text}");
    assert!(text.contains("(removed)"), "{text}");
    assert_eq!(s.net.trace().http_tables(), 0);
    assert_eq!(other.trace().http_tables(), 0);
    let text = ctl_doctor(&d.socket, false);
    assert!(!text.contains("faultd_http"), "{text}");
    // The table's reply route must go with it (the interception's whole footprint).
    let t = s.net.trace();
    assert!(
        t.is_clean(),
        "doctor --fix left faultd's policy routing: {t:#?}"
    );
    s.d = d;
}

// ---------------------------------------------------------------------------------------------
// containers, through the Chaos Mesh API

fn ctr_sock() -> String {
    common::ctr::sock().display().to_string()
}

/// A busybox `httpd` on 8080 serving `hello\n` at `/index.html`, joined to a client namespace.
struct Httpd {
    net: Net,
    c: Container,
}

impl Httpd {
    async fn start(n: u8) -> Httpd {
        let c = Container::run_argv(
            &unique("http"),
            &[],
            &[
                "sh",
                "-c",
                "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www",
            ],
        );
        let net = Net::of_pid("httpct", n, c.pid());
        let h = Httpd { net, c };
        let cl = h.net.client_ns();
        let addr = h.net.addr(APP_PORT);
        let t0 = Instant::now();
        loop {
            if let (Ok(r), _) = get(&cl, addr, "/index.html").await {
                assert_eq!((r.status, r.text().as_str()), (200, "hello\n"));
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "httpd never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        h
    }

    async fn get(&self, path: &str) -> (Outcome, Duration) {
        get(&self.net.client_ns(), self.net.addr(APP_PORT), path).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "host tier: root and the test containerd; run by tests/run-all.sh"]
async fn chaos_mesh_apply_http_chaos_on_a_container() {
    let h = Httpd::start(20).await;
    let state = tempfile::tempdir().unwrap();
    let sock = ctr_sock();
    let (mut d, url, _) = DaemonProc::spawn_tcp(
        state.path(),
        &["--runtime", "containerd", "--runtime-socket-path", &sock],
    );
    let admin = d.ready().await;
    let mut pb = ChaosDaemonClient::connect(url).await.unwrap();
    let id = h.c.id();
    let me = faultd::process::ProcessIdentity::of(d.child.id()).unwrap();

    let t0 = Instant::now();
    let r = pb
        .apply_http_chaos(chaos(
            &id,
            &[APP_PORT],
            &delay_rule(APP_PORT, "/*", "500ms"),
            "",
        ))
        .await
        .unwrap()
        .into_inner();
    eprintln!("ApplyHttpChaos: {:.1} ms, {r:?}", ms(t0.elapsed()));
    assert_eq!((r.status_code, r.error.as_str()), (200, ""), "{r:?}");
    assert_eq!(
        r.instance,
        i64::from(d.child.id()),
        "instance = faultd's pid"
    );
    assert_eq!(
        r.start_time, me.start_time_ms,
        "startTime = faultd's start time"
    );
    h.net.trace().assert_installed(false);
    let (r, took) = h.get("/index.html").await;
    let r = r.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello\n"));
    assert!(took >= Duration::from_millis(500), "{took:?}");
    eprintln!("busybox httpd with delay 500ms: {:.1} ms", ms(took));
    let active = http_faults(&admin, false).await;
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].target.as_ref().unwrap().container_id, id);

    // An update: the full desired state replaces the delay.
    let r = pb
        .apply_http_chaos(chaos(
            &id,
            &[APP_PORT],
            &rules(
                json!([{"target": "Response", "selector": {"port": APP_PORT},
                           "actions": {"replace": {"code": 503}}}]),
            ),
            "",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status_code, 200, "{r:?}");
    let (r, took) = h.get("/index.html").await;
    assert_eq!(r.unwrap().status, 503);
    assert!(took < FAST, "{took:?}");
    assert_eq!(http_faults(&admin, false).await.len(), 1);

    // Bad input: 400 with the field in `error`, the fault in force unchanged.
    for (rules_json, ports, tls, want) in [
        (
            delay_rule(APP_PORT, "/", "soon"),
            vec![APP_PORT],
            "",
            "rules[0].actions.delay",
        ),
        (
            "[{\"target\":\"Both\"}]".to_string(),
            vec![APP_PORT],
            "",
            "rules[0].target",
        ),
        (delay_rule(APP_PORT, "/", "1s"), vec![], "", "proxy_ports"),
        (
            "[]".to_string(),
            vec![APP_PORT],
            "{\"cert_file\":{\"type\":\"Path\",\"value\":\"/etc/passwd\"}}",
            "tls.cert_file",
        ),
    ] {
        let r = pb
            .apply_http_chaos(chaos(&id, &ports, &rules_json, tls))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status_code, 400, "{want}: {r:?}");
        assert!(r.error.contains(want), "{want}: {r:?}");
        eprintln!("400: {}", r.error);
    }
    assert_eq!(h.get("/index.html").await.0.unwrap().status, 503);

    // Recover: rules "[]" and no ports.
    let t0 = Instant::now();
    let r = pb
        .apply_http_chaos(chaos(&id, &[], "[]", ""))
        .await
        .unwrap()
        .into_inner();
    eprintln!("recover: {:.1} ms, {r:?}", ms(t0.elapsed()));
    assert_eq!((r.status_code, r.error.as_str()), (200, ""), "{r:?}");
    let t = h.net.trace();
    assert!(t.is_clean(), "{t:#?}");
    let (r, took) = h.get("/index.html").await;
    assert_eq!(r.unwrap().status, 200);
    assert!(took < FAST);
    assert!(http_faults(&admin, false).await.is_empty());
    // A second recover is fine; bad rules on a clean pod create nothing.
    let r = pb
        .apply_http_chaos(chaos(&id, &[], "[]", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status_code, 200, "{r:?}");
    let r = pb
        .apply_http_chaos(chaos(&id, &[APP_PORT], &delay_rule(APP_PORT, "/", "x"), ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status_code, 400, "{r:?}");
    assert!(h.net.trace().is_clean(), "{:#?}", h.net.trace());
    assert!(http_faults(&admin, true)
        .await
        .iter()
        .all(|f| f.ended_unix_ms > 0));

    // An unknown container is NOT_FOUND.
    let e = pb
        .apply_http_chaos(chaos(
            "containerd://no-such-container-http",
            &[APP_PORT],
            &delay_rule(APP_PORT, "/", "1s"),
            "",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    eprintln!("unknown container: {:?} {}", e.code(), e.message());
}
