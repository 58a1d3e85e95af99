//! The layers this daemon process serves, one per (mount namespace, volume), and what each
//! fault of the volume needs of them: the actions staged for an apply, the processes switched
//! onto the layer, the fault that owns it now. Every call that mounts, switches or unmounts
//! blocks (namespace threads, ptrace, waiting for the server): run it on a blocking thread.
//!
//! A fault that replaces another one of the same volume takes the layer over with its actions
//! (nothing is remounted); the replaced fault's undo then finds the layer owned by another
//! fault and leaves it. Only the owner's undo takes the layer down.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::switch::{self, Moved, Source};
use super::{layers_at, mount, Injector, IoError, IoLayer, LayerOptions};
use crate::ns::{Namespace, NsId};

static ALLOW_SHARED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether a layer may go on a `shared:` volume mount (`--io-allow-shared-volumes`: the layer
/// then propagates to the mount's peers, as upstream's always does).
pub fn set_allow_shared(allow: bool) {
    ALLOW_SHARED.store(allow, std::sync::atomic::Ordering::Relaxed);
}

pub fn allow_shared() -> bool {
    ALLOW_SHARED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Stop time one process may take while its files are switched (then the rest is skipped).
pub const STOP_BUDGET: Duration = Duration::from_millis(100);
/// How long a switch waits for a process to stop at all before it leaves it as it is.
pub const STOP_LIMIT: Duration = Duration::from_secs(1);

/// Identity of a layered volume in this daemon.
pub type Key = (NsId, PathBuf);

/// What apply reports back for the journal.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub conn: u32,
    pub layer_mount_id: u32,
    pub moved: Vec<Moved>,
}

struct Live {
    owner: String,
    layer: IoLayer,
    report: Report,
}

fn layers() -> std::sync::MutexGuard<'static, HashMap<Key, Live>> {
    static L: std::sync::OnceLock<Mutex<HashMap<Key, Live>>> = std::sync::OnceLock::new();
    L.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn staged() -> std::sync::MutexGuard<'static, HashMap<String, Injector>> {
    static S: std::sync::OnceLock<Mutex<HashMap<String, Injector>>> = std::sync::OnceLock::new();
    S.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Keeps the parsed actions of a fault being applied (the journal holds their JSON only).
pub fn stage(token: &str, injector: Injector) {
    staged().insert(token.to_string(), injector);
}

/// Takes the staged actions back (apply, or a failed call cleaning up).
pub fn unstage(token: &str) -> Option<Injector> {
    staged().remove(token)
}

/// The fault that owns the layer on `key`, if this process serves one.
pub fn owner(key: &Key) -> Option<String> {
    layers().get(key).map(|l| l.owner.clone())
}

/// What apply reported for the layer on `key`, when `fault` owns it.
pub fn report(key: &Key, fault: &str) -> Option<Report> {
    layers()
        .get(key)
        .filter(|l| l.owner == fault)
        .map(|l| l.report.clone())
}

/// The processes whose mount namespace is `ns` (faultd itself excluded).
pub fn processes_in(ns: NsId) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let me = std::process::id();
    crate::process::pids()
        .into_iter()
        .filter(|p| *p != me)
        .filter(|p| {
            std::fs::metadata(format!("/proc/{p}/ns/mnt"))
                .is_ok_and(|m| m.dev() == ns.dev && m.ino() == ns.ino)
        })
        .collect()
}

/// Switches every process of `ns` off `src`, one at a time.
pub fn switch_all(ns: NsId, src: &Source<'_>) -> Vec<Moved> {
    processes_in(ns)
        .into_iter()
        .map(|pid| switch::switch_bounded(pid, src, STOP_BUDGET, STOP_LIMIT))
        .filter(|m| m.files > 0 || m.cwd || !m.skipped.is_empty())
        .collect()
}

