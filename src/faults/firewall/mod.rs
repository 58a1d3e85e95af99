//! Network partition faults (`FlushIPSets`, `SetIptablesChains`) as one private nftables table
//! per network namespace, `table inet faultd`, which faultd alone writes.
//!
//! Upstream creates ipsets and iptables chains with one `ipset`/`iptables` command each and never
//! deletes them (#4336), and its image forces iptables-legacy (#4251). faultd keeps the pod's
//! desired state instead (the last ipsets and the last chains; each RPC carries the full list
//! of its part, an empty list means recover) in the fault record, renders the whole table from
//! it on every call and loads it as one nf_tables netlink batch, one transaction ([`nl`], sent
//! over a per-namespace socket kept open while faults live there, [`conn`]). Recovering deletes
//! the table: nothing else is left in the namespace. nft tables sit beside iptables (legacy or
//! nft) in netfilter, so the host's iptables flavour does not matter. Needs `CAP_NET_ADMIN` (and
//! `CAP_SYS_ADMIN` to enter the namespace); no `nft` program (the text form, [`render`], is what
//! `nft list table inet faultd` shows, and what the tests compare against a real nft).
//!
//! Mapping of upstream semantics (see [`model`] and [`render`] for the details):
//! * `hash:net` → nft interval sets of addresses (`v4_<name>`, `v6_<name>`; IPv6 entries are
//!   accepted, upstream's ipsets are IPv4 only); `hash:net,port` → sets of
//!   `address . inet_service` (`v4port_<name>`, ...) matched on TCP, ipset's default protocol
//!   when the controller's `cidr,port` entries name none; `list:set` has no nft equivalent and
//!   becomes the union of its members (which must be in the same request).
//! * Chain direction INPUT → `input` hook, `iifname <device>`, the ipset matched on the source
//!   address (upstream `--match-set <set> src,dst`; for `hash:net,port` the port is the
//!   destination port); OUTPUT → `output` hook, `oifname <device>`, destination address and
//!   destination port (`dst,dst`). `device` defaults to `eth0`. Protocol, ports (iptables
//!   syntax: `80`, `80:90`, `a,b,c`), TCP flags (`MASK COMP`) become the matching nft
//!   expressions. Targets come from an allow-list: DROP, ACCEPT, REJECT and its
//!   `--reject-with` types; anything else is INVALID_ARGUMENT.
//! * A chain naming an ipset the state does not have is FAILED_PRECONDITION on
//!   `SetIptablesChains`; when a later `FlushIPSets` drops an ipset that chains still name (the
//!   controller recovers ipsets before chains), those references match nothing until the chains
//!   are replaced.
//!
//! Ownership: the table carries an empty marker chain `owner_<fault id>` naming the fault record
//! that wrote it. A fault's undo deletes the table only while that marker is there (deleting
//! the marker chain and the table in one transaction fails as a whole otherwise), and it is
//! undone when the table is absent or carries another fault's marker. That lets
//! [`set_firewall`] apply the new state first (an atomic replace, no instant without the
//! partition) and end the replaced fault afterwards, and makes a failed update leave the
//! previous state in place. A `faultd` table carrying no marker of a fault faultd knows is not
//! touched: applying refuses with FAILED_PRECONDITION, and `faultd doctor --fix` removes it.
mod compile;
pub mod conn;
pub mod model;
pub mod nl;
pub mod nlsock;
mod nlwire;
pub mod render;
pub mod rule;
pub mod tproxy;
mod validate;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::netns::NetnsRef;
use super::target::{Target, TargetError};
use crate::engine::{
    Durability, Effect, EffectCtx, EffectError, EndReason, Engine, EngineError, FailureKind,
    FaultMeta, FaultRecord, Holds, Phase, Scope, TargetIdentity,
};
use crate::ns::NsId;
use crate::process::ProcessIdentity;
use crate::runtime::Runtimes;

pub use model::{
    check_references, compile, validate_part, Chain, CidrAndPort, Classify, DesiredState,
    Direction, IpSet, Part, Table,
};
pub use nlsock::{Listing, TableState};

