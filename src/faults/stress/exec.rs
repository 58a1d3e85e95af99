//! The StressChaos use cases: `ExecStressors` (both stressors or neither) and
//! `CancelStressors` (by the `(pid, start time)` the controller stored).
use super::{plan, StressError, StressFault, StressLoad, StressRequest};
use crate::engine::{EndReason, Engine, FaultMeta, FaultRecord, Holds, Phase, TargetIdentity};
use crate::faults::target::Target;
use crate::process::ProcessIdentity;
use crate::runtime::Runtimes;

/// The workers of an ExecStressors call, as the controller sees them: `(pid, gopsutil start
/// time ms)` per load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Instances {
    pub cpu: Option<ProcessIdentity>,
    pub memory: Option<ProcessIdentity>,
}

impl Instances {
    /// The workers of `recs` (stress faults), by load.
    pub fn of<E: Holds<StressFault>>(recs: &[FaultRecord<E>]) -> Instances {
        let mut out = Instances::default();
        for r in recs {
            let (Some(f), Some(w)) = (Holds::<StressFault>::get(&r.effect), r.instance) else {
                continue;
            };
            match f.load {
                StressLoad::Cpu { .. } => out.cpu = Some(w),
                StressLoad::Memory { .. } => out.memory = Some(w),
            }
        }
        out
    }
}

/// `ExecStressors`: one fault for the CPU stressor and one for the memory stressor, in that
/// order, in one group. Both or neither: if the second fails, the first is rolled back. A
/// stress-ng `--timeout` shortens the faults' life like a TTL.
pub async fn exec_stressors<E: Holds<StressFault>>(
    engine: &Engine<E>,
    runtimes: &Runtimes,
    target: &Target,
    req: StressRequest,
    meta: &FaultMeta,
    allow_unbounded: bool,
) -> Result<Vec<FaultRecord<E>>, StressError> {
    let mut meta = meta.clone();
    meta.ttl = match (meta.ttl, req.timeout()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let who = target
        .resolve(runtimes, "target (the container id)")
        .await?;
    let container = target.container_id().to_string();
    let faults = tokio::task::spawn_blocking(move || plan(&req, who, &container, allow_unbounded))
        .await
        .map_err(|e| StressError::Spawn(format!("stress planning task: {e}")))??;
    let group = format!("stress/{}/{}", who.pid, uuid::Uuid::new_v4());
    let lock = engine.lock_group(&group).await;
    let mut recs: Vec<FaultRecord<E>> = Vec::new();
    for f in faults {
        let identity = TargetIdentity {
            container_id: target.container_id().to_string(),
            pid: who.pid,
            pid_start_time_ms: who.start_time_ms,
            ..Default::default()
        };
        match engine
            .apply_locked(&lock, meta.fault(E::wrap(f), identity, &group))
            .await
        {
            Ok(r) => recs.push(r),
            Err(e) => {
                for r in &recs {
                    if let Err(e) = engine
                        .revert_locked(&lock, &r.id, EndReason::ApplyFailed)
                        .await
                    {
                        tracing::error!(fault = %r.id, error = %e, "rolling back the CPU stressor after the memory stressor failed");
                    }
                }
                return Err(e.into());
            }
        }
    }
    Ok(recs)
}

/// `CancelStressors`: ends the stress fault whose worker is each given `(pid, start time ms)`.
/// A pair that names no active fault is already gone (a daemon restart rolled it back, or the
/// worker ended): OK, and nothing is killed, in particular not a live process that merely
/// reuses the pid.
pub async fn cancel_stressors<E: Holds<StressFault>>(
    engine: &Engine<E>,
    workers: &[(u32, i64)],
) -> Result<(), StressError> {
    for &(pid, start) in workers {
        let ids: Vec<String> = engine
            .list(false)
            .into_iter()
            .filter(|r| {
                (r.phase.is_active() || r.phase == Phase::Failed)
                    && Holds::<StressFault>::get(&r.effect).is_some()
                    && r.instance
                        .is_some_and(|w| w.pid == pid && w.start_time_ms == start)
            })
            .map(|r| r.id)
            .collect();
        if ids.is_empty() {
            tracing::info!(
                pid,
                start_time_ms = start,
                "CancelStressors: no active stress fault has this worker; nothing to stop"
            );
        }
        for id in ids {
            engine.revert(&id, EndReason::Request).await?;
        }
    }
    Ok(())
}
