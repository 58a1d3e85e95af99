//! Engine logic tests with a file-backed effect (the kernel-backed kinds are tested in the host
//! and VM tiers). The effect creates a marker file on apply and removes it on revert, so "is it
//! still there" is observable like kernel state.
use super::*;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileEffect {
    path: PathBuf,
    scope: Scope,
    #[serde(default)]
    fail_apply: bool,
    #[serde(default)]
    fail_revert: bool,
    #[serde(default)]
    gone: bool,
    /// What capture does: "" nothing, "complete" returns the effect with `captured` set,
    /// "fail" refuses (apply must then never run).
    #[serde(default)]
    capture: String,
    #[serde(default)]
    captured: bool,
    /// Race tests: a gate (see [`gate`]) the revert waits on, and a label for the op log.
    #[serde(default)]
    gate: String,
    /// Set by capture: whether another fault's marker (`watch`) existed when this one
    /// captured its prior state.
    #[serde(default)]
    watch: Option<PathBuf>,
    #[serde(default)]
    saw_watch: bool,
    /// Declares [`Durability::Boot`] (kernel state) instead of the default.
    #[serde(default)]
    boot: bool,
    /// Implements [`Effect::capture_and_apply`] (one step, like the qdisc kind) instead of
    /// the default, and logs `<path> fused` / `<path> apply` in the op log.
    #[serde(default)]
    fused: bool,
}

/// Gates and an operation log shared by an effect's futures and the race tests (names are
/// unique per test, so parallel tests do not mix).
static GATES: std::sync::LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>> =
    std::sync::LazyLock::new(Default::default);
static OPS: std::sync::LazyLock<Mutex<Vec<String>>> = std::sync::LazyLock::new(Default::default);

fn gate(name: &str) -> Arc<tokio::sync::Semaphore> {
    lock(&GATES)
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(0)))
        .clone()
}

fn op(s: String) {
    lock(&OPS).push(s);
}

/// The logged operations whose label starts with `prefix`, in order.
fn ops(prefix: &str) -> Vec<String> {
    lock(&OPS)
        .iter()
        .filter(|o| o.starts_with(prefix))
        .cloned()
        .collect()
}

impl Effect for FileEffect {
    fn kind(&self) -> String {
        "file".into()
    }
    fn scope(&self) -> Scope {
        self.scope
    }
    fn durability(&self) -> Durability {
        if self.boot {
            Durability::Boot
        } else {
            Durability::Persistent
        }
    }

    fn summary(&self) -> String {
        format!("marker {}", self.path.display())
    }
    fn capture<'a>(&'a self, _: &'a EffectCtx) -> BoxFuture<'a, Result<Option<Self>, EffectError>> {
        Box::pin(async move {
            // Yield once so the engine's fdatasync really runs while the capture is pending.
            tokio::task::yield_now().await;
            if !self.gate.is_empty() {
                op(format!("{} capture", self.gate));
            }
            if let Some(w) = &self.watch {
                return Ok(Some(FileEffect {
                    saw_watch: w.exists(),
                    watch: None,
                    ..self.clone()
                }));
            }
            match self.capture.as_str() {
                "complete" => Ok(Some(FileEffect {
                    captured: true,
                    ..self.clone()
                })),
                "fail" => Err(EffectError::new(
                    FailureKind::FailedPrecondition,
                    "capture refused",
                )),
                _ => Ok(None),
            }
        })
    }
    fn capture_and_apply<'a>(
        &'a self,
        ctx: &'a EffectCtx,
    ) -> BoxFuture<'a, Result<Staged<Self>, EffectError>> {
        Box::pin(async move {
            if !self.fused {
                return Ok(Staged::Captured(self.capture(ctx).await?));
            }
            op(format!("{} fused", self.path.display()));
            match self.capture(ctx).await? {
                None => self.apply(ctx).await.map(Staged::Applied),
                more => Ok(Staged::Captured(more)),
            }
        })
    }
    fn apply<'a>(
        &'a self,
        _: &'a EffectCtx,
    ) -> BoxFuture<'a, Result<Option<crate::process::ProcessIdentity>, EffectError>> {
        Box::pin(async move {
            if self.fused {
                op(format!("{} apply", self.path.display()));
            }
            if !self.gate.is_empty() {
                op(format!("{} apply", self.gate));
            }
            std::fs::write(&self.path, b"x").map_err(|e| EffectError::internal(e.to_string()))?;
            if self.fail_apply {
                return Err(EffectError::new(
                    FailureKind::FailedPrecondition,
                    "told to fail",
                ));
            }
            Ok(None)
        })
    }
    fn revert<'a>(&'a self, _: &'a EffectCtx) -> BoxFuture<'a, Result<(), EffectError>> {
        Box::pin(async move {
            if !self.gate.is_empty() {
                op(format!("{} revert start", self.gate));
                // Waits for the test to open the gate (one permit per revert).
                gate(&self.gate).acquire().await.unwrap().forget();
                op(format!("{} revert end", self.gate));
            }
            if self.fail_revert {
                return Err(EffectError::internal("cannot remove"));
            }
            match std::fs::remove_file(&self.path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(EffectError::internal(e.to_string())),
            }
        })
    }
    fn is_reverted<'a>(&'a self, _: &'a EffectCtx) -> BoxFuture<'a, Result<bool, EffectError>> {
        Box::pin(async move { Ok(!self.path.exists()) })
    }
    fn manual_cleanup(&self) -> String {
        format!("rm {}", self.path.display())
    }
    fn target_gone(&self, _: &EffectCtx) -> bool {
        op(format!("{} target_gone", self.path.display()));
        self.gone
    }
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn marker(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }
    fn engine(&self, boot: &str, max: Duration) -> Arc<Engine<FileEffect>> {
        Engine::open_with_boot_id(&self.state(), max, Arc::new(Metrics::new()), boot.into())
            .unwrap()
    }
    fn effect(&self, n: &str) -> FileEffect {
        FileEffect {
            path: self.marker(n),
            scope: Scope::Host,
            fail_apply: false,
            fail_revert: false,
            gone: false,
            capture: String::new(),
            captured: false,
            gate: String::new(),
            watch: None,
            saw_watch: false,
            boot: false,
            fused: false,
        }
    }

    /// An effect whose revert waits at gate `name` and whose ops are logged under `name`.
    fn gated(&self, n: &str, name: &str) -> FileEffect {
        FileEffect {
            gate: name.into(),
            ..self.effect(n)
        }
    }
}

