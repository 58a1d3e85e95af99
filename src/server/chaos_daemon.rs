//! Adapter for Chaos Mesh's `pb.ChaosDaemon` service: decodes, validates and delegates.
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{handle, status, CallContext};
use crate::daemon::DaemonState;
use crate::engine::FaultRecord;
use crate::fault::FaultEffect;
use crate::netfault::{FaultMeta, TcRule, TcRuleKind};
use crate::proto::pb;
use crate::proto::pb::chaos_daemon_server::ChaosDaemon;
use crate::tc::netem::NetemArgs;
use crate::tc::tbf::TbfArgs;
use std::time::Duration;

const SERVICE: &str = "pb.ChaosDaemon";

/// Implements `pb.ChaosDaemon` over the daemon's shared state.
#[derive(Clone)]
pub struct ChaosDaemonService {
    state: Arc<DaemonState>,
}

impl ChaosDaemonService {
    pub fn new(state: Arc<DaemonState>) -> Self {
        ChaosDaemonService { state }
    }
}

/// Answers an RPC of a fault kind faultd does not implement, with metrics and a log line.
macro_rules! unsupported_rpc {
    ($self:ident, $req:ident, $method:literal, $kind:literal, $id:expr) => {
        handle(&$self.state, SERVICE, $method, $req, $id, |_, _| async {
            Err(status::unsupported($kind, $method))
        })
        .await
    };
}

type Empty = ();

