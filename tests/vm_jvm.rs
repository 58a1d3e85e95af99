//! VM tier (a stock Debian kernel under qemu, cgroup v2; run by `tests/run-all.sh` inside the
//! test VM): one JVMChaos scenario on that kernel, as tests/host_jvm.rs runs it on the host: the
//! Java target (`tests/env/java/Target.java`, the host's JDK 17 through the VM's read-only view
//! of the host) gets a delay rule through `faultd.v1` `ApplyFault` with `target_pid` (HotSpot
//! attach, Byteman's listener); `kill -9` of faultd leaves the rule in place until the next
//! start deletes it before serving; a second rule is revoked by id.
mod common;

use std::time::{Duration, Instant};

use common::host::{free_port, settled};
use common::jvm::*;
use faultd::proto::faultd::v1 as api;

fn require_vm() {
    assert_eq!(
        std::env::var("FAULTD_TEST_VM").as_deref(),
        Ok("1"),
        "VM-only test: run it through tests/run-all.sh or tests/env/vm/run-vm.sh"
    );
}

#[tokio::test]
#[ignore = "VM tier: run by tests/run-all.sh inside the test VM"]
async fn jvm_delay_rule_survives_a_kill_9_only_until_the_restart() {
    require_vm();
    let t0 = Instant::now();
    let jvm = Jvm::start().await;
    eprintln!("JVM up in {:?}", t0.elapsed());
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    {
        let mut d = Daemon::start(state.path()).await;
        d.apply(jvm.pid(), port, DELAY_RULE, 0).await.unwrap();
        jvm.log.expect_delayed("delay rule").await;
        d.proc.kill9();
        jvm.log.expect_delayed("faultd dead").await;
    }
    let t0 = Instant::now();
    let mut d = Daemon::start(state.path()).await;
    eprintln!("restarted daemon ready in {:?}", t0.elapsed());
    jvm.log.expect_normal("after kill -9 and restart").await;
    assert_no_rules("after restart", byteman_list(port));
    let ended = settled(&d.admin, "jvm", Duration::from_secs(10)).await;
    assert!(
        ended
            .iter()
            .any(|f| phase(f) == api::Phase::Reverted && f.end_reason == "restart"),
        "{ended:?}"
    );
    let f = d.apply(jvm.pid(), port, EXC_RULE, 0).await.unwrap();
    jvm.log
        .expect_exception("exception rule", "java.lang.IllegalStateException")
        .await;
    let r = d.revoke(&f.id).await;
    assert_eq!(phase(&r), api::Phase::Reverted, "{r:?}");
    jvm.log.expect_normal("revoked").await;
    d.proc.shutdown().await;
}
