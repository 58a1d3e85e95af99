//! VM tier (run by `tests/run-all.sh` inside the qemu guest, stock Debian 6.1 kernel, where
//! `nft_tproxy`, `nf_tproxy_ipv4/6`, `nft_socket` and friends are modules that must autoload on
//! faultd's first batch): HTTPChaos through faultd.v1 `ApplyFault` `apply_http_chaos` with
//! `target_pid`, no container runtime: a pod network namespace held by a `sleep`, joined by a
//! veth to a client namespace, the HTTP application served by this test in the pod namespace
//! (`common::http`, as in `tests/host_http.rs`). Delay, abort, the application seeing the
//! client's real address, revoke leaving no table, fwmark rule or route, and `kill -9` failing
//! open. Every test is `#[ignore]`d and refuses to run outside the VM. By hand:
//!
//! ```text
//! cargo test --no-run --test vm_http
//! tests/env/vm/run-vm.sh -- target/debug/deps/vm_http-<hash> --ignored --test-threads=1
//! ```
mod common;

use std::time::{Duration, Instant};

use common::host::DaemonProc;
use common::http::*;
use faultd::proto::faultd::v1 as api;
use serde_json::json;

fn require_vm() {
    assert_eq!(
        std::env::var("FAULTD_TEST_VM").as_deref(),
        Ok("1"),
        "VM-only test: run it through tests/run-all.sh or tests/env/vm/run-vm.sh"
    );
}

/// Loaded modules whose name says tproxy, socket or conntrack (`/proc/modules`).
fn netfilter_modules() -> Vec<String> {
    std::fs::read_to_string("/proc/modules")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|m| m.contains("tproxy") || m.starts_with("nft_") || m.starts_with("nf_"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "VM tier: run by tests/run-all.sh inside the qemu guest"]
async fn delay_abort_client_address_and_revoke_on_debian_6_1() {
    require_vm();
    let before = netfilter_modules();
    eprintln!("kernel {}; netfilter modules before: {before:?}", {
        let u = nix::sys::utsname::uname().unwrap();
        u.release().to_string_lossy().into_owned()
    });
    let net = Net::new("vmhttp", 1);
    let app = App::start(&net.pod_ns(), APP_PORT);
    let cl = net.client_ns();
    let addr = net.addr(APP_PORT);
    let state = tempfile::tempdir().unwrap();
    let mut d = DaemonProc::spawn(state.path(), &[]);
    let admin = d.ready().await;
    let (r, direct) = get_ok(&cl, addr, "/").await;
    assert_eq!(r.status, 200);
    eprintln!("direct GET: {:.1} ms", ms(direct));

    let t0 = Instant::now();
    let f = apply(
        &admin,
        &net,
        &[APP_PORT],
        &json!([
            {"target": "Request", "selector": {"port": APP_PORT, "path": "/slow*"},
             "actions": {"delay": "500ms"}},
            {"target": "Request", "selector": {"port": APP_PORT, "path": "/abort"},
             "actions": {"abort": true}},
        ])
        .to_string(),
        0,
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "ApplyFault apply_http_chaos in the VM: {e} (netfilter modules now: {:?})",
            netfilter_modules()
        )
    });
    eprintln!(
        "ApplyFault apply_http_chaos: {:.1} ms; modules loaded since: {:?}",
        ms(t0.elapsed()),
        netfilter_modules()
            .into_iter()
            .filter(|m| !before.contains(m))
            .collect::<Vec<_>>()
    );
    assert!(
        netfilter_modules().iter().any(|m| m == "nft_tproxy"),
        "nft_tproxy is not loaded: {:?}",
        netfilter_modules()
    );
    let t = net.trace();
    t.assert_installed(net.v6);
    eprintln!("{}{t:#?}", net.http_table());

    let (r, slow) = get_ok(&cl, addr, "/slow").await;
    assert_eq!(r.status, 200);
    assert!(slow >= Duration::from_millis(500), "{slow:?}");
    let (r, fast) = get_ok(&cl, addr, "/fast").await;
    assert_eq!(r.status, 200);
    // TCG is slow: "fast" is only "not delayed by the rule".
    assert!(fast < slow, "/fast {fast:?} vs /slow {slow:?}");
    let (r, took) = get(&cl, addr, "/abort").await;
    let e = r.expect_err("an aborted request was answered");
    assert!(e.closed, "{}", e.msg);
    assert!(!app.saw("/abort"));
    for x in app.seen() {
        assert_eq!(ip_of(x.peer), net.client_ip(), "{x:?}");
    }
    eprintln!(
        "delay 500ms: /slow {:.1} ms, /fast {:.1} ms; abort: closed after {:.1} ms; the app saw {}",
        ms(slow),
        ms(fast),
        ms(took),
        app.last().peer
    );
    if net.v6 {
        let (r, t6) = get_ok(&cl, net.addr6(APP_PORT), "/slow6").await;
        assert_eq!(r.status, 200);
        assert!(t6 >= Duration::from_millis(500), "{t6:?}");
        assert_eq!(
            app.last().peer.ip(),
            std::net::IpAddr::from(net.client_ip6())
        );
        eprintln!("IPv6: /slow6 {:.1} ms from {}", ms(t6), app.last().peer);
    }

    let ended = revoke(&admin, &f.id).await;
    assert_eq!(ended.phase, api::Phase::Reverted as i32, "{ended:?}");
    let t = net.trace();
    assert!(t.is_clean(), "{t:#?}");
    let (r, after) = get_ok(&cl, addr, "/slow").await;
    assert_eq!(r.status, 200);
    assert!(after < Duration::from_millis(500), "{after:?}");
    eprintln!("revoked: clean, /slow {:.1} ms", ms(after));

    // kill -9 with the rule on: the next request goes straight to the app; the restart cleans.
    apply(
        &admin,
        &net,
        &[APP_PORT],
        &delay_rule(APP_PORT, "/*", "2s"),
        0,
    )
    .await
    .unwrap();
    d.kill9();
    let (r, dead) = get_ok(&cl, addr, "/after-kill").await;
    assert_eq!(r.status, 200);
    assert!(dead < Duration::from_secs(2), "{dead:?}");
    assert_eq!(net.trace().http_tables(), 1);
    let mut d = DaemonProc::spawn(state.path(), &[]);
    d.ready().await;
    let t = net.trace();
    assert!(t.is_clean(), "after the restart: {t:#?}");
    eprintln!(
        "kill -9: next GET {:.1} ms (fail-open); restart: clean",
        ms(dead)
    );
    d.stop();
}
