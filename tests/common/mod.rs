//! Shared helpers of the integration tests: a throwaway PKI, an in-process daemon on ephemeral
//! ports, and tonic clients with chosen certificates (here); containerd and Docker test
//! containers (`ctr`, `docker`), host-tier helpers such as faultd as a child process (`host`),
//! the TimeChaos target `clockreport` (`clock`), HTTPChaos pod/client namespaces, app and client (`http`),
//! sample statistics (`stats`) and upstream's shell-outs (`upstream`).
#![allow(dead_code)]

pub mod clock;
pub mod ctr;
pub mod docker;
pub mod host;
pub mod http;
pub mod io;
pub mod jvm;
pub mod stats;
pub mod upstream;

use std::path::{Path, PathBuf};

use clap::Parser;
use faultd::cli::Cli;
use faultd::config::DaemonConfig;
use faultd::daemon::Daemon;
use faultd::tls::pki::{Ca, Leaf};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub ca_path: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

pub fn write(dir: &Path, name: &str, data: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test CA").unwrap();
        let server = ca
            .issue(
                faultd::tls::CHAOS_DAEMON_SERVER_NAME,
                &["localhost", faultd::tls::CHAOS_DAEMON_SERVER_NAME],
                true,
                false,
            )
            .unwrap();
        let ca_path = write(dir.path(), "ca.crt", &ca.cert_pem);
        let server_cert = write(dir.path(), "tls.crt", &server.cert_pem);
        let server_key = write(dir.path(), "tls.key", &server.key_pem);
        Pki {
            dir,
            ca,
            ca_path,
            server_cert,
            server_key,
        }
    }

    pub fn client(&self, cn: &str) -> Leaf {
        self.ca.issue(cn, &[cn], false, false).unwrap()
    }
}

pub fn config(args: &[&str]) -> DaemonConfig {
    let mut full = vec![
        "faultd",
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--listen-address",
        "127.0.0.1",
    ];
    full.extend_from_slice(args);
    Cli::try_parse_from(full).unwrap().daemon
}

/// Starts a daemon with mTLS from `pki` and a private state dir.
pub async fn start_tls(pki: &Pki, extra: &[&str]) -> (Daemon, tempfile::TempDir) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let state = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--ca",
        pki.ca_path.to_str().unwrap(),
        "--cert",
        pki.server_cert.to_str().unwrap(),
        "--key",
        pki.server_key.to_str().unwrap(),
        "--state-dir",
        state.path().to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let d = Daemon::start(config(&args)).await.unwrap();
    (d, state)
}

/// The common name of the Chaos Mesh controller's client certificate.
pub const CONTROLLER_CN: &str = "controller-manager.chaos-mesh.org";

/// Client TLS trusting `ca_pem` for the daemon's name, presenting `client` (or no certificate).
pub fn client_tls(ca_pem: &str, client: Option<&Leaf>) -> ClientTlsConfig {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(faultd::tls::CHAOS_DAEMON_SERVER_NAME);
    match client {
        Some(c) => tls.identity(Identity::from_pem(&c.cert_pem, &c.key_pem)),
        None => tls,
    }
}

/// A TLS channel to the daemon presenting `client` (or no certificate) and trusting `ca_pem`.
pub async fn channel(
    d: &Daemon,
    ca_pem: &str,
    client: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("https://{}", d.grpc_addr))
        .unwrap()
        .tls_config(client_tls(ca_pem, client))?
        .connect()
        .await
}

pub async fn good_channel(d: &Daemon, pki: &Pki) -> Channel {
    let client = pki.client(CONTROLLER_CN);
    channel(d, &pki.ca.cert_pem, Some(&client)).await.unwrap()
}

pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let code = buf[9..12].parse().unwrap();
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}
