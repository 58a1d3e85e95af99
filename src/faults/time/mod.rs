//! TimeChaos (`SetTimeOffset`, `RecoverTimeOffset`): the processes of a container see their
//! clocks shifted, through faultd's fake clock functions patched over their vDSO entry points.
//!
//! The building blocks live below: `vdso` (the fake page, the ELF symbols, the 12-byte jump)
//! and `ptrace` (stopping every thread, remote `mmap`, memory writes). This module owns the
//! use case: which processes a fault covers ([`members`]), the per-process patch and undo
//! ([`patch`]), the merge of several TimeChaos on one container, and the [`Effect`].
//!
//! **Merge.** Chaos Mesh keys TimeChaos by `pod_container_name`: several on one container add
//! their offsets and OR their clock masks; recovering one re-applies the rest. faultd keeps one
//! fault per key (journal group `time/<key>`) holding every entry (uid, offset, mask); each
//! change is a new fault replacing the previous one. Every fault writes a random token into
//! its page's data block; an undo only touches a process whose page carries its own token, so
//! a replaced fault's undo leaves the newer fault's state alone.
//!
//! **Pristine bytes** come from faultd's own vDSO (one 64-bit image per boot), never from the
//! target: a target whose entry holds neither those bytes nor faultd's jump is refused, and an
//! entry holding faultd's jump is already ours (only the data block is rewritten). So applying
//! again after a restart is idempotent, and a restart never mistakes a jump for an original
//! (upstream's #3454 follow-on).
//!
//! **Journal.** The intent (written before any process is touched) has the covered
//! processes' identities, the way to find members again (pid namespace, cgroup or tree),
//! every site's offset and pristine bytes, the offset, mask and token. The page address is not
//! journaled: it is the immediate of faultd's own jump in the process, checked to be a faultd
//! page (code and token) before use, so a crash between the remote `mmap` and the patch leaks
//! one anonymous page and nothing else. The state lives in process memory, which no reboot
//! keeps: the fault is `Boot` durable and a reboot ends it as `reboot`.
//!
//! **Rollback** (recover, expiry, lease, HaltAll, RevokeFault, shutdown, restart) writes the
//! pristine bytes back in every covered process that carries this fault's jump, including
//! children forked after the injection, and verifies by reading them back. The page stays
//! mapped (a thread may still be in it). Each process is stopped only while its bytes are
//! written; the stop is measured (`faultd_time_stop_seconds`, and the log).
pub mod members;
pub mod patch;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::target::{Target, TargetError};
use crate::engine::{
    Durability, Effect, EffectCtx, EffectError, EndReason, Engine, EngineError, FailureKind,
    FaultMeta, FaultRecord, Holds, Scope, TargetIdentity,
};
use crate::process::ProcessIdentity;
use crate::ptrace::PtraceError;
use crate::runtime::Runtimes;
use crate::vdso::{PageData, TimeOffset, VdsoError};
use members::Members;
use patch::{OwnVdso, Site};

/// The largest offset, as Go's `time.Duration` (what the controller's `timeOffset` is).
pub const MAX_OFFSET_NANOS: i128 = i64::MAX as i128;

/// The highest clock id a mask may select (`CLOCK_TAI`).
pub const MAX_CLOCK_ID: u32 = 11;

