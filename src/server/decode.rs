//! Decoding of request messages into the domain's types (and of the request metadata into a
//! [`FaultMeta`]): shared by the `pb.ChaosDaemon` and `faultd.v1` adapters. Validation of the
//! values themselves belongs to the fault kinds.
use std::time::Duration;

use tonic::Status;

use super::call::CallContext;
use super::status;
use crate::engine::FaultMeta;
use crate::faults::firewall;
use crate::faults::qdisc::{TcRule, TcRuleKind};
use crate::faults::stress::StressRequest;
use crate::faults::target::Target;
use crate::proto::pb;
use crate::tc::netem::NetemArgs;
use crate::tc::tbf::TbfArgs;

/// Decodes `pb.Tc` rules into the domain's form.
pub fn tc_rules(tcs: &[pb::Tc]) -> Result<Vec<TcRule>, Status> {
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
        Some(v) => crate::duration::parse_duration(v)
            .map(Some)
            .map_err(|e| status::invalid(format!("faultd-ttl header: {e}"))),
    }
}

/// The request's metadata as a [`FaultMeta`]; `ttl` (faultd.v1's own field) wins over the
/// `faultd-ttl` header.
pub fn meta(
    ctx: &CallContext,
    target: &Target,
    ttl: Option<Duration>,
) -> Result<FaultMeta, Status> {
    Ok(FaultMeta {
        owner: ctx.peer.clone(),
        ttl: match ttl {
            Some(t) => Some(t),
            None => ttl_from_header(ctx)?,
        },
        lease_id: ctx.lease_header.clone(),
        container_id: target.container_id().to_string(),
        pod_uid: target.pod_uid().to_string(),
    })
}

/// A container target, or a host PID when `pid` is not zero (faultd.v1 only).
pub fn target(container_id: &str, pod_uid: &str, pid: u32) -> Target {
    if pid != 0 {
        Target::Pid(pid)
    } else {
        Target::Container {
            id: container_id.to_string(),
            pod_uid: pod_uid.to_string(),
        }
    }
}

/// `pb.ExecStressRequest` as a [`StressRequest`].
pub fn stress_request(req: &pb::ExecStressRequest) -> Result<StressRequest, Status> {
    if req.scope() != pb::exec_stress_request::Scope::Container {
        return Err(status::invalid(
            "scope POD is not supported by faultd (the Chaos Mesh controller sends CONTAINER)",
        ));
    }
    StressRequest::parse(
        &req.cpu_stressors,
        &req.memory_stressors,
        req.oom_score_adj,
        req.enter_ns,
    )
    .map_err(status::of)
}

/// Decodes `pb.IPSet`s into the domain's form (validated by `crate::faults::firewall`).
pub fn ip_sets(sets: &[pb::IpSet]) -> Vec<firewall::IpSet> {
    sets.iter()
        .map(|s| firewall::IpSet {
            name: s.name.clone(),
            set_type: s.r#type.clone(),
            cidrs: s.cidrs.clone(),
            cidr_and_ports: s
                .cidr_and_ports
                .iter()
                .map(|c| firewall::CidrAndPort {
                    cidr: c.cidr.clone(),
                    port: c.port,
                })
                .collect(),
            set_names: s.set_names.clone(),
        })
        .collect()
}

/// Decodes `pb.Chain`s into the domain's form; an unknown direction is INVALID_ARGUMENT.
pub fn iptables_chains(chains: &[pb::Chain]) -> Result<Vec<firewall::Chain>, Status> {
    use firewall::Direction;
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
            Ok(firewall::Chain {
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

/// A `TimeRequest` as TimeChaos's use case takes it.
pub fn time_spec(req: &pb::TimeRequest) -> crate::faults::time::TimeSpec {
    crate::faults::time::TimeSpec {
        entry: crate::faults::time::TimeEntry {
            uid: req.uid.clone(),
            sec: req.sec,
            nsec: req.nsec,
            mask: req.clk_ids_mask,
        },
        key: req.pod_container_name.clone(),
    }
}

/// An `ApplyHttpChaosRequest` as HTTPChaos's use case takes it (`instance`, `startTime` and
/// `instance_uid` name upstream's proxy process; faultd serves the proxy itself).
pub fn http_request(req: &pb::ApplyHttpChaosRequest) -> crate::faults::http::fault::HttpRequest {
    crate::faults::http::fault::HttpRequest {
        rules: req.rules.clone(),
        ports: req.proxy_ports.clone(),
        tls: req.tls.clone(),
    }
}

/// An `ApplyIOChaosRequest` as IOChaos's use case takes it (`instance`, `startTime`,
/// `instance_uid` and `enterNS` describe upstream's toda process; faultd serves the layer
/// itself and always works in the container's mount namespace).
pub fn io_request(req: &pb::ApplyIoChaosRequest) -> crate::faults::io::fault::IoRequest {
    crate::faults::io::fault::IoRequest {
        actions: req.actions.clone(),
        volume: req.volume.clone(),
    }
}

/// An `InstallJVMRulesRequest` (or `UninstallJVMRulesRequest`, the same fields) as JVMChaos's
/// use cases take it (`enterNS` is always how faultd works).
pub fn jvm_request(rule: &str, port: i32) -> crate::faults::jvm::fault::JvmRequest {
    crate::faults::jvm::fault::JvmRequest {
        rule: rule.to_string(),
        port,
    }
}
