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
        unsupported_rpc!(
            self,
            req,
            "FlushIPSets",
            "NetworkChaos (ipsets)",
            |r: &pb::IpSetsRequest| r.container_id.clone()
        )
    }

    async fn set_iptables_chains(
        &self,
        req: Request<pb::IptablesChainsRequest>,
    ) -> Result<Response<Empty>, Status> {
        unsupported_rpc!(
            self,
            req,
            "SetIptablesChains",
            "NetworkChaos (partition)",
            |r: &pb::IptablesChainsRequest| r.container_id.clone()
        )
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
        unsupported_rpc!(
            self,
            req,
            "ExecStressors",
            "StressChaos",
            |r: &pb::ExecStressRequest| r.target.clone()
        )
    }

    async fn cancel_stressors(
        &self,
        req: Request<pb::CancelStressRequest>,
    ) -> Result<Response<Empty>, Status> {
        unsupported_rpc!(
            self,
            req,
            "CancelStressors",
            "StressChaos",
            |_: &pb::CancelStressRequest| String::new()
        )
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