#[derive(Debug, thiserror::Error)]
pub enum TimeError {
    #[error("clk_ids_mask {0:#x} selects no clock")]
    NoClock(u64),
    #[error("clk_ids_mask {0:#x} selects clock ids above {MAX_CLOCK_ID} (CLOCK_TAI); bit n is clock id n")]
    BadMask(u64),
    #[error("the offset {sec} s {nsec} ns is out of range (TimeChaos offsets are durations of at most ±292 years, as Chaos Mesh's timeOffset)")]
    BadOffset { sec: i64, nsec: i64 },
    #[error("TimeChaos needs container_id or pod_container_name")]
    NoKey,
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("faultd cannot read its own vDSO (the pristine bytes): {0}")]
    OwnVdso(String),
    #[error("vDSO: {0}")]
    Vdso(VdsoError),
    #[error("process {pid}: {source}")]
    Ptrace {
        pid: u32,
        #[source]
        source: PtraceError,
    },
    #[error("process {0} is gone")]
    Gone(u32),
    #[error("{0}: {1}")]
    Io(String, String),
    #[error("process {pid}: {detail}; faultd leaves it alone")]
    Foreign { pid: u32, detail: String },
    #[error("process {0} maps another vDSO image than faultd's (a 32-bit or x32 process?); TimeChaos supports 64-bit processes only")]
    Mismatch(u32),
    #[error("process {0} kept a thread inside a vDSO entry faultd must patch; try again")]
    Busy(u32),
    #[error("process {pid}: verification failed: {detail}")]
    Verify { pid: u32, detail: String },
    #[error("{0}")]
    Refused(String),
    #[error("no process of {0} could be patched (all exited)")]
    NoProcess(String),
    #[error("{0}")]
    Blocking(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

crate::impl_failure!(TimeError);

impl TimeError {
    pub fn kind(&self) -> FailureKind {
        use crate::failure::Failure;
        match self {
            TimeError::NoClock(_)
            | TimeError::BadMask(_)
            | TimeError::BadOffset { .. }
            | TimeError::NoKey => FailureKind::InvalidArgument,
            TimeError::Target(e) => e.failure(),
            TimeError::Vdso(e) => e.kind(),
            TimeError::Ptrace { source, .. } => source.kind(),
            TimeError::Gone(_) | TimeError::NoProcess(_) => FailureKind::NotFound,
            TimeError::Foreign { .. }
            | TimeError::Mismatch(_)
            | TimeError::Busy(_)
            | TimeError::Refused(_) => FailureKind::FailedPrecondition,
            TimeError::OwnVdso(_)
            | TimeError::Io(..)
            | TimeError::Verify { .. }
            | TimeError::Blocking(_) => FailureKind::Internal,
            TimeError::Engine(e) => e.kind(),
        }
    }
}

/// One TimeChaos as the controller sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeEntry {
    pub uid: String,
    pub sec: i64,
    pub nsec: i64,
    pub mask: u64,
}

/// What `SetTimeOffset` asks for.
#[derive(Debug, Clone)]
pub struct TimeSpec {
    pub entry: TimeEntry,
    /// `pod_container_name`: the merge key (the container id when empty).
    pub key: String,
}

impl TimeSpec {
    /// Checks the clock mask and the offset.
    pub fn validate(&self) -> Result<TimeOffset, TimeError> {
        let e = &self.entry;
        if e.mask == 0 {
            return Err(TimeError::NoClock(e.mask));
        }
        if e.mask >> (MAX_CLOCK_ID + 1) != 0 {
            return Err(TimeError::BadMask(e.mask));
        }
        let bad = || TimeError::BadOffset {
            sec: e.sec,
            nsec: e.nsec,
        };
        let offset = TimeOffset::new(e.sec, e.nsec).ok_or_else(bad)?;
        // Chaos Mesh's offset is a Go duration (i64 nanoseconds); anything beyond it would let
        // the target's clock wrap around.
        if offset.as_nanos().abs() > MAX_OFFSET_NANOS {
            return Err(bad());
        }
        Ok(offset)
    }
}

/// The merged offset and mask of `entries`: offsets summed, masks OR-ed (Chaos Mesh's
/// `Config.Merge`).
pub fn merge(entries: &[TimeEntry]) -> Option<(TimeOffset, u64)> {
    let nanos = entries.iter().try_fold(0i128, |acc, e| {
        acc.checked_add(i128::from(e.sec) * 1_000_000_000 + i128::from(e.nsec))
    })?;
    // Several maximal offsets summed stay far from wrapping (±292 years each), but not
    // without bound.
    if nanos.abs() > 16 * MAX_OFFSET_NANOS {
        return None;
    }
    let sec = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let nsec = i64::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
    Some((
        TimeOffset::new(sec, nsec)?,
        entries.iter().fold(0, |m, e| m | e.mask),
    ))
}