fn in_group(mut nf: NewFault<FileEffect>, group: &str) -> NewFault<FileEffect> {
    nf.group = group.into();
    nf
}

/// Waits until operation `what` was logged (a rollback reached its gate, say).
async fn until_op(what: &str) {
    let t0 = Instant::now();
    while !lock(&OPS).iter().any(|o| o == what) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{what:?} never happened"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn new_fault(e: FileEffect, ttl: Option<Duration>, lease: Option<String>) -> NewFault<FileEffect> {
    NewFault {
        effect: e,
        target: TargetIdentity::default(),
        owner: "tester".into(),
        ttl,
        lease_id: lease,
        group: String::new(),
    }
}

fn journal_phases(state: &Path, id: &str) -> Vec<Phase> {
    let text = std::fs::read_to_string(state.join(crate::journal::JOURNAL_FILE)).unwrap();
    text.lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .filter_map(|j| serde_json::from_str::<FaultRecord<FileEffect>>(j).ok())
        .filter(|r| r.id == id)
        .map(|r| r.phase)
        .collect()
}

#[tokio::test]
async fn intent_is_journaled_before_apply_and_applied_after() {
    let f = Fixture::new();
    let e = f.engine("b1", Duration::from_secs(3600));
    let rec = e.apply(new_fault(f.effect("m"), None, None)).await.unwrap();
    assert!(f.marker("m").exists());
    assert_eq!(
        journal_phases(&f.state(), &rec.id),
        vec![Phase::Intent, Phase::Applied]
    );
    // The daemon-wide cap gives every fault a deadline.
    let d = rec.deadline.clone().unwrap();
    assert!((d.unix_ms - rec.created_unix_ms - 3_600_000).abs() < 1000);

    let done = e.revert(&rec.id, EndReason::Request).await.unwrap();
    assert_eq!(done.phase, Phase::Reverted);
    assert!(!f.marker("m").exists());
    assert_eq!(
        journal_phases(&f.state(), &rec.id),
        vec![
            Phase::Intent,
            Phase::Applied,
            Phase::Reverting,
            Phase::Reverted
        ]
    );
    // Undo is idempotent.
    assert_eq!(
        e.revert(&rec.id, EndReason::Request).await.unwrap().phase,
        Phase::Reverted
    );
}

