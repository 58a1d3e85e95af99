//! StressChaos: cgroup-bounded CPU and memory stressors, native, that never outlive their
//! fault. Replaces upstream's `stress-ng` / `memStress` binaries started through `nsexec`.
//!
//! This module owns:
//! * the stressor-string parsers ([`parse`]: stress-ng-style `cpuStressors`, memStress-style
//!   `memoryStressors`, every honoured option documented there);
//! * cgroup discovery for a target process, its memory limit and OOM counter ([`cgroup`],
//!   plain file I/O, v1 and v2);
//! * the worker: faultd re-executed as the hidden `faultd stress-worker` subcommand
//!   ([`worker`]), started by one dedicated spawner thread that also reaps it ([`spawn`]);
//! * [`StressFault`], the engine [`Effect`](crate::engine::Effect) (scope `Process`): apply
//!   starts the worker and returns its identity (the record's instance, which is also what the
//!   controller gets back as `(pid, startTime)`); revert stops it and every process whose
//!   command line carries `--fault-id <id>`; a worker that is gone (OOM-killed, target exited)
//!   makes the deadline loop end the fault.
//!
//! Guarantees: the worker joins the target's cgroups before `exec` (so nothing escapes the
//! container's accounting), its load processes run in the target's pid namespace (they die with
//! the container), PDEATHSIG chains daemon thread → worker → load processes (a `kill -9` of
//! faultd leaves nothing behind; the journal then records the fault as rolled back on restart).
//! Memory stress against a container without a memory limit is refused unless
//! `--allow-unbounded-memory-stress`.
//!
//! Not done: `scope: POD`, stress-ng stressors other than `--cpu`, `mlock`ed memory (faultd
//! relies on the container having no swap, like memStress), restarting a load process the OOM
//! killer took (memStress restarts its workers; faultd ends the fault instead).
pub mod cgroup;
mod exec;
pub mod parse;
pub mod spawn;
pub mod worker;

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::engine::{EffectCtx, EffectError, FailureKind, Scope};
use crate::process::ProcessIdentity;
use cgroup::TargetCgroups;
use parse::{CpuMethod, CpuSpec, MemorySpec};
use worker::{LoadKind, WorkerArgs};

pub use exec::{cancel_stressors, exec_stressors, Instances};

/// Errors of stress requests.
#[derive(Debug, thiserror::Error)]
pub enum StressError {
    #[error("{stressor}Stressors: {option}: {reason}")]
    InvalidOption {
        stressor: &'static str,
        option: String,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("target process {0} is gone")]
    TargetGone(u32),
    #[error("cgroup: {0}")]
    Cgroup(String),
    #[error("{0}")]
    Unbounded(String),
    #[error("starting the stress worker: {0}")]
    Spawn(String),
    #[error("stopping the stress worker: {0}")]
    Stop(String),
    #[error(transparent)]
    Target(#[from] super::target::TargetError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

crate::impl_failure!(StressError);

impl StressError {
    pub fn kind(&self) -> FailureKind {
        match self {
            StressError::InvalidOption { .. } | StressError::Invalid(_) => {
                FailureKind::InvalidArgument
            }
            StressError::TargetGone(_) => FailureKind::NotFound,
            StressError::Unbounded(_) => FailureKind::FailedPrecondition,
            StressError::Cgroup(_) => FailureKind::FailedPrecondition,
            StressError::Spawn(_) | StressError::Stop(_) => FailureKind::Internal,
            StressError::Target(e) => crate::failure::Failure::failure(e),
            StressError::Engine(e) => e.kind(),
        }
    }
}

impl From<StressError> for EffectError {
    fn from(e: StressError) -> Self {
        EffectError::new(e.kind(), e.to_string())
    }
}

/// The load a stress fault generates, fully resolved (no percentages left).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "load", rename_all = "snake_case")]
pub enum StressLoad {
    Cpu {
        workers: u32,
        /// Percent of one CPU per process.
        percent: u8,
        period_us: u64,
        method: CpuMethod,
    },
    Memory {
        workers: u32,
        /// Total bytes over all processes.
        bytes: u64,
        ramp_ms: u64,
    },
}

/// One stressor running in a target container: the fault record's effect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StressFault {
    pub load: StressLoad,
    /// The container's process the stressor is aimed at.
    pub target: ProcessIdentity,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_id: String,
    pub cgroups: TargetCgroups,
    pub oom_score_adj: i32,
    pub enter_pid_ns: bool,
    /// Memory limit of the container when the fault was made (`None`: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<u64>,
    pub description: String,
}

/// What an ExecStressors call asks for, decoded.
#[derive(Debug, Clone)]
pub struct StressRequest {
    pub cpu: Option<CpuSpec>,
    pub memory: Option<MemorySpec>,
    pub oom_score_adj: i32,
    pub enter_pid_ns: bool,
}

impl StressRequest {
    /// Parses and checks the two stressor strings and the OOM score.
    pub fn parse(
        cpu: &str,
        memory: &str,
        oom_score_adj: i32,
        enter_pid_ns: bool,
    ) -> Result<Self, StressError> {
        let cpu = parse::parse_cpu(cpu)?;
        let memory = parse::parse_memory(memory)?;
        if cpu.is_none() && memory.is_none() {
            return Err(StressError::Invalid(
                "both cpuStressors and memoryStressors are empty: nothing to run".into(),
            ));
        }
        if !(-1000..=1000).contains(&oom_score_adj) {
            return Err(StressError::Invalid(format!(
                "oomScoreAdj {oom_score_adj} is outside -1000..=1000"
            )));
        }
        Ok(StressRequest {
            cpu,
            memory,
            oom_score_adj,
            enter_pid_ns,
        })
    }

