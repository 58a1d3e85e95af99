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

use crate::engine::{Effect, EffectCtx, EffectError, Engine, Holds, Scope, Staged};
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

/// Runs `$call` on the member `x` and maps what it returns back into the set with `$back`,
/// called with the member's constructor (`FaultEffect::Qdisc`, ...).
macro_rules! rewrap {
    ($self:ident, |$x:ident| $call:expr, $back:expr) => {
        match $self {
            FaultEffect::Qdisc($x) => $back($call, FaultEffect::Qdisc),
            FaultEffect::Stress($x) => $back($call, FaultEffect::Stress),
            FaultEffect::Firewall($x) => $back($call, FaultEffect::Firewall),
            FaultEffect::Dns($x) => $back($call, FaultEffect::Dns),
            FaultEffect::Time($x) => $back($call, FaultEffect::Time),
            FaultEffect::Http($x) => $back($call, FaultEffect::Http),
            FaultEffect::Io($x) => $back($call, FaultEffect::Io),
            FaultEffect::Jvm($x) => $back($call, FaultEffect::Jvm),
        }
    };
}

/// A member's capture result as the set's.
fn captured<'a, K: Send + 'a>(
    f: BoxFuture<'a, Result<Option<K>, EffectError>>,
    wrap: fn(K) -> FaultEffect,
) -> BoxFuture<'a, Result<Option<FaultEffect>, EffectError>> {
    use futures_util::FutureExt;
    f.map(move |r| r.map(|o| o.map(wrap))).boxed()
}

/// A member's capture-and-apply result as the set's.
fn staged<'a, K: Send + 'a>(
    f: BoxFuture<'a, Result<Staged<K>, EffectError>>,
    wrap: fn(K) -> FaultEffect,
) -> BoxFuture<'a, Result<Staged<FaultEffect>, EffectError>> {
    use futures_util::FutureExt;
    f.map(move |r| r.map(|s| s.map(wrap))).boxed()
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
        rewrap!(self, |x| x.capture(ctx), captured)
    }
    fn capture_and_apply<'a>(
        &'a self,
        ctx: &'a EffectCtx,
    ) -> BoxFuture<'a, Result<Staged<Self>, EffectError>> {
        rewrap!(self, |x| x.capture_and_apply(ctx), staged)
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
    fn revert_and_check<'a>(
        &'a self,
        ctx: &'a EffectCtx,
    ) -> BoxFuture<'a, Result<bool, EffectError>> {
        dispatch!(self, revert_and_check, ctx)
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
