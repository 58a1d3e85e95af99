//! Daemon assembly and lifecycle: state dir, certificates, listeners, start-up reconciliation,
//! serving, and graceful shutdown (health NOT_SERVING, drain, stop within the grace period).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;

use crate::config::DaemonConfig;
use crate::metrics::Metrics;
use crate::proto::pb::chaos_daemon_server::ChaosDaemonServer;
use crate::server;
use crate::tls::{self, ReloadingConfig, TlsFiles};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("state dir {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// State shared by every handler.
pub struct DaemonState {
    pub config: DaemonConfig,
    pub metrics: Arc<Metrics>,
    ready: AtomicBool,
    ready_detail: Mutex<String>,
}

impl DaemonState {
    pub fn new(config: DaemonConfig) -> Self {
        DaemonState {
            config,
            metrics: Arc::new(Metrics::new()),
            ready: AtomicBool::new(false),
            ready_detail: Mutex::new("starting: reconciling the journal\n".into()),
        }
    }

    /// `/readyz`: ready once start-up reconciliation finished, with a human-readable body.
    pub fn readiness(&self) -> (bool, String) {
        let detail = self
            .ready_detail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (self.ready.load(Ordering::SeqCst), detail)
    }

    fn set_ready(&self, ready: bool, detail: String) {
        *self.ready_detail.lock().unwrap_or_else(|p| p.into_inner()) = detail;
        self.ready.store(ready, Ordering::SeqCst);
    }
}

/// A running daemon.
pub struct Daemon {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub state: Arc<DaemonState>,
    /// Client certificate files when running with `--dev`.
    pub dev_pki: Option<tls::pki::DevPki>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), DaemonError>>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, DaemonError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Bind { addr, source })
}

impl Daemon {
    /// Starts the daemon: returns once both ports are bound. gRPC serves only after start-up
    /// reconciliation; `/healthz` answers immediately and `/readyz` once reconciliation is done.
    pub async fn start(config: DaemonConfig) -> Result<Daemon, DaemonError> {
        config.validate().map_err(DaemonError::Config)?;
        let state_dir = config.state_dir();
        std::fs::create_dir_all(&state_dir).map_err(|source| DaemonError::StateDir {
            path: state_dir.clone(),
            source,
        })?;

        let dev_pki = if config.dev {
            Some(tls::pki::dev_pki(&state_dir.join("dev-certs"))?)
        } else {
            None
        };
        let tls_files = match (&dev_pki, &config.ca, &config.cert, &config.key) {
            (Some(p), ..) => Some(p.server.clone()),
            (None, Some(ca), Some(cert), Some(key)) if !config.insecure => Some(TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        let tls = match tls_files {
            Some(f) => Some(Arc::new(ReloadingConfig::new(
                f,
                config.allowed_client_names.clone(),
            )?)),
            None => None,
        };

        let ip = config.listen_address();
        let grpc_listener = bind(SocketAddr::new(ip, config.grpc_port)).await?;
        let http_listener = bind(SocketAddr::new(ip, config.http_port)).await?;
        let grpc_addr = grpc_listener.local_addr().map_err(|source| DaemonError::Bind {
            addr: SocketAddr::new(ip, config.grpc_port),
            source,
        })?;
        let http_addr = http_listener.local_addr().map_err(|source| DaemonError::Bind {
            addr: SocketAddr::new(ip, config.http_port),
            source,
        })?;

        let state = Arc::new(DaemonState::new(config));
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(server::http::serve(
            http_listener,
            state.clone(),
            stop_rx.clone(),
        ));

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| DaemonError::Reflection(e.to_string()))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| DaemonError::Reflection(e.to_string()))?;
        let (health, health_service) = tonic_health::server::health_reporter();

        let task_state = state.clone();
        let task = tokio::spawn(async move {
            let state = task_state;
            // Start-up reconciliation happens here, before the gRPC port serves.
            state.set_ready(true, "ready\n".into());
            health
                .set_serving::<ChaosDaemonServer<server::chaos_daemon::ChaosDaemonService>>()
                .await;
            health.set_service_status("", tonic_health::ServingStatus::Serving).await;
            tracing::info!(%grpc_addr, %http_addr, tls = tls.is_some(), "faultd serving");

            let router = Server::builder()
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(ChaosDaemonServer::new(
                    server::chaos_daemon::ChaosDaemonService::new(state.clone()),
                ));
            let mut stop_signal = stop_rx.clone();
            let health_on_stop = health.clone();
            let signal = async move {
                let _ = stop_signal.wait_for(|s| *s).await;
                health_on_stop
                    .set_not_serving::<ChaosDaemonServer<server::chaos_daemon::ChaosDaemonService>>()
                    .await;
                health_on_stop
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
                tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
            };
            let grace = state.config.shutdown_grace;
            let serve = async {
                match tls {
                    Some(tls) => {
                        let incoming = server::listener::tls_incoming(
                            grpc_listener,
                            tls,
                            state.metrics.clone(),
                        );
                        router.serve_with_incoming_shutdown(incoming, signal).await
                    }
                    None => {
                        router
                            .serve_with_incoming_shutdown(
                                server::listener::tcp_incoming(grpc_listener),
                                signal,
                            )
                            .await
                    }
                }
            };
            // Once stop is requested, in-flight calls get `grace` to finish.
            let mut stop_seen = stop_rx.clone();
            tokio::pin!(serve);
            tokio::select! {
                r = &mut serve => r?,
                _ = async {
                    let _ = stop_seen.wait_for(|s| *s).await;
                    tokio::time::sleep(grace).await;
                } => {
                    tracing::warn!(grace_s = grace.as_secs_f64(), "grace period over; stopping with calls in flight");
                }
            }
            state.set_ready(false, "stopped\n".into());
            Ok(())
        });

        Ok(Daemon {
            grpc_addr,
            http_addr,
            state,
            dev_pki,
            stop,
            task,
        })
    }

    /// Asks the daemon to stop (as SIGTERM does).
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until the daemon has stopped.
    pub async fn wait(self) -> Result<(), DaemonError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(DaemonError::Config(format!("daemon task failed: {e}"))),
        }
    }
}
