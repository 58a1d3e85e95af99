//! faultd: a native chaos-injection daemon that speaks Chaos Mesh's `pb.ChaosDaemon` contract.
pub mod cli;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod doctor;
pub mod engine;
pub mod fault;
pub mod journal;
pub mod metrics;
pub mod netfault;
pub mod ns;
pub mod process;
pub mod proto;
pub mod runtime;
pub mod server;
pub mod tc;
pub mod tls;
