//! What the engine needs from a fault kind: apply it, undo it (idempotently), check that the
//! undo really took, and say where it lives (so reconciliation after a reboot knows whether the
//! kernel already dropped it).
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::process::ProcessIdentity;

/// Where a fault's state lives, which decides what a reboot does to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// In a pod's network namespace: gone when the namespace is gone.
    Netns,
    /// A process faultd started: gone when the process is gone.
    Process,
    /// In the host's namespaces or on disk: survives a reboot if persisted, so always checked.
    Host,
}

pub use crate::failure::FailureKind;

/// How long the state a fault changes outlives the kernel that holds it, which decides how
/// durably its intent must be journaled before anything is touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Everything the effect changes (and everything its undo restores) is state of the
    /// running kernel that no reboot keeps: objects of any network namespace (qdiscs, nftables
    /// tables), cgroup and sysctl values, processes faultd starts. Its intent is written to the
    /// page cache, which survives the daemon (SIGKILL, OOM, container restart) and is lost only
    /// together with the fault (power loss, panic, reset). After a reboot its record ends as
    /// `reboot` without any kernel call or namespace lookup.
    Boot,
    /// Anything else (files on disk, the clock, persisted configuration): the intent is
    /// `fdatasync`ed before the kernel is touched, and the effect makes its own file writes
    /// durable in apply and undo. The default: a kind is `Boot` only by an explicit override.
    Persistent,
}

/// An error from a fault kind's apply/revert/check.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct EffectError {
    pub kind: FailureKind,
    pub message: String,
}

impl crate::failure::Failure for EffectError {
    fn failure(&self) -> FailureKind {
        self.kind
    }
}

impl EffectError {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        EffectError {
            kind,
            message: message.into(),
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Internal, message)
    }

    /// A fault kind's own error, with the status its `Failure` says.
    pub fn of(e: impl crate::failure::Failure) -> Self {
        Self::new(e.failure(), e.to_string())
    }
}

/// Runs a fault kind's blocking work (namespace threads, ptrace, sockets) on tokio's blocking
/// pool, never on a worker; `what` names it if the task itself fails.
pub async fn blocking<T, E>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, EffectError>
where
    T: Send + 'static,
    E: crate::failure::Failure + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EffectError::internal(format!("{what} worker: {e}")))?
        .map_err(EffectError::of)
}

/// What [`Effect::capture_and_apply`] did.
#[derive(Debug)]
pub enum Staged<E> {
    /// Captured, found nothing more to restore than the intent says, and applied: the process
    /// the apply started, if any.
    Applied(Option<ProcessIdentity>),
    /// Captured only, nothing touched: the completed effect if there is more to restore
    /// (journal it before applying), `None` if the intent already says everything.
    Captured(Option<E>),
}

impl<E> Staged<E> {
    /// The same outcome with the effect mapped (a kind's effect into a set of kinds).
    pub fn map<F>(self, f: impl FnOnce(E) -> F) -> Staged<F> {
        match self {
            Staged::Applied(instance) => Staged::Applied(instance),
            Staged::Captured(effect) => Staged::Captured(effect.map(f)),
        }
    }
}

/// What the engine tells a fault kind about the record it belongs to.
#[derive(Debug, Clone, Default)]
pub struct EffectCtx {
    /// The fault's id (stable across restarts: processes can carry it to be found again).
    pub fault_id: String,
    /// The process [`Effect::apply`] started, if any (stressor workers).
    pub instance: Option<ProcessIdentity>,
}

