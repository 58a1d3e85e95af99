//! Traffic-control faults (`SetTcs`): the qdisc tree faultd installs on one device of one network
//! namespace, with the root qdisc that was there before, so recovery puts back exactly what was
//! there instead of deleting the root as every peer does.
//!
//! Upstream semantics are kept: each `SetTcs` call carries the full desired state of the pod, an
//! empty list means recover, global rules (no ipset, no protocol) are chained one under the other
//! (rule *i* gets handle `i+1:` under parent `i:`), and `device` defaults to `eth0`.

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::firewall::{self, FirewallFault};
use super::netns::NetnsRef;
use super::target::{Target, TargetError};
use crate::engine::{
    Durability, EffectCtx, EffectError, EndReason, Engine, EngineError, FailureKind, FaultMeta,
    FaultRecord, Holds, Scope, Staged, TargetIdentity,
};
use crate::ns::NsId;
use crate::process::ProcessIdentity;
use crate::runtime::Runtimes;
use crate::tc::netem::{NetemArgs, NetemSpec};
use crate::tc::qdisc::{self, AddMode, Qdisc};
use crate::tc::tbf::{TbfArgs, TbfSpec};
use crate::tc::{in_kept_netns, release_kept, RouteSocket, TcError, TcErrorClass, TC_H_ROOT};

/// Errors of network fault requests.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Tc(#[from] TcError),
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("traffic classification: {0}")]
    Firewall(Box<firewall::FirewallError>),
}

crate::impl_failure!(NetError);

impl NetError {
    pub fn kind(&self) -> FailureKind {
        match self {
            NetError::Tc(e) => tc_kind(e),
            NetError::Unsupported(_) => FailureKind::FailedPrecondition,
            NetError::Engine(e) => e.kind(),
            NetError::Target(e) => crate::failure::Failure::failure(e),
            NetError::Firewall(e) => e.kind(),
        }
    }
}

fn tc_kind(e: &TcError) -> FailureKind {
    match e.class() {
        TcErrorClass::InvalidArgument => FailureKind::InvalidArgument,
        TcErrorClass::NotFound => FailureKind::NotFound,
        TcErrorClass::Unsupported => FailureKind::FailedPrecondition,
        TcErrorClass::Internal => match e.errno() {
            // The kernel does not know the qdisc kind (no sch_netem / sch_prio module).
            Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) => FailureKind::FailedPrecondition,
            _ => FailureKind::Internal,
        },
    }
}

fn effect_err(e: TcError) -> EffectError {
    EffectError::new(tc_kind(&e), e.to_string())
}

/// One `pb.Tc` rule, decoded by the server layer.
#[derive(Debug, Clone)]
pub enum TcRuleKind {
    Netem(NetemArgs),
    Tbf(TbfArgs),
}

#[derive(Debug, Clone)]
pub struct TcRule {
    pub kind: TcRuleKind,
    pub ipset: String,
    pub protocol: String,
    pub device: String,
}

/// A qdisc tree on one device: the fault record's effect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QdiscFault {
    pub netns: NetnsRef,
    pub device: String,
    /// Installed in order: the root first. The journal keeps each qdisc's kind, handle and
    /// parent but not its options: the undo removes the tree by its root's handle and nothing
    /// ever installs a tree read back from the journal, while a tbf's rate table alone made
    /// every record 2 KiB (of hex) larger, four times per fault.
    #[serde(serialize_with = "tree_shape")]
    pub tree: Vec<Qdisc>,
    /// The root qdisc before faultd touched the device.
    pub prior_root: Option<Qdisc>,
    pub description: String,
}

impl QdiscFault {
    /// Runs `f` with the route socket kept for the fault's namespace (on its thread); `hold`:
    /// the job belongs to the live fault (the socket stays open for its undo).
    async fn in_netns<T, F>(&self, hold: bool, f: F) -> Result<T, EffectError>
    where
        T: Send + 'static,
        F: FnOnce(&mut RouteSocket) -> crate::tc::Result<T> + Send + 'static,
    {
        let netns = &self.netns;
        in_kept_netns(netns.id, || netns.find(), hold, f)
            .await
            .map_err(effect_err)
    }