    /// The fault's TTL wish from the stressors themselves (`--timeout`).
    pub fn timeout(&self) -> Option<Duration> {
        self.cpu.as_ref().and_then(|c| c.timeout)
    }
}

fn human_bytes(b: u64) -> String {
    const MIB: u64 = 1 << 20;
    if b >= MIB && b.is_multiple_of(MIB) {
        format!("{} MiB", b / MIB)
    } else {
        format!("{b} bytes")
    }
}

/// Builds the faults of a request against `target` (blocking: reads cgroup files): one for
/// CPU and one for memory, in that order. Refuses memory stress against a container without
/// a memory limit unless `allow_unbounded`.
pub fn plan(
    req: &StressRequest,
    target: ProcessIdentity,
    container_id: &str,
    allow_unbounded: bool,
) -> Result<Vec<StressFault>, StressError> {
    let cgroups = cgroup::of_pid(target.pid)?;
    if !spawn::is_running(&target) {
        return Err(StressError::TargetGone(target.pid));
    }
    let who = if container_id.is_empty() {
        format!("pid {}", target.pid)
    } else {
        format!("container {container_id} (pid {})", target.pid)
    };
    let mut out = Vec::new();
    if let Some(c) = &req.cpu {
        let workers = c.resolved_workers();
        out.push(StressFault {
            load: StressLoad::Cpu {
                workers,
                percent: c.load,
                period_us: c.period.as_micros() as u64,
                method: c.method,
            },
            target,
            container_id: container_id.to_string(),
            cgroups: cgroups.clone(),
            oom_score_adj: req.oom_score_adj,
            enter_pid_ns: req.enter_pid_ns,
            memory_limit: None,
            description: format!(
                "cpu stress: {workers} x {}% ({}, {} ms cycle) in {who}",
                c.load,
                c.method.as_str(),
                c.period.as_millis()
            ),
        });
    }
    if let Some(m) = &req.memory {
        let limit = cgroup::memory_limit(&cgroups)?;
        if limit.is_none() && (m.required_limit || !allow_unbounded) {
            let why = if m.required_limit {
                "the stressor says --required-limit".to_string()
            } else {
                "faultd refuses memory stress that could exhaust the node's memory; set a memory limit on the container, or start faultd with --allow-unbounded-memory-stress".to_string()
            };
            return Err(StressError::Unbounded(format!(
                "{who} has no memory limit (memory cgroup {}): {why}",
                cgroups.describe()
            )));
        }
        let bytes = m.total_bytes(limit, cgroup::node_memory()?)?;
        out.push(StressFault {
            load: StressLoad::Memory {
                workers: m.workers,
                bytes,
                ramp_ms: m.ramp.as_millis() as u64,
            },
            target,
            container_id: container_id.to_string(),
            cgroups,
            oom_score_adj: req.oom_score_adj,
            enter_pid_ns: req.enter_pid_ns,
            memory_limit: limit,
            description: format!(
                "memory stress: {} in {} process(es){} in {who} (limit {})",
                human_bytes(bytes),
                m.workers,
                if m.ramp.is_zero() {
                    String::new()
                } else {
                    format!(" over {:?}", m.ramp)
                },
                limit.map(human_bytes).unwrap_or_else(|| "none".into())
            ),
        });
    }
    Ok(out)
}

impl StressFault {
    fn worker_args(&self, fault_id: &str) -> WorkerArgs {
        let mut a = WorkerArgs {
            fault_id: fault_id.to_string(),
            target_pid: self.target.pid,
            target_start_ticks: self.target.start_ticks,
            enter_pid_ns: self.enter_pid_ns,
            ready_fd: -1,
            kind: LoadKind::Cpu,
            workers: 1,
            load: 100,
            period_us: parse::DEFAULT_PERIOD.as_micros() as u64,
            method: CpuMethod::Sqrt,
            bytes: 0,
            ramp_ms: 0,
        };
        match &self.load {
            StressLoad::Cpu {
                workers,
                percent,
                period_us,
                method,
            } => {
                a.workers = *workers;
                a.load = *percent;
                a.period_us = *period_us;
                a.method = *method;
            }
            StressLoad::Memory {
                workers,
                bytes,
                ramp_ms,
            } => {
                a.kind = LoadKind::Memory;
                a.workers = *workers;
                a.bytes = bytes / (*workers).max(1) as u64;
                a.ramp_ms = *ramp_ms;
            }
        }
        a
    }