/// A fault kind. The value carries everything needed to undo the fault exactly, including the
/// prior state captured before applying; it is what the journal stores.
pub trait Effect: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// Short kind name used in metrics and listings (`netem`, `tbf`, `stress`, ...).
    fn kind(&self) -> String;
    fn scope(&self) -> Scope;
    /// See [`Durability`]; `Persistent` unless the kind proves otherwise.
    fn durability(&self) -> Durability {
        Durability::Persistent
    }
    /// A readable one-line description.
    fn summary(&self) -> String;
    /// Reads (never changes) what the undo must restore. For a `Persistent` effect the engine
    /// starts it just before the intent record is written and awaits it after the `fdatasync`,
    /// so the two overlap; a `Boot` effect's runs after its intent is written, through
    /// [`Effect::capture_and_apply`]. The
    /// effect journaled in the intent must therefore undo exactly whenever the capture finds
    /// nothing more to restore (`Ok(None)`); when it finds more, it returns the completed
    /// effect, which the engine journals durably before [`Effect::apply`] touches anything. An
    /// error ends the fault before anything was touched ([`Effect::revert`] and
    /// [`Effect::is_reverted`] must then see nothing of it).
    fn capture<'a>(
        &'a self,
        _ctx: &'a EffectCtx,
    ) -> BoxFuture<'a, Result<Option<Self>, EffectError>> {
        Box::pin(async { Ok(None) })
    }
    /// Makes the fault real; returns the process it started, if any (recorded as the fault's
    /// instance). On error, whatever was partially applied must be undone by
    /// [`Effect::revert`], which the engine calls next.
    fn apply<'a>(
        &'a self,
        ctx: &'a EffectCtx,
    ) -> BoxFuture<'a, Result<Option<ProcessIdentity>, EffectError>>;
    /// [`Effect::capture`] and then, in the same step, [`Effect::apply`]: for kinds whose
    /// capture and apply happen in one place (one visit to a namespace thread instead of two).
    /// The engine calls it only for `Boot` effects, after their intent is written (writing a
    /// `Boot` intent costs no `fdatasync` for the capture to overlap). When the capture finds
    /// nothing more to restore than the intent says, the step applies at once and returns
    /// [`Staged::Applied`]; when it finds more, it touches nothing and returns
    /// [`Staged::Captured`] with the completed effect, which the engine journals before it
    /// calls [`Effect::apply`]. On error the engine undoes with [`Effect::revert`], as after a
    /// failed apply. The default runs [`Effect::capture`] only.
    fn capture_and_apply<'a>(
        &'a self,
        ctx: &'a EffectCtx,
    ) -> BoxFuture<'a, Result<Staged<Self>, EffectError>> {
        Box::pin(async move { Ok(Staged::Captured(self.capture(ctx).await?)) })
    }
    /// What [`Effect::apply`] learned that the undo needs (a FUSE connection the kernel
    /// numbered, the processes it switched): the completed effect, journaled with the applied
    /// record. Called once, right after a successful apply; `None` keeps the effect as it is.
    fn applied(&self, _ctx: &EffectCtx) -> Option<Self> {
        None
    }
    /// Undoes the fault. Undoing something already gone is success.
    fn revert<'a>(&'a self, ctx: &'a EffectCtx) -> BoxFuture<'a, Result<(), EffectError>>;
    /// Re-reads the kernel: true when no trace of the fault remains.
    fn is_reverted<'a>(&'a self, ctx: &'a EffectCtx) -> BoxFuture<'a, Result<bool, EffectError>>;
    /// [`Effect::revert`], then [`Effect::is_reverted`]'s re-read of the kernel; a kind may do
    /// both in one step (one visit to a namespace thread). The default calls the two in turn.
    fn revert_and_check<'a>(
        &'a self,
        ctx: &'a EffectCtx,
    ) -> BoxFuture<'a, Result<bool, EffectError>> {
        Box::pin(async move {
            self.revert(ctx).await?;
            self.is_reverted(ctx).await
        })
    }
    /// What an operator must remove by hand if every automatic undo failed.
    fn manual_cleanup(&self) -> String;
    /// Whether the fault's state is known to be gone (its namespace or process no longer
    /// exists), without touching anything.
    fn target_gone(&self, ctx: &EffectCtx) -> bool;
    /// Why a fault whose target went away by itself ended (a stressor knows an OOM kill).
    fn gone_reason(&self, _ctx: &EffectCtx) -> super::EndReason {
        super::EndReason::TargetGone
    }
}

/// A closed set of fault kinds (the daemon's `faults::FaultEffect`) that holds kind `K`. A
/// kind's use case is written against this bound, never against the set itself, so the kinds
/// sit below the set and none of them imports it.
pub trait Holds<K>: Effect {
    /// `k` as a member of the set.
    fn wrap(k: K) -> Self;
    /// The kind's value, if this effect is one of kind `K`.
    fn get(&self) -> Option<&K>;
}
