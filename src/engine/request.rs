//! What a use case hands the engine: the fault to apply, who asked and for how long, and the
//! proof that it holds the target's group lock.
use std::time::Duration;

use super::record::TargetIdentity;

/// A fault to apply.
pub struct NewFault<E> {
    pub effect: E,
    pub target: TargetIdentity,
    pub owner: String,
    pub ttl: Option<Duration>,
    pub lease_id: Option<String>,
    /// The serialization group (one device, one netns table, one stressor pair...): every
    /// apply and every rollback in a group runs under its lock, one at a time.
    pub group: String,
}

/// Who asked for a fault, and for how long (the request metadata every kind passes on).
#[derive(Debug, Clone, Default)]
pub struct FaultMeta {
    pub owner: String,
    pub ttl: Option<Duration>,
    pub lease_id: Option<String>,
    pub container_id: String,
    pub pod_uid: String,
}

impl FaultMeta {
    /// A [`NewFault`] of `effect` in `group` with this metadata.
    pub fn fault<E>(&self, effect: E, target: TargetIdentity, group: &str) -> NewFault<E> {
        NewFault {
            effect,
            target,
            owner: self.owner.clone(),
            ttl: self.ttl,
            lease_id: self.lease_id.clone(),
            group: group.to_string(),
        }
    }
}

/// A held group lock ([`super::Engine::lock_group`]). Applying a fault, or rolling one back
/// from a use case, needs it: the engine's own rollback paths (deadline, lease, HaltAll,
/// RevokeFault, shutdown) take the same lock, so no two changes to one target ever interleave.
pub struct GroupLock {
    pub(super) group: String,
    pub(super) _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl GroupLock {
    pub fn group(&self) -> &str {
        &self.group
    }
}