#[tonic::async_trait]
impl ChaosDaemon for ChaosDaemonService {
    async fn set_tcs(&self, req: Request<pb::TcsRequest>) -> Result<Response<Empty>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            SERVICE,
            "SetTcs",
            req,
            |r| r.container_id.clone(),
            |ctx, r| async move { set_tcs(&st, &ctx, r, None, 0).await.map(|_| ()) },
        )
        .await
    }

    async fn flush_ip_sets(
        &self,
        req: Request<pb::IpSetsRequest>,
    ) -> Result<Response<Empty>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            SERVICE,
            "FlushIPSets",
            req,
            |r| r.container_id.clone(),
            |ctx, r| async move {
                let part = crate::firewall::Part::Sets(ip_sets(&r.ipsets));
                set_firewall(&st, &ctx, &r.container_id, &r.pod_uid, part).await
            },
        )
        .await
    }

    async fn set_iptables_chains(
        &self,
        req: Request<pb::IptablesChainsRequest>,
    ) -> Result<Response<Empty>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            SERVICE,
            "SetIptablesChains",
            req,
            |r| r.container_id.clone(),
            |ctx, r| async move {
                let part = crate::firewall::Part::Chains(iptables_chains(&r.chains)?);
                set_firewall(&st, &ctx, &r.container_id, &r.pod_uid, part).await
            },
        )
        .await
    }

    async fn set_time_offset(
        &self,
        req: Request<pb::TimeRequest>,
    ) -> Result<Response<Empty>, Status> {
        unsupported_rpc!(
            self,
            req,
            "SetTimeOffset",
            "TimeChaos",
            |r: &pb::TimeRequest| r.container_id.clone()
        )
    }

    async fn recover_time_offset(
        &self,
        req: Request<pb::TimeRequest>,
    ) -> Result<Response<Empty>, Status> {
        unsupported_rpc!(
            self,
            req,
            "RecoverTimeOffset",
            "TimeChaos",
            |r: &pb::TimeRequest| r.container_id.clone()
        )
    }

    async fn container_kill(
        &self,
        req: Request<pb::ContainerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            SERVICE,
            "ContainerKill",
            req,
            |r| r.container_id.clone(),
            |_, r| async move {
                let action = r
                    .action
                    .map(|a| a.action())
                    .unwrap_or(pb::container_action::Action::Kill);
                if action != pb::container_action::Action::Kill {
                    return Err(Status::invalid_argument(format!(
                        "container action is {}, not KILL",
                        action.as_str_name()
                    )));
                }
                st.runtimes
                    .kill(&r.container_id)
                    .await
                    .map_err(status::runtime)
            },
        )
        .await
    }

    async fn container_get_pid(
        &self,
        req: Request<pb::ContainerRequest>,
    ) -> Result<Response<pb::ContainerResponse>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            SERVICE,
            "ContainerGetPid",
            req,
            |r| r.container_id.clone(),
            |_, r| async move {
                let who = st
                    .runtimes
                    .pid(&r.container_id)
                    .await
                    .map_err(status::runtime)?;
                Ok(pb::ContainerResponse { pid: who.pid })
            },
        )
        .await
    }

    async fn exec_stressors(
        &self,
        req: Request<pb::ExecStressRequest>,
    ) -> Result<Response<pb::ExecStressResponse>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            SERVICE,
            "ExecStressors",
            req,
            |r| r.target.clone(),
            |ctx, r| async move {
                let recs = exec_stressors(&st, &ctx, r, None, 0).await?;
                Ok(stress_response(&recs))
            },
        )
        .await
    }

    async fn cancel_stressors(
        &self,
        req: Request<pb::CancelStressRequest>,
    ) -> Result<Response<Empty>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            SERVICE,
            "CancelStressors",
            req,
            |_| String::new(),
            |_, r| async move { cancel_stressors(&st, r).await },
        )
        .await
    }

    async fn apply_io_chaos(
        &self,
        req: Request<pb::ApplyIoChaosRequest>,
    ) -> Result<Response<pb::ApplyIoChaosResponse>, Status> {
        unsupported_rpc!(
            self,
            req,
            "ApplyIOChaos",
            "IOChaos",
            |r: &pb::ApplyIoChaosRequest| r.container_id.clone()
        )
    }

    async fn apply_http_chaos(
        &self,
        req: Request<pb::ApplyHttpChaosRequest>,
    ) -> Result<Response<pb::ApplyHttpChaosResponse>, Status> {
        unsupported_rpc!(
            self,
            req,
            "ApplyHttpChaos",
            "HTTPChaos",
            |r: &pb::ApplyHttpChaosRequest| r.container_id.clone()
        )
    }

    async fn apply_block_chaos(
        &self,
        req: Request<pb::ApplyBlockChaosRequest>,
    ) -> Result<Response<pb::ApplyBlockChaosResponse>, Status> {
        unsupported_rpc!(
            self,
            req,
            "ApplyBlockChaos",
            "BlockChaos",
            |r: &pb::ApplyBlockChaosRequest| r.container_id.clone()
        )
    }

    async fn recover_block_chaos(
        &self,
        req: Request<pb::RecoverBlockChaosRequest>,
    ) -> Result<Response<Empty>, Status> {
        unsupported_rpc!(
            self,
            req,
            "RecoverBlockChaos",
            "BlockChaos",
            |_: &pb::RecoverBlockChaosRequest| String::new()
        )
    }

    async fn set_dns_server(
        &self,
        req: Request<pb::SetDnsServerRequest>,
    ) -> Result<Response<Empty>, Status> {
        unsupported_rpc!(
            self,
            req,
            "SetDNSServer",
            "DNSChaos",
            |r: &pb::SetDnsServerRequest| r.container_id.clone()
        )
    }

    async fn install_jvm_rules(
        &self,
        req: Request<pb::InstallJvmRulesRequest>,
    ) -> Result<Response<Empty>, Status> {
        unsupported_rpc!(
            self,
            req,
            "InstallJVMRules",
            "JVMChaos",
            |r: &pb::InstallJvmRulesRequest| r.container_id.clone()
        )
    }

    async fn uninstall_jvm_rules(
        &self,
        req: Request<pb::UninstallJvmRulesRequest>,
    ) -> Result<Response<Empty>, Status> {
        unsupported_rpc!(
            self,
            req,
            "UninstallJVMRules",
            "JVMChaos",
            |r: &pb::UninstallJvmRulesRequest| r.container_id.clone()
        )
    }
}

