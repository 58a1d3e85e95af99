//! Adapters for faultd's own `faultd.v1` services: fault listing and control, leases, doctor.
//! The same services are served over mTLS and over the operators' local unix socket.
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::call::{handle, CallContext};
use super::{decode, status};
use crate::engine::{EndReason, FaultRecord, Phase};
use crate::faults::{dns, http, io, jvm, qdisc, stress, time, FaultEffect};
use crate::proto::faultd::v1 as api;
use crate::state::DaemonState;

const FAULTS: &str = "faultd.v1.Faults";
const LEASES: &str = "faultd.v1.Leases";
const DOCTOR: &str = "faultd.v1.Doctor";

#[derive(Clone)]
pub struct FaultdService {
    state: Arc<DaemonState>,
}

impl FaultdService {
    pub fn new(state: Arc<DaemonState>) -> Self {
        FaultdService { state }
    }
}

fn phase(p: Phase) -> api::Phase {
    match p {
        Phase::Intent => api::Phase::Intent,
        Phase::Applied => api::Phase::Applied,
        Phase::Reverting => api::Phase::Reverting,
        Phase::Reverted => api::Phase::Reverted,
        Phase::Failed => api::Phase::Failed,
    }
}

/// The API view of a journal record.
pub fn fault_to_api(r: &FaultRecord<FaultEffect>) -> api::Fault {
    use crate::engine::Effect;
    api::Fault {
        id: r.id.clone(),
        kind: r.kind.clone(),
        target: Some(api::Target {
            container_id: r.target.container_id.clone(),
            pod_uid: r.target.pod_uid.clone(),
            pid: r.target.pid,
            pid_start_time_ms: r.target.pid_start_time_ms,
            netns_dev: r.target.netns_dev,
            netns_inode: r.target.netns_ino,
            device: r.target.device.clone(),
            boot_id: r.boot_id.clone(),
        }),
        phase: phase(r.phase) as i32,
        owner: r.owner.clone(),
        lease_id: r.lease_id.clone().unwrap_or_default(),
        created_unix_ms: r.created_unix_ms,
        applied_unix_ms: r.applied_unix_ms,
        deadline_unix_ms: r.deadline.as_ref().map(|d| d.unix_ms).unwrap_or(0),
        ended_unix_ms: r.ended_unix_ms,
        end_reason: r
            .end_reason
            .map(|e| e.as_str().to_string())
            .unwrap_or_default(),
        last_error: r.last_error.clone(),
        summary: r.effect.summary(),
    }
}

fn lease_to_api(l: &crate::engine::Lease) -> api::Lease {
    api::Lease {
        id: l.id.clone(),
        name: l.name.clone(),
        period_seconds: l.period.as_secs(),
        expires_unix_ms: l.expires_unix_ms(),
        owner: l.owner.clone(),
        expired: l.expired,
    }
}

