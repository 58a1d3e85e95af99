//! `faultd ctl`: a client for people on a node or a laptop. It speaks mTLS with the same
//! certificate flags as the daemon, or uses the node-local admin socket (`--socket`).
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::proto::faultd::v1 as api;
use crate::proto::pb;

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Daemon address (host:port).
    #[arg(long, env = "FAULTD_ADDR", default_value = "127.0.0.1:31767")]
    pub addr: String,
    /// CA certificate the daemon's certificate must chain to.
    #[arg(long, env = "FAULTD_CTL_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate.
    #[arg(long, env = "FAULTD_CTL_CERT")]
    pub cert: Option<PathBuf>,
    /// Client key.
    #[arg(long, env = "FAULTD_CTL_KEY")]
    pub key: Option<PathBuf>,
    /// Name expected in the daemon's certificate.
    #[arg(long, default_value = crate::tls::CHAOS_DAEMON_SERVER_NAME)]
    pub server_name: String,
    /// Connect without TLS (daemon started with --insecure).
    #[arg(long)]
    pub insecure: bool,
    /// Use the daemon's local admin socket instead (e.g. /var/lib/faultd/faultd.sock).
    #[arg(long, env = "FAULTD_ADMIN_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Ask the daemon's gRPC health service (mTLS port only).
    Health,
    /// List active faults (and ended ones with --all).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Show one fault.
    Get { id: String },
    /// Roll back one fault now.
    Revoke { id: String },
    /// Roll back every active fault now.
    HaltAll {
        #[arg(long, default_value = "faultd ctl halt-all")]
        reason: String,
    },
    /// Check prerequisites and scan the node for residue (--fix removes faultd's own); exits 1
    /// when a check fails.
    Doctor {
        #[arg(long)]
        fix: bool,
    },
    /// Add network delay (netem) to a device of a container or process.
    Netem {
        #[command(flatten)]
        target: TargetArgs,
        /// Delay, e.g. 100ms.
        #[arg(long, default_value = "")]
        delay: String,
        #[arg(long, default_value = "")]
        jitter: String,
        /// Loss in percent.
        #[arg(long, default_value_t = 0.0)]
        loss: f32,
    },
    /// Limit bandwidth (tbf) of a device of a container or process.
    Bandwidth {
        #[command(flatten)]
        target: TargetArgs,
        /// Rate in tc units, e.g. 1mbit.
        #[arg(long)]
        rate: String,
        /// Bucket size in bytes.
        #[arg(long, default_value_t = 10000)]
        buffer: u32,
        /// Queue size in bytes.
        #[arg(long, default_value_t = 20000)]
        limit: u32,
    },
    /// Point a container's (its pod's) resolv.conf at a DNS server (DNSChaos).
    Dns {
        /// Container id with its runtime prefix.
        #[arg(long, conflicts_with = "pid")]
        container: Option<String>,
        /// Host PID of a process whose root shows the resolv.conf.
        #[arg(long)]
        pid: Option<u32>,
        /// The DNS server (an IPv4 or IPv6 address).
        #[arg(long)]
        server: String,
        /// Roll the fault back after this long (e.g. 30s, 5m).
        #[arg(long, value_parser = crate::duration::parse_duration)]
        ttl: Duration,
        /// Tie the fault to a lease.
        #[arg(long)]
        lease: Option<String>,
    },
    /// Shift the clocks of a container's processes, or of a process and its descendants
    /// (TimeChaos).
    Time {
        /// Container id with its runtime prefix.
        #[arg(long, conflicts_with = "pid")]
        container: Option<String>,
        /// Host PID: this process and its descendants.
        #[arg(long)]
        pid: Option<u32>,
        /// The offset, as Chaos Mesh's timeOffset: -10m100ns, 3600s, +1h.
        #[arg(long, allow_hyphen_values = true, value_parser = crate::duration::parse_signed_nanos)]
        offset: i128,
        /// The clocks to shift (comma-separated: REALTIME, MONOTONIC, BOOTTIME, ...);
        /// gettimeofday and time() follow REALTIME.
        #[arg(long, default_value = "REALTIME", value_parser = crate::faults::time::clock_mask)]
        clocks: u64,
        /// Roll the fault back after this long (e.g. 30s, 5m).
        #[arg(long, value_parser = crate::duration::parse_duration)]
        ttl: Duration,
        /// Tie the fault to a lease.
        #[arg(long)]
        lease: Option<String>,
    },
    /// Proxy HTTP of a container's (pod's) network namespace through rules (HTTPChaos).
    Http {
        /// Container id with its runtime prefix.
        #[arg(long, conflicts_with = "pid")]
        container: Option<String>,
        /// Host PID of a process in the target network namespace.
        #[arg(long)]
        pid: Option<u32>,
        /// TCP ports to proxy (comma-separated or repeated).
        #[arg(long = "port", value_delimiter = ',', required = true)]
        ports: Vec<u16>,
        /// The rules: Chaos Mesh's PodHttpChaos rule list as JSON, or @FILE to read it.
        #[arg(long)]
        rules: String,
        /// TLS termination: Chaos Mesh's tls JSON, or @FILE.
        #[arg(long, default_value = "")]
        tls: String,
        /// Roll the fault back after this long (e.g. 30s, 5m).
        #[arg(long, value_parser = crate::duration::parse_duration)]
        ttl: Duration,
        /// Tie the fault to a lease.
        #[arg(long)]
        lease: Option<String>,
    },
    /// Load a Byteman rule script into a container's JVM (JVMChaos).
    Jvm {
        /// Container id with its runtime prefix.
        #[arg(long, conflicts_with = "pid")]
        container: Option<String>,
        /// Host PID of the JVM (or of a process whose descendant it is).
        #[arg(long)]
        pid: Option<u32>,
        /// Port of Byteman's agent listener in the JVM's network namespace.
        #[arg(long, default_value_t = 9277)]
        port: u16,
        /// The Byteman rule script, or @FILE to read it.
        #[arg(long)]
        rule: String,
        /// Roll the fault back after this long (e.g. 30s, 5m).
        #[arg(long, value_parser = crate::duration::parse_duration)]
        ttl: Duration,
        /// Tie the fault to a lease.
        #[arg(long)]
        lease: Option<String>,
    },
    /// Inject file-system faults into a volume of a container through faultd's FUSE layer
    /// (IOChaos).
    Io {
        /// Container id with its runtime prefix.
        #[arg(long, conflicts_with = "pid")]
        container: Option<String>,
        /// Host PID of a process in the target mount namespace.
        #[arg(long)]
        pid: Option<u32>,
        /// The volume: a mount root as the container sees it (e.g. /data).
        #[arg(long)]
        volume: String,
        /// The actions: Chaos Mesh's IOChaos action list as JSON, or @FILE to read it.
        #[arg(long)]
        actions: String,
        /// Roll the fault back after this long (e.g. 30s, 5m).
        #[arg(long, value_parser = crate::duration::parse_duration)]
        ttl: Duration,
        /// Tie the fault to a lease.
        #[arg(long)]
        lease: Option<String>,
    },
}

