//! DNSChaos (`SetDNSServer`): the pod's `/etc/resolv.conf` points at the chaos DNS server.
//!
//! Under CRI every container of a pod sees one sandbox file bind-mounted at `/etc/resolv.conf`.
//! faultd opens it through the target's root (`rootfs`: `openat2` in `/proc/<pid>/root`,
//! never following a link out of it), identifies it by `(st_dev, st_ino)`, and rewrites it in
//! place (`pwrite` + `ftruncate` + `fsync`): no tool runs in the target image (upstream runs
//! `sh`, `cp`, `sed`, `cat` there and fails on distroless images), nothing is written beside it
//! (a read-only root filesystem works), and the original bytes live in faultd's journal rather
//! than in one container's writable layer (upstream loses them when that container restarts).
//!
//! One fault per file (the journal group is the file's identity): it records the original
//! bytes, the bytes faultd writes, and the containers whose DNSChaos is on. Enabling it for a
//! second container of the pod adds a holder; disabling removes one; the original comes back
//! when the last holder goes (or on expiry, HaltAll, shutdown, restart). Each state is a new
//! fault that replaces the previous one: faultd's content carries a marker line naming the
//! fault's token, so the replaced fault's undo sees another fault's content and leaves it.
//!
//! Content: every line whose first token is `nameserver` becomes `nameserver <server>`;
//! `search`, `options`, comments and every other byte are kept; one comment line is appended:
//! `# faultd DNSChaos <token>: ...` (the mark that makes residue recognisable without the
//! journal). The file is `Persistent` state: the intent is synced before it is touched, and
//! the rewrite and the restore are `fsync`ed.
use std::net::IpAddr;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::target::{Target, TargetError};
use crate::engine::{
    Durability, Effect, EffectCtx, EffectError, EndReason, Engine, EngineError, FailureKind,
    FaultMeta, FaultRecord, Holds, Scope, TargetIdentity,
};
use crate::process::ProcessIdentity;
use crate::rootfs::{FileIdent, RootFile, RootfsError};
use crate::runtime::Runtimes;

/// The file DNSChaos rewrites, as the container sees it.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// faultd keeps the original in its journal: bigger files are refused.
pub const MAX_RESOLV_CONF: usize = 64 * 1024;
/// The start of faultd's marker line.
pub const MARK: &str = "# faultd DNSChaos ";

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("dns_server {0:?} is not an IPv4 or IPv6 address")]
    BadServer(String),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("/etc/resolv.conf of the target: {0}")]
    File(#[from] RootfsError),
    #[error(
        "the target's /etc/resolv.conf is the host's own file ({0}); faultd does not rewrite it"
    )]
    HostFile(FileIdent),
    #[error("the target's /etc/resolv.conf is not valid UTF-8 text")]
    NotText,
    #[error("the target's /etc/resolv.conf ({0}) holds faultd DNSChaos content that no fault accounts for (its original is not known); `faultd ctl doctor` reports it, and the ended record in `faultd ctl list --all` has the original")]
    Residue(FileIdent),
    #[error("{0}")]
    Blocking(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

crate::impl_failure!(DnsError);

impl DnsError {
    pub fn kind(&self) -> FailureKind {
        use crate::failure::Failure;
        match self {
            DnsError::BadServer(_) => FailureKind::InvalidArgument,
            DnsError::Target(e) => e.failure(),
            DnsError::File(e) => e.failure(),
            DnsError::HostFile(_) | DnsError::NotText | DnsError::Residue(_) => {
                FailureKind::FailedPrecondition
            }
            DnsError::Blocking(_) => FailureKind::Internal,
            DnsError::Engine(e) => e.kind(),
        }
    }
}

/// The resolv.conf faultd rewrote: the fault record's effect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsFault {
    /// The file's identity; every undo checks it.
    pub file: FileIdent,
    /// The process through which the file was found (first place to look again).
    pub holder: ProcessIdentity,
    /// Containers whose DNSChaos this fault serves.
    pub containers: Vec<String>,
    pub server: IpAddr,
    /// Names this fault in its marker line.
    pub token: String,
    #[serde(with = "crate::hex")]
    pub original: Vec<u8>,
    #[serde(with = "crate::hex")]
    pub written: Vec<u8>,
}

