//! Benchmarks and footprint (root; host tier). Run them all with one command:
//!
//! ```text
//! tests/bench/run.sh            # full sizes, ~1 min after the release build
//! tests/bench/run.sh --smoke    # tiny sizes, < 60 s after the build (what CI runs)
//! ```
//!
//! or by hand (release build; every test is `#[ignore]`d so `cargo test` skips them):
//!
//! ```text
//! cargo test --release --test bench -- --ignored --nocapture --test-threads=1
//! ```
//!
//! Each test prints one `BENCH {json}` line per metric: `faultd` is faultd's value, `baseline`
//! (when there is one) what the upstream approach costs measured in the same run on the same
//! machine, interleaved with faultd's samples, `ratio` = baseline / faultd (> 1: faultd is
//! faster or smaller), `target` and `met` the goal the README states. Targets are reported, never
//! asserted: a test fails only on a real failure (an RPC error, residue left in a namespace, the
//! daemon dying).
//!
//! "SetTcs" here is `faultd.v1.Faults/ApplyFault` with a `set_tcs` body and `target_pid` (the
//! same code path as `pb.ChaosDaemon/SetTcs` after container resolution, which needs a container)
//! and `RevokeFault`. The baseline is what upstream chaos-daemon runs for that SetTcs (its
//! `tc_server.go`, reference section 2.1), each command a process entering the namespace (upstream
//! uses `nsexec -n`, here `nsenter -t PID -n`): `ip -j addr show`, `tc qdisc del dev <if> root` on
//! every interface (here `lo` and `d0`), then `tc qdisc add dev d0 root handle 1: tbf rate 1mbit
//! burst 10000 limit 20000`; its recover (a SetTcs with no rules) is the first two steps. A
//! single `nsenter ... tc qdisc replace` (and `tc qdisc del`) is also measured and reported as
//! the floor of any shell-out. All in the same namespace, interleaved with faultd's calls. The daemon runs as in production: release build, default log level
//! (to a file), journal on the disk under `FAULTD_BENCH_DIR`.
//!
//! Sizes come from the environment (defaults = full run):
//!
//! | Variable | Default | What |
//! |---|---|---|
//! | `FAULTD_BENCH_ITERS` | 400 | SetTcs apply+recover iterations per variant (faultd: half give the client-observed samples, half the server-side ones) |
//! | `FAULTD_BENCH_NETNS` | 200 | network namespaces of the fan-out |
//! | `FAULTD_BENCH_CLIENTS` | 20 | concurrent clients of the fan-out |
//! | `FAULTD_BENCH_ROUNDS` | 3 | fan-out rounds (faultd and baseline alternate; medians reported) |
//! | `FAULTD_BENCH_RECORDS` | 10000 | journal records for the start-up measurement |
//! | `FAULTD_BENCH_STARTS` | 5 | daemon starts per start-up measurement (median reported) |
//! | `FAULTD_BENCH_APPENDS` | 2000 | journal appends |
//! | `FAULTD_BENCH_RPCS` | 10000 | RPCs before the second RSS reading |
//! | `FAULTD_BENCH_TIME_CYCLES` | 20 | TimeChaos apply+revoke cycles per target (1 and 16 threads) |
//! | `FAULTD_BENCH_HTTP_REQS` | 200 | HTTPChaos requests per variant (kept-alive, new connection) and path (direct, proxied) |
//! | `FAULTD_BENCH_HTTP_RPS_REQS` | 2000 | HTTPChaos requests of the requests/s measurement, per path |
//! | `FAULTD_BENCH_HTTP_CYCLES` | 20 | HTTPChaos apply+update+revoke cycles |
//! | `FAULTD_BENCH_IO_MB` | 64 | IOChaos layer: size of the file read sequentially (MiB) |
//! | `FAULTD_BENCH_IO_READS` | 2000 | IOChaos layer: 4 KiB preads at random offsets, and open+close, per way (direct, through the layer) |
//! | `FAULTD_BENCH_DIR` | system temp dir | where state dirs and journals live (must be a real disk: fdatasync) |
//!
//! Everything created (namespaces, veths, daemons) is removed by `Drop` guards; daemons also get
//! `PR_SET_PDEATHSIG` so they do not outlive a killed test process.
mod common;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::host::{faults, free_ports, tbf_request, DaemonProc, Netns};
use common::stats::{median, Stats};
use common::upstream;
use faultd::engine::{EndReason, FaultRecord, Phase};
use faultd::faults::FaultEffect;
use faultd::journal::Journal;
use faultd::proto::faultd::v1 as api;
use serde_json::{json, Value};
use tonic::transport::{Channel, Endpoint};

// ---------------------------------------------------------------------------------------------
// sizes, statistics, output

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn bench_dir() -> PathBuf {
    std::env::var_os("FAULTD_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

fn tempdir() -> tempfile::TempDir {
    let base = bench_dir();
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix("faultd-bench-")
        .tempdir_in(base)
        .unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Stats {
    fn json(&self) -> Value {
        json!({"n": self.n, "p50": r4(self.p50), "p99": r4(self.p99), "min": r4(self.min),
               "max": r4(self.max), "mean": r4(self.mean)})
    }
}

fn r4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// A goal from the README.
#[derive(Clone, Copy)]
enum Target {
    /// faultd's value at most this.
    AtMost(f64),
    /// baseline / faultd at least this.
    RatioAtLeast(f64),
    /// faultd's value exactly this (error counts).
    Exactly(f64),
}

struct Row<'a> {
    id: &'a str,
    metric: &'a str,
    unit: &'a str,
    faultd: f64,
    baseline: Option<(f64, &'a str)>,
    target: Option<Target>,
    extra: Value,
}

impl Row<'_> {
    fn print(self) {
        let ratio = self
            .baseline
            .filter(|_| self.faultd > 0.0)
            .map(|(b, _)| b / self.faultd);
        let (target, met) = match self.target {
            None => (Value::Null, Value::Null),
            Some(Target::AtMost(x)) => (
                json!(format!("<= {x} {}", self.unit)),
                json!(self.faultd <= x),
            ),
            Some(Target::Exactly(x)) => (json!(format!("= {x}")), json!(self.faultd == x)),
            Some(Target::RatioAtLeast(x)) => (
                json!(format!("ratio >= {x}")),
                ratio.map_or(Value::Null, |r| json!(r >= x)),
            ),
        };
        let line = json!({
            "id": self.id,
            "metric": self.metric,
            "unit": self.unit,
            "faultd": r4(self.faultd),
            "baseline": self.baseline.map(|(b, _)| r4(b)),
            "baseline_name": self.baseline.map(|(_, n)| n),
            "ratio": ratio.map(|r| (r * 100.0).round() / 100.0),
            "target": target,
            "met": met,
            "extra": self.extra,
        });
        println!("BENCH {line}");
        let _ = std::io::stdout().flush();
    }
}

fn row<'a>(id: &'a str, metric: &'a str, unit: &'a str, faultd: f64) -> Row<'a> {
    Row {
        id,
        metric,
        unit,
        faultd,
        baseline: None,
        target: None,
        extra: Value::Null,
    }
}

impl<'a> Row<'a> {
    fn baseline(mut self, value: f64, name: &'a str) -> Self {
        self.baseline = Some((value, name));
        self
    }
    fn target(mut self, t: Target) -> Self {
        self.target = Some(t);
        self
    }
    fn extra(mut self, v: Value) -> Self {
        self.extra = v;
        self
    }
}

// ---------------------------------------------------------------------------------------------
// the daemon as a child process, on ports we know (for /metrics)

struct BenchDaemon {
    proc: DaemonProc,
    grpc_port: u16,
    http_port: u16,
    spawned: Instant,
}

impl BenchDaemon {
    /// Starts `faultd --insecure` on free ports with `state` as its state dir. Logs (default
    /// level, as in production) go to `state/../<state name>.log`, not to the test output.
    fn spawn(state: &Path) -> BenchDaemon {
        Self::spawn_with(state, &[])
    }

    /// [`BenchDaemon::spawn`] with extra arguments (`FAULTD_BENCH_BIN` overrides the binary,
    /// e.g. to measure another build of faultd in the same way).
    fn spawn_with(state: &Path, extra: &[&str]) -> BenchDaemon {
        let [grpc_port, http_port] = free_ports::<2>();
        std::fs::create_dir_all(state).unwrap();
        let log = std::fs::File::create(state.with_extension("log")).unwrap();
        let bin = std::env::var_os("FAULTD_BENCH_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_faultd").into());
        let mut cmd = Command::new(bin);
        cmd.args(["--insecure", "--listen-address", "127.0.0.1"])
            .args(extra)
            .args(["--grpc-port", &grpc_port.to_string()])
            .args(["--http-port", &http_port.to_string()])
            .arg("--state-dir")
            .arg(state)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let spawned = Instant::now();
        let child = cmd.spawn().expect("spawning faultd");
        BenchDaemon {
            proc: DaemonProc::of(child, state),
            grpc_port,
            http_port,
            spawned,
        }
    }

    /// Waits (polling every millisecond) until the admin socket answers ListFaults; returns the
    /// channel and the time since spawn.
    async fn ready(&mut self) -> (Channel, Duration) {
        let limit = Duration::from_secs(30).saturating_sub(self.spawned.elapsed());
        let ch = self
            .proc
            .ready_polling(Duration::from_millis(1), limit)
            .await;
        (ch, self.spawned.elapsed())
    }

    fn socket(&self) -> &Path {
        &self.proc.socket
    }

    async fn tcp_channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://127.0.0.1:{}", self.grpc_port))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn metrics(&self) -> String {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.http_port));
        let (code, body) = common::http_get(addr, "/metrics").await;
        assert_eq!(code, 200, "{body}");
        body
    }

    /// A `/proc/<pid>/status` field in kB (VmRSS, VmHWM).
    fn status_kb(&self, field: &str) -> u64 {
        let pid = self.proc.child.id();
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
    }

    fn mib(&self, field: &str) -> f64 {
        self.status_kb(field) as f64 / 1024.0
    }

    fn assert_alive(&mut self) {
        if let Ok(Some(st)) = self.proc.child.try_wait() {
            panic!("faultd died: {st}");
        }
    }
}

// (dropping the BenchDaemon drops its DaemonProc: SIGTERM, which rolls every fault back, then
// SIGKILL after 10 s)

/// A value from Prometheus text: the first sample named `name` carrying all `labels`
/// (`key="value"` strings); 0 when absent.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let end = l.find(['{', ' ']).unwrap_or(l.len());
            &l[..end] == name && labels.iter().all(|lab| l.contains(lab))
        })
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Cumulative counters around one call: handling-time histogram of one faultd.v1.Faults method
/// (sum in seconds, count) and the journal's fdatasync histogram (sum, count).
#[derive(Clone, Copy, Default)]
struct Snap {
    sum: f64,
    count: f64,
    fsync_sum: f64,
    fsync_count: f64,
}

fn snap(text: &str, method: &str) -> Snap {
    snap_of(text, "faultd.v1.Faults", method)
}