#[tokio::test]
async fn earliest_deadline_wins_and_expiry_is_enforced_within_a_second() {
    let f = Fixture::new();
    let e = f.engine("b1", Duration::from_millis(700));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(e.clone().run_deadlines(stop));
    let t0 = Instant::now();
    // ttl 10 s, cap 0.7 s: the cap wins.
    let rec = e
        .apply(new_fault(
            f.effect("m"),
            Some(Duration::from_secs(10)),
            None,
        ))
        .await
        .unwrap();
    while f.marker("m").exists() {
        assert!(t0.elapsed() < Duration::from_secs(3), "not expired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(650) && took < Duration::from_millis(1700),
        "{took:?}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = e.get(&rec.id).unwrap();
    assert_eq!(
        (r.phase, r.end_reason),
        (Phase::Reverted, Some(EndReason::Expiry))
    );
    let _ = stop_tx.send(true);
}

#[tokio::test]
async fn restart_rolls_back_what_the_previous_process_left() {
    let f = Fixture::new();
    let id = {
        let e = f.engine("b1", Duration::ZERO);
        let rec = e.apply(new_fault(f.effect("m"), None, None)).await.unwrap();
        assert!(rec.deadline.is_none(), "cap 0 disables the cap");
        rec.id
        // dropped without rollback: what a kill -9 leaves behind
    };
    assert!(f.marker("m").exists());
    let e = f.engine("b1", Duration::ZERO);
    let report = e.reconcile().await;
    assert_eq!((report.rolled_back, report.failed), (1, 0));
    assert!(!f.marker("m").exists());
    let r = e.get(&id).unwrap();
    assert_eq!(
        (r.phase, r.end_reason),
        (Phase::Reverted, Some(EndReason::Restart))
    );
    // A second reconcile has nothing to do.
    assert_eq!(e.reconcile().await.rolled_back, 0);
}

#[tokio::test]
async fn an_intent_without_applied_is_also_rolled_back() {
    let f = Fixture::new();
    {
        let e = f.engine("b1", Duration::ZERO);
        // Simulate a crash between journaling the intent and touching the kernel... and a crash
        // after touching it but before journaling "applied": both leave an Intent record.
        let rec = e.apply(new_fault(f.effect("m"), None, None)).await.unwrap();
        let mut intent = rec.clone();
        intent.phase = Phase::Intent;
        e.persist(&intent).await.unwrap();
    }
    let e = f.engine("b1", Duration::ZERO);
    assert_eq!(e.reconcile().await.rolled_back, 1);
    assert!(!f.marker("m").exists());
}

#[tokio::test]
async fn after_a_reboot_boot_scoped_faults_end_with_no_kernel_call_whatever_their_scope() {
    let f = Fixture::new();
    let ids: Vec<String> = {
        let e = f.engine("boot-a", Duration::from_secs(60));
        let mut ids = Vec::new();
        for (n, scope) in [("bhost", Scope::Host), ("bns", Scope::Netns)] {
            let mut b = f.effect(n);
            b.scope = scope;
            b.boot = true;
            ids.push(e.apply(new_fault(b, None, None)).await.unwrap().id);
        }
        ids
    };
    let e = f.engine("boot-b", Duration::from_secs(60));
    let report = e.reconcile().await;
    assert_eq!((report.rolled_back, report.gone_with_reboot), (0, 2));
    // No undo ran (the markers stand in for state the reboot dropped; a host device's root of
    // the new boot must not be "restored") and nothing was looked up.
    assert!(f.marker("bhost").exists() && f.marker("bns").exists());
    assert!(
        ops(&f.marker("b").display().to_string()).is_empty(),
        "a target was looked up"
    );
    for id in &ids {
        let r = e.get(id).unwrap();
        assert_eq!(
            (r.phase, r.end_reason),
            (Phase::Reverted, Some(EndReason::Reboot))
        );
    }
    // The same boot (a restart): boot-scoped faults are undone as always.
    drop(e);
    let e = f.engine("boot-b", Duration::from_secs(60));
    let mut b = f.effect("same");
    b.boot = true;
    e.apply(new_fault(b, None, None)).await.unwrap();
    drop(e);
    let e = f.engine("boot-b", Duration::from_secs(60));
    assert_eq!(e.reconcile().await.rolled_back, 1);
    assert!(!f.marker("same").exists());
}

#[tokio::test]
async fn reboot_records_netns_faults_as_gone_and_undoes_host_faults() {
    let f = Fixture::new();
    let (host_id, ns_id) = {
        let e = f.engine("boot-a", Duration::from_secs(60));
        let host = e
            .apply(new_fault(f.effect("host"), None, None))
            .await
            .unwrap();
        let mut ns = f.effect("ns");
        ns.scope = Scope::Netns;
        ns.gone = true; // the pod's netns did not survive the reboot
        let ns = e.apply(new_fault(ns, None, None)).await.unwrap();
        (host.id, ns.id)
    };
    let e = f.engine("boot-b", Duration::from_secs(60));
    let report = e.reconcile().await;
    assert_eq!((report.rolled_back, report.gone_with_reboot), (1, 1));
    assert!(!f.marker("host").exists());
    // Gone with the reboot means no undo ran: the marker (standing in for kernel state the
    // reboot already dropped) is untouched.
    assert!(f.marker("ns").exists());
    for id in [&host_id, &ns_id] {
        let r = e.get(id).unwrap();
        assert_eq!(
            (r.phase, r.end_reason),
            (Phase::Reverted, Some(EndReason::Reboot))
        );
    }
}

#[tokio::test]
async fn lapsed_lease_rolls_back_its_faults_and_a_renewed_one_does_not() {
    let f = Fixture::new();
    let e = f.engine("b1", Duration::ZERO);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(e.clone().run_deadlines(stop));
    let dying = e
        .create_lease("dying", Duration::from_millis(400), "t")
        .unwrap();
    let kept = e
        .create_lease("kept", Duration::from_millis(400), "t")
        .unwrap();
    let a = e
        .apply(new_fault(f.effect("a"), None, Some(dying.id.clone())))
        .await
        .unwrap();
    let b = e
        .apply(new_fault(f.effect("b"), None, Some(kept.id.clone())))
        .await
        .unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        e.renew_lease(&kept.id).unwrap();
    }
    assert!(!f.marker("a").exists());
    assert!(f.marker("b").exists());
    assert_eq!(e.get(&a.id).unwrap().end_reason, Some(EndReason::Lease));
    assert_eq!(e.get(&b.id).unwrap().phase, Phase::Applied);
    assert!(matches!(
        e.renew_lease(&dying.id),
        Err(EngineError::LeaseExpired(_))
    ));
    assert!(matches!(
        e.apply(new_fault(f.effect("c"), None, Some(dying.id.clone())))
            .await,
        Err(EngineError::LeaseExpired(_))
    ));
    assert!(matches!(
        e.apply(new_fault(f.effect("c"), None, Some("nope".into())))
            .await,
        Err(EngineError::LeaseNotFound(_))
    ));
    e.revoke_lease(&kept.id).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!f.marker("b").exists());
    let _ = stop_tx.send(true);
}

#[tokio::test]
async fn halt_all_rolls_back_everything() {
    let f = Fixture::new();
    let e = f.engine("b1", Duration::ZERO);
    for n in ["a", "b", "c"] {
        e.apply(new_fault(f.effect(n), None, None)).await.unwrap();
    }
    let report = e.halt_all(EndReason::Halt).await;
    assert_eq!((report.rolled_back, report.failed), (3, 0));
    for n in ["a", "b", "c"] {
        assert!(!f.marker(n).exists());
    }
    assert!(e.list(false).is_empty());
    assert_eq!(e.list(true).len(), 3);
}

