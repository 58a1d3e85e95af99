//! The one mapping from domain errors to gRPC status codes.
use tonic::Status;

/// `UNIMPLEMENTED` naming the fault kind, for Chaos Mesh RPCs faultd does not serve yet.
pub fn unsupported(kind: &str, rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{kind} is not supported by faultd yet ({rpc} is not implemented)"
    ))
}