/// A faultd.v1 `ApplyFault` for a `--container`/`--pid` subcommand: one of the two is required;
/// `fault` builds the body from the container id (empty with `--pid`).
fn container_fault(
    container: &Option<String>,
    pid: &Option<u32>,
    ttl: &Duration,
    lease: &Option<String>,
    fault: impl FnOnce(String) -> Result<api::apply_fault_request::Fault, CtlError>,
) -> Result<api::ApplyFaultRequest, CtlError> {
    if container.is_none() && pid.is_none() {
        return Err(CtlError::Usage("--container or --pid is required".into()));
    }
    Ok(api::ApplyFaultRequest {
        ttl_seconds: ttl.as_secs().max(1),
        lease_id: lease.clone().unwrap_or_default(),
        target_pid: pid.unwrap_or(0),
        fault: Some(fault(container.clone().unwrap_or_default())?),
    })
}

/// A flag's value, or the contents of the file it names with a leading `@`.
fn inline_or_file(v: &str) -> Result<String, CtlError> {
    match v.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CtlError::Usage(format!("reading {path}: {e}"))),
        None => Ok(v.to_string()),
    }
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Container id with its runtime prefix (containerd://..., docker://..., cri-o://...).
    #[arg(long, conflicts_with = "pid")]
    pub container: Option<String>,
    /// Host PID of a process in the target network namespace.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Network device.
    #[arg(long, default_value = "eth0")]
    pub device: String,
    /// Roll the fault back after this long (e.g. 30s, 5m).
    #[arg(long, value_parser = crate::duration::parse_duration)]
    pub ttl: Duration,
    /// Tie the fault to a lease.
    #[arg(long)]
    pub lease: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--ca, --cert and --key are required unless --insecure or --socket")]
    MissingTls,
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{}: {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("{0}")]
    Usage(String),
    /// `doctor` printed its report and some checks failed.
    #[error("doctor: failed checks: {0}")]
    ChecksFailed(String),
}