#[tokio::test]
async fn failed_apply_is_undone_and_failed_rollback_says_what_to_remove() {
    let f = Fixture::new();
    let e = f.engine("b1", Duration::ZERO);
    let mut bad = f.effect("partial");
    bad.fail_apply = true;
    let err = e.apply(new_fault(bad, None, None)).await.unwrap_err();
    assert_eq!(err.kind(), FailureKind::FailedPrecondition);
    assert!(
        !f.marker("partial").exists(),
        "partial apply must be undone"
    );
    let r = e.list(true).into_iter().next().unwrap();
    assert_eq!(
        (r.phase, r.end_reason),
        (Phase::Reverted, Some(EndReason::ApplyFailed))
    );

    let mut sticky = f.effect("sticky");
    sticky.fail_revert = true;
    let rec = e.apply(new_fault(sticky, None, None)).await.unwrap();
    let err = e.revert(&rec.id, EndReason::Request).await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("rm {}", f.marker("sticky").display())),
        "{err}"
    );
    let r = e.get(&rec.id).unwrap();
    assert_eq!(r.phase, Phase::Failed);
    assert!(e
        .metrics
        .render()
        .contains("faultd_rollback_failures_total 1"));
}

#[tokio::test]
async fn capture_completes_the_intent_before_apply_or_ends_the_fault_untouched() {
    let f = Fixture::new();
    let e = f.engine("b1", Duration::ZERO);
    // A capture that finds more to restore: the completed effect is journaled (durably, as a
    // second intent record) before apply, and it is what the fault carries from then on.
    let mut more = f.effect("more");
    more.capture = "complete".into();
    let rec = e.apply(new_fault(more, None, None)).await.unwrap();
    assert!(rec.effect.captured);
    assert!(f.marker("more").exists());
    assert_eq!(
        journal_phases(&f.state(), &rec.id),
        [Phase::Intent, Phase::Intent, Phase::Applied]
    );
    let text = std::fs::read_to_string(f.state().join(crate::journal::JOURNAL_FILE)).unwrap();
    let captured: Vec<bool> = text
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .filter_map(|j| serde_json::from_str::<FaultRecord<FileEffect>>(j).ok())
        .filter(|r| r.id == rec.id)
        .map(|r| r.effect.captured)
        .collect();
    assert_eq!(captured, [false, true, true]);

    // A capture that refuses: nothing is applied, the fault ends as apply_failed.
    let mut refused = f.effect("refused");
    refused.capture = "fail".into();
    let err = e.apply(new_fault(refused, None, None)).await.unwrap_err();
    assert_eq!(err.kind(), FailureKind::FailedPrecondition);
    assert!(err.to_string().contains("capture refused"), "{err}");
    assert!(!f.marker("refused").exists(), "apply must not run");
    let r = e
        .list(true)
        .into_iter()
        .find(|r| r.effect.path == f.marker("refused"))
        .unwrap();
    assert_eq!(
        (r.phase, r.end_reason),
        (Phase::Reverted, Some(EndReason::ApplyFailed))
    );
    assert_eq!(
        journal_phases(&f.state(), &r.id),
        [Phase::Intent, Phase::Reverting, Phase::Reverted]
    );
}

/// A `Boot` kind that captures and applies in one step: its intent is written first, and the
/// step applies at once when the capture finds nothing more to restore; when it finds more,
/// the completed effect is journaled before the separate apply; a refusing capture ends the
/// fault with nothing applied. Nothing is fdatasynced.
#[tokio::test]
async fn a_boot_kind_captures_and_applies_in_one_step_after_its_intent() {
    let f = Fixture::new();
    let e = f.engine("b1", Duration::ZERO);
    let fused = |n: &str, capture: &str| FileEffect {
        boot: true,
        fused: true,
        capture: capture.into(),
        ..f.effect(n)
    };
    let log = |n: &str| ops(&f.marker(n).display().to_string());

    let rec = e
        .apply(new_fault(fused("one", ""), None, None))
        .await
        .unwrap();
    assert!(f.marker("one").exists());
    assert_eq!(rec.phase, Phase::Applied);
    assert_eq!(
        log("one"),
        [
            format!("{} fused", f.marker("one").display()),
            format!("{} apply", f.marker("one").display())
        ],
        "one step, no second apply"
    );
    assert_eq!(
        journal_phases(&f.state(), &rec.id),
        [Phase::Intent, Phase::Applied]
    );

    let rec = e
        .apply(new_fault(fused("more", "complete"), None, None))
        .await
        .unwrap();
    assert!(rec.effect.captured && f.marker("more").exists());
    assert_eq!(
        journal_phases(&f.state(), &rec.id),
        [Phase::Intent, Phase::Intent, Phase::Applied],
        "the completed effect is journaled before the apply"
    );
    assert_eq!(log("more").len(), 2, "{:?}", log("more"));

    let err = e
        .apply(new_fault(fused("refused", "fail"), None, None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), FailureKind::FailedPrecondition);
    assert!(!f.marker("refused").exists());
    assert_eq!(log("refused").len(), 1, "{:?}", log("refused"));
    assert_eq!(
        e.journal_stats().syncs,
        0,
        "Boot faults are never fdatasynced"
    );

    // Undo goes through revert_and_check (here the default: revert, then is_reverted).
    let listed = e.list(false);
    for r in listed {
        e.revert(&r.id, EndReason::Request).await.unwrap();
    }
    assert!(!f.marker("one").exists() && !f.marker("more").exists());
}