/// Decodes `pb.Tc` rules into the domain's form.
fn tc_rules(tcs: &[pb::Tc]) -> Result<Vec<TcRule>, Status> {
    tcs.iter()
        .enumerate()
        .map(|(i, t)| {
            let kind = match t.r#type() {
                pb::tc::Type::Netem => {
                    let n = t.netem.as_ref().ok_or_else(|| {
                        status::invalid(format!("tcs[{i}]: type NETEM without a netem body"))
                    })?;
                    TcRuleKind::Netem(NetemArgs {
                        time: n.time.clone(),
                        jitter: n.jitter.clone(),
                        delay_corr: n.delay_corr,
                        limit: n.limit,
                        loss: n.loss,
                        loss_corr: n.loss_corr,
                        gap: n.gap,
                        duplicate: n.duplicate,
                        duplicate_corr: n.duplicate_corr,
                        reorder: n.reorder,
                        reorder_corr: n.reorder_corr,
                        corrupt: n.corrupt,
                        corrupt_corr: n.corrupt_corr,
                        rate: n.rate.clone(),
                    })
                }
                pb::tc::Type::Bandwidth => {
                    let b = t.tbf.as_ref().ok_or_else(|| {
                        status::invalid(format!("tcs[{i}]: type BANDWIDTH without a tbf body"))
                    })?;
                    TcRuleKind::Tbf(TbfArgs {
                        rate: b.rate.clone(),
                        limit: b.limit,
                        buffer: b.buffer,
                        peak_rate: b.peak_rate,
                        min_burst: b.min_burst,
                    })
                }
            };
            Ok(TcRule {
                kind,
                ipset: t.ipset.clone(),
                protocol: t.protocol.clone(),
                device: t.device.clone(),
            })
        })
        .collect()
}

/// Parses the `faultd-ttl` header: a Go-style duration (`90s`, `5m`, `1h30m`) or seconds.
pub fn ttl_from_header(ctx: &CallContext) -> Result<Option<Duration>, Status> {
    match &ctx.ttl_header {
        None => Ok(None),
        Some(v) => crate::config::parse_duration(v)
            .map(Some)
            .map_err(|e| status::invalid(format!("faultd-ttl header: {e}"))),
    }
}

/// `SetTcs`, shared by the Chaos Mesh RPC and `faultd.v1.Faults/ApplyFault`.
pub async fn set_tcs(
    st: &DaemonState,
    ctx: &CallContext,
    req: pb::TcsRequest,
    ttl: Option<Duration>,
    target_pid: u32,
) -> Result<Vec<FaultRecord<FaultEffect>>, Status> {
    let rules = tc_rules(&req.tcs)?;
    let ttl = match ttl {
        Some(t) => Some(t),
        None => ttl_from_header(ctx)?,
    };
    let who = if target_pid != 0 {
        crate::process::ProcessIdentity::of(target_pid)
            .map_err(|e| Status::not_found(e.to_string()))?
    } else if req.container_id.is_empty() && req.pod_uid.is_empty() {
        return Err(status::invalid("container_id (or pod_uid) is required"));
    } else {
        st.runtimes
            .pid_or_sandbox(&req.container_id, &req.pod_uid)
            .await
            .map_err(status::runtime)?
    };
    let meta = FaultMeta {
        owner: ctx.peer.clone(),
        ttl,
        lease_id: ctx.lease_header.clone(),
        container_id: req.container_id.clone(),
        pod_uid: req.pod_uid.clone(),
    };
    crate::netfault::set_tcs(&st.engine, who, &rules, &meta)
        .await
        .map_err(status::net)
}

