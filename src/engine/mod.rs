//! The rollback engine: every fault goes through here. It owns the order of work (journal the
//! intent with its undo data, touch the kernel, journal that it is applied), deadlines, leases,
//! HaltAll, and start-up reconciliation, so that no fault outlives its deadline, its daemon or
//! its boot. Fault kinds plug in through [`Effect`]; storage is [`crate::journal`].
//!
//! Policy on restart (same boot, previous process gone): every fault the previous process had
//! applied or was applying is rolled back before the new process serves, and the reason is
//! recorded (`restart`). After a reboot (boot id changed): faults whose namespace or process is
//! gone are recorded as gone with the reboot; anything else is checked and undone (`reboot`).
//! On SIGTERM every active fault is rolled back (`shutdown`): a fault never outlives the
//! process that supervises it.
mod deadlines;
mod effect;
mod lease;
mod reconcile;
pub mod record;
mod request;
mod table;

pub use effect::{
    blocking, Durability, Effect, EffectCtx, EffectError, FailureKind, Holds, Scope, Staged,
};
pub use lease::Lease;
pub use reconcile::ReconcileReport;
pub use record::{Deadline, EndReason, FaultRecord, Phase, TargetIdentity};
pub use request::{FaultMeta, GroupLock, NewFault};

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::journal::{Journal, JournalError};
use crate::metrics::{KindLabel, Metrics, RollbackLabels};
use record::{now_boottime_ms, now_unix_ms};

/// How many ended faults stay in the journal (and in listings) after compaction.
const KEEP_ENDED: usize = 200;
/// Pause between undo attempts; the last one failing marks the fault failed.
const UNDO_BACKOFF_MS: [u64; 4] = [0, 100, 400, 1600];
/// The deadline loop never sleeps longer than this, so expiry is enforced within a second.
const TICK: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    #[error("{0}")]
    Effect(EffectError),
    #[error("no fault with id {0:?}")]
    NotFound(String),
    #[error("no lease with id {0:?}")]
    LeaseNotFound(String),
    #[error("lease {0:?} has expired; create a new one")]
    LeaseExpired(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("rollback of fault {id} failed: {message}")]
    RollbackFailed { id: String, message: String },
    #[error("journal worker failed: {0}")]
    Join(String),
    #[error("the journal in {0} is on a filesystem that does not survive a reboot (tmpfs/ramfs); a fault whose state does (a file on disk) cannot be journaled there: give faultd a state dir on disk (--state-dir on a hostPath)")]
    VolatileJournal(String),
    #[error("fault {id} belongs to group {group:?}, not to the locked group {locked:?}")]
    WrongGroup {
        id: String,
        group: String,
        locked: String,
    },
}

crate::impl_failure!(EngineError);

impl EngineError {
    pub fn kind(&self) -> FailureKind {
        match self {
            EngineError::Journal(_) | EngineError::Join(_) => FailureKind::Unavailable,
            EngineError::Effect(e) => e.kind,
            EngineError::NotFound(_) | EngineError::LeaseNotFound(_) => FailureKind::NotFound,
            EngineError::LeaseExpired(_) | EngineError::VolatileJournal(_) => {
                FailureKind::FailedPrecondition
            }
            EngineError::Invalid(_) => FailureKind::InvalidArgument,
            EngineError::RollbackFailed { .. } | EngineError::WrongGroup { .. } => {
                FailureKind::Internal
            }
        }
    }
}

/// Result of HaltAll.
#[derive(Debug)]
pub struct HaltReport<E> {
    pub rolled_back: usize,
    pub failed: usize,
    pub faults: Vec<FaultRecord<E>>,
}