#[tokio::test]
async fn journal_survives_compaction_and_reopen() {
    let f = Fixture::new();
    {
        let e = f.engine("b1", Duration::ZERO);
        for i in 0..300 {
            let r = e
                .apply(new_fault(f.effect(&format!("m{i}")), None, None))
                .await
                .unwrap();
            if i % 3 != 0 {
                e.revert(&r.id, EndReason::Request).await.unwrap();
            }
        }
        e.compact().await;
        assert_eq!(e.list(false).len(), 100);
    }
    let e = f.engine("b1", Duration::ZERO);
    assert_eq!(e.list(false).len(), 100);
    assert_eq!(e.reconcile().await.rolled_back, 100);
    assert!(e.list(true).len() <= 100 + KEEP_ENDED);
}

#[tokio::test]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_reconcile_10k_records() {
    let f = Fixture::new();
    {
        // 10,000 journal records: 5,000 faults applied then reverted by a previous process.
        let e = f.engine("b1", Duration::ZERO);
        let mut j = lock(&e.journal);
        let mut recs = Vec::new();
        for i in 0..5000 {
            let mut r = FaultRecord {
                id: format!("id-{i}"),
                kind: "file".into(),
                target: TargetIdentity::default(),
                effect: f.effect(&format!("x{i}")),
                phase: Phase::Applied,
                owner: "o".into(),
                lease_id: None,
                deadline: None,
                boot_id: "b1".into(),
                daemon_pid: 1,
                daemon_start_ticks: 1,
                created_unix_ms: 1,
                applied_unix_ms: 1,
                ended_unix_ms: 0,
                end_reason: None,
                last_error: String::new(),
                instance: None,
                group: String::new(),
            };
            recs.push(r.clone());
            r.phase = Phase::Reverted;
            recs.push(r);
        }
        j.append_many(&recs).unwrap();
    }
    let t0 = Instant::now();
    let e = f.engine("b1", Duration::ZERO);
    let opened = t0.elapsed();
    let report = e.reconcile().await;
    let total = t0.elapsed();
    println!(
        "BENCH reconcile_10k open_ms={:.1} total_ms={:.1} rolled_back={}",
        opened.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3,
        report.rolled_back
    );
    assert!(total < Duration::from_secs(1), "{total:?}");
}

#[tokio::test]
async fn a_rollback_interrupted_by_a_crash_is_finished_on_restart() {
    let f = Fixture::new();
    let id = {
        let e = f.engine("b1", Duration::ZERO);
        let rec = e.apply(new_fault(f.effect("m"), None, None)).await.unwrap();
        let mut reverting = rec.clone();
        reverting.phase = Phase::Reverting;
        e.persist(&reverting).await.unwrap();
        rec.id
    };
    let e = f.engine("b1", Duration::ZERO);
    assert_eq!(e.reconcile().await.rolled_back, 1);
    assert!(!f.marker("m").exists());
    assert_eq!(e.get(&id).unwrap().end_reason, Some(EndReason::Restart));
}