#[tonic::async_trait]
impl api::faults_server::Faults for FaultdService {
    async fn list_faults(
        &self,
        req: Request<api::ListFaultsRequest>,
    ) -> Result<Response<api::ListFaultsResponse>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            FAULTS,
            "ListFaults",
            req,
            |_| String::new(),
            |_, r| async move {
                Ok(api::ListFaultsResponse {
                    faults: st
                        .engine
                        .list(r.include_ended)
                        .iter()
                        .map(fault_to_api)
                        .collect(),
                })
            },
        )
        .await
    }

    async fn get_fault(
        &self,
        req: Request<api::GetFaultRequest>,
    ) -> Result<Response<api::Fault>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            FAULTS,
            "GetFault",
            req,
            |_| String::new(),
            |_, r| async move {
                st.engine
                    .get(&r.id)
                    .map(|f| fault_to_api(&f))
                    .ok_or_else(|| Status::not_found(format!("no fault with id {:?}", r.id)))
            },
        )
        .await
    }

    async fn apply_fault(
        &self,
        req: Request<api::ApplyFaultRequest>,
    ) -> Result<Response<api::Fault>, Status> {
        let st = self.state.clone();
        handle(&self.state, FAULTS, "ApplyFault", req, |r| match &r.fault {
            Some(api::apply_fault_request::Fault::SetTcs(t)) => t.container_id.clone(),
            Some(api::apply_fault_request::Fault::ExecStressors(s)) => s.target.clone(),
            Some(api::apply_fault_request::Fault::SetDnsServer(d)) => d.container_id.clone(),
            Some(api::apply_fault_request::Fault::SetTimeOffset(t)) => t.container_id.clone(),
            Some(api::apply_fault_request::Fault::ApplyHttpChaos(h)) => h.container_id.clone(),
            Some(api::apply_fault_request::Fault::ApplyIoChaos(h)) => h.container_id.clone(),
            Some(api::apply_fault_request::Fault::InstallJvmRules(h)) => h.container_id.clone(),
            None => String::new(),
        }, |ctx, r| async move {
            let ttl = (r.ttl_seconds > 0).then(|| Duration::from_secs(r.ttl_seconds));
            let ctx = CallContext {
                lease_header: Some(r.lease_id).filter(|l| !l.is_empty()),
                ..ctx
            };
            let recs = match r.fault {
                Some(api::apply_fault_request::Fault::SetTcs(tcs)) => {
                    if tcs.tcs.is_empty() {
                        return Err(Status::invalid_argument(
                            "set_tcs needs at least one rule (an empty list is a recover; use RevokeFault)",
                        ));
                    }
                    let rules = decode::tc_rules(&tcs.tcs)?;
                    let target = decode::target(&tcs.container_id, &tcs.pod_uid, r.target_pid);
                    let meta = decode::meta(&ctx, &target, ttl)?;
                    qdisc::set_tcs(&st.engine, &st.runtimes, &target, &rules, &meta)
                        .await
                        .map_err(status::of)?
                }
                Some(api::apply_fault_request::Fault::ExecStressors(req)) => {
                    let sreq = decode::stress_request(&req)?;
                    let target = decode::target(&req.target, "", r.target_pid);
                    let meta = decode::meta(&ctx, &target, ttl)?;
                    let allow = st.config.allow_unbounded_memory_stress;
                    stress::exec_stressors(&st.engine, &st.runtimes, &target, sreq, &meta, allow)
                        .await
                        .map_err(status::of)?
                }
                Some(api::apply_fault_request::Fault::SetDnsServer(req)) => {
                    if !req.enable {
                        return Err(Status::invalid_argument(
                            "set_dns_server needs enable = true (use RevokeFault to end it)",
                        ));
                    }
                    let target = decode::target(&req.container_id, "", r.target_pid);
                    let meta = decode::meta(&ctx, &target, ttl)?;
                    dns::set_dns_server(&st.engine, &st.runtimes, &target, &req.dns_server, true, &meta)
                        .await
                        .map_err(status::of)?
                        .into_iter()
                        .collect()
                }
                Some(api::apply_fault_request::Fault::SetTimeOffset(req)) => {
                    let target = decode::target(&req.container_id, "", r.target_pid);
                    let meta = decode::meta(&ctx, &target, ttl)?;
                    let mut spec = decode::time_spec(&req);
                    if spec.entry.uid.is_empty() {
                        spec.entry.uid = "faultd.v1".into();
                    }
                    vec![time::set_time_offset(&st.engine, &st.runtimes, &target, &spec, &meta)
                        .await
                        .map_err(status::of)?]
                }
                Some(api::apply_fault_request::Fault::ApplyHttpChaos(req)) => {
                    if req.proxy_ports.is_empty() {
                        return Err(Status::invalid_argument(
                            "apply_http_chaos needs proxy_ports and rules (use RevokeFault to end it)",
                        ));
                    }
                    let target = decode::target(&req.container_id, "", r.target_pid);
                    let meta = decode::meta(&ctx, &target, ttl)?;
                    http::fault::apply_http_chaos(&st.engine, &st.runtimes, &target, &decode::http_request(&req), &meta)
                        .await
                        .map_err(status::of)?
                        .into_iter()
                        .collect()
                }
                Some(api::apply_fault_request::Fault::ApplyIoChaos(req)) => {
                    let io = decode::io_request(&req);
                    if crate::faults::io::parse_actions(&io.actions).is_ok_and(|a| a.is_empty()) {
                        return Err(Status::invalid_argument(
                            "apply_io_chaos needs at least one action (use RevokeFault to end it)",
                        ));
                    }
                    let target = decode::target(&req.container_id, "", r.target_pid);
                    let meta = decode::meta(&ctx, &target, ttl)?;
                    io::fault::apply_io_chaos(&st.engine, &st.runtimes, &target, &io, &meta)
                        .await
                        .map_err(status::of)?
                        .into_iter()
                        .collect()
                }
                Some(api::apply_fault_request::Fault::InstallJvmRules(req)) => {
                    let target = decode::target(&req.container_id, "", r.target_pid);
                    let meta = decode::meta(&ctx, &target, ttl)?;
                    vec![jvm::fault::install_jvm_rules(&st.engine, &st.runtimes, &target, &decode::jvm_request(&req.rule, req.port), &meta)
                        .await
                        .map_err(status::of)?]
                }
                None => return Err(Status::invalid_argument("ApplyFault needs a fault body (set_tcs, exec_stressors, set_dns_server, set_time_offset, apply_http_chaos, apply_io_chaos or install_jvm_rules)")),
            };
            recs.first()
                .map(fault_to_api)
                .ok_or_else(|| Status::internal("no fault was recorded"))
        })
        .await
    }

    async fn revoke_fault(
        &self,
        req: Request<api::RevokeFaultRequest>,
    ) -> Result<Response<api::Fault>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            FAULTS,
            "RevokeFault",
            req,
            |_| String::new(),
            |_, r| async move {
                st.engine
                    .revert(&r.id, EndReason::Request)
                    .await
                    .map(|f| fault_to_api(&f))
                    .map_err(status::of)
            },
        )
        .await
    }

    async fn halt_all(
        &self,
        req: Request<api::HaltAllRequest>,
    ) -> Result<Response<api::HaltAllResponse>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            FAULTS,
            "HaltAll",
            req,
            |_| String::new(),
            |ctx, r| async move {
                tracing::warn!(peer = %ctx.peer, reason = %r.reason, "HaltAll requested");
                let report = st.engine.halt_all(EndReason::Halt).await;
                Ok(api::HaltAllResponse {
                    rolled_back: report.rolled_back as u32,
                    failed: report.failed as u32,
                    faults: report.faults.iter().map(fault_to_api).collect(),
                })
            },
        )
        .await
    }
}