    /// Runs `f` on the fault's device inside its namespace (on the namespace's kept socket
    /// thread); `None` when the namespace or the device is gone.
    async fn on_device<T, F>(&self, f: F) -> Result<Option<T>, EffectError>
    where
        T: Send + 'static,
        F: FnOnce(&mut RouteSocket, u32) -> crate::tc::Result<T> + Send + 'static,
    {
        let device = self.device.clone();
        let netns = &self.netns;
        let found = in_kept_netns(
            netns.id,
            || netns.find(),
            false,
            move |s| match qdisc::link_index(s, &device) {
                Ok(idx) => f(s, idx).map(Some),
                Err(TcError::LinkNotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            },
        )
        .await;
        match found {
            Err(TcError::NamespaceGone) => Ok(None),
            r => r.map_err(effect_err),
        }
    }

    /// Installs the tree on device `idx` (with the namespace's kept socket) over a root that is
    /// not the kernel's default (that case is [`QdiscFault::install_over_default`]). A root of
    /// another kind cannot be replaced in place: it is deleted first.
    fn install(&self, s: &mut RouteSocket, idx: u32) -> crate::tc::Result<()> {
        qdisc::delete_root_qdisc(s, idx)?;
        add_all(s, idx, &self.tree)
    }

    /// Installs the tree if the device's root is the kernel's default, in one request and
    /// without reading the root first: the kernel takes an exclusive add of a root only over
    /// its own default root (handle 0), and refuses it (`EEXIST`, nothing changed) over any
    /// configured root, faultd residue included. `false` then: the caller captures that root.
    /// A success is exactly what the intent (no prior root) says to undo.
    fn install_over_default(&self, s: &mut RouteSocket, idx: u32) -> crate::tc::Result<bool> {
        let Some((root, rest)) = self.tree.split_first() else {
            return Ok(false);
        };
        match qdisc::apply_qdisc(s, idx, root, AddMode::Exclusive) {
            Ok(()) => {}
            Err(crate::tc::TcError::Kernel { errno, .. }) if errno == libc::EEXIST => {
                return Ok(false)
            }
            Err(e) => return Err(e),
        }
        add_all(s, idx, rest)?;
        Ok(true)
    }

    /// Removes the tree from device `idx` and puts the prior root back (on a namespace thread).
    /// Only faultd's own root goes: a fault that ended before its tree was installed (or a root
    /// someone else put there since) is left alone.
    fn uninstall(&self, s: &mut RouteSocket, idx: u32) -> crate::tc::Result<()> {
        if let Some(handle) = self.tree.first().map(|q| q.handle) {
            qdisc::delete_root_qdisc_if(s, idx, handle)?;
        }
        match self.prior_root.as_ref().filter(|p| !p.is_kernel_default()) {
            Some(p) => qdisc::restore_root_qdisc(s, idx, p),
            None => Ok(()),
        }
    }

    /// What the capture makes of the device's root and its number of child qdiscs: `None` when
    /// the intent already says everything (the kernel's default root, faultd residue, the same
    /// root as recorded), the completed fault when there is a root to restore, an error for a
    /// tree faultd could not rebuild.
    fn completed_by(
        &self,
        (root, children): (Option<Qdisc>, usize),
    ) -> Result<Option<QdiscFault>, EffectError> {
        // The kernel's default root: deleting faultd's tree restores it, which is what the
        // intent (no prior root) already says.
        let Some(root) = root.filter(|r| !r.is_kernel_default()) else {
            return Ok(None);
        };
        // A faultd tree is never prior state: under the group lock no fault of this device
        // is live, so it is residue (of a crash the journal lost), which apply replaces.
        if is_faultd_handle(root.handle) {
            tracing::warn!(device = %self.device, handle = format!("{:x}:", root.handle >> 16), "replacing a faultd qdisc tree no live fault owns (residue)");
            return Ok(None);
        }
        if root.is_classful() && children > 0 {
            return Err(EffectError::new(
                FailureKind::FailedPrecondition,
                format!(
                    "device {} has a classful root qdisc ({}) with {children} child qdisc(s); faultd restores roots exactly and refuses to replace a tree it could not rebuild",
                    self.device, root.kind
                ),
            ));
        }
        if self.prior_root.as_ref() == Some(&root) {
            return Ok(None);
        }
        Ok(Some(QdiscFault {
            prior_root: Some(root),
            ..self.clone()
        }))
    }

    /// Whether `root`, the device's root after an undo, shows the fault reverted.
    fn reverted_given(&self, root: Option<Qdisc>) -> bool {
        match (&self.prior_root, root) {
            // Compared in restorable form: htb's dump carries a packet counter.
            (Some(p), Some(r)) if !p.is_kernel_default() => {
                let same = r.for_restore() == p.for_restore();
                if !same {
                    tracing::warn!(device = %self.device, prior = ?p, now = ?r, "root qdisc differs from the recorded prior state");
                }
                same
            }
            (_, None) => true,
            // Nothing to restore: reverted once no faultd qdisc is the root.
            (_, Some(r)) => !is_faultd_handle(r.handle),
        }
    }

    pub fn kind_name(&self) -> String {
        self.tree
            .iter()
            .map(|q| q.kind.as_str())
            .collect::<Vec<_>>()
            .join("+")
    }
}

impl crate::engine::Effect for QdiscFault {
    fn kind(&self) -> String {
        self.kind_name()
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
        _: &'a EffectCtx,
    ) -> BoxFuture<'a, Result<Option<ProcessIdentity>, EffectError>> {
        Box::pin(async move {
            let me = self.clone();
            self.in_netns(true, move |s| {
                let idx = qdisc::link_index(s, &me.device)?;
                me.install(s, idx)
            })
            .await?;
            Ok(None)
        })
    }