/// Errors of partition requests and of the nft calls behind them.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("invalid {field} {value}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    #[error("chain {chain} names ipset {ipset}, which this pod does not have (FlushIPSets creates ipsets before SetIptablesChains uses them)")]
    MissingIpSet { chain: String, ipset: String },
    #[error("{0}")]
    ForeignTable(String),
    #[error("nf_tables {op}: {what}: {}{}", std::io::Error::from_raw_os_error(*errno), if kernel_lacks_support(*errno, what) { " (the kernel lacks nf_tables support this needs: nf_tables itself, a module such as nft_reject_inet, or the concatenated-range sets of Linux 5.6+)" } else { "" })]
    Kernel {
        op: String,
        what: String,
        errno: i32,
    },
    #[error("nf_tables {op}: {message}")]
    Io { op: String, message: String },
    #[error("entering the target network namespace: {0}")]
    Namespace(String),
    #[error("reading table inet faultd back: {0}")]
    ReadBack(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

crate::impl_failure!(FirewallError);

impl FirewallError {
    pub fn kind(&self) -> FailureKind {
        match self {
            FirewallError::Invalid { .. } => FailureKind::InvalidArgument,
            FirewallError::MissingIpSet { .. } | FirewallError::ForeignTable(_) => {
                FailureKind::FailedPrecondition
            }
            FirewallError::Kernel { errno, what, .. } if kernel_lacks_support(*errno, what) => {
                FailureKind::FailedPrecondition
            }
            FirewallError::Kernel { .. }
            | FirewallError::Io { .. }
            | FirewallError::Namespace(_)
            | FirewallError::ReadBack(_)
            | FirewallError::Internal(_) => FailureKind::Internal,
            FirewallError::Target(e) => crate::failure::Failure::failure(e),
            FirewallError::Engine(e) => e.kind(),
        }
    }
}

/// The kernel's answers when it has no nf_tables, or lacks a module a rule or set needs
/// (nft_reject_inet, the pipapo set backend of kernels before 5.6, ...): `EOPNOTSUPP` or
/// `EPROTONOSUPPORT`/`EAFNOSUPPORT`, or `ENOENT` for an expression or set type it cannot load.
fn kernel_lacks_support(errno: i32, what: &str) -> bool {
    matches!(
        errno,
        libc::EOPNOTSUPP | libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT
    ) || (errno == libc::ENOENT && (what.starts_with("add rule") || what.starts_with("add set")))
}

/// Creates and deletes a scratch `inet faultd_probe` table in the caller's network namespace,
/// over its own netfilter socket (doctor's kernel probe; blocking).
pub fn probe_table() -> Result<(), FirewallError> {
    nlsock::NfSocket::open()?.commit("probe", &nl::probe_batch())
}

/// Reads faultd's table in `ns`.
pub async fn table_state(ns: &crate::ns::Namespace) -> Result<TableState, FirewallError> {
    conn::with_socket(ns, |s| s.table_state()).await
}

/// Sends one batch to `ns` as one transaction.
pub async fn commit(
    ns: &crate::ns::Namespace,
    op: &'static str,
    batch: nl::Batch,
) -> Result<(), FirewallError> {
    conn::with_socket_sized(ns, conn::job_size(&batch), move |s| s.commit(op, &batch)).await
}

/// The fault record's effect: the desired state of one network namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FirewallFault {
    pub netns: NetnsRef,
    pub state: DesiredState,
    pub description: String,
}

impl FirewallFault {
    fn namespace(&self) -> Option<crate::ns::Namespace> {
        self.netns.find()
    }
}

impl Effect for FirewallFault {
    fn kind(&self) -> String {
        "firewall".into()
    }

    fn scope(&self) -> Scope {
        self.netns.scope()
    }

    /// Qdiscs / nftables objects die with the kernel (host namespace included).
    fn durability(&self) -> Durability {
        Durability::Boot
    }

    fn summary(&self) -> String {
        self.description.clone()
    }