// ----- races: every apply and rollback of a group is serialized by the engine -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_during_expiry_waits_for_the_old_fault_to_be_undone() {
    let f = Fixture::new();
    let e = f.engine("b1", Duration::ZERO);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(e.clone().run_deadlines(stop));
    let old = e
        .apply(in_group(
            new_fault(
                f.gated("old", "expiry-old"),
                Some(Duration::from_millis(50)),
                None,
            ),
            "dev",
        ))
        .await
        .unwrap();
    // The deadline loop claims it and blocks in its undo.
    until_op("expiry-old revert start").await;
    assert_eq!(e.get(&old.id).unwrap().phase, Phase::Reverting);
    // The update of the same device: its capture must not run while the old tree is there.
    let new = FileEffect {
        watch: Some(f.marker("old")),
        ..f.gated("new", "expiry-new")
    };
    let e2 = e.clone();
    let update =
        tokio::spawn(async move { e2.apply(in_group(new_fault(new, None, None), "dev")).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        ops("expiry-new").is_empty(),
        "the update ran during the rollback"
    );
    assert!(!update.is_finished());
    gate("expiry-old").add_permits(1);
    let rec = update.await.unwrap().unwrap();
    assert!(
        !rec.effect.saw_watch,
        "the update captured the old fault's state as prior state"
    );
    assert_eq!(
        ops("expiry-"),
        [
            "expiry-old capture",
            "expiry-old apply",
            "expiry-old revert start",
            "expiry-old revert end",
            "expiry-new capture",
            "expiry-new apply",
        ]
    );
    assert_eq!(e.get(&old.id).unwrap().end_reason, Some(EndReason::Expiry));
    assert!(f.marker("new").exists() && !f.marker("old").exists());
    let _ = stop_tx.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halt_all_reports_only_finished_rollbacks_and_an_update_waits_for_it() {
    let f = Fixture::new();
    let e = f.engine("b1", Duration::ZERO);
    let _old = e
        .apply(in_group(
            new_fault(f.gated("old", "halt-old"), None, None),
            "dev",
        ))
        .await
        .unwrap();
    let e1 = e.clone();
    let halt = tokio::spawn(async move { e1.halt_all(EndReason::Halt).await });
    until_op("halt-old revert start").await;
    let new = FileEffect {
        watch: Some(f.marker("old")),
        ..f.gated("new", "halt-new")
    };
    let e2 = e.clone();
    let update =
        tokio::spawn(async move { e2.apply(in_group(new_fault(new, None, None), "dev")).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !halt.is_finished(),
        "HaltAll returned while a rollback was in progress"
    );
    assert!(
        ops("halt-new").is_empty(),
        "the update ran during HaltAll's rollback"
    );
    gate("halt-old").add_permits(1);
    let report = halt.await.unwrap();
    assert_eq!((report.rolled_back, report.failed), (1, 0));
    assert_eq!(report.faults[0].phase, Phase::Reverted);
    let rec = update.await.unwrap().unwrap();
    assert!(!rec.effect.saw_watch);
    assert_eq!(
        ops("halt-")[..5],
        [
            "halt-old capture",
            "halt-old apply",
            "halt-old revert start",
            "halt-old revert end",
            "halt-new capture"
        ]
    );
    // A second HaltAll while a deadline-loop rollback is in progress waits for it as well.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(e.clone().run_deadlines(stop));
    let late = e
        .apply(in_group(
            new_fault(
                f.gated("late", "halt-late"),
                Some(Duration::from_millis(30)),
                None,
            ),
            "dev2",
        ))
        .await
        .unwrap();
    until_op("halt-late revert start").await;
    assert_eq!(e.get(&late.id).unwrap().phase, Phase::Reverting);
    let e3 = e.clone();
    let halt2 = tokio::spawn(async move { e3.halt_all(EndReason::Halt).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !halt2.is_finished(),
        "HaltAll counted an expiry in progress as done"
    );
    gate("halt-late").add_permits(1);
    gate("halt-new").add_permits(1);
    let report = halt2.await.unwrap();
    assert_eq!(report.failed, 0);
    assert!(
        report.faults.iter().all(|r| r.phase == Phase::Reverted),
        "{:?}",
        report.faults
    );
    assert!(e.list(false).is_empty());
    let _ = stop_tx.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_revert_undoes_once_and_both_see_the_outcome() {
    let f = Fixture::new();
    let e = f.engine("b1", Duration::ZERO);
    let rec = e
        .apply(in_group(
            new_fault(f.gated("m", "double"), None, None),
            "dev",
        ))
        .await
        .unwrap();
    let (e1, e2) = (e.clone(), e.clone());
    let (id1, id2) = (rec.id.clone(), rec.id.clone());
    let first = tokio::spawn(async move { e1.revert(&id1, EndReason::Request).await });
    until_op("double revert start").await;
    let second = tokio::spawn(async move { e2.revert(&id2, EndReason::Halt).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !second.is_finished(),
        "the second revert returned before the undo finished"
    );
    gate("double").add_permits(1);
    let (a, b) = (
        first.await.unwrap().unwrap(),
        second.await.unwrap().unwrap(),
    );
    assert_eq!((a.phase, b.phase), (Phase::Reverted, Phase::Reverted));
    assert_eq!(
        b.end_reason,
        Some(EndReason::Request),
        "the first rollback's reason stands"
    );
    assert_eq!(
        ops("double")
            .iter()
            .filter(|o| o.ends_with("revert start"))
            .count(),
        1
    );
    assert!(!f.marker("m").exists());
}

#[tokio::test]
async fn a_journal_on_tmpfs_refuses_persistent_faults_but_not_boot_ones() {
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("no /dev/shm here: nothing to check");
        return;
    };
    if !crate::journal::is_volatile_fs(dir.path()).unwrap_or(false) {
        eprintln!("/dev/shm is not tmpfs here: nothing to check");
        return;
    }
    let f = Fixture::new();
    let e = Engine::<FileEffect>::open_with_boot_id(
        &dir.path().join("state"),
        Duration::ZERO,
        Arc::new(Metrics::new()),
        "b".into(),
    )
    .unwrap();
    let err = e
        .apply(new_fault(f.effect("disk"), None, None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), FailureKind::FailedPrecondition);
    assert!(
        err.to_string().contains("does not survive a reboot"),
        "{err}"
    );
    assert!(!f.marker("disk").exists(), "nothing was touched");
    let mut boot = f.effect("kernel");
    boot.boot = true;
    e.apply(new_fault(boot, None, None)).await.unwrap();
    assert!(f.marker("kernel").exists());
}

#[tokio::test]
async fn a_boot_intent_is_not_synced_and_a_persistent_one_is() {
    let f = Fixture::new();
    let e = f.engine("b1", Duration::ZERO);
    let before = e.journal_stats().syncs;
    let mut boot = f.effect("k");
    boot.boot = true;
    e.apply(new_fault(boot, None, None)).await.unwrap();
    assert_eq!(e.journal_stats().syncs, before, "a Boot apply fdatasynced");
    assert!(e.journal_stats().unsynced_bytes > 0);
    e.apply(new_fault(f.effect("p"), None, None)).await.unwrap();
    assert_eq!(
        e.journal_stats().syncs,
        before + 1,
        "a Persistent intent is synced once"
    );
    // The background syncer's tick syncs what is left, and nothing when nothing is.
    e.sync_journal().await.unwrap();
    let n = e.journal_stats().syncs;
    e.sync_journal().await.unwrap();
    assert_eq!(e.journal_stats().syncs, n);
    assert_eq!(e.journal_stats().unsynced_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_background_sync_poisons_the_journal() {
    let f = Fixture::new();
    let e = f.engine("b1", Duration::ZERO);
    let mut boot = f.effect("k");
    boot.boot = true;
    let rec = e.apply(new_fault(boot.clone(), None, None)).await.unwrap();
    e.inject_journal_sync_failure(nix::errno::Errno::EIO);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(e.clone().run_syncer(stop));
    let t0 = Instant::now();
    while e.journal_poisoned().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "not poisoned within the sync period"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(t0.elapsed() < Duration::from_millis(1500));
    // New faults are refused as UNAVAILABLE, nothing touched.
    let mut other = f.effect("new");
    other.boot = true;
    let err = e.apply(new_fault(other, None, None)).await.unwrap_err();
    assert_eq!(err.kind(), FailureKind::Unavailable, "{err}");
    assert!(!f.marker("new").exists());
    // An active fault is still rolled back, and listed as ended, not "reverting" forever.
    let _ = e.revert(&rec.id, EndReason::Request).await;
    assert!(!f.marker("k").exists());
    assert_eq!(e.get(&rec.id).unwrap().phase, Phase::Reverted);
    let _ = stop_tx.send(true);
}

#[tokio::test]
async fn a_host_fault_whose_target_is_gone_ends_as_target_gone() {
    let f = Fixture::new();
    let e = f.engine("b1", Duration::ZERO);
    let mut gone = f.effect("g");
    gone.gone = true; // the target (say, a pod sandbox holding a file) went away meanwhile
    let rec = e.apply(new_fault(gone, None, None)).await.unwrap();
    let r = e.revert(&rec.id, EndReason::Request).await.unwrap();
    assert_eq!(
        (r.phase, r.end_reason),
        (Phase::Reverted, Some(EndReason::TargetGone))
    );
    // A live target keeps the reason that ended it.
    let rec = e.apply(new_fault(f.effect("l"), None, None)).await.unwrap();
    let r = e.revert(&rec.id, EndReason::Request).await.unwrap();
    assert_eq!(r.end_reason, Some(EndReason::Request));
}

/// A node that applies and revokes faults all day keeps a bounded journal and a bounded list:
/// compaction must trigger whatever number of records a kind writes per fault (a one-step
/// `Boot` kind writes four: intent, applied, reverting, reverted).
#[tokio::test]
async fn journal_and_list_stay_bounded_under_churn() {
    let f = Fixture::new();
    let e = f.engine("b1", Duration::ZERO);
    for (n, effect) in [("boot", true), ("persistent", false)] {
        for i in 0..1200 {
            let fx = FileEffect {
                boot: effect,
                fused: effect,
                ..f.effect(&format!("{n}{i}"))
            };
            let r = e.apply(new_fault(fx, None, None)).await.unwrap();
            e.revert(&r.id, EndReason::Request).await.unwrap();
            let records = lock(&e.journal).len();
            assert!(records <= 1010, "{n} #{i}: {records} journal records");
        }
        assert!(
            e.list(true).len() <= 2 * KEEP_ENDED + 100,
            "{n}: {} faults kept in memory",
            e.list(true).len()
        );
    }
}

#[tokio::test]
async fn group_lookups_follow_applies_rollbacks_and_compaction() {
    let f = Fixture::new();
    let e = f.engine("b1", Duration::ZERO);
    let group_of = |i: usize| format!("g{}", i % 3);
    let mut live = Vec::new();
    for i in 0..1500 {
        // every tenth fault stays active, one in 500 fails to roll back (listed, not active);
        // the rest end at once (compaction drops them later)
        let fails = i % 500 == 5;
        let fx = FileEffect {
            boot: true,
            fused: true,
            fail_revert: fails,
            ..f.effect(&format!("f{i}"))
        };
        let r = e
            .apply(in_group(new_fault(fx, None, None), &group_of(i)))
            .await
            .unwrap();
        if i % 10 == 0 {
            live.push((r.id, group_of(i)));
        } else {
            let ended = e.revert(&r.id, EndReason::Request).await;
            assert_eq!(ended.is_err(), fails, "#{i}");
        }
        if i % 250 == 0 || i % 500 == 6 {
            // the groups listed under a prefix agree with a walk over every record
            for prefix in ["", "g", "g1", "h"] {
                let mut walk: Vec<String> = e
                    .list(false)
                    .into_iter()
                    .filter(|r| r.group.starts_with(prefix))
                    .map(|r| r.group)
                    .collect();
                walk.sort();
                walk.dedup();
                assert_eq!(e.groups_with_prefix(prefix), walk, "#{i} prefix {prefix:?}");
            }
            for g in ["g0", "g1", "g2"] {
                // the index agrees with a walk over every record
                let mut walk: Vec<String> = e
                    .list(false)
                    .into_iter()
                    .filter(|r| r.group == g && r.phase.is_active())
                    .map(|r| r.id)
                    .collect();
                walk.sort();
                let mut indexed: Vec<String> =
                    e.active_in_group(g).into_iter().map(|r| r.id).collect();
                indexed.sort();
                assert_eq!(indexed, walk, "#{i} group {g}");
            }
            assert_eq!(
                e.last_in_group(&group_of(i)).map(|r| r.id).as_deref(),
                e.list(true)
                    .into_iter()
                    .filter(|r| r.group == group_of(i))
                    .max_by_key(|r| r.created_unix_ms)
                    .map(|r| r.id)
                    .as_deref(),
                "#{i}"
            );
        }
    }
    assert!(lock(&e.journal).len() <= 1010, "compaction ran");
    for g in ["g0", "g1", "g2"] {
        let mut want: Vec<&str> = live
            .iter()
            .filter(|(_, lg)| lg == g)
            .map(|(id, _)| id.as_str())
            .collect();
        want.sort();
        let active = e.active_in_group(g);
        assert!(
            active
                .windows(2)
                .all(|w| w[0].created_unix_ms <= w[1].created_unix_ms),
            "group {g}: oldest first"
        );
        let mut got: Vec<String> = active.into_iter().map(|r| r.id).collect();
        got.sort();
        assert_eq!(got, want, "group {g}");
    }
    assert!(e.active_in_group("nobody").is_empty());
    assert!(e.last_in_group("nobody").is_none());
}

#[tokio::test]
async fn a_deadline_sooner_than_the_next_scan_wakes_the_loop_and_a_later_one_does_not() {
    use std::sync::atomic::Ordering::SeqCst;
    let f = Fixture::new();
    let e = f.engine("b1", Duration::ZERO);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(e.clone().run_deadlines(stop));
    // the loop found nothing and sleeps a whole tick
    tokio::time::sleep(Duration::from_millis(30)).await;
    let planned = e.next_scan_ms.load(SeqCst);
    assert!(
        planned > now_boottime_ms(),
        "the loop sleeps until {planned}"
    );
    // a fault ending long after the next scan: the loop sleeps on
    let late = e
        .apply(new_fault(
            f.effect("late"),
            Some(Duration::from_secs(60)),
            None,
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        e.next_scan_ms.load(SeqCst),
        planned,
        "woken for a late deadline"
    );
    // one ending 20 ms from now, well before the scan planned up to a tick away: woken for it
    let t0 = Instant::now();
    let soon = e
        .apply(new_fault(
            f.effect("soon"),
            Some(Duration::from_millis(20)),
            None,
        ))
        .await
        .unwrap();
    while f.marker("soon").exists() {
        assert!(t0.elapsed() < Duration::from_secs(2), "not expired");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = t0.elapsed();
    assert!(
        took < TICK - Duration::from_millis(50),
        "expired after {took:?}: the loop waited for its tick"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(e.get(&soon.id).unwrap().end_reason, Some(EndReason::Expiry));
    assert_eq!(e.get(&late.id).unwrap().phase, Phase::Applied);
    stop_tx.send(true).unwrap();
}

/// The table's group index against a walk over every record, under random inserts (new faults,
/// new phases of a fault, a fault moved to another group or re-dated), updates and removals,
/// with many faults created in the same millisecond.
#[test]
fn the_group_index_agrees_with_a_walk_under_random_changes() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let f = Fixture::new();
    let phases = [
        Phase::Intent,
        Phase::Applied,
        Phase::Reverting,
        Phase::Reverted,
        Phase::Failed,
    ];
    let op = (0u8..4, 0usize..12, 0usize..3, 0usize..5, 0i64..4);
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(op, 1..120), |ops| {
            let mut t = table::FaultTable::<FileEffect>::default();
            for (what, id, group, phase, ms) in ops {
                let id = format!("id-{id}");
                match what {
                    0 | 1 => {
                        // insert: a new record, or a new snapshot of one (maybe moved)
                        let rec = FaultRecord {
                            id: id.clone(),
                            kind: "file".into(),
                            target: TargetIdentity::default(),
                            effect: f.effect("x"),
                            phase: phases[phase],
                            owner: "o".into(),
                            lease_id: None,
                            deadline: None,
                            boot_id: "b".into(),
                            daemon_pid: 1,
                            daemon_start_ticks: 1,
                            created_unix_ms: t
                                .get(&id)
                                .filter(|_| what == 0)
                                .map_or(ms, |r| r.created_unix_ms),
                            applied_unix_ms: 0,
                            ended_unix_ms: 0,
                            end_reason: None,
                            last_error: String::new(),
                            instance: None,
                            group: format!("g{group}"),
                        };
                        t.insert(id, rec);
                    }
                    2 => {
                        t.update(&id, |r| r.phase = phases[phase]);
                    }
                    _ => {
                        t.remove(&id);
                    }
                }
                for g in ["g0", "g1", "g2", "g9"] {
                    let walk: Vec<&FaultRecord<FileEffect>> =
                        t.values().filter(|r| r.group == g).collect();
                    let mut active: Vec<&str> = walk
                        .iter()
                        .filter(|r| r.phase.is_active())
                        .map(|r| r.id.as_str())
                        .collect();
                    active.sort();
                    let indexed: Vec<&str> = t.active_in(g).map(|r| r.id.as_str()).collect();
                    prop_assert_eq!(&indexed, &active, "active in {}", g);
                    let newest = walk
                        .iter()
                        .max_by_key(|r| (r.created_unix_ms, r.id.clone()))
                        .map(|r| r.id.as_str());
                    prop_assert_eq!(
                        t.newest_in(g).map(|r| r.id.as_str()),
                        newest,
                        "newest in {}",
                        g
                    );
                }
                for prefix in ["", "g", "g1", "h"] {
                    let mut listed: Vec<String> = t
                        .values()
                        .filter(|r| {
                            (r.phase.is_active() || r.phase == Phase::Failed)
                                && r.group.starts_with(prefix)
                        })
                        .map(|r| r.group.clone())
                        .collect();
                    listed.sort();
                    listed.dedup();
                    prop_assert_eq!(t.listed_groups_with_prefix(prefix), listed);
                }
            }
            Ok(())
        })
        .unwrap();
}
