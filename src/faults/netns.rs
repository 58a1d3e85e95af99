//! Network namespaces as fault records name them: found again by `(dev, inode)` and a holder
//! process, possibly by a later daemon process. Shared by the kinds that work in a netns.
use serde::{Deserialize, Serialize};

use crate::engine::Scope;
use crate::ns::{Namespace, NsError, NsId, NsKind};

/// How a namespace is found again, possibly by a later daemon process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetnsRef {
    pub id: NsId,
    /// A process that lived in the namespace when the fault was applied.
    pub holder_pid: u32,
    /// Whether this is the host's network namespace (then the fault survives nothing but is
    /// host-scoped for reconciliation).
    pub host: bool,
}

impl NetnsRef {
    /// The network namespace of process `pid`.
    pub fn of_pid(pid: u32) -> Result<(NetnsRef, Namespace), NsError> {
        let ns = Namespace::of_pid(pid, NsKind::Net)?;
        // The host's network namespace (pid 1's) does not change while the daemon runs.
        static HOST: std::sync::OnceLock<Option<NsId>> = std::sync::OnceLock::new();
        let host_id = *HOST.get_or_init(|| Namespace::of_pid(1, NsKind::Net).ok().map(|h| h.id()));
        let host = host_id == Some(ns.id());
        Ok((
            NetnsRef {
                id: ns.id(),
                holder_pid: pid,
                host,
            },
            ns,
        ))
    }

    pub fn find(&self) -> Option<Namespace> {
        crate::ns::find(self.id, NsKind::Net, Some(self.holder_pid))
    }

    /// Where a fault in this namespace lives: the host's namespace survives pods (and is
    /// checked after a reboot), a pod's goes with it.
    pub fn scope(&self) -> Scope {
        if self.host {
            Scope::Host
        } else {
            Scope::Netns
        }
    }
}
