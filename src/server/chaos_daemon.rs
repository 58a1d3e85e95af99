//! Adapter for Chaos Mesh's `pb.ChaosDaemon` service: decodes, validates and delegates.
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{handle, status};
use crate::daemon::DaemonState;
use crate::proto::pb;
use crate::proto::pb::chaos_daemon_server::ChaosDaemon;

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
        unsupported_rpc!(self, req, "SetTcs", "NetworkChaos (traffic control)", |r: &pb::TcsRequest| r.container_id.clone())
    }

    async fn flush_ip_sets(
        &self,
        req: Request<pb::IpSetsRequest>,
    ) -> Result<Response<Empty>, Status> {
        unsupported_rpc!(self, req, "FlushIPSets", "NetworkChaos (ipsets)", |r: &pb::IpSetsRequest| r.container_id.clone())
    }

    async fn set_iptables_chains(
        &self,
        req: Request<pb::IptablesChainsRequest>,
    ) -> Result<Response<Empty>, Status> {
        unsupported_rpc!(self, req, "SetIptablesChains", "NetworkChaos (partition)", |r: &pb::IptablesChainsRequest| r.container_id.clone())
    }

    async fn set_time_offset(
        &self,
        req: Request<pb::TimeRequest>,
    ) -> Result<Response<Empty>, Status> {
        unsupported_rpc!(self, req, "SetTimeOffset", "TimeChaos", |r: &pb::TimeRequest| r.container_id.clone())
    }

    async fn recover_time_offset(
        &self,
        req: Request<pb::TimeRequest>,
    ) -> Result<Response<Empty>, Status> {
        unsupported_rpc!(self, req, "RecoverTimeOffset", "TimeChaos", |r: &pb::TimeRequest| r.container_id.clone())
    }

    async fn container_kill(
        &self,
        req: Request<pb::ContainerRequest>,
    ) -> Result<Response<Empty>, Status> {
        unsupported_rpc!(self, req, "ContainerKill", "PodChaos (container-kill)", |r: &pb::ContainerRequest| r.container_id.clone())
    }

    async fn container_get_pid(
        &self,
        req: Request<pb::ContainerRequest>,
    ) -> Result<Response<pb::ContainerResponse>, Status> {
        unsupported_rpc!(self, req, "ContainerGetPid", "KernelChaos (container pid)", |r: &pb::ContainerRequest| r.container_id.clone())
    }

    async fn exec_stressors(
        &self,
        req: Request<pb::ExecStressRequest>,
    ) -> Result<Response<pb::ExecStressResponse>, Status> {
        unsupported_rpc!(self, req, "ExecStressors", "StressChaos", |r: &pb::ExecStressRequest| r.target.clone())
    }

    async fn cancel_stressors(
        &self,
        req: Request<pb::CancelStressRequest>,
    ) -> Result<Response<Empty>, Status> {
        unsupported_rpc!(self, req, "CancelStressors", "StressChaos", |_: &pb::CancelStressRequest| String::new())
    }

    async fn apply_io_chaos(
        &self,
        req: Request<pb::ApplyIoChaosRequest>,
    ) -> Result<Response<pb::ApplyIoChaosResponse>, Status> {
        unsupported_rpc!(self, req, "ApplyIOChaos", "IOChaos", |r: &pb::ApplyIoChaosRequest| r.container_id.clone())
    }

    async fn apply_http_chaos(
        &self,
        req: Request<pb::ApplyHttpChaosRequest>,
    ) -> Result<Response<pb::ApplyHttpChaosResponse>, Status> {
        unsupported_rpc!(self, req, "ApplyHttpChaos", "HTTPChaos", |r: &pb::ApplyHttpChaosRequest| r.container_id.clone())
    }

    async fn apply_block_chaos(
        &self,
        req: Request<pb::ApplyBlockChaosRequest>,
    ) -> Result<Response<pb::ApplyBlockChaosResponse>, Status> {
        unsupported_rpc!(self, req, "ApplyBlockChaos", "BlockChaos", |r: &pb::ApplyBlockChaosRequest| r.container_id.clone())
    }

    async fn recover_block_chaos(
        &self,
        req: Request<pb::RecoverBlockChaosRequest>,
    ) -> Result<Response<Empty>, Status> {
        unsupported_rpc!(self, req, "RecoverBlockChaos", "BlockChaos", |_: &pb::RecoverBlockChaosRequest| String::new())
    }

    async fn set_dns_server(
        &self,
        req: Request<pb::SetDnsServerRequest>,
    ) -> Result<Response<Empty>, Status> {
        unsupported_rpc!(self, req, "SetDNSServer", "DNSChaos", |r: &pb::SetDnsServerRequest| r.container_id.clone())
    }

    async fn install_jvm_rules(
        &self,
        req: Request<pb::InstallJvmRulesRequest>,
    ) -> Result<Response<Empty>, Status> {
        unsupported_rpc!(self, req, "InstallJVMRules", "JVMChaos", |r: &pb::InstallJvmRulesRequest| r.container_id.clone())
    }

    async fn uninstall_jvm_rules(
        &self,
        req: Request<pb::UninstallJvmRulesRequest>,
    ) -> Result<Response<Empty>, Status> {
        unsupported_rpc!(self, req, "UninstallJVMRules", "JVMChaos", |r: &pb::UninstallJvmRulesRequest| r.container_id.clone())
    }
}
