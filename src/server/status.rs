//! The one mapping from domain errors to gRPC status codes: every domain error implements
//! [`crate::failure::Failure`], and [`of`] turns it into a `tonic::Status`.
use tonic::{Code, Status};

use crate::failure::{Failure, FailureKind};

/// `UNIMPLEMENTED` naming the fault kind, for Chaos Mesh RPCs faultd does not serve yet.
pub fn unsupported(kind: &str, rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{kind} is not supported by faultd yet ({rpc} is not implemented)"
    ))
}

pub fn code(kind: FailureKind) -> Code {
    match kind {
        FailureKind::InvalidArgument => Code::InvalidArgument,
        FailureKind::NotFound => Code::NotFound,
        FailureKind::FailedPrecondition => Code::FailedPrecondition,
        FailureKind::Unavailable => Code::Unavailable,
        FailureKind::Internal => Code::Internal,
    }
}

/// The status for a domain error: its class decides the code, its text is the message.
pub fn of<E: Failure>(e: E) -> Status {
    Status::new(code(e.failure()), e.to_string())
}

pub fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}