fn snap_of(text: &str, service: &str, method: &str) -> Snap {
    let svc = format!(r#"grpc_service="{service}""#);
    let svc = svc.as_str();
    let m = format!(r#"grpc_method="{method}""#);
    Snap {
        sum: metric(
            text,
            "chaos_daemon_grpc_server_handling_seconds_sum",
            &[svc, &m],
        ),
        count: metric(
            text,
            "chaos_daemon_grpc_server_handling_seconds_count",
            &[svc, &m],
        ),
        fsync_sum: metric(text, "faultd_journal_fsync_seconds_sum", &[]),
        fsync_count: metric(text, "faultd_journal_fsync_seconds_count", &[]),
    }
}

/// What one call cost on the server between two snapshots: (handling ms, fdatasync ms,
/// fdatasyncs), or None if the snapshots do not bracket exactly one call of the method.
fn one_call(before: Snap, after: Snap) -> Option<(f64, f64, f64)> {
    (after.count - before.count == 1.0).then_some((
        (after.sum - before.sum) * 1e3,
        (after.fsync_sum - before.fsync_sum) * 1e3,
        after.fsync_count - before.fsync_count,
    ))
}

// ---------------------------------------------------------------------------------------------
// the baseline: what upstream chaos-daemon runs per rule

const TBF_ARGS: [&str; 8] = [
    "root", "tbf", "rate", "1mbit", "burst", "10000", "limit", "20000",
];

fn shell_apply(pid: u32) -> Result<Duration, String> {
    let t = Instant::now();
    let mut argv = vec!["tc", "qdisc", "replace", "dev", "d0"];
    argv.extend_from_slice(&TBF_ARGS);
    upstream::nsenter(pid, &argv)?;
    Ok(t.elapsed())
}

fn shell_recover(pid: u32) -> Result<Duration, String> {
    let t = Instant::now();
    upstream::nsenter(pid, &["tc", "qdisc", "del", "dev", "d0", "root"])?;
    Ok(t.elapsed())
}

/// What upstream chaos-daemon runs for a SetTcs with one tbf rule (see `common::upstream`).
fn upstream_apply(pid: u32) -> Result<Duration, String> {
    let t = Instant::now();
    upstream::set_one(pid, "d0", &TBF_ARGS[1..])?;
    Ok(t.elapsed())
}

/// What upstream runs for the recovering SetTcs (an empty rule list): the reset alone.
fn upstream_recover(pid: u32) -> Result<Duration, String> {
    let t = Instant::now();
    upstream::reset(pid)?;
    Ok(t.elapsed())
}

fn apply_req(pid: u32) -> api::ApplyFaultRequest {
    api::ApplyFaultRequest {
        ttl_seconds: 600,
        lease_id: String::new(),
        target_pid: pid,
        fault: Some(api::apply_fault_request::Fault::SetTcs(tbf_request(
            "d0", "1mbit",
        ))),
    }
}

/// `n` namespaces made on a few threads (each takes a handful of `ip` runs).
fn make_netns(tag: &str, n: usize) -> Vec<Netns> {
    let out = Mutex::new(Vec::with_capacity(n));
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4.min(n.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let ns = Netns::new(&format!("{tag}{i}"));
                out.lock().unwrap().push((i, ns));
            });
        }
    });
    let mut v = out.into_inner().unwrap();
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, ns)| ns).collect()
}

/// Namespaces in `all` that carry a faultd qdisc (checked on a few threads).
fn with_residue(all: &[Netns]) -> Vec<String> {
    let bad = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(ns) = all.get(i) else { break };
                if ns.has_faultd_qdisc() {
                    bad.lock().unwrap().push(ns.name.clone());
                }
            });
        }
    });
    bad.into_inner().unwrap()
}

// ---------------------------------------------------------------------------------------------
// SetTcs latency

#[tokio::test]
#[ignore = "benchmark (root): run by tests/bench/run.sh"]
async fn bench_settcs_latency() {
    let iters = env_usize("FAULTD_BENCH_ITERS", 400).max(2);
    let warmup = 3;
    let state = tempdir();
    let ns = Netns::new("bench-lat");
    let pid = ns.pid();
    let before = ns.qdisc_dump();
    let mut d = BenchDaemon::spawn(&state.path().join("state"));
    let (unix, _) = d.ready().await;
    let tcp = d.tcp_channel().await;
    let mut unix_c = faults(&unix);
    let mut tcp_c = faults(&tcp);

    #[derive(Default)]
    struct Samples {
        apply: Vec<f64>,
        recover: Vec<f64>,
        apply_srv: Vec<f64>,
        recover_srv: Vec<f64>,
        /// Client-observed apply in the iterations that scrape (diagnostic only).
        apply_scraped: Vec<f64>,
        /// Server-side time minus the journal's fdatasyncs in that call.
        apply_nojournal: Vec<f64>,
        recover_nojournal: Vec<f64>,
        /// fdatasyncs per call.
        apply_fsyncs: Vec<f64>,
        recover_fsyncs: Vec<f64>,
    }
    // Mean fdatasync time in each scraped call that synced (ms per fdatasync).
    let mut fsync_each: Vec<f64> = Vec::new();
    let (mut su, mut st, mut sh) = (Samples::default(), Samples::default(), Samples::default());
    let mut up = Samples::default();
    let m0 = d.metrics().await;
    let fsync0 = (
        metric(&m0, "faultd_journal_fsync_seconds_sum", &[]),
        metric(&m0, "faultd_journal_fsync_seconds_count", &[]),
    );
    let mut srv_mismatch = 0;
    for i in 0..warmup + iters {
        let keep = i >= warmup;
        // All six orders of the three variants in turn, so each one follows each other one
        // equally often (a call right after the ~3 ms shell-out finds the daemon's threads
        // parked; always running the same variant there would bias it).
        const ORDERS: [[usize; 3]; 6] = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        for variant in ORDERS[(i / 2) % 6] {
            match variant {
                0 | 1 => {
                    let via_unix = variant == 0;
                    let c = if via_unix { &mut unix_c } else { &mut tcp_c };
                    let s = if via_unix { &mut su } else { &mut st };
                    // Every other iteration reads /metrics around each call for the server-side
                    // time; the client-observed samples come from the iterations without any
                    // scrape, so the scrapes cannot perturb them.
                    let scrape = i % 2 == 1;
                    let m_a = if scrape {
                        snap(&d.metrics().await, "ApplyFault")
                    } else {
                        Snap::default()
                    };
                    let t = Instant::now();
                    let f = c
                        .apply_fault(apply_req(pid))
                        .await
                        .unwrap_or_else(|e| panic!("ApplyFault #{i}: {e}"))
                        .into_inner();
                    let apply = t.elapsed();
                    assert_eq!(f.phase, api::Phase::Applied as i32, "{f:?}");
                    if i == 0 {
                        assert!(ns.has_faultd_qdisc(), "{}", ns.qdisc_dump());
                    }
                    let (h_a, h_r) = if scrape {
                        let m_b = d.metrics().await;
                        (snap(&m_b, "ApplyFault"), snap(&m_b, "RevokeFault"))
                    } else {
                        (Snap::default(), Snap::default())
                    };
                    let t = Instant::now();
                    let r = c
                        .revoke_fault(api::RevokeFaultRequest { id: f.id.clone() })
                        .await
                        .unwrap_or_else(|e| panic!("RevokeFault #{i}: {e}"))
                        .into_inner();
                    let recover = t.elapsed();
                    assert_eq!(r.phase, api::Phase::Reverted as i32, "{r:?}");
                    if !keep {
                        continue;
                    }
                    if !scrape {
                        s.apply.push(ms(apply));
                        s.recover.push(ms(recover));
                        continue;
                    }
                    let h_r2 = snap(&d.metrics().await, "RevokeFault");
                    s.apply_scraped.push(ms(apply));
                    // Exactly one call between two scrapes: the deltas are its own.
                    match (one_call(m_a, h_a), one_call(h_r, h_r2)) {
                        (Some(a), Some(r)) => {
                            s.apply_srv.push(a.0);
                            s.apply_nojournal.push(a.0 - a.1);
                            s.apply_fsyncs.push(a.2);
                            s.recover_srv.push(r.0);
                            s.recover_nojournal.push(r.0 - r.1);
                            s.recover_fsyncs.push(r.2);
                            if a.2 > 0.0 {
                                fsync_each.push(a.1 / a.2);
                            }
                            if r.2 > 0.0 {
                                fsync_each.push(r.1 / r.2);
                            }
                        }
                        _ => srv_mismatch += 1,
                    }
                }
                _ => {
                    // The two shell-outs in alternating order: upstream's whole sequence, and
                    // the single tc call that is its floor.
                    let single = |sh: &mut Samples| {
                        let a = shell_apply(pid).unwrap_or_else(|e| panic!("tc replace #{i}: {e}"));
                        let r = shell_recover(pid).unwrap_or_else(|e| panic!("tc del #{i}: {e}"));
                        if keep {
                            sh.apply.push(ms(a));
                            sh.recover.push(ms(r));
                        }
                    };
                    let sequence = |up: &mut Samples| {
                        let a = upstream_apply(pid)
                            .unwrap_or_else(|e| panic!("upstream SetTcs #{i}: {e}"));
                        let r = upstream_recover(pid)
                            .unwrap_or_else(|e| panic!("upstream recover #{i}: {e}"));
                        if keep {
                            up.apply.push(ms(a));
                            up.recover.push(ms(r));
                        }
                    };
                    if i % 2 == 0 {
                        single(&mut sh);
                        sequence(&mut up);
                    } else {
                        sequence(&mut up);
                        single(&mut sh);
                    }
                }
            }
        }
    }
    let m1 = d.metrics().await;
    let fsyncs = (
        metric(&m1, "faultd_journal_fsync_seconds_sum", &[]) - fsync0.0,
        metric(&m1, "faultd_journal_fsync_seconds_count", &[]) - fsync0.1,
    );
    d.assert_alive();
    assert!(!ns.has_faultd_qdisc(), "residue: {}", ns.qdisc_dump());
    assert_eq!(ns.qdisc_dump(), before, "recover must restore the root");
    assert_eq!(srv_mismatch, 0, "metrics saw other calls between scrapes");

    // Server-side numbers do not depend on the transport: both faultd variants' scraped calls.
    let both = |f: fn(&Samples) -> &Vec<f64>| [f(&su).as_slice(), f(&st).as_slice()].concat();
    let (ua, ur) = (Stats::of(&su.apply), Stats::of(&su.recover));
    let (ta, tr) = (Stats::of(&st.apply), Stats::of(&st.recover));
    let sa = Stats::of(&both(|s| &s.apply_srv));
    let sr = Stats::of(&both(|s| &s.recover_srv));
    let na = Stats::of(&both(|s| &s.apply_nojournal));
    let nr = Stats::of(&both(|s| &s.recover_nojournal));
    let fa = Stats::of(&both(|s| &s.apply_fsyncs));
    let fr = Stats::of(&both(|s| &s.recover_fsyncs));
    // Baseline: upstream's whole SetTcs sequence; the single tc call is reported as its floor.
    let (ba, br) = (Stats::of(&up.apply), Stats::of(&up.recover));
    let (ba1, br1) = (Stats::of(&sh.apply), Stats::of(&sh.recover));
    let shell = "upstream SetTcs: nsenter ip -j addr show, nsenter tc qdisc del per interface, nsenter tc qdisc add";
    let shell_del = "upstream recover (SetTcs with no rules): nsenter ip -j addr show, nsenter tc qdisc del per interface";
    let single = "one nsenter + tc qdisc replace";
    let single_del = "one nsenter + tc qdisc del";
    let fsync_ms = if fsyncs.1 > 0.0 {
        fsyncs.0 / fsyncs.1 * 1e3
    } else {
        0.0
    };
    let journal = json!({"fdatasync_mean_ms": r4(fsync_ms), "fdatasyncs": fsyncs.1,
                         "fdatasyncs_per_apply_mean": r4(fa.mean),
                         "fdatasyncs_per_recover_mean": r4(fr.mean)});
    let source = "per call: delta of chaos_daemon_grpc_server_handling_seconds_sum between \
                  /metrics scrapes bracketing it (unix and TCP calls)";
    row(
        "settcs_apply_p50",
        "SetTcs apply p50, client (admin unix socket)",
        "ms",
        ua.p50,
    )
    .baseline(ba.p50, shell)
    .target(Target::RatioAtLeast(20.0))
    .extra(
        json!({"iterations": iters, "faultd": ua.json(), "baseline": ba.json(),
                      "faultd_in_scraped_iterations": Stats::of(&su.apply_scraped).json()}),
    )
    .print();
    row(
        "settcs_apply_vs_single_tc_p50",
        "SetTcs apply p50, client (admin unix socket), against a single tc call",
        "ms",
        ua.p50,
    )
    .baseline(ba1.p50, single)
    .extra(json!({"baseline": ba1.json()}))
    .print();
    row(
        "settcs_recover_vs_single_tc_p50",
        "SetTcs recover p50, client (admin unix socket), against a single tc call",
        "ms",
        ur.p50,
    )
    .baseline(br1.p50, single_del)
    .extra(json!({"baseline": br1.json()}))
    .print();
    row(
        "settcs_apply_p99",
        "SetTcs apply p99, client (admin unix socket)",
        "ms",
        ua.p99,
    )
    .baseline(ba.p99, shell)
    .print();
    row(
        "settcs_apply_tcp_p50",
        "SetTcs apply p50, client (gRPC TCP)",
        "ms",
        ta.p50,
    )
    .baseline(ba.p50, shell)
    .extra(json!({"faultd": ta.json()}))
    .print();
    row(
        "settcs_apply_tcp_p99",
        "SetTcs apply p99, client (gRPC TCP)",
        "ms",
        ta.p99,
    )
    .baseline(ba.p99, shell)
    .print();
    row(
        "settcs_apply_server_p50",
        "SetTcs apply p50, server-side",
        "ms",
        sa.p50,
    )
    .baseline(ba.p50, shell)
    .target(Target::AtMost(1.0))
    .extra(json!({"faultd": sa.json(), "source": source, "journal": journal}))
    .print();
    row(
        "settcs_apply_server_p99",
        "SetTcs apply p99, server-side",
        "ms",
        sa.p99,
    )
    .baseline(ba.p99, shell)
    .print();
    row(
        "settcs_apply_server_nojournal_p50",
        "SetTcs apply p50, server-side without its fdatasyncs",
        "ms",
        na.p50,
    )
    .baseline(ba.p50, shell)
    .extra(json!({"faultd": na.json(), "fdatasyncs_per_call": fa.json()}))
    .print();
    row(
        "settcs_recover_p50",
        "SetTcs recover p50, client (admin unix socket)",
        "ms",
        ur.p50,
    )
    .baseline(br.p50, shell_del)
    .target(Target::RatioAtLeast(20.0))
    .extra(json!({"faultd": ur.json(), "tcp": tr.json(), "baseline": br.json()}))
    .print();
    row(
        "settcs_recover_p99",
        "SetTcs recover p99, client (admin unix socket)",
        "ms",
        ur.p99,
    )
    .baseline(br.p99, shell_del)
    .print();
    row(
        "settcs_recover_server_p50",
        "SetTcs recover p50, server-side",
        "ms",
        sr.p50,
    )
    .baseline(br.p50, shell_del)
    .target(Target::AtMost(1.0))
    .extra(json!({"faultd": sr.json()}))
    .print();
    row(
        "settcs_recover_server_p99",
        "SetTcs recover p99, server-side",
        "ms",
        sr.p99,
    )
    .baseline(br.p99, shell_del)
    .print();
    row(
        "settcs_recover_server_nojournal_p50",
        "SetTcs recover p50, server-side without its fdatasyncs",
        "ms",
        nr.p50,
    )
    .baseline(br.p50, shell_del)
    .extra(json!({"faultd": nr.json(), "fdatasyncs_per_call": fr.json()}))
    .print();
    if !fsync_each.is_empty() {
        let fe = Stats::of(&fsync_each);
        row(
            "journal_fdatasync_p50",
            "journal fdatasync p50 inside SetTcs (faultd_journal_fsync_seconds)",
            "ms",
            fe.p50,
        )
        .extra(json!({"per_fdatasync": fe.json(), "journal": journal}))
        .print();
    }
    // The transport's own share of the client-observed numbers: an RPC with next to no work
    // behind it (ListFaults with no fault active), each call after a 3 ms pause so that the
    // daemon's and the client's threads are parked, as they are after a shell-out above.
    let mut empty = Vec::new();
    for _ in 0..iters.min(300) {
        std::thread::sleep(Duration::from_millis(3));
        let t = Instant::now();
        let l = unix_c
            .list_faults(api::ListFaultsRequest::default())
            .await
            .expect("ListFaults")
            .into_inner();
        empty.push(ms(t.elapsed()));
        assert!(l.faults.is_empty(), "{l:?}");
    }
    let e = Stats::of(&empty);
    row(
        "grpc_empty_rpc_p50",
        "gRPC round trip with no work behind it (ListFaults, none active) p50, client (admin unix socket)",
        "ms",
        e.p50,
    )
    .extra(json!({"faultd": e.json()}))
    .print();

    // How the same apply's client-observed time depends on how long the machine sat idle
    // before it (on a VM: vCPU wake-up, clock ramp, cold caches), not on faultd: right after
    // another call (warm), after a 3 ms and after a 20 ms pause. The interleaved rows above
    // follow ~9 ms of shell-outs, during which faultd's thread sits idle.
    let mut idle_rows = Vec::new();
    for (pause_ms, warm) in [(0u64, true), (3, false), (20, false)] {
        let mut samples = Vec::new();
        for _ in 0..(iters / 4).clamp(10, 100) {
            if pause_ms > 0 {
                std::thread::sleep(Duration::from_millis(pause_ms));
            }
            if warm {
                unix_c
                    .list_faults(api::ListFaultsRequest::default())
                    .await
                    .expect("ListFaults");
            }
            let t = Instant::now();
            let f = unix_c
                .apply_fault(apply_req(pid))
                .await
                .expect("ApplyFault")
                .into_inner();
            samples.push(ms(t.elapsed()));
            unix_c
                .revoke_fault(api::RevokeFaultRequest { id: f.id })
                .await
                .expect("RevokeFault");
        }
        idle_rows.push((pause_ms, warm, Stats::of(&samples)));
    }
    for (pause_ms, warm, st) in idle_rows {
        let (id, what) = if warm {
            (
                "settcs_apply_warm_p50".to_string(),
                "right after another call".to_string(),
            )
        } else {
            (
                format!("settcs_apply_after_{pause_ms}ms_idle_p50"),
                format!("after {pause_ms} ms idle"),
            )
        };
        let metric = format!("SetTcs apply p50, client (admin unix socket), {what}");
        row(&id, &metric, "ms", st.p50)
            .extra(json!({"faultd": st.json()}))
            .print();
    }
    d.assert_alive();
    assert!(!ns.has_faultd_qdisc(), "residue: {}", ns.qdisc_dump());
    drop(d);
}

