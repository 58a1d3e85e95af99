//! [`IoLayer`]: faultd's FUSE layer on one volume of a container, as a value. Mounting and
//! unmounting block (namespace threads, the FUSE handshake, waiting for the server to end):
//! call them from a blocking thread, never from a tokio worker.
//!
//! ```text
//! IoLayer::mount(&mnt_ns, "/data", injector, LayerOptions::default())
//!   faultd's ns:     open /dev/fuse, open /proc
//!   target mnt ns:   open /data O_PATH (held), check mountinfo (mount root, not shared,
//!                    not already layered), mount fuse.faultd "faultd-io" on /data
//!   faultd's ns:     FUSE handshake (Session::from_fd), serve on `threads` threads
//! layer.set_injector(new)              new actions, no remount
//! layer.detach()                       top mount off /data (open files keep being served)
//! layer.unmount()                      no actions, delayed operations answered now, detach,
//!                                      wait for the server to end (the kernel ends the
//!                                      connection when nothing uses the mount any more), after
//!                                      `unmount_grace` abort the connection
//! ```
//!
//! After a crash of the serving process the mount stays with a dead (`ENOTCONN`) or hung
//! connection: [`abort_connection`] (by the connection id the mount reported) ends every
//! request waiting on it, [`detach_ours`] takes faultd's layers off the volume path.
//!
//! [`abort_connection`]: super::mount::abort_connection
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::delay::Delays;
use super::fuse::{Core, Fs, Hooks};
use super::mount::{self, MountEntry, ProcView, StackOptions};
use super::passthrough::Passthrough;
use super::{Injector, IoError};
use crate::ns::{Namespace, NsKind};

/// How a layer is mounted and served.
#[derive(Debug, Clone, Copy)]
pub struct LayerOptions {
    /// Threads reading the FUSE device (each with its own cloned descriptor), and as many
    /// running delayed operations.
    pub threads: usize,
    /// Stack on a `shared:` volume mount too (the layer then propagates to its peers).
    pub allow_shared: bool,
    /// How long the kernel may cache attributes and names (0: every `stat` and path walk
    /// reaches the layer, so attribute overrides and lookup faults apply at once).
    pub attr_ttl: Duration,
    /// Open files with `FOPEN_DIRECT_IO` (every read and write reaches the layer).
    pub direct_io: bool,
    /// How long [`IoLayer::unmount`] waits for the server to end by itself after the detach
    /// before it aborts the connection.
    pub unmount_grace: Duration,
}

impl Default for LayerOptions {
    fn default() -> LayerOptions {
        LayerOptions {
            threads: 4,
            allow_shared: false,
            attr_ttl: Duration::ZERO,
            direct_io: true,
            unmount_grace: Duration::from_secs(2),
        }
    }
}

/// faultd's FUSE layer on a volume, served by this process. Dropping it unmounts it like
/// [`IoLayer::unmount`] (errors only logged).
#[derive(Debug)]
pub struct IoLayer {
    ns: Namespace,
    volume: PathBuf,
    volume_mount: MountEntry,
    layer_mount: MountEntry,
    core: Arc<Core>,
    delays: Arc<Delays>,
    serve: Option<JoinHandle<std::io::Result<()>>>,
    grace: Duration,
}

impl IoLayer {
    /// Stacks a layer serving `injector` on `volume` (a mount root in `ns`, the target's mount
    /// namespace).
    pub fn mount(
        ns: &Namespace,
        volume: &Path,
        injector: Injector,
        opts: LayerOptions,
    ) -> Result<IoLayer, IoError> {
        if ns.kind() != NsKind::Mnt {
            return Err(IoError::NotMountNs);
        }
        let vol = mount::normalize_volume(volume)
            .ok_or_else(|| IoError::VolumePath(volume.to_path_buf()))?;
        let dev = nix::fcntl::open("/dev/fuse", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| IoError::NoFuse(e.into()))?;
        let proc = mount::open_proc()?;
        let raw = dev.as_raw_fd();
        let (v, so) = (
            vol.clone(),
            StackOptions {
                allow_shared: opts.allow_shared,
            },
        );
        let stacked = ns.run(move || mount::stack(&ProcView(&proc), raw, &v, so))??;
        let conn = stacked.layer.minor;
        let ns = ns
            .try_clone()
            .map_err(|e| fuse_err("namespace handle", e))?;
        let undo = |e: IoError| {
            if let Err(d) = detach_in(&ns, &vol, Some(conn)) {
                tracing::warn!(volume = %vol.display(), conn, error = %d, "IOChaos: detaching a layer whose start failed");
            }
            e
        };
        let pt = Passthrough::new(stacked.root).map_err(|e| undo(fuse_err("passthrough", e)))?;
        let core = Arc::new(Core {
            pt,
            hooks: Hooks::new(injector),
            ttl: opts.attr_ttl,
            direct_io: opts.direct_io,
        });
        let delays = Delays::new(opts.threads, &format!("faultd-io{conn}d"))
            .map(Arc::new)
            .map_err(|e| undo(fuse_err("delay threads", e)))?;
        let fs = Fs {
            core: core.clone(),
            delays: delays.clone(),
        };
        let mut cfg = fuser::Config::default();
        cfg.n_threads = Some(opts.threads.max(1));
        cfg.clone_fd = opts.threads > 1;
        cfg.acl = fuser::SessionACL::All;
        let session = fuser::Session::from_fd(fs, dev, fuser::SessionACL::All, cfg)
            .map_err(|e| undo(fuse_err("handshake", e)))?;
        let serve = std::thread::Builder::new()
            .name(format!("faultd-io{conn}"))
            .spawn(move || session.run())
            .map_err(|e| undo(fuse_err("serving thread", e)))?;
        tracing::info!(volume = %vol.display(), conn, mount_id = stacked.layer.id, "IOChaos layer mounted");
        Ok(IoLayer {
            ns,
            volume: vol,
            volume_mount: stacked.volume,
            layer_mount: stacked.layer,
            core,
            delays,
            serve: Some(serve),
            grace: opts.unmount_grace,
        })
    }

