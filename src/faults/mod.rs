//! The fault kinds. Each kind is one module below this one and owns its request use case (what
//! a Chaos Mesh RPC or `faultd.v1.Faults/ApplyFault` means for it), its [`Effect`], its errors
//! and its tests; it is written against [`crate::engine::Holds`], never against the enum here.
//! This module closes the set: [`FaultEffect`] is the one type the engine and the journal store,
//! and dispatches to the kinds. `docs/ARCHITECTURE.md` ("Adding a fault kind") says how a new
//! kind joins.
pub mod dns;
pub mod firewall;
pub mod http;
pub mod io;
pub mod json_list;
pub mod jvm;
pub mod netns;
pub mod qdisc;
pub mod stress;
pub mod target;
pub mod time;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::engine::{Effect, EffectCtx, EffectError, Engine, Holds, Scope};
use crate::process::ProcessIdentity;
use dns::DnsFault;
use firewall::FirewallFault;
use http::fault::HttpFault;
use io::fault::IoFault;
use jvm::fault::JvmFault;
use qdisc::QdiscFault;
use stress::StressFault;
use time::TimeFault;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FaultEffect {
    /// A qdisc tree on a device (netem, tbf).
    Qdisc(QdiscFault),
    /// A CPU or memory stressor in a container (StressChaos).
    Stress(StressFault),
    /// faultd's nftables table in a network namespace (ipsets and chains: partitions).
    Firewall(FirewallFault),
    /// A pod's resolv.conf pointing at the chaos DNS server (DNSChaos).
    Dns(DnsFault),
    /// The processes of a container running faultd's fake clock (TimeChaos).
    Time(TimeFault),
    /// faultd's HTTP proxy in a pod's network namespace (HTTPChaos).
    Http(HttpFault),
    /// faultd's FUSE layer on a volume of a container (IOChaos).
    Io(IoFault),
    /// A Byteman rule script in a JVM (JVMChaos).
    Jvm(JvmFault),
}

/// The engine as the daemon uses it.
pub type FaultEngine = Engine<FaultEffect>;

/// Makes a kind a member of [`FaultEffect`].
macro_rules! member {
    ($variant:ident, $kind:ty) => {
        impl Holds<$kind> for FaultEffect {
            fn wrap(k: $kind) -> Self {
                FaultEffect::$variant(k)
            }
            fn get(&self) -> Option<&$kind> {
                match self {
                    FaultEffect::$variant(k) => Some(k),
                    _ => None,
                }
            }
        }
    };
}

member!(Qdisc, QdiscFault);
member!(Stress, StressFault);
member!(Firewall, FirewallFault);
member!(Dns, DnsFault);
member!(Time, TimeFault);
member!(Http, HttpFault);
member!(Io, IoFault);
member!(Jvm, JvmFault);

macro_rules! dispatch {
    ($self:ident, $f:ident $(, $arg:expr)*) => {
        match $self {
            FaultEffect::Qdisc(x) => x.$f($($arg),*),
            FaultEffect::Stress(x) => x.$f($($arg),*),
            FaultEffect::Firewall(x) => x.$f($($arg),*),
            FaultEffect::Dns(x) => x.$f($($arg),*),
            FaultEffect::Time(x) => x.$f($($arg),*),
            FaultEffect::Http(x) => x.$f($($arg),*),
            FaultEffect::Io(x) => x.$f($($arg),*),
            FaultEffect::Jvm(x) => x.$f($($arg),*),
        }
    };
}

impl Effect for FaultEffect {
    fn kind(&self) -> String {
        dispatch!(self, kind)
    }
    fn scope(&self) -> Scope {
        dispatch!(self, scope)
    }
    fn durability(&self) -> crate::engine::Durability {
        dispatch!(self, durability)
    }
    fn summary(&self) -> String {
        dispatch!(self, summary)
    }
    fn capture<'a>(
        &'a self,
        ctx: &'a EffectCtx,
    ) -> BoxFuture<'a, Result<Option<Self>, EffectError>> {
        use futures_util::FutureExt;
        match self {
            FaultEffect::Qdisc(x) => x
                .capture(ctx)
                .map(|r| r.map(|o| o.map(FaultEffect::Qdisc)))
                .boxed(),
            FaultEffect::Stress(x) => x
                .capture(ctx)
                .map(|r| r.map(|o| o.map(FaultEffect::Stress)))
                .boxed(),
            FaultEffect::Firewall(x) => x
                .capture(ctx)
                .map(|r| r.map(|o| o.map(FaultEffect::Firewall)))
                .boxed(),
            FaultEffect::Dns(x) => x
                .capture(ctx)
                .map(|r| r.map(|o| o.map(FaultEffect::Dns)))
                .boxed(),
            FaultEffect::Time(x) => x
                .capture(ctx)
                .map(|r| r.map(|o| o.map(FaultEffect::Time)))
                .boxed(),
            FaultEffect::Http(x) => x
                .capture(ctx)
                .map(|r| r.map(|o| o.map(FaultEffect::Http)))
                .boxed(),
            FaultEffect::Io(x) => x
                .capture(ctx)
                .map(|r| r.map(|o| o.map(FaultEffect::Io)))
                .boxed(),
            FaultEffect::Jvm(x) => x
                .capture(ctx)
                .map(|r| r.map(|o| o.map(FaultEffect::Jvm)))
                .boxed(),
        }
    }
    fn apply<'a>(
        &'a self,
        ctx: &'a EffectCtx,
    ) -> BoxFuture<'a, Result<Option<ProcessIdentity>, EffectError>> {
        dispatch!(self, apply, ctx)
    }
    fn applied(&self, ctx: &EffectCtx) -> Option<Self> {
        match self {
            FaultEffect::Io(x) => x.applied(ctx).map(FaultEffect::Io),
            _ => None,
        }
    }
    fn revert<'a>(&'a self, ctx: &'a EffectCtx) -> BoxFuture<'a, Result<(), EffectError>> {
        dispatch!(self, revert, ctx)
    }
    fn is_reverted<'a>(&'a self, ctx: &'a EffectCtx) -> BoxFuture<'a, Result<bool, EffectError>> {
        dispatch!(self, is_reverted, ctx)
    }
    fn manual_cleanup(&self) -> String {
        dispatch!(self, manual_cleanup)
    }
    fn target_gone(&self, ctx: &EffectCtx) -> bool {
        dispatch!(self, target_gone, ctx)
    }
    fn gone_reason(&self, ctx: &EffectCtx) -> crate::engine::EndReason {
        dispatch!(self, gone_reason, ctx)
    }
}