/// Makes `injector` the actions of the volume `volume` in `ns` for fault `fault`: takes over the
/// layer this process serves there, or stacks a new one and switches the processes already
/// holding files on the volume onto it.
pub fn apply(
    ns: &Namespace,
    volume: &Path,
    volume_dev: u64,
    fault: &str,
    injector: Injector,
) -> Result<Report, IoError> {
    let key = (ns.id(), volume.to_path_buf());
    if let Some(l) = layers().get_mut(&key) {
        l.layer.set_injector(injector);
        l.owner = fault.to_string();
        return Ok(l.report.clone());
    }
    let opts = LayerOptions {
        allow_shared: allow_shared(),
        ..LayerOptions::default()
    };
    let layer = IoLayer::mount(ns, volume, injector, opts)?;
    let src = Source {
        dev: volume_dev,
        under: Some(volume),
        reroot: None,
        mnt_id: Some(layer.volume_mount().id),
    };
    let moved = switch_all(ns.id(), &src);
    for m in &moved {
        tracing::info!(pid = m.pid, files = m.files, cwd = m.cwd, stopped_us = m.stopped.as_micros() as u64, skipped = ?m.skipped, "IOChaos: process switched onto the layer");
        if m.stopped > Duration::ZERO {
            crate::metrics::io_switch_stop_seconds().observe(m.stopped.as_secs_f64());
        }
    }
    let report = Report {
        conn: layer.conn(),
        layer_mount_id: layer.layer_mount().id,
        moved,
    };
    layers().insert(
        key,
        Live {
            owner: fault.to_string(),
            layer,
            report: report.clone(),
        },
    );
    Ok(report)
}

/// The undo of fault `fault` on `key`. `Ok(None)`: another fault owns the layer now (nothing
/// to do); `Ok(Some(moved))`: the layer was this process's and is gone, `moved` switched back.
/// Without a live layer here (after a restart) see [`repair`].
pub fn remove(key: &Key, fault: &str) -> Result<Option<Vec<Moved>>, IoError> {
    let live = {
        let mut all = layers();
        match all.get(key) {
            Some(l) if l.owner == fault => all.remove(key),
            Some(_) => return Ok(None),
            None => None,
        }
    };
    let Some(live) = live else {
        return Ok(Some(Vec::new()));
    };
    let layer = live.layer;
    // No more faults, delayed operations answered, then off the volume path.
    layer.set_injector(Injector::new(layer.volume(), Vec::new()));
    let detached = layer.detach();
    let conn = layer.conn();
    let still = detached.is_err() || layer.is_on_volume()?;
    if still {
        // The layer could not be taken off: keep serving it (with no actions) and retry.
        let e = detached.err().unwrap_or_else(|| IoError::NotOurs {
            path: key.1.clone(),
            found: format!("faultd's layer (connection {conn}) is still mounted after the detach"),
        });
        layers().insert(
            key.clone(),
            Live {
                owner: fault.to_string(),
                layer,
                report: live.report,
            },
        );
        return Err(e);
    }
    let moved = switch_back(key, conn);
    layer.unmount()?;
    Ok(Some(moved))
}

/// After a restart (no live layer in this process): aborts every connection of faultd's
/// layers on the volume (and `conn`, the one the journal knows), detaches them, and switches
/// every process of the namespace still holding files on them back to the volume.
pub fn repair(ns: &Namespace, volume: &Path, conn: Option<u32>) -> Result<Vec<Moved>, IoError> {
    let mut conns: Vec<u32> = layers_at(ns, volume)?.iter().map(|m| m.minor).collect();
    conns.extend(conn);
    conns.sort_unstable();
    conns.dedup();
    for c in &conns {
        if let Err(e) = mount::abort_connection(*c) {
            tracing::warn!(conn = c, error = %e, "IOChaos repair: aborting the connection");
        }
    }
    super::detach_ours(ns, volume)?;
    let key = (ns.id(), volume.to_path_buf());
    let mut moved = Vec::new();
    for c in conns {
        moved.extend(switch_back(&key, c));
    }
    Ok(moved)
}