#[tonic::async_trait]
impl api::leases_server::Leases for FaultdService {
    async fn create_lease(
        &self,
        req: Request<api::CreateLeaseRequest>,
    ) -> Result<Response<api::Lease>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            LEASES,
            "CreateLease",
            req,
            |_| String::new(),
            |ctx, r| async move {
                st.engine
                    .create_lease(&r.name, Duration::from_secs(r.period_seconds), &ctx.peer)
                    .map(|l| lease_to_api(&l))
                    .map_err(status::of)
            },
        )
        .await
    }

    async fn renew_lease(
        &self,
        req: Request<api::RenewLeaseRequest>,
    ) -> Result<Response<api::Lease>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            LEASES,
            "RenewLease",
            req,
            |_| String::new(),
            |_, r| async move {
                st.engine
                    .renew_lease(&r.id)
                    .map(|l| lease_to_api(&l))
                    .map_err(status::of)
            },
        )
        .await
    }

    async fn revoke_lease(
        &self,
        req: Request<api::RevokeLeaseRequest>,
    ) -> Result<Response<api::Lease>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            LEASES,
            "RevokeLease",
            req,
            |_| String::new(),
            |_, r| async move {
                st.engine
                    .revoke_lease(&r.id)
                    .map(|l| lease_to_api(&l))
                    .map_err(status::of)
            },
        )
        .await
    }
}

#[tonic::async_trait]
impl api::doctor_server::Doctor for FaultdService {
    async fn check(
        &self,
        req: Request<api::DoctorRequest>,
    ) -> Result<Response<api::DoctorReport>, Status> {
        let st = self.state.clone();
        handle(
            &self.state,
            DOCTOR,
            "Check",
            req,
            |_| String::new(),
            |_, r| async move {
                let report =
                    crate::doctor::run(&st.engine, &st.runtimes, &st.config.state_dir(), r.fix)
                        .await;
                st.metrics
                    .residue_detected
                    .set(report.residue.iter().filter(|x| !x.removed).count() as i64);
                Ok(api::DoctorReport {
                    residue: report
                        .residue
                        .into_iter()
                        .map(|x| api::Residue {
                            kind: x.kind,
                            location: x.location,
                            detail: x.detail,
                            removed: x.removed,
                        })
                        .collect(),
                    checks: report
                        .checks
                        .into_iter()
                        .map(|c| api::Check {
                            name: c.name,
                            ok: c.ok,
                            detail: c.detail,
                        })
                        .collect(),
                })
            },
        )
        .await
    }
}
