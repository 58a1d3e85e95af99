//! How a request failed, in the terms a caller can act on. Every domain error type implements
//! [`Failure`]; the server layer turns that into a gRPC status in exactly one place
//! (`server::status`).

/// The classes of failure the gRPC layer distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The request itself is wrong (a bad field): retrying it cannot help.
    InvalidArgument,
    /// The target (container, process, fault, lease) does not exist.
    NotFound,
    /// The node cannot do this now (missing kernel feature, foreign state in the way).
    FailedPrecondition,
    /// faultd cannot serve right now (journal, runtime socket): retry later.
    Unavailable,
    /// A bug or an unexpected kernel answer.
    Internal,
}

/// A domain error that knows its [`FailureKind`].
pub trait Failure: std::error::Error {
    fn failure(&self) -> FailureKind;
}

/// Implements [`Failure`] for error types whose inherent `kind()` already answers it.
#[macro_export]
macro_rules! impl_failure {
    ($($t:ty),+ $(,)?) => {$(
        impl $crate::failure::Failure for $t {
            fn failure(&self) -> $crate::failure::FailureKind {
                self.kind()
            }
        }
    )+};
}
