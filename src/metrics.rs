//! The daemon's Prometheus metrics, one registry owned by the daemon and rendered by the HTTP
//! port. Names follow upstream where upstream has one (`grpc_server_handled_total`,
//! `chaos_daemon_grpc_server_handling_seconds`); faultd's own metrics start with `faultd_`.
//! Rendering reads in-memory counters only, so a scrape costs the same whatever the number of
//! containers on the node (upstream runs three programs per container per scrape, #4137).
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcHandled {
    pub grpc_service: String,
    pub grpc_method: String,
    pub grpc_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcMethod {
    pub grpc_service: String,
    pub grpc_method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildInfo {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RollbackLabels {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuntimeLabels {
    pub runtime: String,
    pub socket: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

type SecondsHistogram = Family<GrpcMethod, Histogram, fn() -> Histogram>;

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    pub grpc_handled: Family<GrpcHandled, Counter>,
    pub grpc_handling_seconds: SecondsHistogram,
    pub active_faults: Family<KindLabel, Gauge>,
    pub rollbacks: Family<RollbackLabels, Counter>,
    pub rollback_failures: Counter,
    pub residue_detected: Gauge,
    pub journal_fsync_seconds: Histogram,
    pub journal_corrupt_records: Counter,
    pub journal_poisoned: Gauge,
    pub runtimes: Family<RuntimeLabels, Gauge>,
    pub tls_handshake_failures: Family<ReasonLabel, Counter>,
    pub pid_cache_hits: Counter<u64, AtomicU64>,
    pub pid_cache_misses: Counter<u64, AtomicU64>,
}

/// How long ptrace kept a process stopped (TimeChaos apply and rollback, one observation per
/// process). Process-wide, because fault kinds observe it where no daemon handle reaches; every
/// [`Metrics`] registry exports the same histogram.
pub fn ptrace_stop_seconds() -> &'static Histogram {
    static STOPS: std::sync::OnceLock<Histogram> = std::sync::OnceLock::new();
    // 10 µs .. ~160 ms.
    STOPS.get_or_init(|| Histogram::new(exponential_buckets(0.00001, 2.0, 15)))
}

/// How long one process stayed stopped while IOChaos switched its files onto faultd's layer or
/// back (process-wide like [`ptrace_stop_seconds`]).
pub fn io_switch_stop_seconds() -> &'static Histogram {
    static STOPS: std::sync::OnceLock<Histogram> = std::sync::OnceLock::new();
    // 10 µs .. ~160 ms.
    STOPS.get_or_init(|| Histogram::new(exponential_buckets(0.00001, 2.0, 15)))
}

fn grpc_histogram() -> Histogram {
    // 100 µs .. ~100 s, like grpc-prometheus' default range.
    Histogram::new(exponential_buckets(0.0001, 4.0, 11))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let grpc_handled = Family::<GrpcHandled, Counter>::default();
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure",
            grpc_handled.clone(),
        );
        let grpc_handling_seconds: SecondsHistogram = Family::new_with_constructor(grpc_histogram);
        registry.register(
            "chaos_daemon_grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server",
            grpc_handling_seconds.clone(),
        );
        let build = Family::<BuildInfo, Gauge>::default();
        build
            .get_or_create(&BuildInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register("faultd_build_info", "faultd build information", build);
        let active_faults = Family::<KindLabel, Gauge>::default();
        registry.register(
            "faultd_active_faults",
            "Faults currently applied (or being applied) by kind",
            active_faults.clone(),
        );
        let rollbacks = Family::<RollbackLabels, Counter>::default();
        registry.register(
            "faultd_rollbacks",
            "Faults rolled back, by kind and reason (expiry, lease, halt, restart, reboot, request, replaced, shutdown, apply_failed, oom, target_gone)",
            rollbacks.clone(),
        );
        let rollback_failures = Counter::default();
        registry.register(
            "faultd_rollback_failures",
            "Rollbacks that failed after retries and need an operator",
            rollback_failures.clone(),
        );
        let residue_detected = Gauge::default();
        registry.register(
            "faultd_residue_detected",
            "Residue items found by the last doctor scan",
            residue_detected.clone(),
        );
        let journal_fsync_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        registry.register(
            "faultd_journal_fsync_seconds",
            "Latency of journal appends including fdatasync",
            journal_fsync_seconds.clone(),
        );
        let journal_corrupt_records = Counter::default();
        registry.register(
            "faultd_journal_corrupt_records",
            "Unreadable journal records skipped by replay at start-up (every valid record after them is kept); a torn final line is not counted",
            journal_corrupt_records.clone(),
        );
        let journal_poisoned = Gauge::default();
        registry.register(
            "faultd_journal_poisoned",
            "1 once a journal write or fdatasync failed: new faults are refused (UNAVAILABLE) and /readyz is not ready until faultd restarts",
            journal_poisoned.clone(),
        );
        registry.register(
            "faultd_time_stop_seconds",
            "How long ptrace kept one process stopped to patch or restore its vDSO (TimeChaos), per process",
            ptrace_stop_seconds().clone(),
        );
        registry.register(
            "faultd_io_switch_stop_seconds",
            "How long ptrace kept one process stopped to move its open files and working directory onto faultd's IOChaos layer or back, per process",
            io_switch_stop_seconds().clone(),
        );
        let runtimes = Family::<RuntimeLabels, Gauge>::default();
        registry.register(
            "faultd_container_runtime",
            "Container runtimes found on this node (1 = reachable at start-up)",
            runtimes.clone(),
        );
        let tls_handshake_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "faultd_tls_handshake_failures",
            "TLS handshakes refused on the gRPC port",
            tls_handshake_failures.clone(),
        );
        let pid_cache_hits = Counter::default();
        registry.register(
            "faultd_pid_cache_hits",
            "Container PID lookups answered from the start-time-validated cache",
            pid_cache_hits.clone(),
        );
        let pid_cache_misses = Counter::default();
        registry.register(
            "faultd_pid_cache_misses",
            "Container PID lookups that asked the runtime",
            pid_cache_misses.clone(),
        );
        Metrics {
            registry,
            grpc_handled,
            grpc_handling_seconds,
            active_faults,
            rollbacks,
            rollback_failures,
            residue_detected,
            journal_fsync_seconds,
            journal_corrupt_records,
            journal_poisoned,
            runtimes,
            tls_handshake_failures,
            pid_cache_hits,
            pid_cache_misses,
        }
    }

    /// Records one finished RPC.
    pub fn observe_rpc(&self, service: &str, method: &str, code: tonic::Code, seconds: f64) {
        let code = format!("{code:?}");
        self.grpc_handled
            .get_or_create(&GrpcHandled {
                grpc_service: service.into(),
                grpc_method: method.into(),
                grpc_code: code_name(&code),
            })
            .inc();
        self.grpc_handling_seconds
            .get_or_create(&GrpcMethod {
                grpc_service: service.into(),
                grpc_method: method.into(),
            })
            .observe(seconds);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// grpc-go spells codes `OK`, `InvalidArgument`, ...; tonic's Debug gives `Ok`.
fn code_name(debug: &str) -> String {
    if debug == "Ok" {
        "OK".into()
    } else {
        debug.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_upstream_names() {
        let m = Metrics::new();
        m.observe_rpc("pb.ChaosDaemon", "SetTcs", tonic::Code::Ok, 0.002);
        m.observe_rpc(
            "pb.ChaosDaemon",
            "SetTcs",
            tonic::Code::InvalidArgument,
            0.001,
        );
        let text = m.render();
        assert!(text.contains(
            r#"grpc_server_handled_total{grpc_service="pb.ChaosDaemon",grpc_method="SetTcs",grpc_code="OK"} 1"#
        ), "{text}");
        assert!(text.contains(r#"grpc_code="InvalidArgument"} 1"#), "{text}");
        assert!(text.contains("chaos_daemon_grpc_server_handling_seconds_count{grpc_service=\"pb.ChaosDaemon\",grpc_method=\"SetTcs\"} 2"), "{text}");
        assert!(text.contains("faultd_build_info{version=\""), "{text}");
        assert!(
            text.contains("faultd_journal_corrupt_records_total 0"),
            "{text}"
        );
    }
}
