//! Host tier (root; run by `tests/run-all.sh`, or `cargo test --test host_durability --
//! --ignored --test-threads=1`): the journal's durability rules against a real daemon. A state
//! dir on a full filesystem poisons the journal: new faults are refused UNAVAILABLE, `/readyz`
//! turns not ready and says why, and a fault that was being replaced is rolled back and listed
//! as ended (not "reverting" forever).
mod common;

use std::process::Command;

use common::host::*;
use faultd::proto::faultd::v1 as api;
use tonic::Code;

/// A 256 KiB tmpfs at `dir`, unmounted on drop.
struct SmallFs(std::path::PathBuf);
impl SmallFs {
    fn new(dir: &std::path::Path) -> SmallFs {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "faultd-full"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs(dir.to_path_buf())
    }
    /// Fills the filesystem (a file as large as it allows).
    fn fill(&self) {
        let f = self.0.join("filler");
        let _ = std::fs::write(&f, vec![0u8; 1 << 20]);
        // Whatever was written before ENOSPC stays; top up byte-wise.
        use std::io::Write;
        let mut h = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
        while h.write_all(&[0u8; 512]).and_then(|_| h.sync_data()).is_ok() {}
    }
}
impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

#[tokio::test]
#[ignore = "host tier: needs root; run by tests/run-all.sh"]
async fn a_full_state_dir_poisons_the_journal_refuses_new_faults_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let fs = SmallFs::new(dir.path());
    let state = dir.path().join("state");
    let ns = Netns::new("full");
    let (mut d, _, http_port) = DaemonProc::spawn_tcp(&state, &[]);
    let ch = d.ready().await;
    let mut c = faults(&ch);
    let addr = format!("127.0.0.1:{http_port}").parse().unwrap();
    assert_eq!(common::http_get(addr, "/readyz").await.0, 200);
    let first = c
        .apply_fault(apply_tbf(&ns, 600, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(ns.has_faultd_qdisc());

    fs.fill();
    // The update replaces the first fault: its rollback runs (the kernel state is undone), the
    // new intent cannot be journaled, so the call is refused and nothing new is applied.
    let err = c.apply_fault(apply_tbf(&ns, 600, "")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(!ns.has_faultd_qdisc(), "{}", ns.qdisc_dump());
    let (code, body) = common::http_get(addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("journal refuses writes"), "{body}");
    let metrics = common::http_get(addr, "/metrics").await.1;
    assert!(metrics.contains("faultd_journal_poisoned 1"), "{metrics}");
    let f = c
        .get_fault(api::GetFaultRequest {
            id: first.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (f.phase, f.end_reason.as_str()),
        (api::Phase::Reverted as i32, "replaced"),
        "the replaced fault is listed as ended"
    );
    // Still refused afterwards (poisoned, not just full), until a restart.
    let err = c.apply_fault(apply_tbf(&ns, 600, "")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    drop(d);
}