// ---------------------------------------------------------------------------------------------
// fan-out: one request to each of N namespaces from C concurrent clients

struct FanResult {
    total: Duration,
    errors: usize,
    latencies: Vec<f64>,
    ids: Vec<String>,
}

async fn fan_apply(socket: &Path, pids: &[u32], clients: usize) -> FanResult {
    let next = Arc::new(AtomicUsize::new(0));
    let pids = Arc::new(pids.to_vec());
    let mut chans = Vec::new();
    for _ in 0..clients {
        chans.push(faultd::ctl::connect_unix(socket).await.unwrap());
    }
    let t0 = Instant::now();
    let tasks: Vec<_> = chans
        .into_iter()
        .map(|ch| {
            let (next, pids) = (next.clone(), pids.clone());
            tokio::spawn(async move {
                let mut c = faults(&ch);
                let (mut lat, mut ids, mut errors) = (Vec::new(), Vec::new(), Vec::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&pid) = pids.get(i) else { break };
                    let t = Instant::now();
                    match c.apply_fault(apply_req(pid)).await {
                        Ok(f) if f.get_ref().phase == api::Phase::Applied as i32 => {
                            lat.push(ms(t.elapsed()));
                            ids.push(f.into_inner().id);
                        }
                        Ok(f) => errors.push(format!("pid {pid}: {:?}", f.into_inner())),
                        Err(e) => errors.push(format!("pid {pid}: {e}")),
                    }
                }
                (lat, ids, errors)
            })
        })
        .collect();
    let mut r = FanResult {
        total: Duration::ZERO,
        errors: 0,
        latencies: Vec::new(),
        ids: Vec::new(),
    };
    for t in tasks {
        let (lat, ids, errors) = t.await.unwrap();
        for e in &errors {
            eprintln!("fan-out apply error: {e}");
        }
        r.errors += errors.len();
        r.latencies.extend(lat);
        r.ids.extend(ids);
    }
    r.total = t0.elapsed();
    r
}

async fn fan_revoke(socket: &Path, ids: &[String], clients: usize) -> (Duration, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(ids.to_vec());
    let mut chans = Vec::new();
    for _ in 0..clients {
        chans.push(faultd::ctl::connect_unix(socket).await.unwrap());
    }
    let t0 = Instant::now();
    let tasks: Vec<_> = chans
        .into_iter()
        .map(|ch| {
            let (next, ids) = (next.clone(), ids.clone());
            tokio::spawn(async move {
                let mut c = faults(&ch);
                let mut errors = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(id) = ids.get(i) else { break };
                    match c
                        .revoke_fault(api::RevokeFaultRequest { id: id.clone() })
                        .await
                    {
                        Ok(f) if f.get_ref().phase == api::Phase::Reverted as i32 => {}
                        Ok(f) => {
                            eprintln!("fan-out revoke {id}: {:?}", f.into_inner());
                            errors += 1;
                        }
                        Err(e) => {
                            eprintln!("fan-out revoke {id}: {e}");
                            errors += 1;
                        }
                    }
                }
                errors
            })
        })
        .collect();
    let mut errors = 0;
    for t in tasks {
        errors += t.await.unwrap();
    }
    (t0.elapsed(), errors)
}