    /// The FUSE connection id: the minor of the layer's device, the name of its fusectl
    /// directory (`/sys/fs/fuse/connections/<conn>`).
    pub fn conn(&self) -> u32 {
        self.layer_mount.minor
    }

    /// The volume path (normalized).
    pub fn volume(&self) -> &Path {
        &self.volume
    }

    /// The volume's own mount (mount id, device, type, source), now under the layer.
    pub fn volume_mount(&self) -> &MountEntry {
        &self.volume_mount
    }

    /// The layer's mount as mountinfo showed it right after mounting.
    pub fn layer_mount(&self) -> &MountEntry {
        &self.layer_mount
    }

    /// The actions in force.
    pub fn injector(&self) -> Arc<Injector> {
        self.core.hooks.get()
    }

    /// Replaces the actions: operations from now on see the new ones; nothing is remounted.
    pub fn set_injector(&self, injector: Injector) {
        self.core.hooks.set(injector);
    }

    /// Nodes the kernel holds and files open through the layer.
    pub fn open_counts(&self) -> (usize, usize) {
        (self.core.pt.nodes(), self.core.pt.handles())
    }

    /// Whether the server still runs (the connection is alive).
    pub fn is_serving(&self) -> bool {
        self.serve.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Takes the layer off the volume path (after checking the top mount there is this
    /// layer); files already open through it keep being served. `false`: it was not there.
    pub fn detach(&self) -> Result<bool, IoError> {
        detach_in(&self.ns, &self.volume, Some(self.conn())).map(|n| n > 0)
    }

    /// Whether this layer is still mounted on the volume path (mountinfo of its namespace).
    pub fn is_on_volume(&self) -> Result<bool, IoError> {
        let conn = self.conn();
        Ok(layers_at(&self.ns, &self.volume)?
            .iter()
            .any(|m| m.minor == conn))
    }

    /// Drops every action and answers the delayed operations now, detaches, waits up to
    /// `unmount_grace` for the server to end by itself (the kernel ends the connection once
    /// nothing uses the mount), then aborts the connection (files still open through the layer
    /// then fail with `ENOTCONN`).
    pub fn unmount(mut self) -> Result<(), IoError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), IoError> {
        self.core
            .hooks
            .set(Injector::new(self.injector().volume(), Vec::new()));
        self.delays.expedite();
        let detached = self.detach();
        let Some(h) = self.serve.take() else {
            return detached.map(drop);
        };
        let conn = self.conn();
        if !wait_finished(&h, self.grace) {
            tracing::info!(
                conn,
                "IOChaos layer still in use after detach: aborting its connection"
            );
            if let Err(e) = mount::abort_connection(conn) {
                tracing::warn!(conn, error = %e, "IOChaos: aborting the connection");
            }
            if !wait_finished(&h, self.grace.max(Duration::from_secs(1))) {
                tracing::warn!(conn, "IOChaos server did not end after the abort");
                return detached.map(drop);
            }
        }
        match h.join() {
            Ok(Err(e)) => tracing::debug!(conn, error = %e, "IOChaos server ended"),
            Err(_) => tracing::warn!(conn, "IOChaos server thread panicked"),
            Ok(Ok(())) => {}
        }
        tracing::info!(volume = %self.volume.display(), conn, "IOChaos layer unmounted");
        detached.map(drop)
    }
}

impl Drop for IoLayer {
    fn drop(&mut self) {
        if self.serve.is_some() {
            if let Err(e) = self.stop() {
                tracing::warn!(volume = %self.volume.display(), error = %e, "IOChaos: unmounting a dropped layer");
            }
        }
    }
}

fn wait_finished<T>(h: &JoinHandle<T>, limit: Duration) -> bool {
    let t0 = Instant::now();
    while !h.is_finished() {
        if t0.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

fn fuse_err(what: &'static str, source: std::io::Error) -> IoError {
    IoError::Fuse { what, source }
}

fn detach_in(ns: &Namespace, volume: &Path, conn: Option<u32>) -> Result<usize, IoError> {
    let proc = mount::open_proc()?;
    let vol = volume.to_path_buf();
    ns.run(move || mount::detach(&ProcView(&proc), &vol, conn))?
}

/// After a restart: takes every faultd layer off the top of `volume` in `ns` (the target's
/// mount namespace), each only after mountinfo shows it is faultd's. Works on a dead or hung
/// connection (abort it first with [`abort_connection`](super::mount::abort_connection) so
/// nothing stays blocked). Returns how many were detached.
pub fn detach_ours(ns: &Namespace, volume: &Path) -> Result<usize, IoError> {
    let vol =
        mount::normalize_volume(volume).ok_or_else(|| IoError::VolumePath(volume.to_path_buf()))?;
    detach_in(ns, &vol, None)
}

/// faultd's layers mounted at `volume` in `ns`, lowest first (empty: none).
pub fn layers_at(ns: &Namespace, volume: &Path) -> Result<Vec<MountEntry>, IoError> {
    let vol =
        mount::normalize_volume(volume).ok_or_else(|| IoError::VolumePath(volume.to_path_buf()))?;
    let proc = mount::open_proc()?;
    let all = ns.run(move || ProcView(&proc).mountinfo())??;
    Ok(all
        .into_iter()
        .filter(|e| e.mount_point == vol && e.is_ours())
        .collect())
}
