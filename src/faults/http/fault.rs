//! The HTTPChaos fault of one pod network namespace and its use case (`ApplyHttpChaos`): every
//! call is the pod's full desired state; an empty one ends it.
//!
//! Apply: the proxy (a transparent listener in the namespace, served by faultd: [`super::serve`])
//! takes the fault's rules, then `table inet faultd_http` sends the proxied ports to it (one
//! nf_tables batch, owner-marked with the fault id). Nothing of the pod's addressing, routes or
//! ARP changes. Undo: the table goes (only if this fault's marker is in it), then the proxy
//! stops if this fault holds it. A replacing fault takes the proxy and the table over, so the
//! replaced fault's undo finds neither its marker nor its ownership and leaves both.
//!
//! The fault is `Boot` durable (kernel and process state only) and `Netns` scoped. The journal
//! holds the namespace, ports, listener port and the rules as sent (never the TLS key): after a
//! faultd crash the listener is gone with the process, the `tproxy` rule fails open (new
//! connections reach the application), and the next start deletes the table.
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::proxy::ProxyConfig;
use super::{serve, HttpError};
use crate::engine::{
    Durability, Effect, EffectCtx, EffectError, EndReason, Engine, EngineError, FailureKind,
    FaultMeta, FaultRecord, Holds, Scope, TargetIdentity,
};
use crate::faults::firewall::conn;
use crate::faults::firewall::render::owner_chain;
use crate::faults::firewall::tproxy::{self, Interception, HTTP_TABLE};
use crate::faults::netns::NetnsRef;
use crate::faults::target::{Target, TargetError};
use crate::process::ProcessIdentity;
use crate::runtime::Runtimes;

/// Why an `ApplyHttpChaos` failed: bad input (the RPC answers `statusCode` 400 with it) or the
/// node (a gRPC status).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Input(HttpError),
    #[error("proxy_ports: {0}")]
    Ports(String),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("the target's network namespace: {0}")]
    Netns(String),
    #[error("starting the proxy in the pod's network namespace: {0}")]
    Listener(std::io::Error),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl ApplyError {
    pub fn kind(&self) -> FailureKind {
        use crate::failure::Failure;
        match self {
            ApplyError::Input(_) | ApplyError::Ports(_) => FailureKind::InvalidArgument,
            ApplyError::Target(e) => e.failure(),
            ApplyError::Netns(_) => FailureKind::NotFound,
            ApplyError::Listener(_) => FailureKind::Internal,
            ApplyError::Engine(e) => e.kind(),
        }
    }

    /// Whether the RPC reports it as `statusCode` 400 (bad rules, TLS or ports) rather than as
    /// a gRPC status.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, ApplyError::Input(_) | ApplyError::Ports(_))
    }
}

crate::impl_failure!(ApplyError);

/// faultd's HTTP proxy in one pod network namespace: the fault record's effect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpFault {
    pub netns: NetnsRef,
    pub container: String,
    /// What the table sends to the proxy.
    pub interception: Interception,
    /// Names this fault's proxy configuration while it is staged and running.
    pub token: String,
    /// The rules as the controller sent them (for display; the proxy has them parsed).
    pub rules: String,
    /// Whether TLS is terminated (its certificate and key are never journaled).
    pub tls: bool,
    pub rule_count: usize,
}

fn effect_err(e: impl std::fmt::Display, kind: FailureKind) -> EffectError {
    EffectError::new(kind, e.to_string())
}

impl Effect for HttpFault {
    fn kind(&self) -> String {
        "http".into()
    }

    fn scope(&self) -> Scope {
        self.netns.scope()
    }

    fn durability(&self) -> Durability {
        Durability::Boot
    }

    fn summary(&self) -> String {
        format!(
            "HTTP proxy on port{} {} ({} rule(s){}) via :{} for {}",
            if self.interception.ports.len() > 1 {
                "s"
            } else {
                ""
            },
            self.interception
                .ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
            self.rule_count,
            if self.tls { ", TLS" } else { "" },
            self.interception.listener,
            if self.container.is_empty() {
                format!("the network namespace of pid {}", self.netns.holder_pid)
            } else {
                self.container.clone()
            }
        )
    }

