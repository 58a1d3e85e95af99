//! Host tier (root; run by `tests/run-all.sh`, or `cargo test --test host_faults -- --ignored
//! --test-threads=1`): the rollback engine against real kernel state. Faults are tbf qdiscs on
//! a dummy device in throwaway network namespaces (this host kernel has tbf but no netem), the
//! daemon is a real child process so it can be SIGKILLed.
mod common;

use std::time::{Duration, Instant};

use common::host::*;
use faultd::proto::faultd::v1 as api;
use tonic::Code;

#[tokio::test]
#[ignore = "host tier: needs root; run by tests/run-all.sh"]
async fn tbf_fault_restores_the_prior_root_exactly() {
    let state = tempfile::tempdir().unwrap();
    let ns = Netns::new("exact");
    // A pre-existing classless-root configuration faultd must put back as it was.
    ns.tc(&[
        "qdisc", "add", "dev", "d0", "root", "handle", "1:", "htb", "default", "10", "r2q", "7",
    ]);
    let before = ns.qdisc_dump();
    assert!(before.contains("htb 1:"), "{before}");

    let mut d = DaemonProc::spawn(state.path(), &[]);
    let ch = d.ready().await;
    let f = faults(&ch)
        .apply_fault(apply_tbf(&ns, 600, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(f.phase, api::Phase::Applied as i32);
    assert!(ns.has_faultd_qdisc(), "{}", ns.qdisc_dump());
    assert!(ns.qdisc_dump().contains("tbf fa01:"), "{}", ns.qdisc_dump());
    assert_eq!(f.target.as_ref().unwrap().device, "d0");
    assert!(f.deadline_unix_ms > f.created_unix_ms);

    let r = faults(&ch)
        .revoke_fault(api::RevokeFaultRequest { id: f.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.phase, r.end_reason.as_str()),
        (api::Phase::Reverted as i32, "request")
    );
    assert_eq!(
        ns.qdisc_dump(),
        before,
        "recover must restore the original root exactly"
    );
    // Revoking again is a harmless no-op.
    faults(&ch)
        .revoke_fault(api::RevokeFaultRequest { id: f.id })
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "host tier: needs root; run by tests/run-all.sh"]
async fn a_classful_tree_it_could_not_rebuild_is_refused_and_left_untouched() {
    let state = tempfile::tempdir().unwrap();
    let ns = Netns::new("tree");
    ns.tc(&[
        "qdisc", "add", "dev", "d0", "root", "handle", "1:", "htb", "default", "10",
    ]);
    ns.tc(&[
        "class", "add", "dev", "d0", "parent", "1:", "classid", "1:10", "htb", "rate", "1mbit",
    ]);
    ns.tc(&[
        "qdisc", "add", "dev", "d0", "parent", "1:10", "handle", "10:", "pfifo", "limit", "50",
    ]);
    let before = ns.qdisc_dump();
    assert!(before.contains("pfifo 10:"), "{before}");

    let mut d = DaemonProc::spawn(state.path(), &[]);
    let ch = d.ready().await;
    // The prior state is captured while the intent is synced; the refusal comes after the
    // intent is on disk, so the fault exists and ends as apply_failed with nothing touched.
    let e = faults(&ch)
        .apply_fault(apply_tbf(&ns, 600, ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("classful root qdisc (htb)"), "{e}");
    assert_eq!(ns.qdisc_dump(), before, "the user's tree must be untouched");
    let all = faults(&ch)
        .list_faults(api::ListFaultsRequest {
            include_ended: true,
        })
        .await
        .unwrap()
        .into_inner()
        .faults;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(
        (all[0].phase, all[0].end_reason.as_str()),
        (api::Phase::Reverted as i32, "apply_failed"),
        "{all:?}"
    );
    drop(d);
}

#[tokio::test]
#[ignore = "host tier: needs root; run by tests/run-all.sh"]
async fn sigkill_torture_leaves_no_residue_and_loses_no_acknowledged_fault() {
    let cycles: usize = std::env::var("FAULTD_TORTURE_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let state = tempfile::tempdir().unwrap();
    let ns = Netns::new("torture");
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15 ^ std::process::id() as u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut acked: Vec<String> = Vec::new();
    let mut kills_in_flight = 0;
    let t0 = Instant::now();
    for cycle in 0..=cycles {
        let mut d = DaemonProc::spawn(state.path(), &[]);
        let ch = d.ready().await;
        // Start-up reconciliation ran before the socket served: nothing may be left.
        assert!(
            !ns.has_faultd_qdisc(),
            "cycle {cycle}: residue after restart:\n{}",
            ns.qdisc_dump()
        );
        for id in acked.drain(..) {
            let f = faults(&ch)
                .get_fault(api::GetFaultRequest { id: id.clone() })
                .await
                .unwrap_or_else(|e| panic!("cycle {cycle}: acknowledged fault {id} lost: {e}"))
                .into_inner();
            assert_eq!(f.phase, api::Phase::Reverted as i32, "cycle {cycle}: {f:?}");
            assert!(
                matches!(f.end_reason.as_str(), "restart" | "replaced"),
                "cycle {cycle}: {f:?}"
            );
        }
        if cycle == cycles {
            break;
        }
        assert!(
            stress_workers().is_empty(),
            "cycle {cycle}: stress workers survived: {:?}",
            stress_workers()
        );
        let f = faults(&ch)
            .apply_fault(apply_tbf(&ns, 600, ""))
            .await
            .unwrap()
            .into_inner();
        acked.push(f.id);
        assert!(
            ns.has_faultd_qdisc(),
            "cycle {cycle}: acknowledged but not in the kernel:\n{}",
            ns.qdisc_dump()
        );
        // A stress fault too: a light CPU stressor charged to the holder's cgroup.
        let s = faults(&ch)
            .apply_fault(api::ApplyFaultRequest {
                ttl_seconds: 600,
                lease_id: String::new(),
                target_pid: ns.pid(),
                fault: Some(api::apply_fault_request::Fault::ExecStressors(
                    faultd::proto::pb::ExecStressRequest {
                        cpu_stressors: "--cpu 1 --cpu-load 5".into(),
                        enter_ns: true,
                        ..Default::default()
                    },
                )),
            })
            .await
            .unwrap()
            .into_inner();
        acked.push(s.id);
        assert!(
            !stress_workers().is_empty(),
            "cycle {cycle}: no stress worker after the ack"
        );
        match rand() % 3 {
            0 => d.kill9(), // right after an acknowledgement
            mode => {
                // kill -9 while a second apply (replacing the first) is in flight
                let ch2 = ch.clone();
                let ns_pid = ns.pid();
                let call = tokio::spawn(async move {
                    let mut req = apply_tbf_for_pid(ns_pid);
                    req.ttl_seconds = 600;
                    faults(&ch2).apply_fault(req).await
                });
                if mode == 2 {
                    tokio::time::sleep(Duration::from_micros(rand() % 15_000)).await;
                }
                d.kill9();
                kills_in_flight += 1;
                if let Ok(Ok(Ok(resp))) = tokio::time::timeout(Duration::from_secs(5), call).await {
                    acked.push(resp.into_inner().id);
                }
            }
        }
    }
    println!(
        "TORTURE cycles={cycles} kills_with_call_in_flight={kills_in_flight} took_s={:.1}",
        t0.elapsed().as_secs_f64()
    );
}

/// PIDs of `faultd stress-worker` processes on the node.
fn stress_workers() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|a| a == b"stress-worker"))
                .unwrap_or(false)
        })
        .collect()
}