    fn capture<'a>(&'a self, _: &'a EffectCtx) -> BoxFuture<'a, Result<Option<Self>, EffectError>> {
        Box::pin(async move {
            // A gone namespace or device: apply reports it, with nothing touched.
            let Some(found) = self.on_device(prior_of).await? else {
                return Ok(None);
            };
            self.completed_by(found)
        })
    }

    /// One visit to the namespace: the capture, and when it finds nothing more to restore than
    /// the intent says (the usual pod device), the apply right after it.
    fn capture_and_apply<'a>(
        &'a self,
        _: &'a EffectCtx,
    ) -> BoxFuture<'a, Result<Staged<Self>, EffectError>> {
        Box::pin(async move {
            let me = self.clone();
            self.in_netns(true, move |s| {
                let idx = qdisc::link_index(s, &me.device)?;
                if me.prior_root.is_none() && me.install_over_default(s, idx)? {
                    return Ok(Ok(Staged::Applied(None)));
                }
                Ok(match me.completed_by(prior_of(s, idx)?) {
                    Ok(None) => {
                        me.install(s, idx)?;
                        Ok(Staged::Applied(None))
                    }
                    other => other.map(Staged::Captured),
                })
            })
            .await?
        })
    }

    /// [`Effect::revert_and_check`](crate::engine::Effect::revert_and_check) without its
    /// verdict: the read-back rides on the same visit.
    fn revert<'a>(&'a self, ctx: &'a EffectCtx) -> BoxFuture<'a, Result<(), EffectError>> {
        Box::pin(async move { self.revert_and_check(ctx).await.map(|_| ()) })
    }

    fn is_reverted<'a>(&'a self, _: &'a EffectCtx) -> BoxFuture<'a, Result<bool, EffectError>> {
        Box::pin(async move {
            let Some(root) = self.on_device(qdisc::root_qdisc).await? else {
                return Ok(true);
            };
            Ok(self.reverted_given(root))
        })
    }

    /// One visit to the namespace: the undo, then the root read back. A gone namespace or
    /// device took the fault with it: nothing to undo.
    fn revert_and_check<'a>(
        &'a self,
        _: &'a EffectCtx,
    ) -> BoxFuture<'a, Result<bool, EffectError>> {
        Box::pin(async move {
            let me = self.clone();
            let root = self
                .on_device(move |s, idx| {
                    me.uninstall(s, idx)?;
                    qdisc::root_qdisc(s, idx)
                })
                .await?;
            release_kept(self.netns.id);
            // A gone namespace or device: nothing of the fault is left.
            Ok(root.is_none_or(|root| self.reverted_given(root)))
        })
    }

    fn manual_cleanup(&self) -> String {
        let mut s = format!(
            "nsenter --net=/proc/{}/ns/net tc qdisc del dev {} root",
            self.netns.holder_pid, self.device
        );
        if let Some(p) = self.prior_root.as_ref().filter(|p| !p.is_kernel_default()) {
            s.push_str(&format!(
                " (then re-create the original root qdisc: {} handle {:x}:)",
                p.kind,
                p.handle >> 16
            ));
        }
        s
    }

    fn target_gone(&self, _: &EffectCtx) -> bool {
        self.netns.find().is_none()
    }
}