    fn apply<'a>(
        &'a self,
        ctx: &'a EffectCtx,
    ) -> BoxFuture<'a, Result<Option<ProcessIdentity>, EffectError>> {
        Box::pin(async move {
            let ns = self.namespace().ok_or_else(|| {
                EffectError::new(
                    FailureKind::NotFound,
                    "the target network namespace is gone",
                )
            })?;
            let table = compile(&self.state).map_err(EffectError::of)?;
            let batch = nl::apply_batch(&table, &ctx.fault_id).map_err(EffectError::of)?;
            // One job on the namespace's socket: the batch, then the read-back (the kernel must
            // hold exactly what was written, marked as ours).
            let state = conn::with_socket_holding(&ns, conn::job_size(&batch), move |s| {
                s.commit("apply", &batch)?;
                s.table_state()
            })
            .await
            .map_err(EffectError::of)?;
            let (sets, chains) = render::expected_layout(&table, &ctx.fault_id);
            match state {
                TableState::Present(l)
                    if l.owner() == Some(ctx.fault_id.as_str())
                        && l.sets == sets
                        && l.chains == chains =>
                {
                    Ok(None)
                }
                TableState::Present(l) => Err(EffectError::internal(format!(
                    "read-back of table inet faultd does not match what was written: owners {:?}, {} set(s) (expected {}), chains {:?} (expected {:?})",
                    l.owners,
                    l.sets.len(),
                    sets.len(),
                    l.chains,
                    chains
                ))),
                TableState::Absent => Err(EffectError::internal(
                    "table inet faultd is absent right after it was written",
                )),
            }
        })
    }

    fn revert<'a>(&'a self, ctx: &'a EffectCtx) -> BoxFuture<'a, Result<(), EffectError>> {
        Box::pin(async move {
            let Some(ns) = self.namespace() else {
                return Ok(()); // the namespace is gone, and the table with it
            };
            // One job on the namespace's socket: the marker check, the delete, and (when the
            // delete fails) the check whether the marker went away meanwhile, which fails the
            // batch as a whole. Absent, or written by another fault (the one that replaced this
            // one): nothing to undo.
            let marker = render::owner_chain(&ctx.fault_id);
            let batch = nl::delete_owned_batch(&ctx.fault_id).map_err(EffectError::of)?;
            let deleted = conn::with_socket(&ns, move |s| {
                if !s.has_chain(&marker)? {
                    return Ok(false);
                }
                match s.commit("recover", &batch) {
                    Ok(()) => Ok(true),
                    Err(e) if s.has_chain(&marker)? => Err(e),
                    Err(_) => Ok(false),
                }
            })
            .await
            .map_err(EffectError::of)?;
            if deleted {
                // The namespace's last fault ended: its socket may go.
                conn::release(ns.id());
            }
            Ok(())
        })
    }

    fn is_reverted<'a>(&'a self, ctx: &'a EffectCtx) -> BoxFuture<'a, Result<bool, EffectError>> {
        Box::pin(async move {
            let Some(ns) = self.namespace() else {
                return Ok(true);
            };
            let marker = render::owner_chain(&ctx.fault_id);
            let ours = conn::with_socket(&ns, move |s| s.has_chain(&marker))
                .await
                .map_err(EffectError::of)?;
            Ok(!ours)
        })
    }

    fn manual_cleanup(&self) -> String {
        format!(
            "nsenter --net=/proc/{}/ns/net nft delete table inet faultd",
            self.netns.holder_pid
        )
    }

    fn target_gone(&self, _: &EffectCtx) -> bool {
        self.namespace().is_none()
    }
}

/// The journal group of faultd's table in one network namespace.
pub fn group_of(ns: &NsId) -> String {
    format!("fw/{}:{}", ns.dev, ns.ino)
}

fn list_some<T>(items: &[T], f: impl Fn(&T) -> String) -> String {
    const SHOWN: usize = 6;
    let mut v: Vec<String> = items.iter().take(SHOWN).map(f).collect();
    if items.len() > SHOWN {
        v.push(format!("+{} more", items.len() - SHOWN));
    }
    v.join(", ")
}

/// One line for listings.
pub fn describe(state: &DesiredState) -> String {
    format!(
        "table inet faultd: {} ipset(s) [{}], {} chain(s) [{}]{}",
        state.sets.len(),
        list_some(&state.sets, |s| format!("{} {}", s.set_type, s.name)),
        state.chains.len(),
        list_some(&state.chains, |c| format!(
            "{} {} -> {}",
            c.direction.as_str(),
            c.name,
            c.target
        )),
        if state.classify.is_empty() {
            String::new()
        } else {
            format!(", {} tc classification(s)", state.classify.len())
        }
    )
}

/// Replaces one part (ipsets or chains) of the desired state of the target's network
/// namespace (upstream `FlushIPSets` / `SetIptablesChains`; the pod's sandbox answers for a
/// container without a running task). Returns the new fault, or `None` when the state became
/// empty and the table was removed.
pub async fn set_firewall<E: Holds<FirewallFault>>(
    engine: &Engine<E>,
    runtimes: &Runtimes,
    target: &Target,
    part: Part,
    meta: &FaultMeta,
) -> Result<Option<FaultRecord<E>>, FirewallError> {
    validate_part(&part)?;
    let pid = target
        .resolve(runtimes, "container_id (or pod_uid)")
        .await?;
    set_firewall_for(engine, pid, part, meta).await
}

