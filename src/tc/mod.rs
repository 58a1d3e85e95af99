//! Traffic control over route netlink: what `SetTcs` programs into a target's network namespace.
//!
//! This module owns everything between a validated fault description and the kernel's qdisc
//! tables, and nothing above it (no protobuf, no tonic):
//!
//! * [`parse`]: the string grammars the Chaos Mesh contract carries (Go durations for
//!   `Netem.time`/`jitter`, tc rates such as `"8000bit"`/`"1mbps"`, tc sizes, percentages), plus
//!   [`NetemTime`] for the two wire encodings of `Netem.time` (duration string since Chaos Mesh 2.8,
//!   legacy varint microseconds before).
//! * [`netem`], [`tbf`], [`prio`]: fault models and their `TCA_OPTIONS` encoders. The encoders
//!   reproduce byte for byte what iproute2 6.1's `tc` sends for the command line the Go
//!   chaos-daemon would have run (`convertNetemToArgs`/`convertTbfToArgs`), so a faultd-managed
//!   pod ends up with exactly the kernel state the Go daemon produced. The golden captures in
//!   `tests/golden/tc/` (see its README) pin this.
//! * [`psched`]: the kernel packet-scheduler clock arithmetic iproute2 uses (ticks, transmit
//!   times, rate tables).
//! * [`qdisc`]: the operations: link lookup, root-qdisc dump, add/replace, idempotent delete, exact
//!   restore of a dumped root qdisc.
//! * [`socket`]: the transport, a blocking `NETLINK_ROUTE` socket used on a dedicated OS thread
//!   inside the target namespace ([`socket::in_netns`]): no tokio worker ever calls `setns`.
//!
//! Privileges: the encoders and parsers need none. The transport needs `CAP_NET_ADMIN` in the
//! target namespace, and [`socket::in_netns`] needs `CAP_SYS_ADMIN` to enter it.
//!
//! Errors are one [`TcError`] enum; [`TcError::class`] tells the gRPC layer whether a failure is
//! the caller's fault ([`TcErrorClass::InvalidArgument`]), a missing device or process
//! ([`TcErrorClass::NotFound`]), or anything else ([`TcErrorClass::Internal`]).
pub mod netem;
pub mod parse;
pub mod prio;
pub mod psched;
pub mod qdisc;
pub mod socket;
pub mod tbf;

mod nla;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod live_tests;

pub use netem::{encode_netem_options, NetemArgs, NetemSpec};
pub use parse::{NetemTime, Percent};
pub use prio::{encode_prio_options, PrioSpec};
pub use qdisc::{AddMode, Qdisc};
pub use socket::{in_kept_netns, in_netns, release_kept, RouteSocket};
pub use tbf::{encode_tbf_options, TbfArgs, TbfLimit, TbfPeak, TbfSpec};

use crate::ns::NsError;

/// `TCA_OPTIONS`, the attribute every encoder in this module produces the payload of.
pub const TCA_OPTIONS: u16 = 2;

/// `TC_H_ROOT`: the parent of a device's root qdisc.
pub const TC_H_ROOT: u32 = 0xFFFF_FFFF;

/// Builds a tc handle `major:minor` (as `tc` prints it, in hex).
pub const fn tc_handle(major: u16, minor: u16) -> u32 {
    ((major as u32) << 16) | minor as u32
}

pub type Result<T> = std::result::Result<T, TcError>;

/// Everything that can go wrong in traffic control.
#[derive(Debug, thiserror::Error)]
pub enum TcError {
    /// A value from the request is malformed or out of range (gRPC `InvalidArgument`).
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidArgument {
        field: &'static str,
        value: String,
        reason: String,
    },
    /// The named network device does not exist in the target namespace (gRPC `NotFound`).
    #[error("network device {name:?} not found")]
    LinkNotFound { name: String },
    /// The kernel refused a request; `errno` is positive (`libc::ENOENT`, ...).
    #[error("{op}: {}", std::io::Error::from_raw_os_error(*errno))]
    Kernel { op: &'static str, errno: i32 },
    /// The kernel does not know a qdisc kind (no `sch_<kind>` module, not built in): adding it
    /// failed with `errno` (`ENOENT`, or `EOPNOTSUPP`) although its parent exists.
    #[error("the kernel has no sch_{kind} (modprobe sch_{kind})")]
    KindMissing { kind: String, errno: i32 },
    /// Sending to or receiving from the netlink socket failed.
    #[error("{op}: netlink socket: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The kernel answered something this module does not understand.
    #[error("{op}: unexpected netlink reply: {detail}")]
    Protocol { op: &'static str, detail: String },
    /// Opening the netlink socket failed.
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// Entering the target's network namespace failed.
    #[error(transparent)]
    Namespace(#[from] NsError),
    /// The network namespace a fault was applied in no longer exists.
    #[error("the target network namespace is gone")]
    NamespaceGone,
    /// The thread that keeps the namespace's socket failed (see [`crate::ns::kept`]).
    #[error(transparent)]
    Kept(crate::ns::kept::KeptError),
}

impl From<crate::ns::kept::KeptError> for TcError {
    fn from(e: crate::ns::kept::KeptError) -> Self {
        match e {
            crate::ns::kept::KeptError::Namespace(e) => TcError::Namespace(e),
            other => TcError::Kept(other),
        }
    }
}

/// Coarse classification of a [`TcError`], for mapping to a gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcErrorClass {
    /// The request itself is wrong; retrying it cannot help.
    InvalidArgument,
    /// The device, or the process whose namespace was asked for, does not exist.
    NotFound,
    /// The kernel lacks a feature the request needs (a qdisc kind): gRPC `FailedPrecondition`.
    Unsupported,
    /// Everything else (kernel refusals, transport failures).
    Internal,
}

impl TcError {
    pub(crate) fn invalid(
        field: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        TcError::InvalidArgument {
            field,
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// Which gRPC status family this error belongs to.
    ///
    /// Kernel errors are `Internal` except `ENODEV` (the device vanished under us). The kernel
    /// answers `ENOENT` both for a missing parent qdisc and for a qdisc kind it does not know (no
    /// `sch_netem` module); [`qdisc::apply_qdisc`] tells them apart and reports the latter as
    /// [`TcError::KindMissing`] (`Unsupported`).
    pub fn class(&self) -> TcErrorClass {
        match self {
            TcError::InvalidArgument { .. } => TcErrorClass::InvalidArgument,
            TcError::LinkNotFound { .. } | TcError::NamespaceGone => TcErrorClass::NotFound,
            TcError::KindMissing { .. } => TcErrorClass::Unsupported,
            TcError::Kernel { errno, .. } if *errno == libc::ENODEV => TcErrorClass::NotFound,
            TcError::Namespace(NsError::Open { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                TcErrorClass::NotFound
            }
            _ => TcErrorClass::Internal,
        }
    }

    /// The kernel's errno, for [`TcError::Kernel`] and [`TcError::KindMissing`].
    pub fn errno(&self) -> Option<i32> {
        match self {
            TcError::Kernel { errno, .. } | TcError::KindMissing { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}
