//! faultd: a native chaos-injection daemon that speaks Chaos Mesh's `pb.ChaosDaemon` contract.
//!
//! Layers, lowest first (a module only imports modules of its own layer or below; the
//! `layering` test checks it):
//! 1. `failure`, `duration`, `config`, `hex`, `process`, `ns`, `rootfs`, `metrics`, `journal`,
//!    `proto`, `tls`, `tc`, `privilege`, `vdso`, `ptrace`
//! 2. `runtime` (container id → process), `engine` (the fault life cycle)
//! 3. `faults::<kind>` (one module per fault kind: request use case, `Effect`, errors, tests;
//!    `faults::http` holds HTTPChaos's rules engine and proxy core, `faults::io` IOChaos's
//!    FUSE layer, `faults::jvm` JVMChaos's attach and Byteman client; shared by kinds:
//!    `faults::netns`, `faults::target`, `faults::json_list`)
//! 4. `faults` (the closed `FaultEffect` enum over the kinds), `doctor`
//! 5. `state` (what every handler shares), `server` (gRPC/HTTP adapters)
//! 6. `daemon`, `ctl`, `cli`
pub mod cli;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod doctor;
pub mod duration;
pub mod engine;
pub mod failure;
pub mod faults;
pub mod hex;
pub mod journal;
pub mod metrics;
pub mod ns;
pub mod privilege;
pub mod process;
pub mod proto;
pub mod ptrace;
pub mod rootfs;
pub mod runtime;
pub mod server;
pub mod state;
pub mod tc;
pub mod tls;
pub mod vdso;