/// The baseline fan-out: `clients` threads running the shell-out per namespace.
fn shell_fan(
    pids: &[u32],
    clients: usize,
    f: fn(u32) -> Result<Duration, String>,
) -> (Duration, usize, Vec<f64>) {
    let next = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let lat = Mutex::new(Vec::new());
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&pid) = pids.get(i) else { break };
                match f(pid) {
                    Ok(d) => lat.lock().unwrap().push(ms(d)),
                    Err(e) => {
                        eprintln!("baseline fan-out pid {pid}: {e}");
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    (t0.elapsed(), errors.into_inner(), lat.into_inner().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark (root): run by tests/bench/run.sh"]
async fn bench_fanout_netns() {
    let n = env_usize("FAULTD_BENCH_NETNS", 200);
    let clients = env_usize("FAULTD_BENCH_CLIENTS", 20).max(1);
    let rounds = env_usize("FAULTD_BENCH_ROUNDS", 3).max(1);
    let t_setup = Instant::now();
    let all = make_netns("bench-fan", n);
    let setup = t_setup.elapsed();
    let pids: Vec<u32> = all.iter().map(|ns| ns.pid()).collect();
    let state = tempdir();
    let mut d = BenchDaemon::spawn(&state.path().join("state"));
    let _ = d.ready().await;
    let rss_start = d.mib("VmRSS");

    let (mut f_apply, mut f_recover, mut b_apply, mut b_recover) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut f_lat, mut b_lat) = (Vec::new(), Vec::new());
    let (mut errors, mut b_errors, mut residue) = (0, 0, Vec::new());
    for round in 0..rounds {
        for step in 0..2 {
            if (round + step) % 2 == 0 {
                let r = fan_apply(d.socket(), &pids, clients).await;
                errors += r.errors;
                d.assert_alive();
                let applied = with_residue(&all).len();
                if applied != n {
                    eprintln!("round {round}: only {applied}/{n} namespaces carry the fault");
                    errors += n - applied;
                }
                f_apply.push(ms(r.total));
                f_lat.extend(r.latencies);
                let (took, e) = fan_revoke(d.socket(), &r.ids, clients).await;
                errors += e;
                f_recover.push(ms(took));
                residue.extend(with_residue(&all));
            } else {
                let (took, e, lat) = shell_fan(&pids, clients, upstream_apply);
                b_errors += e;
                b_apply.push(ms(took));
                b_lat.extend(lat);
                let (took, e, _) = shell_fan(&pids, clients, upstream_recover);
                b_errors += e;
                b_recover.push(ms(took));
            }
        }
    }
    d.assert_alive();
    let peak = d.mib("VmHWM");
    let rss_end = d.mib("VmRSS");
    drop(d);

    let (fl, bl) = (Stats::of(&f_lat), Stats::of(&b_lat));
    let sizes = json!({"netns": n, "clients": clients, "rounds": rounds,
                       "netns_setup_s": r4(setup.as_secs_f64())});
    row(
        "fanout_apply_total",
        "fan-out apply: total time (median of rounds)",
        "ms",
        median(&f_apply),
    )
    .baseline(
        median(&b_apply),
        "upstream SetTcs sequence, same concurrency",
    )
    .extra(json!({"sizes": sizes, "faultd_rounds": f_apply, "baseline_rounds": b_apply}))
    .print();
    row(
        "fanout_apply_rpc_p50",
        "fan-out apply: per request p50 under load",
        "ms",
        fl.p50,
    )
    .baseline(bl.p50, "upstream SetTcs sequence")
    .extra(json!({"faultd": fl.json(), "baseline": bl.json()}))
    .print();
    row(
        "fanout_apply_rpc_p99",
        "fan-out apply: per request p99 under load",
        "ms",
        fl.p99,
    )
    .baseline(bl.p99, "upstream SetTcs sequence")
    .print();
    row(
        "fanout_recover_total",
        "fan-out recover all: total time (median of rounds)",
        "ms",
        median(&f_recover),
    )
    .baseline(
        median(&b_recover),
        "upstream recover sequence, same concurrency",
    )
    .extra(json!({"faultd_rounds": f_recover, "baseline_rounds": b_recover}))
    .print();
    row(
        "fanout_errors",
        "fan-out errors (apply + recover + residue)",
        "",
        (errors + residue.len()) as f64,
    )
    .target(Target::Exactly(0.0))
    .extra(json!({"baseline_errors": b_errors, "residue": residue}))
    .print();
    row(
        "fanout_peak_rss",
        "fan-out daemon peak RSS (VmHWM)",
        "MiB",
        peak,
    )
    .target(Target::AtMost(40.0))
    .extra(json!({"rss_at_start_mib": r4(rss_start), "rss_at_end_mib": r4(rss_end)}))
    .print();
    // Real failures fail the test (after every row is printed and everything is cleaned up).
    assert_eq!(errors, 0, "fan-out errors");
    assert!(residue.is_empty(), "residue after recover: {residue:?}");
    assert_eq!(b_errors, 0, "baseline errors");
    drop(all);
}

// ---------------------------------------------------------------------------------------------
// journal and start-up

/// A real record: a tbf fault applied to a namespace and revoked through a real daemon, read back
/// from its journal (the final, reverted snapshot).
async fn harvest_record() -> FaultRecord<FaultEffect> {
    let state = tempdir();
    let dir = state.path().join("state");
    let ns = Netns::new("bench-rec");
    let id = {
        let mut d = BenchDaemon::spawn(&dir);
        let (ch, _) = d.ready().await;
        let f = faults(&ch)
            .apply_fault(apply_req(ns.pid()))
            .await
            .unwrap()
            .into_inner();
        faults(&ch)
            .revoke_fault(api::RevokeFaultRequest { id: f.id.clone() })
            .await
            .unwrap();
        f.id
    };
    let (_j, recs) = Journal::<FaultRecord<FaultEffect>>::open(&dir).unwrap();
    let rec = recs
        .into_iter()
        .rev()
        .find(|r| r.id == id)
        .expect("the fault is in the journal");
    assert_eq!(rec.phase, Phase::Reverted, "{rec:?}");
    rec
}

/// The four snapshots the engine journals for one fault (intent, applied, reverting, reverted),
/// made from `template` with id number `k`.
fn life_cycle(template: &FaultRecord<FaultEffect>, k: usize) -> [FaultRecord<FaultEffect>; 4] {
    let mut r = template.clone();
    r.id = format!("00000000-bench-4000-8000-{k:012x}");
    r.created_unix_ms = template.created_unix_ms + k as i64;
    let mut intent = r.clone();
    intent.phase = Phase::Intent;
    intent.applied_unix_ms = 0;
    intent.ended_unix_ms = 0;
    intent.end_reason = None;
    let mut applied = intent.clone();
    applied.phase = Phase::Applied;
    applied.applied_unix_ms = r.created_unix_ms + 1;
    let mut reverting = applied.clone();
    reverting.phase = Phase::Reverting;
    let mut reverted = applied.clone();
    reverted.phase = Phase::Reverted;
    reverted.ended_unix_ms = r.created_unix_ms + 60_000;
    reverted.end_reason = Some(EndReason::Request);
    [intent, applied, reverting, reverted]
}

#[tokio::test]
#[ignore = "benchmark (root): run by tests/bench/run.sh"]
async fn bench_journal_append() {
    let n = env_usize("FAULTD_BENCH_APPENDS", 2000);
    let template = harvest_record().await;
    let dir = tempdir();
    let jdir = dir.path().join("journal");
    std::fs::create_dir_all(&jdir).unwrap();
    let (mut j, _) = Journal::<FaultRecord<FaultEffect>>::open(&jdir).unwrap();
    let size = serde_json::to_vec(&life_cycle(&template, 0)[1])
        .unwrap()
        .len();
    // Baseline: the bare minimum for durability, the same bytes written to an O_APPEND file and
    // fdatasync'ed, on the same filesystem.
    let raw_path = dir.path().join("raw.log");
    let raw = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&raw_path)
        .unwrap();
    let line = vec![b'x'; size + 20];
    let (mut jl, mut rl) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + 10 {
        let recs = life_cycle(&template, i);
        let rec = &recs[i % 4];
        let journal = |jl: &mut Vec<f64>, j: &mut Journal<_>| {
            let t = Instant::now();
            j.append(rec).unwrap();
            if i >= 10 {
                jl.push(ms(t.elapsed()));
            }
        };
        let bare = |rl: &mut Vec<f64>| {
            let t = Instant::now();
            (&raw).write_all(&line).unwrap();
            nix::unistd::fdatasync(&raw).unwrap();
            if i >= 10 {
                rl.push(ms(t.elapsed()));
            }
        };
        if i % 2 == 0 {
            journal(&mut jl, &mut j);
            bare(&mut rl);
        } else {
            bare(&mut rl);
            journal(&mut jl, &mut j);
        }
    }
    let (js, rs) = (Stats::of(&jl), Stats::of(&rl));
    let fs = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&jdir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let extra = json!({"appends": n, "record_bytes": size, "filesystem": fs,
                       "dir": bench_dir(), "journal": js.json(), "baseline": rs.json()});
    row(
        "journal_append_p50",
        "journal append p50 (with fdatasync)",
        "ms",
        js.p50,
    )
    .baseline(rs.p50, "bare write + fdatasync")
    .extra(extra)
    .print();
    row(
        "journal_append_p99",
        "journal append p99 (with fdatasync)",
        "ms",
        js.p99,
    )
    .baseline(rs.p99, "bare write + fdatasync")
    .print();
}

#[tokio::test]
#[ignore = "benchmark (root): run by tests/bench/run.sh"]
async fn bench_startup_to_ready() {
    let records = env_usize("FAULTD_BENCH_RECORDS", 10_000);
    let starts = env_usize("FAULTD_BENCH_STARTS", 5).max(1);
    let template = harvest_record().await;
    // A journal of `records` real records: records/4 faults, each applied then revoked.
    let tmpl_dir = tempdir();
    {
        let (mut j, _) = Journal::<FaultRecord<FaultEffect>>::open(tmpl_dir.path()).unwrap();
        let recs: Vec<_> = (0..records.div_ceil(4))
            .flat_map(|k| life_cycle(&template, k))
            .take(records)
            .collect();
        j.append_many(&recs).unwrap();
    }
    let journal = tmpl_dir.path().join(faultd::journal::JOURNAL_FILE);
    let journal_bytes = std::fs::metadata(&journal).unwrap().len();

    let (mut empty, mut full) = (Vec::new(), Vec::new());
    let mut listed = 0;
    for i in 0..starts * 2 {
        let with_records = i % 2 == 1;
        let dir = tempdir();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        if with_records {
            std::fs::copy(&journal, state.join(faultd::journal::JOURNAL_FILE)).unwrap();
            // Cold-ish: the copy is in the page cache either way; make it durable first so the
            // daemon's own fsyncs do not pay for it.
            std::fs::File::open(state.join(faultd::journal::JOURNAL_FILE))
                .unwrap()
                .sync_all()
                .unwrap();
        }
        let mut d = BenchDaemon::spawn(&state);
        let (ch, took) = d.ready().await;
        if with_records {
            full.push(ms(took));
            // The records were read, not dropped as corrupt: ended faults are listed.
            listed = faults(&ch)
                .list_faults(api::ListFaultsRequest {
                    include_ended: true,
                })
                .await
                .unwrap()
                .into_inner()
                .faults
                .len();
            assert!(
                listed > 0 || records == 0,
                "no ended fault listed after replay"
            );
            let corrupt: Vec<_> = std::fs::read_dir(&state)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().contains("corrupt"))
                .collect();
            assert!(
                corrupt.is_empty(),
                "journal replay dropped records: {corrupt:?}"
            );
        } else {
            empty.push(ms(took));
        }
        drop(d);
    }
    row(
        "ready_empty",
        "start-up to ready, empty journal (median)",
        "ms",
        median(&empty),
    )
    .target(Target::AtMost(100.0))
    .extra(json!({"starts": empty, "measured": "spawn -> admin socket answers ListFaults"}))
    .print();
    let id = "ready_records";
    let name = format!("start-up to ready, {records} journal records (median)");
    row(id, &name, "ms", median(&full))
        .target(Target::AtMost(1000.0))
        .extra(
            json!({"starts": full, "records": records, "journal_bytes": journal_bytes,
                      "ended_faults_listed_after": listed}),
        )
        .print();
}

// ---------------------------------------------------------------------------------------------
// footprint