/// Serializes a fault's tree without its qdiscs' options (see [`QdiscFault::tree`]).
fn tree_shape<S: serde::Serializer>(tree: &[Qdisc], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Shape<'a> {
        kind: &'a str,
        handle: u32,
        parent: u32,
    }
    s.collect_seq(tree.iter().map(|q| Shape {
        kind: &q.kind,
        handle: q.handle,
        parent: q.parent,
    }))
}

/// Adds `qdiscs` to device `idx` in order, each exclusively (`tc qdisc add`).
fn add_all(s: &mut RouteSocket, idx: u32, qdiscs: &[Qdisc]) -> crate::tc::Result<()> {
    qdiscs
        .iter()
        .try_for_each(|q| qdisc::apply_qdisc(s, idx, q, AddMode::Exclusive))
}

/// Device `idx`'s root qdisc and how many child qdiscs hang below it (ingress and clsact do
/// not count): what the capture reads.
fn prior_of(s: &mut RouteSocket, idx: u32) -> crate::tc::Result<(Option<Qdisc>, usize)> {
    let all = qdisc::dump_qdiscs(s, idx)?;
    let children = all
        .iter()
        .filter(|q| q.parent != TC_H_ROOT && q.kind != "ingress" && q.kind != "clsact")
        .count();
    Ok((all.into_iter().find(|q| q.parent == TC_H_ROOT), children))
}

/// The qdisc tree of one device, built from the rules for that device, and the traffic
/// classification its ipset-filtered rules need.
#[derive(Debug, Clone)]
pub struct DevicePlan {
    pub device: String,
    pub tree: Vec<Qdisc>,
    pub classify: Vec<firewall::Classify>,
    pub description: String,
}

impl DevicePlan {
    /// The root handle's number (`fa01:` is 1).
    pub fn base(&self) -> u32 {
        self.tree
            .first()
            .map_or(1, |q| (q.handle >> 16) - HANDLE_MAJOR_BASE)
    }

    /// Moves every faultd handle of the tree (and the classes its classification names) up by
    /// `by` majors, so that consecutive faults of one device never share a root handle: a late
    /// undo of the previous fault (guarded by its root handle) can then never remove this one.
    /// `None` when the shifted tree would leave faultd's handle range.
    pub fn shifted(&self, by: u32) -> Option<DevicePlan> {
        let mv = |h: u32| {
            if is_faultd_handle(h) {
                let major = (h >> 16) + by;
                (major < HANDLE_MAJOR_BASE + 0xFF).then_some((major << 16) | (h & 0xFFFF))
            } else {
                Some(h)
            }
        };
        let mut out = self.clone();
        for q in &mut out.tree {
            q.handle = mv(q.handle)?;
            q.parent = mv(q.parent)?;
        }
        for k in &mut out.classify {
            k.class = mv(k.class)?;
        }
        Some(out)
    }
}

const DEFAULT_DEVICE: &str = "eth0";

/// faultd's qdiscs use majors `fa01:`, `fa02:`, ... so residue is recognisable on any node
/// (upstream uses `1:`, `2:`, which other tools use too). The controller never sees handles.
pub const HANDLE_MAJOR_BASE: u32 = 0xFA00;

/// Whether a qdisc handle is one faultd hands out.
pub fn is_faultd_handle(handle: u32) -> bool {
    handle >> 24 == 0xFA && (handle >> 16) & 0xFF != 0
}

fn handle(n: u32) -> u32 {
    (HANDLE_MAJOR_BASE + n) << 16
}

fn rule_qdisc(
    r: &TcRule,
    parent: u32,
    handle: u32,
    parts: &mut Vec<String>,
) -> Result<Qdisc, NetError> {
    Ok(match &r.kind {
        TcRuleKind::Netem(a) => {
            let spec = NetemSpec::from_args(a)?;
            parts.push(format!("netem {}", spec.tc_args().join(" ")));
            Qdisc::netem(parent, handle, &spec)
        }
        TcRuleKind::Tbf(a) => {
            let spec = TbfSpec::from_args(a)?;
            parts.push(format!("tbf rate {}", a.rate));
            Qdisc::tbf(parent, handle, &spec)?
        }
    })
}

