//! The IOChaos fault of one volume of a container and its use case (`ApplyIOChaos`): every call
//! is the full desired state of the volume; no actions end it.
//!
//! Apply: faultd's FUSE layer is stacked on the volume inside the container's mount namespace
//! and served by this process ([`super::live`]); the processes of that namespace already
//! holding files or a working directory on the volume are switched onto it one at a time,
//! each within a stop budget. A fault replacing another of the same volume only swaps the
//! actions. Undo: no actions, the layer off the volume path (after checking it is faultd's),
//! the processes switched back, the connection ended. After a crash of faultd (`kill -9`) the
//! kernel has already ended the connection (the processes' reads fail with `ENOTCONN`); the
//! next start aborts it for good, detaches the layer and switches the processes back: their
//! reads on the same descriptors work again.
//!
//! The fault is `Boot` durable (mounts and descriptors die with the kernel) and `Process`
//! scoped: it is gone when no process is left in the container's mount namespace.
use std::path::PathBuf;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::switch::Moved;
use super::{live, mount, Injector, IoError};
use crate::engine::{
    blocking, Durability, Effect, EffectCtx, EffectError, EndReason, Engine, EngineError,
    FailureKind, FaultMeta, FaultRecord, Holds, Scope, TargetIdentity,
};
use crate::faults::target::{Target, TargetError};
use crate::ns::{Namespace, NsId};
use crate::process::ProcessIdentity;
use crate::runtime::Runtimes;

/// Why an `ApplyIOChaos` failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl ApplyError {
    pub fn kind(&self) -> FailureKind {
        use crate::failure::Failure;
        match self {
            ApplyError::Io(e) => e.kind(),
            ApplyError::Target(e) => e.failure(),
            ApplyError::Engine(e) => e.kind(),
        }
    }
}

crate::impl_failure!(ApplyError);

/// One process switched onto the layer at apply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Switched {
    pub pid: u32,
    pub start_time_ms: i64,
    pub fds: Vec<i32>,
    pub cwd: bool,
    pub stopped_us: u64,
}

/// faultd's IOChaos layer on one volume of a container: the fault record's effect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IoFault {
    pub container: String,
    /// The container's mount namespace, and a process that lived in it.
    pub mnt_ns: NsId,
    pub holder: ProcessIdentity,
    /// The volume as the container sees it (normalized).
    pub volume: PathBuf,
    /// The volume's own mount before the layer: mount id and `major:minor`.
    pub volume_mount_id: u32,
    pub volume_dev: String,
    /// faultd's mount source and type (what a detach checks before it detaches).
    pub source: String,
    pub fstype: String,
    /// Names this fault's parsed actions while it is applied.
    pub token: String,
    /// The actions as the controller sent them.
    pub actions: String,
    pub action_count: usize,
    /// The FUSE connection (`/sys/fs/fuse/connections/<conn>`, the minor of the layer's
    /// device) and the layer's mount id, once mounted.
    #[serde(default)]
    pub conn: Option<u32>,
    #[serde(default)]
    pub layer_mount_id: Option<u32>,
    /// The processes switched onto the layer, and what could not be.
    #[serde(default)]
    pub switched: Vec<Switched>,
    #[serde(default)]
    pub skipped: Vec<String>,
}

impl IoFault {
    fn key(&self) -> live::Key {
        (self.mnt_ns, self.volume.clone())
    }

    /// The container's mount namespace, entered at the root of a process living in it (the
    /// holder while it lives).
    fn find_ns(&self) -> Option<Namespace> {
        let mut pids = vec![self.holder.pid];
        pids.extend(live::processes_in(self.mnt_ns));
        pids.into_iter().find_map(|pid| {
            Namespace::mnt_of_process(pid)
                .ok()
                .filter(|ns| ns.id() == self.mnt_ns)
        })
    }

    fn volume_dev_number(&self) -> Option<u64> {
        let (a, b) = self.volume_dev.split_once(':')?;
        Some(nix::sys::stat::makedev(a.parse().ok()?, b.parse().ok()?))
    }
}

impl Effect for IoFault {
    fn kind(&self) -> String {
        "io".into()
    }

    fn scope(&self) -> Scope {
        Scope::Process
    }

    fn durability(&self) -> Durability {
        Durability::Boot
    }