    fn is_memory(&self) -> bool {
        matches!(self.load, StressLoad::Memory { .. })
    }

    /// Blocking part of revert: stop the worker gracefully, then kill whatever carries the id.
    fn stop_blocking(&self, ctx: &EffectCtx) -> Result<(), StressError> {
        if let Some(who) = &ctx.instance {
            if spawn::kill_verified(who, libc::SIGTERM) {
                // The worker kills and reaps its load processes, then exits (milliseconds).
                let t0 = std::time::Instant::now();
                while spawn::is_running(who) && t0.elapsed() < Duration::from_millis(500) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            spawn::kill_verified(who, libc::SIGKILL);
        }
        for p in spawn::scan_workers() {
            if p.fault_id == ctx.fault_id {
                spawn::kill_worker_process(&p);
            }
        }
        if let Some(who) = &ctx.instance {
            self.note_exit(&ctx.fault_id, who);
        }
        Ok(())
    }

    /// Logs how the worker ended, and whether the memory cgroup counted an OOM kill.
    fn note_exit(&self, fault_id: &str, who: &ProcessIdentity) {
        let Some(status) = spawn::exit_of(who) else {
            return;
        };
        use std::os::unix::process::ExitStatusExt;
        let load_killed = status.code() == Some(worker::EXIT_LOAD_KILLED)
            || status.signal() == Some(libc::SIGKILL);
        if !load_killed {
            tracing::info!(fault = %fault_id, worker = who.pid, "stress worker {}", spawn::describe_exit(status));
            return;
        }
        match cgroup::oom_kills(&self.cgroups) {
            Some(n) if n > 0 => tracing::warn!(
                fault = %fault_id,
                worker = who.pid,
                oom_kills = n,
                memory_cgroup = %self.cgroups.describe(),
                "stress worker {}: OOM kill in the target's memory cgroup (its oom_kill counter is {n}); the fault ends",
                spawn::describe_exit(status)
            ),
            _ => tracing::warn!(
                fault = %fault_id,
                worker = who.pid,
                "stress worker {}; the fault ends",
                spawn::describe_exit(status)
            ),
        }
    }
}

impl crate::engine::Effect for StressFault {
    fn kind(&self) -> String {
        if self.is_memory() {
            "stress-memory".into()
        } else {
            "stress-cpu".into()
        }
    }