/// The processes of a container running faultd's fake clock: the fault record's effect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimeFault {
    /// `pod_container_name` (or the container id): the merge key.
    pub key: String,
    pub container: String,
    /// Every TimeChaos merged into this fault.
    pub entries: Vec<TimeEntry>,
    /// The merged offset and mask written into the page.
    pub offset: TimeOffset,
    pub mask: u64,
    /// Written into the page's data block: whose state a page holds.
    pub token: u64,
    /// How the covered processes are found again.
    pub members: Members,
    /// The processes covered at apply time.
    pub processes: Vec<ProcessIdentity>,
    /// Every entry point faultd may have patched, with its pristine bytes.
    pub sites: Vec<Site>,
}

fn blocking_err(e: impl std::fmt::Display) -> EffectError {
    EffectError::internal(format!("TimeChaos task: {e}"))
}

/// Clock names by clock id (`uapi/linux/time.h`), as Chaos Mesh spells them without `CLOCK_`.
const CLOCK_NAMES: [&str; 12] = [
    "REALTIME",
    "MONOTONIC",
    "PROCESS_CPUTIME_ID",
    "THREAD_CPUTIME_ID",
    "MONOTONIC_RAW",
    "REALTIME_COARSE",
    "MONOTONIC_COARSE",
    "BOOTTIME",
    "REALTIME_ALARM",
    "BOOTTIME_ALARM",
    "SGI_CYCLE",
    "TAI",
];

fn clocks(mask: u64) -> String {
    CLOCK_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask >> i & 1 == 1)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join("|")
}

/// The mask of a comma-separated list of clock names (`CLOCK_REALTIME,MONOTONIC`), as Chaos
/// Mesh's `clockIds` (bit n = clock id n).
pub fn clock_mask(names: &str) -> Result<u64, String> {
    names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .try_fold(0u64, |mask, n| {
            let bare = n.strip_prefix("CLOCK_").unwrap_or(n).to_ascii_uppercase();
            CLOCK_NAMES
                .iter()
                .position(|c| *c == bare)
                .map(|i| mask | 1 << i)
                .ok_or_else(|| format!("unknown clock {n:?} (REALTIME, MONOTONIC, BOOTTIME, ...)"))
        })
        .and_then(|m| {
            if m == 0 {
                Err("no clock named".into())
            } else {
                Ok(m)
            }
        })
}

impl TimeFault {
    fn data(&self) -> PageData {
        PageData {
            offset: self.offset,
            mask: self.mask,
            token: self.token,
        }
    }

    /// Every process to look at for rollback: the recorded ones still alive and the members now.
    fn candidates(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .processes
            .iter()
            .filter(|p| p.is_alive())
            .map(|p| p.pid)
            .collect();
        pids.extend(self.members.scan());
        pids.sort_unstable();
        pids.dedup();
        pids.retain(|p| *p != std::process::id());
        pids
    }