    fn summary(&self) -> String {
        format!(
            "FUSE layer on {} ({} action(s){}) for {}",
            self.volume.display(),
            self.action_count,
            self.conn
                .map(|c| format!(", connection {c}"))
                .unwrap_or_default(),
            if self.container.is_empty() {
                format!("the mount namespace of pid {}", self.holder.pid)
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
            let injector = live::unstage(&self.token).ok_or_else(|| {
                EffectError::internal("the actions of this IOChaos fault are not staged")
            })?;
            let ns = self.find_ns().ok_or_else(|| {
                EffectError::new(
                    FailureKind::NotFound,
                    "the container's mount namespace is gone",
                )
            })?;
            let dev = self
                .volume_dev_number()
                .ok_or_else(|| EffectError::internal("bad volume device in the record"))?;
            let (volume, id) = (self.volume.clone(), ctx.fault_id.clone());
            blocking("IOChaos", move || {
                live::apply(&ns, &volume, dev, &id, injector)
            })
            .await?;
            Ok(None)
        })
    }

    fn applied(&self, ctx: &EffectCtx) -> Option<Self> {
        let r = live::report(&self.key(), &ctx.fault_id)?;
        let mut done = self.clone();
        done.conn = Some(r.conn);
        done.layer_mount_id = Some(r.layer_mount_id);
        done.switched = r.moved.iter().filter_map(switched).collect();
        done.skipped = r
            .moved
            .iter()
            .flat_map(|m| m.skipped.iter().map(move |s| format!("pid {}: {s}", m.pid)))
            .collect();
        Some(done)
    }

    fn revert<'a>(&'a self, ctx: &'a EffectCtx) -> BoxFuture<'a, Result<(), EffectError>> {
        Box::pin(async move {
            live::unstage(&self.token);
            let key = self.key();
            let id = ctx.fault_id.clone();
            match live::owner(&key) {
                Some(o) if o != id => return Ok(()),
                Some(_) => {
                    let moved = blocking("IOChaos", move || live::remove(&key, &id)).await?;
                    log_back(moved.as_deref().unwrap_or_default());
                    return Ok(());
                }
                None => {}
            }
            // Not served by this process: a previous one crashed (or never got this far).
            let Some(ns) = self.find_ns() else {
                return Ok(());
            };
            let (volume, conn) = (self.volume.clone(), self.conn);
            let moved = blocking("IOChaos", move || live::repair(&ns, &volume, conn)).await?;
            log_back(&moved);
            Ok(())
        })
    }

    fn is_reverted<'a>(&'a self, ctx: &'a EffectCtx) -> BoxFuture<'a, Result<bool, EffectError>> {
        Box::pin(async move {
            if live::owner(&self.key()).is_some_and(|o| o == ctx.fault_id) {
                return Ok(false);
            }
            if live::owner(&self.key()).is_some() {
                // Another fault of the volume owns the layer now.
                return Ok(true);
            }
            let Some(ns) = self.find_ns() else {
                return Ok(true);
            };
            let (volume, conn) = (self.volume.clone(), self.conn);
            blocking("IOChaos", move || live::is_clean(&ns, &volume, conn)).await
        })
    }

    fn manual_cleanup(&self) -> String {
        let conn = self
            .conn
            .map(|c| format!("echo 1 > /sys/fs/fuse/connections/{c}/abort; "))
            .unwrap_or_default();
        format!(
            "{conn}nsenter --mount=/proc/{pid}/ns/mnt umount -l {vol} (only if `nsenter --mount=/proc/{pid}/ns/mnt grep ' {vol} ' /proc/self/mountinfo` shows {fstype} {source} on top); restart the container's processes that still see `Transport endpoint is not connected`",
            pid = self.holder.pid,
            vol = self.volume.display(),
            fstype = self.fstype,
            source = self.source,
        )
    }

    fn target_gone(&self, ctx: &EffectCtx) -> bool {
        if self.find_ns().is_some() {
            return false;
        }
        // Nothing but this process's own handle keeps the namespace: let the layer go.
        live::forget(&self.key(), &ctx.fault_id);
        true
    }
}

fn switched(m: &Moved) -> Option<Switched> {
    if m.files == 0 && !m.cwd {
        return None;
    }
    Some(Switched {
        pid: m.pid,
        start_time_ms: ProcessIdentity::of(m.pid)
            .map(|p| p.start_time_ms)
            .unwrap_or(0),
        fds: m.fds.clone(),
        cwd: m.cwd,
        stopped_us: m.stopped.as_micros() as u64,
    })
}

fn log_back(moved: &[Moved]) {
    for m in moved.iter().filter(|m| !m.skipped.is_empty()) {
        tracing::warn!(pid = m.pid, skipped = ?m.skipped, "IOChaos: left on the layer");
    }
}