/// `original` with every `nameserver` line pointing at `server`, plus faultd's marker line.
pub fn rewrite(original: &[u8], server: IpAddr, token: &str) -> Result<Vec<u8>, DnsError> {
    let text = std::str::from_utf8(original).map_err(|_| DnsError::NotText)?;
    let mut out = String::with_capacity(text.len() + 96);
    for line in text.split_inclusive('\n') {
        if line.split_whitespace().next() == Some("nameserver") {
            out.push_str(&format!("nameserver {server}"));
            if line.ends_with('\n') {
                out.push('\n');
            }
        } else if !line.starts_with(MARK) {
            out.push_str(line);
        }
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!(
        "{MARK}{token}: nameservers point at {server}; the original comes back when the fault ends\n"
    ));
    Ok(out.into_bytes())
}

/// The token of faultd's marker line in `content`, if any.
pub fn marker_token(content: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(content).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(MARK)
            .and_then(|r| r.split(':').next())
            .map(str::to_string)
    })
}

/// Finds the file again: through the recorded holder if it still shows the same file, else
/// through any live process whose root shows it (a restarted container, the pause container).
fn locate(file: FileIdent, holder: &ProcessIdentity) -> Option<RootFile> {
    let same = |pid: u32| {
        RootFile::open(pid, RESOLV_CONF, true)
            .ok()
            .filter(|f| f.ident == file)
    };
    if holder.is_alive() {
        if let Some(f) = same(holder.pid) {
            return Some(f);
        }
    }
    crate::process::pids().into_iter().find_map(same)
}

fn blocking_err(e: impl std::fmt::Display) -> EffectError {
    EffectError::internal(format!("resolv.conf task: {e}"))
}

impl DnsFault {
    /// The undo, on a blocking thread: writes the original back where faultd's content is.
    fn restore(&self) -> Result<(), EffectError> {
        let Some(f) = locate(self.file, &self.holder) else {
            return Ok(()); // no process shows the file: the sandbox is gone, and the file with it
        };
        let now = f.read_all(MAX_RESOLV_CONF).map_err(EffectError::of)?;
        if now == self.written {
            f.rewrite(&self.original).map_err(EffectError::of)
        } else if now == self.original || marker_token(&now).is_some_and(|t| t != self.token) {
            Ok(()) // already restored, or another fault's state replaced this one
        } else {
            Err(EffectError::new(
                FailureKind::FailedPrecondition,
                format!(
                    "resolv.conf {} was changed by someone else since faultd wrote it; not overwriting it",
                    self.file
                ),
            ))
        }
    }
}

impl Effect for DnsFault {
    fn kind(&self) -> String {
        "dns".into()
    }

    /// The file outlives its containers (a pod's sandbox keeps it).
    fn scope(&self) -> Scope {
        Scope::Host
    }

    /// A file on disk: its intent is synced before it is rewritten.
    fn durability(&self) -> Durability {
        Durability::Persistent
    }

    fn summary(&self) -> String {
        format!(
            "resolv.conf {} -> nameserver {} for {}",
            self.file,
            self.server,
            self.containers.join(", ")
        )
    }

    fn apply<'a>(
        &'a self,
        _: &'a EffectCtx,
    ) -> BoxFuture<'a, Result<Option<ProcessIdentity>, EffectError>> {
        let me = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let f = locate(me.file, &me.holder).ok_or_else(|| {
                    EffectError::new(
                        FailureKind::NotFound,
                        "no live process shows the resolv.conf any more",
                    )
                })?;
                let now = f.read_all(MAX_RESOLV_CONF).map_err(EffectError::of)?;
                // The original (first fault of the file) or the content of the fault this one
                // replaces; anything else changed after faultd read it.
                if now != me.original && marker_token(&now).is_none() {
                    return Err(EffectError::new(
                        FailureKind::FailedPrecondition,
                        "resolv.conf changed while faultd prepared the fault; try again",
                    ));
                }
                f.rewrite(&me.written).map_err(EffectError::of)?;
                Ok(None)
            })
            .await
            .map_err(blocking_err)?
        })
    }

    fn revert<'a>(&'a self, _: &'a EffectCtx) -> BoxFuture<'a, Result<(), EffectError>> {
        let me = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || me.restore())
                .await
                .map_err(blocking_err)?
        })
    }

    fn is_reverted<'a>(&'a self, _: &'a EffectCtx) -> BoxFuture<'a, Result<bool, EffectError>> {
        let me = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let Some(f) = locate(me.file, &me.holder) else {
                    return Ok(true);
                };
                Ok(f.read_all(MAX_RESOLV_CONF).map_err(EffectError::of)? != me.written)
            })
            .await
            .map_err(blocking_err)?
        })
    }

    fn manual_cleanup(&self) -> String {
        format!(
            "echo {} | xxd -r -p | dd of=/proc/{}/root/etc/resolv.conf conv=notrunc,fsync && truncate -s {} /proc/{}/root/etc/resolv.conf (a process whose root shows file {})",
            crate::hex::encode(&self.original),
            self.holder.pid,
            self.original.len(),
            self.holder.pid,
            self.file
        )
    }

    fn target_gone(&self, _: &EffectCtx) -> bool {
        locate(self.file, &self.holder).is_none()
    }
}

