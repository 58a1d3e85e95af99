//! IOChaos (`ApplyIOChaos`), step 1: the action model and the injectors, as a library with no
//! FUSE types in it. This module owns what an IOChaos action *means*: parsing and validating
//! the actions chaos-daemon receives (`actions.rs`), deciding which operations an action
//! covers (`matcher.rs`) and what a covered operation gets (`inject.rs`: a delay, an errno
//! instead of the operation, attributes replaced, bytes damaged). Randomness comes from an
//! [`IoRng`] the caller passes in, so every decision can be replayed with a seed. The FUSE
//! layer, the mount and the fault's journal record are built on top of it.
//!
//! Upstream is `toda` v0.2.4 (the version chaos-daemon's image downloads), driven by
//! `pkg/chaosdaemon/iochaos_server.go`:
//!
//! | Here | toda |
//! |---|---|
//! | [`parse_actions`] | `src/injector/injector_config.rs` (serde model), fed by chaos-daemon's `json.Unmarshal` into `[]v1alpha1.IOChaosAction` (`api/v1alpha1/podiochaos_types.go`) and re-marshalled to toda's `update` call |
//! | [`Filter`], [`Method`] | `src/injector/filter.rs` |
//! | [`Injector::before`] | `MultiInjector::inject` over `LatencyInjector` / `FaultInjector` (`src/injector/{multi,latency,fault}_injector.rs`) |
//! | [`Injector::attr`] | `MultiInjector::inject_attr` / `AttrOverrideInjector`, called by `HookFs::get_file_attr` |
//! | [`Injector::reply_data`], [`Injector::write_data`] | `MultiInjector::inject_reply` / `inject_write_data` / `MistakeInjector` |
//!
//! Semantics kept from upstream:
//! - Actions apply in list order (the order of the IOChaos objects on the pod). Before an
//!   operation, every covered `latency` adds its delay and the first covered `fault` ends the
//!   walk with its errno (toda awaits each injector in turn and returns at the first error:
//!   a latency listed after the firing fault does not wait).
//! - Every action draws its percent independently on every operation and hook (toda builds
//!   one `Filter` per injector and draws in each `filter()` call).
//! - A fault picks among its errnos by weight (`w / Σw`; toda: `⌊u·Σw⌋` walked down the list).
//! - `attrOverride` ignores `methods`: it applies to every attribute the layer returns
//!   (toda filters it with `Method::LOOKUP` against an all-methods filter); later actions win
//!   field by field.
//! - `mistake` damages the data of `read` and `readlink` replies (toda's `Reply::Data`) when its
//!   methods cover them, and the buffer of a `write` before it reaches the file when they
//!   cover `write` — so a write mistake *does* change the file on disk. Between 1 and
//!   `maxOccurrences` runs, each starting anywhere in the buffer and 1 to `maxLength` bytes
//!   long, clipped to the buffer; runs may overlap.
//! - toda never injects into `forget`, `release`, `releasedir`, `fsyncdir`, `getlk`, `setlk`
//!   and `bmap` (the names are accepted, the hooks are missing), and for `mknod` it draws the
//!   filter twice. The library does not care which operations the FUSE layer asks about.
//!
//! Where faultd differs (each an input upstream mishandles; chaos-daemon's controller never
//! sends them):
//! - Every problem is found before anything is touched and answered `INVALID_ARGUMENT` naming
//!   the action and the field. toda silently drops unknown method names (a list of only unknown
//!   names matched nothing) and treats a bad glob as "every path"; both are refused here.
//! - `latency` takes Go's `time.ParseDuration` syntax (what the IOChaos webhook validates, so
//!   `1.5s` and `µs` work); toda's `humantime` refused those after the webhook accepted them.
//! - `atime`/`mtime`/`ctime` are read as Chaos Mesh's `{"sec","nsec"}`; toda deserialised them
//!   as Rust's `SystemTime` (`secs_since_epoch`), so any time override failed its `update`.
//! - `perm` must be permission bits (`<= 0o7777`); the type comes from `kind`.
//! - Errnos must be `1..=511`; weights not negative and not all 0; a fault needs at least one
//!   errno; a mistake needs `filling`, `maxOccurrences >= 1` and `maxLength >= 1` (toda failed
//!   on missing fields too, which is what Go's `omitempty` makes of zeros).
//! - `""` is no actions, like `null` and `[]` (chaos-daemon's `json.Unmarshal` refused `""`).
//!
//! Step 2, the layer the actions act in: faultd's own FUSE file system stacked on the volume
//! inside the container's mount namespace, served by faultd as a passthrough to the original
//! mount (`fuser` 0.18, pure Rust, `/dev/fuse` opened and mounted by faultd itself):
//!
//! | Module | Owns |
//! |---|---|
//! | `layer.rs` | [`IoLayer`]: mount (a blocking call), live injector swap, detach, unmount; [`detach_ours`] and [`layers_at`] for after a restart |
//! | `mount.rs` | mountinfo parsing, the checks before stacking (mount root, not `shared:`, not already layered), the mount on top, the checked detach, [`abort_connection`] through fusectl |
//! | `fuse.rs`, `ops.rs` | the `fuser::Filesystem` with the injectors hooked in (which operation asks what: `fuse.rs` docs), delayed operations handed to `delay.rs` |
//! | `passthrough.rs`, `inodes.rs` | every operation relative to the held root descriptor (`*at` calls, `/proc/self/fd` re-opens), node ids ↔ `(st_dev, st_ino)` with `O_PATH` descriptors counted by lookups |
//!
//! Step 3, the fault: `switch.rs` moves the files, working directories and file mappings
//! processes already hold on the volume onto the layer (and back), one bounded ptrace stop per
//! process; `live.rs` keeps the layers this process serves and repairs them after a crash;
//! `fault.rs` is the journaled `IoFault` and the `ApplyIOChaos` use case.
pub mod actions;
pub mod delay;
pub mod fault;
pub mod fuse;
pub mod inject;
pub mod inodes;
pub mod layer;
pub mod live;
pub mod matcher;
pub mod mount;
mod ops;
pub mod passthrough;
pub mod switch;