#[tokio::test]
#[ignore = "benchmark (root): run by tests/bench/run.sh"]
async fn bench_memory_and_size() {
    let rpcs = env_usize("FAULTD_BENCH_RPCS", 10_000);
    let state = tempdir();
    let ns = Netns::new("bench-mem");
    let mut d = BenchDaemon::spawn(&state.path().join("state"));
    let (ch, _) = d.ready().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = d.mib("VmRSS");
    let mut c = faults(&ch);
    let f = c
        .apply_fault(apply_req(ns.pid()))
        .await
        .unwrap()
        .into_inner();
    let mut lat = Vec::with_capacity(rpcs);
    for i in 0..rpcs {
        let t = Instant::now();
        if i % 2 == 0 {
            let l = c
                .list_faults(api::ListFaultsRequest {
                    include_ended: true,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(l.faults.len(), 1);
        } else {
            c.get_fault(api::GetFaultRequest { id: f.id.clone() })
                .await
                .unwrap();
        }
        lat.push(ms(t.elapsed()));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = d.mib("VmRSS");
    let hwm = d.mib("VmHWM");
    c.revoke_fault(api::RevokeFaultRequest { id: f.id })
        .await
        .unwrap();
    d.assert_alive();
    drop(d);
    assert!(!ns.has_faultd_qdisc());
    let ls = Stats::of(&lat);
    row("idle_rss", "idle RSS after start-up (VmRSS)", "MiB", idle)
        .target(Target::AtMost(15.0))
        .print();
    let name = format!("RSS after {rpcs} RPCs (VmRSS)");
    row("rss_after_rpcs", &name, "MiB", after)
        .target(Target::AtMost(15.0))
        .extra(json!({"rpcs": rpcs, "vmhwm_mib": r4(hwm)}))
        .print();
    row(
        "read_rpc_p50",
        "ListFaults/GetFault p50, client (admin unix socket)",
        "ms",
        ls.p50,
    )
    .extra(json!({"rpc": ls.json()}))
    .print();

    let bin = Path::new(env!("CARGO_BIN_EXE_faultd"));
    let size = std::fs::metadata(bin).unwrap().len() as f64 / (1024.0 * 1024.0);
    let file = Command::new("file")
        .arg("-b")
        .arg(bin)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    row(
        "binary_size",
        "binary size (faultd, this profile)",
        "MiB",
        size,
    )
    .extra(json!({"path": bin, "file": file, "stripped": file.contains(", stripped")}))
    .print();
}

// ---------------------------------------------------------------------------------------------
// network partitions: updates of a live partition, and a fan-out over many namespaces

fn cgroup_root() -> PathBuf {
    [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/pids",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|c| c.join("cgroup.procs").exists())
    .expect("a writable cgroup hierarchy")
}

/// Puts a namespace's holder into a cgroup named like a docker container, so the daemon
/// (`--runtime docker` at a socket that does not exist) resolves `docker://<id>` to it from
/// /proc; the cgroup is removed on drop.
struct Container {
    id: String,
    cgroup: PathBuf,
}

impl Container {
    fn of(ns: &Netns) -> Container {
        let id = format!(
            "{:032x}{:032x}",
            uuid::Uuid::new_v4().as_u128(),
            uuid::Uuid::new_v4().as_u128()
        );
        let cgroup = cgroup_root().join(&id);
        std::fs::create_dir(&cgroup).unwrap();
        std::fs::write(cgroup.join("cgroup.procs"), ns.pid().to_string()).unwrap();
        Container {
            id: format!("docker://{id}"),
            cgroup,
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // The holder must leave first: move it back to the root.
        if let Ok(pids) = std::fs::read_to_string(self.cgroup.join("cgroup.procs")) {
            for p in pids.lines() {
                let _ = std::fs::write(cgroup_root().join("cgroup.procs"), p);
            }
        }
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

fn partition_daemon(state: &Path) -> BenchDaemon {
    let missing = state.with_extension("no-docker.sock");
    let missing = missing.to_str().unwrap();
    BenchDaemon::spawn_with(
        state,
        &["--runtime", "docker", "--runtime-socket-path", missing],
    )
}

fn ipsets(container: &str, k: usize) -> faultd::proto::pb::IpSetsRequest {
    use faultd::proto::pb;
    pb::IpSetsRequest {
        ipsets: vec![
            pb::IpSet {
                name: "fdb_net".into(),
                r#type: "hash:net".into(),
                cidrs: vec![format!("10.210.{k}.0/24"), "10.96.0.0/12".into()],
                ..Default::default()
            },
            pb::IpSet {
                name: "fdb_np".into(),
                r#type: "hash:net,port".into(),
                cidr_and_ports: vec![pb::CidrAndPort {
                    cidr: format!("10.211.{k}.7"),
                    port: 8080,
                }],
                ..Default::default()
            },
            pb::IpSet {
                name: "fdb_all".into(),
                r#type: "list:set".into(),
                set_names: vec!["fdb_net".into(), "fdb_np".into()],
                ..Default::default()
            },
        ],
        container_id: container.into(),
        enter_ns: true,
        pod_uid: String::new(),
    }
}

fn chains(container: &str, k: usize) -> faultd::proto::pb::IptablesChainsRequest {
    use faultd::proto::pb;
    let target = if k.is_multiple_of(2) {
        "DROP"
    } else {
        "REJECT"
    };
    pb::IptablesChainsRequest {
        chains: vec![
            pb::Chain {
                name: "INPUT/fdb-in".into(),
                direction: pb::chain::Direction::Input as i32,
                ipsets: vec!["fdb_all".into()],
                target: target.into(),
                device: "d0".into(),
                ..Default::default()
            },
            pb::Chain {
                name: "OUTPUT/fdb-out".into(),
                direction: pb::chain::Direction::Output as i32,
                ipsets: vec!["fdb_net".into()],
                target: "DROP".into(),
                device: "d0".into(),
                ..Default::default()
            },
        ],
        container_id: container.into(),
        enter_ns: true,
        pod_uid: String::new(),
    }
}

fn tcs(container: &str, k: usize) -> faultd::proto::pb::TcsRequest {
    let mut r = tbf_request(
        "d0",
        if k.is_multiple_of(2) {
            "1mbit"
        } else {
            "2mbit"
        },
    );
    r.container_id = container.into();
    r.enter_ns = true;
    r
}

/// Whether faultd's nft table is in the namespace of `pid` (read natively).
async fn has_table(pid: u32) -> bool {
    let ns = faultd::ns::Namespace::of_pid(pid, faultd::ns::NsKind::Net).unwrap();
    matches!(
        faultd::faults::firewall::table_state(&ns).await.unwrap(),
        faultd::faults::firewall::TableState::Present(_)
    )
}

#[tokio::test]
#[ignore = "benchmark (root): run by tests/bench/run.sh"]
async fn bench_partition_update_latency() {
    use faultd::proto::pb::chaos_daemon_client::ChaosDaemonClient;
    let iters = (env_usize("FAULTD_BENCH_ITERS", 400) / 2).max(2);
    let warmup = 3;
    let state = tempdir();
    let ns = Netns::new("bench-part");
    let ctr = Container::of(&ns);
    let mut d = partition_daemon(&state.path().join("state"));
    let _ = d.ready().await;
    let mut c = ChaosDaemonClient::new(d.tcp_channel().await);
    let id = ctr.id.clone();
    // The partition and the qdisc the updates replace.
    c.flush_ip_sets(ipsets(&id, 0)).await.unwrap();
    c.set_iptables_chains(chains(&id, 0)).await.unwrap();
    c.set_tcs(tcs(&id, 0)).await.unwrap();
    assert!(has_table(ns.pid()).await);

    const METHODS: [&str; 3] = ["SetTcs", "SetIptablesChains", "FlushIPSets"];
    let mut client: [Vec<f64>; 3] = Default::default();
    let mut server: [Vec<f64>; 3] = Default::default();
    // Server-side minus the journal's fdatasyncs in the call, and the fdatasyncs per call.
    let mut nojournal: [Vec<f64>; 3] = Default::default();
    let mut fsyncs: [Vec<f64>; 3] = Default::default();
    let mut mismatch = 0;
    for i in 0..warmup + iters {
        let scrape = i % 2 == 1;
        for j in 0..3 {
            let m = (i + j) % 3; // each method follows each other one in turn
            let k = i + 1;
            let before = if scrape {
                snap_of(&d.metrics().await, "pb.ChaosDaemon", METHODS[m])
            } else {
                Snap::default()
            };
            let t = Instant::now();
            let r = match m {
                0 => c.set_tcs(tcs(&id, k)).await.map(|_| ()),
                1 => c.set_iptables_chains(chains(&id, k)).await.map(|_| ()),
                _ => c.flush_ip_sets(ipsets(&id, k)).await.map(|_| ()),
            };
            let took = t.elapsed();
            r.unwrap_or_else(|e| panic!("{} #{i}: {e}", METHODS[m]));
            if i < warmup {
                continue;
            }
            if !scrape {
                client[m].push(ms(took));
                continue;
            }
            let after = snap_of(&d.metrics().await, "pb.ChaosDaemon", METHODS[m]);
            match one_call(before, after) {
                Some((h, f, n)) => {
                    server[m].push(h);
                    nojournal[m].push(h - f);
                    fsyncs[m].push(n);
                }
                None => mismatch += 1,
            }
        }
    }
    // Recover everything; nothing may be left.
    c.set_tcs(faultd::proto::pb::TcsRequest {
        container_id: id.clone(),
        enter_ns: true,
        ..Default::default()
    })
    .await
    .unwrap();
    c.set_iptables_chains(chains(&id, 0).tap_empty())
        .await
        .unwrap();
    c.flush_ip_sets(ipsets(&id, 0).tap_empty()).await.unwrap();
    d.assert_alive();
    assert!(!has_table(ns.pid()).await, "residue: table inet faultd");
    assert!(!ns.has_faultd_qdisc(), "residue: {}", ns.qdisc_dump());
    assert_eq!(mismatch, 0, "metrics saw other calls between scrapes");
    drop(c);
    drop(d);

    let st: Vec<Stats> = client.iter().map(|v| Stats::of(v)).collect();
    let ss: Vec<Stats> = server.iter().map(|v| Stats::of(v)).collect();
    let sn: Vec<Stats> = nojournal.iter().map(|v| Stats::of(v)).collect();
    let sf: Vec<Stats> = fsyncs.iter().map(|v| Stats::of(v)).collect();
    let settcs = "SetTcs update (tbf rate change) in the same run, client-observed";
    for (m, id, what) in [
        (
            1,
            "partition_chains_update",
            "SetIptablesChains update (2 chains)",
        ),
        (
            2,
            "partition_ipsets_update",
            "FlushIPSets update (3 ipsets)",
        ),
    ] {
        row(
            Box::leak(format!("{id}_server_p50").into_boxed_str()),
            Box::leak(format!("{what} p50, server-side").into_boxed_str()),
            "ms",
            ss[m].p50,
        )
        .target(Target::AtMost(1.0))
        .extra(json!({"faultd": ss[m].json(), "iterations": iters,
                      "without_fdatasyncs": sn[m].json(), "fdatasyncs_per_call": sf[m].json()}))
        .print();
        row(
            Box::leak(format!("{id}_server_nojournal_p50").into_boxed_str()),
            Box::leak(format!("{what} p50, server-side without its fdatasyncs").into_boxed_str()),
            "ms",
            sn[m].p50,
        )
        .extra(json!({"faultd": sn[m].json(), "settcs": sn[0].json()}))
        .print();
        row(
            Box::leak(format!("{id}_client_p50").into_boxed_str()),
            Box::leak(format!("{what} p50, client (gRPC TCP), against SetTcs").into_boxed_str()),
            "ms",
            st[m].p50,
        )
        .baseline(st[0].p50, settcs)
        .target(Target::RatioAtLeast(0.5))
        .extra(json!({"faultd": st[m].json(), "settcs": st[0].json()}))
        .print();
    }
    row(
        "settcs_update_server_p50",
        "SetTcs update p50, server-side (pb.ChaosDaemon, same run as the partition rows)",
        "ms",
        ss[0].p50,
    )
    .extra(
        json!({"faultd": ss[0].json(), "without_fdatasyncs": sn[0].json(),
                  "fdatasyncs_per_call": sf[0].json()}),
    )
    .print();
}

trait Empty {
    fn tap_empty(self) -> Self;
}

impl Empty for faultd::proto::pb::IpSetsRequest {
    fn tap_empty(mut self) -> Self {
        self.ipsets.clear();
        self
    }
}

impl Empty for faultd::proto::pb::IptablesChainsRequest {
    fn tap_empty(mut self) -> Self {
        self.chains.clear();
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark (root): run by tests/bench/run.sh"]
async fn bench_partition_fanout_netns() {
    use faultd::proto::pb::chaos_daemon_client::ChaosDaemonClient;
    let n = env_usize("FAULTD_BENCH_NETNS", 200);
    let clients = env_usize("FAULTD_BENCH_CLIENTS", 20).max(1);
    let all = make_netns("bench-pfan", n);
    let ctrs: Vec<Container> = all.iter().map(Container::of).collect();
    let ids: Arc<Vec<String>> = Arc::new(ctrs.iter().map(|c| c.id.clone()).collect());
    let state = tempdir();
    let mut d = partition_daemon(&state.path().join("state"));
    let _ = d.ready().await;
    let ch = d.tcp_channel().await;

    // Each client takes the next namespace: FlushIPSets + SetIptablesChains (apply), then the
    // same with empty lists (recover).
    async fn fan(
        ch: &Channel,
        ids: &Arc<Vec<String>>,
        clients: usize,
        apply: bool,
    ) -> (Duration, usize, Vec<f64>) {
        let next = Arc::new(AtomicUsize::new(0));
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (ch, ids, next) = (ch.clone(), ids.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = ChaosDaemonClient::new(ch);
                let (mut errors, mut lat) = (0, Vec::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(id) = ids.get(i) else { break };
                    let t = Instant::now();
                    let r = if apply {
                        match c.flush_ip_sets(ipsets(id, i % 250)).await {
                            Ok(_) => c.set_iptables_chains(chains(id, i)).await.map(|_| ()),
                            Err(e) => Err(e),
                        }
                    } else {
                        match c.set_iptables_chains(chains(id, i).tap_empty()).await {
                            Ok(_) => c.flush_ip_sets(ipsets(id, 0).tap_empty()).await.map(|_| ()),
                            Err(e) => Err(e),
                        }
                    };
                    lat.push(ms(t.elapsed()));
                    if let Err(e) = r {
                        eprintln!("{id}: {e}");
                        errors += 1;
                    }
                }
                (errors, lat)
            }));
        }
        let (mut errors, mut lat) = (0, Vec::new());
        for t in tasks {
            let (e, l) = t.await.unwrap();
            errors += e;
            lat.extend(l);
        }
        (t0.elapsed(), errors, lat)
    }
    let (apply_total, apply_errors, apply_lat) = fan(&ch, &ids, clients, true).await;
    let mut missing = 0;
    for ns in &all {
        if !has_table(ns.pid()).await {
            missing += 1;
        }
    }
    let (recover_total, recover_errors, recover_lat) = fan(&ch, &ids, clients, false).await;
    let mut residue = 0;
    for ns in &all {
        if has_table(ns.pid()).await {
            residue += 1;
        }
    }
    d.assert_alive();
    let peak = d.mib("VmHWM");
    drop(ch);
    drop(d);
    drop(ctrs);
    let errors = apply_errors + recover_errors + missing + residue;
    let (al, rl) = (Stats::of(&apply_lat), Stats::of(&recover_lat));
    row(
        "partition_fanout_errors",
        "partition fan-out: errors (failed RPCs, namespaces without the table after apply, tables left after recover)",
        "count",
        errors as f64,
    )
    .target(Target::Exactly(0.0))
    .extra(json!({"netns": n, "clients": clients, "apply_errors": apply_errors,
                  "recover_errors": recover_errors, "missing": missing, "residue": residue}))
    .print();
    row(
        "partition_fanout_apply_total",
        "partition fan-out: FlushIPSets + SetIptablesChains in every namespace, total",
        "ms",
        ms(apply_total),
    )
    .extra(json!({"per_namespace": al.json(), "peak_rss_mib": r4(peak)}))
    .print();
    row(
        "partition_fanout_recover_total",
        "partition fan-out: recover (both parts emptied) in every namespace, total",
        "ms",
        ms(recover_total),
    )
    .extra(json!({"per_namespace": rl.json()}))
    .print();
    assert_eq!(errors, 0, "partition fan-out errors");
}

// ---------------------------------------------------------------------------------------------
// TimeChaos: how long a target process is stopped

/// `faultd_time_stop_seconds`: (sum, count, cumulative bucket counts by upper bound).
fn stop_histogram(text: &str) -> (f64, f64, Vec<(f64, f64)>) {
    let name = "faultd_time_stop_seconds";
    let buckets = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix("_bucket{")?;
            let le = rest.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    (
        metric(text, &format!("{name}_sum"), &[]),
        metric(text, &format!("{name}_count"), &[]),
        buckets,
    )
}

/// The smallest bucket bound that holds every observation made between two scrapes: an upper
/// bound of the longest stop.
fn max_bound(before: &[(f64, f64)], after: &[(f64, f64)], n: f64) -> f64 {
    after
        .iter()
        .map(|&(le, c)| {
            let b = before.iter().find(|x| x.0 == le).map_or(0.0, |x| x.1);
            (le, c - b)
        })
        .filter(|&(_, d)| d >= n)
        .map(|(le, _)| le)
        .fold(f64::INFINITY, f64::min)
}

/// The per-process stop times (ms) in faultd's log (`TimeChaos: vDSO patched|restored ...
/// stopped_us=N`), in order.
fn logged_stops(log: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("TimeChaos: vDSO"))
        .filter_map(|l| {
            // strip ANSI colours: ESC [ ... m
            let mut plain = String::with_capacity(l.len());
            let mut it = l.chars();
            while let Some(ch) = it.next() {
                if ch == '\x1b' {
                    for c in it.by_ref() {
                        if c == 'm' {
                            break;
                        }
                    }
                } else {
                    plain.push(ch);
                }
            }
            let v = plain.split("stopped_us=").nth(1)?;
            let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
            Some(digits.parse::<f64>().ok()? / 1e3)
        })
        .collect()
}

fn time_req(pid: u32, sec: i64) -> api::ApplyFaultRequest {
    api::ApplyFaultRequest {
        ttl_seconds: 600,
        lease_id: String::new(),
        target_pid: pid,
        fault: Some(api::apply_fault_request::Fault::SetTimeOffset(
            faultd::proto::pb::TimeRequest {
                container_id: String::new(),
                sec,
                nsec: 0,
                clk_ids_mask: 1,
                uid: format!("bench-{sec}"),
                pod_container_name: String::new(),
            },
        )),
    }
}

/// TimeChaos apply/revoke cycles (ApplyFault `set_time_offset` with `target_pid`, then
/// RevokeFault) against clockreport (`tests/env/ctr/clockreport.c`) with 1 and with 16
/// threads (15 of them calling `clock_gettime` in a loop): how long faultd keeps the process
/// stopped per patch or restore (`faultd_time_stop_seconds`: mean = sum / count, and the
/// bucket bound that holds every stop; the exact p50/p99/max from faultd's log lines, one per
/// stopped process), and the client-observed RPC latencies. The skew is checked on the first
/// and the last cycle, and the vDSO is pristine at the end.
/// `FAULTD_BENCH_TIME_CYCLES` (default 20) cycles per variant.
#[tokio::test]
#[ignore = "benchmark (root): run by tests/bench/run.sh"]
async fn bench_time_stop() {
    use common::clock::{binary, vdso_pristine, Report, Skew};
    let cycles = env_usize("FAULTD_BENCH_TIME_CYCLES", 20).max(1);
    let state = tempdir();
    let exe = binary(state.path());
    let state_dir = state.path().join("state");
    let daemon_log = state_dir.with_extension("log");
    let mut d = BenchDaemon::spawn(&state_dir);
    let (unix, _) = d.ready().await;
    let mut c = faults(&unix);
    for threads in [1usize, 16] {
        let log = state.path().join(format!("clock-{threads}.log"));
        let mut target = Command::new(&exe)
            .arg("-o")
            .arg(&log)
            .args(["-t", &(threads - 1).to_string()])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = target.id();
        let report = Report::new(&log);
        report.next("parent", None).await;
        let seen = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .count();
        assert_eq!(seen, threads, "clockreport threads");

        let (sum0, n0, b0) = stop_histogram(&d.metrics().await);
        let logged0 = logged_stops(&daemon_log).len();
        let (mut apply, mut revoke) = (Vec::new(), Vec::new());
        for i in 0..cycles {
            let t0 = Instant::now();
            let f = c
                .apply_fault(time_req(pid, 3600))
                .await
                .expect("ApplyFault set_time_offset")
                .into_inner();
            apply.push(ms(t0.elapsed()));
            if i == 0 || i == cycles - 1 {
                let s = report.skew("parent", None).await;
                assert!(
                    s.near(&Skew::expected(3600.0, 1), 1.0),
                    "cycle {i}: skew {s}"
                );
            }
            let t0 = Instant::now();
            c.revoke_fault(api::RevokeFaultRequest { id: f.id })
                .await
                .expect("RevokeFault");
            revoke.push(ms(t0.elapsed()));
        }
        let s = report.skew("parent", None).await;
        assert!(s.near(&Skew::expected(0.0, 0), 1.0), "after revoke: {s}");
        assert!(vdso_pristine(pid), "clockreport's vDSO is not pristine");
        let (sum1, n1, b1) = stop_histogram(&d.metrics().await);
        d.assert_alive();
        assert!(target.try_wait().unwrap().is_none(), "clockreport died");
        let _ = target.kill();
        let _ = target.wait();

        let (stops, secs) = (n1 - n0, sum1 - sum0);
        assert!(
            stops >= 2.0 * cycles as f64,
            "faultd_time_stop_seconds: {stops} observations for {cycles} cycles"
        );
        let mean = if stops > 0.0 { secs / stops } else { 0.0 };
        let bound = max_bound(&b0, &b1, stops);
        let logged = logged_stops(&daemon_log).split_off(logged0);
        let l = (!logged.is_empty()).then(|| Stats::of(&logged));
        let (a, r) = (Stats::of(&apply), Stats::of(&revoke));
        let (id_mean, id_max, id_apply, id_revoke) = if threads == 1 {
            (
                "time_stop_mean_1t",
                "time_stop_max_1t",
                "time_apply_1t",
                "time_revoke_1t",
            )
        } else {
            (
                "time_stop_mean_16t",
                "time_stop_max_16t",
                "time_apply_16t",
                "time_revoke_16t",
            )
        };
        let tw = if threads == 1 { "thread" } else { "threads" };
        let metric_mean =
            format!("TimeChaos: process stopped per patch/restore, mean ({threads} {tw})");
        let metric_max =
            format!("TimeChaos: process stopped per patch/restore, max ({threads} {tw})");
        let metric_apply =
            format!("TimeChaos: ApplyFault set_time_offset, client p50 ({threads} {tw})");
        let metric_revoke = format!("TimeChaos: RevokeFault, client p50 ({threads} {tw})");
        row(id_mean, &metric_mean, "ms", mean * 1e3)
            .extra(json!({"cycles": cycles, "stops": stops, "threads": threads,
                          "source": "faultd_time_stop_seconds sum / count"}))
            .print();
        // The log's exact maximum; the histogram's bucket bound when the log has no stop lines.
        let max = l.as_ref().map_or(bound * 1e3, |l| l.max);
        row(id_max, &metric_max, "ms", max)
            .extra(json!({"logged": l.as_ref().map(Stats::json),
                          "histogram_bucket_bound_ms": r4(bound * 1e3)}))
            .print();
        row(id_apply, &metric_apply, "ms", a.p50)
            .extra(a.json())
            .print();
        row(id_revoke, &metric_revoke, "ms", r.p50)
            .extra(r.json())
            .print();
        let logged = l.as_ref().map_or("none".into(), |l| {
            format!("p50 {:.3} p99 {:.3} n {}", l.p50, l.p99, l.n)
        });
        eprintln!(
            "time stop ({threads} {tw}, {cycles} cycles, {stops} stops): mean {:.3} ms, max {max:.3} ms (bucket <= {:.3} ms), logged {logged}; apply p50 {:.2} ms, revoke p50 {:.2} ms",
            mean * 1e3,
            bound * 1e3,
            a.p50,
            r.p50
        );
    }
}

// ---------------------------------------------------------------------------------------------
// HTTPChaos

/// `n` GETs on one kept-alive connection and `n` GETs on a new connection each, from the client
/// namespace to `addr`: per-request latencies (ms), connect included for the new connections.
async fn http_samples(
    cl: &faultd::ns::Namespace,
    addr: std::net::SocketAddr,
    n: usize,
) -> (Vec<f64>, Vec<f64>) {
    use common::http::{fetch, request, Conn};
    let mut c = Conn::open(cl, addr).await.expect("connect");
    let (mut kept, mut fresh) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let t0 = Instant::now();
        let r = c
            .send(request("GET", &format!("/k/{i}"), ""))
            .await
            .unwrap_or_else(|e| panic!("kept-alive GET: {}", e.msg));
        assert_eq!(r.status, 200);
        kept.push(ms(t0.elapsed()));
    }
    for i in 0..n {
        let (r, took) = fetch(cl, addr, request("GET", &format!("/n/{i}"), "")).await;
        assert_eq!(r.unwrap_or_else(|e| panic!("GET: {}", e.msg)).status, 200);
        fresh.push(ms(took));
    }
    (kept, fresh)
}

/// `total` GETs from `conns` kept-alive connections at once: requests per second.
async fn http_rps(
    cl: &faultd::ns::Namespace,
    addr: std::net::SocketAddr,
    conns: usize,
    total: usize,
) -> f64 {
    use common::http::{request, Conn};
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..conns {
        let mut c = Conn::open(cl, addr).await.expect("connect");
        let n = total / conns + usize::from(k < total % conns);
        tasks.push(tokio::spawn(async move {
            for i in 0..n {
                let r = c.send(request("GET", &format!("/r/{k}/{i}"), "")).await;
                assert_eq!(r.unwrap_or_else(|e| panic!("GET: {}", e.msg)).status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    total as f64 / t0.elapsed().as_secs_f64()
}

/// HTTPChaos proxy overhead: request latency (p50/p99) from a client namespace to an HTTP app
/// (`common::http::App`, hyper, served by this process) in a pod namespace, direct and through
/// faultd's transparent proxy with an empty rule set (every request is parsed and forwarded),
/// kept-alive and on a new
/// connection per request; requests/s from 8 kept-alive connections; the client-observed
/// latency of the ApplyFault `apply_http_chaos` that starts the proxy, of a second one that
/// updates the rules, and of RevokeFault. Direct and proxied phases alternate (2 rounds).
/// `FAULTD_BENCH_HTTP_REQS` requests per variant and phase (default 200),
/// `FAULTD_BENCH_HTTP_RPS_REQS` for the throughput (2000), `FAULTD_BENCH_HTTP_CYCLES`
/// apply/update/revoke cycles (20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark (root): run by tests/bench/run.sh"]
async fn bench_http_proxy() {
    use common::http::{apply_req, App, Net, APP_PORT};
    let reqs = env_usize("FAULTD_BENCH_HTTP_REQS", 200).max(10);
    let burst = env_usize("FAULTD_BENCH_HTTP_RPS_REQS", 2000).max(16);
    let cycles = env_usize("FAULTD_BENCH_HTTP_CYCLES", 20).max(1);
    let conns = 8;
    let state = tempdir();
    let mut d = BenchDaemon::spawn(&state.path().join("state"));
    let (unix, _) = d.ready().await;
    let mut c = faults(&unix);
    let net = Net::new("bench-http", 1);
    let app = App::start(&net.pod_ns(), APP_PORT);
    let cl = net.client_ns();
    let addr = net.addr(APP_PORT);
    let never = |path: &str| {
        json!([{"target": "Request", "selector": {"port": APP_PORT, "path": path},
                "actions": {"delay": "1s"}}])
        .to_string()
    };
    // Warm-up (connections, the app's tasks, the proxy's first namespace thread).
    http_samples(&cl, addr, 10).await;

    let (mut dk, mut dn, mut pk, mut pn) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut rps_direct, mut rps_proxy) = (Vec::new(), Vec::new());
    for round in 0..2 {
        let (k, n) = http_samples(&cl, addr, reqs / 2).await;
        dk.extend(k);
        dn.extend(n);
        rps_direct.push(http_rps(&cl, addr, conns, burst / 2).await);
        let f = c
            .apply_fault(apply_req(net.pid(), &[APP_PORT], "[]", "", 0))
            .await
            .expect("ApplyFault apply_http_chaos")
            .into_inner();
        net.trace().assert_installed(net.v6);
        http_samples(&cl, addr, 10).await;
        // Proof that the requests go through faultd: it holds the pod side of a connection.
        {
            let _open = common::http::Conn::open(&cl, addr).await.unwrap();
            let ss = net.pod_cmd(&["ss", "-Htnp", "state", "established", "sport", "=", ":8080"]);
            assert!(
                ss.contains("\"faultd\""),
                "round {round}: not proxied:\n{ss}"
            );
        }
        let (k, n) = http_samples(&cl, addr, reqs / 2).await;
        pk.extend(k);
        pn.extend(n);
        rps_proxy.push(http_rps(&cl, addr, conns, burst / 2).await);
        c.revoke_fault(api::RevokeFaultRequest { id: f.id })
            .await
            .expect("RevokeFault");
        assert!(net.trace().is_clean(), "{:#?}", net.trace());
    }
    d.assert_alive();

    let (mut apply, mut update, mut revoke) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..cycles {
        let t0 = Instant::now();
        c.apply_fault(apply_req(net.pid(), &[APP_PORT], &never("/never/a"), "", 0))
            .await
            .expect("ApplyFault apply_http_chaos");
        apply.push(ms(t0.elapsed()));
        let t0 = Instant::now();
        let f = c
            .apply_fault(apply_req(
                net.pid(),
                &[APP_PORT, 8081],
                &never(&format!("/never/{i}")),
                "",
                0,
            ))
            .await
            .expect("ApplyFault apply_http_chaos (update)")
            .into_inner();
        update.push(ms(t0.elapsed()));
        let t0 = Instant::now();
        c.revoke_fault(api::RevokeFaultRequest { id: f.id })
            .await
            .expect("RevokeFault");
        revoke.push(ms(t0.elapsed()));
    }
    assert!(net.trace().is_clean(), "{:#?}", net.trace());
    let active = common::host::list(&unix, false).await;
    assert!(active.is_empty(), "{active:?}");
    d.assert_alive();
    drop(app);

    let (dk, dn, pk, pn) = (
        Stats::of(&dk),
        Stats::of(&dn),
        Stats::of(&pk),
        Stats::of(&pn),
    );
    let base = "no interception (same client, same app)";
    let extra = |direct: &Stats, proxied: &Stats| {
        json!({"direct": direct.json(), "proxied": proxied.json(), "requests": proxied.n,
               "rules": "empty rule set (every request parsed and forwarded)"})
    };
    row(
        "http_proxy_keepalive_p50",
        "HTTPChaos proxy: request p50, kept-alive connection",
        "ms",
        pk.p50,
    )
    .baseline(dk.p50, base)
    .extra(extra(&dk, &pk))
    .print();
    row(
        "http_proxy_keepalive_p99",
        "HTTPChaos proxy: request p99, kept-alive connection",
        "ms",
        pk.p99,
    )
    .baseline(dk.p99, base)
    .print();
    row(
        "http_proxy_newconn_p50",
        "HTTPChaos proxy: request p50, new connection each (connect included)",
        "ms",
        pn.p50,
    )
    .baseline(dn.p50, base)
    .extra(extra(&dn, &pn))
    .print();
    row(
        "http_proxy_newconn_p99",
        "HTTPChaos proxy: request p99, new connection each (connect included)",
        "ms",
        pn.p99,
    )
    .baseline(dn.p99, base)
    .print();
    row(
        "http_proxy_added_p50",
        "HTTPChaos proxy: added latency p50, kept-alive / new connection",
        "ms",
        pk.p50 - dk.p50,
    )
    .extra(json!({"new_connection_ms": r4(pn.p50 - dn.p50)}))
    .print();
    let (rd, rp) = (median(&rps_direct), median(&rps_proxy));
    row(
        "http_proxy_rps",
        &format!("HTTPChaos proxy: requests/s, {conns} kept-alive connections (direct: {rd:.0}; client, app and faultd on this machine)"),
        "req/s",
        rp,
    )
    // (no baseline column: its ratio reads "faultd faster" the wrong way round for a rate)
    .extra(json!({"direct_median": r4(rd), "direct": rps_direct, "proxied": rps_proxy,
                  "requests": burst / 2, "proxied_over_direct": r4(rp / rd)}))
    .print();
    let (a, u, r) = (Stats::of(&apply), Stats::of(&update), Stats::of(&revoke));
    row(
        "http_apply_p50",
        "HTTPChaos: ApplyFault apply_http_chaos p50, client (proxy start, table, route)",
        "ms",
        a.p50,
    )
    .extra(a.json())
    .print();
    row(
        "http_update_p50",
        "HTTPChaos: ApplyFault apply_http_chaos p50, client (update of the rules and ports)",
        "ms",
        u.p50,
    )
    .extra(u.json())
    .print();
    row(
        "http_revoke_p50",
        "HTTPChaos: RevokeFault p50, client",
        "ms",
        r.p50,
    )
    .extra(r.json())
    .print();
    eprintln!(
        "HTTPChaos proxy ({} requests per variant): kept-alive p50 {:.3} -> {:.3} ms, p99 {:.3} -> {:.3} ms; new connection p50 {:.3} -> {:.3} ms, p99 {:.3} -> {:.3} ms; {rd:.0} -> {rp:.0} req/s; apply p50 {:.2} ms, update p50 {:.2} ms, revoke p50 {:.2} ms ({cycles} cycles)",
        pk.n, dk.p50, pk.p50, dk.p99, pk.p99, dn.p50, pn.p50, dn.p99, pn.p99, a.p50, u.p50, r.p50
    );
}

// ---------------------------------------------------------------------------------------------
// IOChaos

/// A process in a mount namespace of its own (`unshare --mount --propagation private`, every
/// mount private) that holds the IOChaos bench's volume: a tmpfs mounted in its namespace only.
/// The bench reads through `/proc/<pid>/root/...`; nothing is ever mounted in ours. The process
/// ends when its stdin closes (or is killed on drop).
struct MntHelper {
    child: std::process::Child,
}

impl MntHelper {
    fn start() -> MntHelper {
        use std::io::BufRead;
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .args(["sh", "-c", "echo ready; read _"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare");
        // "ready" comes from the executed shell: unshare has made the namespace and every
        // mount in it private by then.
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "unshare helper did not start");
        MntHelper { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `path` (absolute, as the helper sees it) from this process.
    fn path(&self, path: &Path) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.pid())).join(path.strip_prefix("/").unwrap())
    }

    fn mountinfo(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", self.pid())).unwrap()
    }
}

impl Drop for MntHelper {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Samples of one way of reading (direct or through the layer).
#[derive(Default)]
struct IoSamples {
    bytes: usize,
    busy: Duration,
    mbps: Vec<f64>,
    pread_ms: Vec<f64>,
    open_ms: Vec<f64>,
}

impl IoSamples {
    fn mbps(&self) -> f64 {
        self.bytes as f64 / self.busy.as_secs_f64() / 1e6
    }
}

/// One phase on `file` (a path through `/proc/<pid>/root`): `passes` sequential reads of the
/// whole file with a 1 MiB buffer (time spent in `read` only; every byte checked against
/// `expect` between the calls), `reads` 4 KiB `pread`s at random offsets (checked), `reads`
/// open+close.
fn io_phase(
    file: &Path,
    expect: &[u8],
    passes: usize,
    reads: usize,
    rng: &mut faultd::faults::io::SplitMix64,
    s: &mut IoSamples,
) {
    use faultd::faults::io::IoRng;
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..passes {
        let mut f = std::fs::File::open(file).unwrap();
        let (mut off, mut busy) = (0, Duration::ZERO);
        loop {
            let t0 = Instant::now();
            let n = f.read(&mut buf).unwrap();
            busy += t0.elapsed();
            if n == 0 {
                break;
            }
            assert!(
                buf[..n] == expect[off..off + n],
                "sequential read at {off}: wrong bytes"
            );
            off += n;
        }
        assert_eq!(off, expect.len(), "sequential read: short file");
        s.bytes += off;
        s.busy += busy;
        s.mbps.push(off as f64 / busy.as_secs_f64() / 1e6);
    }
    let f = std::fs::File::open(file).unwrap();
    let mut b = [0u8; 4096];
    let span = (expect.len() - b.len() + 1) as u64;
    for _ in 0..reads {
        let off = (rng.next_u64() % span) as usize;
        let t0 = Instant::now();
        let n = f.read_at(&mut b, off as u64).unwrap();
        s.pread_ms.push(ms(t0.elapsed()));
        assert_eq!(n, b.len(), "pread at {off}: short read");
        assert!(b[..] == expect[off..off + n], "pread at {off}: wrong bytes");
    }
    drop(f);
    for _ in 0..reads {
        let t0 = Instant::now();
        let f = std::fs::File::open(file).unwrap();
        drop(f);
        s.open_ms.push(ms(t0.elapsed()));
    }
}

/// IOChaos FUSE layer overhead: the same file on the same tmpfs volume read directly and
/// through faultd's layer (`IoLayer::mount` with an `Injector` without actions, default
/// `LayerOptions`: 4 threads, `FOPEN_DIRECT_IO`, attribute TTL 0, so every read, lookup and
/// open reaches faultd). The volume is a tmpfs mounted inside a helper process's private mount
/// namespace (`unshare --mount --propagation private`); this process reads it through
/// `/proc/<pid>/root/...` and serves the layer. Sequential 1 MiB reads of the file (MB/s, time
/// in `read` only), p50/p99 of a 4 KiB `pread` at random offsets, p50 of open+close. Direct and
/// layered phases alternate (2 rounds, a layer mounted and unmounted per round); every byte
/// read is checked, and after each unmount no faultd layer is left. Caching: a tmpfs file *is*
/// page cache (there is nothing to drop), so the direct path reads memory; through the layer
/// the kernel's cache is bypassed (direct I/O) and each read is a FUSE request faultd answers
/// with a `pread` of the tmpfs file. `FAULTD_BENCH_IO_MB` file size (default 64),
/// `FAULTD_BENCH_IO_READS` preads and opens per way (default 2000).
#[test]
#[ignore = "benchmark (root, /dev/fuse): run by tests/bench/run.sh"]
fn bench_io_layer() {
    use faultd::faults::io::{layers_at, Injector, IoLayer, IoRng, LayerOptions, SplitMix64};
    use faultd::ns::{Namespace, NsKind};
    use std::os::unix::fs::MetadataExt;
    let mb = env_usize("FAULTD_BENCH_IO_MB", 64).max(1);
    let reads = env_usize("FAULTD_BENCH_IO_READS", 2000).max(10);
    let (rounds, passes) = (2, 2);

    let helper = MntHelper::start();
    let pid = helper.pid();
    let ns_link = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).unwrap();
    assert_ne!(
        ns_link(&pid.to_string()),
        ns_link("self"),
        "the helper must have its own mount namespace"
    );
    let info = helper.mountinfo();
    let shared: Vec<&str> = info.lines().filter(|l| l.contains(" shared:")).collect();
    assert!(
        shared.is_empty(),
        "the helper's mounts must be private: {shared:?}"
    );

    // The volume: an empty directory on our side, a tmpfs in the helper's namespace.
    let tmp = tempdir();
    let vol = std::fs::canonicalize(tmp.path()).unwrap().join("vol");
    std::fs::create_dir(&vol).unwrap();
    let ns = Namespace::of_pid(pid, NsKind::Mnt).unwrap();
    let (v, size) = (vol.clone(), format!("size={}m,mode=755", mb + 16));
    ns.run(move || {
        nix::mount::mount(
            Some("faultd-bench-io"),
            &v,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(size.as_str()),
        )
    })
    .unwrap()
    .expect("tmpfs in the helper's namespace");
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(vol.to_str().unwrap()),
        "the volume is mounted in the helper's namespace only"
    );
    let mut expect = vec![0u8; mb << 20];
    SplitMix64::new(0x10_c4a0).fill(&mut expect);
    let file = helper.path(&vol.join("data"));
    std::fs::write(&file, &expect).unwrap();
    assert_eq!(
        std::fs::read_dir(&vol).unwrap().count(),
        0,
        "our side of the volume stays empty"
    );
    let tmpfs_dev = std::fs::metadata(&file).unwrap().dev();

    let mut rng = SplitMix64::new(0x5eed);
    let (mut direct, mut layered) = (IoSamples::default(), IoSamples::default());
    let (mut mount_ms, mut unmount_ms) = (Vec::new(), Vec::new());
    // Warm-up (the file's pages, the path walk through /proc/<pid>/root).
    io_phase(&file, &expect, 1, 20, &mut rng, &mut IoSamples::default());
    for _ in 0..rounds {
        io_phase(
            &file,
            &expect,
            passes,
            reads / rounds,
            &mut rng,
            &mut direct,
        );
        let t0 = Instant::now();
        let layer = IoLayer::mount(
            &ns,
            &vol,
            Injector::new(&vol, Vec::new()),
            LayerOptions::default(),
        )
        .expect("IoLayer::mount");
        mount_ms.push(ms(t0.elapsed()));
        assert_eq!(layers_at(&ns, &vol).unwrap().len(), 1);
        assert_ne!(
            std::fs::metadata(&file).unwrap().dev(),
            tmpfs_dev,
            "the file is reached through the layer"
        );
        io_phase(&file, &expect, 0, 20, &mut rng, &mut IoSamples::default());
        io_phase(
            &file,
            &expect,
            passes,
            reads / rounds,
            &mut rng,
            &mut layered,
        );
        let t0 = Instant::now();
        layer.unmount().expect("IoLayer::unmount");
        unmount_ms.push(ms(t0.elapsed()));
        assert!(
            layers_at(&ns, &vol).unwrap().is_empty(),
            "a faultd layer is left after unmount"
        );
        assert!(
            !helper.mountinfo().contains("fuse.faultd"),
            "{}",
            helper.mountinfo()
        );
        assert_eq!(std::fs::metadata(&file).unwrap().dev(), tmpfs_dev);
    }
    assert_eq!(
        std::fs::read(&file).unwrap(),
        expect,
        "the file is unchanged"
    );
    drop(ns);
    drop(helper);
    assert!(!std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains("fuse.faultd"));

    let (dr, lr) = (direct.mbps(), layered.mbps());
    let (dp, lp) = (Stats::of(&direct.pread_ms), Stats::of(&layered.pread_ms));
    let (dopen, lopen) = (Stats::of(&direct.open_ms), Stats::of(&layered.open_ms));
    let (m, u) = (Stats::of(&mount_ms), Stats::of(&unmount_ms));
    let base = "no layer (same file, same tmpfs)";
    let setup = json!({"file_mib": mb, "volume": "tmpfs in a private mount namespace",
        "injector": "no actions", "layer": "LayerOptions::default() (4 threads, direct I/O, attr TTL 0)",
        "cache": "tmpfs is page cache (nothing to drop): direct reads are memory copies; \
                  the layer bypasses the kernel cache (direct I/O), each read a FUSE request"});
    row(
        "io_layer_read_mbps",
        &format!("IOChaos layer: sequential read, 1 MiB reads of a {mb} MiB file (direct: {dr:.0} MB/s; tmpfs)"),
        "MB/s",
        lr,
    )
    // (no baseline column: its ratio reads "faultd faster" the wrong way round for a rate)
    .extra(json!({"direct": r4(dr), "layer_over_direct": r4(lr / dr),
                  "direct_passes": direct.mbps.iter().map(|x| r4(*x)).collect::<Vec<_>>(),
                  "layer_passes": layered.mbps.iter().map(|x| r4(*x)).collect::<Vec<_>>(),
                  "setup": setup, "mount_ms": m.json(), "unmount_ms": u.json()}))
    .print();
    let extra = |d: &Stats, l: &Stats| json!({"direct": d.json(), "layer": l.json()});
    row(
        "io_layer_pread_p50",
        "IOChaos layer: 4 KiB pread at a random offset, p50",
        "ms",
        lp.p50,
    )
    .baseline(dp.p50, base)
    .extra(extra(&dp, &lp))
    .print();
    row(
        "io_layer_pread_p99",
        "IOChaos layer: 4 KiB pread at a random offset, p99",
        "ms",
        lp.p99,
    )
    .baseline(dp.p99, base)
    .print();
    row(
        "io_layer_open_p50",
        "IOChaos layer: open+close p50 (lookup, open, flush, release)",
        "ms",
        lopen.p50,
    )
    .baseline(dopen.p50, base)
    .extra(extra(&dopen, &lopen))
    .print();
    eprintln!(
        "IOChaos layer ({mb} MiB file, {} preads/opens per way, tmpfs): sequential read {dr:.0} -> {lr:.0} MB/s; pread 4 KiB p50 {:.1} -> {:.1} µs, p99 {:.1} -> {:.1} µs; open+close p50 {:.1} -> {:.1} µs; mount p50 {:.2} ms, unmount p50 {:.2} ms",
        lp.n,
        dp.p50 * 1e3,
        lp.p50 * 1e3,
        dp.p99 * 1e3,
        lp.p99 * 1e3,
        dopen.p50 * 1e3,
        lopen.p50 * 1e3,
        m.p50,
        u.p50
    );
}
