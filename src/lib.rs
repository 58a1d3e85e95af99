//! faultd: a native chaos-injection daemon that speaks Chaos Mesh's `pb.ChaosDaemon` contract.
pub mod ns;
pub mod process;
pub mod proto;
