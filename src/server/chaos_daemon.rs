//! Adapter for Chaos Mesh's `pb.ChaosDaemon` service: each RPC decodes its message
//! ([`super::decode`]), calls one use case of its fault kind, and maps the result.
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::call::handle;
use super::{decode, status};
use crate::faults::{dns, firewall, http, io, jvm, qdisc, stress, time};
use crate::proto::pb;
use crate::proto::pb::chaos_daemon_server::ChaosDaemon;
use crate::state::DaemonState;

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

type Empty = ();

/// RPCs of fault kinds faultd does not implement yet: `UNIMPLEMENTED` naming the kind, with
/// metrics and a log line like every other call.
macro_rules! unsupported_rpcs {
    ($($fn:ident($req:ty) -> $resp:ty, $method:literal, $kind:literal;)+) => {$(
        // The signature `#[tonic::async_trait]` gives an `async fn` (it does not see into
        // macro invocations).
        fn $fn<'life0, 'async_trait>(
            &'life0 self,
            req: Request<$req>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<$resp>, Status>> + Send + 'async_trait>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move {
                handle(&self.state, SERVICE, $method, req, |_| String::new(), |_, _| async {
                    Err(status::unsupported($kind, $method))
                })
                .await
            })
        }
    )+};
}

#[tonic::async_trait]
impl ChaosDaemon for ChaosDaemonService {
    unsupported_rpcs! {
        apply_block_chaos(pb::ApplyBlockChaosRequest) -> pb::ApplyBlockChaosResponse, "ApplyBlockChaos", "BlockChaos";
        recover_block_chaos(pb::RecoverBlockChaosRequest) -> Empty, "RecoverBlockChaos", "BlockChaos";
    }