/// Decodes `pb.IPSet`s into the domain's form (validated by `crate::firewall`).
fn ip_sets(sets: &[pb::IpSet]) -> Vec<crate::firewall::IpSet> {
    sets.iter()
        .map(|s| crate::firewall::IpSet {
            name: s.name.clone(),
            set_type: s.r#type.clone(),
            cidrs: s.cidrs.clone(),
            cidr_and_ports: s
                .cidr_and_ports
                .iter()
                .map(|c| crate::firewall::CidrAndPort {
                    cidr: c.cidr.clone(),
                    port: c.port,
                })
                .collect(),
            set_names: s.set_names.clone(),
        })
        .collect()
}

/// Decodes `pb.Chain`s into the domain's form; an unknown direction is INVALID_ARGUMENT.
fn iptables_chains(chains: &[pb::Chain]) -> Result<Vec<crate::firewall::Chain>, Status> {
    use crate::firewall::Direction;
    chains
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let direction = match pb::chain::Direction::try_from(c.direction) {
                Ok(pb::chain::Direction::Input) => Direction::Input,
                Ok(pb::chain::Direction::Output) => Direction::Output,
                Err(_) => {
                    return Err(status::invalid(format!(
                        "chains[{i}]: unknown direction {} (INPUT = 0, OUTPUT = 1)",
                        c.direction
                    )))
                }
            };
            Ok(crate::firewall::Chain {
                name: c.name.clone(),
                direction,
                ipsets: c.ipsets.clone(),
                target: c.target.clone(),
                protocol: c.protocol.clone(),
                source_ports: c.source_ports.clone(),
                destination_ports: c.destination_ports.clone(),
                tcp_flags: c.tcp_flags.clone(),
                device: c.device.clone(),
            })
        })
        .collect()
}

/// `FlushIPSets` / `SetIptablesChains`: validates the part, resolves the target (container,
/// else the pod's sandbox) and replaces that part of the pod's partition table.
async fn set_firewall(
    st: &DaemonState,
    ctx: &CallContext,
    container_id: &str,
    pod_uid: &str,
    part: crate::firewall::Part,
) -> Result<(), Status> {
    crate::firewall::validate_part(&part).map_err(status::firewall)?;
    let ttl = ttl_from_header(ctx)?;
    if container_id.is_empty() && pod_uid.is_empty() {
        return Err(status::invalid("container_id (or pod_uid) is required"));
    }
    let who = st
        .runtimes
        .pid_or_sandbox(container_id, pod_uid)
        .await
        .map_err(status::runtime)?;
    let meta = FaultMeta {
        owner: ctx.peer.clone(),
        ttl,
        lease_id: ctx.lease_header.clone(),
        container_id: container_id.to_string(),
        pod_uid: pod_uid.to_string(),
    };
    crate::firewall::set_firewall(&st.engine, who, part, &meta)
        .await
        .map(|_| ())
        .map_err(status::firewall)
}