    fn scope(&self) -> Scope {
        Scope::Process
    }

    /// Worker processes die with the kernel (and with the daemon: PDEATHSIG).
    fn durability(&self) -> crate::engine::Durability {
        crate::engine::Durability::Boot
    }

    fn summary(&self) -> String {
        self.description.clone()
    }

    fn apply<'a>(
        &'a self,
        ctx: &'a EffectCtx,
    ) -> BoxFuture<'a, Result<Option<ProcessIdentity>, EffectError>> {
        Box::pin(async move {
            let args = self.worker_args(&ctx.fault_id);
            let cgroups = self.cgroups.clone();
            let oom = self.oom_score_adj;
            let who = tokio::task::spawn_blocking(move || spawn::spawn_worker(args, &cgroups, oom))
                .await
                .map_err(|e| EffectError::internal(format!("stress worker task: {e}")))??;
            tracing::info!(fault = %ctx.fault_id, worker = who.pid, start_time_ms = who.start_time_ms, cgroup = %self.cgroups.describe(), "stress worker running");
            Ok(Some(who))
        })
    }

    fn revert<'a>(&'a self, ctx: &'a EffectCtx) -> BoxFuture<'a, Result<(), EffectError>> {
        Box::pin(async move {
            let me = self.clone();
            let ctx = ctx.clone();
            tokio::task::spawn_blocking(move || me.stop_blocking(&ctx))
                .await
                .map_err(|e| EffectError::internal(format!("stress stop task: {e}")))??;
            Ok(())
        })
    }

    fn is_reverted<'a>(&'a self, ctx: &'a EffectCtx) -> BoxFuture<'a, Result<bool, EffectError>> {
        Box::pin(async move {
            let ctx = ctx.clone();
            tokio::task::spawn_blocking(move || {
                ctx.instance.as_ref().is_none_or(|w| !spawn::is_running(w))
                    && !spawn::scan_workers()
                        .iter()
                        .any(|p| p.fault_id == ctx.fault_id)
            })
            .await
            .map_err(|e| EffectError::internal(format!("stress check task: {e}")))
        })
    }

    fn manual_cleanup(&self) -> String {
        format!(
            "kill -9 the `faultd stress-worker` processes of this fault (`ps -eo pid,args | grep 'faultd stress-worker'` shows their --fault-id; `faultd ctl doctor --fix` kills those of no active fault); they run in cgroup {}",
            self.cgroups.describe()
        )
    }

    fn gone_reason(&self, ctx: &EffectCtx) -> crate::engine::EndReason {
        use std::os::unix::process::ExitStatusExt;
        let killed = ctx
            .instance
            .as_ref()
            .and_then(spawn::exit_of)
            .is_some_and(|s| {
                s.code() == Some(worker::EXIT_LOAD_KILLED) || s.signal() == Some(libc::SIGKILL)
            });
        if self.is_memory() && killed && cgroup::oom_kills(&self.cgroups).is_some_and(|n| n > 0) {
            crate::engine::EndReason::Oom
        } else {
            crate::engine::EndReason::TargetGone
        }
    }