    async fn set_tcs(&self, req: Request<pb::TcsRequest>) -> Result<Response<Empty>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            SERVICE,
            "SetTcs",
            req,
            |r| r.container_id.clone(),
            |ctx, r| async move {
                let rules = decode::tc_rules(&r.tcs)?;
                let target = decode::target(&r.container_id, &r.pod_uid, 0);
                let meta = decode::meta(&ctx, &target, None)?;
                qdisc::set_tcs(&st.engine, &st.runtimes, &target, &rules, &meta)
                    .await
                    .map(|_| ())
                    .map_err(status::of)
            },
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
                let part = firewall::Part::Sets(decode::ip_sets(&r.ipsets));
                let target = decode::target(&r.container_id, &r.pod_uid, 0);
                let meta = decode::meta(&ctx, &target, None)?;
                firewall::set_firewall(&st.engine, &st.runtimes, &target, part, &meta)
                    .await
                    .map(|_| ())
                    .map_err(status::of)
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
                let part = firewall::Part::Chains(decode::iptables_chains(&r.chains)?);
                let target = decode::target(&r.container_id, &r.pod_uid, 0);
                let meta = decode::meta(&ctx, &target, None)?;
                firewall::set_firewall(&st.engine, &st.runtimes, &target, part, &meta)
                    .await
                    .map(|_| ())
                    .map_err(status::of)
            },
        )
        .await
    }

    async fn set_dns_server(
        &self,
        req: Request<pb::SetDnsServerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            SERVICE,
            "SetDNSServer",
            req,
            |r| r.container_id.clone(),
            |ctx, r| async move {
                let target = decode::target(&r.container_id, "", 0);
                let meta = decode::meta(&ctx, &target, None)?;
                dns::set_dns_server(
                    &st.engine,
                    &st.runtimes,
                    &target,
                    &r.dns_server,
                    r.enable,
                    &meta,
                )
                .await
                .map(|_| ())
                .map_err(status::of)
            },
        )
        .await
    }

    async fn set_time_offset(
        &self,
        req: Request<pb::TimeRequest>,
    ) -> Result<Response<Empty>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            SERVICE,
            "SetTimeOffset",
            req,
            |r| r.container_id.clone(),
            |ctx, r| async move {
                let target = decode::target(&r.container_id, "", 0);
                let meta = decode::meta(&ctx, &target, None)?;
                time::set_time_offset(
                    &st.engine,
                    &st.runtimes,
                    &target,
                    &decode::time_spec(&r),
                    &meta,
                )
                .await
                .map(|_| ())
                .map_err(status::of)
            },
        )
        .await
    }

    async fn recover_time_offset(
        &self,
        req: Request<pb::TimeRequest>,
    ) -> Result<Response<Empty>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            SERVICE,
            "RecoverTimeOffset",
            req,
            |r| r.container_id.clone(),
            |_, r| async move {
                let target = decode::target(&r.container_id, "", 0);
                time::recover_time_offset(&st.engine, &target, &r.pod_container_name, &r.uid)
                    .await
                    .map(|_| ())
                    .map_err(status::of)
            },
        )
        .await
    }

    async fn apply_http_chaos(
        &self,
        req: Request<pb::ApplyHttpChaosRequest>,
    ) -> Result<Response<pb::ApplyHttpChaosResponse>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            SERVICE,
            "ApplyHttpChaos",
            req,
            |r| r.container_id.clone(),
            |ctx, r| async move {
                let target = decode::target(&r.container_id, "", 0);
                let meta = decode::meta(&ctx, &target, None)?;
                let req = decode::http_request(&r);
                match http::fault::apply_http_chaos(&st.engine, &st.runtimes, &target, &req, &meta)
                    .await
                {
                    // The proxy is faultd itself: its identity is the instance.
                    Ok(_) => {
                        let me = http::fault::instance();
                        Ok(pb::ApplyHttpChaosResponse {
                            instance: i64::from(me.pid),
                            start_time: me.start_time_ms,
                            status_code: 200,
                            error: String::new(),
                            instance_uid: String::new(),
                        })
                    }
                    // The controller shows `error` for any status code but 200.
                    Err(e) if e.is_bad_input() => Ok(pb::ApplyHttpChaosResponse {
                        status_code: 400,
                        error: e.to_string(),
                        ..Default::default()
                    }),
                    Err(e) => Err(status::of(e)),
                }
            },
        )
        .await
    }

    async fn apply_io_chaos(
        &self,
        req: Request<pb::ApplyIoChaosRequest>,
    ) -> Result<Response<pb::ApplyIoChaosResponse>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            SERVICE,
            "ApplyIOChaos",
            req,
            |r| r.container_id.clone(),
            |ctx, r| async move {
                let target = decode::target(&r.container_id, "", 0);
                let meta = decode::meta(&ctx, &target, None)?;
                let req = decode::io_request(&r);
                let rec = io::fault::apply_io_chaos(&st.engine, &st.runtimes, &target, &req, &meta)
                    .await
                    .map_err(status::of)?;
                // The layer is served by faultd itself: its identity is the instance; no
                // actions left means no instance (upstream's `instance=0`).
                Ok(match rec {
                    Some(_) => {
                        let me = io::fault::instance();
                        pb::ApplyIoChaosResponse {
                            instance: i64::from(me.pid),
                            start_time: me.start_time_ms,
                            instance_uid: String::new(),
                        }
                    }
                    None => pb::ApplyIoChaosResponse::default(),
                })
            },
        )
        .await
    }

    async fn install_jvm_rules(
        &self,
        req: Request<pb::InstallJvmRulesRequest>,
    ) -> Result<Response<Empty>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            SERVICE,
            "InstallJVMRules",
            req,
            |r| r.container_id.clone(),
            |ctx, r| async move {
                let target = decode::target(&r.container_id, "", 0);
                let meta = decode::meta(&ctx, &target, None)?;
                let req = decode::jvm_request(&r.rule, r.port);
                jvm::fault::install_jvm_rules(&st.engine, &st.runtimes, &target, &req, &meta)
                    .await
                    .map_err(status::of)?;
                Ok(())
            },
        )
        .await
    }

    async fn uninstall_jvm_rules(
        &self,
        req: Request<pb::UninstallJvmRulesRequest>,
    ) -> Result<Response<Empty>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            SERVICE,
            "UninstallJVMRules",
            req,
            |r| r.container_id.clone(),
            |_, r| async move {
                let target = decode::target(&r.container_id, "", 0);
                let req = decode::jvm_request(&r.rule, r.port);
                jvm::fault::uninstall_jvm_rules(&st.engine, &st.runtimes, &target, &req)
                    .await
                    .map_err(status::of)?;
                Ok(())
            },
        )
        .await
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
                    return Err(status::invalid(format!(
                        "container action is {}, not KILL",
                        action.as_str_name()
                    )));
                }
                st.runtimes.kill(&r.container_id).await.map_err(status::of)
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
                let who = st.runtimes.pid(&r.container_id).await.map_err(status::of)?;
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
                let sreq = decode::stress_request(&r)?;
                let target = decode::target(&r.target, "", 0);
                let meta = decode::meta(&ctx, &target, None)?;
                let allow = st.config.allow_unbounded_memory_stress;
                let recs =
                    stress::exec_stressors(&st.engine, &st.runtimes, &target, sreq, &meta, allow)
                        .await
                        .map_err(status::of)?;
                Ok(stress_response(stress::Instances::of(&recs)))
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
            |_, r| async move {
                let mut workers = Vec::new();
                for (label, instance, start) in [
                    ("cpuInstance", &r.cpu_instance, r.cpu_start_time),
                    ("memoryInstance", &r.memory_instance, r.memory_start_time),
                ] {
                    if instance.is_empty() {
                        continue;
                    }
                    let pid: u32 = instance.trim().parse().map_err(|_| {
                        status::invalid(format!("{label} {instance:?} is not a process id"))
                    })?;
                    workers.push((pid, start));
                }
                stress::cancel_stressors(&st.engine, &workers)
                    .await
                    .map_err(status::of)
            },
        )
        .await
    }
}

/// The controller's view of stress faults: `(pid string, gopsutil start time)` per kind; the
/// `*InstanceUid` fields stay empty (the controller ignores them).
pub fn stress_response(w: stress::Instances) -> pb::ExecStressResponse {
    let mut resp = pb::ExecStressResponse::default();
    if let Some(c) = w.cpu {
        resp.cpu_instance = c.pid.to_string();
        resp.cpu_start_time = c.start_time_ms;
    }
    if let Some(m) = w.memory {
        resp.memory_instance = m.pid.to_string();
        resp.memory_start_time = m.start_time_ms;
    }
    resp
}