/// resolv.conf files (one entry per file: its identity, a process that shows it, the token)
/// that carry faultd's mark with a token none of `active` names (doctor).
pub fn stray_files(active: &std::collections::HashSet<String>) -> Vec<(FileIdent, u32, String)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for pid in crate::process::pids() {
        let Ok(f) = RootFile::open(pid, RESOLV_CONF, false) else {
            continue;
        };
        if !seen.insert(f.ident) {
            continue;
        }
        let Ok(content) = f.read_all(MAX_RESOLV_CONF) else {
            continue;
        };
        if let Some(token) = marker_token(&content).filter(|t| !active.contains(t)) {
            out.push((f.ident, pid, token));
        }
    }
    out
}

/// The journal group of one resolv.conf.
pub fn group_of(file: FileIdent) -> String {
    format!("dns/{file}")
}

/// `SetDNSServer`: with `enable`, the pod's resolv.conf points at `server` for this container
/// (and any other container of the pod that asked); without, this container's DNSChaos ends
/// (the original comes back when no container of the pod has one). Disabling what is not there
/// is OK, as the controller expects.
pub async fn set_dns_server<E: Holds<DnsFault>>(
    engine: &Engine<E>,
    runtimes: &Runtimes,
    target: &Target,
    server: &str,
    enable: bool,
    meta: &FaultMeta,
) -> Result<Option<FaultRecord<E>>, DnsError> {
    let container = target.container_id().to_string();
    if !enable {
        return disable(engine, &container).await;
    }
    let server: IpAddr = server
        .trim()
        .parse()
        .map_err(|_| DnsError::BadServer(server.into()))?;
    let who = target.resolve(runtimes, "container_id").await?;
    let f = tokio::task::spawn_blocking(move || {
        let f = RootFile::open(who.pid, RESOLV_CONF, false)?;
        if crate::rootfs::host_idents(RESOLV_CONF).contains(&f.ident) {
            return Err(DnsError::HostFile(f.ident));
        }
        Ok::<_, DnsError>(f)
    })
    .await
    .map_err(|e| DnsError::Blocking(e.to_string()))??;
    let file = f.ident;
    let group = group_of(file);
    let lock = engine.lock_group(&group).await;
    let active = engine.active_in_group(&group);
    let current = active
        .iter()
        .rev()
        .find_map(|r| Holds::<DnsFault>::get(&r.effect));
    let original = match current {
        // Later faults of the file share the first one's original.
        Some(c) => c.original.clone(),
        // The first: read under the lock, so no rollback of this file can run meanwhile.
        None => {
            let content = tokio::task::spawn_blocking(move || f.read_all(MAX_RESOLV_CONF))
                .await
                .map_err(|e| DnsError::Blocking(e.to_string()))??;
            // A marker without a live fault is residue of a lost record: its original is gone.
            if marker_token(&content).is_some() {
                return Err(DnsError::Residue(file));
            }
            content
        }
    };
    let mut containers = current.map(|c| c.containers.clone()).unwrap_or_default();
    if !containers.contains(&container) {
        containers.push(container.clone());
    }
    let token = uuid::Uuid::new_v4().simple().to_string();
    let fault = DnsFault {
        written: rewrite(&original, server, &token)?,
        file,
        holder: who,
        containers,
        server,
        token,
        original,
    };
    let previous: Vec<String> = active.iter().map(|r| r.id.clone()).collect();
    let identity = TargetIdentity {
        container_id: container,
        pod_uid: meta.pod_uid.clone(),
        pid: who.pid,
        pid_start_time_ms: who.start_time_ms,
        ..Default::default()
    };
    let rec = engine
        .apply_locked(&lock, meta.fault(E::wrap(fault), identity, &group))
        .await?;
    // The new content replaced the old in place; the old faults' undo sees another fault's
    // marker and leaves the file alone.
    for id in previous {
        if let Err(e) = engine.revert_locked(&lock, &id, EndReason::Replaced).await {
            tracing::warn!(fault = %id, error = %e, "ending a replaced DNS fault failed");
        }
    }
    Ok(Some(rec))
}