/// Groups rules by device and builds each device's tree as upstream does: global rules (no
/// ipset, no protocol) chained one under the other; if any rule is filtered, a `prio` qdisc
/// under them with 3 + F bands (upstream's priomap), filter group *j* (by ipset and protocol,
/// in request order) chained under class `prio:j+4`, and a classification of its traffic into
/// that class (nftables `meta priority`, like upstream's iptables `CLASSIFY`). Upstream puts sfq
/// on bands 1-3; faultd leaves the kernel's default there.
pub fn plan(rules: &[TcRule]) -> Result<Vec<DevicePlan>, NetError> {
    let mut devices: Vec<(String, Vec<&TcRule>)> = Vec::new();
    for r in rules {
        let dev = if r.device.is_empty() {
            DEFAULT_DEVICE.to_string()
        } else {
            r.device.clone()
        };
        validate_device(&dev)?;
        match devices.iter_mut().find(|(d, _)| *d == dev) {
            Some((_, v)) => v.push(r),
            None => devices.push((dev, vec![r])),
        }
    }
    let too_many = |n: usize| {
        NetError::Tc(TcError::InvalidArgument {
            field: "tcs",
            value: n.to_string(),
            reason: "at most 254 qdiscs per device".into(),
        })
    };
    let mut plans = Vec::new();
    for (device, rules) in devices {
        let (global, filtered): (Vec<&TcRule>, Vec<&TcRule>) = rules
            .into_iter()
            .partition(|r| r.ipset.is_empty() && r.protocol.is_empty());
        let mut groups: Vec<((String, String), Vec<&TcRule>)> = Vec::new();
        for r in filtered {
            if r.ipset.is_empty() {
                return Err(NetError::Unsupported(format!(
                    "a tc rule filtered by protocol {:?} alone (without an ipset) is not supported",
                    r.protocol
                )));
            }
            let key = (r.ipset.clone(), r.protocol.clone());
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(r),
                None => groups.push((key, vec![r])),
            }
        }
        let mut tree = Vec::new();
        let mut parts = Vec::new();
        let mut classify = Vec::new();
        let mut next = 1u32; // next handle number
        let mut parent = TC_H_ROOT;
        for r in &global {
            if next >= 0xFF {
                return Err(too_many(global.len()));
            }
            tree.push(rule_qdisc(r, parent, handle(next), &mut parts)?);
            parent = handle(next);
            next += 1;
        }
        if !groups.is_empty() {
            let prio = crate::tc::prio::PrioSpec::chaos_mesh(groups.len())?;
            let prio_handle = handle(next);
            next += 1;
            tree.push(Qdisc::prio(parent, prio_handle, &prio));
            parts.push(format!("prio bands {}", prio.bands()));
            for (j, ((ipset, protocol), rules)) in groups.iter().enumerate() {
                let class = prio_handle | (j as u32 + 4);
                let mut p = class;
                for r in rules {
                    if next >= 0xFF {
                        return Err(too_many(next as usize));
                    }
                    tree.push(rule_qdisc(r, p, handle(next), &mut parts)?);
                    p = handle(next);
                    next += 1;
                }
                parts.push(format!(
                    "[to ipset {ipset}{}]",
                    if protocol.is_empty() {
                        String::new()
                    } else {
                        format!(" {protocol}")
                    }
                ));
                classify.push(firewall::Classify {
                    ipset: ipset.clone(),
                    protocol: protocol.clone(),
                    device: device.clone(),
                    class,
                });
            }
        }
        plans.push(DevicePlan {
            description: format!("dev {device}: {}", parts.join(" -> ")),
            device,
            tree,
            classify,
        });
    }
    Ok(plans)
}

/// Linux interface names (see [`crate::tc::qdisc::valid_ifname`]).
pub fn validate_device(name: &str) -> Result<(), NetError> {
    if !crate::tc::qdisc::valid_ifname(name) {
        return Err(NetError::Tc(TcError::InvalidArgument {
            field: "device",
            value: name.to_string(),
            reason: "not a valid interface name (1-15 printable characters, no '/' or ':')".into(),
        }));
    }
    Ok(())
}

/// The journal group of one device in one namespace.
pub fn group_of(ns: &NsId, device: &str) -> String {
    format!("tc/{}:{}/{}", ns.dev, ns.ino, device)
}

fn netns_prefix(ns: &NsId) -> String {
    format!("tc/{}:{}/", ns.dev, ns.ino)
}