    /// The undo, on a blocking thread: every candidate carrying this fault's jump is restored.
    fn restore(&self) -> Result<Vec<patch::Stop>, EffectError> {
        let mut stops = Vec::new();
        let mut first_err = None;
        for pid in self.candidates() {
            match patch::revert_one(pid, &self.sites, self.token) {
                Ok(Some(stop)) => {
                    tracing::info!(
                        pid,
                        threads = stop.threads,
                        stopped_us = stop.stopped.as_micros() as u64,
                        "TimeChaos: vDSO restored"
                    );
                    stops.push(stop);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(pid, error = %e, "TimeChaos: restoring a process failed");
                    first_err.get_or_insert(EffectError::of(e));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(stops),
        }
    }
}

impl Effect for TimeFault {
    fn kind(&self) -> String {
        "time".into()
    }

    /// Processes: gone when every covered process is.
    fn scope(&self) -> Scope {
        Scope::Process
    }

    /// Process memory: nothing of it outlives the kernel.
    fn durability(&self) -> Durability {
        Durability::Boot
    }

    fn summary(&self) -> String {
        let ns = self.offset.as_nanos();
        format!(
            "clock {}{}.{:09} s on {} for {} ({}; {} process(es) at apply)",
            if ns < 0 { "-" } else { "+" },
            ns.abs() / 1_000_000_000,
            ns.abs() % 1_000_000_000,
            clocks(self.mask),
            self.key,
            self.members.describe(),
            self.processes.len()
        )
    }

    fn apply<'a>(
        &'a self,
        _: &'a EffectCtx,
    ) -> BoxFuture<'a, Result<Option<ProcessIdentity>, EffectError>> {
        let me = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let own = OwnVdso::get().map_err(EffectError::of)?;
                let needed = own.needed(me.mask).map_err(EffectError::of)?;
                let data = me.data();
                let mut patched = 0;
                for who in &me.processes {
                    match patch::apply_one(who, own, &needed, &data) {
                        Ok(stop) => {
                            patched += 1;
                            tracing::info!(
                                pid = stop.pid,
                                threads = stop.threads,
                                stopped_us = stop.stopped.as_micros() as u64,
                                "TimeChaos: vDSO patched"
                            );
                        }
                        Err(TimeError::Gone(pid)) => {
                            tracing::debug!(pid, "TimeChaos: process exited before it was patched");
                        }
                        Err(e) => return Err(EffectError::of(e)),
                    }
                }
                if patched == 0 {
                    return Err(EffectError::of(TimeError::NoProcess(me.key.clone())));
                }
                Ok(None)
            })
            .await
            .map_err(blocking_err)?
        })
    }

    fn revert<'a>(&'a self, _: &'a EffectCtx) -> BoxFuture<'a, Result<(), EffectError>> {
        let me = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || me.restore().map(|_| ()))
                .await
                .map_err(blocking_err)?
        })
    }

    fn is_reverted<'a>(&'a self, _: &'a EffectCtx) -> BoxFuture<'a, Result<bool, EffectError>> {
        let me = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                for pid in me.candidates() {
                    if patch::carries(pid, &me.sites, me.token).map_err(EffectError::of)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            })
            .await
            .map_err(blocking_err)?
        })
    }

    fn manual_cleanup(&self) -> String {
        let pids: Vec<String> = self.candidates().iter().map(u32::to_string).collect();
        format!(
            "restart the processes of {} that still run faultd's fake clock (pids {}; `faultd ctl doctor` lists them): their vDSO entries jump to a faultd page with token {:#x}",
            self.key,
            if pids.is_empty() { "none found".into() } else { pids.join(" ") },
            self.token
        )
    }

    fn target_gone(&self, _: &EffectCtx) -> bool {
        !self.processes.iter().any(|p| p.is_alive()) && self.members.scan().is_empty()
    }
}

/// Processes running faultd's fake clock with a token none of `active` owns: `(pid, token,
/// restored)`; with `fix`, their pristine bytes are written back (doctor).
pub fn stray_processes(
    active: &std::collections::HashSet<u64>,
    fix: bool,
) -> Vec<(u32, u64, bool)> {
    let Ok(own) = OwnVdso::get() else {
        return Vec::new();
    };
    patch::scan_patched(&own.sites)
        .into_iter()
        .filter(|(_, token)| !active.contains(token))
        .map(|(pid, token)| {
            let restored = fix && matches!(patch::revert_one(pid, &own.sites, token), Ok(Some(_)));
            (pid, token, restored)
        })
        .collect()
}

/// The journal group of one container's TimeChaos.
pub fn group_of(key: &str) -> String {
    format!("time/{key}")
}

fn key_of(target: &Target, key: &str) -> Result<String, TimeError> {
    Ok(match (key.trim(), target) {
        (k, _) if !k.is_empty() => k.to_string(),
        (_, Target::Container { id, .. }) if !id.is_empty() => id.clone(),
        (_, Target::Pid(pid)) => format!("pid:{pid}"),
        _ => return Err(TimeError::NoKey),
    })
}

/// The processes to patch and how to find them again, for a target resolved to `who`.
fn survey(
    target: &Target,
    who: ProcessIdentity,
) -> Result<(Members, Vec<ProcessIdentity>), TimeError> {
    let members = match target {
        Target::Pid(_) => Members::Tree { root: who },
        Target::Container { .. } => Members::of_container(&who),
    };
    if let Members::Tree { root } = &members {
        let host_ns = members::pidns_ino("self");
        if root.pid == std::process::id() || (root.pid == 1 && members::pidns_ino("1") == host_ns) {
            return Err(TimeError::Refused(format!(
                "process {} is {}; TimeChaos would cover every process below it",
                root.pid,
                if root.pid == 1 {
                    "the host's init"
                } else {
                    "faultd itself"
                }
            )));
        }
    }
    Ok((members.clone(), identities(&members)))
}

