//! The one mapping from domain errors to gRPC status codes.
use tonic::{Code, Status};

use crate::engine::{EngineError, FailureKind};

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

pub fn engine(e: EngineError) -> Status {
    Status::new(code(e.kind()), e.to_string())
}

pub fn net(e: crate::netfault::NetError) -> Status {
    Status::new(code(e.kind()), e.to_string())
}

pub fn firewall(e: crate::firewall::FirewallError) -> Status {
    Status::new(code(e.kind()), e.to_string())
}

pub fn stress(e: crate::stress::StressError) -> Status {
    Status::new(code(e.kind()), e.to_string())
}

pub fn runtime(e: crate::runtime::RuntimeError) -> Status {
    use crate::runtime::ErrorKind as K;
    let c = match e.kind() {
        K::InvalidArgument => Code::InvalidArgument,
        K::NotFound => Code::NotFound,
        K::Unavailable => Code::Unavailable,
        K::Unsupported => Code::FailedPrecondition,
        K::Internal => Code::Internal,
    };
    Status::new(c, e.to_string())
}

pub fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}