/// Switches every process of the namespace off connection `conn`'s (detached) layer: their
/// paths show relative to the layer's root, which was the volume.
fn switch_back(key: &Key, conn: u32) -> Vec<Moved> {
    let src = Source {
        dev: fuse_dev(conn),
        under: None,
        reroot: Some(&key.1),
        mnt_id: None,
    };
    let moved = switch_all(key.0, &src);
    for m in &moved {
        tracing::info!(pid = m.pid, files = m.files, cwd = m.cwd, stopped_us = m.stopped.as_micros() as u64, skipped = ?m.skipped, "IOChaos: process switched back to the volume");
        if m.stopped > Duration::ZERO {
            crate::metrics::io_switch_stop_seconds().observe(m.stopped.as_secs_f64());
        }
    }
    moved
}

/// The device number of FUSE connection `conn` (`st_dev` of files on it).
pub fn fuse_dev(conn: u32) -> u64 {
    nix::sys::stat::makedev(0, u64::from(conn))
}

/// Whether faultd's layer is gone from `volume` in `ns` (`conn`: the connection the journal
/// knows; `None`: any of faultd's) and no process of the namespace holds a file (other than a
/// deleted one, which cannot be re-opened) on it.
pub fn is_clean(ns: &Namespace, volume: &Path, conn: Option<u32>) -> Result<bool, IoError> {
    let layers = layers_at(ns, volume)?;
    if layers.iter().any(|m| conn.is_none_or(|c| m.minor == c)) {
        return Ok(false);
    }
    let Some(conn) = conn else { return Ok(true) };
    let src = Source::dev(fuse_dev(conn));
    Ok(processes_in(ns.id()).into_iter().all(|pid| {
        switch::holdings_of(pid, &src).map_or(true, |h| {
            h.cwd.is_none() && h.files.iter().all(|f| f.path.ends_with(" (deleted)"))
        })
    }))
}

/// Drops the layer on `key` without waiting (its namespace is gone): on a thread of its own,
/// since unmounting waits for the server.
pub fn forget(key: &Key, fault: &str) {
    let live = {
        let mut all = layers();
        match all.get(key) {
            Some(l) if l.owner == fault => all.remove(key),
            _ => None,
        }
    };
    if let Some(l) = live {
        let _ = std::thread::Builder::new()
            .name("faultd-io-drop".into())
            .spawn(move || drop(l.layer));
    }
}

/// A faultd layer found mounted with no fault accounting for it.
#[derive(Debug, Clone)]
pub struct Stray {
    pub mnt_ns: NsId,
    /// A process of the namespace (whose mountinfo showed it).
    pub pid: u32,
    pub volume: PathBuf,
    pub conn: u32,
    /// Repaired (with `fix`): aborted, detached, processes switched back.
    pub removed: bool,
}

/// faultd's layers in every mount namespace of the node that `owned` (mount namespace,
/// volume) does not account for; with `fix`, each is repaired as after a restart
/// ([`repair`]). Blocking.
pub fn stray_layers(owned: &std::collections::HashSet<Key>, fix: bool) -> Vec<Stray> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for pid in crate::process::pids() {
        let Ok(md) = std::fs::metadata(format!("/proc/{pid}/ns/mnt")) else {
            continue;
        };
        let id = NsId {
            dev: md.dev(),
            ino: md.ino(),
        };
        if !seen.insert(id) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")) else {
            continue;
        };
        for m in mount::parse_mountinfo(&text)
            .into_iter()
            .filter(|m| m.is_ours())
        {
            if owned.contains(&(id, m.mount_point.clone())) {
                continue;
            }
            let removed = fix
                && Namespace::mnt_of_process(pid)
                    .ok()
                    .filter(|ns| ns.id() == id)
                    .is_some_and(|ns| match repair(&ns, &m.mount_point, Some(m.minor)) {
                        Ok(_) => true,
                        Err(e) => {
                            tracing::warn!(pid, volume = %m.mount_point.display(), error = %e, "doctor: repairing a stray IOChaos layer");
                            false
                        }
                    });
            out.push(Stray {
                mnt_ns: id,
                pid,
                volume: m.mount_point,
                conn: m.minor,
                removed,
            });
        }
    }
    out
}