fn identities(members: &Members) -> Vec<ProcessIdentity> {
    members
        .scan()
        .into_iter()
        .filter_map(|p| ProcessIdentity::of(p).ok())
        .collect()
}

/// `SetTimeOffset`: adds (or replaces, same uid) one TimeChaos of the container and applies the
/// merge of all of them.
pub async fn set_time_offset<E: Holds<TimeFault>>(
    engine: &Engine<E>,
    runtimes: &Runtimes,
    target: &Target,
    spec: &TimeSpec,
    meta: &FaultMeta,
) -> Result<FaultRecord<E>, TimeError> {
    spec.validate()?;
    let key = key_of(target, &spec.key)?;
    let who = target.resolve(runtimes, "container_id").await?;
    let group = group_of(&key);
    let lock = engine.lock_group(&group).await;
    let active = engine.active_in_group(&group);
    let mut entries: Vec<TimeEntry> = active
        .iter()
        .rev()
        .find_map(|r| Holds::<TimeFault>::get(&r.effect))
        .map(|f| f.entries.clone())
        .unwrap_or_default();
    entries.retain(|e| e.uid != spec.entry.uid);
    entries.push(spec.entry.clone());
    let t = target.clone();
    let (members, processes) = blocking(move || survey(&t, who)).await?;
    let identity = TargetIdentity {
        container_id: target.container_id().to_string(),
        pod_uid: meta.pod_uid.clone(),
        pid: who.pid,
        pid_start_time_ms: who.start_time_ms,
        ..Default::default()
    };
    let new = Desired {
        key,
        container: target.container_id().to_string(),
        members,
        processes,
        entries,
    };
    replace(engine, &lock, &active, new, meta, identity).await
}

/// The state one call wants for a key.
struct Desired {
    key: String,
    container: String,
    members: Members,
    processes: Vec<ProcessIdentity>,
    entries: Vec<TimeEntry>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TimeError> + Send + 'static,
) -> Result<T, TimeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TimeError::Blocking(e.to_string()))?
}

