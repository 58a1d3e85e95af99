//! faultd: a native chaos-injection daemon that speaks Chaos Mesh's `pb.ChaosDaemon` contract.
pub mod ns;
pub mod process;
pub mod proto;
pub mod journal;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod metrics;
pub mod server;
pub mod tls;
pub mod runtime;
pub mod tc;
pub mod engine;
pub mod fault;
pub mod netfault;
pub mod doctor;