fn read(p: &PathBuf) -> Result<Vec<u8>, CtlError> {
    std::fs::read(p).map_err(|source| CtlError::Read {
        path: p.clone(),
        source,
    })
}

/// Opens a channel over the daemon's local admin socket (no TLS; the socket is root-only).
pub async fn connect_unix(path: &std::path::Path) -> Result<Channel, CtlError> {
    let path = path.to_path_buf();
    let shown = path.display().to_string();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .map_err(|source| CtlError::Connect {
            addr: shown,
            source,
        })
}

/// Opens a channel to the daemon: the admin socket with `--socket`, else mTLS (or plaintext
/// with `--insecure`).
pub async fn connect(args: &CtlArgs) -> Result<Channel, CtlError> {
    if let Some(sock) = &args.socket {
        return connect_unix(sock).await;
    }
    let scheme = if args.insecure { "http" } else { "https" };
    let uri = format!("{scheme}://{}", args.addr);
    let mut ep = Endpoint::from_shared(uri).map_err(|source| CtlError::Connect {
        addr: args.addr.clone(),
        source,
    })?;
    if !args.insecure {
        let (Some(ca), Some(cert), Some(key)) = (&args.ca, &args.cert, &args.key) else {
            return Err(CtlError::MissingTls);
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(ca)?))
            .identity(Identity::from_pem(read(cert)?, read(key)?))
            .domain_name(args.server_name.clone());
        ep = ep.tls_config(tls).map_err(|source| CtlError::Connect {
            addr: args.addr.clone(),
            source,
        })?;
    }
    ep.connect().await.map_err(|source| CtlError::Connect {
        addr: args.addr.clone(),
        source,
    })
}

/// Runs a ctl command; returns the exit code.
pub async fn run(args: CtlArgs) -> i32 {
    match run_inner(&args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("faultd ctl: {e}");
            1
        }
    }
}

fn when(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let now = crate::engine::record::now_unix_ms();
    let d = std::time::Duration::from_millis((ms - now).unsigned_abs());
    if ms >= now {
        format!("in {}", crate::duration::humanize(d))
    } else {
        format!("{} ago", crate::duration::humanize(d))
    }
}

fn phase_name(p: i32) -> &'static str {
    match api::Phase::try_from(p).unwrap_or(api::Phase::Unspecified) {
        api::Phase::Intent => "intent",
        api::Phase::Applied => "applied",
        api::Phase::Reverting => "reverting",
        api::Phase::Reverted => "reverted",
        api::Phase::Failed => "FAILED",
        api::Phase::Unspecified => "?",
    }
}

fn fault_json(f: &api::Fault) -> serde_json::Value {
    let t = f.target.clone().unwrap_or_default();
    serde_json::json!({
        "id": f.id, "kind": f.kind, "phase": phase_name(f.phase), "owner": f.owner,
        "lease_id": f.lease_id, "created_unix_ms": f.created_unix_ms,
        "applied_unix_ms": f.applied_unix_ms, "deadline_unix_ms": f.deadline_unix_ms,
        "ended_unix_ms": f.ended_unix_ms, "end_reason": f.end_reason, "last_error": f.last_error,
        "summary": f.summary,
        "target": {"container_id": t.container_id, "pod_uid": t.pod_uid, "pid": t.pid,
                   "netns_inode": t.netns_inode, "device": t.device},
    })
}

