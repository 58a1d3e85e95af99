//! The gRPC and HTTP front doors. This is the only layer that knows protobuf types and
//! `tonic::Status`: adapters decode and validate requests, call domain modules, and map domain
//! errors to gRPC codes in [`status`].
pub mod call;
pub mod chaos_daemon;
pub mod decode;
pub mod faults;
pub mod http;
pub mod listener;
pub mod status;

pub use call::{handle, peer_of, CallContext, NAMESPACED_NAME_HEADER};