    fn apply<'a>(
        &'a self,
        ctx: &'a EffectCtx,
    ) -> BoxFuture<'a, Result<Option<ProcessIdentity>, EffectError>> {
        Box::pin(async move {
            let ns = self.netns.find().ok_or_else(|| {
                EffectError::new(
                    FailureKind::NotFound,
                    "the target network namespace is gone",
                )
            })?;
            let config = serve::unstage(&self.token).ok_or_else(|| {
                EffectError::internal("the proxy configuration of this fault is not staged")
            })?;
            if serve::port_of(ns.id()) != Some(self.interception.listener) {
                return Err(EffectError::internal(format!(
                    "no proxy listens on port {} of the pod's network namespace",
                    self.interception.listener
                )));
            }
            // The reply route first (harmless alone: only marked packets use it), then the
            // table, then the proxy's rules: a failed commit leaves the proxy (and a replaced
            // fault's table) as they were.
            if self.interception.mark.is_some() {
                crate::tc::socket::in_netns(&ns, super::route::install)
                    .await
                    .map_err(|e| EffectError::internal(e.to_string()))?;
            }
            let batch = tproxy::apply_batch(&self.interception, &ctx.fault_id)
                .map_err(|e| effect_err(&e, e.kind()))?;
            let marker = owner_chain(&ctx.fault_id);
            let ours = conn::with_socket_holding(&ns, conn::job_size(&batch), move |s| {
                s.commit("apply HTTPChaos", &batch)?;
                s.has_chain_in(HTTP_TABLE, &marker)
            })
            .await
            .map_err(|e| effect_err(&e, e.kind()))?;
            if !ours {
                return Err(EffectError::internal(
                    "table inet faultd_http lacks this fault's marker right after it was written",
                ));
            }
            if !serve::activate(ns.id(), self.interception.listener, &self.token, config) {
                return Err(EffectError::internal(
                    "the pod's proxy stopped while it was configured",
                ));
            }
            Ok(None)
        })
    }

    fn revert<'a>(&'a self, ctx: &'a EffectCtx) -> BoxFuture<'a, Result<(), EffectError>> {
        Box::pin(async move {
            serve::unstage(&self.token);
            let Some(ns) = self.netns.find() else {
                // No process shows the namespace any more: the table went with it, but the
                // proxy's listener still holds the namespace alive until it is closed.
                serve::stop(self.netns.id, &self.token);
                return Ok(());
            };
            let marker = owner_chain(&ctx.fault_id);
            let batch =
                tproxy::delete_owned_batch(&ctx.fault_id).map_err(|e| effect_err(&e, e.kind()))?;
            conn::with_socket(&ns, move |s| {
                if !s.has_chain_in(HTTP_TABLE, &marker)? {
                    return Ok(());
                }
                match s.commit("recover HTTPChaos", &batch) {
                    Ok(()) => Ok(()),
                    Err(e) if s.has_chain_in(HTTP_TABLE, &marker)? => Err(e),
                    Err(_) => Ok(()),
                }
            })
            .await
            .map_err(|e| effect_err(&e, e.kind()))?;
            // The proxy goes after the table: no connection is sent to a closed listener.
            serve::stop(ns.id(), &self.token);
            // The reply route goes with the last faultd_http table of the namespace.
            let table_left = conn::with_socket(&ns, |s| s.has_table(HTTP_TABLE))
                .await
                .map_err(|e| effect_err(&e, e.kind()))?;
            if !table_left {
                crate::tc::socket::in_netns(&ns, super::route::remove)
                    .await
                    .map_err(|e| EffectError::internal(e.to_string()))?;
                // The namespace's kept netfilter socket may go (it holds the namespace).
                conn::release(ns.id());
            }
            Ok(())
        })
    }

    fn is_reverted<'a>(&'a self, ctx: &'a EffectCtx) -> BoxFuture<'a, Result<bool, EffectError>> {
        Box::pin(async move {
            let Some(ns) = self.netns.find() else {
                return Ok(!serve::owned_by(self.netns.id, &self.token));
            };
            let marker = owner_chain(&ctx.fault_id);
            let (ours, any) = conn::with_socket(&ns, move |s| {
                Ok((
                    s.has_chain_in(HTTP_TABLE, &marker)?,
                    s.has_table(HTTP_TABLE)?,
                ))
            })
            .await
            .map_err(|e| effect_err(&e, e.kind()))?;
            let route = !any
                && crate::tc::socket::in_netns(&ns, super::route::present)
                    .await
                    .map_err(|e| EffectError::internal(e.to_string()))?;
            Ok(!ours && !route && !serve::owned_by(ns.id(), &self.token))
        })
    }

    fn manual_cleanup(&self) -> String {
        let n = format!("nsenter --net=/proc/{}/ns/net", self.netns.holder_pid);
        format!(
            "{n} nft delete table inet {HTTP_TABLE}; {n} ip rule del fwmark {m:#x} lookup {t}; {n} ip -6 rule del fwmark {m:#x} lookup {t}; {n} ip route flush table {t}; {n} ip -6 route flush table {t}",
            m = super::route::MARK,
            t = super::route::TABLE
        )
    }

    fn target_gone(&self, _: &EffectCtx) -> bool {
        self.netns.find().is_none()
    }
}