fn print_faults(out: Output, faults: &[api::Fault]) {
    if out == Output::Json {
        let v: Vec<_> = faults.iter().map(fault_json).collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    println!(
        "{:<36}  {:<10}  {:<9}  {:<22}  {:<10}  {:<10}  SUMMARY",
        "ID", "KIND", "PHASE", "TARGET", "SINCE", "UNTIL"
    );
    for f in faults {
        let t = f.target.clone().unwrap_or_default();
        let target = if !t.container_id.is_empty() {
            t.container_id.chars().take(22).collect()
        } else {
            format!("pid {} {}", t.pid, t.device)
        };
        let until = if f.ended_unix_ms > 0 {
            format!("ended:{}", f.end_reason)
        } else {
            when(f.deadline_unix_ms)
        };
        println!(
            "{:<36}  {:<10}  {:<9}  {:<22}  {:<10}  {:<10}  {}{}",
            f.id,
            f.kind,
            phase_name(f.phase),
            target,
            when(f.created_unix_ms),
            until,
            f.summary,
            if f.last_error.is_empty() {
                String::new()
            } else {
                format!("  error: {}", f.last_error)
            }
        );
    }
}

fn tc_request(t: &TargetArgs, tc: pb::Tc) -> Result<api::ApplyFaultRequest, CtlError> {
    if t.container.is_none() && t.pid.is_none() {
        return Err(CtlError::Usage("give --container or --pid".into()));
    }
    Ok(api::ApplyFaultRequest {
        ttl_seconds: t.ttl.as_secs().max(1),
        lease_id: t.lease.clone().unwrap_or_default(),
        target_pid: t.pid.unwrap_or(0),
        fault: Some(api::apply_fault_request::Fault::SetTcs(pb::TcsRequest {
            tcs: vec![pb::Tc {
                device: t.device.clone(),
                ..tc
            }],
            container_id: t.container.clone().unwrap_or_default(),
            enter_ns: true,
            pod_uid: String::new(),
        })),
    })
}

async fn run_inner(args: &CtlArgs) -> Result<(), CtlError> {
    let channel = connect(args).await?;
    let mut faults = api::faults_client::FaultsClient::new(channel.clone());
    match &args.command {
        CtlCommand::Health => {
            let mut c = tonic_health::pb::health_client::HealthClient::new(channel);
            let r = c
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await?
                .into_inner();
            println!("{:?}", r.status());
        }
        CtlCommand::List { all } => {
            let r = faults
                .list_faults(api::ListFaultsRequest {
                    include_ended: *all,
                })
                .await?
                .into_inner();
            print_faults(args.output, &r.faults);
        }
        CtlCommand::Get { id } => {
            let f = faults
                .get_fault(api::GetFaultRequest { id: id.clone() })
                .await?
                .into_inner();
            print_faults(args.output, &[f]);
        }
        CtlCommand::Revoke { id } => {
            let f = faults
                .revoke_fault(api::RevokeFaultRequest { id: id.clone() })
                .await?
                .into_inner();
            print_faults(args.output, &[f]);
        }
        CtlCommand::HaltAll { reason } => {
            let r = faults
                .halt_all(api::HaltAllRequest {
                    reason: reason.clone(),
                })
                .await?
                .into_inner();
            if args.output == Output::Json {
                let v: Vec<_> = r.faults.iter().map(fault_json).collect();
                println!(
                    "{}",
                    serde_json::json!({"rolled_back": r.rolled_back, "failed": r.failed, "faults": v})
                );
            } else {
                println!("rolled back {}, failed {}", r.rolled_back, r.failed);
                print_faults(args.output, &r.faults);
            }
            if r.failed > 0 {
                return Err(CtlError::Usage(format!(
                    "{} fault(s) could not be rolled back; see their last_error",
                    r.failed
                )));
            }
        }
        CtlCommand::Doctor { fix } => {
            let mut d = api::doctor_client::DoctorClient::new(channel);
            let r = d
                .check(api::DoctorRequest { fix: *fix })
                .await?
                .into_inner();
            let checks: Vec<crate::doctor::Check> = r
                .checks
                .into_iter()
                .map(|c| crate::doctor::Check {
                    name: c.name,
                    ok: c.ok,
                    detail: c.detail,
                })
                .collect();
            let residue: Vec<crate::doctor::Residue> = r
                .residue
                .into_iter()
                .map(|x| crate::doctor::Residue {
                    kind: x.kind,
                    location: x.location,
                    detail: x.detail,
                    removed: x.removed,
                })
                .collect();
            if args.output == Output::Json {
                let checks: Vec<_> = checks
                    .iter()
                    .map(|c| serde_json::json!({"name": c.name, "ok": c.ok, "detail": c.detail}))
                    .collect();
                let residue: Vec<_> = residue.iter().map(|x| serde_json::json!({"kind": x.kind, "location": x.location, "detail": x.detail, "removed": x.removed})).collect();
                println!(
                    "{}",
                    serde_json::json!({"checks": checks, "residue": residue})
                );
            } else {
                print!("{}", crate::doctor::render_text(&checks, &residue));
            }
            let failed = crate::doctor::failed_checks(&checks);
            if !failed.is_empty() {
                return Err(CtlError::ChecksFailed(failed.join(", ")));
            }
        }
        CtlCommand::Netem {
            target,
            delay,
            jitter,
            loss,
        } => {
            let req = tc_request(
                target,
                pb::Tc {
                    r#type: pb::tc::Type::Netem as i32,
                    netem: Some(pb::Netem {
                        time: delay.as_str().into(),
                        jitter: jitter.as_str().into(),
                        loss: *loss,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )?;
            let f = faults.apply_fault(req).await?.into_inner();
            print_faults(args.output, &[f]);
        }
        CtlCommand::Bandwidth {
            target,
            rate,
            buffer,
            limit,
        } => {
            let req = tc_request(
                target,
                pb::Tc {
                    r#type: pb::tc::Type::Bandwidth as i32,
                    tbf: Some(pb::Tbf {
                        rate: rate.clone(),
                        limit: *limit,
                        buffer: *buffer,
                        peak_rate: 0,
                        min_burst: 0,
                    }),
                    ..Default::default()
                },
            )?;
            let f = faults.apply_fault(req).await?.into_inner();
            print_faults(args.output, &[f]);
        }
        CtlCommand::Dns {
            container,
            pid,
            server,
            ttl,
            lease,
        } => {
            let req = container_fault(container, pid, ttl, lease, |container_id| {
                Ok(api::apply_fault_request::Fault::SetDnsServer(
                    pb::SetDnsServerRequest {
                        container_id,
                        dns_server: server.clone(),
                        enable: true,
                        enter_ns: true,
                    },
                ))
            })?;
            let f = faults.apply_fault(req).await?.into_inner();
            print_faults(args.output, &[f]);
        }
        CtlCommand::Time {
            container,
            pid,
            offset,
            clocks,
            ttl,
            lease,
        } => {
            // As the controller sends it: truncating division, both parts carry the sign.
            let (sec, nsec) = (
                (*offset / 1_000_000_000) as i64,
                (*offset % 1_000_000_000) as i64,
            );
            let req = container_fault(container, pid, ttl, lease, |container_id| {
                Ok(api::apply_fault_request::Fault::SetTimeOffset(
                    pb::TimeRequest {
                        container_id,
                        sec,
                        nsec,
                        clk_ids_mask: *clocks,
                        uid: format!("faultd-ctl-{}", uuid::Uuid::new_v4().simple()),
                        pod_container_name: String::new(),
                    },
                ))
            })?;
            let f = faults.apply_fault(req).await?.into_inner();
            print_faults(args.output, &[f]);
        }
        CtlCommand::Http {
            container,
            pid,
            ports,
            rules,
            tls,
            ttl,
            lease,
        } => {
            let req = container_fault(container, pid, ttl, lease, |container_id| {
                Ok(api::apply_fault_request::Fault::ApplyHttpChaos(
                    pb::ApplyHttpChaosRequest {
                        rules: inline_or_file(rules)?,
                        proxy_ports: ports.iter().map(|p| u32::from(*p)).collect(),
                        container_id,
                        enter_ns: true,
                        tls: if tls.is_empty() {
                            String::new()
                        } else {
                            inline_or_file(tls)?
                        },
                        ..Default::default()
                    },
                ))
            })?;
            let f = faults.apply_fault(req).await?.into_inner();
            print_faults(args.output, &[f]);
        }
        CtlCommand::Jvm {
            container,
            pid,
            port,
            rule,
            ttl,
            lease,
        } => {
            let req = container_fault(container, pid, ttl, lease, |container_id| {
                Ok(api::apply_fault_request::Fault::InstallJvmRules(
                    pb::InstallJvmRulesRequest {
                        container_id,
                        rule: inline_or_file(rule)?,
                        port: i32::from(*port),
                        enter_ns: true,
                    },
                ))
            })?;
            let f = faults.apply_fault(req).await?.into_inner();
            print_faults(args.output, &[f]);
        }
        CtlCommand::Io {
            container,
            pid,
            volume,
            actions,
            ttl,
            lease,
        } => {
            let req = container_fault(container, pid, ttl, lease, |container_id| {
                Ok(api::apply_fault_request::Fault::ApplyIoChaos(
                    pb::ApplyIoChaosRequest {
                        actions: inline_or_file(actions)?,
                        volume: volume.clone(),
                        container_id,
                        enter_ns: true,
                        ..Default::default()
                    },
                ))
            })?;
            let f = faults.apply_fault(req).await?.into_inner();
            print_faults(args.output, &[f]);
        }
    }
    Ok(())
}
