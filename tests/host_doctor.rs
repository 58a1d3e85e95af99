//! Host tier (root; run by `tests/run-all.sh`, or by hand:
//! `cargo test --test host_doctor -- --ignored --test-threads=1`): the doctor's kernel probes
//! against this host's kernel. The verdicts must equal what `tc`/`nft` say in a scratch network
//! namespace (`unshare --net`), whatever the kernel has; on the CI host that is tbf and
//! nf_tables but no netem and no prio. Needs no containerd.
mod common;

use std::process::Command;

use common::host::*;
use faultd::doctor::probes::{run_probes, Verdict, QDISC_KINDS};
use faultd::proto::faultd::v1 as api;

/// Whether `tc qdisc add dev lo root <args>` succeeds in a fresh network namespace.
fn tc_can(args: &[&str]) -> bool {
    Command::new("unshare")
        .args(["--net", "tc", "qdisc", "add", "dev", "lo", "root"])
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn tc_args(kind: &str) -> &'static [&'static str] {
    match kind {
        "netem" => &["netem", "delay", "1ms"],
        "tbf" => &["tbf", "rate", "1mbit", "burst", "10k", "limit", "20k"],
        "prio" => &["prio", "bands", "4"],
        other => panic!("no tc command line for {other}"),
    }
}

#[test]
#[ignore = "host tier: needs root"]
fn probes_agree_with_tc_and_nft() {
    let probes = run_probes();
    for (kind, _) in QDISC_KINDS {
        let p = probes
            .iter()
            .find(|p| p.feature == format!("sch_{kind}"))
            .unwrap_or_else(|| panic!("no probe for {kind}: {probes:?}"));
        let direct = tc_can(tc_args(kind));
        match &p.verdict {
            Verdict::Works => assert!(direct, "faultd says {kind} works, tc cannot add it"),
            Verdict::Missing(why) => {
                assert!(!direct, "faultd says {kind} is missing ({why}), tc adds it");
                assert!(
                    why.contains(&format!(
                        "the kernel has no sch_{kind} (modprobe sch_{kind})"
                    )),
                    "{why}"
                );
            }
            Verdict::Unknown(why) => panic!("{kind}: could not probe as root: {why}"),
        }
        eprintln!("sch_{kind}: {:?}", p.verdict);
    }
    // The CI host kernel (see tests/README.md) has tbf.
    assert!(
        tc_can(tc_args("tbf")),
        "this host is expected to have sch_tbf"
    );
    let nft = probes.iter().find(|p| p.feature == "nf_tables").unwrap();
    let direct = Command::new("unshare")
        .args(["--net", "nft", "add", "table", "inet", "probe"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert_eq!(nft.verdict == Verdict::Works, direct, "{:?}", nft.verdict);
}

#[tokio::test]
#[ignore = "host tier: needs root"]
async fn ctl_doctor_prints_every_probe_and_fails_when_one_does() {
    let state = tempfile::tempdir().unwrap();
    let mut d = DaemonProc::spawn(state.path(), &[]);
    let ch = d.ready().await;
    let report = api::doctor_client::DoctorClient::new(ch)
        .check(api::DoctorRequest { fix: false })
        .await
        .unwrap()
        .into_inner();
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.as_str())
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_faultd"))
        .arg("ctl")
        .arg("--socket")
        .arg(&d.socket)
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["journal", "sch_netem", "sch_tbf", "sch_prio", "nf_tables"] {
        assert!(
            text.lines().any(|l| l[5..].starts_with(name)),
            "{name} missing:\n{text}"
        );
    }
    assert!(
        text.lines().any(|l| l.starts_with("ok   sch_tbf")),
        "{text}"
    );
    if tc_can(tc_args("netem")) {
        assert!(text.contains("ok   sch_netem"), "{text}");
    } else {
        assert!(
            text.contains("FAIL sch_netem")
                && text.contains("the kernel has no sch_netem (modprobe sch_netem)"),
            "{text}"
        );
    }
    assert_eq!(out.status.success(), failed.is_empty(), "{text}");
    if !failed.is_empty() {
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("failed checks"), "{stderr}");
    }
}