/// Makes the target's network namespace carry exactly `rules` (upstream `SetTcs`): devices no
/// longer named are restored, named ones get their new tree, an empty list recovers everything.
/// Each device is changed under its group lock: the previous fault's rollback and the new
/// fault's capture and apply never interleave with any other change to that device.
pub async fn set_tcs<E>(
    engine: &Engine<E>,
    runtimes: &Runtimes,
    target: &Target,
    rules: &[TcRule],
    meta: &FaultMeta,
) -> Result<Vec<FaultRecord<E>>, NetError>
where
    E: Holds<QdiscFault> + Holds<FirewallFault>,
{
    // Planned (validated) before the target is resolved: bad rules are INVALID_ARGUMENT.
    let plans = plan(rules)?;
    let pid = target
        .resolve(runtimes, "container_id (or pod_uid)")
        .await?;
    apply_plans(engine, pid, plans, meta).await
}

/// [`set_tcs`] for a resolved process.
pub async fn set_tcs_for<E>(
    engine: &Engine<E>,
    pid: ProcessIdentity,
    rules: &[TcRule],
    meta: &FaultMeta,
) -> Result<Vec<FaultRecord<E>>, NetError>
where
    E: Holds<QdiscFault> + Holds<FirewallFault>,
{
    if !pid.is_alive() {
        return Err(TargetError::Gone(pid.pid).into());
    }
    apply_plans(engine, pid, plan(rules)?, meta).await
}