/// [`set_firewall`] for a resolved process (also used by `SetTcs` for its classification).
pub async fn set_firewall_for<E: Holds<FirewallFault>>(
    engine: &Engine<E>,
    pid: ProcessIdentity,
    part: Part,
    meta: &FaultMeta,
) -> Result<Option<FaultRecord<E>>, FirewallError> {
    validate_part(&part)?;
    let (netns, ns) =
        NetnsRef::of_pid(pid.pid).map_err(|e| FirewallError::Namespace(e.to_string()))?;
    if !pid.is_alive() {
        return Err(TargetError::Gone(pid.pid).into());
    }
    let group = group_of(&netns.id);
    let lock = engine.lock_group(&group).await;

    let active = engine.active_in_group(&group);
    let current = active
        .iter()
        .rev()
        .find_map(|r| Holds::<FirewallFault>::get(&r.effect).map(|f| f.state.clone()))
        .unwrap_or_default();
    let chains_call = matches!(part, Part::Chains(_) | Part::Classify(_));
    let desired = current.with(part);
    if chains_call {
        check_references(&desired)?;
    }
    compile(&desired)?;
    // Faults of this namespace whose undo failed earlier: their table is faultd's own residue,
    // which the new state may replace; they are ended with the others below.
    let failed = engine
        .list(false)
        .into_iter()
        .filter(|r| r.group == group && r.phase == Phase::Failed);
    let previous: Vec<String> = active
        .iter()
        .map(|r| r.id.clone())
        .chain(failed.map(|r| r.id))
        .collect();

    if desired.is_empty() {
        for id in &previous {
            engine.revert_locked(&lock, id, EndReason::Request).await?;
        }
        return Ok(None);
    }

    if let Some(owners) = conn::with_socket(&ns, |s| s.owners()).await? {
        let l = Listing {
            owners,
            ..Default::default()
        };
        let known = l.owner().is_some_and(|o| previous.iter().any(|p| p == o));
        if !known {
            return Err(FirewallError::ForeignTable(format!(
                "the target network namespace already has an nftables table inet faultd that no fault of this daemon wrote (owner marker: {}); inspect it with `nft list table inet faultd` in that namespace and remove it (`faultd doctor --fix` does)",
                l.owner().map(|o| format!("fault {o}")).unwrap_or_else(|| "none".into())
            )));
        }
    }

    let fault = FirewallFault {
        netns: netns.clone(),
        description: describe(&desired),
        state: desired,
    };
    let target = TargetIdentity {
        container_id: meta.container_id.clone(),
        pod_uid: meta.pod_uid.clone(),
        pid: pid.pid,
        pid_start_time_ms: pid.start_time_ms,
        netns_dev: netns.id.dev,
        netns_ino: netns.id.ino,
        device: String::new(),
    };
    let rec = engine
        .apply_locked(&lock, meta.fault(E::wrap(fault), target, &group))
        .await?;
    // The new table replaced the old one atomically; ending the old faults finds their marker
    // gone and leaves the table alone.
    for id in &previous {
        if let Err(e) = engine.revert_locked(&lock, id, EndReason::Replaced).await {
            tracing::warn!(fault = %id, error = %e, "ending a replaced firewall fault failed");
        }
    }
    Ok(Some(rec))
}

/// A `table inet faultd` that no fault faultd knows accounts for (doctor).
#[derive(Debug, Clone)]
pub struct StrayTable {
    pub netns: NsId,
    pub label: String,
    pub detail: String,
    pub removed: bool,
}

/// Scans `namespaces` for faultd tables whose owner marker names none of `owners` (the faults
/// the journal still accounts for); with `fix`, deletes them. Namespaces nft cannot be run in
/// are skipped. Reads use a one-off socket unless the namespace has a kept one; a removal goes
/// through the kept socket, released afterwards.
pub async fn stray_tables(
    namespaces: &[(NsId, crate::ns::Namespace, String)],
    owners: &std::collections::HashSet<String>,
    fix: bool,
) -> Vec<StrayTable> {
    let mut out = Vec::new();
    for (id, ns, label) in namespaces {
        let state = conn::with_socket_once(ns, |s| s.table_state()).await;
        let Ok(TableState::Present(l)) = state else {
            continue;
        };
        if l.owner().is_some_and(|o| owners.contains(o)) {
            continue;
        }
        let removed = fix && commit(ns, "remove", nl::delete_any_batch()).await.is_ok();
        if fix {
            conn::release(*id);
        }
        out.push(StrayTable {
            netns: *id,
            label: label.clone(),
            detail: format!(
                "table inet faultd (owner marker: {}; {} set(s), {} chain(s))",
                l.owner().unwrap_or("none"),
                l.sets.len(),
                l.chains.len()
            ),
            removed,
        });
    }
    out
}

#[cfg(test)]
mod tests;