/// The process that serves every proxy: faultd itself (the response's `instance` and
/// `startTime`, gopsutil's start time as for stressors).
pub fn instance() -> ProcessIdentity {
    static ME: std::sync::OnceLock<ProcessIdentity> = std::sync::OnceLock::new();
    *ME.get_or_init(|| {
        ProcessIdentity::of(std::process::id()).unwrap_or(ProcessIdentity {
            pid: std::process::id(),
            start_ticks: 0,
            start_time_ms: 0,
        })
    })
}

/// The journal group of the HTTPChaos of one network namespace.
pub fn group_of(ns: &crate::ns::NsId) -> String {
    format!("http/{}:{}", ns.dev, ns.ino)
}

/// What `ApplyHttpChaos` asks for.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    pub rules: String,
    pub ports: Vec<u32>,
    pub tls: String,
}

fn ports(raw: &[u32]) -> Result<Vec<u16>, ApplyError> {
    let mut out = Vec::with_capacity(raw.len());
    for p in raw {
        match u16::try_from(*p) {
            Ok(p) if p != 0 => {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
            _ => return Err(ApplyError::Ports(format!("{p} is not a TCP port"))),
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// `ApplyHttpChaos`: makes `req` the pod's HTTPChaos (no rules and no ports: none). Returns the
/// fault in force, if any.
pub async fn apply_http_chaos<E: Holds<HttpFault>>(
    engine: &Engine<E>,
    runtimes: &Runtimes,
    target: &Target,
    req: &HttpRequest,
    meta: &FaultMeta,
) -> Result<Option<FaultRecord<E>>, ApplyError> {
    let config = ProxyConfig::parse(&req.rules, &req.tls).map_err(ApplyError::Input)?;
    let ports = ports(&req.ports)?;
    if ports.is_empty() && !config.rules.is_empty() {
        return Err(ApplyError::Ports(
            "rules need the ports they apply to (proxy_ports is empty)".into(),
        ));
    }
    let who = target.resolve(runtimes, "container_id").await?;
    let (netns, ns) = NetnsRef::of_pid(who.pid).map_err(|e| ApplyError::Netns(e.to_string()))?;
    let group = group_of(&netns.id);
    let lock = engine.lock_group(&group).await;
    let active = engine.active_in_group(&group);
    let previous: Vec<String> = active.iter().map(|r| r.id.clone()).collect();
    if ports.is_empty() {
        for id in previous {
            engine.revert_locked(&lock, &id, EndReason::Request).await?;
        }
        return Ok(None);
    }
    let listener = serve::prepare(&ns).await.map_err(ApplyError::Listener)?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let fault = HttpFault {
        netns,
        container: target.container_id().to_string(),
        interception: Interception {
            ports,
            listener,
            mark: Some(super::route::MARK),
        },
        token: token.clone(),
        rules: req.rules.clone(),
        tls: config.tls.is_some(),
        rule_count: config.rules.len(),
    };
    serve::stage(&token, config);
    let identity = TargetIdentity {
        container_id: target.container_id().to_string(),
        pod_uid: meta.pod_uid.clone(),
        pid: who.pid,
        pid_start_time_ms: who.start_time_ms,
        netns_dev: fault.netns.id.dev,
        netns_ino: fault.netns.id.ino,
        ..Default::default()
    };
    let applied = engine
        .apply_locked(&lock, meta.fault(E::wrap(fault), identity, &group))
        .await;
    serve::unstage(&token);
    let rec = match applied {
        Ok(rec) => rec,
        Err(e) => {
            // Nothing took the proxy over: stop a listener this call started.
            if active.is_empty() {
                serve::stop(ns.id(), "");
            }
            return Err(e.into());
        }
    };
    for id in previous {
        if let Err(e) = engine.revert_locked(&lock, &id, EndReason::Replaced).await {
            tracing::warn!(fault = %id, error = %e, "ending a replaced HTTPChaos fault failed");
        }
    }
    Ok(Some(rec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_validated_deduplicated_and_sorted() {
        assert_eq!(ports(&[8080, 80, 8080]).unwrap(), vec![80, 8080]);
        assert!(ports(&[0]).is_err());
        assert!(ports(&[70000]).is_err());
        assert!(ApplyError::Ports("x".into()).is_bad_input());
    }
}