    fn target_gone(&self, ctx: &EffectCtx) -> bool {
        match &ctx.instance {
            // Gone once it no longer runs, but not while it waits to be reaped: its exit status
            // (an OOM kill shows there) is recorded at the reap, and `gone_reason` reads it.
            Some(w) => {
                !spawn::is_running(w)
                    && (spawn::exit_of(w).is_some() || !spawn::is_unreaped_child(w))
            }
            None => !spawn::scan_workers()
                .iter()
                .any(|p| p.fault_id == ctx.fault_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_validation() {
        let e = StressRequest::parse("", " ", 0, true).unwrap_err();
        assert_eq!(e.kind(), FailureKind::InvalidArgument);
        assert!(e.to_string().contains("empty"), "{e}");
        let e = StressRequest::parse("--cpu 1", "", 1001, true).unwrap_err();
        assert!(e.to_string().contains("oomScoreAdj"), "{e}");
        let e = StressRequest::parse("--cpu 1 --bogus", "", 0, true).unwrap_err();
        assert_eq!(e.kind(), FailureKind::InvalidArgument);
        assert!(e.to_string().contains("--bogus"), "{e}");
        let r = StressRequest::parse("--cpu 1 -t 30s", "--size 1MB", -1000, true).unwrap();
        assert_eq!(r.timeout(), Some(Duration::from_secs(30)));
        assert!(r.memory.is_some());
    }

    fn fault(load: StressLoad) -> StressFault {
        StressFault {
            load,
            target: ProcessIdentity {
                pid: 1,
                start_ticks: 2,
                start_time_ms: 3,
            },
            container_id: "containerd://x".into(),
            cgroups: TargetCgroups {
                v2: true,
                joins: vec![],
                memory_dir: None,
                memory_root: None,
                host_cgroupns: false,
            },
            oom_score_adj: 0,
            enter_pid_ns: true,
            memory_limit: Some(64 << 20),
            description: "d".into(),
        }
    }

    #[test]
    fn worker_args_split_memory_over_workers_and_round_trip_json() {
        use crate::engine::Effect;
        let f = fault(StressLoad::Memory {
            workers: 4,
            bytes: 400 << 20,
            ramp_ms: 0,
        });
        let a = f.worker_args("id-1");
        assert_eq!(
            (a.kind, a.workers, a.bytes),
            (LoadKind::Memory, 4, 100 << 20)
        );
        assert_eq!(f.kind(), "stress-memory");
        assert_eq!(f.scope(), Scope::Process);
        let json = serde_json::to_string(&f).unwrap();
        let back: StressFault = serde_json::from_str(&json).unwrap();
        assert_eq!(back.load, f.load);
        let c = fault(StressLoad::Cpu {
            workers: 2,
            percent: 50,
            period_us: 20_000,
            method: CpuMethod::Sqrt,
        });
        assert_eq!(c.kind(), "stress-cpu");
        let a = c.worker_args("id-2");
        assert_eq!((a.kind, a.load, a.period_us), (LoadKind::Cpu, 50, 20_000));
    }

    #[test]
    fn a_gone_instance_is_target_gone() {
        use crate::engine::Effect;
        let f = fault(StressLoad::Cpu {
            workers: 1,
            percent: 10,
            period_us: 100_000,
            method: CpuMethod::Loop,
        });
        let ctx = EffectCtx {
            fault_id: "no-such-fault".into(),
            instance: Some(ProcessIdentity {
                pid: u32::MAX - 1,
                start_ticks: 1,
                start_time_ms: 1,
            }),
        };
        assert!(f.target_gone(&ctx));
        let ctx = EffectCtx {
            fault_id: "no-such-fault".into(),
            instance: None,
        };
        assert!(f.target_gone(&ctx));
    }

    #[test]
    fn plan_refuses_an_unlimited_memory_target() {
        // This test process's own cgroups: the memory cgroup may or may not be limited, so
        // only check the outcome is one of the two documented ones.
        let me = ProcessIdentity::of(std::process::id()).unwrap();
        let req = StressRequest::parse("", "--size 1MB", 0, false).unwrap();
        match plan(&req, me, "", false) {
            Ok(f) => assert!(f[0].memory_limit.is_some()),
            Err(e) => {
                assert_eq!(e.kind(), FailureKind::FailedPrecondition);
                assert!(
                    e.to_string().contains("--allow-unbounded-memory-stress"),
                    "{e}"
                );
            }
        }
        let f = plan(&req, me, "", true).unwrap();
        assert_eq!(f.len(), 1);
        assert!(matches!(
            f[0].load,
            StressLoad::Memory {
                bytes: 1_000_000,
                ..
            }
        ));
    }
}
