//! Generated protobuf types. Only the server layer (`crate::server`) and the CLI client use them.
#![allow(clippy::all, missing_docs)]

pub mod compat;

pub mod pb {
    tonic::include_proto!("pb");
    /// Hand-written so both wire encodings of `time`/`jitter` decode (see `compat`).
    pub use crate::proto::compat::Netem;
}

pub mod faultd {
    pub mod v1 {
        tonic::include_proto!("faultd.v1");
    }
}

/// containerd's gRPC API (a subset written for faultd, see `proto/containerd/`), used by
/// `crate::runtime` to talk to containerd. The module tree mirrors the proto packages so the
/// generated `super::…` paths between packages resolve.
pub mod containerd {
    pub mod v1 {
        pub mod types {
            tonic::include_proto!("containerd.v1.types");
        }
    }
    pub mod services {
        pub mod tasks {
            pub mod v1 {
                tonic::include_proto!("containerd.services.tasks.v1");
            }
        }
        pub mod containers {
            pub mod v1 {
                tonic::include_proto!("containerd.services.containers.v1");
            }
        }
    }
}

/// Encoded `FileDescriptorSet` of every faultd proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("faultd_descriptor");
