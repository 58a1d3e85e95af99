//! What every request handler shares: configuration, metrics, the fault engine, the container
//! runtimes, readiness and the count of calls in flight. The daemon builds it; the server layer
//! and the doctor read it.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::DaemonConfig;
use crate::faults::FaultEngine;
use crate::metrics::Metrics;
use crate::runtime::Runtimes;

/// State shared by every handler.
pub struct DaemonState {
    pub config: DaemonConfig,
    pub metrics: Arc<Metrics>,
    pub engine: Arc<FaultEngine>,
    pub runtimes: Runtimes,
    ready: AtomicBool,
    ready_detail: Mutex<String>,
    inflight: std::sync::atomic::AtomicUsize,
}

impl DaemonState {
    pub fn new(
        config: DaemonConfig,
        metrics: Arc<Metrics>,
        engine: Arc<FaultEngine>,
        runtimes: Runtimes,
    ) -> Self {
        DaemonState {
            config,
            metrics,
            engine,
            runtimes,
            ready: AtomicBool::new(false),
            ready_detail: Mutex::new("starting: reconciling the journal\n".into()),
            inflight: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// RPCs being handled right now.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    /// Counts one RPC as in flight until the guard drops.
    pub fn track_call(&self) -> InflightGuard<'_> {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        InflightGuard(&self.inflight)
    }

    /// `/readyz`: ready once start-up reconciliation finished, with a human-readable body.
    pub fn readiness(&self) -> (bool, String) {
        let detail = self
            .ready_detail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(why) = self.engine.journal_poisoned() {
            return (
                false,
                format!("not ready: the journal refuses writes ({why}); new faults are refused, active ones are still enforced; restart faultd once the state dir is writable\n{detail}"),
            );
        }
        (self.ready.load(Ordering::SeqCst), detail)
    }

    pub fn set_ready(&self, ready: bool, detail: String) {
        *self.ready_detail.lock().unwrap_or_else(|p| p.into_inner()) = detail;
        self.ready.store(ready, Ordering::SeqCst);
    }
}

/// Marks one RPC in flight (see [`DaemonState::track_call`]).
pub struct InflightGuard<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
