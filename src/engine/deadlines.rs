//! Leases and the deadline loop: what ends faults by time. Rollbacks started here take the
//! group lock like every other path (they go through [`Engine::revert`]).
use std::sync::Arc;
use std::time::Duration;

use super::record::now_boottime_ms;
use super::{lock, Effect, EndReason, Engine, EngineError, Lease, Phase, Scope, TICK};

impl<E: Effect> Engine<E> {
    pub fn create_lease(
        &self,
        name: &str,
        period: Duration,
        owner: &str,
    ) -> Result<Lease, EngineError> {
        if period.is_zero() || period > Duration::from_secs(7 * 24 * 3600) {
            return Err(EngineError::Invalid(
                "lease period must be between 1 s and 7 days".into(),
            ));
        }
        let lease = Lease::new(name, period, owner);
        lock(&self.leases).insert(lease.id.clone(), lease.clone());
        Ok(lease)
    }

    pub fn renew_lease(&self, id: &str) -> Result<Lease, EngineError> {
        let mut leases = lock(&self.leases);
        let l = leases
            .get_mut(id)
            .ok_or_else(|| EngineError::LeaseNotFound(id.into()))?;
        if l.expired {
            return Err(EngineError::LeaseExpired(id.into()));
        }
        l.renew();
        Ok(l.clone())
    }

    /// Ends a lease now; its faults are rolled back by the deadline loop.
    pub fn revoke_lease(&self, id: &str) -> Result<Lease, EngineError> {
        let mut leases = lock(&self.leases);
        let l = leases
            .get_mut(id)
            .ok_or_else(|| EngineError::LeaseNotFound(id.into()))?;
        l.expired = true;
        let out = l.clone();
        drop(leases);
        self.wake.notify_one();
        Ok(out)
    }

    pub fn lease(&self, id: &str) -> Option<Lease> {
        lock(&self.leases).get(id).cloned()
    }

    pub(super) fn check_lease(&self, id: &str) -> Result<(), EngineError> {
        match lock(&self.leases).get(id) {
            None => Err(EngineError::LeaseNotFound(id.into())),
            Some(l) if l.expired || l.is_overdue(now_boottime_ms()) => {
                Err(EngineError::LeaseExpired(id.into()))
            }
            Some(_) => Ok(()),
        }
    }

    /// Wakes the deadline loop if a fault applied now ends before the loop's next scan (at
    /// most [`TICK`] away): an apply does not make it walk every fault in memory again.
    pub(super) fn wake_for(&self, deadline: Option<&super::record::Deadline>) {
        use std::sync::atomic::Ordering::SeqCst;
        let next = self.next_scan_ms.load(SeqCst);
        // (a deadline set now is of this boot)
        let sooner = deadline.is_some_and(|d| d.boottime_ms < next);
        if next == 0 || sooner {
            self.wake.notify_one();
        }
    }

    /// Finds what must end now: expired deadlines, lapsed leases, targets that went away.
    fn due(&self) -> (Vec<(String, EndReason)>, Duration) {
        let now = now_boottime_ms();
        let mut lapsed = Vec::new();
        {
            let mut leases = lock(&self.leases);
            for l in leases.values_mut() {
                if !l.expired && l.is_overdue(now) {
                    l.expired = true;
                    tracing::warn!(lease = %l.id, name = %l.name, "lease lapsed; rolling back its faults");
                }
                if l.expired {
                    lapsed.push(l.id.clone());
                }
            }
        }
        let mut due = Vec::new();
        let mut next = TICK;
        // Held while the faults are scanned (never taken in the other order).
        let ending = lock(&self.ending);
        for r in lock(&self.faults).values() {
            if r.phase != Phase::Applied || ending.contains(&r.id) {
                continue;
            }
            if let Some(d) = &r.deadline {
                if d.expired(now, &self.boot_id) {
                    due.push((r.id.clone(), EndReason::Expiry));
                    continue;
                }
                next = next.min(Duration::from_millis(d.remaining_ms(now, &self.boot_id)));
            }
            if let Some(l) = &r.lease_id {
                if lapsed.contains(l) {
                    due.push((r.id.clone(), EndReason::Lease));
                    continue;
                }
            }
            if r.effect.scope() == Scope::Process && r.effect.target_gone(&r.ctx()) {
                due.push((r.id.clone(), r.effect.gone_reason(&r.ctx())));
            }
        }
        (due, next)
    }

    /// Enforces deadlines and leases until `stop` fires.
    pub async fn run_deadlines(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            // Scanning: an apply meanwhile wakes the loop again whatever its deadline.
            self.next_scan_ms.store(0, SeqCst);
            let (due, next) = self.due();
            for (id, reason) in due {
                // One rollback task per fault: it may wait for the group lock for a while (an
                // update of the same target in flight), and the next tick finds it due again.
                if !lock(&self.ending).insert(id.clone()) {
                    continue;
                }
                let me = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = me.revert(&id, reason).await {
                        tracing::warn!(fault = %id, error = %e, "rollback by the deadline loop failed");
                    }
                    lock(&me.ending).remove(&id);
                });
            }
            let pause = next.max(Duration::from_millis(5));
            self.next_scan_ms
                .store(now_boottime_ms() + pause.as_millis() as u64, SeqCst);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.wake.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Syncs unsynced journal bytes (the records written without `fdatasync`) at most once a
    /// second, never on a request path, until `stop` fires. A failure poisons the journal:
    /// storage errors on page-cache-only records surface within a second.
    pub async fn run_syncer(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SYNC_PERIOD) => {}
                _ = stop.changed() => return,
            }
            if self.journal_poisoned().is_none() {
                let _ = self.sync_journal().await;
            }
        }
    }
}

/// How often the background syncer looks for unsynced journal bytes.
const SYNC_PERIOD: Duration = Duration::from_secs(1);
