//! `faultd ctl`: a client for people on a node or a laptop. It speaks mTLS with the same
//! certificate flags as the daemon.
use std::path::PathBuf;

use clap::{Args, Subcommand};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

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
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Ask the daemon's gRPC health service.
    Health,
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--ca, --cert and --key are required unless --insecure")]
    MissingTls,
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{0}")]
    Rpc(#[from] tonic::Status),
}

fn read(p: &PathBuf) -> Result<Vec<u8>, CtlError> {
    std::fs::read(p).map_err(|source| CtlError::Read {
        path: p.clone(),
        source,
    })
}

/// Opens a channel to the daemon (mTLS unless `--insecure`).
pub async fn connect(args: &CtlArgs) -> Result<Channel, CtlError> {
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

async fn run_inner(args: &CtlArgs) -> Result<(), CtlError> {
    let channel = connect(args).await?;
    match args.command {
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
    }
    Ok(())
}
