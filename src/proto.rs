//! Generated protobuf types. Only the server layer (`crate::server`) and the CLI client use them.
#![allow(clippy::all, missing_docs)]

pub mod pb {
    tonic::include_proto!("pb");
}

pub mod faultd {
    pub mod v1 {
        tonic::include_proto!("faultd.v1");
    }
}

/// Encoded `FileDescriptorSet` of every faultd proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("faultd_descriptor");