/// Ends `container`'s DNSChaos wherever it is active.
async fn disable<E: Holds<DnsFault>>(
    engine: &Engine<E>,
    container: &str,
) -> Result<Option<FaultRecord<E>>, DnsError> {
    let groups: Vec<String> = engine
        .list(false)
        .into_iter()
        .filter(|r| {
            r.phase.is_active()
                && Holds::<DnsFault>::get(&r.effect)
                    .is_some_and(|f| f.containers.iter().any(|c| c == container))
        })
        .map(|r| r.group)
        .collect();
    let mut last = None;
    for group in groups {
        let lock = engine.lock_group(&group).await;
        let active = engine.active_in_group(&group);
        let Some((rec, f)) = active
            .iter()
            .rev()
            .find_map(|r| Holds::<DnsFault>::get(&r.effect).map(|f| (r, f.clone())))
        else {
            continue;
        };
        let rest: Vec<String> = f
            .containers
            .iter()
            .filter(|c| *c != container)
            .cloned()
            .collect();
        if rest.is_empty() {
            for r in &active {
                engine
                    .revert_locked(&lock, &r.id, EndReason::Request)
                    .await?;
            }
            continue;
        }
        // Other containers of the pod keep theirs: same content under a new token.
        let token = uuid::Uuid::new_v4().simple().to_string();
        let fault = DnsFault {
            written: rewrite(&f.original, f.server, &token)?,
            containers: rest,
            token,
            ..f
        };
        let meta = FaultMeta {
            owner: rec.owner.clone(),
            ttl: None,
            lease_id: rec.lease_id.clone(),
            container_id: rec.target.container_id.clone(),
            pod_uid: rec.target.pod_uid.clone(),
        };
        let mut new = meta.fault(E::wrap(fault), rec.target.clone(), &group);
        new.ttl = rec.deadline.as_ref().map(|d| {
            std::time::Duration::from_millis(
                d.remaining_ms(crate::engine::record::now_boottime_ms(), engine.boot_id()),
            )
        });
        last = Some(engine.apply_locked(&lock, new).await?);
        for r in &active {
            if let Err(e) = engine
                .revert_locked(&lock, &r.id, EndReason::Replaced)
                .await
            {
                tracing::warn!(fault = %r.id, error = %e, "ending a replaced DNS fault failed");
            }
        }
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &[u8] = b"search ns.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\n# a comment naming nameserver\noptions ndots:5\nnameserver 8.8.8.8\n";

    #[test]
    fn nameserver_lines_point_at_the_server_and_everything_else_stays() {
        let out = rewrite(CONF, "10.96.0.99".parse().unwrap(), "tok").unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(
            text,
            "search ns.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.99\n# a comment naming nameserver\noptions ndots:5\nnameserver 10.96.0.99\n# faultd DNSChaos tok: nameservers point at 10.96.0.99; the original comes back when the fault ends\n"
        );
        assert_eq!(marker_token(&out).as_deref(), Some("tok"));
        assert_eq!(marker_token(CONF), None);
        // Rewriting faultd's own content (a replaced fault) keeps one marker, the new one.
        let again = rewrite(&out, "fd00::53".parse().unwrap(), "two").unwrap();
        let t = String::from_utf8(again).unwrap();
        assert_eq!(t.matches(MARK).count(), 1);
        assert!(t.contains("nameserver fd00::53\n") && t.contains("DNSChaos two:"));
        // A file without a final newline, or with tabs, still works.
        let out = rewrite(b"nameserver\t1.1.1.1", "9.9.9.9".parse().unwrap(), "t").unwrap();
        assert!(out.starts_with(b"nameserver 9.9.9.9\n# faultd DNSChaos t:"));
        assert!(matches!(
            rewrite(b"\xff\xfe", "9.9.9.9".parse().unwrap(), "t"),
            Err(DnsError::NotText)
        ));
    }

    #[test]
    fn the_record_round_trips_through_json() {
        let f = DnsFault {
            file: FileIdent { dev: 1, ino: 2 },
            holder: ProcessIdentity {
                pid: 3,
                start_ticks: 4,
                start_time_ms: 5,
            },
            containers: vec!["containerd://a".into()],
            server: "10.0.0.1".parse().unwrap(),
            token: "t".into(),
            original: CONF.to_vec(),
            written: b"x".to_vec(),
        };
        let back: DnsFault = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(back.original, CONF);
        assert_eq!(back.file, f.file);
        assert_eq!(back.kind(), "dns");
        assert_eq!(back.durability(), Durability::Persistent);
    }
}