fn apply_tbf_for_pid(pid: u32) -> api::ApplyFaultRequest {
    api::ApplyFaultRequest {
        ttl_seconds: 600,
        lease_id: String::new(),
        target_pid: pid,
        fault: Some(api::apply_fault_request::Fault::SetTcs(tbf_request(
            "d0", "2mbit",
        ))),
    }
}

#[tokio::test]
#[ignore = "host tier: needs root; run by tests/run-all.sh"]
async fn expiry_is_enforced_by_the_daemon_within_a_second() {
    let state = tempfile::tempdir().unwrap();
    let ns = Netns::new("expiry");
    let mut d = DaemonProc::spawn(state.path(), &[]);
    let ch = d.ready().await;
    let t0 = Instant::now();
    let f = faults(&ch)
        .apply_fault(apply_tbf(&ns, 2, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(ns.has_faultd_qdisc());
    wait_until("expiry", Duration::from_secs(5), || !ns.has_faultd_qdisc()).await;
    let took = t0.elapsed();
    println!("EXPIRY ttl=2s removed_after_s={:.3}", took.as_secs_f64());
    assert!(
        took >= Duration::from_millis(1900) && took <= Duration::from_millis(3000),
        "{took:?}"
    );
    // The record is written right after the undo is verified: wait for it.
    let t1 = Instant::now();
    let r = loop {
        let r = faults(&ch)
            .get_fault(api::GetFaultRequest { id: f.id.clone() })
            .await
            .unwrap()
            .into_inner();
        if r.phase != api::Phase::Reverting as i32 && r.phase != api::Phase::Applied as i32 {
            break r;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(3),
            "record not ended: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(r.end_reason, "expiry");
}

#[tokio::test]
#[ignore = "host tier: needs root; run by tests/run-all.sh"]
async fn lapsed_lease_rolls_back_and_renewed_lease_keeps_the_fault() {
    let state = tempfile::tempdir().unwrap();
    let dying_ns = Netns::new("lease1");
    let kept_ns = Netns::new("lease2");
    let mut d = DaemonProc::spawn(state.path(), &[]);
    let ch = d.ready().await;
    let mut leases = api::leases_client::LeasesClient::new(ch.clone());
    let dying = leases
        .create_lease(api::CreateLeaseRequest {
            period_seconds: 2,
            name: "ci-run".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let kept = leases
        .create_lease(api::CreateLeaseRequest {
            period_seconds: 2,
            name: "kept".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let a = faults(&ch)
        .apply_fault(apply_tbf(&dying_ns, 600, &dying.id))
        .await
        .unwrap()
        .into_inner();
    faults(&ch)
        .apply_fault(apply_tbf(&kept_ns, 600, &kept.id))
        .await
        .unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(3500) {
        leases
            .renew_lease(api::RenewLeaseRequest {
                id: kept.id.clone(),
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        !dying_ns.has_faultd_qdisc(),
        "lapsed lease must roll back its fault"
    );
    assert!(
        kept_ns.has_faultd_qdisc(),
        "renewed lease must keep its fault"
    );
    let r = faults(&ch)
        .get_fault(api::GetFaultRequest { id: a.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.end_reason, "lease");
    let e = leases
        .renew_lease(api::RenewLeaseRequest { id: dying.id })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
}

#[tokio::test]
#[ignore = "host tier: needs root; run by tests/run-all.sh"]
async fn halt_all_over_the_unix_socket_and_the_ctl() {
    let state = tempfile::tempdir().unwrap();
    let a = Netns::new("halt1");
    let b = Netns::new("halt2");
    let mut d = DaemonProc::spawn(state.path(), &[]);
    let ch = d.ready().await;
    faults(&ch)
        .apply_fault(apply_tbf(&a, 600, ""))
        .await
        .unwrap();
    faults(&ch)
        .apply_fault(apply_tbf(&b, 600, ""))
        .await
        .unwrap();
    assert!(a.has_faultd_qdisc() && b.has_faultd_qdisc());
    // The operator's way: faultd ctl on the node, through the admin socket.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faultd"))
        .args(["ctl", "--socket", d.socket.to_str().unwrap(), "halt-all"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rolled back 2"), "{text}");
    assert!(!a.has_faultd_qdisc() && !b.has_faultd_qdisc());
    let list = faults(&ch)
        .list_faults(api::ListFaultsRequest {
            include_ended: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        list.faults
            .iter()
            .filter(|f| f.end_reason == "halt")
            .count(),
        2
    );
}

#[tokio::test]
#[ignore = "host tier: needs root; run by tests/run-all.sh"]
async fn sigterm_rolls_back_and_a_second_daemon_on_the_same_dir_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let ns = Netns::new("term");
    let mut d = DaemonProc::spawn(state.path(), &[]);
    let ch = d.ready().await;
    faults(&ch)
        .apply_fault(apply_tbf(&ns, 600, ""))
        .await
        .unwrap();

    let second = std::process::Command::new(env!("CARGO_BIN_EXE_faultd"))
        .args(daemon_args(state.path()))
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by another faultd"), "{err}");
    assert!(
        ns.has_faultd_qdisc(),
        "the refused second daemon must not touch anything"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(!ns.has_faultd_qdisc(), "SIGTERM must roll back");
}

#[tokio::test]
#[ignore = "host tier: needs root; run by tests/run-all.sh"]
async fn doctor_finds_and_fixes_residue() {
    let state = tempfile::tempdir().unwrap();
    let ns = Netns::new("doctor");
    // Residue as a crashed faultd on another state dir would leave it.
    ns.tc(&[
        "qdisc", "add", "dev", "d0", "root", "handle", "fa01:", "tbf", "rate", "1mbit", "burst",
        "10k", "limit", "20k",
    ]);
    let mut d = DaemonProc::spawn(state.path(), &[]);
    let ch = d.ready().await;
    let mut doc = api::doctor_client::DoctorClient::new(ch.clone());
    let r = doc
        .check(api::DoctorRequest { fix: false })
        .await
        .unwrap()
        .into_inner();
    let mine: Vec<_> = r
        .residue
        .iter()
        .filter(|x| x.location.contains("dev d0") && x.detail.contains("tbf fa01:"))
        .collect();
    assert_eq!(mine.len(), 1, "{r:?}");
    assert!(!mine[0].removed);
    assert!(ns.has_faultd_qdisc());
    // An active fault is not residue.
    let other = Netns::new("doctor2");
    faults(&ch)
        .apply_fault(apply_tbf(&other, 600, ""))
        .await
        .unwrap();
    let r = doc
        .check(api::DoctorRequest { fix: true })
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.residue
            .iter()
            .any(|x| x.removed && x.detail.contains("tbf fa01:")),
        "{r:?}"
    );
    assert!(!ns.has_faultd_qdisc());
    assert!(other.has_faultd_qdisc());
    assert!(r.checks.iter().any(|c| c.name == "journal" && c.ok));
}

#[tokio::test]
#[ignore = "host tier: needs root; run by tests/run-all.sh"]
async fn bad_network_input_gets_clear_statuses() {
    let state = tempfile::tempdir().unwrap();
    let ns = Netns::new("badin");
    let mut d = DaemonProc::spawn(state.path(), &[]);
    let ch = d.ready().await;
    let mut req = apply_tbf(&ns, 60, "");
    if let Some(api::apply_fault_request::Fault::SetTcs(t)) = &mut req.fault {
        t.tcs[0].device = "nosuchdev".into();
    }
    assert_eq!(
        faults(&ch).apply_fault(req).await.unwrap_err().code(),
        Code::NotFound
    );
    for (dev, rate) in [
        ("bad/dev", "1mbit"),
        ("d0", "fast"),
        ("d0", "-1mbit"),
        ("d0", ""),
    ] {
        let mut req = apply_tbf(&ns, 60, "");
        if let Some(api::apply_fault_request::Fault::SetTcs(t)) = &mut req.fault {
            t.tcs[0].device = dev.into();
            t.tcs[0].tbf.as_mut().unwrap().rate = rate.into();
        }
        let e = faults(&ch).apply_fault(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{dev} {rate}: {e}");
    }
    // Netem on a kernel without sch_netem: a precondition, not an internal error.
    if !std::path::Path::new("/sys/module/sch_netem").exists() {
        let req = api::ApplyFaultRequest {
            ttl_seconds: 60,
            lease_id: String::new(),
            target_pid: ns.pid(),
            fault: Some(api::apply_fault_request::Fault::SetTcs(
                faultd::proto::pb::TcsRequest {
                    tcs: vec![faultd::proto::pb::Tc {
                        r#type: 0,
                        netem: Some(faultd::proto::pb::Netem {
                            time: "100ms".into(),
                            ..Default::default()
                        }),
                        device: "d0".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
        };
        let e = faults(&ch).apply_fault(req).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
        assert_eq!(
            e.message(),
            "the kernel has no sch_netem (modprobe sch_netem)",
            "{e}"
        );
    }
    assert!(!ns.has_faultd_qdisc());
    // still serving
    faults(&ch)
        .list_faults(api::ListFaultsRequest::default())
        .await
        .unwrap();
}

fn ctl_output(socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_faultd"))
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn ctl(socket: &std::path::Path, args: &[&str]) -> String {
    let out = ctl_output(socket, args);
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `ctl doctor`'s stdout; it exits 1 exactly when a check fails (on this host sch_netem does).
fn ctl_doctor(socket: &std::path::Path, args: &[&str]) -> String {
    let out = ctl_output(socket, args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let any_failed =
        stdout.lines().any(|l| l.starts_with("FAIL ")) || stdout.contains("\"ok\":false");
    assert_eq!(
        out.status.success(),
        !any_failed,
        "ctl {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
#[ignore = "host tier: needs root; run by tests/run-all.sh"]
async fn ctl_end_to_end_apply_with_ttl_list_expire_doctor_halt() {
    let state = tempfile::tempdir().unwrap();
    let ns = Netns::new("ctl");
    let mut d = DaemonProc::spawn(state.path(), &[]);
    d.ready().await;
    let pid = ns.pid().to_string();
    let applied = ctl(
        &d.socket,
        &[
            "bandwidth",
            "--pid",
            &pid,
            "--device",
            "d0",
            "--rate",
            "1mbit",
            "--ttl",
            "2s",
        ],
    );
    assert!(
        applied.contains("applied") && applied.contains("tbf"),
        "{applied}"
    );
    assert!(ns.has_faultd_qdisc());
    let table = ctl(&d.socket, &["list"]);
    assert!(table.lines().next().unwrap().starts_with("ID"), "{table}");
    assert!(
        table.contains("applied") && table.contains("in "),
        "{table}"
    );
    // Watch it expire.
    let t0 = Instant::now();
    while ns.has_faultd_qdisc() {
        assert!(t0.elapsed() < Duration::from_secs(4), "not expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    let json: serde_json::Value =
        serde_json::from_str(&ctl(&d.socket, &["--output", "json", "list", "--all"])).unwrap();
    let f = &json.as_array().unwrap()[0];
    assert_eq!(
        (f["phase"].as_str(), f["end_reason"].as_str()),
        (Some("reverted"), Some("expiry")),
        "{json}"
    );
    let doctor = ctl_doctor(&d.socket, &["doctor"]);
    assert!(doctor.contains("ok   journal"), "{doctor}");
    assert!(doctor.contains("capabilities"), "{doctor}");
    let doctor_json: serde_json::Value =
        serde_json::from_str(&ctl_doctor(&d.socket, &["--output", "json", "doctor"])).unwrap();
    assert!(
        doctor_json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "journal"),
        "{doctor_json}"
    );
    // Apply two, halt them all.
    ctl(
        &d.socket,
        &[
            "bandwidth",
            "--pid",
            &pid,
            "--device",
            "d0",
            "--rate",
            "2mbit",
            "--ttl",
            "5m",
        ],
    );
    assert!(ns.has_faultd_qdisc());
    let halted = ctl(&d.socket, &["halt-all"]);
    assert!(halted.starts_with("rolled back 1, failed 0"), "{halted}");
    assert!(!ns.has_faultd_qdisc());
    // Bad input: a clear one-line error and a non-zero exit.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faultd"))
        .args([
            "ctl",
            "--socket",
            d.socket.to_str().unwrap(),
            "bandwidth",
            "--pid",
            &pid,
            "--device",
            "bad/dev",
            "--rate",
            "1mbit",
            "--ttl",
            "1m",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("InvalidArgument")
            || String::from_utf8_lossy(&out.stderr).contains("invalid"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