pub use actions::{
    parse_actions, Action, ActionKind, AttrOverride, FileKind, Filling, Mistake, Timespec,
    WeightedErrno,
};
pub use inject::{Attr, Before, Injector};
pub use layer::{detach_ours, layers_at, IoLayer, LayerOptions};
pub use matcher::{Filter, Method, MethodSet};
pub use mount::{abort_connection, is_ours, MountEntry};

use std::path::PathBuf;

use crate::failure::FailureKind;
use crate::ns::NsError;

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// `actions` is not JSON, or not a list.
    #[error("IOChaos actions: {0}")]
    Json(String),
    /// One field of one action is bad.
    #[error("IOChaos action {index}, {field}: {reason}")]
    Action {
        index: usize,
        field: String,
        reason: String,
    },
    /// `volume` is not an absolute path without `..`.
    #[error("IOChaos volume {0:?}: not an absolute path without `..`")]
    VolumePath(PathBuf),
    /// The volume cannot be opened in the container.
    #[error("IOChaos volume {path}: {source}")]
    Volume {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("IOChaos volume {path} is not a mount root in the container (it is inside the mount at {mount_point})")]
    NotMountRoot { path: PathBuf, mount_point: PathBuf },
    #[error("IOChaos volume {path} is a shared mount (peer group {group}): a layer on top would propagate to its peers")]
    Shared { path: PathBuf, group: u32 },
    #[error("IOChaos volume {path} already has faultd's layer on top (connection {conn})")]
    AlreadyLayered { path: PathBuf, conn: u32 },
    #[error("IOChaos volume {path}: {found}")]
    NotOurs { path: PathBuf, found: String },
    #[error("IOChaos: the namespace given is not a mount namespace")]
    NotMountNs,
    #[error("IOChaos: opening /dev/fuse: {0}")]
    NoFuse(#[source] std::io::Error),
    #[error("IOChaos FUSE {what}: {source}")]
    Fuse {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("IOChaos mount at {path}: {source}")]
    Mount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("IOChaos reading mountinfo: {0}")]
    Mountinfo(#[source] std::io::Error),
    #[error("IOChaos aborting FUSE connection {conn}: {source}")]
    Abort {
        conn: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("IOChaos mount namespace: {0}")]
    Namespace(#[from] NsError),
}

crate::impl_failure!(IoError);

impl IoError {
    pub fn kind(&self) -> FailureKind {
        match self {
            IoError::Json(_) | IoError::Action { .. } | IoError::VolumePath(_) => {
                FailureKind::InvalidArgument
            }
            IoError::Volume { source, .. } if *source == nix::errno::Errno::ENOENT => {
                FailureKind::NotFound
            }
            IoError::Namespace(NsError::Open { .. }) => FailureKind::NotFound,
            IoError::Volume { .. }
            | IoError::NotMountRoot { .. }
            | IoError::Shared { .. }
            | IoError::AlreadyLayered { .. }
            | IoError::NotOurs { .. }
            | IoError::NoFuse(_) => FailureKind::FailedPrecondition,
            IoError::NotMountNs
            | IoError::Fuse { .. }
            | IoError::Mount { .. }
            | IoError::Mountinfo(_)
            | IoError::Abort { .. }
            | IoError::Namespace(_) => FailureKind::Internal,
        }
    }
}

/// The randomness the injectors draw from (percent, errno choice, mistakes). Production uses
/// [`SplitMix64::from_entropy`], one per serving thread; tests pass a seeded one.
pub trait IoRng {
    fn next_u64(&mut self) -> u64;

    /// Uniform in `0..n`; `n` must not be 0. (Lemire's multiply-and-reject: no modulo bias.)
    fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "IoRng::below(0)");
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let n = rest.len();
            rest.copy_from_slice(&self.next_u64().to_le_bytes()[..n]);
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a small, fast, seedable generator; chaos needs
/// unpredictability to the target, not cryptography.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// Seeded from the OS's randomness.
    pub fn from_entropy() -> SplitMix64 {
        let r = uuid::Uuid::new_v4().as_u128();
        SplitMix64((r >> 64) as u64 ^ r as u64)
    }
}