async fn apply_plans<E>(
    engine: &Engine<E>,
    pid: ProcessIdentity,
    plans: Vec<DevicePlan>,
    meta: &FaultMeta,
) -> Result<Vec<FaultRecord<E>>, NetError>
where
    E: Holds<QdiscFault> + Holds<FirewallFault>,
{
    let (netns, _) = NetnsRef::of_pid(pid.pid).map_err(TcError::from)?;
    let prefix = netns_prefix(&netns.id);
    // Devices faultd touched in this namespace before and that the new state no longer names.
    for g in engine.groups_with_prefix(&prefix) {
        if !plans.iter().any(|p| group_of(&netns.id, &p.device) == g) {
            let lock = engine.lock_group(&g).await;
            engine.revert_group(&lock, EndReason::Request).await?;
        }
    }
    let mut applied = Vec::new();
    let mut classify = Vec::new();
    for p in plans {
        let group = group_of(&netns.id, &p.device);
        let lock = engine.lock_group(&group).await;
        engine.revert_group(&lock, EndReason::Replaced).await?;
        // Never the previous fault's root handle (see DevicePlan::shifted).
        let previous_root = engine.last_in_group(&group).and_then(|r| {
            Holds::<QdiscFault>::get(&r.effect).and_then(|q| q.tree.first().map(|t| t.handle))
        });
        let p = match previous_root {
            Some(h) if p.tree.first().is_some_and(|t| t.handle == h) => p.shifted(1).unwrap_or(p),
            _ => p,
        };
        classify.extend(p.classify.iter().cloned());
        // The prior root is captured by the engine (QdiscFault::capture) while the intent is
        // journaled: after the revert above the device carries its original root again.
        let fault = QdiscFault {
            netns: netns.clone(),
            device: p.device.clone(),
            tree: p.tree,
            prior_root: None,
            description: p.description,
        };
        let target = TargetIdentity {
            container_id: meta.container_id.clone(),
            pod_uid: meta.pod_uid.clone(),
            pid: pid.pid,
            pid_start_time_ms: pid.start_time_ms,
            netns_dev: netns.id.dev,
            netns_ino: netns.id.ino,
            device: p.device.clone(),
        };
        let rec = engine
            .apply_locked(&lock, meta.fault(E::wrap(fault), target, &group))
            .await?;
        applied.push(rec);
    }
    // Classification for ipset-filtered rules lives in faultd's nftables table with the ipsets
    // (FlushIPSets comes first, as the controller orders its calls). Touch it only when there is
    // something to install or to clear.
    let fw_group = firewall::group_of(&netns.id);
    let has_classify = engine.active_in_group(&fw_group).iter().any(|r| {
        Holds::<FirewallFault>::get(&r.effect).is_some_and(|f| !f.state.classify.is_empty())
    });
    if !classify.is_empty() || has_classify {
        firewall::set_firewall_for(engine, pid, firewall::Part::Classify(classify), meta)
            .await
            .map_err(|e| NetError::Firewall(Box::new(e)))?;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tc::parse::NetemTime;

    fn netem(delay: &str, device: &str) -> TcRule {
        TcRule {
            kind: TcRuleKind::Netem(NetemArgs {
                time: NetemTime::Text(delay.into()),
                ..Default::default()
            }),
            ipset: String::new(),
            protocol: String::new(),
            device: device.into(),
        }
    }

    #[test]
    fn a_record_keeps_the_prior_root_whole_and_the_tree_without_options() {
        let mut tbf = netem("", "");
        tbf.kind = TcRuleKind::Tbf(TbfArgs {
            rate: "1mbit".into(),
            limit: 10000,
            buffer: 32000,
            ..Default::default()
        });
        let p = plan(&[tbf]).unwrap().remove(0);
        let prior = Qdisc {
            kind: "tbf".into(),
            handle: 0x0001_0000,
            parent: TC_H_ROOT,
            options: p.tree[0].options.clone(),
        };
        let f = QdiscFault {
            netns: crate::faults::netns::NetnsRef {
                id: crate::ns::NsId {
                    dev: 4,
                    ino: 4026531840,
                },
                holder_pid: 1,
                host: true,
            },
            device: p.device.clone(),
            tree: p.tree.clone(),
            prior_root: Some(prior.clone()),
            description: p.description.clone(),
        };
        let json = serde_json::to_string(&f).unwrap();
        // The tbf rate table (1 KiB) is in the record once: in the prior root.
        let table_hex = 2 * p.tree[0].options.as_ref().unwrap().len();
        assert!(table_hex > 2000);
        assert!(json.len() < table_hex + 512, "{} bytes: {json}", json.len());
        let back: QdiscFault = serde_json::from_str(&json).unwrap();
        assert_eq!(back.prior_root, Some(prior));
        let shape = |t: &[Qdisc]| -> Vec<(String, u32, u32)> {
            t.iter()
                .map(|q| (q.kind.clone(), q.handle, q.parent))
                .collect()
        };
        assert_eq!(shape(&back.tree), shape(&f.tree));
        assert!(back.tree.iter().all(|q| q.options.is_none()));
        // What the undo needs: the root's handle.
        assert_eq!(back.tree[0].handle, f.tree[0].handle);
        // Records written before this change (options in the tree) still read back.
        let old = json.replace(
            r#""parent":4294967295}]"#,
            r#""parent":4294967295,"options":"00"}]"#,
        );
        assert_ne!(old, json);
        let back: QdiscFault = serde_json::from_str(&old).unwrap();
        assert_eq!(back.tree[0].options, Some(vec![0]));
    }

    #[test]
    fn rules_chain_per_device_like_upstream() {
        let mut tbf = netem("", "");
        tbf.kind = TcRuleKind::Tbf(TbfArgs {
            rate: "1mbit".into(),
            limit: 10000,
            buffer: 32000,
            ..Default::default()
        });
        let plans = plan(&[netem("100ms", ""), tbf, netem("5ms", "eth1")]).unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].device, "eth0");
        let t = &plans[0].tree;
        assert_eq!(
            (t[0].kind.as_str(), t[0].parent, t[0].handle),
            ("netem", TC_H_ROOT, 0xFA01_0000)
        );
        assert_eq!(
            (t[1].kind.as_str(), t[1].parent, t[1].handle),
            ("tbf", 0xFA01_0000, 0xFA02_0000)
        );
        assert!(
            is_faultd_handle(t[1].handle)
                && !is_faultd_handle(0x1_0000)
                && !is_faultd_handle(0xFA00_0000)
        );
        assert_eq!(plans[1].device, "eth1");
        assert_eq!(plans[1].tree[0].handle, 0xFA01_0000);
    }

    #[test]
    fn a_shifted_plan_moves_every_faultd_handle_and_class() {
        let mut a = netem("100ms", "");
        a.ipset = "set-a".into();
        let p = &plan(&[netem("10ms", ""), a]).unwrap()[0];
        assert_eq!(p.base(), 1);
        let s = p.shifted(1).unwrap();
        assert_eq!(s.base(), 2);
        let got: Vec<(u32, u32)> = s.tree.iter().map(|q| (q.parent, q.handle)).collect();
        assert_eq!(
            got,
            vec![
                (TC_H_ROOT, 0xFA02_0000),
                (0xFA02_0000, 0xFA03_0000),
                (0xFA03_0004, 0xFA04_0000),
            ]
        );
        assert_eq!(s.classify[0].class, 0xFA03_0004);
        // Past faultd's range: refused rather than wrapped.
        assert!(p.shifted(0xFD).is_none());
    }

    #[test]
    fn bad_devices_and_filters_are_refused() {
        for bad in [
            "a/b",
            "toolongdevicename0",
            "",
            "eth0:1",
            "..",
            "e th0",
            "ëth0",
        ] {
            let mut r = netem("1ms", "x");
            r.device = bad.into();
            if bad.is_empty() {
                continue; // empty means eth0
            }
            assert!(
                matches!(plan(&[r]).unwrap_err().kind(), FailureKind::InvalidArgument),
                "{bad}"
            );
        }
        let mut r = netem("1ms", "");
        r.protocol = "tcp".into();
        assert_eq!(
            plan(&[r]).unwrap_err().kind(),
            FailureKind::FailedPrecondition
        );
        assert_eq!(
            plan(&[netem("-5ms", "")]).unwrap_err().kind(),
            FailureKind::InvalidArgument
        );
    }

    #[test]
    fn a_qdisc_kind_the_kernel_lacks_is_a_precondition_that_says_what_to_load() {
        for errno in [libc::ENOENT, libc::EOPNOTSUPP] {
            let e = TcError::KindMissing {
                kind: "netem".into(),
                errno,
            };
            assert_eq!(tc_kind(&e), FailureKind::FailedPrecondition);
            let effect = effect_err(e);
            assert_eq!(effect.kind, FailureKind::FailedPrecondition);
            assert_eq!(
                effect.message,
                "the kernel has no sch_netem (modprobe sch_netem)"
            );
        }
        let e = NetError::Tc(TcError::KindMissing {
            kind: "prio".into(),
            errno: libc::ENOENT,
        });
        assert_eq!(e.kind(), FailureKind::FailedPrecondition);
        assert_eq!(
            e.to_string(),
            "the kernel has no sch_prio (modprobe sch_prio)"
        );
        // Other kernel refusals keep their errno text.
        let other = TcError::Kernel {
            op: "add qdisc",
            errno: libc::EINVAL,
        };
        assert_eq!(tc_kind(&other), FailureKind::Internal);
    }

    #[test]
    fn ipset_filtered_rules_go_under_prio_bands_like_upstream() {
        let mut a = netem("100ms", "");
        a.ipset = "set-a".into();
        let mut a2 = netem("5ms", "");
        a2.ipset = "set-a".into();
        let mut b = netem("50ms", "");
        b.ipset = "set-b".into();
        b.protocol = "tcp".into();
        let plans = plan(&[netem("10ms", ""), a, b, a2]).unwrap();
        let t = &plans[0].tree;
        let got: Vec<(&str, u32, u32)> = t
            .iter()
            .map(|q| (q.kind.as_str(), q.parent, q.handle))
            .collect();
        assert_eq!(
            got,
            vec![
                ("netem", TC_H_ROOT, 0xFA01_0000),   // the global rule
                ("prio", 0xFA01_0000, 0xFA02_0000),  // 3 + 2 bands
                ("netem", 0xFA02_0004, 0xFA03_0000), // set-a, first rule
                ("netem", 0xFA03_0000, 0xFA04_0000), // set-a, chained
                ("netem", 0xFA02_0005, 0xFA05_0000), // set-b tcp
            ]
        );
        let k: Vec<(&str, &str, u32)> = plans[0]
            .classify
            .iter()
            .map(|k| (k.ipset.as_str(), k.protocol.as_str(), k.class))
            .collect();
        assert_eq!(
            k,
            vec![("set-a", "", 0xFA02_0004), ("set-b", "tcp", 0xFA02_0005)]
        );
        assert!(plans[0].classify.iter().all(|k| k.device == "eth0"));
        // Without global rules the prio qdisc is the root.
        let mut only = netem("1ms", "");
        only.ipset = "s".into();
        let p = plan(&[only]).unwrap();
        assert_eq!(
            (p[0].tree[0].kind.as_str(), p[0].tree[0].parent),
            ("prio", TC_H_ROOT)
        );
    }
}