/// The process that serves every layer: faultd itself (the response's `instance` and
/// `startTime`).
pub fn instance() -> ProcessIdentity {
    crate::faults::http::fault::instance()
}

/// The journal group of the IOChaos of one volume of a mount namespace.
pub fn group_of(ns: &NsId, volume: &std::path::Path) -> String {
    format!("io/{}:{}{}", ns.dev, ns.ino, volume.display())
}

/// What `ApplyIOChaos` asks for.
#[derive(Debug, Clone, Default)]
pub struct IoRequest {
    pub actions: String,
    pub volume: String,
}

/// `ApplyIOChaos`: makes `req` the actions on the volume (none: no layer). Returns the fault in
/// force, if any. Everything in the request is checked before anything is touched.
pub async fn apply_io_chaos<E: Holds<IoFault>>(
    engine: &Engine<E>,
    runtimes: &Runtimes,
    target: &Target,
    req: &IoRequest,
    meta: &FaultMeta,
) -> Result<Option<FaultRecord<E>>, ApplyError> {
    let raw = std::path::Path::new(&req.volume);
    let volume = mount::normalize_volume(raw).ok_or_else(|| IoError::VolumePath(raw.into()))?;
    let injector = Injector::parse(&volume, &req.actions)?;
    let who = target.resolve(runtimes, "container_id").await?;
    let ns = Namespace::mnt_of_process(who.pid).map_err(IoError::from)?;
    let group = group_of(&ns.id(), &volume);
    let lock = engine.lock_group(&group).await;
    let active = engine.active_in_group(&group);
    let previous: Vec<String> = active.iter().map(|r| r.id.clone()).collect();
    if injector.is_empty() {
        for id in previous {
            engine.revert_locked(&lock, &id, EndReason::Request).await?;
        }
        return Ok(None);
    }
    // The volume's own mount: from the fault this one replaces (the layer is on top of it
    // now), else from the container's mountinfo, checked as the mount will check it.
    let before = active
        .iter()
        .rev()
        .find_map(|r| r.effect.get())
        .map(|f: &IoFault| (f.volume_mount_id, f.volume_dev.clone()));
    let (volume_mount_id, volume_dev) = match before {
        Some(b) if live::owner(&(ns.id(), volume.clone())).is_some() => b,
        _ => {
            let (ns2, vol) = (
                ns.try_clone().map_err(|e| IoError::Fuse {
                    what: "namespace handle",
                    source: e,
                })?,
                volume.clone(),
            );
            let opts = mount::StackOptions {
                allow_shared: live::allow_shared(),
            };
            let m = tokio::task::spawn_blocking(move || mount::volume_mount(&ns2, &vol, opts))
                .await
                .map_err(|e| IoError::Fuse {
                    what: "worker",
                    source: std::io::Error::other(e.to_string()),
                })??;
            let (m, dev) = m;
            (
                m.id,
                format!(
                    "{}:{}",
                    nix::sys::stat::major(dev),
                    nix::sys::stat::minor(dev)
                ),
            )
        }
    };
    let token = uuid::Uuid::new_v4().simple().to_string();
    let fault = IoFault {
        container: target.container_id().to_string(),
        mnt_ns: ns.id(),
        holder: who,
        volume: volume.clone(),
        volume_mount_id,
        volume_dev,
        source: mount::SOURCE.into(),
        fstype: mount::FSTYPE.into(),
        token: token.clone(),
        actions: req.actions.clone(),
        action_count: injector.actions().len(),
        conn: None,
        layer_mount_id: None,
        switched: Vec::new(),
        skipped: Vec::new(),
    };
    live::stage(&token, injector);
    let identity = TargetIdentity {
        container_id: target.container_id().to_string(),
        pod_uid: meta.pod_uid.clone(),
        pid: who.pid,
        pid_start_time_ms: who.start_time_ms,
        ..Default::default()
    };
    let applied = engine
        .apply_locked(&lock, meta.fault(E::wrap(fault), identity, &group))
        .await;
    live::unstage(&token);
    let rec = applied?;
    for id in previous {
        if let Err(e) = engine.revert_locked(&lock, &id, EndReason::Replaced).await {
            tracing::warn!(fault = %id, error = %e, "ending a replaced IOChaos fault failed");
        }
    }
    Ok(Some(rec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_name_the_namespace_and_the_volume() {
        let ns = NsId {
            dev: 4,
            ino: 4026532000,
        };
        assert_eq!(
            group_of(&ns, std::path::Path::new("/data")),
            "io/4:4026532000/data"
        );
    }
}
