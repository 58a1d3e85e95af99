//! Start-up reconciliation and journal compaction: what the daemon does with the records a
//! previous process left before it serves (see the engine's module docs for the policy).
use std::time::{Duration, Instant};

use super::record::now_unix_ms;
use super::{lock, Durability, Effect, EndReason, Engine, FaultRecord, Phase, Scope, KEEP_ENDED};
use crate::metrics::RollbackLabels;

/// The journal is never compacted below this many records (a compaction rewrites and syncs
/// the whole file).
const COMPACT_AFTER: usize = 1000;

/// What start-up reconciliation did.
#[derive(Debug, Default, Clone)]
pub struct ReconcileReport {
    pub rolled_back: usize,
    pub gone_with_reboot: usize,
    pub failed: usize,
    pub took: Duration,
}

impl<E: Effect> Engine<E> {
    /// Start-up reconciliation: ends everything a previous process left applied (see the module
    /// docs for the policy). Runs before the daemon serves.
    pub async fn reconcile(&self) -> ReconcileReport {
        let started = Instant::now();
        let mut report = ReconcileReport::default();
        let leftovers: Vec<FaultRecord<E>> = lock(&self.faults)
            .values()
            .filter(|r| r.phase.is_active() || r.phase == Phase::Failed)
            .cloned()
            .collect();
        let mut work = Vec::new();
        for rec in leftovers {
            let rebooted = rec.boot_id != self.boot_id;
            // After a reboot a boot-scoped fault is gone with the kernel that held it, whatever
            // its scope: no kernel call and no namespace lookup (a namespace identity of the
            // old boot can name an unrelated namespace of this one, and a host device's root
            // of this boot is not the one captured in the previous). Persistent faults whose
            // namespace or process is gone are gone too; the rest are checked and undone.
            let gone = rebooted
                && (rec.effect.durability() == Durability::Boot
                    || (rec.effect.scope() != Scope::Host && rec.effect.target_gone(&rec.ctx())));
            if gone {
                let mut gone = rec.clone();
                gone.phase = Phase::Reverted;
                gone.end_reason = Some(EndReason::Reboot);
                gone.ended_unix_ms = now_unix_ms();
                if let Err(e) = self.note(&gone).await {
                    tracing::error!(fault = %gone.id, error = %e, "journaling reconciliation failed");
                }
                self.metrics
                    .rollbacks
                    .get_or_create(&RollbackLabels {
                        kind: gone.kind.clone(),
                        reason: "reboot".into(),
                    })
                    .inc();
                report.gone_with_reboot += 1;
                continue;
            }
            let reason = if rebooted {
                EndReason::Reboot
            } else {
                EndReason::Restart
            };
            // Leftovers belong to a previous process: claim them whatever their phase (a
            // rollback it had started, Reverting, is finished here).
            let mut claimed = rec;
            claimed.phase = Phase::Reverting;
            lock(&self.faults).insert(claimed.id.clone(), claimed.clone());
            work.push((claimed, reason, false));
        }
        let outcomes = futures_util::future::join_all(
            work.into_iter()
                .map(|(rec, reason, counted)| self.finish(rec, reason, counted)),
        )
        .await;
        for rec in outcomes {
            if rec.phase == Phase::Reverted {
                report.rolled_back += 1;
            } else {
                report.failed += 1;
            }
        }
        self.compact().await;
        report.took = started.elapsed();
        tracing::info!(
            rolled_back = report.rolled_back,
            gone_with_reboot = report.gone_with_reboot,
            failed = report.failed,
            took_ms = report.took.as_secs_f64() * 1e3,
            "journal reconciled"
        );
        report
    }

    /// Compacts once the journal holds more than twice the records a compaction would keep
    /// (and over [`COMPACT_AFTER`]): the active faults plus [`KEEP_ENDED`] ended ones. Whatever
    /// number of records a kind writes per fault, the journal and the in-memory list stay
    /// bounded on a node that applies and revokes all day.
    pub(super) async fn maybe_compact(&self) {
        if lock(&self.journal).len() <= COMPACT_AFTER {
            return;
        }
        let kept = {
            let faults = lock(&self.faults);
            let ended = faults
                .values()
                .filter(|r| r.phase == Phase::Reverted)
                .count();
            faults.len() - ended + ended.min(KEEP_ENDED)
        };
        if lock(&self.journal).len() > 2 * kept {
            self.compact().await;
        }
    }

    /// Rewrites the journal with active faults plus the most recent ended ones.
    pub async fn compact(&self) {
        let keep: Vec<FaultRecord<E>> = {
            let mut faults = lock(&self.faults);
            let mut ended: Vec<_> = faults
                .values()
                .filter(|r| r.phase == Phase::Reverted)
                .map(|r| (r.ended_unix_ms, r.id.clone()))
                .collect();
            ended.sort();
            let drop = ended.len().saturating_sub(KEEP_ENDED);
            for (_, id) in ended.into_iter().take(drop) {
                faults.remove(&id);
            }
            faults.values().cloned().collect()
        };
        let journal = self.journal.clone();
        let r = tokio::task::spawn_blocking(move || lock(&journal).compact(&keep)).await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "journal compaction failed"),
            Err(e) => tracing::error!(error = %e, "journal compaction task failed"),
        }
    }
}
