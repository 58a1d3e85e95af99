//! Which process a request is about: a container (through the runtimes, with Chaos Mesh's
//! fallback to the pod's sandbox where the RPC has one) or, for faultd's own API, a host PID.
use crate::failure::{Failure, FailureKind};
use crate::process::{ProcessError, ProcessIdentity};
use crate::runtime::{RuntimeError, Runtimes};

/// A request's target, as decoded by the server layer.
#[derive(Debug, Clone)]
pub enum Target {
    /// A container id (`containerd://…`, `docker://…`, `cri-o://…` or bare); with a pod uid,
    /// the pod's sandbox answers when the container has no running task.
    Container { id: String, pod_uid: String },
    /// A host process (faultd.v1 `ApplyFault` with `target_pid`).
    Pid(u32),
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{0}")]
    Missing(&'static str),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("target process: {0}")]
    Process(#[from] ProcessError),
    #[error("target process {0} is gone")]
    Gone(u32),
}

impl Failure for TargetError {
    fn failure(&self) -> FailureKind {
        match self {
            TargetError::Missing(_) => FailureKind::InvalidArgument,
            TargetError::Runtime(e) => e.failure(),
            TargetError::Process(_) | TargetError::Gone(_) => FailureKind::NotFound,
        }
    }
}

impl Target {
    /// The container id for records and logs (empty for a PID target).
    pub fn container_id(&self) -> &str {
        match self {
            Target::Container { id, .. } => id,
            Target::Pid(_) => "",
        }
    }

    pub fn pod_uid(&self) -> &str {
        match self {
            Target::Container { pod_uid, .. } => pod_uid,
            Target::Pid(_) => "",
        }
    }

    /// The target's process. `what` names the field for the error when nothing was given.
    pub async fn resolve(
        &self,
        runtimes: &Runtimes,
        what: &'static str,
    ) -> Result<ProcessIdentity, TargetError> {
        let who = match self {
            Target::Pid(pid) => ProcessIdentity::of(*pid)?,
            Target::Container { id, pod_uid } if id.is_empty() && pod_uid.is_empty() => {
                return Err(TargetError::Missing(what))
            }
            Target::Container { id, pod_uid } if pod_uid.is_empty() => runtimes.pid(id).await?,
            Target::Container { id, pod_uid } => runtimes.pid_or_sandbox(id, pod_uid).await?,
        };
        // A runtime's answer may come from a cache: check that the process still lives (a pid
        // just read from /proc is as fresh as a second read would be).
        if !matches!(self, Target::Pid(_)) && !who.is_alive() {
            return Err(TargetError::Gone(who.pid));
        }
        Ok(who)
    }
}