/// Builds the fault for `d`, checking every process first (nothing is journaled or touched
/// when one cannot be patched).
async fn build(d: Desired) -> Result<TimeFault, TimeError> {
    blocking(move || {
        let (offset, mask) = merge(&d.entries).ok_or(TimeError::BadOffset {
            sec: d.entries.iter().map(|e| e.sec).sum(),
            nsec: 0,
        })?;
        let own = OwnVdso::get()?;
        own.needed(mask)?;
        let mut processes = Vec::with_capacity(d.processes.len());
        for p in d.processes {
            match patch::check(&p, own) {
                Ok(()) => processes.push(p),
                Err(TimeError::Gone(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if processes.is_empty() {
            return Err(TimeError::NoProcess(d.key));
        }
        Ok(TimeFault {
            key: d.key,
            container: d.container,
            entries: d.entries,
            offset,
            mask,
            token: rand_token(),
            members: d.members,
            processes,
            sites: own.sites.clone(),
        })
    })
    .await
}

fn rand_token() -> u64 {
    // Never 0 (the token of pages written by hand in tests).
    (uuid::Uuid::new_v4().as_u128() as u64) | 1
}

/// Applies `new` and ends the faults it replaces. When the new state cannot be applied, the
/// previous one is applied again (under a new token: the failed apply's undo restored the
/// processes it had reached), so a failed update never silently drops the TimeChaos already in
/// place.
async fn replace<E: Holds<TimeFault>>(
    engine: &Engine<E>,
    lock: &crate::engine::GroupLock,
    active: &[FaultRecord<E>],
    new: Desired,
    meta: &FaultMeta,
    identity: TargetIdentity,
) -> Result<FaultRecord<E>, TimeError> {
    let group = lock.group().to_string();
    let previous = active
        .iter()
        .rev()
        .find_map(|r| Holds::<TimeFault>::get(&r.effect).map(|f| (r, f.clone())));
    let outcome = match build(new).await {
        Ok(fault) => engine
            .apply_locked(lock, meta.fault(E::wrap(fault), identity, &group))
            .await
            .map_err(TimeError::from),
        Err(e) => Err(e),
    };
    let rec = match outcome {
        Ok(rec) => rec,
        Err(e) => {
            if let Some((old_rec, old)) = previous {
                // Only an apply that reached processes can have disturbed the old state.
                if matches!(e, TimeError::Engine(EngineError::Effect(_))) {
                    reapply(engine, lock, old_rec, old).await;
                }
            }
            return Err(e);
        }
    };
    for r in active {
        if let Err(e) = engine.revert_locked(lock, &r.id, EndReason::Replaced).await {
            tracing::warn!(fault = %r.id, error = %e, "ending a replaced TimeChaos fault failed");
        }
    }
    Ok(rec)
}

/// Applies `old`'s state again under a new token and lets the new fault replace `old_rec`.
async fn reapply<E: Holds<TimeFault>>(
    engine: &Engine<E>,
    lock: &crate::engine::GroupLock,
    old_rec: &FaultRecord<E>,
    old: TimeFault,
) {
    let desired = Desired {
        processes: {
            let m = old.members.clone();
            blocking(move || Ok(identities(&m)))
                .await
                .unwrap_or_default()
        },
        key: old.key,
        container: old.container,
        members: old.members,
        entries: old.entries,
    };
    let result = match build(desired).await {
        Ok(f) => {
            let mut new = meta_of(old_rec).fault(E::wrap(f), old_rec.target.clone(), lock.group());
            new.ttl = remaining(engine, old_rec);
            engine
                .apply_locked(lock, new)
                .await
                .map_err(TimeError::from)
        }
        Err(e) => Err(e),
    };
    let reason = match &result {
        Ok(_) => EndReason::Replaced,
        Err(e) => {
            tracing::warn!(error = %e, "re-applying the previous TimeChaos after a failed update failed; ending it");
            EndReason::ApplyFailed
        }
    };
    if let Err(e) = engine.revert_locked(lock, &old_rec.id, reason).await {
        tracing::warn!(fault = %old_rec.id, error = %e, "ending the previous TimeChaos failed");
    }
}

fn meta_of<E>(rec: &FaultRecord<E>) -> FaultMeta {
    FaultMeta {
        owner: rec.owner.clone(),
        ttl: None,
        lease_id: rec.lease_id.clone(),
        container_id: rec.target.container_id.clone(),
        pod_uid: rec.target.pod_uid.clone(),
    }
}

fn remaining<E: Effect>(engine: &Engine<E>, rec: &FaultRecord<E>) -> Option<std::time::Duration> {
    rec.deadline.as_ref().map(|d| {
        std::time::Duration::from_millis(
            d.remaining_ms(crate::engine::record::now_boottime_ms(), engine.boot_id()),
        )
    })
}

/// `RecoverTimeOffset`: removes the TimeChaos `uid` of the container; the others stay applied
/// (merged again). Recovering what is not there is OK.
pub async fn recover_time_offset<E: Holds<TimeFault>>(
    engine: &Engine<E>,
    target: &Target,
    key: &str,
    uid: &str,
) -> Result<Option<FaultRecord<E>>, TimeError> {
    let key = key_of(target, key)?;
    let group = group_of(&key);
    let lock = engine.lock_group(&group).await;
    let active = engine.active_in_group(&group);
    let Some((rec, f)) = active
        .iter()
        .rev()
        .find_map(|r| Holds::<TimeFault>::get(&r.effect).map(|f| (r, f.clone())))
    else {
        return Ok(None);
    };
    if !f.entries.iter().any(|e| e.uid == uid) {
        return Ok(None);
    }
    let rest: Vec<TimeEntry> = f.entries.iter().filter(|e| e.uid != uid).cloned().collect();
    if rest.is_empty() {
        for r in &active {
            engine
                .revert_locked(&lock, &r.id, EndReason::Request)
                .await?;
        }
        return Ok(None);
    }
    let m = f.members.clone();
    let processes = blocking(move || Ok(identities(&m))).await?;
    let desired = Desired {
        key,
        container: f.container.clone(),
        members: f.members.clone(),
        processes,
        entries: rest,
    };
    let mut meta = meta_of(rec);
    meta.ttl = remaining(engine, rec);
    replace(engine, &lock, &active, desired, &meta, rec.target.clone())
        .await
        .map(Some)
}

#[cfg(test)]
mod tests;