/// `ExecStressors`, shared by the Chaos Mesh RPC and (later) `faultd.v1.Faults/ApplyFault`:
/// one fault for the CPU stressor and one for the memory stressor, in that order. Both or
/// neither: if the second fails, the first is rolled back. `target_pid` (non-zero) replaces
/// the container lookup.
pub async fn exec_stressors(
    st: &DaemonState,
    ctx: &CallContext,
    req: pb::ExecStressRequest,
    ttl: Option<Duration>,
    target_pid: u32,
) -> Result<Vec<FaultRecord<FaultEffect>>, Status> {
    use crate::engine::{EndReason, NewFault, TargetIdentity};
    use crate::stress::StressRequest;
    if req.scope() != pb::exec_stress_request::Scope::Container {
        return Err(status::invalid(
            "scope POD is not supported by faultd (the Chaos Mesh controller sends CONTAINER)",
        ));
    }
    let sreq = StressRequest::parse(
        &req.cpu_stressors,
        &req.memory_stressors,
        req.oom_score_adj,
        req.enter_ns,
    )
    .map_err(status::stress)?;
    let ttl = match ttl {
        Some(t) => Some(t),
        None => ttl_from_header(ctx)?,
    };
    // A stress-ng `--timeout` shortens the fault's life like a TTL.
    let ttl = match (ttl, sreq.timeout()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let who = if target_pid != 0 {
        crate::process::ProcessIdentity::of(target_pid)
            .map_err(|e| Status::not_found(e.to_string()))?
    } else if req.target.is_empty() {
        return Err(status::invalid("target (the container id) is required"));
    } else {
        st.runtimes
            .pid(&req.target)
            .await
            .map_err(status::runtime)?
    };
    let allow = st.config.allow_unbounded_memory_stress;
    let container = req.target.clone();
    let faults =
        tokio::task::spawn_blocking(move || crate::stress::plan(&sreq, who, &container, allow))
            .await
            .map_err(|e| Status::internal(format!("stress planning task: {e}")))?
            .map_err(status::stress)?;
    let group = format!("stress/{}/{}", who.pid, uuid::Uuid::new_v4());
    let mut recs: Vec<FaultRecord<FaultEffect>> = Vec::new();
    for f in faults {
        let new = NewFault {
            effect: FaultEffect::Stress(f),
            target: TargetIdentity {
                container_id: req.target.clone(),
                pid: who.pid,
                pid_start_time_ms: who.start_time_ms,
                ..Default::default()
            },
            owner: ctx.peer.clone(),
            ttl,
            lease_id: ctx.lease_header.clone(),
            group: group.clone(),
        };
        match st.engine.apply(new).await {
            Ok(r) => recs.push(r),
            Err(e) => {
                for r in &recs {
                    if let Err(e) = st.engine.revert(&r.id, EndReason::ApplyFailed).await {
                        tracing::error!(fault = %r.id, error = %e, "rolling back the CPU stressor after the memory stressor failed");
                    }
                }
                return Err(status::engine(e));
            }
        }
    }
    Ok(recs)
}

/// The controller's view of stress faults: `(pid string, gopsutil start time)` per kind; the
/// `*InstanceUid` fields stay empty (the controller ignores them).
fn stress_response(recs: &[FaultRecord<FaultEffect>]) -> pb::ExecStressResponse {
    let mut resp = pb::ExecStressResponse::default();
    for r in recs {
        let (FaultEffect::Stress(f), Some(w)) = (&r.effect, &r.instance) else {
            continue;
        };
        match f.load {
            crate::stress::StressLoad::Cpu { .. } => {
                resp.cpu_instance = w.pid.to_string();
                resp.cpu_start_time = w.start_time_ms;
            }
            crate::stress::StressLoad::Memory { .. } => {
                resp.memory_instance = w.pid.to_string();
                resp.memory_start_time = w.start_time_ms;
            }
        }
    }
    resp
}

/// `CancelStressors`: ends the active stress fault whose worker is each given `(pid, start
/// time)`. A pair that names no active fault is already gone (a daemon restart rolled it back,
/// or the worker ended): OK, and nothing is killed, in particular not a live process that
/// merely reuses the pid.
pub async fn cancel_stressors(
    st: &DaemonState,
    req: pb::CancelStressRequest,
) -> Result<(), Status> {
    use crate::engine::{EndReason, Phase};
    for (label, instance, start) in [
        ("cpuInstance", &req.cpu_instance, req.cpu_start_time),
        (
            "memoryInstance",
            &req.memory_instance,
            req.memory_start_time,
        ),
    ] {
        if instance.is_empty() {
            continue;
        }
        let pid: u32 = instance
            .trim()
            .parse()
            .map_err(|_| status::invalid(format!("{label} {instance:?} is not a process id")))?;
        let ids: Vec<String> = st
            .engine
            .list(false)
            .into_iter()
            .filter(|r| {
                (r.phase.is_active() || r.phase == Phase::Failed)
                    && matches!(r.effect, FaultEffect::Stress(_))
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
            continue;
        }
        for id in ids {
            st.engine
                .revert(&id, EndReason::Request)
                .await
                .map_err(status::engine)?;
        }
    }
    Ok(())
}