impl IoRng for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Failure;

    #[test]
    fn splitmix_is_deterministic_per_seed() {
        let a: Vec<u64> = {
            let mut r = SplitMix64::new(7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = SplitMix64::new(7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        let mut c = SplitMix64::new(8);
        assert_ne!(a[0], c.next_u64());
        // The reference value of SplitMix64 seeded with 0.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
        let mut e1 = SplitMix64::from_entropy();
        let mut e2 = SplitMix64::from_entropy();
        assert_ne!(e1.next_u64(), e2.next_u64());
    }

    #[test]
    fn below_is_in_range_and_uniform() {
        let mut r = SplitMix64::new(42);
        assert!((0..1000).all(|_| r.below(1) == 0));
        assert!((0..1000).all(|_| r.below(3) < 3));
        assert!((0..1000).all(|_| r.below(u64::MAX) < u64::MAX));
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[r.below(10) as usize] += 1;
        }
        // 10 000 expected per bucket, σ ≈ 95.
        assert!(
            counts.iter().all(|c| (9_500..=10_500).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn fill_covers_odd_lengths() {
        let mut r = SplitMix64::new(3);
        for len in [0, 1, 7, 8, 9, 4096 + 3] {
            let mut buf = vec![0u8; len];
            r.fill(&mut buf);
            if len >= 8 {
                assert!(buf.iter().any(|b| *b != 0), "{len}");
            }
        }
        let mut a = [0u8; 13];
        let mut b = [0u8; 13];
        SplitMix64::new(5).fill(&mut a);
        SplitMix64::new(5).fill(&mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn errors_are_invalid_argument() {
        let e = IoError::Action {
            index: 2,
            field: "percent".into(),
            reason: "101 is outside 0..=100".into(),
        };
        assert_eq!(e.failure(), FailureKind::InvalidArgument);
        assert_eq!(
            e.to_string(),
            "IOChaos action 2, percent: 101 is outside 0..=100"
        );
        assert_eq!(
            IoError::Json("x".into()).failure(),
            FailureKind::InvalidArgument
        );
    }
}
