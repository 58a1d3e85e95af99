//! Host tier (root; run by `tests/run-all.sh`, or `cargo test --test host_journal -- --ignored
//! --test-threads=1`): a corrupt journal record costs only its own fault. The daemon is
//! SIGKILLed with tbf faults on veths in two throwaway network namespaces, bytes of the journal
//! are flipped as failing media would, and the restarted daemon must roll back what the intact
//! records describe, find the rest by faultd's marks in the kernel, and say so.
//!
//! Note: the post-corruption scan covers every namespace on the node, as it must on a real
//! node; on a shared test host it also removes faultd residue of other test runs.
mod common;

use std::path::Path;

use common::host::*;
use common::http_get;
use faultd::proto::faultd::v1 as api;
use tonic::Code;

/// Byte ranges `(start, end)` of the journal lines (without their newline).
fn line_ranges(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            out.push((start, i));
            start = i + 1;
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Flips one bit in the middle of the JSON payload of every record of fault `id` (or only of
/// its last one), and appends an incomplete final line (a torn append, which must stay silent).
/// Returns how many records were corrupted.
fn corrupt_records_of(state: &Path, id: &str, only_last: bool) -> usize {
    let path = state.join("journal.log");
    let mut bytes = std::fs::read(&path).unwrap();
    let mut n = 0;
    let mut mine: Vec<(usize, usize)> = line_ranges(&bytes)
        .into_iter()
        .filter(|&(s, e)| contains(&bytes[s..e], format!("\"id\":\"{id}\"").as_bytes()))
        .collect();
    if only_last {
        mine.drain(..mine.len() - 1);
    }
    for (s, e) in mine {
        // `FJ1 <len> <crc> <json>`: the payload starts after the third space.
        let payload = s
            + bytes[s..e]
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b' ')
                .nth(2)
                .unwrap()
                .0
            + 1;
        let at = payload + (e - payload) / 2;
        bytes[at] ^= 0x01; // printable ASCII stays non-newline
        n += 1;
    }
    bytes.extend_from_slice(b"FJ1 120 0badc0de {\"id\":\"torn");
    std::fs::write(&path, &bytes).unwrap();
    n
}

async fn http(port: u16, path: &str) -> String {
    let (code, body) = http_get(format!("127.0.0.1:{port}").parse().unwrap(), path).await;
    assert_eq!(code, 200, "{path}: {body}");
    body
}

async fn journal_check(ch: &tonic::transport::Channel) -> api::Check {
    let r = api::doctor_client::DoctorClient::new(ch.clone())
        .check(api::DoctorRequest { fix: false })
        .await
        .unwrap()
        .into_inner();
    r.checks
        .into_iter()
        .find(|c| c.name == "journal integrity")
        .unwrap_or_else(|| panic!("no journal integrity check"))
}

#[tokio::test]
#[ignore = "host tier: needs root; run by tests/run-all.sh"]
async fn a_corrupt_record_costs_only_its_fault_and_the_kernel_scan_removes_that_faults_qdisc() {
    let state = tempfile::tempdir().unwrap();
    let first = Netns::new("jcorr1");
    let second = Netns::new("jcorr2");
    let (mut d, _, _) = DaemonProc::spawn_tcp(state.path(), &[]);
    let ch = d.ready().await;
    let fa = faults(&ch)
        .apply_fault(apply_tbf(&first, 600, ""))
        .await
        .unwrap()
        .into_inner();
    let fb = faults(&ch)
        .apply_fault(apply_tbf(&second, 600, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(first.has_faultd_qdisc() && second.has_faultd_qdisc());
    d.kill9();

    // Media corruption inside every record of the first fault (its intent and applied
    // snapshots), none in the second's; a torn final line too.
    let corrupted = corrupt_records_of(state.path(), &fa.id, false);
    assert!(corrupted >= 2, "intent and applied: {corrupted}");

    let (mut d, _, http_port) = DaemonProc::spawn_tcp(state.path(), &[]);
    let ch = d.ready().await;
    // The second fault's records survived the hole before them: rolled back at start-up.
    let b = faults(&ch)
        .get_fault(api::GetFaultRequest { id: fb.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (b.phase, b.end_reason.as_str()),
        (api::Phase::Reverted as i32, "restart"),
        "{b:?}"
    );
    assert!(!second.has_faultd_qdisc(), "{}", second.qdisc_dump());
    // The first fault's records are gone, but its qdisc carried faultd's handle: the
    // post-corruption scan found it and removed it before the daemon served.
    let a = faults(&ch)
        .get_fault(api::GetFaultRequest { id: fa.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(a.code(), Code::NotFound, "{a:?}");
    assert!(
        !first.has_faultd_qdisc(),
        "residue of the lost record left in place:\n{}",
        first.qdisc_dump()
    );

    // Reported where operators look.
    let ready = http(http_port, "/readyz").await;
    assert!(ready.contains("1 rolled back"), "{ready}");
    assert!(
        ready.contains(&format!(
            "journal: CORRUPT: {corrupted} unreadable record(s) in 1 region(s)"
        )),
        "{ready}"
    );
    let removed: usize = ready
        .lines()
        .find_map(|l| l.strip_prefix("residue scan after journal corruption: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no residue scan line: {ready}"));
    assert!(removed >= 1, "{ready}");
    let metrics = http(http_port, "/metrics").await;
    assert!(
        metrics.contains(&format!(
            "faultd_journal_corrupt_records_total {corrupted}\n"
        )),
        "{metrics}"
    );
    let check = journal_check(&ch).await;
    assert!(!check.ok, "{check:?}");
    assert!(check.detail.contains("CORRUPT"), "{check:?}");
    // One forensic copy per region (the first fault's records were adjacent).
    let copies = std::fs::read_dir(state.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .count();
    assert_eq!(copies, 1);
    drop(d);

    // Reported once: the journal was rewritten with the valid records.
    let (mut d, _, http_port) = DaemonProc::spawn_tcp(state.path(), &[]);
    let ch = d.ready().await;
    let ready = http(http_port, "/readyz").await;
    assert!(ready.contains("journal: clean"), "{ready}");
    assert!(journal_check(&ch).await.ok);
}

#[tokio::test]
#[ignore = "host tier: needs root; run by tests/run-all.sh"]
async fn a_torn_final_line_is_silent() {
    let state = tempfile::tempdir().unwrap();
    let ns = Netns::new("jtorn");
    let (mut d, _, _) = DaemonProc::spawn_tcp(state.path(), &[]);
    let ch = d.ready().await;
    faults(&ch)
        .apply_fault(apply_tbf(&ns, 600, ""))
        .await
        .unwrap();
    d.kill9();
    let path = state.path().join("journal.log");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"FJ1 300 0badc0de {\"id\":\"cut short");
    std::fs::write(&path, &bytes).unwrap();

    let (mut d, _, http_port) = DaemonProc::spawn_tcp(state.path(), &[]);
    let ch = d.ready().await;
    assert!(!ns.has_faultd_qdisc(), "{}", ns.qdisc_dump());
    let ready = http(http_port, "/readyz").await;
    assert!(ready.contains("1 rolled back"), "{ready}");
    assert!(ready.contains("journal: clean ("), "{ready}");
    assert!(!ready.contains("residue scan"), "{ready}");
    let metrics = http(http_port, "/metrics").await;
    assert!(
        metrics.contains("faultd_journal_corrupt_records_total 0\n"),
        "{metrics}"
    );
    assert!(journal_check(&ch).await.ok);
    assert!(std::fs::read_dir(state.path())
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().contains(".corrupt-")));
}

#[tokio::test]
#[ignore = "host tier: needs root; run by tests/run-all.sh"]
async fn doctor_fix_spares_the_faults_of_another_live_daemon() {
    let (state_x, state_y) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ns = Netns::new("jother");
    let mut x = DaemonProc::spawn(state_x.path(), &[]);
    let ch_x = x.ready().await;
    faults(&ch_x)
        .apply_fault(apply_tbf(&ns, 600, ""))
        .await
        .unwrap();
    let mut y = DaemonProc::spawn(state_y.path(), &[]);
    let ch_y = y.ready().await;
    let r = api::doctor_client::DoctorClient::new(ch_y)
        .check(api::DoctorRequest { fix: true })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !r.residue.iter().any(|x| x.location.contains(&ns.name)),
        "{r:?}"
    );
    assert!(
        ns.has_faultd_qdisc(),
        "another daemon's live fault was removed"
    );
    drop(x); // SIGTERM: rolls its fault back
    assert!(!ns.has_faultd_qdisc());
}

#[tokio::test]
#[ignore = "host tier: needs root; run by tests/run-all.sh"]
async fn a_corrupt_applied_record_replays_the_intent_which_is_rolled_back() {
    let state = tempfile::tempdir().unwrap();
    let ns = Netns::new("jlast");
    let (mut d, _, _) = DaemonProc::spawn_tcp(state.path(), &[]);
    let ch = d.ready().await;
    let f = faults(&ch)
        .apply_fault(apply_tbf(&ns, 600, ""))
        .await
        .unwrap()
        .into_inner();
    d.kill9();
    assert_eq!(corrupt_records_of(state.path(), &f.id, true), 1);

    let (mut d, _, http_port) = DaemonProc::spawn_tcp(state.path(), &[]);
    let ch = d.ready().await;
    // An earlier snapshot of the same fault (its intent) is replayed: undone as usual.
    let got = faults(&ch)
        .get_fault(api::GetFaultRequest { id: f.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.phase, got.end_reason.as_str()),
        (api::Phase::Reverted as i32, "restart"),
        "{got:?}"
    );
    assert!(!ns.has_faultd_qdisc(), "{}", ns.qdisc_dump());
    let ready = http(http_port, "/readyz").await;
    assert!(ready.contains("1 rolled back"), "{ready}");
    assert!(
        ready.contains("journal: CORRUPT: 1 unreadable record(s) in 1 region(s)"),
        "{ready}"
    );
    let metrics = http(http_port, "/metrics").await;
    assert!(
        metrics.contains("faultd_journal_corrupt_records_total 1\n"),
        "{metrics}"
    );
}