/// The engine. Create with [`Engine::open`], call [`Engine::reconcile`] before serving, then
/// spawn [`Engine::run_deadlines`].
pub struct Engine<E: Effect> {
    journal: Arc<Mutex<Journal<FaultRecord<E>>>>,
    faults: Mutex<table::FaultTable<E>>,
    leases: Mutex<HashMap<String, Lease>>,
    groups: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    metrics: Arc<Metrics>,
    boot_id: String,
    max_duration: Option<Duration>,
    wake: Notify,
    /// When the deadline loop scans next (`CLOCK_BOOTTIME` ms); 0 while it scans.
    next_scan_ms: std::sync::atomic::AtomicU64,
    /// Faults the deadline loop has handed to a rollback task that has not finished yet.
    ending: Mutex<HashSet<String>>,
    /// The state dir when it is on tmpfs/ramfs: `Persistent` faults are refused then.
    volatile: Option<String>,
    me: (u32, u64),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Polls `fut` once, so that it starts its work (say, hands a job to a namespace thread) before
/// the caller goes on with something that blocks; its output if it finished right away.
async fn poll_once<F: std::future::Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    use std::task::Poll;
    std::future::poll_fn(|cx| {
        Poll::Ready(match std::pin::Pin::new(&mut *fut).poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

/// Runs short blocking disk work (a journal write and its `fdatasync`). On the multi-thread
/// runtime the daemon uses, it runs in place with `block_in_place`: the worker hands its other
/// tasks to another thread first, and the caller does not wait for a second thread to be woken
/// (on a small VM a cross-thread wake-up costs as much as the `fdatasync`). Elsewhere
/// (current-thread runtimes in tests) it goes through `spawn_blocking`.
pub(crate) async fn run_blocking<T, F>(f: F) -> Result<T, EngineError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        Ok(tokio::task::block_in_place(f))
    } else {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| EngineError::Join(e.to_string()))
    }
}

impl<E: Effect> Engine<E> {
    /// Opens (and locks) the journal under `state_dir` and loads its records.
    pub fn open(
        state_dir: &Path,
        max_duration: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, EngineError> {
        let boot_id = crate::process::boot_id().unwrap_or_else(|_| "unknown-boot".into());
        Self::open_with_boot_id(state_dir, max_duration, metrics, boot_id)
    }

    /// [`Engine::open`] with an explicit boot id (tests simulate reboots with it).
    pub fn open_with_boot_id(
        state_dir: &Path,
        max_duration: Duration,
        metrics: Arc<Metrics>,
        boot_id: String,
    ) -> Result<Arc<Self>, EngineError> {
        let (journal, records) = Journal::<FaultRecord<E>>::open(state_dir)?;
        let mut faults = table::FaultTable::default();
        for r in records {
            faults.insert(r.id.clone(), r);
        }
        let me = crate::process::ProcessIdentity::of(std::process::id())
            .map(|p| (p.pid, p.start_ticks))
            .unwrap_or((std::process::id(), 0));
        Ok(Arc::new(Engine {
            journal: Arc::new(Mutex::new(journal)),
            faults: Mutex::new(faults),
            leases: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            metrics,
            boot_id,
            max_duration: (!max_duration.is_zero()).then_some(max_duration),
            wake: Notify::new(),
            next_scan_ms: std::sync::atomic::AtomicU64::new(0),
            ending: Mutex::new(HashSet::new()),
            volatile: crate::journal::is_volatile_fs(state_dir)
                .unwrap_or(false)
                .then(|| state_dir.display().to_string()),
            me,
        }))
    }

    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    /// Why the journal refuses writes (a failed write or `fdatasync`), if it does: no new
    /// fault can be journaled, so the daemon is not ready.
    pub fn journal_poisoned(&self) -> Option<String> {
        lock(&self.journal).poisoned().map(str::to_string)
    }

    /// The journal's counters (records, bytes, `fdatasync`s performed, unsynced bytes).
    pub fn journal_stats(&self) -> crate::journal::JournalStats {
        lock(&self.journal).stats()
    }

    /// Test hook: the next `fdatasync` of the journal fails with `errno`.
    #[doc(hidden)]
    pub fn inject_journal_sync_failure(&self, errno: nix::errno::Errno) {
        lock(&self.journal).inject_sync_failure(errno);
    }

    /// `fdatasync`s the journal if it holds unsynced bytes (the background syncer's tick).
    /// A failure poisons the journal (see [`Engine::journal_poisoned`]).
    pub async fn sync_journal(&self) -> Result<(), EngineError> {
        // The disk works without the journal's lock: requests append (in place, on the
        // runtime's worker) meanwhile.
        let ticket = lock(&self.journal).begin_sync();
        let r = match ticket {
            Ok(None) => return Ok(()),
            Ok(Some(ticket)) => {
                let (ticket, done) = run_blocking(move || {
                    let done = ticket.run();
                    (ticket, done)
                })
                .await?;
                lock(&self.journal).finish_sync(ticket, done)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &r {
            self.metrics.journal_poisoned.set(1);
            tracing::error!(error = %e, "journal fdatasync failed: the journal is poisoned; new faults are refused until faultd restarts");
        }
        Ok(r?)
    }

    /// What the journal's replay found at open (corrupt regions skipped, a torn final line).
    pub fn journal_replay(&self) -> crate::journal::Replay {
        lock(&self.journal).last_replay().clone()
    }

    /// Journals `rec` before the kernel is touched (the intent, and a capture-completed
    /// record), as durably as the state it protects outlives the kernel: a `Boot` effect's
    /// record is written to the page cache (no `fdatasync`; see [`Durability`]), a
    /// `Persistent` one is `fdatasync`ed, which also persists every earlier unsynced record.
    pub(crate) async fn persist(&self, rec: &FaultRecord<E>) -> Result<(), EngineError> {
        let durable = rec.effect.durability() == Durability::Persistent;
        self.write(rec, durable).await
    }

    /// Journals `rec` without waiting for the disk. Used for every record after the intent: if
    /// a power loss drops one, replay sees an earlier phase of the same fault (intent, applied
    /// or reverting), and start-up reconciliation undoes the fault again, which is idempotent.
    ///
    /// The in-memory state follows the record even when the write fails (a poisoned journal):
    /// a rollback that undid the kernel state is listed as ended, not as reverting forever.
    async fn note(&self, rec: &FaultRecord<E>) -> Result<(), EngineError> {
        let r = self.write(rec, false).await;
        if r.is_err() {
            lock(&self.faults).insert(rec.id.clone(), rec.clone());
        }
        r
    }

    async fn write(&self, rec: &FaultRecord<E>, durable: bool) -> Result<(), EngineError> {
        let journal = self.journal.clone();
        let copy = rec.clone();
        let started = Instant::now();
        let job = move || {
            let mut j = lock(&journal);
            if durable {
                j.append(&copy)
            } else {
                j.append_unsynced(&copy)
            }
        };
        let written = if durable {
            run_blocking(job).await?
        } else {
            job()
        };
        written
        .inspect_err(|e| {
            if matches!(e, JournalError::Poisoned { .. }) || lock(&self.journal).poisoned().is_some() {
                self.metrics.journal_poisoned.set(1);
                tracing::error!(error = %e, "journal write failed: the journal is poisoned; new faults are refused until faultd restarts");
            }
        })?;
        if durable {
            self.metrics
                .journal_fsync_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        lock(&self.faults).insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    fn gauge(&self, kind: &str, delta: i64) {
        self.metrics
            .active_faults
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc_by(delta);
    }

    /// Takes the lock of one group (for example one device in one netns). Every apply and
    /// every rollback of a fault in the group runs under it.
    pub async fn lock_group(&self, group: &str) -> GroupLock {
        let m = lock(&self.groups)
            .entry(group.to_string())
            .or_default()
            .clone();
        GroupLock {
            group: group.to_string(),
            _guard: m.lock_owned().await,
        }
    }

    fn deadline_for(&self, ttl: Option<Duration>) -> Option<Deadline> {
        let life = match (ttl, self.max_duration) {
            (Some(t), Some(m)) => Some(t.min(m)),
            (Some(t), None) => Some(t),
            (None, m) => m,
        }?;
        let ms = life.as_millis().min(i64::MAX as u128 / 2) as i64;
        Some(Deadline {
            unix_ms: now_unix_ms().saturating_add(ms),
            boottime_ms: now_boottime_ms().saturating_add(ms as u64),
            boot_id: self.boot_id.clone(),
        })
    }

    /// [`Engine::apply_locked`] under the fault's group lock, taken here.
    pub async fn apply(&self, new: NewFault<E>) -> Result<FaultRecord<E>, EngineError> {
        let group = self.lock_group(&new.group).await;
        self.apply_locked(&group, new).await
    }

    /// Journals the intent, applies, journals that it is applied. On failure whatever was
    /// partially applied is undone and the error returned. The caller holds the group lock.
    pub async fn apply_locked(
        &self,
        group: &GroupLock,
        new: NewFault<E>,
    ) -> Result<FaultRecord<E>, EngineError> {
        if new.group != group.group {
            return Err(EngineError::WrongGroup {
                id: "(new fault)".into(),
                group: new.group,
                locked: group.group.clone(),
            });
        }
        if let Some(lease) = &new.lease_id {
            self.check_lease(lease)?;
        }
        if let (Durability::Persistent, Some(dir)) = (new.effect.durability(), &self.volatile) {
            return Err(EngineError::VolatileJournal(dir.clone()));
        }
        let now = now_unix_ms();
        let mut rec = FaultRecord {
            id: uuid::Uuid::new_v4().to_string(),
            kind: new.effect.kind(),
            target: new.target,
            effect: new.effect,
            phase: Phase::Intent,
            owner: new.owner,
            lease_id: new.lease_id,
            deadline: self.deadline_for(new.ttl),
            boot_id: self.boot_id.clone(),
            daemon_pid: self.me.0,
            daemon_start_ticks: self.me.1,
            created_unix_ms: now,
            applied_unix_ms: 0,
            ended_unix_ms: 0,
            end_reason: None,
            last_error: String::new(),
            instance: None,
            group: new.group,
        };
        let ctx = rec.ctx();
        // What the capture found, or that the same step already applied (Boot effects).
        let staged = if rec.effect.durability() == Durability::Boot {
            // The intent goes to the page cache (no fdatasync to overlap): then capture and
            // apply in one step.
            self.persist(&rec).await?;
            rec.effect.capture_and_apply(&ctx).await
        } else {
            // The capture (read-only, on namespace threads) runs while the intent is synced.
            let mut capture = rec.effect.capture(&ctx);
            let early = poll_once(&mut capture).await;
            self.persist(&rec).await?;
            match early {
                Some(r) => r,
                None => capture.await,
            }
            .map(Staged::Captured)
        };
        self.gauge(&rec.kind, 1);
        let applied = match staged {
            Ok(Staged::Applied(instance)) => Ok(instance),
            Ok(Staged::Captured(completed)) => {
                if let Some(completed) = completed {
                    rec.effect = completed;
                    if let Err(e) = self.persist(&rec).await {
                        self.finish(rec, EndReason::ApplyFailed, true).await;
                        return Err(e);
                    }
                }
                rec.effect.apply(&ctx).await
            }
            Err(e) => {
                rec.last_error = e.message.clone();
                tracing::warn!(fault = %rec.id, error = %e, "capturing the prior state failed; undoing whatever was touched");
                self.finish(rec, EndReason::ApplyFailed, true).await;
                return Err(EngineError::Effect(e));
            }
        };
        match applied {
            Ok(instance) => {
                rec.instance = instance;
                if let Some(completed) = rec.effect.applied(&ctx) {
                    rec.effect = completed;
                }
                rec.phase = Phase::Applied;
                rec.applied_unix_ms = now_unix_ms();
                if let Err(e) = self.note(&rec).await {
                    // Applied but not recorded as such: undo rather than leave it unaccounted.
                    self.finish(rec, EndReason::ApplyFailed, true).await;
                    return Err(e);
                }
                self.wake_for(rec.deadline.as_ref());
                tracing::info!(fault = %rec.id, kind = %rec.kind, summary = %rec.effect.summary(), "fault applied");
                Ok(rec)
            }
            Err(e) => {
                rec.last_error = e.message.clone();
                tracing::warn!(fault = %rec.id, error = %e, "apply failed; undoing partial state");
                self.finish(rec, EndReason::ApplyFailed, true).await;
                Err(EngineError::Effect(e))
            }
        }
    }

    /// Claims a fault for rollback: flips it to Reverting unless someone else already did.
    /// The flag says whether this process counts it in the active-faults gauge.
    fn claim(&self, id: &str) -> Option<(FaultRecord<E>, bool)> {
        let mut faults = lock(&self.faults);
        if !faults
            .get(id)
            .is_some_and(|r| matches!(r.phase, Phase::Intent | Phase::Applied | Phase::Failed))
        {
            return None;
        }
        faults.update(id, |rec| {
            let counted = rec.phase != Phase::Failed
                && (rec.daemon_pid, rec.daemon_start_ticks) == self.me
                && rec.boot_id == self.boot_id;
            rec.phase = Phase::Reverting;
            (rec.clone(), counted)
        })
    }

    async fn undo(&self, rec: &FaultRecord<E>) -> Result<(), String> {
        let mut last = String::new();
        let ctx = rec.ctx();
        for backoff in UNDO_BACKOFF_MS {
            if backoff > 0 {
                tokio::time::sleep(Duration::from_millis(backoff)).await;
            }
            match rec.effect.revert_and_check(&ctx).await {
                Ok(true) => return Ok(()),
                Ok(false) => last = "the kernel still shows the fault after the undo".into(),
                Err(e) => last = e.message,
            }
        }
        Err(last)
    }

    /// Rolls back a claimed fault and records the outcome.
    async fn finish(
        &self,
        mut rec: FaultRecord<E>,
        reason: EndReason,
        counted: bool,
    ) -> FaultRecord<E> {
        rec.phase = Phase::Reverting;
        if let Err(e) = self.note(&rec).await {
            tracing::error!(fault = %rec.id, error = %e, "journaling the rollback start failed; rolling back anyway");
        }
        // A host-scoped fault whose target no longer exists (a DNS fault whose pod sandbox is
        // gone) ends as gone, whatever triggered the rollback: there was nothing left to undo.
        // (Namespace- and process-scoped targets are polled by the deadline loop or found gone
        // by reconciliation.)
        let reason = if rec.effect.scope() == Scope::Host
            && !matches!(reason, EndReason::ApplyFailed | EndReason::Reboot)
            && rec.effect.target_gone(&rec.ctx())
        {
            rec.effect.gone_reason(&rec.ctx())
        } else {
            reason
        };
        let outcome = self.undo(&rec).await;
        rec.ended_unix_ms = now_unix_ms();
        match outcome {
            Ok(()) => {
                rec.phase = Phase::Reverted;
                rec.end_reason = Some(reason);
                self.metrics
                    .rollbacks
                    .get_or_create(&RollbackLabels {
                        kind: rec.kind.clone(),
                        reason: reason.as_str().into(),
                    })
                    .inc();
                tracing::info!(fault = %rec.id, kind = %rec.kind, reason = reason.as_str(), "fault rolled back");
            }
            Err(msg) => {
                rec.phase = Phase::Failed;
                rec.end_reason = Some(reason);
                rec.last_error = format!(
                    "rollback failed: {msg}; remove by hand: {}",
                    rec.effect.manual_cleanup()
                );
                self.metrics.rollback_failures.inc();
                tracing::error!(fault = %rec.id, error = %rec.last_error, "ROLLBACK FAILED");
            }
        }
        if counted {
            self.gauge(&rec.kind, -1);
        }
        if let Err(e) = self.note(&rec).await {
            tracing::error!(fault = %rec.id, error = %e, "journaling the rollback outcome failed");
        }
        self.maybe_compact().await;
        rec
    }

    /// Rolls back one fault now, under its group's lock. A fault another task is rolling back
    /// (or applying) is waited for: the answer is always the fault's settled state.
    pub async fn revert(&self, id: &str, reason: EndReason) -> Result<FaultRecord<E>, EngineError> {
        let group = self
            .get(id)
            .ok_or_else(|| EngineError::NotFound(id.into()))?
            .group;
        let lock = self.lock_group(&group).await;
        self.revert_locked(&lock, id, reason).await
    }

    /// [`Engine::revert`] for a caller that holds the fault's group lock.
    pub async fn revert_locked(
        &self,
        group: &GroupLock,
        id: &str,
        reason: EndReason,
    ) -> Result<FaultRecord<E>, EngineError> {
        let rec = self
            .get(id)
            .ok_or_else(|| EngineError::NotFound(id.into()))?;
        if rec.group != group.group {
            return Err(EngineError::WrongGroup {
                id: id.into(),
                group: rec.group,
                locked: group.group.clone(),
            });
        }
        match self.claim(id) {
            Some((rec, counted)) => {
                let rec = self.finish(rec, reason, counted).await;
                if rec.phase == Phase::Failed {
                    return Err(EngineError::RollbackFailed {
                        id: rec.id,
                        message: rec.last_error,
                    });
                }
                Ok(rec)
            }
            // Already ended: idempotent. (Nothing else can be ending it: that needs the lock.)
            None => Ok(rec),
        }
    }

    /// Rolls back every active fault of the locked group; returns how many there were.
    pub async fn revert_group(
        &self,
        group: &GroupLock,
        reason: EndReason,
    ) -> Result<usize, EngineError> {
        let ids: Vec<String> = self
            .active_in_group(&group.group)
            .into_iter()
            .map(|r| r.id)
            .collect();
        let mut first_err = None;
        for id in &ids {
            if let Err(e) = self.revert_locked(group, id, reason).await {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(ids.len()),
        }
    }

    /// The most recently created fault of a group, in any phase.
    pub fn last_in_group(&self, group: &str) -> Option<FaultRecord<E>> {
        lock(&self.faults).newest_in(group).cloned()
    }

    /// Active faults of a group, oldest first.
    pub fn active_in_group(&self, group: &str) -> Vec<FaultRecord<E>> {
        let mut v: Vec<_> = lock(&self.faults).active_in(group).cloned().collect();
        v.sort_by_key(|r| r.created_unix_ms);
        v
    }

    pub fn get(&self, id: &str) -> Option<FaultRecord<E>> {
        lock(&self.faults).get(id).cloned()
    }

    /// Faults, newest first; ended ones only when asked.
    pub fn list(&self, include_ended: bool) -> Vec<FaultRecord<E>> {
        let mut v: Vec<_> = lock(&self.faults)
            .values()
            .filter(|r| include_ended || r.phase.is_active() || r.phase == Phase::Failed)
            .cloned()
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.created_unix_ms));
        v
    }

    /// The groups of the faults [`Engine::list`] would return (active or failed) whose group
    /// starts with `prefix`, sorted and without duplicates; no record is cloned.
    pub fn groups_with_prefix(&self, prefix: &str) -> Vec<String> {
        lock(&self.faults).listed_groups_with_prefix(prefix)
    }

    /// Rolls back every active fault, concurrently.
    pub async fn halt_all(&self, reason: EndReason) -> HaltReport<E> {
        let ids: Vec<String> = lock(&self.faults)
            .values()
            .filter(|r| r.phase.is_active())
            .map(|r| r.id.clone())
            .collect();
        let results =
            futures_util::future::join_all(ids.iter().map(|id| self.revert(id, reason))).await;
        let mut report = HaltReport {
            rolled_back: 0,
            failed: 0,
            faults: Vec::new(),
        };
        for (id, r) in ids.iter().zip(results) {
            match r {
                Ok(rec) => {
                    report.rolled_back += 1;
                    report.faults.push(rec);
                }
                Err(_) => {
                    report.failed += 1;
                    if let Some(rec) = self.get(id) {
                        report.faults.push(rec);
                    }
                }
            }
        }
        report
    }
}

#[cfg(test)]
mod tests;
